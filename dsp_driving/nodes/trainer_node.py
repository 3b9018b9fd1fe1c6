"""trainer_node: PPO with dynamic structured pruning, publishing its compaction as it trains.

``ros2 launch dsp_driving train.launch.py`` (or ``ros2 run dsp_driving trainer_node --ros-args
--params-file config/train.yaml``) on ROS 2; ``dsp-driving train --publish ...`` over the DDS
transport. Topics, published after every PPO update:

- ``dsp/compaction`` (diagnostic_msgs/DiagnosticArray): one status per network and per hidden
  layer: alive/total neurons and weights (a layer's: the weights and biases into it),
  threshold, the network's R (unscaled regulariser), kappa.
- ``dsp/compaction/summary`` (std_msgs/Float32MultiArray): SUMMARY_LABELS, in that order (the
  layout's one dimension is labelled with them, comma-separated). Plots in PlotJuggler as is.
- ``dsp/training`` (diagnostic_msgs/DiagnosticArray): losses, approx_kl, learning rate,
  episode return and length, steps_per_s; at the end one more status with the evaluation.
- ``dsp/policy`` (std_msgs/String, transient local): the absolute path of the newest exported
  policy.onnx (snapshots every ``train.export_every`` updates, then the final one), which
  policy_node hot-reloads.

Values in the diagnostics are ``repr`` of the numbers in stats.jsonl (exact; null -> ``nan``).
Parameters: every training-config field with its dotted name (``ppo.learning_rate``,
``pruning.lambda_actor``, ``train.env_id``, ...; config/train.yaml) plus TrainerNodeConfig's.
"""

from __future__ import annotations

import logging
from typing import Any

from dsp_driving.config import Config
from dsp_driving.nodes.parameters import TrainerNodeConfig
from dsp_driving.nodes.stats_topics import NAME, StatsPublisher
from dsp_driving.topics import (
    COMPACTION_TOPIC,
    POLICY_TOPIC,
    SUMMARY_TOPIC,
    TRAINING_TOPIC,
)
from dsp_driving.trainer import Runner, default_run_dir
from dsp_driving.transport import Node, config_from_parameters, dataclass_from_parameters
from dsp_driving.transport.base import (
    LoggingBridge,
    interrupt_on_signals,
    package_logging_to,
    signals_ignored,
)

log = logging.getLogger(__name__)


def parameters(node: Node, base: Config | None = None) -> tuple[Config, TrainerNodeConfig]:
    """The training config (dotted names), then the node's own settings (an unknown name in
    either group is an error once both are declared)."""
    cfg = config_from_parameters(node, base, strict=False)
    return cfg, dataclass_from_parameters(node, TrainerNodeConfig)


def runner_for(cfg: Config, own: TrainerNodeConfig) -> Runner:
    """The node's run: resume ``own.out`` (with ``cfg.train.total_steps``), or a new one;
    the CARLA settings resolved into its train.env_kwargs."""
    from dsp_driving.driving.carla_config import run_env_kwargs

    if own.resume:
        runner = Runner.resume(own.out or default_run_dir(cfg), cfg.train.total_steps)
    else:
        runner = Runner.new(cfg, own.out or default_run_dir(cfg))
    runner.set_env_kwargs(run_env_kwargs(
        runner.cfg.train.env_id, runner.cfg.train.env_kwargs, own.carla_config or None,
        own.carla_host or None, own.carla_port or None, runner.run_dir))
    from dsp_driving.rl.envs import wants_process_per_env

    if wants_process_per_env(runner.cfg.train):  # it cannot train in sync mode
        runner.update_train(vector_mode="ray")
        log.info(f"{runner.cfg.train.env_id}: train.vector_mode=ray (each env and its "
                 "simulator in its own supervised process)")
    return runner


def publish_stats(runner: Runner, node: Node, wait_for_subscribers_s: float = 0.0
                  ) -> StatsPublisher:
    """Publish ``runner``'s stats on the dsp/* topics from ``node`` (waiting up to
    ``wait_for_subscribers_s`` for subscribers first)."""
    publisher = StatsPublisher(node, hardware_id=runner.cfg.train.env_id)
    runner.add_callback(publisher)
    if wait_for_subscribers_s > 0 and not publisher.wait_for_subscribers(
            wait_for_subscribers_s):
        log.warning(f"no subscriber on the dsp/* stats topics after "
                    f"{wait_for_subscribers_s:g} s: training anyway")
    log.info(f"publishing {COMPACTION_TOPIC}, {SUMMARY_TOPIC}, {TRAINING_TOPIC} and "
             f"{POLICY_TOPIC} ({node.backend})")
    return publisher


def run(node: Node, cfg: Config, own: TrainerNodeConfig) -> dict[str, Any]:
    """Train ``cfg`` (or resume ``own.out``), publishing the stats from ``node`` and, with
    ``own.record_bag``, recording them into RUN_DIR/bag."""
    runner = runner_for(cfg, own)
    publish_stats(runner, node, own.wait_for_subscribers_s)
    if own.record_bag:
        runner.record_bag(node.resolve_topic)
    log.info(f"run folder: {runner.run_dir}")
    return runner.learn()


def main(args: list[str] | None = None) -> int:
    """``ros2 run dsp_driving trainer_node`` (rclpy; parameters from --ros-args). Once its
    parameters are declared the node is served from a thread while it trains, so
    ``ros2 param`` and ``ros2 node info`` reach it. Exit status 0 when training ends or is
    stopped by Ctrl-C or SIGTERM (checkpoints are written atomically, so ``resume:=true``
    can go on from the last one); 2, with the reason logged, for a bad parameter."""
    from dsp_driving.transport import create_node

    with interrupt_on_signals():
        try:
            node = create_node(NAME, backend="rclpy")
        except KeyboardInterrupt:
            return 0
        stop_serving = None
        try:
            try:
                cfg, own = parameters(node)
            except (ValueError, FileNotFoundError) as exc:
                node.logger.error(f"trainer_node cannot start: {exc}")
                return 2
            stop_serving = node.serve_in_background()
            with package_logging_to(LoggingBridge(node.logger)):
                run(node, cfg, own)
        except KeyboardInterrupt:
            node.logger.info("stopped")
        finally:
            with signals_ignored():
                if stop_serving is not None:
                    stop_serving()
                node.destroy()
    return 0
