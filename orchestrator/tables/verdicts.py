"""From a built table to bootstrap intervals: each cell's per-example outcomes, paired by seed, and the verdict.

A claim names the cells it compares ((row, column) pairs of a `TableResult`); `interval` loads each cell's runs'
per-example outcomes (trainables/outcomes.py, via `TableResult.outcomes`), keeps the seeds every cell has, and
runs the paired bootstrap of stats.py. Without per-example data (the paper's own numbers via `paper_view`, runs
logged before outcomes existed) it says so and returns no interval: a verdict is never claimed from point
estimates alone.

The resampling unit is the test image: C's 75 cells share out a few hundred distinct images (trainables/shifts.py),
so its outcomes are regrouped per distinct image (`per_example`) and an image is drawn with all its corruptions.

Verdicts (stats.Interval.verdict, the interval oriented so > 0 is the claim's direction):
    ✓ holds: the 95 % interval lies above 0;  ✗ contradicted: it lies below 0;  ~ inconclusive: it covers 0.
"For every item" claims (every pair, every ablation): ✓ only if every item is ✓; ✗ if any item is ✗ (the
paper's claim is then wrong for that item); else ~ (also when some item lacks per-example data but none is ✗).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

import orchestrator.tables.stats as stats
from orchestrator.tables._types import Claim, Row, TableResult

NO_DATA = "no per-example data: no interval"
MARK = {True: "✓", False: "✗", None: "~"}
SOURCE = "source/"  # trainables.outcomes.SOURCE (not imported: the tables stay free of torch)
# mFR per P sequence (trainables/outcomes.with_mfr, added by the outcomes loader from the run's flip rates); runs
# from before it have no interval for mFR claims (their per-sequence flip fraction weighs perturbations unlike mFR)
ALIAS = {"mfr": "mfr/seq"}
Cell = tuple[str, str]  # (row label, column label)


def _row(res: TableResult, label: str) -> Row:
    return next((r for r in res.spec.rows if r.label == label), Row(label))


def _metrics(res: TableResult, row: str, col: str) -> list[tuple[str, str]]:
    """(column whose runs hold it, outcome key) per component of a cell (an average column has several)."""
    if col in res.components:
        return [m for c in res.components[col] for m in _metrics(res, row, c)]
    r = _row(res, row)
    name = res.col(col).metric.format(rule=r.rule, dataset=r.dataset)
    return [(col, ALIAS.get(name, name))]


def _block(key: str) -> str:
    """The eval set whose examples a key's last axis indexes (the pairing unit)."""
    return "p" if "fp/" in key or "mfr/" in key else key.rsplit("/", 1)[-1]


def seeds(res: TableResult, cells: Sequence[Cell]) -> list[str]:
    """The seeds every component of every cell has a run for, sorted."""
    common: set[str] | None = None
    for row, col in cells:
        for c, _ in _metrics(res, row, col):
            have = set(res.cell_runs.get((row, c), {}))
            common = have if common is None else common & have
    return sorted(common or ())


def source_key(key: str) -> str:
    """Where the outcomes keep the distinct-image map of `key`'s eval set, under the same prefix (a cell carries
    its teacher's outcomes as `teacher/...`, its original student's as `original/...`)."""
    roots = [i for i in (key.find(r) for r in ("acc/", "f_correct/")) if i >= 0]
    return key[: min(roots, default=0)] + SOURCE + _block(key)


def per_example(x: np.ndarray, source: np.ndarray | None) -> np.ndarray:
    """A run's outcome array reduced to one value per resampling unit (the last axis, `N`).

    Flat sets: unchanged. C-like sets (corruptions, severities, N): with `source` (the same shape, which
    distinct test image each slot holds), one column per distinct image, its total over its slots scaled by
    n_images / n_slots, so the columns' mean is the overall mean and a bootstrap resamples images with every
    corruption of each (a cluster bootstrap); without it, the mean over corruptions and severities per slot
    (right when every cell holds the same N images, as ImageNet-C's do)."""
    if x.ndim == 1:
        return x
    if source is None or source.shape != x.shape:
        return x.reshape(-1, x.shape[-1]).mean(axis=0)
    ids = source.ravel().astype(np.int64)
    n = int(ids.max()) + 1
    return np.bincount(ids, weights=x.ravel(), minlength=n) * (n / ids.size)


