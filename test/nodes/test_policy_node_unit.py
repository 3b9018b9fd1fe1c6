"""PolicyNode in this process on a dds node: what no message can make it do."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("cyclonedds")
pytest.importorskip("onnxscript")

from policy_samples import driving_policy, obs_at  # noqa: E402

from dsp_driving.nodes.parameters import PolicyNodeConfig  # noqa: E402
from dsp_driving.nodes.policy_node import PolicyNode  # noqa: E402
from dsp_driving.transport import create_node  # noqa: E402
from dsp_driving.transport.dds import claim_domain_id  # noqa: E402


def test_a_failing_decision_still_sends_the_safe_command(tmp_path: Path) -> None:
    model = driving_policy(tmp_path / "policy.onnx")
    with create_node("policy_node", backend="dds", domain_id=claim_domain_id()) as node:
        pn = PolicyNode(node, PolicyNodeConfig(model=str(model)))
        sent = []
        pn.command_pub.publish = sent.append  # what would go on the wire
        pn.controller.set_observation(obs_at(10.0), pn._now_s())

        def broken(now_s: float):
            raise RuntimeError("onnxruntime went away")

        pn.controller.decide = broken
        pn._command()
        pn._command()
    assert len(sent) == 2
    for msg in sent:  # braking at safe_decel_mps2 = 3, steering held at 0 (never driven)
        assert msg.drive.acceleration == pytest.approx(3.0)
        assert msg.drive.steering_angle == 0.0
    assert pn.controller.safe_commands == 2


def test_status_is_published_once_a_second_at_any_rate(tmp_path: Path) -> None:
    model = driving_policy(tmp_path / "policy.onnx")
    with create_node("policy_node", backend="dds", domain_id=claim_domain_id()) as node:
        pn = PolicyNode(node, PolicyNodeConfig(model=str(model), rate_hz=1.2))
        statuses = []
        pn.status_pub.publish = statuses.append
        node.spin(duration_s=2.9)  # ticks every 0.83 s: statuses at the 1st and 3rd (2.5 s)
    assert len(statuses) == 2


def test_ros_mode_wires_odometry_path_and_lead_into_the_scene(tmp_path: Path) -> None:
    model = driving_policy(tmp_path / "policy.onnx")
    with create_node("policy_node", backend="dds", domain_id=claim_domain_id()) as node:
        pn = PolicyNode(node, PolicyNodeConfig(model=str(model), input_mode="ros",
                                               trigger="input"))
        sent = []
        pn.command_pub.publish = sent.append
        t = node.msg_type

        def pose(x: float) -> object:
            return t("geometry_msgs/msg/Pose")(
                position=t("geometry_msgs/msg/Point")(x=x, y=0.0, z=0.0),
                orientation=t("geometry_msgs/msg/Quaternion")(x=0.0, y=0.0, z=0.0, w=1.0))

        def odometry(x: float, speed: float) -> object:
            twist = t("geometry_msgs/msg/Twist")(linear=t("geometry_msgs/msg/Vector3")(
                x=speed, y=0.0, z=0.0))
            return t("nav_msgs/msg/Odometry")(
                pose=t("geometry_msgs/msg/PoseWithCovariance")(pose=pose(x)),
                twist=t("geometry_msgs/msg/TwistWithCovariance")(twist=twist))

        pn._on_odometry(odometry(5.0, 10.0))  # before any path: the safe command
        assert pn.controller.decide(pn._now_s()).reason == "no_input"
        pn._on_path(t("nav_msgs/msg/Path")(poses=[t("geometry_msgs/msg/PoseStamped")(
            pose=pose(x)) for x in (0.0, 50.0, 100.0)]))
        pn._on_lead(odometry(30.0, 8.0))
        pn._on_odometry(odometry(5.0, 10.0))  # trigger=input: decided at once
        assert not pn._decision.safe and pn.controller.speed_mps == 10.0
        assert pn.scene.take(pn._now_s()) == (None, "")  # taken by that command
        pn._on_odometry(odometry(float("nan"), 10.0))  # refused: the observation is void
        pn._command()
        assert pn._decision.safe and pn._decision.reason == "rejected"
    assert len(sent) == 3 and pn.controller.rejected == 1
