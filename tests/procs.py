"""Start CLI processes for tests and end everything they started, by PID.

Every process a test starts carries a unique marker in its environment; Ray's daemons (gcs_server, raylet,
dashboard, workers) inherit it, even after they are re-parented. `kill_marked` finds them in /proc and kills
them by PID, so a failed or killed sweep never leaves Ray behind for the next test.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
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


# A Ray driver in the pytest process leaves Ray's native threads behind after `ray.shutdown()` (the GCS client's
# io_service, gRPC's event engine and timers: /proc/self/task shows them for the rest of the session), and a
# process that exits with them running can crash in its C++ static destructors. CI's pytest once passed every test
# and then died with SIGSEGV at exit (stop 23: exit 139). So tests that need a driver run it in a child of their
# own: `run_in_child` below, or a `ray_cluster_process`; conftest's guard fails any test that starts one here.
RAY_NATIVE_THREADS = ("gcs_client_io", "grpc_global_tim", "event_engine", "client.poll", "global.accessor")


def native_threads() -> list[str]:
    """The names (comm, 15 characters) of this process's threads that only a Ray driver starts."""
    names = []
    for task in Path("/proc/self/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
        except OSError:
            continue
        if comm.startswith(RAY_NATIVE_THREADS):
            names.append(comm)
    return sorted(names)


_CHILD = (
    "import pickle, sys, importlib; sys.path.insert(0, sys.argv[1]); mod, fn = sys.argv[2].split(':'); "
    "args = pickle.load(open(sys.argv[3], 'rb')); out = getattr(importlib.import_module(mod), fn)(*args); "
    "pickle.dump(out, open(sys.argv[4], 'wb'))"
)


def run_in_child(target: str, *args: object, tmp: Path, timeout: float = 600, env: dict | None = None) -> object:
    """`module:function(*args)` in a fresh Python (its return value and arguments pickled through `tmp`), then
    everything it started killed by PID. Assertions inside it fail this test with the child's traceback."""
    mark = uuid.uuid4().hex
    tmp.mkdir(parents=True, exist_ok=True)
    arg_file, out_file = tmp / f"{mark}.args.pkl", tmp / f"{mark}.out.pkl"
    with open(arg_file, "wb") as f:
        pickle.dump(args, f)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(ROOT), target, str(arg_file), str(out_file)],
            cwd=ROOT,
            env=marked_env(mark, env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        kill_marked(mark)
    assert proc.returncode == 0, f"{target} failed in its child (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    with open(out_file, "rb") as f:
        return pickle.load(f)


_PEEK_LOOP = (
    "import json, sys, time\n"
    "from orchestrator.ray_backend import peek\n"
    "while True:\n"
    "    try:\n"
    "        seen = peek(sys.argv[1])\n"
    "        print(json.dumps([int(seen.gpus), seen.starting]), flush=True)\n"
    "    except ConnectionError:\n"
    "        pass\n"
    "    time.sleep(float(sys.argv[2]))\n"
)


@contextlib.contextmanager
def cluster_watch(address: str, t0: float, interval: float = 1.0) -> Iterator[list[tuple[float, int, int]]]:
    """Yields a list that fills with (seconds since `t0`, GPUs up, nodes starting) each time the cluster at
    `address` changes. `ray_backend.peek` opens a GCS client, whose threads would stay in pytest: a child polls."""
    mark = uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, "-c", _PEEK_LOOP, address, str(interval)],
        cwd=ROOT,
        env=marked_env(mark),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    events: list[tuple[float, int, int]] = []

    def read() -> None:
        last = None
        for line in proc.stdout:
            now = tuple(json.loads(line))
            if now != last:
                events.append((round(time.monotonic() - t0, 1), *now))
                last = now

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield events
    finally:
        proc.kill()
        kill_marked(mark)
        reader.join(timeout=10)


_CLUSTER = (
    "import json, sys; from ray.cluster_utils import Cluster; spec = json.loads(sys.argv[1]); "
    "c = Cluster(initialize_head=True, head_node_args=spec['head']); "
    "nodes = [c.add_node(**n) for n in spec['nodes']]; c.wait_for_nodes(); "
    "print(json.dumps({'address': c.address, 'head': c.head_node.node_id, "
    "'nodes': [n.node_id for n in nodes]}), flush=True); sys.stdin.read(); c.shutdown()"
)


@contextlib.contextmanager
def ray_cluster_process(head: dict, nodes: list[dict], timeout: float = 180) -> Iterator[dict]:
    """A `ray.cluster_utils.Cluster` (head + `nodes`) hosted by a child process, not by pytest: yields its address
    and node ids; on exit the child shuts the cluster down and anything left is killed by PID."""
    mark = uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLUSTER, json.dumps({"head": head, "nodes": nodes})],
        cwd=ROOT,
        env=marked_env(mark),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        assert line, f"the Ray cluster did not come up in {timeout:.0f} s (exit {proc.poll()})"
        yield json.loads(line)
    finally:
        try:
            proc.stdin.close()
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        kill_marked(mark)
