"""`--storage s3://bucket/prefix` against a real S3 API (moto's server, on this host's loopback): the cache and
its lock object on the bucket, the Optuna journal and trial outputs, error files, the bucket check of the CLI.
The whole sweep on a bucket, across hosts, runs on the rig (tests/test_rig.py)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from orchestrator import storage
from orchestrator.cache import Cache


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket(s3_server, monkeypatch) -> str:
    import uuid

    import boto3

    env = {"AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}
    for k, v in {**env, "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    name = f"b-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def test_cache_entries_and_lock_live_on_the_bucket(bucket: str, tmp_path: Path) -> None:
    uri = f"s3://{bucket}/runs"
    seen_lock = []

    def produce(folder: Path) -> dict:
        (folder / "weights.bin").write_bytes(b"w" * 1000)
        seen_lock.extend(k for k in storage.listing(uri) if ".locks/" in k)
        return {"n": 1}

    a = Cache(uri, scratch=tmp_path / "node-a")
    _, computed = a.compute("teacher", "k1", produce)
    assert computed and seen_lock == ["cache/.locks/teacher-k1.lock"]  # held on the bucket while producing
    keys = storage.listing(uri)
    assert {"cache/teacher/k1/MANIFEST.json", "cache/teacher/k1/weights.bin"} <= set(keys)
    assert not any(".locks/" in k for k in keys)  # released
    b = Cache(uri, scratch=tmp_path / "node-b")  # another node: finds it, downloads and verifies it
    path, computed = b.compute("teacher", "k1", produce)
    assert not computed and (path / "weights.bin").read_bytes() == b"w" * 1000


def test_object_lock_excludes_and_a_dead_holders_lock_is_taken_over(bucket: str, monkeypatch) -> None:
    where = f"s3://{bucket}/cache/.locks/x.lock"
    order: list[str] = []

    def hold(name: str) -> None:
        with storage.object_lock(where, poll_s=0.1):
            order.append(f"{name}+")
            time.sleep(0.5)
            order.append(f"{name}-")

    threads = [threading.Thread(target=hold, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert order in (["a+", "a-", "b+", "b-"], ["b+", "b-", "a+", "a-"])
    storage.write_text(where, "{}")  # a holder killed with -9: nobody refreshes or deletes it
    monkeypatch.setattr(storage, "LEASE_S", 1.0)
    t0 = time.monotonic()
    with storage.object_lock(where, poll_s=0.2):
        pass
    assert time.monotonic() - t0 < 10


def test_optuna_study_continues_from_the_bucket_on_another_node(bucket: str, tmp_path: Path, monkeypatch) -> None:
    from orchestrator.search import run_study

    uri = f"s3://{bucket}/runs"
    calls = []

    def train_once(params: dict, tdir: Path) -> dict:
        calls.append(params["lr"])
        (tdir / "metrics.json").write_text(json.dumps({"acc/c": params["lr"]}))
        return {"acc/c": params["lr"]}

    def on_node(name: str, trials: int) -> dict:
        monkeypatch.setattr(storage.tempfile, "gettempdir", lambda: str(tmp_path / name))
        out = tmp_path / name / "out"
        out.mkdir(parents=True)
        return run_study(uri, "cell1", {"lr": "uniform(0, 1)"}, trials, "acc/c", train_once, out, lambda m, s: None)

    on_node("a", 2)
    assert "optuna/cell1.log" in storage.listing(uri)
    assert {"optuna/cell1/trial-0/metrics.json", "optuna/cell1/trial-1/metrics.json"} <= set(storage.listing(uri))
    metrics = on_node("b", 3)  # a retried cell on another node: one more trial, not three
    assert len(calls) == 3 and metrics["optuna/n_trials"] == 3.0
    assert metrics["optuna/best_value"] == max(calls)


def test_error_files_and_small_objects(bucket: str) -> None:
    where = storage.join(f"s3://{bucket}/runs", "ray_train", "cell_errors", "k.txt")
    assert storage.read_text(where) is None and not storage.exists(where)
    storage.write_text(where, "ValueError: x\n")
    assert storage.exists(where) and storage.read_text(where) == "ValueError: x\n"
    storage.delete(where)
    assert not storage.exists(where)


def test_missing_bucket_is_bad_input_before_anything_starts(bucket: str, tmp_path: Path, capsys, monkeypatch) -> None:
    from orchestrator import sweep

    assert storage.bucket_missing(f"s3://{bucket}/runs") is None
    monkeypatch.setenv("HOME", str(tmp_path))  # where the run's working folder would be made
    code = sweep.main([str(Path(__file__).parents[1] / "sweeps" / "smoke.yaml"), "--storage", "s3://no-such-bucket/x"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "bucket 'no-such-bucket' does not exist" in err, err
    assert not any(tmp_path.iterdir()), "something was created"
