"""The sweep as users run it on a cluster, on the multi-host rig (tests/rig.py): separate network, PID and mount
namespaces per node, the head and workers started with cluster.yaml's own commands, MLflow started the way
cluster.yaml starts it, the driver on the head with `--address auto` (README, docs/cluster.md).

One rig for the module (about two minutes to start on the 2-core CI machine); what is asserted comes from the
MLflow server, its access log, the shared folder and the bucket, never from mocks.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess

import pytest

from tests import rig as rigmod
from tests.micro import MICRO, wait_for
from tests.procs import cluster_watch, run_in_child

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


def smoke_on_s3(rig) -> list[str]:
    """The smoke sweep as a user runs it on the head: `--address auto`, the bucket, the head's MLflow server."""
    return [
        "python",
        "-m",
        "orchestrator.sweep",
        "sweeps/smoke.yaml",
        "--address",
        "auto",
        "--storage",
        "s3://robustify/runs",
        "--tracking-uri",
        rig.mlflow_uri,
        *MICRO,
        *GPU,
    ]


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


def bucket(r: rigmod.Rig, name: str) -> list[str]:
    s3 = rigmod.s3_client(r)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=name)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def checkpointed(r: rigmod.Rig, at_least: int = 2) -> set[str]:
    """Train runs with `at_least` epoch checkpoints (their state) in the bucket, not only the cell marker reported
    first. Why two: a worker uploads a checkpoint before Ray Train's controller registers its report; on a loaded
    machine a host killed right after the first upload left its cell nothing registered to resume from (seen once:
    steps [0, 1, 0, 1, ...]); by the second upload the first report has been through."""
    keys = bucket(r, "robustify")
    runs = [k.split("/")[2] for k in keys if "/checkpoint_" in k and k.endswith("/state.pt")]
    return {run for run in set(runs) if runs.count(run) >= at_least}


def train_worker_node(r: rigmod.Rig) -> rigmod.Node | None:
    for w in r.workers:
        if "TrainWorker" in r.sh(w, "ps -eo args", check=False):
            return w
    return None


def test_smoke_sweep_on_s3_across_hosts_survives_a_dead_worker_host(rig, tmp_path) -> None:
    """The smoke sweep driven on the head (`--address auto`) with `--storage s3://...` and the head's MLflow:
    completes; the cache, Train checkpoints, tables and logs are in the bucket and nothing in node-local or shared
    folders; every cell has its per-epoch curve and every stage its run, streamed from the worker hosts; one
    worker host loses every process mid-trial and its cell resumes from the bucket's checkpoint elsewhere."""
    from orchestrator.tracking import metric_history, runs_dataframe

    rigmod.s3_client(rig).create_bucket(Bucket="robustify")
    epochs = 20  # about a second each here: a window to kill a host between two checkpoints
    argv = [
        *smoke_on_s3(rig),
        "--set",
        f"train.epochs={epochs}",
        "--set",
        "resources.max_retries=2",
    ]
    log = tmp_path / "sweep.log"
    proc = rig.popen(rig.head, shlex.join(argv), log)
    try:
        # both cells (one per worker host) have epoch checkpoints: whichever host dies, its cell can resume
        wait_for(lambda: len(checkpointed(rig)) == 2, 900, "two epoch checkpoints of each cell in the bucket", proc)
        victim = train_worker_node(rig)
        assert victim is not None, "no worker host runs a Train worker"
        assert rigmod.kill_node(victim)
        assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
    finally:
        proc.kill()
    keys = bucket(rig, "robustify")
    (tmp_path.parent / "rig-bucket.txt").write_text("\n".join(keys) + "\n")  # for the closing report
    for part in (
        "runs/cache/cell/",
        "runs/cache/robustify_teacher/",
        "runs/ray_train/",
        "runs/ray_tune/",
        "runs/results/smoke/supp_table4.md",
        "runs/logs/sweep.log",
    ):
        assert any(k.startswith(part) for k in keys), f"nothing at {part} in the bucket"
    assert any("/checkpoint_" in k for k in keys if k.startswith("runs/ray_train/"))
    assert not any(".locks/" in k for k in keys), "a cache lock outlived its holder"
    for node in rig.nodes:  # nothing of the sweep on any node's own disk or the EFS stand-in
        found = rig.sh(
            node,
            "find /tmp/home /mnt/shared/runs -mindepth 1 -path '*s3:*' -o -path '*/ray_train*' -o -path '*/ray_tune/*'",
            check=False,
        )
        assert not found.strip(), (node.name, found)
        assert not rig.sh(node, "ls -A /mnt/shared/runs", check=False).strip(), "the EFS stand-in was written"
    df = runs_dataframe(rig.mlflow_uri, "smoke")
    cells, stages = df[df["tags.kind"] == "cell"], df[df["tags.kind"] == "stage"]
    assert len(cells) == 2 and len(stages) == 8, df[["tags.kind", "status"]]  # pretrain_teacher joined the DAG
    for run_id in cells["run_id"]:
        steps = [s for s, _ in metric_history(rig.mlflow_uri, run_id, "train/loss")]
        assert sorted(set(steps)) == list(range(epochs)), "a cell lost its per-epoch curve"
        assert steps.count(0) == 1, f"a cell started over instead of resuming from its checkpoint: {steps}"
    s3 = rigmod.s3_client(rig)
    placed = [
        json.loads(s3.get_object(Bucket="robustify", Key=k)["Body"].read())
        for k in keys
        if k.startswith("runs/cache/cell/") and k.endswith("/placement.json")
    ]
    assert len(placed) == 2 and len({p["worker_node"] for p in placed}) == 1, "a cell finished on the dead host"
    from mlflow import MlflowClient

    parent = df[df["tags.kind"] == "sweep"].iloc[0]["run_id"]
    assert any(a.path.endswith("supp_table4.md") for a in MlflowClient(rig.mlflow_uri).list_artifacts(parent, "tables"))
    log_text = server_log(rig)
    for w in rig.workers:  # curves and stage metrics came from the worker hosts' own addresses
        assert f"{w.ip}:" in log_text, f"{w.name} never talked to the head's MLflow"


