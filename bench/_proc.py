"""Run a CLI as a user would and measure it: wall time and the peak memory of its whole process tree.

Peak memory is the maximum over time of the summed RSS of every process carrying this run's marker in its
environment (the CLI, Ray's daemons and workers, the MLflow server), sampled every 0.5 s from /proc.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "ROBUSTIFY_BENCH_MARK"


def _marked(mark: str) -> list[int]:
    needle = f"{MARK}={mark}".encode()
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if needle in (d / "environ").read_bytes().split(b"\0"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Measured:
    wall_s: float
    peak_rss_gb: float
    returncode: int
    stdout: str
    stderr: str


def run_measured(args: list[str], env: dict[str, str] | None = None, timeout: float = 7200) -> Measured:
    mark = uuid.uuid4().hex
    full_env = dict(os.environ, **(env or {}), **{MARK: mark, "PYTHONUNBUFFERED": "1"})
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, sum(_rss_bytes(p) for p in _marked(mark)))
            stop.wait(0.5)

    t = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    t.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
        )
    finally:
        wall = time.perf_counter() - t0
        stop.set()
        t.join()
        for pid in _marked(mark):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return Measured(wall, peak / 2**30, proc.returncode, proc.stdout, proc.stderr)


def write_report(out_dir: str, name: str, report: dict) -> None:
    """Write a benchmark's figures to <out_dir>/<name>.json (relative to the repo) and print them."""
    out = ROOT / out_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
