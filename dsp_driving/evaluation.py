"""Deterministic evaluation of a policy over seeded episodes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from dsp_driving.rl.envs import make_env


def evaluate(policy: Callable[[np.ndarray], Any], env_id: str, episodes: int, seed: int,
             progress: bool = False,
             on_step: Callable[[dict[str, Any], bool], None] | None = None,
             env_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run ``episodes`` episodes with reset seeds seed, seed + 1, ...; returns figures.

    ``policy`` maps one raw observation to one environment action; ``on_step(info, done)``,
    if given, sees every step's info (done: the episode ended there).
    """
    if episodes < 1:
        raise ValueError(f"episodes={episodes!r}: must be >= 1")
    env = make_env(env_id, env_kwargs)
    returns, lengths = [], []
    iterator = range(episodes)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="eval", unit="ep", leave=False)
    try:
        for i in iterator:
            obs, _ = env.reset(seed=seed + i)
            total, length, done = 0.0, 0, False
            while not done:
                obs, reward, terminated, truncated, info = env.step(policy(obs))
                total += float(reward)
                length += 1
                done = terminated or truncated
                if on_step is not None:
                    on_step(info, done)
            returns.append(total)
            lengths.append(length)
    finally:
        env.close()
    return {"episodes": episodes, "return_mean": float(np.mean(returns)),
            "return_std": float(np.std(returns)), "returns": returns,
            "length_mean": float(np.mean(lengths)), "seeds": [seed, seed + episodes - 1]}


def visited_observations(policy: Callable[[np.ndarray], Any], env_id: str, n: int,
                         seed: int) -> np.ndarray:
    """The first ``n`` raw observations ``policy`` visits (episodes chained, the first reset
    seeded): real inputs for parity checks and benchmarks. float32 [n, obs_dim]."""
    env = make_env(env_id)
    try:
        obs, _ = env.reset(seed=seed)
        seen = []
        while len(seen) < n:
            seen.append(obs)
            obs, _, terminated, truncated, _ = env.step(policy(obs))
            if terminated or truncated:
                obs, _ = env.reset()
    finally:
        env.close()
    return np.asarray(seen, dtype=np.float32)
