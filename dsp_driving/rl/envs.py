"""Gymnasium vector environments for training and single environments for evaluation."""

from __future__ import annotations

from collections.abc import Mapping
import functools
from typing import Any

import gymnasium as gym


def make_vec_env(env_id: str, num_envs: int, mode: str = "sync",
                 env_kwargs: Mapping[str, Any] | None = None,
                 ray_options: Mapping[str, Any] | None = None) -> gym.vector.VectorEnv:
    """A Sync/AsyncVectorEnv, or with mode "ray" a RayVectorEnv (``ray_options``: its keyword
    arguments), all with same-step autoreset (final obs in info['final_obs']); ``env_kwargs``
    go to every env's gym.make (the run's train.env_kwargs)."""
    _check_env_id(env_id)
    # A module-level factory, not gym.make itself: a spawned worker process starts with an
    # empty registry and must register the dsp_driving/* ids before making one.
    fns = [functools.partial(_make_registered, env_id, **(env_kwargs or {}),
                             **_slot_kwargs(env_id, i))
           for i in range(num_envs)]
    kwargs = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
    if mode == "ray":
        from dsp_driving.rl.ray_vector import RayVectorEnv

        return RayVectorEnv(fns, **(ray_options or {}))
    if mode == "async":
        return gym.vector.AsyncVectorEnv(fns, **kwargs)
    return gym.vector.SyncVectorEnv(fns, **kwargs)


def ray_options(train: Any) -> dict[str, Any]:
    """RayVectorEnv's keyword arguments from a run's TrainConfig."""
    return {"step_timeout_s": train.env_step_timeout_s,
            "reset_timeout_s": train.env_reset_timeout_s, "max_restarts": train.env_max_restarts,
            "num_cpus": train.env_num_cpus, "num_gpus": train.env_num_gpus,
            "address": train.ray_address}


def _carla_backend(train: Any) -> Any:
    """The run's CarlaConfig when it trains a simulator-server env on the real CARLA backend
    (not the kinematic stand-in), else None."""
    if not _slot_kwargs(train.env_id, 0):
        return None
    from dsp_driving.driving.carla_config import resolve_carla_config

    carla = resolve_carla_config(train.env_kwargs.get("config"))
    return carla if carla.backend == "carla" else None


def wants_process_per_env(train: Any) -> bool:
    """Whether a run (its TrainConfig) is a CARLA-backend simulator-server env
    (dsp_driving/Carla-v0) set to train in vector_mode sync, which it cannot: a CARLA client
    process holds Traffic Manager threads that every world.tick drives and that cannot be
    stopped safely after a server failure (docs/carla.md). dsp-driving train (unless --set
    chose the mode) and trainer_node then run it in vector_mode ray."""
    return train.vector_mode == "sync" and _carla_backend(train) is not None


def check_training_mode(train: Any) -> None:
    """Refuse a run of a CARLA-backend env that cannot work: in vector_mode sync it lives in
    the trainer's process, where the selection and the final gate need a second CARLA env,
    and one process can hold only one (docs/carla.md); in vector_mode ray a reset must be
    allowed longer than the bridge's own start-up limit (launch, connect, map load)."""
    carla = _carla_backend(train)
    if carla is None:
        return
    if train.vector_mode == "sync":
        raise ValueError(f"train.vector_mode='sync': {train.env_id} on the carla backend "
                         "cannot train in the trainer's process (its evaluations need a "
                         "second CARLA client there, and a process holds one): use "
                         "train.vector_mode=ray (the default of dsp-driving train for it) or "
                         "async")
    if train.vector_mode == "ray" and train.env_reset_timeout_s <= carla.startup_timeout_s:
        raise ValueError(f"train.env_reset_timeout_s={train.env_reset_timeout_s}: must be > "
                         f"carla.startup_timeout_s={carla.startup_timeout_s} (a reset may "
                         "launch a server and load the map within that limit)")


def eval_env_kwargs(train: Any) -> dict[str, Any]:
    """gym.make arguments for an evaluation during training (a TrainConfig): the run's
    env_kwargs; a simulator-server env gets the slot after the training envs' (its own
    server and ports: the training envs keep theirs while it drives)."""
    kwargs = dict(train.env_kwargs)
    kwargs.update(_slot_kwargs(train.env_id, train.num_envs))
    return kwargs


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
