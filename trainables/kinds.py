"""The registry of stage kinds: one entry per kind of cached work, read by both planes.

Each `Kind` declares what the rest of the system needs to know about it, in one place:
- `version`: bump when the body changes meaning, so old cache entries stop matching instead of being reused;
- `inputs`: a frozen dataclass, exactly what the stage's content key hashes (besides its upstream keys); the
  driver builds it from the spec (orchestrator/plan.py), the worker hands it to the body unchanged;
- `upstream`: the roles of the upstream entries the body may read (`deps[role]`), and the kinds they hold;
- `cost`: a rough estimate of its work, `(model, forward-equivalent image passes, extra ms)`, from its inputs and
  the plan's `Sizes` (orchestrator/costs.py turns it into seconds for packing and `--dry-run`);
- `pipeline`: whether its time counts as the method's training time (main paper Figure 1).
The body itself lives with the code it runs (trainables/sets.py, classifiers.py, features.py, distill.py,
full_ft.py) and registers with `@body(name)`; `trainables.pipeline.run_stage` dispatches. Adding a kind: one `Kind`
here, one body there (in a module trainables/pipeline.py imports).

Why no torch here: the driver plans, prices and validates from this module before anything heavy is imported.
Why dataclasses whose sub-sections are plain dicts: the sections (`data`, `train`, `pool`, ...) are the spec's
already-validated pydantic sections dumped to JSON; the stage must hash and receive exactly those values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.vocab import Method

Json = dict[str, Any]


@dataclass(frozen=True)
class ModelRef:
    """A registry model as a stage sees it: its name, builder overrides, and weights (tag or file) if given."""

    name: str
    overrides: Json = field(default_factory=dict)
    weights: str | None = None


@dataclass(frozen=True)
class Cell:
    """One grid point after dropping the axes its method ignores (teacher/fraction are None there)."""

    student: str
    teacher: str | None
    data_fraction: float | None
    method: str
    seed: int

    def axes(self) -> Json:
        return dataclasses.asdict(self)

    def label(self) -> str:
        t = self.teacher or "none"
        a = "none" if self.data_fraction is None else f"{self.data_fraction:g}"
        return f"{self.method}-{self.student}-t_{t}-a{a}-s{self.seed}"


class StageInputs:
    """Base of every kind's inputs: `payload()` is the JSON the content key hashes and Ray ships."""

    def payload(self) -> Json:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> StageInputs:
        kw = dict(payload)
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name == "model" and isinstance(kw.get("model"), Mapping):
                kw["model"] = ModelRef(**kw["model"])
            if f.name == "cell" and isinstance(kw.get("cell"), Mapping):
                kw["cell"] = Cell(**kw["cell"])
        return cls(**kw)


@dataclass(frozen=True)
class EvalSetsInputs(StageInputs):
    data: Json
    suites: list[str]
    seed: int


@dataclass(frozen=True)
class PoolInputs(StageInputs):
    data: Json
    pool: Json
    seed: int


@dataclass(frozen=True)
class PretrainInputs(StageInputs):
    model: ModelRef
    data: Json
    pretrain: Json
    dropout: float


@dataclass(frozen=True)
class TeacherInputs(StageInputs):
    model: ModelRef
    data: Json
    teacher_train: Json
    seed: int


@dataclass(frozen=True)
class FeaturesInputs(StageInputs):
    model: ModelRef
    dropout: float
    store_dtype: str = "float32"  # of the stored features: float16 on ImageNet (trainables/shards.py)


@dataclass(frozen=True)
class TargetsInputs(StageInputs):
    teacher: str
    store_dtype: str = "float32"  # of the stored logits: float16 on ImageNet


@dataclass(frozen=True)
class FullFinetuneInputs(StageInputs):
    model: ModelRef
    data: Json
    data_fraction: float | None
    seed: int
    train: Json


@dataclass(frozen=True)
class CellInputs(StageInputs):
    cell: Cell
    train: Json
    model: ModelRef
    data: Json
    eval: list[str]
    search: Json | None = None

    @property
    def method(self) -> Method:
        return Method(self.cell.method)


