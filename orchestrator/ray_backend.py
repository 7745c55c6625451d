"""The Ray adapter: the only module that imports ray. Runs a plan's shared stages as tasks and its cells as trials.

- Shared stages run as Ray tasks, each submitted once the stages it reads have finished, critical path first
  (`run_dag`); the body computes its entry under the cache lock, so two sweeps compute a stage once.
- Cells run as Ray Tune trials. Ray Train V2 forbids `Tuner(TorchTrainer)`, so each trial's function is a small
  *driver* that builds a `TorchTrainer` and calls `fit()` (shared/platform.md), reserving only a tiny custom
  resource (`trial_driver`, declared on the head) so drivers never starve the training workers.
- Every Train run has a deterministic name (`train-<pack key>`) under the shared storage path: a retried trial, or
  a rerun after the whole sweep was killed, resumes from the run's last checkpoint.
The adapter knows nothing of stages, cells or MLflow: it runs the callables orchestrator/worker.py provides."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch as rtt
import torch
from ray import tune
from ray.autoscaler.v2 import sdk as autoscaler_sdk
from ray.train.torch import TorchConfig, TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from orchestrator.capacity import (  # noqa: F401 - ClusterInfo, max_concurrent, uses_gpus: the adapter's API
    TRIAL_DRIVER,
    WAITED_ON,
    ClusterInfo,
    autoscaler_gpus,
    describe_wait,
    max_concurrent,
    uses_gpus,
)
from orchestrator.tune_logs import quiet_tune_logs, short_error, trial_dirname

# Every Ray cluster's head has this resource (1.0): trial drivers of a cluster without `trial_driver` (KubeRay, a
# plain `ray start --head`) reserve a sliver of it, so they stay on the head and take no CPU a Train worker needs.
HEAD_NODE = "node:__internal_head__"
# Ray Train V2 settings for every job (Train propagates them from the trial driver to its controller and workers).
# The health-check interval is also how often the controller drains each worker's one-slot result queue, so a
# `ray.train.report` issued sooner than that after the previous one blocks until the next poll; at Ray's default
# of 2 s, a packed cell or an epoch of a few seconds spent up to half its time waiting there (bench/overhead.py).
JOINED_START_TIMEOUT_S = 900  # EC2 boot + cluster.yaml's setup commands, with room
AUTOSCALING_CONFIG = Path(os.environ.get("ROBUSTIFY_AUTOSCALING_CONFIG", "~/ray_bootstrap_config.yaml"))
TRAIN_ENV = {
    "RAY_TRAIN_V2_ENABLED": "1",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "120",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
}


def pin_cluster_address() -> None:
    """Every worker process of our job (`worker_process_setup_hook`): RAY_ADDRESS = the cluster it belongs to.

    Why: code inside a worker that finds "its" cluster by address=None (Ray Train V2's PlacementGroupCleaner asks
    the State API whether the trial's controller is alive) autodetects it from the host's running GCS processes
    and raises "Found multiple active Ray instances" when a host runs two (a second sweep, a test suite, a user's
    own Ray). The cleaner's thread then dies; a controller killed with its trial (Tune stops the driver actor)
    leaves its workers' placement group behind, and every later trial waits for the leaked CPUs until
    RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S fails it (seen 2026-12-03: 14 of kd_pairs' 24 cells)."""
    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address


JOB_RUNTIME_ENV = {"worker_process_setup_hook": f"{__name__}.pin_cluster_address"}


def start(address: str | None, num_cpus: int | None = None) -> ClusterInfo:
    """Join a cluster (`address`) or start a local one that declares the driver resource."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address:  # an autoscaling cluster boots a GPU node in minutes: a worker group waits for it, not 2 minutes
        os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", str(JOINED_START_TIMEOUT_S))
    for k, v in TRAIN_ENV.items():
        os.environ.setdefault(k, v)
    quiet = {
        "log_to_driver": bool(os.environ.get("ROBUSTIFY_RAY_LOGS")),
        "configure_logging": True,
        "logging_level": "ERROR",
    }
    if address:  # the cluster's daemons were started without our environment: hand it to this job's workers
        env = {k: os.environ[k] for k in TRAIN_ENV}
        ray.init(address=address, runtime_env={**JOB_RUNTIME_ENV, "env_vars": env}, **quiet)
        started = False
    else:
        ray.init(  # "local": a Ray of our own, never one a `ray start` on this host left in ray_current_cluster
            address="local",
            num_cpus=num_cpus,
            resources={TRIAL_DRIVER: 1000},
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            runtime_env=JOB_RUNTIME_ENV,
            **quiet,
        )
        started = True
    # ray.init's fatal-signal handler aborts on SIGTERM: `kill PID` must unwind like Ctrl-C (servers stopped, Ray
    # shut down, "rerun to resume" said), so put Python's back (main thread only; elsewhere the caller's stays)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    res = ray.cluster_resources()
    reach = 0.0 if started else autoscaler_gpus(AUTOSCALING_CONFIG)
    return ClusterInfo(res.get("CPU", 0.0), res.get("GPU", 0.0), TRIAL_DRIVER in res, started, reach)


@dataclass
class ClusterPeek:
    """A running cluster seen from its GCS, before this process joins it (the up-front checks)."""

    gcs_address: str
    node_ips: list[str]
    gpus: float
    starting: int  # nodes an autoscaler is launching


def peek(address: str) -> ClusterPeek:
    """Nodes, GPUs and pending launches of the cluster at `address` (`auto` or host:port), read from its GCS: no
    job is started and nothing is created, so a check can run before anything starts.

    Raises:
        ConnectionError: no GCS answers there within a few seconds.
    """
    from ray._private.services import canonicalize_bootstrap_address

    gcs = canonicalize_bootstrap_address(address)
    if not gcs:
        raise ConnectionError(f"no Ray cluster found for {address}")
    try:
        status = autoscaler_sdk.get_cluster_status(gcs, timeout=5)
    except Exception as err:  # noqa: BLE001 - grpc and Ray raise several kinds; all mean "not answering"
        raise ConnectionError(f"the Ray GCS at {gcs} does not answer ({type(err).__name__})") from None
    nodes = [*status.active_nodes, *status.idle_nodes]
    gpus = sum(u.total for n in nodes for u in n.resource_usage.usage if u.resource_name == "GPU")
    starting = sum(r.count for r in status.pending_launches) + len(status.pending_nodes)
    return ClusterPeek(gcs, sorted({n.ip_address for n in nodes}), gpus, starting)


def stop() -> None:
    if ray.is_initialized():
        ray.shutdown()


def waiting_for() -> str | None:
    """What queued work waits for, in words ("waiting for 1 GPU: 0 of 2 nodes up", "waiting for 1 CPU (x2): 2 of 2
    in use"), or None when nothing waits. Why here: Ray's own view is the only one that sees every request (stage
    tasks, trial drivers, Train worker groups), so we read its pending demand (the autoscaler's summary in the GCS:
    a few ms, no dashboard needed) rather than guess from our trial count."""
    status = autoscaler_sdk.get_cluster_status(ray.get_runtime_context().gcs_address, timeout=5)
    pending: dict[tuple, int] = {}
    demands = status.resource_demands
    for d in [*demands.placement_group_demand, *demands.ray_task_actor_demand]:
        for b in d.bundles_by_count:
            key = tuple(sorted((r, v) for r, v in b.bundle.items() if r in WAITED_ON and v > 0))
            pending[key] = pending.get(key, 0) + b.count
    if not pending:
        return None
    starting = sum(r.count for r in status.pending_launches) + len(status.pending_nodes)
    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    return describe_wait(pending, ray.cluster_resources(), ray.available_resources(), nodes, starting)


# ------------------------------------------------------------------------------------------------ stage tasks


def run_dag(
    tasks: dict[str, dict[str, Any]],
    deps: dict[str, set[str]],
    fn: Callable[[dict[str, Any]], Any],
    cpus: float,
    gpus: float,
    on_done: Callable[[dict[str, Any], Any, BaseException | None], None],
    priority: dict[str, float] | None = None,
    max_in_flight: int | None = None,
) -> None:
    """`fn(task)` for every task as a Ray task once its upstream tasks have finished; `on_done(task, result, error)`
    as each ends (an upstream failure: an error, never started). Ready tasks go out highest `priority` first, at
    most `max_in_flight` at once: Ray queues same-shaped tasks FIFO, so a short stage others wait on (the pool)
    would queue behind everything submitted before it. A task's own `num_gpus` wins over `gpus` (a stage whose
    shards run as tasks of their own holds none itself)."""
    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=1, retry_exceptions=False)(fn)
    waiting, running, done, failed, rank = set(tasks), {}, set(), set(), priority or {}

    def submit_ready() -> None:
        for key in sorted(waiting, key=lambda k: (-rank.get(k, 0.0), k)):
            if deps[key] & failed:
                waiting.discard(key)
                failed.add(key)
                on_done(tasks[key], None, RuntimeError("an upstream stage failed"))
            elif deps[key] <= done and not (max_in_flight and len(running) >= max_in_flight):
                waiting.discard(key)
                own = remote.options(num_gpus=tasks[key]["num_gpus"]) if "num_gpus" in tasks[key] else remote
                running[own.remote(tasks[key])] = key

    submit_ready()
    while running:
        ready = ray.wait(list(running), num_returns=1, timeout=1.0)[0]  # a bounded wait lets Ctrl-C through
        if ready:
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


_SHARD_FN: dict[str, Any] = {}  # per worker process: the shard function it deserialised last (by its object id)


def _shard_task(fn_ref: list, rows: Any, threads: float, device: str | None) -> Any:
    """One shard, in any worker of the cluster: the stage's shard function over the rows shipped with the task.
    The function (the frozen network) is deserialised once per worker process and stage, not once per shard."""
    torch.set_num_threads(max(1, int(threads)))
    key = fn_ref[0].hex()
    if key not in _SHARD_FN:
        _SHARD_FN.clear()
        _SHARD_FN[key] = ray.get(fn_ref[0])
    return _SHARD_FN[key](rows, device if device and torch.cuda.is_available() else None)


def shard_map(cpus: float, gpus: float, in_flight: int, threads: float | None = None) -> Callable:
    """A `StageContext.map_shards` (trainables/common.py `ShardMap`) over the whole cluster: every shard a Ray task
    with the stage's resources (`cpus` also its torch threads unless `threads` says otherwise: the serial path's
    threads, so the rows come out bit-identical), on whichever node has room, at most `in_flight` at once.

    Why the frozen network travels through the object store (one `ray.put` per stage) rather than being rebuilt
    in each task from the stage's deps: a task then needs nothing from the cache, so a node that never holds the
    stage's inputs (on s3 storage: never downloaded them) can run shards. Why each shard's input rows travel
    with its task and its output comes back to the stage's process, which writes it into its scratch folder with
    the usual write-then-rename (trainables/shards.py), rather than tasks writing shards themselves: on a
    multi-host cluster the scratch folder is local to the stage's node (an `s3://` cache keeps a local mirror,
    orchestrator/cache.py), which other nodes cannot write. A killed stage resumes at its next unfinished shard
    as in the serial path (on another node, a retried stage starts over: its scratch was local to the lost one).

    Memory bound: the stage's process holds one shard's input rows while shipping them and one result while
    writing it; the object store holds at most `in_flight` shard inputs and outputs plus one copy of the network
    (ImageNet, CLIP ViT-B/16 tokens: 1024 x 150 kB in + 1024 x 197 x 768 x 2 B out ~ 0.46 GB per shard in flight).
    """
    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=3)(_shard_task)
    device = "cuda" if gpus > 0 else None

    def run(compute: Callable, items: Any, write: Callable[[Any, Any], None]) -> None:
        fn, running = [], {}  # the network goes to the object store with the first unfinished shard, if any

        def take_one() -> None:
            ready, _ = ray.wait(list(running), num_returns=1)
            write(running.pop(ready[0]), ray.get(ready[0]))

        try:
            for tag, rows in items:
                if len(running) >= in_flight:
                    take_one()
                fn = fn or [ray.put(compute)]
                # a copy of only these rows: a view would pickle the whole memory-mapped split under it
                rows = rows.clone() if torch.is_tensor(rows) else rows
                running[remote.remote(fn, rows, threads or cpus, device)] = tag
            while running:
                take_one()
        finally:
            for ref in running:
                ray.cancel(ref)

    return run


# ------------------------------------------------------------------------------------------------ cell trials


@dataclass
class TrainSession:
    """What a Train worker's body may ask of Ray: its place in the group, its device, and the two Train calls it
    needs (report metrics with an optional checkpoint folder; the checkpoint Ray restored, if any)."""

    rank: int
    world: int
    device: torch.device
    node: str

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP-wrap a module when the group has several workers (identity otherwise)."""
        if self.world == 1:
            return model
        return rtt.prepare_model(model, move_to_device=torch.cuda.is_available())

    def report(self, metrics: dict, checkpoint_dir: Path | None = None) -> None:
        ck = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir is not None else None
        ray.train.report(metrics, checkpoint=ck)

    @contextlib.contextmanager
    def restored(self) -> Iterator[Path | None]:
        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as d:
            yield Path(d)


