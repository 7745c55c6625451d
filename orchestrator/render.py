"""Pure renderers: a `TableResult` in, Markdown / CSV / LaTeX text or PNG bytes out. No I/O here.

Every cell shows ours beside the paper's value: `54.3 (55.7)`, with `±std` when several seeds ran; a value with no
data is "—", never a guess. A "Claims" section says which of the paper's claims hold at this scale, with numbers.
"""
from __future__ import annotations

import io
import math

import pandas as pd

from orchestrator.tables import MISSING, TableResult


def _digits(res: TableResult, col: str) -> int:
    for c in res.spec.cols:
        if c.label == col:
            return c.digits
    return 1


def _fmt(v: float, d: int) -> str:
    return MISSING if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"


def cell_text(res: TableResult, row: str, col: str) -> str:
    d = _digits(res, col)
    ours = _fmt(res.mean.loc[row, col], d)
    sd = res.std.loc[row, col]
    if ours != MISSING and not (isinstance(sd, float) and math.isnan(sd)):
        ours += f" ± {sd:.{d}f}"
    return f"{ours} ({_fmt(res.paper.loc[row, col], d)})"


def claims_markdown(res: TableResult) -> str:
    if not res.claims:
        return ""
    mark = {True: "✓ holds", False: "✗ does not hold", None: "? not enough data"}
    lines = ["", "**Claims of the paper, checked on this run**", ""]
    lines += [f"- {mark[c.holds]}: {c.text} — {c.detail}" for c in res.claims]
    return "\n".join(lines) + "\n"


def to_markdown(res: TableResult) -> str:
    cols = list(res.mean.columns)
    lines = [f"### {res.spec.title}", "", "Each cell: ours (paper). " + MISSING + " = no data in this run.", "",
             "| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for row in res.mean.index:
        lines.append(f"| {row} | " + " | ".join(cell_text(res, row, c) for c in cols) + " |")
    if res.spec.note:
        lines += ["", f"_{res.spec.note}_"]
    return "\n".join(lines) + "\n" + claims_markdown(res)


def to_csv(res: TableResult) -> str:
    out = pd.DataFrame(index=res.mean.index)
    out.index.name = "row"
    for c in res.mean.columns:
        out[c] = res.mean[c].round(4)
        out[f"{c} std"] = res.std[c].round(4)
        out[f"{c} n"] = res.n[c].astype(int)
        out[f"{c} paper"] = res.paper[c]
    return out.to_csv(lineterminator="\n")


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("←", r"$\leftarrow$"), ("±", r"$\pm$"), ("—", "---"), ("✓", r"\checkmark")):
        s = s.replace(a, b)
    return s


def to_latex(res: TableResult) -> str:
    cols = list(res.mean.columns)
    lines = [r"% " + _tex(res.spec.title) + " -- generated; \\input{} it (needs \\usepackage{booktabs})",
             r"\begin{tabular}{l" + "c" * len(cols) + "}", r"\toprule",
             " & " + " & ".join(_tex(c) for c in cols) + r" \\", r"\midrule"]
    for row in res.mean.index:
        lines.append(_tex(str(row)) + " & " + " & ".join(_tex(cell_text(res, row, c)) for c in cols) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"% cells: ours (paper)"]
    return "\n".join(lines) + "\n"


def to_png(res: TableResult) -> bytes:
    """Deterministic PNG of a figure spec (Agg backend, fixed size/dpi, no timestamp metadata)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    m = res.mean
    if res.spec.plot == "line":
        x = [float(i) for i in m.index]
        for c in m.columns:
            ax.plot(x, m[c].values, marker="o", label=c)
        ax.set_xlabel("data fraction a")
        ax.set_ylabel("C accuracy (%)")
    elif res.spec.plot == "scatter" and m.shape[1] >= 2:
        for row in m.index:
            ax.scatter(m.loc[row].iloc[1], m.loc[row].iloc[0], label=row)
        ax.set_xlabel(m.columns[1])
        ax.set_ylabel(m.columns[0])
        ax.set_xscale("log")
    else:
        m.plot.bar(ax=ax, rot=20)
        ax.set_ylabel("value")
    ax.set_title(res.spec.title, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def index_markdown(entries: list[tuple[str, str, list[str]]]) -> str:
    """entries: (table id, title, file names)."""
    lines = ["# Tables and figures of this sweep", "", "Each cell: ours (paper); — = no data.", ""]
    for tid, title, files in entries:
        lines.append(f"- **{tid}** — {title}: " + ", ".join(f"[{f}]({f})" for f in files))
    return "\n".join(lines) + "\n"
