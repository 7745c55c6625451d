"""The reproduction report as one self-contained HTML page: a pure function of `SweepReportInput`s, no I/O.

Self-contained on purpose: the page is logged on the parent run and mailed around, so figures are embedded as
base64 `data:` PNGs and the style sheet is inline; no script, no external resource. Every string that comes from
a spec, a run or the paper (titles, labels, claim details, run names, the spec JSON) goes through `html.escape`.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence

from orchestrator import render
from orchestrator.report_data import (
    NOT_CHECKED,
    SweepReportInput,
    anchor,
    claim_pairs,
    run_url,
    settings,
    ui_note,
    varying_axes,
)
from orchestrator.tables import Claim, TableResult

CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 80em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: 90%; }
th, td { border: 1px solid #ccc; padding: .2em .5em; text-align: right; }
th:first-child, td:first-child, table.text td, table.text th { text-align: left; }
.holds { color: #1a7f37; } .fails { color: #cf222e; } .unknown { color: #9a6700; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: 85%; }
img { max-width: 100%; border: 1px solid #eee; }
.legend, .note { color: #555; font-size: 90%; }
dl.settings { display: grid; grid-template-columns: max-content auto; gap: .1em 1em; } dd { margin: 0; }
"""
VERDICT_CLASS = {True: "holds", False: "fails", "x": "fails", "~": "unknown", None: "unknown"}
e = html.escape  # short: it wraps every interpolated string below


def _link(url: str | None, text: str) -> str:
    return f'<a href="{e(url)}">{e(text)}</a>' if url else f"<code>{e(text)}</code>"


def _verdict(c: Claim) -> str:
    return f'<span class="{VERDICT_CLASS[c.verdict]}">{render.MARK[c.verdict]} {e(render.WORD[c.verdict])}</span>'


def _rows(cells: Iterable[Iterable[str]], head: Sequence[str], cls: str = "") -> list[str]:
    """A table from already-escaped cells: the caller escapes, so links and marks can be cells too."""
    out = [f"<table{f' class={cls!r}' if cls else ''}>", "<thead><tr>" + "".join(f"<th>{h}</th>" for h in head)]
    out.append("</tr></thead><tbody>")
    out += ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells]
    return out + ["</tbody></table>"]


# ------------------------------------------------------------------------------------------------ one table


def _data_table(res: TableResult) -> list[str]:
    cols = list(res.mean.columns)
    rows = [[e(str(r))] + [e(render.cell_text(res, r, c)) for c in cols] for r in res.mean.index]
    if res.mean.empty:
        rows = [["(no runs)"] + [e(render.MISSING)] * len(cols)]
    return _rows(rows, [""] + [e(render.header(res, c)) for c in cols])


def _claims(claims: Sequence[tuple[Claim, Claim | None]], title: str) -> list[str]:
    if not claims:
        return []
    out = [f"<h4>{e(title)}</h4>", "<ul>"]
    for ours, paper in claims:
        item = f"<li>{_verdict(ours)}: {e(ours.text)} — {e(ours.detail)}"
        if (theirs := render.paper_text(paper)) is not None:
            item += f" (on the paper's numbers: {e(theirs)})"
        out.append(item + "</li>")
    return out + ["</ul>"]


def table_section(sweep: SweepReportInput, res: TableResult) -> list[str]:
    """One table or figure: heading, embedded PNG (figures), legend, ours (paper) cells, notes, warnings, claims."""
    tid, title = res.spec.id, res.spec.title
    out = [f'<section class="result" id="{e(anchor(sweep, tid))}" data-table="{e(tid)}">', f"<h3>{e(title)}</h3>"]
    if res.spec.kind == "figure":
        data = base64.b64encode(render.to_png(res)).decode("ascii")
        out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{e(title)}"></figure>')
        out.append("<p>Data of the figure:</p>")
    out += [f'<p class="legend">{e(render.legend(res))}</p>', *_data_table(res)]
    if res.spec.note:
        out.append(f'<p class="note"><em>{e(res.spec.note)}</em></p>')
    if res.warnings:
        out += ["<h4>Warnings</h4>", "<ul>", *(f"<li>{e(w)}</li>" for w in res.warnings), "</ul>"]
    out += _claims(claim_pairs(res), "Claims of the paper, checked on these runs")
    return out + ["</section>"]


# ------------------------------------------------------------------------------------------------ one sweep


