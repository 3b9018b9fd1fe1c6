"""Train/deploy parity: policy_node, a real process over DDS, reproduces a trace recorded in
the training simulator with the training-side torch actor.

The trace: dsp_driving/HighwayDrive-v0 driven by a trained run's compact torch actor
(actor_compact.pt), recording each step's observation, action and scene. The node runs that
run's policy.onnx through onnxruntime and gets, per step, either the observation itself
(input_mode=features) or what a car has: odometry, the lane's path and the lead vehicle
(input_mode=ros), from which it builds the observation with the training code. Its `action`
topic must carry the torch actor's action each time.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("cyclonedds")
pytest.importorskip("highway_env")

from dsp_driving.driving import contract  # noqa: E402
from dsp_driving.nodes.policy_node import PATH_LATCHED_QOS  # noqa: E402
from dsp_driving.transport import DEFAULT_QOS, create_node  # noqa: E402
from dsp_driving.transport.dds import claim_domain_id  # noqa: E402

STEPS = 25
SEED = 1  # an episode in the middle lane: lane widths stay those of the first step
TOL = 1e-5  # onnxruntime vs torch (export.PARITY_TOL)
DT = 0.2  # the env's control period
# the header stamp of step 0: a stamp of 0 means "unstamped" to the node (it then uses the
# arrival time, and step 1's finite-difference acceleration would be 0, not the env's)
T0 = 1.0
RATE_HZ = 20.0
# ros mode drives as in closed-loop evaluation against carla-ros-bridge
CARLA_TYPE = "carla_msgs/msg/CarlaEgoVehicleControl"
CARLA_TOPIC = "/carla/ego_vehicle/vehicle_control_cmd"


@dataclasses.dataclass
class Step:
    obs: np.ndarray
    action: np.ndarray
    scene: contract.Scene
    lead: contract.Vehicle | None


def lead_of(scene: contract.Scene) -> contract.Vehicle | None:
    """The one vehicle that gives the scene's lead features (None: no lead)."""
    full = contract.observe(scene)
    if full[contract.INDEX["has_lead"]] == 0:
        return None
    for v in scene.vehicles:
        if np.array_equal(contract.observe(dataclasses.replace(scene, vehicles=(v,))), full):
            return v
    raise AssertionError("no single vehicle reproduces the lead features")


@pytest.fixture(scope="module")
def trace(highway_run: Path) -> list[Step]:
    from dsp_driving.actor_file import load_actor
    from dsp_driving.driving.highway import HighwayDriveEnv

    actor, _ = load_actor(highway_run / "actor_compact.pt")
    env = HighwayDriveEnv()
    obs, _ = env.reset(seed=SEED)
    steps = []
    for _ in range(STEPS):
        action = np.array(contract.clip_action(actor.act(obs)), np.float32)
        steps.append(Step(obs, action, env.scene, lead_of(env.scene)))
        obs, _, terminated, truncated, _ = env.step(action)
        assert not (terminated or truncated)
    env.close()
    paths = {(s.scene.path.lane_width, s.scene.path.left_width, s.scene.path.right_width,
              s.scene.path.speed_limit) for s in steps}
    assert len(paths) == 1, paths  # the node takes these as parameters
    assert sum(s.lead is not None for s in steps) >= STEPS // 2  # the lead input is exercised
    return steps


