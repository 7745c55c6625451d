"""The MLflow UI, opened in headless Chromium (Debian's package, never a downloaded browser), shows a finished
sweep: the experiment page lists the parent run, the parent run page lists its child run, and the table artifact
on the parent run opens and renders; the same file downloads through the artifact REST endpoint."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from orchestrator.tracking import LocalMlflowServer, SweepTracker, log_artifacts, runs_dataframe

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# On a developer's machine without chromium these tests skip; in CI (.ci/run installs it) a missing browser is a
# failure, never a silent skip.
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does it)",
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
]
TABLE = "### Supplement Table 4\n\n| | Teacher C acc |\n|---|---|\n| RN-34 | 33.1 (55.7) |\n"


def chromium(url: str, tmp: Path, *extra: str, budget_ms: int = 15000) -> str:
    """Load `url` in a fresh headless Chromium (empty profile) and return its stdout (the DOM with --dump-dom).

    Virtual time waits for the SPA's fetches; the process group is killed by its PID whatever happens."""
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    profile.mkdir()
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", *extra, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=90)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # renderer/zygote children share the group we started
        except ProcessLookupError:
            pass
        proc.wait()
    return out


def page_showing(url: str, tmp: Path, *needles: str) -> str:
    """The DOM once it shows every needle; a second, longer try absorbs a slow first render on a busy machine."""
    dom = ""
    for budget in (15000, 40000):
        dom = chromium(url, tmp, "--dump-dom", budget_ms=budget)
        if all(n in dom for n in needles):
            return dom
    missing = [n for n in needles if n not in dom]
    raise AssertionError(f"{url} never showed {missing}; DOM starts: {dom[:300]!r}")


def download(uri: str, run_id: str, path: str) -> bytes:
    q = urllib.parse.urlencode({"path": path, "run_uuid": run_id})
    with urllib.request.urlopen(f"{uri}/get-artifact?{q}", timeout=30) as r:
        assert r.status == 200
        return r.read()


@pytest.fixture(scope="module")
def ui_store(tmp_path_factory):
    """A finished sweep logged through tracking.py: parent run with a table artifact, one FINISHED child run."""
    root = tmp_path_factory.mktemp("ui")
    server = LocalMlflowServer(root / "mlflow").start()
    try:
        t = SweepTracker(server.uri, "ui_sweep")
        parent, _ = t.open_parent("sid", {"profile": "local"}, "ui_sweep-local")
        child = t.open_child(
            parent,
            "sid",
            "cell",
            "cellkey",
            "ours-clip_vit_b16-t_resnet34",
            {},
            {"method": "ours", "teacher": "resnet34"},
        )
        log = t.logger(child)
        log.log_metrics({"acc/c": 0.5})
        log.finish()
        (root / "supp_table4.md").write_text(TABLE, encoding="utf-8")
        log_artifacts(server.uri, parent, [root / "supp_table4.md"], "tables")
        t.logger(parent).finish()
        yield server, t.experiment_id, parent
    finally:
        server.stop()


@needs_chromium
def test_ui_shows_experiment_parent_run_and_table(ui_store, tmp_path: Path) -> None:
    server, exp_id, parent = ui_store
    base = f"{server.uri}/#/experiments/{exp_id}/runs"
    page_showing(base, tmp_path, "ui_sweep-local", "Training runs")  # the parent run is listed
    page_showing(f"{base}/{parent}", tmp_path, "ui_sweep-local", "ours-clip_vit_b16-t_resnet34")  # its child
    table_url = f"{base}/{parent}/artifacts/tables/supp_table4.md"
    page_showing(table_url, tmp_path, "supp_table4.md", "RN-34", "33.1 (55.7)")  # the artifact renders
    shot = tmp_path / "ui.png"
    chromium(table_url, tmp_path, f"--screenshot={shot}")
    assert shot.is_file() and shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 10_000
    assert download(server.uri, parent, "tables/supp_table4.md").decode() == TABLE


@needs_chromium
@pytest.mark.slow
def test_ui_on_the_real_smoke_sweep(smoke_store: Path, tmp_path: Path) -> None:
    """The same checks on the store of the real smoke sweep (fixture `smoke_store` of tests/conftest.py)."""
    with LocalMlflowServer(Path(smoke_store) / "mlflow") as server:
        parent = runs_dataframe(server.uri, "smoke", "tags.kind = 'sweep'").iloc[0]
        exp_id = SweepTracker(server.uri, "smoke").experiment_id
        base = f"{server.uri}/#/experiments/{exp_id}/runs"
        page_showing(base, tmp_path, parent["run_name"])
        page_showing(
            f"{base}/{parent['run_id']}/artifacts/tables/supp_table4.md", tmp_path, "Supplement Table 4", "RN-34"
        )
        chromium(
            f"{base}/{parent['run_id']}/artifacts/tables/supp_table4.md",
            tmp_path,
            f"--screenshot={tmp_path / 'smoke_ui.png'}",
        )
        assert (tmp_path / "smoke_ui.png").is_file()
        assert b"Supplement Table 4" in download(server.uri, parent["run_id"], "tables/supp_table4.md")
        assert b"supp_table4.md" in download(server.uri, parent["run_id"], "tables/index.md")
