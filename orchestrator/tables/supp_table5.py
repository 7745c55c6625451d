"""Supplement Table 5: how many parameters ours tunes, against each student's total."""

from __future__ import annotations

from orchestrator.tables._types import Col, Row, TableSpec, grid
from orchestrator.tables.names import pretty
from trainables.vocab import Method

# params/tuned of full_ft / wise_ft is the whole model, so they are not read.
OWN_HEAD_METHODS = (Method.ours, Method.wo_kd, Method.apt, Method.original)

# Student -> the paper's (tuned, total) millions; None where the paper has no such row.
PAPER = {
    "resnet101": (2.1, 45),
    "resnet152": (2.6, 60),
    "vit_small": (2.3, 48),
    "vit_base": (3.1, 88),
    "clip_rn50": (3.9, 102),
    "clip_rn101": (4.1, 119),
    "clip_vit_b16": (4.3, 149),
    "clip_vit_b32": (None, None),
    "clip_vit_l14_336": (5.6, 450),
    "lit_b16b": (4.4, 195),
}

SPEC = TableSpec(
    "supp_table5",
    "Supplement Table 5: tuned / total parameters (millions)",
    "table",
    "cell",
    where={"method": OWN_HEAD_METHODS},
    seed=None,
    needs=({"method": Method.original},),
    rows=tuple(Row(pretty(s), {"student": s}) for s in PAPER),
    cols=(
        Col("tuned (M)", "params/tuned", scale=1e-6, digits=2, paper_digits=1),
        Col("total (M)", "params/total", scale=1e-6, digits=1, paper_digits=0),
    ),
    paper=grid({pretty(s): v for s, v in PAPER.items()}, ("tuned (M)", "total (M)")),
    note="From cell runs the counts are at the run's profile settings (local: small inputs, 10 classes, "
    "with the three heads); `python -m orchestrator.aggregate --table supp_table5 --profile paper` "
    "counts the architectures at paper settings. CLIP totals include the text tower; CLIP ViT-B/32 is "
    "not in the paper's table; LiT-B/16B is not registered here.",
)
