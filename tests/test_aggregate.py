"""Every table spec against synthetic sweeps logged through tracking.py to a real MLflow server and read back by
the aggregator: each value lands in its row and column, the paper's value beside it; duplicates, failed re-runs and
sweep ids are handled; the CLI answers bad input with exit code 2 and one line."""

from __future__ import annotations

import csv
import socket
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrator.aggregate import AggregateError, aggregate, main
from orchestrator.tables import TABLE_IDS, TABLES
from orchestrator.tracking import FAILED, LocalMlflowServer, SweepTracker

pytestmark = pytest.mark.integration
RULES = {"wo_kld": "w/o KLD", "wo_umc": "w/o U_mc", "max_logit": "max logit", "ours": "ours"}


def value(run: str, metric: str) -> float:
    """A stable pseudo-random value in [0.3, 0.9) per (run, metric): no two cells share one by accident."""
    return 0.3 + (zlib.crc32(f"{run}/{metric}".encode()) % 6000) / 10000


@dataclass
class R:
    """One synthetic run: a cell (params = the cell's axes) or a stage run."""

    name: str
    params: dict
    metrics: tuple[str, ...]
    stage: str | None = None
    key: str | None = None  # content key; runs sharing one are re-runs of the same cell
    status: str = "FINISHED"
    scale: dict = field(default_factory=dict)

    def values(self) -> dict[str, float]:
        return {m: value(self.name, m) * self.scale.get(m, 1.0) for m in self.metrics}


def _cell(
    name: str,
    student: str,
    teacher: str,
    method: str,
    metrics: tuple[str, ...],
    seed: int = 0,
    fraction: str = "0.5",
    **kw,
) -> R:
    return R(
        name,
        {
            "student": student,
            "teacher": teacher,
            "method": method,
            "seed": seed,
            "data_fraction": "none" if method == "original" else fraction,
        },
        metrics,
        **kw,
    )


RULE_METRICS = tuple(f"{k}/{r}/{s}" for k in ("acc", "f_correct") for r in RULES for s in ("clean", "c"))
PAIRS = (
    ("resnet101", "resnet34"),
    ("clip_rn101", "resnet101"),
    ("clip_vit_b16", "vit_small"),
    ("clip_vit_b32", "vit_small"),
)
T4_TEACHERS = ("resnet34", "resnet50", "resnet101", "vit_small", "resnet152", "vit_base")
T6_TEACHERS = ("resnet34", "resnet50", "resnet101", "vit_small")
TIME = {"time/pipeline_s": 1000.0, "time/train_s": 1000.0}
PARAMS = {"params/tuned": 1e7, "params/total": 1e8}