def arm(res: TableResult, cell: Cell, use: Sequence[str], by_image: bool = True) -> stats.Arm | None:
    """One cell's per-example values per seed in `use`: [(block, (S, N))], or None if some run lacks them.
    `by_image`: C's units are its distinct images where the outcomes map them (`per_example`)."""
    row, col = cell
    out: stats.Arm = []
    for c, key in _metrics(res, row, col):
        per_seed = []
        for s in use:
            data = res.outcomes(res.cell_runs[(row, c)][s]) if res.outcomes else None
            if data is None or key not in data:
                return None
            source = data.get(source_key(key)) if by_image else None
            per_seed.append(per_example(np.asarray(data[key], dtype=float), source))
        if len({len(p) for p in per_seed}) != 1:
            return None
        out.append((_block(key), np.stack(per_seed)))
    return out


def interval(
    res: TableResult, name: str, groups: Sequence[Sequence[Cell]], stat: Callable[[np.ndarray], np.ndarray]
) -> stats.Interval | str:
    """The bootstrap interval of `stat` over the arms (each a group of cells averaged with equal weight), or
    the reason there is none."""
    use = seeds(res, [c for g in groups for c in g])
    if res.outcomes is None or not res.cell_runs:
        return NO_DATA
    if not use:
        return "no seed common to every compared cell: no interval"
    reason = NO_DATA
    for by_image in (True, False):  # per distinct image where every run maps them, else per slot
        arms = []
        for g in groups:
            parts = [arm(res, c, use, by_image) for c in g]
            if any(p is None for p in parts):  # by image: some run's C may lack the map; by slot: no data
                reason = NO_DATA
                break
            arms.append([(b, x / len(parts) * sum(len(p) for p in parts) / len(p)) for p in parts for b, x in p])
        else:
            try:
                return stats.bootstrap(arms, stat, name)
            except ValueError as err:  # eval sets of different sizes: the cells do not pair up example by example
                reason = f"{err}: no interval"
    return reason


def describe(iv: stats.Interval | str, unit: str = " points", digits: int = 1) -> str:
    """`+1.2 points [−0.3, +2.7] ✓` (with the bootstrap's size), or the reason there is no interval."""
    if isinstance(iv, str):
        return "no interval"  # the reason is said once, at the end of the claim's detail
    return f"{iv.text(digits, unit)} {MARK[iv.verdict()]}"


def tail(iv: stats.Interval | str, lead: str, unit: str = " points", digits: int = 1) -> str:
    """`lead` + `describe(iv)`, or nothing when there is no interval (the claim says why, once, at its end)."""
    return "" if isinstance(iv, str) else lead + describe(iv, unit, digits)


def footer(ivs: Sequence[stats.Interval | str]) -> str:
    """What the intervals are: `95 % paired bootstrap, 3 seed(s) × 300 examples, B = 2000`."""
    done = [iv for iv in ivs if not isinstance(iv, str)]
    if not done:
        return ""
    s = sorted({iv.seeds for iv in done})
    n = sorted({iv.examples for iv in done})
    return (
        f"95 % paired bootstrap over {'/'.join(map(str, s))} seed(s) × {'/'.join(map(str, n))} test examples, "
        f"B = {done[0].b}"
    )


def single(text: str, iv: stats.Interval | str, point_detail: str, points: bool) -> Claim:
    """A claim decided by one interval (`points`: what the point estimates alone say)."""
    if isinstance(iv, str):
        return Claim(text, None, f"{point_detail}; {iv}", points=points)
    return Claim(text, iv.verdict(), f"{point_detail}; {footer([iv])}", decided=True, points=points)


Item = tuple[str, "stats.Interval | str | bool", bool]  # (line, interval or why none or False, point says holds)


def every(text: str, items: Sequence[Item], empty: str, noun: str = "") -> Claim:
    """A claim over several items ("for every pair"): ✓ only if every item is ✓, ✗ if any item is ✗, else ~;
    ? when no item has an interval. An item is an interval, the reason it has none, or False (an item that
    fails on a measured, not sampled, quantity, e.g. training time)."""
    if not items:
        return Claim(text, None, empty)
    points = all(p for _, _, p in items)
    done = [iv for _, iv, _ in items if not isinstance(iv, str)]
    verdicts = [iv if isinstance(iv, bool) else iv.verdict() for iv in done]
    n_ok = sum(v is True for v in verdicts)
    lines = "; ".join(line for line, _, _ in items)
    head = f"{n_ok}/{len(items)}{f' {noun}' if noun else ''} ✓"
    if not done:
        return Claim(text, None, f"{lines}; {next(iv for _, iv, _ in items if isinstance(iv, str))}", points=points)
    holds = False if False in verdicts else (True if n_ok == len(items) else None)
    foot = footer([iv for iv in done if not isinstance(iv, bool)])
    missing = [iv for _, iv, _ in items if isinstance(iv, str)]
    if missing:
        foot += f"{'; ' if foot else ''}{len(missing)} item(s) without interval ({missing[0]})"
    return Claim(text, holds, f"{head}: {lines}" + (f"; {foot}" if foot else ""), decided=True, points=points)
