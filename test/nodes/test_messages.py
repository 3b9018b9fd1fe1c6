"""The four command interfaces built from one decision (dds message classes)."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("cyclonedds")

from dsp_driving import msgs  # noqa: E402
from dsp_driving.controller import Decision, PolicyNodeConfig  # noqa: E402
from dsp_driving.driving import contract  # noqa: E402
from dsp_driving.nodes.messages import COMMAND_TOPICS, command_message  # noqa: E402


class FakeClockNode:
    """msg_type and a fixed clock: all command_message needs of a node."""

    backend = "dds"

    def msg_type(self, ros_type: str) -> type:
        return msgs.ROS_TYPES[ros_type]

    def now_msg(self) -> msgs.Time:
        return msgs.Time(sec=12, nanosec=34)


def decision(steer: float, accel: float) -> Decision:
    action = np.array([steer, accel], np.float32)
    return Decision(action, contract.to_physical(action), False, "")


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
