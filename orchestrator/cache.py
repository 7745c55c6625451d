"""Content-addressed store of stage outputs on `--storage` (a local/NFS folder, or any `pyarrow.fs` URI: s3://...).

Layout: `<root>/cache/<kind>/<key>/` holding the stage's files plus `MANIFEST.json` (sha256 and size of every
file). An entry exists iff its manifest exists, and the manifest is the last thing published:

- local/NFS: the stage writes into `<root>/cache/.staging/<kind>-<key>-<uuid>/`, the manifest is written there,
  then the directory is renamed into place (atomic on one filesystem) — a reader never sees half an entry;
- object stores: files are uploaded first, the manifest last.

Two processes needing the same missing entry serialise on a lock (`<root>/cache/.locks/<kind>-<key>.lock`: a file
lock on a folder, a lock object on an s3:// bucket, orchestrator/storage.py);
the second finds the entry published and does no work. A corrupt entry (a checksum mismatch, a missing file) is
detected on read, removed, and recomputed by the caller: `get()` raises `CacheCorrupt`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock

MANIFEST = "MANIFEST.json"


class CacheCorrupt(RuntimeError):
    """An entry failed its checksum or lost a file; it has been removed and must be recomputed."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest_for(folder: Path, meta: dict | None) -> dict:
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            files[p.relative_to(folder).as_posix()] = {"sha256": _sha256(p), "size": p.stat().st_size}
    return {"files": files, "created": time.time(), "meta": meta or {}}


