"""The Ray adapter's sizing rules (orchestrator/ray_backend.py): GPU requests and trial concurrency per cluster."""

from __future__ import annotations

from orchestrator.ray_backend import ClusterInfo, max_concurrent, uses_gpus


def test_gpu_requests_and_concurrency_on_local_and_joined_clusters() -> None:
    laptop = ClusterInfo(cpus=2, gpus=0, has_driver_resource=True, started_here=True)
    assert not uses_gpus(laptop, 1.0)  # CPU fallback
    assert max_concurrent(laptop, 1, 1, 0, 24, None) == 2
    gpu_box = ClusterInfo(cpus=16, gpus=8, has_driver_resource=True, started_here=True)
    assert uses_gpus(gpu_box, 1.0) and max_concurrent(gpu_box, 2, 4, 1.0, 24, None) == 4
    # an autoscaling cluster whose GPU workers start at 0: request GPUs and submit every trial
    cold_cluster = ClusterInfo(cpus=8, gpus=0, has_driver_resource=True, started_here=False)
    assert uses_gpus(cold_cluster, 1.0) and max_concurrent(cold_cluster, 1, 4, 1.0, 12, None) == 12
    assert max_concurrent(cold_cluster, 1, 4, 1.0, 12, 3) == 3
    assert not uses_gpus(cold_cluster, 0.0)
