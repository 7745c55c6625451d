"""`--storage` as a location every node shares: a folder (local, NFS/EFS) or an object store URI (s3://bucket/prefix).

Why one module: the stage cache, Ray's storage path, the cells' error files, the Optuna journals and the tables
all live on `--storage`, and each used to turn it into a `Path`, which makes `s3://bucket/prefix` a folder named
`s3:` on each node's own disk. Here a location is a string: a folder path, or a URI that `pyarrow.fs` opens
(`FileSystem.from_uri`, which reads the usual AWS environment: keys or the instance profile, `AWS_ENDPOINT_URL`
for an S3-compatible server). Small files go through these helpers; Ray takes the URI itself.

What stays node-local with an object store: the driver's working folder (`local_dir`: logs and tables are
written there, then uploaded by `upload_tree`), the cache's read-through copies of entries (orchestrator/cache.py)
and an Optuna journal while its cell trains (orchestrator/search.py copies it to and from the bucket).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path

REMOTE_SCHEMES = ("s3", "gs", "hdfs")


def is_remote(location: str | os.PathLike) -> bool:
    text = str(location)
    return "://" in text and not text.startswith("file://")


def join(location: str | os.PathLike, *parts: str) -> str:
    """`location/part/...` for a folder or a URI (a folder comes back absolute: workers run in other folders)."""
    text = str(location)
    if is_remote(text):
        return "/".join([text.rstrip("/"), *parts])
    return str(Path(os.path.abspath(text.removeprefix("file://"))).joinpath(*parts))


def open_fs(location: str):
    """(pyarrow filesystem, path inside it) of a folder or URI."""
    import pyarrow.fs as pafs

    if not is_remote(location):
        return pafs.LocalFileSystem(), str(Path(location.removeprefix("file://")).resolve())
    return pafs.FileSystem.from_uri(location)


def bucket_missing(location: str) -> str | None:
    """None when the bucket of a URI exists and answers; else why not, in a few words (nothing is created)."""
    import pyarrow.fs as pafs

    try:
        fs, path = open_fs(location)
        info = fs.get_file_info(path.split("/", 1)[0])
    except (OSError, ValueError) as err:
        return f"the object store does not answer ({str(err).splitlines()[0][:120]})"
    if info.type == pafs.FileType.NotFound:
        return f"bucket {path.split('/', 1)[0]!r} does not exist (create it first)"
    return None


def write_text(location: str, text: str) -> None:
    fs, path = open_fs(location)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(text.encode())


def read_text(location: str) -> str | None:
    """The file's text, or None if it does not exist."""
    fs, path = open_fs(location)
    try:
        with fs.open_input_stream(path) as f:
            return f.read().decode(errors="replace")
    except (FileNotFoundError, OSError):
        return None


def exists(location: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = open_fs(location)
    return fs.get_file_info(path).type == pafs.FileType.File


def delete(location: str) -> None:
    fs, path = open_fs(location)
    try:
        fs.delete_file(path)
    except (FileNotFoundError, OSError):
        pass


def upload_tree(folder: Path, location: str) -> None:
    """Copy a local folder's files to `location` (an object store: the driver's tables and logs)."""
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            upload_file(p, join(location, *p.relative_to(folder).parts))


def upload_file(path: Path, location: str) -> None:
    """Copy one local file to `location` (replacing what is there: an object is written whole or not at all)."""
    fs, dst = open_fs(location)
    fs.create_dir(dst.rsplit("/", 1)[0], recursive=True)
    with open(path, "rb") as src, fs.open_output_stream(dst) as out:
        out.write(src.read())


def download(location: str, dest: Path) -> bool:
    """Copy one file to `dest`; False if it does not exist."""
    fs, path = open_fs(location)
    try:
        with fs.open_input_stream(path) as f:
            data = f.read()
    except (FileNotFoundError, OSError):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return True


def download_tree(location: str, dest: Path) -> None:
    """Copy every file under `location` into the folder `dest`."""
    for rel in listing(location):
        download(join(location, *rel.split("/")), dest / rel)


def local_dir(location: str) -> Path:
    """The driver's own folder for a storage: the folder itself, or for an object store a node-local working
    folder (logs and tables are written there and uploaded; the sweep's own MLflow store lives there)."""
    if not is_remote(location):
        return Path(location.removeprefix("file://")).resolve()
    tag = hashlib.sha1(location.encode()).hexdigest()[:10]
    return Path.home() / ".cache" / "robustify" / f"storage-{tag}"


def scratch(location: str, what: str) -> Path:
    """A node-local folder for read-through copies of what lives at an object-store `location`."""
    tag = hashlib.sha1(location.encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"robustify-{what}-{tag}"


def listing(location: str) -> list[str]:
    """Every file under `location`, relative to it (tests and the closing report list the bucket)."""
    import pyarrow.fs as pafs

    fs, base = open_fs(location)
    sel = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    return sorted(i.path[len(base) + 1 :] for i in fs.get_file_info(sel) if i.type == pafs.FileType.File)


# ------------------------------------------------------------------------------------------------ lock

# The holder refreshes its lock every lease / 4; a lock not refreshed for a lease lost its holder (a kill -9, a
# dead node), and the next producer waits that long before taking over.
LEASE_ENV = "ROBUSTIFY_S3_LOCK_LEASE_S"
LEASE_S = float(os.environ.get(LEASE_ENV, "60"))


@contextlib.contextmanager
def object_lock(location: str, poll_s: float = 1.0) -> Iterator[None]:
    """An exclusive lock for producers on any node, held on an S3 bucket (`s3://bucket/key`).

    Why: a file lock is only as shared as its filesystem; two nodes of a cluster with `s3://` storage would both
    compute the same missing stage. S3's conditional PUT (`If-None-Match: *`) creates the lock object only if it is
    absent, atomically. A thread refreshes it while held; a holder killed with -9 stops refreshing, and after
    a lease (LEASE_S, `ROBUSTIFY_S3_LOCK_LEASE_S`; measured by the object store's own clock: no skew between
    nodes) a waiter takes it over.
    """
    import boto3
    from botocore.exceptions import ClientError

    bucket, _, key = location.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3")  # the usual AWS environment, AWS_ENDPOINT_URL included
    body = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()
    while True:
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
            break
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise
        with contextlib.suppress(ClientError):
            head = s3.head_object(Bucket=bucket, Key=key)
            now = parsedate_to_datetime(head["ResponseMetadata"]["HTTPHeaders"]["date"])
            if (now - head["LastModified"]).total_seconds() > LEASE_S:
                s3.delete_object(Bucket=bucket, Key=key)  # its holder died
        time.sleep(poll_s)
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(LEASE_S / 4):
            with contextlib.suppress(ClientError):
                s3.put_object(Bucket=bucket, Key=key, Body=body)

    keeper = threading.Thread(target=refresh, name="object-lock", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()
        with contextlib.suppress(ClientError):
            s3.delete_object(Bucket=bucket, Key=key)
