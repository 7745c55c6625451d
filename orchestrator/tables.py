"""Declarative specs of every table and figure of the supplement (and the main paper's Figure 1).

A `TableSpec` says which runs it reads (cell or stage runs), its rows and columns (each a filter on the runs'
params plus, for columns, the metric, which may name the row's selection rule), how seeds aggregate (mean ± std),
the paper's reference values, and the paper's claims as checks. `build_table` is a pure function of the run
DataFrame; rendering lives in render.py. This module imports neither torch nor mlflow (spec.py validates
`reproduces:` against TABLE_IDS).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

MISSING = "—"


@dataclass(frozen=True)
class Row:
    label: str
    where: dict[str, str] = field(default_factory=dict)   # param -> value (cell runs) or stage/model (stage runs)
    rule: str = "ours"                                      # substituted for {rule} in column metrics


@dataclass(frozen=True)
class Col:
    label: str
    metric: str                                             # may contain {rule}
    where: dict[str, str] = field(default_factory=dict)
    scale: float = 100.0                                    # accuracies are fractions in MLflow; tables show %
    digits: int = 1
    shift: bool = False                                     # counts towards "Avg shifts"


@dataclass(frozen=True)
class Claim:
    text: str
    holds: bool | None                                      # None: not enough data at this scale
    detail: str


@dataclass(frozen=True)
class TableSpec:
    id: str
    title: str
    kind: str                                               # 'table' | 'figure'
    source: str                                             # 'cell' | 'stage'
    rows: tuple[Row, ...] = ()
    cols: tuple[Col, ...] = ()
    rows_from: tuple[str, ...] = ()                         # dynamic rows: distinct values of these params
    row_label: Callable[[dict], str] | None = None
    paper: dict[tuple[str, str], float] = field(default_factory=dict)
    avg_shifts: bool = False
    claims: tuple[Callable[["TableResult"], Claim], ...] = ()
    plot: str = ""                                          # 'line' | 'bar' | 'scatter' for figures
    note: str = ""


@dataclass
class TableResult:
    spec: TableSpec
    mean: pd.DataFrame                                      # rows x cols, numbers already scaled (NaN = no data)
    std: pd.DataFrame
    n: pd.DataFrame
    paper: pd.DataFrame
    claims: list[Claim]


# ------------------------------------------------------------------------------------------------ building


def latest_finished(runs: pd.DataFrame, source: str) -> pd.DataFrame:
    """The runs a table may read: FINISHED, of the right kind, newest per content key."""
    if runs.empty or "tags.kind" not in runs:
        return runs.iloc[0:0]
    df = runs[(runs["tags.kind"] == source) & (runs.get("status", "FINISHED") == "FINISHED")]
    key = "tags.cell" if source == "cell" else "tags.stage_key"
    if key in df and "start_time" in df:
        df = df.sort_values("start_time", ascending=False).drop_duplicates(key)
    return df


def _match(df: pd.DataFrame, where: dict[str, str]) -> pd.DataFrame:
    for k, v in where.items():
        col = f"params.{k}" if not k.startswith(("tags.", "params.")) else k
        if col not in df:
            return df.iloc[0:0]
        df = df[df[col].astype(str) == str(v)]
    return df


def _rows(spec: TableSpec, df: pd.DataFrame) -> list[Row]:
    if not spec.rows_from:
        return list(spec.rows)
    cols = [f"params.{k}" for k in spec.rows_from]
    if df.empty or any(c not in df for c in cols):
        return []
    combos = df[cols].drop_duplicates().astype(str).to_dict("records")
    out = []
    for combo in combos:
        where = {k: combo[f"params.{k}"] for k in spec.rows_from}
        label = spec.row_label(where) if spec.row_label else " / ".join(where.values())
        out.append(Row(label, where))
    return sorted(out, key=lambda r: _sort_key(r.where))


def _sort_key(where: dict[str, str]) -> tuple:
    return tuple((float(v), "") if _is_number(v) else (math.inf, v) for v in where.values())


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def build_table(spec: TableSpec, runs: pd.DataFrame) -> TableResult:
    """Ours (mean/std/n over seeds) and the paper's values, row by column; then the claims."""
    df = latest_finished(runs, spec.source)
    rows = _rows(spec, df)
    labels = [r.label for r in rows] or [r.label for r in spec.rows]
    cols = [c.label for c in spec.cols]
    mean = pd.DataFrame(np.nan, index=labels, columns=cols)
    std, n = mean.copy(), pd.DataFrame(0, index=labels, columns=cols)
    for r in rows:
        sub = _match(df, r.where)
        for c in spec.cols:
            metric = "metrics." + c.metric.format(rule=r.rule)
            vals = _match(sub, c.where)
            vals = vals[metric].dropna().astype(float) * c.scale if metric in vals else pd.Series(dtype=float)
            if len(vals):
                mean.loc[r.label, c.label] = vals.mean()
                std.loc[r.label, c.label] = vals.std(ddof=1) if len(vals) > 1 else np.nan
                n.loc[r.label, c.label] = len(vals)
    if spec.avg_shifts:
        shift_cols = [c.label for c in spec.cols if c.shift]
        mean["Avg shifts"] = mean[shift_cols].mean(axis=1, skipna=True)
        std["Avg shifts"], n["Avg shifts"] = np.nan, mean[shift_cols].notna().sum(axis=1)
    paper = pd.DataFrame(np.nan, index=mean.index, columns=mean.columns)
    for (rl, cl), v in spec.paper.items():
        if rl in paper.index and cl in paper.columns:
            paper.loc[rl, cl] = v
    result = TableResult(spec, mean, std, n, paper, [])
    result.claims = [check(result) for check in spec.claims]
    return result


