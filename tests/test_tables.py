"""Table specs on hand-made run DataFrames (pure, no MLflow): values land in the right row and column beside the
paper's, seeds aggregate to mean ± std, and every claim is shown to hold on data where it holds and to fail
where it fails."""

from __future__ import annotations

import math
import subprocess
import sys

import pandas as pd
import pytest

from orchestrator.tables import AVG_SHIFTS, TABLE_IDS, TABLES, build_table

RULES = ("ours", "wo_kld", "wo_umc", "max_logit")


def cell(i: int, metrics: dict, status: str = "FINISHED", key: str | None = None, sweep: str = "s1", **params) -> dict:
    """One cell run as `tracking.runs_dataframe` returns it."""
    row = {
        "run_id": f"r{i}",
        "status": status,
        "start_time": 1000 + i,
        "tags.kind": "cell",
        "tags.cell": key or f"c{i}",
        "tags.sweep_id": sweep,
    }
    row.update({f"params.{k}": str(v) for k, v in params.items()})
    row.update({f"metrics.{k}": v for k, v in metrics.items()})
    return row


def stage(i: int, kind: str, model: str, metrics: dict, seed: int = 0) -> dict:
    row = {
        "run_id": f"s{i}",
        "status": "FINISHED",
        "start_time": 1000 + i,
        "tags.kind": "stage",
        "tags.stage": kind,
        "tags.stage_key": f"k{i}",
        "params.model": model,
        "params.seed": str(seed),
    }
    row.update({f"metrics.{k}": v for k, v in metrics.items()})
    return row


def table1_runs(seeds=(0, 1), kd_c: float = 0.65, sets=("clean", "c")) -> pd.DataFrame:
    """ours (all four rules) and w/o KD, per seed; rule r on set s scores base(r) + 0.01·seed (+0.2 on clean)."""
    base = {"ours": 0.70, "wo_kld": 0.68, "wo_umc": 0.66, "max_logit": 0.67}
    rows = []
    for seed in seeds:
        m = {"acc/transfer/digits": 0.8}
        for rule in RULES:
            for s in sets:
                m[f"acc/{rule}/{s}"] = base[rule] + 0.01 * seed + (0.2 if s == "clean" else 0.0)
                m[f"f_correct/{rule}/{s}"] = base[rule] + (0.1 if s == "clean" else 0.0)
        rows.append(cell(2 * seed, m, method="ours", student="clip_vit_l14_336", teacher="vit_base", seed=seed))
        kd = {f"acc/ours/{s}": 0.88 if s == "clean" else kd_c for s in sets}
        rows.append(
            cell(
                2 * seed + 1,
                {**kd, "acc/transfer/digits": 0.7},
                method="wo_kd",
                student="clip_vit_l14_336",
                teacher="vit_base",
                seed=seed,
            )
        )
    return pd.DataFrame(rows)


TEACHERS = ["resnet34", "resnet50", "resnet101", "vit_small", "resnet152", "vit_base"]


def table4_runs(student_c: list[float], teacher_c: list[float] | None = None) -> pd.DataFrame:
    teacher_c = teacher_c or [0.50 + 0.02 * i for i in range(len(student_c))]
    rows = [
        cell(
            i,
            {"teacher/acc/c": tc, "acc/c": s, "acc/clean": 0.9, "original/acc/c": 0.4},
            student="clip_vit_b16",
            teacher=t,
            method="ours",
            seed=0,
            data_fraction=0.5,
        )
        for i, (t, s, tc) in enumerate(zip(TEACHERS, student_c, teacher_c))
    ]
    rows.append(cell(99, {"acc/c": 0.99}, student="clip_vit_b16", teacher="none", method="apt", seed=0))
    return pd.DataFrame(rows)


def table3_runs(gains: list[float]) -> pd.DataFrame:
    pairs = [
        ("resnet101", "resnet34"),
        ("clip_rn101", "resnet101"),
        ("clip_vit_b16", "vit_small"),
        ("clip_vit_b32", "vit_small"),
    ]
    rows = []
    for i, ((s, t), g) in enumerate(zip(pairs, gains)):
        rows.append(cell(2 * i, {"acc/c": 0.50 + 0.01 * i}, student=s, teacher=t, method="wo_kd", seed=0))
        rows.append(cell(2 * i + 1, {"acc/c": 0.50 + 0.01 * i + g}, student=s, teacher=t, method="ours", seed=0))
    return pd.DataFrame(rows)


