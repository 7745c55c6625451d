"""The MLflow UI, opened in headless Chromium (Debian's package, never a downloaded browser), shows the sweep's
experiment, its parent run and the table artifact logged on it."""
from __future__ import annotations

import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from orchestrator.tracking import LocalMlflowServer, SweepTracker

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000", "--virtual-time-budget=20000"]


def chromium(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    profile.mkdir()
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A finished sweep: parent run with a table artifact, one FINISHED child run."""
    root = tmp_path_factory.mktemp("ui")
    with LocalMlflowServer(root / "mlflow") as server:
        t = SweepTracker(server.uri, "ui_sweep")
        parent, _ = t.open_parent("sid", {"profile": "local"}, "ui_sweep-local")
        child = t.open_child(parent, "sid", "cell", "cellkey", "ours-clip_vit_b16-t_resnet34", {},
                             {"method": "ours", "teacher": "resnet34"})
        log = t.logger(child)
        log.log_metrics({"acc/c": 0.5})
        log.finish()
        table = root / "supp_table4.md"
        table.write_text("### Supplement Table 4\n\n| | Teacher C acc |\n|---|---|\n| RN-34 | 33.1 (55.7) |\n")
        plog = t.logger(parent)
        plog.log_artifact(table, "tables")
        plog.finish()
        exp_id = t.experiment_id
    return root, exp_id, parent


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_ui_shows_experiment_parent_run_and_table(store, tmp_path: Path) -> None:
    root, exp_id, parent = store
    with LocalMlflowServer(root / "mlflow") as server:
        exp_page = chromium(f"{server.uri}/#/experiments/{exp_id}/runs", tmp_path, "--dump-dom")
        assert exp_page.returncode == 0, exp_page.stderr[-2000:]
        assert "ui_sweep-local" in exp_page.stdout and "Training runs" in exp_page.stdout  # parent run listed
        run_url = f"{server.uri}/#/experiments/{exp_id}/runs/{parent}/artifacts"
        run_page = chromium(run_url, tmp_path, "--dump-dom")
        assert "ui_sweep-local" in run_page.stdout and "tables" in run_page.stdout
        shot = tmp_path / "ui.png"
        chromium(run_url, tmp_path, f"--screenshot={shot}")
        assert shot.is_file() and shot.stat().st_size > 10_000
        q = urllib.parse.urlencode({"path": "tables/supp_table4.md", "run_uuid": parent})
        with urllib.request.urlopen(f"{server.uri}/get-artifact?{q}", timeout=30) as r:
            assert b"RN-34 | 33.1 (55.7)" in r.read()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_ui_on_a_real_smoke_sweep(smoke_store, smoke_sweep, tmp_path: Path) -> None:
    from orchestrator.tracking import runs_dataframe

    df = runs_dataframe(smoke_sweep.uri, "smoke", "tags.kind = 'sweep'")
    parent, exp = df.iloc[0]["run_id"], None
    with LocalMlflowServer(smoke_store / "mlflow") as server:
        exp = SweepTracker(server.uri, "smoke").experiment_id
        page = chromium(f"{server.uri}/#/experiments/{exp}/runs/{parent}/artifacts", tmp_path, "--dump-dom")
        assert "smoke-local" in page.stdout and "tables" in page.stdout
        q = urllib.parse.urlencode({"path": "tables/supp_table4.md", "run_uuid": parent})
        with urllib.request.urlopen(f"{server.uri}/get-artifact?{q}", timeout=30) as r:
            assert b"Supplement Table 4" in r.read()
