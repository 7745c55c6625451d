"""What every training stage starts from: the clean split of the data source, and registry networks built from a
`ModelRef` (random init, a library weights tag, or a weights file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from trainables import data, imagenet
from trainables.kinds import ModelRef
from trainables.models import create_student, create_teacher, load_state_dict_file
from trainables.reading import SERIAL, Reader

SPLIT_SEED = 0  # one fixed train/test split for every seed: a pretrained student must never have seen a test image


def source_split(d: dict[str, Any], reader: Reader = SERIAL) -> tuple[data.ImageSet, data.ImageSet]:
    """The clean (train, test) split of `data.source`: MNIST-5k (embedded) or ImageNet train/val folders
    (imagenet, bounded by n_train / n_test: see trainables/imagenet.py; files decoded by `reader`: a stage's
    `reading.stage_reader`). Always the fixed SPLIT_SEED."""
    if d["source"] == "imagenet":
        return imagenet.imagenet_split(d, seed=SPLIT_SEED, reader=reader)
    if d["source"] != "embedded":
        raise ValueError(f"data.source {d['source']!r} is not known; allowed: embedded, imagenet")
    return data.load_mnist5k(seed=SPLIT_SEED, n_train=d["n_train"], n_test=d["n_test"], size=d["image_size"])


def _weights(model: ModelRef) -> tuple[str | None, str | None]:
    """(library tag, weights file): a `weights` naming an existing file is a file, anything else a tag."""
    w = model.weights
    return (w if w and not Path(w).exists() else None), (w if w and Path(w).exists() else None)


def build_teacher(model: ModelRef, num_classes: int, img_size: int) -> nn.Module:
    tag, file = _weights(model)
    net = create_teacher(model.name, num_classes=num_classes, img_size=img_size, pretrained=tag, **model.overrides)
    if file:
        load_state_dict_file(net, file)
    return net


def build_student(model: ModelRef, num_classes: int, img_size: int, classes: list[str], dropout: float) -> nn.Module:
    tag, file = _weights(model)
    s = create_student(
        model.name,
        num_classes=num_classes,
        img_size=img_size,
        class_names=classes,
        dropout=dropout,
        pretrained=tag,
        **model.overrides,
    )
    if file:
        load_state_dict_file(s, file)
        s.snapshot_original()
    return s
