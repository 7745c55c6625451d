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
from trainables.models._registry import (EntryPoint, Family, ModelCfg, Role, SplitRule, Unit, UnknownModelError,
                                         get_model_cfg, list_models, model_entrypoint, register_model)


HEADS = ("clean", "unclean", "combined")
PAPER_NUM_CLASSES = 1000
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # timm's augreg ViT weights
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
STUDENT_KNOBS = ("budget_m", "prompt")  # split/prompt knobs: never reach the library builders
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
_S0 = "original_tail"
_DIGITS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}


# ============================================================================================ small modules


class _SelfAttention(nn.Module):
    """open_clip's batch-first nn.MultiheadAttention called as self-attention on one tensor."""

    def __init__(self, attn: nn.MultiheadAttention) -> None:
        super().__init__()
        if not attn.batch_first:
            raise NotImplementedError("open_clip attention must be batch-first")
        self.attn = attn

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


class _TimmVitEmbed(nn.Module):
    """Patch embedding + class token + position embedding (timm's standard ViT), then patch drop and norm_pre."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        if m.cls_token is None or m.reg_token is not None or m.no_embed_class or m.dynamic_img_size:
            raise NotImplementedError("only class-token ViTs with a plain position embedding are split")
        self.patch_embed, self.pos_drop, self.patch_drop, self.norm_pre = (
            m.patch_embed, m.pos_drop, m.patch_drop, m.norm_pre)
        self.cls_token, self.pos_embed = m.cls_token, m.pos_embed

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm_pre(self.patch_drop(self.pos_drop(x)))


class _ClipVitEmbed(nn.Module):
    """open_clip VisionTransformer's conv patch embedding + class and position embeddings, patch dropout, ln_pre."""

    def __init__(self, v: nn.Module) -> None:
        super().__init__()
        if v.attn_pool is not None or v.final_ln_after_pool:
            raise NotImplementedError("open_clip ViTs with attentional pooling are not split")
        self.conv1, self.patch_dropout, self.ln_pre = v.conv1, v.patch_dropout, v.ln_pre
        self.class_embedding, self.positional_embedding = v.class_embedding, v.positional_embedding

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.ln_pre(self.patch_dropout(x))


class _Projection(nn.Module):
    """x @ proj with CLIP's own (width, embed) matrix, kept under its own name."""

    def __init__(self, proj: nn.Parameter) -> None:
        super().__init__()
        self.proj = proj

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.proj


class _AttnPoolTokens(nn.Module):
    """CLIP ModifiedResNet's attention pooling up to (not including) its output projection c_proj.

    Fixed (`tunable = False`): its q/k/v projections hold 12.6M (RN-50) parameters, three times the paper's whole
    budget, so the tuned trunk passes through it with the pretrained attention; c_proj starts the head.
    """

    tunable = False

    def __init__(self, ap: nn.Module) -> None:
        super().__init__()
        self.positional_embedding, self.num_heads = ap.positional_embedding, ap.num_heads
        self.q_proj, self.k_proj, self.v_proj = ap.q_proj, ap.k_proj, ap.v_proj

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(2).transpose(1, 2)  # (N, HW, C)
        x = torch.cat([x.mean(1, keepdim=True), x], 1) + self.positional_embedding.to(x.dtype)
        q, k, v = self.q_proj(x[:, :1]), self.k_proj(x), self.v_proj(x)  # only the mean token's output is used
        out = F.scaled_dot_product_attention(*(_split_heads(t, self.num_heads) for t in (q, k, v)))
        return out.transpose(1, 2).flatten(1)


def _split_heads(t: Tensor, num_heads: int) -> Tensor:
    """(N, L, C) -> (N, heads, L, C / heads), the layout of nn.MultiheadAttention."""
    return t.view(t.shape[0], t.shape[1], num_heads, -1).transpose(1, 2)


class _TextClassifier(nn.Module):
    """CLIP's zero-shot classifier: logit_scale * cosine(image embedding, class-prompt text embedding).

    Both are frozen buffers (persistent, so a saved student keeps its classes), computed once by the text tower.
    """

    def __init__(self, text_emb: Tensor, logit_scale: float) -> None:
        super().__init__()
        self.register_buffer("text_emb", F.normalize(text_emb.detach().float(), dim=-1))
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))

    def set_text(self, text_emb: Tensor) -> None:
        self.text_emb = F.normalize(text_emb.detach().float(), dim=-1).to(self.text_emb.device)

    def forward(self, x: Tensor) -> Tensor:
        return self.logit_scale * F.normalize(x, dim=-1) @ self.text_emb.t()


