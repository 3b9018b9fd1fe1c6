"""The driving contract: one observation vector and one action for every simulator and the car.

Pure numpy: no simulator, ROS or torch imports. A simulator adapter (highway-env, CARLA, the
car's localisation) fills a neutral :class:`Scene`; :func:`observe` turns it into
OBS_DIM named, normalised, clipped features, and the action mappings turn the policy's two
numbers in [-1, 1] into physical units and into each vehicle interface.

Frames follow REP-103: x forward, y left, yaw counter-clockwise from +x, so a positive
lateral offset or steering angle means *left*. CARLA is left-handed (y right, steer + right);
its adapter converts.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import numpy as np

from dsp_driving.validation import is_finite_number, require

# ---- scene -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Vehicle:
    """Another road user: pose (m, rad, world frame), speed (m/s) and length (m)."""

    x: float
    y: float
    yaw: float
    speed: float
    length: float = 4.5


@dataclasses.dataclass(frozen=True)
class Ego:
    """The ego vehicle: pose, speed, yaw rate (rad/s) and longitudinal acceleration (m/s^2)."""

    x: float
    y: float
    yaw: float
    speed: float
    yaw_rate: float = 0.0
    accel: float = 0.0
    length: float = 4.5


@dataclasses.dataclass(frozen=True)
class Path:
    """The reference path: the centre line of the lane to follow, as a world polyline.

    ``left_width`` / ``right_width`` are the distances from the centre line to the left and
    right road edges (m, both >= 0).
    """

    points: np.ndarray  # [n, 2], n >= 2, consecutive points distinct
    lane_width: float
    speed_limit: float
    left_width: float
    right_width: float

    def __post_init__(self) -> None:
        pts = np.asarray(self.points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[0] < 2 or pts.shape[1] != 2:
            raise ValueError(f"Path.points shape {pts.shape}: expected [n >= 2, 2]")
        if not np.all(np.isfinite(pts)):
            raise ValueError("Path.points contains non-finite values")
        if np.any(np.linalg.norm(np.diff(pts, axis=0), axis=1) <= 1e-9):
            raise ValueError("Path.points has repeated consecutive points")
        for name in ("lane_width", "speed_limit"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Path.{name}={getattr(self, name)!r}: must be > 0")
        for name in ("left_width", "right_width"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"Path.{name}={getattr(self, name)!r}: must be >= 0")
        object.__setattr__(self, "points", pts)


@dataclasses.dataclass(frozen=True)
class Scene:
    """Everything the observation is made from; ``prev_action`` is the last contract action."""

    ego: Ego
    path: Path
    vehicles: tuple[Vehicle, ...] = ()
    prev_action: tuple[float, float] = (0.0, 0.0)


# ---- observation ----------------------------------------------------------------------------

SPEED_SCALE_MPS = 30.0
ACCEL_SCALE_MPS2 = 5.0
YAW_RATE_SCALE_RPS = 1.0
LATERAL_SCALE_M = 2.0  # lateral offset: half a 4 m lane is 1.0
PREVIEW_SCALE_M = 5.0
EDGE_SCALE_M = 10.0
GAP_RANGE_M = 100.0  # lead vehicles beyond this are not seen; no lead reads as this gap
INV_TTC_SCALE_PER_S = 1.0
PREVIEW_DISTANCES_M = (5.0, 10.0, 20.0, 30.0)

# name, scale (physical value / scale is the feature), clip bound (feature in [-b, b])
FEATURES: tuple[tuple[str, float, float], ...] = (
    ("speed", SPEED_SCALE_MPS, 2.0),
    ("target_speed", SPEED_SCALE_MPS, 2.0),
    ("speed_error", SPEED_SCALE_MPS, 2.0),
    ("accel", ACCEL_SCALE_MPS2, 3.0),
    ("yaw_rate", YAW_RATE_SCALE_RPS, 3.0),
    ("prev_steer", 1.0, 1.0),
    ("prev_accel", 1.0, 1.0),
    ("lateral_offset", LATERAL_SCALE_M, 5.0),
    ("sin_heading_error", 1.0, 1.0),
    ("cos_heading_error", 1.0, 1.0),
    *((f"path_lateral_{int(d)}m", PREVIEW_SCALE_M, 5.0) for d in PREVIEW_DISTANCES_M),
    ("left_edge_distance", EDGE_SCALE_M, 3.0),
    ("right_edge_distance", EDGE_SCALE_M, 3.0),
    ("lead_gap", GAP_RANGE_M, 1.0),
    ("lead_relative_speed", SPEED_SCALE_MPS, 2.0),
    ("inverse_ttc", INV_TTC_SCALE_PER_S, 5.0),
    ("has_lead", 1.0, 1.0),
)
OBSERVATION_NAMES: tuple[str, ...] = tuple(name for name, _, _ in FEATURES)
OBS_DIM = len(FEATURES)
_SCALES = np.array([s for _, s, _ in FEATURES])
_CLIPS = np.array([c for _, _, c in FEATURES])
INDEX = {name: i for i, name in enumerate(OBSERVATION_NAMES)}


class Projection(NamedTuple):
    """A point's place relative to a polyline."""

    s: float  # arc length of the closest point (m; < 0 or > length: beyond the ends)
    lateral: float  # signed distance, + left of the direction of travel (m)
    heading: float  # the path's heading there (rad)


