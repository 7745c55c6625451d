"""The paper's tables and figures as declarative specs, and the engine that builds them from MLflow runs.

Transitional: everything still lives in `_engine.py`; this package re-exports what callers import.
"""
from orchestrator.tables._engine import (AVG_SHIFTS, METHODS, MISSING, TABLE_IDS, TABLES, TIME_COL, Claim, Col,
                                         TableResult, TableSpec, build_table, pretty)

__all__ = ["AVG_SHIFTS", "METHODS", "MISSING", "TABLE_IDS", "TABLES", "TIME_COL", "Claim", "Col", "TableResult",
           "TableSpec", "build_table", "pretty"]