# ------------------------------------------------------------------------------------------------ claims


def _val(res: TableResult, row: str, col: str) -> float:
    try:
        v = res.mean.loc[row, col]
    except KeyError:
        return math.nan
    return float(v)


def claim_ours_beats_ablations(res: TableResult) -> Claim:
    ours = _val(res, "ours", "Avg shifts")
    others = {r: _val(res, r, "Avg shifts") for r in res.mean.index if r != "ours"}
    others = {r: v for r, v in others.items() if not math.isnan(v)}
    if math.isnan(ours) or not others:
        return Claim("ours ≥ each ablation on the shift average", None, "not enough data")
    worse = [f"{r} {v:.1f}" for r, v in others.items() if v > ours + 1e-9]
    detail = f"ours {ours:.1f} vs " + ", ".join(f"{r} {v:.1f}" for r, v in others.items())
    return Claim("ours ≥ each ablation on the shift average", not worse, detail)


def claim_ours_highest_fcorrect(res: TableResult) -> Claim:
    means = res.mean.mean(axis=1, skipna=True).dropna()
    if "ours" not in means or len(means) < 2:
        return Claim("ours sends the most inputs to the right head (F_correct)", None, "not enough data")
    detail = ", ".join(f"{r} {v:.2f}" for r, v in means.items())
    return Claim("ours sends the most inputs to the right head (F_correct)", bool(means["ours"] >= means.max() - 1e-9),
                 f"mean F_correct over sets with data: {detail}")


def claim_kd_beats_wo_kd(res: TableResult) -> Claim:
    pairs = [(r, _val(res, r, "w/o KD"), _val(res, r, "ours")) for r in res.mean.index]
    pairs = [p for p in pairs if not (math.isnan(p[1]) or math.isnan(p[2]))]
    if not pairs:
        return Claim("KD beats w/o KD for every pair", None, "not enough data")
    detail = "; ".join(f"{r}: {a:.1f} → {b:.1f}" for r, a, b in pairs)
    return Claim("KD beats w/o KD for every pair", all(b > a for _, a, b in pairs), detail)


def claim_better_teacher_better_student(res: TableResult) -> Claim:
    t = res.mean.get("Teacher C acc")
    s = res.mean.get("Student C acc")
    if t is None or s is None:
        return Claim("a better teacher gives a better student", None, "not enough data")
    both = pd.DataFrame({"t": t, "s": s}).dropna()
    if len(both) < 3:
        return Claim("a better teacher gives a better student", None, f"{len(both)} teachers with data")
    rho = float(both["t"].rank().corr(both["s"].rank()))
    ordered = both.sort_values("t")
    steps = int((ordered["s"].diff().dropna() > 0).sum())
    return Claim("a better teacher gives a better student (mostly monotone)", rho > 0,
                 f"Spearman rho {rho:.2f}; {steps}/{len(both) - 1} steps up when sorted by teacher C accuracy")


def claim_robust_teachers_flip_less(res: TableResult) -> Claim:
    both = res.mean[["naive", "AugMix+DA"]].dropna() if {"naive", "AugMix+DA"} <= set(res.mean) else pd.DataFrame()
    if both.empty:
        return Claim("robustified teachers flip less (lower mFR)", None, "not enough data")
    detail = "; ".join(f"{r}: {a:.1f} → {b:.1f}" for r, (a, b) in both.iterrows())
    return Claim("robustified teachers flip less (lower mFR)", bool((both["AugMix+DA"] < both["naive"]).all()),
                 detail)


