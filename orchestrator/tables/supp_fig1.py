"""Supplement Figure 1: ImageNet-C accuracy against the data fraction a, APT vs ours."""

from __future__ import annotations

from orchestrator.tables._types import Col, TableSpec
from orchestrator.tables.claims import gap_grows
from trainables.vocab import Method

SPEC = TableSpec(
    "supp_fig1",
    "Supplement Figure 1: ImageNet-C accuracy vs data fraction a, APT vs ours",
    "figure",
    "cell",
    where={"method": (Method.apt, Method.ours)},
    rows_from=("data_fraction",),
    cols=(Col("APT", "acc/c", {"method": Method.apt}), Col("ours", "acc/c", {"method": Method.ours})),
    claims=(gap_grows("the ours-vs-APT gap grows with a (slope > 0)", "APT", "ours", "a", "fraction"),),
    needs=({"method": Method.apt}, {"method": Method.ours}),
    min_rows=2,
    plot="line",
    xlabel="data fraction a",
    ylabel="C accuracy (%)",
    note="Paper: RN-101 student, RN-34 teacher; the paper gives no numbers.",
)