def table6_runs(robust: dict[str, float]) -> pd.DataFrame:
    rows = []
    for i, (t, r) in enumerate(robust.items()):
        rows.append(stage(2 * i, "naive_teacher", t, {"mfr": 1.0, "acc/c": 0.4}))
        rows.append(stage(2 * i + 1, "robustify_teacher", t, {"mfr": r, "acc/c": 0.6}))
    rows.append(stage(50, "build_pool", "none", {"time/train_s": 3.0}))
    return pd.DataFrame(rows)


def fig1_runs(gain_per_a: float) -> pd.DataFrame:
    rows = []
    for i, a in enumerate([1.0, 0.1, 0.5]):  # logged out of order: rows must come out sorted
        rows.append(
            cell(2 * i, {"acc/c": 0.5}, method="apt", data_fraction=a, student="resnet101", teacher="none", seed=0)
        )
        rows.append(
            cell(
                2 * i + 1,
                {"acc/c": 0.51 + gain_per_a * a},
                method="ours",
                data_fraction=a,
                student="resnet101",
                teacher="resnet34",
                seed=0,
            )
        )
    return pd.DataFrame(rows)


def fig2_runs(full_ft: float, ours: float) -> pd.DataFrame:
    return pd.DataFrame(
        [
            cell(i, {"acc/transfer/digits": v, "acc/c": 0.5}, method=m, student="clip_vit_l14_336", seed=0)
            for i, (m, v) in enumerate([("original", 0.90), ("full_ft", full_ft), ("ours", ours)])
        ]
    )


def multimodal_runs(metric: str, apt: float, ours: dict[str, float]) -> pd.DataFrame:
    rows = [cell(0, {metric: apt}, student="clip_rn50", teacher="none", method="apt", seed=0)]
    for i, (t, v) in enumerate(ours.items(), start=1):
        rows.append(cell(i, {metric: v}, student="clip_rn50", teacher=t, method="ours", seed=0))
    rows.append(cell(9, {metric: 0.0}, student="clip_rn50", teacher="vit_small", method="wo_kd", seed=0))
    return pd.DataFrame(rows)


def efficiency_runs(t_ours: float, c_ours: float) -> pd.DataFrame:
    spec = [("ours", c_ours, t_ours), ("full_ft", 0.60, 1000.0), ("wise_ft", 0.58, 1000.0)]
    return pd.DataFrame(
        [
            cell(
                i,
                {"acc/c": c, "time/pipeline_s": t, "time/train_s": t / 2},
                method=m,
                student="clip_rn50",
                teacher="vit_small" if m == "ours" else "none",
                seed=0,
            )
            for i, (m, c, t) in enumerate(spec)
        ]
    )


# ------------------------------------------------------------------------------------------------ the registry


def test_every_item_of_the_paper_has_a_spec() -> None:
    assert TABLE_IDS == tuple(f"supp_table{i}" for i in range(1, 7)) + tuple(f"supp_fig{i}" for i in range(1, 5)) + (
        "main_fig1",
    )
    assert set(TABLES) == set(TABLE_IDS)
    for tid, spec in TABLES.items():
        assert spec.id == tid and spec.kind in ("table", "figure") and spec.source in ("cell", "stage")
        assert spec.kind == "figure" or spec.paper, tid  # every table has the paper's numbers
        assert spec.kind == "table" or spec.plot, tid


