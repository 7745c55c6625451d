"""Checks of everything a CLI is given besides the sweep file: flags, environment, storage, tracking URI, Ray.

Each check raises `BadInput` with one line for a person and *creates nothing*: a storage folder is judged by its
nearest existing ancestor, a tracking server by read-only requests (`/health`, one experiment search), a Ray
address by a TCP connect. Only when every check has passed does the CLI call `make_dir`, the first thing that
creates anything. Network checks touch only what the user named, with short timeouts, and never run on a dry run.
"""

from __future__ import annotations

import math
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.inputs import BadInput, show, show_path

# The CLIs import every check from here; the network-facing ones live in orchestrator/netchecks.py.
from orchestrator.netchecks import (  # noqa: F401 - re-exported
    CONNECT_TIMEOUT_S,
    READ_TRACKING,
    SWEEP_TRACKING,
    _auto_address,
    check_cluster,
    check_tcp,
    check_tracking_uri,
    cluster_facing_ip,
    mlflow_host,
    parse_uri,
    valid_host,
)

# ------------------------------------------------------------------------------------------------ numbers


def finite_number(
    text: str | float,
    what: str,
    *,
    low: float,
    high: float,
    low_open: bool = True,
    integer: bool = False,
    sep: str = " ",
) -> float:
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
    return lambda name, raw: finite_number(
        raw, f"environment variable {name}", low=low, high=high, low_open=False, integer=True, sep="="
    )


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
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": EnvRule(
        lambda n, r: finite_number(r, f"environment variable {n}", low=0, high=3600, low_open=False, sep="="), "MLflow"
    ),
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


def check_storage(
    storage: str, *, flag: str = "--storage", dry_run: bool = False, need_free: bool = True
) -> Path | None:
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
        raise BadInput(
            f"{shown}: {free} MiB free, a sweep needs at least {need} MiB ({MIN_FREE_ENV}); "
            "free space or choose another folder"
        )


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
        raise BadInput(
            f"{flag} {show(str(path))}: cannot create or write it ({err.strerror or err}); give a writable folder"
        ) from None
    return path


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
    if not host or not valid_host(host):
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
            raise BadInput(
                f"{flag} auto: no Ray cluster is running on this machine (start one with `ray start "
                "--head`, or give host:port)"
            )
        target = parse_ray_address(found, f"{flag} auto ->")
        if target is None:
            return
    check_tcp(*target, flag, show(address), timeout_s)


def check_positive_seconds(value: float, flag: str, high: float = 7 * 86_400) -> float:
    """A finite, positive number of seconds up to `high` (a week by default)."""
    return finite_number(value, flag, low=0, high=high)
