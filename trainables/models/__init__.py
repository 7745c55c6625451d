"""Model registry (timm-style) for the paper's teachers and students, and the student's frozen | trunk | heads split.

Why a registry: sweeps name models by the paper's names ('clip_vit_b16'). One frozen `ModelCfg` per name says how
to build the network (timm or open_clip), how it normalises its input, its native size, the weights the paper used
and what supplement Table 5 says about it. Every model takes [0, 1] images and normalises itself.

Why a split: the method tunes only "a portion from the end" of a large student (method.md §2.3-2.4). A student is
turned into a *unit chain* (modules applied one after another, each mapping ONE tensor to ONE tensor) and cut:

    frozen = normalise + units[:-(k+1)]    eval mode, no grad, no dropout: run once per image and cached
    trunk  = units[-(k+1):-1]              shared tuned trunk (most of the tuning portion)
    heads  = 3 deep copies of units[-1]    clean / unclean / combined, Dropout(p) as their first op

Units are whole blocks except in the last residual block, which is cut at sub-block granularity because the
paper's budgets are smaller than a block. A cut inside a residual block carries the shortcut alongside the hidden
activation, concatenated on the channel (CNN) or last (ViT) dim, so the frozen output stays ONE tensor.

Split rule ([default]; the same for every family, which only decides its units: see each `*_chain` docstring):
the head is the classifier (timm) or the image projection followed by the frozen class-prompt text classifier
(CLIP). k, the number of trunk units, is the one whose tuned count (trunk + ONE head) at the paper's settings
(native input size, 1000 classes, built on the meta device: nothing allocated or downloaded) is closest in ratio
to the budget: Table 5's, else the family's. The trunk must hold at least one tunable parameter. k is a count of
trailing units, so the same cut applies at any input size, patch size or class count. The budget is a knob:
`create_student(..., budget_m=4.0)` (or `model_overrides: {name: {budget_m: 4.0}}` in a sweep).
"""
from __future__ import annotations

import copy
import math
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.models._builder import build_network
from trainables.models._layers import Normalize, Residual, TokenPool, cut_residual, seq
from trainables.models._params import fixed_parameters, numel, tunable_parameters, unique
from trainables.models import resnet, vit, clip  # noqa: F401  (registration order = list_models() order)
from trainables.models.clip import text_classifier_and_tower, text_embeddings
from trainables.models._registry import (EntryPoint, Family, ModelCfg, Role, SplitRule, Unit, UnknownModelError,
                                         get_model_cfg, list_models, model_entrypoint, register_model)


HEADS = ("clean", "unclean", "combined")
PAPER_NUM_CLASSES = 1000
STUDENT_KNOBS = ("budget_m", "prompt")  # split/prompt knobs: never reach the library builders
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
_S0 = "original_tail"


# ============================================================================================ weight tags


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
        raise ValueError(f"{cfg.name}: unknown weights tag {tag!r} for {cfg.arch}; known: {', '.join(known)} "
                         f"(or give a state-dict file path)")
    return full


