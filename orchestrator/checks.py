"""Checks of everything a CLI is given besides the sweep file: flags, environment, storage, tracking URI, Ray.

Each check raises `BadInput` with one line for a person and *creates nothing*: a storage folder is judged by its
nearest existing ancestor, a tracking server by read-only requests (`/health`, one experiment search), a Ray
address by a TCP connect. Only when every check has passed does the CLI call `make_dir`, the first thing that
creates anything. Network checks touch only what the user named, with short timeouts, and never run on a dry run.
"""
from __future__ import annotations

import base64
import errno
import ipaddress
import json
import math
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Callable

from orchestrator.inputs import BadInput, show, show_path

CONNECT_TIMEOUT_S = 3.0  # a reachability check; an answering server replies in milliseconds

# ------------------------------------------------------------------------------------------------ numbers


def finite_number(text: str | float, what: str, *, low: float, high: float, low_open: bool = True,
                  integer: bool = False, sep: str = " ") -> float:
    """Parse `text` as a finite number in (low, high] (or [low, high] with low_open=False).

    Raises:
        BadInput: `{what}{sep}{value}` and the allowed range.
    """
    rng = f"{'(' if low_open else '['}{_num(low)}, {_num(high)}]"
    kind = "a whole number" if integer else "a number"
    try:
        value = int(str(text).strip()) if integer else float(str(text).strip())
    except ValueError:
        raise BadInput(f"{what}{sep}{show(text)} is not {kind}; allowed: {kind} in {rng}") from None
    if not math.isfinite(value) or value < low or (low_open and value == low) or value > high:
        raise BadInput(f"{what}{sep}{show(text)} is outside {rng}")
    return value


def _num(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() and abs(x) < 1e18 else f"{x:g}"


# ------------------------------------------------------------------------------------------------ environment


@dataclass(frozen=True)
class EnvRule:
    """What an environment variable we (or MLflow / Ray, on our behalf) read must hold."""

    check: Callable[[str, str], object]
    reader: str  # who reads it, for the message


def _int_in(low: int, high: int) -> Callable[[str, str], object]:
    return lambda name, raw: finite_number(raw, f"environment variable {name}", low=low, high=high,
                                           low_open=False, integer=True, sep="=")


def _positive(high: float) -> Callable[[str, str], object]:
    return lambda name, raw: finite_number(raw, f"environment variable {name}", low=0, high=high, sep="=")


def _flag(*allowed: str) -> Callable[[str, str], object]:
    def check(name: str, raw: str) -> str:
        if raw.strip().lower() not in allowed:
            raise BadInput(f"environment variable {name}={show(raw)} is not allowed; allowed: {', '.join(allowed)}")
        return raw
    return check


MIN_FREE_ENV = "ROBUSTIFY_MIN_FREE_MIB"  # free space a sweep needs on --storage before it starts (MiB)

ENV_RULES: dict[str, EnvRule] = {
    MIN_FREE_ENV: EnvRule(_int_in(0, 2**40), "the sweep's free-space check"),
    # MLflow reads these as int/float/bool on every request; a bad one is a traceback mid-sweep
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": EnvRule(_int_in(0, 10), "MLflow (at most 10)"),
    "MLFLOW_HTTP_REQUEST_TIMEOUT": EnvRule(_int_in(1, 86_400), "MLflow"),
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": EnvRule(_int_in(0, 120), "MLflow"),
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": EnvRule(lambda n, r: finite_number(
        r, f"environment variable {n}", low=0, high=3600, low_open=False, sep="="), "MLflow"),
    "MLFLOW_ENABLE_ASYNC_LOGGING": EnvRule(_flag("true", "false", "1", "0"), "MLflow"),
    # Ray Train reads these in every trial (ray_backend.TRAIN_ENV sets them unless the user did)
    "RAY_TRAIN_V2_ENABLED": EnvRule(_flag("1", "0", "true", "false"), "Ray Train"),
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": EnvRule(_positive(86_400), "Ray Train"),
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": EnvRule(_positive(3600), "Ray Train"),
    "RAY_DEDUP_LOGS": EnvRule(_flag("1", "0", "true", "false"), "Ray"),
}
MLFLOW_ENV = tuple(k for k in ENV_RULES if k.startswith("MLFLOW_"))