# ------------------------------------------------------------------------------------------------ costs


@dataclass(frozen=True)
class Sizes:
    """Dataset sizes at the plan's profile (None in the spec = the whole ImageNet split), for cost estimates."""

    n_train: int
    n_test: int
    n_pool: int
    n_eval: int  # clean test + every C cell + every P frame
    image_size: int = 32  # for the footprint (trainables/footprint.py): bytes per image, feature shapes
    n_classes: int = 10
    source: str = "embedded"
    on_gpu: bool = False  # resources.gpus_per_worker > 0: weights and activations live in GPU memory


Cost = tuple[str | None, float, float]  # (model whose per-image time applies, image passes, extra milliseconds)
CORRUPT_MS_PER_IMAGE = 0.9
TAIL_SHARE = 0.05  # the tuned tail + heads, relative to a full forward


def _pretrain_cost(i: PretrainInputs, s: Sizes) -> Cost:
    n = i.pretrain["n_images"] or s.n_train
    return i.model.name, 3.0 * i.pretrain["epochs"] * n + 2 * (2 * s.n_test + 5120), 0.0


def _teacher_images(i: TeacherInputs, s: Sizes) -> float:
    return i.teacher_train["n_images"] or s.n_train


def _robust_cost(i: TeacherInputs, s: Sizes) -> Cost:
    tt = i.teacher_train
    n = _teacher_images(i, s) + (tt["pool_images"] or s.n_pool)
    return i.model.name, 9.0 * tt["epochs"] * n + s.n_eval, 0.0


def _naive_cost(i: TeacherInputs, s: Sizes) -> Cost:
    n = _teacher_images(i, s) + (i.teacher_train["pool_images"] or s.n_pool)  # as many steps as the robust one
    return i.model.name, 3.0 * i.teacher_train["epochs"] * n + s.n_eval, 0.0


def _pretrain_teacher_cost(i: PretrainInputs, s: Sizes) -> Cost:
    n = i.pretrain["n_images"] or s.n_train
    return i.model.name, 3.0 * i.pretrain["epochs"] * n + 2 * (2 * s.n_test + 5120), 0.0


def _pool_cost(i: PoolInputs, s: Sizes) -> Cost:
    return None, 0.0, (s.n_pool + s.n_train * i.pool["ae_epochs"]) * 2.0


def _eval_sets_cost(i: EvalSetsInputs, s: Sizes) -> Cost:
    return None, 0.0, 75 * (i.data["c_per_cell"] or s.n_test) * CORRUPT_MS_PER_IMAGE * 1.5


def _features_cost(i: FeaturesInputs, s: Sizes) -> Cost:
    return i.model.name, s.n_train + s.n_pool + s.n_eval, 0.0


def _targets_cost(i: TargetsInputs, s: Sizes) -> Cost:
    return i.teacher, s.n_train + s.n_pool, 0.0


def _full_ft_cost(i: FullFinetuneInputs, s: Sizes) -> Cost:
    n = (i.data_fraction or 1.0) * (s.n_pool + s.n_train)
    return i.model.name, 3.0 * (i.train["full_ft_epochs"] or i.train["epochs"]) * n, 0.0


def _cell_cost(i: CellInputs, s: Sizes) -> Cost:
    """A distillation cell trains the tail (a share of a full pass) and evaluates with MC dropout; a full_ft or
    wise_ft cell trains nothing (its `full_finetune` stage did, and is priced there) and evaluates the whole
    model from images. Charging it the training again priced transfer's three full_ft cells of CLIP
    ViT-L/14@336 at 1,875 s each against 193-238 s measured (2026-12-03), and the sweep's ETA 4-5x long."""
    t = i.train
    n = (i.cell.data_fraction or 0.0) * (s.n_pool + s.n_train)
    if i.method in (Method.full_ft, Method.wise_ft):
        return i.model.name, 2 * s.n_eval, 0.0
    return i.model.name, TAIL_SHARE * (3.0 * t["epochs"] * n + t["mc_samples"] * s.n_eval), 0.0


