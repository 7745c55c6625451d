"""The reproduction report: one page per invocation, every table and figure of its sweep(s) beside the paper's
values, the claim verdicts, the regime checks, the settings and code version, and links to the runs in MLflow.

    sweeps = [read_sweep(uri, spec, sweep_id, parent_run_id, code_version)]   # one per sweep of the invocation
    publish_report(sweeps, storage / "results")   # report.html + report.md, logged on each parent run

`report_markdown` and `report_html.report_html` are pure (data in, text out); `read_sweep` reads MLflow (through
tracking.py) and `write_report` / `publish_report` write and log. The Markdown twin links figures as
`<sweep>/<id>.png`, the files the aggregator writes beside it; the HTML page embeds them and needs nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator import render
from orchestrator.aggregate import build_results
from orchestrator.report_data import (
    NOT_CHECKED,
    CellRun,
    SweepReportInput,
    claim_pairs,
    run_url,
    settings,
    ui_note,
    varying_axes,
)
from orchestrator.report_html import report_html
from orchestrator.tracking import experiment_id, log_artifacts, outcomes_loader, runs_dataframe

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from orchestrator.spec import SweepSpec
    from orchestrator.tables import TableResult

HTML_NAME, MD_NAME = "report.html", "report.md"
__all__ = ["CellRun", "SweepReportInput", "publish_report", "read_sweep", "report_html", "report_markdown"]


# ------------------------------------------------------------------------------------------------ Markdown


def _md(s: str) -> str:
    """A string safe inside a Markdown table cell."""
    return s.replace("|", "\\|").replace("\n", " ")


def _md_link(url: str | None, text: str) -> str:
    return f"[{_md(text)}]({url})" if url else f"`{_md(text)}`"


def _md_verdicts(sweep: SweepReportInput) -> list[str]:
    lines = ["### Claim verdicts", ""]
    rows = [(res, c, p) for res in sweep.results for c, p in claim_pairs(res)]
    if not rows:
        return lines + ["No table of this sweep checks a claim of the paper.", ""]
    lines += ["| table | claim | verdict | our numbers | on the paper's numbers |", "|---|---|---|---|---|"]
    for res, c, p in rows:
        theirs = _md(t) if (t := render.paper_text(p)) is not None else "—"
        verdict = f"{render.MARK[c.verdict]} {render.WORD[c.verdict]}"
        lines.append(f"| {res.spec.id} | {_md(c.text)} | {verdict} | {_md(c.detail)} | {theirs} |")
    return lines + [""]


def _md_assumptions(sweep: SweepReportInput) -> list[str]:
    lines = ["### Regime checks / assumptions", ""]
    for res in sweep.results:
        lines.append(f"- {res.spec.title}:")
        if res.assumptions is None:
            lines.append(f"  - ? {NOT_CHECKED}")
        for a in res.assumptions or []:
            lines.append(f"  - {render.MARK[a.verdict]} {render.WORD[a.verdict]}: {a.text} — {a.detail}")
        lines += [f"  - warning: {w}" for w in res.warnings]
    return lines + ([""] if sweep.results else ["No table was built from this sweep.", ""])


def _md_runs(sweep: SweepReportInput) -> list[str]:
    axes = varying_axes(sweep.cells)
    parent = _md_link(run_url(sweep, sweep.parent_run_id), sweep.parent_run_id or "—")
    lines = ["### Runs in MLflow", "", f"Parent run: {parent} (links open {ui_note(sweep)}).", ""]
    if not sweep.cells:
        return lines + ["No cell runs.", ""]
    lines += ["| cell run | status | " + " | ".join(axes) + " |", "|---|---|" + "---|" * len(axes)]
    for c in sweep.cells:
        vals = " | ".join(_md(c.axes.get(a, "")) for a in axes)
        lines.append(f"| {_md_link(run_url(sweep, c.run_id), c.name)} | {c.status} | {vals} |")
    return lines + [""]


def sweep_markdown(sweep: SweepReportInput) -> list[str]:
    """One sweep's section, in the HTML page's order."""
    lines = [f"## Sweep {sweep.name}", "", "### Settings", ""]
    lines += [f"- {k}: {_md_link(run_url(sweep, v), v) if k == 'parent run' else v}" for k, v in settings(sweep)]
    lines += ["", *_md_verdicts(sweep), "### Tables and figures", ""]
    for res in sweep.results:
        image = f"{sweep.name}/{res.spec.id}.png" if res.spec.kind == "figure" else None
        lines.append(render.to_markdown(res, image=image))
    if not sweep.results:
        lines += ["No table has data in these runs.", ""]
    lines += _md_assumptions(sweep) + _md_runs(sweep)
    return lines + ["### Resolved spec", "", "```json", sweep.spec_json, "```", ""]


def report_markdown(sweeps: Sequence[SweepReportInput], title: str = "Reproduction report") -> str:
    """The Markdown twin of the HTML page (figures linked as files, not embedded)."""
    lines = [f"# {title}", "", "Each table shows ours beside the paper's values, ours (paper).", ""]
    for s in sweeps:
        lines.append(f"- {s.name} ({s.profile}): " + ", ".join(r.spec.id for r in s.results))
    lines.append("")
    for s in sweeps:
        lines += sweep_markdown(s)
    return "\n".join(lines).rstrip("\n") + "\n"


# ------------------------------------------------------------------------------------------------ I/O


def cell_runs(runs: pd.DataFrame) -> tuple[CellRun, ...]:
    """The cell runs of a run DataFrame (any status: a failed cell is listed too), oldest first."""
    if runs.empty or "tags.kind" not in runs:
        return ()
    cells = runs[runs["tags.kind"] == "cell"]
    if "start_time" in cells:
        cells = cells.sort_values("start_time", kind="stable")
    params = [c for c in cells.columns if c.startswith("params.")]
    return tuple(
        CellRun(
            str(r.get("run_name") or r["run_id"]),
            str(r["run_id"]),
            str(r.get("status", "")),
            {p.removeprefix("params."): str(r[p]) for p in params if isinstance(r[p], str)},
        )
        for r in cells.to_dict("records")
    )


def read_sweep(
    uri: str, spec: SweepSpec, sweep_id: str, parent_run_id: str | None, code_version: str
) -> SweepReportInput:
    """Build one sweep's report input from its runs in MLflow (tables as the aggregator builds them)."""
    runs = sweep_runs(uri, spec.name, sweep_id)
    return sweep_input(
        spec,
        runs,
        build_results(finished(runs), list(spec.reproduces) or None, outcomes_loader(uri)),
        sweep_id,
        parent_run_id,
        code_version,
        uri,
    )