def claim_gap_grows_with_fraction(res: TableResult) -> Claim:
    if not {"APT", "ours"} <= set(res.mean):
        return Claim("the ours-vs-APT gap grows with a", None, "not enough data")
    d = (res.mean["ours"] - res.mean["APT"]).dropna()
    if len(d) < 2:
        return Claim("the ours-vs-APT gap grows with a", None, f"{len(d)} fractions with both methods")
    a = np.array([float(i) for i in d.index])
    slope = float(np.polyfit(a, d.values, 1)[0])
    return Claim("the ours-vs-APT gap grows with a", slope > 0,
                 f"gap (points) " + ", ".join(f"a={i}: {v:+.1f}" for i, v in d.items()) + f"; slope {slope:+.2f}")


def claim_transfer_kept(res: TableResult) -> Claim:
    m = res.mean.dropna(how="all")
    if m.empty or not {"original", "complete FT", "ours"} <= set(m):
        return Claim("complete fine-tuning loses transfer accuracy, ours keeps it", None, "not enough data")
    mm = m[["original", "complete FT", "ours"]].mean(axis=0)
    if mm.isna().any():
        return Claim("complete fine-tuning loses transfer accuracy, ours keeps it", None, "not enough data")
    holds = bool(mm["complete FT"] < mm["original"] and mm["ours"] >= mm["original"] - 1.0)
    return Claim("complete fine-tuning loses transfer accuracy, ours keeps it", holds,
                 f"mean transfer accuracy: original {mm['original']:.1f}, complete FT {mm['complete FT']:.1f}, "
                 f"ours {mm['ours']:.1f} (kept = within 1 point of the original)")


def claim_ours_cheaper(res: TableResult) -> Claim:
    m = res.mean
    if not {"C acc", "train time (s)"} <= set(m):
        return Claim("ours reaches comparable C accuracy in much less training time", None, "not enough data")
    ours = m[m.index.str.contains("ours")].dropna()
    ft = m[m.index.str.contains("complete FT")].dropna()
    if ours.empty or ft.empty:
        return Claim("ours reaches comparable C accuracy in much less training time", None, "not enough data")
    t_ratio = ft["train time (s)"].mean() / max(ours["train time (s)"].mean(), 1e-9)
    gap = ours["C acc"].mean() - ft["C acc"].mean()
    return Claim("ours reaches comparable C accuracy in much less training time", bool(t_ratio > 1 and gap > -5),
                 f"complete FT takes {t_ratio:.1f}x the training time of ours; C accuracy ours − complete FT "
                 f"= {gap:+.1f} points")


# ------------------------------------------------------------------------------------------------ the specs

SETS = [("IN", "clean"), ("V2", "v2"), ("R", "r"), ("Sketch", "sketch"), ("ObjectNet", "objectnet"), ("A", "a"),
        ("C", "c")]
SHIFTS = {"V2", "R", "Sketch", "ObjectNet", "A", "C"}
T1_ROWS = (Row("w/o KLD", {"method": "ours"}, "wo_kld"), Row("w/o U_mc", {"method": "ours"}, "wo_umc"),
           Row("max logit", {"method": "ours"}, "max_logit"), Row("w/o KD", {"method": "wo_kd"}, "ours"),
           Row("ours", {"method": "ours"}, "ours"))
T1_COLS = tuple(Col(lbl, f"acc/{{rule}}/{s}", shift=lbl in SHIFTS) for lbl, s in SETS) + (
    Col("Tiny-IN", "acc/transfer/tiny_imagenet"), Col("Flowers", "acc/transfer/flowers102"),
    Col("Digits (local transfer)", "acc/transfer/digits"))
_T1 = {"ours": [85.4, 79.1, 89.9, 65.8, 73.2, 80.9, 64.9, 85.2, 98.7, 75.6],
       "w/o KLD": [84.7, 78.3, 89.3, 65.6, 72.8, 79.3, 63.1, 85.2, 98.7, 74.7],
       "w/o U_mc": [83.9, 77.7, 88.4, 64.9, 71.5, 77.6, 62.2, 85.2, 98.7, 73.7],
       "max logit": [84.2, 77.6, 88.1, 64.1, 71.5, 79.2, 62.9, 85.2, 98.7, 73.7],
       "w/o KD": [84.9, 77.6, 86.8, 63.2, 70.3, 78.3, 62.1, 85.4, 98.8, 73.1]}
_T1_COLS = ["IN", "V2", "R", "Sketch", "ObjectNet", "A", "C", "Tiny-IN", "Flowers", "Avg shifts"]
_T2 = {"w/o KLD": [.89, .82, .71, .82, .79, .83], "w/o U_mc": [.71, .69, .72, .61, .63, .71],
       "ours": [.95, .94, .89, .84, .92, .94]}