# ------------------------------------------------------------------------------------------------ registry


Body = Callable[[Any, dict[str, Path], Path, Any], dict[str, float]]


@dataclass(frozen=True)
class Kind:
    """One kind of stage (see the module docstring)."""

    name: str
    version: int
    inputs: type[StageInputs]
    upstream: Mapping[str, str]  # role -> kind of the entry the body may read under deps[role]
    cost: Callable[[Any, Sizes], Cost]
    pipeline: bool = False
    doc: str = ""


_UP_EVAL = {"eval": "build_eval_sets"}
_UP_STUDENT = {"student": "pretrain_student"}
_UP_TEACHER = {"pool": "build_pool", "init": "pretrain_teacher", **_UP_EVAL}
KINDS: dict[str, Kind] = {
    k.name: k
    for k in (  # dependency order: every kind after the kinds it reads
        Kind(
            "build_eval_sets",
            2,
            EvalSetsInputs,
            {},
            _eval_sets_cost,
            doc="clean test set, C set, P sequences, transfer split(s), ImageNet shift sets",
        ),
        Kind("build_pool", 1, PoolInputs, {}, _pool_cost, doc="DeepAugment AE + Noise2Net + AugMix images"),
        Kind(
            "pretrain_student",
            5,
            PretrainInputs,
            {},
            _pretrain_cost,
            doc="the student trained on clean data, where the profile gives no weights",
        ),
        Kind(
            "pretrain_teacher",
            1,
            PretrainInputs,
            {},
            _pretrain_teacher_cost,
            doc="the teacher trained on clean data to a plateau, where the profile gives no weights",
        ),
        Kind(
            "naive_teacher",
            5,
            TeacherInputs,
            _UP_TEACHER,
            _naive_cost,
            doc="clean-only fine-tuning of the teacher, robust's budget (Table 6, and the flip-rate reference)",
        ),
        Kind(
            "robustify_teacher",
            5,
            TeacherInputs,
            _UP_TEACHER,
            _robust_cost,
            pipeline=True,
            doc="AugMix + JSD on clean + pool images",
        ),
        Kind(
            "extract_features",
            3,
            FeaturesInputs,
            {"pool": "build_pool", **_UP_EVAL, **_UP_STUDENT},
            _features_cost,
            pipeline=True,
            doc="the student's frozen part over the clean split, the pool and every eval set, once",
        ),
        Kind(
            "teacher_targets",
            3,
            TargetsInputs,
            {"teacher": "robustify_teacher", "pool": "build_pool"},
            _targets_cost,
            pipeline=True,
            doc="the robust teacher's logits on the clean split and the pool",
        ),
        Kind(
            "full_finetune",
            3,
            FullFinetuneInputs,
            {"pool": "build_pool", **_UP_EVAL, **_UP_STUDENT},
            _full_ft_cost,
            pipeline=True,
            doc="complete fine-tuning, shared by full_ft and wise_ft",
        ),
        Kind(
            "cell",
            3,
            CellInputs,
            {
                "pool": "build_pool",
                **_UP_EVAL,
                **_UP_STUDENT,
                "features": "extract_features",
                "teacher": "robustify_teacher",
                "targets": "teacher_targets",
                "naive_teacher": "naive_teacher",
                "full_ft": "full_finetune",
            },
            _cell_cost,
            doc="distil (or a baseline) + evaluate: one grid point, run as a Ray Tune trial",
        ),
    )
}
CELL = "cell"
PIPELINE_KINDS = tuple(k.name for k in KINDS.values() if k.pipeline)

BODIES: dict[str, Body] = {}


def body(name: str) -> Callable[[Body], Body]:
    """Register the function that computes stage kind `name` (called as `fn(inputs, deps, out, ctx)`)."""
    if name not in KINDS:
        raise ValueError(f"@body({name!r}): no such stage kind; declare it in trainables/kinds.py first")

    def deco(fn: Body) -> Body:
        BODIES[name] = fn
        return fn

    return deco


def get_kind(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown stage kind {name!r}; allowed: {', '.join(KINDS)}") from None
