"""The driver's bookkeeping (orchestrator/driver.py, records.py) on a real MLflow store and a real cache: which
cells become work, which are counted, skipped, finished from the cache or failed; no Ray is started.

MLflow here is the real client on a SQLite store in the test's folder (no server needed for these calls)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator import driver
from orchestrator.cache import Cache
from orchestrator.plan import build_plan
from orchestrator.ray_backend import ClusterInfo
from orchestrator.records import Outcome, SweepContext, pipeline_seconds
from orchestrator.spec import load_spec
from orchestrator.tracking import FAILED, FINISHED, SweepTracker, runs_dataframe
from trainables.kinds import CELL, CellInputs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def sc(tmp_path: Path) -> SweepContext:
    spec = load_spec(ROOT / "sweeps" / "smoke.yaml", "local")
    cache = Cache(tmp_path)
    plan = build_plan(spec, cache.has)
    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "smoke")
    sweep_id = spec.content_hash()
    parent, _ = tracker.open_parent(sweep_id, {"profile": "local"}, run_name="smoke-local")
    return SweepContext(
        plan,
        cache,
        tmp_path,
        tracker,
        parent,
        sweep_id,
        ClusterInfo(cpus=2, gpus=0, has_driver_resource=True, started_here=True),
        log=lambda m: None,
    )


def _cell_keys(sc: SweepContext) -> dict[str, str]:
    return {c.method: sc.plan.cell_stage[c] for c in sc.plan.cells}


def _close(sc: SweepContext, key: str, status: str) -> None:
    cell = next(c for c in sc.plan.cells if sc.plan.cell_stage[c] == key)
    run_id = sc.tracker.open_child(sc.parent_id, sc.sweep_id, "cell", key, cell.label(), {}, {})
    sc.tracker.logger(run_id).finish(status)


def _publish_cell(sc: SweepContext, key: str, metrics: dict[str, float]) -> None:
    folder = sc.cache.staging(CELL, key)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    sc.cache.publish(CELL, key, folder, {"kind": CELL})


def test_fresh_cells_become_work_with_everything_a_worker_needs(sc: SweepContext) -> None:
    outcome = Outcome()
    pending, run_ids = driver._pending_cells(sc, outcome, rerun_failed=False, failed_stages={})
    assert sorted(p["key"] for p in pending) == sorted(_cell_keys(sc).values()) == sorted(run_ids)
    for p in pending:
        stage = sc.plan.stages[p["key"]]
        assert CellInputs.from_payload(p["inputs"]) == stage.inputs  # the payload round-trips to the typed inputs
        assert p["deps"] == {role: (sc.plan.stages[k].kind, k) for role, k in stage.deps.items()}
        assert p["uri"] == sc.tracker.uri and p["patience_s"] == sc.tracker.patience_s
    assert outcome == Outcome()


def test_status_branches_finished_failed_rerun_cached_and_upstream(sc: SweepContext) -> None:
    keys = _cell_keys(sc)
    _close(sc, keys["ours"], FINISHED)
    _close(sc, keys["apt"], FAILED)
    outcome = Outcome()
    pending, _ = driver._pending_cells(sc, outcome, rerun_failed=False, failed_stages={})
    assert pending == [] and outcome.finished == [keys["ours"]] and outcome.skipped_failed == [keys["apt"]]

    outcome = Outcome()  # --rerun-failed: only the failed cell is work again, the finished one is still counted
    pending, run_ids = driver._pending_cells(sc, outcome, rerun_failed=True, failed_stages={})
    assert [p["key"] for p in pending] == [keys["apt"]] and outcome.finished == [keys["ours"]]
    assert sorted(outcome.not_run) == sorted(set(keys.values()) - {keys["ours"], keys["apt"]})  # said, not hidden
    sc.tracker.logger(run_ids[keys["apt"]]).finish(FAILED)

    _publish_cell(sc, keys["apt"], {"acc/clean": 0.5, "time/train_s": 1.0})  # its entry appeared meanwhile
    outcome = Outcome()
    pending, _ = driver._pending_cells(sc, outcome, rerun_failed=True, failed_stages={})
    assert pending == [] and outcome.cached == [keys["apt"]] and keys["apt"] in outcome.finished
    runs = runs_dataframe(sc.tracker.uri, "smoke", f"tags.cell = '{keys['apt']}'", finished_only=True)
    assert len(runs) == 1 and runs.iloc[0]["tags.cache_hit"] == "true"
    assert runs.iloc[0]["metrics.acc/clean"] == 0.5


def test_a_failed_upstream_stage_fails_its_cells_with_the_reason(sc: SweepContext) -> None:
    keys = _cell_keys(sc)
    teacher = sc.plan.stages[keys["ours"]].deps["teacher"]
    outcome = Outcome()
    pending, _ = driver._pending_cells(sc, outcome, rerun_failed=False, failed_stages={teacher: "OSError: disk"})
    assert [p["key"] for p in pending] == [keys["apt"]]  # APT has no teacher: it still runs
    assert outcome.failed == {keys["ours"]: "upstream stage robustify_teacher failed: OSError: disk"}
    runs = runs_dataframe(sc.tracker.uri, "smoke", "tags.kind = 'cell'", finished_only=False)
    assert runs.set_index("tags.cell").loc[keys["ours"], "status"] == FAILED


def test_pipeline_seconds_add_only_the_stages_the_method_pays_for(sc: SweepContext) -> None:
    key = _cell_keys(sc)["ours"]
    upstream = {sc.plan.stages[k].kind: k for k in sc.plan.stages[key].deps.values()}
    for kind, seconds in (("robustify_teacher", 10.0), ("teacher_targets", 2.0), ("build_pool", 99.0)):
        folder = sc.cache.staging(kind, upstream[kind])
        (folder / "metrics.json").write_text(json.dumps({"time/stage_s": seconds}))
        sc.cache.publish(kind, upstream[kind], folder)
    assert pipeline_seconds(sc, key, {"time/train_s": 3.0}) == 3.0 + 10.0 + 2.0  # the pool is shared data, not cost
