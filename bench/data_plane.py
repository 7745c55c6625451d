"""Benchmark: the ImageNet data path's memory is flat in the number of images, and its time linear.

Synthetic ImageNet-shaped folders (224 px PIL-written JPEGs, 100 classes: train/<wnid>/, val/<wnid>/) and an
ImageNet-C-shaped tree (<corruption>/<severity>/<wnid>/, all 75 cells) are read by the real `imagenet` data path,
and the real stage bodies run over them, each stage in a fresh process (trainables.pipeline.run_stage):
  read_pool        imagenet_split (N train + N/8 val images) saved as a pool entry whose pool is the first N/4
                   train images (what build_pool stores, without the augmentation's compute)
  build_eval_sets  clean val (N/8) + ImageNet-C (N/75 images in each of the 75 cells: N in all, from the tree)
  extract_features vit_small (random init) over train, pool and every eval set, shard by shard
  teacher_targets  resnet34 teacher (random init) logits over train and pool, shard by shard
For each stage and N: wall time, peak RSS (VmHWM: includes file-backed pages of memory maps, which the kernel can
drop) and peak anonymous RSS (RssAnon, sampled every 50 ms: the memory the process really owns).

Only a few hundred distinct JPEGs are written; the other paths are hard links to them (the reader decodes every
path, so reading costs the same). Stages read the images at `--size` px (default 64, to fit 2 shared cores);
`RESIDENT_BYTES` is scaled down by the same pixel ratio (224/size)^2 so the sets take the file-backed path they
take at 224 px.
Measured 2026-12-02 on the 2-core dev machine, nothing else running (16.7 min for all three N): peak anonymous RSS
2k / 8k / 32k, in MB: read_pool 509 / 518 / 506, build_eval_sets 308 / 319 / 311, extract_features 778 / 805 / 765,
teacher_targets 692 / 703 / 704 (flat: <= 1.02x). Wall time 32k / 8k: 2.8-3.95x for 4x the images (fixed start-up
costs); per image at 32k: 1.1 / 0.8 / 14.3 / 5.7 ms. VmHWM then still grew with N by the memory maps' file-backed
pages (extract_features 1,166 -> 1,907 MB, read_pool 1.48x, build_eval_sets 1.73x).
Measured 2026-12-03, after `trainables/pages.py` (each shard's rows leave the process once written or read, and
`common.save` streams file-backed sets): VmHWM 2k / 8k / 32k, in MB: read_pool 859 / 943 / 832, build_eval_sets
576 / 630 / 608, extract_features 1,089 / 1,186 / 1,120, teacher_targets 1,056 / 1,056 / 1,054: 32k / 2k <= 1.03x,
the largest of the three <= 1.10x the smallest; anonymous RSS unchanged (506-837 MB). (That run shared the 2 cores
with the test suite and a sweep, so its wall times are not quoted.)
Usage: python -m bench.data_plane [--n 2000 8000 32000] [--size 64] [--out bench/out]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._proc import ROOT

CLASSES = [f"n{i:08d}" for i in range(100)]
UNIQUE = 300  # distinct JPEGs written; the rest are hard links
STAGES = ("read_pool", "build_eval_sets", "extract_features", "teacher_targets")


def _jpeg(path: Path, i: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(i)
    base = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)  # smooth-ish content: JPEG sizes like photos
    Image.fromarray(base).resize((224, 224), Image.BILINEAR).save(path, quality=90)


def _fill(folder: Path, n: int, uniques: list[Path]) -> None:
    for k in range(n):
        d = folder / CLASSES[k % len(CLASSES)]
        d.mkdir(parents=True, exist_ok=True)
        os.link(uniques[k % len(uniques)], d / f"img_{k:07d}.JPEG")


def make_tree(root: Path, n: int) -> dict[str, str]:
    """train (n), val (n/8) and a C tree of about n images (n/75 in each of the 75 cells); returns data.roots."""
    from trainables import shifts

    src = root / "unique"
    src.mkdir(parents=True, exist_ok=True)
    uniques = [src / f"{i}.JPEG" for i in range(UNIQUE)]
    for i, p in enumerate(uniques):
        _jpeg(p, i)
    _fill(root / "imagenet" / "train", n, uniques)
    _fill(root / "imagenet" / "val", n // 8, uniques)
    for c in shifts.CORRUPTIONS:
        for s in shifts.SEVERITIES:
            _fill(root / "imagenet_c" / c / str(s), max(n // 75, 1), uniques)
    return {"imagenet": str(root / "imagenet"), "imagenet_c": str(root / "imagenet_c")}


def _run_child(stage: str, work: Path, data: dict, size: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "bench._data_plane_child", stage, str(work), json.dumps(data), str(size)]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{stage} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(ns: list[int], size: int, out: Path) -> list[dict]:
    rows = []
    for n in ns:
        root = Path(tempfile.mkdtemp(prefix=f"robustify-bench-{n}-"))
        try:
            t = time.perf_counter()
            roots = make_tree(root, n)
            gen_s = time.perf_counter() - t
            data = {"n": n, "roots": roots}
            for stage in STAGES:
                r = {"n": n, "stage": stage, "tree_s": gen_s, **_run_child(stage, root / "work", data, size)}
                print(json.dumps(r), flush=True)
                rows.append(r)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_plane.json").write_text(json.dumps(rows, indent=1))
    return rows


def paper_extrapolation(spec: Path = ROOT / "sweeps" / "teacher_vs_student.yaml") -> dict:
    """The Table 4 paper sweep at full ImageNet (n_train, n_test, c_per_cell: all): the cost model's disk, memory
    and GPU-hours (orchestrator/costs.py), beside the measured per-image times scaled to its image counts."""
    from orchestrator.costs import estimate, footprint, sizes
    from orchestrator.plan import build_plan
    from orchestrator.spec import load_spec

    plan = build_plan(load_spec(spec, "paper", ["data.n_train=null", "data.n_test=null"]))
    s = sizes(plan.spec)
    return {
        "images": {"train": s.n_train, "pool": s.n_pool, "eval": s.n_eval},
        "footprint": footprint(plan),
        "gpu_hours": estimate(plan)["total_device_hours"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[2000, 8000, 32000])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    p.add_argument("--paper-only", action="store_true", help="print the paper extrapolation only")
    a = p.parse_args()
    if not a.paper_only:
        run(a.n, a.size, a.out)
    print(json.dumps(paper_extrapolation(), indent=1))


if __name__ == "__main__":
    main()
