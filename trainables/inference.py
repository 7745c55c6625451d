"""Inference of the three-head student: MC dropout over the heads and per-input head selection (method.md §4).

The frozen part and the shared trunk run once per input; only the heads are sampled, because dropout lives only
inside them ("multiple passes only through dropout activated layers, not the complete model"). Every selection
rule (``ours``, ``wo_kld``, ``wo_umc``, ``max_logit``) is evaluated from the same head outputs, so one trained
model yields all rows of the paper's ablation tables without retraining.

Head index convention: 0 = clean head, 1 = unclean head.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.losses import predictive_entropy
from trainables.vocab import HEADS, SELECTION_RULES, Head, SelectionRule

__all__ = [
    "CLEAN",
    "HEADS",
    "SELECTION_RULES",
    "UNCLEAN",
    "SelectionRule",
    "evaluate_heads",
    "f_correct",
    "head_probs",
    "mc_head_probs",
    "predict_all",
    "select_head",
]

CLEAN, UNCLEAN = 0, 1

# Rows per head forward: bounds activation memory when N MC copies of a large eval batch are stacked.
DEFAULT_MAX_ROWS = 4096
# Floor for p̄_h inside log: an MC mean can put exactly 0 on a class the combined head gives mass to.
_LOG_FLOOR = 1e-12


@contextmanager
def _head_mode(head: nn.Module, dropout: bool) -> Iterator[None]:
    """Put ``head`` in eval mode, with only its Dropout modules in train mode if ``dropout``; restore after.

    Every module's own flag is restored (not just ``head.train(mode)``), because a head may legitimately hold
    mixed modes, e.g. a frozen BatchNorm kept in eval inside a training head.
    """
    saved = [(m, m.training) for m in head.modules()]
    try:
        head.eval()
        if dropout:
            for m in head.modules():
                if isinstance(m, nn.modules.dropout._DropoutNd):
                    m.train()
        yield
    finally:
        for m, was_training in saved:
            m.training = was_training


def _probs_chunked(head: nn.Module, z: Tensor, rows: int, max_rows: int) -> Tensor:
    """Softmax of ``head`` over ``rows`` virtual rows ``z[r % B]``, in forwards of at most ``max_rows`` rows.

    Indexing ``r % B`` stacks copies of the batch without materialising all of them at once.
    """
    batch = z.shape[0]
    chunks = []
    for start in range(0, rows, max_rows):
        index = torch.arange(start, min(start + max_rows, rows), device=z.device) % batch
        chunks.append(F.softmax(head(z.index_select(0, index)).float(), dim=-1))
    return torch.cat(chunks)


@torch.no_grad()
def mc_head_probs(head: nn.Module, z: Tensor, n: int, max_rows: int = DEFAULT_MAX_ROWS) -> Tensor:
    """``n`` Monte-Carlo-dropout samples of a head's predictive distribution.

    Only the head's Dropout modules are switched on: BatchNorm (and anything else mode-dependent) stays in eval,
    otherwise sampling would update running statistics and normalise with batch statistics of ``n`` copies of the
    batch. The ``n`` samples come from one batched forward over ``z`` repeated ``n`` times (each row draws its own
    dropout mask), split into chunks of ``max_rows`` rows when ``n * B`` is large.

    Args:
        head: module mapping trunk features to logits ``(B, C)``.
        z: ``(B, ...)`` trunk features.
        n: number of MC samples (>= 1).
        max_rows: largest number of rows per head forward.

    Returns:
        ``(n, B, C)`` float32 probabilities.

    Raises:
        ValueError: if ``n < 1`` or ``max_rows < 1``.
    """
    if n < 1 or max_rows < 1:
        raise ValueError(f"mc_head_probs: n and max_rows must be >= 1, got n={n}, max_rows={max_rows}")
    batch = z.shape[0]
    with _head_mode(head, dropout=True):
        probs = _probs_chunked(head, z, n * batch, max_rows)
    return probs.view(n, batch, -1)


@torch.no_grad()
def head_probs(head: nn.Module, z: Tensor, max_rows: int = DEFAULT_MAX_ROWS) -> Tensor:
    """Deterministic (dropout off, BatchNorm eval) probabilities ``(B, C)`` of a head; its modes are restored."""
    with _head_mode(head, dropout=False):
        return _probs_chunked(head, z, z.shape[0], max_rows)


def _kl_rows(p: Tensor, q: Tensor) -> Tensor:
    """Per-row ``KL(p || q)``; ``xlogy`` makes classes with ``p = 0`` contribute 0."""
    return (torch.xlogy(p, p) - p * q.clamp_min(_LOG_FLOOR).log()).sum(dim=-1)


def select_head(
    p_clean_mc: Tensor,
    p_unclean_mc: Tensor,
    p_combined: Tensor,
    rule: SelectionRule | str,
    lam: float = 1.0,
    *,
    p_clean: Tensor | None = None,
    p_unclean: Tensor | None = None,
) -> Tensor:
    """Pick, per input, the clean (0) or the unclean (1) head.

    With ``p̄_h`` the mean of head h's MC samples, ``U_h = H(p̄_h)`` (uncertainty of the averaged prediction, which
    grows when samples disagree) and ``KL_h = KL(p_cb || p̄_h)`` (distance to the combined head, trained on both
    kinds of input and so a referee between them), the rules are:

    * ``ours``: argmin ``U_h + lam * KL_h``;
    * ``wo_kld``: argmin ``U_h``;
    * ``wo_umc``: argmin ``KL_h``;
    * ``max_logit``: the head with the higher max softmax probability of its *deterministic* (dropout-off)
      prediction, i.e. plain confidence without MC sampling; hence ``p_clean``/``p_unclean`` are required.

    Ties go to the clean head: it is the untouched-behaviour default, and switching away from it needs evidence.

    Args:
        p_clean_mc: ``(N, B, C)`` MC-dropout probabilities of the clean head.
        p_unclean_mc: ``(N, B, C)`` MC-dropout probabilities of the unclean head.
        p_combined: ``(B, C)`` deterministic probabilities of the combined head.
        rule: one of :data:`SELECTION_RULES`.
        lam: weight of the KL term in ``ours``.
        p_clean: ``(B, C)`` deterministic clean-head probabilities (``max_logit`` only).
        p_unclean: ``(B, C)`` deterministic unclean-head probabilities (``max_logit`` only).

    Returns:
        ``(B,)`` int64 head indices.

    Raises:
        ValueError: for an unknown rule, or ``max_logit`` without deterministic probabilities.
    """
    if rule not in SELECTION_RULES:
        raise ValueError(f"select_head: unknown rule {rule!r}; allowed: {', '.join(SELECTION_RULES)}")
    rule = SelectionRule(rule)
    if rule == SelectionRule.max_logit:
        if p_clean is None or p_unclean is None:
            raise ValueError("select_head: rule 'max_logit' needs p_clean and p_unclean (dropout off)")
        score_c, score_u = -p_clean.max(dim=-1).values, -p_unclean.max(dim=-1).values
    else:
        score_c, score_u = _mc_score(p_clean_mc, p_combined, rule, lam), _mc_score(p_unclean_mc, p_combined, rule, lam)
    # Strict inequality: ties stay with the clean head.
    return (score_u < score_c).long()


def _mc_score(p_mc: Tensor, p_combined: Tensor, rule: SelectionRule, lam: float) -> Tensor:
    p_mean = p_mc.mean(dim=0)
    if rule == SelectionRule.wo_kld:
        return predictive_entropy(p_mean, from_logits=False)
    kl = _kl_rows(p_combined, p_mean)
    if rule == SelectionRule.wo_umc:
        return kl
    return predictive_entropy(p_mean, from_logits=False) + lam * kl


@torch.no_grad()
def predict_all(
    heads: nn.ModuleDict,
    z: Tensor,
    n_samples: int = 10,
    lam: float = 1.0,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> dict[str, dict[str, Tensor]]:
    """Predictions of every selection rule and every head from one pass of the heads over trunk features.

    Args:
        heads: ``ModuleDict`` with ``'clean'``, ``'unclean'`` and ``'combined'`` heads, features -> logits.
        z: ``(B, ...)`` trunk features (the frozen part and the trunk have already run, once).
        n_samples: MC-dropout samples per head (N = 10 in the paper).
        lam: KL weight of ``ours``.
        max_rows: largest number of rows per head forward (memory bound).

    Returns:
        ``{'pred': {rule: (B,)}, 'chosen': {rule: (B,)}, 'head_pred': {head: (B,)}}``, int64 tensors: the
        rule's prediction (argmax of the chosen head, dropout off), the chosen head (0 clean, 1 unclean), and each
        head's own deterministic prediction.

    Raises:
        ValueError: if a head is missing.
    """
    missing = [h for h in HEADS if h not in heads]
    if missing:
        raise ValueError(f"predict_all: heads lacks {missing}; needs {list(HEADS)}")
    det = {h: head_probs(heads[h], z, max_rows) for h in HEADS}
    clean, unclean, combined = Head.clean.value, Head.unclean.value, Head.combined.value
    mc = {h: mc_head_probs(heads[h], z, n_samples, max_rows) for h in (clean, unclean)}
    head_pred = {h: p.argmax(dim=-1) for h, p in det.items()}
    chosen = {
        rule: select_head(mc[clean], mc[unclean], det[combined], rule, lam, p_clean=det[clean], p_unclean=det[unclean])
        for rule in SELECTION_RULES
    }
    pred = {rule: torch.where(c == CLEAN, head_pred[clean], head_pred[unclean]) for rule, c in chosen.items()}
    return {"pred": pred, "chosen": chosen, "head_pred": head_pred}


def _head_index(expected: int | str) -> int:
    by_name = {Head.clean: CLEAN, Head.unclean: UNCLEAN}
    index = by_name.get(expected, expected) if isinstance(expected, str) else expected
    if index not in (CLEAN, UNCLEAN):
        raise ValueError(f"expected head must be 0/'clean' or 1/'unclean', got {expected!r}")
    return int(index)


def f_correct(chosen_heads: Tensor, expected: int | str) -> float:
    """F_correct: fraction of inputs sent to the right head (supplement §1).

    The right head is the clean one (0) on the clean test set and the unclean one (1) on every shifted set.

    Args:
        chosen_heads: ``(B,)`` head indices from :func:`select_head`.
        expected: 0/``'clean'`` or 1/``'unclean'``.

    Returns:
        The fraction in ``[0, 1]``.

    Raises:
        ValueError: on an empty input or an invalid expected head.
    """
    index = _head_index(expected)
    if chosen_heads.numel() == 0:
        raise ValueError("f_correct: no chosen heads given")
    return float((chosen_heads == index).float().mean())


def evaluate_heads(
    heads: nn.ModuleDict,
    z: Tensor,
    y: Tensor,
    expected_head: int | str,
    n_samples: int = 10,
    lam: float = 1.0,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> dict[str, float]:
    """Accuracy and F_correct of every selection rule plus every head's own accuracy on one eval set.

    Args:
        heads: the three heads (see :func:`predict_all`).
        z: ``(B, ...)`` trunk features of the eval set.
        y: ``(B,)`` labels.
        expected_head: the right head for this set (0/'clean' on the clean set, 1/'unclean' on shifted sets).
        n_samples: MC-dropout samples per head.
        lam: KL weight of ``ours``.
        max_rows: largest number of rows per head forward.

    Returns:
        ``{'acc/<rule>', 'f_correct/<rule>', 'acc/head_<head>': float}``; the caller appends ``/<set>``.
    """
    out = predict_all(heads, z, n_samples, lam, max_rows)
    y = y.to(z.device)
    metrics: dict[str, float] = {}
    for rule in SELECTION_RULES:
        metrics[f"acc/{rule}"] = float((out["pred"][rule] == y).float().mean())
        metrics[f"f_correct/{rule}"] = f_correct(out["chosen"][rule], expected_head)
    for head in HEADS:
        metrics[f"acc/head_{head}"] = float((out["head_pred"][head] == y).float().mean())
    return metrics
