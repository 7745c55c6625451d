"""Evaluation suites over one structure shared by images and cached features.

An *eval bundle* is a dict of tensors whose leading dims index the suite:
    clean: x (N, ...), y (N,)
    c:     x (15, 5, N, ...), y (N,), corruptions [15 names]
    p:     x (10, m, n, ...), y (m,), perturbations [10 names]
    transfer: train_x, train_y, test_x, test_y
`x` holds uint8 images in the `build_eval_sets` output and feature tensors in the `extract_features` output, so
one evaluator serves teachers (image -> logits) and students (features -> predictions of every rule and head).

A *predictor* maps a batch of `x` to named predictions {name: (B,) int64}; names like `main`, `ours`, `wo_kld`,
`head_clean`, and `chosen/<rule>` (the head a rule picked, for F_correct) are turned into metric names here.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from trainables.common import to_float
from trainables.metrics import flip_probability, flip_rates, is_noise_perturbation, mean_flip_rate

Predictor = Callable[[Tensor], dict[str, Tensor]]
CLEAN_HEAD, UNCLEAN_HEAD = 0, 1


@torch.no_grad()
def _predict(predict: Predictor, x: Tensor, batch_size: int) -> dict[str, Tensor]:
    out: dict[str, list[Tensor]] = {}
    for i in range(0, len(x), batch_size):
        chunk = x[i: i + batch_size]
        if chunk.dtype == torch.uint8:
            chunk = to_float(chunk)
        for k, v in predict(chunk).items():
            out.setdefault(k, []).append(v.cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def _name(pred_name: str, set_name: str, main: str) -> str | None:
    if pred_name.startswith("chosen/"):
        return f"f_correct/{pred_name.split('/', 1)[1]}/{set_name}"
    if pred_name == main:
        return f"acc/{set_name}"
    return f"acc/{pred_name}/{set_name}"


def _score(preds: dict[str, Tensor], y: Tensor, set_name: str, main: str, expected_head: int) -> dict[str, float]:
    m: dict[str, float] = {}
    for k, v in preds.items():
        name = _name(k, set_name, main)
        if k.startswith("chosen/"):
            m[name] = float((v == expected_head).float().mean())
        else:
            m[name] = float((v == y).float().mean())
    return m


def eval_clean(predict: Predictor, bundle: dict, main: str = "main", batch_size: int = 256) -> dict[str, float]:
    preds = _predict(predict, bundle["x"], batch_size)
    return _score(preds, bundle["y"], "clean", main, CLEAN_HEAD)


def eval_c(predict: Predictor, bundle: dict, main: str = "main", batch_size: int = 256) -> dict[str, float]:
    """Accuracy per corruption and severity, per corruption, and the mean over all 75 (the paper's IN-C number)."""
    x, y, names = bundle["x"], bundle["y"], bundle["corruptions"]
    per_cell: dict[str, list[float]] = {}
    out: dict[str, float] = {}
    for ci, corruption in enumerate(names):
        for si in range(x.shape[1]):
            flat = x[ci, si]
            scores = _score(_predict(predict, flat, batch_size), y, "c", main, UNCLEAN_HEAD)
            for k, v in scores.items():
                per_cell.setdefault(k, []).append(v)
            out[f"acc/c/{corruption}/{si + 1}"] = scores["acc/c"]
        n = x.shape[1]
        out[f"acc/c/{corruption}"] = float(np.mean(per_cell["acc/c"][-n:]))
    out.update({k: float(np.mean(v)) for k, v in per_cell.items()})
    return out


def p_flip_probabilities(predict: Predictor, bundle: dict, main: str = "main",
                         batch_size: int = 256) -> dict[str, float]:
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
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    tr = train_z.reshape(len(train_z), -1).double().numpy()
    te = test_z.reshape(len(test_z), -1).double().numpy()
    scaler = StandardScaler().fit(tr)
    clf = LogisticRegression(max_iter=1000, C=1.0, random_state=seed)
    clf.fit(scaler.transform(tr), train_y.numpy())
    return float((clf.predict(scaler.transform(te)) == test_y.numpy()).mean())


def evaluate_suites(predict: Predictor, bundles: dict, suites: list[str], main: str = "main",
                    reference_fp: dict[str, float] | None = None, embed: Callable[[Tensor], Tensor] | None = None,
                    transfer_name: str = "digits", batch_size: int = 256) -> dict[str, float]:
    """Every requested suite present in `bundles`; suites without data are skipped (tables show "—")."""
    out: dict[str, float] = {}
    if "clean" in suites and "clean" in bundles:
        out.update(eval_clean(predict, bundles["clean"], main, batch_size))
    if "c" in suites and "c" in bundles:
        out.update(eval_c(predict, bundles["c"], main, batch_size))
    if "p" in suites and "p" in bundles:
        fp = p_flip_probabilities(predict, bundles["p"], main, batch_size)
        out.update(fp)
        out.update(with_flip_rates(fp, reference_fp))
    if "transfer" in suites and "transfer" in bundles and embed is not None:
        t = bundles["transfer"]
        ztr = _embed(embed, t["train_x"], batch_size)
        zte = _embed(embed, t["test_x"], batch_size)
        out[f"acc/transfer/{transfer_name}"] = linear_probe(ztr, t["train_y"], zte, t["test_y"])
    return out


@torch.no_grad()
def _embed(embed: Callable[[Tensor], Tensor], x: Tensor, batch_size: int) -> Tensor:
    outs = []
    for i in range(0, len(x), batch_size):
        chunk = x[i: i + batch_size]
        outs.append(embed(to_float(chunk) if chunk.dtype == torch.uint8 else chunk).cpu())
    return torch.cat(outs)


def classifier_predictor(model: torch.nn.Module, device: torch.device | None = None) -> Predictor:
    """Image classifier -> predictor with one prediction, `main`."""
    def predict(x: Tensor) -> dict[str, Tensor]:
        return {"main": model(x.to(device) if device is not None else x).argmax(-1)}
    return predict
