"""How a driving report reads each vehicle command type: steering, acceleration, speed and
stamp, in the units the type uses (policy_node's four command interfaces)."""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from typing import Any


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclasses.dataclass(frozen=True)
class CommandKind:
    """How to read one command type: ``read(msg) -> (steer, accel, speed or None, stamp ns or
    None)``; ``signed``: accel < 0 is braking (AckermannDrive gives only its magnitude, the
    direction being the target speed's)."""

    read: Callable[[Any], tuple[float, float, float | None, int | None]]
    steer_unit: str
    accel_unit: str
    signed: bool


COMMAND_TYPES: dict[str, CommandKind] = {
    "ackermann_msgs/msg/AckermannDriveStamped": CommandKind(
        lambda m: (m.drive.steering_angle, m.drive.acceleration, m.drive.speed,
                   _stamp_ns(m.header.stamp)), "rad", "|m/s²|", signed=False),
    "ackermann_msgs/msg/AckermannDrive": CommandKind(
        lambda m: (m.steering_angle, m.acceleration, m.speed, None), "rad", "|m/s²|",
        signed=False),
    "carla_msgs/msg/CarlaEgoVehicleControl": CommandKind(
        lambda m: (m.steer, m.throttle - m.brake, None, _stamp_ns(m.header.stamp)),
        "CARLA steer", "throttle - brake", signed=True),
    "autoware_control_msgs/msg/Control": CommandKind(
        lambda m: (m.lateral.steering_tire_angle, m.longitudinal.acceleration,
                   m.longitudinal.velocity, _stamp_ns(m.stamp)), "rad", "m/s²", signed=True),
}
