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
