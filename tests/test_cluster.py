"""Multi-node on one machine: `ray.cluster_utils.Cluster` with a CPU head and GPU workers (logical GPUs).

The head declares no `trial_driver` resource, like a cluster not started by cluster.yaml. The sweep CLI joins
the cluster with --address, like `ray job submit` on a real one. Checks: trial drivers run
on the head (they only reserve the head's `trial_driver` resource), training workers on the GPU nodes, trials
spread over both GPU nodes. A worker host lost mid-trial is tested on separate hosts (tests/test_rig.py: the
cell resumes from its last checkpoint on the other host)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.micro import MICRO, seeded
from tests.procs import ray_cluster_process, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]


@pytest.fixture
def cluster():
    # a head without our `trial_driver` resource, as any cluster not started by cluster.yaml (KubeRay, a plain
    # `ray start --head`): trial drivers still go to the head (ray_backend.HEAD_NODE), taking no CPU. Hosted by a
    # child process: a Ray driver in pytest leaves native threads that can crash its exit (tests/procs.py)
    with ray_cluster_process({"num_cpus": 1}, [{"num_cpus": 1, "num_gpus": 1}] * 2) as c:
        yield c


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


def test_trials_spread_over_gpu_nodes_drivers_on_head(cluster, tmp_path: Path, built_stages: Path) -> None:
    head = cluster["head"]
    storage = seeded(tmp_path, built_stages)  # the cells' placement is the point: their shared stages are cached
    proc = run_cli(_args(storage, cluster["address"]), timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    placed = _placements(storage)
    assert len(placed) == 2
    assert {p["driver_node"] for p in placed} == {head}
    workers = {p["worker_node"] for p in placed}
    assert workers <= set(cluster["nodes"]) and head not in workers
    assert len(workers) == 2, "the two trials ran concurrently on both GPU nodes"
    assert "2 at a time" in proc.stdout  # max_concurrent_trials derived from the cluster's GPUs
