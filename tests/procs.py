"""Start CLI processes for tests and end everything they started, by PID.

Every process a test starts carries a unique marker in its environment; Ray's daemons (gcs_server, raylet,
dashboard, workers) inherit it, even after they are re-parented. `kill_marked` finds them in /proc and kills
them by PID, so a failed or killed sweep never leaves Ray behind for the next test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "ROBUSTIFY_TEST_MARK"


def marked_env(mark: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, **(extra or {}))
    env[MARK] = mark
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def pids_with_mark(mark: str) -> list[int]:
    needle = f"{MARK}={mark}".encode()
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if needle in (d / "environ").read_bytes().split(b"\0"):
                out.append(int(d.name))
        except OSError:
            continue
    return out


def kill_marked(mark: str, timeout: float = 10.0) -> list[int]:
    """SIGKILL every process carrying the mark; returns the PIDs that were still alive."""
    pids = pids_with_mark(mark)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pids_with_mark(mark):
        time.sleep(0.2)
    return pids


def run_cli(
    args: list[str], mark: str | None = None, timeout: float = 1200, env: dict | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    """Run `python -m <args>` to completion, then kill anything it left behind."""
    mark = mark or uuid.uuid4().hex
    try:
        return subprocess.run(
            [sys.executable, "-m", *args],
            cwd=cwd,
            env=marked_env(mark, env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        kill_marked(mark)


# `python -m <module> ...` with Ctrl-C's default handler: a process started from a background job of a
# non-interactive shell inherits SIGINT ignored (POSIX job control), and Python keeps ignoring it, so a test that
# sends SIGINT would depend on how pytest itself was launched.
DEFAULT_SIGINT = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
_INTERRUPTIBLE = (
    DEFAULT_SIGINT + "import runpy, sys; sys.argv = sys.argv[1:]; "
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
)


def start_cli(
    args: list[str], mark: str, env: dict | None = None, log: Path | None = None, interruptible: bool = False
) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, *(["-c", _INTERRUPTIBLE] if interruptible else ["-m"]), *args],
        cwd=ROOT,
        env=marked_env(mark, env),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
