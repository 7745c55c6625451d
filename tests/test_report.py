"""The reproduction report: built from every table (pure renderers, fixed run DataFrames) and from a real
aggregation (runs logged to a real MLflow server, read back by `read_sweep`, published on the parent runs), then
opened in headless Chromium: every table and figure is on the page, every image is an embedded PNG that loads,
links lead to the runs in the MLflow UI, user strings are escaped, and regime checks say "not checked yet" until
a table carries them."""

from __future__ import annotations

import base64
import dataclasses
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from orchestrator.report import (
    SweepReportInput,
    publish_report,
    read_sweep,
    report_html,
    report_markdown,
    write_report,
)
from orchestrator.report_data import CellRun, anchor
from orchestrator.spec import load_spec
from orchestrator.tables import TABLE_IDS, TABLES, Claim
from orchestrator.tracking import LocalMlflowServer, SweepTracker, list_artifacts
from tests.test_aggregate import _log, sweeps
from tests.test_mlflow_ui import chromium, needs_chromium
from tests.test_render import result

PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """What the tests read from a page: element ids, table sections, images, links and the visible text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.tables: list[str] = []
        self.imgs: list[dict[str, str]] = []
        self.links: list[str] = []
        self.scripts = 0
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.ids += [a["id"]] if "id" in a else []
        self.tables += [a["data-table"]] if "data-table" in a else []
        self.imgs += [a] if tag == "img" else []
        self.links += [a["href"]] if tag == "a" and "href" in a else []
        self.scripts += tag == "script"

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _png_of(img: dict[str, str]) -> bytes:
    src = img["src"]
    assert src.startswith("data:image/png;base64,"), src[:60]
    return base64.b64decode(src.removeprefix("data:image/png;base64,"), validate=True)


def fixed_sweep(name: str = "all_tables", **kw) -> SweepReportInput:
    """Every registered table, built by the engine from the snapshot tests' fixed runs."""
    base = {
        "name": name,
        "sweep_id": "abc123",
        "profile": "local",
        "spec_json": '{"name": "all_tables"}',
        "code_version": "deadbee",
        "tracking_uri": "http://127.0.0.1:5000",
        "experiment_id": "7",
        "parent_run_id": "parent0",
        "results": tuple(result(t) for t in TABLE_IDS),
        "cells": (CellRun("cell-a", "run-a", "FINISHED", {"method": "ours", "seed": "0"}),),
    }
    return SweepReportInput(**{**base, **kw})


# ------------------------------------------------------------------------------------------------ pure pages


def test_every_table_and_figure_is_on_the_page_with_an_embedded_png() -> None:
    sweep = fixed_sweep()
    page = Page(report_html([sweep]))
    assert page.tables == list(TABLE_IDS)
    assert {anchor(sweep, t) for t in TABLE_IDS} <= set(page.ids)
    figures = [t for t in TABLE_IDS if TABLES[t].kind == "figure"]
    assert len(page.imgs) == len(figures) and all(_png_of(i).startswith(PNG) for i in page.imgs)
    assert page.scripts == 0 and not [u for u in page.links if not u.startswith(("#", "http://127.0.0.1:5000/"))]
    text = "".join(page.text)
    for t in TABLE_IDS:
        assert TABLES[t].title in text
    assert "90.5 ± 0.7 (85.4)" in text  # ours (paper), as the Markdown table shows it
    assert "KD beats w/o KD for every pair" in text and "no per-example data: no interval" in text  # no verdict


def test_settings_links_and_spec_are_shown() -> None:
    page = Page(report_html([fixed_sweep()]))
    text = "".join(page.text)
    for needle in ("abc123", "deadbee", "local", '{"name": "all_tables"}', "cell-a"):
        assert needle in text, needle
    assert "http://127.0.0.1:5000/#/experiments/7/runs/parent0" in page.links
    assert "http://127.0.0.1:5000/#/experiments/7/runs/run-a" in page.links
    no_ui = Page(report_html([fixed_sweep(tracking_uri="sqlite:///x/mlflow.db")]))
    assert not [u for u in no_ui.links if not u.startswith("#")]  # a file store has no UI to link to


def test_links_of_a_sweep_whose_own_server_is_gone_lead_to_robustify_ui() -> None:
    """A sweep that started its own MLflow server (a free port, stopped with the sweep) links its runs where
    `robustify ui` serves the store afterwards, and says which command serves them, on both pages."""
    cmd = "robustify ui --storage /data/runs"
    sweep = fixed_sweep(tracking_uri="http://127.0.0.1:42721", ui_url="http://127.0.0.1:5000", ui_command=cmd)
    page = Page(report_html([sweep]))
    assert "http://127.0.0.1:5000/#/experiments/7/runs/run-a" in page.links
    assert not [u for u in page.links if "42721" in u]
    assert f"the MLflow UI at http://127.0.0.1:5000 once `{cmd}` serves this store" in "".join(page.text)
    md = report_markdown([sweep])
    assert "(http://127.0.0.1:5000/#/experiments/7/runs/run-a)" in md and cmd in md and "42721/#" not in md


