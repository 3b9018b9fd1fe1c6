"""Actor and critic MLPs, the PPO agent, and the deployable actor."""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Normal

from dsp_driving.modules.mlp import (
    MLP,
)
from dsp_driving.rl.normalization import ObsNormalizer


class ActionSpec(NamedTuple):
    """What the policy head outputs and what the environment accepts."""

    kind: str  # "discrete" or "continuous"
    dim: int  # number of discrete actions, or the action vector length
    low: np.ndarray | None
    high: np.ndarray | None

    @classmethod
    def from_space(cls, space: gym.Space) -> ActionSpec:
        """Read a gymnasium Discrete or Box action space."""
        if isinstance(space, gym.spaces.Discrete):
            return cls("discrete", int(space.n), None, None)
        if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
            return cls("continuous", int(space.shape[0]), space.low.astype(np.float32),
                       space.high.astype(np.float32))
        raise ValueError(f"unsupported action space {space}: need Discrete or a 1-D Box")


class Agent(nn.Module):
    """Separate actor and critic MLPs over a shared running observation normaliser.

    The networks take *normalised* observations (the rollout stores them); ``obs_norm``
    maps raw ones. Continuous actions: Gaussian with a state-independent log-std.
    """

    def __init__(self, obs_dim: int, action: ActionSpec, actor_hidden: Sequence[int],
                 critic_hidden: Sequence[int], activation: str = "tanh",
                 init_log_std: float = 0.0, norm_obs: bool = True,
                 clip_obs: float = 10.0) -> None:
        super().__init__()
        self.obs_dim = obs_dim
        self.action = action
        self.obs_norm = ObsNormalizer(obs_dim, clip=clip_obs, enabled=norm_obs)
        self.actor = MLP(obs_dim, actor_hidden, action.dim, activation, out_gain=0.01)
        self.critic = MLP(obs_dim, critic_hidden, 1, activation, out_gain=1.0)
        if action.kind == "continuous":
            self.log_std = nn.Parameter(torch.full((action.dim,), float(init_log_std)))
            self.register_buffer("action_low", torch.as_tensor(action.low))
            self.register_buffer("action_high", torch.as_tensor(action.high))

    @property
    def continuous(self) -> bool:
        return self.action.kind == "continuous"

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        """State value of normalised observations, shape [batch]."""
        return self.critic(obs).squeeze(-1)

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        """Action distribution for normalised observations."""
        return self.distribution_of(self.actor(obs))

    def distribution_of(self, out: torch.Tensor) -> torch.distributions.Distribution:
        """Action distribution for the actor's outputs ``out`` (means or logits)."""
        if self.continuous:
            return Normal(out, self.log_std.exp().expand_as(out), validate_args=False)
        return Categorical(logits=out, validate_args=False)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rollout fast path: (action, log_prob, value) without distribution objects.

        Draws the same samples as ``distribution(obs).sample()`` for the same RNG state.
        """
        out = self.actor(obs)
        if self.continuous:
            std = self.log_std.exp()
            action = torch.normal(out, std.expand_as(out))
            logprob = (-((action - out) ** 2) / (2 * std**2) - self.log_std
                       - 0.5 * math.log(2 * math.pi)).sum(-1)
        else:
            logp = torch.log_softmax(out, -1)
            action = torch.multinomial(logp.exp(), 1)
            logprob = logp.gather(-1, action).squeeze(-1)
            action = action.squeeze(-1)
        return action, logprob, self.get_value(obs)

    def get_action_and_value(
        self, obs: torch.Tensor, action: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample (or score) actions: (action, log_prob, entropy, value)."""
        dist = self.distribution(obs)
        if action is None:
            action = dist.sample()
        if self.continuous:
            return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1), \
                self.get_value(obs)
        return action, dist.log_prob(action), dist.entropy(), self.get_value(obs)


class DeployedActor(nn.Module):
    """What runs on the car: raw observation in, deterministic environment action out.

    Carries its own observation normaliser; continuous actions are the Gaussian mean clipped
    to the action bounds, discrete actions the argmax of the logits.
    """

    def __init__(self, obs_norm: ObsNormalizer, mlp: MLP, action: ActionSpec) -> None:
        super().__init__()
        self.obs_norm = obs_norm
        self.mlp = mlp
        self.kind = action.kind
        self.action_dim = action.dim
        if action.kind == "continuous":
            self.register_buffer("action_low", torch.as_tensor(action.low))
            self.register_buffer("action_high", torch.as_tensor(action.high))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic action for raw observations [batch, obs_dim]."""
        out = self.mlp(self.obs_norm(obs))
        if self.kind == "continuous":
            return torch.clamp(out, self.action_low, self.action_high)
        return out.argmax(-1)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """numpy convenience wrapper around forward for one or many observations."""
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        single = x.ndim == 1
        out = self.forward(x.unsqueeze(0) if single else x).numpy()
        return out[0] if single else out
