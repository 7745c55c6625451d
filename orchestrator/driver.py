"""Executing a plan from the driver: which stages and cells still need work, submitting them, collecting results.

Source of truth for "done": the cache (a published entry) and MLflow (a FINISHED child run of this sweep id).
- a stage or cell whose entry is cached is never recomputed; if its run is missing in this sweep it is logged
  from the cached metrics (tag `cache_hit=true`);
- a cell whose run FAILED is skipped (and reported) unless `--rerun-failed`, which runs only those;
- a cell whose run was left RUNNING by a killed driver is reopened, and its Train run resumes from the last
  checkpoint (deterministic Train run names under the shared storage).
The bodies that run in Ray workers are in orchestrator/worker.py; this module hands them to the Ray adapter.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from orchestrator import ray_backend, storage, worker
from orchestrator.cache import CacheCorrupt
from orchestrator.costs import critical_paths, stage_seconds
from orchestrator.packing import pack_cells, pack_key
from orchestrator.plan import Stage, iter_upstream
from orchestrator.progress import Progress, watching
from orchestrator.progress_views import LinesView
from orchestrator.records import (
    Outcome,
    SweepContext,
    cell_params,
    fail_cell,
    finish_cell,
    log_cached_stage,
    log_teacher_flip_rates,
    open_stage_run,
    stage_done,
    stage_name,
)
from orchestrator.tracking import FAILED, FINISHED
from trainables.common import read_metrics
from trainables.features import SHARD_MAPPED
from trainables.kinds import CELL

FAIL_ENV = "ROBUSTIFY_FAIL_CELLS"  # comma-separated cell-key prefixes (or "*") that raise: fault injection
CELL_POLL_S = 2.0  # while trials run: a manifest check per pending cell this often
WAIT_POLL_S = 5.0  # ... and what queued work waits for (Ray's pending demand) this often
SHARD_TASKS_CAP = 64  # shard tasks in flight per stage when the cluster's size is unknown or huge (memory bound)


def execute(sc: SweepContext, rerun_failed: bool = False, progress: Progress | None = None) -> Outcome:
    """Shared stages (Ray tasks, each as soon as its inputs exist), then cells (Ray Tune trials).

    Args:
        progress: where counts and events go (orchestrator/progress.py); None: lines through `sc.log`.
    """
    progress = progress or Progress(LinesView(sc.log))
    outcome = Outcome()
    only = None
    if rerun_failed:  # only what the failed cells need
        runs = sc.tracker.child_runs(sc.sweep_id, "cell")
        keys = [k for k, r in runs.items() if r.info.status == FAILED and k in sc.plan.stages]
        only = {s.key for k in keys for s in iter_upstream(sc.plan, k)}
    else:  # every cell counts from the start (with --rerun-failed, `_pending_cells` counts the ones it reruns)
        cells = {sc.plan.cell_stage[c]: c.label() for c in sc.plan.cells}
        progress.add("cell", {k: (name, stage_seconds(sc.plan.stages[k], sc.plan.spec)) for k, name in cells.items()})
    with watching(progress, progress.status, every=1.0):
        failed_stages = run_stages(sc, outcome, only, progress)
        progress.status(force=True)
        run_cells(sc, outcome, rerun_failed, failed_stages, progress)
    progress.status(force=True)
    return outcome


def write_summary(path: Path, outcome: Outcome) -> None:
    path.write_text(json.dumps(outcome.__dict__, indent=1, sort_keys=True))


def verified(sc: SweepContext, stage: Stage) -> bool:
    """Is the entry cached *and* intact? A corrupt entry is removed here and recomputed like a missing one."""
    if not sc.cache.has(stage.kind, stage.key):
        return False
    try:
        sc.cache.get(stage.kind, stage.key)
        return True
    except CacheCorrupt as err:
        sc.log(f"  {err}: recomputing it")
        return False


def _deps_of(sc: SweepContext, stage: Stage) -> dict[str, tuple[str, str]]:
    return {role: (sc.plan.stages[k].kind, k) for role, k in stage.deps.items()}


# ------------------------------------------------------------------------------------------------ stages


def run_stages(
    sc: SweepContext, outcome: Outcome, only: set[str] | None = None, progress: Progress | None = None
) -> dict[str, str]:
    """Compute every missing shared stage, each as soon as its inputs exist. Returns {stage key: error}."""
    plan = sc.plan
    progress = progress or Progress(LinesView(sc.log))
    runs = sc.tracker.child_runs(sc.sweep_id, "stage")
    failed: dict[str, str] = {}
    tasks: dict[str, dict] = {}
    stages = [s for s in plan.stages.values() if s.kind != CELL and (only is None or s.key in only)]
    res = plan.spec.resources
    at_once = ray_backend.max_concurrent(sc.cluster, 1, res.cpus_per_worker, sc.gpus_per_worker(), len(stages), None)
    progress.add("stage", {s.key: (stage_name(s), stage_seconds(s, plan.spec)) for s in stages}, at_once)
    for stage in stages:
        if verified(sc, stage):
            outcome.cached_stages += 1
            progress.already(stage.key, "done")
            run = runs.get(stage.key)
            if run is None or run.info.status != FINISHED:
                log_cached_stage(sc, stage)
            continue
        tasks[stage.key] = _stage_task(sc, stage)
    if tasks:
        sc.log(f"  computing {len(tasks)} shared stage(s): " + ", ".join(stage_name(plan.stages[k]) for k in tasks))
        deps = {k: {d for d in plan.stages[k].deps.values() if d in tasks} for k in tasks}
        waits = watching(progress, lambda: progress.waiting(ray_backend.waiting_for()), every=WAIT_POLL_S)
        with waits:
            ray_backend.run_dag(
                tasks,
                deps,
                worker.stage_task,
                res.cpus_per_worker,
                sc.gpus_per_worker(),
                lambda t, r, e: _stage_finished(sc, t, r, e, failed, outcome, progress),
                priority=critical_paths(plan, set(tasks)),
                max_in_flight=at_once,
            )
        progress.waiting(None)
    log_teacher_flip_rates(sc)
    return failed


def _stage_finished(sc: SweepContext, task, result, err, failed, outcome, progress: Progress) -> None:
    """`run_dag`'s callback: the stage's run (records), then its count."""
    stage_done(sc, task, result, err, failed, outcome)
    if err is None:
        progress.stage_done(task["key"], result["wall_s"])
    else:
        progress.stage_failed(task["key"])


def _stage_task(sc: SweepContext, stage: Stage) -> dict[str, Any]:
    """Open the stage's run and describe its Ray task: everything `worker.stage_task` needs, as plain data."""
    run_id = open_stage_run(sc, stage, cache_hit=False)
    return {
        "kind": stage.kind,
        "key": stage.key,
        "inputs": stage.inputs.payload(),
        "run_id": run_id,
        "uri": sc.tracker.uri,
        "patience_s": sc.tracker.patience_s,
        "storage": str(sc.storage),
        "threads": sc.plan.spec.resources.cpus_per_worker,
        "deps": _deps_of(sc, stage),
        **(_shard_tasks(sc) if stage.kind in SHARD_MAPPED else {}),
        **_read_tasks(sc),
    }


