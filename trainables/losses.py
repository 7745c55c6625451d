"""Training losses of the method (shared/method.md §2 stage 1 and §3).

Everything here is a pure function of tensors (plus one small task object, :class:`ThreeHeadLoss`), so the
losses can be golden-tested by hand on 2-3 class examples and reused by every stage without touching models.

Conventions:
    * ``logits`` are raw, unnormalised scores ``(B, C)``; ``probs`` are rows of a probability simplex ``(B, C)``.
    * Every KL/CE is reduced with ``batchmean`` (sum over classes, mean over samples), the reduction under which a
      KL is the per-sample divergence the maths talks about (``reduction='mean'`` would also divide by C).
    * Soft targets (teacher, frozen original student) are detached: they are constants of the objective, and a
      frozen network must never receive gradients through its own target.
    * Entropies are in nats.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "HeadLogits",
    "ThreeHeadLoss",
    "augmix_loss",
    "clean_head_loss",
    "combined_head_loss",
    "jsd_consistency",
    "kd_loss",
    "predictive_entropy",
    "soft_target_loss",
    "uncertainty_aware_target",
    "unclean_head_loss",
]

# AugMix clamps its mixture away from 0 so that log(M) stays finite (Hendrycks et al. 2020, reference code).
_JSD_MIXTURE_MIN = 1e-7
# Tolerance under which a (B, C) tensor is taken to already be probabilities in `predictive_entropy`.
_SIMPLEX_ATOL = 1e-4

#: Per head, its logits on the clean batch and on the augmented batch; an entry the head does not use may be None.
HeadLogits = tuple[Tensor | None, Tensor | None]


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"expected tensors of one shape, got {shapes}")


def jsd_consistency(logits_clean: Tensor, logits_aug1: Tensor, logits_aug2: Tensor) -> Tensor:
    """AugMix Jensen-Shannon consistency between a clean image and two AugMix views of it.

    Follows the AugMix reference implementation exactly, because the teacher must be "robustified as in the
    paper": the mixture ``M = (p_clean + p_aug1 + p_aug2) / 3`` is clamped to ``[1e-7, 1]`` before its log (the
    views can put ~0 mass on a class, and log 0 would make the loss infinite), and the loss is
    ``(KL(p_clean||M) + KL(p_aug1||M) + KL(p_aug2||M)) / 3``, each KL with ``batchmean`` reduction. It is zero iff
    the three predictive distributions agree, which is what makes the model's output stable under augmentation.

    Args:
        logits_clean: ``(B, C)`` logits on the clean images.
        logits_aug1: ``(B, C)`` logits on the first AugMix view.
        logits_aug2: ``(B, C)`` logits on the second AugMix view.

    Returns:
        Scalar tensor, the (unweighted) JS consistency; AugMix multiplies it by 12 (see :func:`augmix_loss`).

    Raises:
        ValueError: if the three logits tensors differ in shape.
    """
    _check_same_shape(logits_clean=logits_clean, logits_aug1=logits_aug1, logits_aug2=logits_aug2)
    probs = [F.softmax(z, dim=1) for z in (logits_clean, logits_aug1, logits_aug2)]
    log_mixture = torch.clamp((probs[0] + probs[1] + probs[2]) / 3.0, _JSD_MIXTURE_MIN, 1.0).log()
    # F.kl_div(log M, p) = sum p * (log p - log M) = KL(p || M).
    kls = [F.kl_div(log_mixture, p, reduction="batchmean") for p in probs]
    return (kls[0] + kls[1] + kls[2]) / 3.0


def augmix_loss(
    logits_clean: Tensor,
    logits_aug1: Tensor,
    logits_aug2: Tensor,
    targets: Tensor,
    jsd_weight: float = 12.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """AugMix training objective for the teacher: ``CE(y, clean) + jsd_weight * JSD(clean, aug1, aug2)``.

    Only the clean view gets the label: the augmented views are tied to it through the consistency term, which is
    what AugMix found to transfer to unseen corruptions better than training on the views with CE.

    Args:
        logits_clean: ``(B, C)`` logits on the clean images.
        logits_aug1: ``(B, C)`` logits on the first AugMix view.
        logits_aug2: ``(B, C)`` logits on the second AugMix view.
        targets: ``(B,)`` int64 labels.
        jsd_weight: weight of the consistency term (12 in AugMix and in the paper).

    Returns:
        ``(total, parts)`` where ``parts`` has detached ``'ce'`` and ``'jsd'`` (unweighted) for logging.
    """
    ce = F.cross_entropy(logits_clean, targets)
    jsd = jsd_consistency(logits_clean, logits_aug1, logits_aug2)
    return ce + jsd_weight * jsd, {"ce": ce.detach(), "jsd": jsd.detach()}


def soft_target_loss(student_logits: Tensor, target_probs: Tensor, tau: float = 1.0) -> Tensor:
    """Distillation to an arbitrary soft target: ``tau^2 * KL(q || softmax(z_S / tau))``, batchmean.

    Computed as the cross entropy to ``q`` minus the entropy of ``q`` (which is the KL, and has the same gradient
    as the CE since ``q`` is a constant). Taking probabilities rather than teacher logits lets a caller build ``q``
    per sample from different sources (:func:`uncertainty_aware_target`). ``xlogy`` makes classes with ``q = 0``
    contribute exactly 0 instead of ``0 * log 0 = nan``.

    Args:
        student_logits: ``(B, C)`` student logits (before temperature).
        target_probs: ``(B, C)`` target distribution, already softened at temperature ``tau``; detached here.
        tau: temperature applied to the student; the ``tau^2`` factor keeps gradient magnitudes comparable across
            temperatures (Hinton et al. 2015), so ``alpha`` keeps its meaning when ``tau`` is tuned.

    Returns:
        Scalar tensor.

    Raises:
        ValueError: if shapes differ or ``tau <= 0``.
    """
    _check_same_shape(student_logits=student_logits, target_probs=target_probs)
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    q = target_probs.detach()
    log_p = F.log_softmax(student_logits / tau, dim=1)
    cross_entropy = -(q * log_p).sum(dim=1)
    neg_entropy = torch.xlogy(q, q).sum(dim=1)
    return (tau**2) * (cross_entropy + neg_entropy).mean()


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, tau: float = 1.0) -> Tensor:
    """Hinton knowledge distillation ``tau^2 * KL(softmax(z_T/tau) || softmax(z_S/tau))``, batchmean.

    Args:
        student_logits: ``(B, C)`` student logits.
        teacher_logits: ``(B, C)`` teacher logits over the same classes; detached.
        tau: distillation temperature (> 0).

    Returns:
        Scalar tensor.
    """
    return soft_target_loss(student_logits, F.softmax(teacher_logits.detach() / tau, dim=1), tau)


def predictive_entropy(logits_or_probs: Tensor, *, from_logits: bool | None = None) -> Tensor:
    """Per-sample entropy ``H(p) = -sum_c p_c log p_c`` (nats) of a predictive distribution.

    It is the uncertainty measure the method uses both to pick a distillation source per sample (§3) and, on the
    MC-averaged prediction, to pick a head (§4).

    Args:
        logits_or_probs: ``(B, C)`` logits or probabilities.
        from_logits: ``True`` to apply softmax, ``False`` to take the rows as probabilities. ``None`` (default)
            detects it: rows that are non-negative and sum to 1 (to 1e-4) are probabilities, anything else logits.
            Logits that happen to lie on the simplex are astronomically unlikely; pass the flag when it matters.

    Returns:
        ``(B,)`` entropies; a one-hot row gives exactly 0 (``xlogy``), not nan.
    """
    x = logits_or_probs
    if from_logits is None:
        from_logits = not _is_simplex(x)
    p = F.softmax(x, dim=-1) if from_logits else x
    return -torch.xlogy(p, p).sum(dim=-1)


def _is_simplex(x: Tensor) -> bool:
    if not torch.is_floating_point(x) or x.numel() == 0:
        return False
    ones = torch.ones(x.shape[:-1], dtype=x.dtype, device=x.device)
    return bool((x >= 0).all()) and torch.allclose(x.sum(dim=-1), ones, atol=_SIMPLEX_ATOL)


def uncertainty_aware_target(
    teacher_logits: Tensor, original_logits: Tensor, tau: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Per-sample soft target for the combined head: the less uncertain of the robust teacher and the original.

    The combined head sees clean and augmented images; on a clean image the frozen original student S0 is usually
    the confident one, on a shifted image the robust teacher T is. Choosing per sample by predictive entropy lets
    the head inherit both without knowing which kind of input it is looking at (§3, [default] reconstruction).

    The choice is made on the entropies at temperature 1 (the models' actual predictive distributions, as
    "predictive entropy" says), and the returned target is the chosen source's distribution softened at ``tau``.
    With ``tau = 1`` (the default) the two coincide. Ties go to the teacher, the source the method is about.

    Args:
        teacher_logits: ``(B, C)`` logits of the robust teacher T.
        original_logits: ``(B, C)`` logits of the frozen original student S0, same classes.
        tau: temperature of the returned target.

    Returns:
        ``(target_probs, use_teacher)``: ``(B, C)`` detached probabilities and a ``(B,)`` bool mask, True where
        the teacher was chosen.

    Raises:
        ValueError: if shapes differ or ``tau <= 0``.
    """
    _check_same_shape(teacher_logits=teacher_logits, original_logits=original_logits)
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    z_t, z_s = teacher_logits.detach(), original_logits.detach()
    use_teacher = predictive_entropy(z_t, from_logits=True) <= predictive_entropy(z_s, from_logits=True)
    chosen = torch.where(use_teacher.unsqueeze(1), z_t, z_s)
    return F.softmax(chosen / tau, dim=1), use_teacher


