"""Reading image files in shards (trainables/reading.py): the bytes of a serial read, whoever decodes the shards,
and a retried read that decodes only the shards its scratch folder lacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainables import reading
from trainables.common import serial_map
from trainables.data import read_images
from trainables.reading import Reader


def _files(folder: Path, n: int) -> list[Path]:
    """n PNGs of different sizes and noise (so a resize and a wrong row order would both show)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    out = []
    for i in range(n):
        side = 12 + i % 7
        f = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(f)
        out.append(f)
    return out


def _recording(seen: list[int]):
    def run(compute, items, write) -> None:
        items = list(items)
        seen.append(len(items))
        serial_map(compute, items, write)

    return run


def test_sharded_read_equals_a_serial_read_and_resumes(tmp_path: Path, monkeypatch) -> None:
    """41 files in shards of 8 (the last one short): the read map gets all six shards in one stream and the set
    equals `read_images`; a retry that lost one shard file decodes that shard only; a small read stays serial."""
    files = _files(tmp_path / "img", 41)
    monkeypatch.setattr(reading, "READ_ROWS", 8)
    monkeypatch.setattr(reading, "READ_MIN_ROWS", 16)
    serial = read_images(files, 16)
    seen: list[int] = []
    reader = Reader(_recording(seen), tmp_path / "scratch")
    assert torch.equal(reader.read(files, 16), serial) and seen == [6]
    shard_files = sorted((tmp_path / "scratch" / "read").rglob("*.done"))
    assert len(shard_files) == 6
    shard_files[2].unlink()  # the shard a killed attempt had not finished (its rows zeroed, as if never written)
    np.memmap(shard_files[2].parent / "set.u8", dtype=np.uint8, mode="r+")[16 * 16 * 3 * 16 : 16 * 16 * 3 * 24] = 0
    seen.clear()
    assert torch.equal(reader.read(files, 16), serial) and seen == []  # 8 rows left: under READ_MIN_ROWS, serial
    monkeypatch.setattr(reading, "READ_MIN_ROWS", 1)
    shard_files[4].unlink()
    assert torch.equal(reader.read(files, 16), serial) and seen == [1]
    other = reader.read(files[:5], 16)  # another read of the same stage: its own shards, not the first read's
    assert torch.equal(other, serial[:5]) and len(list((tmp_path / "scratch" / "read").iterdir())) == 2
    assert reader.read([], 16).shape == (0, 3, 16, 16)


def test_a_missing_file_fails_naming_it(tmp_path: Path) -> None:
    files = _files(tmp_path / "img", 3)
    with pytest.raises(OSError, match=r"cannot read image .*nope\.png"):
        Reader().read([*files, tmp_path / "nope.png"], 16)
