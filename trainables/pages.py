"""Streaming over file-backed maps without their pages piling up in the process: `release` and `stream_npy`.

Why: an ImageNet-sized set lives in a memory-mapped file (`data.image_buffer`, the reader's scratch `set.u8`, the
`.npy` maps of `common.load`). Reading or writing it through the map leaves every touched page mapped into the
process until the map goes away, so a stage that streamed over N images ends with N images' worth of resident set
(bench/data_plane: VmHWM grew 1.5-2x from 2k to 32k images while the anonymous memory stayed flat). The kernel
can reclaim such pages, but a node's monitor, a cgroup limit and `ru_maxrss` count them. A stage that is done with
a range of rows hands it to `release`, which drops those pages from this process only:
- a shared file map (written through, e.g. the reader's scratch file): MADV_DONTNEED unmaps the pages; the data
  stays in the page cache (dirty pages are written back by the kernel as usual), so nothing is lost;
- a private (copy-on-write) file map: MADV_PAGEOUT, which never discards data: a page this process modified is
  anonymous and stays (there is no swap here), a clean file page goes back to the page cache's reclaim;
- anything else (anonymous memory: the local profile's small in-memory sets) is left alone.
Linux only; elsewhere `release` does nothing (the figures then are the kernel's business).
"""

from __future__ import annotations

import ctypes
import gc
import mmap
import sys
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

MADV_DONTNEED = 4
MADV_PAGEOUT = 21
STREAM_CHUNK_BYTES = 64 * 2**20  # rows written (and released) at a time by `stream_npy`

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
if _libc is not None:
    _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def _span(x: Tensor | np.ndarray) -> tuple[int, int]:
    if isinstance(x, Tensor):
        return x.data_ptr(), x.numel() * x.element_size()
    return x.ctypes.data, x.nbytes


def file_map(x: Tensor | np.ndarray) -> str | None:
    """The permissions ('rw-s', 'rw-p', ...) of the file-backed mapping that holds all of `x`'s bytes; None when
    they are not in one file map (anonymous memory, a view across maps, not Linux)."""
    start, n = _span(x)
    if _libc is None or n == 0:
        return None
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            lo, hi = (int(v, 16) for v in parts[0].split("-"))
            if lo <= start < hi:
                path = parts[5].strip() if len(parts) > 5 else ""
                return parts[1] if start + n <= hi and path.startswith("/") else None
    return None


def release(x: Tensor | np.ndarray) -> bool:
    """Drop the pages of `x` (a contiguous range of a file map) from this process's resident set; True if done.
    The data is never lost (see the module docstring); `x` stays valid and pages back in if read again."""
    perms = file_map(x) if (x.is_contiguous() if isinstance(x, Tensor) else x.flags.c_contiguous) else None
    if perms is None:
        return False
    start, n = _span(x)
    lo = start - start % mmap.PAGESIZE
    hi = -(-(start + n) // mmap.PAGESIZE) * mmap.PAGESIZE
    advice = MADV_DONTNEED if perms[3] == "s" else MADV_PAGEOUT
    return _libc.madvise(lo, hi - lo, advice) == 0


def trim_heap() -> bool:
    """Give the heap's free pages back to the kernel (glibc's `malloc_trim(0)`); True if any went back.

    Why: a shared stage runs in a Ray worker that Ray keeps for the next task and reaps only once it needs new
    workers. glibc keeps the memory a stage's tensors freed in its arenas (fragmented, below the top of the heap,
    so its own trimming never reaches it), and the idle worker holds the stage's peak: after the transfer sweep's
    CLIP ViT-L/14@336 stages two idle workers held ~14 GB while the first trials started (21 GB on a 24 GB host).
    Dask's workers trim for the same reason. A fresh process per stage (`max_calls=1`, Ray's default for tasks
    that declare GPUs) would free it too, at 4.4 s of worker start and imports per stage here; a trim takes
    0.3 s after a ViT-B stage (bench/stage_workers.py). Memory still referenced stays: this is not a leak detector."""
    gc.collect()
    trim = getattr(_libc, "malloc_trim", None)  # glibc only; musl or macOS: the kernel's business, as `release`
    return bool(trim(0)) if trim is not None else False


def write_npy_header(f: BinaryIO, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """The header np.save writes for a C-ordered array: its rows may then be appended with `tofile`, in order."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(f, header)


def stream_npy(x: Tensor, path: Path) -> None:
    """`x` (at least 1-d) written as the `.npy` np.save would write, STREAM_CHUNK_BYTES of rows at a time, each
    chunk's source pages released once written: a file-backed set of any size goes to disk through a bounded
    window."""
    arr = x.numpy()
    rows = max(1, STREAM_CHUNK_BYTES // max(1, arr[:1].nbytes))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        write_npy_header(f, arr.dtype, arr.shape)
        for a in range(0, len(arr), rows):
            chunk = arr[a : a + rows]
            chunk.tofile(f)
            release(chunk)


def is_streamed(x: object, min_bytes: int) -> bool:
    """Whether `common.save` writes this tensor as its own streamed `.npy`: a contiguous tensor of at least
    `min_bytes` that lives in a file map (in-memory tensors stay in the pickle, as before)."""
    return (
        isinstance(x, Tensor)
        and x.ndim > 0
        and x.layout == torch.strided
        and x.is_contiguous()
        and x.numel() * x.element_size() >= min_bytes
        and file_map(x) is not None
    )
