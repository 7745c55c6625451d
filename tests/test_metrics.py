"""Golden-value tests of trainables/metrics.py, expected values counted by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainables.metrics import (
    NOISE_PERTURBATIONS,
    TEST_PERTURBATIONS,
    accuracy,
    flip_probability,
    flip_rates,
    is_noise_perturbation,
    mean_corruption_accuracy,
    mean_flip_rate,
)


def test_accuracy_from_logits_and_from_predictions() -> None:
    # argmax of [[2,1],[0,3],[1,0]] = [0,1,0] vs y = [0,0,0] -> 2/3.
    assert accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]]), torch.tensor([0, 0, 0])) == pytest.approx(2 / 3)
    # [1,2,3] vs [1,2,0] -> 2/3, numpy in.
    assert accuracy(np.array([1, 2, 3]), np.array([1, 2, 0])) == pytest.approx(2 / 3)


@pytest.mark.parametrize("preds, y", [(np.array([1, 2]), np.array([1])), (np.array([]), np.array([]))])
def test_accuracy_rejects_bad_lengths(preds: np.ndarray, y: np.ndarray) -> None:
    with pytest.raises(ValueError):
        accuracy(preds, y)


def test_perturbation_vocabulary() -> None:
    assert TEST_PERTURBATIONS == (
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
    )
    assert NOISE_PERTURBATIONS == ("gaussian_noise", "shot_noise")
    assert is_noise_perturbation("shot_noise") and not is_noise_perturbation("rotate")


# m = 2 sequences, n = 4 frames.
#   seq 0: 0 1 1 1  consecutive changes: (0->1) = 1; changes vs frame 1: frames 2,3,4 all differ = 3
#   seq 1: 2 2 5 2  consecutive changes: (2->5), (5->2) = 2; changes vs frame 1: frame 3 only = 1
# non-noise FP = (1 + 2) / (2 * 3) = 1/2; noise FP = (3 + 1) / (2 * 3) = 2/3.
SEQS = [[0, 1, 1, 1], [2, 2, 5, 2]]


@pytest.mark.parametrize("as_array", [np.array, torch.tensor])
def test_flip_probability_noise_vs_consecutive(as_array) -> None:
    preds = as_array(SEQS)
    assert flip_probability(preds, noise=False) == pytest.approx(1 / 2)
    assert flip_probability(preds, noise=True) == pytest.approx(2 / 3)


def test_flip_probability_of_a_stable_model_is_zero() -> None:
    assert flip_probability(np.full((3, 5), 7), noise=False) == 0.0
    assert flip_probability(np.full((3, 5), 7), noise=True) == 0.0


@pytest.mark.parametrize("shape", [(4,), (2, 1), (0, 3), (2, 3, 4)])
def test_flip_probability_validates_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="flip_probability"):
        flip_probability(np.zeros(shape, dtype=int), noise=False)


def test_flip_rates_divide_by_reference_and_zero_reference_is_nan() -> None:
    fr = flip_rates({"snow": 0.2, "tilt": 0.1, "scale": 0.0}, {"snow": 0.4, "tilt": 0.0, "scale": 0.0, "x": 1.0})
    assert fr["snow"] == pytest.approx(0.5)
    assert math.isnan(fr["tilt"]) and math.isnan(fr["scale"])
    assert set(fr) == {"snow", "tilt", "scale"}


def test_flip_rates_require_reference_for_every_perturbation() -> None:
    with pytest.raises(ValueError, match="rotate"):
        flip_rates({"rotate": 0.1}, {"snow": 0.2})


def test_mean_flip_rate_over_test_perturbations_only() -> None:
    # speckle_noise is an ImageNet-P validation perturbation: ignored. (0.5 + 1.0) / 2 = 0.75.
    assert mean_flip_rate({"gaussian_noise": 0.5, "shot_noise": 1.0, "speckle_noise": 9.0}) == pytest.approx(0.75)


def test_mean_flip_rate_skips_nan_and_is_nan_when_nothing_is_left() -> None:
    # nan is skipped: (1.0 + 0.5) / 2 = 0.75.
    assert mean_flip_rate({"gaussian_noise": math.nan, "motion_blur": 1.0, "snow": 0.5}) == pytest.approx(0.75)
    assert math.isnan(mean_flip_rate({"gaussian_noise": math.nan}))
    assert math.isnan(mean_flip_rate({"speckle_noise": 1.0}))
    assert math.isnan(mean_flip_rate({}))


def test_mean_corruption_accuracy_full_grid_is_plain_mean() -> None:
    # fog: (.8 + .6)/2 = .7; snow: (.5 + .3)/2 = .4; mean = .55 (= plain mean of the four).
    acc = {("fog", 1): 0.8, ("fog", 2): 0.6, ("snow", 1): 0.5, ("snow", 2): 0.3}
    assert mean_corruption_accuracy(acc) == pytest.approx(0.55)


def test_mean_corruption_accuracy_weighs_corruptions_equally_on_ragged_grid() -> None:
    # fog .7, snow .2 -> .45 (the plain mean of the three entries would be .5333).
    assert mean_corruption_accuracy({("fog", 1): 0.8, ("fog", 2): 0.6, ("snow", 1): 0.2}) == pytest.approx(0.45)
    with pytest.raises(ValueError):
        mean_corruption_accuracy({})
