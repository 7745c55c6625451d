"""Reading and writing stage folders: what one stage leaves in its cache entry and the next one reads back.

Files a stage may write into its folder `out` (besides `metrics.json`, written by `trainables.pipeline`):
    eval.pt      build_eval_sets: the eval bundles (see trainables/evaluate.py) and `classes`
    pool.pt      build_pool: {"train": {x, y}, "pool": {x, y}, "classes"}
    model.pt     teachers, the pretrained student, complete fine-tuning: a state dict
    model.json   beside model.pt: how to rebuild the network before loading it (`write_model_json`)
    features/    extract_features: meta.pt + one .npy per encoded image set (trainables/shards.py), read as
                 memory maps: {"train": {x, y}, "pool": {x, y}, "eval": the eval bundles with features for images}
    targets/     teacher_targets: meta.pt + train.npy, pool.npy (logits), memory maps as well
    tail.pt      a cell's trained trunk + heads
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from torch import nn

from trainables.build import build_student, build_teacher
from trainables.common import load
from trainables.kinds import ModelRef
from trainables.shards import load_tree

FEATURES, TARGETS = "features", "targets"


def load_bundles(folder: Path) -> dict[str, Any]:
    return load(folder / "eval.pt")


def load_pool(folder: Path) -> dict[str, Any]:
    return load(folder / "pool.pt")


def load_features(folder: Path) -> dict[str, Any]:
    """An `extract_features` entry: the same structure as the images it encoded, arrays memory-mapped."""
    return load_tree(folder / FEATURES)


def load_targets(folder: Path) -> dict[str, Any]:
    """A `teacher_targets` entry: {"train": logits, "pool": logits}, memory-mapped."""
    return load_tree(folder / TARGETS)


def write_model_json(
    out: Path,
    role: str,
    model: ModelRef,
    num_classes: int,
    img_size: int,
    classes: list[str],
    dropout: float | None = None,
) -> None:
    """model.json: the role ("teacher" / "student") and the builder arguments; `dropout` for students only."""
    spec = {
        "role": role,
        "model": dataclasses.asdict(model),
        "num_classes": num_classes,
        "img_size": img_size,
        "classes": classes,
    }
    if dropout is not None:
        spec["dropout"] = dropout
    (out / "model.json").write_text(json.dumps(spec, sort_keys=True))


def model_classes(folder: Path) -> list[str]:
    return json.loads((folder / "model.json").read_text())["classes"]


def load_model_folder(folder: Path) -> nn.Module:
    """Rebuild a teacher/student saved by a stage (model.json + model.pt)."""
    spec = json.loads((folder / "model.json").read_text())
    model = dataclasses.replace(ModelRef(**spec["model"]), weights=None)
    if spec["role"] == "teacher":
        net = build_teacher(model, spec["num_classes"], spec["img_size"])
    else:
        net = build_student(model, spec["num_classes"], spec["img_size"], spec["classes"], spec["dropout"])
    net.load_state_dict(load(folder / "model.pt"))
    return net


def student_from_deps(
    model: ModelRef, img_size: int, deps: dict[str, Path], classes: list[str], dropout: float
) -> nn.Module:
    """The student a stage starts from: the `pretrain_student` entry when there is one, else `model` as given
    (its weights tag or file)."""
    if "student" in deps:
        return load_model_folder(deps["student"])
    return build_student(model, len(classes), img_size, classes, dropout)
