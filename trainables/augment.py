"""AugMix, DeepAugment without pretrained weights, Noise2Net, and the offline augmented pool (method.md §2).

DeepAugment's original image-to-image nets (CAE, EDSR) need pretrained weights we do not have offline, so
([default]) a small conv autoencoder is trained on the clean split — its reconstruction is checked first, since a
collapsed autoencoder only produces the mean image — and its *decoder* weights are then randomly perturbed;
plus a randomly initialised Noise2Net-style residual net that needs no weights at all.
Everything is seeded and reproducible bit for bit on CPU.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.data import ImageSet, image_buffer
from trainables.shards import Picked, Scatter

# --------------------------------------------------------------------------------------------- AugMix


def augmix_views(images: Tensor, seed: int, severity: int = 1) -> tuple[Tensor, Tensor]:
    """Two independent AugMix views per image (torchvision `AugMix(all_ops=False)`: 3 chains of depth 1-3,
    Dirichlet(1) chain weights, Beta(1,1) blend). uint8 in, uint8 out. torchvision samples its ops once per call,
    so each image gets its own calls to keep views diverse within a batch. Severity 1 is the reference ImageNet
    recipe (google-research/augmix imagenet.py); torchvision's default 3 is the CIFAR one (method.md §2.1)."""
    from torchvision.transforms import v2

    aug = v2.AugMix(severity=severity, all_ops=False)
    a1, a2 = torch.empty_like(images), torch.empty_like(images)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(len(images)):
            a1[i] = aug(images[i])
            a2[i] = aug(images[i])
    return a1, a2


