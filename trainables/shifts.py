"""Distribution shifts: the C set (15 corruptions x 5 severities) and the P sequences (10 perturbations).

Both are generated once per seed and stored (uint8), so every model of a sweep is evaluated on the same pixels.
C uses `imagecorruptions` (the imaug fork; inputs must be >= 32 px). P follows ImageNet-P's recipe at small scale:
each sequence starts from a clean test image (frame 1) and changes it a little per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from trainables import metrics
from trainables.data import ImageSet

CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
SEVERITIES = (1, 2, 3, 4, 5)
SEEDED = ("impulse_noise", "glass_blur")  # imagecorruptions functions that take an explicit seed
TEST_PERTURBATIONS = metrics.TEST_PERTURBATIONS  # ImageNet-P's 10 test perturbations (one list: metrics.py)
NOISE_PERTURBATIONS = ("gaussian_noise", "shot_noise")


@dataclass
class CSet:
    images: Tensor  # uint8 (15, 5, N, 3, H, W)
    labels: Tensor  # (N,)
    corruptions: tuple[str, ...] = CORRUPTIONS
    # (15, 5, N) int: which distinct test image each slot holds (0..n_distinct-1); the unit a bootstrap resamples
    sources: Tensor | None = None

    def to_state(self) -> dict:
        return {
            "images": self.images,
            "labels": self.labels,
            "corruptions": list(self.corruptions),
            "sources": self.sources,
        }

    @classmethod
    def from_state(cls, s: dict) -> CSet:
        return cls(s["images"], s["labels"], tuple(s["corruptions"]), s.get("sources"))


@dataclass
class PSet:
    images: Tensor  # uint8 (10, m, n, 3, H, W)
    labels: Tensor  # (m,)
    perturbations: tuple[str, ...] = TEST_PERTURBATIONS

    def to_state(self) -> dict:
        return {"images": self.images, "labels": self.labels, "perturbations": list(self.perturbations)}

    @classmethod
    def from_state(cls, s: dict) -> PSet:
        return cls(s["images"], s["labels"], tuple(s["perturbations"]))


def _subsample(test: ImageSet, n: int | None, seed: int) -> ImageSet:
    if n is None or n >= len(test):
        return test
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:n]
    return test.subset(idx.sort().values)


def _cell_images(sub: ImageSet, n_slots: int, cell: int) -> Tensor:
    """Which of `sub`'s images fill the `n_slots` slots of C cell number `cell`: slot k always holds an image of
    the class of `sub`'s k-th image, and the cells walk through each class's images in turn, so 75 cells of a few
    dozen images cover every image of `sub` while one label vector serves every cell."""
    labels = sub.labels
    slot_y = labels[:n_slots]
    idx = torch.empty(n_slots, dtype=torch.long)
    for cls in slot_y.unique():
        group = (labels == cls).nonzero().flatten()
        slots = (slot_y == cls).nonzero().flatten()
        picks = (cell * len(slots) + torch.arange(len(slots))) % len(group)
        idx[slots] = group[picks]
    return idx


def build_c_set(test: ImageSet, seed: int, n_per_cell: int | None = None, n_distinct: int | None = None) -> CSet:
    """Every corruption at every severity, `n_per_cell` images per (corruption, severity).

    n_distinct None: the same (seeded) subset in every cell. Otherwise a seeded subset of `n_distinct` test images
    shared out over the 75 cells (`_cell_images`): C then rests on `n_distinct` distinct images at the cost of
    75 x n_per_cell evaluations (issue #13: 30 images moved C in 3.3-point steps)."""
    from imagecorruptions import corrupt

    n_slots = n_per_cell if n_per_cell is not None else len(test)
    sub = _subsample(test, max(n_distinct or 0, n_slots), seed)
    n_slots = min(n_slots, len(sub))
    hwc_all = sub.images.permute(0, 2, 3, 1).numpy()
    out = np.empty((len(CORRUPTIONS), len(SEVERITIES), n_slots, *hwc_all.shape[1:]), dtype=np.uint8)
    sources = torch.empty((len(CORRUPTIONS), len(SEVERITIES), n_slots), dtype=torch.int32)
    for ci, name in enumerate(CORRUPTIONS):
        for si, sev in enumerate(SEVERITIES):
            np.random.seed((seed * 1009 + ci * 31 + si) % 2**32)
            cell = ci * len(SEVERITIES) + si
            sources[ci, si] = _cell_images(sub, n_slots, cell) if n_distinct else torch.arange(n_slots)
            hwc = hwc_all[sources[ci, si].numpy()]
            for k, img in enumerate(hwc):
                # two corruptions draw from their own RNGs unless given a seed: pass one per image
                kw = {"seed": (seed * 1_000_003 + ci * 7919 + si * 104_729 + k) % 2**31} if name in SEEDED else {}
                c = corrupt(img, corruption_name=name, severity=sev, **kw)
                out[ci, si, k] = (
                    np.clip(np.asarray(c, dtype=np.float32), 0, 255)
                    .round()
                    .astype(np.uint8)[: img.shape[0], : img.shape[1]]
                )
    images = torch.from_numpy(out).permute(0, 1, 2, 5, 3, 4).contiguous()
    return CSet(images, sub.labels[:n_slots].clone(), sources=sources)


# --------------------------------------------------------------------------------------------- P sequences


def _affine(
    x: Tensor, angle: float = 0.0, translate: tuple[float, float] = (0, 0), scale: float = 1.0, shear: float = 0.0
) -> Tensor:
    from torchvision.transforms.v2 import functional as TF

    return TF.affine(
        x,
        angle=angle,
        translate=list(translate),
        scale=scale,
        shear=[shear, 0.0],
        interpolation=TF.InterpolationMode.BILINEAR,
    )


def _motion_blur(x: Tensor, length: int) -> Tensor:
    if length <= 1:
        return x
    k = torch.zeros(3, 1, 1, length)
    k[...] = 1.0 / length
    return F.conv2d(F.pad(x, (length // 2, (length - 1) // 2, 0, 0), mode="replicate"), k, groups=3)


def _zoom_blur(x: Tensor, strength: float) -> Tensor:
    if strength <= 0:
        return x
    acc, n = x.clone(), 1
    for z in np.linspace(1.0, 1.0 + strength, 4)[1:]:
        acc += _affine(x, scale=float(z))
        n += 1
    return acc / n


def _frame(pert: str, x: Tensor, j: int, n: int, g: torch.Generator, snow: Tensor) -> Tensor:
    """Frame j (0-based; frame 0 is the clean image) of one perturbation sequence, x in [0,1] (3,H,W)."""
    t = j / max(n - 1, 1)
    if j == 0:
        return x
    if pert == "gaussian_noise":
        return x + 0.08 * torch.randn(x.shape, generator=g)
    if pert == "shot_noise":
        return torch.poisson(x * 60.0, generator=g) / 60.0
    if pert == "motion_blur":
        return _motion_blur(x[None], 1 + j)[0]
    if pert == "zoom_blur":
        return _zoom_blur(x[None], 0.05 * j)[0]
    if pert == "snow":
        return torch.maximum(x, snow * (0.2 + 0.6 * t))
    if pert == "brightness":
        return x + 0.05 * j
    if pert == "translate":
        return _affine(x[None], translate=(float(j), 0.0))[0]
    if pert == "rotate":
        return _affine(x[None], angle=3.0 * j)[0]
    if pert == "tilt":
        return _affine(x[None], shear=2.5 * j)[0]
    if pert == "scale":
        return _affine(x[None], scale=1.0 - 0.03 * j)[0]
    raise ValueError(f"unknown perturbation {pert!r}")


def build_p_set(test: ImageSet, seed: int, n_sequences: int, n_frames: int) -> PSet:
    """For each of the 10 test perturbations, `n_sequences` sequences of `n_frames` frames (frame 1 clean).

    Schedules: noise = a fresh draw of the same strength each frame; motion/zoom blur, snow, brightness = strength
    growing with the frame index; translate/rotate/tilt/scale = one small geometric step per frame."""
    sub = _subsample(test, n_sequences, seed + 7)
    m = len(sub)
    _, _, h, w = sub.images.shape
    out = torch.empty(len(TEST_PERTURBATIONS), m, n_frames, 3, h, w, dtype=torch.uint8)
    g = torch.Generator().manual_seed(seed)
    for pi, pert in enumerate(TEST_PERTURBATIONS):
        for s in range(m):
            x = sub.images[s].float() / 255.0
            snow = (torch.rand(1, h, w, generator=g) > 0.93).float().expand(3, -1, -1)
            for j in range(n_frames):
                f = _frame(pert, x, j, n_frames, g, snow).clamp(0, 1)
                out[pi, s, j] = (f * 255).round().to(torch.uint8)
    return PSet(out, sub.labels.clone())
