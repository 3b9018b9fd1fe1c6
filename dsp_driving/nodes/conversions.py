"""Between ROS messages and the policy controller, for either transport backend.

Inputs are read by attribute (the same names in rclpy's classes and in dsp_driving.msgs);
outputs are built, and topics opened, through ``node.msg_type``, so the same code serves
rclpy and dds.
"""

from __future__ import annotations

from collections.abc import Callable
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from dsp_driving.driving import contract
from dsp_driving.transport import DEFAULT_QOS

if TYPE_CHECKING:
    from dsp_driving.controller import Decision, PolicyController
    from dsp_driving.driving.drive_safety import DriveFigures
    from dsp_driving.nodes.parameters import PolicyNodeConfig
    from dsp_driving.rosbag.writer import Recorder
    from dsp_driving.transport import Node, Publisher, QosProfile

# command_interface -> (ROS type, topic; {role} is the CARLA role name)
COMMAND_TOPICS = {
    "ackermann": ("ackermann_msgs/msg/AckermannDriveStamped", "ackermann_cmd"),
    "carla": ("carla_msgs/msg/CarlaEgoVehicleControl", "/carla/{role}/vehicle_control_cmd"),
    "carla_ackermann": ("ackermann_msgs/msg/AckermannDrive", "/carla/{role}/ackermann_cmd"),
    "autoware": ("autoware_control_msgs/msg/Control", "control_cmd"),
}


def publisher(node: Node, recorder: Recorder | None, ros_type: str, topic: str) -> Publisher:
    """A publisher of ``ros_type`` ('pkg/msg/Name') on ``topic``; recorded into the bag too
    when ``recorder`` is given."""
    if recorder is not None:
        return recorder.publisher(ros_type, topic, DEFAULT_QOS)
    return node.create_publisher(node.msg_type(ros_type), topic, DEFAULT_QOS)


def subscribe(node: Node, recorder: Recorder | None, ros_type: str, topic: str,
              callback: Callable[[Any], None], qos: QosProfile) -> None:
    """Subscribe ``callback`` to ``ros_type`` on ``topic``; each message recorded into the
    bag first when ``recorder`` is given."""
    if recorder is not None:
        recorder.subscription(ros_type, topic, callback, qos)
    else:
        node.create_subscription(node.msg_type(ros_type), topic, callback, qos)


def yaw_of(q: Any) -> float:
    """Yaw (rad, CCW) of a geometry_msgs/Quaternion."""
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


def ego_from_odometry(odom: Any, accel_mps2: float = 0.0, length_m: float = 4.5
                      ) -> contract.Ego:
    """nav_msgs/Odometry -> contract.Ego (REP-103 world frame; twist is in the child frame).

    ValueError when a value is not finite."""
    pose, twist = odom.pose.pose, odom.twist.twist
    ego = contract.Ego(float(pose.position.x), float(pose.position.y),
                       yaw_of(pose.orientation), float(twist.linear.x),
                       float(twist.angular.z), float(accel_mps2), length_m)
    bad = [f for f in ("x", "y", "yaw", "speed", "yaw_rate", "accel")
           if not math.isfinite(getattr(ego, f))]
    if bad:
        raise ValueError(f"odometry with non-finite {bad}")
    return ego


def vehicle_from_odometry(odom: Any, length_m: float) -> contract.Vehicle:
    """nav_msgs/Odometry of another vehicle -> contract.Vehicle (ValueError: non-finite)."""
    ego = ego_from_odometry(odom)
    return contract.Vehicle(ego.x, ego.y, ego.yaw, ego.speed, length_m)


def path_points(path: Any) -> np.ndarray:
    """nav_msgs/Path -> [n, 2] points with repeated consecutive points dropped."""
    pts = np.array([(p.pose.position.x, p.pose.position.y) for p in path.poses], np.float64)
    if len(pts) == 0:
        return pts.reshape(0, 2)
    keep = np.r_[True, np.linalg.norm(np.diff(pts, axis=0), axis=1) > 1e-6]
    return pts[keep]


def stamp_s(header: Any) -> float:
    """A header stamp in seconds."""
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def command_message(node: Any, cfg: PolicyNodeConfig, decision: Decision,
                    speed_mps: float) -> Any:
    """The command message of ``cfg.command_interface`` for ``decision``, from its physical
    values (the action is converted once, by the controller) through contract's
    *_from_physical mappings, the ones to_ackermann / to_carla / to_autoware use."""
    make = node.msg_type
    physical, limits, interface = decision.physical, cfg.limits, cfg.command_interface
    stamp = node.now_msg()

    def header() -> Any:
        return make("std_msgs/msg/Header")(stamp=stamp, frame_id=cfg.frame_id)

    if interface == "carla":
        c = contract.carla_from_physical(physical, float(decision.action[1]), limits)
        return make("carla_msgs/msg/CarlaEgoVehicleControl")(
            header=header(), throttle=c.throttle, brake=c.brake, steer=c.steer)
    if interface in ("ackermann", "carla_ackermann"):
        drive = make("ackermann_msgs/msg/AckermannDrive")(**contract.ackermann_from_physical(
            physical, speed_mps, cfg.speed_horizon_s, limits))
        if interface == "carla_ackermann":
            return drive
        return make("ackermann_msgs/msg/AckermannDriveStamped")(header=header(), drive=drive)
    fields = contract.autoware_from_physical(physical, speed_mps, cfg.speed_horizon_s, limits)
    lateral = make("autoware_control_msgs/msg/Lateral")(stamp=stamp, control_time=stamp,
                                                        **fields["lateral"])
    longitudinal = make("autoware_control_msgs/msg/Longitudinal")(
        stamp=stamp, control_time=stamp, **fields["longitudinal"])
    return make("autoware_control_msgs/msg/Control")(stamp=stamp, control_time=stamp,
                                                     lateral=lateral, longitudinal=longitudinal)


