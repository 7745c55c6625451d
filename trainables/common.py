"""Plumbing shared by the stages: the context a stage runs in, batched inference, precise BN, seeding, I/O.

The data plane knows nothing of Ray or MLflow: the orchestrator hands each stage a `StageContext` whose
reporter logs to MLflow and whose `checkpoint` reports to Ray Train; tests hand it a plain one.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from trainables import pages


class Reporter(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None: ...


class ShardMap(Protocol):
    """How a stage maps a frozen network over its shards: `compute(x)` for every `(tag, x)` of `items`, each result
    handed to `write(tag, result)` in the calling process (any order). `items` is lazy: an item's rows are read only
    when it is taken, so a mapper that takes a few at a time holds only those."""

    def __call__(
        self, compute: Callable[[Any], Any], items: Iterable[tuple[Any, Any]], write: Callable[[Any, Any], None]
    ) -> None: ...


def serial_map(
    compute: Callable[[Any], Any], items: Iterable[tuple[Any, Any]], write: Callable[[Any, Any], None]
) -> None:
    """The default `StageContext.map_shards`: one item after another in this process (no Ray anywhere)."""
    for tag, x in items:
        write(tag, compute(x))


class NullReporter:
    """Collects metrics in memory (tests, non-zero ranks)."""

    def __init__(self) -> None:
        self.history: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self.history.append((step, dict(metrics)))


@dataclass
class StageContext:
    """What a stage gets from whoever runs it.

    Attributes:
        reporter: per-epoch and final metrics (MLflow on rank 0 under Ray).
        device: where to compute.
        rank / world_size: data-parallel position (Ray Train workers); 0 / 1 otherwise.
        wrap_model: DDP wrapper for the trained module (identity outside Ray Train).
        checkpoint: called once per epoch by every rank with (state, epoch, metrics); None: no checkpoints.
        resume: the state of the last checkpoint, if the stage is being retried.
        threads: torch intra-op threads.
        scratch: a folder kept across retries of this stage (per cache key) for resumable work, e.g. finished
            shards (trainables/shards.py); None: none (the stage then works inside its output folder).
        map_shards: how the stage's shards are computed (`ShardMap`): one after another here by default; the Ray
            adapter hands in a parallel map over the cluster (orchestrator/ray_backend.py `shard_map`), so the data
            plane parallelises without importing Ray.
        read_shards: the same for decoding image files (trainables/reading.py): CPU-only shard tasks under Ray,
            since decoding needs no GPU whatever the stage's network does.
    """

    reporter: Reporter = field(default_factory=NullReporter)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    world_size: int = 1
    wrap_model: Callable[[nn.Module], nn.Module] = lambda m: m
    checkpoint: Callable[[dict, int, dict], None] | None = None
    resume: dict | None = None
    threads: int | None = None
    scratch: Path | None = None
    map_shards: ShardMap = serial_map
    read_shards: ShardMap = serial_map

    def log(self, metrics: dict[str, float], step: int = 0) -> None:
        if self.rank == 0:
            self.reporter.log_metrics(metrics, step)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def to_float(images: Tensor) -> Tensor:
    """uint8 (N,3,H,W) at rest -> float [0,1] for the models (which normalise themselves)."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


Chunked = Tensor | dict[str, Tensor]


@torch.no_grad()
def apply_chunked(
    fn: Callable[[Tensor], Chunked],
    x: Tensor,
    batch_size: int = 256,
    device: torch.device | None = None,
    item_dims: int | None = None,
) -> Chunked:
    """Apply `fn` over the first dim of `x` in chunks and concatenate the outputs, on the CPU.

    Why chunks: a whole eval set at once does not fit next to the model's activations; and uint8 images are
    converted per chunk (`to_float`), so no set ever exists as float in full (fp16 features are upcast per chunk;
    other dtypes pass unchanged).

    Args:
        fn: chunk -> tensor, or -> dict of tensors (predictors), concatenated per key.
        x: the inputs; uint8 images or features.
        batch_size: rows per call of `fn`.
        device: where `fn` runs (None: where `x` is).
        item_dims: the number of trailing dims of one item (3 for images); every dim before them is a leading
            dim, flattened into one for chunking and restored on the output (C: (15, 5, N, 3, H, W)).
            None: only the first dim is leading.

    Returns:
        The concatenated output; an empty float tensor when `x` is empty.
    """
    flat = x.reshape(-1, *x.shape[-item_dims:]) if item_dims else x
    outs = []
    for i in range(0, len(flat), batch_size):
        chunk = flat[i : i + batch_size]
        chunk = to_float(chunk) if chunk.dtype == torch.uint8 else chunk
        chunk = chunk.float() if chunk.dtype == torch.float16 else chunk  # fp16-stored features compute in fp32
        y = fn(chunk.to(device) if device is not None else chunk)
        outs.append({k: v.cpu() for k, v in y.items()} if isinstance(y, dict) else y.cpu())
    if not outs:
        return torch.empty(0)
    if isinstance(outs[0], dict):
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
    z = torch.cat(outs)
    return z.reshape(*x.shape[:-item_dims], *z.shape[1:]) if item_dims else z


