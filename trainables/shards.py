"""Arrays too large for memory: computed shard by shard, resumable, and read back as memory maps.

Why: the paper profile's features (CLIP ViT-B/16: 197 x 768 values per image) and teacher logits over ImageNet are
terabytes; no process may hold a whole set. A stage that maps a frozen network over images (`extract_features`,
`teacher_targets`) therefore
1. writes its output in shards of `SHARD_ROWS` rows into a work folder, each shard written under a temporary name
   and renamed when complete, so a shard file that exists is whole: a killed run, rerun with the same work folder
   (the worker's `StageContext.scratch`, kept per stage key until the entry is published), skips the finished
   shards and resumes at the next unfinished one;
   Who computes the shards is the stage context's `map_shards` (trainables/common.py `ShardMap`): one after
   another in the stage's process by default, or, under Ray, shard tasks spread over the cluster
   (orchestrator/ray_backend.py `shard_map`), which hand each result back to the stage's process to be written
   here; either way a shard is written whole or not at all, so resuming works the same;
2. assembles the shards into one `.npy` per array in the stage's output folder, copying shard by shard;
3. is read back with `load_tree`: every array a copy-on-write memory map, so a reader touches (and the kernel
   pages in) only the rows it indexes.
Shard boundaries are multiples of the inference batch, so every row is computed in the same batch as an unsharded
pass: the numbers are the same. Storage dtype: fp16 on ImageNet, fp32 on the embedded data (bit-identical results).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from trainables import pages
from trainables.common import ARRAY, ShardMap, apply_chunked, load, save, serial_map
from trainables.footprint import INFER_BATCH, SHARD_ROWS

# Fewer unfinished rows than this in a stage: its shards are computed here even when the context offers a parallel
# map. Why: a shard task costs seconds before it computes anything (a worker process that imports torch and the
# model code, a copy of the network through the object store), more than such a pass takes on one CPU; measured
# on the micro smoke sweep (5 shards of <= 200 rows): extract_features 2.7 s here vs 17.9 s as shard tasks. The
# local profile stays under it (serial, as before); ImageNet is hundreds of times over.
MAP_MIN_ROWS = 8 * SHARD_ROWS
META = "meta.pt"
DTYPES = {"float16": np.float16, "float32": np.float32}


@dataclass(frozen=True)
class ShardFn:
    """What computes one shard: `fn` over its rows in inference batches, cast to the storage dtype.

    Why an object that carries its batch size and dtype: a parallel `map_shards` runs it in another process,
    maybe on another host, whose module globals are not this one's; pickled with it, they make every shard the
    same computation as the serial path's, so the rows come out bit-identical whichever mapper ran them.
    """

    fn: Callable[[Tensor], Tensor]
    dtype: str
    batch: int = INFER_BATCH

    def __call__(self, rows: Tensor, device: str | None = None) -> np.ndarray:
        """The shard's output rows. `device` ("cuda" in a shard task that holds a GPU): the network moves there for
        this shard and back to the CPU after it, so an idle worker process keeps no GPU memory."""
        net = getattr(self.fn, "__self__", self.fn)  # a bound method (`student.encode`) or the module itself
        if device is None or not isinstance(net, torch.nn.Module):
            y = apply_chunked(self.fn, rows, self.batch)
        else:
            net.to(device)
            try:
                y = apply_chunked(self.fn, rows, self.batch, device=torch.device(device))
            finally:
                net.to("cpu")
        return y.numpy().astype(DTYPES[self.dtype], copy=False)


def shard_rows() -> int:
    """Rows per shard: `SHARD_ROWS` rounded to whole inference batches (so every row is computed in the same batch
    as in an unsharded pass)."""
    return max(INFER_BATCH, SHARD_ROWS // INFER_BATCH * INFER_BATCH)


def write_shard(path: Path, y: np.ndarray) -> None:
    """Write under a temporary name, then rename: a shard file that exists is whole."""
    tmp = path.parent / f".{path.stem}.tmp.npy"
    np.save(tmp, y)
    os.replace(tmp, path)


def assemble(work: Path, dest: Path, lead: tuple[int, ...], dtype: str) -> None:
    """The shards of `work`, in order, into one `.npy` of shape lead + item (an empty set: an empty array)."""
    shards = sorted(work.glob("[0-9]*.npy"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not shards:
        np.save(dest, np.empty((0,), DTYPES[dtype]))
        return
    # Streamed: the header, then each shard's bytes appended in order. Not through a memory map of `dest`: its
    # dirty pages stay in this process's RSS until unmapped, so the peak grew with the whole set (bench/data_plane).
    dt = np.dtype(DTYPES[dtype])
    item = np.load(shards[0], mmap_mode="r").shape[1:]
    with open(dest, "wb") as f:
        pages.write_npy_header(f, dt, (*lead, *item))
        rows = 0
        for s in shards:
            part = np.load(s, mmap_mode="r")
            np.ascontiguousarray(part, dtype=dt).tofile(f)  # as np.save writes: no bytes copy of the shard
            rows += len(part)
    if rows != math.prod(lead):  # a memory map would have refused the copy; a stream must say it itself
        dest.unlink()
        raise ValueError(f"{work}: shards hold {rows} rows, the set needs {math.prod(lead)} ({lead})")


def _leaves(tree: dict[str, Any], leaf: str = "") -> tuple[dict[str, Any], list[tuple[str, Tensor]]]:
    """The tree with every uint8 image tensor replaced by its placeholder, and those tensors by name."""
    meta: dict[str, Any] = {}
    found: list[tuple[str, Tensor]] = []
    for k, v in tree.items():
        name = f"{leaf}/{k}" if leaf else str(k)
        if isinstance(v, dict):
            meta[k], more = _leaves(v, name)
            found += more
        elif torch.is_tensor(v) and v.dtype == torch.uint8:
            meta[k] = {ARRAY: name}
            found.append((name, v))
        else:
            meta[k] = v
    return meta, found


def _unfinished(arrays: list[tuple[str, Tensor]], work: Path, item_dims: int) -> Iterator[tuple[Path, Tensor]]:
    """(shard file, its input rows) for every shard not yet on disk: the rows are a view of the (memory-mapped)
    input, read only when the mapper computes or ships them."""
    rows = shard_rows()
    for name, x in arrays:
        (work / name).mkdir(parents=True, exist_ok=True)
        flat = x.reshape(-1, *x.shape[-item_dims:])
        for i, start in enumerate(range(0, len(flat), rows)):
            f = work / name / f"{i:05d}.npy"
            if not f.is_file():
                yield f, flat[start : start + rows]


def encode_tree(
    fn: Callable[[Tensor], Tensor], tree: dict[str, Any], out: Path, work: Path, dtype: str, map_shards: ShardMap
) -> tuple[dict[str, Any], int]:
    """Every uint8 image tensor in a (nested) bundle dict replaced by fn's output, stored as an array of `out`;
    everything else (labels, names, class subsets) kept. The unfinished shards of ALL arrays go to `map_shards` as
    one stream (a parallel mapper keeps every worker busy across arrays; under `MAP_MIN_ROWS` rows in all, the
    serial one), then each array is assembled.
    Returns (the tree with placeholders, shards computed now)."""
    meta, arrays = _leaves(tree)
    computed = 0

    def write(path: Path, y: np.ndarray) -> None:
        nonlocal computed
        write_shard(path, y)
        pages.release(inputs.pop(path))  # done with these input rows: their map pages leave this process
        computed += 1

    todo = list(_unfinished(arrays, work, 3))  # views: no row is read yet
    inputs = dict(todo)
    mapper = map_shards if sum(len(x) for _, x in todo) >= MAP_MIN_ROWS else serial_map
    mapper(ShardFn(fn, dtype), todo, write)
    for name, x in arrays:
        assemble(work / name, out / f"{name}.npy", tuple(x.shape[:-3]), dtype)
    return meta, computed


def store_tree(
    fn: Callable[[Tensor], Tensor],
    tree: dict[str, Any],
    out: Path,
    work: Path | None,
    dtype: str,
    map_shards: ShardMap = serial_map,
) -> int:
    """`encode_tree` into `out` plus its `meta.pt`; the shards go to `work` (None: a folder inside `out`, removed
    once assembled), computed by `map_shards` (`StageContext.map_shards`). Returns the shards computed now."""
    scratch = work if work is not None else out / ".shards"
    meta, computed = encode_tree(fn, tree, out, scratch, dtype, map_shards)
    save(meta, out / META)
    if work is None:
        shutil.rmtree(scratch, ignore_errors=True)
    return computed


def load_tree(folder: Path) -> dict[str, Any]:
    """The tree `store_tree` wrote, every array a copy-on-write memory map (read lazily, never whole)."""
    return load(folder / META)


class Rows:
    """Rows `index` of a (memory-mapped) tensor, gathered only when indexed and returned as fp32: a data fraction
    of the features is never copied whole into memory."""

    def __init__(self, base: Tensor, index: Tensor) -> None:
        self.base, self.index = base, index
        self.dtype = torch.float32

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: Any) -> Tensor:
        return self.base[self.index[i]].float()


class Chain:
    """Two row sources read as one (what `torch.cat` of them would be), for sliced passes such as precise BN."""

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b
        self.dtype = torch.float32

    def __len__(self) -> int:
        return len(self.a) + len(self.b)

    def __getitem__(self, s: slice | Tensor) -> Tensor:
        if not isinstance(s, slice):  # an index tensor (precise BN's shuffled sample): rows in the order asked
            return self._gather(torch.as_tensor(s))
        start, stop, _ = s.indices(len(self))
        n = len(self.a)
        parts = [self.a[start:stop] if start < n else None, self.b[max(start - n, 0) : max(stop - n, 0)]]
        return torch.cat([p for p in parts if p is not None and len(p)])

    def _gather(self, idx: Tensor) -> Tensor:
        n = len(self.a)
        in_a = idx < n
        a, b = self.a[idx[in_a]].float(), self.b[idx[~in_a] - n].float()
        out = torch.empty((len(idx), *(a.shape[1:] if len(a) else b.shape[1:])), dtype=torch.float32)
        out[in_a], out[~in_a] = a, b
        return out


class Picked:
    """Rows of several sources, each picked by an index, read as one set: what `torch.cat([a[ia], b[ib], ...])`
    would be, in the sources' own dtype, but gathered only when indexed. Why: a teacher trains on a mixture (clean
    rows drawn from the memory-mapped split, then pool rows); copying it would hold the whole ImageNet train split
    in memory (~190 GB at 224 px), while a batch needs 256 rows."""

    def __init__(self, *parts: tuple[Tensor, Tensor]) -> None:
        self.parts = parts
        self.starts = torch.tensor([0, *np.cumsum([len(i) for _, i in parts]).tolist()])
        self.dtype = parts[0][0].dtype
        self.shape = (int(self.starts[-1]), *parts[0][0].shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: slice | Tensor) -> Tensor:
        idx = torch.arange(len(self))[i] if isinstance(i, slice) else torch.as_tensor(i)
        out = torch.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
        for k, (base, index) in enumerate(self.parts):
            mine = (idx >= self.starts[k]) & (idx < self.starts[k + 1])
            if mine.any():
                out[mine] = base[index[idx[mine] - self.starts[k]]]
        return out


class Scatter:
    """Writes to rows `index` of `base`: `Scatter(base, index)[a:b] = rows` is `base[index[a:b]] = rows`. The
    writing side of `Picked`, for producers that fill their output in runs (trainables/augment.py)."""

    def __init__(self, base: Tensor, index: Tensor) -> None:
        self.base, self.index = base, index

    def __setitem__(self, s: slice, rows: Tensor) -> None:
        self.base[self.index[s]] = rows
