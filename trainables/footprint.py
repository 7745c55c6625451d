"""Disk and memory footprint of each stage kind at a plan's sizes: what `--dry-run` prints and the node check refuses.

Why a table and not a measurement: like the cost model (trainables/kinds.py `cost`, orchestrator/costs.py), the
footprint must be known before anything starts, from the spec alone, without importing torch. The figures follow
how the data plane stores and streams (trainables/shards.py, trainables/data.py `image_buffer`):
- images at rest are uint8, 3 x size^2 bytes each; an image set larger than `RESIDENT_BYTES` lives in a file-backed
  buffer (the kernel pages it), so a stage holds at most that much of it in memory;
- features (the student's frozen part over every image) and teacher logits are written shard by shard
  (`SHARD_ROWS` rows) in fp16 on ImageNet (fp32 on the embedded data, so local results stay bit-identical) and
  read back as memory maps: a stage holds one shard;
- a trained network costs its weights, gradients and two Adam moments (4 x fp32 parameters) plus the activations
  of one batch (`ACT_MB_224` per image, scaled by pixels); on a profile with GPUs that part is GPU memory;
- every worker pays `RUNTIME_BYTES` for Python, torch, timm and open_clip.
The feature shapes were measured from the registry models (the frozen part's output per image): values per spatial
position and the stride (ResNets) or patch size (ViTs, plus one class token). Estimates to size nodes, not promises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainables.kinds import Sizes

GB = 1e9
RUNTIME_BYTES = 1.2 * GB
RESIDENT_BYTES = 256 * 2**20  # larger image sets go to a file-backed buffer (trainables.data.image_buffer)
SHARD_ROWS = 1024  # rows per shard of features / logits (trainables.shards)
INFER_BATCH = 256  # rows per forward of a frozen network (trainables.common.apply_chunked)
TAIL_SHARE = 0.05  # the tuned tail relative to the whole student (as trainables/kinds.py prices it)

PARAMS_M = {  # whole network as built (CLIP: vision + text tower)
    "resnet34": 21.8,
    "resnet50": 25.6,
    "resnet101": 44.5,
    "resnet152": 60.2,
    "vit_small": 22.1,
    "vit_base": 86.6,
    "clip_rn50": 102.0,
    "clip_rn101": 119.7,
    "clip_vit_b16": 149.6,
    "clip_vit_b32": 151.3,
    "clip_vit_l14_336": 427.9,
}
# fp32 activations kept for backward per training image at 224 px, MB (rough, from batch-size limits on GPUs)
ACT_MB_224 = {
    "resnet34": 45.0,
    "resnet50": 85.0,
    "resnet101": 130.0,
    "resnet152": 180.0,
    "vit_small": 40.0,
    "vit_base": 110.0,
    "clip_rn50": 90.0,
    "clip_rn101": 135.0,
    "clip_vit_b16": 110.0,
    "clip_vit_b32": 30.0,
    "clip_vit_l14_336": 700.0,
}
# (values per position of the frozen part's output, stride or patch, class token?) measured at 64 and 224 px
FEATURE_SHAPE = {
    "resnet34": (1024, 32, False),
    "resnet50": (4096, 32, False),
    "resnet101": (4096, 32, False),
    "resnet152": (2560, 32, False),
    "clip_rn50": (2560, 32, False),
    "clip_rn101": (2560, 32, False),
    "vit_small": (384, 16, True),
    "vit_base": (3840, 16, True),
    "clip_vit_b16": (768, 16, True),
    "clip_vit_b32": (768, 32, True),
    "clip_vit_l14_336": (5120, 14, True),
}


@dataclass(frozen=True)
class Footprint:
    """Bytes a stage writes to the cache (`disk`), the peak host memory of the process running it (`memory`) and
    of its GPU (`gpu`, 0 on a CPU profile, where that part is counted in `memory`)."""

    disk: float
    memory: float
    gpu: float = 0.0


def image_bytes(s: Sizes) -> int:
    return 3 * s.image_size**2


def value_bytes(s: Sizes) -> int:
    """Bytes per stored feature / logit value: fp16 on ImageNet, fp32 on the embedded data."""
    return 2 if s.source == "imagenet" else 4


def feature_values(model: Any, image_size: int) -> int:
    """Values per image of the student's frozen-part output (`model`: a ModelRef or its payload dict)."""
    if isinstance(model, dict):
        name, overrides = model["name"], model.get("overrides") or {}
    else:
        name, overrides = model.name, model.overrides
    per, stride, cls = FEATURE_SHAPE.get(name, (2048, 32, False))
    stride = overrides.get("patch_size", stride)
    return per * ((image_size // stride) ** 2 + int(cls))


def _weights(name: str | None) -> float:
    return PARAMS_M.get(name or "", 100.0) * 1e6 * 4


def _training(name: str | None, batch: int, s: Sizes, share: float = 1.0) -> float:
    """Weights, gradients, two Adam moments (fp32) and one batch's activations (scaled by pixels from 224 px)."""
    act = ACT_MB_224.get(name or "", 100.0) * 1e6 * (s.image_size / 224) ** 2
    return share * (4 * _weights(name) + batch * act)


def _held(n_images: float, s: Sizes) -> float:
    """Memory an image set of `n_images` takes: all of it up to RESIDENT_BYTES, then the kernel pages it."""
    return min(n_images * image_bytes(s), RESIDENT_BYTES)


def _split(disk: float, host: float, device: float, s: Sizes) -> Footprint:
    """Host data + runtime in memory; `device` (weights, optimizer state, activations) on the GPU when the
    profile asks for GPUs, else in memory as well."""
    if s.on_gpu:
        return Footprint(disk, RUNTIME_BYTES + host, device)
    return Footprint(disk, RUNTIME_BYTES + host + device, 0.0)


def _eval_sets(i: Any, s: Sizes) -> Footprint:
    return _split(s.n_eval * image_bytes(s), 2 * _held(s.n_eval, s), 0.0, s)


def _pool(i: Any, s: Sizes) -> Footprint:
    """The split read, the pool written into its own (file-backed) buffer run by run (trainables/augment.py)."""
    disk = (s.n_train + s.n_pool) * image_bytes(s)
    return _split(disk, _held(s.n_train, s) + _held(s.n_pool, s), 0.0, s)


def _teacher(i: Any, s: Sizes) -> Footprint:
    """Teachers train on index views of the split and the pool (`shards.Picked`), gathered per batch."""
    t = i.teacher_train
    host = _held(s.n_train, s) + _held(s.n_pool, s) + _held(s.n_eval, s)
    return _split(_weights(i.model.name), host, _training(i.model.name, 3 * t["batch_size"], s), s)


def _pretrain(i: Any, s: Sizes) -> Footprint:
    """A slice of the (file-backed) split, gathered per batch, and the test split for the plateau check."""
    device = _training(i.model.name, i.pretrain["batch_size"], s)
    return _split(_weights(i.model.name), _held(s.n_train, s) + _held(s.n_test, s), device, s)


def _features(i: Any, s: Sizes) -> Footprint:
    row = feature_values(i.model, s.image_size) * value_bytes(s)
    work = INFER_BATCH * (feature_values(i.model, s.image_size) * 4 * 2 + 4 * image_bytes(s))
    host = SHARD_ROWS * row + _held(s.n_eval, s)
    return _split((s.n_train + s.n_pool + s.n_eval) * row, host, _weights(i.model.name) + work, s)


def _targets(i: Any, s: Sizes) -> Footprint:
    row = s.n_classes * value_bytes(s)
    work = INFER_BATCH * 4 * image_bytes(s) * 4
    return _split((s.n_train + s.n_pool) * row, SHARD_ROWS * row, _weights(i.teacher) + work, s)


def _full_ft(i: Any, s: Sizes) -> Footprint:
    """Index views of the split and the pool (`shards.Picked`), as the teachers."""
    host = _held(s.n_train, s) + _held(s.n_pool, s) + _held(s.n_eval, s)
    return _split(_weights(i.model.name), host, _training(i.model.name, i.train["batch_size"], s), s)


def _cell(i: Any, s: Sizes) -> Footprint:
    """The tail trains on shard-streamed features: two batches of rows (clean + augmented) and MC-dropout
    probabilities of three heads over one inference batch."""
    t, name = i.train, i.model.name
    rows = 2 * t["batch_size"] * feature_values(i.model, s.image_size) * 4
    mc = INFER_BATCH * t["mc_samples"] * s.n_classes * 4 * 3
    device = _weights(name) + _training(name, 2 * t["batch_size"], s, TAIL_SHARE) + rows + mc
    host = SHARD_ROWS * feature_values(i.model, s.image_size) * value_bytes(s) + s.n_eval * 8 * 16
    return _split(_weights(name) * TAIL_SHARE, host, device, s)


FOOTPRINTS: dict[str, Callable[[Any, Sizes], Footprint]] = {
    "build_eval_sets": _eval_sets,
    "build_pool": _pool,
    "pretrain_student": _pretrain,
    "pretrain_teacher": _pretrain,
    "naive_teacher": _teacher,
    "robustify_teacher": _teacher,
    "extract_features": _features,
    "teacher_targets": _targets,
    "full_finetune": _full_ft,
    "cell": _cell,
}
