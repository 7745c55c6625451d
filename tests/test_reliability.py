"""Faults injected for real: kill -9 of the whole sweep, a failing trial, an MLflow outage, corrupt cache entries.

Each test runs the CLI as a user would (a subprocess with its own local Ray and MLflow) and checks, after the
fault, that nothing is lost or duplicated and that rerunning the same command completes the sweep."""

from __future__ import annotations

import json
import shutil
import signal
import time
import uuid
from pathlib import Path

import pytest

from orchestrator.tracking import LocalMlflowServer, runs_dataframe
from tests.micro import BUILT, seeded, sweep_args, wait_for
from tests.procs import kill_marked, pids_with_mark, run_cli, start_cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]


def _runs(storage: Path) -> pd.DataFrame:  # noqa: F821
    with LocalMlflowServer(storage / "mlflow") as server:
        return runs_dataframe(server.uri, "smoke", finished_only=False)


def _tables(storage: Path) -> dict[str, str]:
    out = storage / "results" / "smoke"
    return {p.name: p.read_text() for p in sorted(out.glob("supp_table4.*"))}


def test_kill_9_mid_pack_then_resume_under_another_packing(tmp_path: Path, built_stages: Path) -> None:
    """Two cells packed in one trial; SIGKILL the driver, Ray and MLflow once the pack has checkpointed. The rerun
    turns packing off (each cell a trial of its own, `train-<key>`: another Train run than the one that
    checkpointed), and the same sweep resumes each cell from the checkpoint its pack wrote (found by
    `cell.json`), not epoch 0: one run per cell, no orphan, finished stages untouched, and the tables of an
    uninterrupted run."""
    grid = [*BUILT, "--set", "resources.cells_per_trial=2"]  # the reference run's two cells, as one pack
    storage = seeded(tmp_path / "killed", built_stages)
    mark = uuid.uuid4().hex
    t0 = time.monotonic()
    proc = start_cli(sweep_args(storage, *grid), mark, log=tmp_path / "first.log")
    try:
        wait_for(
            lambda: any((storage / "ray_train").glob("train-pack-*/checkpoint_*/cell.json")),
            900,
            "a checkpoint of the pack",
            proc,
        )
        stages_before = {p.parent.name: p.stat().st_mtime for p in (storage / "cache").glob("*/*/MANIFEST.json")}
        assert kill_marked(mark), "nothing to kill"
        checkpointed = {
            json.loads(m.read_text())["cell"]
            for m in (storage / "ray_train").glob("train-pack-*/checkpoint_*/cell.json")
        }
    finally:
        kill_marked(mark)
    assert not pids_with_mark(mark)
    resumed = run_cli(sweep_args(storage, *grid, "--set", "resources.cells_per_trial=1"), timeout=1200)
    print(f"kill-and-resume wall time: {time.monotonic() - t0:.0f} s")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "(resumed)" in resumed.stdout  # packing is not part of the sweep's identity
    left = int(resumed.stdout.split("running ")[1].split(" cell")[0])
    assert f"running {left} cell(s) as {left} Ray Tune trial(s)" in resumed.stdout
    df = _runs(storage)
    cells = df[df["tags.kind"] == "cell"]
    assert len(cells) == 2 and set(cells["status"]) == {"FINISHED"}  # one run per cell, no duplicates
    assert not (df["status"] == "RUNNING").any()  # no orphan left unmarked
    parents = df[df["tags.kind"] == "sweep"]
    assert len(parents) == 1 and parents.iloc[0]["status"] == "FINISHED"  # the killed invocation was resumed
    for key, mtime in stages_before.items():  # finished stages not recomputed
        manifest = next((storage / "cache").glob(f"*/{key}/MANIFEST.json"))
        assert manifest.stat().st_mtime == mtime, key
    from orchestrator.tracking import metric_history

    with LocalMlflowServer(storage / "mlflow") as server:
        for key, run_id in zip(cells["tags.cell"], cells["run_id"]):
            steps = [s for s, _ in metric_history(server.uri, run_id, "train/loss")]
            assert sorted(set(steps)) == list(range(6)), steps
            if key in checkpointed:  # resumed, not restarted: its first epoch was trained (and logged) once
                assert steps.count(0) == 1, (key, steps)
    assert checkpointed, "no cell had a checkpoint when it was killed"
    # the tables equal those of the session's uninterrupted run of the same cells from an empty store
    assert _tables(storage) == _tables(built_stages) != {}


