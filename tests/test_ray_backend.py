"""The Ray adapter (orchestrator/ray_backend.py): GPU requests, trial concurrency and shard tasks per cluster, and
the order in which shared stages go out (a real local Ray)."""

from __future__ import annotations

import os
from types import SimpleNamespace

from orchestrator.driver import SHARD_TASKS_CAP, _read_tasks, _shard_tasks
from orchestrator.ray_backend import ClusterInfo, max_concurrent, uses_gpus
from orchestrator.spec import SweepSpec
from tests.procs import run_in_child


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


def _run_dag_order() -> list[str]:
    """In a child process (tests/procs.py: no Ray driver in pytest)."""
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
    return order


def test_run_dag_runs_the_critical_path_first_and_holds_back_the_rest(tmp_path) -> None:
    """One CPU, one task in flight: ready tasks go out by priority, and a task that becomes ready later (c, behind
    b) still runs before a low-priority one submitted earlier (a): Ray's own queue would have run a first."""
    order = run_in_child("tests.test_ray_backend:_run_dag_order", tmp=tmp_path)
    assert order == ["b", "c", "x!", "d!", "a"]  # d never ran: its upstream failed


def _sweep(resources: dict, cluster: ClusterInfo, gpus: float, data: dict | None = None) -> SimpleNamespace:
    """What `driver._shard_tasks` reads of a SweepContext: the spec's resources, the cluster, the GPUs it grants."""
    grid = {"student": ["resnet101"], "method": ["original"]}
    spec = SweepSpec(name="t", grid=grid, resources=resources, **({"data": data} if data else {}))
    return SimpleNamespace(plan=SimpleNamespace(spec=spec), cluster=cluster, gpus_per_worker=lambda: gpus)


def test_shard_tasks_per_stage_fill_the_cluster_or_the_knob() -> None:
    laptop = ClusterInfo(cpus=2, gpus=0, has_driver_resource=True, started_here=True)
    assert _shard_tasks(_sweep({}, laptop, 0)) == {"shard_tasks": 2, "shard_gpus": 0}
    assert _shard_tasks(_sweep({"shard_tasks": 1}, laptop, 0)) == {"shard_tasks": 1}  # the stage does its own
    assert _shard_tasks(_sweep({"cpus_per_worker": 2}, laptop, 0)) == {"shard_tasks": 1}
    gpu_box = ClusterInfo(cpus=64, gpus=8, has_driver_resource=True, started_here=True)
    # 8 GPUs, one per shard task; the stage's own task asks for none of them
    assert _shard_tasks(_sweep({"gpus_per_worker": 1}, gpu_box, 1)) == {
        "shard_tasks": 8,
        "shard_gpus": 1,
        "num_gpus": 0,
    }
    assert _shard_tasks(_sweep({"gpus_per_worker": 1, "shard_tasks": 3}, gpu_box, 1))["shard_tasks"] == 3
    unknown = ClusterInfo(cpus=8, gpus=0, has_driver_resource=True, started_here=False)  # GPU nodes from 0
    assert _shard_tasks(_sweep({"gpus_per_worker": 1}, unknown, 1))["shard_tasks"] == SHARD_TASKS_CAP


def test_shard_tasks_leave_the_sweep_identity_alone() -> None:
    """How many shard tasks run at once changes no number (they are bit-identical), so not the sweep's hash."""
    laptop = ClusterInfo(cpus=2, gpus=0, has_driver_resource=True, started_here=True)
    a, b = _sweep({}, laptop, 0).plan.spec, _sweep({"shard_tasks": 5}, laptop, 0).plan.spec
    assert a.content_hash() == b.content_hash()


def test_image_files_are_decoded_by_cpu_tasks_over_the_whole_cluster() -> None:
    """On source imagenet every stage decodes its files with one CPU per task, as many as the cluster has CPUs
    (GPUs play no part), capped by resources.shard_tasks; the embedded data reads no file, so no tasks."""
    gpu_box = ClusterInfo(cpus=48, gpus=8, has_driver_resource=True, started_here=True)
    paper = {"source": "imagenet", "n_train": None, "n_test": None}
    assert _read_tasks(_sweep({"gpus_per_worker": 1}, gpu_box, 1)) == {}
    assert _read_tasks(_sweep({"gpus_per_worker": 1}, gpu_box, 1, paper)) == {"read_tasks": 48}
    assert _read_tasks(_sweep({"shard_tasks": 6}, gpu_box, 0, paper)) == {"read_tasks": 6}
    one = ClusterInfo(cpus=1, gpus=0, has_driver_resource=True, started_here=True)
    assert _read_tasks(_sweep({}, one, 0, paper)) == {}  # one CPU: the stage decodes its own files


def _probe_from_a_nested_actor() -> None:
    """In a child process (tests/procs.py: no Ray driver in pytest)."""
    import subprocess
    import sys

    import ray

    from orchestrator import ray_backend
    from tests.procs import kill_marked, marked_env

    code = "import ray, sys; ray.init(address='local', num_cpus=1, include_dashboard=False); print('up', flush=True)"
    other = subprocess.Popen(
        [sys.executable, "-c", code + "; sys.stdin.read()"],
        env=marked_env("other-ray"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == b"up"
        ray_backend.start(None, num_cpus=1)
        try:

            @ray.remote(num_cpus=0)
            class Probe:
                def look(self) -> tuple[str, int]:
                    from ray.util.state import list_actors

                    return os.environ.get("RAY_ADDRESS", ""), len(list_actors(limit=10))

            @ray.remote(num_cpus=0, runtime_env={"env_vars": {"RAY_TRAIN_V2_ENABLED": "1"}})
            class Controller:
                def probe(self) -> tuple[str, int]:
                    cleaner = Probe.options(lifetime="detached").remote()
                    try:
                        return ray.get(cleaner.look.remote())
                    finally:
                        ray.kill(cleaner)

            address, actors = ray.get(Controller.remote().probe.remote(), timeout=120)
            assert address == ray.get_runtime_context().gcs_address and actors >= 2
        finally:
            ray_backend.stop()
    finally:
        other.stdin.close()
        other.wait(timeout=60)
        kill_marked("other-ray")


def test_workers_find_their_own_cluster_when_the_host_runs_another_ray(tmp_path) -> None:
    """With a second Ray on the host, an actor nested as Ray Train nests its PlacementGroupCleaner (under an actor
    with its own runtime_env, detached) reaches its own cluster's State API by address=None, as the cleaner does:
    without the adapter's RAY_ADDRESS hook Ray raises "Found multiple active Ray instances", the cleaner's thread
    dies and a trial killed mid-teardown leaks its workers' CPUs (ray_backend.pin_cluster_address)."""
    run_in_child("tests.test_ray_backend:_probe_from_a_nested_actor", tmp=tmp_path)
