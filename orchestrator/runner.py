"""The sweep's life cycle once the input is known to be good: services up, execute, tables, services down."""

from __future__ import annotations

import argparse
import subprocess
import traceback
from contextlib import ExitStack
from pathlib import Path

from orchestrator import driver, ray_backend
from orchestrator.aggregate import aggregate
from orchestrator.cache import Cache
from orchestrator.plan import build_plan
from orchestrator.progress_views import open_progress
from orchestrator.records import SweepContext
from orchestrator.report import publish_report, read_sweep
from orchestrator.spec import SweepSpec
from orchestrator.tracking import FINISHED, LocalMlflowServer, SweepTracker, TrackingUnavailable, log_artifacts


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_sweep(spec: SweepSpec, args: argparse.Namespace, server: LocalMlflowServer | None) -> int:
    """Args:
    server: our own MLflow server (no `--tracking-uri`), already launched by `sweep._run`, which stops it;
        None with `--tracking-uri`.
    """
    storage = Path(args.storage).resolve()
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
            return _execute(spec, args, storage, uri, stack, info, progress)
        except TrackingUnavailable as err:
            progress.log(f"error: {err}. Nothing is lost: rerun the same command to resume.", err=True)
            return 1
        except Exception as err:  # noqa: BLE001 - one line for people, the traceback in a file
            log = storage / "logs" / "last_error.txt"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(traceback.format_exc())
            progress.log(f"error: {type(err).__name__}: {err} (traceback: {log})", err=True)
            return 1


def _start_ray(args: argparse.Namespace, stack: ExitStack) -> ray_backend.ClusterInfo:
    info = ray_backend.start(args.address, args.num_cpus)
    stack.callback(ray_backend.stop)
    return info


def _execute(
    spec: SweepSpec, args, storage: Path, uri: str, stack: ExitStack, info: ray_backend.ClusterInfo | None, progress
) -> int:
    """Ray is already up (`info`); the parent run is opened only now. `progress` (orchestrator/progress.py) shows
    every line and keeps the sweep's log; its clock started with the sweep."""
    cache = Cache(storage)
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
        f"({sum(s.cached for s in plan.stages.values())} cached); parent run {parent_id}"
        + (" (resumed)" if resumed else "")
        + (f"; {n_orphans} orphaned run(s) marked KILLED" if n_orphans else "")
    )
    info = info or _start_ray(args, stack)
    sc = SweepContext(plan, cache, storage, tracker, parent_id, sweep_id, info, log=progress.log)
    outcome = driver.execute(sc, rerun_failed=args.rerun_failed, progress=progress)
    files = _tables(spec, uri, storage, sweep_id, parent_id)
    wall = progress.elapsed()
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
    driver.write_summary(storage / "results" / spec.name / "summary.json", outcome)
    progress.log(
        f"done in {wall:.0f} s: {len(outcome.finished)} finished ({len(outcome.cached)} from cache), "
        f"{len(outcome.failed)} failed, {len(outcome.skipped_failed)} previously failed (use --rerun-failed); "
        f"{outcome.computed_stages} stages computed, {outcome.cached_stages} cached"
    )
    for f in files:
        progress.log(f"  {f}")
    return 0 if not outcome.failed else 1


def _tables(spec: SweepSpec, uri: str, storage: Path, sweep_id: str, parent_id: str) -> list[Path]:
    out = storage / "results" / spec.name
    out.mkdir(parents=True, exist_ok=True)
    files = aggregate(uri, spec.name, out, tables=list(spec.reproduces) or None, sweep_id=sweep_id)
    log_artifacts(uri, parent_id, files, "tables")
    report = publish_report([read_sweep(uri, spec, sweep_id, parent_id, git_commit())], storage / "results")
    return files + report
