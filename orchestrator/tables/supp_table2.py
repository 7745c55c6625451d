"""Supplement Table 2: F_correct, the fraction of inputs each selection rule sends to the right head."""

from __future__ import annotations

from orchestrator.tables._types import Col, TableSpec, grid
from orchestrator.tables.claims import highest_mean
from orchestrator.tables.supp_table1 import ROWS  # Table 2 reads Table 1's rows, less max logit and w/o KD
from trainables.vocab import Method

# Column label -> eval suite; IN is the clean test set (the right head there is the clean one).
SETS = (("IN", "clean"), ("R", "r"), ("Sketch", "sketch"), ("ObjectNet", "objectnet"), ("A", "a"), ("C", "c"))

PAPER = {
    "w/o KLD": [0.89, 0.82, 0.71, 0.82, 0.79, 0.83],
    "w/o U_mc": [0.71, 0.69, 0.72, 0.61, 0.63, 0.71],
    "ours": [0.95, 0.94, 0.89, 0.84, 0.92, 0.94],
}

SPEC = TableSpec(
    "supp_table2",
    "Supplement Table 2: F_correct (fraction of inputs sent to the right head)",
    "table",
    "cell",
    where={"method": Method.ours},
    rows=tuple(r for r in ROWS if r.label in ("w/o KLD", "w/o U_mc", "ours")),
    cols=tuple(Col(label, f"f_correct/{{rule}}/{s}", scale=1.0, digits=2, lead_zero=False) for label, s in SETS),
    paper=grid(PAPER, tuple(label for label, _ in SETS)),
    claims=(
        highest_mean(
            "ours has the highest F_correct", "ours", 2, "not enough data (ours and an ablation on a common set)"
        ),
    ),
    needs=({"method": Method.ours},),
    note="Right head: clean head on IN (clean test set), unclean head on every shifted set.",
)
