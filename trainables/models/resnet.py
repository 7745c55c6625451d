"""timm ResNets (torchvision weights): their unit chain, split rule and registered entry points."""

from __future__ import annotations

from typing import Any

from torch import nn

from trainables.models._builder import build_network
from trainables.models._layers import cut_residual, seq
from trainables.models._registry import TEACHER_AND_STUDENT, ModelCfg, Role, SplitRule, Table5, Unit, register_model

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


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
        pieces = [
            ("conv1", seq(b.conv1, b.bn1, b.act1)),
            ("conv2", seq(b.conv2, b.bn2, b.drop_block, b.act2, b.aa)),
            ("conv3", b.conv3),
            ("out", seq(b.bn3, b.se, b.drop_path)),
        ]
        return cut_residual(prefix, pieces, b.downsample, b.act3, b.conv3.out_channels, dim=1)
    pieces = [
        ("conv1", seq(b.conv1, b.bn1, b.drop_block, b.act1, b.aa)),
        ("conv2", b.conv2),
        ("out", seq(b.bn2, b.se, b.drop_path)),
    ]
    return cut_residual(prefix, pieces, b.downsample, b.act2, b.conv2.out_channels, dim=1)


# Budget for ResNets without a Table 5 entry: ResNet-101's (the paper's closest student).
TIMM_RESNET = SplitRule("timm_resnet", timm_resnet_chain, default_budget_m=2.1)


def _cfg(name: str, arch: str, roles: tuple[Role, ...], tag: str, table5: Table5 = (None, None)) -> ModelCfg:
    # ResNets are size-agnostic: no size keyword reaches timm.
    return ModelCfg(name, "timm", arch, roles, IMAGENET[0], IMAGENET[1], 224, tag, TIMM_RESNET, *table5)


@register_model(_cfg("resnet34", "resnet34", ("teacher",), "resnet34.tv_in1k"))
def resnet34(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """ResNet-34: teacher (Tables 3, 4, 6; Figure 1)."""
    return build_network(cfg, **kwargs)


@register_model(_cfg("resnet50", "resnet50", ("teacher",), "resnet50.tv_in1k"))
def resnet50(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """ResNet-50: teacher (Tables 4, 6)."""
    return build_network(cfg, **kwargs)


@register_model(_cfg("resnet101", "resnet101", TEACHER_AND_STUDENT, "resnet101.tv_in1k", (2.1, 45)))
def resnet101(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """ResNet-101: teacher (Tables 3, 4, 6; Figure 3) and student (Tables 3, 5; Figure 1)."""
    return build_network(cfg, **kwargs)


@register_model(_cfg("resnet152", "resnet152", TEACHER_AND_STUDENT, "resnet152.tv_in1k", (2.6, 60)))
def resnet152(cfg: ModelCfg, **kwargs: Any) -> nn.Module:
    """ResNet-152 (the supplement's "RN-151"): teacher (Table 4) and student (Table 5)."""
    return build_network(cfg, **kwargs)
