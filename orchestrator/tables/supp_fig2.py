"""Supplement Figure 2: does robustifying cost transfer accuracy? Linear probes of original, complete FT, ours."""

from __future__ import annotations

from orchestrator.tables._types import Col, Row, TableSpec
from orchestrator.tables.claims import loses_and_keeps
from trainables.vocab import Method

# "ours keeps transfer accuracy" is qualitative in the paper: within this many points of the original.
KEEP_TRANSFER_PTS = 1.0

# Row label -> transfer dataset (the `{dataset}` in the column metrics).
TRANSFER = (
    ("Cars", "stanford_cars"),
    ("CIFAR-100", "cifar100"),
    ("Aircraft", "fgvc_aircraft"),
    ("SUN-397", "sun397"),
    ("Digits (local transfer)", "digits"),
)

SPEC = TableSpec(
    "supp_fig2",
    "Supplement Figure 2: transfer accuracy (linear probe), original vs complete FT vs ours",
    "figure",
    "cell",
    where={"method": (Method.original, Method.full_ft, Method.ours)},
    rows=tuple(Row(label, {}, dataset=ds) for label, ds in TRANSFER),
    cols=(
        Col("original", "acc/transfer/{dataset}", {"method": Method.original}),
        Col("complete FT", "acc/transfer/{dataset}", {"method": Method.full_ft}),
        Col("ours", "acc/transfer/{dataset}", {"method": Method.ours}),
    ),
    claims=(
        loses_and_keeps(
            f"complete fine-tuning loses transfer accuracy, ours keeps it "
            f"(within {KEEP_TRANSFER_PTS:g} point of the original)",
            "original",
            "complete FT",
            "ours",
            KEEP_TRANSFER_PTS,
            "transfer dataset",
        ),
    ),
    needs=({"method": Method.full_ft}, {"method": Method.ours}),
    plot="bar",
    ylabel="transfer accuracy (%)",
    note="Paper: CLIP ViT-L/14@336 student, ViT-B/16 teacher; Digits is the local profile's transfer set.",
)
