"""Gymnasium vector environments for training and single environments for evaluation."""

from __future__ import annotations

from collections.abc import Mapping
import functools
from typing import Any

import gymnasium as gym


def make_vec_env(env_id: str, num_envs: int, mode: str = "sync",
                 env_kwargs: Mapping[str, Any] | None = None) -> gym.vector.VectorEnv:
    """A Sync/AsyncVectorEnv with same-step autoreset (final obs in info['final_obs']);
    ``env_kwargs`` go to every env's gym.make (the run's train.env_kwargs)."""
    _check_env_id(env_id)
    # A module-level factory, not gym.make itself: a spawned worker process starts with an
    # empty registry and must register the dsp_driving/* ids before making one.
    fns = [functools.partial(_make_registered, env_id, **(env_kwargs or {}),
                             **_slot_kwargs(env_id, i))
           for i in range(num_envs)]
    kwargs = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
    if mode == "async":
        return gym.vector.AsyncVectorEnv(fns, **kwargs)
    return gym.vector.SyncVectorEnv(fns, **kwargs)


def make_env(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> gym.Env:
    """One environment (evaluation)."""
    _check_env_id(env_id)
    return gym.make(env_id, **(env_kwargs or {}))


def _make_registered(env_id: str, **kwargs: Any) -> gym.Env:
    """gym.make after registering our ids (runs in vector-env worker processes too)."""
    _check_env_id(env_id)
    return gym.make(env_id, **kwargs)


def _slot_kwargs(env_id: str, index: int) -> dict[str, int]:
    """Per-env constructor arguments: simulator-server envs get their own server per slot."""
    if env_id.startswith("dsp_driving/"):
        from dsp_driving.driving.registry import SERVER_ENVS

        if env_id in SERVER_ENVS:
            return {"server_index": index}
    return {}


def _check_env_id(env_id: str) -> None:
    if env_id.startswith("dsp_driving/"):
        try:
            import dsp_driving.driving.registry  # noqa: F401  (registers the driving tasks)
        except ModuleNotFoundError:
            pass
    try:
        gym.spec(env_id)
    except gym.error.Error as exc:
        extra = "highway" if env_id.startswith("dsp_driving/") else "sim"
        raise ValueError(f"unknown environment train.env_id={env_id!r}: {exc}. Is its "
                         f'extra installed? pip install -e ".[{extra}]"') from None


def describe_env(env_id: str, env_kwargs: Mapping[str, Any] | None = None
                 ) -> dict[str, object]:
    """What the environment says about its own interface, for exported-policy metadata.

    Reads ``observation_names``, ``action_names`` and ``policy_metadata`` (normalisation
    constants, units) from the unwrapped env; each is None where the env defines none.
    """
    env = make_env(env_id, env_kwargs)
    try:
        inner = env.unwrapped
        names = {key: getattr(inner, key, None)
                 for key in ("observation_names", "action_names", "policy_metadata")}
        if callable(names["policy_metadata"]):
            names["policy_metadata"] = names["policy_metadata"]()
    finally:
        env.close()
    for key in ("observation_names", "action_names"):
        if names[key] is not None:
            names[key] = [str(n) for n in names[key]]
    return names
