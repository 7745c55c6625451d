"""Model registry (timm-style): the paper's teachers and students under the paper's names.

Every entry is a frozen `ModelCfg` (builder family, architecture, normalisation, native input size, the paper's
weight tag and its Table 5 budget) registered by a 2-line entry point. Models take [0, 1] images and normalise
themselves.

A student is cut into a *unit chain* — modules applied one after another, each taking one tensor — and split:
    frozen  = normalise + units[:-k]        run once per image, cacheable (eval mode, no dropout)
    trunk   = units[-k:-1]                  shared tuned trunk (~4/5 of the tuning portion)
    heads   = 3 deep copies of units[-1]    clean / unclean / combined, Dropout(p) as their first op
Split rule (method.md §2.3, [default]): at the paper's settings (native resolution, 1000 classes, random init on
the `meta` device, nothing downloaded), k is the number of trailing units whose trainable parameters come closest
to the student's Table 5 budget. Units are whole blocks, except that the last block is split where the paper's
small budgets need it: timm ResNet bottleneck -> (conv1..conv2 | conv3 + residual), ViT block -> (attention |
norm2 + fc1 | fc2 + residual), so the frozen output may carry two tensors (residual stream and hidden activation)
concatenated on the channel/last dim. The head is the classifier (timm) or the projection + class-prompt text
classifier (CLIP), i.e. roughly the last fifth of the tuning portion.
"""
from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
HEADS = ("clean", "unclean", "combined")


class UnknownModelError(ValueError):
    """An unknown model name; the message lists close matches."""


@dataclass(frozen=True)
class ModelCfg:
    """Per-model metadata that pipelines read (timm's PretrainedCfg idea)."""

    name: str
    family: str                       # 'timm' | 'open_clip'
    arch: str                         # timm model name / open_clip model name
    roles: tuple[str, ...]            # 'teacher', 'student'
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int                   # native (paper) resolution
    paper_tag: str                    # timm `arch.tag` or open_clip `pretrained=`
    paper_tuned_m: float | None = None  # supplement Table 5
    paper_total_m: float | None = None
    budget_m: float | None = None     # tuning budget used by the split rule (Table 5, or the family's nearest)
    kwargs: dict = field(default_factory=dict)


_REGISTRY: dict[str, ModelCfg] = {}


def register_model(fn: Callable[[], ModelCfg]) -> Callable[[], ModelCfg]:
    cfg = fn()
    _REGISTRY[cfg.name] = cfg
    return fn


def list_models(role: str | None = None) -> list[str]:
    """Registered names, optionally only teachers or students ('model' = any)."""
    if role in (None, "model"):
        return list(_REGISTRY)
    return [n for n, c in _REGISTRY.items() if role in c.roles]


