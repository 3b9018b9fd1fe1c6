"""A scripted reference driver on the embedded task, to put learned returns on a scale.

    python bench/highway_reference.py [--env dsp_driving/HighwayDrive-v0] [--episodes 10]

The driver (dsp_driving/driving/reference.py) reads only the contract observation, as a
policy does: pure pursuit for steering, a time-headway gap controller for speed, no lane
changes. Evaluated on the trainer's held-out seeds (1000000...), it prints the mean, std and
per-episode returns for a few headways.
"""

from __future__ import annotations

import argparse

from dsp_driving.driving.reference import reference_action
from dsp_driving.evaluation import evaluate


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
