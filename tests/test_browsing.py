"""MLflow as its users browse it: plain params to filter and group runs by, and system metrics on cell runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from orchestrator.plan import build_plan
from orchestrator.records import cell_params, stage_params
from orchestrator.spec import load_spec
from orchestrator.tracking import runs_dataframe, system_metrics

ROOT = Path(__file__).resolve().parents[1]
CPU = "system/cpu_utilization_percentage"


def test_stage_and_cell_params_carry_model_axes_and_sizes() -> None:
    spec = load_spec(ROOT / "sweeps" / "smoke.yaml")
    plan = build_plan(spec)
    by_kind = {s.kind: stage_params(s) for s in plan.stages.values() if s.kind != "cell"}
    assert by_kind["build_pool"]["n_images"] == spec.pool.n_images == 160
    assert by_kind["build_eval_sets"]["n_test"] == 60 and by_kind["build_eval_sets"]["image_size"] == 32
    pre = by_kind["pretrain_student"]
    assert (pre["model"], pre["epochs"], pre["n_train"], pre["n_images"]) == ("vit_small", 1, 200, "all")
    teacher = by_kind["robustify_teacher"]
    assert (teacher["model"], teacher["epochs"], teacher["n_images"], teacher["batch_size"]) == ("resnet34", 1, 120, 32)
    for cell in plan.cells:
        p = cell_params(plan, cell)
        assert {"student", "teacher", "method", "data_fraction", "seed", "n_train", "image_size"} <= set(p)


def _run(server) -> tuple[MlflowClient, str]:
    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name("sysmetrics") or client.get_experiment(client.create_experiment("sysmetrics"))
    return client, client.create_run(exp.experiment_id).info.run_id


@pytest.mark.parametrize("seconds", [0.1, 2.5])
def test_system_metrics_reach_the_run_without_an_active_run(mlflow_server, seconds: float) -> None:
    """A block shorter than one sampling interval still leaves one sample; a longer one a series."""
    client, run_id = _run(mlflow_server)
    with system_metrics(mlflow_server.uri, run_id):
        time.sleep(seconds)
    history = client.get_metric_history(run_id, CPU)
    assert history and all(0 <= m.value <= 100 * 4096 for m in history)
    assert len(history) >= (2 if seconds > 2 else 1)
    assert "system/system_memory_usage_megabytes" in client.get_run(run_id).data.metrics


def test_a_finished_smoke_cell_has_system_metrics_and_stage_runs_their_sizes(smoke_sweep) -> None:
    assert smoke_sweep.returncode == 0, smoke_sweep.stderr[-3000:]
    runs = runs_dataframe(smoke_sweep.uri, smoke_sweep.experiment)
    cells = runs[runs["tags.kind"] == "cell"]
    computed = cells[cells.get("tags.cache_hit", "false").fillna("false") != "true"]
    assert len(computed) and computed[f"metrics.{CPU}"].notna().all()
    stages = runs[runs["tags.kind"] == "stage"]
    pool = stages[stages["params.stage"] == "build_pool"]
    assert (pool["params.n_images"] == "160").all() and (stages["params.n_train"].dropna() == "200").all()