def sweeps() -> dict[tuple[str, str], list[R]]:
    """(experiment, sweep id) -> runs, shaped like the sweeps in sweeps/*.yaml."""
    big = ("clip_vit_l14_336", "vit_base")
    t3 = [
        _cell(f"kd-{s}-{m}", s, t, m, ("acc/c", "acc/clean"), key=f"kd-{s}-{m}")
        for s, t in PAIRS
        for m in ("wo_kd", "ours")
    ]
    # the RN-101 ← RN-34 ours cell ran again (newer FINISHED run wins), then a third time and failed (ignored)
    t3 += [
        _cell("kd-rerun", "resnet101", "resnet34", "ours", ("acc/c",), key="kd-resnet101-ours"),
        _cell("kd-failed", "resnet101", "resnet34", "ours", ("acc/c",), key="kd-resnet101-ours", status=FAILED),
    ]
    return {
        ("ablations", "abl"): [
            *(
                _cell(f"abl-ours-{s}", *big, "ours", RULE_METRICS + ("acc/c", "acc/transfer/digits"), seed=s)
                for s in (0, 1)
            ),
            *(
                _cell(f"abl-wokd-{s}", *big, "wo_kd", ("acc/ours/clean", "acc/ours/c", "acc/transfer/digits"), seed=s)
                for s in (0, 1)
            ),
        ],
        ("ablations", "abl-old"): [_cell("abl-old", *big, "ours", RULE_METRICS, seed=0)],
        ("kd_pairs", "kd"): t3,
        ("teacher_vs_student", "tvs"): [
            _cell(
                f"tvs-{t}",
                "clip_vit_b16",
                t,
                "ours",
                ("acc/c", "acc/clean", "teacher/acc/c", "teacher/acc/clean", "original/acc/c"),
            )
            for t in T4_TEACHERS
        ],
        ("params", "par"): [
            *(
                _cell(f"par-{s}", s, "none", "original", tuple(PARAMS), scale=PARAMS)
                for s in ("resnet101", "vit_small", "clip_vit_b16")
            ),
            _cell("par-ft", "resnet101", "none", "full_ft", tuple(PARAMS), scale={"params/tuned": 1e9}),
        ],
        ("teacher_mfr", "tm"): [
            *(
                R(f"tm-{st}-{t}", {"model": t, "seed": 0}, ("mfr", "acc/c"), stage=st)
                for t in T6_TEACHERS
                for st in ("naive_teacher", "robustify_teacher")
            ),
            R("tm-pool", {"seed": 0}, ("time/train_s",), stage="build_pool"),
        ],
        ("data_fraction", "df"): [
            _cell(f"df-{m}-{a}", "resnet101", "none" if m == "apt" else "resnet34", m, ("acc/c",), fraction=a)
            for a in ("0.25", "0.5", "1.0")
            for m in ("apt", "ours")
        ],
        ("transfer", "tr"): [
            _cell(f"tr-{m}", *big, m, ("acc/transfer/digits", "acc/c")) for m in ("original", "full_ft", "ours")
        ],
        ("multimodal", "mm"): [
            _cell(f"mm-{s}-{t}", s, t, "apt" if t == "none" else "ours", ("acc/c", "acc/clean"))
            for s in ("clip_rn50", "clip_vit_b16")
            for t in ("none", "resnet101", "vit_small")
        ],
        ("students_mfr", "sm"): [
            _cell(f"sm-{s}-{t}", s, t, "apt" if t == "none" else "ours", ("mfr", "fp/mean"))
            for s in ("clip_rn50", "clip_rn101")
            for t in ("none", "resnet50")
        ],
        ("efficiency", "eff"): [
            _cell(
                f"eff-{s}-{m}", s, "vit_small" if m == "ours" else "none", m, ("acc/c", "acc/clean", *TIME), scale=TIME
            )
            for s in ("clip_rn50", "clip_vit_b16")
            for m in ("ours", "full_ft", "wise_ft")
        ],
    }


SOURCE = {
    "supp_table1": ("ablations", "abl"),
    "supp_table2": ("ablations", "abl"),
    "supp_table3": ("kd_pairs", "kd"),
    "supp_table4": ("teacher_vs_student", "tvs"),
    "supp_table5": ("params", "par"),
    "supp_table6": ("teacher_mfr", "tm"),
    "supp_fig1": ("data_fraction", "df"),
    "supp_fig2": ("transfer", "tr"),
    "supp_fig3": ("multimodal", "mm"),
    "supp_fig4": ("students_mfr", "sm"),
    "main_fig1": ("efficiency", "eff"),
}


def _mean(runs: list[str], metric: str, scale: float = 100.0, factor: float = 1.0) -> float:
    return sum(value(r, metric) * factor for r in runs) / len(runs) * scale