def get_model_cfg(name: str) -> ModelCfg:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise UnknownModelError(f"unknown model {name!r}{hint}; registered: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def _timm(name, arch, roles, tag, tuned=None, total=None, budget=None, size=224):
    return ModelCfg(name, "timm", arch, roles, IMAGENET_MEAN, IMAGENET_STD, size, tag, tuned, total, budget or tuned)


def _clip(name, arch, tag, tuned=None, total=None, budget=None, size=224):
    return ModelCfg(name, "open_clip", arch, ("student",), CLIP_MEAN, CLIP_STD, size, tag, tuned, total,
                    budget or tuned)


TS = ("teacher", "student")


@register_model
def resnet34() -> ModelCfg:
    return _timm("resnet34", "resnet34", ("teacher",), "resnet34.tv_in1k", budget=2.1)


@register_model
def resnet50() -> ModelCfg:
    return _timm("resnet50", "resnet50", ("teacher",), "resnet50.tv_in1k", budget=2.1)


@register_model
def resnet101() -> ModelCfg:
    return _timm("resnet101", "resnet101", TS, "resnet101.tv_in1k", 2.1, 45)


@register_model
def resnet152() -> ModelCfg:
    return _timm("resnet152", "resnet152", TS, "resnet152.tv_in1k", 2.6, 60)


@register_model
def vit_small() -> ModelCfg:
    return _timm("vit_small", "vit_small_patch16_224", TS, "vit_small_patch16_224.augreg_in21k_ft_in1k", 2.3, 48)


@register_model
def vit_base() -> ModelCfg:
    return _timm("vit_base", "vit_base_patch16_224", TS, "vit_base_patch16_224.augreg_in21k_ft_in1k", 3.1, 88)


@register_model
def clip_rn50() -> ModelCfg:
    return _clip("clip_rn50", "RN50", "openai", 3.9, 102)


@register_model
def clip_rn101() -> ModelCfg:
    return _clip("clip_rn101", "RN101", "openai", 4.1, 119)


@register_model
def clip_vit_b16() -> ModelCfg:
    return _clip("clip_vit_b16", "ViT-B-16", "openai", 4.3, 149)


@register_model
def clip_vit_b32() -> ModelCfg:
    return _clip("clip_vit_b32", "ViT-B-32", "openai", budget=4.3)  # not in Table 5: ViT-B/16's budget (same width)


@register_model
def clip_vit_l14_336() -> ModelCfg:
    return _clip("clip_vit_l14_336", "ViT-L-14-336", "openai", 5.6, 450, size=336)


# ------------------------------------------------------------------------------------------------ building blocks


class Normalize(nn.Module):
    """[0,1] -> normalised; buffers are non-persistent so state dicts stay the architecture's own."""

    def __init__(self, mean, std) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


class Classifier(nn.Module):
    """A timm classifier that takes [0,1] images (teachers)."""

    def __init__(self, net: nn.Module, cfg: ModelCfg) -> None:
        super().__init__()
        self.normalize, self.net = Normalize(cfg.mean, cfg.std), net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.normalize(x))


class Lambda(nn.Module):
    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


class _TimmStem(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act1, self.maxpool = m.conv1, m.bn1, m.act1, m.maxpool

    def forward(self, x: Tensor) -> Tensor:
        return self.maxpool(self.act1(self.bn1(self.conv1(x))))


class _BottleneckPre(nn.Module):
    """Last timm bottleneck up to conv3: outputs cat(shortcut, hidden) on channels."""

    def __init__(self, b: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act1 = b.conv1, b.bn1, b.act1
        self.conv2, self.bn2, self.drop_block, self.act2, self.aa = b.conv2, b.bn2, b.drop_block, b.act2, b.aa
        self.downsample = b.downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self.downsample(x) if self.downsample is not None else x
        h = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))))
        return torch.cat([shortcut, h], 1)


class _BottleneckPost(nn.Module):
    def __init__(self, b: nn.Module, width: int) -> None:
        super().__init__()
        self.conv3, self.bn3, self.se, self.drop_path, self.act3 = b.conv3, b.bn3, b.se, b.drop_path, b.act3
        self.width = width

    def forward(self, x: Tensor) -> Tensor:
        shortcut, h = x[:, : self.width], x[:, self.width:]
        out = self.bn3(self.conv3(h))
        if self.se is not None:
            out = self.se(out)
        if self.drop_path is not None:
            out = self.drop_path(out)
        return self.act3(out + shortcut)


class _VitAttn(nn.Module):
    """x + attention(norm1(x)) of a ViT block (timm or open_clip naming)."""

    def __init__(self, norm: nn.Module, attn: Callable, ls: nn.Module, extra: nn.Module | None = None) -> None:
        super().__init__()
        self.norm, self.ls, self.attn_mod = norm, ls, extra
        self._attn = attn

    def forward(self, x: Tensor) -> Tensor:
        return x + self.ls(self._attn(self.norm(x)))


class _VitMlpPre(nn.Module):
    """norm2 -> fc1 -> act: outputs cat(residual, hidden) on the last dim."""

    def __init__(self, norm: nn.Module, fc1: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.norm, self.fc1, self.act = norm, fc1, act

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.act(self.fc1(self.norm(x)))], -1)


