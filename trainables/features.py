"""Stages that run a frozen network once so cells never do: the student's frozen part over every image
(`extract_features`) and the robust teacher's logits over the training images (`teacher_targets`)."""

from __future__ import annotations

from pathlib import Path

from trainables.artifacts import (
    FEATURES,
    TARGETS,
    load_bundles,
    load_features,
    load_model_folder,
    load_pool,
    student_from_deps,
)
from trainables.common import StageContext, Timer
from trainables.kinds import FeaturesInputs, TargetsInputs, body
from trainables.shards import store_tree

# The kinds whose body maps a frozen network over shards through `ctx.map_shards`: under Ray their shards run as
# tasks of their own (orchestrator/ray_backend.py `shard_map`), so the stage's task keeps no GPU for itself.
SHARD_MAPPED = frozenset({"extract_features", "teacher_targets"})


@body("extract_features")
def extract_features(inputs: FeaturesInputs, deps: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, float]:
    """Run the frozen part of the student ONCE over the clean split, the pool and every eval set, shard by shard
    (trainables/shards.py: resumable from `ctx.scratch`, read back as memory maps by `artifacts.load_features`;
    the shards computed by `ctx.map_shards`: here, or as Ray tasks over the cluster)."""
    bundles = load_bundles(deps["eval"])
    pool = load_pool(deps["pool"])
    # The inputs carry no data section: the eval images are stored at data.image_size, so read it off them.
    size = bundles["clean"]["x"].shape[-1]
    s = student_from_deps(inputs.model, size, deps, bundles["classes"], inputs.dropout).eval()
    tree = {"train": pool["train"], "pool": pool["pool"], "eval": bundles}
    with Timer() as t:
        computed = store_tree(s.encode, tree, out / FEATURES, ctx.scratch, inputs.store_dtype, ctx.map_shards)
    dim = load_features(out)["train"]["x"][0].numel()
    return {"time/stage_s": t.s, "features/dim": float(dim), "features/shards_computed": float(computed)}


@body("teacher_targets")
def teacher_targets(inputs: TargetsInputs, deps: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, float]:
    """The robust teacher's logits on the clean split and the pool, once per (teacher, pool), shard by shard."""
    net = load_model_folder(deps["teacher"]).eval()
    pool = load_pool(deps["pool"])
    with Timer() as t:
        tree = {"train": pool["train"]["x"], "pool": pool["pool"]["x"]}
        computed = store_tree(net, tree, out / TARGETS, ctx.scratch, inputs.store_dtype, ctx.map_shards)
    return {"time/stage_s": t.s, "targets/shards_computed": float(computed)}
