"""The model registry (timm's `_registry.py`): per-model metadata and the entry points that build each model.

Why a registry: sweeps name models by the paper's names ('clip_vit_b16'). One frozen `ModelCfg` per name says how
to build the network (timm or open_clip), how it normalises its input, its native size, the weights the paper used
and what supplement Table 5 says about it. Family modules fill it with `@register_model` when imported, so the
registry order is the order in which `trainables.models` imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from trainables.vocab import did_you_mean

Family = Literal["timm", "open_clip"]
Role = Literal["teacher", "student"]
Unit = tuple[str, nn.Module]
EntryPoint = Callable[..., nn.Module]
Table5 = tuple[float | None, float | None]  # supplement Table 5: (tuned, total) millions of parameters
TEACHER_AND_STUDENT: tuple[Role, ...] = ("teacher", "student")


class UnknownModelError(ValueError):
    """A model name that is not registered; the message lists the closest registered names."""


@dataclass(frozen=True)
class SplitRule:
    """A family's split rule: its unit chain, and the budget for models that have no Table 5 entry.

    The rule's text is the chain function's docstring, so code and documentation cannot drift.
    """

    name: str
    chain: Callable[[nn.Module], list[Unit]]
    default_budget_m: float


@dataclass(frozen=True)
class ModelCfg:
    """What pipelines need to know about one registered model (the idea of timm's `PretrainedCfg`).

    Attributes:
        name: registry name (the paper's name for the model).
        family: the library that builds it.
        arch: the library's architecture name (timm model name / open_clip model name).
        roles: the paper's roles for it, i.e. the sweep vocabulary ('teacher' and/or 'student').
        mean, std: input normalisation of the paper's weights; the model applies it itself.
        input_size: native (paper) input resolution.
        paper_tag: the paper's weights: timm `arch.tag` or open_clip `pretrained=` name.
        split: the family's split rule.
        paper_tuned_m, paper_total_m: supplement Table 5 in millions of parameters; None where it has no entry.
        size_kwarg: the builder keyword that sets the input size (None: the architecture is size-agnostic).
        arch_kwargs: fixed builder options that make the architecture match the paper's weights.
    """

    name: str
    family: Family
    arch: str
    roles: tuple[Role, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    paper_tag: str
    split: SplitRule
    paper_tuned_m: float | None = None
    paper_total_m: float | None = None
    size_kwarg: str | None = None
    arch_kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def budget_m(self) -> float:
        """Tuned budget the split aims at: Table 5's, else the family rule's."""
        return self.paper_tuned_m if self.paper_tuned_m is not None else self.split.default_budget_m


@dataclass(frozen=True)
class _Entry:
    cfg: ModelCfg
    fn: EntryPoint


_REGISTRY: dict[str, _Entry] = {}


def register_model(cfg: ModelCfg) -> Callable[[EntryPoint], EntryPoint]:
    """Decorator: register an entry point under `cfg.name`.

    Args:
        cfg: the model's metadata; the decorated function must carry the same name (as in timm).

    Returns:
        The decorator, which returns the function unchanged.
    """

    def deco(fn: EntryPoint) -> EntryPoint:
        if fn.__name__ != cfg.name or cfg.name in _REGISTRY:
            raise ValueError(f"entry point {fn.__name__!r} vs cfg {cfg.name!r}: names must match and be unique")
        _REGISTRY[cfg.name] = _Entry(cfg, fn)
        return fn

    return deco


def list_models(role: str | None = None) -> list[str]:
    """Registered names in registration order.

    Args:
        role: 'teacher' or 'student' to keep the paper's models for that role; None or 'model' for all.

    Raises:
        ValueError: an unknown role.
    """
    if role in (None, "model"):
        return list(_REGISTRY)
    if role not in ("teacher", "student"):
        raise ValueError(f"unknown role {role!r}; allowed: teacher, student, model")
    return [n for n, e in _REGISTRY.items() if role in e.cfg.roles]


def get_model_cfg(name: str) -> ModelCfg:
    """The `ModelCfg` of a registered model.

    Raises:
        UnknownModelError: `name` is not registered; the message lists close matches and every name.
    """
    return _entry(name).cfg


def model_entrypoint(name: str) -> EntryPoint:
    """The function registered under `name`: `fn(cfg, num_classes=..., img_size=..., **kwargs)` -> network.

    Raises:
        UnknownModelError: `name` is not registered.
    """
    return _entry(name).fn


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise UnknownModelError(
            f"unknown model {name!r}{did_you_mean(name, _REGISTRY)}; registered: {', '.join(_REGISTRY)}"
        )
    return _REGISTRY[name]
