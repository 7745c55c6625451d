"""Teachers and students from registry names (timm's `_factory.py`): resolve the weights argument, build through
the model's entry point, wrap or split, then load a weights file if one was given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from trainables.models._registry import ModelCfg, get_model_cfg, list_models, model_entrypoint
from trainables.models.clip import text_classifier_and_tower
from trainables.models.split import split_point
from trainables.models.student import Student, Teacher
from trainables.models.weights import load_checked, load_either, read_state_dict

STUDENT_KNOBS = ("budget_m", "prompt")  # split/prompt knobs: never reach the library builders
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def _resolve_weights(cfg: ModelCfg, pretrained: str | None) -> tuple[str | None, Path | None]:
    """(hub tag, weights file) for a `pretrained` argument: None, a tag (bare or `arch.tag`), or a file path."""
    if not pretrained:
        return None, None
    if "/" in pretrained or "\\" in pretrained or pretrained.endswith(WEIGHT_SUFFIXES) or Path(pretrained).exists():
        path = Path(pretrained)
        if not path.is_file():
            raise FileNotFoundError(f"{cfg.name}: weights file {pretrained!r} does not exist")
        return None, path
    return _check_tag(cfg, pretrained), None


def _check_tag(cfg: ModelCfg, tag: str) -> str:
    """Validate a hub tag offline against the library's list, so a typo fails before any download is tried."""
    if cfg.family == "timm":
        import timm

        full = tag if tag.startswith(cfg.arch + ".") else f"{cfg.arch}.{tag}"
        known = timm.list_pretrained(cfg.arch + ".*")
    else:
        import open_clip

        full, known = tag, [str(t) for t in open_clip.list_pretrained_tags_by_model(cfg.arch)]
    if full not in known:
        raise ValueError(
            f"{cfg.name}: unknown weights tag {tag!r} for {cfg.arch}; known: {', '.join(known)} "
            f"(or give a state-dict file path)"
        )
    return full


def _split_knobs(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(student knobs, library keywords): the knobs tune the split and the prompt, never the library's build."""
    knobs = {k: overrides[k] for k in STUDENT_KNOBS if overrides.get(k) is not None}
    return knobs, {k: v for k, v in overrides.items() if k not in STUDENT_KNOBS}


def create_teacher(
    name: str, *, num_classes: int, img_size: int, pretrained: str | None = None, **overrides: Any
) -> nn.Module:
    """A teacher: a timm classifier that takes [0, 1] images and returns logits (B, num_classes).

    Args:
        name: a registered model with the 'teacher' role.
        num_classes: classifier width.
        img_size: input resolution (ViTs size their position embedding to it).
        pretrained: None (random init), a hub tag (the library's loading: needs a hub or cache), or a path to a
            state-dict file, either the library's own keys or a saved Teacher's (`net.`-prefixed).
        **overrides: library keywords (e.g. `patch_size=8`); student-only knobs are ignored.

    Raises:
        UnknownModelError: unknown name.  ValueError: not a teacher, bad tag, or weights that do not fit.
    """
    cfg = get_model_cfg(name)
    if "teacher" not in cfg.roles:
        raise ValueError(
            f"{name!r} is not a teacher (open_clip models have no classifier); "
            f"teachers: {', '.join(list_models('teacher'))}"
        )
    tag, path = _resolve_weights(cfg, pretrained)
    lib = _split_knobs(overrides)[1]
    net = model_entrypoint(name)(cfg, num_classes=num_classes, img_size=img_size, tag=tag, **lib)
    teacher = Teacher(net, cfg)
    if path is not None:
        load_either(net, teacher, read_state_dict(path), path)
    return teacher


def create_student(
    name: str,
    *,
    num_classes: int,
    img_size: int,
    class_names: list[str],
    dropout: float = 0.25,
    pretrained: str | None = None,
    **overrides: Any,
) -> Student:
    """A student split into frozen part, shared tuned trunk and three heads (see `trainables.models.split`).

    Args:
        name: a registered model (the 'student' role lists the paper's students; any family can be split).
        num_classes: number of classes; must equal len(class_names).
        img_size: input resolution.
        class_names: class names; CLIP students embed their prompts as the classifier.
        dropout: dropout probability inside each head (MC dropout at inference).
        pretrained: None (random init), a hub tag, or a state-dict file: the library's own keys (loaded before
            the split) or a saved Student's (S0 re-taken if the file has none).
        **overrides: library keywords (timm ViT `patch_size`, open_clip `force_patch_dropout`, ...) and the knobs
            `budget_m` (tuned budget of the split, millions at paper settings) and `prompt` (CLIP template, '{}').

    Raises:
        UnknownModelError: unknown name.  ValueError: bad arguments, bad tag, or weights that do not fit.
    """
    cfg = get_model_cfg(name)
    if len(class_names) != num_classes:
        raise ValueError(f"{name}: {len(class_names)} class names for num_classes={num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{name}: dropout must be in [0, 1), got {dropout}")
    knobs, lib = _split_knobs(overrides)
    tag, path = _resolve_weights(cfg, pretrained)
    net = model_entrypoint(name)(cfg, num_classes=num_classes, img_size=img_size, tag=tag, **lib)
    state = read_state_dict(path) if path is not None else None
    if state is not None and set(state) == set(net.state_dict()):
        load_checked(net, state, path)  # the library's own checkpoint: load before cutting
        state = None
    student = _assemble(cfg, net, split_point(name, knobs.get("budget_m")), dropout, class_names, knobs.get("prompt"))
    if state is not None:
        load_checked(student, state, path)
    return student


def _assemble(
    cfg: ModelCfg, net: nn.Module, k: int, dropout: float, class_names: list[str], prompt: str | None
) -> Student:
    """Cut `net` into units and build the Student; CLIP students also get their text classifier and tower."""
    units = cfg.split.chain(net)
    if cfg.family == "timm":
        return Student(cfg, units, k, dropout)
    classifier, text_tower = text_classifier_and_tower(net, cfg.arch, class_names, prompt)
    return Student(cfg, units, k, dropout, classifier, text_tower)
