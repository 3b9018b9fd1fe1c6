"""The bag report's safety and comfort figures: real rosbag2 bags written by our BagWriter from
a real PolicyController's drive, with known lead gaps and closing speeds; the report's
figures are the controller's (policy_node's status) for the same stream."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rosbags")
pytest.importorskip("matplotlib")
pytest.importorskip("cyclonedds")  # dsp_driving.msgs: the messages the node records
pytest.importorskip("onnxscript")

from policy_samples import driving_policy, obs_at  # noqa: E402

from dsp_driving import msgs  # noqa: E402
from dsp_driving.analysis.report import make_report  # noqa: E402
from dsp_driving.controller import PolicyController, load_policy  # noqa: E402
from dsp_driving.driving import contract  # noqa: E402
from dsp_driving.driving.drive_safety import FIGURE_KEYS  # noqa: E402
from dsp_driving.nodes import conversions  # noqa: E402
from dsp_driving.nodes.parameters import PolicyNodeConfig  # noqa: E402
from dsp_driving.nodes.scene import SceneAssembler  # noqa: E402
from dsp_driving.rosbag.writer import BagWriter  # noqa: E402

T0 = 1_700_000_000_000_000_000
STEP_NS = 100_000_000  # 10 Hz
DECIDE_NS = 2_000_000  # each command 2 ms after its step's input
STATUS = "/policy_node/status"


class ClockNode:
    """What the conversions need of a node (dds message classes), its clock set by hand."""

    backend = "dds"

    def __init__(self) -> None:
        self.now_ns = T0

    def msg_type(self, ros_type: str) -> type:
        return msgs.ROS_TYPES[ros_type]

    def now_msg(self) -> msgs.Time:
        return msgs.Time(sec=self.now_ns // 10**9, nanosec=self.now_ns % 10**9)


def lead_obs(speed_mps: float, gap_64ths: int | None = None) -> np.ndarray:
    """obs_at(speed) with a lead (gap_64ths / 64) x 100 m ahead, closing at 7.5 m/s: every
    feature exact in float32, so TTC = 1.5625 gap_64ths / 7.5 s exactly."""
    obs = obs_at(speed_mps)
    if gap_64ths is not None:
        obs[contract.INDEX["has_lead"]] = 1.0
        obs[contract.INDEX["lead_gap"]] = gap_64ths / 64
        obs[contract.INDEX["lead_relative_speed"]] = -0.25  # -7.5 m/s
    return obs


def features_stream() -> list[np.ndarray | None]:
    """40 steps: 5 without a lead at 15 m/s; 23 closing on a lead from 39.06 m to 4.69 m
    (TTC 5.21 s down to 0.625 s); 4 without input (2 fresh repeats, then stale); one
    non-finite observation (refused); 7 without a lead at 22.5 m/s."""
    return ([lead_obs(15.0)] * 5 + [lead_obs(15.0, 30 - k) for k in range(5, 28)]
            + [None] * 4 + [np.full(contract.OBS_DIM, np.nan, np.float32)]
            + [lead_obs(22.5)] * 7)


def status_values(msg: Any) -> dict[str, str]:
    (status,) = msg.status
    return {kv.key: kv.value for kv in status.values}


def record_features_drive(bag: Path, policy: Path, cfg: PolicyNodeConfig
                          ) -> tuple[PolicyController, list[dict[str, str]]]:
    """Drive a real controller over features_stream as policy_node does, recording what the
    node records: each observation received, each action sent, a status every second."""
    ctl = PolicyController(load_policy(policy), cfg.safety, control_period_s=1 / cfg.rate_hz)
    node, statuses = ClockNode(), []
    with BagWriter(bag, segment_s=3600) as writer:
        writer.add_topic("/observation", "std_msgs/msg/Float32MultiArray")
        writer.add_topic("/action", "std_msgs/msg/Float32MultiArray")
        writer.add_topic(STATUS, "diagnostic_msgs/msg/DiagnosticArray")
        for k, obs in enumerate(features_stream()):
            t_in = T0 + k * STEP_NS
            if obs is not None:
                writer.write("/observation", node.msg_type("std_msgs/msg/Float32MultiArray")(
                    data=[float(v) for v in obs]), t_in)
                ctl.set_observation(obs, t_in * 1e-9)
            node.now_ns = t_in + DECIDE_NS
            decision = ctl.decide(node.now_ns * 1e-9)
            writer.write("/action", conversions.action_message(node, decision), node.now_ns)
            if k % 10 == 9:  # once a second, as policy_node
                msg = conversions.policy_status(node, cfg, ctl, decision, 1e-4)
                writer.write(STATUS, msg, node.now_ns + 1000)
                statuses.append(status_values(msg))
    return ctl, statuses


def test_the_report_gives_exact_ttc_figures_and_the_status_figures(tmp_path: Path) -> None:
    cfg = PolicyNodeConfig(model="policy.onnx", rate_hz=10.0, stale_timeout_s=0.3,
                           max_decel_mps2=5.0)
    bag = tmp_path / "drive"
    ctl, statuses = record_features_drive(bag, driving_policy(tmp_path / "policy.onnx"), cfg)
    out = tmp_path / "report"
    result = make_report(bag, out)
    assert result["partial"] is False, result["problems"]
    sf = result["driving"]["safety"]
    assert result["topics"]["/observation"]["role"] == "input"
    assert sf["observations"] == "the observations on /observation"
    assert sf["period_source"] == "the status's rate_hz" and sf["limits_source"] == "the status"

    # by hand: the TTC of every step decided from a fresh observation
    gaps = [30 - k for k in range(5, 28)] + [3, 3]  # 2 commands more on the last one (fresh)
    ttc = np.array([1.5625 * g / 7.5 for g in gaps])
    headway = np.array([1.5625 * g / 15.0 for g in gaps])
    speeds = [15.0] * 30 + [22.5] * 7
    assert (sf["control_steps"], sf["observed_steps"], sf["lead_steps"]) == (40, 37, 25)
    assert sf["bad_observations"] == 0  # the non-finite one was refused before, as live
    assert sf["min_ttc_s"] == 1.5625 * 3 / 7.5 == 0.625
    assert sf["ttc_p5_s"] == float(np.percentile(ttc, 5))
    assert sf["ttc_below_pct"] == 100.0 * 7 / 37  # gaps 7..3 64ths and the 2 repeats
    assert sf["min_headway_s"] == 0.3125
    assert sf["median_headway_s"] == float(np.median(headway))
    assert sf["mean_speed_mps"] == pytest.approx(np.mean(speeds), rel=1e-15)
    assert (sf["speed_mps"], sf["ttc_s"], sf["headway_s"]) == (22.5, None, None)
    # commanded jerk and steering rate from the bag's actions: differences / 0.1 s
    actions = np.array([[float(r["steer"]), float(r["accel"])] for r in
                        csv_rows(out / "actions.csv")], np.float32)
    physical = np.array([contract.to_physical(a, cfg.limits) for a in actions])
    jerk = np.abs(np.diff(physical[:, 1])) / 0.1
    steer_rate = np.abs(np.diff(physical[:, 0])) / 0.1
    assert sf["jerk_p95_mps3"] == pytest.approx(np.percentile(jerk, 95), rel=1e-12)
    assert sf["jerk_max_mps3"] == pytest.approx(jerk.max(), rel=1e-12)
    assert sf["steer_rate_p95_rps"] == pytest.approx(np.percentile(steer_rate, 95), rel=1e-12)
    assert sf["jerk_max_mps3"] > 0

    # one code path: the report's figures are the controller's (policy_node's status), whose
    # 10 s window holds this whole 4 s drive; the last status says the same to 3 decimals
    live = ctl.drive.figures().as_dict()
    assert live["window_s"] == 10.0 and sf["window_s"] is None
    assert {k: sf[k] for k in FIGURE_KEYS if k != "window_s"} == \
        {k: live[k] for k in FIGURE_KEYS if k != "window_s"}
    last = statuses[-1]
    for key in FIGURE_KEYS[1:]:
        want = sf[key]
        assert last[key] == ("n/a" if want is None else str(want) if isinstance(want, int)
                             else f"{want:.3f}"), key

    # the files: the series, the plot and the markdown
    rows = csv_rows(out / "safety.csv")
    assert len(rows) == 40 and rows[0]["ttc_s"] == "" and float(rows[5]["ttc_s"]) == \
        1.5625 * 25 / 7.5
    assert "safety.png" in result["files"]
    from test_report import assert_images

    assert_images(out, ["safety.png"])
    report = (out / "report.md").read_text()
    assert "### Safety and comfort over the drive" in report
    assert "min **0.625 s**" in report and "**18.9 %** of the observed steps below 1.5 s" \
        in report
    assert json.loads((out / "report.json").read_text())["driving"]["safety"] == sf


def csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# ---- ros mode: the observation rebuilt from odometry, path and lead ---------------------------


def odometry(make: Any, x: float, speed: float, t_ns: int) -> Any:
    """nav_msgs/Odometry at (x, 0) heading +x at ``speed``, stamped ``t_ns``."""
    return make("nav_msgs/msg/Odometry")(
        header=make("std_msgs/msg/Header")(stamp=make("builtin_interfaces/msg/Time")(
            sec=t_ns // 10**9, nanosec=t_ns % 10**9), frame_id="map"),
        pose=make("geometry_msgs/msg/PoseWithCovariance")(pose=make("geometry_msgs/msg/Pose")(
            position=make("geometry_msgs/msg/Point")(x=x, y=0.0, z=0.0))),
        twist=make("geometry_msgs/msg/TwistWithCovariance")(twist=make(
            "geometry_msgs/msg/Twist")(linear=make("geometry_msgs/msg/Vector3")(
                x=speed, y=0.0, z=0.0))))


def test_ros_mode_rebuilds_the_observation_as_the_node_does(tmp_path: Path) -> None:
    """Ego at 15 m/s behind a lead at 10 m/s, 30.5 m centre to centre at first (4.5 m cars:
    gap 26 m, closing 0.5 m per step): the report rebuilds each observation from the bag's
    odometry, path and lead (the status's lane and vehicle sizes), as policy_node did."""
    cfg = PolicyNodeConfig(model="policy.onnx", input_mode="ros", rate_hz=10.0,
                           ego_length_m=4.0, lead_length_m=5.0)
    ctl = PolicyController(load_policy(driving_policy(tmp_path / "policy.onnx")), cfg.safety,
                           control_period_s=0.1)
    scene, node = SceneAssembler(cfg), ClockNode()
    make = node.msg_type
    path = make("nav_msgs/msg/Path")(poses=[make("geometry_msgs/msg/PoseStamped")(
        pose=make("geometry_msgs/msg/Pose")(position=make("geometry_msgs/msg/Point")(
            x=x, y=0.0, z=0.0))) for x in (0.0, 100.0, 200.0)])
    bag = tmp_path / "drive"
    with BagWriter(bag, segment_s=3600) as writer:
        for topic, ros_type in (("/odom", "nav_msgs/msg/Odometry"),
                                ("/path", "nav_msgs/msg/Path"),
                                ("/lead", "nav_msgs/msg/Odometry"),
                                ("/action", "std_msgs/msg/Float32MultiArray"),
                                (STATUS, "diagnostic_msgs/msg/DiagnosticArray")):
            writer.add_topic(topic, ros_type)
        writer.write("/path", path, T0 - STEP_NS)
        scene.on_path(path)  # as policy_node's callbacks, each message as it is recorded
        for k in range(20):
            t_in = T0 + k * STEP_NS
            ego, lead = odometry(make, 10.0 + 1.5 * k, 15.0, t_in), \
                odometry(make, 40.5 + 1.0 * k, 10.0, t_in)
            writer.write("/lead", lead, t_in)
            scene.on_lead(lead, t_in * 1e-9)
            writer.write("/odom", ego, t_in + 1000)
            scene.on_odometry(ego, (t_in + 1000) * 1e-9)
            node.now_ns = t_in + DECIDE_NS  # policy_node's _command: the scene, then decide
            due, _ = scene.take(node.now_ns * 1e-9)
            ctl.set_scene(due, scene.received_s)
            decision = ctl.decide(node.now_ns * 1e-9)
            writer.write("/action", conversions.action_message(node, decision), node.now_ns)
        writer.write(STATUS, conversions.policy_status(node, cfg, ctl, decision, 1e-4),
                     node.now_ns + 1000)
    result = make_report(bag, tmp_path / "report")
    sf = result["driving"]["safety"]
    assert sf["observations"] == ("rebuilt from /odom, /path, /lead as the node does (the "
                                  "status's scene parameters)")
    assert result["topics"]["/lead"]["role"] == "scene"
    assert result["topics"]["/path"]["role"] == "scene"
    assert (sf["control_steps"], sf["observed_steps"], sf["lead_steps"]) == (20, 20, 20)
    # gap 26 - 0.5 k m, closing 5 m/s (float32 features: 1e-6)
    assert sf["min_ttc_s"] == pytest.approx((26.0 - 0.5 * 19) / 5.0, rel=1e-6)
    assert sf["ttc_s"] == sf["min_ttc_s"]
    assert sf["median_headway_s"] == pytest.approx((26.0 - 0.5 * 9.5) / 15.0, rel=1e-6)
    assert sf["mean_speed_mps"] == 15.0  # the odometry's speed, as the controller's
    assert sf["ttc_below_pct"] == 0.0
    live = ctl.drive.figures().as_dict()
    assert {k: sf[k] for k in FIGURE_KEYS if k != "window_s"} == \
        {k: live[k] for k in FIGURE_KEYS if k != "window_s"}
