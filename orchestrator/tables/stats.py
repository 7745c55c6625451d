"""Paired bootstrap over seeds and test examples: the intervals every claim's verdict is decided from.

Pure numpy, no I/O. An *arm* is one table cell seen per example: a list of components `(block, X)` where `X` is
`(S, N)` (one row per seed, one column per test example of eval set `block`, e.g. a 0/1 correctness or a
sequence's flip fraction) and the arm's value is the mean over its components of `X.mean()`. Arms are paired:
row s of every arm is the same seed, column i of every component of one block is the same test example. A
bootstrap replicate draws seeds with replacement (once, for all arms) and, per block, examples with replacement
(once per block, for all arms), so both arms of a difference see the same resampled seeds and images; this is
the two-stage (seeds, then examples) bootstrap, done with multiplicity weights so a replicate costs one
matrix product per component instead of copying the data.

Why percentile intervals with a fixed B and an RNG seeded from the claim's name: two runs of the aggregator
must give byte-identical tables, and a claim's interval must not depend on which other claims ran before it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

B_DEFAULT = 2000
LEVEL = 0.95
Arm = list[tuple[str, np.ndarray]]  # (block, (S, N) per-seed, per-example values)


@dataclass(frozen=True)
class Interval:
    """A statistic's point estimate (on the data as is) and its percentile bootstrap interval."""

    point: float
    lo: float
    hi: float
    seeds: int
    examples: int  # the largest block's number of examples
    b: int

    def verdict(self) -> bool | None:
        """True: the interval lies above 0 (the claim's direction); False: below 0; None: it covers 0."""
        if self.lo > 0:
            return True
        if self.hi < 0:
            return False
        return None

    def text(self, digits: int = 1, unit: str = "") -> str:
        """`+1.2 [−0.3, +2.7]`: the point estimate and its interval."""
        f = f"{{:+.{digits}f}}"
        return f"{f.format(self.point)}{unit} [{f.format(self.lo)}, {f.format(self.hi)}]"


def rng_for(name: str) -> np.random.Generator:
    """A generator seeded from `name` (sha256), so a claim's resamples depend on nothing else."""
    return np.random.default_rng(int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little"))


def _blocks(arms: Sequence[Arm]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for arm in arms:
        for block, x in arm:
            if sizes.setdefault(block, x.shape[1]) != x.shape[1]:
                raise ValueError(f"block {block!r}: {sizes[block]} vs {x.shape[1]} examples; arms must pair up")
    return sizes


def _weights(rng: np.random.Generator, n: int, b: int) -> np.ndarray:
    """(b, n) multiplicities of a resample of n items with replacement, divided by n (rows sum to 1)."""
    idx = rng.integers(0, n, size=(b, n)) + n * np.arange(b)[:, None]
    return np.bincount(idx.ravel(), minlength=b * n).reshape(b, n) / n


def arm_means(arms: Sequence[Arm], ws: np.ndarray, we: dict[str, np.ndarray]) -> np.ndarray:
    """(b, K) value of each arm under seed weights `ws` (b, S) and per-block example weights (b, N)."""
    out = np.zeros((ws.shape[0], len(arms)))
    for k, arm in enumerate(arms):
        for block, x in arm:
            out[:, k] += ((ws @ x) * we[block]).sum(axis=1) / len(arm)
    return out


def bootstrap(
    arms: Sequence[Arm],
    stat: Callable[[np.ndarray], np.ndarray],
    name: str,
    b: int = B_DEFAULT,
    level: float = LEVEL,
) -> Interval:
    """The percentile interval of `stat` over paired resamples of seeds and examples.

    Args:
        arms: the K arms (every component's X has the same S rows, the same seeds in the same order).
        stat: (b, K) arm values -> (b,) statistic (vectorised over replicates).
        name: seeds the RNG (use the claim's text plus what it compares).
        b: the number of replicates.
        level: the interval's coverage.
    """
    arms = [[(blk, np.asarray(x, dtype=float)) for blk, x in arm] for arm in arms]
    sizes = _blocks(arms)
    s = {x.shape[0] for arm in arms for _, x in arm}
    if len(s) != 1:
        raise ValueError(f"arms have different numbers of seeds: {sorted(s)}")
    n_seeds = s.pop()
    rng = rng_for(name)
    ws = _weights(rng, n_seeds, b)
    we = {blk: _weights(rng, n, b) for blk, n in sorted(sizes.items())}
    reps = stat(arm_means(arms, ws, we))
    flat = {k: np.full((1, n), 1 / n) for k, n in sizes.items()}
    point = float(stat(arm_means(arms, np.full((1, n_seeds), 1 / n_seeds), flat))[0])
    alpha = (1 - level) / 2
    lo, hi = np.percentile(reps, [100 * alpha, 100 * (1 - alpha)])
    return Interval(point, float(lo), float(hi), n_seeds, max(sizes.values()), b)


# ------------------------------------------------------------------------------------------------ statistics


def difference(scale: float = 1.0, sign: float = 1.0, offset: float = 0.0) -> Callable[[np.ndarray], np.ndarray]:
    """sign × (arm 1 − arm 0) in display units (× `scale`), plus `offset` (a tolerance, in display units);
    sign = −1 when lower is better, so > 0 is always the claim's direction."""
    return lambda m: sign * scale * (m[:, 1] - m[:, 0]) + offset


def mean_difference(pairs: int, scale: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    """Arms laid out (a_1, b_1, ..., a_n, b_n): the mean over pairs of b_i − a_i."""
    return lambda m: scale * (m[:, 1 : 2 * pairs : 2] - m[:, 0 : 2 * pairs : 2]).mean(axis=1)


def ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties share their mean rank) along the last axis."""
    less = (x[..., :, None] > x[..., None, :]).sum(-1)
    ties = (x[..., :, None] == x[..., None, :]).sum(-1)
    return less + (ties + 1) / 2


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho row by row of (b, K) arrays (NaN where a side is constant)."""
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    den = np.sqrt((rx**2).sum(-1) * (ry**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(-1) / np.where(den > 0, den, 1), np.nan)


def spearman(k: int) -> Callable[[np.ndarray], np.ndarray]:
    """Arms laid out (x_1..x_k, y_1..y_k): Spearman's rho of x vs y across the k items (a constant side: 0)."""
    return lambda m: np.nan_to_num(spearman_rows(m[:, :k], m[:, k : 2 * k]), nan=0.0)


def slope(xs: Sequence[float], scale: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    """Arms laid out (a_1, b_1, ..., a_n, b_n) at x = xs: the least-squares slope of b_i − a_i against x."""
    x = np.asarray(xs, dtype=float)
    xc = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    return lambda m: scale * (m[:, 1::2] - m[:, 0::2]) @ xc
