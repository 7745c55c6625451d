"""Several sweep files in one invocation: all validated first, then one Ray, one MLflow and one stage cache.

The real run uses minimal specs (a name and a grid, nothing else: the built-in local defaults) shrunk with `--set`,
so it is also the test that a minimal spec runs for real.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.procs import run_cli

GRID = "grid: {student: [vit_small], method: [apt]}\n"
TINY = [
    "data.n_train=60",
    "data.n_test=20",
    "data.c_per_cell=2",
    "pool.n_images=30",
    "pool.ae_epochs=1",
    "pretrain.epochs=1",
    "train.epochs=1",
    "model_overrides.vit_small.patch_size=16",
]


def _specs(tmp_path: Path, names: list[str], extra: str = "") -> list[str]:
    out = []
    for name in names:
        p = tmp_path / f"{name}.yaml"
        p.write_text(f"name: {name}\n{GRID}{extra if name == names[-1] else ''}")
        out.append(str(p))
    return out


def test_two_minimal_specs_run_in_one_invocation_and_share_the_cache(tmp_path: Path) -> None:
    """The second sweep has the same cells under another name: everything it needs is already in the cache."""
    storage = tmp_path / "runs"
    sets = [a for s in TINY for a in ("--set", s)]
    specs = _specs(tmp_path, ["first", "second"])
    proc = run_cli(["orchestrator.sweep", *specs, "--storage", str(storage), *sets], timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert out.count("MLflow: http://127.0.0.1:") == 1  # one server for both
    assert "2 sweeps" in out and "sweep first: " in out and "sweep second: " in out
    assert "1 cells finished, 0 failed" in out.split("sweep second: ")[-1]
    first = json.loads((storage / "results" / "first" / "summary.json").read_text())
    second = json.loads((storage / "results" / "second" / "summary.json").read_text())
    assert first["computed_stages"] > 0 and len(first["finished"]) == 1 and not first["cached"]
    assert second["computed_stages"] == 0 and second["cached"] == first["finished"]
    index = (storage / "results" / "index.md").read_text()
    assert "[first/index.md](first/index.md)" in index and "[second/index.md](second/index.md)" in index


def test_one_bad_spec_refuses_them_all_before_anything_starts(tmp_path: Path) -> None:
    storage = tmp_path / "runs"
    specs = _specs(tmp_path, ["good", "bad"], extra="train: {epochs: 0}\n")
    proc = run_cli(["orchestrator.sweep", *specs, "--storage", str(storage)], timeout=120)
    assert proc.returncode == 2 and "bad.yaml" in proc.stderr and "train.epochs" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not storage.exists()


def test_two_files_with_one_sweep_name_are_refused(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    for p in (a, b):
        p.write_text(f"name: same\n{GRID}")
    proc = run_cli(["orchestrator.sweep", str(a), str(b), "--storage", str(tmp_path / "r")], timeout=120)
    assert proc.returncode == 2 and "distinct names" in proc.stderr and "b.yaml" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_dry_run_of_several_specs(tmp_path: Path) -> None:
    specs = _specs(tmp_path, ["one", "two"])
    proc = run_cli(["orchestrator.sweep", *specs, "--dry-run", "--json", "--storage", str(tmp_path / "r")], timeout=120)
    assert proc.returncode == 0, proc.stderr
    reports = json.loads(proc.stdout)
    assert [r["sweep"] for r in reports] == ["one", "two"] and all(r["packing"]["trials"] for r in reports)
    # the same cells under another name: the second sweep finds every stage the first computes
    first, second = (r["invocation"] for r in reports)
    assert first["stages_from_earlier_sweeps"] == 0 and first["device_hours"] == first["device_hours_alone"] > 0
    assert second["stages"] == 0 and second["stages_from_earlier_sweeps"] == len(reports[1]["stages"])
    assert second["device_hours"] == 0 and second["device_hours_alone"] == first["device_hours_alone"]
    text = run_cli(["orchestrator.sweep", *specs, "--dry-run", "--storage", str(tmp_path / "r")], timeout=120).stdout
    assert "all 2 sweeps in this invocation" in text and "0 stage(s) to compute" in text
