"""Stages that run a frozen network once so cells never do: the student's frozen part over every image
(`extract_features`) and the robust teacher's logits over the training images (`teacher_targets`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from trainables.artifacts import load_bundles, load_model_folder, load_pool, student_from_deps
from trainables.common import StageContext, Timer, apply_chunked, save
from trainables.kinds import FeaturesInputs, TargetsInputs, body


def encode_bundles(fn: Callable[[Tensor], Tensor], bundles: dict[str, Any]) -> dict[str, Any]:
    """The same bundle structure with every image tensor replaced by fn(images)."""
    out: dict[str, Any] = {}
    for name, b in bundles.items():
        if not isinstance(b, dict):
            out[name] = b
            continue
        out[name] = {
            k: (apply_chunked(fn, v, item_dims=3) if torch.is_tensor(v) and v.dtype == torch.uint8 else v)
            for k, v in b.items()
        }
    return out


@body("extract_features")
def extract_features(inputs: FeaturesInputs, deps: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, float]:
    """Run the frozen part of the student ONCE over the clean split, the pool and every eval set."""
    bundles = load_bundles(deps["eval"])
    pool = load_pool(deps["pool"])
    # The inputs carry no data section: the eval images are stored at data.image_size, so read it off them.
    size = bundles["clean"]["x"].shape[-1]
    s = student_from_deps(inputs.model, size, deps, bundles["classes"], inputs.dropout).eval()
    with Timer() as t:
        feats = {
            "train": encode_bundles(s.encode, {"t": pool["train"]})["t"],
            "pool": encode_bundles(s.encode, {"p": pool["pool"]})["p"],
            "eval": encode_bundles(s.encode, bundles),
        }
    save(feats, out / "features.pt")
    return {"time/stage_s": t.s, "features/dim": float(feats["train"]["x"][0].numel())}


@body("teacher_targets")
def teacher_targets(inputs: TargetsInputs, deps: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, float]:
    """The robust teacher's logits on the clean split and the pool, once per (teacher, pool)."""
    net = load_model_folder(deps["teacher"]).eval()
    pool = load_pool(deps["pool"])
    with Timer() as t:
        targets = {
            "train": apply_chunked(net, pool["train"]["x"], item_dims=3),
            "pool": apply_chunked(net, pool["pool"]["x"], item_dims=3),
        }
    save(targets, out / "targets.pt")
    return {"time/stage_s": t.s}