def check_env(names: tuple[str, ...] | None = None, environ: dict[str, str] | None = None) -> None:
    """Parse and range-check every environment variable in `names` (default: all of `ENV_RULES`) that is set.

    Raises:
        BadInput: the first bad one, naming who reads it.
    """
    env = os.environ if environ is None else environ
    for name in names or tuple(ENV_RULES):
        raw = env.get(name)
        if raw is None:
            continue
        try:
            ENV_RULES[name].check(name, raw)
        except BadInput as err:
            raise BadInput(f"{err} (read by {ENV_RULES[name].reader}; unset it for the default)") from None


def min_free_mib(environ: dict[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    return int(env.get(MIN_FREE_ENV, "256").strip())


# ------------------------------------------------------------------------------------------------ storage

REMOTE_STORAGE = ("s3", "gs", "hdfs")  # what `pyarrow.fs.FileSystem.from_uri` opens for orchestrator/cache.py
STORAGE_KINDS = "a local folder, file:///folder, s3://bucket/prefix, gs://bucket/prefix or hdfs://host/path"
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,254}")


def storage_path(storage: str) -> Path | None:
    """The local folder of a `--storage` value, or None for an object store (after `check_storage`)."""
    if "://" not in storage:
        return Path(storage)
    scheme, _, rest = storage.partition("://")
    return Path(rest) if scheme.lower() == "file" else None


def check_storage(storage: str, *, flag: str = "--storage", dry_run: bool = False,
                  need_free: bool = True) -> Path | None:
    """Judge a storage location without creating it.

    Local: the path, or its nearest existing ancestor, must be a folder (not /dev/null, a file, or a path under a
    file); for a run (not a dry run) that folder must be writable and (`need_free`) have `ROBUSTIFY_MIN_FREE_MIB`
    free.
    A URI: one of `REMOTE_STORAGE` with a bucket; nothing is contacted here.

    Returns:
        The local path, or None for an object store.

    Raises:
        BadInput: naming the flag, the value and what is allowed.
    """
    shown = f"{flag} {show(storage)}"
    if not storage or storage != storage.strip() or "\x00" in storage:
        raise BadInput(f"{shown}: expected {STORAGE_KINDS}")
    if "://" in storage:
        scheme, _, rest = storage.partition("://")
        if scheme.lower() == "file":
            if not rest.startswith("/"):
                raise BadInput(f"{shown}: a file:// URI needs an absolute path (file:///path/to/folder)")
        elif scheme.lower() not in REMOTE_STORAGE:
            raise BadInput(f"{shown}: unknown storage scheme {show(scheme + '://')}; allowed: {STORAGE_KINDS}")
        elif not _BUCKET.fullmatch(rest.partition("/")[0]):
            raise BadInput(f"{shown}: expected {scheme}://bucket/prefix (the bucket name is missing or malformed)")
        else:
            return None
    path = storage_path(storage)
    anchor = _existing_folder(path, shown)
    if not dry_run:
        if not os.access(anchor, os.W_OK | os.X_OK):
            raise BadInput(f"{shown}: {show_path(anchor)} is not writable; give a writable folder")
        if need_free:
            _check_free(anchor, shown)
    return path


def _existing_folder(path: Path, shown: str) -> Path:
    """`path` if it is a folder, else its nearest existing ancestor if that is a folder; else BadInput."""
    try:
        probe = Path(os.path.abspath(path))
        if probe.exists():
            if not probe.is_dir():
                raise BadInput(f"{shown}: {show_path(probe)} exists and is not a folder")
            return probe
        for parent in probe.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise BadInput(f"{shown}: {show_path(parent)} is a file, so nothing can be created under it")
                return parent
    except OSError as err:  # a name too long, a loop of symlinks, no permission to look
        raise BadInput(f"{shown}: unusable path ({err.strerror or type(err).__name__})") from None
    raise BadInput(f"{shown}: no existing folder above it")  # unreachable: "/" exists


def _check_free(anchor: Path, shown: str) -> None:
    need = min_free_mib()
    st = os.statvfs(anchor)
    free = st.f_bavail * st.f_frsize // 2**20
    if free < need:
        raise BadInput(f"{shown}: {free} MiB free, a sweep needs at least {need} MiB ({MIN_FREE_ENV}); "
                       "free space or choose another folder")


def make_dir(path: Path, flag: str) -> Path:
    """Create `path` (and missing parents) and prove it writable; on failure remove what was created here.

    The first creating step of a CLI, called only after every check passed.

    Raises:
        BadInput: the folder cannot be created or written (e.g. under /proc, a read-only mount, a full quota).
    """
    path = Path(os.path.abspath(path))
    missing = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except OSError as err:
        for p in missing:  # deepest first
            try:
                p.rmdir()
            except OSError:
                break
        raise BadInput(f"{flag} {show(str(path))}: cannot create or write it ({err.strerror or err}); "
                       "give a writable folder") from None
    return path


# ------------------------------------------------------------------------------------------------ tracking URI

# The sweep's workers (Ray tasks, Train workers on any node) log over HTTP, so a sweep needs an MLflow server.
SWEEP_TRACKING = ("http", "https")
# aggregate only reads: a server, or the database behind one (with its SQLAlchemy driver importable).
READ_TRACKING = ("http", "https", "sqlite", "postgresql", "mysql", "mssql")
# SQLAlchemy's default driver per dialect, and the driver module each `dialect+driver` needs -> pip package
_DB_DRIVERS = {("postgresql", ""): ("psycopg2", "psycopg2-binary"), ("postgresql", "psycopg2"): ("psycopg2",
               "psycopg2-binary"), ("postgresql", "psycopg"): ("psycopg", "psycopg[binary]"),
               ("postgresql", "pg8000"): ("pg8000", "pg8000"), ("mysql", ""): ("MySQLdb", "mysqlclient"),
               ("mysql", "mysqldb"): ("MySQLdb", "mysqlclient"), ("mysql", "pymysql"): ("pymysql", "pymysql"),
               ("mssql", ""): ("pyodbc", "pyodbc"), ("mssql", "pyodbc"): ("pyodbc", "pyodbc"),
               ("mssql", "pymssql"): ("pymssql", "pymssql")}
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
        raise BadInput(f"{flag} {show(uri, 120)}: expected {what} URI ({allowed}); it is empty or holds a space or "
                       "a control character")
    try:
        parts = urllib.parse.urlsplit(uri)
        port = parts.port  # ValueError: not a number, or outside 0-65535
        host = parts.hostname or ""
    except ValueError as err:
        raise BadInput(f"{flag} {show(uri, 120)}: malformed URI ({err})") from None
    shown = _redacted(uri, parts)
    scheme, _, driver = parts.scheme.lower().partition("+")
    if scheme not in kinds:
        raise BadInput(f"{flag} {shown}: expected {what} URI; allowed: {allowed}"
                       + (" (a bare path is not a tracking URI)" if not parts.scheme else ""))
    if scheme == "sqlite":
        if not parts.path or parts.path == "/" or parts.netloc:
            raise BadInput(f"{flag} {shown}: expected sqlite:///path/to/mlflow.db")
        return Uri(scheme, driver, "", None, parts.path, shown)
    if not host:
        raise BadInput(f"{flag} {shown}: no host; expected {scheme}://host:port")
    if not _valid_host(host):
        raise BadInput(f"{flag} {shown}: {show(host)} is not a valid host name or IP address")
    if port == 0:
        raise BadInput(f"{flag} {shown}: port 0 is not a port; allowed: 1-65535")
    if scheme in ("http", "https") and (parts.query or parts.fragment):
        raise BadInput(f"{flag} {shown}: a tracking server URI has no ?query or #fragment")
    default = {"http": 80, "https": 443}.get(scheme, _DB_PORTS.get(scheme))
    return Uri(scheme, driver, host, port or default, parts.path, shown)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:  # a name; all digits and dots is a mistyped IPv4 address (no top-level domain is numeric)
        return bool(_HOST.fullmatch(host)) and not re.fullmatch(r"[0-9.]+", host)


def check_tracking_uri(uri: str, *, flag: str = "--tracking-uri", kinds: tuple[str, ...] = SWEEP_TRACKING,
                       reach: bool = True, timeout_s: float = CONNECT_TIMEOUT_S) -> Uri:
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
            raise BadInput(f"{flag} {u.shown}: no SQLite store at {show_path(u.path)} (MLflow would create an "
                           "empty one)")
        return u
    if u.scheme in _DB_PORTS:
        module, package = _DB_DRIVERS.get((u.scheme, u.driver), (u.driver, u.driver))
        if not module or find_spec(module) is None:
            raise BadInput(f"{flag} {u.shown}: the {u.scheme} driver {show(module)} is not installed; "
                           f"pip install {package} (or use the MLflow server's http:// URI)")
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
        token = base64.b64encode(f"{urllib.parse.unquote(parts.username)}:"
                                 f"{urllib.parse.unquote(parts.password or '')}".encode()).decode()
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
        raise BadInput(f"{flag} {u.shown}: no MLflow server answers there ({_reason(err)}); start one, or omit "
                       f"{flag} for a local server") from None
    try:  # read-only: the tracking store is left exactly as it was
        json.loads(get("/api/2.0/mlflow/experiments/search?max_results=1") or b"{}")
    except (OSError, ValueError) as err:
        raise BadInput(f"{flag} {u.shown}: the server answers /health but is not an MLflow tracking server "
                       f"({_reason(err)})") from None


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


# ------------------------------------------------------------------------------------------------ Ray address

ADDRESS_KINDS = "auto, host:port (a cluster's GCS, e.g. 10.0.0.1:6379) or ray://host:port (Ray Client)"


def parse_ray_address(address: str, flag: str = "--address") -> tuple[str, int] | None:
    """Well-formedness of a Ray address; returns (host, port), or None for `auto`.

    Raises:
        BadInput: naming the value and the allowed forms.
    """
    if address == "auto":
        return None
    if not address or any(c.isspace() or not c.isprintable() for c in address):
        raise BadInput(f"{flag} {show(address)}: expected {ADDRESS_KINDS}")
    rest = address
    if "://" in address:
        scheme, _, rest = address.partition("://")
        if scheme != "ray":
            raise BadInput(f"{flag} {show(address)}: unknown scheme {show(scheme + '://')}; expected {ADDRESS_KINDS}")
    try:
        parts = urllib.parse.urlsplit(f"//{rest}")
        host, port = parts.hostname or "", parts.port
    except ValueError as err:
        raise BadInput(f"{flag} {show(address)}: malformed ({err}); expected {ADDRESS_KINDS}") from None
    if parts.path.strip("/") or parts.query or parts.fragment or parts.username:
        raise BadInput(f"{flag} {show(address)}: expected {ADDRESS_KINDS}")
    if not host or not _valid_host(host):
        raise BadInput(f"{flag} {show(address)}: no valid host; expected {ADDRESS_KINDS}")
    if not port:
        raise BadInput(f"{flag} {show(address)}: no port (1-65535); expected {ADDRESS_KINDS}")
    return host, port


def check_ray_address(address: str, *, flag: str = "--address", timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A well-formed address whose host:port accepts TCP; `auto` needs a cluster this machine knows of.

    Raises:
        BadInput: malformed, or nothing listening.
    """
    target = parse_ray_address(address, flag)
    if target is None:
        found = _auto_address()
        if found is None:
            raise BadInput(f"{flag} auto: no Ray cluster is running on this machine (start one with `ray start "
                           "--head`, or give host:port)")
        target = parse_ray_address(found, f"{flag} auto ->")
        if target is None:
            return
    check_tcp(*target, flag, show(address), timeout_s)


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


def check_cluster(tracking_uri: str | None, address: str | None) -> None:
    """Hook for checks of the tracking URI *against* the Ray address (both already valid on their own).

    Intentionally empty for now: the pending multi-host work will refuse here a loopback tracking URI when the
    sweep joins a multi-node cluster (workers on other nodes could not reach 127.0.0.1).
    """
    return None


def check_positive_seconds(value: float, flag: str, high: float = 7 * 86_400) -> float:
    """A finite, positive number of seconds up to `high` (a week by default)."""
    return finite_number(value, flag, low=0, high=high)

