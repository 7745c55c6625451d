"""What runs inside Ray workers: a shared stage's task, and the cells of one Tune trial on each Train worker.

Everything a worker needs arrives in its task or pack (plain JSON: keys, inputs payloads, storage, tracking URI);
Ray itself is reached only through the `TrainSession` the adapter hands in (orchestrator/ray_backend.py), so this
module holds the *policy* (seeding, cache publication, per-cell checkpoints and resume, in-place retries of
packed cells, fault injection) and the adapter holds the mechanics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from orchestrator import storage
from orchestrator.cache import Cache
from orchestrator.ray_backend import TrainSession, shard_map
from orchestrator.search import run_study
from orchestrator.tracking import RunLogger, system_metrics
from trainables.common import NullReporter, StageContext, read_metrics, seed_everything, write_metrics
from trainables.kinds import CELL, KINDS, CellInputs
from trainables.pages import trim_heap
from trainables.pipeline import run_stage

CELL_MARKER = "cell.json"  # beside state.pt in every checkpoint: which cell (and epoch) it belongs to
ERRORS_DIR = "cell_errors"  # under the Train storage: `<cell key>.txt`, a packed cell's error for the driver


def seed_from_key(key: str) -> None:
    """Seed every RNG from the stage's content key before its body runs.

    Why: Ray reuses worker processes, so the global RNGs hold whatever earlier tasks left there; a body that builds
    a model before seeding (random init) would then differ between an interrupted and an uninterrupted sweep. With
    this, a stage's output depends only on its key, wherever and after whatever it runs."""
    seed_everything(int(key[:8], 16))


@functools.lru_cache(maxsize=8)
def worker_cache(storage: str) -> Cache:
    """One `Cache` per storage per worker process: entries are immutable once published, so each is verified
    against its manifest once per process, not once per stage or packed cell that reads it (a pretrained
    student is read by every cell of a pack)."""
    return Cache(storage)


def _deps(cache: Cache, deps: dict[str, tuple[str, str]]) -> dict[str, Path]:
    return {role: cache.get(kind, key) for role, (kind, key) in deps.items()}


# ------------------------------------------------------------------------------------------------ stage tasks


def partial_dir(cache: Cache, kind: str, key: str) -> Path:
    """Where a stage keeps resumable work (finished shards) across a killed attempt, until its entry is published:
    beside the cache's staging area on this node, named by the entry, so a retry of the same key finds it."""
    return cache.local / ".partial" / f"{kind}-{key}"