def clean_head_loss(
    logits: Tensor,
    y: Tensor,
    s0_logits: Tensor | None = None,
    self_distill_weight: float = 0.0,
    tau: float = 1.0,
) -> Tensor:
    """Clean head on clean images: ``CE(y, h_c(x_c)) [+ w * KD(S0 -> h_c)]``.

    The optional self-distillation to the frozen original student keeps the clean head's behaviour close to the
    pretrained model's, which is the point of the clean head (preserve clean accuracy and transfer ability).

    Args:
        logits: ``(B, C)`` clean-head logits on clean images.
        y: ``(B,)`` labels.
        s0_logits: ``(B, C)`` logits of the frozen original student on the same images; needed iff
            ``self_distill_weight > 0``.
        self_distill_weight: weight ``w`` of the self-distillation term (0 disables it).
        tau: distillation temperature.

    Returns:
        Scalar tensor.

    Raises:
        ValueError: if ``self_distill_weight > 0`` and ``s0_logits`` is None.
    """
    loss = F.cross_entropy(logits, y)
    if self_distill_weight > 0:
        if s0_logits is None:
            raise ValueError("clean_head_loss: self_distill_weight > 0 needs s0_logits")
        loss = loss + self_distill_weight * kd_loss(logits, s0_logits, tau)
    return loss


