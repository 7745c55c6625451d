"""The local MLflow tracking server as a process: started, awaited and stopped by PID.

Kept apart from `orchestrator.tracking` (the MLflow adapter) so that the sweep can launch the server before it
imports MLflow, torch and Ray: the server boots while they load.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# Where `robustify ui` serves a finished local store by default. A sweep's own server listens on a free port and
# stops with the sweep, so the report's run links point here, with the command that serves them (runner.py).
UI_PORT = 5000


class TrackingUnavailable(RuntimeError):
    """The tracking server did not answer within the configured patience."""


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_healthy(uri: str, timeout_s: float = 60.0) -> bool:
    """Poll `<uri>/health` until it answers 200 or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


@dataclass
class LocalMlflowServer:
    """A real `mlflow server` on `host` (127.0.0.1; a sweep joining a cluster passes this host's cluster address,
    so workers on other hosts reach it) over SQLite + an artifacts folder under `root`.

    Started as its own process group so `stop()` ends gunicorn/uvicorn children too (by PID, never by name).
    One worker: several workers on SQLite risk "database is locked". Job execution is off: otherwise MLflow 3
    starts seven job-runner processes we do not need.
    """

    root: Path
    port: int = 0
    host: str = "127.0.0.1"
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 90.0) -> LocalMlflowServer:
        return self.launch().wait(timeout_s)

    def launch(self) -> LocalMlflowServer:
        """Start the process and return at once; `wait()` for it (the sweep boots Ray meanwhile)."""
        self.root = Path(self.root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "artifacts").mkdir(exist_ok=True)
        self.port = self.port or _free_port(self.host)
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        if self.host != "127.0.0.1":  # MLflow's middleware otherwise accepts only localhost and private ranges
            cmd += [
                "--allowed-hosts",
                f"{self.host}:{self.port},{self.host},localhost:{self.port},127.0.0.1:{self.port}",
            ]
        log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        return self

    def wait(self, timeout_s: float = 90.0) -> LocalMlflowServer:
        if not wait_healthy(self.uri, timeout_s):
            self.stop()
            tail = (self.root / "server.log").read_text(errors="replace")[-400:]
            raise TrackingUnavailable(f"local MLflow server did not become healthy on {self.uri}: {tail}")
        return self

    def stop(self) -> None:
        """End the server's whole process group (the server and its uvicorn workers), not just its leader: a
        worker that outlives `stop()` would hold the port and show up as a process left behind."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        _wait_group_gone(pgid, timeout_s=10.0)
        self.proc = None

    def __enter__(self) -> LocalMlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    """Wait until no process of group `pgid` is left; SIGKILL what remains after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            return
        time.sleep(0.1)
