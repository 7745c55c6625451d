"""The stage registry as the data plane sees it: every kind has a body once `trainables.pipeline` is imported, and
every kind's inputs survive payload -> dataclass -> payload unchanged (what the content key hashes is what the
body gets). Inputs come from a real plan of the smoke sweep with every method, so every kind is present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.plan import build_plan
from orchestrator.spec import load_spec
from trainables.common import StageContext
from trainables.kinds import BODIES, KINDS
from trainables.pipeline import run_stage  # importing it registers every body

ROOT = Path(__file__).resolve().parents[1]
ALL = ["grid.method=[ours, wo_kd, apt, original, full_ft, wise_ft]", "teacher_train.naive_baseline=true"]


@pytest.fixture(scope="module")
def payloads() -> dict[str, list[dict]]:
    plan = build_plan(load_spec(ROOT / "sweeps" / "smoke.yaml", "local", ALL))
    out: dict[str, list[dict]] = {}
    for stage in plan.stages.values():
        out.setdefault(stage.kind, []).append(stage.inputs.payload())
    return out


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_has_a_body(kind: str) -> None:
    assert callable(BODIES.get(kind)), f"no @body({kind!r}) in any module trainables.pipeline imports"


@pytest.mark.parametrize("kind", list(KINDS))
def test_inputs_round_trip_through_their_payload(kind: str, payloads) -> None:
    assert payloads.get(kind), f"the smoke plan has no {kind} stage to take inputs from"
    cls = KINDS[kind].inputs
    for payload in payloads[kind]:
        inputs = cls.from_payload(payload)
        assert isinstance(inputs, cls)
        assert inputs.payload() == payload
        assert json.dumps(inputs.payload(), sort_keys=True) == json.dumps(payload, sort_keys=True)
        assert cls.from_payload(inputs.payload()) == inputs


def test_run_stage_refuses_another_kinds_inputs(tmp_path: Path, payloads) -> None:
    pool = KINDS["build_pool"].inputs.from_payload(payloads["build_pool"][0])
    with pytest.raises(TypeError, match="needs EvalSetsInputs"):
        run_stage("build_eval_sets", pool, {}, tmp_path, StageContext())
    with pytest.raises(ValueError, match="unknown stage kind 'build_pools'"):
        run_stage("build_pools", pool, {}, tmp_path, StageContext())
