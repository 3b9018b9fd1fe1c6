"""PolicyNode in this process on a dds node: what no message can make it do."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
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


def test_the_status_shows_the_drive_figures_and_a_bad_observation_never_crashes(
        tmp_path: Path) -> None:
    model = driving_policy(tmp_path / "policy.onnx")
    with create_node("policy_node", backend="dds", domain_id=claim_domain_id()) as node:
        pn = PolicyNode(node, PolicyNodeConfig(model=str(model), rate_hz=20.0))
        statuses = []
        pn.status_pub.publish = statuses.append
        pn.command_pub.publish = lambda msg: None
        make = node.msg_type("std_msgs/msg/Float32MultiArray")
        obs = obs_at(15.0)  # a lead 6.25 m ahead closing at 7.5 m/s: TTC 0.833 s
        obs[-1], obs[-4], obs[-3] = 1.0, 0.0625, -0.25  # has_lead, lead_gap, rel. speed
        for data in (obs, np.full(len(obs), np.nan), obs):  # the second is refused
            pn._on_features(make(data=[float(v) for v in data]))
            pn._last_command_s = pn._last_status_s = -math.inf
            pn._on_timer()  # a command, then the status
    values = [{kv.key: kv.value for kv in m.status[0].values} for m in statuses]
    assert [v["control_steps"] for v in values] == ["1", "2", "3"]
    assert [v["observed_steps"] for v in values] == ["1", "1", "2"]
    assert [v["ttc_s"] for v in values] == ["0.833", "n/a", "0.833"]  # now: n/a when refused
    assert [v["min_ttc_s"] for v in values] == ["0.833"] * 3
    assert values[2]["headway_s"] == "0.417" and values[2]["ttc_below_pct"] == "100.000"
    assert values[2]["control_period_s"] == "0.050" and values[2]["rejected_inputs"] == "1"
    assert [m.status[0].level for m in statuses] == [0, 1, 0]
