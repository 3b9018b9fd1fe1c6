"""A scripted reference driver on the embedded task, to put learned returns on a scale.

    python bench/highway_reference.py [--env dsp_driving/HighwayDrive-v0] [--episodes 10]

Reads only the contract observation (as a policy does): pure pursuit on the path preview
10 m ahead for steering, and a constant-time-headway gap controller behind the lead vehicle
for speed, under the speed limit. It never changes lane. Evaluated on the trainer's held-out
seeds (1000000...), it prints the mean, std and per-episode returns for a few headways.
"""

from __future__ import annotations

import argparse

import numpy as np

from dsp_driving.driving import contract
from dsp_driving.evaluation import evaluate

IDX = contract.INDEX
WHEELBASE_M = 4.5  # highway-env's vehicle length, as its bicycle model uses it
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="dsp_driving/HighwayDrive-v0")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1_000_000)
    args = parser.parse_args()
    for headway in (1.0, 1.5, 2.0):
        result = evaluate(lambda o, h=headway: reference_action(o, h), args.env, args.episodes,
                          args.seed)
        returns = " ".join(f"{r:.0f}" for r in result["returns"])
        print(f"headway {headway:.1f} s: return {result['return_mean']:.1f} +/- "
              f"{result['return_std']:.1f}, mean length {result['length_mean']:.0f} "
              f"steps ({returns})")


if __name__ == "__main__":
    main()
