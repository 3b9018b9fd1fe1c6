"""Env steps per second of the three vector modes (sync, async, ray) on HighwayDrive-v0.

What is timed: ``envs.step`` only, with random actions drawn beforehand, after a reset and
``--warmup`` steps; every (mode, num_envs) pair runs in its own subprocess, ``--reps`` times,
interleaved (for each repetition every pair once, in a rotating order) so that load drift hits
every pair alike. Env construction, Ray start-up and the reset are outside the window. The
ratio is to sync at the same number of envs (median over repetitions). A Ray actor per env
asks for one CPU (train.env_num_cpus), and Ray is started with --ray-cpus logical CPUs so that
4 envs fit on a 2-core machine.

Usage::

    python bench/vector_modes.py                       # ~5 min on 2 idle cores
    python bench/vector_modes.py --steps 200 --reps 1  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from bench_common import machine_info, markdown_table, text_table

ENV_ID = "dsp_driving/HighwayDrive-v0"
MODES = ("sync", "async", "ray")


def measure(mode: str, num_envs: int, steps: int, warmup: int, ray_cpus: int) -> dict:
    """One (mode, num_envs) measurement in this process."""
    import numpy as np

    from dsp_driving.rl.envs import make_vec_env

    options = None
    if mode == "ray":
        import ray

        ray.init(num_cpus=ray_cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        options = {"step_timeout_s": 120.0}
    envs = make_vec_env(ENV_ID, num_envs, mode, ray_options=options)
    try:
        envs.reset(seed=0)
        rng = np.random.default_rng(0)
        actions = rng.uniform(-1, 1, (warmup + steps, num_envs, 2)).astype(np.float32)
        for a in actions[:warmup]:
            envs.step(a)
        start = time.perf_counter()
        for a in actions[warmup:]:
            envs.step(a)
        elapsed = time.perf_counter() - start
    finally:
        envs.close()
    return {"mode": mode, "num_envs": num_envs, "env_steps": steps * num_envs,
            "seconds": elapsed, "steps_per_s": steps * num_envs / elapsed}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=400, help="vector steps timed per run")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--envs", default="1,2,4")
    p.add_argument("--ray-cpus", type=int, default=8)
    p.add_argument("--json", help="write the measurements here")
    p.add_argument("--one", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        result = measure(args.one[0], int(args.one[1]), args.steps, args.warmup, args.ray_cpus)
        print(json.dumps(result))
        return 0
    pairs = [(m, int(n)) for n in args.envs.split(",") for m in MODES]
    results: dict[tuple[str, int], list[float]] = {pair: [] for pair in pairs}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for rep in range(args.reps):
        order = pairs[rep % len(pairs):] + pairs[:rep % len(pairs)]
        for mode, n in order:
            out = subprocess.run(
                [sys.executable, __file__, "--one", mode, str(n), "--steps", str(args.steps),
                 "--warmup", str(args.warmup), "--ray-cpus", str(args.ray_cpus)],
                check=True, capture_output=True, text=True, env=env).stdout
            result = json.loads(out.strip().splitlines()[-1])
            results[(mode, n)].append(result["steps_per_s"])
            print(f"rep {rep + 1}/{args.reps} {mode:5s} x{n}: "
                  f"{result['steps_per_s']:.0f} env steps/s", file=sys.stderr)
    info = machine_info({})
    head = ["num_envs", "mode", "env steps/s (median)", "min", "max", "ratio to sync"]
    rows = []
    for mode, n in pairs:
        median = statistics.median(results[(mode, n)])
        sync = statistics.median(results[("sync", n)])
        rows.append([str(n), mode, f"{median:.0f}", f"{min(results[(mode, n)]):.0f}",
                     f"{max(results[(mode, n)]):.0f}", f"{median / sync:.2f}"])
    print(f"{ENV_ID}, {args.steps} vector steps x {args.reps} reps; "
          + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(text_table(head, rows))
    print()
    print(markdown_table(head, rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "steps": args.steps, "reps": args.reps,
                       "results": {f"{m} x{n}": v for (m, n), v in results.items()}}, fh,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
