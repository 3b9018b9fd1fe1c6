"""Per-episode evaluation of exported policies: returns and how each episode ended.

    python bench/eval_runs.py runs/driving/highway_* [--episodes 10] [--seed 1000000]

Loads each run's policy.onnx through the torch-free runtime (dsp_driving.inference), runs
the deterministic policy on the held-out seeds the trainer evaluates on, and prints one
markdown row per run: mean and std of the return, each episode's return, and the count of
episodes ended by a collision, by leaving the road, or by the time limit, and the mean speed.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from dsp_driving.evaluation import evaluate
from dsp_driving.inference import OnnxPolicy


def episodes(policy: OnnxPolicy, env_id: str, count: int, seed: int
             ) -> tuple[list[float], Counter, float]:
    """Returns, end reasons and mean speed (m/s, over all steps) of ``count`` episodes with
    reset seeds seed, seed + 1, ..."""
    ends, speeds = Counter(), []

    def on_step(info: dict, done: bool) -> None:
        speeds.append(float(info.get("speed_mps", np.nan)))
        if done:
            ends[info.get("termination", "time_limit")] += 1

    result = evaluate(policy.act, env_id, count, seed, on_step=on_step)
    return result["returns"], ends, float(np.nanmean(speeds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1_000_000)
    args = parser.parse_args()
    print("| run | hidden | eval return | per episode | collision | off road | time limit | "
          "mean speed m/s |")
    print("|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        model = run / "policy.onnx"
        if not model.is_file():
            continue
        policy = OnnxPolicy(model)
        meta = policy.metadata
        returns, ends, speed = episodes(policy, meta["env_id"], args.episodes, args.seed)
        per = " ".join(f"{r:.0f}" for r in returns)
        print(f"| {run.name} | {meta['hidden_compact']} | {np.mean(returns):.1f} +/- "
              f"{np.std(returns):.1f} | {per} | {ends['collision']} | {ends['off_road']} | "
              f"{ends['time_limit']} | {speed:.1f} |")


if __name__ == "__main__":
    main()
