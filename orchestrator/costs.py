"""Cost estimate for a plan: per stage kind, how many stages and roughly how many device-hours.

Why a table and not a profiler run: `--dry-run` must start nothing. Two sources, kept here in the repo:
- `LOCAL_MS_PER_IMAGE`: time per image pass at the local profile's sizes, measured inside a sweep on the 2-core
  reference machine (see the table);
- `GFLOPS_PER_IMAGE`: forward GFLOPs at the paper's native resolution, turned into time with an assumed
  sustained throughput per GPU (`GPU_EFFECTIVE_TFLOPS`, deliberately conservative for fp32/AMP training loops).
A training step costs about 3 forwards (forward + backward); what each stage kind does per image is declared
with the kind (`Kind.cost` in trainables/kinds.py). Numbers are estimates to size a cluster, not promises.
"""

from __future__ import annotations

from typing import Any

from trainables.footprint import FOOTPRINTS, GB, Footprint
from trainables.kinds import KINDS, Sizes

# Measured in the cold Table 4 run of 2026-12-02: a training pass per image (pretraining stage time / its
# passes), one thread per stage, two stages at once, as the local profile runs them (32 px, ViT-S/B patch 16,
# CLIP patch 16). Models that sweep did not train scale by its CLIP ViT-B/16 ratio (x3.6 the old 2-thread
# forward table): an estimate, flagged here so the next measurement replaces it.
LOCAL_MS_PER_IMAGE = {
    "resnet34": 2.5,
    "resnet50": 3.5,
    "resnet101": 10.1,
    "resnet152": 10.2,
    "vit_small": 3.8,
    "vit_base": 13.5,
    "clip_rn50": 5.0,  # x3.6
    "clip_rn101": 7.9,  # x3.6
    "clip_vit_b16": 12.2,
    "clip_vit_b32": 12.2,  # x3.6
    "clip_vit_l14_336": 43.0,  # x3.6
}
GFLOPS_PER_IMAGE = {
    "resnet34": 3.6,
    "resnet50": 4.1,
    "resnet101": 7.8,
    "resnet152": 11.5,
    "vit_small": 4.6,
    "vit_base": 17.6,
    "clip_rn50": 5.4,
    "clip_rn101": 9.8,
    "clip_vit_b16": 17.6,
    "clip_vit_b32": 4.4,
    "clip_vit_l14_336": 191.0,
}
GPU_EFFECTIVE_TFLOPS = 40.0
IMAGENET_TRAIN_IMAGES, IMAGENET_VAL_IMAGES = 1_281_167, 50_000  # sizes when data.n_train / n_test are None
IMAGENET_CLASSES, EMBEDDED_CLASSES = 1000, 10


def _ms_per_image(model: str, profile: str) -> float:
    if profile == "local":
        return LOCAL_MS_PER_IMAGE.get(model, 5.0)
    return GFLOPS_PER_IMAGE.get(model, 20.0) / GPU_EFFECTIVE_TFLOPS  # GFLOP / (TFLOP/s) = ms


def sizes(spec) -> Sizes:
    """The plan's dataset sizes at its profile: what every kind's cost estimate scales with."""
    d = spec.data
    n_train = d.n_train if d.n_train is not None else IMAGENET_TRAIN_IMAGES  # None: the whole split
    n_test = d.n_test if d.n_test is not None else IMAGENET_VAL_IMAGES
    n_eval = n_test + 75 * (d.c_per_cell or n_test) + 10 * d.p_sequences * d.p_frames
    n_classes = IMAGENET_CLASSES if d.source == "imagenet" else EMBEDDED_CLASSES
    return Sizes(
        n_train,
        n_test,
        spec.pool.n_images,
        n_eval,
        d.image_size,
        n_classes,
        d.source,
        spec.resources.gpus_per_worker > 0,
    )