def wrap_angle(angle: float) -> float:
    """Angle in (-pi, pi]."""
    return float(math.atan2(math.sin(angle), math.cos(angle)))


# How far the end segments extend as straight lines. Bounded: on a road that curves back
# (a loop, a hairpin), an unbounded extension can pass next to a point the path itself holds
# and steal its projection.
END_EXTENSION_M = 20.0


def project(points: np.ndarray, x: float, y: float) -> Projection:
    """Project (x, y) onto the polyline; the end segments extend by END_EXTENSION_M."""
    a, b = points[:-1], points[1:]
    seg = b - a
    seg_len = np.linalg.norm(seg, axis=1)
    t = np.einsum("ij,ij->i", np.array([x, y]) - a, seg) / seg_len**2
    reach = END_EXTENSION_M / seg_len
    lo = np.where(np.arange(len(seg)) == 0, -reach, 0.0)
    hi = np.where(np.arange(len(seg)) == len(seg) - 1, 1.0 + reach, 1.0)
    t = np.clip(t, lo, hi)
    closest = a + t[:, None] * seg
    dist = np.linalg.norm(closest - np.array([x, y]), axis=1)
    i = int(np.argmin(dist))
    direction = seg[i] / seg_len[i]
    rel = np.array([x, y]) - closest[i]
    lateral = float(direction[0] * rel[1] - direction[1] * rel[0])
    s = float(np.sum(seg_len[:i]) + t[i] * seg_len[i])
    return Projection(s, lateral, float(math.atan2(direction[1], direction[0])))


def point_at(points: np.ndarray, s: float) -> np.ndarray:
    """The point at arc length ``s`` (linear extrapolation beyond either end)."""
    seg = np.diff(points, axis=0)
    seg_len = np.linalg.norm(seg, axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg_len)])
    i = int(np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(seg) - 1))
    return points[i] + (s - cum[i]) / seg_len[i] * seg[i]


def physical_features(scene: Scene) -> np.ndarray:
    """The OBS_DIM features in physical units (m, m/s, rad...), before scaling and clipping."""
    ego, path = scene.ego, scene.path
    here = project(path.points, ego.x, ego.y)
    heading_error = wrap_angle(ego.yaw - here.heading)
    cos_yaw, sin_yaw = math.cos(ego.yaw), math.sin(ego.yaw)
    preview = []
    for d in PREVIEW_DISTANCES_M:
        dx, dy = point_at(path.points, here.s + d) - (ego.x, ego.y)
        preview.append(-sin_yaw * dx + cos_yaw * dy)  # y in the ego frame (+ left)
    gap, rel_speed, inv_ttc, has_lead = GAP_RANGE_M, 0.0, 0.0, 0.0
    for v in scene.vehicles:
        there = project(path.points, v.x, v.y)
        ahead = there.s - here.s - 0.5 * (ego.length + v.length)
        if there.s > here.s and abs(there.lateral) < 0.5 * path.lane_width and ahead < gap:
            gap, has_lead = max(ahead, 0.0), 1.0
            rel_speed = v.speed - ego.speed
            inv_ttc = max(0.0, -rel_speed) / max(gap, 0.1)
    prev_steer, prev_accel = scene.prev_action
    return np.array([
        ego.speed, path.speed_limit, ego.speed - path.speed_limit, ego.accel, ego.yaw_rate,
        prev_steer, prev_accel, here.lateral, math.sin(heading_error), math.cos(heading_error),
        *preview, path.left_width - here.lateral, path.right_width + here.lateral,
        gap, rel_speed, inv_ttc, has_lead,
    ], dtype=np.float64)


