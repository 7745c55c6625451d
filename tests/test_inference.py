"""Tests of trainables/inference.py: MC dropout over heads and the head-selection rules, values worked by hand.

Entropies used below (nats): H([.9,.1]) = -.9 ln .9 - .1 ln .1 ≈ 0.325; H([.6,.4]) ≈ 0.673;
H([.5,.5]) = ln 2 ≈ 0.693.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainables.inference import (
    SELECTION_RULES,
    evaluate_heads,
    f_correct,
    mc_head_probs,
    predict_all,
    select_head,
)


def H(*p: float) -> float:
    return -sum(x * math.log(x) for x in p if x > 0)


def KL(p: tuple[float, ...], q: tuple[float, ...]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


# --- select_head on crafted probabilities -----------------------------------------------------------------------
# Two inputs, N = 2 MC samples per head, 2 classes.
#   clean MC:   [.8,.2] and [1,0]  -> p̄_c = [.9,.1]   U_c = H(.9,.1) ≈ 0.325
#   unclean MC: [.5,.5] and [.7,.3] -> p̄_u = [.6,.4]  U_u = H(.6,.4) ≈ 0.673
# Input A: p_cb = [.6,.4]: KL_c = .6 ln(.6/.9) + .4 ln(.4/.1) ≈ 0.311, KL_u = 0
#   ours (λ=1): 0.325 + 0.311 = 0.636 < 0.673 + 0 -> clean; λ=2: 0.947 > 0.673 -> unclean
#   wo_kld: 0.325 < 0.673 -> clean; wo_umc: 0.311 > 0 -> unclean
#   max_logit (dropout off): clean [.55,.45] (.55) vs unclean [.7,.3] (.7) -> unclean
# Input B: p_cb = [.5,.5]: KL_c = .5 ln(.5/.9) + .5 ln(.5/.1) ≈ 0.511, KL_u = .5 ln(.5/.6) + .5 ln(.5/.4) ≈ 0.020
#   ours: 0.325 + 0.511 = 0.836 > 0.673 + 0.020 = 0.693 -> unclean
#   wo_kld -> clean; wo_umc -> unclean; max_logit: clean [.8,.2] (.8) vs unclean [.6,.4] (.6) -> clean
P_CLEAN_MC = torch.tensor([[[0.8, 0.2], [0.8, 0.2]], [[1.0, 0.0], [1.0, 0.0]]])
P_UNCLEAN_MC = torch.tensor([[[0.5, 0.5], [0.5, 0.5]], [[0.7, 0.3], [0.7, 0.3]]])
P_COMBINED = torch.tensor([[0.6, 0.4], [0.5, 0.5]])
P_CLEAN_DET = torch.tensor([[0.55, 0.45], [0.8, 0.2]])
P_UNCLEAN_DET = torch.tensor([[0.7, 0.3], [0.6, 0.4]])


def test_hand_arithmetic_of_the_crafted_example() -> None:
    u_c, u_u = H(0.9, 0.1), H(0.6, 0.4)
    kl_ca, kl_cb, kl_ub = KL((0.6, 0.4), (0.9, 0.1)), KL((0.5, 0.5), (0.9, 0.1)), KL((0.5, 0.5), (0.6, 0.4))
    assert u_c + kl_ca < u_u < u_c + 2 * kl_ca  # input A: ours λ=1 clean, λ=2 unclean
    assert u_c + kl_cb > u_u + kl_ub  # input B: ours unclean


@pytest.mark.parametrize(
    "rule, lam, expected",
    [
        ("ours", 1.0, [0, 1]),
        ("ours", 2.0, [1, 1]),
        ("wo_kld", 1.0, [0, 0]),
        ("wo_umc", 1.0, [1, 1]),
        ("max_logit", 1.0, [1, 0]),
    ],
)
def test_select_head_rules_disagree_as_computed(rule: str, lam: float, expected: list[int]) -> None:
    chosen = select_head(P_CLEAN_MC, P_UNCLEAN_MC, P_COMBINED, rule, lam, p_clean=P_CLEAN_DET, p_unclean=P_UNCLEAN_DET)
    assert chosen.dtype == torch.int64
    assert chosen.tolist() == expected


def test_uncertainty_is_entropy_of_the_mc_mean_not_mean_entropy() -> None:
    # Clean samples [1,0] and [0,1] disagree: each has entropy 0, but their mean [.5,.5] has H = ln 2 ≈ 0.693.
    # Unclean samples agree on [.6,.4]: H ≈ 0.673 < 0.693 -> wo_kld picks unclean (mean entropy would pick clean).
    p_c = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    p_u = torch.tensor([[[0.6, 0.4]], [[0.6, 0.4]]])
    assert select_head(p_c, p_u, torch.tensor([[0.5, 0.5]]), "wo_kld").tolist() == [1]


@pytest.mark.parametrize("rule", SELECTION_RULES)
def test_ties_go_to_the_clean_head(rule: str) -> None:
    p_mc = torch.tensor([[[0.7, 0.3]], [[0.5, 0.5]]])
    p = torch.tensor([[0.6, 0.4]])
    assert select_head(p_mc, p_mc.clone(), p, rule, p_clean=p, p_unclean=p.clone()).tolist() == [0]


def test_select_head_errors() -> None:
    with pytest.raises(ValueError, match="max_logit"):
        select_head(P_CLEAN_MC, P_UNCLEAN_MC, P_COMBINED, "max_logit")
    with pytest.raises(ValueError, match="unknown rule"):
        select_head(P_CLEAN_MC, P_UNCLEAN_MC, P_COMBINED, "entropy")  # type: ignore[arg-type]


def test_f_correct_counts_inputs_sent_to_the_expected_head() -> None:
    chosen = torch.tensor([0, 1, 1, 1])
    assert f_correct(chosen, 1) == pytest.approx(0.75)
    assert f_correct(chosen, "unclean") == pytest.approx(0.75)
    assert f_correct(chosen, "clean") == pytest.approx(0.25)
    with pytest.raises(ValueError):
        f_correct(chosen, 2)
    with pytest.raises(ValueError):
        f_correct(torch.tensor([], dtype=torch.int64), 0)


# --- MC dropout -------------------------------------------------------------------------------------------------


def _head(p: float, bn: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(4, 8)]
    if bn:
        layers.append(nn.BatchNorm1d(8))
    layers += [nn.ReLU(), nn.Dropout(p), nn.Linear(8, 3)]
    return nn.Sequential(*layers)


def test_mc_with_zero_dropout_gives_identical_samples_equal_to_eval_forward() -> None:
    torch.manual_seed(0)
    head, z = _head(0.0), torch.randn(5, 4)
    probs = mc_head_probs(head, z, n=6)
    assert probs.shape == (6, 5, 3) and not probs.requires_grad
    expected = torch.softmax(head.eval()(z), dim=-1).detach()
    for k in range(6):
        torch.testing.assert_close(probs[k], expected)


def test_mc_with_dropout_gives_different_samples() -> None:
    torch.manual_seed(0)
    probs = mc_head_probs(_head(0.5), torch.randn(5, 4), n=4)
    assert not torch.allclose(probs[0], probs[1])
    torch.testing.assert_close(probs.sum(-1), torch.ones(4, 5))


def test_mc_runs_one_batched_forward_and_chunks_when_asked() -> None:
    torch.manual_seed(0)
    head, z = _head(0.0), torch.randn(5, 4)
    calls: list[int] = []
    head[0].register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    mc_head_probs(head, z, n=10)
    assert calls == [50]
    calls.clear()
    chunked = mc_head_probs(head, z, n=10, max_rows=7)
    assert calls == [7] * 7 + [1]
    expected = torch.softmax(head.eval()(z), dim=-1).detach()
    for k in range(10):  # the (sample, input) layout survives chunking
        torch.testing.assert_close(chunked[k], expected)


def test_batchnorm_in_head_stays_in_eval_while_dropout_is_on() -> None:
    torch.manual_seed(0)
    head = _head(0.5, bn=True).train()
    bn, dropout = head[1], head[3]
    bn.running_mean.fill_(0.3)
    before_mean, before_count = bn.running_mean.clone(), bn.num_batches_tracked.clone()
    seen: dict[str, bool] = {}
    bn.register_forward_hook(lambda m, i, o: seen.__setitem__("bn", m.training))
    dropout.register_forward_hook(lambda m, i, o: seen.__setitem__("dropout", m.training))
    mc_head_probs(head, torch.randn(8, 4), n=3)
    assert seen == {"bn": False, "dropout": True}
    torch.testing.assert_close(bn.running_mean, before_mean)
    assert bn.num_batches_tracked == before_count


@pytest.mark.parametrize("setup", ["train", "eval", "mixed"])
def test_mc_restores_every_module_mode(setup: str) -> None:
    head = _head(0.5, bn=True).train(setup != "eval")
    if setup == "mixed":
        head[1].eval()  # a frozen BatchNorm inside a training head
    before = [m.training for m in head.modules()]
    mc_head_probs(head, torch.randn(3, 4), n=2)
    assert [m.training for m in head.modules()] == before


# --- predict_all / evaluate_heads -------------------------------------------------------------------------------
# Heads are bias-free Linear(2, 2) maps and z = [e1, e2], so the logits of input A are W[:, 0] and of B W[:, 1]:
#   clean:    A [ln 9, 0] -> [.9,.1]   B [ln 1.5, 0] -> [.6,.4]
#   unclean:  A [0, ln 1.5] -> [.4,.6] B [0, ln 9] -> [.1,.9]
#   combined: A [0, ln 1.5] -> [.4,.6] B [ln 1.5, 0] -> [.6,.4]
# Dropout p = 0, so every MC sample equals the deterministic prediction.
# A: U_c ≈ .325 + KL([.4,.6]||[.9,.1]) = .4 ln(.4/.9) + .6 ln 6 ≈ .751 -> 1.076 vs U_u ≈ .673 + 0 -> ours unclean;
#    wo_kld clean; wo_umc unclean; max_logit: .9 vs .6 -> clean.   B is A mirrored: every choice flips.
# Head argmaxes: clean [0,0], unclean [1,1], combined [1,0].


def _linear_head(w: list[list[float]]) -> nn.Module:
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(w))
    return nn.Sequential(nn.Dropout(0.0), lin)


def _crafted_heads() -> nn.ModuleDict:
    l9, l15 = math.log(9), math.log(1.5)
    return nn.ModuleDict(
        {
            "clean": _linear_head([[l9, l15], [0.0, 0.0]]),
            "unclean": _linear_head([[0.0, 0.0], [l15, l9]]),
            "combined": _linear_head([[0.0, l15], [l15, 0.0]]),
        }
    )


def test_predict_all_routes_each_rule_to_its_chosen_head() -> None:
    out = predict_all(_crafted_heads(), torch.eye(2), n_samples=3)
    assert {k: v.tolist() for k, v in out["chosen"].items()} == {
        "ours": [1, 0],
        "wo_kld": [0, 1],
        "wo_umc": [1, 0],
        "max_logit": [0, 1],
    }
    assert {k: v.tolist() for k, v in out["head_pred"].items()} == {
        "clean": [0, 0],
        "unclean": [1, 1],
        "combined": [1, 0],
    }
    assert {k: v.tolist() for k, v in out["pred"].items()} == {
        "ours": [1, 0],
        "wo_kld": [0, 1],
        "wo_umc": [1, 0],
        "max_logit": [0, 1],
    }


def test_evaluate_heads_metric_names_and_values() -> None:
    # y = [1, 0]: ours/wo_umc predict [1,0] (acc 1), wo_kld/max_logit [0,1] (acc 0);
    # heads: clean [0,0] -> .5, unclean [1,1] -> .5, combined [1,0] -> 1. Each rule sends one of two to unclean.
    metrics = evaluate_heads(
        _crafted_heads(), torch.eye(2), torch.tensor([1, 0]), expected_head="unclean", n_samples=2, lam=1.0
    )
    assert metrics == pytest.approx(
        {
            "acc/ours": 1.0,
            "acc/wo_kld": 0.0,
            "acc/wo_umc": 1.0,
            "acc/max_logit": 0.0,
            "f_correct/ours": 0.5,
            "f_correct/wo_kld": 0.5,
            "f_correct/wo_umc": 0.5,
            "f_correct/max_logit": 0.5,
            "acc/head_clean": 0.5,
            "acc/head_unclean": 0.5,
            "acc/head_combined": 1.0,
        }
    )


def test_predict_all_needs_all_three_heads() -> None:
    heads = _crafted_heads()
    del heads["combined"]
    with pytest.raises(ValueError, match="combined"):
        predict_all(heads, torch.eye(2))
