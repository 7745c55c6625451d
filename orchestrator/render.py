"""Pure renderers: a `TableResult` in, Markdown / CSV / LaTeX text or PNG bytes out. No I/O here.

Every cell shows ours beside the paper's value, `54.3 (55.7)`, with `± std` when several seeds ran; a value with
no data is "—", never a guess; columns the paper does not have (local-only data, diagnostics) are marked †. A
"Claims" section says which of the paper's claims hold on these runs, with the numbers, and whether the same check
holds on the paper's own numbers.

Precision: every number is written with its column's fixed number of decimals, `Col.digits` (one for accuracies
in %, two for F_correct and the mean FP, two for tuned / one for total parameters in millions, none for seconds;
the paper's value with `Col.paper_digits` where the paper printed fewer), identically in Markdown, LaTeX and CSV.
The CSV keeps the leading zero (`0.89` where the tables print `.89`) and leaves a cell without data blank.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from orchestrator.tables import METHODS, MISSING, TIME_COL, Claim, Col, TableResult, pretty

# Keyed by `Claim.verdict`: ✓ / ✗ / ~ come from a bootstrap interval (orchestrator/tables/verdicts.py); ? has none.
MARK = {True: "✓", "x": "✗", False: "✗", "~": "~", None: "?"}
WORD = {True: "holds", "x": "contradicted", False: "does not hold", "~": "inconclusive", None: "not enough data"}
EXTRA = "†"


# ------------------------------------------------------------------------------------------------ cells


def fmt(v: float | None, col: Col, paper: bool = False) -> str:
    """A number as the paper prints it: fixed digits, `.89` for F_correct; "—" for no data."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return MISSING
    d = col.paper_digits if paper and col.paper_digits is not None else col.digits
    s = f"{float(v):.{d}f}"
    if not col.lead_zero and s.startswith(("0.", "-0.")):
        s = s.replace("0.", ".", 1)
    return s


def _has_paper(res: TableResult, col: str) -> bool:
    return bool(res.paper[col].notna().any())


def cell_text(res: TableResult, row: str, col: str) -> str:
    """`ours ± std (paper)`; the paper's part only in columns where the paper printed numbers."""
    c = res.col(col)
    ours = fmt(res.mean.loc[row, col], c)
    sd = res.std.loc[row, col]
    if ours != MISSING and not math.isnan(float(sd)):
        ours += f" ± {fmt(sd, c)}"
    if ours != MISSING and res.spec.seed and _uniform_n(res) is None:  # n varies: each cell says its own
        ours += f" [n={int(res.n.loc[row, col])}]"
    if not _has_paper(res, col):
        return ours
    return f"{ours} ({fmt(res.paper.loc[row, col], c, paper=True)})"


def _uniform_n(res: TableResult) -> int | None:
    """The number of seeds behind every cell with data, when it is the same for all (else None)."""
    ns = {int(v) for v in res.n.to_numpy().ravel() if v > 0}
    return ns.pop() if len(ns) == 1 else None


def header(res: TableResult, col: str) -> str:
    return f"{col} {EXTRA}" if res.col(col).extra else col


def _seeds_legend(res: TableResult) -> str:
    n = _uniform_n(res)
    if n is None:
        return "± = std over seeds, [n=k] = k seeds" if (res.n > 0).any().any() else "± = std over seeds"
    return f"n = {n} seed{'s' if n > 1 else ''} per cell" + (", ± = std over them" if n > 1 else " (no std)")


def legend(res: TableResult) -> str:
    """How to read a cell, one line (the report prints it above each table too)."""
    parts = [
        "Each cell: ours (paper)" if res.paper.notna().any().any() else "Each cell: ours (the paper gives no numbers)",
        *([_seeds_legend(res)] if res.spec.seed else []),
        f"{MISSING} = no data in these runs",
    ]
    if any(res.col(c).extra for c in res.mean.columns):
        parts.append(f"{EXTRA} = not in the paper")
    return "; ".join(parts) + "."


# ------------------------------------------------------------------------------------------------ Markdown


def claims_markdown(res: TableResult) -> str:
    """The "Claims" section: each claim ✓/✗/? with our numbers, and the same check on the paper's numbers."""
    if not res.spec.claims:
        return ""
    lines = ["", "**Claims of the paper, checked on these runs**", ""]
    for ours, paper in zip(res.claims, res.paper_claims or [None] * len(res.claims)):
        line = f"- {MARK[ours.verdict]} {WORD[ours.verdict]}: {ours.text} — {ours.detail}"
        if (theirs := paper_text(paper)) is not None:
            line += f" (on the paper's numbers: {theirs})"
        lines.append(line)
    return "\n".join(lines) + "\n"


def regime_markdown(res: TableResult) -> str:
    """The "Regime checks" section: is the setting the paper's (teacher more robust than S0, S0 converged, no
    teacher at chance)? A failing check reads as a warning: the claims above it are about another regime."""
    if not res.assumptions:
        return ""
    lines = ["", "**Regime checks (the paper's setting)**", ""]
    for a in res.assumptions:
        warn = "warning: " if a.holds is False else ""
        lines.append(f"- {MARK[a.holds]} {warn}{a.text} — {a.detail}")
    return "\n".join(lines) + "\n"


