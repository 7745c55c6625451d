"""The paper's claims as checks over a built table: the shared machinery and the generic checks.

A check is a function `TableResult -> Claim`. The generic ones here are factories: a table module names the
claim's wording and the rows/columns it compares (`improves("KD beats w/o KD for every pair", "w/o KD", "ours",
...)`), and the check returns holds=None, never a verdict, when the table lacks the numbers. Points come from
`res.mean`; verdicts come only from the paired bootstrap over seeds and test examples (verdicts.py; ✓ / ✗ / ~, the
interval printed in the detail), so on the paper's own numbers (`paper_view`, no per-example data) a check shows
the paper's points and says it has no interval.

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


def _name(text: str, *parts: str) -> str:
    """The bootstrap's RNG name: the claim and what it compares (stable across runs and tables)."""
    return " | ".join((text, *parts))


def _scale(res: TableResult, col: str) -> float:
    return res.col(col).scale if res.col(col).metric else res.col(res.components.get(col, [col])[0]).scale


def improves(
    text: str, before: str, after: str, noun: str, empty: str, lower_is_better: bool = False, show_change: bool = False
) -> Check:
    """In every row with both, column `after` beats column `before`: per row the paired difference (oriented so
    > 0 is better) and its interval; aggregated as `verdicts.every`."""

    def check(res: TableResult) -> Claim:
        import orchestrator.tables.stats as stats
        import orchestrator.tables.verdicts as verdicts

        both = res.mean[[before, after]].dropna()
        diff = stats.difference(_scale(res, after), -1.0 if lower_is_better else 1.0)
        items = []
        for r, (a, b) in both.iterrows():
            iv = verdicts.interval(res, _name(text, r), [[(r, before)], [(r, after)]], diff)
            change = f" ({b - a:+.1f})" if show_change else ""
            better = b < a if lower_is_better else b > a
            items.append((f"{r}: {a:.1f} → {b:.1f}{change}{verdicts.tail(iv, ', improvement ')}", iv, better))
        return verdicts.every(text, items, empty, noun)

    return check


def at_least_others(text: str, row: str, prefix: str, empty: str) -> Check:
    """`row` beats every other row with data, on the first column whose label starts with `prefix` where `row` and
    another row have data (Table 1: the paper's six-shift average if there, else the average over the shifts
    with data): one interval of `row` − other per other row, aggregated as `verdicts.every`."""

    def check(res: TableResult) -> Claim:
        import orchestrator.tables.stats as stats
        import orchestrator.tables.verdicts as verdicts

        for col in [c for c in res.mean.columns if c.startswith(prefix)]:
            best = value(res, row, col)
            others = {r: value(res, r, col) for r in res.mean.index if r != row and have(value(res, r, col))}
            if have(best) and others:
                diff = stats.difference(_scale(res, col))
                items = []
                for r, v in others.items():
                    iv = verdicts.interval(res, _name(text, col, r), [[(r, col)], [(row, col)]], diff)
                    items.append((f"{row} {best:.1f} vs {r} {v:.1f}{verdicts.tail(iv, ': ')}", iv, best >= v - 1e-9))
                claim = verdicts.every(text, items, empty, "ablations")
                return Claim(text, claim.holds, f"{col}: {claim.detail}", claim.decided, claim.points)
        return Claim(text, None, empty)

    return check


def highest_mean(text: str, row: str, digits: int, empty: str) -> Check:
    """`row` has the highest mean over the columns every row with data has: one interval of `row` − other (both
    averaged over those columns) per other row, aggregated as `verdicts.every`."""

    def check(res: TableResult) -> Claim:
        import orchestrator.tables.stats as stats
        import orchestrator.tables.verdicts as verdicts

        m = res.mean.dropna(how="all")
        cols = [c for c in m.columns if m[c].notna().all()]
        if row not in m.index or len(m) < 2 or not cols:
            return Claim(text, None, empty)
        avg = m[cols].mean(axis=1)
        diff = stats.difference(_scale(res, cols[0]))
        items = []
        for r in [r for r in m.index if r != row]:
            iv = verdicts.interval(res, _name(text, r), [[(r, c) for c in cols], [(row, c) for c in cols]], diff)
            items.append(
                (
                    f"{row} {avg[row]:.{digits}f} vs {r} {avg[r]:.{digits}f}{verdicts.tail(iv, ': ', '', digits)}",
                    iv,
                    avg[row] >= avg[r] - 1e-9,
                )
            )
        claim = verdicts.every(text, items, empty, "rows")
        return Claim(text, claim.holds, f"mean over {', '.join(cols)}: {claim.detail}", claim.decided, claim.points)

    return check


