"""Spec loading and validation: every bad input is one line naming file, key, value and what is allowed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.spec import LOCAL_DEFAULTS, Method, SpecError, load_spec

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))

BASE = """
name: t
grid:
  student: [clip_vit_b16]
  teacher: [resnet34]
  data_fraction: [0.5]
  method: [ours]
profiles:
  local: {train: {epochs: 2}}
  paper: {data: {source: imagenet}}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
@pytest.mark.parametrize("profile", ["local", "paper"])
def test_every_sweep_file_validates(path: Path, profile: str) -> None:
    spec = load_spec(path, profile)
    assert spec.profile == profile
    assert spec.reproduces, "each sweep names the paper table/figure it regenerates"


def test_profile_merges_over_base_and_set_overrides(tmp_path: Path) -> None:
    p = write(tmp_path, BASE)
    spec = load_spec(p, "local", ["train.lr=0.01", "grid.seed=[1, 2]"])
    assert spec.train.epochs == 2 and spec.train.lr == 0.01 and spec.grid.seed == [1, 2]
    assert load_spec(p, "paper").train.epochs == 500  # the paper default


@pytest.mark.parametrize(
    "mutation, needles",
    [
        (("student: [clip_vit_b16]", "student: [clip_vit_b61]"), ["grid.student", "clip_vit_b61", "clip_vit_b16"]),
        (("method: [ours]", "method: [ourz]"), ["grid.method", "ourz", "ours"]),
        (("teacher: [resnet34]", "teacher: [resnet35]"), ["grid.teacher", "resnet35", "resnet34"]),
        (("data_fraction: [0.5]", "data_fraction: [1.5]"), ["grid.data_fraction", "1.5", "(0, 1]"]),
        (("data_fraction: [0.5]", "data_fraction: [0]"), ["grid.data_fraction", "0", "(0, 1]"]),
        (("data_fraction: [0.5]", "data_fraction: []"), ["grid.data_fraction"]),
        (("student: [clip_vit_b16]", "student: [clip_vit_b16]\n  colour: [red]"), ["grid.colour", "allowed"]),
        (("local: {train: {epochs: 2}}", "local: {train: {epoch: 2}}"), ["profiles.local", "train.epoch", "epochs"]),
        (("local: {train: {epochs: 2}}", "local: {trian: {epochs: 2}}"), ["profiles.local.trian", "train"]),
        (("local: {train: {epochs: 2}}", "local: {train: {epochs: -3}}"), ["train.epochs", "-3"]),
    ],
)
def test_bad_values_name_file_key_value_and_allowed(tmp_path: Path, mutation, needles) -> None:
    old, new = mutation
    p = write(tmp_path, BASE.replace(old, new))
    with pytest.raises(SpecError) as err:
        load_spec(p, "local")
    msg = str(err.value)
    assert "\n" not in msg and str(p) in msg
    for n in needles:
        assert n in msg, (n, msg)


def test_empty_axis_and_missing_teacher(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="grid.student|grid"):
        load_spec(
            write(
                tmp_path,
                BASE.replace("student: [clip_vit_b16]", "student: []").replace("teacher: [resnet34]", "teacher: []"),
            ),
            "local",
        )
    with pytest.raises(SpecError, match="need at least one teacher"):
        load_spec(write(tmp_path, BASE.replace("teacher: [resnet34]", "teacher: []")), "local")


