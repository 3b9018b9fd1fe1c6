"""``dsp_driving/Carla-v0``: the driving contract over any SimulatorBackend.

Each reset spawns the ego on a lane (random, or ``options["start"] = (x, y[, z])``; give z on
maps with several levels), builds the route along that lane from the map's waypoints, and
spawns traffic (random, or ``options["npcs"] = [(x, y[, z]), ...]``). Everything random in an
episode (start, traffic poses, the backend's NPC models and Traffic Manager seed) comes from
``np_random``, so ``reset(seed=)`` determines it. Each step sends ``contract.to_carla(action)``
(scaled by the spawned vehicle's own max steer angle where the backend reads it), ticks once,
builds the same Scene as every other simulator, and rewards with ``reward.step_reward``.
Sensor events are counted in the step in which they arrive (CARLA may deliver one a step
late); events from before the episode's first frame are dropped.
Collision and leaving the carriageway terminate (``info["termination"]``: "collision",
"off_road"); the time limit and the end of the route truncate (``info["truncation"]``:
"time_limit", "route_end"). Nothing touches the simulator before the first reset.

A simulator crash (SimulatorCrashed, FrameJump included) escapes reset() and step(): the env
marks its backend crashed (the CARLA backend then makes no further server call), and every
later reset() or step() raises SimulatorCrashed again; close() still releases what it can.
There is no in-process restart: a CARLA client whose server hung or died can end its process
(the Traffic Manager's threads), so the recovery is a new process with a new env and server
(``train.vector_mode: ray`` replaces the env's process, up to ``train.env_max_restarts``).
For the same reason (TrafficManager::Tick is process-wide) only one live CARLA-backend env may
exist per process; a second raises ValueError naming train.vector_mode=ray.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any
import weakref

import gymnasium as gym
from gymnasium import spaces
import numpy as np

from dsp_driving.driving import contract
from dsp_driving.driving.backend import (
    Events,
    LanePoint,
    Pose,
    RoadMap,
    SimulatorBackend,
    SimulatorCrashed,
    SpawnError,
)
from dsp_driving.driving.carla_config import CarlaConfig, resolve_carla_config
from dsp_driving.driving.ports import ServerPorts, allocate_ports
from dsp_driving.driving.reward import RewardConfig, step_reward
from dsp_driving.driving.route import Route, build_route

log = logging.getLogger(__name__)

ENV_ID = "dsp_driving/Carla-v0"
ROUTE_BEHIND_M = 20.0
SPAWN_SPACING_M = 10.0
MIN_ROUTE_AHEAD_M = 40.0  # a start needs this much lane ahead (the preview looks 30 m)
ROUTE_END_MARGIN_M = 35.0  # truncate this close to the route's end
SPAWN_TRIES = 20

# CARLA-backend envs alive in this process (see the module docstring; kinematic ones exempt)
_LIVE_CARLA_ENVS: weakref.WeakSet[CarlaDriveEnv] = weakref.WeakSet()


def make_backend(config: CarlaConfig, ports: ServerPorts | None = None,
                 limits: contract.ActionLimits | None = None) -> SimulatorBackend:
    """The backend ``config.backend`` names (carla is imported only when one is made)."""
    if config.backend == "kinematic":
        from dsp_driving.driving.carla_map import load_xodr_map
        from dsp_driving.driving.kinematic import KinematicBackend

        return KinematicBackend(load_xodr_map(config.xodr_path), dt_s=config.fixed_delta_seconds,
                                limits=limits or contract.ActionLimits(),
                                npc_speed_mps=config.npc_speed_mps,
                                timeout_s=config.timeout_s)
    from dsp_driving.driving.carla_backend import CarlaBackend

    return CarlaBackend(config, ports, limits)


def _uses_carla(config: CarlaConfig, backend: str | SimulatorBackend | None) -> bool:
    """Whether the env's backend is (or will be) the real CARLA client."""
    if isinstance(backend, SimulatorBackend):
        from dsp_driving.driving.carla_backend import CarlaBackend

        return isinstance(backend, CarlaBackend)
    return config.backend == "carla"


