"""The data types of a table spec: rows, columns, claims, the spec itself and what building it returns.

Plain frozen dataclasses (the engine in `_engine.py` builds `TableResult`s from them; each paper item's module
declares a `TableSpec`). Light on purpose: spec.py imports the registry to validate `reproduces:` before anything
starts, so nothing heavy (pandas only for type checking) is imported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

AVG_SHIFTS = "Avg shifts"
Where = Mapping[str, str | tuple[str, ...]]  # key: bare param name, `params.x` or `tags.x`; value or values
Outcomes = Callable[[str], "Mapping[str, object] | None"]  # run id -> {metric name: per-example array} or None


# ------------------------------------------------------------------------------------------------ data types


def _plain(value):
    """A closed-vocabulary member (or a tuple of them) as its plain value.

    Why: specs name `Method.ours` so a typo fails at import, but runs hold the string 'ours', and `str()` of a
    str-Enum member is 'Method.ours', which would match nothing.
    """
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value.value if isinstance(value, Enum) else value


def _plain_where(where: Where) -> dict:
    return {key: _plain(want) for key, want in where.items()}


@dataclass(frozen=True)
class Row:
    """One table row: a filter on the runs, plus what it substitutes into the column metrics."""

    label: str
    where: Where = field(default_factory=dict)
    rule: str = "ours"  # `{rule}` in a column metric: the selection rule this row reads
    dataset: str = ""  # `{dataset}` in a column metric (Figure 2's rows are transfer datasets)

    def __post_init__(self) -> None:
        object.__setattr__(self, "where", _plain_where(self.where))
        object.__setattr__(self, "rule", _plain(self.rule))


@dataclass(frozen=True)
class Col:
    """One column: the metric per cell and how it is shown.

    `extra` marks a column that is not in the paper (local-only data such as the digits transfer set, or a
    diagnostic); renderers label it so nobody compares it with a paper number.
    """

    label: str
    metric: str  # MLflow metric name; may contain {rule} / {dataset}
    where: Where = field(default_factory=dict)
    scale: float = 100.0  # accuracies are fractions in MLflow; the paper prints percentages
    digits: int = 1
    lead_zero: bool = True  # False prints .89 like the paper's F_correct
    shift: bool = False  # counts towards "Avg shifts"
    extra: bool = False
    paper_digits: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "where", _plain_where(self.where))


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims checked on our numbers.

    holds: True (✓, the bootstrap interval excludes no effect, in the claim's direction), False (✗, it excludes
    the claim: the effect goes the other way), None: inconclusive (~, `decided` but the interval covers no effect)
    or not decidable (?, no data or no per-example data). `detail` carries the numbers and the interval.
    """

    text: str
    holds: bool | None
    detail: str
    decided: bool = False  # an interval was computed (so holds=None means inconclusive, not "no data")
    # What the point estimates alone say (never shown as a verdict): how a claim's encoding is checked against
    # the paper's own numbers, which have no per-example data and so no interval.
    points: bool | None = None

    @property
    def verdict(self) -> bool | str | None:
        """The key renderers look marks up by: True, "x" (contradicted by an interval), False (fails, no
        interval: a regime check), "~" (inconclusive) or None (no data)."""
        if self.decided and self.holds is not True:
            return "x" if self.holds is False else "~"
        return self.holds

    def __post_init__(self) -> None:  # numpy booleans would break `holds is True` checks downstream
        for name in ("holds", "points"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, bool(getattr(self, name)))


@dataclass(frozen=True)
class TableSpec:
    """A paper table or figure, declaratively.

    Attributes:
        id: stable id used by sweeps' `reproduces:` and the output file names.
        title: the caption printed above the table.
        kind: 'table' or 'figure' (figures also render a PNG).
        source: which runs it reads: 'cell' (`tags.kind == 'cell'`) or 'stage' runs.
        where: a filter every run it reads must pass (params or tags).
        rows: static rows; or `rows_from` params whose distinct values become rows (figures' x axes).
        row_label: the label of a `rows_from` row from its param values (default: the values joined by " / ").
        cols: the columns.
        seed: the param aggregated over (mean ± std); None when runs are not seeded (parameter counts).
        paper: (row label, column label) -> the paper's printed value.
        avg_shifts: add "Avg shifts" (mean over V2, R, Sketch, ObjectNet, A, C, as in the paper).
        needs, min_rows: what makes the table worth rendering when no table is asked for by name: a run matching
            each filter in `needs`, and at least `min_rows` rows with data (a one-point curve is no figure).
        claims: check functions over the built `TableResult`.
        plot: 'line' | 'bar' | 'scatter' for figures; xlabel/ylabel name the axes.
        note: printed under the table.
    """

    id: str
    title: str
    kind: Literal["table", "figure"]
    source: Literal["cell", "stage"]
    where: Where = field(default_factory=dict)
    rows: tuple[Row, ...] = ()
    cols: tuple[Col, ...] = ()
    rows_from: tuple[str, ...] = ()
    row_label: Callable[[dict], str] | None = None
    seed: str | None = "seed"
    paper: Mapping[tuple[str, str], float] = field(default_factory=dict)
    avg_shifts: bool = False
    needs: tuple[Where, ...] = ()
    min_rows: int = 1
    claims: tuple[Callable[[TableResult], Claim], ...] = ()
    plot: Literal["", "line", "bar", "scatter"] = ""
    xlabel: str = ""
    ylabel: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "where", _plain_where(self.where))
        object.__setattr__(self, "needs", tuple(_plain_where(w) for w in self.needs))


def grid(values: Mapping[str, Sequence[float | None]], cols: Sequence[str]) -> dict[tuple[str, str], float]:
    """The paper's values as `TableSpec.paper` takes them: {row: one value per column} -> {(row, col): value}.

    None marks a cell the paper leaves empty; it is left out, so ours shows beside no paper value.
    """
    return {(r, c): v for r, vals in values.items() for c, v in zip(cols, vals, strict=True) if v is not None}


@dataclass
class TableResult:
    """What `build_table` returns: ours and the paper's values, row by column, and the claims.

    `mean`, `std`, `n` and `paper` share index (row labels) and columns (column labels, including computed
    averages); values are already scaled for display (NaN = no data). `paper_claims` are the same checks run on the
    paper's own numbers (a sanity check of how the claims are encoded).
    """

    spec: TableSpec
    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    paper: pd.DataFrame
    columns: dict[str, Col]
    row_where: dict[str, dict]
    claims: list[Claim] = field(default_factory=list)
    paper_claims: list[Claim] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    complete: bool = False  # the runs the paper's item is made of are there (see TableSpec.needs)
    # The regime checks (assumptions the paper's setting makes, e.g. teacher vs student): None = not checked yet,
    # which the report says; a later table spec fills this list, the report renders it as it renders claims.
    assumptions: list[Claim] | None = None
    # Per-example data for the claims' bootstrap (orchestrator/tables/verdicts.py): which run fills each
    # (row, column) cell per seed, the columns an average column averages, and the loader of a run's outcomes.
    cell_runs: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    components: dict[str, list[str]] = field(default_factory=dict)
    outcomes: Outcomes | None = None

    def col(self, label: str) -> Col:
        """The column's spec, by label (an average column's too)."""
        return self.columns.get(label) or Col(label, "")
