"""The engine that builds a table from MLflow runs (the data types it reads are in `_types.py`).

A `TableSpec` says which runs it reads (cell or stage runs, narrowed by a filter over their params/tags), its
rows and columns (each a further filter; a column also names the metric, which may contain the row's selection
rule or dataset), how seeds aggregate (mean ± std), the paper's reference values and the paper's claims as check
functions. `build_table` is a pure function of the run DataFrame; rendering lives in render.py.

Why this module stays light: spec.py imports `TABLE_IDS` to validate a sweep's `reproduces:` list before anything
starts, and the registry imports this module, so pandas/numpy are imported inside the functions that need them,
and torch/mlflow never.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from orchestrator.tables._types import AVG_SHIFTS, Col, Outcomes, Row, TableResult, TableSpec, Where
from orchestrator.tables.names import ORDER
from orchestrator.tables.regime import regime_checks

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


# ------------------------------------------------------------------------------------------------ selecting runs


def _column(key: str) -> str:
    return key if key.startswith(("params.", "tags.", "metrics.")) else f"params.{key}"


def match(df: pd.DataFrame, where: Where) -> pd.DataFrame:
    """Rows of `df` whose params/tags equal (or are one of) the given values; a missing column matches nothing."""
    for key, want in where.items():
        col = _column(key)
        if col not in df:
            return df.iloc[0:0]
        allowed = [str(w) for w in want] if isinstance(want, tuple) else [str(want)]
        df = df[df[col].astype(str).isin(allowed)]
    return df


def select_runs(spec: TableSpec, runs: pd.DataFrame) -> pd.DataFrame:
    """The runs a table may read: FINISHED, of the spec's kind and filter, newest per content key.

    Why newest FINISHED: a cell re-run after a failure or a resumed sweep logs the same content key again; the
    newest finished run is the one whose numbers the cache holds.
    """
    if runs.empty or "tags.kind" not in runs:
        return runs.iloc[0:0]
    df = runs[runs["tags.kind"] == spec.source]
    if "status" in df:
        df = df[df["status"] == "FINISHED"]
    df = match(df, spec.where)
    key = "tags.cell" if spec.source == "cell" else "tags.stage_key"
    if "start_time" in df:
        df = df.sort_values("start_time", ascending=False, kind="stable")
    if key in df:
        df = df[df[key].isna() | ~df[key].duplicated()]
    if "run_id" not in df:
        df = df.assign(run_id=[f"row{i}" for i in range(len(df))])
    return df


def _rows(spec: TableSpec, df: pd.DataFrame) -> list[Row]:
    """The spec's static rows, or one row per distinct value (combination) of `rows_from` among the runs."""
    if not spec.rows_from:
        return list(spec.rows)
    cols = [_column(k) for k in spec.rows_from]
    if df.empty or any(c not in df for c in cols):
        return []
    combos = df[cols].dropna().astype(str).drop_duplicates().to_dict("records")
    rows = []
    for combo in combos:
        where = {k: combo[_column(k)] for k in spec.rows_from}
        rows.append(Row(spec.row_label(where) if spec.row_label else " / ".join(where.values()), where))
    return sorted(rows, key=lambda r: tuple(_sort_key(v) for v in r.where.values()))


def _sort_key(v: str) -> tuple:
    """Numbers numerically, known names in the paper's order (APT's 'none' first), the rest alphabetically."""
    try:
        return (0, float(v), "")
    except ValueError:
        return (1, ORDER.index(v), "") if v in ORDER else (2, 0.0, v)


# ------------------------------------------------------------------------------------------------ building


def _values(df: pd.DataFrame, row: Row, col: Col) -> pd.Series:
    """Scaled values of one cell, indexed by run id (one per seed when the table is read as intended)."""
    import pandas as pd

    sub = match(match(df, row.where), col.where)
    metric = "metrics." + col.metric.format(rule=row.rule, dataset=row.dataset)
    if sub.empty or metric not in sub:
        return pd.Series(dtype=float)
    return sub.set_index("run_id")[metric].dropna().astype(float) * col.scale


