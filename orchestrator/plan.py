"""Spec -> cells -> stage DAG with content keys, the dry-run report and a cost estimate.

Why a DAG: a naive sweep repeats the expensive work (robustifying a teacher, running a 150M-parameter frozen
student over the pool) in every trial. Here each unique piece of work is a `Stage` whose key hashes its resolved
inputs *and its upstream keys*, so it is computed once, cached, and reused by every cell and every later sweep; a
changed input changes exactly the keys downstream of it.

Stage kinds (what each one is, its version, inputs, upstream roles and cost) are declared once, in
`trainables/kinds.py`; this module only decides which stages a spec needs and wires their keys.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.costs import estimate, footprint, stage_seconds
from orchestrator.packing import pack_cells
from orchestrator.spec import SweepSpec
from trainables.kinds import (
    CELL,
    KINDS,
    Cell,
    CellInputs,
    EvalSetsInputs,
    FeaturesInputs,
    FullFinetuneInputs,
    ModelRef,
    PoolInputs,
    PretrainInputs,
    StageInputs,
    TargetsInputs,
    TeacherInputs,
)
from trainables.vocab import (
    METHODS_WITHOUT_FEATURE_CACHE,
    METHODS_WITHOUT_FRACTION,
    METHODS_WITHOUT_TEACHER,
    EvalSuite,
    Method,
)


def content_key(payload: Any) -> str:
    """sha256 of canonical JSON: equal inputs give equal keys on every machine and Python version."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass
class Stage:
    """A unit of cached work. `deps` are upstream stage keys; `inputs` is what the key hashes (besides deps)."""

    kind: str
    key: str
    inputs: StageInputs
    deps: dict[str, str] = field(default_factory=dict)  # role -> upstream key
    cached: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.kind,
            "key": self.key,
            "cached": self.cached,
            "deps": self.deps,
            **({"note": self.note} if self.note else {}),
        }


@dataclass
class Plan:
    spec: SweepSpec
    cells: list[Cell]
    stages: dict[str, Stage]  # key -> stage (insertion order is a valid topological order)
    cell_stage: dict[Cell, str]  # cell -> key of its `cell` stage
    references: dict[int, str] = field(default_factory=dict)  # seed -> key of the flip-rate reference stage

    def by_kind(self, kind: str) -> list[Stage]:
        return [s for s in self.stages.values() if s.kind == kind]


# ------------------------------------------------------------------------------------------------ cells


def cells(spec: SweepSpec) -> list[Cell]:
    """The grid's points after removing the axes a method ignores, deduplicated, in a stable order."""
    g = spec.grid
    pairs = [tuple(p) for p in g.pairs] or [(s, t) for s in g.student for t in (g.teacher or [None])]
    out: dict[Cell, None] = {}
    for (student, teacher), method, seed in itertools.product(pairs, g.method, g.seed):
        m = Method(method)
        t = None if m in METHODS_WITHOUT_TEACHER else teacher
        fractions = [None] if m in METHODS_WITHOUT_FRACTION else list(g.data_fraction)
        for frac in fractions:
            out[Cell(student, t, frac, m.value, seed)] = None
    return list(out)


# ------------------------------------------------------------------------------------------------ stages


def _data_inputs(spec: SweepSpec) -> dict[str, Any]:
    d = spec.data.model_dump(mode="json")
    d.pop("reference_model", None)
    return d


def _model_ref(spec: SweepSpec, name: str) -> ModelRef:
    return ModelRef(name, dict(spec.model_overrides.get(name, {})), spec.weights.get(name))


STAGE_SEED = 0  # the seed of every shared stage of a sweep with cells (see _Builder.__init__)


