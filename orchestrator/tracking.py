"""The MLflow adapter: the only module that imports mlflow.

Why one adapter: MLflow's APIs move fast (3.x changed the default store, added security middleware and job
runners), so every call is fenced here. Layout (design.md, "MLflow layout"):

- experiment = sweep name; one parent run per sweep invocation (tags `sweep_id`, `spec_hash`, `profile`,
  `git_commit`); a crashed invocation is resumed into the same parent run;
- one child run per cell (tags `kind=cell`, `cell=<content key>`), params = the cell's resolved config,
  metrics streamed per epoch from rank 0, final metrics with stable names;
- one child run per stage (tags `kind=stage`, `stage=<name>`, `stage_key=<key>`, `cache_hit`).

Workers never rely on MLflow's implicit state (`set_experiment`, active runs, the cwd-relative default URI):
they get an explicit http:// URI and a run id, and talk through `RunLogger`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

# Keep MLflow quiet and offline-friendly in every process that imports this module.
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # our own retry loop waits longer
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from orchestrator.mlflow_server import LocalMlflowServer, TrackingUnavailable, wait_healthy  # noqa: E402,F401

PARAM_MAX = 6000  # MLflow's param value limit; longer values are truncated with a marker
FINISHED, RUNNING, FAILED, KILLED = "FINISHED", "RUNNING", "FAILED", "KILLED"


# ------------------------------------------------------------------------------------------ helpers


def _params(d: dict[str, Any]) -> list[Param]:
    out = []
    for k, v in sorted(d.items()):
        s = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
        out.append(Param(k, s if len(s) <= PARAM_MAX else s[: PARAM_MAX - 12] + "…[truncated]"))
    return out


def _metrics(d: dict[str, float], step: int, ts: int) -> list[Metric]:
    return [Metric(k, float(v), ts, step) for k, v in d.items() if v is not None and v == v]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> dotted keys, for params."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def retrying(fn, *, patience_s: float, what: str):
    """Call `fn()` until it succeeds or `patience_s` passes (MLflow outage): nothing logged is dropped silently."""
    deadline = time.monotonic() + patience_s
    delay = 0.5
    while True:
        try:
            return fn()
        except (MlflowException, OSError) as err:  # connection errors surface as MlflowException
            if time.monotonic() + delay > deadline:
                raise TrackingUnavailable(f"MLflow unreachable for {patience_s:.0f} s while {what}: {err}") from err
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


# ------------------------------------------------------------------------------------------- run logger


class RunLogger:
    """Logs into one existing run from any process (rank 0 of a Train worker group, a stage task).

    Buffered with retry: metrics that cannot be sent during an outage are kept and re-sent with the next call,
    and `flush()` insists for `patience_s` before raising `TrackingUnavailable`.
    """

    def __init__(self, uri: str, run_id: str, patience_s: float = 300.0) -> None:
        self.uri, self.run_id, self.patience_s = uri, run_id, patience_s
        self.client = MlflowClient(uri)
        self._pending: list[Metric] = []

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self._pending.extend(_metrics(metrics, step, int(time.time() * 1000)))
        try:
            self._send()
        except (MlflowException, OSError):
            pass  # kept in the buffer; next call or flush() retries

    def _send(self) -> None:
        while self._pending:
            batch = self._pending[:900]
            self.client.log_batch(self.run_id, metrics=batch, synchronous=True)
            del self._pending[: len(batch)]

    def flush(self) -> None:
        retrying(self._send, patience_s=self.patience_s, what=f"sending metrics of run {self.run_id}")

    def log_params(self, params: dict[str, Any]) -> None:
        existing = self.client.get_run(self.run_id).data.params
        fresh = {k: v for k, v in flatten(params).items() if k not in existing}
        for i in range(0, len(fresh), 90):
            chunk = dict(list(fresh.items())[i : i + 90])
            retrying(
                lambda c=chunk: self.client.log_batch(self.run_id, params=_params(c), synchronous=True),
                patience_s=self.patience_s,
                what="logging params",
            )

    def set_tags(self, tags: dict[str, Any]) -> None:
        rt = [RunTag(k, str(v)) for k, v in tags.items()]
        retrying(
            lambda: self.client.log_batch(self.run_id, tags=rt, synchronous=True),
            patience_s=self.patience_s,
            what="setting tags",
        )

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        retrying(
            lambda: self.client.log_artifact(self.run_id, str(path), artifact_path),
            patience_s=self.patience_s,
            what=f"uploading {path}",
        )

    def log_text(self, text: str, artifact_file: str) -> None:
        retrying(
            lambda: self.client.log_text(self.run_id, text, artifact_file),
            patience_s=self.patience_s,
            what=f"uploading {artifact_file}",
        )

    def finish(self, status: str = FINISHED) -> None:
        self.flush()
        retrying(
            lambda: self.client.set_terminated(self.run_id, status), patience_s=self.patience_s, what="closing the run"
        )


# ------------------------------------------------------------------------------------------- sweep tracker


class SweepTracker:
    """Driver-side view of one sweep's experiment: parent run, child runs keyed by content tags, queries."""

    def __init__(self, uri: str, experiment: str, patience_s: float = 300.0) -> None:
        self.uri, self.experiment, self.patience_s = uri, experiment, patience_s
        self.client = MlflowClient(uri)
        self.experiment_id = retrying(self._experiment_id, patience_s=patience_s, what="opening the experiment")

    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        try:
            # "custom model development": the UI then opens on training runs, not the GenAI trace overview
            return self.client.create_experiment(
                self.experiment, tags={"mlflow.experimentKind": "custom_model_development"}
            )
        except MlflowException:  # created concurrently by another driver
            return self.client.get_experiment_by_name(self.experiment).experiment_id

    def _search(self, filter_string: str, max_results: int = 5000) -> list:
        return retrying(
            lambda: self.client.search_runs(
                [self.experiment_id], filter_string, max_results=max_results, order_by=["attributes.start_time DESC"]
            ),
            patience_s=self.patience_s,
            what="searching runs",
        )

    def open_parent(self, sweep_id: str, tags: dict[str, str], run_name: str) -> tuple[str, bool]:
        """Resume the unfinished parent run of this sweep id, or start a new one. Returns (run_id, resumed)."""
        for run in self._search(f"tags.sweep_id = '{sweep_id}' and tags.kind = 'sweep'"):
            if run.info.status != FINISHED:
                self.client.update_run(run.info.run_id, status=RUNNING)
                return run.info.run_id, True
            break
        all_tags = {"sweep_id": sweep_id, "kind": "sweep", **tags}
        run = retrying(
            lambda: self.client.create_run(self.experiment_id, tags=all_tags, run_name=run_name),
            patience_s=self.patience_s,
            what="creating the parent run",
        )
        return run.info.run_id, False

    def child_runs(self, sweep_id: str, kind: str) -> dict[str, Any]:
        """Newest run per content key (`cell` or `stage_key`) of this sweep id."""
        tag = "cell" if kind == "cell" else "stage_key"
        out: dict[str, Any] = {}
        for run in self._search(f"tags.sweep_id = '{sweep_id}' and tags.kind = '{kind}'"):
            key = run.data.tags.get(tag)
            prev = out.get(key)
            if prev is None or (prev.info.status != FINISHED and run.info.status == FINISHED):
                out[key] = run
        return out

    def open_child(
        self,
        parent_id: str,
        sweep_id: str,
        kind: str,
        key: str,
        name: str,
        tags: dict[str, str],
        params: dict[str, Any],
    ) -> str:
        """Create (or reopen, after a crash) the child run for one cell or stage. Params are logged once."""
        existing = self.child_runs(sweep_id, kind).get(key)
        if existing is not None and existing.info.status != FINISHED:
            self.client.update_run(existing.info.run_id, status=RUNNING)
            return existing.info.run_id
        key_tag = "cell" if kind == "cell" else "stage_key"
        all_tags = {"mlflow.parentRunId": parent_id, "sweep_id": sweep_id, "kind": kind, key_tag: key, **tags}
        run = retrying(
            lambda: self.client.create_run(self.experiment_id, tags=all_tags, run_name=name),
            patience_s=self.patience_s,
            what=f"creating run {name}",
        )
        RunLogger(self.uri, run.info.run_id, self.patience_s).log_params(params)
        return run.info.run_id

    def mark_orphans(self, sweep_id: str, keep: Iterable[str] = ()) -> int:
        """Mark RUNNING children of a crashed invocation KILLED, except those about to be resumed."""
        keep = set(keep)
        n = 0
        for run in self._search(f"tags.sweep_id = '{sweep_id}' and attributes.status = 'RUNNING'"):
            if run.info.run_id in keep or run.data.tags.get("kind") == "sweep":
                continue
            self.client.set_terminated(run.info.run_id, KILLED)
            n += 1
        return n

    def logger(self, run_id: str) -> RunLogger:
        return RunLogger(self.uri, run_id, self.patience_s)


