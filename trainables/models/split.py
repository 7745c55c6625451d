"""The tuning-budget split: where a student's unit chain is cut, and the parameter counts of supplement Table 5.

Why a split: the method tunes only "a portion from the end" of a large student (method.md §2.3-2.4). A student is
turned into a *unit chain* (modules applied one after another, each mapping ONE tensor to ONE tensor) and cut:

    frozen = normalise + units[:-(k+1)]    eval mode, no grad, no dropout: run once per image and cached
    trunk  = units[-(k+1):-1]              shared tuned trunk (most of the tuning portion)
    heads  = 3 deep copies of units[-1]    clean / unclean / combined, Dropout(p) as their first op

Units are whole blocks except in the last residual block, which is cut at sub-block granularity because the
paper's budgets are smaller than a block. A cut inside a residual block carries the shortcut alongside the hidden
activation, concatenated on the channel (CNN) or last (ViT) dim, so the frozen output stays ONE tensor.

Split rule ([default]; the same for every family, which only decides its units: see each `*_chain` docstring):
the head is the classifier (timm) or the image projection followed by the frozen class-prompt text classifier
(CLIP). k, the number of trunk units, is the one whose tuned count (trunk + ONE head) at the paper's settings
(native input size, 1000 classes, built on the meta device: nothing allocated or downloaded) is closest in ratio
to the budget: Table 5's, else the family's. The trunk must hold at least one tunable parameter. k is a count of
trailing units, so the same cut applies at any input size, patch size or class count. The budget is a knob:
`create_student(..., budget_m=4.0)` (or `model_overrides: {name: {budget_m: 4.0}}` in a sweep).
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

from trainables.models._params import numel, tunable_parameters
from trainables.models._registry import get_model_cfg, list_models, model_entrypoint

PAPER_NUM_CLASSES = 1000


@cache
def _paper_profile(name: str) -> tuple[tuple[tuple[str, int], ...], int]:
    """((unit name, tunable parameters) per unit, total parameters) at paper settings, built on the meta device."""
    cfg = get_model_cfg(name)
    net = model_entrypoint(name)(cfg, num_classes=PAPER_NUM_CLASSES, img_size=cfg.input_size, device="meta")
    total = numel(net.parameters())
    return tuple((n, numel(tunable_parameters(m))) for n, m in cfg.split.chain(net)), total


@cache
def split_point(name: str, budget_m: float | None = None) -> int:
    """k, the number of trunk units: the split rule of this module's docstring.

    Args:
        name: a registered model.
        budget_m: tuned budget in millions at paper settings; default: the model's (Table 5 or its family's).

    Returns:
        The k whose trunk + one head is closest in ratio to the budget, with at least one tunable parameter in
        the trunk and at least one unit left frozen (ties: the smaller k).

    Raises:
        UnknownModelError: unknown name.  ValueError: a budget that is not positive, or no split with a tunable
            trunk.
    """
    cfg = get_model_cfg(name)
    counts = [c for _, c in _paper_profile(name)[0]]
    budget = (budget_m if budget_m is not None else cfg.budget_m) * 1e6
    if budget <= 0:
        raise ValueError(f"{name}: budget_m must be positive, got {budget_m}")
    head, tuned, best, best_k = counts[-1], counts[-1], math.inf, None
    for k in range(1, len(counts) - 1):
        tuned += counts[-1 - k]
        err = abs(math.log(tuned / budget))
        if tuned > head and err < best:
            best, best_k = err, k
    if best_k is None:
        raise ValueError(f"{name}: no trunk with tunable parameters")
    return best_k


def paper_counts(name: str, budget_m: float | None = None) -> dict[str, Any]:
    """Tuned / head / total parameters of the split at paper settings (native size, 1000 classes, random init).

    Returns:
        {'tuned', 'head', 'total'} in parameters, and 'units': the tuned unit names (trunk then head).

    Raises:
        UnknownModelError: unknown name.  ValueError: see `split_point`.
    """
    units, total = _paper_profile(name)
    k = split_point(name, budget_m)
    tail = units[-(k + 1) :]
    return {"tuned": sum(c for _, c in tail), "head": units[-1][1], "total": total, "units": [n for n, _ in tail]}


def supp_table5_rows() -> list[dict[str, Any]]:
    """Supplement Table 5 regenerated from the real architectures, one row per registered student.

    Returns:
        Rows with 'student', 'params_tuned', 'params_total' (what the table renders), plus 'params_head',
        'paper_tuned_m', 'paper_total_m' and 'tuned_units' for people checking the split.
    """
    rows = []
    for name in list_models("student"):
        cfg, c = get_model_cfg(name), paper_counts(name)
        rows.append(
            {
                "student": name,
                "params_tuned": c["tuned"],
                "params_total": c["total"],
                "params_head": c["head"],
                "paper_tuned_m": cfg.paper_tuned_m,
                "paper_total_m": cfg.paper_total_m,
                "tuned_units": " + ".join(c["units"]),
            }
        )
    return rows