def augmix_in_place(images: Tensor, rows: Tensor, seed: int, severity: int = 1) -> None:
    """`images[rows] = augmix_views(images[rows], seed, severity)[0]` without copying the rows out: the same
    calls in the same order (the second view is drawn and dropped, so every random number is the same)."""
    from torchvision.transforms import v2

    aug = v2.AugMix(severity=severity, all_ops=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in rows.tolist():
            first = aug(images[i])
            aug(images[i])
            images[i] = first


# --------------------------------------------------------------------------------------------- DeepAugment


class ConvAutoencoder(nn.Module):
    """Small conv autoencoder for 32 px images: 3x32x32 -> 64x8x8 -> 3x32x32, sigmoid output in [0, 1]."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 3, 3, padding=1),
            nn.Sigmoid(),
        )
        with torch.no_grad():  # start near the dark mean of digit images, not at grey 0.5: converges in few steps
            self.decoder[-2].bias.fill_(-2.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


class CollapsedAutoencoder(RuntimeError):
    """The autoencoder reconstructs no better than the mean image: its DeepAugment images would be useless."""


def reconstruction_report(ae: nn.Module, images: Tensor) -> dict[str, float]:
    x = images.float() / 255.0
    with torch.no_grad():
        rec = torch.cat([ae(x[i : i + 256]) for i in range(0, len(x), 256)])
    mean_img = x.mean(0, keepdim=True)
    return {"recon_mse": float(F.mse_loss(rec, x)), "mean_image_mse": float(F.mse_loss(mean_img.expand_as(x), x))}


def train_autoencoder(
    images: Tensor,
    epochs: int,
    seed: int,
    batch_size: int = 32,
    lr: float = 3e-3,
    max_ratio: float = 0.5,
    min_steps: int = 200,
) -> tuple[ConvAutoencoder, dict[str, float]]:
    """Train on the clean split for `epochs` but at least `min_steps` optimiser steps (tiny splits would
    otherwise stop before the decoder leaves the mean image); raise `CollapsedAutoencoder` unless the
    reconstruction MSE < max_ratio x the mean-image MSE."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    ae = ConvAutoencoder()
    opt = torch.optim.Adam(ae.parameters(), lr=lr)
    epochs = max(epochs, math.ceil(min_steps / max(1, math.ceil(len(images) / batch_size))))
    for _ in range(epochs):
        for idx in torch.randperm(len(images), generator=g).split(batch_size):
            x = images[idx].float() / 255.0  # per batch: no float copy of the split (4x its uint8 size)
            loss = F.mse_loss(ae(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    ae.eval()
    report = reconstruction_report(ae, images)
    check_reconstruction(report, max_ratio)
    return ae, report


def check_reconstruction(report: dict[str, float], max_ratio: float = 0.5) -> None:
    if not report["recon_mse"] < max_ratio * report["mean_image_mse"]:
        raise CollapsedAutoencoder(
            f"autoencoder reconstruction MSE {report['recon_mse']:.4f} is not below {max_ratio} x the mean-image "
            f"MSE {report['mean_image_mse']:.4f}: train it longer (pool.ae_epochs) before using it for DeepAugment"
        )


PERTURBATIONS = ("negate", "zero", "flip", "neg_gelu", "mask", "rot90", "noise")


def _perturb_decoder(decoder: nn.Module, g: torch.Generator) -> nn.Module:
    """A copy of the decoder with one or two random weight perturbations per conv (DeepAugment's operations)."""
    dec = copy.deepcopy(decoder)
    convs = [m for m in dec.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        for conv in convs[:-1]:  # keep the output layer: it maps back to RGB
            w = conv.weight
            for _ in range(int(torch.randint(1, 3, (1,), generator=g))):
                op = PERTURBATIONS[int(torch.randint(len(PERTURBATIONS), (1,), generator=g))]
                _apply_op(w, op, g)
    return dec


def _apply_op(w: Tensor, op: str, g: torch.Generator) -> None:
    n_out = w.shape[0]
    pick = torch.rand(n_out, generator=g) < 0.3
    if op == "negate":
        w[pick] = -w[pick]
    elif op == "zero":
        w[pick] = 0.0
    elif op == "flip":
        w[pick] = w[pick].flip(-1)
    elif op == "neg_gelu":
        w.copy_(-F.gelu(w) * 2.0)
    elif op == "mask":
        w.mul_((torch.rand(w.shape, generator=g) > 0.2).float())
    elif op == "rot90":
        w[pick] = torch.rot90(w[pick], 1, (-2, -1))
    else:  # multiplicative noise
        w.mul_(1.0 + 0.5 * torch.randn(w.shape, generator=g))


@torch.no_grad()
def deepaugment(
    images: Tensor | Picked, autoencoder: ConvAutoencoder, seed: int, p_new: float = 0.05, out: Any = None
) -> Any:
    """DeepAugment images: encode, decode with a perturbed decoder; a new perturbation with probability p_new per
    image (consecutive images share one: they are batched). `out`: where row i goes (`out[a:b] = rows`, e.g. a
    `Scatter` into the pool), so a pool of ImageNet size is never held twice; None: a new tensor."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(images.shape, dtype=torch.uint8) if out is None else out
    start = 0
    while start < len(images):
        run = 1
        while start + run < len(images) and torch.rand(1, generator=g).item() >= p_new:
            run += 1
        dec = _perturb_decoder(autoencoder.decoder, g)
        x = images[start : start + run].float() / 255.0
        y = dec(autoencoder.encoder(x))
        y = torch.nan_to_num(y, nan=0.5).clamp(0, 1)
        out[start : start + run] = (y * 255).round().to(torch.uint8)
        start += run
    return out


class Noise2Net(nn.Module):
    """x + eps * block(x), a random residual conv net (Hendrycks et al.'s Noise2Net idea), re-drawn per batch."""

    def __init__(self, g: torch.Generator, width: int = 12, steps: int = 4) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        for _ in range(steps):
            c1, c2 = nn.Conv2d(3, width, 3, padding=1), nn.Conv2d(width, 3, 3, padding=1)
            with torch.no_grad():
                for c in (c1, c2):
                    c.weight.normal_(0, 1.0 / math.sqrt(c.weight[0].numel()), generator=g)
                    c.bias.zero_()
            self.convs.append(nn.Sequential(c1, nn.GELU(), c2))
        self.eps = 0.375 + 0.375 * float(torch.rand(1, generator=g))

    def forward(self, x: Tensor) -> Tensor:
        for block in self.convs:
            x = (x + self.eps * torch.tanh(block(x))).clamp(0, 1)
        return x


@torch.no_grad()
def noise2net(images: Tensor | Picked, seed: int, batch_size: int = 32, out: Any = None) -> Any:
    """A new Noise2Net per batch of `batch_size` images; `out` as in `deepaugment`."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(images.shape, dtype=torch.uint8) if out is None else out
    for i in range(0, len(images), batch_size):
        net = Noise2Net(g)
        out[i : i + batch_size] = (net(images[i : i + batch_size].float() / 255.0) * 255).round().to(torch.uint8)
    return out


def noise2net_online(images: Tensor, g: torch.Generator, share: float = 0.5, width: int = 12, steps: int = 4) -> Tensor:
    """Noise2Net applied during training to the first `share` of a (shuffled) batch: each of those images gets
    its own freshly drawn net (grouped convs: one group per image, method.md §2.1), `steps` stacked residual
    blocks x <- clamp(x + eps * tanh(conv(gelu(conv(x))))), eps ~ U(0.375, 0.75) per image. uint8 in, uint8 out.

    Why online, not in the pool: DeepAugment's reference trains its teacher with a new Noise2Net on half of every
    batch, so the teacher sees a new distortion at every step, not a fixed set of distorted copies.
    """
    n = int(round(share * len(images)))
    if n == 0:
        return images
    x = images[:n].float() / 255.0
    b, c, h, w = x.shape
    x = x.reshape(1, b * c, h, w)
    eps = (0.375 + 0.375 * torch.rand(b, generator=g)).repeat_interleave(c).view(1, b * c, 1, 1)
    with torch.no_grad():
        for _ in range(steps):
            w1 = torch.randn(b * width, c, 3, 3, generator=g) / math.sqrt(c * 9)
            w2 = torch.randn(b * c, width, 3, 3, generator=g) / math.sqrt(width * 9)
            hid = F.gelu(F.conv2d(x, w1, padding=1, groups=b))
            x = (x + eps * torch.tanh(F.conv2d(hid, w2, padding=1, groups=b))).clamp(0, 1)
    out = images.clone()
    out[:n] = (x.reshape(b, c, h, w) * 255).round().to(torch.uint8)
    return out


# --------------------------------------------------------------------------------------------- the pool


@dataclass(frozen=True)
class PoolConfig:
    """N' images: a share made by Noise2Net, the rest by the perturbed autoencoder; each then AugMix'ed with
    probability `augmix_prob` (DeepAugment + AugMix, as the paper's pool)."""

    n_images: int = 2000
    augmix_prob: float = 0.5
    noise2net_share: float = 0.0  # the paper pool: DeepAugment + AugMix; Noise2Net goes online (noise2net_online)
    p_new: float = 0.05
    augmix_severity: int = 1


def build_pool(clean: ImageSet, autoencoder: ConvAutoencoder, seed: int, cfg: PoolConfig) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    src = (
        torch.randint(len(clean), (cfg.n_images,), generator=g)
        if cfg.n_images > len(clean)
        else torch.randperm(len(clean), generator=g)[: cfg.n_images]
    )
    n_n2n = int(round(cfg.noise2net_share * cfg.n_images))
    order = torch.randperm(cfg.n_images, generator=g)
    # streamed: sources are index views of the clean split, results go straight into their rows of the pool
    # (file-backed when large), AugMix rewrites rows in place; the numbers are those of the copying version
    imgs = image_buffer(cfg.n_images, *clean.images.shape[1:])
    n2n, deep = order[:n_n2n], order[n_n2n:]
    noise2net(Picked((clean.images, src[n2n])), seed + 1, out=Scatter(imgs, n2n))
    deepaugment(Picked((clean.images, src[deep])), autoencoder, seed + 2, cfg.p_new, out=Scatter(imgs, deep))
    mix = torch.rand(cfg.n_images, generator=g) < cfg.augmix_prob
    if mix.any():
        augmix_in_place(imgs, mix.nonzero().flatten(), seed + 3, cfg.augmix_severity)
    return ImageSet(imgs, clean.labels[src].clone(), clean.classes)


def sample_fraction(n: int, a: float, seed: int) -> Tensor:
    """Indices of a random fraction a of n items; nested across a for one seed (a=0.25 ⊂ a=0.5)."""
    if not 0.0 < a <= 1.0:
        raise ValueError(f"fraction {a} outside (0, 1]")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: max(1, int(round(a * n)))]
