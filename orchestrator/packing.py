"""Cell packing: cheap cells share one Ray Tune trial (one Train worker group) instead of paying for one each.

Why: on Ray Train V2 every trial builds its own `TorchTrainer`: a Tune driver actor, a Train controller actor and
a worker group whose processes import torch/timm/open_clip and join a process group. That costs 10-30 s whatever
the cell does (about 20 s per trial on the 2-core reference machine, `bench/overhead.py`). A cell of the paper
profile trains for hours and does not notice; a local cell or a cell on cached features trains for seconds and
would spend most of its wall time starting up. So cells are packed until each trial's estimated work is large
against its start-up, and each cell inside a pack keeps everything that makes it a cell: its own MLflow child run,
cache entry, checkpoints (marked with its key) and failure.

Pure functions of (cell key, estimated seconds): the estimates come from `orchestrator.costs`.
"""

from __future__ import annotations

import hashlib
import math

TRIAL_STARTUP_S = 20.0  # start-up of one trial's actors and worker group (measured, 2-core machine)
MAX_STARTUP_SHARE = 0.1  # auto packing: a trial's start-up at most this share of its estimated work


def pack_key(keys: list[str]) -> str:
    """A pack's name: its only cell's key (so an unpacked cell keeps `train-<cell key>`), else a hash of its cells."""
    if len(keys) == 1:
        return keys[0]
    return "pack-" + hashlib.sha256("\n".join(keys).encode()).hexdigest()[:24]


def pack_cells(cells: list[tuple[str, float]], slots: int, cells_per_trial: int | None = None) -> list[list[str]]:
    """Group cells into trials.

    Args:
        cells: (cell key, estimated seconds) in plan order.
        slots: trials that can run at once; packing never leaves a slot idle that one more trial could fill.
        cells_per_trial: at most this many cells in one trial (1 turns packing off); None: automatic, i.e. a
            cell whose estimate already dwarfs the start-up runs alone, and the others are packed so that each
            trial carries at least `TRIAL_STARTUP_S / MAX_STARTUP_SHARE` seconds of estimated work.

    Returns:
        Packs of cell keys, each in plan order; cells are spread over packs by estimated seconds (longest first,
        onto the least loaded pack), so the packs end at about the same time.
    """
    if not cells:
        return []
    order = {k: i for i, (k, _) in enumerate(cells)}
    slots = max(1, slots)
    if cells_per_trial is not None:
        n_packs = math.ceil(len(cells) / max(1, cells_per_trial))
        alone, cheap, cap = [], list(cells), max(1, cells_per_trial)
    else:
        target = TRIAL_STARTUP_S / MAX_STARTUP_SHARE
        alone = [k for k, s in cells if s >= target]
        cheap = [(k, s) for k, s in cells if s < target]
        total = sum(s for _, s in cheap)
        n_packs = max(math.ceil(total / target), min(slots, len(cheap))) if cheap else 0
        cap = len(cheap)
    n_packs = min(n_packs, len(cheap))
    packs: list[list[str]] = [[] for _ in range(n_packs)]
    load = [0.0] * n_packs
    for key, sec in sorted(cheap, key=lambda c: (-c[1], order[c[0]])):
        open_ = [i for i in range(n_packs) if len(packs[i]) < cap]
        i = min(open_, key=lambda j: (load[j], len(packs[j]), j))
        packs[i].append(key)
        load[i] += max(sec, 1e-9)
    out = [[k] for k in alone] + [sorted(p, key=order.__getitem__) for p in packs if p]
    return sorted(out, key=lambda p: order[p[0]])
