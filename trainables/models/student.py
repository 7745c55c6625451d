"""The split student (frozen part, shared tuned trunk, three heads, S0) and the teacher, both on [0, 1] images.

How a network becomes a unit chain and where it is cut: see `trainables.models.split`. The heads are the paper's
three (`trainables.vocab.Head`): clean, unclean and combined.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from trainables.models._layers import Normalize
from trainables.models._params import fixed_parameters, numel, tunable_parameters, unique
from trainables.models._registry import ModelCfg, Unit
from trainables.models.clip import text_embeddings
from trainables.vocab import HEADS

S0 = "original_tail"  # the Student attribute (and state-dict prefix) holding S0, which a saved file may lack


class Teacher(nn.Module):
    """A timm classifier taking [0, 1] images; its state dict is the library's own under `net.`."""

    def __init__(self, net: nn.Module, cfg: ModelCfg) -> None:
        super().__init__()
        self.cfg = cfg
        self.normalize, self.net = Normalize(cfg.mean, cfg.std), net

    def forward(self, x01: Tensor) -> Tensor:
        return self.net(self.normalize(x01))


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

    def __init__(
        self,
        cfg: ModelCfg,
        units: list[Unit],
        k: int,
        dropout: float,
        classifier: nn.Module | None = None,
        text_tower: nn.Module | None = None,
    ) -> None:
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
        tail = nn.Sequential(
            OrderedDict(trunk=copy.deepcopy(self.trunk, dict(fixed)), head=copy.deepcopy(self.heads["clean"]))
        )
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
        if any(k.startswith(S0 + ".") for k in state_dict):
            return super().load_state_dict(state_dict, strict, assign)
        s0 = self._modules.pop(S0)
        try:
            result = super().load_state_dict(state_dict, strict, assign)
        finally:
            self._modules[S0] = s0
        self.snapshot_original()
        return result
