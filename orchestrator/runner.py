"""The life cycle of an invocation once the input is known to be good: services up, each sweep (execute, tables),
the invocation's report, services down. One Ray and one MLflow serve every sweep of the invocation."""

from __future__ import annotations

import argparse
import functools
import shlex
import subprocess
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import driver, ray_backend, render
from orchestrator.aggregate import build_results, write_results
from orchestrator.cache import Cache
from orchestrator.mlflow_server import UI_PORT
from orchestrator.plan import build_plan
from orchestrator.progress import Progress
from orchestrator.progress_views import open_progress
from orchestrator.records import SweepContext
from orchestrator.report import SweepReportInput, finished, publish_report, sweep_input, sweep_runs
from orchestrator.spec import SweepSpec
from orchestrator.storage import is_remote, local_dir, upload_tree
from orchestrator.storage import join as storage_join
from orchestrator.tables.regime import regime_warnings
from orchestrator.tracking import (
    FINISHED,
    LocalMlflowServer,
    SweepTracker,
    TrackingUnavailable,
    log_artifacts,
    outcomes_loader,
)


@functools.cache
def git_commit() -> str:
    """The commit this invocation runs, `-dirty` when the checkout has uncommitted changes to tracked files; read
    once per process (the parent run's tag at the start and the report at the end must agree even if someone
    commits while a sweep runs), 'unknown' outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, cwd=here
        ).stdout.strip()
        if not head:
            return "unknown"
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], capture_output=True, timeout=5, cwd=here)
        return head + ("-dirty" if dirty.returncode == 1 else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass
class SweepResult:
    """What one sweep of an invocation came to: the summary line, the exit code and the invocation report."""

    name: str
    wall_s: float
    finished: int = 0
    failed: int = 0  # cells that failed in this invocation
    skipped_failed: int = 0  # cells that had failed before and were not rerun (--rerun-failed)
    not_run: int = 0  # --rerun-failed: cells it left because they had not failed (never run or never finished)
    error: str | None = None  # the sweep stopped on an error (traceback in <storage>/logs/last_error.txt)
    files: list[Path] = field(default_factory=list)
    report: SweepReportInput | None = None  # its part of the invocation's reproduction report

    @property
    def ok(self) -> bool:
        return self.error is None and self.failed == 0

    def line(self) -> str:
        if self.error is not None:
            return f"sweep {self.name}: stopped after {self.wall_s:.0f} s: {self.error}"
        before = f", {self.skipped_failed} previously failed" if self.skipped_failed else ""
        left = f", {self.not_run} not run (--rerun-failed; rerun without it)" if self.not_run else ""
        counts = f"{self.finished} cells finished, {self.failed} failed{before}{left}"
        return f"sweep {self.name}: {self.wall_s:.0f} s, {counts}"


def run_sweep(spec: SweepSpec, args: argparse.Namespace, server: LocalMlflowServer | None) -> int:
    """One spec: `run_sweeps` with a list of one."""
    return run_sweeps([spec], args, server)


def run_sweeps(specs: list[SweepSpec], args: argparse.Namespace, server: LocalMlflowServer | None) -> int:
    """Run validated specs one after the other on one Ray and one MLflow; 0 only if every cell of every sweep ran.

    Why one after the other and not interleaved: each sweep already fills the cluster with its own stages and
    cells, and stages two sweeps share (pool, eval sets, common teachers and students) are then computed by the
    first and found in the cache by the next (same `--storage`, same content keys).

    Args:
        server: our own MLflow server (no `--tracking-uri`), already launched by `sweep._run`, which stops it;
            None with `--tracking-uri`.
    """
    storage = local_dir(args.storage)  # this node's folder: the storage itself, or the working copy of an s3:// one
    results: list[SweepResult] = []
    code = 0
    with ExitStack() as stack:
        progress = open_progress(storage / "logs" / "sweep.log")  # every line shown also lands in this file
        stack.callback(progress.close)  # registered first: closed last, after Ray and our services stop
        try:
            # Ray first, in both cases: a user's --tracking-uri already answered in validation (sweep.validate), so
            # a cluster that fails to join can no longer leave a RUNNING parent run behind; our own server boots
            # meanwhile (both take seconds)
            uri, info = args.tracking_uri, _start_ray(args, stack)
            if server is not None:
                uri = server.wait().uri
                progress.log(f"MLflow: {uri} (store {storage / 'mlflow'})")
            for spec in specs:
                results.append(_one_sweep(spec, args, storage, uri, info, progress))
        except TrackingUnavailable as err:
            progress.log(f"error: {err}. Nothing is lost: rerun the same command to resume.", err=True)
            code = 1
        except Exception as err:  # noqa: BLE001 - one line for people, the traceback in a file
            progress.log(f"error: {_log_error(storage, err)}", err=True)
            code = 1
        if results:
            _summarise(storage, results, progress, several=len(specs) > 1)
    if is_remote(args.storage):  # the tables, the report and the logs join the rest of the sweep on the store
        for part in ("results", "logs"):
            upload_tree(storage / part, storage_join(args.storage, part))
    return code or int(not all(r.ok for r in results))


def _one_sweep(
    spec: SweepSpec, args, storage: Path, uri: str, info: ray_backend.ClusterInfo, progress: Progress
) -> SweepResult:
    """One sweep of the invocation; a bug in it is reported and the next sweep still runs (an MLflow outage
    stops them all: the next would wait out the same patience)."""
    t0 = time.perf_counter()
    try:
        return _execute(spec, args, storage, uri, info, t0, progress)
    except TrackingUnavailable:
        raise
    except Exception as err:  # noqa: BLE001 - one line for people, the traceback in a file
        line = _log_error(storage, err)
        progress.log(f"error: {line}", err=True)
        return SweepResult(spec.name, time.perf_counter() - t0, error=line)


def _log_error(storage: Path, err: BaseException) -> str:
    log = storage / "logs" / "last_error.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(traceback.format_exc())
    return f"{type(err).__name__}: {err} (traceback: {log})"


def _summarise(storage: Path, results: list[SweepResult], progress: Progress, several: bool) -> None:
    """The report of the whole invocation, and one line per sweep when there were several."""
    report = write_invocation_report(storage, results)
    progress.log(f"report: {report}")
    if several:
        progress.log(f"{len(results)} sweeps, {sum(r.wall_s for r in results):.0f} s of sweeps")
        for r in results:
            progress.log(f"  {r.line()}")


def write_invocation_report(storage: Path, results: list[SweepResult]) -> Path:
    """The one reproduction report of an invocation, over all its sweeps (orchestrator/report.py):
    `<storage>/results/report.html` and `report.md`, logged on every sweep's parent run; beside it
    `results/index.md`, the sweeps' table indexes with each sweep's wall time and cell counts."""
    _write_index(storage, results)
    parts = [r.report for r in results if r.report is not None]
    return publish_report(parts, storage / "results")[0] if parts else storage / "results" / "index.md"


def _write_index(storage: Path, results: list[SweepResult]) -> Path:
    out = storage / "results" / "index.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Sweeps of the last invocation", "", "| sweep | wall (s) | finished | failed | tables |"]
    lines.append("|---|---|---|---|---|")
    for r in results:
        tables = f"[{r.name}/index.md]({r.name}/index.md)" if (out.parent / r.name / "index.md").is_file() else "-"
        failed = "stopped on an error (logs/last_error.txt)" if r.error else str(r.failed)  # one table cell
        lines.append(f"| {r.name} | {r.wall_s:.0f} | {r.finished} | {failed} | {tables} |")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _start_ray(args: argparse.Namespace, stack: ExitStack) -> ray_backend.ClusterInfo:
    info = ray_backend.start(args.address, args.num_cpus)
    stack.callback(ray_backend.stop)
    return info


def _execute(
    spec: SweepSpec, args, storage: Path, uri: str, info: ray_backend.ClusterInfo, t0: float, progress: Progress
) -> SweepResult:
    """Ray is up (`info`); the sweep's parent run is opened only now, and closed with the sweep's wall time.
    `progress` (orchestrator/progress.py) shows every line and keeps the invocation's log."""
    shared = storage_join(args.storage)  # a folder every node sees, or an object store URI
    cache = Cache(shared)
    plan = build_plan(spec, cache.has, feature_cache=not args.no_feature_cache)
    sweep_id = spec.content_hash()
    tracker = SweepTracker(uri, spec.name, patience_s=args.mlflow_patience)
    parent_id, resumed = tracker.open_parent(
        sweep_id,
        {"spec_hash": spec.content_hash(), "profile": spec.profile, "git_commit": git_commit()},
        run_name=f"{spec.name}-{spec.profile}",
    )
    parent = tracker.logger(parent_id)
    if not resumed:
        parent.log_text(spec.model_dump_json(indent=1), "spec.json")
    n_orphans = tracker.mark_orphans(sweep_id, keep=[parent_id])
    progress.log(
        f"sweep {spec.name}: {len(plan.cells)} cells, {len(plan.stages) - len(plan.cells)} shared stages "
        f"({sum(s.cached for s in plan.stages.values() if s.kind != 'cell')} cached); parent run {parent_id}"
        + (" (resumed)" if resumed else "")
        + (f"; {n_orphans} orphaned run(s) marked KILLED" if n_orphans else "")
    )
    sc = SweepContext(plan, cache, shared, tracker, parent_id, sweep_id, info, log=progress.log, logs=storage / "logs")
    outcome = driver.execute(sc, rerun_failed=args.rerun_failed, progress=progress)
    files, report = _tables(spec, uri, storage, sweep_id, parent_id, own_server=args.tracking_uri is None)
    for line in render.claim_lines(report.results):  # each verdict with its interval, as the tables print it
        progress.log(line)
    wall = time.perf_counter() - t0
    _close_parent(parent, outcome, wall)
    driver.write_summary(storage / "results" / spec.name / "summary.json", outcome)
    progress.log(
        f"done in {wall:.0f} s: {len(outcome.finished)} finished ({len(outcome.cached)} from cache), "
        f"{len(outcome.failed)} failed, {len(outcome.skipped_failed)} previously failed (use --rerun-failed); "
        f"{outcome.computed_stages} stages computed, {outcome.cached_stages} cached"
        + (f"; {len(outcome.not_run)} cell(s) not run: --rerun-failed reruns failed ones" if outcome.not_run else "")
    )
    for f in files:
        progress.log(f"  {f}")
    for res in report.results:  # a broken regime is said on the terminal, not only in the tables (issue #13)
        for line in regime_warnings(res.spec.id, res.assumptions or []):
            progress.log(f"  warning: {line}")
    n = (len(outcome.finished), len(outcome.failed), len(outcome.skipped_failed), len(outcome.not_run))
    return SweepResult(spec.name, wall, *n, files=files, report=report)


