"""Golden-value tests of trainables/losses.py; every expected value is worked out by hand with math.log.

Recurring 2-class distributions (softmax of logits [a, b] is [e^a, e^b] / (e^a + e^b)):
    [0, 0]        -> [1/2, 1/2]
    [ln 3, 0]     -> [3/4, 1/4]
    [0, ln 3]     -> [1/4, 3/4]
    [ln 9, 0]     -> [9/10, 1/10]
    [0, ln 4]     -> [1/5, 4/5]
    [ln 4, 0]     -> [4/5, 1/5]
"""

from __future__ import annotations

import math

import pytest
import torch

from trainables.losses import (
    ThreeHeadLoss,
    augmix_loss,
    clean_head_loss,
    combined_head_loss,
    jsd_consistency,
    kd_loss,
    predictive_entropy,
    soft_target_loss,
    uncertainty_aware_target,
    unclean_head_loss,
)

LN2, LN3, LN4, LN9 = math.log(2), math.log(3), math.log(4), math.log(9)
# KL([3/4, 1/4] || [1/2, 1/2]) = 3/4 ln(3/2) + 1/4 ln(1/2) ≈ 0.130812
KL_34_VS_HALF = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)


def t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_kl_constant_is_what_we_think() -> None:
    assert KL_34_VS_HALF == pytest.approx(0.1308120, abs=1e-6)


# --- AugMix JSD -------------------------------------------------------------------------------------------------


def test_jsd_is_zero_for_identical_predictions() -> None:
    z = t([[1.0, -2.0, 0.5], [0.0, 3.0, 3.0]])
    assert jsd_consistency(z, z.clone(), z.clone()).item() == pytest.approx(0.0, abs=1e-12)


def test_jsd_hand_value_with_batchmean() -> None:
    # Row 0: p_clean = [1/2,1/2], p_aug1 = [3/4,1/4], p_aug2 = [1/4,3/4] -> M = [1/2,1/2].
    #   KL(p_clean||M) = 0; KL(p_aug1||M) = KL(p_aug2||M) = 3/4 ln(3/2) + 1/4 ln(1/2).
    #   per-sample JSD = (0 + 2 * KL_34_VS_HALF) / 3.
    # Row 1: all three identical -> 0. batchmean divides the sum over rows by B = 2.
    clean = t([[0.0, 0.0], [1.0, 0.0]])
    aug1 = t([[LN3, 0.0], [1.0, 0.0]])
    aug2 = t([[0.0, LN3], [1.0, 0.0]])
    expected = (2 * KL_34_VS_HALF / 3) / 2  # ≈ 0.043604
    assert jsd_consistency(clean, aug1, aug2).item() == pytest.approx(expected, rel=1e-9)


def test_augmix_loss_is_ce_plus_weighted_jsd() -> None:
    # CE on the clean view only: y = 0 with p_clean = [1/2, 1/2] -> ln 2. JSD as above for one row: 2*KL/3.
    clean, aug1, aug2 = t([[0.0, 0.0]]), t([[LN3, 0.0]]), t([[0.0, LN3]])
    total, parts = augmix_loss(clean, aug1, aug2, torch.tensor([0]))
    assert parts["ce"].item() == pytest.approx(LN2)
    assert parts["jsd"].item() == pytest.approx(2 * KL_34_VS_HALF / 3)
    assert total.item() == pytest.approx(LN2 + 12 * 2 * KL_34_VS_HALF / 3)


def test_jsd_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        jsd_consistency(t([[0.0, 0.0]]), t([[0.0, 0.0, 0.0]]), t([[0.0, 0.0]]))


# --- KD / soft targets ------------------------------------------------------------------------------------------


def test_kd_hand_value_tau_1() -> None:
    # Teacher [ln 3, 0] -> [3/4, 1/4]; student [0, 0] -> [1/2, 1/2]; KL(T||S) = KL_34_VS_HALF.
    assert kd_loss(t([[0.0, 0.0]]), t([[LN3, 0.0]])).item() == pytest.approx(KL_34_VS_HALF, rel=1e-9)


def test_kd_tau_softens_both_and_scales_by_tau_squared() -> None:
    # tau = 2: teacher [ln 3, 0]/2 = [ln √3, 0] -> p = [√3/(1+√3), 1/(1+√3)];
    #          student [0, ln 2]/2 = [0, ln √2] -> q = [1/(1+√2), √2/(1+√2)].
    # loss = 4 * (p0 ln(p0/q0) + p1 ln(p1/q1)).
    r3, r2 = math.sqrt(3), math.sqrt(2)
    p0, p1 = r3 / (1 + r3), 1 / (1 + r3)
    q0, q1 = 1 / (1 + r2), r2 / (1 + r2)
    expected = 4 * (p0 * math.log(p0 / q0) + p1 * math.log(p1 / q1))
    got = kd_loss(t([[0.0, math.log(2)]]), t([[LN3, 0.0]]), tau=2.0).item()
    assert got == pytest.approx(expected, rel=1e-9)
    # And it is not simply the tau = 1 value times 4 (the temperature really softens the distributions).
    q0_1, q1_1 = 1 / 3, 2 / 3
    assert got != pytest.approx(4 * (0.75 * math.log(0.75 / q0_1) + 0.25 * math.log(0.25 / q1_1)), rel=1e-3)


