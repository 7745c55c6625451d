"""The registry of the paper's tables and figures: `TABLES` (id -> spec) and `TABLE_IDS`, in the paper's order.

An explicit ordered tuple rather than a registering decorator: the order is what the aggregator renders, the
index lists and the CLI's help shows, and it must not depend on which module happens to be imported first.
"""

from __future__ import annotations

from orchestrator.tables._types import AVG_SHIFTS, TableSpec
from orchestrator.tables.main_fig1 import SPEC as MAIN_FIG1
from orchestrator.tables.supp_fig1 import SPEC as SUPP_FIG1
from orchestrator.tables.supp_fig2 import SPEC as SUPP_FIG2
from orchestrator.tables.supp_fig3 import SPEC as SUPP_FIG3
from orchestrator.tables.supp_fig4 import SPEC as SUPP_FIG4
from orchestrator.tables.supp_table1 import SPEC as SUPP_TABLE1
from orchestrator.tables.supp_table2 import SPEC as SUPP_TABLE2
from orchestrator.tables.supp_table3 import SPEC as SUPP_TABLE3
from orchestrator.tables.supp_table4 import SPEC as SUPP_TABLE4
from orchestrator.tables.supp_table5 import SPEC as SUPP_TABLE5
from orchestrator.tables.supp_table6 import SPEC as SUPP_TABLE6
from trainables.vocab import did_you_mean

# The supplement's tables, then its figures, then the main paper's Figure 1.
ORDERED = (
    SUPP_TABLE1,
    SUPP_TABLE2,
    SUPP_TABLE3,
    SUPP_TABLE4,
    SUPP_TABLE5,
    SUPP_TABLE6,
    SUPP_FIG1,
    SUPP_FIG2,
    SUPP_FIG3,
    SUPP_FIG4,
    MAIN_FIG1,
)


def _check_paper_keys(spec: TableSpec) -> None:
    """Every paper value must name a row and a column of its spec.

    Why: `build_table` places paper values by label and skips the rest, so a typo in a label would silently
    drop the paper's number from the table; here it fails at import, naming the close match.
    """
    rows = [r.label for r in spec.rows]
    cols = [c.label for c in spec.cols] + ([AVG_SHIFTS] if spec.avg_shifts else [])
    for row, col in spec.paper:
        if row not in rows:
            raise ValueError(f"{spec.id}: paper value for unknown row {row!r}{did_you_mean(row, rows)}")
        if col not in cols:
            raise ValueError(f"{spec.id}: paper value for unknown column {col!r}{did_you_mean(col, cols)}")


def register(specs: tuple[TableSpec, ...]) -> dict[str, TableSpec]:
    """Id -> spec in the given order, after checking each spec's paper values.

    Raises:
        ValueError: an id is registered twice, or a paper value names no row/column of its spec.
    """
    tables: dict[str, TableSpec] = {}
    for spec in specs:
        if spec.id in tables:
            raise ValueError(f"table id {spec.id!r} is registered twice")
        _check_paper_keys(spec)
        tables[spec.id] = spec
    return tables


TABLES: dict[str, TableSpec] = register(ORDERED)
TABLE_IDS: tuple[str, ...] = tuple(TABLES)
