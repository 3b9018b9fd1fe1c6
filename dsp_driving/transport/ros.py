"""The rclpy backend: real ROS 2 nodes and message classes (Humble and Jazzy APIs).

Imported only when rclpy is importable (a sourced ROS 2 install, or the venv that
test/rclpy/make_venv.sh makes from the ros-jazzy wheels, where test/rclpy/ runs it).

- rclpy's own signal handlers are off: under ``transport.base.interrupt_on_signals`` SIGINT
  and SIGTERM raise KeyboardInterrupt, so a node can still publish its safe command and close
  its bag before the context goes down (rclpy's handlers shut the context down first, and
  spin then raises ExternalShutdownException).
- rclpy keys each logging call site on the caller's frame and refuses a second severity from
  one site, so every severity has its own call site here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import importlib
import os
import threading
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node as RosNode
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from dsp_driving.transport.base import (
    DEFAULT_QOS,
    Logger,
    Node,
    Publisher,
    QosProfile,
    Timer,
    guarded,
    resolve_parameters,
    ros_topic,
)

# carla_msgs is not released into the ROS distributions (rosdistro has no carla_msgs for
# Humble or Jazzy); the others are apt packages ros-<distro>-<name-with-dashes>.
_NOT_RELEASED = {"carla_msgs": "it is not released as a ROS package: build "
                               "carla-simulator/ros-carla-msgs (release 1.3.0) in your "
                               "workspace with colcon, then source install/setup.bash"}
_init_lock = threading.Lock()
_live_nodes = 0  # RclpyNodes alive in this process
_initialised_here = False  # rclpy.init was ours (so rclpy.shutdown is too)


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

    def wait_for_acked(self, timeout_s: float) -> bool:
        """Publisher.wait_for_all_acked."""
        from rclpy.duration import Duration

        return bool(self._pub.wait_for_all_acked(Duration(nanoseconds=int(timeout_s * 1e9))))


class RclpyTimer(Timer):
    """An rclpy timer."""

    def __init__(self, timer: Any, period_s: float) -> None:
        self._timer = timer
        self.period_s = period_s

    def cancel(self) -> None:
        """Stop the timer."""
        self._timer.cancel()


def message_class(ros_type: str) -> type:
    """The ROS 2 Python class for 'pkg/msg/Name'; a missing package is a ModuleNotFoundError
    that names what to install."""
    package, kind, name = ros_type.split("/")
    distro = os.environ.get("ROS_DISTRO") or "$ROS_DISTRO"
    how = _NOT_RELEASED.get(package, f"sudo apt install ros-{distro}-"
                                     f"{package.replace('_', '-')}, then source its setup file")
    try:
        module = importlib.import_module(f"{package}.{kind}")
    except ModuleNotFoundError as exc:
        if exc.name not in (package, f"{package}.{kind}"):
            raise
        raise ModuleNotFoundError(f"{ros_type}: the ROS 2 package {package} is not installed "
                                  f"(or not sourced): {how}", name=package) from None
    try:
        return getattr(module, name)
    except AttributeError:
        raise ModuleNotFoundError(f"{ros_type}: the installed {package} ({module.__file__}) "
                                  f"has no {name}: install a version that does ({how})",
                                  name=package) from None


class RclpyNode(Node):
    """Our Node interface over rclpy.node.Node.

    rclpy.init runs (without rclpy's signal handlers, see the module doc) when the first
    RclpyNode of the process is made, unless the caller already did it; rclpy.shutdown after
    the last one is destroyed, if it was ours.
    """

    backend = "rclpy"

    def __init__(self, name: str, args: list[str] | None = None) -> None:
        global _live_nodes, _initialised_here
        with _init_lock:
            if not rclpy.ok():
                rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
                _initialised_here = True
            _live_nodes += 1
        self.name = name
        self._node = RosNode(name)
        self._ros_logger = self._node.get_logger()
        self.logger = Logger(name, self._emit)
        # declared by rclpy itself (use_sim_time, ...): never "unknown" when given
        self._declared: set[str] = set(self._node._parameters)
        self._destroyed = self._serving = False

    def _emit(self, level: str, text: str) -> None:
        # one call site per severity: rclpy raises "Logger severity cannot be changed between
        # calls" when one site logs two severities
        if level == "DEBUG":
            self._ros_logger.debug(text)
        elif level == "INFO":
            self._ros_logger.info(text)
        elif level == "WARN":
            self._ros_logger.warning(text)
        else:
            self._ros_logger.error(text)

    def msg_type(self, ros_type: str) -> type:
        """The ROS 2 Python class for 'pkg/msg/Name' (see message_class)."""
        return message_class(ros_type)

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
        """Each default's value from the params file or ``-p`` (checked by
        base.parameter_value: an int is accepted for a float), then declared with the
        default's type, so ``ros2 param get/set`` see the types the node reads. With
        ``strict``, a given name that no call declared is refused (ROS 2 alone would ignore
        it). Nothing is declared when a value is refused.
        """
        # the overrides from --ros-args (params files, -p): rclpy keeps them in this dict on
        # Humble and Jazzy alike and has no public reader for them
        given = {name: _plain(p.value) for name, p in self._node._parameter_overrides.items()
                 if not name.startswith("qos_overrides.")}
        values = {name: list(value) if isinstance(value, tuple) else value  # rclpy's arrays
                  for name, value in resolve_parameters(self.name, given, self._declared,
                                                        defaults, strict).items()}
        for name, value in values.items():
            if not self._node.has_parameter(name):
                # an empty list has no element type for rclpy to infer: let it take any
                descriptor = ParameterDescriptor(dynamic_typing=value == [])
                self._node.declare_parameter(name, value, descriptor, ignore_override=True)
        return values

    def spin_once(self, timeout_s: float = 0.1) -> None:
        """rclpy.spin_once on this node."""
        if self._serving:  # rclpy would move the node off the serving executor for good
            raise RuntimeError(f"{self.name} is served in the background: do not spin it")
        rclpy.spin_once(self._node, timeout_sec=timeout_s)

    def serve_in_background(self) -> Callable[[], None]:
        """A SingleThreadedExecutor spinning this node in a daemon thread (parameter services,
        ``ros2 node info``); returns the function that stops and joins it. Do not call
        ``spin``/``spin_once`` while it runs."""
        executor = SingleThreadedExecutor()
        executor.add_node(self._node)
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set() and rclpy.ok():
                try:
                    executor.spin_once(timeout_sec=0.1)
                except ExternalShutdownException:
                    return
                except Exception as exc:  # noqa: BLE001  (one bad request must not end it)
                    self.logger.error(f"serving {self.name}: {type(exc).__name__}: {exc}",
                                      throttle_s=5.0, key="serve")

        thread = threading.Thread(target=serve, name=f"{self.name}-executor", daemon=True)
        self._serving = True
        thread.start()

        def stop_serving() -> None:
            stop.set()
            thread.join(timeout=5.0)
            executor.remove_node(self._node)
            executor.shutdown(timeout_sec=1.0)
            self._serving = False

        return stop_serving

    def destroy(self) -> None:
        """Destroy the node; rclpy.shutdown after the process's last RclpyNode, if this
        backend initialised rclpy."""
        global _live_nodes, _initialised_here
        if self._destroyed:
            return
        self._destroyed = True
        self._node.destroy_node()
        with _init_lock:
            _live_nodes -= 1
            if _live_nodes == 0 and _initialised_here:
                _initialised_here = False
                rclpy.try_shutdown()


def _plain(value: Any) -> Any:
    """Array parameters come back as array.array or tuples: plain lists here."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        return value
    return list(value)
