"""Which parameters the split may tune, and counting them once.

A module marks itself `tunable = False` when the tuned tail must pass through it with its pretrained weights
(CLIP's attention pool: its q/k/v alone are three times the paper's budget). Tied or shared parameters are
counted once, as the paper counts a model.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn


def tunable_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Parameters the split may tune: all but those inside modules marked `tunable = False` (deduplicated)."""
    fixed = {id(p) for p in fixed_parameters(module)}
    return unique(p for p in module.parameters() if id(p) not in fixed)


def fixed_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Parameters inside modules marked `tunable = False` (deduplicated)."""
    return unique(p for m in module.modules() if getattr(m, "tunable", True) is False for p in m.parameters())


def unique(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    """`params` without repeats, in first-seen order (order matters: it is the optimiser's parameter order)."""
    seen: dict[int, nn.Parameter] = {}
    for p in params:
        seen.setdefault(id(p), p)
    return list(seen.values())


def numel(params: Iterable[nn.Parameter]) -> int:
    """Number of elements, each parameter counted once."""
    return sum(p.numel() for p in unique(params))