def test_regime_checks_say_not_checked_yet_until_a_table_carries_them() -> None:
    t4 = result("supp_table4")
    checked = dataclasses.replace(t4, assumptions=[Claim("teacher more robust than student", False, "RN-34: 50.0")])
    html = report_html([fixed_sweep(results=(result("supp_table1"), checked))])
    section = html[html.index("Regime checks / assumptions") :]
    assert section.count("not checked yet") == 1  # Table 1 has none; Table 4 has its check
    assert "✗ does not hold</span>: teacher more robust than student — RN-34: 50.0" in section
    md = report_markdown([fixed_sweep(results=(result("supp_table1"), checked))])
    assert "  - ? not checked yet" in md and "  - ✗ does not hold: teacher more robust than student" in md


def test_user_strings_are_escaped() -> None:
    evil = "<script>alert(1)</script>"
    html = report_html([fixed_sweep(name=evil, spec_json=evil, cells=(CellRun(evil, '"><b', "FINISHED"),))])
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert Page(html).scripts == 0 and '"><b' not in html


def test_several_sweeps_have_their_own_sections() -> None:
    a, b = fixed_sweep("one"), fixed_sweep("two", results=(result("supp_table4"),))
    page = Page(report_html([a, b]))
    assert anchor(a) in page.ids and anchor(b) in page.ids
    assert page.tables == [*TABLE_IDS, "supp_table4"] and len(set(page.ids)) == len(page.ids)
    md = report_markdown([a, b])
    assert "## Sweep one" in md and "## Sweep two" in md and "(one/supp_fig1.png)" in md


def test_markdown_twin_holds_each_table_as_render_writes_it() -> None:
    from orchestrator import render

    md = report_markdown([fixed_sweep()])
    for t in TABLE_IDS:
        image = f"all_tables/{t}.png" if TABLES[t].kind == "figure" else None
        assert render.to_markdown(result(t), image=image) in md
    assert "| deadbee" not in md and "- code version (git commit): deadbee" in md


def test_write_report_writes_both_files(tmp_path: Path) -> None:
    paths = write_report([fixed_sweep()], tmp_path / "results")
    assert [p.name for p in paths] == ["report.html", "report.md"] and all(p.stat().st_size for p in paths)


# ------------------------------------------------------------------------------------------------ real aggregation


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Two sweeps logged to a real MLflow server, read back and published as one report on both parent runs."""
    root = tmp_path_factory.mktemp("report")
    srv = LocalMlflowServer(root / "mlflow").start()
    try:
        logged = sweeps()
        inputs = []
        for file, sweep_id in (("teacher_vs_student", "tvs"), ("data_fraction", "df")):
            tracker = SweepTracker(srv.uri, file)
            parent, _ = tracker.open_parent(sweep_id, {"profile": "local"}, f"{file}-local")
            for run in logged[(file, sweep_id)]:
                _log(tracker, parent, sweep_id, run)
            inputs.append(read_sweep(srv.uri, load_spec(f"sweeps/{file}.yaml"), sweep_id, parent, "c0ffee1"))
            tracker.logger(parent).finish()
        paths = publish_report(inputs, root / "results")
        yield srv, inputs, paths
    finally:
        srv.stop()


@pytest.mark.integration
def test_report_from_real_runs_is_logged_on_every_parent(published) -> None:
    srv, inputs, paths = published
    assert [p.name for p in paths] == ["report.html", "report.md"]
    assert [[r.spec.id for r in s.results] for s in inputs] == [["supp_table4"], ["supp_fig1"]]
    assert len(inputs[0].cells) == 6 and {c.status for c in inputs[0].cells} == {"FINISHED"}
    for s in inputs:
        assert sorted(list_artifacts(srv.uri, s.parent_run_id, "report")) == ["report/report.html", "report/report.md"]
    page = Page(paths[0].read_text(encoding="utf-8"))
    for s in inputs:
        assert f"{srv.uri}/#/experiments/{s.experiment_id}/runs/{s.parent_run_id}" in page.links
        assert all(f"{srv.uri}/#/experiments/{s.experiment_id}/runs/{c.run_id}" in page.links for c in s.cells)


@pytest.mark.integration
@needs_chromium
def test_chromium_shows_every_table_and_loads_every_image(published, tmp_path: Path) -> None:
    """The page as a browser builds it (file://, no server): every table section and every image, loaded.

    A test-only copy adds one script that marks each image with its decoded width, so "loads" is the browser's
    verdict, not ours; the published page itself has no script (checked above)."""
    _, inputs, paths = published
    html = paths[0].read_text(encoding="utf-8")
    probe = (
        "<script>addEventListener('load', () => { for (const i of document.images) "
        "i.setAttribute('data-loaded', i.complete && i.naturalWidth > 0 ? 'w' + i.naturalWidth : 'no'); "
        "document.body.setAttribute('data-probe', 'done'); });</script></body>"
    )
    copy = tmp_path / "report_probe.html"
    copy.write_text(html.replace("</body>", probe), encoding="utf-8")
    dom = chromium(copy.as_uri(), tmp_path, "--dump-dom", budget_ms=5000)
    assert 'data-probe="done"' in dom, dom[:300]
    page = Page(dom)
    assert page.tables == ["supp_table4", "supp_fig1"]
    assert {anchor(s, r.spec.id) for s in inputs for r in s.results} <= set(page.ids)
    assert len(page.imgs) == 1 and all(re.fullmatch(r"w\d+", i.get("data-loaded", "")) for i in page.imgs)
    assert _png_of(page.imgs[0]).startswith(PNG)
    text = "".join(page.text)
    assert "Supplement Table 4" in text and "Claim verdicts" in text and "Regime checks / assumptions" in text
    assert "c0ffee1" in text and "not checked yet" in text
