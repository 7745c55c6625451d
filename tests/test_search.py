"""Optuna inside a cell: the space is validated with the spec, the study lives in a journal file on the storage,
and a retried cell continues its study instead of starting over."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from orchestrator.search import parse_dist, parse_space, run_study
from orchestrator.spec import SpecError, load_spec

ROOT = Path(__file__).resolve().parents[1]


def test_parse_distributions() -> None:
    assert parse_dist("loguniform(1e-4, 1e-2)").args == (1e-4, 1e-2)
    assert parse_dist("int(1, 5)").kind == "int" and parse_dist("choice(0.1, 0.2)").args == (0.1, 0.2)
    for bad in ("normal(0, 1)", "uniform(2, 1)", "loguniform(0, 1)", "int(a, b)"):
        with pytest.raises(ValueError):
            parse_dist(bad)
    with pytest.raises(ValueError, match="cannot be searched"):
        parse_space({"student": "uniform(0, 1)"})


def test_bad_search_space_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="search.space"):
        load_spec(ROOT / "sweeps" / "smoke.yaml", "local", ["search={space: {lr: 'gaussian(1, 2)'}, trials: 2}"])
    spec = load_spec(
        ROOT / "sweeps" / "smoke.yaml", "local", ["search={space: {lr: 'loguniform(1e-4, 1e-2)'}, trials: 3}"]
    )
    assert spec.search.trials == 3


def _objective(calls: list):
    def train_once(params: dict, tdir: Path) -> dict:
        calls.append(params)
        value = -((math.log10(params["lr"]) + 3) ** 2)  # best at lr = 1e-3
        (tdir / "metrics.json").write_text(f'{{"acc/c": {value}}}')
        (tdir / "tail.pt").write_bytes(b"weights of this trial")
        return {"acc/c": value}

    return train_once


def test_study_runs_records_trials_and_resumes(tmp_path: Path) -> None:
    calls: list = []
    logged: list = []
    out = tmp_path / "out"
    out.mkdir()
    m = run_study(
        tmp_path,
        "cellkey",
        {"lr": "loguniform(1e-5, 1e-1)"},
        4,
        "acc/c",
        _objective(calls),
        out,
        lambda metrics, step: logged.append((step, metrics)),
    )
    assert len(calls) == 4 and [s for s, _ in logged] == [0, 1, 2, 3]
    assert m["optuna/n_trials"] == 4 and m["optuna/best_value"] == max(x["optuna/value"] for _, x in logged)
    assert (out / "tail.pt").read_bytes() == b"weights of this trial"
    assert (tmp_path / "optuna" / "cellkey.log").is_file()
    # a retried cell asking for 6 trials runs only the 2 missing ones
    out2 = tmp_path / "out2"
    out2.mkdir()
    m2 = run_study(
        tmp_path,
        "cellkey",
        {"lr": "loguniform(1e-5, 1e-1)"},
        6,
        "acc/c",
        _objective(calls),
        out2,
        lambda metrics, step: logged.append((step, metrics)),
    )
    assert len(calls) == 6 and m2["optuna/n_trials"] == 6
