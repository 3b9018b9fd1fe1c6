"""The rclpy backend: real ROS 2 nodes and message classes (Humble and Jazzy APIs).

Imported only when rclpy is importable (a sourced ROS 2 install). Nothing here runs on our
build machines; test/transport/test_rclpy_backend.py runs it where ROS 2 exists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import importlib
from typing import Any

import rclpy
from rclpy.node import Node as RosNode
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from dsp_driving.transport.base import (
    DEFAULT_QOS,
    Logger,
    Node,
    Publisher,
    QosProfile,
    Timer,
    guarded,
    ros_topic,
)


def ros_qos(profile: QosProfile) -> QoSProfile:
    """Our QoS profile as rclpy's."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=profile.depth,
        reliability=(ReliabilityPolicy.RELIABLE if profile.reliable
                     else ReliabilityPolicy.BEST_EFFORT),
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if profile.transient_local
                    else DurabilityPolicy.VOLATILE))


class RclpyPublisher(Publisher):
    """An rclpy publisher."""

    def __init__(self, pub: Any, topic: str) -> None:
        self._pub = pub
        self.topic = topic

    def publish(self, msg: Any) -> None:
        """Publish one message."""
        self._pub.publish(msg)

    def subscription_count(self) -> int:
        """Matched subscriptions."""
        return self._pub.get_subscription_count()


class RclpyTimer(Timer):
    """An rclpy timer."""

    def __init__(self, timer: Any, period_s: float) -> None:
        self._timer = timer
        self.period_s = period_s

    def cancel(self) -> None:
        """Stop the timer."""
        self._timer.cancel()


class RclpyNode(Node):
    """Our Node interface over rclpy.node.Node (rclpy.init is called once, on demand)."""

    backend = "rclpy"

    def __init__(self, name: str, args: list[str] | None = None) -> None:
        if not rclpy.ok():
            rclpy.init(args=args)
        self.name = name
        self._node = RosNode(name)
        ros_logger = self._node.get_logger()
        emit = {"DEBUG": ros_logger.debug, "INFO": ros_logger.info, "WARN": ros_logger.warning,
                "ERROR": ros_logger.error}
        self.logger = Logger(name, lambda level, text: emit[level](text))

    def msg_type(self, ros_type: str) -> type:
        """The ROS 2 Python class for 'pkg/msg/Name'."""
        package, kind, name = ros_type.split("/")
        return getattr(importlib.import_module(f"{package}.{kind}"), name)

    def resolve_topic(self, topic: str) -> str:
        """The full name rclpy gives ``topic`` (node namespace, remappings)."""
        ros_topic(topic)
        return self._node.resolve_topic_name(topic)

    def serialize(self, msg: Any) -> bytes:
        """rclpy.serialization.serialize_message (CDR with its encapsulation header)."""
        from rclpy.serialization import serialize_message

        return serialize_message(msg)

    def create_publisher(self, msg_type: type, topic: str,
                         qos: QosProfile = DEFAULT_QOS) -> RclpyPublisher:
        """rclpy create_publisher."""
        ros_topic(topic)  # validate; relative names stay relative (node namespace applies)
        return RclpyPublisher(self._node.create_publisher(msg_type, topic, ros_qos(qos)), topic)

    def create_subscription(self, msg_type: type, topic: str, callback: Callable[[Any], None],
                            qos: QosProfile = DEFAULT_QOS) -> Any:
        """rclpy create_subscription."""
        ros_topic(topic)
        return self._node.create_subscription(
            msg_type, topic, guarded(self.logger, f"callback on {topic}", callback),
            ros_qos(qos))

    def create_timer(self, period_s: float, callback: Callable[[], None]) -> RclpyTimer:
        """rclpy create_timer."""
        return RclpyTimer(self._node.create_timer(
            period_s, guarded(self.logger, "timer callback", callback)), period_s)

    def now_ns(self) -> int:
        """The node clock (ROS time, so use_sim_time works)."""
        return self._node.get_clock().now().nanoseconds

    def get_parameters(self, defaults: Mapping[str, Any], strict: bool = True
                       ) -> dict[str, Any]:
        """declare_parameter for each default, then read the values (params file, --ros-args).

        ``strict`` has no effect: ROS 2 itself ignores overrides nobody declares.
        """
        values = {}
        for name, default in defaults.items():
            value = list(default) if isinstance(default, tuple) else default
            if self._node.has_parameter(name):
                got = self._node.get_parameter(name).value
            else:
                got = self._node.declare_parameter(name, value).value
            # array parameters come back as array.array from params files: plain lists here
            values[name] = got if isinstance(got, (str, bytes)) or not hasattr(got, "__len__") \
                else list(got)
        return values

    def spin_once(self, timeout_s: float = 0.1) -> None:
        """rclpy.spin_once on this node."""
        rclpy.spin_once(self._node, timeout_sec=timeout_s)

    def destroy(self) -> None:
        """Destroy the node (rclpy.shutdown is left to the process)."""
        self._node.destroy_node()
