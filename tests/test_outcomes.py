"""Per-example outcomes (trainables/outcomes.py): each array's mean is the logged metric (same predictions, even
for a predictor that answers differently on every call, like MC dropout), the file round-trips bit for bit, and
it travels through a real MLflow server as a run artifact and back through the aggregator's loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator.tracking import FINISHED, SweepTracker, outcomes_loader, runs_dataframe
from trainables import outcomes
from trainables.evaluate import evaluate_suites

N, M, FRAMES = 40, 6, 4


def _bundles() -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "clean": {"x": torch.randn(N, 3, generator=g), "y": torch.randint(0, 5, (N,), generator=g)},
        "c": {
            "x": torch.randn(2, 3, N, 3, generator=g),
            "y": torch.randint(0, 5, (N,), generator=g),
            "corruptions": ["fog", "snow"],
        },
        "p": {
            "x": torch.randn(2, M, FRAMES, 3, generator=g),
            "y": torch.randint(0, 5, (M,), generator=g),
            "perturbations": ["gaussian_noise", "motion_blur"],
        },
    }


def _random_predictor():
    """A new random answer on every call: only the memo makes the outcomes agree with the metrics."""

    def predict(x: torch.Tensor, subset=None) -> dict[str, torch.Tensor]:
        n = len(x)
        return {
            "main": torch.randint(0, 5, (n,)),
            "wo_kld": torch.randint(0, 5, (n,)),
            "chosen/ours": torch.randint(0, 2, (n,)),
        }

    return predict


def test_every_array_averages_to_its_logged_metric() -> None:
    bundles, suites = _bundles(), ["clean", "c", "p"]
    pred = outcomes.memo(_random_predictor())
    metrics = evaluate_suites(pred, bundles, suites, batch_size=16)
    out = outcomes.collect(pred, bundles, suites, batch_size=16)
    assert out["acc/c"].shape == (2, 3, N) and out["acc/clean"].shape == (N,) and out["fp/mean"].shape == (M,)
    for key in ("acc/clean", "acc/wo_kld/clean", "f_correct/ours/clean", "acc/c", "acc/wo_kld/c", "fp/mean"):
        assert float(out[key].mean()) == pytest.approx(metrics[key], abs=1e-6), key
    assert float(out["acc/c"][1, 2].mean()) == pytest.approx(metrics["acc/c/snow/3"])
    assert "source/c" not in out  # no map in the bundle: none invented
    bundles["c"]["source"] = torch.arange(2 * 3 * N, dtype=torch.int32).reshape(2, 3, N) % N
    mapped = outcomes.collect(pred, bundles, suites, batch_size=16)
    assert np.array_equal(mapped["source/c"], bundles["c"]["source"].numpy()) and "acc/source/c" not in mapped


def test_mfr_per_sequence_averages_to_the_runs_mfr() -> None:
    """mFR weighs each perturbation by 1 / FP_ref(p): the per-sequence values `with_mfr` derives from the flips and
    the run's flip rates average to the logged mFR exactly (the plain per-sequence flip fraction does not)."""
    from trainables.evaluate import with_flip_rates

    bundles, suites = _bundles(), ["p"]
    pred = outcomes.memo(_random_predictor())
    metrics = evaluate_suites(pred, bundles, suites, batch_size=16)
    out = outcomes.collect(pred, bundles, suites, batch_size=16)
    assert out["fp/seq/motion_blur"].shape == (M,)
    assert float(out["fp/seq/motion_blur"].mean()) == pytest.approx(metrics["fp/motion_blur"], abs=1e-6)
    reference = {"fp/gaussian_noise": 0.5, "fp/motion_blur": 0.05}  # a reference that rarely flips on blur
    metrics.update(with_flip_rates(metrics, reference))
    derived = outcomes.with_mfr(out, metrics)
    assert float(derived["mfr/seq"].mean()) == pytest.approx(metrics["mfr"], rel=1e-6)
    assert outcomes.with_mfr(out, {}) == out  # no flip rates logged (no reference): nothing derived
    teacher = outcomes.with_mfr(
        {f"teacher/{k}": v for k, v in out.items()}, {f"teacher/{k}": v for k, v in metrics.items()}
    )
    assert np.array_equal(teacher["teacher/mfr/seq"], derived["mfr/seq"])


def test_transfer_probes_hand_back_their_per_example_correctness() -> None:
    """A transfer probe is fitted, not replayed: evaluate_suites gives its correctness array, whose mean is the
    logged accuracy, under the metric's own name (what Fig 2's claim pairs across cells)."""
    g = torch.Generator().manual_seed(3)
    y_tr, y_te = torch.arange(60) % 4, torch.arange(30) % 4
    noisy = lambda y: torch.nn.functional.one_hot(y, 4).float() + 0.8 * torch.randn(len(y), 4, generator=g)  # noqa: E731
    bundles = {"transfer": {"train_x": noisy(y_tr), "train_y": y_tr, "test_x": noisy(y_te), "test_y": y_te}}
    probes: dict = {}
    metrics = evaluate_suites(
        outcomes.memo(_random_predictor()), bundles, ["transfer"], embed=lambda z: z, probe_outcomes=probes
    )
    got = probes["acc/transfer/digits"]
    assert got.dtype == bool and got.shape == (30,)
    assert float(got.mean()) == metrics["acc/transfer/digits"] and 0.0 < got.mean() < 1.0


def test_file_round_trip_is_exact_and_small(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = {"acc/c": rng.random((15, 5, 300)) < 0.6, "fp/mean": rng.random(50).astype(np.float32)}
    path = outcomes.save(tmp_path / outcomes.OUTCOMES_FILE, data)
    back = outcomes.load(path)
    assert back.keys() == data.keys()
    assert np.array_equal(back["acc/c"], data["acc/c"]) and back["acc/c"].dtype == bool
    assert np.array_equal(back["fp/mean"], data["fp/mean"])
    assert path.stat().st_size < 4000  # 22,500 booleans bit-packed (≈2.8 KB) plus 50 floats


def test_artifact_round_trip_through_a_real_mlflow_server(mlflow_server, tmp_path: Path) -> None:
    t = SweepTracker(mlflow_server.uri, "outcomes")
    parent, _ = t.open_parent("sid", {"profile": "local"}, "outcomes-local")
    with_file = t.open_child(parent, "sid", "cell", "k1", "cell-1", {}, {"student": "x"})
    without = t.open_child(parent, "sid", "cell", "k2", "cell-2", {}, {"student": "x"})
    data = {"acc/c": np.random.default_rng(1).random((2, 3, 30)) < 0.5}
    logger = t.logger(with_file)
    logger.log_artifact(outcomes.save(tmp_path / outcomes.OUTCOMES_FILE, data))
    logger.finish(FINISHED)
    t.logger(without).finish(FINISHED)
    read = outcomes_loader(mlflow_server.uri)
    assert np.array_equal(read(with_file)["acc/c"], data["acc/c"])
    assert read(without) is None  # a run without the file: the claims then say they have no interval
    assert set(runs_dataframe(mlflow_server.uri, "outcomes")["run_id"]) >= {with_file, without}
