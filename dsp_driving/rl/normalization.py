"""Running mean/std statistics: observation normaliser (part of the policy) and reward scaler."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class ObsNormalizer(nn.Module):
    """Running observation normaliser stored as buffers, so it travels with the policy.

    Mean and variance are merged with the parallel algorithm of Chan et al. (as in SB3's
    RunningMeanStd); ``forward`` maps raw observations to clipped standard scores.
    """

    def __init__(self, obs_dim: int, clip: float = 10.0, enabled: bool = True,
                 epsilon: float = 1e-8) -> None:
        super().__init__()
        self.clip = float(clip)
        self.enabled = bool(enabled)
        self.epsilon = float(epsilon)
        self.register_buffer("mean", torch.zeros(obs_dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(obs_dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    @torch.no_grad()
    def update(self, batch: torch.Tensor | np.ndarray) -> None:
        """Merge a [n, obs_dim] batch of raw observations into the statistics."""
        if not self.enabled:
            return
        # numpy views of the buffers: a rollout calls this every step with a tiny batch,
        # where numpy's per-op cost is a fraction of torch's
        batch = np.asarray(batch, dtype=np.float64)
        mean, var, count = self.mean.numpy(), self.var.numpy(), self.count.numpy()
        n = batch.shape[0]
        delta = batch.mean(0) - mean
        total = count + n
        m2 = var * count + batch.var(0) * n + np.square(delta) * (count * n / total)
        mean += delta * (n / total)
        var[:] = m2 / total
        count[...] = total

    def normalize_np(self, obs: np.ndarray) -> np.ndarray:
        """numpy twin of forward() for the rollout; returns float32."""
        obs = np.asarray(obs, dtype=np.float32)
        if not self.enabled:
            return obs
        std = np.sqrt(self.var.numpy() + self.epsilon)
        out = (obs - self.mean.numpy()) / std
        return np.clip(out, -self.clip, self.clip).astype(np.float32)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Normalise raw observations (identity when disabled)."""
        if not self.enabled:
            return obs
        mean = self.mean.to(obs.dtype)
        std = torch.sqrt(self.var + self.epsilon).to(obs.dtype)
        return torch.clamp((obs - mean) / std, -self.clip, self.clip)

    def extra_repr(self) -> str:
        return f"enabled={self.enabled}, clip={self.clip}"


class RewardScaler:
    """Divides rewards by the running std of the discounted return (gymnasium NormalizeReward)."""

    def __init__(self, num_envs: int, gamma: float, clip: float, epsilon: float = 1e-8) -> None:
        self.gamma = gamma
        self.clip = clip
        self.epsilon = epsilon
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.mean = 0.0
        self.var = 1.0
        self.count = 1e-4

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        """Scale a [num_envs] reward vector and advance the discounted-return tracker."""
        self.returns = self.returns * self.gamma + reward
        self._update(self.returns)
        self.returns[done] = 0.0
        scaled = reward / np.sqrt(self.var + self.epsilon)
        return np.clip(scaled, -self.clip, self.clip)

    def _update(self, x: np.ndarray) -> None:
        n = x.shape[0]
        b_mean, b_var = float(x.mean()), float(x.var())
        delta = b_mean - self.mean
        total = self.count + n
        self.mean += delta * n / total
        self.var = (self.var * self.count + b_var * n + delta**2 * self.count * n / total) / total
        self.count = total

    def state_dict(self) -> dict:
        """Everything needed to resume."""
        return {"returns": self.returns.copy(), "mean": self.mean, "var": self.var,
                "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        """Restore from state_dict()."""
        self.returns = np.asarray(state["returns"], dtype=np.float64).copy()
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]
