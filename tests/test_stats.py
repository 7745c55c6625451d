"""Golden tests of the paired bootstrap (orchestrator/tables/stats.py) against independent references: exact
enumeration of tiny bootstrap distributions, scipy.stats.bootstrap, scipy's Spearman and numpy's polyfit."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from orchestrator.tables import stats


def _exact_two_stage(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Every equally likely two-stage resample (seeds, then examples) of mean(b) − mean(a), enumerated."""
    s, n = a.shape
    out = []
    for si in itertools.product(range(s), repeat=s):
        for ei in itertools.product(range(n), repeat=n):
            out.append(b[np.ix_(si, ei)].mean() - a[np.ix_(si, ei)].mean())
    return np.array(out)


def test_two_stage_bootstrap_matches_the_enumerated_distribution() -> None:
    a = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    b = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    exact = _exact_two_stage(a, b)  # 2^2 seed draws × 3^3 example draws, equally likely
    iv = stats.bootstrap([[("c", a)], [("c", b)]], stats.difference(), "enumerated", b=40000)
    assert iv.point == pytest.approx(b.mean() - a.mean())
    reps = stats.difference()(
        stats.arm_means(
            [[("c", a)], [("c", b)]],
            stats._weights(stats.rng_for("x"), 2, 40000),
            {"c": stats._weights(stats.rng_for("y"), 3, 40000)},
        )
    )
    assert reps.mean() == pytest.approx(exact.mean(), abs=0.005)
    assert reps.std() == pytest.approx(exact.std(), rel=0.03)
    lo, hi = np.percentile(exact, [2.5, 97.5])
    assert (iv.lo, iv.hi) == pytest.approx((lo, hi), abs=0.02)


def test_paired_mean_difference_agrees_with_scipy_bootstrap() -> None:
    rng = np.random.default_rng(3)
    a = (rng.random(200) < 0.5).astype(float)
    b = np.where(rng.random(200) < 0.2, 1.0, a)  # b = a with some examples made right: a paired gain
    iv = stats.bootstrap([[("c", a[None])], [("c", b[None])]], stats.difference(), "scipy", b=20000)
    ref = sps.bootstrap(
        (b - a,), np.mean, n_resamples=20000, method="percentile", random_state=np.random.default_rng(0)
    ).confidence_interval
    assert iv.lo == pytest.approx(ref.low, abs=0.01) and iv.hi == pytest.approx(ref.high, abs=0.01)
    assert iv.verdict() is True


def test_the_same_name_gives_the_same_interval_and_another_name_another() -> None:
    rng = np.random.default_rng(1)
    arms = [[("c", rng.random((3, 50)))], [("c", rng.random((3, 50)))]]
    one = stats.bootstrap(arms, stats.difference(), "claim A")
    assert one == stats.bootstrap(arms, stats.difference(), "claim A")
    assert one != stats.bootstrap(arms, stats.difference(), "claim B")


def test_blocks_are_resampled_apart_and_must_pair_up() -> None:
    a = np.zeros((1, 4))
    with pytest.raises(ValueError, match="pair up"):
        stats.bootstrap([[("c", a)], [("c", np.zeros((1, 5)))]], stats.difference(), "x")
    with pytest.raises(ValueError, match="seeds"):
        stats.bootstrap([[("c", a)], [("c", np.zeros((2, 4)))]], stats.difference(), "x")
    # an arm over two eval sets is the mean of the two set means
    iv = stats.bootstrap([[("c", np.ones((1, 4))), ("clean", np.zeros((1, 9)))]], lambda m: m[:, 0], "x", b=10)
    assert iv.point == 0.5 and iv.lo == iv.hi == 0.5


@pytest.mark.parametrize(
    ("lo", "hi", "verdict"), [(0.1, 2.0, True), (-2.0, -0.1, False), (-1.0, 1.0, None), (0.0, 1.0, None)]
)
def test_verdict_is_read_off_the_interval(lo: float, hi: float, verdict: bool | None) -> None:
    assert stats.Interval(0.5, lo, hi, 3, 100, 2000).verdict() is verdict


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")  # the constant rows are the point
def test_spearman_rows_match_scipy_with_ties() -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 4, size=(50, 6)).astype(float)
    y = rng.integers(0, 4, size=(50, 6)).astype(float)
    ours = stats.spearman_rows(x, y)
    for i in range(50):
        ref = sps.spearmanr(x[i], y[i]).statistic
        assert (np.isnan(ours[i]) and np.isnan(ref)) or ours[i] == pytest.approx(ref)


def test_slope_and_mean_difference_match_numpy() -> None:
    rng = np.random.default_rng(4)
    m = rng.random((7, 6))
    xs = [0.1, 0.5, 1.0]
    fit = [np.polyfit(xs, m[i, 1::2] - m[i, 0::2], 1)[0] for i in range(7)]
    assert stats.slope(xs)(m) == pytest.approx(fit)
    assert stats.mean_difference(3)(m) == pytest.approx((m[:, 1::2] - m[:, 0::2]).mean(axis=1))
