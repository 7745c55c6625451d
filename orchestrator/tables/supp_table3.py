"""Supplement Table 3: does KD help? ImageNet-C accuracy without and with KD, per student ← teacher pair."""

from __future__ import annotations

from orchestrator.tables._types import Col, Row, TableSpec, grid
from orchestrator.tables.claims import improves
from orchestrator.tables.names import student_teacher
from trainables.vocab import Method

# (student, teacher) -> the paper's (w/o KD, ours) C accuracy.
PAPER = {
    ("resnet101", "resnet34"): (53.8, 55.3),
    ("clip_rn101", "resnet101"): (54.9, 56.7),
    ("clip_vit_b16", "vit_small"): (55.1, 57.4),
    ("clip_vit_b32", "vit_small"): (54.5, 57.1),
}
ROWS = tuple(Row(student_teacher(w), w) for w in ({"student": s, "teacher": t} for s, t in PAPER))

SPEC = TableSpec(
    "supp_table3",
    "Supplement Table 3: ImageNet-C accuracy, w/o KD vs ours",
    "table",
    "cell",
    where={"method": (Method.ours, Method.wo_kd)},
    rows=ROWS,
    cols=(Col("w/o KD", "acc/c", {"method": Method.wo_kd}), Col("ours", "acc/c", {"method": Method.ours})),
    paper=grid({row.label: v for row, v in zip(ROWS, PAPER.values())}, ("w/o KD", "ours")),
    claims=(
        improves(
            "KD beats w/o KD for every pair", "w/o KD", "ours", "pairs", "no pair with both methods", show_change=True
        ),
    ),
    needs=({"method": Method.ours}, {"method": Method.wo_kd}),
    note="Rows are student ← teacher; w/o KD cells use the same data per head, without soft targets.",
)