def _read_tasks(sc: SweepContext) -> dict[str, Any]:
    """How a stage decodes image files (trainables/reading.py): on `data.source: imagenet`, as CPU-only shard tasks,
    as many at once as the cluster has CPUs (at most SHARD_TASKS_CAP). Why CPUs only: decoding needs no GPU, and
    a stage blocked waiting on its shard tasks gives its own CPUs back to Ray meanwhile. The embedded data reads
    no file: nothing to spread."""
    if sc.plan.spec.data.source != "imagenet":
        return {}
    fit = ray_backend.max_concurrent(sc.cluster, 1, 1, 0, SHARD_TASKS_CAP, sc.plan.spec.resources.shard_tasks)
    return {"read_tasks": fit} if fit > 1 else {}


def _shard_tasks(sc: SweepContext) -> dict[str, Any]:
    """How a stage that maps a frozen network over shards spreads them (orchestrator/ray_backend.py `shard_map`):
    `resources.shard_tasks` in flight, else as many as the cluster fits at once. Its shard tasks take the GPUs, so
    the stage's own task, which only reads inputs and writes results, asks for none."""
    res = sc.plan.spec.resources
    gpus = sc.gpus_per_worker()
    fit = ray_backend.max_concurrent(sc.cluster, 1, res.cpus_per_worker, gpus, SHARD_TASKS_CAP, res.shard_tasks)
    if fit <= 1:
        return {"shard_tasks": 1}
    return {"shard_tasks": fit, "shard_gpus": gpus, **({"num_gpus": 0} if gpus > 0 else {})}


