"""timm Vision Transformers (augreg weights): their embedding adapter, unit chain, split rule and entry points."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from trainables.models._builder import build_network
from trainables.models._layers import Residual, TokenPool, cut_residual, seq
from trainables.models._registry import TEACHER_AND_STUDENT, ModelCfg, SplitRule, Table5, Unit, register_model

INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # timm's augreg ViT weights


class _TimmVitEmbed(nn.Module):
    """Patch embedding + class token + position embedding (timm's standard ViT), then patch drop and norm_pre."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        if m.cls_token is None or m.reg_token is not None or m.no_embed_class or m.dynamic_img_size:
            raise NotImplementedError("only class-token ViTs with a plain position embedding are split")
        self.patch_embed, self.pos_drop, self.patch_drop, self.norm_pre = (
            m.patch_embed,
            m.pos_drop,
            m.patch_drop,
            m.norm_pre,
        )
        self.cls_token, self.pos_embed = m.cls_token, m.pos_embed

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm_pre(self.patch_drop(self.pos_drop(x)))


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
    pieces = [
        ("fc1", seq(b.norm2, mlp.fc1, mlp.act)),
        ("fc2", seq(mlp.drop1, mlp.norm, mlp.fc2, mlp.drop2, b.ls2, b.drop_path2)),
    ]
    units += cut_residual(f"{p}.mlp", pieces, None, nn.Identity(), b.norm1.normalized_shape[0], dim=-1)
    pool = TokenPool(net.norm, net.global_pool, net.num_prefix_tokens, net.fc_norm)
    return units + [("pool", pool), ("head", net.head)]


# Budget for ViTs without a Table 5 entry: ViT-S's (the paper's closest student).
TIMM_VIT = SplitRule("timm_vit", timm_vit_chain, default_budget_m=2.3)


def _cfg(name: str, arch: str, tag: str, table5: Table5) -> ModelCfg:
    # timm ViTs size their position embedding at build time: the input size goes to timm as `img_size`.
    return ModelCfg(
        name,
        "timm",
        arch,
        TEACHER_AND_STUDENT,
        INCEPTION[0],
        INCEPTION[1],
        224,
        tag,
        TIMM_VIT,
        *table5,
        size_kwarg="img_size",
    )


@register_model(_cfg("vit_small", "vit_small_patch16_224", "vit_small_patch16_224.augreg_in21k_ft_in1k", (2.3, 48)))
def vit_small(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """ViT-S/16: teacher (Tables 3, 4, 6; Figure 3) and student (Table 5, whose "48M" total is wrong: 22M)."""
    return build_network(cfg, **kwargs)


@register_model(_cfg("vit_base", "vit_base_patch16_224", "vit_base_patch16_224.augreg_in21k_ft_in1k", (3.1, 88)))
def vit_base(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """ViT-B/16: teacher (Tables 1, 2, 4; Figure 2) and student (Table 5)."""
    return build_network(cfg, **kwargs)