_T2_SETS = [("IN", "clean"), ("R", "r"), ("Sketch", "sketch"), ("ObjectNet", "objectnet"), ("A", "a"), ("C", "c")]
_T3_PAIRS = [("resnet101", "resnet34", "RN-101 ← RN-34", 53.8, 55.3),
             ("clip_rn101", "resnet101", "CLIP RN-101 ← RN-101", 54.9, 56.7),
             ("clip_vit_b16", "vit_small", "CLIP ViT-B/16 ← ViT-S", 55.1, 57.4),
             ("clip_vit_b32", "vit_small", "CLIP ViT-B/32 ← ViT-S", 54.5, 57.1)]
_T4 = [("resnet34", "RN-34", 55.7, 54.3), ("resnet50", "RN-50", 57.6, 56.9), ("resnet101", "RN-101", 58.7, 57.2),
       ("vit_small", "ViT-S", 60.9, 57.4), ("resnet152", "RN-152", 62.4, 59.7), ("vit_base", "ViT-B", 63.2, 62.5)]
_T5 = [("resnet101", 2.1, 45), ("resnet152", 2.6, 60), ("vit_small", 2.3, 48), ("vit_base", 3.1, 88),
       ("clip_rn50", 3.9, 102), ("clip_rn101", 4.1, 119), ("clip_vit_b16", 4.3, 149), ("clip_vit_b32", None, None),
       ("clip_vit_l14_336", 5.6, 450)]
_T6 = [("resnet34", "RN-34", 59.8, 41.6), ("resnet50", "RN-50", 57.1, 37.5), ("resnet101", "RN-101", 52.7, 34.6),
       ("vit_small", "ViT-S", 49.2, 33.4)]
TRANSFER = [("Cars", "stanford_cars"), ("CIFAR-100", "cifar100"), ("Aircraft", "fgvc_aircraft"), ("SUN-397", "sun397"),
            ("Digits (local)", "digits")]


def _teacher_label(w: dict) -> str:
    t = w.get("teacher", "none")
    return f"{w.get('student', '')} ← {'none (APT)' if t == 'none' else t}".strip()