def _split_knobs(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    knobs = {k: overrides[k] for k in STUDENT_KNOBS if overrides.get(k) is not None}
    return knobs, {k: v for k, v in overrides.items() if k not in STUDENT_KNOBS}


# ============================================================================================ teachers


class Teacher(nn.Module):
    """A timm classifier taking [0, 1] images; its state dict is the library's own under `net.`."""

    def __init__(self, net: nn.Module, cfg: ModelCfg) -> None:
        super().__init__()
        self.cfg = cfg
        self.normalize, self.net = Normalize(cfg.mean, cfg.std), net

    def forward(self, x01: Tensor) -> Tensor:
        return self.net(self.normalize(x01))


def create_teacher(name: str, *, num_classes: int, img_size: int, pretrained: str | None = None,
                   **overrides: Any) -> nn.Module:
    """A teacher: a timm classifier that takes [0, 1] images and returns logits (B, num_classes).

    Args:
        name: a registered model with the 'teacher' role.
        num_classes: classifier width.
        img_size: input resolution (ViTs size their position embedding to it).
        pretrained: None (random init), a hub tag (the library's loading: needs a hub or cache), or a path to a
            state-dict file, either the library's own keys or this module's (`net.`-prefixed).
        **overrides: library keywords (e.g. `patch_size=8`); student-only knobs are ignored.

    Raises:
        UnknownModelError: unknown name.  ValueError: not a teacher, bad tag, or weights that do not fit.
    """
    cfg = get_model_cfg(name)
    if "teacher" not in cfg.roles:
        raise ValueError(f"{name!r} is not a teacher (open_clip models have no classifier); "
                         f"teachers: {', '.join(list_models('teacher'))}")
    tag, path = _resolve_weights(cfg, pretrained)
    net = model_entrypoint(name)(cfg, num_classes=num_classes, img_size=img_size, tag=tag, **_split_knobs(overrides)[1])
    teacher = Teacher(net, cfg)
    if path is not None:
        _load_either(net, teacher, _read_state_dict(path), path)
    return teacher


# ============================================================================================ students


def _named(units: list[Unit]) -> list[Unit]:
    return [(n.replace(".", "_"), m) for n, m in units]  # module names cannot contain dots


class Student(nn.Module):
    """A student cut into frozen part, shared tuned trunk and three heads, plus S0 (its original tail).

    Attributes:
        frozen: [0, 1] images -> features, ONE tensor; eval mode (BN fixed, no dropout) and never tuned, so
            features cached once stay exact while the tail trains.
        trunk: features -> z, the shared tuned trunk.
        heads: 'clean' / 'unclean' / 'combined': z -> logits, each Dropout(p) first, deep copies of one head.
        original_tail: S0, a frozen copy of trunk + one head (the untuned student's tail, for distillation).
            It shares the trunk's fixed (never tuned) parameters instead of copying them.
        text_tower: CLIP only: the frozen text tower (re-prompting, parameter counts).
        is_clip: True for open_clip students (heads classify through text embeddings).
        split_names: unit names of the trunk and the head, for logs.
    """

    def __init__(self, cfg: ModelCfg, units: list[Unit], k: int, dropout: float,
                 classifier: nn.Module | None = None, text_tower: nn.Module | None = None) -> None:
        super().__init__()
        self.cfg, self.is_clip, self.frozen_trainable = cfg, cfg.family == "open_clip", False
        cut = len(units) - k - 1
        self.split_names = {"trunk": [n for n, _ in units[cut:-1]], "head": [units[-1][0]]}
        self.frozen = nn.Sequential(OrderedDict([("normalize", Normalize(cfg.mean, cfg.std)), *_named(units[:cut])]))
        self.trunk = nn.Sequential(OrderedDict(_named(units[cut:-1])))
        parts = [("drop", nn.Dropout(dropout)), ("core", units[-1][1])]
        head = nn.Sequential(OrderedDict(parts + ([("classify", classifier)] if classifier is not None else [])))
        self.heads = nn.ModuleDict({h: copy.deepcopy(head) for h in HEADS})
        self.text_tower = text_tower
        if text_tower is not None:
            text_tower.requires_grad_(False)
        self._apply_freezing()
        self.snapshot_original()
        self.train()

    def _apply_freezing(self) -> None:
        tuned = {id(p) for p in self.tuned_parameters()}
        self.frozen.requires_grad_(self.frozen_trainable)
        for p in list(self.trunk.parameters()) + list(self.heads.parameters()):
            p.requires_grad_(self.frozen_trainable or id(p) in tuned)

    def set_frozen_trainable(self, flag: bool) -> None:
        """Train everything (True: pretraining / complete fine-tuning) or only trunk + heads (False, default).

        The text tower stays frozen either way: CLIP students learn through their class-prompt embeddings.
        """
        self.frozen_trainable = flag
        self._apply_freezing()
        self.train(self.training)

    def train(self, mode: bool = True) -> Student:
        super().train(mode)
        if not self.frozen_trainable:
            self.frozen.eval()  # BN statistics fixed: features cached in eval mode equal the live ones
        self.original_tail.eval()
        if self.text_tower is not None:
            self.text_tower.eval()
        return self

    def tuned_parameters(self) -> list[nn.Parameter]:
        """Trunk + all three heads (what distillation optimises)."""
        return unique(tunable_parameters(self.trunk) + [p for h in HEADS for p in tunable_parameters(self.heads[h])])

    @torch.no_grad()
    def encode(self, x01: Tensor) -> Tensor:
        """The frozen part: [0, 1] images -> features (no grad)."""
        return self.frozen(x01)

    def forward_features(self, feats: Tensor, head: str | None = None) -> Tensor | dict[str, Tensor]:
        """Trunk + one head (logits) or all three (a dict by head name)."""
        z = self.trunk(feats)
        return self.heads[head](z) if head is not None else {h: self.heads[h](z) for h in HEADS}

    def forward(self, x01: Tensor, head: str = "combined") -> Tensor:
        return self.heads[head](self.trunk(self.frozen(x01)))

    @torch.no_grad()
    def original(self, feats: Tensor) -> Tensor:
        """S0's logits on cached features: the student before any tuning of its tail."""
        return self.original_tail(feats)

    def snapshot_original(self) -> None:
        """Take S0 = a frozen copy of the current trunk + clean head (call after loading or pretraining)."""
        fixed = {id(p): p for p in fixed_parameters(self.trunk)}  # never tuned: share, don't copy
        tail = nn.Sequential(OrderedDict(trunk=copy.deepcopy(self.trunk, dict(fixed)),
                                         head=copy.deepcopy(self.heads["clean"])))
        for p in tail.parameters():
            if id(p) not in fixed:
                p.requires_grad_(False)
        self.original_tail = tail.eval()

    def param_counts(self) -> dict[str, int]:
        """{'tuned': trunk + ONE head (the paper's tuning portion), 'trained': trunk + 3 heads, 'head': one head,
        'total': the whole model as the paper counts it (CLIP: image + text tower), each parameter once}."""
        trunk, head = numel(tunable_parameters(self.trunk)), numel(tunable_parameters(self.heads["clean"]))
        parts = [self.frozen, self.trunk, self.heads["clean"]] + ([self.text_tower] if self.is_clip else [])
        total = numel(p for m in parts for p in m.parameters())
        return {"tuned": trunk + head, "trained": trunk + 3 * head, "head": head, "total": total}

    def set_class_names(self, class_names: list[str], prompt: str | None = None) -> None:
        """CLIP only: re-prompt every head (and S0) for new classes, e.g. zero-shot on a transfer set."""
        if not self.is_clip:
            raise ValueError(f"{self.cfg.name}: only CLIP students classify through class prompts")
        emb = text_embeddings(self.text_tower, self.cfg.arch, class_names, prompt)
        for head in [*self.heads.values(), self.original_tail.head]:
            head.classify.set_text(emb)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """As nn.Module's; a state dict without S0 (`original_tail.*`) loads the rest and re-takes S0 from it."""
        if any(k.startswith(_S0 + ".") for k in state_dict):
            return super().load_state_dict(state_dict, strict, assign)
        s0 = self._modules.pop(_S0)
        try:
            result = super().load_state_dict(state_dict, strict, assign)
        finally:
            self._modules[_S0] = s0
        self.snapshot_original()
        return result


def create_student(name: str, *, num_classes: int, img_size: int, class_names: list[str], dropout: float = 0.25,
                   pretrained: str | None = None, **overrides: Any) -> Student:
    """A student split into frozen part, shared tuned trunk and three heads (see the module docstring).

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
    state = _read_state_dict(path) if path is not None else None
    if state is not None and set(state) == set(net.state_dict()):
        _load_checked(net, state, path)  # the library's own checkpoint: load before cutting
        state = None
    student = _assemble(cfg, net, split_point(name, knobs.get("budget_m")), dropout, class_names, knobs.get("prompt"))
    if state is not None:
        _load_checked(student, state, path)
    return student


def _assemble(cfg: ModelCfg, net: nn.Module, k: int, dropout: float, class_names: list[str],
              prompt: str | None) -> Student:
    units = cfg.split.chain(net)
    if cfg.family == "timm":
        return Student(cfg, units, k, dropout)
    classifier, text_tower = text_classifier_and_tower(net, cfg.arch, class_names, prompt)
    return Student(cfg, units, k, dropout, classifier, text_tower)


# ============================================================================================ paper-setting counts


@lru_cache(maxsize=None)
def _paper_profile(name: str) -> tuple[tuple[tuple[str, int], ...], int]:
    """((unit name, tunable parameters) per unit, total parameters) at paper settings, built on the meta device."""
    cfg = get_model_cfg(name)
    net = model_entrypoint(name)(cfg, num_classes=PAPER_NUM_CLASSES, img_size=cfg.input_size, device="meta")
    total = numel(net.parameters())
    return tuple((n, numel(tunable_parameters(m))) for n, m in cfg.split.chain(net)), total


@lru_cache(maxsize=None)
def split_point(name: str, budget_m: float | None = None) -> int:
    """k, the number of trunk units: the split rule of the module docstring.

    Args:
        name: a registered model.
        budget_m: tuned budget in millions at paper settings; default: the model's (Table 5 or its family's).

    Returns:
        The k whose trunk + one head is closest in ratio to the budget, with at least one tunable parameter in
        the trunk and at least one unit left frozen (ties: the smaller k).
    """
    cfg = get_model_cfg(name)
    counts = [c for _, c in _paper_profile(name)[0]]
    budget = (budget_m if budget_m is not None else cfg.budget_m) * 1e6
    if budget <= 0:
        raise ValueError(f"{name}: budget_m must be positive, got {budget_m}")
    head, tuned, best, best_k = counts[-1], counts[-1], math.inf, None
    for k in range(1, len(counts) - 1):
        tuned += counts[-1 - k]
        err = abs(math.log(tuned / budget))
        if tuned > head and err < best:
            best, best_k = err, k
    if best_k is None:
        raise ValueError(f"{name}: no trunk with tunable parameters")
    return best_k


def paper_counts(name: str, budget_m: float | None = None) -> dict[str, Any]:
    """Tuned / head / total parameters of the split at paper settings (native size, 1000 classes, random init).

    Returns:
        {'tuned', 'head', 'total'} in parameters, and 'units': the tuned unit names (trunk then head).
    """
    units, total = _paper_profile(name)
    k = split_point(name, budget_m)
    tail = units[-(k + 1):]
    return {"tuned": sum(c for _, c in tail), "head": units[-1][1], "total": total, "units": [n for n, _ in tail]}


def supp_table5_rows() -> list[dict[str, Any]]:
    """Supplement Table 5 regenerated from the real architectures, one row per registered student.

    Returns:
        Rows with 'student', 'params_tuned', 'params_total' (what the table renders), plus 'params_head',
        'paper_tuned_m', 'paper_total_m' and 'tuned_units' for people checking the split.
    """
    rows = []
    for name in list_models("student"):
        cfg, c = get_model_cfg(name), paper_counts(name)
        rows.append({"student": name, "params_tuned": c["tuned"], "params_total": c["total"],
                     "params_head": c["head"], "paper_tuned_m": cfg.paper_tuned_m, "paper_total_m": cfg.paper_total_m,
                     "tuned_units": " + ".join(c["units"])})
    return rows


# ============================================================================================ weights from files


def _read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a file, without running code: torch.load(weights_only=True) or safetensors.

    Accepts a plain state dict or one wrapped as {'state_dict': ...} / {'model': ...}; strips a DDP `module.`.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such weights file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p))
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file is the same problem for the user: say which and why
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ValueError(f"{p}: not a readable state-dict file ({first})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise ValueError(f"{p}: expected a state dict (names -> tensors), got {type(obj).__name__}")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def _mismatch(module: nn.Module, state: Mapping[str, Tensor], strict: bool) -> str:
    own = module.state_dict()
    if isinstance(module, Student) and not any(k.startswith(_S0 + ".") for k in state):
        own = {k: v for k, v in own.items() if not k.startswith(_S0 + ".")}  # S0 is re-taken after loading
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    problems = [f"{len(shapes)} shape mismatches (file vs model), e.g. {'; '.join(shapes[:2])}"] if shapes else []
    if strict and missing:
        problems.append(f"{len(missing)} missing keys, e.g. {', '.join(missing[:3])}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. {', '.join(unexpected[:3])}")
    return "; ".join(problems)


def _load_checked(module: nn.Module, state: Mapping[str, Tensor], path: str | Path, strict: bool = True) -> None:
    problem = _mismatch(module, state, strict)
    if problem:
        raise ValueError(f"{path}: state dict does not fit {type(module).__name__}: {problem}")
    module.load_state_dict(state, strict=strict)


def _load_either(net: nn.Module, wrapper: nn.Module, state: Mapping[str, Tensor], path: Path) -> None:
    """Load the library's own keys into `net`, anything else into `wrapper` (e.g. a file this code saved)."""
    _load_checked(net if set(state) == set(net.state_dict()) else wrapper, state, path)


def load_state_dict_file(module: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load weights into `module` from a file, without running code from it.

    Args:
        module: the model (a Teacher, a Student, or any nn.Module).
        path: a `torch.save`d state dict (plain, or under 'state_dict' / 'model') or a .safetensors file.
        strict: as in `nn.Module.load_state_dict`; shapes must match either way.

    Returns:
        The module, loaded.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a state dict, or one that does not fit the module (names the missing, unexpected and
            mis-shaped keys).
    """
    _load_checked(module, _read_state_dict(path), path, strict)
    return module
