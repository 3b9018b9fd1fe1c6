"""policy_node: the compact policy driving the car at a fixed rate (numpy + onnxruntime).

``ros2 run dsp_driving policy_node --ros-args --params-file config/policy.yaml`` on ROS 2, or
``dsp-driving drive --model policy.onnx [--params-file YAML] [--set key=value ...]`` over the
DDS transport. Topics (relative names follow the node's namespace):

- in: ``observation`` (std_msgs/Float32MultiArray, input_mode=features); or, for
  input_mode=ros, ``odom`` (nav_msgs/Odometry of the ego), ``path`` (nav_msgs/Path: the centre
  line of the lane to follow, in the odometry's frame) and, optional, ``lead``
  (nav_msgs/Odometry of the vehicle ahead, same frame; forgotten after stale_timeout_s).
  The observation is then built by ``contract.observe``, the code the simulators use, at the
  first tick after each odometry message, from the newest path and lead.
  ``policy_topic`` (default ``dsp/policy``; std_msgs/String, transient local): a new policy
  file to switch to.
- out: the command (see nodes/messages.py COMMAND_TOPICS), ``action`` (the normalised action)
  and ``policy_node/status`` (diagnostic_msgs/DiagnosticArray, once a second; ROS's
  ``~/status`` while the node keeps its name).

``trigger=timer`` (default) sends a command every 1/rate_hz from the newest input;
``trigger=input`` also sends one at once on each accepted input (observation, or odometry in
ros mode), the timer then only filling gaps, so the watchdog works the same in both.

The decisions are :class:`dsp_driving.controller.PolicyController`'s; this class wires topics.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import math
import time
from typing import Any

import numpy as np

from dsp_driving.bag import Recorder
from dsp_driving.controller import (
    Decision,
    PolicyController,
    PolicyNodeConfig,
    load_policy,
)
from dsp_driving.driving import contract
from dsp_driving.nodes import messages
from dsp_driving.transport import DEFAULT_QOS, LATCHED_QOS, SENSOR_QOS, Node, QosProfile
from dsp_driving.transport.base import (
    Publisher,
    dataclass_from_parameters,
    interrupt_on_signals,
    signals_ignored,
)

STATUS_PERIOD_S = 1.0
SHUTDOWN_ACK_S = 0.5  # at shutdown, wait this long at most for the safe command's delivery
POLICY_TOPIC_QOS = LATCHED_QOS  # as trainer_node publishes dsp/policy
PATH_LATCHED_QOS = LATCHED_QOS  # path_qos: transient_local (carla_waypoint_publisher's)


class PolicyNode:
    """Subscriptions -> controller; a timer at rate_hz -> command, action and status."""

    def __init__(self, node: Node, cfg: PolicyNodeConfig | None = None) -> None:
        self.node, self.log = node, node.logger
        self.cfg = cfg if cfg is not None else dataclass_from_parameters(node, PolicyNodeConfig)
        if not self.cfg.model:
            raise ValueError("model='': set the policy file (parameter model, or --model)")
        self.controller = PolicyController(load_policy(self.cfg.model), self.cfg)
        self.log.info(f"policy {self.cfg.model} (sha256 {self.controller.policy.sha256[:12]}), "
                      f"{self.cfg.input_mode} in, {self.cfg.command_interface} out at "
                      f"{self.cfg.rate_hz:g} Hz")
        self.recorder: Recorder | None = None
        if self.cfg.record_bag:
            path = self.cfg.record_bag.replace("{stamp}", time.strftime("%Y%m%d-%H%M%S"))
            self.recorder = Recorder(node, path, self.cfg.record_segment_s)
            self.log.info(f"recording to the bag {path}")
        ros_type, topic = messages.COMMAND_TOPICS[self.cfg.command_interface]
        self.command_pub = self._publisher(ros_type, topic.format(role=self.cfg.role_name))
        self.action_pub = self._publisher("std_msgs/msg/Float32MultiArray", "action")
        self.status_pub = self._publisher("diagnostic_msgs/msg/DiagnosticArray",
                                          "policy_node/status")
        if self.cfg.input_mode == "features":
            self._subscribe("std_msgs/msg/Float32MultiArray", "observation", self._on_features,
                            SENSOR_QOS)
        else:
            self._subscribe("nav_msgs/msg/Odometry", "odom", self._on_odometry, SENSOR_QOS)
            path_qos = PATH_LATCHED_QOS if self.cfg.path_qos == "transient_local" \
                else DEFAULT_QOS
            self._subscribe("nav_msgs/msg/Path", "path", self._on_path, path_qos)
            self._subscribe("nav_msgs/msg/Odometry", "lead", self._on_lead, SENSOR_QOS)
        if self.cfg.policy_topic:
            self._subscribe("std_msgs/msg/String", self.cfg.policy_topic, self._on_policy,
                            POLICY_TOPIC_QOS)
        # ros mode: the newest inputs; the scene is built at the first tick after an odometry
        # message (the ego's clock: path and lead updates wait for it)
        self._points: np.ndarray | None = None
        self._ego: contract.Ego | None = None
        self._ego_received_s = -math.inf
        self._lead: tuple[float, contract.Vehicle] | None = None  # (received, vehicle)
        self._last_speed: tuple[float, float] | None = None  # (stamp, speed) for accel
        self._scene_due = False
        self._latency_s = 0.0
        self._last_status_s = -math.inf
        self._reloads = self._reloads_refused = 0
        self._last_command_s = -math.inf  # node clock of the last command
        self._decision: Decision | None = None
        node.create_timer(1.0 / self.cfg.rate_hz, self._on_timer)

    def _publisher(self, ros_type: str, topic: str, qos: QosProfile = DEFAULT_QOS
                   ) -> Publisher:
        if self.recorder is not None:
            return self.recorder.publisher(ros_type, topic, qos)
        return self.node.create_publisher(self.node.msg_type(ros_type), topic, qos)

    def _subscribe(self, ros_type: str, topic: str, callback: Callable[[Any], None],
                   qos: QosProfile) -> None:
        if self.recorder is not None:
            self.recorder.subscription(ros_type, topic, callback, qos)
        else:
            self.node.create_subscription(self.node.msg_type(ros_type), topic, callback, qos)

    def shutdown(self) -> None:
        """The last act: the safe command once (brake, last steering), then finish the
        recording. The node itself is the caller's to destroy."""
        try:
            decision = self.controller.safe("shutdown")
            self.command_pub.publish(messages.command_message(self.node, self.cfg, decision,
                                                              self.controller.speed_mps))
            self.action_pub.publish(messages.action_message(self.node, decision))
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
        self.log.warning(text, throttle_s=self.cfg.warn_period_s, key=key)

    # ---- inputs -------------------------------------------------------------------------------

    def _on_features(self, msg: Any) -> None:
        why = self.controller.set_observation(list(msg.data), self._now_s())
        if why:
            self._warn("features", f"observation refused, braking: {why}")
        elif self.cfg.trigger == "input":
            self._command()

    def _on_path(self, msg: Any) -> None:
        points = messages.path_points(msg)
        if len(points) < 2 or not np.all(np.isfinite(points)):
            self._warn("path", f"path with {len(points)} distinct (or non-finite) points "
                       "ignored")
            return
        self._points = points  # used from the next odometry on

    def _on_odometry(self, msg: Any) -> None:
        now = self._now_s()
        # acceleration by finite difference over the odometry's own stamps (simulation or
        # sensor time, as in training); unstamped odometry falls back to the arrival time
        try:
            stamp = messages.stamp_s(msg.header) or now
            ego = messages.ego_from_odometry(msg, 0.0, self.cfg.ego_length_m)
        except (ValueError, TypeError) as exc:
            self._ego = None
            self._warn("odom", f"odometry refused, braking: {self.controller.refuse(str(exc))}")
            return
        accel = 0.0
        if self._last_speed is not None and stamp > self._last_speed[0]:
            accel = (ego.speed - self._last_speed[1]) / (stamp - self._last_speed[0])
        self._last_speed = (stamp, ego.speed)  # only a valid message is a reference
        self._ego = dataclasses.replace(ego, accel=accel)
        self._ego_received_s, self._scene_due = now, True
        if self.cfg.trigger == "input":
            self._command()

    def _on_lead(self, msg: Any) -> None:
        try:
            ego = messages.ego_from_odometry(msg)
        except (ValueError, TypeError) as exc:
            self._warn("lead", f"lead odometry ignored: {exc}")
            return
        vehicle = contract.Vehicle(ego.x, ego.y, ego.yaw, ego.speed, self.cfg.lead_length_m)
        self._lead = (self._now_s(), vehicle)  # used from the next odometry on

    def _update_scene(self, now: float) -> None:
        """ros mode: the contract observation from the newest odometry, path and lead, by the
        very code the simulators use (contract.observe)."""
        self._scene_due = False
        if self._ego is None:
            return
        if self._points is None:
            self._warn("odom", "odometry before any path: waiting for 'path'")
            return
        vehicles = ()
        if self._lead is not None and now - self._lead[0] <= self.cfg.stale_timeout_s:
            vehicles = (self._lead[1],)
        try:
            path = contract.Path(self._points, self.cfg.lane_width_m, self.cfg.speed_limit_mps,
                                 self.cfg.left_width_m, self.cfg.right_width_m)
        except ValueError as exc:
            why = str(exc)
        else:
            why = self.controller.set_scene(contract.Scene(self._ego, path, vehicles),
                                            self._ego_received_s)
        if why:
            self._warn("odom", f"odometry refused, braking: {why}")

    def _on_policy(self, msg: Any) -> None:
        why = self.controller.reload(msg.data)
        if why:
            self._reloads_refused += 1
            self.log.error(f"new policy {msg.data!r} refused, the old one keeps driving: {why}")
        else:
            self._reloads += 1
            self.log.info(f"switched to policy {msg.data} "
                          f"(sha256 {self.controller.policy.sha256[:12]})")

    # ---- output -------------------------------------------------------------------------------

    def _on_timer(self) -> None:
        # one clock for control: the node clock (sim time under use_sim_time), which also
        # drives this timer; a clock that went back counts as "long ago"
        now = self._now_s()
        recent = 0.0 <= now - self._last_command_s < 0.5 / self.cfg.rate_hz
        if self.cfg.trigger == "timer" or not recent:  # trigger=input: only fill gaps
            self._command()
        if not 0.0 <= now - self._last_status_s < STATUS_PERIOD_S:
            self._last_status_s = now
            self._publish_status()

    def _command(self) -> None:
        """Decide and publish the command and the action; the safe command if deciding
        fails in any way (the error is logged, throttled)."""
        start = time.perf_counter()
        try:
            if self._scene_due:
                self._update_scene(self._now_s())
            decision = self.controller.decide(self._now_s())
        except Exception as exc:  # noqa: BLE001  (whatever failed, the car gets a command)
            self.log.error(f"deciding failed, braking: {type(exc).__name__}: {exc}",
                           throttle_s=self.cfg.warn_period_s, key="decide")
            decision = self.controller.safe(f"error: {type(exc).__name__}")
        if decision.safe and self.controller.safe_commands > 1:
            self._warn("safe", f"safe command: {decision.reason}")
        self.command_pub.publish(messages.command_message(self.node, self.cfg, decision,
                                                          self.controller.speed_mps))
        self.action_pub.publish(messages.action_message(self.node, decision))
        self._decision = decision
        self._last_command_s = self._now_s()
        self._latency_s = time.perf_counter() - start  # work done, so wall time

    def _publish_status(self) -> None:
        ctl, decision = self.controller, self._decision
        if decision is None:
            return
        level = 1 if decision.safe else 0  # WARN while braking on the safe command
        self.status_pub.publish(messages.status_message(
            self.node, level, decision.reason or "driving",
            {"model": ctl.policy.path, "model_sha256": ctl.policy.sha256,
             "decide_latency_ms": f"{self._latency_s * 1e3:.3f}",
             "safe_commands": ctl.safe_commands, "stale_commands": ctl.stale_commands,
             "rejected_inputs": ctl.rejected, "policy_reloads": self._reloads,
             "policy_reloads_refused": self._reloads_refused,
             "rate_hz": self.cfg.rate_hz, "trigger": self.cfg.trigger,
             "command_interface": self.cfg.command_interface,
             "max_steer_rad": self.cfg.max_steer_rad,
             "max_accel_mps2": self.cfg.max_accel_mps2,
             "max_decel_mps2": self.cfg.max_decel_mps2}))


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
