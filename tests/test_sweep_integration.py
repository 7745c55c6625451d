"""End to end: the smoke sweep on a local Ray, tracked by a real MLflow server, ends with nested runs and tables."""

from __future__ import annotations

import json

import pytest

from orchestrator.tracking import list_artifacts, metric_history, runs_dataframe

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]


def test_smoke_sweep_succeeds(smoke_sweep) -> None:
    assert smoke_sweep.returncode == 0, smoke_sweep.stdout[-2000:] + smoke_sweep.stderr[-3000:]
    assert "Traceback" not in smoke_sweep.stderr


def test_nested_runs_params_and_streamed_metrics(smoke_store, smoke_sweep) -> None:
    df = runs_dataframe(smoke_sweep.uri, "smoke", finished_only=False)
    parents = df[df["tags.kind"] == "sweep"]
    assert len(parents) == 1 and parents.iloc[0]["status"] == "FINISHED"
    parent_id = parents.iloc[0]["run_id"]
    cellruns = df[df["tags.kind"] == "cell"]
    assert len(cellruns) == 2
    assert set(cellruns["tags.mlflow.parentRunId"]) == {parent_id}
    assert set(cellruns["status"]) == {"FINISHED"}
    assert set(cellruns["params.method"]) == {"ours", "apt"}
    assert set(cellruns["params.teacher"]) == {"resnet34", "none"}
    assert cellruns["tags.cell"].str.len().min() >= 16
    ours = cellruns[cellruns["params.method"] == "ours"].iloc[0]
    for m in (
        "acc/clean",
        "acc/c",
        "acc/wo_kld/c",
        "f_correct/ours/c",
        "fp/mean",
        "mfr",
        "teacher/acc/c",
        "acc/transfer/digits",
        "params/tuned",
        "params/total",
        "time/train_s",
    ):
        assert f"metrics.{m}" in df.columns and ours[f"metrics.{m}"] == ours[f"metrics.{m}"], m
    hist = metric_history(smoke_sweep.uri, ours["run_id"], "train/loss")
    assert len(hist) == 3 and [s for s, _ in hist] == [0, 1, 2]
    stages = df[df["tags.kind"] == "stage"]
    assert {
        "build_pool",
        "build_eval_sets",
        "robustify_teacher",
        "pretrain_student",
        "extract_features",
        "teacher_targets",
    } <= set(stages["tags.stage"])


def test_table_files_and_parent_artifacts(smoke_store, smoke_sweep) -> None:
    out = smoke_store / "results" / "smoke"
    for ext in ("md", "csv", "tex"):
        assert (out / f"supp_table4.{ext}").is_file()
    md = (out / "supp_table4.md").read_text()
    assert "resnet34" in md.lower() or "RN-34" in md
    df = runs_dataframe(smoke_sweep.uri, "smoke", "tags.kind = 'sweep'")
    arts = list_artifacts(smoke_sweep.uri, df.iloc[0]["run_id"], "tables")
    assert "tables/supp_table4.md" in arts and "tables/index.md" in arts
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["finished"]) == 2 and not summary["failed"]


def test_rerun_recomputes_nothing(smoke_store, smoke_sweep) -> None:
    """Same command again: every cell is FINISHED in MLflow and cached; only the tables are rebuilt."""
    from tests.procs import run_cli

    before = (smoke_store / "results" / "smoke" / "supp_table4.csv").read_bytes()
    proc = run_cli(
        ["orchestrator.sweep", "sweeps/smoke.yaml", "--storage", str(smoke_store), "--tracking-uri", smoke_sweep.uri],
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "0 stages computed" in proc.stdout
    stages = proc.stdout.split(" shared stages (")[0].rsplit(" ", 1)[-1]
    assert f"{stages} shared stages ({stages} cached)" in proc.stdout  # the cached cells are not counted as stages
    df = runs_dataframe(smoke_sweep.uri, "smoke", "tags.kind = 'cell'", finished_only=False)
    assert len(df) == 2  # no duplicates
    assert (smoke_store / "results" / "smoke" / "supp_table4.csv").read_bytes() == before


def test_cells_and_teachers_log_per_example_outcomes(smoke_sweep) -> None:
    """Every cell run and the teacher's stage run carry outcomes.npz; its arrays average to the logged metrics,
    the cell carries its teacher's too (Table 4 bootstraps both sides), and the smoke Table 4 claim gets an
    interval from them (with one teacher it cannot be decided: "need 3")."""
    from orchestrator.tracking import outcomes_loader

    df = runs_dataframe(smoke_sweep.uri, "smoke")
    read = outcomes_loader(smoke_sweep.uri)
    cells = df[df["tags.kind"] == "cell"]
    for _, run in cells.iterrows():
        data = read(run["run_id"])
        assert data is not None and data["acc/c"].dtype == bool and data["acc/c"].ndim == 3, run["params.method"]
        assert data["acc/c"].mean() == pytest.approx(run["metrics.acc/c"], abs=1e-6)
        assert data["fp/mean"].mean() == pytest.approx(run["metrics.fp/mean"], abs=1e-6)
        assert data["mfr/seq"].mean() == pytest.approx(run["metrics.mfr"], rel=1e-5)  # the loader's mFR per sequence
        assert data["source/c"].shape == data["acc/c"].shape  # C's distinct image per slot
    ours = cells[cells["params.method"] == "ours"].iloc[0]
    data = read(ours["run_id"])
    assert data["teacher/acc/c"].mean() == pytest.approx(ours["metrics.teacher/acc/c"], abs=1e-6)
    assert data["teacher/acc/c"].shape == data["acc/c"].shape  # same images: pairs up example by example
    teacher = df[(df["tags.kind"] == "stage") & (df["tags.stage"] == "robustify_teacher")].iloc[0]
    assert "outcomes.npz" in list_artifacts(smoke_sweep.uri, teacher["run_id"])