@pytest.mark.parametrize(
    "text, needle",
    [
        ("name: [unclosed", "malformed YAML"),
        ("- just\n- a list\n", "mapping at the top level"),
    ],
)
def test_malformed_documents(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        load_spec(write(tmp_path, text), "local")


MINIMAL = "name: t\ngrid: {student: [vit_small], method: [apt]}\n"


def test_a_name_and_a_grid_run_locally_on_the_built_in_defaults(tmp_path: Path) -> None:
    """No `profiles:` at all: `--profile local` (the default) resolves to the built-in local defaults."""
    spec = load_spec(write(tmp_path, MINIMAL))
    assert spec.profile == "local" and spec.data.source == "embedded"
    for section, values in LOCAL_DEFAULTS.items():
        got = getattr(spec, section)
        got = got if isinstance(got, dict) else got.model_dump()
        assert {k: got[k] for k in values} == values, section


def test_the_file_overrides_the_built_in_defaults(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL + "train: {epochs: 4}\nmodel_overrides: {vit_small: {patch_size: 16}}\n")
    spec = load_spec(p, "local", ["data.n_train=120"])
    assert spec.train.epochs == 4 and spec.train.batch_size == LOCAL_DEFAULTS["train"]["batch_size"]
    assert spec.model_overrides["vit_small"] == {"patch_size": 16} and spec.data.n_train == 120
    only_paper = write(tmp_path, MINIMAL + "profiles: {paper: {data: {source: imagenet}}}\n")
    assert load_spec(only_paper).data.n_train == LOCAL_DEFAULTS["data"]["n_train"]


def test_teacher_overrides_apply_per_teacher_and_are_checked(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL + "teacher_train: {lr: 5.0e-4}\nteacher_overrides: {resnet50: {init_lr: 1.0e-4}}\n")
    spec = load_spec(p)
    rn50 = spec.teacher_train_for("resnet50")  # the file's key on top of the built-in defaults' schedule for it
    assert (rn50.init_lr, rn50.lr, rn50.init_epochs, rn50.epochs) == (1.0e-4, 5.0e-4, 10, 8)
    rn34 = LOCAL_DEFAULTS["teacher_overrides"]["resnet34"]  # the built-in schedule, whatever it is tuned to
    assert spec.teacher_train_for("resnet34") == spec.teacher_train.model_copy(update=rn34)
    assert spec.teacher_train_for("resnet18") == spec.teacher_train  # no override: the section as written
    assert spec.teacher_train_for("vit_base").init_lr == 1.0e-4  # the built-in local defaults' ViT step
    for bad, needle in [
        ("{vit_base: {init_lr: -1}}", "vit_base.init_lr = -1"),
        ("{vit_base: {naive_baseline: true}}", "not a teacher_train key; allowed"),
        ("{vit_bse: {lr: 1.0e-4}}", "unknown teacher 'vit_bse'"),
    ]:
        with pytest.raises(SpecError, match=re.escape(needle)):
            load_spec(write(tmp_path, MINIMAL + f"teacher_overrides: {bad}\n"))


@pytest.mark.parametrize("profile", ["paper", "cloud"])
def test_other_profiles_still_need_a_definition(tmp_path: Path, profile: str) -> None:
    with pytest.raises(SpecError) as err:
        load_spec(write(tmp_path, MINIMAL), profile)
    msg = str(err.value)
    assert f"--profile '{profile}' is not defined" in msg and "'local' (built in)" in msg and "\n" not in msg


def test_a_file_with_its_own_local_profile_ignores_the_built_in_one(tmp_path: Path) -> None:
    """The shipped sweeps define `profiles.local`: they resolve from the field defaults exactly as before."""
    spec = load_spec(write(tmp_path, BASE), "local")
    assert spec.train.epochs == 2 and spec.data.n_train == 2000 and spec.model_overrides == {}


def test_missing_file_and_bad_override(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope.yaml: no such sweep file$"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match=r": not a regular file \(a folder"):
        load_spec(tmp_path)
    p = write(tmp_path, BASE)
    with pytest.raises(SpecError, match="KEY=VALUE"):
        load_spec(p, "local", ["train.epochs"])
    with pytest.raises(SpecError, match="train.epochs"):
        load_spec(p, "local", ["train.epochs=many"])
    with pytest.raises(SpecError, match="unknown key"):
        load_spec(p, "local", ["train.nope=1"])


def test_methods_are_a_closed_vocabulary() -> None:
    assert {m.value for m in Method} == {"ours", "wo_kd", "apt", "full_ft", "wise_ft", "original"}


# ------------------------------------------------------------------------------------------------ bounds, types


def test_yaml_bounds_refuse_fast(tmp_path: Path) -> None:
    """An alias bomb, 100,000 nested brackets and an oversize file are refused in well under a second each."""
    import time

    from orchestrator.inputs import MAX_SPEC_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES

    bomb = "name: t\nprofiles:\n  local:\n    a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
    )
    cases = [
        (bomb, f"more than {MAX_YAML_NODES:,} values"),
        ("name: " + "[" * 100_000, f"{MAX_YAML_DEPTH} levels"),
        ("name: t\n" + "#" * MAX_SPEC_BYTES, "larger than 256 KiB"),
        ("a: &a [*a]\n", "recursive alias"),
    ]
    for text, needle in cases:
        t0 = time.perf_counter()
        with pytest.raises(SpecError, match=needle) as err:
            load_spec(write(tmp_path, text), "local")
        assert time.perf_counter() - t0 < 2.0 and "\n" not in str(err.value)


def test_duplicate_keys_and_yaml12_floats(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"duplicate key 'name' at line 2"):
        load_spec(write(tmp_path, "name: a\nname: b\n" + BASE.replace("name: t\n", "")), "local")
    spec = load_spec(write(tmp_path, BASE), "local", ["train.lr=1e-3", "train.full_ft_lr=5E-6"])
    assert spec.train.lr == 1e-3 and spec.train.full_ft_lr == 5e-6  # YAML 1.1 would read them as strings


@pytest.mark.parametrize(
    "override, needle",
    [
        ("grid.seed=[true]", "seed True is not a whole number"),
        ("grid.seed=['3']", "seed '3' is not a whole number"),
        ("grid.seed=[1e30]", "seed 1e+30 is not a whole number"),
        ("grid.seed=[4294967296]", "outside 0 <= seed < 2**32"),
        ("grid.seed=[-1]", "outside 0 <= seed < 2**32"),
        ("grid.data_fraction=['0.5']", "data fraction '0.5' is not a number"),
        ("grid.data_fraction=[true]", "data fraction True is not a number"),
        ("grid.data_fraction=[1e-300]", "below 1e-06"),
        ("grid.data_fraction=[.nan]", "outside (0, 1]"),
        ("train.epochs=true", "expected a number, got true/false"),
        ("train.epochs='3'", "expected a number, got text"),
        ("train.lr=.inf", "finite number"),
        ("resources.cpus_per_worker=.nan", "finite number"),
        ("resources.shard_tasks=0", "resources.shard_tasks': 0 Input should be greater than or equal to 1"),
        ("resources.shard_tasks=true", "expected a number, got true/false"),
        ("model_overrides.vit_base.patch_size=-1", "patch_size = -1: allowed: a whole number from 1 to 4096"),
        ("model_overrides.vit_base.patch_size=true", "patch_size = True"),
        ("model_overrides.vit_base.budget_m=0", "budget_m = 0"),
        ("name=..", "sweep name '..' is not a safe folder name"),
        ("name=a/b", "not a safe folder name"),
        ("name=" + "n" * 101, "not a safe folder name"),
        ("profile=paper", "choose the profile with --profile"),
        ("profiles.local.train.epochs=1", "choose one with --profile"),
    ],
)
def test_strict_types_and_names(tmp_path: Path, override: str, needle: str) -> None:
    with pytest.raises(SpecError) as err:
        load_spec(write(tmp_path, BASE), "local", [override])
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_whole_fractions_and_patch_sizes_still_pass(tmp_path: Path) -> None:
    spec = load_spec(
        write(tmp_path, BASE),
        "local",
        ["grid.data_fraction=[1, 0.5]", "grid.seed=[0, 4294967295]", "model_overrides.vit_base.patch_size=8"],
    )
    assert spec.grid.data_fraction == [1.0, 0.5] and spec.model_overrides["vit_base"]["patch_size"] == 8


def test_cell_limit_from_axis_lengths(tmp_path: Path) -> None:
    """10,000 cells pass, 10,002 are refused, with the axis shape; `n_cells` is exactly what the plan expands."""
    from orchestrator.plan import cells
    from orchestrator.spec import MAX_CELLS

    p = write(tmp_path, BASE.replace("method: [ours]", "method: [ours, apt]"))
    ok = load_spec(p, "local", [f"grid.seed=[{', '.join(map(str, range(MAX_CELLS // 2)))}]"])
    assert ok.grid.n_cells() == len(cells(ok)) == MAX_CELLS
    with pytest.raises(
        SpecError,
        match=r"the grid has 10,002 cells \(1 students x 1 teachers x 2 methods x 1 "
        r"fractions x 5001 seeds\); the limit is 10,000",
    ):
        load_spec(p, "local", [f"grid.seed=[{', '.join(map(str, range(MAX_CELLS // 2 + 1)))}]"])


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_n_cells_matches_the_plan(path: Path) -> None:
    from orchestrator.plan import cells

    for profile in ("local", "paper"):
        spec = load_spec(path, profile)
        assert spec.grid.n_cells() == len(cells(spec))


def test_messages_escape_and_shorten(tmp_path: Path) -> None:
    """A key with an ANSI escape, a file name with a newline, a 20,000-seed duplicate: one short line each."""
    with pytest.raises(SpecError) as err:
        load_spec(write(tmp_path, BASE.replace("  method: [ours]", '  method: [ours]\n  "\\e[31mred\\n": 1')), "local")
    msg = str(err.value)
    assert "\x1b" not in msg and "\n" not in msg and "\\x1b[31mred\\n" in msg, msg
    odd = tmp_path / "a\nb\x1b.yaml"
    odd.write_text("name: [")
    with pytest.raises(SpecError) as err:
        load_spec(odd, "local")
    assert "a\\nb\\x1b.yaml" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(SpecError) as err:
        load_spec(write(tmp_path, BASE), "local", [f"grid.seed=[{', '.join(map(str, range(20_000)))}, 7]"])
    assert "grid.seed lists 7 twice" in str(err.value) and len(str(err.value)) < 400, str(err.value)
