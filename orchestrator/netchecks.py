"""Network-facing checks of the CLIs: a tracking URI (kind of store, well-formed, answering) and a TCP endpoint.

Read-only and short: a tracking server is asked `/health` and one experiment search, an address gets one TCP
connect, each with a few seconds' timeout, and only what the user named is contacted (orchestrator/checks.py
calls these before anything is created).
"""

from __future__ import annotations

import base64
import errno
import ipaddress
import json
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from orchestrator.inputs import BadInput, show, show_path

CONNECT_TIMEOUT_S = 3.0  # a reachability check; an answering server replies in milliseconds

# ------------------------------------------------------------------------------------------------ tracking URI

# The sweep's workers (Ray tasks, Train workers on any node) log over HTTP, so a sweep needs an MLflow server.
SWEEP_TRACKING = ("http", "https")
# aggregate only reads: a server, or the database behind one (with its SQLAlchemy driver importable).
READ_TRACKING = ("http", "https", "sqlite", "postgresql", "mysql", "mssql")
# SQLAlchemy's default driver per dialect, and the driver module each `dialect+driver` needs -> pip package
_DB_DRIVERS = {
    ("postgresql", ""): ("psycopg2", "psycopg2-binary"),
    ("postgresql", "psycopg2"): ("psycopg2", "psycopg2-binary"),
    ("postgresql", "psycopg"): ("psycopg", "psycopg[binary]"),
    ("postgresql", "pg8000"): ("pg8000", "pg8000"),
    ("mysql", ""): ("MySQLdb", "mysqlclient"),
    ("mysql", "mysqldb"): ("MySQLdb", "mysqlclient"),
    ("mysql", "pymysql"): ("pymysql", "pymysql"),
    ("mssql", ""): ("pyodbc", "pyodbc"),
    ("mssql", "pyodbc"): ("pyodbc", "pyodbc"),
    ("mssql", "pymssql"): ("pymssql", "pymssql"),
}
_DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
_HOST = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?")


@dataclass(frozen=True)
class Uri:
    """A parsed, well-formed URI: scheme (dialect for databases), driver, host, port, path; `shown` is safe to
    print (the password replaced by ***)."""

    scheme: str
    driver: str
    host: str
    port: int | None
    path: str
    shown: str


def _redacted(uri: str, parts: urllib.parse.SplitResult) -> str:
    if parts.password:
        uri = uri.replace(f":{parts.password}@", ":***@", 1)
    return show(uri, 120)


def parse_uri(uri: str, flag: str, kinds: tuple[str, ...], what: str) -> Uri:
    """Well-formedness only: scheme in `kinds`, a valid host and port; nothing is contacted.

    Raises:
        BadInput: naming the flag, the (password-redacted) value, and the allowed kinds.
    """
    allowed = ", ".join(f"{k}://" for k in kinds)
    if not uri or any(c.isspace() or not c.isprintable() for c in uri):
        raise BadInput(
            f"{flag} {show(uri, 120)}: expected {what} URI ({allowed}); it is empty or holds a space or "
            "a control character"
        )
    try:
        parts = urllib.parse.urlsplit(uri)
        port = parts.port  # ValueError: not a number, or outside 0-65535
        host = parts.hostname or ""
    except ValueError as err:
        raise BadInput(f"{flag} {show(uri, 120)}: malformed URI ({err})") from None
    shown = _redacted(uri, parts)
    scheme, _, driver = parts.scheme.lower().partition("+")
    if scheme not in kinds:
        raise BadInput(
            f"{flag} {shown}: expected {what} URI; allowed: {allowed}"
            + (" (a bare path is not a tracking URI)" if not parts.scheme else "")
        )
    if scheme == "sqlite":
        if not parts.path or parts.path == "/" or parts.netloc:
            raise BadInput(f"{flag} {shown}: expected sqlite:///path/to/mlflow.db")
        return Uri(scheme, driver, "", None, parts.path, shown)
    if not host:
        raise BadInput(f"{flag} {shown}: no host; expected {scheme}://host:port")
    if not valid_host(host):
        raise BadInput(f"{flag} {shown}: {show(host)} is not a valid host name or IP address")
    if port == 0:
        raise BadInput(f"{flag} {shown}: port 0 is not a port; allowed: 1-65535")
    if scheme in ("http", "https") and (parts.query or parts.fragment):
        raise BadInput(f"{flag} {shown}: a tracking server URI has no ?query or #fragment")
    default = {"http": 80, "https": 443}.get(scheme, _DB_PORTS.get(scheme))
    return Uri(scheme, driver, host, port or default, parts.path, shown)


def valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:  # a name; all digits and dots is a mistyped IPv4 address (no top-level domain is numeric)
        return bool(_HOST.fullmatch(host)) and not re.fullmatch(r"[0-9.]+", host)


def check_tracking_uri(
    uri: str,
    *,
    flag: str = "--tracking-uri",
    kinds: tuple[str, ...] = SWEEP_TRACKING,
    reach: bool = True,
    timeout_s: float = CONNECT_TIMEOUT_S,
) -> Uri:
    """A tracking URI of an allowed kind that (with `reach`) answers as an MLflow store, read-only.

    http(s): `/health` answers 200 and `/api/2.0/mlflow/experiments/search` answers JSON (it is MLflow, not some
    other web server). sqlite: the file exists (MLflow would create an empty database). Other databases: the
    SQLAlchemy driver is importable and host:port accepts a TCP connection.

    Raises:
        BadInput: naming the flag, the URI and what is wrong.
    """
    u = parse_uri(uri, flag, kinds, "an MLflow tracking")
    if u.scheme == "sqlite":
        if not Path(u.path).is_file():
            raise BadInput(
                f"{flag} {u.shown}: no SQLite store at {show_path(u.path)} (MLflow would create an empty one)"
            )
        return u
    if u.scheme in _DB_PORTS:
        module, package = _DB_DRIVERS.get((u.scheme, u.driver), (u.driver, u.driver))
        if not module or find_spec(module) is None:
            raise BadInput(
                f"{flag} {u.shown}: the {u.scheme} driver {show(module)} is not installed; "
                f"pip install {package} (or use the MLflow server's http:// URI)"
            )
    if reach:
        if u.scheme in ("http", "https"):
            _check_mlflow_http(uri, flag, u, timeout_s)
        else:
            check_tcp(u.host, u.port or 0, flag, u.shown, timeout_s)
    return u


def _check_mlflow_http(uri: str, flag: str, u: Uri, timeout_s: float) -> None:
    """GET /health, then one experiment search; user:password in the URI goes in a Basic auth header (urllib
    would otherwise take `user:pw@host` for a host name and look it up)."""
    parts = urllib.parse.urlsplit(uri)
    host = f"[{u.host}]" if ":" in u.host else u.host
    base = f"{u.scheme}://{host}:{u.port}{parts.path.rstrip('/')}"
    headers = {}
    if parts.username is not None:
        token = base64.b64encode(
            f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}".encode()
        ).decode()
        headers["Authorization"] = f"Basic {token}"

    def get(path: str) -> bytes:
        req = urllib.request.Request(f"{base}{path}", headers=headers)
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            if r.status != 200:
                raise urllib.error.HTTPError(req.full_url, r.status, "not 200", r.headers, None)
            return r.read(1 << 20)

    try:
        get("/health")
    except (OSError, ValueError) as err:  # refused, timed out, DNS, TLS, HTTP 4xx/5xx (HTTPError is an OSError)
        raise BadInput(
            f"{flag} {u.shown}: no MLflow server answers there ({_reason(err)}); start one, or omit "
            f"{flag} for a local server"
        ) from None
    try:  # read-only: the tracking store is left exactly as it was
        json.loads(get("/api/2.0/mlflow/experiments/search?max_results=1") or b"{}")
    except (OSError, ValueError) as err:
        raise BadInput(
            f"{flag} {u.shown}: the server answers /health but is not an MLflow tracking server ({_reason(err)})"
        ) from None


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code}"
    inner = getattr(err, "reason", err)
    if isinstance(inner, socket.timeout) or isinstance(err, TimeoutError):
        return "timed out"
    text = getattr(inner, "strerror", None) or str(inner) or type(inner).__name__
    return show(text, 60)[1:-1]