# ============================================================================================ family split rules


def timm_resnet_chain(net: nn.Module) -> list[Unit]:
    """timm ResNet. Units: stem, layer1, layer2, layer3, every layer4 block but the last, then the last block cut
    at each conv: conv1 (+bn1, act) | conv2 (+bn2, act) | conv3 | bn3 + shortcut + act (basic blocks: conv1 |
    conv2 | bn2 + shortcut + act), then global pool; head: fc. At 1000 classes fc alone (2.05M) nearly fills
    ResNet-101's 2.1M, so ResNet-101 tunes only bn3 + fc (the one cut within 20 % of Table 5) and ResNet-152
    (2.6M) tunes conv3 + bn3 + fc (3.1M); the head is then most of the tuning portion, not one fifth."""
    units: list[Unit] = [("stem", seq(net.conv1, net.bn1, net.act1, net.maxpool))]
    units += [(f"layer{i}", getattr(net, f"layer{i}")) for i in (1, 2, 3)]
    *blocks, last = net.layer4
    units += [(f"layer4.{i}", b) for i, b in enumerate(blocks)]
    units += _timm_resnet_block(f"layer4.{len(blocks)}", last)
    return units + [("pool", net.global_pool), ("fc", net.fc)]


def _timm_resnet_block(prefix: str, b: nn.Module) -> list[Unit]:
    if hasattr(b, "conv3"):  # Bottleneck
        pieces = [("conv1", seq(b.conv1, b.bn1, b.act1)), ("conv2", seq(b.conv2, b.bn2, b.drop_block, b.act2, b.aa)),
                  ("conv3", b.conv3), ("out", seq(b.bn3, b.se, b.drop_path))]
        return cut_residual(prefix, pieces, b.downsample, b.act3, b.conv3.out_channels, dim=1)
    pieces = [("conv1", seq(b.conv1, b.bn1, b.drop_block, b.act1, b.aa)), ("conv2", b.conv2),
              ("out", seq(b.bn2, b.se, b.drop_path))]
    return cut_residual(prefix, pieces, b.downsample, b.act2, b.conv2.out_channels, dim=1)


def timm_vit_chain(net: nn.Module) -> list[Unit]:
    """timm ViT. Units: patch + position embedding, every block but the last, then the last block cut as
    attention (norm1 + attn + residual) | mlp.fc1 (norm2 + fc1 + act) | mlp.fc2 + residual, then final norm +
    class-token pool; head: the classifier. ViT-S (2.3M) tunes the whole last block (2.2M), ViT-B (3.1M) the last
    fc2 (3.1M); the classifier is 18 % / 25 % of the tuning portion."""
    if type(net.blocks[-1].mlp).__name__ != "Mlp" or net.attn_pool is not None:
        raise NotImplementedError(f"{type(net).__name__}: only plain-MLP, token/avg-pool ViTs are split")
    *blocks, b = net.blocks
    units: list[Unit] = [("embed", _TimmVitEmbed(net))]
    units += [(f"blocks.{i}", blk) for i, blk in enumerate(blocks)]
    p = f"blocks.{len(blocks)}"
    units.append((f"{p}.attn", Residual(seq(b.norm1, b.attn, b.ls1, b.drop_path1))))
    mlp = b.mlp
    pieces = [("fc1", seq(b.norm2, mlp.fc1, mlp.act)), ("fc2", seq(mlp.drop1, mlp.norm, mlp.fc2, mlp.drop2, b.ls2,
                                                                      b.drop_path2))]
    units += cut_residual(f"{p}.mlp", pieces, None, nn.Identity(), b.norm1.normalized_shape[0], dim=-1)
    pool = TokenPool(net.norm, net.global_pool, net.num_prefix_tokens, net.fc_norm)
    return units + [("pool", pool), ("head", net.head)]


