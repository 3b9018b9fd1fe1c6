"""MLP, ActionSpec, Agent and DeployedActor: shapes, counts and masked-vs-compact parity."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from dsp_driving.modules.mlp import MLP, count_params
from dsp_driving.pruning import compact_mlp
from dsp_driving.pruning.masks import NeuronMasks
from dsp_driving.rl.networks import ActionSpec, Agent, DeployedActor


def test_mlp_shapes_and_param_count() -> None:
    mlp = MLP(5, [7, 3], 2)
    assert mlp.hidden_sizes == [7, 3]
    assert mlp(torch.zeros(4, 5)).shape == (4, 2)
    assert count_params(mlp) == 5 * 7 + 7 + 7 * 3 + 3 + 3 * 2 + 2
    assert torch.count_nonzero(mlp.layers[0].bias).item() == 0


def test_action_spec_from_spaces() -> None:
    disc = ActionSpec.from_space(gym.spaces.Discrete(3))
    assert (disc.kind, disc.dim, disc.low, disc.high) == ("discrete", 3, None, None)
    box = ActionSpec.from_space(gym.spaces.Box(-2.0, 2.0, (2,), dtype=np.float64))
    assert (box.kind, box.dim) == ("continuous", 2)
    assert box.low.dtype == np.float32
    np.testing.assert_array_equal(box.high, np.array([2.0, 2.0], dtype=np.float32))
    with pytest.raises(ValueError, match="unsupported action space"):
        ActionSpec.from_space(gym.spaces.Box(-1.0, 1.0, (2, 2)))


def _masked_agent(action: ActionSpec, seed: int) -> tuple[Agent, NeuronMasks]:
    torch.manual_seed(seed)
    agent = Agent(3, action, [12, 10], [8], "tanh")
    agent.obs_norm.update(torch.randn(64, 3) * 3.0 + 1.0)
    with torch.no_grad():
        agent.actor.layers[-1].weight.mul_(2000.0)  # push the mean past the action bounds
    masks = NeuronMasks(agent.actor)
    masks.mask_neurons(0, torch.tensor([0, 3, 4, 7, 9, 11]))
    masks.mask_neurons(1, torch.tensor([1, 2, 5, 6, 8, 9, 0, 3]))  # cut to 2 alive
    masks.apply_to_weights()
    return agent, masks


def test_deployed_actor_continuous_matches_masked_agent() -> None:
    spec = ActionSpec("continuous", 2, np.array([-2.0, -1.0], dtype=np.float32),
                      np.array([2.0, 1.0], dtype=np.float32))
    agent, masks = _masked_agent(spec, seed=0)
    deployed = DeployedActor(agent.obs_norm, compact_mlp(agent.actor, masks.masks), spec)
    assert deployed.mlp.hidden_sizes == [6, 2]
    obs = torch.randn(500, 3) * 4.0
    with torch.no_grad():
        mean = agent.distribution(agent.obs_norm(obs)).mean
        expected = torch.clamp(mean, agent.action_low, agent.action_high)
        got = deployed(obs)
    assert got.shape == (500, 2)
    assert (got - expected).abs().max().item() <= 1e-5
    # The bounds are actually hit, and never exceeded.
    assert bool((got[:, 0] == 2.0).any()) and bool((got[:, 0] == -2.0).any())
    assert got[:, 1].abs().max().item() <= 1.0
    single = deployed.act(obs[0].numpy())
    assert single.shape == (2,)
    np.testing.assert_allclose(single, expected[0].numpy(), atol=1e-5)


def test_deployed_actor_discrete_matches_masked_agent() -> None:
    spec = ActionSpec("discrete", 4, None, None)
    agent, masks = _masked_agent(spec, seed=1)
    deployed = DeployedActor(agent.obs_norm, compact_mlp(agent.actor, masks.masks), spec)
    obs = torch.randn(500, 3) * 4.0
    with torch.no_grad():
        expected = agent.actor(agent.obs_norm(obs)).argmax(-1)
        got = deployed(obs)
    assert got.dtype == torch.long
    assert torch.equal(got, expected)
    assert len(set(got.tolist())) > 1  # not a constant policy: the comparison means something
    batch = deployed.act(obs[:5].numpy())
    np.testing.assert_array_equal(batch, expected[:5].numpy())


def test_agent_continuous_log_prob_sums_over_action_dims() -> None:
    spec = ActionSpec("continuous", 2, np.full(2, -1.0, np.float32), np.full(2, 1.0, np.float32))
    torch.manual_seed(0)
    agent = Agent(3, spec, [4], [4], init_log_std=-0.5)
    obs = torch.randn(6, 3)
    action, logprob, entropy, value = agent.get_action_and_value(obs)
    assert action.shape == (6, 2) and logprob.shape == (6,) and value.shape == (6,)
    mean = agent.actor(obs)
    std = torch.full_like(mean, float(np.exp(-0.5)))
    expected = torch.distributions.Normal(mean, std).log_prob(action).sum(-1)
    torch.testing.assert_close(logprob, expected)
    # Entropy of a Gaussian: 0.5 * log(2 pi e sigma^2) per dimension.
    per_dim = 0.5 * np.log(2 * np.pi * np.e) - 0.5
    torch.testing.assert_close(entropy, torch.full((6,), 2 * per_dim))


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_sample_fast_path_matches_the_torch_distribution(kind: str) -> None:
    """Agent.sample (the rollout fast path) draws the same actions as
    distribution(obs).sample() from the same RNG state, with the same log-probs and values."""
    spec = (ActionSpec("continuous", 3, np.full(3, -1.0, np.float32), np.ones(3, np.float32))
            if kind == "continuous" else ActionSpec("discrete", 5, None, None))
    torch.manual_seed(0)
    agent = Agent(6, spec, [16, 8], [16], init_log_std=-0.3)
    obs = torch.randn(64, 6)
    with torch.no_grad():
        torch.manual_seed(123)
        action, logprob, value = agent.sample(obs)
        torch.manual_seed(123)
        dist = agent.distribution(obs)
        want = dist.sample()
        want_logprob = dist.log_prob(want)
        if kind == "continuous":
            want_logprob = want_logprob.sum(-1)
    assert action.shape == want.shape and torch.equal(action, want)
    torch.testing.assert_close(logprob, want_logprob, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(value, agent.get_value(obs))
    assert len(set(action.flatten().tolist())) > 1  # really sampled, not a constant
