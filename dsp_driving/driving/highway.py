"""The embedded driving task: highway-env 1.12 behind the driving contract.

``dsp_driving/HighwayDrive-v0`` (traffic on a multi-lane highway) and
``dsp_driving/TrackDrive-v0`` (a curvy two-lane track) step highway-env's kinematic bicycle
with its continuous action, then build the neutral :class:`~dsp_driving.driving.contract.Scene`
from highway-env's road and vehicles, so the observation, action and reward are exactly those
the CARLA bridge and the car use.

highway-env draws with y down and heading clockwise; the scene is REP-103 (y left, yaw CCW):
y_rep = -y, yaw_rep = -heading, and highway-env's steering angle is minus ours.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Any

import gymnasium as gym
import numpy as np

from dsp_driving.driving import contract, reward

PREVIEW_BEHIND_M = 5.0
# The path reaches as far as the lead-vehicle search (contract.GAP_RANGE_M) so a vehicle ahead
# on a curve is projected onto the curve, not onto a straight extension.
PREVIEW_AHEAD_M = contract.GAP_RANGE_M + 5.0
PREVIEW_STEP_M = 2.5
SENSOR_RANGE_M = contract.GAP_RANGE_M


@dataclasses.dataclass(frozen=True)
class Variant:
    """Which highway-env scenario and how it is configured."""

    base_env: str  # highway-env class, module:name
    config: dict[str, Any]


VARIANTS: dict[str, Variant] = {
    # 3 lanes, 30 m/s limit; IDM/MOBIL traffic at 0.7-0.8 x the limit (21-24 m/s).
    "highway": Variant("highway_env.envs.highway_env:HighwayEnv",
                       {"lanes_count": 3, "vehicles_count": 10, "vehicles_density": 1.0,
                        "ego_spacing": 2.0}),
    # highway-env's racetrack: 5 m lanes, arcs of 15-30 m radius, 10 m/s limit, slow traffic.
    "track": Variant("highway_env.envs.racetrack_env:RacetrackEnv",
                     {"other_vehicles": 3, "terminate_off_road": False}),
}


class HighwayDriveEnv(gym.Env):
    """A highway-env scenario with the contract observation, action and reward."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 5}
    observation_names = contract.OBSERVATION_NAMES
    action_names = contract.ACTION_NAMES

    def __init__(self, variant: str = "highway", policy_frequency_hz: int = 5,
                 simulation_frequency_hz: int = 10, duration_s: float = 30.0,
                 limits: contract.ActionLimits | None = None,
                 reward_config: reward.RewardConfig | None = None,
                 render_mode: str | None = None, **config_overrides: Any) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant={variant!r}: expected one of {sorted(VARIANTS)}")
        if not (isinstance(simulation_frequency_hz, int) and simulation_frequency_hz > 0):
            raise ValueError(f"simulation_frequency_hz={simulation_frequency_hz!r}: must be a "
                             "positive int")
        if not (isinstance(policy_frequency_hz, int) and policy_frequency_hz > 0
                and simulation_frequency_hz % policy_frequency_hz == 0):
            raise ValueError(f"policy_frequency_hz={policy_frequency_hz!r}: must be a positive "
                             f"int dividing simulation_frequency_hz={simulation_frequency_hz}")
        if not duration_s > 0:
            raise ValueError(f"duration_s={duration_s!r}: must be > 0")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode={render_mode!r}: expected None or 'rgb_array'")
        self.variant, self.render_mode = variant, render_mode
        self.limits = limits if limits is not None else contract.ActionLimits()
        self.reward_config = reward_config if reward_config is not None else reward.RewardConfig()
        self.dt = 1.0 / policy_frequency_hz
        self.max_steps = int(round(duration_s * policy_frequency_hz))
        self._accel_range = max(self.limits.max_accel_mps2, self.limits.max_decel_mps2)
        config = {
            **VARIANTS[variant].config,
            "observation": {"type": "Kinematics", "vehicles_count": 1},  # unused, cheapest
            "action": {"type": "ContinuousAction", "longitudinal": True, "lateral": True,
                       "acceleration_range": (-self._accel_range, self._accel_range),
                       "steering_range": (-self.limits.max_steer_rad, self.limits.max_steer_rad),
                       "speed_range": (0.0, self.limits.max_speed_mps), "dynamical": False},
            "simulation_frequency": simulation_frequency_hz,
            "policy_frequency": policy_frequency_hz,
            "duration": duration_s + 10.0,  # this env truncates; highway-env must not first
            "offroad_terminal": False,
            **config_overrides,
        }
        module, name = VARIANTS[variant].base_env.split(":")
        try:
            sim_class = getattr(importlib.import_module(module), name)
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                f"dsp_driving/{variant.title()}Drive-v0 needs highway-env 1.12.1: "
                'pip install -e ".[highway]"') from exc
        self._sim = sim_class(config=config, render_mode=render_mode)
        low, high = contract.observation_bounds()
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (contract.ACT_DIM,), dtype=np.float32)
        self._steps = 0
        self._prev_action = (0.0, 0.0)
        self._prev_speed = self._prev_heading = 0.0
        self._scene: contract.Scene | None = None

    def policy_metadata(self) -> dict[str, Any]:
        """The contract's constants plus this simulator's settings (strict JSON)."""
        return {**contract.policy_metadata(self.limits), "simulator": "highway-env",
                "variant": self.variant, "control_period_s": self.dt,
                "reward": dataclasses.asdict(self.reward_config)}

    # ---- gymnasium ------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """A new scenario; the ego starts on a random lane at highway-env's speed."""
        super().reset(seed=seed)
        self._sim.reset(seed=seed)
        # highway-env computes its own observation every step (a pandas table, ~40 % of the
        # step time); this env never reads it. reset() rebuilds observation_type, so mute the
        # new one each time.
        self._sim.observation_type.observe = _no_observation
        ego = self._ego()
        self._steps = 0
        self._prev_action = (0.0, 0.0)
        self._prev_speed, self._prev_heading = float(ego.speed), float(ego.heading)
        self._scene = self._build_scene(yaw_rate=0.0, accel=0.0)
        return contract.observe(self._scene), {"speed_mps": float(ego.speed)}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply the contract action for one control period."""
        if self._scene is None:
            raise RuntimeError("step() before reset()")
        steer, accel = contract.clip_action(action)
        physical = contract.to_physical((steer, accel), self.limits)
        ego = self._ego()
        # The brake stops the car; it never reverses it.
        accel_mps2 = max(physical.accel_mps2, -float(ego.speed) / self.dt)
        sim_action = np.array([accel_mps2 / self._accel_range,
                               -physical.steer_rad / self.limits.max_steer_rad], np.float32)
        self._sim.step(sim_action)
        self._steps += 1

        before = self._scene
        ego = self._ego()
        yaw_rate = -contract.wrap_angle(float(ego.heading) - self._prev_heading) / self.dt
        accel_now = (float(ego.speed) - self._prev_speed) / self.dt
        self._prev_speed, self._prev_heading = float(ego.speed), float(ego.heading)
        self._prev_action, prev_action = (steer, accel), self._prev_action
        self._scene = self._build_scene(yaw_rate, accel_now)

        s_before = contract.project(before.path.points, before.ego.x, before.ego.y).s
        s_after = contract.project(before.path.points, self._scene.ego.x, self._scene.ego.y).s
        lateral = contract.project(self._scene.path.points, self._scene.ego.x,
                                   self._scene.ego.y).lateral
        path = self._scene.path
        off_road = (not ego.on_road or lateral > path.left_width
                    or -lateral > path.right_width)
        collided = bool(ego.crashed)
        terms = reward.step_reward(
            progress_m=s_after - s_before, dt_s=self.dt, speed_mps=float(ego.speed),
            speed_limit_mps=path.speed_limit, lateral_offset_m=lateral,
            lane_width_m=path.lane_width, action=(steer, accel), prev_action=prev_action,
            collided=collided, off_road=off_road, cfg=self.reward_config)
        terminated = collided or off_road
        truncated = not terminated and self._steps >= self.max_steps
        info: dict[str, Any] = {"speed_mps": float(ego.speed), "lateral_offset_m": lateral,
                                "progress_m": s_after - s_before, **terms._asdict()}
        if terminated:
            info["termination"] = "collision" if collided else "off_road"
        return contract.observe(self._scene), terms.reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """highway-env's top view (render_mode='rgb_array')."""
        return self._sim.render() if self.render_mode else None

    def close(self) -> None:
        """Close highway-env."""
        self._sim.close()

    # ---- scene --------------------------------------------------------------------------

    @property
    def scene(self) -> contract.Scene:
        """The scene behind the last observation."""
        if self._scene is None:
            raise RuntimeError("no scene before reset()")
        return self._scene

    def _ego(self) -> Any:
        return self._sim.vehicle

    def _build_scene(self, yaw_rate: float, accel: float) -> contract.Scene:
        sim = self._sim
        ego, network = sim.vehicle, sim.road.network
        lane_index = ego.lane_index
        lane = network.get_lane(lane_index)
        s_ego, _ = lane.local_coordinates(ego.position)
        points = _lane_polyline(network, lane_index, s_ego - PREVIEW_BEHIND_M,
                                s_ego + PREVIEW_AHEAD_M)
        left, right = _road_widths(network, lane_index, ego.position)
        speed_limit = lane.speed_limit if lane.speed_limit else 30.0
        path = contract.Path(points, lane_width=float(lane.width_at(s_ego)),
                             speed_limit=float(speed_limit), left_width=left, right_width=right)
        others = tuple(
            contract.Vehicle(float(v.position[0]), -float(v.position[1]), -float(v.heading),
                             float(v.speed), float(v.LENGTH))
            for v in sim.road.vehicles
            if v is not ego and np.linalg.norm(v.position - ego.position) < SENSOR_RANGE_M)
        me = contract.Ego(float(ego.position[0]), -float(ego.position[1]), -float(ego.heading),
                          float(ego.speed), yaw_rate, accel, float(ego.LENGTH))
        return contract.Scene(me, path, others, self._prev_action)


