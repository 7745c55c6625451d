"""Executing a plan: which stages and cells still need work, where their runs go in MLflow, and resume.

Source of truth for "done": the cache (a published entry) and MLflow (a FINISHED child run of this sweep id).
- a stage or cell whose entry is cached is never recomputed; if its run is missing in this sweep it is logged
  from the cached metrics (tag `cache_hit=true`);
- a cell whose run FAILED is skipped (and reported) unless `--rerun-failed`, which runs only those;
- a cell whose run was left RUNNING by a killed driver is reopened, and its Train run resumes from the last
  checkpoint (deterministic Train run names under the shared storage).
"""
from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import ray_backend
from orchestrator.cache import Cache
from orchestrator.plan import Plan, Stage, iter_upstream
from orchestrator.tracking import FAILED, FINISHED, RunLogger, SweepTracker, flatten

FAIL_ENV = "ROBUSTIFY_FAIL_CELLS"  # comma-separated cell-key prefixes (or "*") that raise: fault injection
# Upstream stages whose time counts as the method's training time (main paper Figure 1).
PIPELINE_KINDS = ("robustify_teacher", "extract_features", "teacher_targets", "full_finetune")


@dataclass
class Outcome:
    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped_failed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    computed_stages: int = 0
    cached_stages: int = 0


@dataclass
class SweepContext:
    plan: Plan
    cache: Cache
    storage: Path
    tracker: SweepTracker
    parent_id: str
    sweep_id: str
    cluster: ray_backend.ClusterInfo
    use_feature_cache: bool = True
    log: Any = print

    def gpus_per_worker(self) -> float:
        """GPUs each stage task / Train worker requests: the spec's, unless `ray_backend.uses_gpus` says no."""
        res = self.plan.spec.resources
        return res.gpus_per_worker if ray_backend.uses_gpus(self.cluster, res.gpus_per_worker) else 0.0


# ------------------------------------------------------------------------------------------ in Ray workers


def seed_from_key(key: str) -> None:
    """Seed every RNG from the stage's content key before its body runs.

    Why: Ray reuses worker processes, so the global RNGs hold whatever earlier tasks left there; a body that builds
    a model before seeding (random init) would then differ between an interrupted and an uninterrupted sweep. With
    this, a stage's output depends only on its key, wherever and after whatever it runs."""
    from trainables.common import seed_everything

    seed_everything(int(key[:8], 16))


@functools.lru_cache(maxsize=8)
def worker_cache(storage: str) -> Cache:
    """One `Cache` per storage per worker process: entries are immutable once published, so each is verified
    against its manifest once per process, not once per stage or packed cell that reads it (a pretrained
    student is read by every cell of a pack)."""
    return Cache(storage)


def stage_task(task: dict[str, Any]) -> dict[str, Any]:
    """Body of a stage's Ray task: compute its cache entry (under the lock) and stream metrics to its run."""
    import torch

    from trainables.common import StageContext, read_metrics
    from trainables.stages import run_stage

    torch.set_num_threads(max(1, int(task["threads"])))
    seed_from_key(task["key"])
    cache = worker_cache(task["storage"])
    deps = {role: cache.get(kind, key) for role, (kind, key) in task["deps"].items()}
    logger = RunLogger(task["uri"], task["run_id"]) if task.get("run_id") else None
    ctx = StageContext(reporter=logger or _Null(), threads=task["threads"])
    t0 = time.perf_counter()
    path, computed = cache.compute(task["kind"], task["key"],
                                   lambda out: {"kind": task["kind"], "inputs": task["inputs"],
                                                "seconds": _timed(run_stage, task, deps, out, ctx)})
    if logger is not None:
        logger.flush()
    return {"metrics": read_metrics(path), "computed": computed, "wall_s": time.perf_counter() - t0}


def _timed(run_stage, task, deps, out, ctx) -> float:
    t0 = time.perf_counter()
    run_stage(task["kind"], task["inputs"], deps, out, ctx)
    return time.perf_counter() - t0


class _Null:
    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        pass


ERRORS_DIR = "cell_errors"  # under the Train storage: `<cell key>.txt`, a packed cell's error for the driver


def error_file(train_storage: str | Path, key: str) -> Path:
    return Path(train_storage) / ERRORS_DIR / f"{key}.txt"


