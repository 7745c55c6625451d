"""Evaluation of a distilled (or baseline) cell: predictors over the student's heads, every selection rule from
one trained model, and the untouched student beside it ("pretrained vs tuned" in one run).

Inputs are cached features (`extract_features`) or, in uncached mode, images encoded on the fly: the same
evaluator serves both (see trainables/evaluate.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import Tensor, nn

from trainables import outcomes
from trainables.artifacts import load_bundles, load_features
from trainables.evaluate import Predictor, evaluate_suites, restricted_argmax
from trainables.inference import predict_all
from trainables.kinds import CellInputs
from trainables.vocab import THREE_HEADED, Head, Method, SelectionRule

Encode = Callable[[Tensor], Tensor] | None


class _Restricted(nn.Module):
    """A head whose logits are cut to `subset` (ImageNet-R/-A, ObjectNet): MC-dropout uncertainty, the KL between
    heads and every selection rule then see only the classes the set can contain, as its published protocol does."""

    def __init__(self, head: nn.Module, subset: Tensor) -> None:
        super().__init__()
        self.head, self.subset = head, subset

    def forward(self, z: Tensor) -> Tensor:
        return self.head(z).index_select(-1, self.subset.to(z.device))


def rules_predictor(student: nn.Module, n: int, lam: float, encode: Encode = None) -> Predictor:
    """Every selection rule (`main` = ours), every head's own prediction and each rule's chosen head."""

    def predict(f: Tensor, subset: Tensor | None = None) -> dict[str, Tensor]:
        f = encode(f) if encode is not None else f
        heads = (
            student.heads
            if subset is None
            else nn.ModuleDict({h: _Restricted(m, subset) for h, m in student.heads.items()})
        )
        r = predict_all(heads, student.trunk(f), n_samples=n, lam=lam)
        back = (lambda v: v) if subset is None else (lambda v: subset.to(v.device)[v])  # noqa: E731
        out = {"main": back(r["pred"][SelectionRule.ours.value]), **{k: back(v) for k, v in r["pred"].items()}}
        out.update({f"head_{h}": back(v) for h, v in r["head_pred"].items()})
        out.update({f"chosen/{k}": v for k, v in r["chosen"].items()})
        return out

    return predict


def _single_head_predictor(student: nn.Module, head: str, encode: Encode = None) -> Predictor:
    def predict(f: Tensor, subset: Tensor | None = None) -> dict[str, Tensor]:
        f = encode(f) if encode is not None else f
        return {"main": restricted_argmax(student.heads[head](student.trunk(f)), subset)}

    return predict


def _original_predictor(student: nn.Module, encode: Encode = None) -> Predictor:
    def predict(f: Tensor, subset: Tensor | None = None) -> dict[str, Tensor]:
        f = encode(f) if encode is not None else f
        return {"main": restricted_argmax(student.original(f), subset)}

    return predict


def _eval_inputs(deps: dict[str, Path], student: nn.Module, use_cache: bool) -> tuple[dict, Encode]:
    """Eval bundles as features (cached) or images, and the matching `encode` for image inputs."""
    if use_cache:
        return load_features(deps["features"])["eval"], None
    return load_bundles(deps["eval"]), (lambda x: student.encode(x))


def evaluate_cell(
    inputs: CellInputs,
    deps: dict[str, Path],
    student: nn.Module,
    use_cache: bool,
    orig_trunk: nn.Module,
    out: Path | None = None,
) -> dict[str, float]:
    """Every requested suite for the cell's method; `orig_trunk` is the trunk before training (for `original`).
    With `out`, also the per-example outcomes file (trainables/outcomes.py), with the teacher's beside them."""
    method, tr, suites = inputs.method, inputs.train, inputs.eval
    bundles, enc = _eval_inputs(deps, student, use_cache)
    embed_in = enc or (lambda f: f)
    if method in THREE_HEADED:
        pred = rules_predictor(student, tr["mc_samples"], tr["lam"], enc)
    elif method == Method.apt:
        pred = _single_head_predictor(student, Head.combined.value, enc)
    else:  # original
        pred = _original_predictor(student, enc)
    trunk = orig_trunk if method == Method.original else student.trunk
    pred = outcomes.memo(pred)  # the outcomes file then reuses these very predictions
    probes: dict = {}
    embed = lambda f: trunk(embed_in(f)).flatten(1)  # noqa: E731
    metrics = evaluate_suites(pred, bundles, suites, embed=embed, probe_outcomes=probes)
    if method != Method.original:  # the untouched student on the same sets: "pretrained vs tuned" in one run
        o = evaluate_suites(_original_predictor(student, enc), bundles, [s for s in suites if s in ("clean", "c")])
        metrics.update({f"original/{k}": v for k, v in o.items() if k in ("acc/clean", "acc/c")})
    if out is not None:
        _save_outcomes(out, pred, _original_predictor(student, enc), bundles, suites, deps, probes)
    return metrics


def _save_outcomes(
    out: Path, pred: Predictor, original: Predictor, bundles: dict, suites: list, deps: dict, probes: dict
) -> None:
    """The cell's per-example outcomes (its transfer probes' among them), the untouched student's on clean/C and
    its teacher's (for the claims)."""
    o = {**outcomes.collect(pred, bundles, suites), **probes}
    o.update({f"original/{k}": v for k, v in outcomes.collect(original, bundles, ["clean", "c"]).items()})
    if "teacher" in deps:
        o.update(outcomes.copy_from(deps["teacher"], "teacher/"))
    outcomes.save(out / outcomes.OUTCOMES_FILE, o)