def test_gpu_sweep_waits_for_the_autoscaler_and_idle_nodes_go_away(rig, tmp_path) -> None:
    """A cluster with an autoscaler (Ray's fake multi-node provider) and GPU workers from zero, on its own host of the
    rig: the sweep, submitted while no GPU node is up, waits for the nodes the autoscaler launches for its demand,
    completes, and the idle nodes are removed. The stages come from the bucket's cache (the s3 test above), so the
    GPU demand is mostly the cells'. Launch and removal times go to rig-autoscaler.txt for the closing report."""
    import time

    from orchestrator.tracking import runs_dataframe

    node = rigmod.add_autoscaling_cluster(rig)
    address = f"{node.ip}:6379"
    before = run_in_child("orchestrator.ray_backend:peek", address, tmp=tmp_path)
    assert before.gpus == 0, "a GPU node was up before the sweep"
    with contextlib.suppress(Exception):
        rigmod.s3_client(rig).create_bucket(Bucket="robustify")
    argv = [
        *smoke_on_s3(rig),
        "--set",
        "train.epochs=2",
    ]
    t0, done = time.monotonic(), None
    with cluster_watch(address, t0) as events:
        try:
            proc = subprocess.run(rig.cmd(node, shlex.join(argv)), capture_output=True, text=True, timeout=1200)
            done = round(time.monotonic() - t0, 1)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            wait_for(lambda: events and events[-1][1] == 0 and any(e[1] > 0 for e in events), 300, "idle nodes removed")
        finally:
            lines = [f"t={t:>6} s  GPUs up {g}, nodes starting {s}" for t, g, s in events]
            (tmp_path.parent / "rig-autoscaler.txt").write_text("\n".join([*lines, f"sweep done at t={done} s"]) + "\n")
    assert max(g for _, g, _ in events) >= 1, lines
    assert "2 at a time" in proc.stdout, proc.stdout[-2000:]  # concurrency from the GPUs the cluster can reach
    df = runs_dataframe(rig.mlflow_uri, "smoke")
    cells = df[(df["tags.kind"] == "cell") & (df["status"] == "FINISHED")]
    # this sweep's two cells (the s3 test's two are there too when it ran first on the same rig)
    assert "2 finished" in proc.stdout and len(cells) >= 2, "the autoscaled sweep's two cells were not tracked"
