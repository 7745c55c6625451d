"""The sweep's life cycle (orchestrator/runner.py): what a user sees when something goes wrong after the input
was accepted. Nothing is started: the failing step is replaced, the policy around it is real."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from orchestrator import runner
from orchestrator.spec import load_spec
from orchestrator.tracking import TrackingUnavailable

ROOT = Path(__file__).resolve().parents[1]


def _args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(
        storage=str(tmp_path / "runs"),
        tracking_uri="http://127.0.0.1:9",
        address=None,
        num_cpus=None,
        no_feature_cache=False,
        rerun_failed=False,
        mlflow_patience=1.0,
    )


@pytest.fixture(autouse=True)
def _no_cluster(monkeypatch) -> None:
    """The failing step comes after Ray starts; a local Ray here would make pytest a Ray driver (tests/procs.py)
    and test nothing these tests are about."""
    monkeypatch.setattr(runner, "_start_ray", lambda args, stack: None)


def test_an_unexpected_error_is_one_line_and_a_traceback_file(tmp_path, monkeypatch, capsys) -> None:
    def boom(*a, **k):
        raise RuntimeError("the disk melted\nsecond line")

    monkeypatch.setattr(runner, "_execute", boom)
    code = runner.run_sweep(load_spec(ROOT / "sweeps" / "smoke.yaml"), _args(tmp_path), server=None)
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("error: RuntimeError: the disk melted") and "last_error.txt" in err
    log = tmp_path / "runs" / "logs" / "last_error.txt"
    assert "Traceback" in log.read_text() and "boom" in log.read_text()


def test_tracking_outage_says_rerun_resumes(tmp_path, monkeypatch, capsys) -> None:
    def away(*a, **k):
        raise TrackingUnavailable("MLflow at http://127.0.0.1:9 did not answer for 1 s")

    monkeypatch.setattr(runner, "_execute", away)
    assert runner.run_sweep(load_spec(ROOT / "sweeps" / "smoke.yaml"), _args(tmp_path), server=None) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rerun the same command to resume" in err[0]


def test_git_commit_names_this_checkout_once_per_process() -> None:
    """The report written at the end names the commit the sweep started with: read once, then remembered."""
    commit = runner.git_commit()
    head = commit.removesuffix("-dirty")
    assert commit == "unknown" or (4 <= len(head) <= 12 and all(c in "0123456789abcdef" for c in head))
    assert runner.git_commit.cache_info().currsize == 1 and runner.git_commit() is commit