def runs_dataframe(uri: str, experiment: str, filter_string: str = "", finished_only: bool = True) -> pd.DataFrame:
    """All runs of an experiment as a DataFrame shaped like `mlflow.search_runs` (`run_id`, `status`,
    `start_time`, `params.*`, `metrics.*`, `tags.*`), newest first. Built from the client so the URI is explicit
    (mlflow.search_runs reads the process-global URI)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return pd.DataFrame()
    clauses = [c for c in (filter_string, "attributes.status = 'FINISHED'" if finished_only else "") if c]
    rows, token = [], None
    while True:
        page = client.search_runs(
            [exp.experiment_id],
            " and ".join(clauses),
            max_results=1000,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        for r in page:
            row = {
                "run_id": r.info.run_id,
                "status": r.info.status,
                "start_time": r.info.start_time,
                "end_time": r.info.end_time,
                "run_name": r.info.run_name,
            }
            row.update({f"params.{k}": v for k, v in r.data.params.items()})
            row.update({f"metrics.{k}": v for k, v in r.data.metrics.items()})
            row.update({f"tags.{k}": v for k, v in r.data.tags.items()})
            rows.append(row)
        token = page.token
        if not token:
            break
    return pd.DataFrame(rows)


def experiment_exists(uri: str, experiment: str) -> bool:
    exp = MlflowClient(uri).get_experiment_by_name(experiment)
    return exp is not None


def experiment_id(uri: str, experiment: str) -> str | None:
    """The experiment's id (the MLflow UI addresses runs by it), or None when there is no such experiment."""
    exp = MlflowClient(uri).get_experiment_by_name(experiment)
    return None if exp is None else exp.experiment_id