def test_failing_cell_is_retried_marked_fails_alone_and_reruns_alone(tmp_path: Path, built_stages: Path) -> None:
    """Four cheap cells in two trials (packing): a cell that keeps failing is retried in place
    (`max_retries`), marked FAILED with its own error, and its pack-mate still finishes; a plain rerun reports it
    without retrying it; `--rerun-failed` then runs that one cell."""
    storage = seeded(tmp_path, built_stages)
    grid = [
        "--set",
        "grid.method=[ours]",
        "--set",
        "grid.data_fraction=[0.25, 0.5, 0.75, 1.0]",
        "--set",
        "resources.cells_per_trial=2",
        "--set",
        "train.epochs=2",
    ]
    proc = run_cli([*sweep_args(storage, *grid), "--dry-run", "--json"], timeout=120)
    keys = {c["data_fraction"]: c["key"] for c in json.loads(proc.stdout)["cells"]}
    bad = keys[0.5]
    retries = ["--set", "resources.max_retries=1"]
    proc = run_cli(sweep_args(storage, *grid, *retries), timeout=1200, env={"ROBUSTIFY_FAIL_CELLS": bad[:12]})
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "running 4 cell(s) as 2 Ray Tune trial(s)" in proc.stdout and "FAILED" in proc.stdout
    assert "Traceback" not in proc.stderr
    cells = _runs(storage).query("`tags.kind` == 'cell'").set_index("tags.cell")
    assert cells.loc[bad, "status"] == "FAILED" and "fault injected" in cells.loc[bad, "tags.error"]
    assert set(cells.drop(index=bad)["status"]) == {"FINISHED"} and len(cells) == 4
    packs = sorted((storage / "ray_train").glob("train-pack-*"))
    assert len(packs) == 2
    owners = {
        json.loads(m.read_text())["cell"] for m in (storage / "ray_train").glob("train-pack-*/checkpoint_*/cell.json")
    }
    assert owners and owners <= set(keys.values()) - {bad}  # every checkpoint names its own cell
    assert "RN-34" in (storage / "results" / "smoke" / "supp_table4.csv").read_text()  # tables of what finished
    again = run_cli(sweep_args(storage, *grid), timeout=600)  # plain rerun: reported, not retried
    assert "1 previously failed" in again.stdout, again.stdout[-2000:]
    fixed = run_cli(sweep_args(storage, *grid, "--rerun-failed"), timeout=1200)
    assert fixed.returncode == 0, fixed.stdout[-2000:] + fixed.stderr[-2000:]
    assert "running 1 cell(s) as 1 Ray Tune trial(s)" in fixed.stdout and "0 stages computed" in fixed.stdout
    cells = _runs(storage).query("`tags.kind` == 'cell'")
    assert len(cells) == 4 and set(cells["status"]) == {"FINISHED"}