def run_pack_in_worker(pack: dict[str, Any], rank: int, world: int, device, wrap, node: str, resume_for,
                       checkpoint_for) -> list[tuple[str, dict | None]]:
    """Body of every Train worker of one trial: the pack's cells one after another (orchestrator/packing.py).

    Each cell is still a cell: seeded from its own key, its own MLflow run, cache entry and checkpoints (marked
    with its key), and a published cell is skipped when the trial restarts. Failures:
    - a lone cell, or any cell of a multi-worker trial, raises: Ray Train restarts the worker group from the last
      checkpoint (`max_retries`), as for an unpacked trial; with several ranks a rank cannot carry on alone;
    - a cell packed with others on one worker is retried in place (`max_retries`, from its last checkpoint);
      if it still fails, rank 0 writes its error file and the pack goes on with the next cell.
    Returns (cell key, metrics or None if it failed) per cell, in pack order.
    """
    import traceback

    retries = int(pack["resources"]["max_retries"])
    results: list[tuple[str, dict | None]] = []
    for cell in pack["cells"]:
        cfg = {**cell, "threads": pack["threads"], "driver_node": pack.get("driver_node"), "worker_node": node}
        key = cfg["key"]
        for attempt in range(retries + 1):
            try:
                metrics = run_cell_in_worker(cfg, rank, world, device, resume_for(key), checkpoint_for(key), wrap)
                break
            except Exception as err:  # noqa: BLE001 - recorded for the driver, which marks the cell FAILED
                if world > 1 or len(pack["cells"]) == 1:
                    raise
                metrics = None
                if attempt == retries and rank == 0:
                    f = error_file(pack["train_storage"], key)
                    f.parent.mkdir(parents=True, exist_ok=True)
                    f.write_text(f"{type(err).__name__}: {err}\n\n{traceback.format_exc()}")
        results.append((key, metrics))
    return results


def run_cell_in_worker(cfg: dict[str, Any], rank: int, world: int, device, resume, checkpoint, wrap) -> dict:
    """Body of every Train worker of a cell. Rank 0 publishes the cache entry; all ranks report equally."""
    import tempfile

    from trainables.common import StageContext, read_metrics, write_metrics
    from trainables.distill import run_cell

    seed_from_key(cfg["key"])
    cache = worker_cache(cfg["storage"])
    if cache.has("cell", cfg["key"]):
        return read_metrics(cache.get("cell", cfg["key"]))
    deps = {role: cache.get(kind, key) for role, (kind, key) in cfg["deps"].items()}
    logger = RunLogger(cfg["uri"], cfg["run_id"]) if rank == 0 else _Null()
    ctx = StageContext(reporter=logger, device=device, rank=rank, world_size=world, wrap_model=wrap,
                       checkpoint=checkpoint, resume=resume, threads=cfg["threads"])
    inputs = {**cfg["inputs"], "fail_cells": cfg["fail_cells"]}
    out = cache.staging("cell", cfg["key"]) if rank == 0 else Path(tempfile.mkdtemp())
    start = time.time()
    search = cfg["inputs"].get("search")
    if search and rank == 0:
        metrics = _search_cell(cfg, inputs, deps, out, ctx, search)
    else:
        metrics = run_cell(inputs, deps, out, ctx, use_cache=cfg["use_feature_cache"], key=cfg["key"])
    metrics.update({"time/start_unix": start, "time/end_unix": time.time()})
    if rank == 0:
        write_metrics(out, metrics)
        (out / "placement.json").write_text(json.dumps({k: cfg.get(k) for k in ("driver_node", "worker_node")}))
        cache.publish("cell", cfg["key"], out, {"kind": "cell", "inputs": cfg["inputs"]})
        logger.flush()
    return metrics


def _search_cell(cfg: dict, inputs: dict, deps: dict, out: Path, ctx, search: dict) -> dict[str, float]:
    """Optuna study inside the cell: each trial is a full distill + evaluate with sampled train knobs."""
    import copy
    import dataclasses

    from orchestrator.search import run_study
    from trainables.common import write_metrics
    from trainables.distill import run_cell

    def train_once(params: dict, tdir: Path) -> dict[str, float]:
        trial_inputs = copy.deepcopy(inputs)
        trial_inputs["train"].update(params)
        trial_ctx = dataclasses.replace(ctx, checkpoint=None, resume=None, reporter=_Null())
        m = run_cell(trial_inputs, deps, tdir, trial_ctx, use_cache=cfg["use_feature_cache"], key=cfg["key"])
        write_metrics(tdir, m)
        return m

    return run_study(Path(cfg["storage"]), cfg["key"], search["space"], search["trials"], search["metric"],
                     train_once, out, lambda m, step: ctx.reporter.log_metrics(m, step))


