"""Sharded outputs (trainables/shards.py): the same numbers as an in-memory pass, memory-mapped reads, and a killed
extraction that resumes at its next unfinished shard (a real SIGKILL of a real process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables import shards
from trainables.common import apply_chunked, serial_map
from trainables.shards import Chain, Picked, Rows, load_tree, store_tree

ROOT = Path(__file__).resolve().parents[1]


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5)).eval()


def _images(*lead: int) -> torch.Tensor:
    return torch.randint(0, 256, (*lead, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


@torch.no_grad()
def test_sharded_tree_equals_an_in_memory_pass(tmp_path: Path) -> None:
    net = _net()
    tree = {"train": {"x": _images(1100), "y": torch.arange(1100)}, "eval": {"c": {"x": _images(3, 2, 200)}}}
    n = store_tree(net, tree, tmp_path / "f", None, "float32")
    back = load_tree(tmp_path / "f")
    assert n == 2 + 2  # 1100 rows and 1200 C rows (3 x 2 x 200, flattened), each in shards of 1024
    assert torch.equal(back["train"]["x"], apply_chunked(net, tree["train"]["x"], item_dims=3))
    assert torch.equal(back["eval"]["c"]["x"], apply_chunked(net, tree["eval"]["c"]["x"], item_dims=3))
    assert back["eval"]["c"]["x"].shape == (3, 2, 200, 5) and torch.equal(back["train"]["y"], torch.arange(1100))
    assert isinstance(np.load(tmp_path / "f" / "train" / "x.npy", mmap_mode="r"), np.memmap)
    assert not (tmp_path / "f" / ".shards").exists()  # no scratch given: the shards are removed once assembled


@torch.no_grad()
def test_fp16_storage_and_lazy_rows(tmp_path: Path) -> None:
    net = _net()
    x = _images(600)
    store_tree(net, {"x": x}, tmp_path / "f", tmp_path / "work", "float16")
    stored = load_tree(tmp_path / "f")["x"]
    assert stored.dtype == torch.float16
    full = apply_chunked(net, x)
    assert torch.allclose(stored.float(), full, atol=2e-2, rtol=1e-2)
    idx = torch.tensor([5, 2, 599, 0])
    rows = Rows(stored, idx)
    assert len(rows) == 4 and rows[torch.tensor([1, 3])].dtype == torch.float32
    assert torch.equal(rows[1:3], stored[idx[1:3]].float())
    chain = Chain(Rows(stored, idx), Rows(stored, idx.flip(0)))
    assert torch.equal(chain[2:6], torch.cat([rows[2:4], Rows(stored, idx.flip(0))[0:2]]))


def test_a_parallel_map_gets_the_shards_of_large_stages_only(tmp_path: Path, monkeypatch) -> None:
    """The context's map is handed every unfinished shard of every array in one stream, when the stage is large
    enough to be worth shipping (`MAP_MIN_ROWS`); a small one computes them itself (a shard task costs seconds)."""
    seen: list[int] = []

    def recording_map(compute, items, write) -> None:
        items = list(items)
        seen.append(len(items))
        serial_map(compute, items, write)

    tree = {"a": _images(1100), "b": {"c": _images(2, 300)}}
    assert store_tree(_net(), tree, tmp_path / "small", None, "float32", recording_map) == 3 and seen == []
    monkeypatch.setattr(shards, "MAP_MIN_ROWS", 1500)
    assert store_tree(_net(), tree, tmp_path / "large", None, "float32", recording_map) == 3 and seen == [3]
    for f in ("a.npy", "b/c.npy"):
        assert (tmp_path / "small" / f).read_bytes() == (tmp_path / "large" / f).read_bytes()


_SLOW_EXTRACTION = """
import sys, time, torch
from pathlib import Path
from trainables.shards import store_tree
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 5)).eval()
def slow(x):
    time.sleep(float(sys.argv[2]))
    return net(x)