def _mixing(spec: TableSpec, df: pd.DataFrame, row: Row, col: Col, vals: pd.Series) -> str | None:
    """A warning when one cell averages runs that are not just different seeds of one configuration."""
    if spec.seed is None or len(vals) < 2:
        return None
    seeds = df.set_index("run_id").loc[vals.index].get(_column(spec.seed))
    if seeds is None or not seeds.astype(str).duplicated().any():
        return None
    return f"{row.label} / {col.label}: {len(vals)} runs but only {seeds.astype(str).nunique()} seed(s)"


def _put(frames: tuple, row: str, col: str, vals: pd.Series) -> None:
    mean, std, n = frames
    if len(vals):
        mean.loc[row, col] = vals.mean()
        std.loc[row, col] = vals.std(ddof=1) if len(vals) > 1 else math.nan
        n.loc[row, col] = len(vals)


def _averages(
    spec: TableSpec, per_cell: dict, labels: list[str], mean: pd.DataFrame
) -> list[tuple[Col, list[str], dict]]:
    """'Avg shifts' over the paper's six shifts (only where all six have data), and, when some are missing
    (the local profile has C only), a clearly labelled average over the shifts every row with data has.

    Averaged per run, then over seeds, so the std is that of the average, not a mix of columns.
    Returns (column, the shift columns it averages, row -> per-run values) per average column."""
    import pandas as pd

    shifts = [c.label for c in spec.cols if c.shift]
    with_data = mean[shifts].notna().any(axis=1)
    common = [c for c in shifts if mean.loc[with_data, c].notna().all()] if with_data.any() else []
    out = [(Col(AVG_SHIFTS, ""), shifts)]
    if common and len(common) < len(shifts):
        out.append((Col(f"Avg {', '.join(common)} (shifts with data)", "", extra=True), common))
    result = []
    for col, use in out:
        by_row = {r: pd.concat([per_cell[(r, c)].rename(c) for c in use], axis=1).dropna().mean(axis=1) for r in labels}
        result.append((col, use, by_row))
    return result


def build_table(spec: TableSpec, runs: pd.DataFrame, outcomes: Outcomes | None = None) -> TableResult:
    """Ours (mean, std, n over seeds) beside the paper's values, row by column; then the claims.

    Args:
        spec: the table or figure.
        runs: `tracking.runs_dataframe(...)` (columns run_id, status, start_time, params.*, metrics.*, tags.*).
        outcomes: run id -> its per-example outcomes (trainables/outcomes.py) or None; what the claims'
            bootstrap reads (without it every claim says it has no per-example data).

    Returns:
        The `TableResult`; cells without data are NaN (rendered "—"), never a guess.
    """
    df = select_runs(spec, runs)
    rows = _rows(spec, df)
    frames, per_cell, mixed = _cells(spec, df, rows)
    columns = {c.label: c for c in spec.cols}
    averaged: dict[str, list[str]] = {}
    if spec.avg_shifts:
        frames, averages, averaged = _with_averages(spec, frames, per_cell, [r.label for r in rows])
        columns.update(averages)
    mean, std, n = frames
    n = n.fillna(0).astype(int)
    res = TableResult(
        spec,
        mean,
        std,
        n,
        _paper_frame(spec, mean),
        columns,
        {r.label: dict(r.where) for r in rows},
        warnings=_warnings(df, mixed),
        cell_runs=_cell_runs(spec, df, per_cell),
        components=averaged,
        outcomes=outcomes,
    )
    res.complete = _complete(spec, df, n)
    res.assumptions = regime_checks(spec.source, df, outcomes)
    res.claims = [check(res) for check in spec.claims]
    res.paper_claims = [check(paper_view(res)) for check in spec.claims]
    return res


def _cells(spec: TableSpec, df: pd.DataFrame, rows: list[Row]) -> tuple[tuple, dict, list[str]]:
    """Every (row, spec column) cell: the (mean, std, n) frames, each cell's per-run values (the averages are
    taken over those), and a mixing warning per cell that averages more than seeds."""
    import numpy as np
    import pandas as pd

    labels = [r.label for r in rows]
    cols = [c.label for c in spec.cols if not c.extra] + [c.label for c in spec.cols if c.extra]
    frames = (
        pd.DataFrame(np.nan, index=labels, columns=cols),
        pd.DataFrame(np.nan, index=labels, columns=cols),
        pd.DataFrame(0, index=labels, columns=cols),
    )
    per_cell, mixed = {}, []
    for r in rows:
        for c in spec.cols:
            per_cell[(r.label, c.label)] = vals = _values(df, r, c)
            _put(frames, r.label, c.label, vals)
            if (w := _mixing(spec, df, r, c, vals)) is not None:
                mixed.append(w)
    return frames, per_cell, mixed