def mostly_monotone(text: str, x: str, y: str, noun: str, by: str, min_rows: int = 3) -> Check:
    """`y` rises with `x`: Spearman's rho across the rows, bootstrapped on both sides (the same resampled seeds
    and test images for `x` and `y`); ✓ when its interval lies above 0."""

    def check(res: TableResult) -> Claim:
        import orchestrator.tables.stats as stats
        import orchestrator.tables.verdicts as verdicts

        both = res.mean[[x, y]].dropna()
        if len(both) < min_rows:
            return Claim(text, None, f"{len(both)} {noun}(s) with data, need {min_rows}")
        ordered = both.sort_values(x, kind="stable")
        rho = spearman(list(ordered[x]), list(ordered[y]))
        steps = int((ordered[y].diff().dropna() > 0).sum())
        rows = list(ordered.index)
        groups = [[(r, x)] for r in rows] + [[(r, y)] for r in rows]
        iv = verdicts.interval(res, _name(text, *rows), groups, stats.spearman(len(rows)))
        point = (
            f"Spearman rho {rho:.2f}"
            + ("" if isinstance(iv, str) else f" [{iv.lo:+.2f}, {iv.hi:+.2f}] {verdicts.MARK[iv.verdict()]}")
            + f"; {steps}/{len(both) - 1} steps up when {noun}s are sorted by {by} ({', '.join(rows)})"
        )
        return verdicts.single(text, iv, point, have(rho) and rho > 0)

    return check


def gap_grows(text: str, base: str, ours: str, x: str, noun: str) -> Check:
    """The gap `ours` − `base` grows with the row value (rows are numbers, e.g. the data fraction a): the
    least-squares slope of the gap against the row value, bootstrapped; ✓ when its interval lies above 0."""

    def check(res: TableResult) -> Claim:
        import numpy as np

        import orchestrator.tables.stats as stats
        import orchestrator.tables.verdicts as verdicts

        d = (res.mean[ours] - res.mean[base]).dropna()
        if len(d) < 2:  # a slope needs two points
            return Claim(text, None, f"{len(d)} {noun}(s) with both methods, need 2")
        xs = [float(i) for i in d.index]
        groups = [[(r, c)] for r in d.index for c in (base, ours)]
        iv = verdicts.interval(res, _name(text, *d.index), groups, stats.slope(xs, _scale(res, ours)))
        gaps = ", ".join(f"{x}={i}: {v:+.1f}" for i, v in d.items())
        unit = f" points per unit {x}"
        slope = float(np.polyfit(xs, d.to_numpy(dtype=float), 1)[0])
        shown = f"{slope:+.2f}{unit}" if isinstance(iv, str) else verdicts.describe(iv, unit, 2)
        return verdicts.single(text, iv, f"gap {ours} − {base} (points) {gaps}; slope {shown}", slope > 0)

    return check


def loses_and_keeps(text: str, ref: str, loses: str, keeps: str, tolerance: float, noun: str) -> Check:
    """Averaged over the rows where all three have data: `loses` falls below `ref` (interval of ref − loses
    above 0) and `keeps` stays within `tolerance` points of it (interval of keeps − ref + tolerance above 0);
    ✓ if both, ✗ if either interval lies below 0, else ~."""

    def check(res: TableResult) -> Claim:
        import orchestrator.tables.stats as stats
        import orchestrator.tables.verdicts as verdicts

        m = res.mean[[ref, loses, keeps]].dropna()
        if m.empty:
            return Claim(text, None, f"no {noun} with all three models")
        mm = m.mean(axis=0)
        rows, sc = list(m.index), _scale(res, ref)
        lose = verdicts.interval(
            res,
            _name(text, "loses", *rows),
            [[(r, loses) for r in rows], [(r, ref) for r in rows]],
            stats.difference(sc),
        )
        keep = verdicts.interval(
            res,
            _name(text, "keeps", *rows),
            [[(r, ref) for r in rows], [(r, keeps) for r in rows]],
            stats.difference(sc, offset=tolerance),
        )
        points = f"mean over {', '.join(rows)}: {ref} {mm[ref]:.1f}, {loses} {mm[loses]:.1f}, {keeps} {mm[keeps]:.1f}"
        items = [
            (f"{ref} − {loses}{verdicts.tail(lose, ' ') or ' (no interval)'}", lose, mm[loses] < mm[ref]),
            (
                f"{keeps} − {ref} + {tolerance:g}{verdicts.tail(keep, ' ') or ' (no interval)'}",
                keep,
                mm[keeps] >= mm[ref] - tolerance,
            ),
        ]
        claim = verdicts.every(text, items, "", "parts")
        return Claim(text, claim.holds, f"{points}; {claim.detail}", claim.decided, claim.points)

    return check


def beats_apt(text: str, col: str, lower_is_better: bool = False) -> Check:
    """Every student taught by a teacher beats the same student without one (APT: teacher 'none') on `col`:
    one paired interval per student, aggregated as `verdicts.every`."""

    def check(res: TableResult) -> Claim:
        import orchestrator.tables.stats as stats
        import orchestrator.tables.verdicts as verdicts

        items = []
        diff = stats.difference(_scale(res, col), -1.0 if lower_is_better else 1.0)
        for row, where in res.row_where.items():
            if where.get("teacher") in (None, "none"):
                continue
            apt = partner(res, where, "student", {"teacher": "none"})
            a, b = value(res, apt, col) if apt else math.nan, value(res, row, col)
            if have(a, b):
                iv = verdicts.interval(res, _name(text, row), [[(apt, col)], [(row, col)]], diff)
                better = b < a if lower_is_better else b > a
                items.append((f"{row}: {b:.1f} vs APT {a:.1f}{verdicts.tail(iv, ', improvement ')}", iv, better))
        return verdicts.every(text, items, "no student with both APT and a teacher")

    return check
