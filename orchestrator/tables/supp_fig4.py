"""Supplement Figure 4 (§5): prediction consistency (mFR) of CLIP students, no teacher (APT) or a single-modal one."""

from __future__ import annotations

from orchestrator.tables._types import Col, TableSpec
from orchestrator.tables.claims import beats_apt
from orchestrator.tables.names import student_teacher
from trainables.vocab import Method

SPEC = TableSpec(
    "supp_fig4",
    "Supplement Figure 4: mFR of CLIP students, teachers none (APT) / single-modal",
    "figure",
    "cell",
    where={"method": (Method.apt, Method.ours)},
    rows_from=("student", "teacher"),
    row_label=student_teacher,
    cols=(Col("mFR", "mfr"), Col("mean FP", "fp/mean", extra=True, digits=2)),
    claims=(beats_apt("ours has a lower mFR than APT for every student and teacher", "mFR", lower_is_better=True),),
    needs=({"method": Method.apt}, {"method": Method.ours}),
    plot="bar",
    ylabel="mFR × 100",
    note="mFR relative to the sweep's reference model; mean FP is the raw flip probability × 100.",
)