TABLES: dict[str, TableSpec] = {t.id: t for t in [
    TableSpec("supp_table1", "Supplement Table 1: accuracy of the inference and KD ablations", "table", "cell",
              rows=T1_ROWS, cols=T1_COLS, avg_shifts=True,
              paper={(r, c): v for r, vals in _T1.items() for c, v in zip(_T1_COLS, vals)},
              claims=(claim_ours_beats_ablations,),
              note="Avg shifts = mean over V2, R, Sketch, ObjectNet, A, C that have data. The paper prints 73.7 "
                   "for max logit, but its six shift values average 73.9 (a typo in the paper)."),
    TableSpec("supp_table2", "Supplement Table 2: F_correct (fraction of inputs sent to the right head)", "table",
              "cell", rows=tuple(r for r in T1_ROWS if r.label in ("w/o KLD", "w/o U_mc", "ours")),
              cols=tuple(Col(lbl, f"f_correct/{{rule}}/{s}", scale=1.0, digits=2) for lbl, s in _T2_SETS),
              paper={(r, c): v for r, vals in _T2.items() for c, v in zip([s[0] for s in _T2_SETS], vals)},
              claims=(claim_ours_highest_fcorrect,)),
    TableSpec("supp_table3", "Supplement Table 3: ImageNet-C accuracy, w/o KD vs ours", "table", "cell",
              rows=tuple(Row(lbl, {"student": s, "teacher": t}) for s, t, lbl, _, _ in _T3_PAIRS),
              cols=(Col("w/o KD", "acc/c", {"method": "wo_kd"}), Col("ours", "acc/c", {"method": "ours"})),
              paper={**{(lbl, "w/o KD"): a for _, _, lbl, a, _ in _T3_PAIRS},
                     **{(lbl, "ours"): b for _, _, lbl, _, b in _T3_PAIRS}},
              claims=(claim_kd_beats_wo_kd,),
              note="w/o KD cells are keyed by the same teacher as ours (same data per head, no soft targets)."),
    TableSpec("supp_table4", "Supplement Table 4: teacher vs student corruption accuracy (student CLIP ViT-B/16)",
              "table", "cell", rows=tuple(Row(lbl, {"teacher": t, "method": "ours"}) for t, lbl, _, _ in _T4),
              cols=(Col("Teacher C acc", "teacher/acc/c"), Col("Student C acc", "acc/c"),
                    Col("Student clean acc", "acc/clean"), Col("Original student C acc", "original/acc/c")),
              paper={**{(lbl, "Teacher C acc"): a for _, lbl, a, _ in _T4},
                     **{(lbl, "Student C acc"): b for _, lbl, _, b in _T4}},
              claims=(claim_better_teacher_better_student,)),
    TableSpec("supp_table5", "Supplement Table 5: tuned / total parameters (millions)", "table", "cell",
              rows=tuple(Row(s, {"student": s}) for s, _, _ in _T5),
              cols=(Col("tuned (M)", "params/tuned", scale=1e-6, digits=2),
                    Col("total (M)", "params/total", scale=1e-6, digits=1)),
              paper={**{(s, "tuned (M)"): a for s, a, _ in _T5 if a}, **{(s, "total (M)"): b for s, _, b in _T5 if b}},
              note="From cell runs the counts are at the run's profile settings (local: 32 px, 10 classes); "
                   "`--table supp_table5 --profile paper` counts the architectures at paper settings."),
    TableSpec("supp_table6", "Supplement Table 6: teacher mFR, naive vs AugMix+DeepAugment", "table", "stage",
              rows=tuple(Row(lbl, {"model": t}) for t, lbl, _, _ in _T6),
              cols=(Col("naive", "mfr", {"tags.stage": "naive_teacher"}),
                    Col("AugMix+DA", "mfr", {"tags.stage": "robustify_teacher"})),
              paper={**{(lbl, "naive"): a for _, lbl, a, _ in _T6}, **{(lbl, "AugMix+DA"): b for _, lbl, _, b in _T6}},
              claims=(claim_robust_teachers_flip_less,),
              note="mFR relative to the sweep's reference model (the paper uses AlexNet), x100."),
    TableSpec("supp_fig1", "Supplement Figure 1: C accuracy vs data fraction a, APT vs ours", "figure", "cell",
              rows_from=("data_fraction",), row_label=lambda w: w["data_fraction"],
              cols=(Col("APT", "acc/c", {"method": "apt"}), Col("ours", "acc/c", {"method": "ours"})),
              claims=(claim_gap_grows_with_fraction,), plot="line"),
    TableSpec("supp_fig2", "Supplement Figure 2: transfer accuracy, original vs complete FT vs ours", "figure",
              "cell", rows=tuple(Row(lbl, {}) for lbl, _ in TRANSFER),
              cols=(Col("original", "acc/transfer/{rule}", {"method": "original"}),
                    Col("complete FT", "acc/transfer/{rule}", {"method": "full_ft"}),
                    Col("ours", "acc/transfer/{rule}", {"method": "ours"})),
              claims=(claim_transfer_kept,), plot="bar"),
    TableSpec("supp_fig3", "Supplement Figure 3: multi-modal students, teachers none (APT) / single-modal",
              "figure", "cell", rows_from=("student", "teacher"), row_label=_teacher_label,
              cols=(Col("IN-C", "acc/c"), Col("IN-R", "acc/r"), Col("ObjectNet", "acc/objectnet"),
                    Col("ObjectNet-C", "acc/objectnet_c")), plot="bar"),
    TableSpec("supp_fig4", "Supplement Figure 4: mFR of CLIP students, teachers none (APT) / single-modal",
              "figure", "cell", rows_from=("student", "teacher"), row_label=_teacher_label,
              cols=(Col("mFR", "mfr"), Col("mean FP", "fp/mean")), plot="bar"),
    TableSpec("main_fig1", "Main paper Figure 1: C accuracy vs training time", "figure", "cell",
              rows_from=("student", "method"), row_label=lambda w: f"{w['student']} {_METHOD.get(w['method'], w['method'])}",
              cols=(Col("C acc", "acc/c"), Col("train time (s)", "time/pipeline_s", scale=1.0)),
              claims=(claim_ours_cheaper,), plot="scatter",
              note="Training time of ours includes robustifying the teacher, extracting features and computing "
                   "teacher targets; of complete FT / WiSE-FT the complete fine-tuning."),
]}
_METHOD = {"full_ft": "complete FT", "wise_ft": "WiSE-FT", "ours": "ours", "apt": "APT", "wo_kd": "w/o KD",
           "original": "original"}
# Supplement Figure 2's rows are datasets: the {rule} slot of its metrics carries the dataset name.
TABLES["supp_fig2"] = TableSpec(**{**TABLES["supp_fig2"].__dict__,
                                   "rows": tuple(Row(lbl, {}, ds) for lbl, ds in TRANSFER)})
TABLE_IDS: tuple[str, ...] = tuple(TABLES)
