"""The micro smoke sweep that the fault and cluster tests run (sizes cut so a cold run is ~1-2 min here), and
helpers to start from its shared stages instead of recomputing them in every test."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

MICRO = [
    "--set",
    "data.n_train=80",
    "--set",
    "data.n_test=40",
    "--set",
    "data.c_per_cell=2",
    "--set",
    "data.p_sequences=2",
    "--set",
    "data.p_frames=3",
    "--set",
    "pool.n_images=60",
    "--set",
    "teacher_train.n_images=40",
    "--set",
    "eval=[clean, c, p]",
    "--set",
    "train.batch_size=16",
    "--set",
    "train.mc_samples=3",
]


# The session's reference run (conftest `built_stages`) trains its cells this long: long enough for the kill -9
# test to kill a pack between two checkpoints, and that test then compares its tables with the reference's.
BUILT = ["--set", "train.epochs=6"]


def sweep_args(storage: Path, *extra: str) -> list[str]:
    return ["orchestrator.sweep", "sweeps/smoke.yaml", "--storage", str(storage), *MICRO, *extra]


def wait_for(predicate, timeout: float, what: str, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}")
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}")


def seeded(tmp_path: Path, built: Path) -> Path:
    """A fresh store whose cache already holds the shared stages of `built` (no cells, no MLflow, no Train runs)."""
    storage = tmp_path / "runs"
    for kind in (built / "cache").iterdir():
        if kind.is_dir() and kind.name != "cell":
            shutil.copytree(kind, storage / "cache" / kind.name)
    return storage
