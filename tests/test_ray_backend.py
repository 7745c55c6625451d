"""The Ray adapter (orchestrator/ray_backend.py): GPU requests and trial concurrency per cluster, and the order in
which shared stages go out (a real local Ray)."""

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


def test_run_dag_runs_the_critical_path_first_and_holds_back_the_rest() -> None:
    """One CPU, one task in flight: ready tasks go out by priority, and a task that becomes ready later (c, behind
    b) still runs before a low-priority one submitted earlier (a): Ray's own queue would have run a first."""
    import ray

    from orchestrator.ray_backend import run_dag

    ray.init(address="local", num_cpus=1, include_dashboard=False)
    try:
        order: list[str] = []
        tasks = {k: {"key": k} for k in ("a", "b", "c", "d")}
        deps = {"a": set(), "b": set(), "c": {"b"}, "d": {"x"}}
        tasks["x"], deps["x"] = {"key": "x", "fail": True}, set()

        def body(task: dict) -> str:
            if task.get("fail"):
                raise RuntimeError("boom")
            return task["key"]

        run_dag(
            tasks,
            deps,
            body,
            1,
            0,
            lambda t, r, e: order.append(t["key"] + ("!" if e is not None else "")),
            priority={"a": 1.0, "b": 5.0, "c": 4.0, "x": 3.0, "d": 0.5},
            max_in_flight=1,
        )
    finally:
        ray.shutdown()
    assert order == ["b", "c", "x!", "d!", "a"]  # d never ran: its upstream failed
