"""Supplement Table 6: do robustified teachers flip less? Teacher mFR, naive vs AugMix+DeepAugment."""

from __future__ import annotations

from orchestrator.tables._types import Col, Row, TableSpec, grid
from orchestrator.tables.claims import improves
from orchestrator.tables.names import pretty

# Teacher -> the paper's (naive, AugMix+DA) mFR.
PAPER = {"resnet34": (59.8, 41.6), "resnet50": (57.1, 37.5), "resnet101": (52.7, 34.6), "vit_small": (49.2, 33.4)}

SPEC = TableSpec(
    "supp_table6",
    "Supplement Table 6: teacher mFR, naive vs AugMix+DeepAugment",
    "table",
    "stage",
    where={"tags.stage": ("naive_teacher", "robustify_teacher")},
    rows=tuple(Row(pretty(t), {"model": t}) for t in PAPER),
    cols=(
        Col("naive", "mfr", {"tags.stage": "naive_teacher"}),
        Col("AugMix+DA", "mfr", {"tags.stage": "robustify_teacher"}),
        Col("naive C acc", "acc/c", {"tags.stage": "naive_teacher"}, extra=True),
        Col("AugMix+DA C acc", "acc/c", {"tags.stage": "robustify_teacher"}, extra=True),
    ),
    paper=grid({pretty(t): v for t, v in PAPER.items()}, ("naive", "AugMix+DA")),
    claims=(
        improves(
            "robustified teachers flip less (lower mFR)",
            "naive",
            "AugMix+DA",
            "teachers",
            "no teacher with both mFRs",
            lower_is_better=True,
        ),
    ),
    needs=({"tags.stage": "naive_teacher"}, {"tags.stage": "robustify_teacher"}),
    note="mFR × 100 relative to the sweep's reference model (the paper's reference is AlexNet; if the "
    "reference is one of these naive teachers, its own mFR is 100 by definition).",
)