def _bound(fn: Callable[[Any, dict], None], body: Any, name: str) -> Callable[[dict], None]:
    """`config -> fn(body, config)` as a named function: Tune and Train name and inspect the functions they run,
    which a `functools.partial` does not support everywhere."""

    def run(config: dict[str, Any]) -> None:
        fn(body, config)

    run.__name__ = run.__qualname__ = name
    return run


def _train_worker(body: Callable[[dict, TrainSession], dict], config: dict[str, Any]) -> None:
    """Train loop of every worker of one trial: `body(config, session)`, then one report of what it returns."""
    ctx = ray.train.get_context()
    device = rtt.get_device() if torch.cuda.is_available() else torch.device("cpu")
    session = TrainSession(ctx.get_world_rank(), ctx.get_world_size(), device, ray.get_runtime_context().get_node_id())
    ray.train.report(body(config, session))


def _trial_driver(body: Callable[[dict, TrainSession], dict], config: dict[str, Any]) -> None:
    """Tune function trainable: builds the TorchTrainer of one trial (a pack of cells) and fits it (Train V2)."""
    pack = {**config["pack"], "driver_node": ray.get_runtime_context().get_node_id()}
    res = pack["resources"]
    use_gpu = pack["use_gpus"]
    per_worker = {"CPU": res["cpus_per_worker"], **({"GPU": res["gpus_per_worker"]} if use_gpu else {})}
    trainer = TorchTrainer(
        _bound(_train_worker, body, "train_worker"),
        train_loop_config=pack,
        torch_config=TorchConfig(backend="nccl" if use_gpu and torch.cuda.is_available() else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=res["workers_per_trial"], use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        run_config=ray.train.RunConfig(
            name=f"train-{pack['key']}",
            storage_path=pack["train_storage"],
            failure_config=ray.train.FailureConfig(max_failures=res["max_retries"], controller_failure_limit=3),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


@dataclass
class TrialOutcome:
    key: str  # the pack's key (a lone cell's own key)
    cells: list[str]
    error: str | None  # the trial's error; a cell's own error, if it failed alone, is in its error file


def run_trials(
    packs: list[dict[str, Any]],
    body: Callable[[dict, TrainSession], dict],
    experiment: str,
    tune_storage: str,
    concurrency: int,
    use_driver_resource: bool,
    log_dir: Path,
) -> list[TrialOutcome]:
    """One Tune experiment with a trial per pack (a grid over their configs); every Train worker of a trial runs
    `body(pack, session)`. `tune_storage` is a folder or a URI (s3://...: Ray opens it with pyarrow on every node);
    Tune's own log goes to `log_dir` on this node. Returns each trial's outcome."""
    if not packs:
        return []
    log = Path(log_dir) / "ray_tune.log"
    quiet_tune_logs(log)
    driver = tune.with_resources(
        _bound(_trial_driver, body, "trial_driver"), {TRIAL_DRIVER: 0.01} if use_driver_resource else {HEAD_NODE: 0.001}
    )
    tuner = tune.Tuner(
        driver,
        param_space={"pack": tune.grid_search(packs)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=concurrency, trial_dirname_creator=lambda t: trial_dirname(t.config["pack"]["key"])
        ),
        run_config=tune.RunConfig(
            name=experiment, storage_path=tune_storage, verbose=0, failure_config=tune.FailureConfig(max_failures=0)
        ),
    )
    with open(log, "a") as f, contextlib.redirect_stdout(f):  # Tune prints its experiment box at any verbosity
        grid = tuner.fit()
    out = []
    for r in grid:
        pack = r.config["pack"] if r.config else {"key": "?", "cells": []}
        err = None if r.error is None else short_error(r.error)
        out.append(TrialOutcome(pack["key"], [c["key"] for c in pack["cells"]], err))
    return out
