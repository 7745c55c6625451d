"""Closed vocabularies shared by the control plane (spec, plan, tables) and the data plane (stages, inference).

Why here, in `trainables/`: the orchestrator may import the data plane, never the reverse, so the names both
planes speak live on the data-plane side, in a module that imports neither torch nor pydantic (the CLI reads it
while validating a spec, before anything heavy loads). Every enum is a `str` enum: a member compares equal to
its value and serialises as it, so content keys, MLflow params and stored metrics are unchanged by using them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from enum import Enum


class Method(str, Enum):
    """Training methods (grid axis `method`). Selection rules are not methods: all are evaluated per model."""

    ours = "ours"
    wo_kd = "wo_kd"
    apt = "apt"
    full_ft = "full_ft"
    wise_ft = "wise_ft"
    original = "original"


# Axes a method ignores: planning drops them so a teacher-free baseline is trained once, not once per teacher.
METHODS_WITHOUT_TEACHER = frozenset({Method.apt, Method.full_ft, Method.wise_ft, Method.original})
METHODS_WITHOUT_FRACTION = frozenset({Method.original})
# Methods whose training touches the frozen part: they cannot train from cached features.
METHODS_WITHOUT_FEATURE_CACHE = frozenset({Method.full_ft, Method.wise_ft})
# Methods that train the three-headed model and are scored through the selection rules.
THREE_HEADED = frozenset({Method.ours, Method.wo_kd})


class Head(str, Enum):
    """The student's three heads (method.md §2.4)."""

    clean = "clean"
    unclean = "unclean"
    combined = "combined"


HEADS: tuple[str, ...] = tuple(h.value for h in Head)


class SelectionRule(str, Enum):
    """Which head answers per input (method.md §4); all are evaluated from one trained model."""

    ours = "ours"
    wo_kld = "wo_kld"
    wo_umc = "wo_umc"
    max_logit = "max_logit"


SELECTION_RULES: tuple[str, ...] = tuple(r.value for r in SelectionRule)


class EvalSuite(str, Enum):
    """Evaluation suites. `clean`, `c`, `p`, `transfer` exist on every profile; the ImageNet shift sets only where
    the profile gives their data roots (on `local` they are reported as missing: "—" in tables)."""

    clean = "clean"
    c = "c"
    p = "p"
    transfer = "transfer"
    v2 = "v2"
    r = "r"
    sketch = "sketch"
    a = "a"
    objectnet = "objectnet"
    objectnet_c = "objectnet_c"


def did_you_mean(value: object, allowed: Iterable[str], n: int = 3) -> str:
    """The " (did you mean 'x', 'y'?)" hint of every unknown-name error, or "" when nothing is close."""
    close = difflib.get_close_matches(str(value), list(allowed), n=n, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
