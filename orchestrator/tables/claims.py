"""The paper's claims as checks over a built table: the shared machinery and the generic checks.

A check is a function `TableResult -> Claim`. The generic ones here are factories: a table module names the
claim's wording and the rows/columns it compares (`improves("KD beats w/o KD for every pair", "w/o KD", "ours",
...)`), and the check returns holds=None, never a verdict, when the table lacks the numbers. Checks read
`res.mean` only, so `build_table` runs the same checks on the paper's own numbers (`paper_view`).

Why the column labels are indexed directly (a KeyError, not "not enough data"): a claim's columns are its own
spec's, which `build_table` always creates, so a missing one is a typo in the spec and must be loud.
pandas/numpy are imported inside the checks that need them: the registry imports this module and stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from orchestrator.tables._types import Claim, TableResult

Check = Callable[[TableResult], Claim]


# ------------------------------------------------------------------------------------------------ machinery


def value(res: TableResult, row: str | None, col: str) -> float:
    """Our value in one cell; NaN when there is none (or no such row)."""
    try:
        return float(res.mean.loc[row, col])
    except KeyError:
        return math.nan


def have(*xs: float) -> bool:
    """Whether every value is there (not NaN)."""
    return all(not math.isnan(x) for x in xs)


def partner(res: TableResult, where: dict, same: str, other: dict) -> str | None:
    """The row that shares `where[same]` and matches `other`: e.g. the same student's APT or complete-FT row."""
    return next(
        (
            r
            for r, w in res.row_where.items()
            if w.get(same) == where.get(same) and all(w.get(k) == v for k, v in other.items())
        ),
        None,
    )


def tally(text: str, wins: int, total: int, lines: list[str], empty: str, noun: str = "") -> Claim:
    """A claim that must hold for every compared item: `wins/total noun: line; line`; holds=None with `empty`
    when nothing could be compared."""
    if not total:
        return Claim(text, None, empty)
    return Claim(text, wins == total, f"{wins}/{total}{f' {noun}' if noun else ''}: " + "; ".join(lines))


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); nan when a side is constant."""
    import pandas as pd

    return float(pd.Series(x).rank().corr(pd.Series(y).rank()))


# ------------------------------------------------------------------------------------------------ generic checks


def at_least_others(text: str, row: str, prefix: str, empty: str) -> Check:
    """`row` ≥ every other row with data, on the first column whose label starts with `prefix` where `row` and
    another row have data (Table 1: the paper's six-shift average if there, else the average over the shifts
    with data)."""

    def check(res: TableResult) -> Claim:
        for col in [c for c in res.mean.columns if c.startswith(prefix)]:
            best = value(res, row, col)
            others = {r: value(res, r, col) for r in res.mean.index if r != row and have(value(res, r, col))}
            if have(best) and others:
                worse = [r for r, v in others.items() if v > best + 1e-9]
                detail = f"{col}: {row} {best:.1f} vs " + ", ".join(f"{r} {v:.1f}" for r, v in others.items())
                return Claim(text, not worse, detail + (f"; beaten by {', '.join(worse)}" if worse else ""))
        return Claim(text, None, empty)

    return check


def highest_mean(text: str, row: str, digits: int, empty: str) -> Check:
    """`row` has the highest mean over the columns every row with data has (ties count as highest)."""

    def check(res: TableResult) -> Claim:
        m = res.mean.dropna(how="all")
        cols = [c for c in m.columns if m[c].notna().all()]
        if row not in m.index or len(m) < 2 or not cols:
            return Claim(text, None, empty)
        avg = m[cols].mean(axis=1)
        detail = f"mean over {', '.join(cols)}: " + ", ".join(f"{r} {v:.{digits}f}" for r, v in avg.items())
        return Claim(text, bool(avg[row] >= avg.max() - 1e-9), detail)

    return check


def improves(
    text: str, before: str, after: str, noun: str, empty: str, lower_is_better: bool = False, show_change: bool = False
) -> Check:
    """In every row with both, column `after` beats column `before` (strictly: a tie is no improvement)."""

    def check(res: TableResult) -> Claim:
        both = res.mean[[before, after]].dropna()
        better = both[after] < both[before] if lower_is_better else both[after] > both[before]
        lines = [
            f"{r}: {a:.1f} → {b:.1f}" + (f" ({b - a:+.1f})" if show_change else "") for r, (a, b) in both.iterrows()
        ]
        return tally(text, int(better.sum()), len(both), lines, empty, noun)

    return check


def mostly_monotone(text: str, x: str, y: str, noun: str, by: str, min_rows: int = 3) -> Check:
    """`y` rises with `x`, mostly: Spearman's rho > 0 and at least half the steps go up (rows sorted by `x`)."""

    def check(res: TableResult) -> Claim:
        both = res.mean[[x, y]].dropna()
        if len(both) < min_rows:
            return Claim(text, None, f"{len(both)} {noun}(s) with data, need {min_rows}")
        ordered = both.sort_values(x, kind="stable")
        rho = spearman(list(ordered[x]), list(ordered[y]))
        steps = int((ordered[y].diff().dropna() > 0).sum())
        holds = bool(rho > 0 and steps * 2 >= len(both) - 1) if have(rho) else False
        return Claim(
            text,
            holds,
            f"Spearman rho {rho:.2f}; {steps}/{len(both) - 1} steps up when {noun}s are "
            f"sorted by {by} ({', '.join(ordered.index)})",
        )

    return check