def action_message(node: Any, decision: Decision) -> Any:
    """std_msgs/Float32MultiArray [steer, accel] (normalised) with a labelled layout."""
    make = node.msg_type
    dim = make("std_msgs/msg/MultiArrayDimension")(label="steer,accel", size=2, stride=2)
    layout = make("std_msgs/msg/MultiArrayLayout")(dim=[dim], data_offset=0)
    return make("std_msgs/msg/Float32MultiArray")(
        layout=layout, data=[float(a) for a in decision.action])


def diagnostic_status(node: Any, name: str, message: str, values: dict[str, str],
                      hardware_id: str = "dsp_driving", level: int = 0) -> Any:
    """diagnostic_msgs/DiagnosticStatus (level 0 OK, 1 WARN, 2 ERROR) with ``values`` as its
    key-value pairs."""
    make = node.msg_type
    kv = make("diagnostic_msgs/msg/KeyValue")
    level_value: Any = bytes([level]) if node.backend == "rclpy" else level  # a byte in rclpy
    return make("diagnostic_msgs/msg/DiagnosticStatus")(
        level=level_value, name=name, message=message, hardware_id=hardware_id,
        values=[kv(key=k, value=v) for k, v in values.items()])


def diagnostic_array(node: Any, statuses: list[Any]) -> Any:
    """diagnostic_msgs/DiagnosticArray stamped now."""
    make = node.msg_type
    header = make("std_msgs/msg/Header")(stamp=node.now_msg(), frame_id="")
    return make("diagnostic_msgs/msg/DiagnosticArray")(header=header, status=statuses)


def status_message(node: Any, level: int, message: str, values: dict[str, Any]) -> Any:
    """diagnostic_msgs/DiagnosticArray with one status named policy_node."""
    return diagnostic_array(node, [diagnostic_status(
        node, "policy_node", message, {k: str(v) for k, v in values.items()}, level=level)])


# ros mode: the parameters the bag report needs to rebuild the observation from the scene
SCENE_STATUS_KEYS = ("speed_limit_mps", "lane_width_m", "left_width_m", "right_width_m",
                     "ego_length_m", "lead_length_m")


def figure_values(figures: DriveFigures) -> dict[str, str]:
    """The drive's safety and comfort figures as status values: every DriveFigures field
    under its own name, numbers with 3 decimals, "n/a" where undefined (window_s: since the
    start)."""
    out = {}
    for key, value in figures.as_dict().items():
        if isinstance(value, int) and not isinstance(value, bool):
            out[key] = str(value)
        elif isinstance(value, float) and math.isfinite(value):
            out[key] = f"{value:.3f}"
        else:
            out[key] = "n/a"
    return out


def policy_status(node: Any, cfg: PolicyNodeConfig, controller: PolicyController,
                  decision: Decision, latency_s: float) -> Any:
    """policy_node's status after ``decision``: WARN while braking on the safe command; the
    policy, the counters, the rate, the command limits and the drive's safety and comfort
    figures over the last window (``controller.drive``, driving/drive_safety.py) as its
    values; in ros mode also the scene parameters (SCENE_STATUS_KEYS)."""
    ctl = controller
    values: dict[str, Any] = {
        "model": ctl.policy.path, "model_sha256": ctl.policy.sha256,
        "decide_latency_ms": f"{latency_s * 1e3:.3f}",
        "safe_commands": ctl.safe_commands, "stale_commands": ctl.stale_commands,
        "rejected_inputs": ctl.rejected, "policy_reloads": ctl.reloads,
        "policy_reloads_refused": ctl.reloads_refused,
        "rate_hz": cfg.rate_hz, "trigger": cfg.trigger,
        "command_interface": cfg.command_interface, "max_steer_rad": cfg.max_steer_rad,
        "max_accel_mps2": cfg.max_accel_mps2, "max_decel_mps2": cfg.max_decel_mps2,
        "input_mode": cfg.input_mode, "stale_timeout_s": cfg.stale_timeout_s}
    if cfg.input_mode == "ros":
        values.update({key: getattr(cfg, key) for key in SCENE_STATUS_KEYS})
    try:
        values.update(figure_values(ctl.drive.figures()))
    except Exception as exc:  # noqa: BLE001  (the status goes out without the figures)
        values["figures_error"] = f"{type(exc).__name__}: {exc}"
    return status_message(node, 1 if decision.safe else 0, decision.reason or "driving",
                          values)
