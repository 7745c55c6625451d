"""Table specs on synthetic runs (pure), snapshot tests of every renderer, and the claims where they hold and fail."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from orchestrator import render
from orchestrator.tables import TABLE_IDS, TABLES, build_table

SNAP = Path(__file__).parent / "snapshots"


def cell(i: int, metrics: dict, **params) -> dict:
    row = {"run_id": f"r{i}", "status": "FINISHED", "start_time": 1000 - i, "tags.kind": "cell",
           "tags.cell": f"c{i}"}
    row.update({f"params.{k}": str(v) for k, v in params.items()})
    row.update({f"metrics.{k}": v for k, v in metrics.items()})
    return row


def stage(i: int, kind: str, model: str, metrics: dict) -> dict:
    row = {"run_id": f"s{i}", "status": "FINISHED", "start_time": 1000 - i, "tags.kind": "stage",
           "tags.stage": kind, "tags.stage_key": f"k{i}", "params.model": model}
    row.update({f"metrics.{k}": v for k, v in metrics.items()})
    return row


def table4_runs(student_c: list[float]) -> pd.DataFrame:
    teachers = ["resnet34", "resnet50", "resnet101", "vit_small", "resnet152", "vit_base"]
    return pd.DataFrame([cell(i, {"teacher/acc/c": 0.5 + 0.02 * i, "acc/c": s, "acc/clean": 0.9,
                                  "original/acc/c": 0.4}, student="clip_vit_b16", teacher=t, method="ours", seed=0,
                              data_fraction=0.5)
                         for i, (t, s) in enumerate(zip(teachers, student_c))])


def table1_runs(seeds=(0,)) -> pd.DataFrame:
    rows, i = [], 0
    for seed in seeds:
        m = {}
        for rule, base in (("ours", 0.70), ("wo_kld", 0.68), ("wo_umc", 0.66), ("max_logit", 0.67)):
            m.update({f"acc/{rule}/clean": base + 0.2 + 0.01 * seed, f"acc/{rule}/c": base + 0.01 * seed,
                      f"f_correct/{rule}/clean": base + 0.1, f"f_correct/{rule}/c": base})
        m["acc/transfer/digits"] = 0.8
        rows.append(cell(i, m, method="ours", student="clip_vit_l14_336", teacher="vit_base", seed=seed))
        rows.append(cell(i + 1, {"acc/ours/clean": 0.88, "acc/ours/c": 0.65}, method="wo_kd",
                         student="clip_vit_l14_336", teacher="vit_base", seed=seed))
        i += 2
    return pd.DataFrame(rows)


def test_every_table_id_has_a_spec() -> None:
    assert set(TABLE_IDS) == {f"supp_table{i}" for i in range(1, 7)} | {f"supp_fig{i}" for i in range(1, 5)} | {
        "main_fig1"}


def test_table4_values_land_beside_the_paper() -> None:
    res = build_table(TABLES["supp_table4"], table4_runs([0.50, 0.52, 0.53, 0.55, 0.56, 0.58]))
    assert res.mean.loc["RN-34", "Teacher C acc"] == pytest.approx(50.0)
    assert res.mean.loc["ViT-B", "Student C acc"] == pytest.approx(58.0)
    assert res.paper.loc["ViT-S", "Teacher C acc"] == 60.9 and res.paper.loc["RN-152", "Student C acc"] == 59.7
    assert res.claims[0].holds is True


def test_table4_claim_fails_when_students_get_worse() -> None:
    res = build_table(TABLES["supp_table4"], table4_runs([0.60, 0.58, 0.55, 0.52, 0.51, 0.50]))
    assert res.claims[0].holds is False and "rho" in res.claims[0].detail


def test_table1_rules_seeds_and_avg_shifts() -> None:
    res = build_table(TABLES["supp_table1"], table1_runs(seeds=(0, 1)))
    assert res.mean.loc["ours", "C"] == pytest.approx(70.5)
    assert res.std.loc["ours", "C"] == pytest.approx(0.7071, abs=1e-3)
    assert res.mean.loc["w/o KD", "C"] == pytest.approx(65.0)
    assert res.mean.loc["w/o KLD", "IN"] == pytest.approx(88.5)
    assert pd.isna(res.mean.loc["ours", "R"])                 # no data -> no guess
    assert res.mean.loc["ours", "Avg shifts"] == pytest.approx(70.5)
    assert res.paper.loc["max logit", "Avg shifts"] == 73.7   # the paper's printed value, typo noted
    assert res.claims[0].holds is True


def test_table1_claim_fails_when_an_ablation_wins() -> None:
    runs = table1_runs()
    runs.loc[runs["params.method"] == "wo_kd", "metrics.acc/ours/c"] = 0.95
    assert build_table(TABLES["supp_table1"], runs).claims[0].holds is False


def test_table6_from_stage_runs() -> None:
    runs = pd.DataFrame([stage(0, "naive_teacher", "resnet34", {"mfr": 1.0}),
                         stage(1, "robustify_teacher", "resnet34", {"mfr": 0.7}),
                         stage(2, "naive_teacher", "resnet50", {"mfr": 1.1}),
                         stage(3, "robustify_teacher", "resnet50", {"mfr": 1.3})])
    res = build_table(TABLES["supp_table6"], runs)
    assert res.mean.loc["RN-34", "naive"] == pytest.approx(100.0) and res.mean.loc["RN-34", "AugMix+DA"] == 70.0
    assert res.claims[0].holds is False and "RN-50" in res.claims[0].detail


def test_fig1_gap_claim() -> None:
    rows = []
    for i, a in enumerate([0.1, 0.5, 1.0]):
        rows.append(cell(2 * i, {"acc/c": 0.5}, method="apt", data_fraction=a, student="resnet101", teacher="none"))
        rows.append(cell(2 * i + 1, {"acc/c": 0.5 + 0.05 * a}, method="ours", data_fraction=a, student="resnet101",
                         teacher="resnet34"))
    res = build_table(TABLES["supp_fig1"], pd.DataFrame(rows))
    assert list(res.mean.index) == ["0.1", "0.5", "1.0"]
    assert res.claims[0].holds is True


def test_duplicates_keep_the_newest_finished() -> None:
    runs = table4_runs([0.5] * 6)
    dup = runs.iloc[[0]].copy()
    dup["start_time"], dup["metrics.acc/c"] = 5000, 0.9
    res = build_table(TABLES["supp_table4"], pd.concat([runs, dup]))
    assert res.mean.loc["RN-34", "Student C acc"] == pytest.approx(90.0)
    failed = dup.copy()
    failed["status"], failed["start_time"], failed["metrics.acc/c"] = "FAILED", 6000, 0.1
    res = build_table(TABLES["supp_table4"], pd.concat([runs, dup, failed]))
    assert res.mean.loc["RN-34", "Student C acc"] == pytest.approx(90.0)


RENDERERS = {"md": render.to_markdown, "csv": render.to_csv, "tex": render.to_latex}


@pytest.mark.parametrize("ext", list(RENDERERS))
@pytest.mark.parametrize("table, runs", [("supp_table1", table1_runs((0, 1))),
                                         ("supp_table4", table4_runs([0.5, 0.52, 0.53, 0.55, 0.56, 0.58]))])
def test_renderer_snapshots(table: str, runs: pd.DataFrame, ext: str) -> None:
    text = RENDERERS[ext](build_table(TABLES[table], runs))
    snap = SNAP / f"{table}.{ext}"
    if os.environ.get("UPDATE_SNAPSHOTS") or not snap.exists():
        snap.write_text(text)
        if not os.environ.get("UPDATE_SNAPSHOTS"):
            pytest.fail(f"snapshot {snap.name} was missing and has been written; rerun")
    assert text == snap.read_text()


def test_renderers_show_missing_and_escape_latex() -> None:
    res = build_table(TABLES["supp_table1"], table1_runs())
    md, tex = render.to_markdown(res), render.to_latex(res)
    assert "— (89.9)" in md and "✓ holds" in md
    assert r"\toprule" in tex and r"w/o U\_mc" in tex and "---" in tex
    assert "—" not in tex


def test_png_is_deterministic() -> None:
    rows = [cell(i, {"acc/c": 0.5 + 0.01 * i}, method=m, data_fraction=a, student="resnet101", teacher="t")
            for i, (m, a) in enumerate([("apt", 0.1), ("ours", 0.1), ("apt", 0.5), ("ours", 0.5)])]
    res = build_table(TABLES["supp_fig1"], pd.DataFrame(rows))
    a, b = render.to_png(res), render.to_png(res)
    assert a == b and a[:8] == b"\x89PNG\r\n\x1a\n"