def expected(tid: str) -> dict[tuple[str, str], float]:
    """(row, column) -> value, written from what each run is, not from the spec's filters."""
    seeds = lambda stem: [f"{stem}-0", f"{stem}-1"]  # noqa: E731
    if tid == "supp_table1":
        out = {
            (lbl, col): _mean(seeds("abl-ours"), f"acc/{r}/{s}")
            for r, lbl in RULES.items()
            for col, s in (("IN", "clean"), ("C", "c"))
        }
        out.update(
            {
                ("w/o KD", "IN"): _mean(seeds("abl-wokd"), "acc/ours/clean"),
                ("w/o KD", "C"): _mean(seeds("abl-wokd"), "acc/ours/c"),
                ("w/o KD", "Digits (local transfer)"): _mean(seeds("abl-wokd"), "acc/transfer/digits"),
                **{
                    (lbl, "Digits (local transfer)"): _mean(seeds("abl-ours"), "acc/transfer/digits")
                    for lbl in RULES.values()
                },
            }
        )
        return out
    if tid == "supp_table2":
        return {
            (lbl, col): _mean(seeds("abl-ours"), f"f_correct/{r}/{s}", scale=1.0)
            for r, lbl in RULES.items()
            if r != "max_logit"
            for col, s in (("IN", "clean"), ("C", "c"))
        }
    if tid == "supp_table3":
        lbl = {
            "resnet101": "RN-101 ← RN-34",
            "clip_rn101": "CLIP RN-101 ← RN-101",
            "clip_vit_b16": "CLIP ViT-B/16 ← ViT-S",
            "clip_vit_b32": "CLIP ViT-B/32 ← ViT-S",
        }
        out = {
            (lbl[s], col): _mean([f"kd-{s}-{m}"], "acc/c")
            for s, _ in PAIRS
            for col, m in (("w/o KD", "wo_kd"), ("ours", "ours"))
        }
        out[("RN-101 ← RN-34", "ours")] = _mean(["kd-rerun"], "acc/c")
        return out
    if tid == "supp_table4":
        lbl = dict(zip(T4_TEACHERS, ("RN-34", "RN-50", "RN-101", "ViT-S", "RN-152", "ViT-B")))
        return {
            (lbl[t], col): _mean([f"tvs-{t}"], m)
            for t in T4_TEACHERS
            for col, m in (
                ("Teacher C acc", "teacher/acc/c"),
                ("Student C acc", "acc/c"),
                ("Teacher clean acc", "teacher/acc/clean"),
                ("Student clean acc", "acc/clean"),
                ("Original student C acc", "original/acc/c"),
            )
        }
    if tid == "supp_table5":
        lbl = {"resnet101": "RN-101", "vit_small": "ViT-S", "clip_vit_b16": "CLIP ViT-B/16"}
        return {
            (lbl[s], col): _mean([f"par-{s}"], m, scale=1e-6, factor=PARAMS[m])
            for s in lbl
            for col, m in (("tuned (M)", "params/tuned"), ("total (M)", "params/total"))
        }
    if tid == "supp_table6":
        lbl = dict(zip(T6_TEACHERS, ("RN-34", "RN-50", "RN-101", "ViT-S")))
        return {
            (lbl[t], f"{col}{suffix}"): _mean([f"tm-{st}-{t}"], m)
            for t in T6_TEACHERS
            for col, st in (("naive", "naive_teacher"), ("AugMix+DA", "robustify_teacher"))
            for suffix, m in (("", "mfr"), (" C acc", "acc/c"))
        }
    if tid == "supp_fig1":
        return {
            (a, col): _mean([f"df-{m}-{a}"], "acc/c")
            for a in ("0.25", "0.5", "1.0")
            for col, m in (("APT", "apt"), ("ours", "ours"))
        }
    if tid == "supp_fig2":
        return {
            ("Digits (local transfer)", col): _mean([f"tr-{m}"], "acc/transfer/digits")
            for col, m in (("original", "original"), ("complete FT", "full_ft"), ("ours", "ours"))
        }
    if tid == "supp_fig3":
        lbl = {
            "clip_rn50": "CLIP RN-50",
            "clip_vit_b16": "CLIP ViT-B/16",
            "none": "none (APT)",
            "resnet101": "RN-101",
            "vit_small": "ViT-S",
        }
        return {
            (f"{lbl[s]} ← {lbl[t]}", col): _mean([f"mm-{s}-{t}"], m)
            for s in ("clip_rn50", "clip_vit_b16")
            for t in ("none", "resnet101", "vit_small")
            for col, m in (("IN-C", "acc/c"), ("clean", "acc/clean"))
        }
    if tid == "supp_fig4":
        lbl = {"clip_rn50": "CLIP RN-50", "clip_rn101": "CLIP RN-101", "none": "none (APT)", "resnet50": "RN-50"}
        return {
            (f"{lbl[s]} ← {lbl[t]}", col): _mean([f"sm-{s}-{t}"], m)
            for s in ("clip_rn50", "clip_rn101")
            for t in ("none", "resnet50")
            for col, m in (("mFR", "mfr"), ("mean FP", "fp/mean"))
        }
    lbl = {
        "clip_rn50": "CLIP RN-50",
        "clip_vit_b16": "CLIP ViT-B/16",
        "ours": "ours",
        "full_ft": "complete FT",
        "wise_ft": "WiSE-FT",
    }
    return {
        (f"{lbl[s]} {lbl[m]}", col): _mean([f"eff-{s}-{m}"], metric, scale=sc, factor=f)
        for s in ("clip_rn50", "clip_vit_b16")
        for m in ("ours", "full_ft", "wise_ft")
        for col, metric, sc, f in (
            ("C acc", "acc/c", 100.0, 1.0),
            ("clean acc", "acc/clean", 100.0, 1.0),
            ("training time (s)", "time/pipeline_s", 1.0, 1000.0),
            ("cell training (s)", "time/train_s", 1.0, 1000.0),
        )
    }


