"""The four command interfaces built from one decision (dds message classes)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest

pytest.importorskip("cyclonedds")

from dsp_driving import msgs  # noqa: E402
from dsp_driving.controller import Decision  # noqa: E402
from dsp_driving.driving import contract  # noqa: E402
from dsp_driving.nodes.conversions import COMMAND_TOPICS, command_message  # noqa: E402
from dsp_driving.nodes.parameters import PolicyNodeConfig  # noqa: E402


class FakeClockNode:
    """msg_type and a fixed clock: all command_message needs of a node."""

    backend = "dds"

    def msg_type(self, ros_type: str) -> type:
        return msgs.ROS_TYPES[ros_type]

    def now_msg(self) -> msgs.Time:
        return msgs.Time(sec=12, nanosec=34)


def decision(steer: float, accel: float, limits: contract.ActionLimits | None = None
             ) -> Decision:
    """As PolicyController makes it: the float32 command and its physical value."""
    action = np.array([steer, accel], np.float32)
    return Decision(action, contract.to_physical(action, limits or contract.ActionLimits()),
                    False, "")


@pytest.mark.parametrize("interface", sorted(COMMAND_TOPICS))
def test_each_interface_gets_its_message_type(interface: str) -> None:
    msg = command_message(FakeClockNode(), PolicyNodeConfig(command_interface=interface),
                          decision(0.2, -0.5), 10.0)
    assert type(msg) is msgs.ROS_TYPES[COMMAND_TOPICS[interface][0]]


def test_values_and_signs_per_interface() -> None:
    node, d = FakeClockNode(), decision(0.4, -0.5)  # 0.2 rad left, -3 m/s^2
    stamped = command_message(node, PolicyNodeConfig(), d, 10.0)
    assert stamped.header.stamp == msgs.Time(sec=12, nanosec=34)
    assert stamped.header.frame_id == "base_link"
    assert stamped.drive.steering_angle == pytest.approx(0.2)
    assert stamped.drive.speed == pytest.approx(10.0 - 3.0 * 0.5)
    assert stamped.drive.acceleration == pytest.approx(3.0)
    carla = command_message(node, PolicyNodeConfig(command_interface="carla"), d, 10.0)
    assert carla.steer == pytest.approx(-0.2 / math.radians(70.0), rel=1e-6)  # CARLA: + right
    assert carla.throttle == 0.0 and carla.brake == pytest.approx(0.5)
    auto = command_message(node, PolicyNodeConfig(command_interface="autoware"), d, 10.0)
    assert auto.lateral.steering_tire_angle == pytest.approx(0.2)
    assert auto.longitudinal.acceleration == pytest.approx(-3.0)
    assert auto.stamp == auto.lateral.stamp == auto.longitudinal.stamp == node.now_msg()


def contract_message(node: FakeClockNode, cfg: PolicyNodeConfig, action: np.ndarray,
                     speed_mps: float) -> Any:
    """The oracle: the message from contract.to_ackermann / to_carla / to_autoware of the
    normalised action (how command_message built it before it read decision.physical)."""
    make, limits, stamp = node.msg_type, cfg.limits, node.now_msg()
    header = make("std_msgs/msg/Header")(stamp=stamp, frame_id=cfg.frame_id)
    if cfg.command_interface in ("ackermann", "carla_ackermann"):
        drive = make("ackermann_msgs/msg/AckermannDrive")(
            **contract.to_ackermann(action, speed_mps, cfg.speed_horizon_s, limits))
        if cfg.command_interface == "carla_ackermann":
            return drive
        return make("ackermann_msgs/msg/AckermannDriveStamped")(header=header, drive=drive)
    if cfg.command_interface == "carla":
        c = contract.to_carla(action, limits)
        return make("carla_msgs/msg/CarlaEgoVehicleControl")(
            header=header, throttle=c.throttle, steer=c.steer, brake=c.brake)
    fields = contract.to_autoware(action, speed_mps, cfg.speed_horizon_s, limits)
    return make("autoware_control_msgs/msg/Control")(
        stamp=stamp, control_time=stamp,
        lateral=make("autoware_control_msgs/msg/Lateral")(stamp=stamp, control_time=stamp,
                                                          **fields["lateral"]),
        longitudinal=make("autoware_control_msgs/msg/Longitudinal")(
            stamp=stamp, control_time=stamp, **fields["longitudinal"]))


def bits(msg: Any) -> dict[str, Any]:
    """Every field, floats as their exact float64 bits (-0.0 and NaN included)."""
    return {k: v.hex() if isinstance(v, float) else bits(v) if hasattr(v, "__dict__") else v
            for k, v in sorted(vars(msg).items())}


LIMITS = {"default": {}, "tight": {"max_steer_rad": 0.3, "max_accel_mps2": 2.0,
                                   "max_decel_mps2": 4.5, "max_speed_mps": 20.0}}
VALUES = (-1.0, -0.73, -0.5, -1e-9, -0.0, 0.0, 1e-7, 0.1, 1 / 3, 0.5, 0.99999999, 1.0)


@pytest.mark.parametrize("limits", sorted(LIMITS))
@pytest.mark.parametrize("interface", sorted(COMMAND_TOPICS))
def test_the_command_is_the_contracts_bit_for_bit(interface: str, limits: str) -> None:
    """Built from decision.physical (converted once), the command carries the very values
    contract.to_ackermann / to_carla / to_autoware give for the published action."""
    node = FakeClockNode()
    cfg = PolicyNodeConfig(command_interface=interface, **LIMITS[limits])
    for steer, accel in itertools.product(VALUES, VALUES):
        d = decision(steer, accel, cfg.limits)
        for speed in (0.0, 0.3, 10.0, 19.9, 39.9, 45.0, -1.0, math.nan):
            msg = command_message(node, cfg, d, speed)
            want = contract_message(node, cfg, d.action, speed)
            assert bits(msg) == bits(want), (steer, accel, speed)
            assert bytes(msg.serialize()) == bytes(want.serialize())
