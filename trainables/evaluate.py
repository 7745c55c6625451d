"""Evaluation suites over one structure shared by images and cached features.

An *eval bundle* is a dict of tensors whose leading dims index the suite:
    clean: x (N, ...), y (N,)
    c:     x (15, 5, N, ...), y (N,), corruptions [15 names]
    p:     x (10, m, n, ...), y (m,), perturbations [10 names]
    transfer: train_x, train_y, test_x, test_y, name (also `transfer/<name>`: one per transfer set, imagenet)
    v2, r, a, sketch, objectnet: x (N, ...), y (N,) [, class_subset (K,), class_target (K,)]
    objectnet_c: as c [, class_subset, class_target]
Labels index the model's classes. A bundle with `class_subset` covers only those classes (ImageNet-R/-A: 200,
ObjectNet: 113 mapped ones): its predictions are the argmax over those logits only (predictors take `subset=`),
and with `class_target` a predicted class counts as its target class (ObjectNet maps several wnids to one class).
`x` holds uint8 images in the `build_eval_sets` output and feature tensors in the `extract_features` output, so
one evaluator serves teachers (image -> logits) and students (features -> predictions of every rule and head).

A *predictor* maps a batch of `x` (and optionally `subset=`, the allowed class indices) to named predictions
{name: (B,) int64}, class indices of the full label space; names like `main`, `ours`, `wo_kld`,
`head_clean`, and `chosen/<rule>` (the head a rule picked, for F_correct) are turned into metric names here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from trainables.common import apply_chunked
from trainables.inference import f_correct
from trainables.metrics import (
    accuracy,
    flip_probability,
    flip_rates,
    is_noise_perturbation,
    mean_corruption_accuracy,
    mean_flip_rate,
)

Predictor = Callable[..., dict[str, Tensor]]
CLEAN_HEAD, UNCLEAN_HEAD = 0, 1
SHIFT_SETS = ("v2", "r", "sketch", "a", "objectnet")  # ImageNet shift sets read from folders (imagenet source)


def restricted_argmax(logits: Tensor, subset: Tensor | None) -> Tensor:
    """argmax over the classes in `subset` only (None: all), as an index of the full label space."""
    if subset is None:
        return logits.argmax(-1)
    subset = subset.to(logits.device)
    return subset[logits.index_select(-1, subset).argmax(-1)]


def _predict(predict: Predictor, x: Tensor, batch_size: int, subset: Tensor | None = None) -> dict[str, Tensor]:
    if len(x) == 0:  # an empty set has no predictions (and so no metrics), not a failure
        return {}
    return apply_chunked(predict if subset is None else lambda c: predict(c, subset=subset), x, batch_size)


def _targets(bundle: dict) -> Tensor | None:
    """Lookup predicted class -> the class it counts as (ObjectNet), or None (identity)."""
    if "class_target" not in bundle:
        return None
    subset, target = bundle["class_subset"], bundle["class_target"]
    lookup = torch.full((int(subset.max()) + 1,), -1, dtype=torch.int64)
    lookup[subset] = target
    return lookup


def _name(pred_name: str, set_name: str, main: str) -> str | None:
    if pred_name.startswith("chosen/"):
        return f"f_correct/{pred_name.split('/', 1)[1]}/{set_name}"
    if pred_name == main:
        return f"acc/{set_name}"
    return f"acc/{pred_name}/{set_name}"


def _score(
    preds: dict[str, Tensor], y: Tensor, set_name: str, main: str, expected_head: int, targets: Tensor | None = None
) -> dict[str, float]:
    """Accuracy and F_correct through the golden-tested helpers (trainables/metrics.py, inference.py), so the
    numbers in production are the ones the tests pin (issue #13)."""
    m: dict[str, float] = {}
    for k, v in preds.items():
        name = _name(k, set_name, main)
        m[name] = (
            f_correct(v, expected_head)
            if k.startswith("chosen/")
            else accuracy(v if targets is None else targets[v], y)
        )
    return m


def eval_set(
    predict: Predictor,
    bundle: dict,
    set_name: str,
    main: str = "main",
    batch_size: int = 256,
    expected_head: int = UNCLEAN_HEAD,
) -> dict[str, float]:
    """Accuracy (and F_correct) on one flat set; logits masked to `class_subset` when the bundle has one."""
    preds = _predict(predict, bundle["x"], batch_size, bundle.get("class_subset"))
    return _score(preds, bundle["y"], set_name, main, expected_head, _targets(bundle))


def eval_clean(predict: Predictor, bundle: dict, main: str = "main", batch_size: int = 256) -> dict[str, float]:
    return eval_set(predict, bundle, "clean", main, batch_size, CLEAN_HEAD)


def eval_c(
    predict: Predictor, bundle: dict, main: str = "main", batch_size: int = 256, set_name: str = "c"
) -> dict[str, float]:
    """Accuracy per corruption and severity, per corruption, and the mean over all 75 (the paper's IN-C number)."""
    x, y, names = bundle["x"], bundle["y"], bundle["corruptions"]
    subset, targets = bundle.get("class_subset"), _targets(bundle)
    per_cell: dict[str, dict[tuple[str, int], float]] = {}
    out: dict[str, float] = {}
    acc = f"acc/{set_name}"
    for ci, corruption in enumerate(names):
        for si in range(x.shape[1]):
            flat = x[ci, si]
            scores = _score(_predict(predict, flat, batch_size, subset), y, set_name, main, UNCLEAN_HEAD, targets)
            for k, v in scores.items():
                per_cell.setdefault(k, {})[(corruption, si + 1)] = v
            out[f"{acc}/{corruption}/{si + 1}"] = scores[acc]
        n = x.shape[1]
        out[f"{acc}/{corruption}"] = float(np.mean([per_cell[acc][(corruption, s + 1)] for s in range(n)]))
    out.update({k: mean_corruption_accuracy(v) for k, v in per_cell.items()})
    return out


def p_flip_probabilities(
    predict: Predictor, bundle: dict, main: str = "main", batch_size: int = 256
) -> dict[str, float]:
    """FP per perturbation from the top-1 predictions of `main` over each sequence (method.md §6)."""
    x, names = bundle["x"], bundle["perturbations"]
    out: dict[str, float] = {}
    for pi, pert in enumerate(names):
        m, n = x.shape[1], x.shape[2]
        flat = x[pi].reshape(m * n, *x.shape[3:])
        preds = _predict(predict, flat, batch_size)[main].reshape(m, n)
        out[f"fp/{pert}"] = flip_probability(preds.numpy(), noise=is_noise_perturbation(pert))
    out["fp/mean"] = float(np.mean([out[f"fp/{p}"] for p in names]))
    return out


def with_flip_rates(fp_metrics: dict[str, float], reference: dict[str, float] | None) -> dict[str, float]:
    """Add `fr/<p>` and `mfr` when the reference model's FPs are known."""
    if not reference:
        return {}
    fp = {k.split("/", 1)[1]: v for k, v in fp_metrics.items() if k.startswith("fp/") and k != "fp/mean"}
    ref = {k.split("/", 1)[1]: v for k, v in reference.items() if k.startswith("fp/") and k != "fp/mean"}
    fr = flip_rates(fp, ref)
    out = {f"fr/{k}": v for k, v in fr.items()}
    out["mfr"] = mean_flip_rate(fr)
    return out


def linear_probe(train_z: Tensor, train_y: Tensor, test_z: Tensor, test_y: Tensor, seed: int = 0) -> float:
    """Transfer accuracy: logistic regression on frozen features (standardised), as in CLIP's linear probes."""
    return float(linear_probe_correct(train_z, train_y, test_z, test_y, seed).mean())


def linear_probe_correct(train_z: Tensor, train_y: Tensor, test_z: Tensor, test_y: Tensor, seed: int = 0) -> np.ndarray:
    """Per test example, whether the probe got it right (what a transfer claim's bootstrap resamples)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    tr = train_z.reshape(len(train_z), -1).double().numpy()
    te = test_z.reshape(len(test_z), -1).double().numpy()
    scaler = StandardScaler().fit(tr)
    clf = LogisticRegression(max_iter=1000, C=1.0, random_state=seed)
    clf.fit(scaler.transform(tr), train_y.numpy())
    return clf.predict(scaler.transform(te)) == test_y.numpy()


def evaluate_suites(
    predict: Predictor,
    bundles: dict,
    suites: list[str],
    main: str = "main",
    reference_fp: dict[str, float] | None = None,
    embed: Callable[[Tensor], Tensor] | None = None,
    transfer_name: str = "digits",
    batch_size: int = 256,
    probe_outcomes: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Every requested suite present in `bundles`; suites without data are skipped (tables show "—").

    `probe_outcomes`, when given, receives each transfer probe's per-example correctness under its metric name
    (the probe is fitted once, here; trainables/outcomes.py has no predictor to replay it)."""
    out: dict[str, float] = {}
    if "clean" in suites and "clean" in bundles:
        out.update(eval_clean(predict, bundles["clean"], main, batch_size))
    if "c" in suites and "c" in bundles:
        out.update(eval_c(predict, bundles["c"], main, batch_size))
    for name in SHIFT_SETS:
        if name in suites and name in bundles:
            out.update(eval_set(predict, bundles[name], name, main, batch_size))
    if "objectnet_c" in suites and "objectnet_c" in bundles:
        out.update(eval_c(predict, bundles["objectnet_c"], main, batch_size, set_name="objectnet_c"))
    if "p" in suites and "p" in bundles:
        fp = p_flip_probabilities(predict, bundles["p"], main, batch_size)
        out.update(fp)
        out.update(with_flip_rates(fp, reference_fp))
    if "transfer" in suites and embed is not None:
        for key in [k for k in bundles if k == "transfer" or k.startswith("transfer/")]:
            t = bundles[key]
            ztr = apply_chunked(embed, t["train_x"], batch_size)
            zte = apply_chunked(embed, t["test_x"], batch_size)
            correct = linear_probe_correct(ztr, t["train_y"], zte, t["test_y"])
            name = f"acc/transfer/{t.get('name', transfer_name)}"
            out[name] = float(correct.mean())
            if probe_outcomes is not None:
                probe_outcomes[name] = correct
    return out


def classifier_predictor(model: torch.nn.Module, device: torch.device | None = None) -> Predictor:
    """Image classifier -> predictor with one prediction, `main` (argmax over `subset` when given)."""

    def predict(x: Tensor, subset: Tensor | None = None) -> dict[str, Tensor]:
        return {"main": restricted_argmax(model(x.to(device) if device is not None else x), subset)}

    return predict
