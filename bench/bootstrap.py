"""Benchmark: what the claims' paired bootstrap adds to building a table.

Builds Supplement Table 3 (4 student ← teacher pairs, ours vs w/o KD) and Table 4 (5 teachers, Spearman) from
synthetic runs with per-example outcomes at the local profile's intended sizes (default 3 seeds × 300 C images
× 75 corruption/severity cells), once without outcomes (points only) and once with them (B = 2,000 replicates
per interval), and prints seconds per table and the ratio with / without. Written to bench/out/bootstrap.json.

Usage::

    python bench/bootstrap.py [--images 300] [--seeds 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.tables import TABLES, build_table

DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "bootstrap.json"
PAIRS = [
    ("resnet101", "resnet34"),
    ("clip_rn101", "resnet101"),
    ("clip_vit_b16", "vit_small"),
    ("clip_vit_b32", "vit_small"),
]
TEACHERS = ["resnet34", "resnet50", "resnet101", "vit_small", "resnet152"]


def _run(i: int, metrics: dict, **params) -> dict:
    row = {"run_id": f"r{i}", "status": "FINISHED", "start_time": i, "tags.kind": "cell", "tags.cell": f"c{i}"}
    row.update({f"params.{k}": str(v) for k, v in params.items()})
    row.update({f"metrics.{k}": float(v.mean()) for k, v in metrics.items()})
    return row


def synthetic(tid: str, n: int, seeds: int) -> tuple[pd.DataFrame, dict]:
    """Runs and their (15, 5, n) outcomes for Table 3 or Table 4."""
    rng = np.random.default_rng(0)
    rows, out = [], {}
    arms = (
        [({"student": s, "teacher": t, "method": m}) for s, t in PAIRS for m in ("wo_kd", "ours")]
        if tid == "supp_table3"
        else [{"student": "clip_vit_b16", "teacher": t, "method": "ours"} for t in TEACHERS]
    )
    for params in arms:
        for seed in range(seeds):
            m = {"acc/c": rng.random((15, 5, n)) < 0.6}
            if tid == "supp_table4":
                m["teacher/acc/c"] = rng.random((15, 5, n)) < 0.5
            out[f"r{len(rows)}"] = m
            rows.append(_run(len(rows), m, seed=seed, **params))
    return pd.DataFrame(rows), out


def _time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    result = {"images": a.images, "seeds": a.seeds}
    for tid in ("supp_table3", "supp_table4"):
        runs, out = synthetic(tid, a.images, a.seeds)
        plain = _time(lambda: build_table(TABLES[tid], runs), a.repeats)  # noqa: B023 - used at once
        boot = _time(lambda: build_table(TABLES[tid], runs, out.get), a.repeats)  # noqa: B023
        result[tid] = {"points_only_s": plain, "with_bootstrap_s": boot, "ratio": boot / plain}
        print(f"{tid}: {plain:.2f} s points only, {boot:.2f} s with the bootstrap ({boot / plain:.1f}×)")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
