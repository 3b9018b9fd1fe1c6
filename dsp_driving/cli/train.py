"""``dsp-driving train``: a new run or a resumed one (trainer.Runner), optionally publishing
its stats over DDS (trainer_node without ROS 2)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
import sys
from typing import Any

from dsp_driving.config import default_config_path, from_dict, load_config, parse_overrides

log = logging.getLogger(__name__)


def add_parser(sub: Any) -> None:
    """Register `train` on the dsp-driving parser."""
    p = sub.add_parser("train", help="train a PPO policy while pruning it")
    p.add_argument("--env", help="gymnasium env id, e.g. CartPole-v1 (default: the config's "
                   "train.env_id)")
    p.add_argument("--config", type=Path, help="YAML config (default: config/train.yaml)")
    p.add_argument("--total-steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--num-envs", type=int)
    p.add_argument("--out", type=Path, help="run folder (default: runs/ENV_sSEED_TIME)")
    p.add_argument("--no-prune", action="store_true", help="dense PPO baseline")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config field, e.g. pruning.lambda_actor=2e-4")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run")
    p.add_argument("--no-bag", action="store_true", help="do not record the dsp/* topics "
                   "into RUN_DIR/bag (a rosbag2 bag for `dsp-driving report`)")
    g = p.add_argument_group("ROS 2 topics (trainer_node over DDS, no ROS 2 needed)")
    g.add_argument("--publish", action="store_true", help="publish dsp/compaction, "
                   "dsp/compaction/summary, dsp/training and dsp/policy")
    g.add_argument("--domain", type=int, help="DDS domain id (default: $ROS_DOMAIN_ID or 0)")
    g.add_argument("--wait-subscribers", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to this long for subscribers before training")
    p.add_argument("--address", help="the Ray cluster of train.vector_mode=ray (default: the "
                   "config's train.ray_address; '' = a local Ray); also on --resume")
    g = p.add_argument_group("dsp_driving/Carla-v0")
    g.add_argument("--carla-config", type=Path, help="the bridge's YAML (default: a resumed "
                   "run's saved settings, else built-in defaults); saved in the run's "
                   "train.env_kwargs")
    g.add_argument("--carla-host", help="override the config's host")
    g.add_argument("--carla-port", type=int, help="override the config's RPC port")
    p.set_defaults(func=run)



def run(args: argparse.Namespace) -> int:
    """Build the run (trainer.Runner), add its sinks, train. With --publish, trainer_node's
    stats topics over DDS (no ROS 2 needed)."""
    from dsp_driving.driving.carla_config import run_env_kwargs

    if not args.publish and (args.domain is not None or args.wait_subscribers):
        print("error: --domain and --wait-subscribers need --publish", file=sys.stderr)
        return 2
    runner = _resume_runner(args) if args.resume else _new_runner(args)
    if runner is None:
        return 2
    runner.set_env_kwargs(run_env_kwargs(
        runner.cfg.train.env_id, runner.cfg.train.env_kwargs, args.carla_config,
        args.carla_host, args.carla_port, runner.run_dir))
    if args.address is not None:
        runner.update_train(ray_address=args.address)
    if _one_process_per_server(runner.cfg, args.set or []):  # a resume too (no --set there)
        runner.update_train(vector_mode="ray")
        print(f"{runner.cfg.train.env_id}: train.vector_mode=ray, each env and its simulator "
              "in its own supervised process (--set train.vector_mode=sync keeps them here)")
    node = _dds_node(args.domain) if args.publish else None
    try:
        if node is not None:
            from dsp_driving.nodes.trainer_node import publish_stats

            publish_stats(runner, node, args.wait_subscribers)
        if not args.no_bag:
            runner.record_bag(node.resolve_topic if node is not None else None)
        log.info(f"run folder: {runner.run_dir}")
        runner.learn()
    finally:
        if node is not None:
            node.destroy()
    return 0


def _dds_node(domain: int | None):  # -> transport.Node (cyclonedds: lazily)
    from dsp_driving.transport import create_node

    try:
        return create_node("trainer_node", backend="dds", domain_id=domain)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"`dsp-driving train --publish` needs {exc.name}: pip "
                                  "install -e '.[dds]'") from None


def _resume_runner(args: argparse.Namespace):  # -> trainer.Runner | None (torch: lazily)
    """--resume RUN_DIR: the run's saved configuration; only --total-steps may change it."""
    from dsp_driving.trainer import Runner

    extra = [flag for flag, value in (("--env", args.env), ("--config", args.config),
             ("--seed", args.seed), ("--num-envs", args.num_envs), ("--out", args.out),
             ("--set", args.set)) if value is not None]
    if args.no_prune:
        extra.append("--no-prune")
    if extra:
        print(f"error: with --resume only --total-steps (and the --publish, --address and "
              f"--carla-* options) may be given (got {extra[0]}): the run keeps the configuration "
              "saved in its folder", file=sys.stderr)
        return None
    return Runner.resume(args.resume, args.total_steps)


def _new_runner(args: argparse.Namespace):  # -> trainer.Runner
    """A new run: the config file, --set, then the options as typed values over them,
    validated together by from_dict."""
    from dsp_driving.trainer import Runner, default_run_dir

    config_path = args.config or default_config_path()
    overrides = parse_overrides(list(args.set or []))
    overrides.setdefault("train", {}).update(
        {k: v for k, v in (("env_id", args.env), ("total_steps", args.total_steps),
                           ("seed", args.seed), ("num_envs", args.num_envs))
         if v is not None})
    if args.no_prune:
        overrides.setdefault("pruning", {})["enabled"] = False
    cfg = from_dict(overrides, load_config(config_path))
    print(f"config: {config_path or 'built-in defaults'}")
    return Runner.new(cfg, args.out or default_run_dir(cfg))


def _one_process_per_server(cfg: Any, sets: list[str]) -> bool:
    """rl.envs.wants_process_per_env, unless --set chose train.vector_mode (a sync run is then
    refused with the reason when it starts)."""
    from dsp_driving.rl.envs import wants_process_per_env

    chosen = any(item.partition("=")[0].strip() == "train.vector_mode" for item in sets)
    return wants_process_per_env(cfg.train) and not chosen