def clip_resnet_chain(net: nn.Module) -> list[Unit]:
    """open_clip ModifiedResNet (image tower). Units: 3-conv stem, layer1, layer2, layer3, every layer4 block but
    the last, then the last block cut at each conv: conv1 | conv2 (+avgpool) | conv3 | bn3 + shortcut + act, then
    the attention pool WITHOUT c_proj and with its q/k/v FIXED (12.6M for RN-50: three times the budget); head:
    c_proj (the projection into the joint space) + the frozen text classifier. RN-101 (4.1M) tunes conv2, conv3,
    bn3 + c_proj (4.5M, head 24 %); RN-50 (3.9M), whose c_proj alone is 2.1M, tunes conv3, bn3 + c_proj (3.15M,
    head 67 %)."""
    v = net.visual
    stem = seq(v.conv1, v.bn1, v.act1, v.conv2, v.bn2, v.act2, v.conv3, v.bn3, v.act3, v.avgpool)
    units: list[Unit] = [("stem", stem)] + [(f"layer{i}", getattr(v, f"layer{i}")) for i in (1, 2, 3)]
    *blocks, b = v.layer4
    units += [(f"layer4.{i}", blk) for i, blk in enumerate(blocks)]
    pieces = [("conv1", seq(b.conv1, b.bn1, b.act1)), ("conv2", seq(b.conv2, b.bn2, b.act2, b.avgpool)),
              ("conv3", b.conv3), ("out", b.bn3)]
    units += cut_residual(f"layer4.{len(blocks)}", pieces, b.downsample, b.act3, b.conv3.out_channels, dim=1)
    return units + [("attnpool", _AttnPoolTokens(v.attnpool)), ("c_proj", v.attnpool.c_proj)]


def clip_vit_chain(net: nn.Module) -> list[Unit]:
    """open_clip VisionTransformer (image tower). Units: conv patch embedding + class/position embeddings + ln_pre,
    every residual block but the last, then the last block cut as attention (ln_1 + attn + residual) | mlp.c_fc
    (ln_2 + c_fc + gelu) | mlp.c_proj + residual, then ln_post + class-token pool; head: proj (into the joint
    space) + the frozen text classifier. ViT-B/16 (4.3M) tunes the last MLP + proj (5.1M, head 8 %), ViT-L/14
    (5.6M) the last c_proj + proj (5.0M, head 16 %)."""
    v = net.visual
    *blocks, b = v.transformer.resblocks
    units: list[Unit] = [("embed", _ClipVitEmbed(v))] + [(f"resblocks.{i}", blk) for i, blk in enumerate(blocks)]
    p = f"resblocks.{len(blocks)}"
    units.append((f"{p}.attn", Residual(seq(b.ln_1, _SelfAttention(b.attn), b.ls_1))))
    mid = getattr(b.mlp, "ln", None)
    pieces = [("c_fc", seq(b.ln_2, b.mlp.c_fc, b.mlp.gelu)), ("c_proj", seq(mid, b.mlp.c_proj, b.ls_2))]
    units += cut_residual(f"{p}.mlp", pieces, None, nn.Identity(), b.ln_1.normalized_shape[0], dim=-1)
    return units + [("pool", TokenPool(v.ln_post, v.pool_type, 1)), ("proj", _Projection(v.proj))]


# Family budgets for models without a Table 5 entry: the paper's budget for the family's closest student.
TIMM_RESNET = SplitRule("timm_resnet", timm_resnet_chain, default_budget_m=2.1)  # ResNet-101's
TIMM_VIT = SplitRule("timm_vit", timm_vit_chain, default_budget_m=2.3)  # ViT-S's
CLIP_RESNET = SplitRule("clip_resnet", clip_resnet_chain, default_budget_m=3.9)  # CLIP RN-50's
CLIP_VIT = SplitRule("clip_vit", clip_vit_chain, default_budget_m=4.3)  # CLIP ViT-B/16's (ViT-B/32: same width)


# ============================================================================================ the registry's entries


TS: tuple[Role, ...] = ("teacher", "student")
_Table5 = tuple[float | None, float | None]


def _timm_cfg(name: str, arch: str, roles: tuple[Role, ...], tag: str, norm: tuple, rule: SplitRule,
              table5: _Table5 = (None, None)) -> ModelCfg:
    return ModelCfg(name, "timm", arch, roles, norm[0], norm[1], 224, tag, rule, *table5,
                    size_kwarg="img_size" if rule is TIMM_VIT else None)


def _clip_cfg(name: str, arch: str, table5: _Table5 = (None, None), size: int = 224) -> ModelCfg:
    rule = CLIP_RESNET if arch.startswith("RN") else CLIP_VIT
    # OpenAI's weights were trained with QuickGELU: the architecture must match them to load them.
    return ModelCfg(name, "open_clip", arch, ("student",), *OPENAI_CLIP, size, "openai", rule, *table5,
                    size_kwarg="force_image_size", arch_kwargs=(("force_quick_gelu", True),))


