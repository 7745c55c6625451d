"""Reading image files into uint8 sets, shard by shard: resumable, and spread over the cluster under Ray.

Why: the paper profile's `build_eval_sets` reads every ImageNet-C cell (15 x 5 x 50,000 JPEGs), ImageNet-P's
videos and five shift sets, and the training stages read the train split. Decoding and resizing one ImageNet JPEG
costs milliseconds of one core, so one process reading C alone takes hours while the cluster's other cores idle.
Every read of files in a stage therefore goes through the stage's `Reader` (`stage_reader(ctx)`):
1. the entries (image files, or the first n frames of a video) are cut into shards of `READ_ROWS` rows;
2. the shards not yet done are decoded by the context's `read_shards` map (trainables/common.py `ShardMap`): one
   after another in the stage's process by default; under Ray, CPU-only shard tasks on any node that mounts the
   data roots (orchestrator/ray_backend.py `shard_map`, handed in by orchestrator/worker.py). A read of fewer than
   `READ_MIN_ROWS` rows stays in the process: a shard task costs seconds before it decodes anything;
3. the rows land in one memory-mapped file in the stage's scratch folder, and each shard, once on disk, leaves a
   marker: a killed stage, retried with the same scratch (kept per stage key until its entry is published), skips
   the finished shards and resumes at the next unfinished one. Memory stays bounded (the kernel pages the set),
   and the set is on disk once (without a scratch folder: `data.image_buffer`, file-backed when large).
Whoever decodes a shard, its bytes are the same (`read_image` is deterministic), so the set is byte-identical to a
serial read. The embedded data never reads files: the local profile is untouched by this module.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from trainables import pages
from trainables.common import ShardMap, StageContext, serial_map
from trainables.data import image_buffer, read_image, read_video_frames

READ_ROWS = 512  # images per read shard: 75 MB of uint8 at 224 px in flight per task
READ_MIN_ROWS = 4 * READ_ROWS  # fewer rows in a read: decoded here even when the context offers a parallel map

Entry = str | tuple[str, int]  # an image file, or (a video file, its first n frames)


def entry_rows(e: Entry) -> int:
    return 1 if isinstance(e, str) else int(e[1])


@dataclass(frozen=True)
class DecodeFiles:
    """What decodes one shard: its entries -> uint8 (rows, 3, size, size). A picklable object, as `ShardFn`:
    a shard task on another node runs exactly this, so the bytes are those of a serial read."""

    size: int

    def __call__(self, entries: list[Entry], device: str | None = None) -> np.ndarray:
        out = np.empty((sum(entry_rows(e) for e in entries), 3, self.size, self.size), np.uint8)
        at = 0
        for e in entries:
            if isinstance(e, str):
                out[at] = read_image(e, self.size).numpy()
            else:
                out[at : at + e[1]] = read_video_frames(Path(e[0]), e[1], self.size).numpy()
            at += entry_rows(e)
        return out


def _cut(entries: list[Entry]) -> Iterator[tuple[int, list[Entry]]]:
    """(first row, entries) of each shard: whole entries, about READ_ROWS rows each."""
    start, rows, chunk = 0, 0, []
    for e in entries:
        chunk.append(e)
        rows += entry_rows(e)
        if rows >= READ_ROWS:
            yield start, chunk
            start, rows, chunk = start + rows, 0, []
    if chunk:
        yield start, chunk


@dataclass
class Reader:
    """How a stage reads files (see the module docstring). `scratch` None: no resume (tests, one-off reads)."""

    read_shards: ShardMap = serial_map
    scratch: Path | None = None

    def read(self, entries: list[Entry] | list[Path], size: int) -> Tensor:
        """The entries' images, in order, as uint8 (rows, 3, size, size).

        With a scratch folder the set is decoded straight into a file there (`set.u8`, a memory map: no second
        copy of an ImageNet-sized set on disk) and each shard, once flushed, leaves a `<first row>.done` marker;
        a retry maps the same file and decodes only the shards without one."""
        entries = [str(e) if isinstance(e, Path) else e for e in entries]
        shape = (sum(entry_rows(e) for e in entries), 3, size, size)
        folder = self._folder(entries, size) if shape[0] else None  # (an empty file cannot be mapped)
        if folder is None:
            arr, done = image_buffer(*shape).numpy(), set()
        else:
            arr, done = _scratch_map(folder / "set.u8", shape), {int(p.stem) for p in folder.glob("*.done")}
        todo = [(start, chunk) for start, chunk in _cut(entries) if start not in done]

        def write(start: int, y: np.ndarray) -> None:
            arr[start : start + len(y)] = y  # (a shard task's result is read-only: no tensor view of it)
            if folder is not None:
                arr.flush()  # on disk before its marker: a marker promises a whole shard
                (folder / f"{start:010d}.done").touch()
            pages.release(arr[start : start + len(y)])  # written: its pages leave this process (trainables/pages.py)

        rows = sum(entry_rows(e) for _, chunk in todo for e in chunk)
        (self.read_shards if rows >= READ_MIN_ROWS else serial_map)(DecodeFiles(size), todo, write)
        return torch.from_numpy(arr)

    def _folder(self, entries: list[Entry], size: int) -> Path | None:
        """Per read, a scratch folder named by what it reads (the entries and the size), so the reads of one stage
        never mix and a retry finds its own shards."""
        if self.scratch is None:
            return None
        h = hashlib.sha1(str(size).encode())
        for e in entries:  # one entry at a time: ImageNet-C's 3.75 M paths would make one 400 MB string
            h.update(f"\n{e!r}".encode())
        folder = self.scratch / "read" / h.hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def _scratch_map(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A uint8 memory map of `path` with `shape`, created (sparse, all zeros) when absent."""
    if not path.exists():
        with open(path, "wb") as f:
            f.truncate(math.prod(shape))
    return np.memmap(path, dtype=np.uint8, mode="r+", shape=shape)


SERIAL = Reader()


def stage_reader(ctx: StageContext) -> Reader:
    """The reader of a stage: its context's read map, resuming from its scratch folder."""
    return Reader(ctx.read_shards, ctx.scratch)
