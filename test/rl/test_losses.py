"""GAE and the PPO loss terms against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from dsp_driving.rl.losses import compute_gae, ppo_loss_terms


def test_gae_hand_computed_with_done_in_the_middle() -> None:
    # T=3 steps, N=2 envs. Env 0 ends its episode on step 1, env 1 on step 2.
    rewards = torch.tensor([[1.0, 0.5], [2.0, -1.0], [0.0, 1.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 0.2], [1.0, 0.4], [-0.5, 0.3]], dtype=torch.float64)
    dones = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    last_value = torch.tensor([2.0, 5.0], dtype=torch.float64)
    gamma, lam = 0.9, 0.8  # gamma * lam = 0.72

    adv, ret = compute_gae(rewards, values, dones, last_value, gamma, lam)

    # Env 0, backwards:
    #   t=2: delta = 0.0 + 0.9 * 2.0 - (-0.5) = 2.3              A = 2.3
    #   t=1: done  -> delta = 2.0 - 1.0 = 1.0, nothing carried     A = 1.0
    #   t=0: delta = 1.0 + 0.9 * 1.0 - 0.5 = 1.4                 A = 1.4 + 0.72 * 1.0 = 2.12
    # Env 1, backwards (last_value 5.0 is never used: the episode ended on the last step):
    #   t=2: done  -> delta = 1.0 - 0.3 = 0.7                      A = 0.7
    #   t=1: delta = -1.0 + 0.9 * 0.3 - 0.4 = -1.13              A = -1.13 + 0.72 * 0.7 = -0.626
    #   t=0: delta = 0.5 + 0.9 * 0.4 - 0.2 = 0.66                A = 0.66 + 0.72 * -0.626
    #                                                               = 0.20928
    expected_adv = torch.tensor([[2.12, 0.20928], [1.0, -0.626], [2.3, 0.7]],
                                dtype=torch.float64)
    expected_ret = torch.tensor([[2.62, 0.40928], [2.0, -0.226], [1.8, 1.0]],
                                dtype=torch.float64)
    assert adv.shape == (3, 2)
    torch.testing.assert_close(adv, expected_adv, rtol=0, atol=1e-12)
    torch.testing.assert_close(ret, expected_ret, rtol=0, atol=1e-12)


def test_gae_lambda_one_is_discounted_return_minus_value() -> None:
    # With lambda = 1 and no dones, A_t = sum_k gamma^k r_{t+k} + gamma^(T-t) V_T - V_t.
    rewards = torch.tensor([[1.0], [1.0], [1.0]], dtype=torch.float64)
    values = torch.tensor([[0.0], [0.0], [0.0]], dtype=torch.float64)
    dones = torch.zeros(3, 1, dtype=torch.float64)
    adv, _ = compute_gae(rewards, values, dones, torch.tensor([10.0], dtype=torch.float64),
                         0.5, 1.0)
    # t=2: 1 + 0.5*10 = 6; t=1: 1 + 0.5*6 = 4; t=0: 1 + 0.5*4 = 3
    torch.testing.assert_close(adv[:, 0], torch.tensor([3.0, 4.0, 6.0], dtype=torch.float64),
                               rtol=0, atol=1e-12)


def _loss_inputs() -> dict[str, torch.Tensor]:
    ratios = [1.5, 0.5, 1.1, 0.9]
    old_logprob = torch.tensor([-1.0, -1.0, -2.0, -0.5], dtype=torch.float64)
    new_logprob = old_logprob + torch.tensor([math.log(r) for r in ratios], dtype=torch.float64)
    return {
        "new_logprob": new_logprob.requires_grad_(),
        "old_logprob": old_logprob,
        "advantages": torch.tensor([1.0, -1.0, -2.0, 0.5], dtype=torch.float64),
        "new_value": torch.tensor([1.0, 2.0, 0.0, -1.0], dtype=torch.float64),
        "old_value": torch.tensor([0.5, 1.9, 0.3, -1.0], dtype=torch.float64),
        "returns": torch.tensor([2.0, 1.0, 0.0, 0.0], dtype=torch.float64),
        "entropy": torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64),
    }


def test_ppo_policy_loss_kl_and_clipfrac_by_hand() -> None:
    inputs = _loss_inputs()
    terms = ppo_loss_terms(**inputs, clip_coef=0.2, clip_vloss=True)
    # Per sample max(-A r, -A clip(r, 0.8, 1.2)):
    #   r=1.5, A=1 : max(-1.5, -1.2) = -1.2  (clipped branch active)
    #   r=0.5, A=-1: max(0.5, 0.8)   =  0.8  (clipped branch active)
    #   r=1.1, A=-2: max(2.2, 2.2)   =  2.2
    #   r=0.9, A=.5: max(-.45, -.45) = -0.45
    assert terms.pg_loss.item() == pytest.approx((-1.2 + 0.8 + 2.2 - 0.45) / 4, abs=1e-12)
    # |r - 1| > 0.2 for the first two samples only.
    assert terms.clipfrac.item() == pytest.approx(0.5, abs=1e-12)
    expected_kl = ((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5)) + (0.1 - math.log(1.1))
                   + (-0.1 - math.log(0.9))) / 4
    assert terms.approx_kl.item() == pytest.approx(expected_kl, abs=1e-12)
    assert terms.approx_kl.item() == pytest.approx(0.0744331021, abs=1e-9)
    assert terms.entropy.item() == pytest.approx(0.25, abs=1e-12)
    # Clipped samples give no gradient; the others give -A * r / 4.
    (grad,) = torch.autograd.grad(terms.pg_loss, inputs["new_logprob"])
    torch.testing.assert_close(
        grad, torch.tensor([0.0, 0.0, 2.0 * 1.1 / 4, -0.5 * 0.9 / 4], dtype=torch.float64),
        rtol=0, atol=1e-12)
    assert not terms.approx_kl.requires_grad
    assert not terms.clipfrac.requires_grad


def test_ppo_value_loss_clipped_and_unclipped_by_hand() -> None:
    inputs = _loss_inputs()
    clipped = ppo_loss_terms(**inputs, clip_coef=0.2, clip_vloss=True)
    plain = ppo_loss_terms(**inputs, clip_coef=0.2, clip_vloss=False)
    # Unclipped squared errors (V - R)^2: 1, 1, 0, 1.
    # Clipped V: 0.5+0.2=0.7 -> 1.69; 1.9+0.1=2.0 -> 1; 0.3-0.2=0.1 -> 0.01; -1.0 -> 1.
    # Elementwise max: 1.69, 1, 0.01, 1.
    assert clipped.v_loss.item() == pytest.approx(0.5 * (1.69 + 1.0 + 0.01 + 1.0) / 4,
                                                  abs=1e-12)
    assert clipped.v_loss.item() == pytest.approx(0.4625, abs=1e-12)
    assert plain.v_loss.item() == pytest.approx(0.5 * 3.0 / 4, abs=1e-12)
    # The policy terms do not depend on the value-loss switch.
    assert plain.pg_loss.item() == clipped.pg_loss.item()