def check_tcp(host: str, port: int, flag: str, shown: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """host:port accepts a TCP connection within `timeout_s` (closed at once: nothing is sent)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or type(err).__name__)
        if getattr(err, "errno", None) == errno.ECONNREFUSED:
            reason = "connection refused"
        raise BadInput(f"{flag} {shown}: nothing answers at {host}:{port} ({reason})") from None


# ------------------------------------------------------------------------------------------------ cluster


def _auto_address() -> str | None:
    """What `ray.init(address="auto")` would join: $RAY_ADDRESS, else the last `ray start` on this machine."""
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env and env != "auto":
        return env
    tmp = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    try:
        return (Path(tmp) / "ray" / "ray_current_cluster").read_text().strip() or None
    except OSError:
        return None


def check_cluster(tracking_uri: str | None, address: str | None, wants_gpus: bool = False, peek=None) -> None:
    """A loopback tracking URI on a cluster that spans other hosts is refused before anything starts.

    Why refuse rather than rewrite: stage tasks and Train rank 0 log to MLflow from whatever node runs them, and a
    worker's 127.0.0.1 is its own host, where no server listens: the run would wait out the MLflow patience on
    every stage and lose every curve. Which address of the head the workers reach (and whether the server listens
    there) only the user knows, so the message names this host's cluster address as the likely one. The cluster
    spans other hosts when a node other than this one is up or starting, when the driver is a Ray Client (its
    tasks run on the cluster, not here), or when the sweep wants GPUs and no node up has one (they will come as
    other hosts: an autoscaling cluster starts GPU workers from zero). A single-host cluster keeps working.

    Args:
        peek: `address -> ray_backend.ClusterPeek` (tests pass their own; default: read the cluster's GCS).

    Raises:
        BadInput: one line naming the URI, what the cluster spans, and the address to use.
    """
    if not address or not tracking_uri or not _loopback(urllib.parse.urlsplit(tracking_uri).hostname or ""):
        return None
    if address.startswith("ray://"):
        spans, here = "runs this sweep's driver and workers on the cluster (Ray Client)", None
    else:
        if peek is None:
            from orchestrator import ray_backend

            peek = ray_backend.peek
        try:
            seen = peek(address)
        except ConnectionError as err:
            raise BadInput(f"--address {show(address)}: {err}") from None
        here = cluster_facing_ip(seen.gcs_address)
        others = [ip for ip in seen.node_ips if ip != here]
        if others:
            spans = f"has {len(seen.node_ips)} nodes ({', '.join(seen.node_ips[:4])})"
        elif seen.starting:
            spans = f"is starting {seen.starting} more node(s)"
        elif wants_gpus and not seen.gpus:
            spans = "has no GPU up, so the sweep's GPU work will run on other hosts"
        else:
            return None
    port = urllib.parse.urlsplit(tracking_uri).port or 5000
    hint = f"http://{here}:{port}" if here else "http://<head's cluster address>:PORT"
    raise BadInput(
        f"--tracking-uri {show(tracking_uri)}: a loopback address reaches only the host it is used on, and the "
        f"cluster at --address {show(address)} {spans}: workers there could not log; give the head's cluster "
        f"address (e.g. {hint}, with the server listening there) or omit --tracking-uri"
    )


def _loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def cluster_facing_ip(gcs_address: str) -> str | None:
    """This host's address on the route to the cluster's GCS (what other nodes reach it by), like Ray's own
    node-IP detection: a UDP "connect" sends nothing, it only picks the source address."""
    host, _, port = gcs_address.rpartition(":")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host.strip("[]"), int(port or 6379)))
            return s.getsockname()[0]
    except (OSError, ValueError):
        return None


def mlflow_host(address: str | None) -> str:
    """Where the sweep's own MLflow server listens: 127.0.0.1 on a local Ray; on a joined cluster this host's
    cluster-facing address, so that stage tasks and Train workers on other hosts reach it (and only the cluster's
    network does: not 0.0.0.0)."""
    if not address or address.startswith("ray://"):
        return "127.0.0.1"
    gcs = _auto_address() if address == "auto" else address
    return (cluster_facing_ip(gcs) if gcs else None) or "127.0.0.1"
