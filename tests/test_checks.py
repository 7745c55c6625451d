"""Unit tests of the input checks: what they accept matters as much as what they refuse (an over-eager check is
a bug too), and the one-line formatting helpers."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from orchestrator import checks
from orchestrator.checks import (
    ENV_RULES,
    READ_TRACKING,
    SWEEP_TRACKING,
    check_env,
    check_storage,
    make_dir,
    parse_ray_address,
    parse_uri,
)
from orchestrator.inputs import BadInput, check_part, load_yaml, one_line, show, show_path


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:5000",
        "https://mlflow.example.com",
        "http://head:5000/prefix/",
        "http://user:pw@10.0.0.1:5000",
        "http://[::1]:5000",
        "HTTP://LOCALHOST:80",
    ],
)
def test_sweep_tracking_uris_that_are_well_formed(uri: str) -> None:
    assert parse_uri(uri, "--tracking-uri", SWEEP_TRACKING, "x").scheme in ("http", "https")


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:////abs/mlflow.db",
        "sqlite:///rel/mlflow.db",
        "postgresql+psycopg2://u:p@db.internal:5432/mlflow",
        "mysql://u@db/m",
        "mssql+pyodbc://u:p@db:1433/m",
    ],
)
def test_aggregate_reads_databases_too(uri: str) -> None:
    u = parse_uri(uri, "--tracking-uri", READ_TRACKING, "x")
    assert "p@" not in u.shown or "***@" in u.shown
    with pytest.raises(BadInput, match="allowed: http://, https://"):
        parse_uri(uri, "--tracking-uri", SWEEP_TRACKING, "x")


def test_a_password_is_never_echoed() -> None:
    with pytest.raises(BadInput) as err:
        checks.check_tracking_uri("postgresql://me:hunter2@127.0.0.1:1/db", kinds=READ_TRACKING)
    assert "hunter2" not in str(err.value) and "me:***@" in str(err.value)


@pytest.mark.parametrize(
    "address, target",
    [
        ("auto", None),
        ("127.0.0.1:6379", ("127.0.0.1", 6379)),
        ("ray://head-node:10001", ("head-node", 10001)),
        ("[::1]:6379", ("::1", 6379)),
        ("10.0.0.5:6380", ("10.0.0.5", 6380)),
    ],
)
def test_ray_addresses_that_are_well_formed(address: str, target) -> None:
    assert parse_ray_address(address) == target


def test_ray_auto_needs_a_known_cluster(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    with pytest.raises(BadInput, match="no Ray cluster is running on this machine"):
        checks.check_ray_address("auto")
    with socket.socket() as listener:  # a real listening socket stands in for the GCS: auto joins what it names
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        (tmp_path / "ray").mkdir()
        (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{listener.getsockname()[1]}\n")
        checks.check_ray_address("auto")
        checks.check_ray_address(f"127.0.0.1:{listener.getsockname()[1]}")


@pytest.mark.parametrize(
    "storage", ["./runs", "runs", "file:///tmp/somewhere", "s3://bucket/prefix", "gs://b/p", "hdfs://namenode:8020/p"]
)
def test_storages_that_are_accepted_for_a_dry_run(storage: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    check_storage(storage, dry_run=True)
    assert not any(tmp_path.iterdir())


def test_storage_checks_create_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    assert check_storage(str(target)) == target
    assert not (tmp_path / "a").exists()
    (tmp_path / "f").write_text("x")
    for bad, needle in [
        (tmp_path / "f", "is not a folder"),
        (tmp_path / "f" / "sub", "is a file"),
        ("/dev/null", "is not a folder"),
    ]:
        with pytest.raises(BadInput, match=needle):
            check_storage(str(bad), dry_run=True)


def test_make_dir_rolls_back_what_it_created(tmp_path: Path) -> None:
    assert make_dir(tmp_path / "x" / "y", "--out").is_dir() and not list((tmp_path / "x" / "y").iterdir())
    ro = tmp_path / "ro"
    ro.mkdir()
    target = ro / "p" / "q"
    real_write = Path.write_bytes

    def failing(self: Path, data: bytes) -> int:  # a full quota, or root's write to a read-only mount
        if self.parent == target:
            raise OSError(28, "No space left on device")
        return real_write(self, data)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "write_bytes", failing)
        with pytest.raises(BadInput, match="No space left on device"):
            make_dir(target, "--storage")
    assert list(ro.iterdir()) == []


@pytest.mark.parametrize(
    "name, good",
    [
        ("ROBUSTIFY_MIN_FREE_MIB", "0"),
        ("ROBUSTIFY_MIN_FREE_MIB", " 512 "),
        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "10"),
        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "30"),
        ("MLFLOW_ENABLE_ASYNC_LOGGING", "False"),
        ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"),
        ("RAY_DEDUP_LOGS", "0"),
    ],
)
def test_environment_values_that_are_accepted(name: str, good: str) -> None:
    check_env((name,), {name: good})


@pytest.mark.parametrize(
    "name, bad",
    [
        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "11"),  # MLflow's own limit
        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "1.5"),  # MLflow reads an int
        ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0"),
        ("MLFLOW_ENABLE_ASYNC_LOGGING", "yes"),
    ],
)
def test_environment_values_that_are_refused(name: str, bad: str) -> None:
    with pytest.raises(BadInput, match=f"environment variable {name}="):
        check_env((name,), {name: bad})


def test_every_environment_variable_the_code_reads_has_a_rule() -> None:
    """The numeric variables orchestrator/ sets defaults for (MLflow's, Ray Train's) are all checked."""
    root = Path(__file__).resolve().parents[1]
    text = (root / "orchestrator" / "tracking.py").read_text() + (root / "orchestrator" / "ray_backend.py").read_text()
    for name in [
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_ENABLE_ASYNC_LOGGING",
        "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S",
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
        "RAY_DEDUP_LOGS",
    ]:
        assert name in text and name in ENV_RULES, name


def test_show_and_one_line() -> None:
    assert show("a\nb\x1b[0m") == "'a\\nb\\x1b[0m'"
    assert len(show("x" * 10_000)) == 80 and show("x" * 10_000).endswith("…'")
    assert show(list(range(100_000))) == "[0, 1, 2, 3, 4, 5, ...]"
    assert one_line("a\nb\r\u2028c\udcff") == "a\\nb\\r\\u2028c\\udcff"
    assert len(one_line("y" * 5000)) == 1000
    assert show_path("/" + "d" * 500 + "/f.yaml").endswith("/f.yaml") and len(show_path("/" + "d" * 500)) == 120


@pytest.mark.parametrize("name", ["smoke", "teacher_vs_student", "a", "A1.b-c_d", "9" * 100])
def test_safe_path_parts(name: str) -> None:
    assert check_part(name, "x") == name


@pytest.mark.parametrize("name", [".", "..", "../x", "a/b", "", "-a", ".a", "a" * 101, "a b", "a\nb", None, 3])
def test_unsafe_path_parts(name) -> None:
    with pytest.raises(BadInput, match="not a safe folder name"):
        check_part(name, "x")


def test_table_ids_are_safe_path_parts() -> None:
    from orchestrator.tables import TABLE_IDS

    for t in TABLE_IDS:
        check_part(t, "table id")


def test_yaml_merge_keys_are_not_duplicates_and_anchors_still_work() -> None:
    doc = load_yaml("base: &b {epochs: 3, lr: 0.1}\ntrain:\n  <<: *b\n  epochs: 5\n")
    assert doc["train"] == {"epochs": 5, "lr": 0.1}