class _VitMlpPost(nn.Module):
    def __init__(self, fc2: nn.Module, ls: nn.Module, width: int, mid_norm: nn.Module | None = None) -> None:
        super().__init__()
        self.fc2, self.ls, self.width = fc2, ls, width
        self.mid_norm = mid_norm if mid_norm is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return x[..., : self.width] + self.ls(self.fc2(self.mid_norm(x[..., self.width:])))


class _TextClassifier(nn.Module):
    """CLIP zero-shot classifier: scaled cosine similarity with class-prompt text embeddings (frozen buffers)."""

    def __init__(self, text_emb: Tensor, logit_scale: float) -> None:
        super().__init__()
        self.register_buffer("text_emb", F.normalize(text_emb, dim=-1))
        self.logit_scale = logit_scale

    def forward(self, x: Tensor) -> Tensor:
        return self.logit_scale * F.normalize(x, dim=-1) @ self.text_emb.t()


class _AttnPoolValuePath(nn.Module):
    """CLIP ModifiedResNet's attention pool without its output projection (c_proj goes to the head).

    Its own parameters stay frozen even when it sits in the tuned trunk: tuning q/k/v (12.6M for RN-50) would
    blow the paper's ~4M budget, so the tuned portion is the last bottleneck's tail + c_proj."""

    def __init__(self, ap: nn.Module) -> None:
        super().__init__()
        self.positional_embedding, self.num_heads = ap.positional_embedding, ap.num_heads
        self.q_proj, self.k_proj, self.v_proj = ap.q_proj, ap.k_proj, ap.v_proj
        dim = ap.v_proj.weight.shape[0]
        self.register_buffer("eye", torch.eye(dim), persistent=False)
        self.register_buffer("zero", torch.zeros(dim), persistent=False)
        self.frozen_names = ("positional_embedding", "q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias",
                             "v_proj.weight", "v_proj.bias")

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(2, 0, 1)
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0) + self.positional_embedding[:, None, :].to(x.dtype)
        out, _ = F.multi_head_attention_forward(
            query=x, key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight, v_proj_weight=self.v_proj.weight,
            in_proj_weight=None, in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0, out_proj_weight=self.eye,
            out_proj_bias=self.zero, use_separate_proj_weight=True, training=self.training, need_weights=False)
        return out[0]


# ------------------------------------------------------------------------------------------------ unit chains


def _timm_resnet_units(m: nn.Module) -> list[tuple[str, nn.Module]]:
    units: list[tuple[str, nn.Module]] = [("stem", _TimmStem(m))]
    units += [(f"layer{i}", getattr(m, f"layer{i}")) for i in (1, 2, 3)]
    blocks = list(m.layer4)
    units += [(f"layer4.{i}", b) for i, b in enumerate(blocks[:-1])]
    last = blocks[-1]
    width = last.conv3.out_channels
    units += [("layer4.last.pre", _BottleneckPre(last)), ("layer4.last.post", _BottleneckPost(last, width)),
              ("pool", m.global_pool), ("head", m.fc)]
    return units


