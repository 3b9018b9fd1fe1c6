"""The rclpy backend, where ROS 2 is sourced (skipped on machines without it).

On a ROS 2 Humble or Jazzy machine: ``source /opt/ros/$ROS_DISTRO/setup.bash``, install
ackermann_msgs, then ``python -m pytest -q test/transport``.
"""

from __future__ import annotations

import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 is not sourced here (rclpy not importable); "
                            "run on a ROS 2 machine to exercise the rclpy backend")

from dsp_driving.transport import create_node, select_backend  # noqa: E402


@pytest.fixture
def node():
    node = create_node("dsp_test_node", backend="rclpy")
    yield node
    node.destroy()


def test_rclpy_is_selected_when_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSP_TRANSPORT", raising=False)
    assert select_backend() == "rclpy"


def test_publish_subscribe_in_process(node) -> None:
    drive_t = node.msg_type("ackermann_msgs/msg/AckermannDriveStamped")
    assert drive_t.__module__.startswith("ackermann_msgs.msg")
    pub = node.create_publisher(drive_t, "/dsp_test/cmd")
    got: list = []
    node.create_subscription(drive_t, "/dsp_test/cmd", got.append)
    node.spin(until=lambda: pub.subscription_count() > 0, duration_s=5)
    msg = drive_t()
    msg.drive.speed = 2.5
    msg.header.stamp = node.now_msg()
    pub.publish(msg)
    node.spin(until=lambda: bool(got), duration_s=5)
    assert got and got[0].drive.speed == 2.5


def test_parameters_declared_with_defaults(node) -> None:
    values = node.get_parameters({"rate_hz": 50.0, "topic": "/cmd", "limits": (0.5, 0.5)})
    assert values == {"rate_hz": 50.0, "topic": "/cmd", "limits": [0.5, 0.5]}
