"""Arrays too large for memory: computed shard by shard, resumable, and read back as memory maps.

Why: the paper profile's features (CLIP ViT-B/16: 197 x 768 values per image) and teacher logits over ImageNet are
terabytes; no process may hold a whole set. A stage that maps a frozen network over images (`extract_features`,
`teacher_targets`) therefore
1. writes its output in shards of `SHARD_ROWS` rows into a work folder, each shard written under a temporary name
   and renamed when complete, so a shard file that exists is whole: a killed run, rerun with the same work folder
   (the worker's `StageContext.scratch`, kept per stage key until the entry is published), skips the finished
   shards and resumes at the next unfinished one;
2. assembles the shards into one `.npy` per array in the stage's output folder, copying shard by shard;
3. is read back with `load_tree`: every array a copy-on-write memory map, so a reader touches (and the kernel
   pages in) only the rows it indexes.
Shard boundaries are multiples of the inference batch, so every row is computed in the same batch as an unsharded
pass: the numbers are the same. Storage dtype: fp16 on ImageNet, fp32 on the embedded data (bit-identical results).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from trainables.common import apply_chunked, load, save
from trainables.footprint import INFER_BATCH, SHARD_ROWS

ARRAY = "__array__"  # placeholder key: {ARRAY: "relative/name"} stands for <folder>/relative/name.npy
META = "meta.pt"
DTYPES = {"float16": np.float16, "float32": np.float32}


def encode_shards(fn: Callable[[Tensor], Tensor], x: Tensor, work: Path, dtype: str, item_dims: int = 3) -> int:
    """fn over the rows of `x` (leading dims flattened, as `apply_chunked`), shard by shard into `work/NNNNN.npy`.

    Returns:
        How many shards were computed now (the others were found complete from an earlier, interrupted run).
    """
    work.mkdir(parents=True, exist_ok=True)
    flat = x.reshape(-1, *x.shape[-item_dims:])
    rows = max(INFER_BATCH, SHARD_ROWS // INFER_BATCH * INFER_BATCH)
    computed = 0
    for i, start in enumerate(range(0, len(flat), rows)):
        f = work / f"{i:05d}.npy"
        if f.is_file():
            continue
        y = apply_chunked(fn, flat[start : start + rows], INFER_BATCH)
        tmp = work / f".{i:05d}.tmp.npy"
        np.save(tmp, y.numpy().astype(DTYPES[dtype], copy=False))
        os.replace(tmp, f)
        computed += 1
    return computed


def assemble(work: Path, dest: Path, lead: tuple[int, ...], dtype: str) -> None:
    """The shards of `work`, in order, into one `.npy` of shape lead + item (an empty set: an empty array)."""
    shards = sorted(work.glob("[0-9]*.npy"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not shards:
        np.save(dest, np.empty((0,), DTYPES[dtype]))
        return
    first = np.load(shards[0], mmap_mode="r")
    out = np.lib.format.open_memmap(dest, mode="w+", dtype=DTYPES[dtype], shape=(*lead, *first.shape[1:]))
    flat, at = out.reshape(-1, *first.shape[1:]), 0
    for s in shards:
        part = np.load(s, mmap_mode="r")
        flat[at : at + len(part)] = part
        at += len(part)
    out.flush()
    del out, flat


def encode_tree(
    fn: Callable[[Tensor], Tensor], tree: dict[str, Any], out: Path, work: Path, dtype: str, leaf: str = ""
) -> tuple[dict[str, Any], int]:
    """Every uint8 image tensor in a (nested) bundle dict replaced by fn's output, stored as an array of `out`;
    everything else (labels, names, class subsets) kept. Returns (the tree with placeholders, shards computed)."""
    res: dict[str, Any] = {}
    computed = 0
    for k, v in tree.items():
        name = f"{leaf}/{k}" if leaf else str(k)
        if isinstance(v, dict):
            res[k], n = encode_tree(fn, v, out, work, dtype, name)
            computed += n
        elif torch.is_tensor(v) and v.dtype == torch.uint8:
            computed += encode_shards(fn, v, work / name, dtype)
            assemble(work / name, out / f"{name}.npy", tuple(v.shape[:-3]), dtype)
            res[k] = {ARRAY: name}
        else:
            res[k] = v
    return res, computed


def store_tree(fn: Callable[[Tensor], Tensor], tree: dict[str, Any], out: Path, work: Path | None, dtype: str) -> int:
    """`encode_tree` into `out` plus its `meta.pt`; the shards go to `work` (None: a folder inside `out`, removed
    once assembled). Returns the shards computed now."""
    scratch = work if work is not None else out / ".shards"
    meta, computed = encode_tree(fn, tree, out, scratch, dtype)
    save(meta, out / META)
    if work is None:
        shutil.rmtree(scratch, ignore_errors=True)
    return computed


def load_tree(folder: Path) -> dict[str, Any]:
    """The tree `store_tree` wrote, every array a copy-on-write memory map (read lazily, never whole)."""

    def fill(node: Any) -> Any:
        if isinstance(node, dict) and set(node) == {ARRAY}:
            return torch.from_numpy(np.load(folder / f"{node[ARRAY]}.npy", mmap_mode="c"))
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        return node

    return fill(load(folder / META))


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