@register_model(_timm_cfg("resnet34", "resnet34", ("teacher",), "resnet34.tv_in1k", IMAGENET, TIMM_RESNET))
def resnet34(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """ResNet-34: teacher (Tables 3, 4, 6; Figure 1)."""
    return build_network(cfg, **kwargs)


@register_model(_timm_cfg("resnet50", "resnet50", ("teacher",), "resnet50.tv_in1k", IMAGENET, TIMM_RESNET))
def resnet50(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """ResNet-50: teacher (Tables 4, 6)."""
    return build_network(cfg, **kwargs)


@register_model(_timm_cfg("resnet101", "resnet101", TS, "resnet101.tv_in1k", IMAGENET, TIMM_RESNET, (2.1, 45)))
def resnet101(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """ResNet-101: teacher (Tables 3, 4, 6; Figure 3) and student (Tables 3, 5; Figure 1)."""
    return build_network(cfg, **kwargs)


@register_model(_timm_cfg("resnet152", "resnet152", TS, "resnet152.tv_in1k", IMAGENET, TIMM_RESNET, (2.6, 60)))
def resnet152(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """ResNet-152 (the supplement's "RN-151"): teacher (Table 4) and student (Table 5)."""
    return build_network(cfg, **kwargs)


@register_model(_timm_cfg("vit_small", "vit_small_patch16_224", TS, "vit_small_patch16_224.augreg_in21k_ft_in1k",
                          INCEPTION, TIMM_VIT, (2.3, 48)))
def vit_small(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """ViT-S/16: teacher (Tables 3, 4, 6; Figure 3) and student (Table 5, whose "48M" total is wrong: 22M)."""
    return build_network(cfg, **kwargs)


@register_model(_timm_cfg("vit_base", "vit_base_patch16_224", TS, "vit_base_patch16_224.augreg_in21k_ft_in1k",
                          INCEPTION, TIMM_VIT, (3.1, 88)))
def vit_base(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """ViT-B/16: teacher (Tables 1, 2, 4; Figure 2) and student (Table 5)."""
    return build_network(cfg, **kwargs)


@register_model(_clip_cfg("clip_rn50", "RN50", (3.9, 102)))
def clip_rn50(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """CLIP RN-50 (OpenAI): student (Table 5, Figure 4)."""
    return build_network(cfg, **kwargs)


@register_model(_clip_cfg("clip_rn101", "RN101", (4.1, 119)))
def clip_rn101(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """CLIP RN-101 (OpenAI): student (Tables 3, 5; Figure 4)."""
    return build_network(cfg, **kwargs)


@register_model(_clip_cfg("clip_vit_b16", "ViT-B-16", (4.3, 149)))
def clip_vit_b16(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """CLIP ViT-B/16 (OpenAI): student (Tables 3, 4, 5; Figure 4)."""
    return build_network(cfg, **kwargs)


@register_model(_clip_cfg("clip_vit_b32", "ViT-B-32"))
def clip_vit_b32(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """CLIP ViT-B/32 (OpenAI): student (Table 3). Not in Table 5: the CLIP-ViT family budget (ViT-B/16's)."""
    return build_network(cfg, **kwargs)


@register_model(_clip_cfg("clip_vit_l14_336", "ViT-L-14-336", (5.6, 450), size=336))
def clip_vit_l14_336(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """CLIP ViT-L/14@336px (OpenAI): student (Tables 1, 2, 5; Figure 2)."""
    return build_network(cfg, **kwargs)


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
        emb = _text_embeddings(self.text_tower, self.cfg.arch, class_names, prompt)
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


def _prompt_template(class_names: list[str], prompt: str | None) -> str:
    if prompt:
        return prompt.replace("{name}", "{}")
    digits = all(c.lower() in _DIGITS or c.isdigit() for c in class_names)
    return "a photo of the digit {}." if digits else "a photo of a {}."


@torch.no_grad()
def _text_embeddings(text_tower: nn.Module, arch: str, class_names: list[str], prompt: str | None = None) -> Tensor:
    """Class-prompt embeddings from open_clip's bundled tokenizer (offline) and the frozen text tower."""
    import open_clip

    template = _prompt_template(class_names, prompt)
    tokens = open_clip.get_tokenizer(arch)([template.format(c) for c in class_names])
    was_training = text_tower.training
    emb = text_tower.eval().encode_text(tokens.to(text_tower.token_embedding.weight.device))
    text_tower.train(was_training)
    return emb.float()


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
    emb = _text_embeddings(net, cfg.arch, class_names, prompt)
    classifier = _TextClassifier(emb, float(net.logit_scale.detach().exp().clamp(max=100)))
    net.visual = None  # the units hold the image tower; what is left is the text tower
    return Student(cfg, units, k, dropout, classifier, net)


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
