"""Per-example outcomes of an evaluation, saved beside a stage's metrics so claims can be bootstrapped.

`collect` walks the same eval bundles as `evaluate.evaluate_suites` and keeps, per prediction name, what each
metric is the mean of, under the metric's own name:
    acc/<set>, acc/<rule|head_*>/<set>:  bool, clean/flat sets (N,), C-like sets (corruptions, severities, N)
    f_correct/<rule>/<set>:              bool, the rule picked the right head, same shapes
    source/<set>:                        int32 (corruptions, severities, N), C-like sets: the distinct image per slot
    fp/seq/<perturbation>:               float32 (m,), per P sequence its flip fraction (`with_mfr`: into mFR)
    fp/mean:                             float32 (m,), per P sequence the flip fraction of `main`, averaged over
                                         the perturbations (its mean is the logged fp/mean)
The last axis is always the test example (the image behind every corruption and severity, or the P sequence),
in the bundle's order, which is fixed by the eval-set stage: two runs on the same eval set pair up example by
example. Why a separate pass instead of hooks inside evaluate.py: the scoring there stays the single source of
the logged numbers; tests check that the mean of each array here equals the logged metric.

The file (`outcomes.npz`, compressed) stores booleans bit-packed: about 3 KB per prediction on 300 C images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from trainables.evaluate import SHIFT_SETS, Predictor, _name, _predict, _targets
from trainables.metrics import TEST_PERTURBATIONS, is_noise_perturbation

OUTCOMES_FILE = "outcomes.npz"
# `source/<set>`: for a C-like set whose cells hold different images (a few distinct test images shared out over
# the 75 cells), the distinct image behind each (corruption, severity, slot): what a bootstrap resamples.
SOURCE = "source/"
_SEP = "|"  # "/" would make sub-folders inside the npz's zip


def memo(predict: Predictor) -> Predictor:
    """`predict`, remembering its answer per input tensor, so `collect` after `evaluate_suites` costs no second
    forward pass and sees the very predictions the metrics were computed from (MC dropout draws differ per call).

    Keyed by the input's storage pointer, shape, strides and the class subset; the input is kept alive with its
    answer so its storage cannot be reused by another tensor while the memo lives.
    """
    seen: dict[tuple, tuple] = {}

    def wrapped(x: Tensor, subset: Tensor | None = None) -> dict[str, Tensor]:
        key = (x.data_ptr(), tuple(x.shape), x.stride(), str(x.dtype), None if subset is None else subset.data_ptr())
        if key not in seen:
            seen[key] = (x, subset, predict(x) if subset is None else predict(x, subset=subset))
        return seen[key][2]

    return wrapped


def _correct(preds: dict[str, Tensor], y: Tensor, set_name: str, expected_head: int, targets) -> dict:
    out = {}
    for k, v in preds.items():
        name = _name(k, set_name, "main")
        if k.startswith("chosen/"):
            out[name] = (v == expected_head).cpu().numpy()
        else:
            out[name] = ((v if targets is None else targets[v]) == y).cpu().numpy()
    return out


def _flat(predict: Predictor, bundle: dict, set_name: str, expected_head: int, batch_size: int) -> dict:
    preds = _predict(predict, bundle["x"], batch_size, bundle.get("class_subset"))
    return _correct(preds, bundle["y"], set_name, expected_head, _targets(bundle))


def _grid(predict: Predictor, bundle: dict, set_name: str, batch_size: int) -> dict:
    """(corruptions, severities, N) per prediction name."""
    x, y, subset, targets = bundle["x"], bundle["y"], bundle.get("class_subset"), _targets(bundle)
    cells: dict[str, list] = {}
    for ci in range(x.shape[0]):
        for si in range(x.shape[1]):
            preds = _predict(predict, x[ci, si], batch_size, subset)
            for k, v in _correct(preds, y, set_name, 1, targets).items():
                cells.setdefault(k, []).append(v)
    return {k: np.stack(v).reshape(x.shape[0], x.shape[1], -1) for k, v in cells.items()}


def _flips(predict: Predictor, bundle: dict, batch_size: int) -> dict:
    """Per sequence, the flip fraction of `main` (as `metrics.flip_probability`), averaged over perturbations."""
    x, names = bundle["x"], bundle["perturbations"]
    per = []
    for pi, pert in enumerate(names):
        m, n = x.shape[1], x.shape[2]
        f = _predict(predict, x[pi].reshape(m * n, *x.shape[3:]), batch_size)["main"].reshape(m, n).cpu().numpy()
        ref = f[:, :1] if is_noise_perturbation(pert) else f[:, :-1]
        per.append((f[:, 1:] != ref).mean(axis=1))
    out = {f"fp/seq/{pert}": v.astype(np.float32) for pert, v in zip(names, per)}
    return {**out, "fp/mean": np.mean(per, axis=0).astype(np.float32)}


def with_mfr(outcomes: dict[str, np.ndarray], metrics: dict[str, float]) -> dict[str, np.ndarray]:
    """`outcomes` plus `<prefix>mfr/seq`: per P sequence, its share of the run's mFR, where the run's metrics give
    the flip rates (`<prefix>fr/<p>` = FP_p / FP_p(reference) and `<prefix>fp/<p>`).

    mFR = mean over test perturbations of FP_p / FP_ref(p), and FP_p is the mean over sequences of their flip
    fractions `fp/seq/<p>`; so the per-sequence value mean_p fp/seq/<p>[j] / FP_ref(p) averages to the mFR
    exactly, and a bootstrap over sequences resamples mFR itself. (`fp/mean` weighs every perturbation alike: on
    Table 6 it called a teacher whose mFR rose 100 -> 107 "flips less".) Perturbations with an undefined rate (a
    reference that never flips) are left out, as `metrics.mean_flip_rate` leaves them out."""
    out = dict(outcomes)
    prefixes = {k[: k.index("fp/seq/")] for k in outcomes if "fp/seq/" in k}
    for pre in prefixes:
        parts = []
        for key, seq in outcomes.items():
            if not key.startswith(pre + "fp/seq/"):
                continue
            pert = key[len(pre + "fp/seq/") :]
            fr, fp = metrics.get(f"{pre}fr/{pert}"), metrics.get(f"{pre}fp/{pert}")
            if pert not in TEST_PERTURBATIONS or fr is None or fp is None or not np.isfinite(fr):
                continue
            if fp > 0:
                parts.append(np.asarray(seq, dtype=float) * (fr / fp))
            elif fr == 0:  # never flipped: contributes 0 whatever the reference's rate
                parts.append(np.zeros(len(seq)))
        if parts:
            out[f"{pre}mfr/seq"] = np.mean(parts, axis=0)
    return out


def collect(predict: Predictor, bundles: dict, suites: list[str], batch_size: int = 256) -> dict[str, np.ndarray]:
    """Per-example outcomes of every suite in `suites` that `bundles` has (transfer: fitted probes, not
    predictors; `evaluate.evaluate_suites(probe_outcomes=...)` gives theirs)."""
    out: dict[str, np.ndarray] = {}
    if "clean" in suites and "clean" in bundles:
        out.update(_flat(predict, bundles["clean"], "clean", 0, batch_size))
    for name in ("c", "objectnet_c"):
        if name in suites and name in bundles:
            out.update(_grid(predict, bundles[name], name, batch_size))
            if bundles[name].get("source") is not None:  # which distinct image each slot holds (see SOURCE)
                out[f"{SOURCE}{name}"] = np.asarray(bundles[name]["source"], dtype=np.int32)
    for name in SHIFT_SETS:
        if name in suites and name in bundles:
            out.update(_flat(predict, bundles[name], name, 1, batch_size))
    if "p" in suites and "p" in bundles:
        out.update(_flips(predict, bundles["p"], batch_size))
    return out


def save(path: Path, outcomes: dict[str, np.ndarray]) -> Path:
    """Write `outcomes` to `path` (booleans bit-packed, with their shapes)."""
    arrays = {}
    for k, v in outcomes.items():
        key = k.replace("/", _SEP)
        if v.dtype == bool:
            arrays[f"bits{_SEP}{key}"] = np.packbits(v.ravel())
            arrays[f"shape{_SEP}{key}"] = np.asarray(v.shape, dtype=np.int64)
        else:
            arrays[f"float{_SEP}{key}"] = v
    np.savez_compressed(path, **arrays)
    return path


def load(path: Path | str) -> dict[str, np.ndarray]:
    """Read a file `save` wrote: {metric name: array}."""
    out = {}
    with np.load(path) as z:
        for k in z.files:
            kind, key = k.split(_SEP, 1)
            name = key.replace(_SEP, "/")
            if kind == "bits":
                shape = tuple(int(s) for s in z[f"shape{_SEP}{key}"])
                out[name] = np.unpackbits(z[k], count=int(np.prod(shape))).astype(bool).reshape(shape)
            elif kind == "float":
                out[name] = z[k]
    return out


def copy_from(stage_dir: Path, prefix: str) -> dict[str, np.ndarray]:
    """An upstream stage's outcomes under `prefix` (a cell carries its teacher's, as it carries its metrics)."""
    f = Path(stage_dir) / OUTCOMES_FILE
    return {f"{prefix}{k}": v for k, v in load(f).items()} if f.exists() else {}
