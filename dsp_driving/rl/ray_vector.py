"""``train.vector_mode: ray``: every environment in its own Ray actor process, supervised.

A Ray actor per env (local Ray by default, ``train.ray_address`` for a cluster; inside a
Ray Tune trial, that trial's cluster, outside its placement group) with its own resources
(``train.env_num_cpus``, ``train.env_num_gpus``: a GPU per CARLA server where the nodes have
them). The driver steps every env at once, then resets those whose episode ended: the
same-step autoreset of gymnasium's SyncVectorEnv, so on the same seed the three vector modes
(sync, async, ray) give the same rollouts and the same training.

Supervision: every step has a wall-clock watchdog (``train.env_step_timeout_s``), every
start and reset a longer one (``train.env_reset_timeout_s``: a CARLA reset may launch a
server and load a map). An env whose actor process died, that did not answer in time, or
that raised SimulatorCrashed (its simulator stopped answering) is killed, and once its
process is gone a new Ray actor takes its place (on the same node where it fits): a fresh
process, so a CARLA env relaunches its own server (reaping its predecessor's) and no
Traffic Manager thread of the dead connection survives (docs/carla.md, docs/cluster.md).
An env whose constructor fails is an error.
The interrupted episode ends as truncated: that slot's transition has reward 0,
``truncated=True`` and ``final_obs`` = the last observation it returned (so PPO bootstraps
from its value), with ``final_info["env_restarted"]``; the new episode's first observation
is the slot's next one. A step that ended an episode keeps its own transition even if the
reset after it fails. Every vector step yields exactly one transition per env: none lost,
none counted twice. More than ``train.env_max_restarts`` failures of one env in a row stop
training with EnvCrashed naming the env. Any other exception of an env (a bug) is raised as
is. A replacement's first episode is reset without a seed.

ray is imported lazily: the core imports without it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import copy
import logging
import os
from typing import Any

import gymnasium as gym
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate
import numpy as np

log = logging.getLogger(__name__)


class EnvCrashed(RuntimeError):
    """An env failed more than ``max_restarts`` times in a row."""


class EnvWorker:
    """One env inside a Ray actor."""

    def __init__(self, env_fn: Callable[[], gym.Env]) -> None:
        self.env = env_fn()

    def where(self) -> tuple[int, str]:
        """This actor's process id and Ray node id (the driver waits for a killed actor's
        process to be gone, on its node, before its replacement starts)."""
        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id()

    def spaces(self) -> tuple[gym.Space, gym.Space, dict[str, Any]]:
        return self.env.observation_space, self.env.action_space, dict(self.env.metadata)

    def reset(self, seed: int | None, options: dict[str, Any] | None
              ) -> tuple[Any, dict[str, Any]]:
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """env.step; the driver resets an env whose episode ended (a separate call, under
        the reset time-out: a CARLA reset may reload the map)."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, float(reward), bool(terminated), bool(truncated), info

    def close(self) -> None:
        self.env.close()


def _wait_gone(pid: int, timeout_s: float) -> bool:
    """Wait until process ``pid`` (of this node) is gone; whether it went in time."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # exists, owned by another user
        time.sleep(0.02)
    return False


def _is_crash(exc: BaseException) -> bool:
    """Whether an env's exception means its simulator is gone (restart) rather than a bug."""
    from dsp_driving.driving.backend import SimulatorCrashed

    cause = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError wraps the env's error
    return isinstance(exc, SimulatorCrashed) or isinstance(cause, SimulatorCrashed)


