"""Benchmark: the stage cache and cached student features vs a naive sweep, measured side by side in one run.

Three ways over `sweeps/teacher_vs_student.yaml` (local profile):
  naive  every cell on its own, as a plain Ray Tune script would: each one re-runs the shared stages (fresh storage
         per cell) and runs the full student forward every epoch (`--no-feature-cache`);
  cold   the orchestrator with an empty cache: shared stages once, features extracted once;
  warm   the same command again on the same storage, new MLflow store: every stage and cell comes from the cache.
Targets (issue "Scale-out"): cold >= 3x faster than naive; warm >= 10x faster than cold with byte-identical tables.

Usage: python -m bench.cache_speedup [--spec sweeps/teacher_vs_student.yaml] [--teachers N] [--out bench/out]
       [--skip-naive]
`--teachers N` runs all three modes on the first N teachers of the grid only (same grid for all three).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import yaml

from bench._proc import ROOT, run_measured, write_report


def _teachers(spec: Path) -> list[str]:
    return list(yaml.safe_load(spec.read_text())["grid"]["teacher"])


def _tables(storage: Path, name: str) -> dict[str, bytes]:
    out = storage / "results" / name
    return {
        p.name: p.read_bytes()
        for p in sorted(out.glob("*"))
        if p.suffix in (".md", ".csv", ".tex") and p.name != "index.md"
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="sweeps/teacher_vs_student.yaml")
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--teachers", type=int, default=None, help="use only the first N teachers of the grid")
    args = ap.parse_args(argv)
    spec = ROOT / args.spec
    name = yaml.safe_load(spec.read_text())["name"]
    work = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    results: dict[str, dict] = {}
    teachers = _teachers(spec)[: args.teachers] if args.teachers else _teachers(spec)
    grid = ["--set", f"grid.teacher=[{', '.join(teachers)}]"]
    try:
        if not args.skip_naive:
            wall = peak = 0.0
            for t in teachers:
                m = run_measured(
                    [
                        "orchestrator.sweep",
                        args.spec,
                        "--storage",
                        str(work / f"naive-{t}"),
                        "--set",
                        f"grid.teacher=[{t}]",
                        "--no-feature-cache",
                    ]
                )
                assert m.returncode == 0, m.stderr[-2000:]
                wall, peak = wall + m.wall_s, max(peak, m.peak_rss_gb)
            results["naive"] = {"wall_s": wall, "peak_rss_gb": peak}
        cold = run_measured(["orchestrator.sweep", args.spec, "--storage", str(work / "shared"), *grid])
        assert cold.returncode == 0, cold.stderr[-2000:]
        results["cold"] = {"wall_s": cold.wall_s, "peak_rss_gb": cold.peak_rss_gb}
        cold_tables = _tables(work / "shared", name)
        shutil.move(str(work / "shared" / "mlflow"), str(work / "mlflow-cold"))  # warm: same cache, new MLflow
        warm = run_measured(["orchestrator.sweep", args.spec, "--storage", str(work / "shared"), *grid])
        assert warm.returncode == 0, warm.stderr[-2000:]
        results["warm"] = {"wall_s": warm.wall_s, "peak_rss_gb": warm.peak_rss_gb}
        identical = cold_tables == _tables(work / "shared", name) and bool(cold_tables)
        report = {
            "spec": args.spec,
            "teachers": teachers,
            **results,
            "tables_byte_identical": identical,
            "cold_vs_warm": results["cold"]["wall_s"] / results["warm"]["wall_s"],
        }
        if "naive" in results:
            report["naive_vs_cold"] = results["naive"]["wall_s"] / results["cold"]["wall_s"]
        write_report(args.out, "cache_speedup", report)
        # keep the cold run's tables beside the report: they are the sweep's result, not just a timing artefact
        shutil.copytree(
            work / "shared" / "results" / name, Path(args.out) / f"cache_speedup-{name}-tables", dirs_exist_ok=True
        )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
