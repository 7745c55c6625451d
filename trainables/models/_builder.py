"""The one builder every entry point delegates to (timm's `_builder.py`): the library's own, unsplit network.

Kept apart from `_factory.py` (which creates teachers and students from names) because family modules call it
when they are imported, and the factory needs the families' student parts: one module for both would be an
import circle.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from trainables.models._registry import ModelCfg


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """open_clip logs "No pretrained weights loaded" on the root logger at every random init: hush it, briefly."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def build_network(
    cfg: ModelCfg,
    *,
    num_classes: int,
    img_size: int,
    tag: str | None = None,
    device: str | torch.device | None = None,
    **overrides: Any,
) -> nn.Module:
    """The library's own, unsplit network: a timm classifier or an open_clip CLIP model.

    Every entry point delegates here, so the offline rules live in one place: nothing is downloaded unless a
    hub tag is given; `None` overrides are dropped (as timm's factory does); the input size is passed the way each
    library wants it (timm ViT `img_size`, open_clip `force_image_size`; ResNets are size-agnostic).

    Args:
        cfg: the model's metadata.
        num_classes: classifier width (timm; open_clip models classify through text embeddings instead).
        img_size: input resolution.
        tag: a resolved hub tag (timm `arch.tag`, open_clip pretrained name): loads the library's weights.
        device: e.g. 'meta' to count parameters without allocating memory.
        **overrides: library keywords, e.g. `patch_size=8` for timm ViTs.

    Returns:
        The network, in train mode as the library returns it.
    """
    kwargs = dict(cfg.arch_kwargs)
    if cfg.size_kwarg:
        kwargs[cfg.size_kwarg] = img_size
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    with torch.device(device) if device is not None else nullcontext(), _quiet_root_logger():
        # Imported here, not at module level: timm takes seconds to import, and the CLI imports this package
        # only to read the registry's names while validating a spec.
        if cfg.family == "timm":
            import timm

            return timm.create_model(tag or cfg.arch, pretrained=tag is not None, num_classes=num_classes, **kwargs)
        import open_clip

        if device is not None:
            kwargs["device"] = device
        return open_clip.create_model(cfg.arch, pretrained=tag, **kwargs)