class Cache:
    """Stage cache rooted at a storage path or URI."""

    def __init__(self, storage: str | os.PathLike, scratch: str | os.PathLike | None = None, filesystem=None) -> None:
        """Args:
        storage: a folder, or a URI pyarrow understands (s3://bucket/prefix, gs://, hdfs://).
        scratch: local mirror for entries read from / written to a remote store.
        filesystem: an explicit `pyarrow.fs.FileSystem` (storage is then a path inside it).
        """
        storage = str(storage)
        self.uri = storage
        self.remote = filesystem is not None or ("://" in storage and not storage.startswith("file://"))
        if self.remote:
            import pyarrow.fs as pafs

            if filesystem is not None:
                self.fs, base = filesystem, storage
            else:
                self.fs, base = pafs.FileSystem.from_uri(storage)
            self.base = base.rstrip("/") + "/cache"
            tag = hashlib.sha1(storage.encode()).hexdigest()[:10]
            self.local = Path(scratch or Path.home() / ".cache" / "robustify" / tag)
        else:
            self.local = Path(storage.removeprefix("file://")).resolve() / "cache"
        self.local.mkdir(parents=True, exist_ok=True)
        self._verified: set[tuple[str, str]] = set()

    # --------------------------------------------------------------------------------------- queries

    def _entry(self, kind: str, key: str) -> Path:
        return self.local / kind / key

    def has(self, kind: str, key: str) -> bool:
        """Is the entry published? (Cheap: checks the manifest only.)"""
        if self.remote:
            import pyarrow.fs as pafs

            info = self.fs.get_file_info(f"{self.base}/{kind}/{key}/{MANIFEST}")
            return info.type == pafs.FileType.File
        return (self._entry(kind, key) / MANIFEST).is_file()

    def get(self, kind: str, key: str) -> Path:
        """Local path of a published entry, verified against its manifest once per process.

        Raises:
            KeyError: the entry does not exist.
            CacheCorrupt: the entry failed verification (it has been removed).
        """
        if not self.has(kind, key):
            raise KeyError(f"{kind}/{key}")
        if self.remote:
            self._download(kind, key)
        path = self._entry(kind, key)
        if (kind, key) not in self._verified:
            self._verify(kind, key, path)
            self._verified.add((kind, key))
        return path

    def _verify(self, kind: str, key: str, path: Path) -> None:
        try:
            manifest = json.loads((path / MANIFEST).read_text())
            for rel, info in manifest["files"].items():
                f = path / rel
                if not f.is_file() or f.stat().st_size != info["size"] or _sha256(f) != info["sha256"]:
                    raise CacheCorrupt(f"cache entry {kind}/{key}: {rel} does not match its checksum")
        except (OSError, ValueError, KeyError) as err:
            self.remove(kind, key)
            raise CacheCorrupt(f"cache entry {kind}/{key} is unreadable: {err}") from err
        except CacheCorrupt:
            self.remove(kind, key)
            raise

    def meta(self, kind: str, key: str) -> dict:
        return json.loads((self.get(kind, key) / MANIFEST).read_text()).get("meta", {})

    # --------------------------------------------------------------------------------------- writes

    @contextlib.contextmanager
    def lock(self, kind: str, key: str, timeout: float = -1) -> Iterator[None]:
        """Serialise producers of one entry across processes on this filesystem; on `s3://` storage across every
        node, with a lock object on the bucket (`storage.object_lock`). (gs://, hdfs://: node-local only.)"""
        if self.remote and self.uri.startswith("s3://"):
            from orchestrator.storage import object_lock

            with object_lock(f"{self.uri.rstrip('/')}/cache/.locks/{kind}-{key}.lock"):
                yield
            return
        locks = self.local / ".locks"
        locks.mkdir(exist_ok=True)
        with FileLock(str(locks / f"{kind}-{key}.lock"), timeout=timeout):
            yield

    def staging(self, kind: str, key: str) -> Path:
        d = self.local / ".staging" / f"{kind}-{key}-{uuid.uuid4().hex[:8]}"
        d.mkdir(parents=True)
        return d

    def publish(self, kind: str, key: str, folder: Path, meta: dict | None = None) -> Path:
        """Write the manifest, then make the entry visible atomically."""
        manifest = _manifest_for(folder, meta)
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        final = self._entry(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # a stale, manifest-less leftover of a crash
            shutil.rmtree(final, ignore_errors=True)
        os.replace(folder, final)
        if self.remote:
            self._upload(kind, key, final, manifest)
        self._verified.add((kind, key))
        return final

    def compute(self, kind: str, key: str, produce: Callable[[Path], dict | None]) -> tuple[Path, bool]:
        """Return the entry, producing it under the lock if missing or corrupt. Returns (path, computed)."""
        with self.lock(kind, key):
            if self.has(kind, key):
                try:
                    return self.get(kind, key), False
                except CacheCorrupt:
                    pass  # removed; fall through and recompute
            folder = self.staging(kind, key)
            try:
                meta = produce(folder)
                return self.publish(kind, key, folder, meta), True
            finally:
                shutil.rmtree(folder, ignore_errors=True)

    def remove(self, kind: str, key: str) -> None:
        shutil.rmtree(self._entry(kind, key), ignore_errors=True)
        self._verified.discard((kind, key))
        if self.remote:
            with contextlib.suppress(OSError):
                self.fs.delete_dir(f"{self.base}/{kind}/{key}")

    # --------------------------------------------------------------------------------------- remote

    def _upload(self, kind: str, key: str, folder: Path, manifest: dict) -> None:
        dst = f"{self.base}/{kind}/{key}"
        self.fs.create_dir(dst, recursive=True)
        for rel in manifest["files"]:
            with open(folder / rel, "rb") as src, self.fs.open_output_stream(f"{dst}/{rel}") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        with self.fs.open_output_stream(f"{dst}/{MANIFEST}") as out:  # last: publishes the entry
            out.write((folder / MANIFEST).read_bytes())

    def _download(self, kind: str, key: str) -> None:
        local = self._entry(kind, key)
        if (local / MANIFEST).is_file():
            return
        src = f"{self.base}/{kind}/{key}"
        tmp = self.staging(kind, key)
        with self.fs.open_input_stream(f"{src}/{MANIFEST}") as f:
            manifest = json.loads(f.read())
        for rel in manifest["files"]:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open_input_stream(f"{src}/{rel}") as f, open(tmp / rel, "wb") as out:
                shutil.copyfileobj(f, out, 1 << 20)
        (tmp / MANIFEST).write_text(json.dumps(manifest))
        local.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, local)
