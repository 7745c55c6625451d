"""Multi-node on one machine: `ray.cluster_utils.Cluster` with a CPU head and GPU workers (logical GPUs).

The head declares no `trial_driver` resource, like a cluster not started by cluster.yaml. The sweep CLI joins
the cluster with --address, like `ray job submit` on a real one. Checks: trial drivers run
on the head (they only reserve the head's `trial_driver` resource), training workers and shared stages on the GPU
nodes, trials spread over both GPU nodes, and a worker node removed mid-trial costs a restart from the last
checkpoint, not the sweep."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.procs import kill_marked, run_cli, start_cli
from tests.test_reliability import MICRO, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]


@pytest.fixture
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    # a head without our `trial_driver` resource, as any cluster not started by cluster.yaml (KubeRay, a plain
    # `ray start --head`): trial drivers still go to the head (ray_backend.HEAD_NODE), taking no CPU
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    gpu_nodes = [c.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address)
    try:
        yield c, gpu_nodes
    finally:
        ray.shutdown()
        c.shutdown()


def _args(storage: Path, address: str, *extra: str) -> list[str]:
    return [
        "orchestrator.sweep",
        "sweeps/smoke.yaml",
        "--storage",
        str(storage),
        "--address",
        address,
        *MICRO,
        "--set",
        "resources.gpus_per_worker=1",
        "--set",
        "resources.cpus_per_worker=1",
        *extra,
    ]


def _placements(storage: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (storage / "cache" / "cell").glob("*/placement.json")]


def test_trials_spread_over_gpu_nodes_drivers_on_head(cluster, tmp_path: Path) -> None:
    c, gpu_nodes = cluster
    head = c.head_node.node_id
    storage = tmp_path / "runs"
    proc = run_cli(_args(storage, c.address), timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    placed = _placements(storage)
    assert len(placed) == 2
    assert {p["driver_node"] for p in placed} == {head}
    workers = {p["worker_node"] for p in placed}
    assert workers <= {n.node_id for n in gpu_nodes} and head not in workers
    assert len(workers) == 2, "the two trials ran concurrently on both GPU nodes"
    assert "2 at a time" in proc.stdout  # max_concurrent_trials derived from the cluster's GPUs


def test_node_loss_mid_trial_restarts_from_checkpoint(cluster, tmp_path: Path) -> None:
    from ray.util.state import list_actors

    c, gpu_nodes = cluster
    storage = tmp_path / "runs"
    mark = uuid.uuid4().hex
    proc = start_cli(
        _args(
            storage,
            c.address,
            "--set",
            "train.epochs=8",
            "--set",
            "grid.method=[ours]",
            "--set",
            "resources.max_retries=2",
        ),
        mark,
        log=tmp_path / "sweep.log",
    )
    try:
        wait_for(lambda: any((storage / "ray_train").glob("train-*/checkpoint_*")), 900, "a checkpoint", proc)
        workers: list = []

        def live_train_workers() -> bool:  # the State API answers through the dashboard, slow to come up under load
            try:
                workers[:] = [
                    a for a in list_actors(filters=[("state", "=", "ALIVE")]) if "TrainWorker" in a.class_name
                ]
            except ConnectionError:
                return False
            return bool(workers)

        wait_for(live_train_workers, 120, "a live Train worker (State API)", proc)
        victim = next(n for n in gpu_nodes if n.node_id == workers[0].node_id)
        c.remove_node(victim, allow_graceful=False)
        proc.wait(timeout=1200)
        log = (tmp_path / "sweep.log").read_text()
        assert proc.returncode == 0, log[-4000:]
    finally:
        kill_marked(mark)
    placed = _placements(storage)
    assert len(placed) == 1 and placed[0]["worker_node"] != victim.node_id
    from orchestrator.tracking import LocalMlflowServer, metric_history, runs_dataframe

    with LocalMlflowServer(storage / "mlflow") as server:
        df = runs_dataframe(server.uri, "smoke")
        run = df[df["tags.kind"] == "cell"].iloc[0]
        steps = [s for s, _ in metric_history(server.uri, run["run_id"], "train/loss")]
    assert sorted(set(steps)) == list(range(8))
    assert len(steps) < 16, "resumed from the checkpoint instead of starting over"