def gap_grows(text: str, base: str, ours: str, x: str, noun: str) -> Check:
    """The gap `ours` − `base` grows with the row value (rows are numbers, e.g. the data fraction a): the
    least-squares slope is positive."""

    def check(res: TableResult) -> Claim:
        import numpy as np

        d = (res.mean[ours] - res.mean[base]).dropna()
        if len(d) < 2:  # a slope needs two points
            return Claim(text, None, f"{len(d)} {noun}(s) with both methods, need 2")
        xs = np.array([float(i) for i in d.index])
        slope = float(np.polyfit(xs, d.to_numpy(dtype=float), 1)[0])
        gaps = ", ".join(f"{x}={i}: {v:+.1f}" for i, v in d.items())
        return Claim(text, slope > 0, f"gap {ours} − {base} (points) {gaps}; slope {slope:+.2f} points per unit {x}")

    return check


def loses_and_keeps(text: str, ref: str, loses: str, keeps: str, tolerance: float, noun: str) -> Check:
    """Averaged over the rows where all three have data: `loses` falls below `ref`, `keeps` stays within
    `tolerance` points of it."""

    def check(res: TableResult) -> Claim:
        m = res.mean[[ref, loses, keeps]].dropna()
        if m.empty:
            return Claim(text, None, f"no {noun} with all three models")
        mm = m.mean(axis=0)
        holds = bool(mm[loses] < mm[ref] and mm[keeps] >= mm[ref] - tolerance)
        return Claim(
            text,
            holds,
            f"mean over {', '.join(m.index)}: {ref} {mm[ref]:.1f}, {loses} {mm[loses]:.1f}, {keeps} {mm[keeps]:.1f}",
        )

    return check


def beats_apt(text: str, col: str, lower_is_better: bool = False) -> Check:
    """Every student taught by a teacher beats the same student without one (APT: teacher 'none') on `col`."""

    def check(res: TableResult) -> Claim:
        lines, wins, total = [], 0, 0
        for row, where in res.row_where.items():
            if where.get("teacher") in (None, "none"):
                continue
            apt = partner(res, where, "student", {"teacher": "none"})
            a, b = value(res, apt, col) if apt else math.nan, value(res, row, col)
            if have(a, b):
                total += 1
                wins += (b < a) if lower_is_better else (b > a)
                lines.append(f"{row}: {b:.1f} vs APT {a:.1f}")
        return tally(text, wins, total, lines, "no student with both APT and a teacher")

    return check
