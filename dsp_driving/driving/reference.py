"""A scripted reference driver that reads only the contract observation.

Pure pursuit on the path preview 10 m ahead for steering; a constant-time-headway gap
controller behind the lead vehicle, under the speed limit, for speed. It never changes lane.
It puts learned returns on a scale (bench/highway_reference.py) and, in the tests, shows the
scene's geometry is right: driving on nothing but the observation, it stays on the road.
"""

from __future__ import annotations

import numpy as np

from dsp_driving.driving import contract

IDX = contract.INDEX
WHEELBASE_M = 5.0  # highway-env's Vehicle.LENGTH: its bicycle turns at about v * delta / L
PREVIEW_M = 10.0
LIMITS = contract.ActionLimits()


def reference_action(obs: np.ndarray, headway_s: float,
                     limits: contract.ActionLimits = LIMITS) -> np.ndarray:
    """Normalised [steer, accel] from one contract observation."""
    speed = float(obs[IDX["speed"]]) * contract.SPEED_SCALE_MPS
    target = float(obs[IDX["target_speed"]]) * contract.SPEED_SCALE_MPS
    lateral = float(obs[IDX["path_lateral_10m"]]) * contract.PREVIEW_SCALE_M
    steer_rad = np.arctan(2.0 * WHEELBASE_M * lateral / PREVIEW_M**2)  # pure pursuit
    if obs[IDX["has_lead"]] > 0.5:
        gap = float(obs[IDX["lead_gap"]]) * contract.GAP_RANGE_M
        lead_speed = speed + float(obs[IDX["lead_relative_speed"]]) * contract.SPEED_SCALE_MPS
        target = min(target, lead_speed + (gap - 5.0 - headway_s * speed) / 2.0)
    accel = float(np.clip((target - speed) / 2.0, -limits.max_decel_mps2, limits.max_accel_mps2))
    return contract.from_physical(float(steer_rad), accel, limits)