def test_soft_target_loss_with_zero_mass_class_is_finite() -> None:
    # q = [1, 0], student [0, 0]: KL = 1 * ln(1 / (1/2)) + 0 = ln 2 (0 ln 0 taken as 0).
    assert soft_target_loss(t([[0.0, 0.0]]), t([[1.0, 0.0]])).item() == pytest.approx(LN2)


def test_soft_target_loss_gradient_does_not_reach_the_target() -> None:
    student = t([[0.0, 1.0]]).requires_grad_()
    target = t([[0.3, 0.7]]).requires_grad_()
    soft_target_loss(student, target).backward()
    assert target.grad is None and student.grad is not None


def test_kd_rejects_non_positive_tau() -> None:
    with pytest.raises(ValueError):
        kd_loss(t([[0.0, 0.0]]), t([[0.0, 0.0]]), tau=0.0)


# --- entropy and the uncertainty-aware target -------------------------------------------------------------------


def test_predictive_entropy_from_probs_and_logits() -> None:
    # H([1/2,1/2]) = ln 2; H([1, 0]) = 0 (no nan); logits [0,0,0] -> uniform over 3 -> ln 3.
    assert predictive_entropy(t([[0.5, 0.5], [1.0, 0.0]])).tolist() == pytest.approx([LN2, 0.0])
    assert predictive_entropy(t([[0.0, 0.0, 0.0]])).item() == pytest.approx(LN3)
    # The flag overrides detection: [0.5, 0.5] as logits is uniform too, [1, 0] as logits is not one-hot.
    e = 1 / (1 + math.e)  # softmax([1, 0]) = [1-e, e]
    assert predictive_entropy(t([[1.0, 0.0]]), from_logits=True).item() == pytest.approx(
        -(1 - e) * math.log(1 - e) - e * math.log(e)
    )


def test_uncertainty_aware_target_picks_lower_entropy_source_per_sample() -> None:
    teacher = t([[LN9, 0.0], [0.0, 0.0], [LN4, 0.0]])
    original = t([[0.0, 0.0], [0.0, LN4], [0.0, LN4]])
    # Row 0: H_T = H([.9,.1]) ≈ 0.325 < H_S0 = ln 2 -> teacher, target [.9, .1].
    # Row 1: H_T = ln 2 > H_S0 = H([.2,.8]) ≈ 0.500 -> original, target [.2, .8].
    # Row 2: H([.8,.2]) == H([.2,.8]) -> tie goes to the teacher, target [.8, .2].
    target, use_teacher = uncertainty_aware_target(teacher, original)
    assert use_teacher.tolist() == [True, False, True]
    assert target.tolist() == [pytest.approx([0.9, 0.1]), pytest.approx([0.2, 0.8]), pytest.approx([0.8, 0.2])]


def test_uncertainty_aware_target_softens_the_chosen_source() -> None:
    # tau = 2 on teacher [ln 9, 0] -> [ln 3, 0] -> [3/4, 1/4].
    target, use_teacher = uncertainty_aware_target(t([[LN9, 0.0]]), t([[0.0, 0.0]]), tau=2.0)
    assert use_teacher.tolist() == [True]
    assert target[0].tolist() == pytest.approx([0.75, 0.25])


# --- per-head losses --------------------------------------------------------------------------------------------


def test_clean_head_loss_ce_and_self_distillation() -> None:
    # logits [0,0], y = 1 -> CE = ln 2. Self-distill to S0 [ln 3, 0]: KL([3/4,1/4]||[1/2,1/2]).
    logits, y, s0 = t([[0.0, 0.0]]), torch.tensor([1]), t([[LN3, 0.0]])
    assert clean_head_loss(logits, y).item() == pytest.approx(LN2)
    assert clean_head_loss(logits, y, s0, self_distill_weight=0.5).item() == pytest.approx(LN2 + 0.5 * KL_34_VS_HALF)
    with pytest.raises(ValueError):
        clean_head_loss(logits, y, None, self_distill_weight=0.5)


def test_unclean_head_loss_mixes_ce_and_kd() -> None:
    # CE(y=1, [1/2,1/2]) = ln 2, KD to teacher [3/4,1/4] = KL_34_VS_HALF; alpha = 0.25.
    got = unclean_head_loss(t([[0.0, 0.0]]), torch.tensor([1]), t([[LN3, 0.0]]), alpha=0.25).item()
    assert got == pytest.approx(0.75 * LN2 + 0.25 * KL_34_VS_HALF)


