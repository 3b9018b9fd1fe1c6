"""``dsp-driving``: train, export, evaluate, drive, inspect topics and report on bags without
ROS."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
import contextlib
import json
import logging
from pathlib import Path
import sys

from dsp_driving import topic_cli
from dsp_driving.analysis import report
from dsp_driving.config import (
    TrainConfig,
    default_config_path,
    from_dict,
    load_config,
    parse_overrides,
)
from dsp_driving.nodes import drive_cli
from dsp_driving.transport.base import interrupt_on_signals


def _train(args: argparse.Namespace) -> int:
    from dsp_driving.nodes.trainer_node import TrainerNodeConfig, learn

    if not args.publish and (args.domain is not None or args.wait_subscribers):
        print("error: --domain and --wait-subscribers need --publish", file=sys.stderr)
        return 2
    runner = _resume_runner(args) if args.resume else _new_runner(args)
    if runner is None:
        return 2
    own = TrainerNodeConfig(out=str(runner.run_dir), resume=bool(args.resume),
                            carla_config=str(args.carla_config or ""),
                            carla_host=args.carla_host or "", carla_port=args.carla_port or 0,
                            wait_for_subscribers_s=args.wait_subscribers,
                            record_bag=not args.no_bag)
    if not args.publish:
        learn(runner, None, own)
        return 0
    from dsp_driving.transport import create_node

    try:
        node = create_node("trainer_node", backend="dds", domain_id=args.domain)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"`dsp-driving train --publish` needs {exc.name}: pip "
                                  "install -e '.[dds]'") from None
    try:
        learn(runner, node, own)
    finally:
        node.destroy()
    return 0


def _resume_runner(args: argparse.Namespace):  # -> trainer.Runner | None (torch: lazily)
    """--resume RUN_DIR: the run's saved configuration; only --total-steps may change it."""
    from dsp_driving.trainer import Runner

    extra = [flag for flag, value in (("--env", args.env), ("--config", args.config),
             ("--seed", args.seed), ("--num-envs", args.num_envs), ("--out", args.out),
             ("--set", args.set)) if value is not None]
    if args.no_prune:
        extra.append("--no-prune")
    if extra:
        print(f"error: with --resume only --total-steps (and the --publish and --carla-* "
              f"options) may be given (got {extra[0]}): the run keeps the configuration "
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


def _eval(args: argparse.Namespace) -> int:
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


def _export(args: argparse.Namespace) -> int:
    from dsp_driving.export import ExportError, export_run

    try:
        export_run(args.run, args.out)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dsp-driving``."""
    parser = argparse.ArgumentParser(prog="dsp-driving", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

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
    g = p.add_argument_group("dsp_driving/Carla-v0")
    g.add_argument("--carla-config", type=Path, help="the bridge's YAML (default: a resumed "
                   "run's saved settings, else built-in defaults); saved in the run's "
                   "train.env_kwargs")
    g.add_argument("--carla-host", help="override the config's host")
    g.add_argument("--carla-port", type=int, help="override the config's RPC port")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="evaluate a run's compact actor deterministically")
    p.add_argument("run", help="run folder, actor_compact.pt, or policy.onnx (needs no torch)")
    p.add_argument("--episodes", type=int)
    p.add_argument("--seed", type=int, help="first evaluation seed (default: train.eval_seed)")
    p.set_defaults(func=_eval)

    p = sub.add_parser("export", help="write RUN_DIR/policy.onnx (+ policy.json) from a run's "
                       "compact actor")
    p.add_argument("run", help="run folder or actor_compact.pt")
    p.add_argument("--out", type=Path, help="output .onnx (default: RUN_DIR/policy.onnx)")
    p.set_defaults(func=_export)

    topic_cli.add_parser(sub)
    drive_cli.add_parser(sub)
    report.add_parser(sub)
    return parser


class _CliFormatter(logging.Formatter):
    """INFO as the plain message; warnings and errors prefixed as the CLI always wrote them."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        return text


@contextlib.contextmanager
def _package_logging_to_stdout() -> Iterator[None]:
    """The dsp_driving loggers (INFO and above) on stdout while a command runs."""
    package = logging.getLogger("dsp_driving")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_CliFormatter())
    previous = package.level, package.propagate
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    package.propagate = False
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.level, package.propagate = previous


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so bags, checkpoints and DDS entities are closed
    try:
        with interrupt_on_signals(), _package_logging_to_stdout():
            return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, ModuleNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
