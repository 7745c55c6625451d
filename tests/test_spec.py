"""Spec loading and validation: every bad input is one line naming file, key, value and what is allowed."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.spec import Method, SpecError, load_spec

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


@pytest.mark.parametrize("mutation, needles", [
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
])
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
        load_spec(write(tmp_path, BASE.replace("student: [clip_vit_b16]", "student: []")
                        .replace("teacher: [resnet34]", "teacher: []")), "local")
    with pytest.raises(SpecError, match="need at least one teacher"):
        load_spec(write(tmp_path, BASE.replace("teacher: [resnet34]", "teacher: []")), "local")


@pytest.mark.parametrize("text, needle", [
    ("name: [unclosed", "malformed YAML"),
    ("- just\n- a list\n", "mapping at the top level"),
    ("name: t\ngrid: {student: [clip_vit_b16], method: [apt]}\n", "--profile 'local' is not defined"),
])
def test_malformed_documents(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        load_spec(write(tmp_path, text), "local")


def test_missing_file_and_bad_override(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such sweep file"):
        load_spec(tmp_path / "nope.yaml")
    p = write(tmp_path, BASE)
    with pytest.raises(SpecError, match="KEY=VALUE"):
        load_spec(p, "local", ["train.epochs"])
    with pytest.raises(SpecError, match="train.epochs"):
        load_spec(p, "local", ["train.epochs=many"])
    with pytest.raises(SpecError, match="unknown key"):
        load_spec(p, "local", ["train.nope=1"])


def test_methods_are_a_closed_vocabulary() -> None:
    assert {m.value for m in Method} == {"ours", "wo_kd", "apt", "full_ft", "wise_ft", "original"}
