"""Snapshot tests of every renderer (Markdown, CSV, LaTeX, PNG, index) on fixed run DataFrames, plus the rules
the snapshots rely on: "—" for no data, ours beside the paper, `.89` F_correct, LaTeX escaping, stable PNG bytes.

Regenerate the snapshots after an intended change with `UPDATE_SNAPSHOTS=1 pytest tests/test_render.py`, then
review the diff under tests/snapshots/."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator import render
from orchestrator.tables import TABLE_IDS, TABLES, TableResult, build_table
from tests.test_tables import (
    efficiency_runs,
    fig1_runs,
    fig2_runs,
    multimodal_runs,
    table1_runs,
    table3_runs,
    table4_runs,
    table6_runs,
)

SNAP = Path(__file__).parent / "snapshots"
UPDATE = bool(os.environ.get("UPDATE_SNAPSHOTS"))


def _table5_runs() -> pd.DataFrame:
    from tests.test_tables import cell

    return pd.DataFrame(
        [
            cell(i, {"params/tuned": t, "params/total": n}, student=s, method="original", seed=0)
            for i, (s, t, n) in enumerate(
                [("resnet101", 1_234_567, 42_600_000), ("clip_vit_b16", 2_100_000, 149_600_000)]
            )
        ]
    )


FIXED = {
    "supp_table1": lambda: table1_runs(),
    "supp_table2": lambda: table1_runs(),
    "supp_table3": lambda: table3_runs([0.02, -0.01, 0.03, 0.02]),
    "supp_table4": lambda: table4_runs([0.50, 0.52, 0.51, 0.55, 0.56, 0.58]),
    "supp_table5": _table5_runs,
    "supp_table6": lambda: table6_runs({"resnet34": 0.7, "resnet50": 0.8}),
    "supp_fig1": lambda: fig1_runs(0.05),
    "supp_fig2": lambda: fig2_runs(0.70, 0.895),
    "supp_fig3": lambda: multimodal_runs("acc/c", 0.5, {"resnet101": 0.55, "vit_small": 0.6}),
    "supp_fig4": lambda: multimodal_runs("mfr", 0.9, {"resnet50": 0.8}),
    "main_fig1": lambda: efficiency_runs(100.0, 0.59),
}
TEXT = {
    "md": lambda r: render.to_markdown(r, image=f"{r.spec.id}.png" if r.spec.kind == "figure" else None),
    "csv": render.to_csv,
    "tex": render.to_latex,
}


def result(tid: str) -> TableResult:
    return build_table(TABLES[tid], FIXED[tid]())


def check_snapshot(name: str, got: str) -> None:
    snap = SNAP / name
    if UPDATE or not snap.exists():
        snap.write_text(got, encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"snapshot {name} was missing and has been written; review it and rerun")
    assert got == snap.read_text(encoding="utf-8"), f"{name} differs (UPDATE_SNAPSHOTS=1 to accept)"


def test_fixed_data_covers_every_table() -> None:
    assert set(FIXED) == set(TABLE_IDS)


@pytest.mark.parametrize("ext", list(TEXT))
@pytest.mark.parametrize("tid", TABLE_IDS)
def test_text_snapshots(tid: str, ext: str) -> None:
    check_snapshot(f"{tid}.{ext}", TEXT[ext](result(tid)))


def _pixels(png: bytes) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(png), format="png")


@pytest.mark.parametrize("tid", [t for t in TABLE_IDS if TABLES[t].kind == "figure"])
def test_png_snapshots(tid: str) -> None:
    """Compared pixel-wise with a small tolerance: byte equality would break on another FreeType/matplotlib
    build, while a missing series, axis or label changes far more than 0.5 % of the pixels."""
    png = render.to_png(result(tid))
    snap = SNAP / f"{tid}.png"
    if UPDATE or not snap.exists():
        snap.write_bytes(png)
        if not UPDATE:
            pytest.fail(f"snapshot {snap.name} was missing and has been written; review it and rerun")
    got, want = _pixels(png), _pixels(snap.read_bytes())
    assert got.shape == want.shape
    differing = float((np.abs(got - want).max(axis=-1) > 0.1).mean())
    assert differing < 0.005, f"{tid}.png: {differing:.2%} of the pixels differ (UPDATE_SNAPSHOTS=1 to accept)"


def test_index_snapshot() -> None:
    items = [(result(t), [f for f in render.render_files(result(t))]) for t in ("supp_table1", "supp_fig1")]
    check_snapshot("index.md", render.index_markdown(items))
    assert "No table has data" in render.index_markdown([])


# ------------------------------------------------------------------------------------------------ rules


def test_png_bytes_are_deterministic_and_carry_no_software_tag() -> None:
    res = result("main_fig1")
    a, b = render.to_png(res), render.to_png(res)
    assert a == b and a[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"matplotlib" not in a and b"Software" not in a


def test_empty_figure_still_renders() -> None:
    png = render.to_png(build_table(TABLES["supp_fig1"], pd.DataFrame()))
    assert png[:4] == b"\x89PNG"


def test_markdown_shows_ours_beside_the_paper_and_dashes_for_no_data() -> None:
    md = render.to_markdown(result("supp_table1"))
    assert "| ours | 90.5 ± 0.7 (85.4) | — (79.1) |" in md  # IN with two seeds; V2 has no data
    assert "Digits (local transfer) †" in md and "† = not in the paper" in md
    # no per-example outcomes in these runs: no verdict, the points only, and the paper's points agree
    assert "- ? not enough data: ours ≥ each ablation on the shift average" in md
    assert "no per-example data: no interval" in md and "on the paper's numbers: points agree" in md
    assert "| w/o KLD | .78 ± .00 (.89) |" in render.to_markdown(result("supp_table2"))


def test_claims_section_marks_failures_and_missing_data() -> None:
    from tests.test_verdicts import _table3

    runs, outcomes = _table3("loss", np.random.default_rng(0))
    md = render.to_markdown(build_table(TABLES["supp_table3"], runs, outcomes.get))
    assert "- ✗ contradicted: KD beats w/o KD for every pair — 0/4 pairs ✓: RN-101 ← RN-34: " in md
    assert "improvement -" in md and "✗; CLIP RN-101" in md and "95 % paired bootstrap" in md
    empty = render.to_markdown(build_table(TABLES["supp_table3"], pd.DataFrame()))
    assert "- ? not enough data: KD beats w/o KD" in empty and "— (53.8)" in empty


def test_latex_is_escaped_booktabs() -> None:
    tex = render.to_latex(result("supp_table1"))
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"w/o U\_mc" in tex and r"$\pm$" in tex and r"\dag{}" in tex
    assert "—" not in tex and "±" not in tex and "U_mc" not in tex
    assert render.tex("a_b 50% R&D ← #1 {x} ~") == r"a\_b 50\% R\&D $\leftarrow$ \#1 \{x\} \textasciitilde{}"
    assert r"RN-101 $\leftarrow$ RN-34" in render.to_latex(result("supp_table3"))


def test_csv_has_mean_std_n_and_paper() -> None:
    df = pd.read_csv(io.StringIO(render.to_csv(result("supp_table1"))), index_col="row")
    assert df.loc["ours", "C"] == pytest.approx(70.5) and df.loc["ours", "C n"] == 2
    assert df.loc["ours", "C paper"] == 64.9 and pd.isna(df.loc["ours", "R"])


def test_render_files_names() -> None:
    assert set(render.render_files(result("supp_table4"))) == {"supp_table4.md", "supp_table4.csv", "supp_table4.tex"}
    files = render.render_files(result("supp_fig1"))
    assert set(files) == {f"supp_fig1.{e}" for e in ("md", "csv", "tex", "png")}
    assert "![Supplement Figure 1" in files["supp_fig1.md"] and "(supp_fig1.png)" in files["supp_fig1.md"]


@pytest.mark.parametrize("tid", TABLE_IDS)
def test_csv_numbers_carry_exactly_the_columns_digits(tid: str) -> None:
    """No float noise (`88.999999`): mean and std have the column's `digits` decimals, the paper's value its
    `paper_digits`, and the mean is the number the Markdown cell shows (read as text, not re-parsed floats)."""
    res = result(tid)
    df = pd.read_csv(io.StringIO(render.to_csv(res)), index_col="row", dtype=str, keep_default_na=False)
    checked = 0
    for c in res.mean.columns:
        col = res.col(c)
        paper_digits = col.digits if col.paper_digits is None else col.paper_digits
        want = {c: col.digits, f"{c} std": col.digits, f"{c} paper": paper_digits}
        for name, digits in want.items():
            for v in df[name]:
                if v:
                    decimals = len(v.split(".")[1]) if "." in v else 0
                    assert decimals == digits, f"{tid} {name}: {v!r} has {decimals} decimals, want {digits}"
                    checked += 1
        assert set(df[f"{c} n"]) <= {str(k) for k in range(100)}
        for row in res.mean.index:
            if df.loc[row, c]:
                assert render.fmt(float(df.loc[row, c]), col) == render.fmt(res.mean.loc[row, c], col)
    assert checked > 0