# ------------------------------------------------------------------------------------------ driver side


def _stage_params(stage: Stage) -> dict[str, Any]:
    inp = stage.inputs
    p: dict[str, Any] = {"stage": stage.kind, "stage_key": stage.key}
    model = inp.get("model")
    if isinstance(model, dict):
        p["model"] = model["name"]
    if "teacher" in inp and isinstance(inp["teacher"], str):
        p["model"] = inp["teacher"]
    if "seed" in inp:
        p["seed"] = inp["seed"]
    p.update({f"cfg.{k}": v for k, v in flatten({k: v for k, v in inp.items() if k not in ("model",)}).items()})
    return p


def _stage_name(stage: Stage) -> str:
    p = _stage_params(stage)
    return f"{stage.kind}{'-' + p['model'] if 'model' in p else ''}-{stage.key[:8]}"


def run_stages(sc: SweepContext, outcome: Outcome, only: set[str] | None = None) -> dict[str, str]:
    """Compute every missing shared stage, each as soon as its inputs exist. Returns {stage key: error}."""
    plan, cache, tracker = sc.plan, sc.cache, sc.tracker
    runs = tracker.child_runs(sc.sweep_id, "stage")
    failed: dict[str, str] = {}
    res = plan.spec.resources
    tasks: dict[str, dict] = {}
    for stage in plan.stages.values():
        if stage.kind == "cell" or (only is not None and stage.key not in only):
            continue
        run = runs.get(stage.key)
        if _verified(sc, stage):
            outcome.cached_stages += 1
            if run is None or run.info.status != FINISHED:
                _log_cached(sc, stage, run)
            continue
        run_id = tracker.open_child(sc.parent_id, sc.sweep_id, "stage", stage.key, _stage_name(stage),
                                    {"stage": stage.kind, "cache_hit": "false"}, _stage_params(stage))
        tasks[stage.key] = {"kind": stage.kind, "key": stage.key, "inputs": stage.inputs, "run_id": run_id,
                            "uri": tracker.uri, "storage": str(sc.storage), "threads": res.cpus_per_worker,
                            "deps": {r: (plan.stages[k].kind, k) for r, k in stage.deps.items()}}
    if tasks:
        sc.log(f"  computing {len(tasks)} shared stage(s): "
               + ", ".join(_stage_name(plan.stages[k]) for k in tasks))
        deps = {k: {d for d in plan.stages[k].deps.values() if d in tasks} for k in tasks}
        ray_backend.run_dag(tasks, deps, stage_task, res.cpus_per_worker, sc.gpus_per_worker(),
                            lambda t, r, e: _stage_done(sc, t, r, e, failed, outcome))
    _log_teacher_flip_rates(sc)
    return failed


def _verified(sc: SweepContext, stage: Stage) -> bool:
    """Is the entry cached *and* intact? A corrupt entry is removed here and recomputed like a missing one."""
    from orchestrator.cache import CacheCorrupt

    if not sc.cache.has(stage.kind, stage.key):
        return False
    try:
        sc.cache.get(stage.kind, stage.key)
        return True
    except CacheCorrupt as err:
        sc.log(f"  {err}: recomputing it")
        return False


def flip_rates_for(sc: SweepContext, metrics: dict[str, float], seed: int, prefix: str = "") -> dict[str, float]:
    """`fr/*` and `mfr` of stored flip probabilities against the seed's reference model (if it has run)."""
    from trainables.common import read_metrics
    from trainables.evaluate import with_flip_rates

    key = sc.plan.references.get(seed)
    if key is None or not sc.cache.has("naive_teacher", key):
        return {}
    ref = read_metrics(sc.cache.get("naive_teacher", key))
    fp = {k.removeprefix(prefix): v for k, v in metrics.items() if k.startswith(prefix + "fp/")}
    return {prefix + k: v for k, v in with_flip_rates(fp, ref).items()}