def _close_parent(parent, outcome, wall: float) -> None:
    parent.log_metrics(
        {
            "time/sweep_s": wall,
            "cells/finished": len(outcome.finished),
            "cells/failed": len(outcome.failed) + len(outcome.skipped_failed),
        },
        step=0,
    )
    parent.set_tags({"failed_cells": ",".join(sorted(outcome.failed) + outcome.skipped_failed) or "none"})
    parent.finish(FINISHED)


def _tables(spec: SweepSpec, uri: str, storage: Path, sweep_id: str, parent_id: str, own_server: bool):
    """The sweep's table files and its part of the report, from one read of its runs and one build of its tables
    (so the files and the report cannot disagree). With our own server (gone after the sweep), the report's run
    links lead where `robustify ui` serves the store."""
    out = storage / "results" / spec.name
    out.mkdir(parents=True, exist_ok=True)
    runs = sweep_runs(uri, spec.name, sweep_id)
    results = build_results(finished(runs), list(spec.reproduces) or None, outcomes_loader(uri))
    files = write_results(results, out)
    log_artifacts(uri, parent_id, files, "tables")
    serve = f"robustify ui --storage {shlex.quote(str(storage.resolve()))}"
    ui = (f"http://127.0.0.1:{UI_PORT}", serve) if own_server else None
    return files, sweep_input(spec, runs, results, sweep_id, parent_id, git_commit(), uri, ui)
