"""GAE and the PPO loss terms as pure functions (testable against hand-computed values)."""

from __future__ import annotations

from typing import NamedTuple

import torch


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor,
                last_value: torch.Tensor, gamma: float, gae_lambda: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over a [T, N] rollout.

    ``dones[t]`` is 1 where the episode ended on step t (after action t), so no value is
    bootstrapped across it; ``last_value`` is V of the observation after the last step.
    Truncation bootstrapping is folded into ``rewards`` by the caller. Returns
    (advantages, returns) with returns = advantages + values.
    """
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros_like(last_value)
    for t in reversed(range(num_steps)):
        next_value = last_value if t == num_steps - 1 else values[t + 1]
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * not_done - values[t]
        last_gae = delta + gamma * gae_lambda * not_done * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


class PPOLossTerms(NamedTuple):
    """The pieces of the clipped PPO objective for one minibatch."""

    pg_loss: torch.Tensor
    v_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clipfrac: torch.Tensor


def ppo_loss_terms(new_logprob: torch.Tensor, old_logprob: torch.Tensor,
                   advantages: torch.Tensor, new_value: torch.Tensor, old_value: torch.Tensor,
                   returns: torch.Tensor, entropy: torch.Tensor, clip_coef: float,
                   clip_vloss: bool) -> PPOLossTerms:
    """Clipped surrogate, (clipped) value loss and diagnostics, CleanRL's definitions.

    pg_loss = mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)));
    v_loss = 0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2));
    approx_kl = mean((ratio - 1) - log ratio) (Schulman's k3 estimator).
    """
    logratio = new_logprob - old_logprob
    ratio = logratio.exp()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean()
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
    pg_loss = torch.max(pg_loss1, pg_loss2).mean()
    if clip_vloss:
        v_loss_unclipped = (new_value - returns) ** 2
        v_clipped = old_value + torch.clamp(new_value - old_value, -clip_coef, clip_coef)
        v_loss_clipped = (v_clipped - returns) ** 2
        v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
    else:
        v_loss = 0.5 * ((new_value - returns) ** 2).mean()
    return PPOLossTerms(pg_loss, v_loss, entropy.mean(), approx_kl, clipfrac)
