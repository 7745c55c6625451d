"""Cell planning (the ignored-axis rule), stage keys, invalidation and the dry-run report."""

from __future__ import annotations

from pathlib import Path

from orchestrator.plan import build_plan, cells, dry_run_report
from orchestrator.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


def spec_with(tmp_path: Path, grid: str, extra: str = "", overrides=()):
    p = tmp_path / "s.yaml"
    p.write_text(f"name: t\ngrid:\n{grid}\neval: [clean, c, p]\n{extra}\nprofiles:\n  local: {{}}\n")
    return load_spec(p, "local", list(overrides))


def test_teacher_vs_student_has_six_teachers_three_seeds_one_set_of_shared_stages() -> None:
    """Three distillation seeds per teacher; the seeds vary the cells only: one pool, one S0 and one pretrained and
    one robust teacher per model (issue #13: seeds are cheap on cached features)."""
    spec = load_spec(ROOT / "sweeps" / "teacher_vs_student.yaml")
    cs = cells(spec)
    assert len(cs) == 18 and {c.seed for c in cs} == {0, 1, 2}
    assert {c.teacher for c in cs} == {"resnet34", "resnet50", "resnet101", "vit_small", "resnet152", "vit_base"}
    kinds = [s.kind for s in build_plan(spec).stages.values()]
    assert kinds.count("robustify_teacher") == kinds.count("pretrain_teacher") == 6
    assert kinds.count("build_pool") == kinds.count("pretrain_student") == 1


def test_methods_drop_the_axes_they_ignore(tmp_path: Path) -> None:
    grid = (
        "  student: [clip_vit_b16, resnet101]\n  teacher: [resnet34, resnet50, vit_small]\n"
        "  data_fraction: [0.25, 0.5]\n  method: [ours, wo_kd, apt, full_ft, wise_ft, original]\n  seed: [0, 1]"
    )
    cs = cells(spec_with(tmp_path, grid))
    per = {m: [c for c in cs if c.method == m] for m in ("ours", "wo_kd", "apt", "full_ft", "wise_ft", "original")}
    # 2 students x 2 seeds = 4 combinations
    assert len(per["ours"]) == len(per["wo_kd"]) == 4 * 3 * 2
    assert len(per["apt"]) == len(per["full_ft"]) == len(per["wise_ft"]) == 4 * 2
    assert len(per["original"]) == 4
    assert all(c.teacher is None for m in ("apt", "full_ft", "wise_ft", "original") for c in per[m])
    assert all(c.data_fraction is None for c in per["original"])
    assert len(set(cs)) == len(cs)


def test_pairs_grid(tmp_path: Path) -> None:
    cs = cells(
        spec_with(tmp_path, "  pairs: [[resnet101, resnet34], [clip_vit_b16, vit_small]]\n  method: [wo_kd, ours]")
    )
    assert {(c.student, c.teacher, c.method) for c in cs} == {
        ("resnet101", "resnet34", "wo_kd"),
        ("resnet101", "resnet34", "ours"),
        ("clip_vit_b16", "vit_small", "wo_kd"),
        ("clip_vit_b16", "vit_small", "ours"),
    }


def test_shared_stages_are_unique_and_keys_stable(tmp_path: Path) -> None:
    grid = "  student: [clip_vit_b16]\n  teacher: [resnet34, resnet50]\n  method: [ours, apt]"
    plan = build_plan(spec_with(tmp_path, grid))
    kinds = [s.kind for s in plan.stages.values()]
    assert kinds.count("build_pool") == 1 and kinds.count("build_eval_sets") == 1
    assert kinds.count("pretrain_student") == 1 and kinds.count("extract_features") == 1
    assert kinds.count("robustify_teacher") == 2 and kinds.count("cell") == 3
    again = build_plan(spec_with(tmp_path, grid))
    assert list(plan.stages) == list(again.stages)


def test_changed_input_invalidates_only_downstream(tmp_path: Path) -> None:
    grid = "  student: [clip_vit_b16]\n  teacher: [resnet34]\n  method: [ours]"
    a = build_plan(spec_with(tmp_path, grid))
    b = build_plan(spec_with(tmp_path, grid, overrides=["teacher_train.epochs=7"]))
    ka = {s.kind: s.key for s in a.stages.values()}
    kb = {s.kind: s.key for s in b.stages.values()}
    for same in ("build_pool", "build_eval_sets", "pretrain_student", "extract_features"):
        assert ka[same] == kb[same], same
    for changed in ("robustify_teacher", "teacher_targets", "cell"):
        assert ka[changed] != kb[changed], changed
    c = build_plan(spec_with(tmp_path, grid, overrides=["train.epochs=7"]))
    kc = {s.kind: s.key for s in c.stages.values()}
    assert kc["robustify_teacher"] == ka["robustify_teacher"] and kc["cell"] != ka["cell"]


def test_fault_switch_does_not_change_keys(tmp_path: Path) -> None:
    grid = "  student: [clip_vit_b16]\n  teacher: [resnet34]\n  method: [ours]"
    a = build_plan(spec_with(tmp_path, grid))
    b = build_plan(spec_with(tmp_path, grid, overrides=["train.fail_cells=['*']"]))
    assert list(a.stages) == list(b.stages)


def test_dry_run_report_lists_cells_stages_and_cost(tmp_path: Path) -> None:
    grid = "  student: [clip_vit_b16]\n  teacher: [resnet34]\n  method: [ours, full_ft]"
    plan = build_plan(spec_with(tmp_path, grid), is_cached=lambda kind, key: kind == "build_pool")
    r = dry_run_report(plan)
    assert r["n_cells"] == 2 and len(r["cells"]) == 2
    assert {"name", "key", "cached"} <= set(r["stages"][0])
    assert any(s["cached"] for s in r["stages"] if s["name"] == "build_pool")
    assert any("cannot use cached" in s.get("note", "") for s in r["stages"])
    cost = r["cost"]
    assert cost["per_kind"]["cell"]["count"] == 2 and cost["total_device_hours"] > cost["remaining_device_hours"] > 0


def test_teacher_only_sweep_plans_teacher_stages() -> None:
    plan = build_plan(load_spec(ROOT / "sweeps" / "teacher_mfr.yaml"))
    assert not plan.cells
    assert len(plan.by_kind("robustify_teacher")) == 4 and len(plan.by_kind("naive_teacher")) == 4