class _Builder:
    """Adds each stage a spec needs once: a stage's key hashes its kind, version, inputs and upstream keys."""

    def __init__(self, spec: SweepSpec, feature_cache: bool = True) -> None:
        self.spec, self.feature_cache = spec, feature_cache
        self.stages: dict[str, Stage] = {}
        # Why one seed for the shared stages of a sweep with cells: a cell's seed varies what the cell trains
        # (the tail, complete fine-tuning), so its seeds are cheap on cached features and a claim's interval
        # speaks of the method, not of a new teacher/pool/S0 per seed. A teacher-only sweep (Table 6) has
        # nothing else to vary: its seeds draw the teachers.
        self.teacher_only = not spec.grid.student and not spec.grid.pairs

    def _ss(self, seed: int) -> int:
        return seed if self.teacher_only else STAGE_SEED

    def add(self, kind: str, inputs: StageInputs, deps: dict[str, str] | None = None, note: str = "") -> str:
        deps = deps or {}
        key = content_key({"kind": kind, "v": KINDS[kind].version, "inputs": inputs.payload(), "deps": deps})
        if key not in self.stages:
            self.stages[key] = Stage(kind, key, inputs, deps, note=note)
        return key

    def eval_sets(self, seed: int) -> str:
        suites = sorted(s.value for s in self.spec.eval)
        return self.add("build_eval_sets", EvalSetsInputs(_data_inputs(self.spec), suites, self._ss(seed)))

    def teacher_eval_sets(self, seed: int) -> str:
        """The sets a teacher is scored on (clean, C, P: Table 4/6 and the regime checks). Embedded: always all
        three, so every sweep of a profile shares its teachers whatever it evaluates students on; ImageNet: those of
        the three the sweep has roots for."""
        suites = {"clean", "c", "p"}
        if self.spec.data.source != "embedded":
            suites &= {s.value for s in self.spec.eval}
        inputs = EvalSetsInputs(_data_inputs(self.spec), sorted(suites | {"clean"}), self._ss(seed))
        return self.add("build_eval_sets", inputs)

    def pool(self, seed: int) -> str:
        pool = self.spec.pool.model_dump(mode="json")
        return self.add("build_pool", PoolInputs(_data_inputs(self.spec), pool, self._ss(seed)))

    def student_weights(self, student: str) -> dict[str, str]:
        if self.spec.weights.get(student):
            return {}  # given weights: the weights string is part of every downstream key via the ModelRef
        return {
            "student": self.add(
                "pretrain_student",
                PretrainInputs(
                    _model_ref(self.spec, student),
                    _data_inputs(self.spec),
                    self.spec.pretrain.model_dump(mode="json"),
                    self.spec.train.dropout,
                ),
            )
        }

    def _teacher(self, teacher: str, seed: int) -> TeacherInputs:
        cfg = self.spec.teacher_train_for(teacher).model_dump(mode="json")
        for k in ("naive_baseline", "init_epochs", "init_lr", "init_batch_size"):
            cfg.pop(k)
        return TeacherInputs(_model_ref(self.spec, teacher), _data_inputs(self.spec), cfg, self._ss(seed))

    def _teacher_deps_of(self, teacher: str, seed: int) -> dict[str, str]:
        """What a naive or robust teacher reads: the pool, the eval sets, and its naive pretraining (none where
        the profile gives the teacher's weights: those are the pretrained start)."""
        deps = {"pool": self.pool(seed), "eval": self.teacher_eval_sets(seed)}
        if not self.spec.weights.get(teacher):
            tt = self.spec.teacher_train_for(teacher)
            pre = {"epochs": tt.init_epochs, "lr": tt.init_lr, "batch_size": tt.init_batch_size, "n_images": None}
            inputs = PretrainInputs(_model_ref(self.spec, teacher), _data_inputs(self.spec), pre, 0.0)
            deps["init"] = self.add("pretrain_teacher", inputs)
        return deps

    def reference(self, seed: int) -> str | None:
        """The flip-rate reference (AlexNet in the paper): the named model trained naively. FR = FP / FP_ref is
        arithmetic on stored flip probabilities, done when results are logged, so no stage waits for it."""
        ref = self.spec.data.reference_model
        if EvalSuite.p not in self.spec.eval or not ref:
            return None
        return self.naive_teacher(ref, seed)

    def naive_teacher(self, teacher: str, seed: int) -> str:
        return self.add("naive_teacher", self._teacher(teacher, seed), self._teacher_deps_of(teacher, seed))

    def robust_teacher(self, teacher: str, seed: int) -> str:
        return self.add("robustify_teacher", self._teacher(teacher, seed), self._teacher_deps_of(teacher, seed))

    def features(self, student: str, seed: int) -> str:
        deps = {"pool": self.pool(seed), "eval": self.eval_sets(seed), **self.student_weights(student)}
        return self.add(
            "extract_features",
            FeaturesInputs(_model_ref(self.spec, student), self.spec.train.dropout, _store_dtype(self.spec)),
            deps,
        )

    def targets(self, teacher: str, seed: int) -> str:
        deps = {"teacher": self.robust_teacher(teacher, seed), "pool": self.pool(seed)}
        return self.add("teacher_targets", TargetsInputs(teacher, _store_dtype(self.spec)), deps)

    def full_finetune(self, c: Cell) -> str:
        deps = {"pool": self.pool(c.seed), "eval": self.eval_sets(c.seed), **self.student_weights(c.student)}
        train = self.spec.train.model_dump(mode="json")
        inputs = FullFinetuneInputs(
            _model_ref(self.spec, c.student),
            _data_inputs(self.spec),
            c.data_fraction,
            c.seed,
            {k: train[k] for k in ("full_ft_epochs", "epochs", "batch_size", "full_ft_lr", "dropout")},
        )
        return self.add("full_finetune", inputs, deps, note="complete fine-tuning cannot use cached student features")

    def cell(self, c: Cell) -> str:
        m = Method(c.method)
        deps: dict[str, str] = {
            "pool": self.pool(c.seed),
            "eval": self.eval_sets(c.seed),
            **self.student_weights(c.student),
        }
        note = ""
        if m in METHODS_WITHOUT_FEATURE_CACHE:
            note = f"{m.value} trains the frozen part too: it cannot use cached student features"
            deps["full_ft"] = self.full_finetune(c)
        elif self.feature_cache:
            deps["features"] = self.features(c.student, c.seed)
        if c.teacher is not None:
            deps.update(self._teacher_deps(c.teacher, c.seed))
        train = self.spec.train.model_dump(mode="json")
        train.pop("fail_cells")  # a fault switch must not change what a cell *is*
        inputs = CellInputs(
            c,
            train,
            _model_ref(self.spec, c.student),
            _data_inputs(self.spec),
            sorted(s.value for s in self.spec.eval),
            self.spec.search.model_dump(mode="json") if self.spec.search else None,
        )
        return self.add(CELL, inputs, deps, note=note)

    def _teacher_deps(self, teacher: str, seed: int) -> dict[str, str]:
        deps = {"teacher": self.robust_teacher(teacher, seed)}
        if self.feature_cache:
            deps["targets"] = self.targets(teacher, seed)
        if self.spec.teacher_train.naive_baseline:
            deps["naive_teacher"] = self.naive_teacher(teacher, seed)
        return deps


