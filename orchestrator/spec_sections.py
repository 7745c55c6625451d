"""The sections of a sweep spec besides the grid: typed, strict, each field with its default and its bounds.

Why a module of their own: `orchestrator/spec.py` assembles them into a `SweepSpec` and reads the YAML; these are
the plain value objects, so they can be read (and extended) without the loading logic. `Strict` is the base of
every section: unknown keys, non-finite floats and numbers given as text or booleans are refused there, once, for
every field.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator


def _is_number_field(annotation: Any) -> bool:
    """int, float, or an Optional of them: the fields where YAML's `true` or `"3"` must not pass as a number."""
    args = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else (annotation,)
    )
    args = [a for a in args if a is not type(None)]
    return bool(args) and all(a in (int, float) for a in args)


class Strict(BaseModel):
    # allow_inf_nan=False: `--set train.lr=.inf` or `nan` is refused wherever a float is read
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        """pydantic would read `true` as 1 and `"3"` as 3: both change what the user meant, so refuse them."""
        if isinstance(v, (bool, str)) and _is_number_field(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected a number, got {'true/false' if isinstance(v, bool) else 'text'}")
        return v


class TrainConfig(Strict):
    """Distillation of the student's tail (method.md §2.5 and §3). Every [default] of the method is a knob here."""

    epochs: int = Field(500, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(256, ge=1)
    dropout: float = Field(0.25, ge=0, lt=1)
    mc_samples: int = Field(10, ge=1)
    # unclean head: (1-alpha) CE + alpha KD. Why 0.9 and tau 4 (Hinton et al. 2015; CRD's KD baseline) rather
    # than 0.5 / 1: at 0.5 the label keeps half of the target's mass, so even a uniform teacher only smooths the
    # label and the teacher cannot move the target (issue #13); tau 4 lets its non-argmax mass count.
    alpha: float = Field(0.9, ge=0, le=1)
    tau: float = Field(4.0, gt=0)  # distillation temperature
    lam: float = Field(1.0, ge=0)  # head selection: U + lam * KL
    self_distill: float = Field(0.0, ge=0)  # optional clean-head KL to the original student
    wise_alpha: float = Field(0.5, ge=0, le=1)  # WiSE-FT interpolation weight
    full_ft_lr: float = Field(1e-5, gt=0)  # complete fine-tuning touches pretrained weights: smaller step
    full_ft_epochs: int | None = Field(None, ge=1)  # None: same as `epochs`
    precise_bn: bool = True  # recompute BN statistics after short trainings (platform.md)
    fail_cells: list[str] = Field(default_factory=list)  # fault switch for tests: cell keys (or "*") that raise


class TeacherTrainConfig(Strict):
    """Robustifying the small teacher with AugMix (+JSD) on clean + DeepAugment images (method.md §2.1)."""

    epochs: int = Field(90, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(256, ge=1)
    jsd_weight: float = Field(12.0, ge=0)
    n_images: int | None = Field(None, ge=1)  # clean images (None: the whole clean split)
    pool_images: int | None = Field(None, ge=1)  # augmented pool images (None: the whole pool)
    naive_baseline: bool = False  # also train a clean-only teacher (supplement Table 6)
    augmix_severity: int = Field(1, ge=1, le=10)  # 1: the reference ImageNet recipe (torchvision's 3 is CIFAR's)
    # share of each robustification batch passed through a fresh Noise2Net first (DeepAugment's train.py: half)
    noise2net_share: float = Field(0.5, ge=0, le=1)
    # `pretrain_teacher`, only where no weights are given (local profile): the naive pretraining the teacher is
    # robustified from, CE on the whole clean split (the paper starts from ImageNet weights).
    init_epochs: int = Field(10, ge=1)
    init_lr: float = Field(1e-3, gt=0)
    init_batch_size: int = Field(64, ge=1)


# `teacher_overrides` may set any of these per teacher; `naive_baseline` says what a sweep trains, not how.
TEACHER_OVERRIDE_KEYS = frozenset(TeacherTrainConfig.model_fields) - {"naive_baseline"}


def merged_teacher_train(base: TeacherTrainConfig, knobs: dict[str, Any]) -> TeacherTrainConfig:
    """`base` with one teacher's `teacher_overrides` on top, validated as a whole section."""
    return TeacherTrainConfig.model_validate({**base.model_dump(), **knobs}) if knobs else base


def check_teacher_overrides(v: dict[str, dict[str, Any]], base: TeacherTrainConfig | None) -> dict:
    """`teacher_overrides` values: known `teacher_train` keys, and each teacher's merged section within its bounds
    (None `base`: teacher_train itself was wrong, and that is the error reported)."""
    for model, knobs in v.items():
        for knob, value in knobs.items():
            if knob not in TEACHER_OVERRIDE_KEYS:
                keys = ", ".join(sorted(TEACHER_OVERRIDE_KEYS))
                raise ValueError(f"{model}.{knob} = {value!r}: not a teacher_train key; allowed: {keys}")
        if base is None:
            continue
        try:
            merged_teacher_train(base, knobs)
        except ValidationError as err:
            e = err.errors()[0]
            knob = e["loc"][0] if e["loc"] else "?"
            raise ValueError(f"{model}.{knob} = {knobs.get(knob)!r}: {e['msg']}") from None
    return v


class PretrainConfig(Strict):
    """`pretrain_student`: only where no weights are given (local profile) — a clean-trained, brittle student."""

    epochs: int = Field(2, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(128, ge=1)
    n_images: int | None = Field(None, ge=1)


class PoolConfig(Strict):
    """The offline augmented pool of N' images (DeepAugment + Noise2Net, then AugMix), method.md §2.2."""

    n_images: int = Field(2000, ge=1)
    ae_epochs: int = Field(5, ge=1)
    augmix_prob: float = Field(0.5, ge=0, le=1)
    # share of the pool made by Noise2Net instead of the perturbed autoencoder. 0: the paper's pool is DeepAugment
    # + AugMix; Noise2Net is applied online to the teacher's batches (teacher_train.noise2net_share)
    noise2net_share: float = Field(0.0, ge=0, le=1)
    augmix_severity: int = Field(1, ge=1, le=10)


class DataConfig(Strict):
    """Where images come from. `embedded`: MNIST-5k + sklearn digits, shipped in packages; `imagenet`: roots.

    On `imagenet`, n_train / n_test bound the images held in memory (uint8, 150 kB each at 224 px) for the train
    split and for the val split, every shift set and every transfer set; None reads all of them (not for the
    1.28M-image train split). `roots.objectnet_mapping` names ObjectNet's {folder: [wnid, ...]} JSON file."""

    source: Literal["embedded", "imagenet"] = "embedded"
    image_size: int = Field(32, ge=32)
    n_train: int | None = Field(2000, ge=10)
    n_test: int | None = Field(500, ge=10)
    c_per_cell: int | None = Field(100, ge=1)  # test images per (corruption, severity); None: all
    # distinct test images C draws on, shared out over the 75 cells (None: the same c_per_cell in every cell)
    c_distinct: int | None = Field(None, ge=1)
    p_sequences: int = Field(20, ge=1)
    p_frames: int = Field(10, ge=2)
    roots: dict[str, str] = Field(default_factory=dict)
    reference_model: str | None = None  # model whose flip probabilities define FR (AlexNet in the paper)

    @model_validator(mode="after")
    def _embedded_sizes(self) -> DataConfig:
        if self.source == "embedded" and (self.n_train is None or self.n_test is None):
            raise ValueError(
                "data.n_train and data.n_test must be numbers on source 'embedded' (5,000 images in "
                "all); None (all images) is for source 'imagenet'"
            )
        return self


class Resources(Strict):
    """Per-trial resources; Ray Train workers get their own placement group (platform.md)."""

    workers_per_trial: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float = Field(0, ge=0)
    max_concurrent_trials: int | None = Field(None, ge=1)  # None: derived from the cluster
    max_retries: int = Field(1, ge=0)
    # Cells sharing one trial (orchestrator/packing.py): None packs cheap cells automatically, 1 turns packing off.
    cells_per_trial: int | None = Field(None, ge=1)
    # Memory of one worker node, GB: a plan whose hungriest stage needs more is refused before anything starts
    # (orchestrator/costs.py `footprint`). None: not checked (the footprint is still printed by --dry-run).
    node_memory_gb: float | None = Field(None, gt=0)
    # Shard tasks in flight at once per stage that maps a frozen network over shards (extract_features,
    # teacher_targets: orchestrator/ray_backend.py `shard_map`), each with cpus/gpus_per_worker. None: as many as
    # the cluster fits at once (its CPUs, or GPUs, per worker; at most 64); 1: the stage computes its own shards.
    # Also bounds the CPU-only tasks that decode image files on source imagenet (trainables/reading.py).
    shard_tasks: int | None = Field(None, ge=1)


class SearchConfig(Strict):
    """Optional Optuna study inside each cell, e.g. {space: {lr: "loguniform(1e-4, 1e-2)"}, trials: 8}."""

    space: dict[str, str] = Field(min_length=1)
    trials: int = Field(8, ge=1)
    metric: str = "acc/c"

    @field_validator("space")
    @classmethod
    def _space(cls, v: dict[str, str]) -> dict[str, str]:
        from orchestrator.search import parse_space

        parse_space(v)
        return v


# The built-in `local` profile: what `--profile local` (the default) starts from when a sweep file has no
# `profiles.local` of its own. Why these values: they are what the shipped sweeps' local profiles typically set
# (sweeps/kd_pairs.yaml, data_fraction.yaml, multimodal.yaml, ...), sized so that a cell takes seconds and a small
# grid minutes on a 2-core laptop: the embedded digits at 32 px, 800 train / 300 test images (C on all 300, 20
# per corruption cell; 50 P sequences), a pool of 800, teachers pretrained five epochs then robustified one, fifteen
# distillation epochs (issue #13: the paper's regime at MNIST scale). ViTs get patches that leave 16 (vit_small) or
# 4 (vit_base) tokens at 32 px: ViT-B at 16 tokens alone costs minutes per epoch on CPU. It sits *under* the
# file: every value the file sets (base sections, `--set`) wins; a file with its own `profiles.local` starts from
# the field defaults as before, so the shipped sweeps resolve exactly as they did.
LOCAL_DEFAULTS: dict[str, Any] = {
    "data": {
        "source": "embedded",
        "image_size": 32,
        "n_train": 800,
        "n_test": 300,
        "c_per_cell": 20,
        "c_distinct": 300,
        "p_sequences": 50,
        "p_frames": 4,
        "reference_model": "resnet34",
    },
    "pool": {"n_images": 800, "ae_epochs": 3},
    "pretrain": {"epochs": 6, "batch_size": 64, "lr": 5.0e-4},
    "teacher_train": {
        "epochs": 1,
        "batch_size": 64,
        "lr": 5.0e-4,
        "init_epochs": 5,
        "init_batch_size": 64,
        "init_lr": 1.0e-3,
    },
    "train": {"epochs": 15, "batch_size": 64},
    # ViTs see 2x2 patches of 16 px (4 tokens): ViT-S at patch 8 reached 62 % clean after its 5 pretraining epochs,
    # at patch 16 82 % in a third of the time. They take a smaller step than the ResNets' 1e-3 (ViT-B stays at
    # chance there: DeiT's rule gives ~6e-5 at batch 64); fine-tuning at half the pretraining step, as the ResNets.
    "model_overrides": {"vit_small": {"patch_size": 16}, "vit_base": {"patch_size": 16}},
    # Robustification epochs per teacher, so each ends more robust on C than the students it teaches (the paper's
    # regime; one epoch left five of six teachers below S0). Measured: ViT-S passes after 3 epochs; ViT-B after 1
    # passed the CLIP ViT-B/16 S0 (+6.6) but not the ablations' converged ViT-L/14@336 S0 (+2.3 [-0.3, +4.9]): 3;
    # RN-101 (72.9 % C) and RN-152 (75.4 %) after 10 pretraining and 5 robustification epochs; RN-50 gains ~0.75
    # point per epoch (67.4 % after 3, 68.9 % after 5, S0 68.1 %) and gets 8. RN-34 after 3 was +4.5 [+0.7, +8.8]
    # ahead of S0 here but +3.8 [-0.1, +8.1] with AVX2 kernels (another machine): 6. 10 pretraining epochs for
    # all but RN-34 and ViT-S: at 5, RN-50, ViT-S and ViT-B still gained >= 1 point in the last one; ViT-S still
    # gained 1.0-1.3 points in its 10th, so 15.
    "teacher_overrides": {
        "resnet34": {"epochs": 6},
        "resnet50": {"init_epochs": 10, "epochs": 8},
        "resnet101": {"init_epochs": 10, "epochs": 5},
        "resnet152": {"init_epochs": 10, "epochs": 5},
        "vit_small": {"init_epochs": 15, "init_lr": 3.0e-4, "lr": 1.5e-4, "epochs": 3},
        "vit_base": {"init_epochs": 10, "init_lr": 1.0e-4, "lr": 5.0e-5, "epochs": 3},
    },
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "gpus_per_worker": 0},
}
BUILTIN_PROFILES: dict[str, dict[str, Any]] = {"local": LOCAL_DEFAULTS}


# Library keywords in `model_overrides` whose wrong type or sign would only fail inside a worker, hours later.
_POSITIVE_INT_KNOBS = frozenset({"patch_size", "depth", "num_heads", "embed_dim", "width", "layers"})
_POSITIVE_NUMBER_KNOBS = frozenset({"budget_m", "mlp_ratio"})
_RATE_KNOBS = frozenset(
    {
        "force_patch_dropout",
        "drop_rate",
        "drop_path_rate",
        "attn_drop_rate",
        "proj_drop_rate",
        "pos_drop_rate",
        "patch_drop_rate",
    }
)


def override_problem(knob: str, value: Any) -> str | None:
    """Why a `model_overrides` value is wrong for its keyword, or None."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if knob in _POSITIVE_INT_KNOBS and not (type(value) is int and 1 <= value <= 4096):
        return "allowed: a whole number from 1 to 4096"
    if knob in _POSITIVE_NUMBER_KNOBS and not (is_number and 0 < value < 1e6):
        return "allowed: a number > 0"
    if knob in _RATE_KNOBS and not (is_number and 0 <= value < 1):
        return "allowed: a number in [0, 1)"
    return None
