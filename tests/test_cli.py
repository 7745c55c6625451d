"""The CLI on bad input: exit code 2, one short line, no traceback, nothing started; dry run starts nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.procs import ROOT, run_cli

BAD = [
    ("missing file", ["sweeps/nope.yaml"], "no such sweep file"),
    ("unknown profile", ["sweeps/smoke.yaml", "--profile", "cloud"], "profile 'cloud'"),
    ("unknown student", ["sweeps/smoke.yaml", "--set", "grid.student=[vit_smal]"], "vit_small"),
    ("unknown method", ["sweeps/smoke.yaml", "--set", "grid.method=[ourz]"], "ours"),
    ("bad fraction", ["sweeps/smoke.yaml", "--set", "grid.data_fraction=[0]"], "(0, 1]"),
    ("empty axis", ["sweeps/smoke.yaml", "--set", "grid.method=[]"], "grid.method"),
    ("unknown key", ["sweeps/smoke.yaml", "--set", "train.epoch=3"], "train.epoch"),
    ("bad flag", ["sweeps/smoke.yaml", "--frobnicate"], "unrecognized arguments"),
]


@pytest.mark.parametrize("name, args, needle", BAD, ids=[b[0] for b in BAD])
def test_bad_input_exit_2_one_line(tmp_path: Path, name: str, args: list[str], needle: str) -> None:
    storage = tmp_path / "runs"
    proc = run_cli(["orchestrator.sweep", *args, "--storage", str(storage)], timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) <= 3 and needle in err, err
    assert not (storage / "mlflow").exists() and not (storage / "ray_tune").exists()


def test_malformed_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngrid: {student: [clip_vit_b16]\n")
    proc = run_cli(["orchestrator.sweep", str(bad), "--storage", str(tmp_path / "r")], timeout=120)
    assert proc.returncode == 2 and "malformed YAML" in proc.stderr and str(bad) in proc.stderr


def test_unwritable_storage(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = run_cli(["orchestrator.sweep", "sweeps/smoke.yaml", "--storage", str(blocker / "sub")], timeout=120)
    assert proc.returncode == 2 and "--storage" in proc.stderr and "Traceback" not in proc.stderr


def test_full_storage(tmp_path: Path) -> None:
    """A storage with less free space than a sweep needs (the real statvfs of tmp_path, with the requirement set
    just above what is free) is refused before anything starts."""
    import os

    st = os.statvfs(tmp_path)
    need = st.f_bavail * st.f_frsize // 2**20 + 1024
    storage = tmp_path / "r"
    proc = run_cli(
        ["orchestrator.sweep", "sweeps/smoke.yaml", "--storage", str(storage)],
        timeout=120,
        env={"ROBUSTIFY_MIN_FREE_MIB": str(need)},
    )
    assert proc.returncode == 2, proc.stderr
    assert "MiB free" in proc.stderr and str(storage) in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not storage.exists()  # refused before anything is created: no folder at all, so no mlflow/, no ray dirs


def test_dry_run_json_teacher_vs_student(tmp_path: Path) -> None:
    proc = run_cli(
        [
            "orchestrator.sweep",
            "sweeps/teacher_vs_student.yaml",
            "--dry-run",
            "--json",
            "--storage",
            str(tmp_path / "r"),
        ],
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert len(report["cells"]) == 18  # 6 teachers x 3 distillation seeds
    assert {c["seed"] for c in report["cells"]} == {0, 1, 2}
    assert {c["teacher"] for c in report["cells"]} == {
        "resnet34",
        "resnet50",
        "resnet101",
        "vit_small",
        "resnet152",
        "vit_base",
    }
    assert all(c["student"] == "clip_vit_b16" and c["data_fraction"] == 0.5 for c in report["cells"])
    assert report["stages"] and report["cost"]["per_kind"]["robustify_teacher"]["count"] == 6
    assert not (tmp_path / "r").exists()


def test_paper_profile_missing_roots_reported_at_plan_time(tmp_path: Path) -> None:
    proc = run_cli(
        [
            "orchestrator.sweep",
            "sweeps/teacher_vs_student.yaml",
            "--profile",
            "paper",
            "--storage",
            str(tmp_path / "r"),
        ],
        timeout=120,
    )
    assert proc.returncode == 2 and "data.roots" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r" / "mlflow").exists()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--profile", "paper"], "data.roots"),  # used to create ./runs
        (["--dry-run", "--storage", "/dev/null"], "is not a folder"),  # used to be NotADirectoryError
        (["--dry-run", "--storage", "garbage://x/y"], "unknown storage scheme"),  # used to be ArrowInvalid
        (["--tracking-uri", "http://127.0.0.1:{port}"], "no MLflow server answers"),  # used to be exit 1, after start
        (["--address", "127.0.0.1:{port}"], "nothing answers"),  # left a RUNNING parent, ./mlruns
        (["--mlflow-patience", "nan"], "--mlflow-patience"),  # used to hang
    ],
    ids=["paper-roots", "dev-null", "garbage-scheme", "tracking-down", "address-down", "patience-nan"],
)
def test_refusals_create_nothing_in_the_working_directory(tmp_path: Path, extra: list[str], needle: str) -> None:
    """The real entry point, run from an empty folder: exit 2, one line, and the folder is still empty."""
    port = str(_closed_port())
    args = [a.replace("{port}", port) for a in extra]
    proc = run_cli(["orchestrator.sweep", str(ROOT / "sweeps" / "smoke.yaml"), *args], timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and needle in proc.stderr and "Traceback" not in proc.stderr
    assert _tree(tmp_path) == []


def test_dry_run_reads_the_cache_without_creating_it_and_summarises_cells(tmp_path: Path) -> None:
    """An existing storage without cache/ stays as it is; past 50 cells the text report counts the rest."""
    storage = tmp_path / "r"
    storage.mkdir()
    seeds = ", ".join(map(str, range(40)))
    proc = run_cli(
        [
            "orchestrator.sweep",
            "sweeps/smoke.yaml",
            "--dry-run",
            "--storage",
            str(storage),
            "--set",
            f"grid.seed=[{seeds}]",
        ],
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert _tree(tmp_path) == ["r"]
    lines = proc.stdout.splitlines()
    assert lines[0].endswith(": 80 cells") and all(ln.startswith("  cell ") for ln in lines[1:51])
    assert lines[51] == "  ... and 30 more cells (--json lists all)" and lines[52].startswith("stages")


def test_minimal_spec_dry_run_shows_the_packing(tmp_path: Path) -> None:
    """A file with only `name` and `grid`: planned on the built-in local defaults, with the trials it would run as
    on this machine (the same packing as the driver's) and, for a cluster, the reason the trials are unknown."""
    spec = tmp_path / "minimal.yaml"
    spec.write_text("name: minimal\ngrid: {student: [vit_small], method: [apt, original], seed: [0, 1]}\n")
    base = ["orchestrator.sweep", str(spec), "--dry-run", "--storage", str(tmp_path / "r")]
    proc = run_cli([*base, "--json", "--num-cpus", "3"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    packing = report["packing"]
    assert report["profile"] == "local" and report["n_cells"] == 4 and packing["slots"] == 3
    assert sorted(k for t in packing["trials"] for k in t) == sorted(c["key"] for c in report["cells"])
    text = run_cli(base, timeout=120).stdout.splitlines()
    assert any(ln.startswith("packing on the local Ray (") and "Ray Tune trial(s)" in ln for ln in text), text
    remote = run_cli([*base, "--address", "10.0.0.1:6379"], timeout=120)
    assert remote.returncode == 0 and "packing depends on the cluster's resources" in remote.stdout
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------------ robustify


def test_robustify_is_the_console_entry_point() -> None:
    import tomllib

    from orchestrator import cli

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"robustify": "orchestrator.cli:main"} and callable(cli.main)


@pytest.mark.parametrize("verb", ["sweep", "aggregate", "ui"])
def test_help_lists_every_flag_with_its_default(verb: str, capsys) -> None:
    """`robustify VERB --help` (in process, as the console script calls it): one '(default: ...)' per flag."""
    from orchestrator import aggregate, cli, sweep

    parser = {"sweep": sweep.build_parser, "aggregate": aggregate._parser, "ui": cli.ui_parser}[verb]()
    flags = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    try:
        code = cli.main([verb, "--help"])
    except SystemExit as done:
        code = done.code
    text = capsys.readouterr().out
    assert code == 0 and text.startswith("usage: ")
    assert text.count("(default:") == len(flags) >= 2, text
    assert all(any(o in text for o in a.option_strings) for a in flags)


@pytest.mark.parametrize(
    "argv, needle",
    [
        ([], "usage: robustify"),
        (["frob"], "unknown command 'frob'"),
        (["sweep", "sweeps/nope.yaml"], "no such sweep"),
    ],
)
def test_robustify_refusals(argv: list[str], needle: str, capsys) -> None:
    from orchestrator import cli

    assert cli.main(argv) == 2
    out = capsys.readouterr()
    assert needle in out.out + out.err and "Traceback" not in out.err


def test_ui_refuses_a_storage_without_a_store(tmp_path: Path, capsys) -> None:
    from orchestrator import cli

    assert cli.main(["ui", "--storage", str(tmp_path), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no MLflow store" in err and str(tmp_path) in err
    assert _tree(tmp_path) == []


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ui_serves_the_store_until_ctrl_c_then_stops_its_server(tmp_path: Path, sig: str) -> None:
    """A real store, a real `robustify ui` process: its URL answers; Ctrl-C (SIGINT) or `kill` (SIGTERM) ends it
    and the server it started."""
    import signal
    import subprocess
    import sys
    import uuid

    from orchestrator.mlflow_server import LocalMlflowServer, wait_healthy
    from tests.procs import DEFAULT_SIGINT, kill_marked, marked_env, pids_with_mark

    LocalMlflowServer(tmp_path / "runs" / "mlflow").start().stop()  # a store, as a finished sweep leaves it
    mark = uuid.uuid4().hex
    # Ctrl-C's default handler: a background job of a non-interactive shell would hand SIGINT down ignored
    code = DEFAULT_SIGINT + "from orchestrator.cli import main; raise SystemExit(main())"
    argv = [sys.executable, "-c", code, "ui", "--storage", str(tmp_path / "runs"), "--port", "0"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=marked_env(mark), stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("MLflow UI: http://127.0.0.1:"), line
        uri = line.split()[2]
        assert wait_healthy(uri, 30)
        proc.send_signal(getattr(signal, sig))
        # the server's graceful shutdown (then SIGKILL of its group) can take tens of seconds on 2 loaded cores
        assert proc.wait(timeout=120) == 0
        assert not wait_healthy(uri, 2) and pids_with_mark(mark) == []
    finally:
        proc.kill()
        kill_marked(mark)
