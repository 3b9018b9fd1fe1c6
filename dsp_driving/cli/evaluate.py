"""``dsp-driving eval``: a run's compact actor (or a policy.onnx, without torch), evaluated
deterministically on held-out seeds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dsp_driving.config import TrainConfig


def add_parser(sub: Any) -> None:
    """Register `eval` on the dsp-driving parser."""
    p = sub.add_parser("eval", help="evaluate a run's compact actor deterministically")
    p.add_argument("run", help="run folder, actor_compact.pt, or policy.onnx (needs no torch)")
    p.add_argument("--episodes", type=int)
    p.add_argument("--seed", type=int, help="first evaluation seed (default: train.eval_seed)")
    p.set_defaults(func=run)



def run(args: argparse.Namespace) -> int:
    from dsp_driving.evaluation import evaluate

    path = Path(args.run)
    if path.suffix == ".onnx":
        # torch-free: the ONNX policy carries the normaliser, env id and config
        from dsp_driving.inference import OnnxPolicy

        policy = OnnxPolicy(path)
        policy_path, act, meta = path, policy.act, policy.metadata
    else:
        from dsp_driving.actor_file import load_actor, resolve_actor_path

        policy_path = resolve_actor_path(path)
        actor, meta = load_actor(policy_path)
        act = actor.act
    cfg = (meta.get("config") or {}).get("train", {})
    defaults = TrainConfig()
    episodes = cfg.get("eval_episodes", defaults.eval_episodes) if args.episodes is None \
        else args.episodes
    seed = cfg.get("eval_seed", defaults.eval_seed) if args.seed is None else args.seed
    result = evaluate(act, meta["env_id"], episodes, seed, progress=True,
                      env_kwargs=cfg.get("env_kwargs"))
    result.pop("returns")
    print(json.dumps({"policy": str(policy_path), "env": meta["env_id"], **result}, indent=2))
    return 0