def stage_task(task: dict[str, Any]) -> dict[str, Any]:
    """Body of a shared stage's Ray task: compute its cache entry (under the lock) and stream metrics to its run."""
    torch.set_num_threads(max(1, int(task["threads"])))
    seed_from_key(task["key"])
    cache = worker_cache(task["storage"])
    deps = _deps(cache, task["deps"])
    logger = RunLogger(task["uri"], task["run_id"], task["patience_s"]) if task.get("run_id") else None
    scratch = partial_dir(cache, task["kind"], task["key"])
    ctx = StageContext(reporter=logger or NullReporter(), threads=task["threads"], scratch=scratch)
    if task.get("shard_tasks", 1) > 1:  # its shards as Ray tasks over the cluster, this many at once
        ctx.map_shards = shard_map(task["threads"], task.get("shard_gpus", 0.0), task["shard_tasks"])
    if task.get("read_tasks", 1) > 1:  # its image files decoded by CPU-only shard tasks (trainables/reading.py)
        ctx.read_shards = shard_map(1, 0, task["read_tasks"])
    inputs = KINDS[task["kind"]].inputs.from_payload(task["inputs"])
    t0 = time.perf_counter()

    def produce(out: Path) -> dict[str, Any]:
        t = time.perf_counter()
        run_stage(task["kind"], inputs, deps, out, ctx)
        return {"kind": task["kind"], "inputs": task["inputs"], "seconds": time.perf_counter() - t}

    try:
        path, computed = cache.compute(task["kind"], task["key"], produce)
    finally:  # the worker outlives the stage (Ray reuses it): give back the heap the stage freed
        trim_heap()
    shutil.rmtree(scratch, ignore_errors=True)  # published: the finished shards are no longer needed
    if logger is not None:
        logger.flush()
    return {"metrics": read_metrics(path), "computed": computed, "wall_s": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------------ checkpoints


def error_file(train_storage: str | Path, key: str) -> str:
    """Where a packed cell's error lands, for the driver: a file on the shared folder or an object (storage.py)."""
    return storage.join(train_storage, ERRORS_DIR, f"{key}.txt")


def _read_state(path: Path) -> dict | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a truncated copy from a killed run: not a checkpoint
        return None
    return state if isinstance(state, dict) and "epoch" in state else None


def _marked_cell(marker: Path) -> str | None:
    try:
        return json.loads(marker.read_text()).get("cell")
    except (OSError, ValueError):
        return None


def orphan_checkpoint(train_storage: str | Path, key: str) -> dict | None:
    """The newest readable checkpoint of cell `key` on disk, whatever Ray's own bookkeeping says.

    Why: Ray Train records a checkpoint in `checkpoint_manager_snapshot.json` only after it has been copied to
    storage; a kill -9 between the copy and the snapshot (or before the first snapshot) leaves complete checkpoints
    that Ray does not hand back, and the cell would restart from epoch 0. And a cell packed with others
    (orchestrator/packing.py) may be resumed from a trial with another name than the one that wrote its
    checkpoints. So every checkpoint carries a `cell.json` marker and we read them ourselves: the cell's own run
    folder `train-<key>` (old checkpoints have no marker) and any pack's folder whose marker names the cell,
    newest epoch first, skipping copies that a kill truncated. Local or shared-filesystem storage only (a URI
    storage path is left to Ray)."""
    if "://" in str(train_storage) or not Path(train_storage).is_dir():
        return None
    root = Path(train_storage)
    files = set(root.glob(f"train-{key}/checkpoint_*/state.pt"))
    files |= {m.parent / "state.pt" for m in root.glob(f"train-*/checkpoint_*/{CELL_MARKER}") if _marked_cell(m) == key}
    best: dict | None = None
    for f in files:
        state = _read_state(f)
        if state is not None and (best is None or state["epoch"] > best["epoch"]):
            best = state
    return best


def resume_state(session: TrainSession, train_storage: str, key: str) -> dict | None:
    """The newest state of cell `key`. On local or shared-filesystem storage every checkpoint Ray holds is also
    on disk under `train_storage`, so `orphan_checkpoint` sees them all; on URI storage only Ray's restored
    checkpoint is available, and it counts if its marker names this cell."""
    if "://" not in str(train_storage):
        return orphan_checkpoint(train_storage, key)
    with session.restored() as d:
        if d is None:
            return None
        marker, f = d / CELL_MARKER, d / "state.pt"
        if f.is_file() and marker.is_file() and _marked_cell(marker) == key:
            return _read_state(f)
    return None


def checkpointer(session: TrainSession, key: str) -> Callable[[dict, int, dict], None]:
    """Per-epoch hook of cell `key`: every rank reports; rank 0 attaches the state and the cell marker."""

    def checkpoint(state: dict, epoch: int, metrics: dict) -> None:
        with tempfile.TemporaryDirectory() as d:
            if session.rank == 0:
                torch.save(state, Path(d) / "state.pt")
                (Path(d) / CELL_MARKER).write_text(json.dumps({"cell": key, "epoch": epoch}))
            session.report({**metrics, "epoch": epoch}, Path(d) if session.rank == 0 else None)

    return checkpoint


# ------------------------------------------------------------------------------------------------ cells


def run_trial(pack: dict[str, Any], session: TrainSession) -> dict[str, float]:
    """Body of every Train worker of one trial (what the adapter calls): the pack's cells, then the trial's one
    report (every report waits for the controller's next poll, so packs report once, at their end)."""
    torch.set_num_threads(max(1, int(pack["threads"])))
    results = run_pack(
        pack,
        session,
        resume_for=lambda key: resume_state(session, pack["train_storage"], key),
        checkpoint_for=lambda key: checkpointer(session, key),
    )
    numbers = {k: v for k, v in (results[-1][1] or {}).items() if isinstance(v, (int, float))}
    return {**numbers, "cells_done": len(results), "done": 1}


def run_pack(
    pack: dict[str, Any],
    session: TrainSession,
    resume_for: Callable[[str], dict | None],
    checkpoint_for: Callable[[str], Callable | None],
) -> list[tuple[str, dict | None]]:
    """The pack's cells one after another (orchestrator/packing.py).

    Each cell is still a cell: seeded from its own key, its own MLflow run, cache entry and checkpoints (marked
    with its key), and a published cell is skipped when the trial restarts. Failures:
    - a lone cell, or any cell of a multi-worker trial, raises: Ray Train restarts the worker group from the last
      checkpoint (`max_retries`), as for an unpacked trial; with several ranks a rank cannot carry on alone;
    - a cell packed with others on one worker is retried in place (`max_retries`, from its last checkpoint);
      if it still fails, rank 0 writes its error file and the pack goes on with the next cell.
    Returns (cell key, metrics or None if it failed) per cell, in pack order.
    """
    retries = int(pack["resources"]["max_retries"])
    alone = session.world > 1 or len(pack["cells"]) == 1
    results: list[tuple[str, dict | None]] = []
    for cell in pack["cells"]:
        cfg = {**cell, "threads": pack["threads"], "driver_node": pack.get("driver_node"), "worker_node": session.node}
        key, metrics = cfg["key"], None
        for attempt in range(retries + 1):
            try:
                metrics = run_cell(cfg, session, resume_for(key), checkpoint_for(key))
                break
            except Exception as err:  # noqa: BLE001 - recorded for the driver, which marks the cell FAILED
                if alone:
                    raise
                if attempt == retries and session.rank == 0:
                    text = f"{type(err).__name__}: {err}\n\n{traceback.format_exc()}"
                    storage.write_text(error_file(pack["train_storage"], key), text)
        results.append((key, metrics))
    return results


def _fail_switch(fail_cells: list[str], key: str) -> None:
    """Fault injection (`train.fail_cells`, ROBUSTIFY_FAIL_CELLS): the named cells raise before training."""
    if "*" in fail_cells or any(key.startswith(f) for f in fail_cells):
        raise RuntimeError(f"fault injected by train.fail_cells for cell {key}")


def run_cell(cfg: dict[str, Any], session: TrainSession, resume: dict | None, checkpoint) -> dict:
    """One cell on every Train worker. Rank 0 publishes the cache entry; all ranks report equally."""
    seed_from_key(cfg["key"])
    cache = worker_cache(cfg["storage"])
    if cache.has(CELL, cfg["key"]):
        return read_metrics(cache.get(CELL, cfg["key"]))
    _fail_switch(cfg["fail_cells"], cfg["key"])
    deps = _deps(cache, cfg["deps"])
    logger = RunLogger(cfg["uri"], cfg["run_id"], cfg["patience_s"]) if session.rank == 0 else NullReporter()
    ctx = StageContext(
        reporter=logger,
        device=session.device,
        rank=session.rank,
        world_size=session.world,
        wrap_model=session.wrap,
        checkpoint=checkpoint,
        resume=resume,
        threads=cfg["threads"],
    )
    inputs = CellInputs.from_payload(cfg["inputs"])
    out = cache.staging(CELL, cfg["key"]) if session.rank == 0 else Path(tempfile.mkdtemp())
    start = time.time()
    # rank 0 only: one monitor per run (other ranks would log the same steps); see tracking.system_metrics
    with system_metrics(cfg["uri"], cfg["run_id"]) if session.rank == 0 else contextlib.nullcontext():
        if inputs.search and session.rank == 0:
            metrics = _search_cell(cfg, inputs, deps, out, ctx)
        else:
            metrics = run_stage(CELL, inputs, deps, out, ctx)
    metrics.update({"time/start_unix": start, "time/end_unix": time.time()})
    if session.rank == 0:
        write_metrics(out, metrics)
        (out / "placement.json").write_text(json.dumps({k: cfg.get(k) for k in ("driver_node", "worker_node")}))
        cache.publish(CELL, cfg["key"], out, {"kind": CELL, "inputs": cfg["inputs"]})
        logger.flush()
    return metrics


def _search_cell(cfg: dict, inputs: CellInputs, deps: dict, out: Path, ctx: StageContext) -> dict[str, float]:
    """Optuna study inside the cell: each trial is a full distill + evaluate with sampled train knobs. (Whether a
    cell trains on cached features follows from its deps: a `--no-feature-cache` plan gives it none.)"""
    search = inputs.search

    def train_once(params: dict, tdir: Path) -> dict[str, float]:
        trial_inputs = dataclasses.replace(inputs, train={**inputs.train, **params})
        trial_ctx = dataclasses.replace(ctx, checkpoint=None, resume=None, reporter=NullReporter())
        return run_stage(CELL, trial_inputs, deps, tdir, trial_ctx)

    return run_study(
        cfg["storage"],
        cfg["key"],
        search["space"],
        search["trials"],
        search["metric"],
        train_once,
        out,
        lambda m, step: ctx.reporter.log_metrics(m, step),
    )