def _place(value: Any, name: str) -> tuple[float, float, bool, float]:
    """``(x, y)`` or ``(x, y, z)`` from reset options -> lane_point's (x, y, project, z)."""
    place = [float(v) for v in value]
    if len(place) not in (2, 3):
        raise ValueError(f"options[{name!r}]: {value!r} is not (x, y) or (x, y, z)")
    return place[0], place[1], True, place[2] if len(place) == 3 else 0.0


class CarlaDriveEnv(gym.Env[np.ndarray, np.ndarray]):
    """The CARLA bridge as a gymnasium env (the contract's observation and action)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, config: str | Path | CarlaConfig | dict[str, Any] | None = None,
                 backend: str | SimulatorBackend | None = None, server_index: int = 0,
                 reward_config: RewardConfig | None = None,
                 limits: contract.ActionLimits | None = None) -> None:
        cfg = resolve_carla_config(config)
        if isinstance(backend, str):
            cfg = dataclasses.replace(cfg, backend=backend)
        if isinstance(server_index, bool) or not isinstance(server_index, int) \
                or server_index < 0:
            raise ValueError(f"server_index={server_index!r}: must be an integer >= 0")
        self.config = cfg
        self.reward_config = reward_config or RewardConfig()
        self.limits = limits or contract.ActionLimits()
        self._control_limits = self.limits  # with the spawned vehicle's steer scale
        self.ports = allocate_ports(server_index + 1, cfg.port, cfg.tm_port)[server_index]
        self._uses_carla = _uses_carla(cfg, backend)
        self._pid = os.getpid()  # a forked child inherits the registry, not the envs' servers
        live = [env for env in _LIVE_CARLA_ENVS if env._pid == self._pid]
        if self._uses_carla and live:
            raise ValueError(
                f"CarlaDriveEnv: {len(live)} CARLA-backend env(s) already live in "
                f"this process (pid {os.getpid()}); CARLA's Traffic Manager ticks every TM of a "
                "process on each world.tick, so CARLA envs cannot share one: run one per "
                "process with train.vector_mode=ray (or close the other env first)")
        self._backend = backend if isinstance(backend, SimulatorBackend) else None
        low, high = contract.observation_bounds()
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (contract.ACT_DIM,), np.float32)
        self.observation_names: tuple[str, ...] = contract.OBSERVATION_NAMES
        self.action_names: tuple[str, ...] = contract.ACTION_NAMES
        self.episodes = 0
        self._crash: SimulatorCrashed | None = None  # once set, the env stays down
        self._started = self._reloaded = False
        self._spawn_points: list[LanePoint] | None = None
        self._route: Route | None = None
        self._s = 0.0
        self._steps = 0
        self._first_frame = 0  # events of earlier frames belong to another episode
        self._prev_action = (0.0, 0.0)
        self._last_obs = np.zeros(contract.OBS_DIM, dtype=np.float32)
        if self._uses_carla:
            _LIVE_CARLA_ENVS.add(self)

    @property
    def backend(self) -> SimulatorBackend:
        """The simulator backend (created on first use)."""
        if self._backend is None:
            self._backend = make_backend(self.config, self.ports, self.limits)
        return self._backend

    def policy_metadata(self) -> dict[str, Any]:
        """The contract's metadata plus this simulator's settings (strict JSON)."""
        meta = contract.policy_metadata(self.limits)
        meta.update({
            "simulator": "carla",
            "env_id": ENV_ID,
            "backend": self.config.backend,
            "town": self.config.town if self.config.backend == "carla"
            else Path(self.config.xodr_path).name,
            "dt_s": self.config.fixed_delta_seconds,
            "control_period_s": self.config.control_period_s,
            "speed_limit_mps": self.config.speed_limit_mps,
            "max_episode_steps": self.config.max_episode_steps,
            "reward": dataclasses.asdict(self.reward_config),
        })
        return meta

    # ---- crashes ----------------------------------------------------------------------------

    def _crashed(self, exc: SimulatorCrashed) -> None:
        """Mark the env and its backend crashed (no further server call)."""
        self._crash, self._route = exc, None
        mark = getattr(self._backend, "mark_crashed", None)
        if mark is not None:
            mark()
        log.error("simulator crashed (%s): this env stays down; recovery is a new process", exc)

    def _require_not_crashed(self) -> None:
        if self._crash is not None:
            raise SimulatorCrashed(f"CarlaDriveEnv: the simulator crashed earlier ({self._crash}"
                                   "); build a new env in a new process (train.vector_mode=ray "
                                   "does that)") from self._crash

    # ---- reset -----------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Respawn the ego and traffic, build the route. SimulatorCrashed escapes (and the env
        stays down)."""
        self._require_not_crashed()
        super().reset(seed=seed)
        try:
            return self._new_episode(options or {})
        except SimulatorCrashed as exc:
            self._crashed(exc)
            raise

    def _new_episode(self, options: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        backend, cfg = self.backend, self.config
        if not self._started:
            backend.start()
            self._started = True
        else:
            backend.destroy_actors()
        self._route = None
        episode, every = self.episodes + 1, cfg.reload_every_episodes
        if every and episode > 1 and (episode - 1) % every == 0 and not self._reloaded:
            backend.reload_world()  # once per due episode, even if this reset is retried
            self._reloaded, self._spawn_points = True, None
        backend.seed_episode(int(self.np_random.integers(2 ** 31)))
        road = backend.road_map()
        start, route = self._spawn_ego(road, options)
        self._control_limits = backend.control_limits(self.limits)
        backend.spawn_npcs(self._npc_poses(road, start.pose, options))
        # What spawning caused (up to this frame, even if it arrives late) is not the policy's.
        self._first_frame = backend.tick() + 1
        backend.events()
        ego = backend.ego_state()
        self.episodes, self._reloaded = episode, False
        self._route, self._steps, self._prev_action = route, 0, (0.0, 0.0)
        self._s = route.locate(ego.x, ego.y, route.start_s).s
        self._last_obs = self._observe(ego, backend.vehicles())
        # route_target_m: how far along the route the episode ends as "route_end" (the
        # safety record's route completion: driving/safety.py)
        info = {"speed_mps": ego.speed, "episode": self.episodes,
                "map": road.name, "route_length_m": route.length,
                "route_target_m": max(route.length - ROUTE_END_MARGIN_M - self._s, 0.0)}
        return self._last_obs.copy(), info

    def _candidates(self, road: RoadMap) -> list[LanePoint]:
        if self._spawn_points is None:
            self._spawn_points = [p for p in road.lane_points(SPAWN_SPACING_M)
                                  if not p.is_junction]
            if not self._spawn_points:
                raise ValueError(f"map {road.name!r} has no driving lane to spawn on")
        return self._spawn_points

    def _route_from(self, start: LanePoint) -> Route:
        cfg = self.config
        return build_route(start, cfg.route_length_m, ROUTE_BEHIND_M, cfg.route_step_m,
                           cfg.speed_limit_mps, choose=self._choose)

    def _choose(self, options: list[LanePoint]) -> LanePoint:
        return options[int(self.np_random.integers(len(options)))]

    def _spawn_ego(self, road: RoadMap, options: dict[str, Any]) -> tuple[LanePoint, Route]:
        cfg, backend = self.config, self.backend
        if "start" in options:
            start = road.lane_point(*_place(options["start"], "start"))
            if start is None:
                raise ValueError(f"options['start']={options['start']!r}: no lane near it")
            route = self._route_from(start)
            backend.spawn_ego(start.pose, cfg.initial_speed_mps)
            return start, route
        candidates = self._candidates(road)
        order = self.np_random.permutation(len(candidates))[:SPAWN_TRIES]
        wanted = min(cfg.route_length_m, 100.0)
        tried: list[tuple[float, LanePoint, Route]] = []
        for i in order:
            route = self._route_from(candidates[i])
            tried.append((route.length - route.start_s, candidates[i], route))
            if tried[-1][0] >= wanted:
                break
        for ahead, start, route in sorted(tried, key=lambda t: -t[0]):
            if ahead < MIN_ROUTE_AHEAD_M:
                break
            try:
                backend.spawn_ego(start.pose, cfg.initial_speed_mps)
                return start, route
            except SpawnError as exc:
                log.debug("ego spawn skipped: %s", exc)
        raise ValueError(f"map {road.name!r}: no free start with {MIN_ROUTE_AHEAD_M} m of lane "
                         f"ahead among {len(tried)} tried")

    def _npc_poses(self, road: RoadMap, ego: Pose, options: dict[str, Any]) -> list[Pose]:
        if "npcs" in options:
            points = [road.lane_point(*_place(p, "npcs")) for p in options["npcs"]]
            return [p.pose for p in points if p is not None]
        far = [p.pose for p in self._candidates(road)
               if np.hypot(p.pose.x - ego.x, p.pose.y - ego.y) >= self.config.npc_min_distance_m]
        count = min(self.config.npc_count, len(far))
        picks = self.np_random.choice(len(far), size=count, replace=False) if count else []
        return [far[int(i)] for i in picks]

    # ---- step ------------------------------------------------------------------------------

    def _observe(self, ego: contract.Ego, vehicles: tuple[contract.Vehicle, ...]) -> np.ndarray:
        assert self._route is not None
        near = tuple(v for v in vehicles
                     if np.hypot(v.x - ego.x, v.y - ego.y) <= contract.GAP_RANGE_M + 10.0)
        scene = contract.Scene(ego, self._route.path_at(self._s), near, self._prev_action)
        return contract.observe(scene)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Hold the action for one control period (ticks_per_step ticks); reward, termination
        reason, truncation reason. SimulatorCrashed escapes (and the env stays down)."""
        self._require_not_crashed()
        route, backend, cfg = self._route, self.backend, self.config
        if route is None:
            raise RuntimeError("CarlaDriveEnv: call reset() before step()")
        steer, accel = contract.clip_action(action)
        try:
            backend.apply_control(contract.to_carla((steer, accel), self._control_limits))
            for _ in range(cfg.ticks_per_step):  # events accumulate until drained below
                backend.tick()
            ego, vehicles, events = backend.ego_state(), backend.vehicles(), backend.events()
            events = Events(
                tuple(e for e in events.collisions if e.frame >= self._first_frame),
                tuple(e for e in events.lane_invasions if e.frame >= self._first_frame))
        except SimulatorCrashed as exc:
            self._crashed(exc)
            raise
        self._steps += 1
        here = route.locate(ego.x, ego.y, self._s)
        progress, self._s = here.s - self._s, here.s
        i = route.index_at(here.s)
        collided = bool(events.collisions)
        off_road = bool(here.lateral > route.left_width[i] or here.lateral < -route.right_width[i])
        terms = step_reward(progress, cfg.control_period_s, ego.speed, cfg.speed_limit_mps,
                            here.lateral, float(route.lane_width[i]), (steer, accel),
                            self._prev_action, collided, off_road, self.reward_config)
        self._prev_action = (steer, accel)
        self._last_obs = self._observe(ego, vehicles)
        termination = "collision" if collided else "off_road" if off_road else ""
        truncation = ""
        if not termination:
            if self._steps >= cfg.max_episode_steps:
                truncation = "time_limit"
            elif route.length - here.s < ROUTE_END_MARGIN_M:
                truncation = "route_end"
        info: dict[str, Any] = {
            "speed_mps": ego.speed, "lateral_offset_m": here.lateral, "progress_m": progress,
            "collisions": len(events.collisions), "lane_invasions": len(events.lane_invasions),
            "collision_with": [e.other for e in events.collisions],  # type ids: the kind
            **terms._asdict()}
        if termination:
            info["termination"] = termination
        if truncation:
            info["truncation"] = truncation
        return (self._last_obs.copy(), float(terms.reward), bool(termination), bool(truncation),
                info)

    def close(self) -> None:
        """Destroy the actors, restore the simulator's settings, stop a launched server (after
        a crash the CARLA backend only drops its handles and stops its server)."""
        try:
            if self._backend is not None:
                self._backend.close()
        finally:
            _LIVE_CARLA_ENVS.discard(self)
            self._route, self._started, self._spawn_points = None, False, None
            super().close()