def sweep_runs(uri: str, experiment: str, sweep_id: str) -> pd.DataFrame:
    """Every run of one sweep invocation, whatever its status (the report lists failed cells too)."""
    return runs_dataframe(uri, experiment, f"tags.sweep_id = '{sweep_id}'", finished_only=False)


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """The FINISHED runs: what the tables are built from (as `aggregate` reads them)."""
    return runs if runs.empty or "status" not in runs else runs[runs["status"] == "FINISHED"]


def sweep_input(
    spec: SweepSpec,
    runs: pd.DataFrame,
    results: Sequence[TableResult],
    sweep_id: str,
    parent_run_id: str | None,
    code_version: str,
    uri: str,
    ui: tuple[str, str] | None = None,
) -> SweepReportInput:
    """One sweep's report input from runs already read and tables already built (the sweep renders its table
    files from the same `results`, so report and files cannot disagree). `ui`: (URL, command) of the UI that
    serves the runs after the sweep, when not `uri`."""
    return SweepReportInput(
        name=spec.name,
        sweep_id=sweep_id,
        profile=spec.profile,
        spec_json=spec.model_dump_json(indent=1),
        code_version=code_version,
        tracking_uri=uri,
        experiment_id=experiment_id(uri, spec.name),
        parent_run_id=parent_run_id,
        results=tuple(results),
        cells=cell_runs(runs),
        ui_url=ui[0] if ui else None,
        ui_command=ui[1] if ui else None,
    )


def write_report(sweeps: Sequence[SweepReportInput], out_dir: str | Path) -> list[Path]:
    """Write `report.html` and `report.md` for one or several sweeps into `out_dir`; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    page, twin = out / HTML_NAME, out / MD_NAME
    page.write_text(report_html(sweeps), encoding="utf-8")
    twin.write_text(report_markdown(sweeps), encoding="utf-8")
    return [page, twin]


def publish_report(sweeps: Sequence[SweepReportInput], out_dir: str | Path) -> list[Path]:
    """`write_report`, then log both files under `report/` on every sweep's parent run."""
    paths = write_report(sweeps, out_dir)
    for s in sweeps:
        if s.parent_run_id:
            log_artifacts(s.tracking_uri, s.parent_run_id, paths, "report")
    return paths
