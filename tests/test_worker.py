"""Inside a Ray worker (orchestrator/worker.py): the pack loop's failure policy, per-cell checkpoints and seeding.
Pure unit tests: the Ray session is a plain `TrainSession`; nothing starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from orchestrator import worker
from orchestrator.ray_backend import TrainSession


def _session(world: int) -> TrainSession:
    return TrainSession(rank=0, world=world, device=torch.device("cpu"), node="node")


def test_pack_loop_retries_a_failing_cell_in_place_then_records_it_and_goes_on(tmp_path, monkeypatch) -> None:
    calls: list[tuple[str, object]] = []

    def fake_cell(cfg, session, resume, checkpoint):
        calls.append((cfg["key"], resume))
        if cfg["key"] == "bad":
            raise ValueError("boom")
        return {"acc/clean": 1.0}

    monkeypatch.setattr(worker, "run_cell", fake_cell)
    pack = {
        "cells": [{"key": k} for k in ("a", "bad", "c")],
        "threads": 1,
        "train_storage": str(tmp_path),
        "resources": {"max_retries": 2},
    }
    done = worker.run_pack(pack, _session(1), resume_for=lambda k: {"epoch": 0, "of": k}, checkpoint_for=lambda k: None)
    assert [k for k, _ in calls] == ["a", "bad", "bad", "bad", "c"]  # 1 try + 2 retries, then on to the next
    assert all(r == {"epoch": 0, "of": k} for k, r in calls)  # each attempt resumes its own cell
    assert done == [("a", {"acc/clean": 1.0}), ("bad", None), ("c", {"acc/clean": 1.0})]
    err = Path(worker.error_file(tmp_path, "bad")).read_text()
    assert err.startswith("ValueError: boom") and "Traceback" in err
    assert not Path(worker.error_file(tmp_path, "a")).exists()


def test_lone_cells_and_multi_worker_packs_leave_failures_to_ray_train(tmp_path, monkeypatch) -> None:
    def fake_cell(cfg, *a):
        raise ValueError("boom")

    monkeypatch.setattr(worker, "run_cell", fake_cell)
    for cells, world in (([{"key": "x"}], 1), ([{"key": "x"}, {"key": "y"}], 2)):
        pack = {"cells": cells, "threads": 1, "train_storage": str(tmp_path), "resources": {"max_retries": 3}}
        with pytest.raises(ValueError):
            worker.run_pack(pack, _session(world), resume_for=lambda k: None, checkpoint_for=lambda k: None)
    assert not (tmp_path / worker.ERRORS_DIR).exists()


def test_orphan_checkpoint_newest_readable_epoch(tmp_path: Path) -> None:
    """Checkpoints Ray copied but never recorded (kill -9 before its snapshot) are found, in the cell's own run
    folder or in a pack's folder whose marker names the cell; a truncated copy and other cells' checkpoints are
    skipped."""
    root = tmp_path / "ray_train"
    run = root / "train-abc"
    assert worker.orphan_checkpoint(root, "abc") is None
    for i, epoch in enumerate((0, 2, 1)):
        (run / f"checkpoint_{i}").mkdir(parents=True)
        torch.save({"epoch": epoch, "w": torch.full((3,), float(epoch))}, run / f"checkpoint_{i}" / "state.pt")
    (run / "checkpoint_9").mkdir()
    good = (run / "checkpoint_1" / "state.pt").read_bytes()
    (run / "checkpoint_9" / "state.pt").write_bytes(good[: len(good) // 2])  # a copy cut by the kill
    state = worker.orphan_checkpoint(root, "abc")
    assert state["epoch"] == 2 and torch.equal(state["w"], torch.full((3,), 2.0))
    assert worker.orphan_checkpoint("s3://bucket/ray_train", "abc") is None
    # a pack's run folder: its checkpoints belong to whichever cell their marker names
    for i, (cell, epoch) in enumerate((("abc", 3), ("other", 7))):
        d = root / "train-pack-0123" / f"checkpoint_{i}"
        d.mkdir(parents=True)
        torch.save({"epoch": epoch, "w": torch.full((3,), float(epoch))}, d / "state.pt")
        (d / worker.CELL_MARKER).write_text(json.dumps({"cell": cell, "epoch": epoch}))
    assert worker.orphan_checkpoint(root, "abc")["epoch"] == 3
    assert worker.orphan_checkpoint(root, "other")["epoch"] == 7
    assert worker.orphan_checkpoint(root, "nobody") is None
    # stage bodies start from RNG state that depends only on the key, not on what the worker ran before
    worker.seed_from_key("7db4c2a8e45c828dd515")
    a = torch.rand(4)
    torch.rand(100)
    worker.seed_from_key("7db4c2a8e45c828dd515")
    assert torch.equal(a, torch.rand(4))
