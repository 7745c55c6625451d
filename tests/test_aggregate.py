"""Every table spec against synthetic runs logged to a real MLflow server, read back by the aggregator; the CLI."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from orchestrator.aggregate import aggregate, main
from orchestrator.tables import TABLE_IDS, TABLES, Row
from orchestrator.tracking import SweepTracker

pytestmark = pytest.mark.integration
DYNAMIC = {("data_fraction",): [{"data_fraction": "0.25"}, {"data_fraction": "0.5"}],
           ("student", "teacher"): [{"student": "clip_rn50", "teacher": "resnet101"},
                                    {"student": "clip_rn50", "teacher": "none"}],
           ("student", "method"): [{"student": "clip_rn50", "method": "ours"},
                                   {"student": "clip_rn50", "method": "full_ft"}]}


def _rows_of(spec) -> list[Row]:
    if not spec.rows_from:
        return list(spec.rows)
    out = []
    for where in DYNAMIC[spec.rows_from]:
        out.append(Row(spec.row_label(where) if spec.row_label else " / ".join(where.values()), where))
    return out


def _log(tracker: SweepTracker, parent: str, spec, i: int, where: dict, metric: str, value: float) -> None:
    params = {k: v for k, v in where.items() if not k.startswith("tags.")}
    tags = {k.removeprefix("tags."): v for k, v in where.items() if k.startswith("tags.")}
    kind = spec.source
    run = tracker.open_child(parent, "synthetic", kind, f"{spec.id}-{i}", f"{spec.id}-{i}", tags, params)
    log = tracker.logger(run)
    log.log_metrics({metric: value})
    log.finish()


@pytest.fixture(scope="module")
def logged(mlflow_server):
    """One experiment holding synthetic runs for every table; expected values per (table, row, col)."""
    groups: dict[tuple, list[float]] = {}
    cells: list[tuple[str, str, str, tuple, float]] = []
    i = 0
    for tid in TABLE_IDS:  # one experiment per table, as one sweep is one experiment
        spec = TABLES[tid]
        tracker = SweepTracker(mlflow_server.uri, f"synthetic-{tid}")
        parent, _ = tracker.open_parent("synthetic", {}, "synthetic")
        for r in _rows_of(spec):
            for c in spec.cols:
                i += 1
                value = 0.3 + (i % 50) / 100.0
                where = {**r.where, **c.where}
                if spec.source == "cell" and "method" not in where:
                    where["method"] = "ours"
                metric = c.metric.format(rule=r.rule)
                _log(tracker, parent, spec, i, where, metric, value)
                group = (tid, tuple(sorted(where.items())), metric)  # rows sharing runs (e.g. Table 1's transfer
                groups.setdefault(group, []).append(value * c.scale)  # columns) read the mean of those runs
                cells.append((tid, r.label, c.label, group, value))
    expected = {(tid, r, c): sum(groups[g]) / len(groups[g]) for tid, r, c, g, _ in cells}
    return mlflow_server.uri, expected


@pytest.mark.parametrize("tid", TABLE_IDS)
def test_table_spec_reads_the_runs_logged_for_it(logged, tmp_path: Path, tid: str) -> None:
    uri, expected = logged
    files = aggregate(uri, f"synthetic-{tid}", tmp_path, tables=[tid], sweep_id="synthetic")
    names = {f.name for f in files}
    assert {f"{tid}.md", f"{tid}.csv", f"{tid}.tex", "index.md"} <= names
    if TABLES[tid].kind == "figure":
        assert f"{tid}.png" in names
    with open(tmp_path / f"{tid}.csv") as f:
        table = {row["row"]: row for row in csv.DictReader(f)}
    checked = 0
    for (t, r, c), v in expected.items():
        if t != tid:
            continue
        got = float(table[r][c])
        assert math.isclose(got, v, rel_tol=1e-4, abs_tol=1e-6), (tid, r, c, got, v)
        checked += 1
    assert checked > 0
    md = (tmp_path / f"{tid}.md").read_text()
    digits = {c.label: c.digits for c in TABLES[tid].cols}
    for (r, c), v in TABLES[tid].paper.items():  # the paper's value sits beside ours
        assert f"({v:.{digits.get(c, 1)}f})" in md, (r, c, v)


def test_cli_exit_codes(logged, tmp_path: Path, capsys) -> None:
    uri, _ = logged
    assert main(["--experiment", "synthetic-supp_table4", "--tracking-uri", uri, "--out", str(tmp_path),
                 "--table", "supp_table4"]) == 0
    assert (tmp_path / "supp_table4.md").is_file()
    assert main(["--experiment", "nope", "--tracking-uri", uri]) == 2
    assert "no such experiment" in capsys.readouterr().err
    assert main(["--experiment", "x", "--table", "supp_tabel4", "--tracking-uri", uri]) == 2
    assert "supp_table4" in capsys.readouterr().err
    assert main(["--experiment", "x", "--tracking-uri", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "no MLflow server" in err and "Traceback" not in err


def test_supp_table5_at_paper_settings(tmp_path: Path) -> None:
    assert main(["--table", "supp_table5", "--profile", "paper", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "supp_table5.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["student", "params_tuned", "params_total"]
    from trainables.models import list_models

    assert [r["student"] for r in rows] == list_models("student")