class RayVectorEnv(gym.vector.VectorEnv):
    """A VectorEnv whose envs live in supervised Ray actor processes (see the module doc)."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], *,
                 step_timeout_s: float = 60.0, reset_timeout_s: float = 300.0,
                 max_restarts: int = 3, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 address: str = "") -> None:
        if not env_fns:
            raise ValueError("RayVectorEnv: env_fns is empty")
        if not step_timeout_s > 0:
            raise ValueError(f"train.env_step_timeout_s={step_timeout_s!r}: must be > 0")
        if not reset_timeout_s > 0:
            raise ValueError(f"train.env_reset_timeout_s={reset_timeout_s!r}: must be > 0")
        try:
            import ray
        except ModuleNotFoundError:
            raise ModuleNotFoundError(
                "train.vector_mode=ray needs Ray: pip install -e '.[carla]' (or '.[sweep]'), "
                "or choose train.vector_mode=sync / async") from None
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self._ray = ray
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            # "local": a Ray of our own, even where RAY_ADDRESS or `ray start` name another
            ray.init(address=address or "local", include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        self.num_envs = len(env_fns)
        self.step_timeout_s = float(step_timeout_s)
        self.reset_timeout_s = float(reset_timeout_s)
        self.max_restarts = int(max_restarts)
        self.restarts = 0  # every restart of every env, over the run
        self._fns = list(env_fns)
        # outside any placement group: a Ray Tune trial's group (one CPU) captures its
        # children by default, and the env actors would never be placed
        self._actor_class = ray.remote(EnvWorker)
        self._actor_options = {
            "num_cpus": num_cpus, "num_gpus": num_gpus, "max_restarts": 0,
            "max_task_retries": 0,
            "scheduling_strategy": PlacementGroupSchedulingStrategy(placement_group=None)}
        self._workers = [self._new_actor(i) for i in range(self.num_envs)]
        self._where: list[tuple[int, str] | None] = [None] * self.num_envs
        self._failures = [0] * self.num_envs  # in a row, per env
        self._closed_workers = False
        try:
            obs_space, act_space, metadata = self._get(self._workers[0].spaces.remote(),
                                                       self.reset_timeout_s)
        except Exception as exc:
            self._teardown(graceful=False)
            from ray.exceptions import GetTimeoutError

            if isinstance(exc, GetTimeoutError):
                raise EnvCrashed(
                    f"env 0 did not start within train.env_reset_timeout_s="
                    f"{self.reset_timeout_s}: does the Ray cluster have {num_cpus} CPU and "
                    f"{num_gpus} GPU free for each of the {self.num_envs} envs "
                    "(train.env_num_cpus, train.env_num_gpus)?") from None
            self._failure(0, "start", exc)  # raises a bug as is
            raise
        self.single_observation_space, self.single_action_space = obs_space, act_space
        self.observation_space = batch_space(obs_space, self.num_envs)
        self.action_space = batch_space(act_space, self.num_envs)
        self.metadata = {**metadata, "autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
        self._env_obs: list[Any] = [None] * self.num_envs
        self._observations = create_empty_array(obs_space, n=self.num_envs, fn=np.zeros)

    # ---- calls with a watchdog -----------------------------------------------------------

    def _get(self, ref: Any, timeout_s: float) -> Any:
        """ray.get bounded by the watchdog (errors pass through)."""
        return self._ray.get(ref, timeout=timeout_s)

    def _failure(self, index: int, what: str, exc: BaseException) -> str:
        """Classify a failed call: a reason to restart the env, or re-raise a bug."""
        from ray.exceptions import GetTimeoutError, RayActorError

        if isinstance(exc, GetTimeoutError):
            limit = ("train.env_step_timeout_s", self.step_timeout_s) if what == "step" \
                else ("train.env_reset_timeout_s", self.reset_timeout_s)
            return f"no answer to {what} within {limit[0]}={limit[1]}"
        if isinstance(exc, RayActorError):
            if getattr(exc, "actor_init_failed", False):  # the env's constructor raised
                raise RuntimeError(f"env {index} could not be made: {exc}") from exc
            return f"its process died during {what}"
        if _is_crash(exc):
            return f"its simulator crashed during {what}: {getattr(exc, 'cause', exc)}"
        cause = getattr(exc, "cause", None)
        raise cause if isinstance(cause, BaseException) else exc

    def _reset_one(self, index: int, seed: int | None, options: dict[str, Any] | None,
                   ref: Any = None) -> tuple[Any, dict[str, Any]]:
        """Env ``index``'s reset (``ref``: one already sent), replacing the env while it
        fails; EnvCrashed past max_restarts in a row."""
        if ref is None:
            ref = self._workers[index].reset.remote(seed, options)
        while True:
            try:
                out = self._get(ref, self.reset_timeout_s)
            except Exception as exc:  # noqa: BLE001 (classified: restart or re-raise)
                self._replace(index, self._failure(index, "reset", exc))
                ref = self._workers[index].reset.remote(seed, options)
                continue
            if self._where[index] is None:
                self._where[index] = self._get(self._workers[index].where.remote(),
                                               self.step_timeout_s)
            return out

    def _replace(self, index: int, reason: str) -> None:
        """Kill env ``index``'s actor (its process and what it holds) and start a new one on
        the same node when it fits there, once the old process is gone (a CARLA env then
        finds its predecessor's server on that node and reaps it). EnvCrashed past
        max_restarts in a row."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._failures[index] += 1
        if self._failures[index] > self.max_restarts:
            raise EnvCrashed(f"env {index} failed {self._failures[index]} times in a row "
                             f"(train.env_max_restarts={self.max_restarts}): {reason}")
        log.warning("env %d: %s; restarting it (%d in a row)", index, reason,
                    self._failures[index])
        self._ray.kill(self._workers[index], no_restart=True)
        self.restarts += 1
        where, self._where[index] = self._where[index], None
        strategy = None
        if where is not None:
            pid, node = where
            waiter = self._ray.remote(_wait_gone).options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
            try:
                if not self._get(waiter.remote(pid, 30.0), 60.0):
                    log.warning("env %d: its old process %d still runs 30 s after the kill",
                                index, pid)
            except Exception as exc:  # noqa: BLE001 (a node gone with its processes)
                log.warning("env %d: could not confirm the end of process %d (%s)", index,
                            pid, exc)
            strategy = NodeAffinitySchedulingStrategy(node, soft=True)
        self._workers[index] = self._new_actor(index, strategy)

    def _new_actor(self, index: int, strategy: Any = None) -> Any:
        """A Ray actor holding env ``index`` (``strategy``: where to place it)."""
        options = dict(self._actor_options)
        if strategy is not None:
            options["scheduling_strategy"] = strategy
        return self._actor_class.options(**options).remote(self._fns[index])

    # ---- VectorEnv ---------------------------------------------------------------------

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset every env (seed: None, an int i -> i, i+1, ... as SyncVectorEnv, or a list)."""
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset: {len(seeds)} seeds for num_envs={self.num_envs}")
        refs = [w.reset.remote(s, options) for w, s in zip(self._workers, seeds)]
        infos: dict[str, Any] = {}
        for i, ref in enumerate(refs):
            self._env_obs[i], info = self._reset_one(i, seeds[i], options, ref)
            infos = self._add_info(infos, info, i)
        return self._batch(), infos

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray,
                                          dict[str, Any]]:
        """Step every env at once, then reset those whose episode ended (same-step autoreset,
        as SyncVectorEnv); a failed env's step becomes a truncation (module doc)."""
        from ray.exceptions import GetTimeoutError

        refs = [w.step.remote(a) for w, a in zip(self._workers, iterate(self.action_space,
                                                                        actions))]
        ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=self.step_timeout_s)
        ready_set = set(ready)
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminations = np.zeros(self.num_envs, dtype=np.bool_)
        truncations = np.zeros(self.num_envs, dtype=np.bool_)
        finals: dict[int, tuple[Any, dict[str, Any]]] = {}
        resets: dict[int, Any] = {}  # env -> its reset call, sent at once
        fresh: dict[int, tuple[Any, dict[str, Any]]] = {}  # env -> a replacement's first
        for i, ref in enumerate(refs):
            try:
                if ref not in ready_set:  # the whole step waited env_step_timeout_s
                    raise GetTimeoutError(f"env {i} step")
                obs, reward, terminated, truncated, info = self._ray.get(ref)
            except Exception as exc:  # noqa: BLE001
                reason = self._failure(i, "step", exc)
                finals[i] = (self._env_obs[i], {"env_restarted": True, "reason": reason})
                self._replace(i, reason)
                fresh[i] = self._reset_one(i, None, None)
                rewards[i], truncations[i] = 0.0, True
                continue
            self._failures[i] = 0
            rewards[i], terminations[i], truncations[i] = reward, terminated, truncated
            if terminated or truncated:
                finals[i] = (obs, info)
                resets[i] = self._workers[i].reset.remote(None, None)
            else:
                fresh[i] = (obs, info)
        for i, ref in resets.items():  # a failed reset keeps its transition: a new env
            fresh[i] = self._reset_one(i, None, None, ref)
        infos: dict[str, Any] = {}
        for i in range(self.num_envs):
            if i in finals:
                infos = self._add_info(infos, {"final_obs": finals[i][0],
                                               "final_info": finals[i][1]}, i)
            self._env_obs[i], info = fresh[i]
            infos = self._add_info(infos, info, i)
        return self._batch(), rewards, terminations, truncations, infos

    def _batch(self) -> Any:
        self._observations = concatenate(self.single_observation_space, self._env_obs,
                                         self._observations)
        return copy.deepcopy(self._observations)

    def worker_pids(self) -> list[int]:
        """The process id of every env's actor (for tests and operators)."""
        return [int(self._get(w.where.remote(), self.step_timeout_s)[0])
                for w in self._workers]

    def close_extras(self, **kwargs: Any) -> None:
        """Close every env (bounded by the watchdog), then end the actors and a Ray this
        created."""
        self._teardown(graceful=True)

    def _teardown(self, graceful: bool) -> None:
        if self._closed_workers:
            return
        self._closed_workers = True
        if graceful:
            refs = [w.close.remote() for w in self._workers]
            self._ray.wait(refs, num_returns=len(refs), timeout=self.step_timeout_s)
        for worker in self._workers:
            self._ray.kill(worker, no_restart=True)
        if self._owns_ray:
            self._ray.shutdown()
