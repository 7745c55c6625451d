"""Supplement Table 4: does a better (more robust) teacher give a better student?"""

from __future__ import annotations

from orchestrator.tables._types import Col, Row, TableSpec, grid
from orchestrator.tables.claims import mostly_monotone
from orchestrator.tables.names import pretty
from trainables.vocab import Method

# Teacher -> the paper's (teacher, student) C accuracy; the student is CLIP ViT-B/16.
PAPER = {
    "resnet34": (55.7, 54.3),
    "resnet50": (57.6, 56.9),
    "resnet101": (58.7, 57.2),
    "vit_small": (60.9, 57.4),
    "resnet152": (62.4, 59.7),
    "vit_base": (63.2, 62.5),
}

SPEC = TableSpec(
    "supp_table4",
    "Supplement Table 4: teacher vs student ImageNet-C accuracy",
    "table",
    "cell",
    where={"method": Method.ours},
    rows=tuple(Row(pretty(t), {"teacher": t}) for t in PAPER),
    # Teacher metrics are copied onto each cell run, so one cell run fills a whole row.
    cols=(
        Col("Teacher C acc", "teacher/acc/c"),
        Col("Student C acc", "acc/c"),
        Col("Teacher clean acc", "teacher/acc/clean", extra=True),
        Col("Student clean acc", "acc/clean", extra=True),
        Col("Original student C acc", "original/acc/c", extra=True),
    ),
    paper=grid({pretty(t): v for t, v in PAPER.items()}, ("Teacher C acc", "Student C acc")),
    claims=(
        mostly_monotone(
            "a better teacher gives a better student (mostly monotone)",
            "Teacher C acc",
            "Student C acc",
            "teacher",
            "C accuracy",
        ),
    ),
    needs=({"method": Method.ours},),
    note="Paper: CLIP ViT-B/16 student. The paper's RN-151 is ResNet-152 (RN-152 here); its text names "
    "ViT-Tiny, its table ViT-Base.",
)
