"""policy_node: the compact policy driving the car at a fixed rate (numpy + onnxruntime).

``ros2 run dsp_driving policy_node`` on ROS 2, or ``dsp-driving drive --model FILE`` over DDS.
Topics, parameters, triggers: README ("Driving the car: policy_node"), nodes/parameters.py.
This class wires topics to nodes/scene.py (ros mode) and controller.PolicyController.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

from dsp_driving.controller import Decision, PolicyController, load_policy
from dsp_driving.nodes import conversions
from dsp_driving.nodes.parameters import PolicyNodeConfig
from dsp_driving.nodes.scene import SceneAssembler
from dsp_driving.rosbag.writer import Recorder
from dsp_driving.transport import DEFAULT_QOS, SENSOR_QOS, Node, dataclass_from_parameters
from dsp_driving.transport.base import LATCHED_QOS, interrupt_on_signals, signals_ignored

STATUS_PERIOD_S = 1.0
SHUTDOWN_ACK_S = 0.5  # at shutdown, wait this long at most for the safe command's delivery
POLICY_TOPIC_QOS = LATCHED_QOS  # as trainer_node publishes dsp/policy
PATH_LATCHED_QOS = LATCHED_QOS  # path_qos: transient_local (carla_waypoint_publisher's)


class PolicyNode:
    """Subscriptions -> scene and controller; a timer at rate_hz -> command, action, status."""

    def __init__(self, node: Node, cfg: PolicyNodeConfig | None = None) -> None:
        self.node, self.log = node, node.logger
        self.cfg = cfg if cfg is not None else dataclass_from_parameters(node, PolicyNodeConfig)
        cfg = self.cfg
        if not cfg.model:
            raise ValueError("model='': set the policy file (parameter model, or --model)")
        self.controller = PolicyController(load_policy(cfg.model), cfg.safety,
                                           control_period_s=1.0 / cfg.rate_hz)
        self.scene = SceneAssembler(cfg)  # ros mode: the newest odometry, path and lead
        self.log.info(f"policy {cfg.model} (sha256 {self.controller.policy.sha256[:12]}), "
                      f"{cfg.input_mode} in, {cfg.command_interface} out at {cfg.rate_hz:g} Hz")
        self.recorder: Recorder | None = None
        if cfg.record_bag:
            path = cfg.record_bag.replace("{stamp}", time.strftime("%Y%m%d-%H%M%S"))
            self.recorder = Recorder(node, path, cfg.record_segment_s)
            self.log.info(f"recording to the bag {path}")
        publisher = functools.partial(conversions.publisher, node, self.recorder)
        subscribe = functools.partial(conversions.subscribe, node, self.recorder)
        ros_type, topic = conversions.COMMAND_TOPICS[cfg.command_interface]
        self.command_pub = publisher(ros_type, topic.format(role=cfg.role_name))
        self.action_pub = publisher("std_msgs/msg/Float32MultiArray", "action")
        self.status_pub = publisher("diagnostic_msgs/msg/DiagnosticArray", "policy_node/status")
        if cfg.input_mode == "features":
            subscribe("std_msgs/msg/Float32MultiArray", "observation", self._on_features,
                      SENSOR_QOS)
        else:
            path_qos = PATH_LATCHED_QOS if cfg.path_qos == "transient_local" else DEFAULT_QOS
            subscribe("nav_msgs/msg/Odometry", "odom", self._on_odometry, SENSOR_QOS)
            subscribe("nav_msgs/msg/Path", "path", self._on_path, path_qos)
            subscribe("nav_msgs/msg/Odometry", "lead", self._on_lead, SENSOR_QOS)
        if cfg.policy_topic:
            subscribe("std_msgs/msg/String", cfg.policy_topic, self._on_policy, POLICY_TOPIC_QOS)
        self._decision: Decision | None = None  # the last command
        self._latency_s = 0.0  # its work (wall time)
        self._last_command_s = self._last_status_s = -math.inf  # node clock
        node.create_timer(1.0 / cfg.rate_hz, self._on_timer)

    def shutdown(self) -> None:
        """The last act: the safe command once (brake, last steering), then finish the
        recording. The node itself is the caller's to destroy."""
        try:
            decision = self.controller.safe("shutdown", self._now_s())
            self.command_pub.publish(conversions.command_message(self.node, self.cfg, decision,
                                                              self.controller.speed_mps))
            self.action_pub.publish(conversions.action_message(self.node, decision))
            self.command_pub.wait_for_acked(SHUTDOWN_ACK_S)  # delivered before we go
        except Exception as exc:  # noqa: BLE001  (the bag is still closed)
            self.log.error(f"the shutdown safe command failed: {type(exc).__name__}: {exc}")
        finally:
            self.close()

    def close(self) -> None:
        """Finish the recording (the node itself is the caller's to destroy)."""
        if self.recorder is not None:
            self.recorder.close()

    def _now_s(self) -> float:
        return self.node.now_ns() * 1e-9

    def _warn(self, key: str, text: str) -> None:
        if text:  # "": nothing went wrong
            self.log.warning(text, throttle_s=self.cfg.warn_period_s, key=key)

    def _on_features(self, msg: Any) -> None:
        why = self.controller.set_observation(list(msg.data), self._now_s())
        if why:
            self._warn("features", f"observation refused, braking: {why}")
        elif self.cfg.trigger == "input":
            self._command()

    def _on_odometry(self, msg: Any) -> None:
        why = self.scene.on_odometry(msg, self._now_s())
        if why:
            self._warn("odom", f"odometry refused, braking: {self.controller.refuse(why)}")
        elif self.cfg.trigger == "input":
            self._command()

    def _on_path(self, msg: Any) -> None:  # path and lead: used from the next odometry on
        self._warn("path", self.scene.on_path(msg))

    def _on_lead(self, msg: Any) -> None:
        why = self.scene.on_lead(msg, self._now_s())
        self._warn("lead", why and f"lead odometry ignored: {why}")

    def _on_policy(self, msg: Any) -> None:
        why = self.controller.reload(msg.data)
        if why:
            self.log.error(f"new policy {msg.data!r} refused, the old one keeps driving: {why}")
        else:
            self.log.info(f"switched to policy {msg.data} "
                          f"(sha256 {self.controller.policy.sha256[:12]})")

    def _on_timer(self) -> None:
        now = self._now_s()  # control's one clock (sim time under use_sim_time), as this timer's
        recent = 0.0 <= now - self._last_command_s < 0.5 / self.cfg.rate_hz  # back: long ago
        if self.cfg.trigger == "timer" or not recent:  # trigger=input: only fill gaps
            self._command()
        if not 0.0 <= now - self._last_status_s < STATUS_PERIOD_S:
            self._last_status_s = now
            if self._decision is not None:
                self.status_pub.publish(conversions.policy_status(
                    self.node, self.cfg, self.controller, self._decision, self._latency_s))

    def _command(self) -> None:
        """Decide and publish the command and the action (the safe command if deciding fails)."""
        start = time.perf_counter()
        try:
            scene, why = self.scene.take(self._now_s())  # ros mode: once per odometry
            if scene is not None:
                why = self.controller.set_scene(scene, self.scene.received_s)
                why = why and f"odometry refused, braking: {why}"
            self._warn("odom", why)
            decision = self.controller.decide(self._now_s())
        except Exception as exc:  # noqa: BLE001  (whatever failed, the car gets a command)
            self.log.error(f"deciding failed, braking: {type(exc).__name__}: {exc}",
                           throttle_s=self.cfg.warn_period_s, key="decide")
            decision = self.controller.safe(f"error: {type(exc).__name__}", self._now_s())
        if decision.safe and self.controller.safe_commands > 1:
            self._warn("safe", f"safe command: {decision.reason}")
        self.command_pub.publish(conversions.command_message(self.node, self.cfg, decision,
                                                          self.controller.speed_mps))
        self.action_pub.publish(conversions.action_message(self.node, decision))
        self._decision = decision
        self._last_command_s = self._now_s()
        self._latency_s = time.perf_counter() - start  # work done, so wall time


