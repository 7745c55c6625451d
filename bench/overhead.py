"""Benchmark: orchestration overhead on a sweep of 24 cells whose training is trivial.

The sweep is `sweeps/smoke.yaml` with 24 data fractions (24 `ours` cells sharing one teacher, one pool, one set
of features), one distillation epoch on a few dozen images. Work = the union over time of the intervals in which
some stage or cell was computing (their `time/start_unix`..`time/end_unix`, recorded inside the stage bodies).
Overhead = wall time of the whole command minus that union, reported as a share of the wall time. It includes
starting Ray and MLflow, Tune/Train scheduling, worker start-up, logging and aggregation. Target: <= 20 %.

Usage: python -m bench.overhead [--cells 24] [--out bench/out]
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from bench._proc import ROOT, run_measured, write_report


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=24)
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args(argv)
    fractions = [round((i + 1) / args.cells, 4) for i in range(args.cells)]
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    try:
        overrides = ["--set", f"grid.data_fraction={fractions}", "--set", "grid.method=[ours]",
                     "--set", "train.epochs=1", "--set", "eval=[clean]", "--set", "data.n_train=100",
                     "--set", "data.n_test=40", "--set", "pool.n_images=60", "--set", "pool.ae_epochs=1",
                     "--set", "teacher_train.n_images=40", "--set", "train.mc_samples=2"]
        m = run_measured(["orchestrator.sweep", "sweeps/smoke.yaml", "--storage", str(work), *overrides])
        assert m.returncode == 0, m.stderr[-3000:]
        intervals = []
        for f in (work / "cache").glob("*/*/metrics.json"):
            d = json.loads(f.read_text())
            if "time/start_unix" in d:
                intervals.append((d["time/start_unix"], d["time/end_unix"]))
        busy = union_seconds(intervals)
        report = {"cells": args.cells, "wall_s": m.wall_s, "work_union_s": busy,
                  "overhead_s": m.wall_s - busy, "overhead_share": (m.wall_s - busy) / m.wall_s,
                  "n_timed_units": len(intervals), "peak_rss_gb": m.peak_rss_gb}
        write_report(args.out, "overhead", report)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
