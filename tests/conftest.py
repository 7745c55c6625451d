"""Shared fixtures: a real MLflow server on 127.0.0.1, one real smoke sweep per test session, and the shared
stages of one micro smoke sweep (tests/micro.py) that the fault and cluster tests start from."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.tracking import LocalMlflowServer
from tests import micro
from tests.procs import kill_marked, native_threads, run_cli


@dataclass
class SmokeSweep:
    storage: Path
    uri: str
    experiment: str
    stdout: str
    stderr: str
    returncode: int


@pytest.fixture(autouse=True)
def _no_ray_driver_in_pytest():
    """Fails the test that made pytest itself a Ray driver: the native threads Ray leaves after `ray.shutdown()`
    can crash the process at exit, after every test passed (tests/procs.py). Run the driver in a child instead."""
    before = native_threads()
    yield
    after = native_threads()
    assert len(after) <= len(before), f"this test started a Ray driver in the pytest process: {after}"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    server = LocalMlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory) -> SmokeSweep:
    """`python -m orchestrator.sweep sweeps/smoke.yaml` against a real MLflow server started here."""
    storage = tmp_path_factory.mktemp("smoke")
    server = LocalMlflowServer(storage / "mlflow").start()
    mark = uuid.uuid4().hex
    try:
        proc = run_cli(
            ["orchestrator.sweep", "sweeps/smoke.yaml", "--storage", str(storage), "--tracking-uri", server.uri],
            mark=mark,
            timeout=1500,
        )
        yield SmokeSweep(storage, server.uri, "smoke", proc.stdout, proc.stderr, proc.returncode)
    finally:
        kill_marked(mark)
        server.stop()


@pytest.fixture(scope="session")
def smoke_store(smoke_sweep: SmokeSweep) -> Path:
    """Storage folder of the finished smoke sweep; its MLflow store is `<storage>/mlflow`."""
    assert smoke_sweep.returncode == 0, smoke_sweep.stderr[-3000:]
    return smoke_sweep.storage


@pytest.fixture(scope="session")
def built_stages(tmp_path_factory) -> Path:
    """One cold run of the micro smoke sweep; its shared stages (not its cells) seed the tests that fault the
    cell phase, so each of them does not recompute the same pool, eval sets, student and teacher (~1-2 min
    each here), in test_reliability and test_cluster. This run is itself the cold path through the CLI (an
    empty store); the smoke sweep's fixture is another."""
    storage = tmp_path_factory.mktemp("built") / "runs"
    proc = run_cli(micro.sweep_args(storage, *micro.BUILT), timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return storage