def _store_dtype(spec: SweepSpec) -> str:
    """fp16 features and logits on ImageNet (half the disk: trainables/footprint.py), fp32 on the embedded data,
    whose results stay bit-identical to an in-memory pass."""
    return "float16" if spec.data.source == "imagenet" else "float32"


def build_plan(spec: SweepSpec, is_cached=None, feature_cache: bool = True) -> Plan:
    """Expand the spec into cells and their stage DAG.

    Args:
        spec: a validated sweep spec.
        is_cached: optional `(kind, key) -> bool`, e.g. `Cache.has`, to mark what the cache already holds.
        feature_cache: False plans the naive baseline: no cached features or teacher logits; every cell runs
            the full student (and teacher) forward each epoch. Its cell keys differ (other deps), so naive and
            cached results never mix in the cache.
    """
    b = _Builder(spec, feature_cache)
    cs = cells(spec)
    cell_stage = {c: b.cell(c) for c in cs}
    if not spec.grid.student and not spec.grid.pairs:  # teacher-only sweep (supplement Table 6)
        for teacher, seed in itertools.product(spec.grid.teacher, spec.grid.seed):
            b.robust_teacher(teacher, seed)
            if spec.teacher_train.naive_baseline:
                b.naive_teacher(teacher, seed)
    references = {seed: key for seed in spec.grid.seed if (key := b.reference(seed)) is not None}
    stages = _topological(b.stages)
    if is_cached is not None:
        for s in stages.values():
            s.cached = bool(is_cached(s.kind, s.key))
    return Plan(spec, cs, stages, cell_stage, references)