x = torch.randint(0, 256, (2048, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
with torch.no_grad():
    print(store_tree(slow, {"x": x}, Path(sys.argv[1]) / "out", Path(sys.argv[1]) / "work", "float32"))
"""


def _extraction(folder: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = textwrap.dedent(_SLOW_EXTRACTION)
    return subprocess.Popen(
        [sys.executable, "-c", code, str(folder), str(delay)], env=env, stdout=subprocess.PIPE, text=True
    )


@pytest.mark.timeout(180)
def test_killed_extraction_resumes_at_the_next_unfinished_shard(tmp_path: Path) -> None:
    """2048 rows = 2 shards of 1024 (4 batches each, 0.5 s per batch): SIGKILL once the first shard is on disk;
    the rerun computes only the second, and the result equals an uninterrupted pass."""
    proc = _extraction(tmp_path / "a", 0.5)
    first = tmp_path / "a" / "work" / "x" / "00000.npy"
    deadline = time.monotonic() + 120
    while not first.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.is_file() and not (tmp_path / "a" / "work" / "x" / "00001.npy").is_file()
    resumed = _extraction(tmp_path / "a", 0.0)
    assert resumed.communicate(timeout=120)[0].split()[-1] == "1"  # one shard computed: the unfinished one
    with torch.no_grad():  # the same network and images as the script's, in one uninterrupted pass
        whole = apply_chunked(_net(), _images(2048))
    assert torch.equal(load_tree(tmp_path / "a" / "out")["x"], whole)


def test_picked_rows_are_the_concatenated_copy() -> None:
    """A teacher's mixture as index views reads exactly what the copied mixture would, by index tensor or slice,
    in the sources' dtype."""
    a, b = _images(30), _images(12)
    ia, ib = torch.randperm(30)[:20], torch.tensor([3, 3, 0, 11, 7])
    copy = torch.cat([a[ia], b[ib]])
    view = Picked((a, ia), (b, ib))
    assert len(view) == 25 and view.dtype == torch.uint8
    idx = torch.randperm(25)[:9]
    assert torch.equal(view[idx], copy[idx]) and torch.equal(view[18:23], copy[18:23])
    assert torch.equal(view[torch.arange(25)], copy)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_assembled_set_is_the_npy_a_memory_map_would_write_and_checks_its_rows(tmp_path: Path, dtype: str) -> None:
    """`assemble` streams the shards into the `.npy` (no map of the whole set in the process's RSS); its bytes are
    those of `open_memmap` + copy, and shards that do not fill the set's rows are refused, not padded."""
    work = tmp_path / "w"
    work.mkdir()
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((n, 2, 3)).astype(np.float32) for n in (5, 3, 4)]
    for i, a in enumerate(parts):
        np.save(work / f"{i:06d}.npy", a)
    shards.assemble(work, tmp_path / "new.npy", (2, 6), dtype)
    ref = np.lib.format.open_memmap(tmp_path / "ref.npy", mode="w+", dtype=shards.DTYPES[dtype], shape=(2, 6, 2, 3))
    ref.reshape(-1, 2, 3)[:] = np.concatenate(parts)
    ref.flush()
    del ref
    assert (tmp_path / "new.npy").read_bytes() == (tmp_path / "ref.npy").read_bytes()
    with pytest.raises(ValueError, match="shards hold 12 rows, the set needs 13"):
        shards.assemble(work, tmp_path / "short.npy", (13,), dtype)
    assert not (tmp_path / "short.npy").exists()


def _rss_file_mb() -> float:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("RssFile:"))
    return int(line.split()[1]) / 1024


def test_file_backed_sets_are_saved_streamed_and_their_pages_released(tmp_path: Path, monkeypatch) -> None:
    """`common.save` writes a file-backed set as its own .npy through a bounded window (the set's pages do not
    stay in the process, as torch.save's would), loads back byte-equal, and leaves in-memory tensors in the
    pickle: such a file is byte-identical to torch.save's (the local profile's cache entries do not change)."""
    from trainables import common, pages

    monkeypatch.setattr(common, "STREAM_BYTES", 2**20)
    monkeypatch.setattr(pages, "STREAM_CHUNK_BYTES", 2**20)
    n = 200  # 200 MB of uint8 rows of 1 MB
    src = np.memmap(tmp_path / "set.u8", dtype=np.uint8, mode="w+", shape=(n, 2**20))
    for i in range(n):
        src[i] = i % 251
        pages.release(src[i])  # the reader's writes leave nothing behind either
    src.flush()
    small = torch.arange(10)
    base = _rss_file_mb()
    big = torch.from_numpy(np.memmap(tmp_path / "set.u8", dtype=np.uint8, mode="c", shape=(n, 2**20)))
    common.save({"a": {"x": big, "y": small}, "name": "set"}, tmp_path / "e.pt")
    assert _rss_file_mb() - base < 40, "the saved set's pages stayed mapped in this process"
    assert (tmp_path / "e.arrays" / "a" / "x.npy").is_file()
    back = common.load(tmp_path / "e.pt")
    assert torch.equal(back["a"]["y"], small) and back["name"] == "set"
    assert back["a"]["x"].shape == big.shape and torch.equal(back["a"]["x"][::37], big[::37])
    assert np.array_equal(np.load(tmp_path / "e.arrays" / "a" / "x.npy", mmap_mode="r")[:, ::4096], src[:, ::4096])
    plain = {"x": torch.ones(3, 4), "y": {"z": torch.arange(5)}}
    (tmp_path / "ours").mkdir()
    (tmp_path / "torch").mkdir()
    common.save(plain, tmp_path / "ours" / "p.pt")
    torch.save(plain, tmp_path / "torch" / "p.pt")
    assert (tmp_path / "ours" / "p.pt").read_bytes() == (tmp_path / "torch" / "p.pt").read_bytes()
    assert not pages.release(plain["x"])  # anonymous memory is never advised


def _rss_anon_mb() -> float:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("RssAnon:"))
    return int(line.split()[1]) / 1024


def test_trim_heap_gives_back_what_a_finished_stage_freed() -> None:
    """What a reused Ray worker keeps after its stage: freed blocks in the middle of the heap, pinned by a few that
    are still alive (a stage's small survivors), which glibc never returns on its own. `trim_heap` (called as
    every stage task ends) hands them back; the live ones stay intact."""
    from trainables import pages

    if getattr(pages._libc, "malloc_trim", None) is None:
        pytest.skip("not glibc")
    blocks = [bytearray(b"x" * 16384) for _ in range(20_000)]  # ~330 MB of 16 kB blocks: heap, not mmap
    survivors = blocks[::16]
    del blocks
    held = _rss_anon_mb()
    assert pages.trim_heap()
    assert held - _rss_anon_mb() > 200, f"trim gave back {held - _rss_anon_mb():.0f} MB of ~310 MB freed"
    assert all(b == b"x" * 16384 for b in survivors[::50])