def test_mlflow_outage_refused_up_front_then_buffered_and_survived_mid_sweep(
    tmp_path: Path, built_stages: Path
) -> None:
    """A tracking server that is down from the start is bad input (exit 2, one line, nothing created); one that
    goes away for a while mid-sweep and comes back on the same port loses nothing."""
    server = LocalMlflowServer(tmp_path / "mlflow").start()
    port = server.port
    server.stop()
    refused = tmp_path / "refused"
    proc = run_cli(
        sweep_args(refused, "--tracking-uri", f"http://127.0.0.1:{port}", "--mlflow-patience", "5"), timeout=300
    )
    assert proc.returncode == 2 and "no MLflow server answers" in proc.stderr and str(port) in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not refused.exists()
    storage = seeded(tmp_path, built_stages)
    server = LocalMlflowServer(tmp_path / "mlflow", port=port).start()
    mark = uuid.uuid4().hex
    proc = start_cli(
        sweep_args(storage, "--tracking-uri", server.uri, "--mlflow-patience", "300", "--set", "train.epochs=6"),
        mark,
        log=tmp_path / "sweep.log",
    )
    try:
        wait_for(lambda: any((storage / "ray_train").glob("train-*/checkpoint_*")), 900, "training", proc)
        server.stop()
        time.sleep(15)
        server = LocalMlflowServer(tmp_path / "mlflow", port=port).start()
        proc.wait(timeout=1200)
        assert proc.returncode == 0, (tmp_path / "sweep.log").read_text()[-3000:]
        from orchestrator.tracking import metric_history

        df = runs_dataframe(server.uri, "smoke", finished_only=False)
        cells = df[df["tags.kind"] == "cell"]
        assert len(cells) == 2 and set(cells["status"]) == {"FINISHED"}
        for run_id in cells["run_id"]:
            assert sorted({s for s, _ in metric_history(server.uri, run_id, "train/loss")}) == list(range(6))
    finally:
        kill_marked(mark)
        server.stop()


def test_corrupt_cache_entry_is_recomputed(tmp_path: Path, built_stages: Path) -> None:
    storage = tmp_path / "runs"
    shutil.copytree(built_stages, storage)  # a finished store, cells included
    target = next((storage / "cache" / "teacher_targets").glob("*/targets/train.npy"))
    target.write_bytes(b"garbage")
    for f in (storage / "cache" / "cell").glob("*/MANIFEST.json"):  # force the distilling cell to read it again
        if "teacher/" in (f.parent / "metrics.json").read_text():
            shutil.rmtree(f.parent)
    fresh = tmp_path / "mlflow-moved"
    (storage / "mlflow").rename(fresh)
    again = run_cli(sweep_args(storage, *BUILT), timeout=1200)  # the copied cells' own settings
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "1 stages computed" in again.stdout or "stages computed" in again.stdout
    import numpy as np

    assert np.load(target).shape[0] == 80  # the teacher's logits on the clean split again (data.n_train=80)
    assert np.load(target.with_name("pool.npy")).shape[0] == 60


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_kill_mid_stages_stops_at_once_and_leaves_nothing(tmp_path: Path, sig: int) -> None:
    """Ctrl-C (SIGINT) or `kill PID` (SIGTERM) while shared stages compute: the sweep says how to resume and exits
    130 within seconds (not when the running stage ends), and takes its MLflow server and local Ray with it."""
    storage, mark, log = tmp_path / "runs", uuid.uuid4().hex, tmp_path / "sweep.log"
    proc = start_cli(sweep_args(storage), mark, log=log, interruptible=True)
    try:
        wait_for(lambda: "computing" in log.read_text(), 300, "shared stages to start", proc)
        time.sleep(2.0)
        proc.send_signal(sig)
        t0 = time.monotonic()
        rc = proc.wait(timeout=90)
        stopped_after = time.monotonic() - t0
        deadline = time.monotonic() + 30
        while pids_with_mark(mark) and time.monotonic() < deadline:  # Ray's daemons end a moment after the driver
            time.sleep(0.5)
        left = pids_with_mark(mark)
    finally:
        kill_marked(mark)
    assert rc == 130, log.read_text()[-2000:]
    assert "interrupted: rerun the same command to resume" in log.read_text()
    assert stopped_after < 30, f"took {stopped_after:.0f} s to stop"
    assert not left, f"left running: {left}"
