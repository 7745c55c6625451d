"""Benchmark: decoding image files in the stage's process vs as CPU-only Ray shard tasks, side by side.

What a stage on `data.source: imagenet` does when it reads a split or the ImageNet-C cells (trainables/reading.py):
`--n` JPEGs of ImageNet's typical size (500 x 375 px, PIL-written, quality 90; a few hundred distinct files, the
rest hard links, as in bench/data_plane.py) decoded and resized to `--size` px, in shards of `reading.READ_ROWS`,
two ways in one process:
  serial    the default `StageContext.read_shards`: one shard after another
  ray_2x1   `ray_backend.shard_map(1, 0, 2)` on a local Ray of 2 CPUs: 2 shard tasks in flight, 1 CPU each
            (what orchestrator/worker.py hands a stage on this node)
Each runs `--repeats` times, interleaved; the best wall time counts; ratio = serial / ray_2x1 (>1: the tasks are
faster; at most 2 on 2 cores, about the CPU count on a cluster node). Both must give the same bytes (the script
fails otherwise). Ray's start is not timed; every task's overhead is.

Measured 2026-12-02 on the 2-core dev machine, nothing else running: n 4096 at 224 px, 8 shards, best of 2: serial
14.12 s (3.45 ms per image), ray_2x1 7.79 s (1.90 ms): ratio 1.81, byte-identical.

Usage: python -m bench.reading [--n 4096] [--size 224] [--repeats 2] [--out bench/out]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench._proc import write_report
from bench.data_plane import UNIQUE
from orchestrator import ray_backend
from trainables import reading
from trainables.common import serial_map
from trainables.reading import Reader


def _jpeg(path: Path, i: int) -> None:
    """A photo-sized JPEG: smooth random content upsampled to 500 x 375 (ImageNet's most common size)."""
    import numpy as np
    from PIL import Image

    base = np.random.default_rng(i).integers(0, 256, (47, 63, 3), dtype=np.uint8)
    Image.fromarray(base).resize((500, 375), Image.BILINEAR).save(path, quality=90)


def _files(root: Path, n: int) -> list[Path]:
    uniques = [root / f"u{i}.JPEG" for i in range(min(UNIQUE, n))]
    for i, p in enumerate(uniques):
        _jpeg(p, i)
    files = []
    for k in range(n):
        f = root / f"img_{k:07d}.JPEG"
        f.hardlink_to(uniques[k % len(uniques)])
        files.append(f)
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args(argv)
    reading.READ_MIN_ROWS = 0  # measure the mapping itself, whatever the size
    torch.set_num_threads(1)
    best: dict[str, float] = {}
    outputs: dict[str, torch.Tensor] = {}
    with tempfile.TemporaryDirectory(prefix="bench-reading-") as d:
        files = _files(Path(d), args.n)
        ray_backend.start(None, num_cpus=2)
        try:
            modes = {"serial": serial_map, "ray_2x1": ray_backend.shard_map(1, 0, 2)}
            for _ in range(args.repeats):
                for name, mapper in modes.items():
                    t = time.perf_counter()
                    outputs[name] = Reader(mapper).read(files, args.size)
                    best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
        finally:
            ray_backend.stop()
    identical = torch.equal(outputs["serial"], outputs["ray_2x1"])
    report = {
        "n_images": args.n,
        "size": args.size,
        "shards": -(-args.n // reading.READ_ROWS),
        "best_wall_s": {k: round(v, 2) for k, v in best.items()},
        "ms_per_image": {k: round(1000 * v / args.n, 2) for k, v in best.items()},
        "ratio_serial_over_ray": round(best["serial"] / best["ray_2x1"], 2),
        "byte_identical": identical,
    }
    write_report(args.out, "reading", report)
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