def _topological(stages: dict[str, Stage]) -> dict[str, Stage]:
    order: dict[str, Stage] = {}

    def visit(key: str) -> None:
        if key in order:
            return
        for d in stages[key].deps.values():
            visit(d)
        order[key] = stages[key]

    for kind in KINDS:
        for k, s in stages.items():
            if s.kind == kind:
                visit(k)
    return order


# ------------------------------------------------------------------------------------------------ report


def dry_run_report(plan: Plan) -> dict[str, Any]:
    """Everything `--dry-run --json` prints: cells, unique stages, cache state, and the cost estimate."""
    return {
        "sweep": plan.spec.name,
        "profile": plan.spec.profile,
        "n_cells": len(plan.cells),
        "cells": [{**c.axes(), "key": plan.cell_stage[c], "label": c.label()} for c in plan.cells],
        "stages": [s.to_json() for s in plan.stages.values()],
        "cost": estimate(plan),
        "footprint": {**footprint(plan), "node_memory_gb": plan.spec.resources.node_memory_gb},
    }


def invocation_shares(plans: list[Plan]) -> list[dict[str, Any]]:
    """Per sweep of one invocation, in order: what it still has to compute once the sweeps before it have run.

    Why: `runner.run_sweeps` runs the specs one after the other into one cache, so a stage two sweeps share (same
    content key: the pool, the eval sets, a common teacher or student) is computed by the first and found by the
    next. A dry run of `sweeps/*.yaml` shows that saving before anything starts, beside each sweep's own cost.
    """
    seen: set[str] = set()
    out = []
    for plan in plans:
        todo = {k: s for k, s in plan.stages.items() if not s.cached}
        hours = {k: stage_seconds(s, plan.spec) / 3600.0 for k, s in todo.items()}
        earlier = [k for k in todo if k in seen]
        out.append(
            {
                "sweep": plan.spec.name,
                "device_hours_alone": sum(hours.values()),
                "device_hours": sum(h for k, h in hours.items() if k not in seen),
                "stages": len(todo) - len(earlier),
                "stages_from_earlier_sweeps": len(earlier),
            }
        )
        seen.update(todo)
    return out


def pending_cells(plan: Plan) -> list[str]:
    """Keys of the cells a run would still compute (not in the cache), in plan order."""
    keys = dict.fromkeys(plan.cell_stage[c] for c in plan.cells)
    return [k for k in keys if not plan.stages[k].cached]


def trial_packs(plan: Plan, slots: int) -> list[list[str]]:
    """How `driver._packs` would group the pending cells into Ray Tune trials, given `slots` trials at once: the
    same `pack_cells` over the same `stage_seconds` estimates, so `--dry-run` shows what a run will do."""
    cells = [(k, stage_seconds(plan.stages[k], plan.spec)) for k in pending_cells(plan)]
    return pack_cells(cells, slots, plan.spec.resources.cells_per_trial)


def iter_upstream(plan: Plan, key: str) -> Iterable[Stage]:
    """All stages a stage depends on, transitively (for `time/pipeline_s`)."""
    seen: set[str] = set()
    stack = list(plan.stages[key].deps.values())
    while stack:
        k = stack.pop()
        if k in seen:
            continue
        seen.add(k)
        yield plan.stages[k]
        stack.extend(plan.stages[k].deps.values())