def test_combined_head_loss_distils_from_the_chosen_source() -> None:
    # Row 0 picks the teacher [.9,.1]; row 1 picks S0 [.2,.8]; the head predicts [1/2,1/2] on both.
    # KL([.9,.1]||[.5,.5]) = .9 ln 1.8 + .1 ln .2; KL([.2,.8]||[.5,.5]) = .2 ln .4 + .8 ln 1.6; batchmean.
    teacher, original = t([[LN9, 0.0], [0.0, 0.0]]), t([[0.0, 0.0], [0.0, LN4]])
    expected = ((0.9 * math.log(1.8) + 0.1 * math.log(0.2)) + (0.2 * math.log(0.4) + 0.8 * math.log(1.6))) / 2
    assert combined_head_loss(t([[0.0, 0.0], [0.0, 0.0]]), teacher, original).item() == pytest.approx(expected)


# --- ThreeHeadLoss ----------------------------------------------------------------------------------------------


def _three_head_inputs() -> dict:
    # One clean image (label 0) and one augmented image (label 1); entries a head does not use are None.
    return dict(
        head_logits={
            "clean": (t([[LN3, 0.0]]), None),  # sees clean: p = [3/4, 1/4]
            "unclean": (None, t([[0.0, 0.0]])),  # sees augmented: p = [1/2, 1/2]
            "combined": (t([[0.0, LN4]]), t([[0.0, 0.0]])),  # union: [1/5, 4/5] then [1/2, 1/2]
        },
        y_clean=torch.tensor([0]),
        y_aug=torch.tensor([1]),
    )


def test_three_head_loss_without_kd_is_plain_ce_per_head() -> None:
    # clean: CE(0, [3/4,1/4]) = -ln 3/4. unclean: CE(1, [1/2,1/2]) = ln 2.
    # combined: mean(CE(0, [1/5,4/5]), CE(1, [1/2,1/2])) = (ln 5 + ln 2) / 2.
    loss = ThreeHeadLoss(use_kd=False, alpha=0.9, self_distill_weight=3.0)
    total, parts = loss(**_three_head_inputs())
    assert parts["clean"].item() == pytest.approx(-math.log(0.75))
    assert parts["unclean"].item() == pytest.approx(LN2)
    assert parts["combined"].item() == pytest.approx((math.log(5) + LN2) / 2)
    assert total.item() == pytest.approx(-math.log(0.75) + LN2 + (math.log(5) + LN2) / 2)


def test_three_head_loss_with_kd_hand_values() -> None:
    # Teacher: clean image [ln 9, 0] -> [.9,.1] (H ≈ .325), augmented image [ln 3, 0] -> [3/4, 1/4] (H ≈ .562).
    # S0:      clean image [0, ln 4] -> [.2,.8] (H ≈ .500), augmented image [0, 0] -> [1/2,1/2] (H = ln 2).
    # clean   = CE(0, [3/4,1/4]) + 0.5 * KL(S0 [.2,.8] || [3/4,1/4])
    # unclean = 0.5 * ln 2 + 0.5 * KL([3/4,1/4] || [1/2,1/2])
    # combined: teacher wins both rows -> mean(KL([.9,.1]||[.2,.8]), KL([3/4,1/4]||[1/2,1/2]))
    inputs = _three_head_inputs()
    total, parts = ThreeHeadLoss(alpha=0.5, self_distill_weight=0.5)(
        **inputs,
        teacher_clean=t([[LN9, 0.0]]),
        teacher_aug=t([[LN3, 0.0]]),
        s0_clean=t([[0.0, LN4]]),
        s0_aug=t([[0.0, 0.0]]),
    )
    kl_s0_vs_clean = 0.2 * math.log(0.2 / 0.75) + 0.8 * math.log(0.8 / 0.25)
    kl_t_vs_combined = 0.9 * math.log(0.9 / 0.2) + 0.1 * math.log(0.1 / 0.8)
    expected = {
        "clean": -math.log(0.75) + 0.5 * kl_s0_vs_clean,
        "unclean": 0.5 * LN2 + 0.5 * KL_34_VS_HALF,
        "combined": (kl_t_vs_combined + KL_34_VS_HALF) / 2,
    }
    assert {k: v.item() for k, v in parts.items()} == pytest.approx(expected)
    assert total.item() == pytest.approx(sum(expected.values()))
    assert all(not v.requires_grad for v in parts.values())


def test_three_head_loss_needs_teacher_with_kd_and_used_logits() -> None:
    with pytest.raises(ValueError, match="teacher_clean"):
        ThreeHeadLoss()(**_three_head_inputs())
    inputs = _three_head_inputs()
    inputs["head_logits"]["unclean"] = (t([[0.0, 0.0]]), None)  # unclean head must see the augmented batch
    with pytest.raises(ValueError, match="unclean"):
        ThreeHeadLoss(use_kd=False)(**inputs)


def test_three_head_loss_backpropagates_into_each_head() -> None:
    zc = t([[0.3, -0.2]]).requires_grad_()
    zu = t([[0.1, 0.4]]).requires_grad_()
    zcb = t([[0.0, 1.0], [1.0, 0.0]]).requires_grad_()
    total, _ = ThreeHeadLoss(use_kd=False)(
        {"clean": (zc, None), "unclean": (None, zu), "combined": (zcb[:1], zcb[1:])},
        torch.tensor([0]),
        torch.tensor([1]),
    )
    total.backward()
    assert all(g is not None and g.abs().sum() > 0 for g in (zc.grad, zu.grad, zcb.grad))