def _log_teacher_flip_rates(sc: SweepContext) -> None:
    """Teachers' mFR (Table 6) needs the reference's FPs, so it is logged once every stage has run."""
    from trainables.common import read_metrics

    runs = sc.tracker.child_runs(sc.sweep_id, "stage")
    for stage in sc.plan.stages.values():
        run = runs.get(stage.key)
        if stage.kind not in ("naive_teacher", "robustify_teacher") or run is None:
            continue
        if not sc.cache.has(stage.kind, stage.key):
            continue
        fr = flip_rates_for(sc, read_metrics(sc.cache.get(stage.kind, stage.key)), stage.inputs["seed"])
        if fr:
            sc.tracker.logger(run.info.run_id).log_metrics(fr, step=0)


def _stage_done(sc: SweepContext, task: dict, result: dict | None, err: BaseException | None,
                failed: dict[str, str], outcome: Outcome) -> None:
    logger = sc.tracker.logger(task["run_id"])
    if err is not None:
        failed[task["key"]] = f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:300] if str(err) else ''}"
        logger.set_tags({"error": failed[task["key"]]})
        logger.finish(FAILED)
        sc.log(f"  stage {task['kind']} {task['key'][:8]} FAILED: {failed[task['key']]}")
        return
    outcome.computed_stages += 1
    logger.log_metrics(result["metrics"], step=0)
    logger.finish(FINISHED)
    sc.log(f"  stage {_stage_name(sc.plan.stages[task['key']])} done in {result['wall_s']:.0f} s")


def _log_cached(sc: SweepContext, stage: Stage, run) -> None:
    from trainables.common import read_metrics

    metrics = read_metrics(sc.cache.get(stage.kind, stage.key))
    run_id = sc.tracker.open_child(sc.parent_id, sc.sweep_id, "stage", stage.key, _stage_name(stage),
                                   {"stage": stage.kind, "cache_hit": "true"}, _stage_params(stage))
    logger = sc.tracker.logger(run_id)
    logger.set_tags({"cache_hit": "true"})
    logger.log_metrics(metrics, step=0)
    logger.finish(FINISHED)


def _cell_params(plan: Plan, cell) -> dict[str, Any]:
    ax = cell.axes()
    params = {"student": ax["student"], "teacher": ax["teacher"] or "none",
              "data_fraction": "none" if ax["data_fraction"] is None else ax["data_fraction"],
              "method": ax["method"], "seed": ax["seed"]}
    spec = plan.spec
    params.update({f"train.{k}": v for k, v in spec.train.model_dump(mode="json").items() if k != "fail_cells"})
    params.update({"profile": spec.profile, "eval": ",".join(s.value for s in spec.eval)})
    return params


def pipeline_seconds(sc: SweepContext, key: str, cell_metrics: dict[str, float]) -> float:
    """The cell's own training plus the upstream stages that are part of its method's cost."""
    from trainables.common import read_metrics

    total = float(cell_metrics.get("time/train_s", 0.0))
    for st in iter_upstream(sc.plan, key):
        if st.kind in PIPELINE_KINDS and sc.cache.has(st.kind, st.key):
            total += float(read_metrics(sc.cache.get(st.kind, st.key)).get("time/stage_s", 0.0))
    return total


def finish_cell(sc: SweepContext, run_id: str, key: str, cached: bool) -> None:
    from trainables.common import read_metrics

    metrics = read_metrics(sc.cache.get("cell", key))
    metrics["time/pipeline_s"] = pipeline_seconds(sc, key, metrics)
    seed = sc.plan.stages[key].inputs["cell"]["seed"]
    metrics.update(flip_rates_for(sc, metrics, seed))
    metrics.update(flip_rates_for(sc, metrics, seed, prefix="teacher/"))
    logger = sc.tracker.logger(run_id)
    if cached:
        logger.set_tags({"cache_hit": "true"})
    final = {k: v for k, v in metrics.items() if not k.startswith("train/")}
    logger.log_metrics(final, step=int(sc.plan.spec.train.epochs))
    logger.finish(FINISHED)


