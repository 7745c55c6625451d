"""The Ray adapter: the only module that imports ray. Executes a plan's stage waves and its cells.

- Shared stages run as Ray tasks, a wave at a time (everything whose inputs are ready runs together); each task
  computes its entry under the cache lock, so two sweeps asking for the same stage compute it once.
- Cells run as Ray Tune trials. Ray Train V2 forbids `Tuner(TorchTrainer)`, so each trial's function is a small
  *driver* that builds a `TorchTrainer` and calls `fit()` (shared/platform.md). The driver reserves only a tiny
  custom resource (`trial_driver`, declared on the head) so drivers never starve the training workers.
- Every Train run has a deterministic name (`train-<cell key>`) under the shared storage path, so a retried
  trial, or a rerun after the whole sweep was killed, resumes from the run's last checkpoint.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import ray
import torch
from ray import tune

TRIAL_DRIVER = "trial_driver"


@dataclass
class ClusterInfo:
    cpus: float
    gpus: float
    has_driver_resource: bool
    started_here: bool


def start(address: str | None, num_cpus: int | None = None) -> ClusterInfo:
    """Join a cluster (`address`) or start a local one that declares the driver resource."""
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
    quiet = {"log_to_driver": bool(os.environ.get("ROBUSTIFY_RAY_LOGS")), "configure_logging": True,
             "logging_level": "ERROR"}
    if address:
        ray.init(address=address, **quiet)
        started = False
    else:
        ray.init(num_cpus=num_cpus, resources={TRIAL_DRIVER: 1000}, include_dashboard=True,
                 dashboard_host="127.0.0.1", **quiet)
        started = True
    res = ray.cluster_resources()
    return ClusterInfo(res.get("CPU", 0.0), res.get("GPU", 0.0), TRIAL_DRIVER in res, started)


def stop() -> None:
    if ray.is_initialized():
        ray.shutdown()


def max_concurrent(info: ClusterInfo, workers: int, cpus: float, gpus: float, n_cells: int,
                   explicit: int | None) -> int:
    """How many trials fit at once: GPU-bound on a GPU cluster, CPU-bound otherwise."""
    if explicit:
        return max(1, min(explicit, n_cells))
    if gpus > 0:
        fit = int(info.gpus // (workers * gpus)) if info.gpus else 1
    else:
        fit = int(info.cpus // (workers * cpus)) if info.cpus else 1
    return max(1, min(fit, n_cells))


# ------------------------------------------------------------------------------------------------ stage tasks


def run_dag(tasks: dict[str, dict[str, Any]], deps: dict[str, set[str]], fn: Callable[[dict[str, Any]], Any],
            cpus: float, gpus: float, on_done: Callable[[dict[str, Any], Any, BaseException | None], None]) -> None:
    """Run `fn(task)` for every task as a Ray task as soon as the tasks it depends on have finished (not wave by
    wave: a slow student pretraining must not hold back the teachers). `on_done(task, result, error)` is called
    as each finishes; a task whose upstream failed is reported with an error and never started."""
    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=1, retry_exceptions=False)(fn)
    waiting, running, done, failed = set(tasks), {}, set(), set()

    def submit_ready() -> None:
        for key in sorted(waiting):
            if deps[key] & failed:
                waiting.discard(key)
                failed.add(key)
                on_done(tasks[key], None, RuntimeError("an upstream stage failed"))
            elif deps[key] <= done:
                waiting.discard(key)
                running[remote.remote(tasks[key])] = key

    submit_ready()
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        key = running.pop(ready[0])
        try:
            result, err = ray.get(ready[0]), None
        except ray.exceptions.RayTaskError as e:
            result, err = None, e.as_instanceof_cause()
        except ray.exceptions.RayError as e:
            result, err = None, e
        (failed if err is not None else done).add(key)
        on_done(tasks[key], result, err)
        submit_ready()


# ------------------------------------------------------------------------------------------------ cell trials


def orphan_checkpoint(run_dir: str | Path) -> dict | None:
    """The newest readable checkpoint in a Train run folder that Ray's own bookkeeping does not list.

    Why: Ray Train records a checkpoint in `checkpoint_manager_snapshot.json` only after it has been copied to
    storage; a kill -9 between the copy and the snapshot (or before the first snapshot) leaves complete checkpoints
    that `ray.train.get_checkpoint()` does not return, and the cell would restart from epoch 0. We read them
    ourselves, newest epoch first, skipping any that a kill truncated mid-copy. Local or shared-filesystem storage
    only (a URI storage path is left to Ray)."""
    if "://" in str(run_dir) or not Path(run_dir).is_dir():
        return None
    run_dir = Path(run_dir)
    best: dict | None = None
    for f in run_dir.glob("checkpoint_*/state.pt"):
        try:
            state = torch.load(f, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a truncated copy from a killed run: not a checkpoint
            continue
        if isinstance(state, dict) and "epoch" in state and (best is None or state["epoch"] > best["epoch"]):
            best = state
    return best


def _worker_context(cfg: dict[str, Any]):
    """Inside a Train worker: rank, device, DDP wrapper, checkpoint/report hooks, resume state."""
    import ray.train
    import ray.train.torch as rtt

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = rtt.get_device() if torch.cuda.is_available() else torch.device("cpu")
    resume = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            f = Path(d) / "state.pt"
            if f.is_file():
                resume = torch.load(f, map_location="cpu", weights_only=True)
    else:
        resume = orphan_checkpoint(f"{cfg['train_storage']}/train-{cfg['key']}")

    def checkpoint(state: dict, epoch: int, metrics: dict) -> None:
        with tempfile.TemporaryDirectory() as d:
            if rank == 0:
                torch.save(state, Path(d) / "state.pt")
            ck = ray.train.Checkpoint.from_directory(d) if rank == 0 else None
            ray.train.report({**metrics, "epoch": epoch}, checkpoint=ck)

    wrap = (lambda m: rtt.prepare_model(m, move_to_device=torch.cuda.is_available())) if world > 1 else (lambda m: m)
    return rank, world, device, resume, checkpoint, wrap


def cell_worker_loop(cfg: dict[str, Any]) -> None:
    """Train loop of every worker of one cell: run the `cell` stage, publish it from rank 0, final report."""
    import ray.train

    from orchestrator import execution

    rank, world, device, resume, checkpoint, wrap = _worker_context(cfg)
    cfg = {**cfg, "worker_node": ray.get_runtime_context().get_node_id()}
    torch.set_num_threads(max(1, int(cfg["threads"])))
    metrics = execution.run_cell_in_worker(cfg, rank, world, device, resume, checkpoint, wrap)
    ray.train.report({**{k: v for k, v in metrics.items() if isinstance(v, (int, float))}, "done": 1})


def _cell_driver(config: dict[str, Any]) -> None:
    """Tune function trainable: builds the TorchTrainer of one cell and fits it (the Train V2 pattern)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    cell = {**config["cell"], "driver_node": ray.get_runtime_context().get_node_id()}
    res = cell["resources"]
    use_gpu = res["gpus_per_worker"] > 0 and cell["has_gpus"]
    per_worker = {"CPU": res["cpus_per_worker"], **({"GPU": res["gpus_per_worker"]} if use_gpu else {})}
    trainer = TorchTrainer(
        cell_worker_loop,
        train_loop_config={**cell, "threads": res["cpus_per_worker"]},
        torch_config=TorchConfig(backend="nccl" if use_gpu and torch.cuda.is_available() else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=res["workers_per_trial"], use_gpu=use_gpu,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=f"train-{cell['key']}", storage_path=cell["train_storage"],
            failure_config=ray.train.FailureConfig(max_failures=res["max_retries"], controller_failure_limit=3),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=[TuneReportCallback()]),
    )
    trainer.fit()