def unreachable_reason(uri: str, timeout_s: float = 3.0) -> str | None:
    """Why `uri` cannot be read as a tracking store, or None when it can (a CLI's bad-input check).

    Checked without creating anything: an http(s) server must answer /health; a sqlite file must exist (MLflow
    would otherwise create an empty database there); anything else must answer a one-item search."""
    if uri.startswith(("http://", "https://")):
        return None if wait_healthy(uri, timeout_s) else "no MLflow server answers there"
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        return None if path.is_file() else f"no SQLite store at {path}"
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except (MlflowException, OSError, ValueError) as err:
        return str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    return None


SYSTEM_METRICS_INTERVAL_S = 1.0  # seconds between samples; MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides it


@contextlib.contextmanager
def system_metrics(uri: str, run_id: str) -> Iterator[None]:
    """MLflow's system metrics (`system/cpu_utilization_percentage`, `system/system_memory_usage_megabytes`, disk,
    network, GPU where NVML answers) sampled into `run_id` while the block runs.

    Why not `mlflow.start_run(log_system_metrics=True)`: workers never use fluent active runs (see the module
    docstring), and `SystemMetricsMonitor` takes an explicit run id and URI. Why 1 s: local cells take seconds, and
    the monitor publishes nothing before its first interval is over; a block shorter than that still gets one sample
    at its end. Monitoring is best effort: a missing psutil or an unreachable server never fails the cell.
    """
    monitor = None
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        logging.getLogger("mlflow.system_metrics").setLevel(logging.ERROR)  # no start/stop chatter per cell
        monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S, tracking_uri=uri)
        monitor.start()
    except Exception:  # noqa: BLE001 - best effort (psutil missing, ...): the cell runs without them
        monitor = None
    try:
        yield
    finally:
        if monitor is not None:
            _finish_monitor(monitor)


def _finish_monitor(monitor: Any) -> None:
    monitor.finish()
    try:
        if monitor._logging_step == 0:  # shorter than one interval: nothing published yet (mlflow 3.17 internals)
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()
    except Exception:  # noqa: BLE001 - best effort, as above
        pass


def log_artifacts(uri: str, run_id: str, files: Iterable[Path], artifact_path: str | None = None) -> None:
    logger = RunLogger(uri, run_id)
    for f in files:
        logger.log_artifact(f, artifact_path)


def list_artifacts(uri: str, run_id: str, path: str | None = None) -> list[str]:
    return [a.path for a in MlflowClient(uri).list_artifacts(run_id, path)]


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key)]


def outcomes_loader(uri: str, name: str = "outcomes.npz") -> Callable[[str], dict | None]:
    """run id -> its per-example outcomes artifact (trainables/outcomes.py), read once per run; None if absent
    (runs logged before outcomes existed, or stages that write none): the claims then say they have no interval."""
    from trainables.outcomes import load, with_mfr

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per run flooded the terminal
    client, seen = MlflowClient(uri), {}

    def read(run_id: str) -> dict | None:
        if run_id not in seen:
            with tempfile.TemporaryDirectory(prefix="outcomes-") as tmp:
                try:
                    data = load(client.download_artifacts(run_id, name, tmp))
                    if any("fp/seq/" in k for k in data):  # mFR per sequence needs the run's flip rates
                        data = with_mfr(data, client.get_run(run_id).data.metrics)
                    seen[run_id] = data
                except (MlflowException, OSError):
                    seen[run_id] = None
        return seen[run_id]

    return read