def unclean_head_loss(
    logits: Tensor, y: Tensor, teacher_logits: Tensor, alpha: float = 0.5, tau: float = 1.0
) -> Tensor:
    """Unclean (robust) head on augmented images: ``(1 - alpha) * CE(y, h_u(x_a)) + alpha * KD(T -> h_u)``.

    The robust teacher's soft labels carry how it generalises under shift (its "dark knowledge"), which is what
    the small teacher has and the large student lacks; CE keeps the head anchored to the labels.

    Args:
        logits: ``(B, C)`` unclean-head logits on augmented images.
        y: ``(B,)`` labels of the augmented images.
        teacher_logits: ``(B, C)`` robust-teacher logits on the same images.
        alpha: weight of the distillation term, in ``[0, 1]``.
        tau: distillation temperature.

    Returns:
        Scalar tensor.

    Raises:
        ValueError: if ``alpha`` is outside ``[0, 1]``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return (1.0 - alpha) * F.cross_entropy(logits, y) + alpha * kd_loss(logits, teacher_logits, tau)


def combined_head_loss(logits: Tensor, teacher_logits: Tensor, original_logits: Tensor, tau: float = 1.0) -> Tensor:
    """Combined head on clean ∪ augmented images: distil from the per-sample less uncertain source.

    Args:
        logits: ``(B, C)`` combined-head logits on the union batch.
        teacher_logits: ``(B, C)`` robust-teacher logits on the same images.
        original_logits: ``(B, C)`` frozen-original-student logits on the same images.
        tau: distillation temperature.

    Returns:
        Scalar tensor, :func:`soft_target_loss` to :func:`uncertainty_aware_target`.
    """
    target, _ = uncertainty_aware_target(teacher_logits, original_logits, tau)
    return soft_target_loss(logits, target, tau)


@dataclass(frozen=True)
class ThreeHeadLoss:
    """Training objective of the three-head student: ``L = L_clean + L_unclean + L_combined`` (§3).

    A small task object in the spirit of timm's ``task/distillation.py``: it holds the knobs, the trainer holds
    the models. Input layout of :meth:`__call__` (B_c clean images, B_a augmented images, C classes):

    * ``head_logits``: ``{'clean': (on_clean, on_aug), 'unclean': (on_clean, on_aug), 'combined': (on_clean,
      on_aug)}``, each entry ``(B_c, C)`` resp. ``(B_a, C)`` logits of that head. Used entries: ``clean[0]``
      (clean head sees clean images), ``unclean[1]`` (unclean head sees augmented images), ``combined[0]`` and
      ``combined[1]`` (combined head sees the union, concatenated clean first). Unused entries may be None.
    * ``y_clean`` ``(B_c,)``, ``y_aug`` ``(B_a,)``: labels.
    * ``teacher_clean`` ``(B_c, C)``, ``teacher_aug`` ``(B_a, C)``: robust-teacher logits T(x).
    * ``s0_clean`` ``(B_c, C)``, ``s0_aug`` ``(B_a, C)``: frozen original-student logits S0(x).

    With ``use_kd`` all four teacher/S0 tensors are required (the combined head distils on the union); with
    ``use_kd=False`` they are ignored and may be None, so the ablation needs no teacher forward at all.

    Attributes:
        alpha: unclean head's KD weight, ``(1 - alpha) * CE + alpha * KD`` (paper default 0.5).
        tau: temperature of every distillation term (default 1).
        self_distill_weight: clean head's optional KD weight towards S0 (default 0: off).
        use_kd: False gives the "w/o KD" ablation: every head is trained with plain CE on ``y`` over the same
            data it sees with KD (clean head: clean, unclean: augmented, combined: union); weights and
            temperatures of the soft terms are then irrelevant.
    """

    alpha: float = 0.5
    tau: float = 1.0
    self_distill_weight: float = 0.0
    use_kd: bool = True

    def __call__(
        self,
        head_logits: dict[str, HeadLogits],
        y_clean: Tensor,
        y_aug: Tensor,
        teacher_clean: Tensor | None = None,
        teacher_aug: Tensor | None = None,
        s0_clean: Tensor | None = None,
        s0_aug: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Compute the total loss and its per-head parts (layout in the class docstring).

        Returns:
            ``(total, parts)``: ``total`` carries the gradient; ``parts`` has detached ``'clean'``,
            ``'unclean'`` and ``'combined'`` terms for logging (``train/loss_<term>``).

        Raises:
            ValueError: if a head or a tensor that the configuration needs is missing.
        """
        z_clean = _need(head_logits, "clean", 0)
        z_unclean = _need(head_logits, "unclean", 1)
        z_combined = torch.cat([_need(head_logits, "combined", 0), _need(head_logits, "combined", 1)])
        if self.use_kd:
            parts = self._kd_parts(
                z_clean, z_unclean, z_combined, y_clean, y_aug, teacher_clean, teacher_aug, s0_clean, s0_aug
            )
        else:
            parts = {
                "clean": F.cross_entropy(z_clean, y_clean),
                "unclean": F.cross_entropy(z_unclean, y_aug),
                "combined": F.cross_entropy(z_combined, torch.cat([y_clean, y_aug])),
            }
        total = parts["clean"] + parts["unclean"] + parts["combined"]
        return total, {name: part.detach() for name, part in parts.items()}

    def _kd_parts(
        self,
        z_clean: Tensor,
        z_unclean: Tensor,
        z_combined: Tensor,
        y_clean: Tensor,
        y_aug: Tensor,
        teacher_clean: Tensor | None,
        teacher_aug: Tensor | None,
        s0_clean: Tensor | None,
        s0_aug: Tensor | None,
    ) -> dict[str, Tensor]:
        for name, t in (
            ("teacher_clean", teacher_clean),
            ("teacher_aug", teacher_aug),
            ("s0_clean", s0_clean),
            ("s0_aug", s0_aug),
        ):
            if t is None:
                raise ValueError(f"ThreeHeadLoss(use_kd=True) needs {name}")
        return {
            "clean": clean_head_loss(z_clean, y_clean, s0_clean, self.self_distill_weight, self.tau),
            "unclean": unclean_head_loss(z_unclean, y_aug, teacher_aug, self.alpha, self.tau),
            "combined": combined_head_loss(
                z_combined, torch.cat([teacher_clean, teacher_aug]), torch.cat([s0_clean, s0_aug]), self.tau
            ),
        }


def _need(head_logits: dict[str, HeadLogits], head: str, index: int) -> Tensor:
    if head not in head_logits:
        raise ValueError(f"ThreeHeadLoss: head_logits lacks head {head!r}; has {sorted(head_logits)}")
    t = head_logits[head][index]
    if t is None:
        which = ("on_clean", "on_aug")[index]
        raise ValueError(f"ThreeHeadLoss: head_logits[{head!r}] needs its {which} logits")
    return t