@dataclass
class TrialOutcome:
    key: str
    error: str | None


def run_cells(cells: list[dict[str, Any]], experiment: str, tune_storage: str, concurrency: int,
              use_driver_resource: bool) -> list[TrialOutcome]:
    """One Tune experiment over the given cells (a grid over their configs). Returns each cell's outcome."""
    if not cells:
        return []
    _quiet_tune_logs(Path(tune_storage).parent / "logs" / "ray_tune.log")
    driver = tune.with_resources(_cell_driver, {TRIAL_DRIVER: 0.01} if use_driver_resource else {"CPU": 0})
    tuner = tune.Tuner(
        driver,
        param_space={"cell": tune.grid_search(cells)},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrency,
                                    trial_dirname_creator=lambda t: f"cell-{t.config['cell']['key'][:12]}"),
        run_config=tune.RunConfig(name=experiment, storage_path=tune_storage, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )
    grid = tuner.fit()
    out = []
    for r in grid:
        key = r.config["cell"]["key"] if r.config else "?"
        err = None if r.error is None else _short_error(r.error)
        out.append(TrialOutcome(key, err))
    return out


def _quiet_tune_logs(path: Path) -> None:
    """Tune logs each failed trial's traceback at ERROR level on stderr; users get one line per failed cell from
    us instead, and the tracebacks go to <storage>/logs/ray_tune.log."""
    import logging

    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("ray.tune", "ray.train", "ray.air"):
        lg = logging.getLogger(name)
        lg.handlers = [handler]
        lg.propagate = False


def _short_error(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    cause = [ln for ln in text if "Error" in ln or "error" in ln]
    return (cause[-1] if cause else (text[-1] if text else type(err).__name__))[:500]


def wait_cluster_ready(timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not ray.cluster_resources().get("CPU"):
        time.sleep(0.5)
