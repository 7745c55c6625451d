"""The tracking policy across hosts (orchestrator/checks.check_cluster): a loopback tracking URI is refused, with
one line, exactly when the joined cluster spans other hosts. The cluster is described to the check the way
`ray_backend.peek` reads it from a GCS; the real GCS path runs on the multi-host rig (tests/test_rig.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.checks import check_cluster, mlflow_host
from orchestrator.inputs import BadInput
from orchestrator.ray_backend import ClusterPeek

HERE = "127.0.0.1"  # the GCS below is this host's loopback: cluster_facing_ip says 127.0.0.1


def peek_of(ips: list[str], gpus: float = 0, starting: int = 0):
    return lambda address: ClusterPeek("127.0.0.1:6379", ips, gpus, starting)


@pytest.mark.parametrize(
    ("ips", "gpus", "starting", "wants_gpus", "words"),
    [
        ([HERE, "10.0.0.7"], 1, 0, True, "has 2 nodes"),
        ([HERE], 0, 2, False, "is starting 2 more node(s)"),
        ([HERE], 0, 0, True, "has no GPU up"),
    ],
)
def test_loopback_uri_refused_on_a_cluster_spanning_hosts(ips, gpus, starting, wants_gpus, words) -> None:
    with pytest.raises(BadInput) as err:
        check_cluster("http://127.0.0.1:5000", "auto", wants_gpus, peek=peek_of(ips, gpus, starting))
    line = str(err.value)
    assert "\n" not in line and "--tracking-uri 'http://127.0.0.1:5000'" in line and words in line
    assert "http://127.0.0.1:5000" in line  # the suggested cluster address (this host, seen from the GCS)


@pytest.mark.parametrize("uri", ["http://localhost:5000", "http://[::1]:5000", "http://127.0.0.2:5000"])
def test_every_loopback_spelling_counts(uri: str) -> None:
    with pytest.raises(BadInput):
        check_cluster(uri, "10.1.2.3:6379", peek=peek_of([HERE, "10.1.2.3"]))


def test_allowed_cases() -> None:
    one_host = peek_of([HERE], gpus=1)
    check_cluster("http://127.0.0.1:5000", "auto", True, peek=one_host)  # a single-host cluster with its GPU
    check_cluster("http://127.0.0.1:5000", None, True, peek=one_host)  # a local Ray: one host
    check_cluster("http://10.0.0.1:5000", "auto", True, peek=peek_of([HERE, "10.0.0.7"]))  # a reachable address
    check_cluster(None, "auto", True, peek=peek_of([HERE, "10.0.0.7"]))  # our own server binds the cluster address


def test_ray_client_and_unreachable_cluster() -> None:
    with pytest.raises(BadInput, match="Ray Client"):
        check_cluster("http://127.0.0.1:5000", "ray://10.0.0.1:10001")

    def dead(address: str):
        raise ConnectionError("the Ray GCS at 10.9.9.9:6379 does not answer (RpcError)")

    with pytest.raises(BadInput, match="--address '10.9.9.9:6379': the Ray GCS"):
        check_cluster("http://127.0.0.1:5000", "10.9.9.9:6379", peek=dead)


def test_own_server_binds_loopback_locally_and_the_cluster_address_when_joining() -> None:
    assert mlflow_host(None) == "127.0.0.1"
    assert mlflow_host("ray://10.0.0.1:10001") == "127.0.0.1"
    assert mlflow_host("127.0.0.1:6379") == "127.0.0.1"  # the route to a local GCS is loopback


def test_concurrency_counts_the_gpus_an_autoscaler_can_reach(tmp_path) -> None:
    """cluster.yaml's own node types: 12 x 1 GPU + 2 x 8 GPUs within max_workers 16 -> 12 + 2*8 = 28 GPUs; a joined
    cluster with none up runs as many 1-GPU trials as that, not one (what is up) and not every cell."""
    import yaml

    from orchestrator.ray_backend import ClusterInfo, autoscaler_gpus, max_concurrent

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "cluster.yaml").read_text())
    path = tmp_path / "ray_bootstrap_config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert autoscaler_gpus(path) == 28.0
    cfg["max_workers"] = 3  # the budget of workers binds: the 8-GPU nodes first
    path.write_text(yaml.safe_dump(cfg))
    assert autoscaler_gpus(path) == 17.0
    assert autoscaler_gpus(tmp_path / "missing.yaml") == 0.0
    cold = ClusterInfo(cpus=8, gpus=0, has_driver_resource=True, started_here=False, reachable_gpus=28)
    assert max_concurrent(cold, workers=1, cpus=8, gpus=1, n_cells=100, explicit=None) == 28
    assert max_concurrent(cold, workers=2, cpus=8, gpus=1, n_cells=5, explicit=None) == 5
    unknown = ClusterInfo(cpus=8, gpus=0, has_driver_resource=True, started_here=False)
    assert max_concurrent(unknown, workers=1, cpus=8, gpus=1, n_cells=7, explicit=None) == 7
