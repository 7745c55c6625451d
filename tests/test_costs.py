"""The cost model (orchestrator/costs.py + each kind's `cost` in trainables/kinds.py), with figures worked by hand.

Packing and `--dry-run` size work by these estimates, so a silent change in a formula changes how cells share
trials; these tests pin the formulas on the smoke sweep's local sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.costs import LOCAL_MS_PER_IMAGE, critical_paths, estimate, sizes, stage_seconds
from orchestrator.plan import build_plan
from orchestrator.spec import load_spec
from trainables.kinds import KINDS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plan():
    return build_plan(load_spec(ROOT / "sweeps" / "smoke.yaml", "local"))


def _one(plan, kind: str, **where):
    return next(
        s
        for s in plan.stages.values()
        if s.kind == kind and all(getattr(s.inputs.cell, k) == v for k, v in where.items())
    )


def test_sizes_at_the_local_profile(plan) -> None:
    s = sizes(plan.spec)
    # smoke local: 200 train, 60 test, pool 160; eval = clean 60 + C 75 x 6 + P 10 x 3 sequences x 4 frames
    assert (s.n_train, s.n_test, s.n_pool, s.n_eval) == (200, 60, 160, 60 + 450 + 120)


def test_a_distillation_cell_costs_its_tail_passes(plan) -> None:
    cell = _one(plan, "cell", method="ours")
    # a = 0.5 of (pool + clean) = 180 images x 3 epochs x 3 (fwd + bwd), plus 10 MC passes over 630 eval images,
    # all on the 5 % tail, at vit_small's 2.9 ms per image
    expected = 0.05 * (3 * 3 * 180 + 10 * 630) * LOCAL_MS_PER_IMAGE["vit_small"] / 1000
    assert stage_seconds(cell, plan.spec) == pytest.approx(expected)


def test_a_complete_fine_tuning_is_priced_once_in_its_stage(tmp_path: Path) -> None:
    """The full_finetune stage trains; the full_ft cell on it only evaluates the whole model from images (it once
    paid the training again: transfer's ViT-L/14@336 cells were priced 8x what they took)."""
    text = (ROOT / "sweeps" / "smoke.yaml").read_text().replace("method: [ours, apt]", "method: [ours, full_ft]")
    (tmp_path / "ft.yaml").write_text(text)
    spec = load_spec(tmp_path / "ft.yaml", "local")
    ft_plan = build_plan(spec)
    ms = LOCAL_MS_PER_IMAGE["vit_small"] / 1000
    cell = _one(ft_plan, "cell", method="full_ft")
    assert stage_seconds(cell, spec) == pytest.approx(2 * 630 * ms)  # eval images only, whatever train.epochs
    stage = next(s for s in ft_plan.stages.values() if s.kind == "full_finetune")
    epochs = spec.train.full_ft_epochs or spec.train.epochs
    assert stage_seconds(stage, spec) == pytest.approx(3 * epochs * 0.5 * (160 + 200) * ms)


def test_teacher_and_data_stages(plan) -> None:
    robust = next(s for s in plan.stages.values() if s.kind == "robustify_teacher")
    # AugMix + JSD: 3 views x 3 (fwd + bwd) = 9 passes over the teacher's 120 clean + all 160 pool images, 1 epoch,
    # then one pass over the 630 eval images (its clean / C / P accuracy: the regime checks read them)
    expected = (9 * (120 + 160) + 630) * LOCAL_MS_PER_IMAGE["resnet34"] / 1000
    assert stage_seconds(robust, plan.spec) == pytest.approx(expected)
    pool = next(s for s in plan.stages.values() if s.kind == "build_pool")
    assert stage_seconds(pool, plan.spec) == pytest.approx((160 + 200 * 2) * 2.0 / 1000)  # 2 AE epochs


def test_every_kind_is_priced_and_the_estimate_adds_up(plan) -> None:
    report = estimate(plan)
    assert set(report["per_kind"]) == {s.kind for s in plan.stages.values()} <= set(KINDS)
    total = sum(stage_seconds(s, plan.spec) for s in plan.stages.values()) / 3600
    assert report["total_device_hours"] == pytest.approx(total)
    assert report["remaining_device_hours"] == pytest.approx(total)  # nothing cached
    cached = build_plan(plan.spec, lambda kind, key: kind == "cell")
    cells = sum(stage_seconds(s, plan.spec) for s in cached.stages.values() if s.kind == "cell") / 3600
    assert estimate(cached)["remaining_device_hours"] == pytest.approx(total - cells)


def test_paper_profile_uses_gflops_and_whole_splits() -> None:
    plan = build_plan(load_spec(ROOT / "sweeps" / "smoke.yaml", "paper", ["data.n_train=null", "data.n_test=null"]))
    s = sizes(plan.spec)
    assert (s.n_train, s.n_test) == (1_281_167, 50_000)  # n_train / n_test null: the whole ImageNet splits
    assert "gpu" in estimate(plan)["device"]


def test_critical_paths_add_each_stage_to_the_longest_chain_waiting_on_it() -> None:
    """Table 4's shared stages: each stage's path is its own seconds plus its longest child's; the pool (seconds of
    work) carries the whole robustification chain below it, so it outranks what waits below any teacher's
    pretraining, and the longest path starts at the pool or at a pretraining."""
    plan = build_plan(load_spec(ROOT / "sweeps" / "teacher_vs_student.yaml", "local"))
    keys = {k for k, st in plan.stages.items() if st.kind != "cell"}
    path = critical_paths(plan, keys)
    for k in keys:
        children = [c for c in keys if k in plan.stages[c].deps.values()]
        own = stage_seconds(plan.stages[k], plan.spec)
        assert path[k] == pytest.approx(own + max((path[c] for c in children), default=0.0))
    pool = next(k for k in keys if plan.stages[k].kind == "build_pool")
    pretrain = [k for k in keys if plan.stages[k].kind == "pretrain_teacher"]
    assert all(path[pool] > path[k] - stage_seconds(plan.stages[k], plan.spec) for k in pretrain)
    assert max(path, key=path.get) in {pool, *pretrain}