def run(node: Node, duration_s: float | None = None,
        policy_node: PolicyNode | None = None) -> None:
    """Drive on ``node`` (with ``policy_node``, else a new one) until Ctrl-C or SIGTERM (or
    ``duration_s``); then, whatever happened, the safe command once, the recording finished
    and the node destroyed, with further signals ignored until that is done."""
    with interrupt_on_signals():
        try:
            policy_node = policy_node if policy_node is not None else PolicyNode(node)
            node.spin(duration_s=duration_s)
        except KeyboardInterrupt:
            pass
        finally:
            with signals_ignored():
                if policy_node is not None:
                    policy_node.shutdown()
                node.destroy()


def main(args: list[str] | None = None) -> int:
    """``ros2 run dsp_driving policy_node`` (rclpy; parameters from --ros-args). Exit status
    0 after Ctrl-C or SIGTERM; 2, with the reason logged, when the node cannot start (a bad
    parameter or policy file, a missing message package, an existing bag folder)."""
    from dsp_driving.transport import create_node

    with interrupt_on_signals():  # one scope from the start: no moment without a handler
        try:
            node = create_node("policy_node", backend="rclpy")
        except KeyboardInterrupt:
            return 0
        try:
            policy_node = PolicyNode(node)
        except KeyboardInterrupt:
            with signals_ignored():
                node.destroy()
            return 0
        except (ValueError, FileNotFoundError, FileExistsError, ModuleNotFoundError) as exc:
            node.logger.error(f"policy_node cannot start: {exc}")
            with signals_ignored():
                node.destroy()
            return 2
        run(node, policy_node=policy_node)
    return 0