def paper_text(paper: Claim | None) -> str | None:
    """The same check on the paper's own numbers: a point-estimate direction (the paper gives no per-example
    data, so no interval and no verdict), or None when the paper has none of the compared numbers."""
    if paper is None or (paper.points is None and paper.holds is None):
        return None
    if paper.holds is not None:
        return f"{MARK[paper.verdict]} {paper.detail}"
    return f"points {'agree' if paper.points else 'disagree'}: {paper.detail}"


def _notes(res: TableResult) -> list[str]:
    out = [f"_{res.spec.note}_"] if res.spec.note else []
    if res.warnings:
        out += ["", "**Warnings**", ""] + [f"- {w}" for w in res.warnings]
    return out


def markdown_table(res: TableResult) -> list[str]:
    cols = list(res.mean.columns)
    lines = ["| | " + " | ".join(header(res, c) for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for row in res.mean.index:
        lines.append(f"| {row} | " + " | ".join(cell_text(res, row, c) for c in cols) + " |")
    if res.mean.empty:
        lines.append("| (no runs) |" + f" {MISSING} |" * len(cols))
    return lines


def to_markdown(res: TableResult, image: str | None = None) -> str:
    """The table (or, for a figure, the image and its data as a table), notes, warnings and claims."""
    lines = [f"### {res.spec.title}", ""]
    if image:
        lines += [f"![{res.spec.title}]({image})", "", "Data of the figure:", ""]
    lines += [legend(res), "", *markdown_table(res)]
    notes = _notes(res)
    body = "\n".join(lines + ([""] + notes if notes else [])) + "\n"
    return body + claims_markdown(res) + regime_markdown(res)


# ------------------------------------------------------------------------------------------------ CSV


def _csv_number(v: float | None, digits: int) -> str:
    """A number with exactly `digits` decimals, as the Markdown/LaTeX cell shows it; blank for no data.

    Why text and not floats: pandas would write the float's shortest repr (`88.999999` from a mean of 0.89
    scaled by 100), and `8.0` for an 8 shown as `8.00`; fixed text keeps every file saying the same number.
    """
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{float(v):.{digits}f}"


def to_csv(res: TableResult) -> str:
    """One line per row: per column the mean, std, number of runs and the paper's value (blank = none).

    Mean and std carry the column's `Col.digits` decimals, the paper's value its `paper_digits` (else `digits`):
    the numbers the Markdown and LaTeX print, but always with the leading zero (`0.89`, not `.89`) so every
    spreadsheet reads them as numbers.
    """
    import pandas as pd

    out = pd.DataFrame(index=pd.Index(res.mean.index, name="row"))
    for c in res.mean.columns:
        col = res.col(c)
        paper_digits = col.paper_digits if col.paper_digits is not None else col.digits
        out[c] = [_csv_number(v, col.digits) for v in res.mean[c]]
        out[f"{c} std"] = [_csv_number(v, col.digits) for v in res.std[c]]
        out[f"{c} n"] = res.n[c].astype(int)
        out[f"{c} paper"] = [_csv_number(v, paper_digits) for v in res.paper[c]]
    return out.to_csv(lineterminator="\n")


# ------------------------------------------------------------------------------------------------ LaTeX

_TEX = (
    ("\\", r"\textbackslash{}"),
    ("&", r"\&"),
    ("%", r"\%"),
    ("$", r"\$"),
    ("#", r"\#"),
    ("_", r"\_"),
    ("{", r"\{"),
    ("}", r"\}"),
    ("~", r"\textasciitilde{}"),
    ("^", r"\textasciicircum{}"),
    ("←", r"$\leftarrow$"),
    ("±", r"$\pm$"),
    ("—", "---"),
    ("≥", r"$\geq$"),
    ("×", r"$\times$"),
    ("−", "$-$"),
    ("→", r"$\rightarrow$"),
    (EXTRA, r"\dag{}"),
    ("✓", "yes"),
    ("✗", "no"),
)


def tex(s: str) -> str:
    """Escape text for LaTeX (underscores, %, &, …) and spell our few non-ASCII symbols in LaTeX."""
    out = []
    for ch in s:
        out.append(next((b for a, b in _TEX if a == ch), ch))
    return "".join(out)


def to_latex(res: TableResult) -> str:
    """A booktabs `tabular` ready to `\\input` (needs `\\usepackage{booktabs}`); cells are `ours (paper)`."""
    cols = list(res.mean.columns)
    lines = [
        f"% {tex(res.spec.title)}",
        "% generated by orchestrator.aggregate; needs \\usepackage{booktabs}",
        f"% {tex(legend(res))}",
        r"\begin{tabular}{l" + "r" * len(cols) + "}",
        r"\toprule",
        " & " + " & ".join(tex(header(res, c)) for c in cols) + r" \\",
        r"\midrule",
    ]
    for row in res.mean.index:
        lines.append(tex(str(row)) + " & " + " & ".join(tex(cell_text(res, row, c)) for c in cols) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [
        f"% claim {tex(MARK[c.verdict])} {tex(WORD[c.verdict])}: {tex(c.text)} -- {tex(c.detail)}" for c in res.claims
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ PNG

FIGSIZE, DPI = (6.4, 4.0), 100


def _plotted(res: TableResult) -> list[str]:
    return [c for c in res.mean.columns if not res.col(c).extra and res.mean[c].notna().any()]


def _line(ax, res: TableResult) -> None:
    x = [float(i) for i in res.mean.index]
    for c in _plotted(res):
        ax.plot(x, res.mean[c].to_numpy(dtype=float), marker="o", label=c)


def _bar(ax, res: TableResult) -> None:
    """Grouped bars, one group per row that has data (rows without any, e.g. paper-only datasets, are left out)."""
    cols = _plotted(res)
    m = res.mean.loc[res.mean[cols].notna().any(axis=1), cols]
    width = 0.8 / max(len(cols), 1)
    for i, c in enumerate(cols):
        xs = [j + (i - (len(cols) - 1) / 2) * width for j in range(len(m.index))]
        ax.bar(xs, m[c].fillna(0.0).to_numpy(dtype=float), width, label=c)
    ax.set_xticks(range(len(m.index)), [str(r) for r in m.index], rotation=20, ha="right", fontsize=7)


def _scatter(ax, res: TableResult) -> None:
    """Main Figure 1: one point per (student, method), coloured by method, labelled with the student."""
    pts = res.mean[["C acc", TIME_COL]].dropna() if {"C acc", TIME_COL} <= set(res.mean) else res.mean.iloc[0:0]
    methods = sorted({res.row_where[r].get("method", "") for r in pts.index}, key=list(METHODS).index)
    for k, m in enumerate(methods):
        sub = pts[[res.row_where[r].get("method") == m for r in pts.index]]
        ax.scatter(sub[TIME_COL], sub["C acc"], color=f"C{k}", label=METHODS.get(m, m))
        for r, (c, t) in sub.iterrows():
            ax.annotate(
                pretty(res.row_where[r].get("student", "")),
                (t, c),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
    if len(pts) and (pts[TIME_COL] > 0).all():
        ax.set_xscale("log")


def to_png(res: TableResult) -> bytes:
    """A figure spec as PNG bytes: deterministic (Agg canvas, fixed size and dpi, no Software/date metadata)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    plotted = _plotted(res)
    if not plotted:
        ax.text(0.5, 0.5, "no data in these runs", ha="center", va="center", transform=ax.transAxes)
    else:
        {"line": _line, "scatter": _scatter}.get(res.spec.plot, _bar)(ax, res)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    ax.set_xlabel(res.spec.xlabel)
    ax.set_ylabel(res.spec.ylabel)
    ax.set_title(res.spec.title, fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ files, index


def render_files(res: TableResult) -> dict[str, str | bytes]:
    """Every file of one table, by name: `<id>.md`, `.csv`, `.tex`, and `.png` for figures."""
    tid = res.spec.id
    png = f"{tid}.png" if res.spec.kind == "figure" else None
    files: dict[str, str | bytes] = {
        f"{tid}.md": to_markdown(res, image=png),
        f"{tid}.csv": to_csv(res),
        f"{tid}.tex": to_latex(res),
    }
    if png:
        files[png] = to_png(res)
    return files


def claims_summary(claims: Sequence[Claim]) -> str:
    """`2 ✓, 1 ?`: how many claims hold, fail, lack data ("—" for a table without claims)."""
    if not claims:
        return MISSING
    return ", ".join(
        f"{sum(MARK[c.verdict] == m for c in claims)} {m}"
        for m in ("✓", "✗", "~", "?")
        if any(MARK[c.verdict] == m for c in claims)
    )


def claim_lines(results: Sequence[TableResult]) -> list[str]:
    """One terminal line per claim: `table: ✓ holds: text — numbers, interval`."""
    return [
        f"  {r.spec.id}: {MARK[c.verdict]} {WORD[c.verdict]}: {c.text} — {c.detail}" for r in results for c in r.claims
    ]


def index_markdown(items: Sequence[tuple[TableResult, Sequence[str]]], extra: Sequence[str] = ()) -> str:
    """`index.md`: every produced file, per table, with how many of its claims hold (✓), fail (✗), lack data (?)."""
    lines = [
        "# Tables and figures",
        "",
        f"Each table shows ours beside the paper's values; {MISSING} = no data in these runs.",
        "",
    ]
    if not items:
        lines.append("No table has data in these runs.")
    else:
        lines += ["| id | title | claims | files |", "|---|---|---|---|"]
        for res, files in items:
            links = ", ".join(f"[{f}]({f})" for f in files)
            lines.append(f"| {res.spec.id} | {res.spec.title} | {claims_summary(res.claims)} | {links} |")
    if extra:
        lines += ["", "Other files: " + ", ".join(f"[{f}]({f})" for f in extra)]
    return "\n".join(lines) + "\n"
