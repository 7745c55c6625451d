"""Evaluation metrics of the method (shared/method.md §6): accuracy, ImageNet-C mean, ImageNet-P flip rates.

Inputs may be numpy arrays or torch tensors (on any device); results are plain Python floats, ready to be
logged under the metric names of docs/contracts.md (``acc/...``, ``fp/<perturbation>``, ``fr/<perturbation>``,
``mfr``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal, get_args

import numpy as np
import torch

__all__ = [
    "NOISE_PERTURBATIONS",
    "TEST_PERTURBATIONS",
    "Perturbation",
    "accuracy",
    "flip_probability",
    "flip_rates",
    "is_noise_perturbation",
    "mean_corruption_accuracy",
    "mean_flip_rate",
]

#: The 10 ImageNet-P test perturbations over which mFR is averaged (Hendrycks & Dietterich 2019), in §6's order.
Perturbation = Literal[
    "gaussian_noise",
    "shot_noise",
    "motion_blur",
    "zoom_blur",
    "snow",
    "brightness",
    "translate",
    "rotate",
    "tilt",
    "scale",
]
TEST_PERTURBATIONS: tuple[str, ...] = get_args(Perturbation)
#: Perturbations whose frames are independent noise draws around one clean frame, not a continuous sequence.
NOISE_PERTURBATIONS: tuple[str, ...] = ("gaussian_noise", "shot_noise")


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def accuracy(logits_or_preds: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """Top-1 accuracy in ``[0, 1]``.

    Args:
        logits_or_preds: ``(N, C)`` scores (argmax taken over the last axis) or ``(N,)`` integer predictions.
        y: ``(N,)`` integer labels.

    Returns:
        Fraction of correct predictions.

    Raises:
        ValueError: on empty input, mismatched lengths or inputs of another rank.
    """
    scores, labels = _to_numpy(logits_or_preds), _to_numpy(y)
    preds = scores.argmax(axis=-1) if scores.ndim == 2 else scores
    if preds.ndim != 1 or labels.ndim != 1:
        raise ValueError(
            f"accuracy: expected (N, C) or (N,) predictions and (N,) labels, got {scores.shape} and {labels.shape}"
        )
    if len(preds) != len(labels) or len(labels) == 0:
        raise ValueError(f"accuracy: need equally many (>0) predictions and labels, got {len(preds)} and {len(labels)}")
    return float((preds == labels).mean())


def mean_corruption_accuracy(acc_by_corruption_severity: Mapping[tuple[str, int], float]) -> float:
    """ImageNet-C style mean accuracy over corruptions × severities.

    Averages the severities of each corruption first, then the corruptions, so each corruption weighs the same even
    when a grid is ragged (a local run that skipped a severity); on the full 15 × 5 grid this equals the plain mean.

    Args:
        acc_by_corruption_severity: ``{(corruption, severity): accuracy}``.

    Returns:
        The mean accuracy.

    Raises:
        ValueError: if the mapping is empty.
    """
    if not acc_by_corruption_severity:
        raise ValueError("mean_corruption_accuracy: no (corruption, severity) accuracies given")
    by_corruption: dict[str, list[float]] = {}
    for (corruption, _severity), acc in acc_by_corruption_severity.items():
        by_corruption.setdefault(corruption, []).append(float(acc))
    return float(np.mean([np.mean(accs) for accs in by_corruption.values()]))


def is_noise_perturbation(perturbation: str) -> bool:
    """Whether ``perturbation``'s flip probability compares every frame to the first (see :func:`flip_probability`)."""
    return perturbation in NOISE_PERTURBATIONS


def flip_probability(preds: np.ndarray | torch.Tensor, noise: bool) -> float:
    """ImageNet-P flip probability of one perturbation (Hendrycks & Dietterich 2019).

    Non-noise perturbations (blur, snow, translate, ...) are continuous sequences, so a flip is a change between
    consecutive frames: ``FP = 1/(m(n-1)) Σ_i Σ_{j=2..n} 1[f(x_ij) != f(x_i,j-1)]``. Noise sequences are independent
    draws around one clean image, where "consecutive" means nothing, so every frame is compared with the first:
    ``1[f(x_ij) != f(x_i1)]``, same normalisation.

    Args:
        preds: ``(m, n)`` integer top-1 predictions, m sequences of n frames (first frame = clean for noise).
        noise: True for gaussian/shot noise (see :func:`is_noise_perturbation`).

    Returns:
        FP in ``[0, 1]``.

    Raises:
        ValueError: unless ``preds`` is 2-D with ``m >= 1`` and ``n >= 2``.
    """
    f = _to_numpy(preds)
    if f.ndim != 2 or f.shape[0] < 1 or f.shape[1] < 2:
        raise ValueError(f"flip_probability: preds must be (sequences >= 1, frames >= 2), got shape {f.shape}")
    reference = f[:, :1] if noise else f[:, :-1]
    return float((f[:, 1:] != reference).mean())


def flip_rates(fp: Mapping[str, float], reference_fp: Mapping[str, float]) -> dict[str, float]:
    """Flip rate per perturbation, ``FR_p = FP_p(model) / FP_p(reference model)``.

    A reference that never flips (``FP_ref = 0``) makes the ratio undefined: it is reported as nan rather than
    inf, so that it shows up in the per-perturbation metric and is skipped by :func:`mean_flip_rate` instead of
    turning the mean into inf.

    Args:
        fp: ``{perturbation: FP}`` of the model.
        reference_fp: ``{perturbation: FP}`` of the reference model; must cover every key of ``fp``.

    Returns:
        ``{perturbation: FR}`` for every key of ``fp``.

    Raises:
        ValueError: if the reference lacks a perturbation of ``fp``.
    """
    missing = sorted(set(fp) - set(reference_fp))
    if missing:
        raise ValueError(f"flip_rates: reference model has no flip probability for {missing}")
    return {p: (float(v) / float(reference_fp[p]) if reference_fp[p] != 0 else math.nan) for p, v in fp.items()}


def mean_flip_rate(fr: Mapping[str, float]) -> float:
    """mFR: mean flip rate over the 10 ImageNet-P test perturbations (:data:`TEST_PERTURBATIONS`).

    Keys outside the test list (ImageNet-P's validation perturbations such as ``speckle_noise``) are ignored, so
    a caller can pass everything it evaluated. nan entries (undefined FR, see :func:`flip_rates`) are skipped: the
    mean is over the test perturbations that are present and finite.

    Args:
        fr: ``{perturbation: FR}``.

    Returns:
        The mean, or nan when no test perturbation with a finite FR is present.
    """
    values = [float(fr[p]) for p in TEST_PERTURBATIONS if p in fr and not math.isnan(float(fr[p]))]
    return float(np.mean(values)) if values else math.nan
