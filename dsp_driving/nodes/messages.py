"""Between ROS messages and the policy controller, for either transport backend.

Inputs are read by attribute (the same names in rclpy's classes and in dsp_driving.msgs);
outputs are built through ``node.msg_type``, so the same code serves rclpy and dds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dsp_driving.controller import Decision, PolicyNodeConfig
from dsp_driving.driving import contract

# command_interface -> (ROS type, topic; {role} is the CARLA role name)
COMMAND_TOPICS = {
    "ackermann": ("ackermann_msgs/msg/AckermannDriveStamped", "ackermann_cmd"),
    "carla": ("carla_msgs/msg/CarlaEgoVehicleControl", "/carla/{role}/vehicle_control_cmd"),
    "carla_ackermann": ("ackermann_msgs/msg/AckermannDrive", "/carla/{role}/ackermann_cmd"),
    "autoware": ("autoware_control_msgs/msg/Control", "control_cmd"),
}


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
    """The command message of ``cfg.command_interface`` for ``decision``."""
    make = node.msg_type
    action, limits, interface = decision.action, cfg.limits, cfg.command_interface
    stamp = node.now_msg()

    def header() -> Any:
        return make("std_msgs/msg/Header")(stamp=stamp, frame_id=cfg.frame_id)

    if interface in ("ackermann", "carla_ackermann"):
        fields = contract.to_ackermann(action, speed_mps, cfg.speed_horizon_s, limits)
        drive = make("ackermann_msgs/msg/AckermannDrive")(**fields)
        if interface == "carla_ackermann":
            return drive
        return make("ackermann_msgs/msg/AckermannDriveStamped")(header=header(), drive=drive)
    if interface == "carla":
        c = contract.to_carla(action, limits)
        return make("carla_msgs/msg/CarlaEgoVehicleControl")(
            header=header(), throttle=c.throttle, steer=c.steer, brake=c.brake)
    fields = contract.to_autoware(action, speed_mps, cfg.speed_horizon_s, limits)
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