def _no_observation() -> np.ndarray:
    return np.zeros(0, np.float32)


def _lane_polyline(network: Any, lane_index: tuple, s_from: float, s_to: float) -> np.ndarray:
    """Centre-line points (REP-103) from s_from to s_to along the lane, continuing onto the
    lanes highway-env's vehicles would follow past its end (``next_lane``: the same lane id or
    the closest lane of the next road); the path stops at a dead end."""
    rng = np.random.RandomState(0)  # next_lane's argument; 1.12 uses it only without a route
    lane = network.get_lane(lane_index)
    s_from = max(s_from, 0.0)
    points, offset = [], 0.0  # offset: path arc length at the current lane's s = 0
    for s in np.arange(s_from, s_to + 1e-9, PREVIEW_STEP_M):
        while s - offset > lane.length:
            end = lane.position(lane.length, 0.0)
            next_index = network.next_lane(lane_index, position=end, np_random=rng)
            if next_index == lane_index:  # a dead end: no road beyond
                return np.asarray(points, dtype=np.float64)
            lane_index, previous_length = next_index, lane.length
            lane = network.get_lane(lane_index)
            # The next lane may start a little before or after this one's end: continue from
            # the point nearest to the end, so the path never steps back.
            offset += previous_length - lane.local_coordinates(end)[0]
        x, y = lane.position(s - offset, 0.0)
        if not points or math.hypot(x - points[-1][0], -y - points[-1][1]) > 1e-6:
            points.append((x, -y))
    return np.asarray(points, dtype=np.float64)


def _road_widths(network: Any, lane_index: tuple, position: np.ndarray) -> tuple[float, float]:
    """Distances (m) from the lane's centre to the left and right edges of the road, from the
    lanes that share its road segment (highway-env's lateral coordinate is + right)."""
    _from, _to, _ = lane_index
    lane = network.get_lane(lane_index)
    s, _ = lane.local_coordinates(position)
    half = 0.5 * float(lane.width_at(s))
    left = right = half
    for sibling in network.graph[_from][_to]:
        s_sib, _ = sibling.local_coordinates(position)
        _, lat = lane.local_coordinates(sibling.position(s_sib, 0.0))
        edge = 0.5 * float(sibling.width_at(s_sib))
        left, right = max(left, -lat + edge), max(right, lat + edge)
    return float(left), float(right)