# ------------------------------------------------------------------------------------------------ cells


def run_cells(
    sc: SweepContext,
    outcome: Outcome,
    rerun_failed: bool,
    failed_stages: dict[str, str],
    progress: Progress | None = None,
) -> None:
    """Open a run for every cell that needs work, finish cached ones at once, and run the rest as Tune trials."""
    progress = progress or Progress(LinesView(sc.log))
    pending, run_ids = _pending_cells(sc, outcome, rerun_failed, failed_stages, progress)
    if not pending:
        return
    res = sc.plan.spec.resources
    slots = ray_backend.max_concurrent(
        sc.cluster,
        res.workers_per_trial,
        res.cpus_per_worker,
        sc.gpus_per_worker(),
        len(pending),
        res.max_concurrent_trials,
    )
    train_storage = storage.join(sc.storage, "ray_train")
    packs = _packs(sc, pending, slots, train_storage)
    conc = min(slots, len(packs))
    progress.add("cell", {}, parallel=conc)
    sc.log(
        f"  running {len(pending)} cell(s) as {len(packs)} Ray Tune trial(s), {conc} at a time"
        + (
            f" (cheap cells packed, up to {max(len(p['cells']) for p in packs)} per trial)"
            if len(packs) < len(pending)
            else ""
        )
    )
    name = f"{sc.plan.spec.name}-{sc.sweep_id[:8]}-{int(time.time())}"
    poll = _cell_watcher(sc, progress, [c["key"] for c in pending], train_storage, time.time())
    with watching(progress, poll, every=CELL_POLL_S):
        tune_storage, use_driver = storage.join(sc.storage, "ray_tune"), sc.cluster.has_driver_resource
        logs = sc.logs or storage.local_dir(sc.storage) / "logs"
        trials = ray_backend.run_trials(packs, worker.run_trial, name, tune_storage, conc, use_driver, logs)
    progress.cells_running(())
    progress.waiting(None)
    _collect_cells(sc, outcome, progress, pending, run_ids, trials, train_storage)


def _collect_cells(sc, outcome, progress: Progress, pending, run_ids, trials, train_storage: str) -> None:
    """After the trials: close every pending cell's run FINISHED (published) or FAILED (with its own error)."""
    errors = {c: t.error for t in trials for c in t.cells}
    for cfg in pending:
        key = cfg["key"]
        if sc.cache.has(CELL, key):
            finish_cell(sc, run_ids[key], key, cached=False)
            outcome.finished.append(key)
            _report_cell(sc, progress, key)
        else:
            own = storage.read_text(worker.error_file(train_storage, key))
            err = own.splitlines()[0] if own else errors.get(key)
            fail_cell(sc, run_ids[key], key, err or "trial ended without a result", outcome)
            progress.cell_failed(key)


def _report_cell(sc: SweepContext, progress: Progress, key: str) -> None:
    """A published cell's line: its wall time in the worker and its headline metrics (read once)."""
    if progress.settled(key):
        return
    m = read_metrics(sc.cache.get(CELL, key))
    start, end = m.get("time/start_unix"), m.get("time/end_unix")
    progress.cell_done(key, end - start if start is not None and end is not None else None, m)


def _cell_watcher(sc: SweepContext, progress: Progress, keys: list[str], train_storage: str, since: float):
    """One step of the driver's watch while `run_trials` blocks: report newly published cells (a manifest check per
    pending cell), cells that failed in place (their error file), the cells training now (their staging folder,
    made after `since`: local or shared storage only), and every WAIT_POLL_S what queued work waits for."""
    left, asked = set(keys), [0.0]

    def step() -> None:
        for key in sorted(left):
            if sc.cache.has(CELL, key):
                left.discard(key)
                _report_cell(sc, progress, key)
            elif storage.exists(worker.error_file(train_storage, key)):
                left.discard(key)
                progress.cell_failed(key)
        progress.cells_running(k for k in _staged(sc, CELL, since) if k in left)
        if time.monotonic() - asked[0] >= WAIT_POLL_S:
            asked[0] = time.monotonic()
            progress.waiting(ray_backend.waiting_for())

    return step


