"""The content-addressed cache: atomic publish, one producer per entry, corruption detection."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

import pytest

from orchestrator.cache import MANIFEST, Cache, CacheCorrupt


def produce_slowly(folder: Path) -> dict:
    (folder / "count").write_text("x")
    time.sleep(0.5)
    (folder / "data.bin").write_bytes(b"abc" * 1000)
    return {"n": 1}


def _worker(root: str, counter: str) -> None:
    def produce(folder: Path) -> dict:
        with open(counter, "a") as f:
            f.write("+")
        return produce_slowly(folder)

    Cache(root).compute("stage", "k1", produce)


def test_publish_is_atomic_and_metadata_kept(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    assert not cache.has("s", "k")
    path, computed = cache.compute("s", "k", produce_slowly)
    assert computed and cache.has("s", "k") and (path / "data.bin").read_bytes() == b"abc" * 1000
    assert cache.meta("s", "k") == {"n": 1}
    _, computed = cache.compute("s", "k", produce_slowly)
    assert not computed
    assert not list((tmp_path / "cache" / ".staging").iterdir())


def test_failed_producer_leaves_nothing_visible(tmp_path: Path) -> None:
    cache = Cache(tmp_path)

    def boom(folder: Path) -> dict:
        (folder / "half").write_text("x")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        cache.compute("s", "k", boom)
    assert not cache.has("s", "k") and not (tmp_path / "cache" / "s" / "k").exists()


def test_two_processes_compute_once(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), str(counter))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert counter.read_text() == "+"
    assert Cache(tmp_path).has("stage", "k1")


def test_corrupt_entry_is_detected_removed_and_recomputed(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    path, _ = cache.compute("s", "k", produce_slowly)
    (path / "data.bin").write_bytes(b"tampered")
    fresh = Cache(tmp_path)  # verification happens once per process
    with pytest.raises(CacheCorrupt, match="checksum"):
        fresh.get("s", "k")
    assert not fresh.has("s", "k")
    _, computed = fresh.compute("s", "k", produce_slowly)
    assert computed and fresh.get("s", "k")


def test_manifest_lists_every_file(tmp_path: Path) -> None:
    path, _ = Cache(tmp_path).compute("s", "k", produce_slowly)
    manifest = json.loads((path / MANIFEST).read_text())
    assert set(manifest["files"]) == {"count", "data.bin"}


def test_object_store_through_pyarrow_fs(tmp_path: Path) -> None:
    """The remote branch (upload files, manifest last; download into a scratch mirror) on a pyarrow filesystem."""
    import pyarrow.fs as pafs

    bucket = tmp_path / "bucket"
    bucket.mkdir()
    writer = Cache(str(bucket), scratch=tmp_path / "w", filesystem=pafs.LocalFileSystem())
    writer.compute("s", "k", produce_slowly)
    assert (bucket / "cache" / "s" / "k" / MANIFEST).is_file()
    reader = Cache(str(bucket), scratch=tmp_path / "r", filesystem=pafs.LocalFileSystem())
    assert reader.has("s", "k")
    assert (reader.get("s", "k") / "data.bin").read_bytes() == b"abc" * 1000
    assert (tmp_path / "r" / "s" / "k" / "data.bin").is_file()
