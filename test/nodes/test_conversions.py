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


# ---- policy_node's status: the drive's safety and comfort figures ---------------------------


def test_figure_values_are_3_decimals_counts_or_na() -> None:
    from dsp_driving.driving.drive_safety import FIGURE_KEYS, DriveFigures
    from dsp_driving.nodes.conversions import figure_values

    figures = DriveFigures(
        window_s=None, control_period_s=0.05, control_steps=12, observed_steps=10,
        lead_steps=4, bad_observations=0, speed_mps=15.0, ttc_s=None, headway_s=12.5 / 15,
        min_ttc_s=6.25 / 7.5, ttc_p5_s=0.9, ttc_below_pct=100 / 3, min_headway_s=0.4166,
        median_headway_s=math.nan, mean_speed_mps=14.99951, jerk_p95_mps3=42.75,
        jerk_max_mps3=45.0, steer_rate_p95_rps=None, steer_rate_max_rps=None)
    values = figure_values(figures)
    assert list(values) == list(FIGURE_KEYS)
    assert values == {
        "window_s": "n/a", "control_period_s": "0.050", "control_steps": "12",
        "observed_steps": "10", "lead_steps": "4", "bad_observations": "0",
        "speed_mps": "15.000", "ttc_s": "n/a", "headway_s": "0.833", "min_ttc_s": "0.833",
        "ttc_p5_s": "0.900", "ttc_below_pct": "33.333", "min_headway_s": "0.417",
        "median_headway_s": "n/a", "mean_speed_mps": "15.000", "jerk_p95_mps3": "42.750",
        "jerk_max_mps3": "45.000", "steer_rate_p95_rps": "n/a", "steer_rate_max_rps": "n/a"}


@pytest.mark.parametrize("input_mode", ["features", "ros"])
def test_the_status_carries_the_figures_of_the_last_commands(tmp_path, input_mode: str
                                                              ) -> None:
    pytest.importorskip("onnxscript")
    from policy_samples import driving_policy, obs_at

    from dsp_driving.controller import PolicyController, load_policy
    from dsp_driving.nodes.conversions import SCENE_STATUS_KEYS, policy_status

    cfg = PolicyNodeConfig(model="p.onnx", rate_hz=20.0, input_mode=input_mode,
                           lane_width_m=3.25)
    ctl = PolicyController(load_policy(driving_policy(tmp_path / "p.onnx")), cfg.safety,
                           control_period_s=1.0 / cfg.rate_hz)
    obs = obs_at(15.0)  # a lead 12.5 m ahead, closing at 7.5 m/s: TTC 1.667 s
    obs[contract.INDEX["has_lead"]] = 1.0
    obs[contract.INDEX["lead_gap"]] = 0.125
    obs[contract.INDEX["lead_relative_speed"]] = -0.25
    ctl.set_observation(obs, 1.0)
    d = ctl.decide(1.0)
    msg = policy_status(FakeClockNode(), cfg, ctl, d, 0.0012)
    (status,) = msg.status
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == 0 and status.message == "driving"
    assert {k: values[k] for k in ("speed_mps", "ttc_s", "headway_s", "min_ttc_s",
                                   "ttc_below_pct", "control_steps", "observed_steps",
                                   "window_s", "control_period_s", "jerk_p95_mps3",
                                   "input_mode", "stale_timeout_s", "rate_hz")} == {
        "speed_mps": "15.000", "ttc_s": "1.667", "headway_s": "0.833", "min_ttc_s": "1.667",
        "ttc_below_pct": "0.000", "control_steps": "1", "observed_steps": "1",
        "window_s": "10.000", "control_period_s": "0.050",
        "jerk_p95_mps3": "n/a",  # one command: no difference yet
        "input_mode": input_mode, "stale_timeout_s": "0.3", "rate_hz": "20.0"}
    scene_keys = set(SCENE_STATUS_KEYS) & set(values)
    assert scene_keys == (set(SCENE_STATUS_KEYS) if input_mode == "ros" else set())
    if input_mode == "ros":
        assert values["lane_width_m"] == "3.25"