def _staged(sc: SweepContext, kind: str, since: float) -> set[str]:
    """Keys of `kind` with a staging folder made after `since` (orchestrator/cache.py: `<kind>-<key>-<uuid8>`)."""
    folder = sc.cache.local / ".staging"
    if not folder.is_dir():
        return set()
    prefix = f"{kind}-"
    return {
        d.name[len(prefix) : -9]
        for d in folder.iterdir()
        if d.name.startswith(prefix) and d.stat().st_mtime >= since - 1.0
    }


def _pending_cells(
    sc: SweepContext,
    outcome: Outcome,
    rerun_failed: bool,
    failed_stages: dict[str, str],
    progress: Progress | None = None,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Sort every cell by its run's status: FINISHED or previously FAILED ones are counted, cached ones logged,
    ones whose upstream failed are failed; the rest come back as work for the trials, with their run ids."""
    plan, tracker, progress = sc.plan, sc.tracker, progress or Progress(LinesView(sc.log))
    runs = tracker.child_runs(sc.sweep_id, "cell")
    fail_cells = list(plan.spec.train.fail_cells) + [s for s in os.environ.get(FAIL_ENV, "").split(",") if s]
    pending: list[dict[str, Any]] = []
    run_ids: dict[str, str] = {}
    for cell in plan.cells:
        key = plan.cell_stage[cell]
        stage = plan.stages[key]
        run = runs.get(key)
        status = run.info.status if run is not None else None
        if not rerun_failed or status in (FINISHED, FAILED):  # what this invocation runs, has run, or skips as failed
            progress.add("cell", {key: (cell.label(), stage_seconds(stage, plan.spec))})
        if status == FINISHED:
            outcome.finished.append(key)
            progress.already(key, "done")
            continue
        if (status == FAILED) != rerun_failed:
            if status == FAILED:
                outcome.skipped_failed.append(key)
                progress.already(key, "failed")
            else:  # --rerun-failed reruns failures only: say what it left, or a sweep never run "finishes" empty
                outcome.not_run.append(key)
            continue
        run_ids[key] = tracker.open_child(
            sc.parent_id, sc.sweep_id, "cell", key, cell.label(), {}, cell_params(plan, cell)
        )
        bad = [d for d in stage.deps.values() if d in failed_stages]
        if bad:
            up = plan.stages[bad[0]]
            fail_cell(sc, run_ids[key], key, f"upstream stage {up.kind} failed: {failed_stages[up.key]}", outcome)
            progress.cell_failed(key)
        elif verified(sc, stage):
            finish_cell(sc, run_ids[key], key, cached=True)
            outcome.cached.append(key)
            outcome.finished.append(key)
            progress.already(key, "done")
        else:
            pending.append(_cell_work(sc, stage, cell.label(), run_ids[key], fail_cells))
    return pending, run_ids


def _cell_work(sc: SweepContext, stage: Stage, label: str, run_id: str, fail_cells: list[str]) -> dict[str, Any]:
    """Everything `worker.run_cell` needs for one cell, as plain data."""
    return {
        "key": stage.key,
        "label": label,
        "inputs": stage.inputs.payload(),
        "run_id": run_id,
        "uri": sc.tracker.uri,
        "patience_s": sc.tracker.patience_s,
        "storage": str(sc.storage),
        "deps": _deps_of(sc, stage),
        "fail_cells": fail_cells,
    }


def _packs(sc: SweepContext, pending: list[dict[str, Any]], slots: int, train_storage: str) -> list[dict]:
    """Trials to run: cheap cells packed together (orchestrator/packing.py), each pack with what its workers need."""
    res = sc.plan.spec.resources
    by_key = {c["key"]: c for c in pending}
    for key in by_key:  # a stale error from an earlier attempt must not fail a cell that now succeeds
        storage.delete(worker.error_file(train_storage, key))
    groups = pack_cells(
        [(k, stage_seconds(sc.plan.stages[k], sc.plan.spec)) for k in by_key], slots, res.cells_per_trial
    )
    return [
        {
            "key": pack_key(g),
            "cells": [by_key[k] for k in g],
            "resources": res.model_dump(),
            "use_gpus": sc.gpus_per_worker() > 0,
            "train_storage": train_storage,
            "threads": res.cpus_per_worker,
        }
        for g in groups
    ]