def observe(scene: Scene) -> np.ndarray:
    """The contract observation: float32 [OBS_DIM], each feature scaled and clipped."""
    raw = physical_features(scene)
    if not np.all(np.isfinite(raw)):
        bad = [OBSERVATION_NAMES[i] for i in np.flatnonzero(~np.isfinite(raw))]
        raise ValueError(f"scene gives non-finite features: {bad}")
    return np.clip(raw / _SCALES, -_CLIPS, _CLIPS).astype(np.float32)


def observation_bounds() -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of every feature, for a gymnasium Box."""
    return (-_CLIPS).astype(np.float32), _CLIPS.astype(np.float32)


# ---- action -------------------------------------------------------------------------------

ACTION_NAMES = ("steer", "accel")
ACT_DIM = 2


@dataclasses.dataclass(frozen=True)
class ActionLimits:
    """Physical range of the normalised action; also the policy node's command limits."""

    max_steer_rad: float = 0.5  # road-wheel angle at steer = +-1
    max_accel_mps2: float = 3.0  # at accel = +1
    max_decel_mps2: float = 6.0  # at accel = -1
    max_speed_mps: float = 40.0
    carla_max_steer_rad: float = math.radians(70.0)  # the vehicle's physics max steer angle

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            require(is_finite_number(value) and value > 0, f"ActionLimits.{f.name}", value,
                    "must be a finite number > 0")


def clip_action(action: Any) -> tuple[float, float]:
    """A finite 2-vector action clipped to [-1, 1] as (steer, accel); ValueError otherwise."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape != (ACT_DIM,):
        raise ValueError(f"action shape {a.shape}: expected ({ACT_DIM},)")
    steer, accel = float(a[0]), float(a[1])  # plain floats: this runs on every command
    if not (math.isfinite(steer) and math.isfinite(accel)):
        raise ValueError(f"action {a.tolist()} is not finite")
    return min(max(steer, -1.0), 1.0), min(max(accel, -1.0), 1.0)


class PhysicalAction(NamedTuple):
    """The action in SI units: road-wheel angle (rad, + left) and acceleration (m/s^2)."""

    steer_rad: float
    accel_mps2: float


def to_physical(action: Any, limits: ActionLimits = ActionLimits()) -> PhysicalAction:
    """Normalised [steer, accel] in [-1, 1] (clipped) -> radians and m/s^2."""
    steer, accel = clip_action(action)
    scale = limits.max_accel_mps2 if accel >= 0 else limits.max_decel_mps2
    return PhysicalAction(steer * limits.max_steer_rad, accel * scale)


def from_physical(steer_rad: float, accel_mps2: float,
                  limits: ActionLimits = ActionLimits()) -> np.ndarray:
    """Inverse of to_physical (clipped to [-1, 1])."""
    scale = limits.max_accel_mps2 if accel_mps2 >= 0 else limits.max_decel_mps2
    return np.clip([steer_rad / limits.max_steer_rad, accel_mps2 / scale], -1.0,
                   1.0).astype(np.float32)


class CarlaControl(NamedTuple):
    """carla.VehicleControl's fields: throttle, brake in [0, 1], steer in [-1, 1] (+ right)."""

    throttle: float
    steer: float
    brake: float


