"""The driving reward, shared by every simulator so that returns mean the same thing.

Per step: progress along the route, as a fraction of what driving at the speed limit would
give, scaled by lane-centring and speed compliance, minus small smoothness penalties on how
much the action changed. Collision and leaving the road end the episode with a penalty; the
time limit only truncates (the env decides that, not this module).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from dsp_driving.validation import is_finite_number, require


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    """Weights of the reward terms (all >= 0)."""

    overspeed_tolerance: float = 0.2  # compliance falls to 0 at (1 + this) * speed limit
    steer_change_weight: float = 0.1  # per (delta normalised steer)^2
    accel_change_weight: float = 0.05  # per (delta normalised accel)^2
    collision_penalty: float = 10.0
    off_road_penalty: float = 10.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            require(is_finite_number(value) and value >= 0, f"RewardConfig.{f.name}", value,
                    "must be a finite number >= 0")
        require(self.overspeed_tolerance > 0, "RewardConfig.overspeed_tolerance",
                self.overspeed_tolerance, "must be > 0")


class RewardTerms(NamedTuple):
    """The reward and its parts (for logging and tests)."""

    reward: float
    progress: float  # metres along the route / (speed limit * dt)
    centring: float  # in [0, 1]
    compliance: float  # in [0, 1]
    smoothness: float  # the penalty subtracted (>= 0)
    terminal: float  # the penalty subtracted at a collision or leaving the road (>= 0)


def centring(lateral_offset_m: float, lane_width_m: float) -> float:
    """1 on the lane centre, falling quadratically to 0 at the lane's edge."""
    return max(0.0, 1.0 - (2.0 * lateral_offset_m / lane_width_m) ** 2)


def compliance(speed_mps: float, speed_limit_mps: float, tolerance: float) -> float:
    """1 up to the speed limit, falling linearly to 0 at (1 + tolerance) * limit."""
    over = (speed_mps - speed_limit_mps) / (tolerance * speed_limit_mps)
    return float(min(1.0, max(0.0, 1.0 - over)))


def step_reward(progress_m: float, dt_s: float, speed_mps: float, speed_limit_mps: float,
                lateral_offset_m: float, lane_width_m: float,
                action: tuple[float, float], prev_action: tuple[float, float],
                collided: bool = False, off_road: bool = False,
                cfg: RewardConfig = RewardConfig()) -> RewardTerms:
    """One step's reward. ``progress_m`` is the arc length gained along the route this step
    (negative when going backwards, which the reward passes through unscaled)."""
    progress = progress_m / (speed_limit_mps * dt_s)
    c = centring(lateral_offset_m, lane_width_m)
    k = compliance(speed_mps, speed_limit_mps, cfg.overspeed_tolerance)
    shaped = progress * c * k if progress > 0 else progress
    smooth = (cfg.steer_change_weight * (action[0] - prev_action[0]) ** 2
              + cfg.accel_change_weight * (action[1] - prev_action[1]) ** 2)
    terminal = (cfg.collision_penalty if collided else 0.0) + (
        cfg.off_road_penalty if off_road else 0.0)
    return RewardTerms(shaped - smooth - terminal, progress, c, k, smooth, terminal)
