"""The MLflow adapter against a real server: run layout, resume of runs, and surviving an outage."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestrator.tracking import (
    FINISHED,
    KILLED,
    RUNNING,
    LocalMlflowServer,
    RunLogger,
    SweepTracker,
    TrackingUnavailable,
    metric_history,
    runs_dataframe,
)

pytestmark = pytest.mark.integration


def test_parent_child_layout_and_reopen(mlflow_server) -> None:
    t = SweepTracker(mlflow_server.uri, "layout")
    parent, resumed = t.open_parent("sid", {"profile": "local"}, "layout-local")
    assert not resumed
    child = t.open_child(parent, "sid", "cell", "key1", "cell-1", {}, {"student": "x", "train": {"lr": 0.1}})
    again = t.open_child(parent, "sid", "cell", "key1", "cell-1", {}, {"student": "x"})
    assert again == child  # an unfinished cell run is reopened, never duplicated
    t.logger(child).finish(FINISHED)
    df = runs_dataframe(mlflow_server.uri, "layout")
    row = df[df["tags.cell"] == "key1"].iloc[0]
    assert row["tags.mlflow.parentRunId"] == parent and row["params.train.lr"] == "0.1"
    # the parent is still RUNNING (crashed invocation): the next invocation resumes it
    assert t.open_parent("sid", {}, "layout-local") == (parent, True)


def test_orphans_marked_killed(mlflow_server) -> None:
    t = SweepTracker(mlflow_server.uri, "orphans")
    parent, _ = t.open_parent("sid2", {}, "p")
    stale = t.open_child(parent, "sid2", "stage", "s1", "stage-1", {}, {})
    assert t.mark_orphans("sid2", keep=[parent]) == 1
    assert t.client.get_run(stale).info.status == KILLED
    assert t.client.get_run(parent).info.status == RUNNING


def test_metrics_survive_an_outage(tmp_path: Path) -> None:
    """Stop the server, keep logging (buffered), restart it on the same store and port: nothing is lost."""
    server = LocalMlflowServer(tmp_path / "store").start()
    try:
        t = SweepTracker(server.uri, "outage")
        parent, _ = t.open_parent("sid", {}, "p")
        logger = RunLogger(server.uri, parent, patience_s=60)
        logger.log_metrics({"m": 1.0}, step=0)
        port = server.port
        server.stop()
        t0 = time.monotonic()
        logger.log_metrics({"m": 2.0}, step=1)  # server down: buffered, returns
        assert logger._pending
        server = LocalMlflowServer(tmp_path / "store", port=port).start()
        logger.log_metrics({"m": 3.0}, step=2)
        logger.flush()
        assert [v for _, v in metric_history(server.uri, parent, "m")] == [1.0, 2.0, 3.0]
        assert time.monotonic() - t0 < 120
    finally:
        server.stop()


def test_outage_longer_than_patience_raises(tmp_path: Path) -> None:
    server = LocalMlflowServer(tmp_path / "store").start()
    t = SweepTracker(server.uri, "down")
    parent, _ = t.open_parent("sid", {}, "p")
    server.stop()
    logger = RunLogger(server.uri, parent, patience_s=3)
    logger.log_metrics({"m": 1.0})
    with pytest.raises(TrackingUnavailable, match="unreachable"):
        logger.flush()
