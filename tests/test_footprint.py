"""The footprint model (trainables/footprint.py, orchestrator/costs.py `footprint`): disk and memory per stage kind
before anything starts, figures worked by hand on the smoke sweep, and the node-memory refusal (exit 2, one line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.costs import footprint, sizes, stage_footprint
from orchestrator.plan import build_plan
from orchestrator.spec import load_spec
from tests.procs import ROOT, run_cli
from trainables.footprint import FOOTPRINTS, GB, RUNTIME_BYTES, feature_values
from trainables.kinds import KINDS

SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))


def test_every_kind_has_a_footprint() -> None:
    assert set(FOOTPRINTS) == set(KINDS)


@pytest.mark.parametrize("profile", ["local", "paper"])
@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_every_sweep_file_has_a_finite_footprint_at_both_profiles(path: Path, profile: str) -> None:
    plan = build_plan(load_spec(path, profile))
    fp = footprint(plan)
    assert set(fp["per_kind"]) == {s.kind for s in plan.stages.values()}
    assert 0 < fp["total_disk_gb"] < 1e5 and RUNTIME_BYTES / GB < fp["peak_memory_gb"] < 1e4
    assert (fp["peak_gpu_gb"] > 0) == (plan.spec.resources.gpus_per_worker > 0)


def test_smoke_local_figures_by_hand() -> None:
    plan = build_plan(load_spec(ROOT / "sweeps" / "smoke.yaml", "local"))
    s = sizes(plan.spec)
    one = {k: next(st for st in plan.stages.values() if st.kind == k) for k in ("build_eval_sets", "extract_features")}
    # eval sets: (60 clean + 75 x 6 C + 10 x 3 x 4 P) uint8 images of 3 x 32 x 32
    assert stage_footprint(one["build_eval_sets"], plan.spec).disk == 630 * 3 * 32 * 32
    # vit_small at patch 16 on 32 px: 4 patches + the class token, 384 values each, fp32 on the embedded data
    assert feature_values(one["extract_features"].inputs.model, 32) == 5 * 384
    rows = s.n_train + s.n_pool + s.n_eval
    assert stage_footprint(one["extract_features"], plan.spec).disk == rows * 5 * 384 * 4


def test_paper_features_are_fp16_and_scale_with_the_split() -> None:
    small = build_plan(load_spec(ROOT / "sweeps" / "teacher_vs_student.yaml", "paper"))
    whole = build_plan(load_spec(ROOT / "sweeps" / "teacher_vs_student.yaml", "paper", ["data.n_train=null"]))
    f_small, f_whole = footprint(small)["per_kind"], footprint(whole)["per_kind"]
    # CLIP ViT-B/16 at 224 px: 197 tokens x 768 values x 2 bytes per image
    extra = (1_281_167 - 2000) * 197 * 768 * 2 / GB
    assert f_whole["extract_features"]["disk_gb"] - f_small["extract_features"]["disk_gb"] == pytest.approx(extra)
    # streamed: the extraction's memory does not grow with the split
    assert f_whole["extract_features"]["peak_memory_gb"] == pytest.approx(f_small["extract_features"]["peak_memory_gb"])


@pytest.mark.parametrize("name, size", [("vit_small", 32), ("resnet34", 64)])
def test_feature_table_matches_the_built_student(name: str, size: int) -> None:
    import torch

    from trainables.models import create_student

    s = create_student(name, num_classes=10, img_size=size, class_names=list("abcdefghij"), dropout=0.1).eval()
    assert s.encode(torch.rand(1, 3, size, size)).numel() == feature_values({"name": name}, size)


def test_dry_run_prints_footprint_and_refuses_a_small_node(tmp_path: Path) -> None:
    base = ["orchestrator.sweep", "sweeps/smoke.yaml", "--dry-run", "--storage", str(tmp_path / "r")]
    ok = run_cli(base, timeout=120)
    assert ok.returncode == 0 and "footprint:" in ok.stdout and "extract_features   disk" in ok.stdout, ok.stderr
    bad = run_cli([*base, "--set", "resources.node_memory_gb=0.5"], timeout=120)
    err = bad.stderr.strip()
    assert bad.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert all(w in err for w in ("sweeps/smoke.yaml", "resources.node_memory_gb", "0.5", "allowed")), err