def accuracy(net: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy of an image classifier over `x` (chunked like every other evaluation)."""
    pred = apply_chunked(lambda z: net(z).argmax(-1), x, batch_size)
    return int((pred == y).sum()) / max(len(x), 1)


def iterate_minibatches(
    n: int, batch_size: int, generator: torch.Generator, rank: int = 0, world_size: int = 1
) -> Iterator[Tensor]:
    """Shuffled index batches; each rank takes its own slice of every global batch (data parallel)."""
    perm = torch.randperm(n, generator=generator)
    for i in range(0, n, batch_size):
        idx = perm[i : i + batch_size]
        yield idx[rank::world_size] if world_size > 1 else idx


@torch.no_grad()
def precise_bn(
    module: nn.Module,
    inputs: Tensor,
    forward: Callable[[Tensor], Any],
    batch_size: int = 128,
    max_batches: int = 40,
    seed: int = 0,
) -> None:
    """Recompute BatchNorm running statistics with a cumulative average over training data.

    Why: after a few hundred Adam steps the running estimates (momentum 0.1) lag the weights so badly that eval
    mode sits at chance while train mode is fine (shared/platform.md). Only BN layers switch to train mode.
    Why a seeded shuffled sample of `inputs`: callers pass their whole training mixture (clean then augmented);
    its first `batch_size * max_batches` rows would be clean images only once the data outgrows the sample.
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = {m: (m.momentum, m.training) for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
        m.train()
    take = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(seed))[: batch_size * max_batches]
    for i in range(0, len(take), batch_size):
        chunk = inputs[take[i : i + batch_size]]
        forward(to_float(chunk) if chunk.dtype == torch.uint8 else chunk)
    for m, (mom, training) in saved.items():
        m.momentum = mom
        m.train(training)


# ----------------------------------------------------------------------------------------------- storage


ARRAY = "__array__"  # placeholder key: {ARRAY: "relative/name"} stands for <folder>/relative/name.npy
STREAM_BYTES = 64 * 2**20  # a file-backed tensor this large is saved as its own streamed .npy (`save`)


def save(obj: Any, path: Path) -> None:
    """torch.save of plain tensors/containers only, so `load` can use weights_only=True.

    A tensor that lives in a file map (an ImageNet-sized set read through `reading.Reader`) and holds at least
    STREAM_BYTES is written beside, as `<stem>.arrays/<key path>.npy`, through a bounded window
    (`pages.stream_npy`), and a placeholder takes its place in the pickle. Why: torch.save would read the whole
    map through this process, leaving every page of the set in its resident set. In-memory tensors (every set of
    the local profile) stay in the pickle: those files are byte-identical to a plain torch.save."""

    def strip(node: Any, leaf: str) -> Any:
        if isinstance(node, dict):
            return {k: strip(v, f"{leaf}/{k}" if leaf else str(k)) for k, v in node.items()}
        if pages.is_streamed(node, STREAM_BYTES):
            pages.stream_npy(node, path.parent / f"{path.stem}.arrays" / f"{leaf}.npy")
            return {ARRAY: f"{path.stem}.arrays/{leaf}"}
        return node

    torch.save(strip(obj, ""), path)


def load(path: Path) -> Any:
    """Tensors memory-mapped from the file (copy-on-write): a stage reading a pool or eval sets of ImageNet size
    touches only the pages it indexes, and the kernel can drop them again; nothing is read whole up front.
    Placeholders ({ARRAY: name}, from `save` or `shards.store_tree`) become copy-on-write maps of their `.npy`."""
    folder = path.parent

    def fill(node: Any) -> Any:
        if isinstance(node, dict) and set(node) == {ARRAY}:
            return torch.from_numpy(np.load(folder / f"{node[ARRAY]}.npy", mmap_mode="c"))
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        return node

    return fill(torch.load(path, map_location="cpu", weights_only=True, mmap=True))


def write_metrics(folder: Path, metrics: dict[str, float]) -> None:
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))


def read_metrics(folder: Path) -> dict[str, float]:
    f = folder / "metrics.json"
    return json.loads(f.read_text()) if f.is_file() else {}


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.s = time.perf_counter() - self.t0
