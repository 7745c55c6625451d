"""Property-based: malformed and adversarial specs and --set overrides never crash the CLI.

Every generated input must end in exit code 0 (it happened to be valid: dry run) or 2 with a short message and no
traceback, and nothing may be started (no Ray, no MLflow store)."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.sweep import main

ROOT = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["ours", "clip_vit_b16", "resnet34", "1e-3", "[]", "{}"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=6)
KEYS = ["name", "grid", "grid.student", "grid.teacher", "grid.method", "grid.data_fraction", "grid.seed",
        "grid.pairs", "eval", "train", "train.epochs", "train.lr", "train.dropout", "data.image_size",
        "data.source", "data.roots", "resources.workers_per_trial", "model_overrides", "weights", "search",
        "reproduces", "profiles", "profiles.local", "profiles.local.train", "pool.n_images", "nonsense.key"]


def _set(doc: dict, dotted: str, value) -> dict:
    node = doc
    parts = dotted.split(".")
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value
    return doc


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def _check(code: int, err: str, storage: Path) -> None:
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err
    if code == 2:
        assert 0 < len(err.strip().splitlines()) <= 3 and len(err) < 2000, err
    assert not (storage / "mlflow").exists()
    import ray

    assert not ray.is_initialized()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), value=values)
def test_adversarial_spec_documents(tmp_path: Path, key: str, value) -> None:
    doc = _set(yaml.safe_load(yaml.safe_dump(BASE)), key, value)
    spec = tmp_path / "adv.yaml"
    try:
        spec.write_text(yaml.safe_dump(doc, allow_unicode=True))
    except yaml.YAMLError:
        return
    storage = tmp_path / "runs"
    code, err = _run([str(spec), "--dry-run", "--storage", str(storage)])
    _check(code, err, storage)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.one_of(st.sampled_from(KEYS), st.text(max_size=15)), raw=st.text(max_size=20))
def test_adversarial_overrides(tmp_path: Path, key: str, raw: str) -> None:
    storage = tmp_path / "runs"
    code, err = _run([str(ROOT / "sweeps" / "smoke.yaml"), "--dry-run", "--set", f"{key}={raw}", "--storage", str(storage)])
    _check(code, err, storage)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=200))
def test_garbage_files(tmp_path: Path, blob: bytes) -> None:
    spec = tmp_path / "garbage.yaml"
    spec.write_bytes(blob)
    storage = tmp_path / "runs"
    code, err = _run([str(spec), "--dry-run", "--storage", str(storage)])
    _check(code, err, storage)