def run_cells(sc: SweepContext, outcome: Outcome, rerun_failed: bool, failed_stages: dict[str, str]) -> None:
    plan, tracker = sc.plan, sc.tracker
    runs = tracker.child_runs(sc.sweep_id, "cell")
    fail_cells = list(plan.spec.train.fail_cells) + [s for s in os.environ.get(FAIL_ENV, "").split(",") if s]
    pending: list[dict[str, Any]] = []
    run_ids: dict[str, str] = {}
    res = plan.spec.resources
    for cell in plan.cells:
        key = plan.cell_stage[cell]
        stage = plan.stages[key]
        run = runs.get(key)
        status = run.info.status if run is not None else None
        if status == FINISHED:
            outcome.finished.append(key)
            continue
        if rerun_failed and status != FAILED:
            continue
        if not rerun_failed and status == FAILED:
            outcome.skipped_failed.append(key)
            continue
        run_id = tracker.open_child(sc.parent_id, sc.sweep_id, "cell", key, cell.label(), {}, _cell_params(plan, cell))
        run_ids[key] = run_id
        bad = [d for d in stage.deps.values() if d in failed_stages]
        if bad:
            _fail_cell(sc, run_id, key, f"upstream stage {plan.stages[bad[0]].kind} failed: {failed_stages[bad[0]]}",
                       outcome)
            continue
        if _verified(sc, stage):
            finish_cell(sc, run_id, key, cached=True)
            outcome.cached.append(key)
            outcome.finished.append(key)
            continue
        pending.append({
            "key": key, "label": cell.label(), "inputs": stage.inputs, "run_id": run_id, "uri": tracker.uri,
            "storage": str(sc.storage), "deps": {r: (plan.stages[k].kind, k) for r, k in stage.deps.items()},
            "fail_cells": fail_cells, "use_feature_cache": sc.use_feature_cache,
        })
    if not pending:
        return
    slots = ray_backend.max_concurrent(sc.cluster, res.workers_per_trial, res.cpus_per_worker,
                                       sc.gpus_per_worker(), len(pending), res.max_concurrent_trials)
    train_storage = str((sc.storage / "ray_train").resolve())
    packs = _packs(sc, pending, slots, train_storage)
    conc = min(slots, len(packs))
    sc.log(f"  running {len(pending)} cell(s) as {len(packs)} Ray Tune trial(s), {conc} at a time"
           + (f" (cheap cells packed, up to {max(len(p['cells']) for p in packs)} per trial)"
              if len(packs) < len(pending) else ""))
    name = f"{plan.spec.name}-{sc.sweep_id[:8]}-{int(time.time())}"
    outcomes = ray_backend.run_cells(packs, name, str((sc.storage / "ray_tune").resolve()), conc,
                                     sc.cluster.has_driver_resource)
    errors = {c: o.error for o in outcomes for c in o.cells}
    for cfg in pending:
        key = cfg["key"]
        if sc.cache.has("cell", key):
            finish_cell(sc, run_ids[key], key, cached=False)
            outcome.finished.append(key)
        else:
            own = error_file(train_storage, key)
            err = own.read_text().splitlines()[0] if own.is_file() else errors.get(key)
            _fail_cell(sc, run_ids[key], key, err or "trial ended without a result", outcome)


def _packs(sc: SweepContext, pending: list[dict[str, Any]], slots: int, train_storage: str) -> list[dict]:
    """Trials to run: cheap cells packed together (orchestrator/packing.py), each pack with what its workers need."""
    from orchestrator.costs import stage_seconds
    from orchestrator.packing import pack_cells, pack_key

    res = sc.plan.spec.resources
    by_key = {c["key"]: c for c in pending}
    for key in by_key:  # a stale error from an earlier attempt must not fail a cell that now succeeds
        error_file(train_storage, key).unlink(missing_ok=True)
    groups = pack_cells([(k, stage_seconds(sc.plan.stages[k], sc.plan.spec)) for k in by_key], slots,
                        res.cells_per_trial)
    return [{"key": pack_key(g), "cells": [by_key[k] for k in g], "resources": res.model_dump(),
             "use_gpus": sc.gpus_per_worker() > 0, "train_storage": train_storage} for g in groups]


def _fail_cell(sc: SweepContext, run_id: str, key: str, error: str, outcome: Outcome) -> None:
    logger = sc.tracker.logger(run_id)
    logger.set_tags({"error": error[:5000]})
    logger.finish(FAILED)
    outcome.failed[key] = error
    sc.log(f"  cell {key[:10]} FAILED: {error}")


def execute(sc: SweepContext, rerun_failed: bool = False) -> Outcome:
    """Stages (waves of Ray tasks), then cells (Ray Tune trials)."""
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
