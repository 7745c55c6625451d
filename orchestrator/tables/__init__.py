"""The paper's tables and figures as declarative specs, and the engine that builds them from MLflow runs.

Layout: `_engine` (the spec data types and `build_table`), `claims` (claim machinery and generic checks),
`names` (the paper's names for models and methods), one module per paper item (`supp_table1` … `supp_table6`,
`supp_fig1` … `supp_fig4`, `main_fig1`: its spec, paper values, labels and claims) and `registry` (their order).
Callers import from here; rendering lives in render.py.

Why the package stays light: spec.py imports `TABLE_IDS` to validate a sweep's `reproduces:` list before anything
starts, so importing it loads neither pandas/numpy (imported inside the functions that need them) nor torch/mlflow.
"""

from orchestrator.tables._engine import build_table
from orchestrator.tables._types import AVG_SHIFTS, Claim, Col, TableResult, TableSpec
from orchestrator.tables.main_fig1 import TIME_COL
from orchestrator.tables.names import METHODS, MISSING, pretty
from orchestrator.tables.registry import TABLE_IDS, TABLES

# What render.py, aggregate.py, spec.py and the tests import; spec authors import from the submodules.
__all__ = [
    "AVG_SHIFTS",
    "METHODS",
    "MISSING",
    "TABLES",
    "TABLE_IDS",
    "TIME_COL",
    "Claim",
    "Col",
    "TableResult",
    "TableSpec",
    "build_table",
    "pretty",
]
