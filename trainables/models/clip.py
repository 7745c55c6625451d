"""open_clip CLIP models (OpenAI weights): image-tower adapters and unit chains for the ModifiedResNet and
VisionTransformer towers, their split rules and entry points, and the class-prompt text classifier.

A CLIP student has no classifier of its own: its heads end in the image projection followed by a frozen
zero-shot classifier, the text tower's embeddings of one prompt per class.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.models._builder import build_network
from trainables.models._layers import Residual, TokenPool, cut_residual, seq
from trainables.models._registry import ModelCfg, SplitRule, Table5, Unit, register_model

OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
_DIGITS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}

# ============================================================================================ image-tower adapters


class _SelfAttention(nn.Module):
    """open_clip's batch-first nn.MultiheadAttention called as self-attention on one tensor."""

    def __init__(self, attn: nn.MultiheadAttention) -> None:
        super().__init__()
        if not attn.batch_first:
            raise NotImplementedError("open_clip attention must be batch-first")
        self.attn = attn

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


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


# ============================================================================================ unit chains


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
    pieces = [
        ("conv1", seq(b.conv1, b.bn1, b.act1)),
        ("conv2", seq(b.conv2, b.bn2, b.act2, b.avgpool)),
        ("conv3", b.conv3),
        ("out", b.bn3),
    ]
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


# Budgets for CLIP models without a Table 5 entry: the paper's budget for the family's closest student.
CLIP_RESNET = SplitRule("clip_resnet", clip_resnet_chain, default_budget_m=3.9)  # CLIP RN-50's
CLIP_VIT = SplitRule("clip_vit", clip_vit_chain, default_budget_m=4.3)  # CLIP ViT-B/16's (ViT-B/32: same width)

# ============================================================================================ entry points


def _cfg(name: str, arch: str, table5: Table5 = (None, None), size: int = 224) -> ModelCfg:
    rule = CLIP_RESNET if arch.startswith("RN") else CLIP_VIT
    # OpenAI's weights were trained with QuickGELU: the architecture must match them to load them.
    return ModelCfg(
        name,
        "open_clip",
        arch,
        ("student",),
        *OPENAI_CLIP,
        size,
        "openai",
        rule,
        *table5,
        size_kwarg="force_image_size",
        arch_kwargs=(("force_quick_gelu", True),),
    )


@register_model(_cfg("clip_rn50", "RN50", (3.9, 102)))
def clip_rn50(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """CLIP RN-50 (OpenAI): student (Table 5, Figure 4)."""
    return build_network(cfg, **kwargs)


@register_model(_cfg("clip_rn101", "RN101", (4.1, 119)))
def clip_rn101(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """CLIP RN-101 (OpenAI): student (Tables 3, 5; Figure 4)."""
    return build_network(cfg, **kwargs)


@register_model(_cfg("clip_vit_b16", "ViT-B-16", (4.3, 149)))
def clip_vit_b16(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """CLIP ViT-B/16 (OpenAI): student (Tables 3, 4, 5; Figure 4)."""
    return build_network(cfg, **kwargs)


@register_model(_cfg("clip_vit_b32", "ViT-B-32"))
def clip_vit_b32(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """CLIP ViT-B/32 (OpenAI): student (Table 3). Not in Table 5: the CLIP-ViT family budget (ViT-B/16's)."""
    return build_network(cfg, **kwargs)


@register_model(_cfg("clip_vit_l14_336", "ViT-L-14-336", (5.6, 450), size=336))
def clip_vit_l14_336(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """CLIP ViT-L/14@336px (OpenAI): student (Tables 1, 2, 5; Figure 2)."""
    return build_network(cfg, **kwargs)


# ============================================================================================ class prompts


class _TextClassifier(nn.Module):
    """CLIP's zero-shot classifier: logit_scale * cosine(image embedding, class-prompt text embedding).

    The text embeddings are a frozen buffer (persistent, so a saved student keeps its classes), computed once by
    the text tower. The scale is learned, as CLIP learns it (stored as its log, clamped at 100 as CLIP does):
    a fixed 1/0.07 over a randomly initialised text tower, whose class embeddings have pairwise cosines of
    0.94-0.98, caps the top softmax probability near 0.5 and squeezes every entropy the method reads (issue
    #13). With pretrained weights it starts at the checkpoint's learned value.
    """

    def __init__(self, text_emb: Tensor, logit_scale: float) -> None:
        super().__init__()
        self.register_buffer("text_emb", F.normalize(text_emb.detach().float(), dim=-1))
        self.log_scale = nn.Parameter(torch.tensor(math.log(float(logit_scale))))

    @property
    def logit_scale(self) -> Tensor:
        return self.log_scale.exp().clamp(max=100.0)

    def set_text(self, text_emb: Tensor) -> None:
        self.text_emb = F.normalize(text_emb.detach().float(), dim=-1).to(self.text_emb.device)

    def forward(self, x: Tensor) -> Tensor:
        return self.logit_scale * F.normalize(x, dim=-1) @ self.text_emb.t()


def _prompt_template(class_names: list[str], prompt: str | None) -> str:
    if prompt:
        return prompt.replace("{name}", "{}")
    digits = all(c.lower() in _DIGITS or c.isdigit() for c in class_names)
    return "a photo of the digit {}." if digits else "a photo of a {}."


@torch.no_grad()
def text_embeddings(text_tower: nn.Module, arch: str, class_names: list[str], prompt: str | None = None) -> Tensor:
    """Class-prompt embeddings from open_clip's bundled tokenizer (offline) and the frozen text tower.

    Args:
        text_tower: an open_clip CLIP model (its image tower may be gone).
        arch: its open_clip architecture name, which picks the tokenizer.
        class_names: one prompt per class.
        prompt: template with '{}' (or '{name}') for the class name; default "a photo of a {}." ("... the digit
            {}." when every class name is a digit).

    Returns:
        (len(class_names), embed dim) float32 embeddings, unnormalised.
    """
    import open_clip  # lazy like the builder's: the CLI imports this package without building anything

    template = _prompt_template(class_names, prompt)
    tokens = open_clip.get_tokenizer(arch)([template.format(c) for c in class_names])
    was_training = text_tower.training
    emb = text_tower.eval().encode_text(tokens.to(text_tower.token_embedding.weight.device))
    text_tower.train(was_training)
    return emb.float()


def text_classifier_and_tower(
    net: nn.Module, arch: str, class_names: list[str], prompt: str | None
) -> tuple[nn.Module, nn.Module]:
    """A CLIP student's classifier and frozen text tower, from a CLIP model whose image tower is already cut up.

    Call it after the chain: it drops `net.visual`, whose modules the units hold.

    Args:
        net: the open_clip CLIP model.
        arch: its open_clip architecture name.
        class_names: the classes the heads classify into.
        prompt: the class-prompt template (see `text_embeddings`).

    Returns:
        (classifier, text tower): the frozen zero-shot classifier every head ends with, and `net` without its
        image tower.
    """
    emb = text_embeddings(net, arch, class_names, prompt)
    classifier = _TextClassifier(emb, float(net.logit_scale.detach().exp().clamp(max=100)))
    net.visual = None  # the units hold the image tower; what is left is the text tower
    return classifier, net
