"""The sweep as users run it on a cluster, on the multi-host rig (tests/rig.py): separate network, PID and mount
namespaces per node, the head and workers started with cluster.yaml's own commands, MLflow started the way
cluster.yaml starts it, the driver on the head with `--address auto` (README, docs/cluster.md).

One rig for the module (about two minutes to start on the 2-core CI machine); what is asserted comes from the
MLflow server, its access log, the shared folder and the bucket, never from mocks.
"""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from tests import rig as rigmod
from tests.test_reliability import MICRO

pytestmark = [pytest.mark.integration, pytest.mark.rig, pytest.mark.timeout(1800)]

GPU = ["--set", "resources.gpus_per_worker=1", "--set", "resources.cpus_per_worker=1"]


@pytest.fixture(scope="module")
def rig():
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        pytest.skip("the rig needs root (network namespaces)")
    try:
        yield rigmod.up()
    finally:
        rigmod.down(quiet=True)
        assert not rigmod.leftovers(), "the rig left namespaces or links behind"


def sweep_on_head(r: rigmod.Rig, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`python -m orchestrator.sweep ...` run on the head, as a user logged in there (or `ray job submit`) runs it."""
    argv = ["python", "-m", "orchestrator.sweep", *args]
    return subprocess.run(r.cmd(r.head, shlex.join(argv)), capture_output=True, text=True, timeout=timeout)


def server_log(r: rigmod.Rig) -> str:
    return r.sh(r.head, "cat /tmp/mlflow-server.log")


def test_bad_cluster_input_exits_2_with_one_line_before_anything_starts(rig) -> None:
    """The README's old command (a loopback tracking URI) on a 3-host cluster, and an address nothing answers at."""
    cases = {
        "http://127.0.0.1:5000": ("--address", "auto", "a loopback address reaches only the host"),
        rig.mlflow_uri: ("--address", f"{rigmod.SUBNET}.99:6379", "nothing answers at"),
    }
    for uri, (flag, address, words) in cases.items():
        storage = f"/mnt/shared/bad-{address.replace(':', '-')}"
        proc = sweep_on_head(rig, "sweeps/smoke.yaml", flag, address, "--storage", storage, "--tracking-uri", uri, *GPU)
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], proc.stderr
        if "loopback" in words:
            assert f"http://{rig.head.ip}:5000" in lines[0]  # the head's cluster address, suggested
        assert not (rigmod.BASE / "shared" / storage.rsplit("/", 1)[1]).exists(), "something was created"


def test_smoke_sweep_across_hosts_streams_to_the_heads_mlflow(rig) -> None:
    from orchestrator.tracking import metric_history, runs_dataframe

    proc = sweep_on_head(
        rig,
        "sweeps/smoke.yaml",
        "--address",
        "auto",
        "--storage",
        "/mnt/shared/runs",
        "--tracking-uri",
        rig.mlflow_uri,
        *MICRO,
        *GPU,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    df = runs_dataframe(rig.mlflow_uri, "smoke")
    cells = df[df["tags.kind"] == "cell"]
    stages = df[df["tags.kind"] == "stage"]
    assert len(cells) == 2 and (cells["status"] == "FINISHED").all()
    assert len(stages) == 7 and (stages["status"] == "FINISHED").all()
    for run_id in cells["run_id"]:
        steps = [s for s, _ in metric_history(rig.mlflow_uri, run_id, "train/loss")]
        assert sorted(set(steps)) == list(range(3)), "a cell lost its per-epoch curve"
    parent = df[df["tags.kind"] == "sweep"].iloc[0]
    from mlflow import MlflowClient

    arts = [a.path for a in MlflowClient(rig.mlflow_uri).list_artifacts(parent["run_id"], "tables")]
    assert any(a.endswith("supp_table4.md") for a in arts)
    # the workers reached the head's server from their own addresses (curves are logged from the Train workers)
    log = server_log(rig)
    for w in rig.workers:
        assert f"{w.ip}:" in log, f"{w.name} never talked to the head's MLflow"
    placed = [
        json.loads(p)
        for p in rig.sh(rig.head, "cat /mnt/shared/runs/cache/cell/*/placement.json").replace("}{", "}\n{").splitlines()
        if p.strip()
    ]
    assert {p["worker_node"] for p in placed} and all(p["driver_node"] for p in placed)