def stage_seconds(stage, spec) -> float:
    """Estimated device seconds of one stage on the spec's profile (what packing and `--dry-run` size work by)."""
    model, passes, extra_ms = KINDS[stage.kind].cost(stage.inputs, sizes(spec))
    return (passes * (_ms_per_image(model, spec.profile) if model else 0.0) + extra_ms) / 1000.0


def critical_paths(plan, keys: set[str]) -> dict[str, float]:
    """Per stage in `keys`: its estimated seconds plus the longest chain of estimated seconds among the stages in
    `keys` that wait on it (directly or not). Running the largest first is the classic list-scheduling rule: the
    chain that decides when the last stage can finish starts as early as possible."""
    below: dict[str, list[str]] = {k: [] for k in keys}
    for k in keys:
        for d in plan.stages[k].deps.values():
            if d in below:
                below[d].append(k)
    memo: dict[str, float] = {}

    def path(k: str) -> float:
        if k not in memo:
            memo[k] = stage_seconds(plan.stages[k], plan.spec) + max((path(c) for c in below[k]), default=0.0)
        return memo[k]

    return {k: path(k) for k in keys}


def estimate(plan) -> dict[str, Any]:
    """Per stage kind: count, device-hours, and how much of it the cache already holds."""
    spec = plan.spec
    per_kind: dict[str, dict[str, float]] = {}
    total = remaining = 0.0
    for stage in plan.stages.values():
        hours = stage_seconds(stage, spec) / 3600.0
        k = per_kind.setdefault(stage.kind, {"count": 0, "device_hours": 0.0, "cached": 0})
        k["count"] += 1
        k["device_hours"] += hours
        k["cached"] += int(stage.cached)
        total += hours
        remaining += 0.0 if stage.cached else hours
    device = (
        "cpu (2 cores, measured table)"
        if spec.profile == "local"
        else f"gpu (assumed {GPU_EFFECTIVE_TFLOPS:g} effective TFLOP/s)"
    )
    return {"device": device, "per_kind": per_kind, "total_device_hours": total, "remaining_device_hours": remaining}


def stage_footprint(stage, spec) -> Footprint:
    """Disk one stage writes and the peak memory it needs at the spec's sizes (trainables/footprint.py)."""
    return FOOTPRINTS[stage.kind](stage.inputs, sizes(spec))


def footprint(plan) -> dict[str, Any]:
    """Per stage kind: disk written (sum over its stages) and peak memory (the largest stage); totals over the plan.

    `remaining_disk_gb` counts only stages the cache does not hold yet; `peak_memory_gb` is what one node must offer
    to run the hungriest stage (stages run one per process, so memory is a maximum, not a sum)."""
    per_kind: dict[str, dict[str, float]] = {}
    disk = remaining = peak = gpu = 0.0
    for stage in plan.stages.values():
        f = stage_footprint(stage, plan.spec)
        k = per_kind.setdefault(stage.kind, {"disk_gb": 0.0, "peak_memory_gb": 0.0, "peak_gpu_gb": 0.0})
        k["disk_gb"] += f.disk / GB
        k["peak_memory_gb"] = max(k["peak_memory_gb"], f.memory / GB)
        k["peak_gpu_gb"] = max(k["peak_gpu_gb"], f.gpu / GB)
        disk += f.disk / GB
        remaining += 0.0 if stage.cached else f.disk / GB
        peak, gpu = max(peak, f.memory / GB), max(gpu, f.gpu / GB)
    return {
        "per_kind": per_kind,
        "total_disk_gb": disk,
        "remaining_disk_gb": remaining,
        "peak_memory_gb": peak,
        "peak_gpu_gb": gpu,
    }


def hungriest(plan) -> tuple[str, float]:
    """(kind, GB) of the stage needing the most memory: what the node-memory check names."""
    best = max(plan.stages.values(), key=lambda s: stage_footprint(s, plan.spec).memory)
    return best.kind, stage_footprint(best, plan.spec).memory / GB