def _log(tracker: SweepTracker, parent: str, sweep_id: str, run: R) -> None:
    kind = "stage" if run.stage else "cell"
    tags = {"stage": run.stage} if run.stage else {}
    run_id = tracker.open_child(parent, sweep_id, kind, run.key or run.name, run.name, tags, run.params)
    log = tracker.logger(run_id)
    log.log_metrics(run.values())
    log.finish(run.status)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One real MLflow server for the module, its store at <tmp>/runs/mlflow (the CLI's default layout)."""
    root = tmp_path_factory.mktemp("aggregate")
    srv = LocalMlflowServer(root / "runs" / "mlflow").start()
    try:
        for (experiment, sweep_id), runs in sweeps().items():
            tracker = SweepTracker(srv.uri, experiment)
            parent, _ = tracker.open_parent(sweep_id, {"profile": "local"}, f"{experiment}-local")
            for run in runs:
                _log(tracker, parent, sweep_id, run)
            tracker.logger(parent).finish()
        yield srv, root
    finally:
        srv.stop()


def _csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, encoding="utf-8") as f:
        return {row["row"]: row for row in csv.DictReader(f)}


def _as_written(text: str, v: float, digits: int) -> bool:
    """`text` is `v` rounded to `digits` decimals (a halfway value may round either way: float sums differ)."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    return decimals == digits and abs(float(text) - v) <= 0.5 * 10**-digits + 1e-9


def _md_row(md: str, row: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"| {row} |"))


@pytest.mark.parametrize("tid", TABLE_IDS)
def test_table_reads_the_runs_logged_for_it(server, tmp_path: Path, tid: str) -> None:
    srv, _ = server
    experiment, sweep_id = SOURCE[tid]
    files = aggregate(srv.uri, experiment, tmp_path, tables=[tid], sweep_id=sweep_id)
    exts = {"md", "csv", "tex"} | ({"png"} if TABLES[tid].kind == "figure" else set())
    assert [f.name for f in files] == [f"{tid}.{e}" for e in ("md", "csv", "tex", "png") if e in exts] + ["index.md"]
    table, md = _csv(tmp_path / f"{tid}.csv"), (tmp_path / f"{tid}.md").read_text(encoding="utf-8")
    want = expected(tid)
    for (row, col), v in want.items():  # written with the column's fixed digits, as the Markdown shows it
        assert _as_written(table[row][col], v, _digits(tid, col, paper=False)), (tid, row, col, v)
    filled = {
        (r, c)
        for r, line in table.items()
        for c in line
        if not c.endswith((" std", " n", " paper")) and c != "row" and line[c] != "" and not c.startswith("Avg ")
    }
    assert filled == set(want), f"{tid}: cells with data that no run was logged for: {filled - set(want)}"
    for (row, col), p in TABLES[tid].paper.items():  # the paper's value sits beside ours
        assert float(table[row][f"{col} paper"]) == p
        assert f"({p:.{_digits(tid, col)}f})".replace("(0.", "(.") in _md_row(md, row), (row, col)
    assert "Warnings" not in md


def _digits(tid: str, col: str, paper: bool = True) -> int:
    c = next((c for c in TABLES[tid].cols if c.label == col), None)
    return 1 if c is None else (c.paper_digits if paper and c.paper_digits is not None else c.digits)


def test_missing_columns_are_dashes_beside_the_paper(server, tmp_path: Path) -> None:
    srv, _ = server
    aggregate(srv.uri, "ablations", tmp_path, tables=["supp_table1"], sweep_id="abl")
    row = _md_row((tmp_path / "supp_table1.md").read_text(encoding="utf-8"), "ours")
    assert "| — (79.1) | — (89.9) |" in row and "— (75.6)" in row  # V2, R, Avg shifts: no data locally


def test_sweep_id_selects_one_invocation(server, tmp_path: Path) -> None:
    srv, _ = server
    aggregate(srv.uri, "ablations", tmp_path, tables=["supp_table1"], sweep_id="abl-old")
    table = _csv(tmp_path / "supp_table1.csv")
    assert _as_written(table["ours"]["C"], _mean(["abl-old"], "acc/ours/c"), 1)
    assert table["w/o KD"]["C"] == ""
    aggregate(srv.uri, "ablations", tmp_path / "all", tables=["supp_table1"])
    md = (tmp_path / "all" / "supp_table1.md").read_text(encoding="utf-8")
    assert "runs of 2 sweep invocations are read together" in md and "3 runs but only 2 seed(s)" in md


def test_default_renders_every_table_with_data_and_an_index(server, tmp_path: Path) -> None:
    srv, _ = server
    files = aggregate(srv.uri, "teacher_vs_student", tmp_path, sweep_id="tvs")
    # ours runs with teachers' metrics: Table 4 only, no partial Figure 1 / Figure 3 / main Figure 1
    assert sorted({f.stem for f in files}) == ["index", "supp_table4"]
    assert files[-1].name == "index.md"
    index = (tmp_path / "index.md").read_text(encoding="utf-8")
    assert all(f"[{f.name}]({f.name})" in index for f in files[:-1])


def test_library_bad_input(server, tmp_path: Path) -> None:
    srv, _ = server
    with pytest.raises(AggregateError, match="did you mean 'supp_table4'"):
        aggregate(srv.uri, "ablations", tmp_path, tables=["supp_tabel4"])
    with pytest.raises(AggregateError, match="no experiment 'nope'"):
        aggregate(srv.uri, "nope", tmp_path)
    with pytest.raises(AggregateError, match="sweep id"):
        aggregate(srv.uri, "ablations", tmp_path, sweep_id="x' or '1'='1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exit2(capsys, argv: list[str], needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err, err


def test_cli_bad_input_exits_2_with_one_line(server, tmp_path: Path, capsys, monkeypatch) -> None:
    srv, _ = server
    _exit2(
        capsys,
        ["--experiment", "ablations", "--table", "supp_tabel4", "--tracking-uri", srv.uri],
        "did you mean 'supp_table4'",
    )
    _exit2(capsys, ["--experiment", "nope", "--tracking-uri", srv.uri], "no experiment 'nope'")
    _exit2(
        capsys,
        ["--experiment", "x", "--tracking-uri", f"http://127.0.0.1:{_free_port()}"],
        "no MLflow server answers there",
    )
    _exit2(capsys, ["--experiment", "x", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"], "no SQLite store")
    _exit2(capsys, ["--table", "supp_table4"], "--experiment NAME is required")
    _exit2(capsys, ["--experiment", "x", "--bogus"], "unrecognized arguments: --bogus")
    monkeypatch.chdir(tmp_path)  # no ./runs/mlflow here
    _exit2(capsys, ["--experiment", "x"], "no local MLflow store at runs/mlflow")


def test_cli_reads_the_default_local_store(server, tmp_path: Path, capsys, monkeypatch) -> None:
    """No --tracking-uri: it starts (and stops) a server on ./runs/mlflow and writes ./runs/results/<exp>/."""
    _, root = server
    monkeypatch.chdir(root)
    assert main(["--experiment", "data_fraction", "--sweep-id", "df", "--table", "supp_fig1"]) == 0
    out = root / "runs" / "results" / "data_fraction"
    assert (out / "supp_fig1.png").is_file() and "runs/results/data_fraction/index.md" in capsys.readouterr().out
    assert _as_written(_csv(out / "supp_fig1.csv")["0.5"]["ours"], _mean(["df-ours-0.5"], "acc/c"), 1)


def test_module_entry_point_exit_code() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.aggregate", "--experiment", "x", "--table", "tabel1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown table 'tabel1'")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_aggregate_cli_renders_supp_table5_without_mlflow(tmp_path: Path) -> None:
    """Architectures counted at paper settings through the CLI, no MLflow: one row per registered student."""
    from trainables import models

    assert main(["--table", "supp_table5", "--profile", "paper", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "supp_table5.csv", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["student", "params_tuned", "params_total"]
    assert [r["student"] for r in rows] == models.list_models("student")
    for r in rows:
        assert 0 < int(r["params_tuned"]) < int(r["params_total"]), r
