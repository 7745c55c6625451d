"""Benchmark: cost of MC-dropout head selection relative to one plain forward of the student.

The paper's claim (supplement §4) is that N = 10 MC samples are cheap because only the dropout-carrying heads are
rerun, not the whole model. This script measures it on one batch:

* plain: ``student(x)`` once (the combined head, no selection);
* ours: ``student.encode(x)`` + ``student.trunk(feats)`` once, then :func:`trainables.inference.predict_all`
  with N samples over the heads (every selection rule and every head's prediction).

Each is warmed up twice, then timed ``--repeats`` times (median reported), on 2 CPU threads by default. The ratio
``ours / plain`` is printed and everything is written to ``bench/out/mc_dropout.json``.

Usage::

    python bench/mc_dropout.py [--student clip_vit_b16] [--batch-size 64] [--n-samples 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from trainables.inference import predict_all
from trainables.models import create_student

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "mc_dropout.json"
WARMUP_CALLS = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", default="clip_vit_b16", help="registered student name")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--n-samples", type=int, default=10, help="MC-dropout samples per head")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per variant (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def _sync(device: torch.device) -> None:
    # CUDA kernels are asynchronous: without a sync the timer would stop before the work is done.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], repeats: int, device: torch.device) -> list[float]:
    """Seconds per call of ``fn`` after ``WARMUP_CALLS`` untimed calls (allocator, lazy init, kernel choice)."""
    for _ in range(WARMUP_CALLS):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def run(args: argparse.Namespace) -> dict:
    """Build the student, time both variants on the same batch, return the result record."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    student = (
        create_student(
            args.student,
            num_classes=len(CIFAR10_CLASSES),
            img_size=args.img_size,
            class_names=CIFAR10_CLASSES,
            dropout=0.25,
        )
        .to(device)
        .eval()
    )
    x01 = torch.rand(args.batch_size, 3, args.img_size, args.img_size, device=device)

    def plain() -> object:
        return student(x01)

    def ours() -> object:
        z = student.trunk(student.encode(x01))
        return predict_all(student.heads, z, n_samples=args.n_samples)

    with torch.no_grad():
        z = student.trunk(student.encode(x01))
        t_plain = time_calls(plain, args.repeats, device)
        t_ours = time_calls(ours, args.repeats, device)
        t_heads = time_calls(lambda: predict_all(student.heads, z, n_samples=args.n_samples), args.repeats, device)
    median_plain, median_ours = statistics.median(t_plain), statistics.median(t_ours)
    return {
        "student": args.student,
        "batch_size": args.batch_size,
        "img_size": args.img_size,
        "n_samples": args.n_samples,
        "threads": args.threads,
        "device": str(device),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "plain_s": t_plain,
        "ours_s": t_ours,
        "heads_only_s": t_heads,
        "median_plain_s": median_plain,
        "median_ours_s": median_ours,
        "median_heads_only_s": statistics.median(t_heads),
        "ratio_ours_over_plain": median_ours / median_plain,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(
        f"{result['student']} batch {result['batch_size']}: plain {result['median_plain_s'] * 1e3:.1f} ms, "
        f"trunk once + predict_all(N={result['n_samples']}) {result['median_ours_s'] * 1e3:.1f} ms "
        f"(heads only {result['median_heads_only_s'] * 1e3:.1f} ms), "
        f"ratio {result['ratio_ours_over_plain']:.2f}; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