class Replay:
    """Publishes one trace step at a time; waits for the node's action to match it."""

    def __init__(self, domain: int, latched_path: bool = False) -> None:
        self.node = create_node("replay", backend="dds", domain_id=domain)
        t = self.node.msg_type
        self.t = t
        self.obs_pub = self.node.create_publisher(t("std_msgs/msg/Float32MultiArray"),
                                                  "observation")
        self.odom_pub = self.node.create_publisher(t("nav_msgs/msg/Odometry"), "odom")
        self.lead_pub = self.node.create_publisher(t("nav_msgs/msg/Odometry"), "lead")
        self.path_pub = self.node.create_publisher(
            t("nav_msgs/msg/Path"), "path", PATH_LATCHED_QOS if latched_path else DEFAULT_QOS)
        self.latched = latched_path
        self.actions: list[np.ndarray] = []
        self.node.create_subscription(t("std_msgs/msg/Float32MultiArray"), "action",
                                      lambda m: self.actions.append(np.asarray(m.data)))
        self.commands: list[tuple[float, object]] = []  # (arrival, message)
        self.node.create_subscription(t(CARLA_TYPE), CARLA_TOPIC,
                                      lambda m: self.commands.append((time.monotonic(), m)))

    def stamp(self, seconds: float):
        ns = round(seconds * 1e9)
        return self.t("builtin_interfaces/msg/Time")(sec=ns // 10**9, nanosec=ns % 10**9)

    def header(self, seconds: float):
        return self.t("std_msgs/msg/Header")(stamp=self.stamp(seconds), frame_id="map")

    def pose(self, x: float, y: float, yaw: float):
        t = self.t
        return t("geometry_msgs/msg/Pose")(
            position=t("geometry_msgs/msg/Point")(x=x, y=y, z=0.0),
            orientation=t("geometry_msgs/msg/Quaternion")(x=0.0, y=0.0, z=math.sin(yaw / 2),
                                                          w=math.cos(yaw / 2)))

    def odometry(self, seconds: float, x: float, y: float, yaw: float, speed: float,
                 yaw_rate: float):
        t = self.t
        twist = t("geometry_msgs/msg/Twist")(
            linear=t("geometry_msgs/msg/Vector3")(x=speed, y=0.0, z=0.0),
            angular=t("geometry_msgs/msg/Vector3")(x=0.0, y=0.0, z=yaw_rate))
        return t("nav_msgs/msg/Odometry")(
            header=self.header(seconds), child_frame_id="base_link",
            pose=t("geometry_msgs/msg/PoseWithCovariance")(pose=self.pose(x, y, yaw)),
            twist=t("geometry_msgs/msg/TwistWithCovariance")(twist=twist))

    def send_features(self, i: int, step: Step) -> None:
        self.obs_pub.publish(self.t("std_msgs/msg/Float32MultiArray")(
            data=[float(v) for v in step.obs]))

    def send_path(self, i: int, step: Step) -> None:
        t, now = self.t, T0 + i * DT
        poses = [t("geometry_msgs/msg/PoseStamped")(header=self.header(now),
                                                    pose=self.pose(float(x), float(y), 0.0))
                 for x, y in step.scene.path.points]
        self.path_pub.publish(t("nav_msgs/msg/Path")(header=self.header(now), poses=poses))

    def send_ros(self, i: int, step: Step) -> None:
        now = T0 + i * DT
        if i > 0 or not self.latched:
            self.send_path(i, step)
        if step.lead is not None:
            v = step.lead
            self.lead_pub.publish(self.odometry(now, v.x, v.y, v.yaw, v.speed, 0.0))
        self.node.spin_once(0.01)  # path and lead first: the scene is built on odometry
        e = step.scene.ego
        self.odom_pub.publish(self.odometry(now, e.x, e.y, e.yaw, e.speed, e.yaw_rate))

    def replay(self, steps: list[Step], send) -> list[float]:
        """Each step's |node - torch| action error (inf where it never matched)."""
        errors = []
        for i, step in enumerate(steps):
            self.actions.clear()
            send(i, step)
            end, resend = time.monotonic() + 3.0, time.monotonic() + 0.5
            best = math.inf
            while time.monotonic() < end:
                self.node.spin_once(0.01)
                if self.actions:
                    best = min(best, min(float(np.max(np.abs(a - step.action)))
                                         for a in self.actions))
                    if best <= TOL:
                        break
                if time.monotonic() > resend and send is self.send_features:
                    send(i, step)  # observation is best effort: one may be lost
                    resend = time.monotonic() + 0.5
            errors.append(best)
        return errors


def run_node(highway_run: Path, domain: int, *sets: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dsp_driving", "drive", "--model",
         str(highway_run / "policy.onnx"), "--domain", str(domain), "--duration", "120",
         "--set", f"rate_hz={RATE_HZ}", "--set", "stale_timeout_s=2.0", *sets],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("input_mode", ["features", "ros", "ros_latched_path"])
def test_policy_node_reproduces_the_training_trace(highway_run, trace, input_mode) -> None:
    """ros_latched_path: the first path is published, transient local, before the node
    starts (as carla_waypoint_publisher does), and the node subscribes with path_qos
    transient_local."""
    domain = claim_domain_id()
    latched = input_mode == "ros_latched_path"
    sets: list[str] = ["--set", f"input_mode={'features' if input_mode == 'features' else 'ros'}"]
    replay = Replay(domain, latched_path=latched)
    if latched:
        sets += ["--set", "path_qos=transient_local"]
        replay.send_path(0, trace[0])
    if input_mode != "features":
        sets += ["--set", "command_interface=carla"]
        path, ego = trace[0].scene.path, trace[0].scene.ego
        lead_lengths = {s.lead.length for s in trace if s.lead is not None}
        assert len(lead_lengths) == 1
        for key, value in (("lane_width_m", path.lane_width), ("left_width_m", path.left_width),
                           ("right_width_m", path.right_width),
                           ("speed_limit_mps", path.speed_limit), ("ego_length_m", ego.length),
                           ("lead_length_m", lead_lengths.pop())):
            sets += ["--set", f"{key}={value!r}"]
    proc = run_node(highway_run, domain, *sets)
    try:
        end = time.monotonic() + 30
        while not replay.actions and time.monotonic() < end:
            replay.node.spin_once(0.05)
        assert replay.actions, "the node published no action"
        send = replay.send_features if input_mode == "features" else replay.send_ros
        replay.commands.clear()
        errors = replay.replay(trace, send)
        replay.node.spin(duration_s=0.5)
        assert proc.poll() is None
    finally:
        replay.node.destroy()
        proc.terminate()
        output = proc.communicate(timeout=10)[0]
    assert max(errors) <= TOL, (errors, output[-2000:])
    if input_mode != "features":  # the CARLA command at rate_hz, for the last step's action
        times = np.array([t for t, _ in replay.commands])
        rate = (len(times) - 1) / (times[-1] - times[0])
        assert abs(rate - RATE_HZ) / RATE_HZ < 0.10, rate
        last, want = replay.commands[-1][1], contract.to_carla(trace[-1].action)
        assert (last.steer, last.throttle, last.brake) == pytest.approx(
            (want.steer, want.throttle, want.brake), abs=1e-5)
