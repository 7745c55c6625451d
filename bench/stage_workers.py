"""Benchmark: what an idle Ray worker keeps after a shared stage, without and with `pages.trim_heap`, side by side.

A stage runs as a Ray task (`ray_backend.run_dag`) in a worker Ray keeps for the next task. On one local Ray of
2 CPUs, a DAG of 2 memory-heavy stage-like tasks (a timm ViT-B/16 trained `--steps` Adam steps on random 224 px
images, 1 thread: the kind of work pretrain_student and full_finetune do) runs twice:
  kept     the task returns with everything dropped, as a stage did before trimming
  trimmed  the same, then `pages.trim_heap()`, as `worker.stage_task` now does when a stage ends
(kept first; Ray reuses the same two workers for both). 2 s after `run_dag` returns, the bench sums the PSS of the
idle workers that ran the tasks: what they hold while the sweep's first trials start. Each task reports its own
VmHWM (the worker's peak so far) and how long the trim took.

Measured 2026-12-03 on the 2-core dev machine, quiet, --steps 3 (one run, both modes): each task peaked at
~3.4 GB VmHWM; afterwards the two idle workers held 4,876 MB of PSS kept, 1,289 MB trimmed (3.78x less: what is
left is torch's and timm's imported code and data, ~645 MB a worker), for 0.29-0.37 s of trimming per task. A
variant of run_dag with a fresh process per task (`max_calls=1`, not kept) held 0 MB but cost 4.4 s of worker
start and imports per stage (8 no-op stages, 2 at a time: 20.3 s against 7.1 s reused).

Usage: python -m bench.stage_workers [--steps 3] [--out bench/out]
"""

from __future__ import annotations

import argparse
import os
import time

import psutil

from bench._proc import write_report
from orchestrator import ray_backend


def _vm_hwm_mb() -> float:
    for line in open("/proc/self/status").read().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _heavy(task: dict) -> dict:
    """A stage's worth of allocation: a ViT-B/16 with Adam over a few batches, everything dropped before return."""
    import timm
    import torch

    from trainables.pages import trim_heap

    torch.set_num_threads(1)
    torch.manual_seed(task["seed"])
    net = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=10)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    for _ in range(task["steps"]):
        x, y = torch.randn(8, 3, 224, 224), torch.randint(0, 10, (8,))
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    del net, opt, x, y, loss
    t = time.perf_counter()
    if task["trim"]:
        trim_heap()
    return {"pid": os.getpid(), "vm_hwm_mb": _vm_hwm_mb(), "trim_s": time.perf_counter() - t}


def _pss_mb(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_full_info().pss
        except psutil.Error:  # exited: holds nothing
            pass
    return total / 2**20


def _run(tasks: dict[str, dict]) -> tuple[float, list[dict]]:
    results: list[dict] = []
    t = time.perf_counter()
    deps: dict[str, set[str]] = {k: set() for k in tasks}
    ray_backend.run_dag(tasks, deps, _heavy, 1, 0, lambda _, r, e: results.append(r), max_in_flight=2)
    return time.perf_counter() - t, results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args(argv)
    ray_backend.start(None, num_cpus=2)
    report: dict = {}
    try:
        for mode, trim in (("kept", False), ("trimmed", True)):
            tasks = {f"{mode}{i}": {"key": f"{mode}{i}", "seed": i, "steps": args.steps, "trim": trim} for i in (0, 1)}
            wall, results = _run(tasks)
            time.sleep(2.0)
            if any(r is None for r in results):
                raise RuntimeError(f"{mode}: a task failed")
            report[mode] = {
                "wall_s": round(wall, 1),
                "task_vm_hwm_mb": [round(r["vm_hwm_mb"]) for r in results],
                "trim_s": [round(r["trim_s"], 3) for r in results],
                "idle_workers": sum(psutil.pid_exists(r["pid"]) for r in results),
                "held_pss_mb": round(_pss_mb({r["pid"] for r in results})),
            }
    finally:
        ray_backend.stop()
    report["held_ratio_kept_over_trimmed"] = round(report["kept"]["held_pss_mb"] / report["trimmed"]["held_pss_mb"], 2)
    write_report(args.out, "stage_workers", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
