"""Adapters shared by the families: input normalisation, and the pieces that turn a network into a unit chain.

A unit maps ONE tensor to ONE tensor, so a chain can be cut anywhere and its frozen part cached as one tensor.
Residual blocks are whole units except the last one, which the split cuts between its sub-blocks; a cut inside a
residual block carries the shortcut alongside the hidden activation, concatenated on the channel (CNN) or last
(ViT) dim.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from trainables.models._registry import Unit


class Normalize(nn.Module):
    """[0, 1] images -> normalised. Buffers are non-persistent: state dicts stay the architecture's own."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def seq(*mods: nn.Module | None) -> nn.Sequential:
    """Sequential of the given modules, skipping None (timm leaves optional layers as None)."""
    return nn.Sequential(*[m for m in mods if m is not None])


class Residual(nn.Module):
    """x + body(x): a whole residual branch as one unit."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class OpenResidual(nn.Module):
    """First piece of a cut residual block: x -> cat(shortcut(x), body(x)), so the shortcut travels along."""

    def __init__(self, shortcut: nn.Module | None, body: nn.Module, dim: int) -> None:
        super().__init__()
        self.shortcut, self.body, self.dim = shortcut if shortcut is not None else nn.Identity(), body, dim

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.shortcut(x), self.body(x)], self.dim)


class CarryResidual(nn.Module):
    """Middle piece: cat(s, h) -> cat(s, body(h)); `width` is the shortcut's size along `dim`."""

    def __init__(self, body: nn.Module, width: int, dim: int) -> None:
        super().__init__()
        self.body, self.width, self.dim = body, width, dim

    def forward(self, x: Tensor) -> Tensor:
        s, h = x.split([self.width, x.shape[self.dim] - self.width], self.dim)
        return torch.cat([s, self.body(h)], self.dim)


class CloseResidual(nn.Module):
    """Last piece: cat(s, h) -> act(s + body(h))."""

    def __init__(self, body: nn.Module, act: nn.Module, width: int, dim: int) -> None:
        super().__init__()
        self.body, self.act, self.width, self.dim = body, act, width, dim

    def forward(self, x: Tensor) -> Tensor:
        s, h = x.split([self.width, x.shape[self.dim] - self.width], self.dim)
        return self.act(self.body(h) + s)


def cut_residual(
    prefix: str, pieces: list[Unit], shortcut: nn.Module | None, act: nn.Module, width: int, dim: int
) -> list[Unit]:
    """Units for one residual block act(shortcut(x) + pieces(x)), cut between its pieces.

    Args:
        prefix: the block's name; each unit is named `prefix.piece`.
        pieces: (name, module) of the residual branch, in order; at least two.
        shortcut: the block's shortcut (None: identity).
        act: applied after the sum (nn.Identity() for pre-norm transformer blocks).
        width: the shortcut's size along `dim`.
        dim: the concatenation dim: 1 (channels) for CNNs, -1 for token sequences.

    Returns:
        The units: open, carry for each middle piece, close.
    """
    (n0, first), *middle, (nl, last) = pieces
    units = [(f"{prefix}.{n0}", OpenResidual(shortcut, first, dim))]
    units += [(f"{prefix}.{n}", CarryResidual(m, width, dim)) for n, m in middle]
    return units + [(f"{prefix}.{nl}", CloseResidual(last, act, width, dim))]


class TokenPool(nn.Module):
    """norm -> class token ('tok'/'token') or mean of the other tokens ('avg') -> post-pool norm."""

    def __init__(self, norm: nn.Module, pool: str, prefix_tokens: int, post: nn.Module | None = None) -> None:
        super().__init__()
        if pool not in ("tok", "token", "avg"):
            raise NotImplementedError(f"pooling {pool!r} is not split (class token or average only)")
        self.norm, self.post, self.avg, self.prefix = norm, post or nn.Identity(), pool == "avg", prefix_tokens

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        return self.post(x[:, self.prefix :].mean(1) if self.avg else x[:, 0])
