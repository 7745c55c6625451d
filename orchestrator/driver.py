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

from orchestrator import ray_backend, worker
from orchestrator.cache import CacheCorrupt
from orchestrator.costs import stage_seconds
from orchestrator.packing import pack_cells, pack_key
from orchestrator.plan import Stage, iter_upstream
from orchestrator.records import (
    Outcome,
    SweepContext,
    cell_params,
    fail_cell,
    finish_cell,
    log_cached_stage,
    log_teacher_flip_rates,
    stage_done,
    stage_name,
    stage_params,
)
from orchestrator.tracking import FAILED, FINISHED
from trainables.kinds import CELL

FAIL_ENV = "ROBUSTIFY_FAIL_CELLS"  # comma-separated cell-key prefixes (or "*") that raise: fault injection


def execute(sc: SweepContext, rerun_failed: bool = False) -> Outcome:
    """Shared stages (Ray tasks, each as soon as its inputs exist), then cells (Ray Tune trials)."""
    outcome = Outcome()
    only = None
    if rerun_failed:  # only what the failed cells need
        runs = sc.tracker.child_runs(sc.sweep_id, "cell")
        keys = [k for k, r in runs.items() if r.info.status == FAILED and k in sc.plan.stages]
        only = {s.key for k in keys for s in iter_upstream(sc.plan, k)}
    failed_stages = run_stages(sc, outcome, only)
    run_cells(sc, outcome, rerun_failed, failed_stages)
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


def run_stages(sc: SweepContext, outcome: Outcome, only: set[str] | None = None) -> dict[str, str]:
    """Compute every missing shared stage, each as soon as its inputs exist. Returns {stage key: error}."""
    plan = sc.plan
    runs = sc.tracker.child_runs(sc.sweep_id, "stage")
    failed: dict[str, str] = {}
    tasks: dict[str, dict] = {}
    for stage in plan.stages.values():
        if stage.kind == CELL or (only is not None and stage.key not in only):
            continue
        if verified(sc, stage):
            outcome.cached_stages += 1
            run = runs.get(stage.key)
            if run is None or run.info.status != FINISHED:
                log_cached_stage(sc, stage)
            continue
        tasks[stage.key] = _stage_task(sc, stage)
    if tasks:
        sc.log(f"  computing {len(tasks)} shared stage(s): " + ", ".join(stage_name(plan.stages[k]) for k in tasks))
        deps = {k: {d for d in plan.stages[k].deps.values() if d in tasks} for k in tasks}
        res = plan.spec.resources
        ray_backend.run_dag(
            tasks,
            deps,
            worker.stage_task,
            res.cpus_per_worker,
            sc.gpus_per_worker(),
            lambda t, r, e: stage_done(sc, t, r, e, failed, outcome),
        )
    log_teacher_flip_rates(sc)
    return failed


def _stage_task(sc: SweepContext, stage: Stage) -> dict[str, Any]:
    """Open the stage's run and describe its Ray task: everything `worker.stage_task` needs, as plain data."""
    run_id = sc.tracker.open_child(
        sc.parent_id,
        sc.sweep_id,
        "stage",
        stage.key,
        stage_name(stage),
        {"stage": stage.kind, "cache_hit": "false"},
        stage_params(stage),
    )
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
    }


# ------------------------------------------------------------------------------------------------ cells


def run_cells(sc: SweepContext, outcome: Outcome, rerun_failed: bool, failed_stages: dict[str, str]) -> None:
    """Open a run for every cell that needs work, finish cached ones at once, and run the rest as Tune trials."""
    pending, run_ids = _pending_cells(sc, outcome, rerun_failed, failed_stages)
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
    train_storage = str((sc.storage / "ray_train").resolve())
    packs = _packs(sc, pending, slots, train_storage)
    conc = min(slots, len(packs))
    sc.log(
        f"  running {len(pending)} cell(s) as {len(packs)} Ray Tune trial(s), {conc} at a time"
        + (
            f" (cheap cells packed, up to {max(len(p['cells']) for p in packs)} per trial)"
            if len(packs) < len(pending)
            else ""
        )
    )
    name = f"{sc.plan.spec.name}-{sc.sweep_id[:8]}-{int(time.time())}"
    trials = ray_backend.run_trials(
        packs, worker.run_trial, name, str((sc.storage / "ray_tune").resolve()), conc, sc.cluster.has_driver_resource
    )
    errors = {c: t.error for t in trials for c in t.cells}
    for cfg in pending:
        key = cfg["key"]
        if sc.cache.has(CELL, key):
            finish_cell(sc, run_ids[key], key, cached=False)
            outcome.finished.append(key)
        else:
            own = worker.error_file(train_storage, key)
            err = own.read_text().splitlines()[0] if own.is_file() else errors.get(key)
            fail_cell(sc, run_ids[key], key, err or "trial ended without a result", outcome)


def _pending_cells(
    sc: SweepContext, outcome: Outcome, rerun_failed: bool, failed_stages: dict[str, str]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Sort every cell by its run's status: FINISHED or previously FAILED ones are counted, cached ones logged,
    ones whose upstream failed are failed; the rest come back as work for the trials, with their run ids."""
    plan, tracker = sc.plan, sc.tracker
    runs = tracker.child_runs(sc.sweep_id, "cell")
    fail_cells = list(plan.spec.train.fail_cells) + [s for s in os.environ.get(FAIL_ENV, "").split(",") if s]
    pending: list[dict[str, Any]] = []
    run_ids: dict[str, str] = {}
    for cell in plan.cells:
        key = plan.cell_stage[cell]
        stage = plan.stages[key]
        run = runs.get(key)
        status = run.info.status if run is not None else None
        if status == FINISHED:
            outcome.finished.append(key)
            continue
        if (status == FAILED) != rerun_failed:
            if status == FAILED:
                outcome.skipped_failed.append(key)
            continue
        run_ids[key] = tracker.open_child(
            sc.parent_id, sc.sweep_id, "cell", key, cell.label(), {}, cell_params(plan, cell)
        )
        bad = [d for d in stage.deps.values() if d in failed_stages]
        if bad:
            fail_cell(
                sc,
                run_ids[key],
                key,
                f"upstream stage {plan.stages[bad[0]].kind} failed: {failed_stages[bad[0]]}",
                outcome,
            )
        elif verified(sc, stage):
            finish_cell(sc, run_ids[key], key, cached=True)
            outcome.cached.append(key)
            outcome.finished.append(key)
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
        worker.error_file(train_storage, key).unlink(missing_ok=True)
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
