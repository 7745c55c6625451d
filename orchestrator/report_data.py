"""What a reproduction report is made of: one `SweepReportInput` per sweep of the invocation, and the small pure
helpers both pages (report.py's Markdown, report_html.py's HTML) share, so the two say the same thing.

Why a module of its own: the Markdown page, the HTML page and the code that reads MLflow all need these types; kept
apart, none of them imports another's I/O, and the renderers stay pure functions of this data.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from orchestrator.tables import Claim, TableResult

NOT_CHECKED = "not checked yet"


@dataclass(frozen=True)
class CellRun:
    """One cell's MLflow run, as the report lists it: its name, status and the axis values it ran with."""

    name: str
    run_id: str
    status: str
    axes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepReportInput:
    """Everything the report shows of one sweep; `report.read_sweep` builds it from MLflow after the sweep.

    Attributes:
        name: the sweep's name (= its MLflow experiment).
        sweep_id: the invocation's id (the spec's content hash); it tags every run of the sweep.
        profile: 'local' or 'paper'.
        spec_json: the resolved spec, as JSON (what ran, with every default filled in).
        code_version: the git commit the sweep ran with ('unknown' outside a checkout).
        tracking_uri: where the runs are; run links are made from it when it is an http(s) server.
        experiment_id: the MLflow experiment's id (None: no links).
        parent_run_id: the sweep's parent run (None: no link, and nothing to log the report onto).
        results: the tables and figures built from the sweep's runs, in the paper's order.
        cells: the sweep's cell runs, for the links to each.
        ui_url: where the runs' MLflow UI is once the sweep is over, when not at `tracking_uri` (a sweep's own
            server stops with it); run links are made from it.
        ui_command: what serves `ui_url` then (`robustify ui --storage ...`), said beside the links.
    """

    name: str
    sweep_id: str
    profile: str
    spec_json: str
    code_version: str
    tracking_uri: str
    experiment_id: str | None
    parent_run_id: str | None
    results: tuple[TableResult, ...] = ()
    cells: tuple[CellRun, ...] = ()
    ui_url: str | None = None
    ui_command: str | None = None


def run_url(sweep: SweepReportInput, run_id: str | None) -> str | None:
    """The run's page in the MLflow UI, `<uri>/#/experiments/<exp id>/runs/<run id>`; None when the tracking
    URI is not a web server (a file or SQLite store has no UI address to link to)."""
    uri = (sweep.ui_url or sweep.tracking_uri).rstrip("/")
    if not run_id or sweep.experiment_id is None or not uri.startswith(("http://", "https://")):
        return None
    return f"{uri}/#/experiments/{sweep.experiment_id}/runs/{run_id}"


def ui_note(sweep: SweepReportInput) -> str:
    """Where the run links lead, said once beside them: the tracking server, or the UI a command serves later."""
    if sweep.ui_url is None:
        return f"the MLflow UI at {sweep.tracking_uri}"
    return f"the MLflow UI at {sweep.ui_url} once `{sweep.ui_command}` serves this store (the sweep's server is gone)"


def anchor(sweep: SweepReportInput, table_id: str | None = None) -> str:
    """A page-unique element id: the sweep's name (and table id), reduced to safe characters.

    Why the sweep's name is in it: one invocation may report several sweeps with the same tables."""
    raw = sweep.name if table_id is None else f"{sweep.name}--{table_id}"
    return "s-" + re.sub(r"[^A-Za-z0-9_.-]", "-", raw)


def varying_axes(cells: Sequence[CellRun], limit: int = 8) -> list[str]:
    """The axes whose values differ between cells (what tells the cells apart), at most `limit` of them."""
    keys = sorted({k for c in cells for k in c.axes})
    return [k for k in keys if len({c.axes.get(k, "") for c in cells}) > 1][:limit]


def claim_pairs(res: TableResult) -> list[tuple[Claim, Claim | None]]:
    """Each claim on our numbers beside the same check on the paper's numbers (None when not available)."""
    paper = list(res.paper_claims) + [None] * (len(res.claims) - len(res.paper_claims))
    return list(zip(res.claims, paper))


def settings(sweep: SweepReportInput) -> list[tuple[str, str]]:
    """The sweep's settings as (label, value) pairs, in the order both pages print them."""
    return [
        ("sweep", sweep.name),
        ("sweep id", sweep.sweep_id),
        ("profile", sweep.profile),
        ("code version (git commit)", sweep.code_version),
        ("tracking URI", sweep.tracking_uri),
        ("experiment id", sweep.experiment_id or "—"),
        ("parent run", sweep.parent_run_id or "—"),
    ]
