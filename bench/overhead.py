"""Benchmark: orchestration overhead on sweeps of cells whose training is trivial.

The sweep is `sweeps/smoke.yaml` with N data fractions (N `ours` cells sharing one teacher, one pool, one set of
features), one distillation epoch on a few dozen images. Work = the union over time of the intervals in which
some stage or cell was computing (their `time/start_unix`..`time/end_unix`, recorded inside the stage bodies).
Overhead = wall time of the whole command minus that union, reported as a share of the wall time. It includes
starting Ray and MLflow, Tune/Train scheduling, worker start-up, logging and aggregation. Target: <= 20 % at
24 cells.

Two sizes are run side by side (24 and 96 cells by default) to split the overhead into a fixed part (services
and trial start-up, paid once per sweep) and a part per cell (what cell packing, orchestrator/packing.py, cuts):
per cell = (overhead(big) - overhead(small)) / (big - small). `--no-packing` measures one trial per cell.

Usage: python -m bench.overhead [--cells 24,96] [--no-packing] [--out bench/out]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from bench._proc import run_measured, write_report


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def measure(cells: int, packing: bool) -> dict:
    fractions = [round((i + 1) / cells, 4) for i in range(cells)]
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    try:
        overrides = [
            "--set",
            f"grid.data_fraction={fractions}",
            "--set",
            "grid.method=[ours]",
            "--set",
            "train.epochs=1",
            "--set",
            "eval=[clean]",
            "--set",
            "data.n_train=100",
            "--set",
            "data.n_test=40",
            "--set",
            "pool.n_images=60",
            "--set",
            "pool.ae_epochs=1",
            "--set",
            "teacher_train.n_images=40",
            "--set",
            "train.mc_samples=2",
        ]
        if not packing:
            overrides += ["--set", "resources.cells_per_trial=1"]
        m = run_measured(["orchestrator.sweep", "sweeps/smoke.yaml", "--storage", str(work), *overrides])
        assert m.returncode == 0, m.stderr[-3000:]
        intervals = []
        for f in (work / "cache").glob("*/*/metrics.json"):
            d = json.loads(f.read_text())
            if "time/start_unix" in d:
                intervals.append((d["time/start_unix"], d["time/end_unix"]))
        busy = union_seconds(intervals)
        trials = next(
            (
                ln.split(" as ")[1].split(" Ray")[0]
                for ln in m.stdout.splitlines()
                if " as " in ln and "Ray Tune trial" in ln
            ),
            "?",
        )
        return {
            "cells": cells,
            "trials": trials,
            "wall_s": m.wall_s,
            "work_union_s": busy,
            "overhead_s": m.wall_s - busy,
            "overhead_share": (m.wall_s - busy) / m.wall_s,
            "n_timed_units": len(intervals),
            "peak_rss_gb": m.peak_rss_gb,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", default="24,96", help="comma-separated sweep sizes")
    ap.add_argument("--no-packing", action="store_true", help="one trial per cell (resources.cells_per_trial=1)")
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args(argv)
    sizes = [int(c) for c in args.cells.split(",")]
    runs = [measure(n, not args.no_packing) for n in sizes]
    report: dict = {"packing": not args.no_packing, "runs": runs}
    if len(runs) >= 2:
        a, b = runs[0], runs[-1]
        per_cell = (b["overhead_s"] - a["overhead_s"]) / (b["cells"] - a["cells"])
        report["overhead_per_cell_s"] = per_cell
        report["overhead_fixed_s"] = a["overhead_s"] - per_cell * a["cells"]
    write_report(args.out, "overhead" + ("-no-packing" if args.no_packing else ""), report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