def to_carla(action: Any, limits: ActionLimits = ActionLimits()) -> CarlaControl:
    """Contract action -> CARLA control (see carla_from_physical)."""
    return carla_from_physical(to_physical(action, limits), clip_action(action)[1], limits)


def carla_from_physical(physical: PhysicalAction, accel: float,
                        limits: ActionLimits = ActionLimits()) -> CarlaControl:
    """CARLA control from the physical action and the normalised (clipped) acceleration.
    Steer flips sign (CARLA + right) and is scaled from our road-wheel angle to the vehicle's
    max steer; throttle and brake are never both > 0."""
    steer = float(np.clip(-physical.steer_rad / limits.carla_max_steer_rad, -1.0, 1.0))
    return CarlaControl(throttle=max(accel, 0.0), steer=steer, brake=max(-accel, 0.0))


def _clamp_speed(speed_mps: float, limits: ActionLimits) -> float:
    """A target speed in [0, max_speed] (NaN stays NaN, as np.clip leaves it)."""
    speed = float(speed_mps)
    return speed if math.isnan(speed) else min(max(speed, 0.0), limits.max_speed_mps)


def to_ackermann(action: Any, speed_mps: float, horizon_s: float = 0.5,
                 limits: ActionLimits = ActionLimits()) -> dict[str, float]:
    """ackermann_msgs/AckermannDrive fields (REP-103: steering_angle + left).

    AckermannDrive commands a speed reached at a given acceleration magnitude: the target speed
    is the current speed plus accel * ``horizon_s`` (clamped to [0, max_speed]); acceleration is
    |accel| as the message defines it (0 would mean "as fast as possible", so a tiny floor).
    """
    return ackermann_from_physical(to_physical(action, limits), speed_mps, horizon_s, limits)


def ackermann_from_physical(physical: PhysicalAction, speed_mps: float, horizon_s: float = 0.5,
                            limits: ActionLimits = ActionLimits()) -> dict[str, float]:
    """AckermannDrive fields from the physical action (see to_ackermann)."""
    target = _clamp_speed(speed_mps + physical.accel_mps2 * horizon_s, limits)
    return {"steering_angle": physical.steer_rad, "steering_angle_velocity": 0.0,
            "speed": target, "acceleration": max(abs(physical.accel_mps2), 1e-3), "jerk": 0.0}


def to_autoware(action: Any, speed_mps: float, horizon_s: float = 0.5,
                limits: ActionLimits = ActionLimits()) -> dict[str, dict[str, Any]]:
    """autoware_control_msgs/Control's lateral and longitudinal fields (stamps left to caller)."""
    return autoware_from_physical(to_physical(action, limits), speed_mps, horizon_s, limits)


def autoware_from_physical(physical: PhysicalAction, speed_mps: float, horizon_s: float = 0.5,
                           limits: ActionLimits = ActionLimits()) -> dict[str, dict[str, Any]]:
    """autoware Control's lateral and longitudinal fields from the physical action."""
    target = _clamp_speed(speed_mps + physical.accel_mps2 * horizon_s, limits)
    return {
        "lateral": {"steering_tire_angle": physical.steer_rad,
                    "steering_tire_rotation_rate": 0.0,
                    "is_defined_steering_tire_rotation_rate": False},
        "longitudinal": {"velocity": target, "acceleration": physical.accel_mps2, "jerk": 0.0,
                         "is_defined_acceleration": True, "is_defined_jerk": False},
    }


def policy_metadata(limits: ActionLimits = ActionLimits()) -> dict[str, Any]:
    """What an exported policy must carry to be fed and read correctly (strict JSON)."""
    return {
        "contract": "dsp_driving.driving.contract",
        "contract_version": 1,
        "frame": "REP-103 (x forward, y left, yaw CCW); steer + left",
        "features": [{"name": n, "scale": s, "clip": c} for n, s, c in FEATURES],
        "preview_distances_m": list(PREVIEW_DISTANCES_M),
        "gap_range_m": GAP_RANGE_M,
        "action_names": list(ACTION_NAMES),
        "action_limits": dataclasses.asdict(limits),
    }
