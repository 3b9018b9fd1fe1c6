"""``dsp-driving sweep``: one env x variants x seeds on Ray Tune, resumable
(dsp_driving.experiments.sweep; docs/experiments.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dsp_driving.config import read_yaml_mapping


def add_parser(sub: Any) -> None:
    """Register `sweep` on the dsp-driving parser."""
    p = sub.add_parser("sweep", help="train env x variants x seeds on Ray Tune (resumable)",
                       description="Run every trial DIR/<env>/<variant>/seed<k>/ that is not "
                       "done; a rerun re-trains nothing finished and resumes the rest.")
    p.add_argument("spec", nargs="?", type=Path, help="YAML spec file (keys: env, variants, "
                   "seeds, out, config, total_steps, eval_episodes, max_concurrent, "
                   "address); the options override it")
    p.add_argument("--env", help="gymnasium env id, e.g. CartPole-v1")
    p.add_argument("--variants", help="comma list of dense, dsp, group_lasso, "
                   "magnitude_gradual, small_dense, posthoc")
    p.add_argument("--seeds", help="comma list of training seeds, e.g. 1,2,3")
    p.add_argument("--total-steps", type=int, help="default: the config's")
    p.add_argument("--config", type=Path, help="base config (default: config/paper/<env>"
                   ".yaml, else config/train.yaml)")
    p.add_argument("--out", type=Path, help="the sweep folder DIR")
    p.add_argument("--eval-episodes", type=int, help="policy.onnx evaluation episodes "
                   "(default 20, held-out seeds from 2000000)")
    p.add_argument("--address", help="an existing Ray cluster (default: a local Ray)")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: one per "
                   "CPU)")
    p.set_defaults(func=run)


def spec_from_args(args: argparse.Namespace) -> Any:  # -> experiments.sweep.SweepSpec
    """The spec file (if any), then the options over it."""
    from dsp_driving.experiments.sweep import SweepSpec

    data = dict(read_yaml_mapping(args.spec, "sweep spec")) if args.spec else {}
    for key in ("env", "variants", "seeds", "total_steps", "config", "out", "eval_episodes",
                "address", "max_concurrent"):
        value = getattr(args, key)
        if value is not None:
            data[key] = value
    return SweepSpec.from_mapping(data)


def run(args: argparse.Namespace) -> int:
    from dsp_driving.experiments.sweep import run_sweep

    outcome = run_sweep(spec_from_args(args))
    if "interrupted" in outcome.values():
        print("interrupted: run the same command again to resume")
        return 130
    return 0 if all(s == "done" for s in outcome.values()) else 1