def test_tables_module_imports_neither_torch_mlflow_nor_pandas() -> None:
    """spec.py imports TABLE_IDS while validating a sweep file: that must stay cheap."""
    code = (
        "import sys, orchestrator.tables; "
        "print(sorted(m for m in ('torch', 'mlflow', 'pandas', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_paper_values_and_the_typo_in_table1() -> None:
    """The reference values as printed; every printed 'Avg shifts' matches its six shifts except max logit's."""
    paper = TABLES["supp_table1"].paper
    shifts = ["V2", "R", "Sketch", "ObjectNet", "A", "C"]
    for row in ("ours", "w/o KLD", "w/o U_mc", "max logit", "w/o KD"):
        avg = sum(paper[(row, c)] for c in shifts) / 6
        assert (abs(avg - paper[(row, AVG_SHIFTS)]) < 0.051) == (row != "max logit"), (row, avg)
    assert paper[("max logit", AVG_SHIFTS)] == 73.7 and "73.9" in TABLES["supp_table1"].note
    assert TABLES["supp_table2"].paper[("ours", "IN")] == 0.95
    assert TABLES["supp_table3"].paper[("CLIP ViT-B/32 ← ViT-S", "ours")] == 57.1
    assert TABLES["supp_table4"].paper[("RN-152", "Teacher C acc")] == 62.4
    assert TABLES["supp_table5"].paper[("CLIP ViT-L/14@336", "total (M)")] == 450
    assert TABLES["supp_table6"].paper[("ViT-S", "AugMix+DA")] == 33.4


@pytest.mark.parametrize("tid", [t for t in TABLE_IDS if TABLES[t].claims and TABLES[t].paper])
def test_claims_hold_on_the_papers_own_numbers(tid: str) -> None:
    """How a claim is encoded is checked against the paper: its own numbers must satisfy it."""
    res = build_table(TABLES[tid], pd.DataFrame())
    assert [c.points for c in res.paper_claims] == [True] * len(TABLES[tid].claims), res.paper_claims
    # ... and, with no per-example data, no verdict is claimed from those points alone
    assert all(c.holds is None and "no per-example data: no interval" in c.detail for c in res.paper_claims)
    assert all(c.holds is None for c in res.claims)  # no runs: not enough data, never a verdict


# ------------------------------------------------------------------------------------------------ per table


def test_table1_rules_seeds_and_averages() -> None:
    res = build_table(TABLES["supp_table1"], table1_runs())
    assert res.mean.loc["ours", "C"] == pytest.approx(70.5)
    assert res.std.loc["ours", "C"] == pytest.approx(math.sqrt(0.5))  # seeds 0/1 → 70, 71
    assert res.n.loc["ours", "C"] == 2
    assert res.mean.loc["w/o KLD", "IN"] == pytest.approx(88.5)  # rule wo_kld of the ours runs
    assert res.mean.loc["max logit", "C"] == pytest.approx(67.5)
    assert res.mean.loc["w/o KD", "C"] == pytest.approx(65.0)  # the wo_kd runs, rule ours
    assert res.mean.loc["w/o KD", "Digits (local transfer)"] == pytest.approx(70.0)
    assert pd.isna(res.mean.loc["ours", "R"]) and res.n.loc["ours", "R"] == 0  # no data: no guess
    assert pd.isna(res.mean.loc["ours", AVG_SHIFTS])  # not all six shifts: no paper average
    local_avg = "Avg C (shifts with data)"
    assert res.mean.loc["ours", local_avg] == pytest.approx(70.5) and res.col(local_avg).extra
    assert res.paper.loc["ours", "R"] == 89.9 and res.paper.loc["max logit", AVG_SHIFTS] == 73.7
    assert pd.isna(res.paper.loc["ours", local_avg])
    assert list(res.mean.columns)[-3:] == [AVG_SHIFTS, "Digits (local transfer)", local_avg]


def test_table1_on_the_paper_profile_averages_all_six_shifts() -> None:
    sets = ("clean", "v2", "r", "sketch", "objectnet", "a", "c")
    res = build_table(TABLES["supp_table1"], table1_runs(seeds=(0,), sets=sets))
    assert res.mean.loc["ours", AVG_SHIFTS] == pytest.approx(70.0)
    assert res.mean.loc["w/o KD", AVG_SHIFTS] == pytest.approx(65.0)
    assert not [c for c in res.mean.columns if "shifts with data" in c]
    assert res.claims[0].points is True and res.claims[0].detail.startswith("Avg shifts: ours 70.0")


def test_table2_fcorrect_is_a_fraction() -> None:
    res = build_table(TABLES["supp_table2"], table1_runs())
    assert list(res.mean.index) == ["w/o KLD", "w/o U_mc", "ours"]
    assert res.mean.loc["ours", "IN"] == pytest.approx(0.80) and res.mean.loc["w/o U_mc", "C"] == pytest.approx(0.66)
    assert res.paper.loc["w/o KLD", "IN"] == 0.89


def test_table3_pairs() -> None:
    res = build_table(TABLES["supp_table3"], table3_runs([0.02, 0.01, 0.03, 0.02]))
    assert res.mean.loc["RN-101 ← RN-34", "w/o KD"] == pytest.approx(50.0)
    assert res.mean.loc["CLIP ViT-B/32 ← ViT-S", "ours"] == pytest.approx(55.0)
    assert res.paper.loc["CLIP RN-101 ← RN-101", "w/o KD"] == 54.9


def test_table4_reads_teacher_metrics_copied_onto_cells() -> None:
    res = build_table(TABLES["supp_table4"], table4_runs([0.50, 0.52, 0.53, 0.55, 0.56, 0.58]))
    assert list(res.mean.index) == ["RN-34", "RN-50", "RN-101", "ViT-S", "RN-152", "ViT-B"]
    assert res.mean.loc["RN-34", "Teacher C acc"] == pytest.approx(50.0)
    assert res.mean.loc["ViT-B", "Student C acc"] == pytest.approx(58.0)  # the APT run (0.99) is not read
    assert res.mean.loc["RN-50", "Original student C acc"] == pytest.approx(40.0)
    assert res.paper.loc["ViT-S", "Teacher C acc"] == 60.9 and res.paper.loc["RN-152", "Student C acc"] == 59.7


def test_table5_counts_in_millions_without_full_ft() -> None:
    runs = pd.DataFrame(
        [
            cell(
                0,
                {"params/tuned": 2_345_678, "params/total": 44_500_000},
                student="resnet101",
                method="original",
                seed=0,
            ),
            cell(
                1, {"params/tuned": 2_345_678, "params/total": 44_500_000}, student="resnet101", method="ours", seed=0
            ),
            cell(
                2,
                {"params/tuned": 44_500_000, "params/total": 44_500_000},
                student="resnet101",
                method="full_ft",
                seed=0,
            ),
        ]
    )
    res = build_table(TABLES["supp_table5"], runs)
    assert res.mean.loc["RN-101", "tuned (M)"] == pytest.approx(2.345678)
    assert res.mean.loc["RN-101", "total (M)"] == pytest.approx(44.5)
    assert not res.warnings  # counts are not seeded: two methods agreeing is no mix-up
    assert res.paper.loc["LiT-B/16B", "tuned (M)"] == 4.4 and pd.isna(res.paper.loc["CLIP ViT-B/32", "tuned (M)"])


def test_table6_from_stage_runs() -> None:
    res = build_table(TABLES["supp_table6"], table6_runs({"resnet34": 0.7, "resnet50": 1.3}))
    assert res.mean.loc["RN-34", "naive"] == pytest.approx(100.0)
    assert res.mean.loc["RN-34", "AugMix+DA"] == pytest.approx(70.0)
    assert res.mean.loc["RN-50", "AugMix+DA C acc"] == pytest.approx(60.0)
    assert pd.isna(res.mean.loc["RN-101", "naive"]) and res.paper.loc["RN-101", "naive"] == 52.7


def test_fig1_rows_are_sorted_fractions() -> None:
    res = build_table(TABLES["supp_fig1"], fig1_runs(0.05))
    assert list(res.mean.index) == ["0.1", "0.5", "1.0"]
    assert res.mean.loc["1.0", "ours"] == pytest.approx(56.0) and res.mean.loc["0.1", "APT"] == pytest.approx(50.0)
    assert res.paper.isna().all().all()


def test_fig2_rows_are_transfer_datasets() -> None:
    res = build_table(TABLES["supp_fig2"], fig2_runs(0.7, 0.9))
    assert res.mean.loc["Digits (local transfer)", "complete FT"] == pytest.approx(70.0)
    assert pd.isna(res.mean.loc["Cars", "ours"])


def test_fig3_rows_are_student_and_teacher_with_apt_first() -> None:
    res = build_table(TABLES["supp_fig3"], multimodal_runs("acc/c", 0.5, {"vit_small": 0.6, "resnet101": 0.55}))
    assert list(res.mean.index) == ["CLIP RN-50 ← none (APT)", "CLIP RN-50 ← RN-101", "CLIP RN-50 ← ViT-S"]
    assert res.mean.loc["CLIP RN-50 ← ViT-S", "IN-C"] == pytest.approx(60.0)  # the w/o KD run is not read


def test_main_fig1_points() -> None:
    res = build_table(TABLES["main_fig1"], efficiency_runs(100.0, 0.59))
    assert list(res.mean.index) == ["CLIP RN-50 ours", "CLIP RN-50 complete FT", "CLIP RN-50 WiSE-FT"]
    assert res.mean.loc["CLIP RN-50 ours", "training time (s)"] == pytest.approx(100.0)
    assert res.mean.loc["CLIP RN-50 WiSE-FT", "C acc"] == pytest.approx(58.0)


# ------------------------------------------------------------------------------------------------ run selection


def test_duplicate_cell_keys_keep_the_newest_finished() -> None:
    runs = table4_runs([0.5] * 6)
    newer = cell(
        100,
        {"teacher/acc/c": 0.5, "acc/c": 0.9},
        key="c0",
        student="clip_vit_b16",
        teacher="resnet34",
        method="ours",
        seed=0,
    )
    failed = cell(
        200,
        {"acc/c": 0.1},
        status="FAILED",
        key="c0",
        student="clip_vit_b16",
        teacher="resnet34",
        method="ours",
        seed=0,
    )
    res = build_table(TABLES["supp_table4"], pd.concat([runs, pd.DataFrame([newer, failed])]))
    assert res.mean.loc["RN-34", "Student C acc"] == pytest.approx(90.0) and res.n.loc["RN-34", "Student C acc"] == 1


def test_mixed_configurations_and_sweeps_are_reported() -> None:
    runs = table4_runs([0.5] * 6)
    other = cell(300, {"acc/c": 0.7}, sweep="s2", student="vit_small", teacher="resnet34", method="ours", seed=0)
    res = build_table(TABLES["supp_table4"], pd.concat([runs, pd.DataFrame([other])]))
    assert res.mean.loc["RN-34", "Student C acc"] == pytest.approx(60.0)
    assert any("2 sweep invocations" in w for w in res.warnings)
    assert any("(e.g. RN-34 / Student C acc: 2 runs but only 1 seed(s))" in w for w in res.warnings)


# ------------------------------------------------------------------------------------------------ claims


def _claim(tid: str, runs: pd.DataFrame):
    (claim,) = build_table(TABLES[tid], runs).claims
    return claim


def test_t1_ours_vs_ablations() -> None:
    assert _claim("supp_table1", table1_runs(kd_c=0.65)).points is True
    failing = _claim("supp_table1", table1_runs(kd_c=0.95))
    assert failing.points is False and "vs w/o KD 95.0" in failing.detail


def test_t2_ours_highest_fcorrect() -> None:
    assert _claim("supp_table2", table1_runs()).points is True
    runs = table1_runs()
    runs["metrics.f_correct/wo_umc/c"] = 0.99
    c = _claim("supp_table2", runs)
    assert c.points is False and "w/o U_mc 0.88" in c.detail


def test_t3_kd_beats_wo_kd() -> None:
    assert _claim("supp_table3", table3_runs([0.02, 0.01, 0.03, 0.02])).points is True
    c = _claim("supp_table3", table3_runs([0.02, -0.01, 0.03, 0.02]))
    assert c.points is False and "(-1.0)" in c.detail


def test_t4_better_teacher_better_student() -> None:
    c = _claim("supp_table4", table4_runs([0.50, 0.52, 0.51, 0.55, 0.56, 0.58]))
    assert c.points is True and "Spearman rho 0.94" in c.detail and "4/5 steps up" in c.detail
    c = _claim("supp_table4", table4_runs([0.60, 0.58, 0.55, 0.52, 0.51, 0.50]))
    assert c.points is False and "rho -1.00" in c.detail and "0/5" in c.detail
    c = _claim("supp_table4", table4_runs([0.5, 0.6]))
    assert c.points is None and "2 teacher(s)" in c.detail


def test_t6_robust_teachers_flip_less() -> None:
    assert _claim("supp_table6", table6_runs({"resnet34": 0.7, "resnet50": 0.8})).points is True
    c = _claim("supp_table6", table6_runs({"resnet34": 0.7, "resnet50": 1.3}))
    assert c.points is False and "RN-50: 100.0 → 130.0" in c.detail


def test_fig1_gap_grows_with_fraction() -> None:
    c = _claim("supp_fig1", fig1_runs(0.05))
    assert c.points is True and "slope +5.00" in c.detail
    assert _claim("supp_fig1", fig1_runs(-0.05)).points is False


def test_fig2_transfer_kept() -> None:
    assert _claim("supp_fig2", fig2_runs(full_ft=0.70, ours=0.895)).points is True
    assert _claim("supp_fig2", fig2_runs(full_ft=0.70, ours=0.80)).points is False  # ours loses it too
    assert _claim("supp_fig2", fig2_runs(full_ft=0.95, ours=0.90)).points is False  # complete FT keeps it


def test_fig3_and_fig4_ours_vs_apt() -> None:
    assert _claim("supp_fig3", multimodal_runs("acc/c", 0.5, {"resnet101": 0.55, "vit_small": 0.6})).points is True
    assert _claim("supp_fig3", multimodal_runs("acc/c", 0.5, {"resnet101": 0.45, "vit_small": 0.6})).points is False
    assert _claim("supp_fig4", multimodal_runs("mfr", 0.9, {"resnet50": 0.8})).points is True
    c = _claim("supp_fig4", multimodal_runs("mfr", 0.9, {"resnet50": 1.1}))
    assert c.points is False and "CLIP RN-50 ← RN-50: 110.0 vs APT 90.0" in c.detail


def test_main_fig1_cheaper_at_comparable_accuracy() -> None:
    c = _claim("main_fig1", efficiency_runs(t_ours=100.0, c_ours=0.59))
    assert c.points is True and "(10.0×)" in c.detail
    assert _claim("main_fig1", efficiency_runs(t_ours=800.0, c_ours=0.59)).points is False  # not much cheaper
    assert _claim("main_fig1", efficiency_runs(t_ours=100.0, c_ours=0.50)).points is False  # not comparable
    assert _claim("main_fig1", efficiency_runs(100.0, 0.59).iloc[[0]]).points is None  # no complete FT


def test_complete_means_the_runs_of_the_papers_item_are_there() -> None:
    """What `aggregate(tables=None)` renders: a one-fraction Figure 1 or an APT-less figure is not rendered."""
    assert build_table(TABLES["supp_fig1"], fig1_runs(0.05)).complete
    assert not build_table(TABLES["supp_fig1"], fig1_runs(0.05).iloc[:2]).complete  # one fraction
    assert not build_table(TABLES["supp_fig1"], table4_runs([0.5] * 6)).complete
    assert build_table(TABLES["supp_table4"], table4_runs([0.5] * 6)).complete
    assert not build_table(TABLES["supp_table3"], table4_runs([0.5] * 6)).complete  # no w/o KD
    assert not build_table(TABLES["main_fig1"], efficiency_runs(1.0, 0.5).iloc[[0]]).complete


# ------------------------------------------------------------------------------------------------ regime checks


def _regime_runs(teacher_c: float, gain: float, teacher_clean: float) -> pd.DataFrame:
    m = {
        "acc/c": 0.5,
        "teacher/acc/c": teacher_c,
        "teacher/acc/clean": teacher_clean,
        "original/acc/c": 0.45,
        "s0/acc/clean_gain_last": gain,
        "teacher/init/acc/clean_gain_last": 0.002,
    }
    return pd.DataFrame(
        [cell(i, m, student="clip_vit_b16", teacher=t, method="ours", seed=0) for i, t in enumerate(["resnet34"])]
    )


def test_regime_checks_hold_and_fail_with_their_numbers() -> None:
    """Each regime check holds on runs in the paper's regime and fails, with the margin, on runs outside it."""
    good = {
        a.text.split(" (")[0]: a for a in build_table(TABLES["supp_table4"], _regime_runs(0.6, 0.003, 0.9)).assumptions
    }
    assert all(a.holds for a in good.values()) and len(good) == 4
    assert "resnet34 60.0 vs S0 45.0 (+15.0)" in good["teacher more robust than the original student S0 on C"].detail
    bad = build_table(TABLES["supp_table4"], _regime_runs(0.4, 0.05, 0.12)).assumptions
    failing = {a.text.split(" (")[0]: a.detail for a in bad if a.holds is False}
    assert "(-5.0)" in failing["teacher more robust than the original student S0 on C"]
    assert "+5.0 points" in failing["S0 pretrained to a plateau"]
    assert "at chance" in failing["no teacher at chance"]
    from orchestrator.render import to_markdown
    from orchestrator.tables.regime import regime_warnings

    assert "warning: S0 pretrained to a plateau" in to_markdown(
        build_table(TABLES["supp_table4"], _regime_runs(0.4, 0.05, 0.12))
    )
    assert len(regime_warnings("supp_table4", bad)) == 3


def test_regime_checks_on_teacher_stage_runs() -> None:
    runs = table6_runs({"resnet34": 0.7}).assign(**{"metrics.acc/clean": [0.95, 0.1, None]})
    (chance,) = build_table(TABLES["supp_table6"], runs).assumptions
    assert chance.holds is False
    assert chance.detail == "resnet34 naive_teacher clean 95.0; resnet34 robustify_teacher clean 10.0 (at chance)"


def test_teacher_vs_s0_is_decided_by_an_interval_over_c_images() -> None:
    """With per-example outcomes the margin carries its interval: a teacher clearly ahead holds; one half a point
    ahead on 300 images is not established as more robust (its interval covers 0), though its mean is higher."""
    import numpy as np

    rng = np.random.default_rng(0)
    s0 = rng.random((15, 5, 300)) < 0.6

    def check(flip_up: float) -> tuple[bool | None, str]:
        noisy = s0 ^ (rng.random(s0.shape) < 0.1)  # another model: a tenth of the answers differ either way
        teacher = noisy | (rng.random(s0.shape) < flip_up)  # ... plus a share of the wrong ones made right
        runs = _regime_runs(float(teacher.mean()), 0.003, 0.9).assign(**{"metrics.original/acc/c": float(s0.mean())})
        out = {runs["run_id"][0]: {"teacher/acc/c": teacher, "original/acc/c": s0}}
        (a,) = [a for a in build_table(TABLES["supp_table4"], runs, out.get).assumptions if "S0 on C" in a.text]
        return a.holds, a.detail

    holds, detail = check(0.2)
    assert holds is True and "95 % bootstrap interval over C images" in detail and "[+" in detail, detail
    holds, detail = check(0.01)
    assert holds is False and "[-" in detail, detail


def test_teacher_vs_s0_is_checked_per_student_and_shares_the_c_map() -> None:
    """Two students in one table (main Figure 1): each teacher is compared with each student's own S0, never with
    their average; a teacher whose cached outcomes lack the C map borrows S0's (the same C set), so the margin is
    still resampled by distinct image."""
    import numpy as np

    rng = np.random.default_rng(1)
    source = np.tile(np.arange(300), 5)[:1500].reshape(15, 5, 20)  # 300 distinct images over 75 cells of 20
    teacher = rng.random(source.shape) < 0.8
    rows, out = [], {}
    for i, (student, s0_acc) in enumerate((("clip_rn50", 0.3), ("clip_vit_b16", 0.7))):
        s0 = rng.random(source.shape) < s0_acc
        m = {"teacher/acc/c": float(teacher.mean()), "original/acc/c": float(s0.mean())}
        rows.append(cell(i, m, student=student, teacher="vit_small", method="ours", seed=0))
        out[f"r{i}"] = {"teacher/acc/c": teacher, "original/acc/c": s0, "original/source/c": source}
    (a,) = [a for a in build_table(TABLES["main_fig1"], pd.DataFrame(rows), out.get).assumptions if "S0" in a.text]
    rn50, vitb = a.detail.split("; ")[:2]
    assert rn50.startswith("vit_small 79") and " vs S0 clip_rn50 3" in rn50 and " vs S0 clip_vit_b16 69" in vitb
    assert a.holds is True and a.detail.endswith("95 % bootstrap interval over C images")