def _settings(sweep: SweepReportInput) -> list[str]:
    pairs = dict(settings(sweep))
    pairs["parent run"] = _link(run_url(sweep, sweep.parent_run_id), sweep.parent_run_id or "—")
    items = [f"<dt>{e(k)}</dt><dd>{v if k == 'parent run' else e(v)}</dd>" for k, v in pairs.items()]
    return ["<h3>Settings</h3>", '<dl class="settings">', *items, "</dl>"]


def _verdicts(sweep: SweepReportInput) -> list[str]:
    rows = [
        [
            f'<a href="#{e(anchor(sweep, res.spec.id))}">{e(res.spec.id)}</a>',
            e(c.text),
            _verdict(c),
            e(c.detail),
            e(t) if (t := render.paper_text(p)) is not None else "—",
        ]
        for res in sweep.results
        for c, p in claim_pairs(res)
    ]
    out = ["<h3>Claim verdicts</h3>"]
    if not rows:
        return out + ["<p>No table of this sweep checks a claim of the paper.</p>"]
    return out + _rows(rows, ["table", "claim", "verdict", "our numbers", "on the paper's numbers"], "text")


def _assumptions(sweep: SweepReportInput) -> list[str]:
    """Per table: its regime checks (`TableResult.assumptions`, "not checked yet" while None) and its warnings."""
    out = ["<h3>Regime checks / assumptions</h3>"]
    for res in sweep.results:
        out.append(f'<h4 data-assumptions="{e(res.spec.id)}">{e(res.spec.title)}</h4><ul>')
        if res.assumptions is None:
            out.append(f'<li class="unknown">? {NOT_CHECKED}</li>')
        else:
            out += [f"<li>{_verdict(a)}: {e(a.text)} — {e(a.detail)}</li>" for a in res.assumptions]
        out += [f'<li class="fails">warning: {e(w)}</li>' for w in res.warnings]
        out.append("</ul>")
    return out if sweep.results else out + ["<p>No table was built from this sweep.</p>"]


def _runs(sweep: SweepReportInput) -> list[str]:
    axes = varying_axes(sweep.cells)
    rows = [
        [_link(run_url(sweep, c.run_id), c.name), e(c.status), *(e(c.axes.get(a, "")) for a in axes)]
        for c in sweep.cells
    ]
    parent = _link(run_url(sweep, sweep.parent_run_id), sweep.parent_run_id or "—")
    out = ["<h3>Runs in MLflow</h3>", f"<p>Parent run: {parent}. Links open {e(ui_note(sweep))}.</p>"]
    return out + (_rows(rows, ["cell run", "status", *map(e, axes)], "text") if rows else ["<p>No cell runs.</p>"])


def sweep_section(sweep: SweepReportInput) -> list[str]:
    """One sweep: settings, claim verdicts, every table and figure, regime checks, run links, the resolved spec."""
    out = [f'<section class="sweep" id="{e(anchor(sweep))}">', f"<h2>Sweep {e(sweep.name)}</h2>"]
    out += _settings(sweep) + _verdicts(sweep) + ["<h3>Tables and figures</h3>"]
    for res in sweep.results:
        out += table_section(sweep, res)
    if not sweep.results:
        out.append("<p>No table has data in these runs.</p>")
    out += _assumptions(sweep) + _runs(sweep)
    out += ["<h3>Resolved spec</h3>", f'<pre class="spec">{e(sweep.spec_json)}</pre>', "</section>"]
    return out


# ------------------------------------------------------------------------------------------------ the page


def _contents(sweeps: Sequence[SweepReportInput]) -> list[str]:
    out = ["<nav><h2>Contents</h2><ul>"]
    for s in sweeps:
        out.append(f'<li><a href="#{e(anchor(s))}">{e(s.name)}</a> ({e(s.profile)}, {len(s.results)} tables)<ul>')
        for r in s.results:
            claims = e(render.claims_summary(r.claims))
            out.append(f'<li><a href="#{e(anchor(s, r.spec.id))}">{e(r.spec.title)}</a> — claims {claims}</li>')
        out.append("</ul></li>")
    return out + ["</ul></nav>"]


def report_html(sweeps: Sequence[SweepReportInput], title: str = "Reproduction report") -> str:
    """The whole page: contents, then one section per sweep (see `sweep_section`)."""
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        "<p>Efficiently Robustify Pre-Trained Models (ICCV 2023): each table shows ours beside the paper's values, "
        f"ours (paper); {e(render.MISSING)} = no data in these runs.</p>",
    ]
    body = _contents(sweeps)
    for s in sweeps:
        body += sweep_section(s)
    return "\n".join(head + body + ["</body></html>"]) + "\n"
