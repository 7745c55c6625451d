"""Supplement Figure 3 (§4): multi-modal students, taught by no teacher (APT) or a single-modal one."""

from __future__ import annotations

from orchestrator.tables._types import Col, TableSpec
from orchestrator.tables.claims import beats_apt
from orchestrator.tables.names import student_teacher
from trainables.vocab import Method

SPEC = TableSpec(
    "supp_fig3",
    "Supplement Figure 3: multi-modal students, teachers none (APT) / single-modal",
    "figure",
    "cell",
    where={"method": (Method.apt, Method.ours)},
    rows_from=("student", "teacher"),
    row_label=student_teacher,
    cols=(
        Col("IN-C", "acc/c"),
        Col("IN-R", "acc/r"),
        Col("ObjectNet", "acc/objectnet"),
        Col("ObjectNet-C", "acc/objectnet_c"),
        Col("clean", "acc/clean", extra=True),
    ),
    claims=(beats_apt("ours beats APT on C for every student and teacher", "IN-C"),),
    needs=({"method": Method.apt}, {"method": Method.ours}),
    plot="bar",
    ylabel="accuracy (%)",
    note="Paper: LiT-B/16B and UniCL Swin-T students (the sweep may use stand-ins).",
)