def _with_averages(spec: TableSpec, frames: tuple, per_cell: dict, labels: list[str]) -> tuple[tuple, dict, dict]:
    """The frames with the shift averages filled in, placed after the paper's columns ("Avg shifts") and after
    the extra columns (the local average); those average columns by label; and the columns each averages."""
    avgs = _averages(spec, per_cell, labels, frames[0])
    order = (
        [c.label for c in spec.cols if not c.extra]
        + [AVG_SHIFTS]
        + [c.label for c in spec.cols if c.extra]
        + [a.label for a, _, _ in avgs[1:]]
    )
    frames = _with_columns(frames, order)
    for col, _, by_row in avgs:
        for r, vals in by_row.items():
            _put(frames, r, col.label, vals)
    return frames, {col.label: col for col, _, _ in avgs}, {col.label: list(use) for col, use, _ in avgs}


def _cell_runs(spec: TableSpec, df: pd.DataFrame, per_cell: dict) -> dict[tuple[str, str], dict[str, str]]:
    """(row, column) -> {seed: run id} of the runs each cell averages (the first run per seed), so the claims
    can pair two cells' per-example outcomes seed by seed."""
    if df.empty:
        return {}
    seeds = df.set_index("run_id").get(_column(spec.seed or "seed"))
    out: dict[tuple[str, str], dict[str, str]] = {}
    for cell, vals in per_cell.items():
        by_seed: dict[str, str] = {}
        for run in vals.index:
            by_seed.setdefault(str(seeds.loc[run]) if seeds is not None else "0", str(run))
        out[cell] = by_seed
    return out


def _warnings(df: pd.DataFrame, mixed: list[str]) -> list[str]:
    """Why the numbers may not be one configuration's: several sweep invocations, or cells mixing configurations
    (one line for all of them, with the first as the example)."""
    out = []
    if "tags.sweep_id" in df and df["tags.sweep_id"].nunique() > 1:
        out.append(
            f"runs of {df['tags.sweep_id'].nunique()} sweep invocations are read together (pass a sweep id to read one)"
        )
    if mixed:
        out.append(
            f"{len(mixed)} cell(s) average runs that share a seed, i.e. different configurations (e.g. "
            f"{mixed[0]}): read one sweep id, or narrow the sweep"
        )
    return out


def _complete(spec: TableSpec, df: pd.DataFrame, n: pd.DataFrame) -> bool:
    """Whether the runs the paper's item is made of are there: `min_rows` rows with data outside the extra
    columns, and a run for each filter in `needs`."""
    extra = [c.label for c in spec.cols if c.extra]
    rows_with_data = int((n.drop(columns=extra).sum(axis=1) > 0).sum())
    return rows_with_data >= spec.min_rows and all(not match(df, w).empty for w in spec.needs)


def _with_columns(frames: tuple, order: list[str]) -> tuple:
    """Reindex (mean, std, n) to `order`, keeping the frames' identity semantics (new columns NaN / 0)."""
    mean, std, n = frames
    return mean.reindex(columns=order), std.reindex(columns=order), n.reindex(columns=order).fillna(0)


def _paper_frame(spec: TableSpec, mean: pd.DataFrame) -> pd.DataFrame:
    """The paper's values laid out like ours (NaN where the paper prints none)."""
    import numpy as np
    import pandas as pd

    paper = pd.DataFrame(np.nan, index=mean.index, columns=mean.columns)
    for (row, col), v in spec.paper.items():
        if row in paper.index and col in paper.columns:
            paper.loc[row, col] = v
    return paper


def paper_view(res: TableResult) -> TableResult:
    """The same table with the paper's numbers as 'ours' (to run the claims on the paper itself)."""
    return TableResult(
        res.spec,
        res.paper,
        res.paper * float("nan"),
        res.paper.notna().astype(int),
        res.paper,
        res.columns,
        res.row_where,
    )