class _TimmVitEmbed(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = nn.ModuleDict({"patch_embed": m.patch_embed, "norm_pre": m.norm_pre})
        self.pos_embed, self.cls_token = m.pos_embed, m.cls_token
        self._pos = m._pos_embed
        self.patch_drop = m.patch_drop

    def forward(self, x: Tensor) -> Tensor:
        x = self.m["patch_embed"](x)
        x = self._pos(x)
        return self.m["norm_pre"](self.patch_drop(x))


def _timm_vit_units(m: nn.Module) -> list[tuple[str, nn.Module]]:
    units: list[tuple[str, nn.Module]] = [("embed", _TimmVitEmbed(m))]
    blocks = list(m.blocks)
    units += [(f"blocks.{i}", b) for i, b in enumerate(blocks[:-1])]
    b = blocks[-1]
    width = b.norm1.normalized_shape[0]
    attn = _VitAttn(b.norm1, lambda x, a=b.attn: a(x), nn.Sequential(b.ls1, b.drop_path1), b.attn)
    units += [("blocks.last.attn", attn), ("blocks.last.mlp_pre", _VitMlpPre(b.norm2, b.mlp.fc1, b.mlp.act)),
              ("blocks.last.mlp_post", _VitMlpPost(b.mlp.fc2, nn.Sequential(b.ls2, b.drop_path2), width,
                                                   b.mlp.norm)),
              ("final", _TimmVitFinal(m)), ("head", m.head)]
    return units


class _TimmVitFinal(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.norm, self.fc_norm = m.norm, m.fc_norm
        self._pool = m._pool if hasattr(m, "_pool") else None
        self.global_pool, self.num_prefix_tokens = m.global_pool, m.num_prefix_tokens

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        x = x[:, 0] if self.global_pool == "token" else x[:, self.num_prefix_tokens:].mean(dim=1)
        return self.fc_norm(x)


class _ClipVitEmbed(nn.Module):
    def __init__(self, v: nn.Module) -> None:
        super().__init__()
        self.conv1, self.patch_dropout, self.ln_pre = v.conv1, v.patch_dropout, v.ln_pre
        self.class_embedding, self.positional_embedding = v.class_embedding, v.positional_embedding

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = self.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.ln_pre(self.patch_dropout(x))


class _ClipVitFinal(nn.Module):
    def __init__(self, v: nn.Module) -> None:
        super().__init__()
        self.ln_post = v.ln_post

    def forward(self, x: Tensor) -> Tensor:
        return self.ln_post(x[:, 0])


def _clip_vit_units(v: nn.Module) -> list[tuple[str, nn.Module]]:
    units: list[tuple[str, nn.Module]] = [("embed", _ClipVitEmbed(v))]
    if not getattr(v.transformer, "batch_first", True):
        raise ValueError("open_clip transformer must be batch_first")
    blocks = list(v.transformer.resblocks)
    units += [(f"resblocks.{i}", b) for i, b in enumerate(blocks[:-1])]
    b = blocks[-1]
    width = b.ln_1.normalized_shape[0]
    attn = _VitAttn(b.ln_1, lambda x, blk=b: blk.attention(x), b.ls_1, b.attn)
    units += [("resblocks.last.attn", attn), ("resblocks.last.mlp_pre", _VitMlpPre(b.ln_2, b.mlp.c_fc, b.mlp.gelu)),
              ("resblocks.last.mlp_post", _VitMlpPost(b.mlp.c_proj, b.ls_2, width)), ("final", _ClipVitFinal(v))]
    proj = nn.Linear(v.proj.shape[0], v.proj.shape[1], bias=False, device=v.proj.device)
    with torch.no_grad():
        if v.proj.device.type != "meta":
            proj.weight.copy_(v.proj.t())
    units.append(("head", proj))
    return units


class _ClipRnStem(nn.Module):
    def __init__(self, v: nn.Module) -> None:
        super().__init__()
        self.v = nn.ModuleDict({k: getattr(v, k) for k in ("conv1", "bn1", "act1", "conv2", "bn2", "act2",
                                                           "conv3", "bn3", "act3", "avgpool")})

    def forward(self, x: Tensor) -> Tensor:
        v = self.v
        x = v["act1"](v["bn1"](v["conv1"](x)))
        x = v["act2"](v["bn2"](v["conv2"](x)))
        x = v["act3"](v["bn3"](v["conv3"](x)))
        return v["avgpool"](x)


class _ClipBottleneckPre(nn.Module):
    """conv1 of the last CLIP bottleneck: outputs cat(identity, hidden) on channels."""

    def __init__(self, b: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act1, self.downsample = b.conv1, b.bn1, b.act1, b.downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = self.downsample(x) if self.downsample is not None else x
        return torch.cat([identity, self.act1(self.bn1(self.conv1(x)))], 1)


class _ClipBottleneckMid(nn.Module):
    def __init__(self, b: nn.Module, width: int) -> None:
        super().__init__()
        self.conv2, self.bn2, self.act2, self.avgpool, self.width = b.conv2, b.bn2, b.act2, b.avgpool, width

    def forward(self, x: Tensor) -> Tensor:
        identity, h = x[:, : self.width], x[:, self.width:]
        return torch.cat([identity, self.avgpool(self.act2(self.bn2(self.conv2(h))))], 1)


class _ClipBottleneckPost(nn.Module):
    def __init__(self, b: nn.Module, width: int) -> None:
        super().__init__()
        self.conv3, self.bn3, self.act3, self.width = b.conv3, b.bn3, b.act3, width

    def forward(self, x: Tensor) -> Tensor:
        identity, h = x[:, : self.width], x[:, self.width:]
        return self.act3(self.bn3(self.conv3(h)) + identity)


def _clip_rn_units(v: nn.Module) -> list[tuple[str, nn.Module]]:
    """The attention pool stays frozen (pretrained attention pattern and values); c_proj is the head; the last
    bottleneck is split (conv1 | conv2 | conv3 + residual) so the budget can reach into it."""
    units: list[tuple[str, nn.Module]] = [("stem", _ClipRnStem(v))]
    units += [(f"layer{i}", getattr(v, f"layer{i}")) for i in (1, 2, 3)]
    blocks = list(v.layer4)
    units += [(f"layer4.{i}", b) for i, b in enumerate(blocks[:-1])]
    last = blocks[-1]
    width = last.conv3.out_channels
    units += [("layer4.last.conv1", _ClipBottleneckPre(last)), ("layer4.last.conv2", _ClipBottleneckMid(last, width)),
              ("layer4.last.conv3", _ClipBottleneckPost(last, width)),
              ("attnpool", _AttnPoolValuePath(v.attnpool)), ("head", v.attnpool.c_proj)]
    return units


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    frozen: set[int] = set()
    for m in module.modules():
        for n in getattr(m, "frozen_names", ()):
            obj = m
            for part in n.split("."):
                obj = getattr(obj, part)
            frozen.add(id(obj))
    seen: set[int] = set()
    out = []
    for p in module.parameters():
        if id(p) not in frozen and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def _n(params: list[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


# ------------------------------------------------------------------------------------------------ raw builders


def _raw_timm(cfg: ModelCfg, num_classes: int, img_size: int, pretrained: str | None, device=None,
              **overrides) -> nn.Module:
    import timm

    kw = dict(num_classes=num_classes, **overrides)
    if "vit" in cfg.arch:
        kw["img_size"] = img_size
    name = pretrained if pretrained and "." in pretrained else cfg.arch
    if device is not None:
        with torch.device(device):
            return timm.create_model(name, pretrained=False, **kw)
    return timm.create_model(name, pretrained=bool(pretrained), **kw)


def _raw_clip(cfg: ModelCfg, img_size: int, pretrained: str | None, device=None, **overrides) -> nn.Module:
    import logging

    import open_clip

    logging.getLogger().setLevel(logging.ERROR)  # open_clip warns "no pretrained weights" at every random init
    kw = {"force_image_size": img_size} if img_size != cfg.input_size else {}
    if device == "meta":
        with torch.device("meta"):
            return open_clip.create_model(cfg.arch, pretrained=None, device="meta", **kw)
    return open_clip.create_model(cfg.arch, pretrained=pretrained or None, **kw)


def _units(cfg: ModelCfg, raw: nn.Module) -> list[tuple[str, nn.Module]]:
    if cfg.family == "timm":
        return _timm_resnet_units(raw) if cfg.arch.startswith("resnet") else _timm_vit_units(raw)
    v = raw.visual
    return _clip_rn_units(v) if cfg.arch.startswith("RN") else _clip_vit_units(v)


def _paper_raw(cfg: ModelCfg) -> nn.Module:
    if cfg.family == "timm":
        return _raw_timm(cfg, 1000, cfg.input_size, None, device="meta")
    return _raw_clip(cfg, cfg.input_size, None, device="meta")


@lru_cache(maxsize=None)
def split_k(name: str) -> int:
    """Number of trailing units tuned (head included): the k whose trainable count at paper settings is
    closest to the budget (ties -> fewer parameters)."""
    cfg = get_model_cfg(name)
    units = _units(cfg, _paper_raw(cfg))
    budget = (cfg.budget_m or 2.0) * 1e6
    best, best_k, total = None, 1, 0
    for k in range(1, len(units)):
        total += _n(_trainable(units[-k][1]))
        diff = abs(total - budget)
        if best is None or diff < best:
            best, best_k = diff, k
    return best_k


# ------------------------------------------------------------------------------------------------ the student


class Student(nn.Module):
    """frozen -> trunk -> three heads. See the module docstring for the split rule."""

    def __init__(self, cfg: ModelCfg, units: list[tuple[str, nn.Module]], k: int, dropout: float,
                 classifier: nn.Module | None, extra_total: int, text_tower: nn.Module | None = None) -> None:
        super().__init__()
        self.cfg, self.is_clip, self.split_names = cfg, cfg.family == "open_clip", [n for n, _ in units[-k:]]
        self.frozen = nn.Sequential(Normalize(cfg.mean, cfg.std), *[m for _, m in units[:-k]])
        self.trunk = nn.Sequential(*[m for _, m in units[-k:-1]])
        head_core = units[-1][1]
        head = nn.Sequential(nn.Dropout(dropout), head_core, *([classifier] if classifier is not None else []))
        self.heads = nn.ModuleDict({h: copy.deepcopy(head) for h in HEADS})
        self.text_tower = text_tower  # kept for counting / re-prompting; frozen
        self._extra_total = extra_total
        self.frozen_trainable = False
        self._freeze()
        self.snapshot_original()
        self.train()  # nn.Module starts in train mode: make the frozen part eval from the start

    def _freeze(self) -> None:
        for p in self.frozen.parameters():
            p.requires_grad_(self.frozen_trainable)
        tuned = {id(p) for p in self.tuned_parameters()}
        for p in list(self.trunk.parameters()) + list(self.heads.parameters()):
            p.requires_grad_(id(p) in tuned)
        if self.text_tower is not None:
            for p in self.text_tower.parameters():
                p.requires_grad_(False)

    def set_frozen_trainable(self, flag: bool) -> None:
        """Pretraining / complete fine-tuning train everything; distillation never touches the frozen part."""
        self.frozen_trainable = flag
        self._freeze()
        self.train(self.training)

    def train(self, mode: bool = True) -> "Student":
        super().train(mode)
        if not self.frozen_trainable:
            self.frozen.eval()  # frozen part: BN statistics fixed, so cached features stay exact
        if getattr(self, "original_tail", None) is not None:
            self.original_tail.eval()
        return self

    def tuned_parameters(self) -> list[nn.Parameter]:
        return _trainable(self.trunk) + [p for h in HEADS for p in _trainable(self.heads[h])]

    @torch.no_grad()
    def encode(self, x01: Tensor) -> Tensor:
        return self.frozen(x01)

    def forward_features(self, feats: Tensor, head: str | None = None) -> Tensor | dict[str, Tensor]:
        z = self.trunk(feats)
        if head is not None:
            return self.heads[head](z)
        return {h: self.heads[h](z) for h in HEADS}

    def forward(self, x01: Tensor, head: str = "combined") -> Tensor:
        return self.heads[head](self.trunk(self.frozen(x01)))

    def snapshot_original(self) -> None:
        """Freeze a copy of trunk + one head as S0, the original student's tail."""
        tail = nn.Sequential(copy.deepcopy(self.trunk), copy.deepcopy(self.heads["clean"])).eval()
        for p in tail.parameters():
            p.requires_grad_(False)
        self.__dict__.pop("original_tail", None)
        self.original_tail = tail

    @torch.no_grad()
    def original(self, feats: Tensor) -> Tensor:
        return self.original_tail(feats)

    def param_counts(self) -> dict[str, int]:
        trunk, head = _n(_trainable(self.trunk)), _n(_trainable(self.heads["clean"]))
        body = sum(p.numel() for p in self.frozen.parameters()) + sum(p.numel() for p in self.trunk.parameters())
        body += sum(p.numel() for p in self.heads["clean"].parameters())
        return {"tuned": trunk + head, "trained": trunk + 3 * head, "total": body + self._extra_total}


# ------------------------------------------------------------------------------------------------ factories


def create_teacher(name: str, *, num_classes: int, img_size: int, pretrained: str | None = None,
                   **overrides) -> nn.Module:
    """A timm classifier taking [0,1] images. `pretrained`: None, a timm tag, or a state-dict path."""
    cfg = get_model_cfg(name)
    if "teacher" not in cfg.roles:
        raise UnknownModelError(f"{name!r} is not a teacher; teachers: {', '.join(list_models('teacher'))}")
    path = pretrained if pretrained and Path(pretrained).exists() else None
    net = _raw_timm(cfg, num_classes, img_size, None if path else pretrained, **overrides)
    model = Classifier(net, cfg)
    if path:
        load_state_dict_file(model, path)
    return model


@torch.no_grad()
def _text_embeddings(raw: nn.Module, arch: str, class_names: list[str]) -> Tensor:
    import open_clip

    tok = open_clip.get_tokenizer(arch)
    prompts = [f"a photo of the digit {c}." if c in _DIGITS else f"a photo of a {c}." for c in class_names]
    raw.eval()
    return raw.encode_text(tok(prompts)).float()


_DIGITS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}


def create_student(name: str, *, num_classes: int, img_size: int, class_names: list[str], dropout: float = 0.25,
                   pretrained: str | None = None, **overrides) -> Student:
    """The student split into frozen part, shared tuned trunk and three heads (see module docstring)."""
    cfg = get_model_cfg(name)
    if "student" not in cfg.roles:
        raise UnknownModelError(f"{name!r} is not a student; students: {', '.join(list_models('student'))}")
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    path = pretrained if pretrained and Path(pretrained).exists() else None
    tag = None if path else pretrained
    k = split_k(name)
    if cfg.family == "timm":
        raw = _raw_timm(cfg, num_classes, img_size, tag, **overrides)
        student = Student(cfg, _units(cfg, raw), k, dropout, None, 0)
    else:
        raw = _raw_clip(cfg, img_size, tag, **overrides)
        text = _text_embeddings(raw, cfg.arch, class_names)
        scale = float(raw.logit_scale.exp().clamp(max=100))
        text_tower = nn.ModuleDict({"transformer": raw.transformer, "token_embedding": raw.token_embedding,
                                    "ln_final": raw.ln_final})
        extra = sum(p.numel() for n, p in raw.named_parameters() if not n.startswith("visual."))
        student = Student(cfg, _units(cfg, raw), k, dropout, _TextClassifier(text, scale), extra, text_tower)
    if path:
        load_state_dict_file(student, path)
        student.snapshot_original()
    return student


def load_state_dict_file(module: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load weights from a file with `torch.load(weights_only=True)` (no code runs); accepts a plain state dict
    or one wrapped as {'state_dict': ...} / {'model': ...}.

    Raises:
        ValueError: the file does not hold a state dict that fits the module.
    """
    obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and ("state_dict" in obj or "model" in obj):
        obj = obj.get("state_dict", obj.get("model"))
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    try:
        module.load_state_dict(obj, strict=strict)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise ValueError(f"{path}: state dict does not fit {type(module).__name__}: "
                         f"{' '.join(first[:2])[:300]}") from None
    return module


def paper_counts(name: str) -> dict[str, int]:
    """Tuned / total parameters at the paper's settings (native size, 1000 classes, meta device: no memory)."""
    cfg = get_model_cfg(name)
    raw = _paper_raw(cfg)
    units = _units(cfg, raw)
    k = split_k(name)
    tuned = sum(_n(_trainable(m)) for _, m in units[-k:])
    total = sum(p.numel() for p in raw.parameters())
    if cfg.family == "open_clip" and not cfg.arch.startswith("RN"):
        total = total - raw.visual.proj.numel() + units[-1][1].weight.numel()  # proj re-expressed as a Linear
    return {"tuned": tuned, "total": total}


def supp_table5_rows() -> list[dict]:
    """Supplement Table 5 from the real architectures: one row per registered student."""
    rows = []
    for name in list_models("student"):
        c = paper_counts(name)
        rows.append({"student": name, "params_tuned": c["tuned"], "params_total": c["total"]})
    return rows
