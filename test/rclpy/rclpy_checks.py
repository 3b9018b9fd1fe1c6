"""The nodes on real ROS 2 Jazzy rclpy (7.1.6, Fast DDS), run inside the venv that
test/rclpy/make_venv.sh makes; test_real_rclpy.py runs this module there and reports each test.

By hand, in such a venv: ``VENV/bin/python -m pytest -q test/rclpy/rclpy_checks.py``. On a ROS 2
machine (Humble or Jazzy sourced, ackermann_msgs installed) the same command works as well.

This process is the independent rclpy peer: it subscribes to policy_node's and trainer_node's
topics, publishes their inputs, asks for parameters over rclpy's own services, and starts
the nodes as real processes (VENV/bin/policy_node, VENV/bin/trainer_node). Every DDS
participant stays on loopback (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, Cyclone's loopback
configuration) and each test has a domain id of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import math
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy.node", reason="rclpy is not importable here: run this module in "
                    "the venv of test/rclpy/make_venv.sh (test_real_rclpy.py does) or with "
                    "ROS 2 sourced")

from policy_samples import driving_policy, obs_at  # noqa: E402
from rcl_interfaces.srv import GetParameters  # noqa: E402
import rclpy  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.logging import LoggingSeverity  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

from dsp_driving.driving import contract  # noqa: E402
from dsp_driving.inference import OnnxPolicy  # noqa: E402
from dsp_driving.nodes.conversions import COMMAND_TOPICS  # noqa: E402
from dsp_driving.transport import create_node, select_backend  # noqa: E402
from dsp_driving.transport.dds import DdsNode, claim_domain_id  # noqa: E402
from dsp_driving.transport.ros import RclpyNode, message_class  # noqa: E402

BIN = Path(sys.executable).parent
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture
def domain(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A DDS domain of this test's own, loopback only, for this process and its children."""
    domain_id = claim_domain_id(os.getpid())
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain_id))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("RCUTILS_COLORIZED_OUTPUT", "0")
    yield domain_id


@pytest.fixture
def peer(domain: int) -> Iterator[Any]:
    """This process's rclpy node (the independent peer)."""
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node("dsp_test_peer", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    node.spin_for = lambda seconds, until=None: _spin(executor, seconds, until)
    yield node
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)


def _spin(executor: Any, seconds: float, until: Callable[[], bool] | None) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if until is not None and until():
            return True
        executor.spin_once(timeout_sec=0.02)
    return until is not None and until()


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return driving_policy(tmp_path / "policy.onnx", seed=0, bias=(0.2, 0.6))


class Proc:
    """A node started as a real process, its output collected in a file."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._file = log.open("wb")
        self.p = subprocess.Popen(argv, stdout=self._file, stderr=subprocess.STDOUT,
                                  env=None if env is None else {**os.environ, **env})

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            return self.p.wait(timeout=timeout_s)
        finally:
            self._file.close()

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self._file.close()

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    procs: list[Proc] = []

    def start_node(executable: str, *params: str, args: tuple[str, ...] = (),
                   env: dict[str, str] | None = None) -> Proc:
        argv = [str(BIN / executable), *args, "--ros-args"]
        for p in params:
            argv += ["-p", p]
        proc = Proc(argv, tmp_path / f"{executable}_{len(procs)}.log", env)
        procs.append(proc)
        return proc

    yield start_node
    for proc in procs:
        proc.kill()


def collect(peer: Any, ros_type: str, topic: str, qos: Any = 10) -> list[tuple[float, Any]]:
    """(arrival time, message) of everything ``peer`` receives on ``topic``."""
    got: list[tuple[float, Any]] = []
    peer.create_subscription(message_class(ros_type), topic,
                             lambda m: got.append((time.monotonic(), m)), qos)
    return got


def features(peer: Any, values: np.ndarray) -> Callable[[], None]:
    """A function that publishes ``values`` on 'observation' (what policy_node reads)."""
    cls = message_class("std_msgs/msg/Float32MultiArray")
    pub = peer.create_publisher(cls, "observation", 5)

    def send() -> None:
        msg = cls()
        msg.data = [float(v) for v in values]
        pub.publish(msg)

    return send


def spin_sending(peer: Any, seconds: float, send: Callable[[], None] | None,
                 period_s: float = 0.05) -> None:
    end, next_send = time.monotonic() + seconds, time.monotonic()
    while time.monotonic() < end:
        if send is not None and time.monotonic() >= next_send:
            send()
            next_send += period_s
        peer.spin_for(0.01)


def expected_action(model: Path, obs: np.ndarray) -> np.ndarray:
    return np.clip(OnnxPolicy(model).act(obs), -1, 1)


def expected_drive(model: Path, obs: np.ndarray) -> dict[str, float]:
    """AckermannDrive's fields for the policy's action at ``obs`` (default limits)."""
    return contract.to_ackermann(expected_action(model, obs),
                                 float(obs[contract.INDEX["speed"]]) * contract.SPEED_SCALE_MPS)


# The safe command at 10 m/s: brake at safe_decel_mps2 (3) for speed_horizon_s (0.5).
SAFE_SPEED_AT_10 = 10.0 - 3.0 * 0.5


def level(status: Any) -> int:
    """DiagnosticStatus.level (a ``byte``: rclpy gives bytes)."""
    return int.from_bytes(status.level, "little") if isinstance(status.level, bytes) \
        else int(status.level)


def assert_clean_exit(proc: Proc, sig: int = signal.SIGTERM) -> None:
    code = proc.stop(sig)
    assert code == 0, proc.output
    assert "Traceback" not in proc.output, proc.output


# ---- the backend in this process ----------------------------------------------------------


def test_rclpy_is_selected_when_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSP_TRANSPORT", raising=False)
    assert select_backend() == "rclpy"


def test_publish_subscribe_in_process(domain: int) -> None:
    node = create_node("dsp_test_node", backend="rclpy")
    try:
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
    finally:
        node.destroy()
    assert not rclpy.ok()  # the backend's own rclpy.init is shut down after its last node


def test_every_severity_from_one_node_and_throttling(domain: int,
                                                     capfd: pytest.CaptureFixture) -> None:
    node = RclpyNode("dsp_test_logger")
    try:
        node._ros_logger.set_level(LoggingSeverity.DEBUG)
        for _ in range(2):  # rclpy refused a second severity from one call site
            node.logger.debug("debug line")
            node.logger.info("info line")
            node.logger.warning("warn line")
            node.logger.error("error line")
        assert node.logger.warning("throttled", throttle_s=60.0, key="k") is True
        assert node.logger.warning("throttled", throttle_s=60.0, key="k") is False
        assert node.logger.error("throttled", throttle_s=60.0, key="k") is True
    finally:
        node.destroy()
    err = capfd.readouterr().err
    for tag, text in (("DEBUG", "debug line"), ("INFO", "info line"), ("WARN", "warn line"),
                      ("ERROR", "error line")):
        assert err.count(f"[{tag}]") >= 2 and f"[dsp_test_logger]: {text}" in err, err
        assert all(f"[{tag}]" in line for line in err.splitlines() if line.endswith(text))
    assert err.count("throttled") == 2


def test_parameters_declared_with_the_defaults_types(domain: int) -> None:
    node = RclpyNode("dsp_test_params")
    try:
        values = node.get_parameters({"rate_hz": 50.0, "topic": "/cmd", "limits": (0.5, 0.5)})
        assert values == {"rate_hz": 50.0, "topic": "/cmd", "limits": [0.5, 0.5]}
        param = node._node.get_parameter("rate_hz")
        assert param.type_ == Parameter.Type.DOUBLE
    finally:
        node.destroy()


def test_given_parameters_typed_as_declared_and_unknown_names_refused(domain: int) -> None:
    rclpy.init(args=["--ros-args", "-p", "rate_hz:=20", "-p", "gains:=[1, 2]", "-p",
                     "later:=x"])
    try:
        node = RclpyNode("dsp_test_given")
        try:
            values = node.get_parameters({"rate_hz": 50.0, "gains": (0.5, 0.5)},
                                         strict=False)  # `later` is read by a later call
            assert values == {"rate_hz": 20.0, "gains": [1.0, 2.0]}
            assert node._node.get_parameter("rate_hz").type_ == Parameter.Type.DOUBLE
            assert node._node.get_parameter("gains").type_ == Parameter.Type.DOUBLE_ARRAY
            assert node.get_parameters({"later": "y"}) == {"later": "x"}
            other = RclpyNode("dsp_test_given_2")  # the -p values are global: all nodes'
            try:
                with pytest.raises(ValueError, match=r"unknown parameter 'gains' for node "
                                   r"dsp_test_given_2 \(known: rate_hz, "):
                    other.get_parameters({"rate_hz": 1.0})
            finally:
                other.destroy()
        finally:
            node.destroy()
        assert rclpy.ok()  # not ours to shut down: this test called rclpy.init
    finally:
        rclpy.shutdown()


def test_missing_message_package_names_what_to_install(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ROS_DISTRO", "jazzy")
    fake = tmp_path / "carla_msgs"
    fake.mkdir()
    (fake / "__init__.py").write_text("")  # a carla_msgs without its msg module
    monkeypatch.syspath_prepend(str(tmp_path))
    real = {m: sys.modules.pop(m) for m in list(sys.modules) if m.split(".")[0] == "carla_msgs"}
    try:
        with pytest.raises(ModuleNotFoundError, match="build carla-simulator/ros-carla-msgs"):
            message_class("carla_msgs/msg/CarlaEgoVehicleControl")
    finally:
        for m in [m for m in sys.modules if m.split(".")[0] == "carla_msgs"]:
            del sys.modules[m]
        sys.modules.update(real)
    with pytest.raises(ModuleNotFoundError, match="sudo apt install ros-jazzy-ackermann-msgs"):
        message_class("ackermann_msgs/msg/NoSuchMessage")
    with pytest.raises(ModuleNotFoundError, match="ros-jazzy-autoware-control-msgs"):
        message_class("autoware_control_msgs/msg/NoSuchMessage")


# ---- policy_node as a process ---------------------------------------------------------------


def test_policy_node_at_20_hz_through_5_s_without_input_and_sigterm(
        domain: int, peer: Any, start: Callable[..., Proc], policy: Path) -> None:
    """The issue's acceptance run: `-p rate_hz:=20` (an int for a float) publishes
    AckermannDriveStamped at 20 Hz to this independent subscriber, keeps running through
    5 s without input (the safe command), drives on input, and ends with status 0 and no
    traceback on SIGTERM, its last command the safe one."""
    commands = collect(peer, "ackermann_msgs/msg/AckermannDriveStamped", "ackermann_cmd")
    # stale_timeout_s 30: after driving, the only safe command can be the shutdown one
    node = start("policy_node", f"model:={policy}", "rate_hz:=20", "stale_timeout_s:=30.0")
    assert peer.spin_for(20.0, lambda: len(commands) >= 3), node.output
    first = len(commands)
    peer.spin_for(5.0)
    assert node.p.poll() is None, node.output
    window = commands[first:]
    rate = (len(window) - 1) / (window[-1][0] - window[0][0])
    assert 15.0 <= rate <= 25.0, rate
    # no input yet: the safe command, at standstill (speed target 0, braking at 3 m/s^2)
    assert all(m.drive.speed == 0.0 and m.drive.acceleration == pytest.approx(3.0)
               for _, m in window)
    assert all(m.header.frame_id == "base_link" for _, m in window)

    obs = obs_at(10.0)
    spin_sending(peer, 1.5, features(peer, obs))
    want = expected_drive(policy, obs)
    got = commands[-1][1].drive
    assert want["speed"] > 10.0  # this policy speeds up: not the safe command
    for field in ("steering_angle", "speed", "acceleration"):
        assert getattr(got, field) == pytest.approx(want[field], abs=1e-5)

    assert_clean_exit(node)
    peer.spin_for(1.0)
    assert commands[-2][1].drive.speed == pytest.approx(want["speed"], abs=1e-5)
    assert commands[-1][1].drive.speed == pytest.approx(SAFE_SPEED_AT_10)  # at shutdown
    out = node.output
    assert "[INFO]" in out and "[WARN]" in out and "safe command: no_input" in out


def test_policy_node_sigint_exits_cleanly(domain: int, peer: Any, start: Callable[..., Proc],
                                          policy: Path) -> None:
    commands = collect(peer, "ackermann_msgs/msg/AckermannDriveStamped", "ackermann_cmd")
    node = start("policy_node", f"model:={policy}")
    assert peer.spin_for(20.0, lambda: len(commands) >= 2), node.output
    assert_clean_exit(node, signal.SIGINT)


def test_unknown_parameter_is_refused(domain: int, start: Callable[..., Proc],
                                      policy: Path) -> None:
    node = start("policy_node", f"model:={policy}", "rate_hx:=20")
    assert node.p.wait(timeout=30) == 2, node.output
    out = node.output
    assert "unknown parameter 'rate_hx' for node policy_node" in out
    assert "rate_hz" in out and "stale_timeout_s" in out  # the known names are listed
    assert "Traceback" not in out
    # the dds backend says the same words
    with pytest.raises(ValueError) as dds_error:
        DdsNode("policy_node", domain_id=domain, parameters={"rate_hx": 20}).get_parameters(
            {"rate_hz": 10.0})
    assert "unknown parameter 'rate_hx' for node policy_node (known: rate_hz)" in str(
        dds_error.value)


def test_wrong_parameter_type_is_refused(domain: int, start: Callable[..., Proc],
                                         policy: Path) -> None:
    node = start("policy_node", f"model:={policy}", "rate_hz:=fast")
    assert node.p.wait(timeout=30) == 2, node.output
    assert "parameter rate_hz='fast': expected float like the default 10.0" in node.output


def test_stale_input_gives_the_safe_command(domain: int, peer: Any,
                                            start: Callable[..., Proc], policy: Path) -> None:
    commands = collect(peer, "ackermann_msgs/msg/AckermannDriveStamped", "ackermann_cmd")
    statuses = collect(peer, "diagnostic_msgs/msg/DiagnosticArray", "policy_node/status")
    node = start("policy_node", f"model:={policy}", "rate_hz:=20.0", "stale_timeout_s:=0.3")
    assert peer.spin_for(20.0, lambda: len(commands) >= 1), node.output
    spin_sending(peer, 1.5, features(peer, obs_at(10.0)))
    assert commands[-1][1].drive.speed > 10.0
    peer.spin_for(2.0)
    assert all(m.drive.speed == pytest.approx(SAFE_SPEED_AT_10) for _, m in commands[-5:])
    values = {kv.key: kv.value for kv in statuses[-1][1].status[0].values}
    assert int(values["stale_commands"]) >= 5
    assert level(statuses[-1][1].status[0]) == 1  # WARN while braking
    assert_clean_exit(node)


@pytest.mark.parametrize("interface", sorted(COMMAND_TOPICS))
def test_every_command_interface(domain: int, peer: Any, start: Callable[..., Proc],
                                 policy: Path, interface: str) -> None:
    ros_type, topic = COMMAND_TOPICS[interface]
    topic = topic.format(role="ego_vehicle")
    commands = collect(peer, ros_type, topic)
    node = start("policy_node", f"model:={policy}", f"command_interface:={interface}",
                 "rate_hz:=20", "trigger:=input")
    assert peer.spin_for(20.0, lambda: len(commands) >= 1), node.output
    obs = obs_at(10.0)
    spin_sending(peer, 1.0, features(peer, obs))
    msg = commands[-1][1]
    assert type(msg).__name__ == ros_type.rsplit("/", 1)[1]
    want = expected_drive(policy, obs)
    if interface == "ackermann":
        assert msg.drive.speed == pytest.approx(want["speed"], abs=1e-5)
        assert msg.drive.steering_angle == pytest.approx(want["steering_angle"], abs=1e-5)
    elif interface == "carla_ackermann":
        assert msg.speed == pytest.approx(want["speed"], abs=1e-5)
        assert msg.steering_angle == pytest.approx(want["steering_angle"], abs=1e-5)
    elif interface == "carla":
        carla = contract.to_carla(expected_action(policy, obs))
        assert (msg.throttle, msg.steer, msg.brake) == pytest.approx(
            (carla.throttle, carla.steer, carla.brake), abs=1e-5)
        assert msg.throttle > 0
    else:
        assert msg.lateral.steering_tire_angle == pytest.approx(want["steering_angle"],
                                                                abs=1e-5)
        assert msg.longitudinal.acceleration == pytest.approx(want["acceleration"], abs=1e-5)
    assert_clean_exit(node)


def test_carla_interface_without_carla_msgs_says_what_to_install(
        domain: int, start: Callable[..., Proc], policy: Path, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    (shadow / "carla_msgs").mkdir(parents=True)
    (shadow / "carla_msgs" / "__init__.py").write_text("")  # no msg module: "not installed"
    node = start("policy_node", f"model:={policy}", "command_interface:=carla",
                 env={"PYTHONPATH": str(shadow), "ROS_DISTRO": "jazzy"})
    assert node.p.wait(timeout=30) == 2, node.output
    assert "not installed (or not sourced): it is not released as a ROS package: build " \
        "carla-simulator/ros-carla-msgs" in node.output
    assert "Traceback" not in node.output


def test_ros_input_mode(domain: int, peer: Any, start: Callable[..., Proc],
                        policy: Path) -> None:
    """Odometry along a straight path -> driving commands (the scene built in the node)."""
    commands = collect(peer, "ackermann_msgs/msg/AckermannDriveStamped", "ackermann_cmd")
    statuses = collect(peer, "diagnostic_msgs/msg/DiagnosticArray", "policy_node/status")
    odom_t = message_class("nav_msgs/msg/Odometry")
    path_t = message_class("nav_msgs/msg/Path")
    pose_t = message_class("geometry_msgs/msg/PoseStamped")
    odom_pub = peer.create_publisher(odom_t, "odom", 5)
    path_pub = peer.create_publisher(path_t, "path", 5)
    node = start("policy_node", f"model:={policy}", "input_mode:=ros", "rate_hz:=20")
    assert peer.spin_for(20.0, lambda: len(commands) >= 1), node.output
    t0 = time.monotonic()

    def send() -> None:
        now = peer.get_clock().now().to_msg()
        path = path_t()
        path.header.frame_id, path.header.stamp = "map", now
        for x in np.arange(-20.0, 200.0, 5.0):
            pose = pose_t()
            pose.pose.position.x, pose.pose.orientation.w = float(x), 1.0
            path.poses.append(pose)
        path_pub.publish(path)
        odom = odom_t()
        odom.header.frame_id, odom.header.stamp = "map", now
        odom.pose.pose.position.x = 10.0 * (time.monotonic() - t0)
        odom.pose.pose.orientation.w = 1.0
        odom.twist.twist.linear.x = 10.0
        odom_pub.publish(odom)

    spin_sending(peer, 2.5, send)
    assert not math.isnan(commands[-1][1].drive.steering_angle)
    status = statuses[-1][1].status[0]
    assert (level(status), status.message) == (0, "driving"), node.output  # not braking
    assert commands[-1][1].drive.speed != pytest.approx(SAFE_SPEED_AT_10)
    assert_clean_exit(node)


def test_hot_reload_on_the_policy_topic(domain: int, peer: Any, start: Callable[..., Proc],
                                        policy: Path, tmp_path: Path) -> None:
    commands = collect(peer, "ackermann_msgs/msg/AckermannDriveStamped", "ackermann_cmd")
    statuses = collect(peer, "diagnostic_msgs/msg/DiagnosticArray", "policy_node/status")
    string_t = message_class("std_msgs/msg/String")
    policy_pub = peer.create_publisher(string_t, "dsp/policy", LATCHED)
    node = start("policy_node", f"model:={policy}", "rate_hz:=20")
    assert peer.spin_for(20.0, lambda: len(commands) >= 3), node.output  # no input: WARN
    obs = obs_at(10.0)
    send = features(peer, obs)
    spin_sending(peer, 1.5, send)
    assert commands, node.output
    before = commands[-1][1].drive.speed
    newer = driving_policy(tmp_path / "newer.onnx", seed=1, bias=(-0.3, -0.4))
    msg = string_t()
    msg.data = str(newer)
    policy_pub.publish(msg)
    spin_sending(peer, 2.5, send)
    after = commands[-1][1].drive
    want = expected_drive(newer, obs)
    assert after.speed == pytest.approx(want["speed"], abs=1e-5)
    assert after.speed != pytest.approx(before, abs=1e-3)
    values = {kv.key: kv.value for kv in statuses[-1][1].status[0].values}
    assert values["policy_reloads"] == "1" and values["model"] == str(newer)
    bad = string_t()
    bad.data = str(tmp_path / "missing.onnx")
    policy_pub.publish(bad)  # refused: the newer policy keeps driving, an ERROR is logged
    spin_sending(peer, 1.5, send)
    assert commands[-1][1].drive.speed == pytest.approx(want["speed"], abs=1e-5)
    assert_clean_exit(node)
    out = node.output  # INFO, WARN and ERROR from one policy_node process
    assert "[ERROR]" in out and "refused, the old one keeps driving" in out
    assert "[INFO]" in out and "switched to policy" in out
    assert "[WARN]" in out and "safe command: no_input" in out


def test_use_sim_time_commands_follow_the_clock_topic(domain: int, peer: Any,
                                                      start: Callable[..., Proc],
                                                      policy: Path) -> None:
    """Under use_sim_time the timer, the watchdog and the status all run on /clock: no
    /clock, no command; /clock faster than real time, 10 commands per simulated second,
    stamped in simulated time, and the watchdog does not call fresh input stale."""
    commands = collect(peer, "ackermann_msgs/msg/AckermannDriveStamped", "ackermann_cmd")
    clock_t = message_class("rosgraph_msgs/msg/Clock")
    clock_pub = peer.create_publisher(clock_t, "/clock", 10)
    node = start("policy_node", f"model:={policy}", "rate_hz:=10", "use_sim_time:=true")
    # the node is up (it subscribes to /clock and publishes its command topic), yet silent
    assert peer.spin_for(30.0, lambda: clock_pub.get_subscription_count() > 0), node.output
    peer.spin_for(2.0)
    assert commands == [], "commands without /clock"
    sim_ns = 1_000_000_000

    def tick() -> None:  # every 10 ms of wall time, 30 ms of sim time
        nonlocal sim_ns
        sim_ns += 30_000_000
        msg = clock_t()
        msg.clock.sec, msg.clock.nanosec = divmod(sim_ns, 1_000_000_000)
        clock_pub.publish(msg)

    spin_sending(peer, 1.0, tick, period_s=0.01)  # matched and running
    first = len(commands)
    start_sim = sim_ns
    spin_sending(peer, 3.0, tick, period_s=0.01)
    sim_elapsed = (sim_ns - start_sim) * 1e-9
    window = commands[first:]
    assert len(window) == pytest.approx(10.0 * sim_elapsed, rel=0.2), (len(window),
                                                                        sim_elapsed)
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for _, m in window]
    assert 1.0 < stamps[0] < stamps[-1] <= sim_ns * 1e-9  # simulated time, not the wall's
    assert stamps[-1] - stamps[0] == pytest.approx(0.1 * (len(stamps) - 1), rel=0.2)
    # fresh input on the sim clock is not stale, although the sim runs faster than the wall
    obs_send = features(peer, obs_at(10.0))

    def both() -> None:
        tick()
        obs_send()

    spin_sending(peer, 1.5, both, period_s=0.01)
    assert commands[-1][1].drive.speed > 10.0, node.output
    assert_clean_exit(node)


# ---- trainer_node as a process --------------------------------------------------------------


def test_trainer_node_topics_and_parameters_while_training(
        domain: int, peer: Any, start: Callable[..., Proc], tmp_path: Path) -> None:
    topics = {
        "compaction": collect(peer, "diagnostic_msgs/msg/DiagnosticArray", "dsp/compaction"),
        "summary": collect(peer, "std_msgs/msg/Float32MultiArray", "dsp/compaction/summary"),
        "training": collect(peer, "diagnostic_msgs/msg/DiagnosticArray", "dsp/training"),
        "policy": collect(peer, "std_msgs/msg/String", "dsp/policy", LATCHED),
    }
    out = tmp_path / "run"
    node = start("trainer_node", "train.env_id:=CartPole-v1", "train.total_steps:=6144",
                 "train.num_envs:=2", "ppo.num_steps:=128", "ppo.learning_rate:=0.001",
                 "net.actor_hidden:=[16,16]", "net.critic_hidden:=[16,16]",
                 "train.eval_episodes:=2", "train.tensorboard:=false",
                 "train.progress:=false", "train.export_onnx:=true",
                 "wait_for_subscribers_s:=20", f"out:={out}")
    client = peer.create_client(GetParameters, "/trainer_node/get_parameters")
    assert peer.spin_for(60.0, lambda: bool(topics["summary"])), node.output
    assert client.wait_for_service(timeout_sec=10.0), node.output
    request = GetParameters.Request()
    request.names = ["ppo.learning_rate", "train.env_id", "net.actor_hidden"]
    future = client.call_async(request)
    assert peer.spin_for(10.0, future.done), "no answer from trainer_node's parameter service"
    values = future.result().values
    assert values[0].double_value == pytest.approx(0.001)
    assert values[1].string_value == "CartPole-v1"
    assert list(values[2].integer_array_value) == [16, 16]
    assert node.p.poll() is None  # it answered while training

    assert node.p.wait(timeout=240) == 0, node.output
    peer.spin_for(2.0, lambda: bool(topics["policy"]))
    assert "Traceback" not in node.output
    assert {k: bool(v) for k, v in topics.items()} == dict.fromkeys(topics, True)
    labels = topics["summary"][-1][1].layout.dim[0].label.split(",")
    assert labels[0] == "step" and len(topics["summary"][-1][1].data) == len(labels)
    names = [s.name for s in topics["compaction"][-1][1].status]
    assert "trainer_node: actor" in names
    assert topics["policy"][-1][1].data.endswith("policy.onnx")
    assert (out / "summary.json").is_file()


def test_trainer_node_sigterm_exits_cleanly(domain: int, peer: Any,
                                            start: Callable[..., Proc],
                                            tmp_path: Path) -> None:
    summary = collect(peer, "std_msgs/msg/Float32MultiArray", "dsp/compaction/summary")
    node = start("trainer_node", "train.env_id:=CartPole-v1", "train.total_steps:=1000000",
                 "train.num_envs:=2", "ppo.num_steps:=128", "train.tensorboard:=false",
                 "train.progress:=false", "wait_for_subscribers_s:=20",
                 f"out:={tmp_path / 'run'}")
    assert peer.spin_for(60.0, lambda: bool(summary)), node.output
    assert_clean_exit(node)


# ---- interop with the dds backend -----------------------------------------------------------


def test_interop_both_ways_with_a_dds_backend_process(domain: int, peer: Any) -> None:
    """An rclpy node (Fast DDS) and a dds-backend node (Cyclone DDS, `dsp-driving topic`) in
    another process exchange AckermannDriveStamped both ways."""
    drive_t = message_class("ackermann_msgs/msg/AckermannDriveStamped")
    pub = peer.create_publisher(drive_t, "/interop/from_rclpy", 10)
    got = collect(peer, "ackermann_msgs/msg/AckermannDriveStamped", "/interop/from_dds")
    dds = BIN / "dsp-driving"
    echo = subprocess.Popen([str(dds), "topic", "echo", "/interop/from_rclpy", "--type",
                             "ackermann_msgs/msg/AckermannDriveStamped", "-n", "1",
                             "--timeout", "30"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    sender = subprocess.Popen([str(dds), "topic", "pub", "/interop/from_dds",
                               "ackermann_msgs/msg/AckermannDriveStamped",
                               "{drive: {speed: 4.5, steering_angle: -0.25}}", "-r", "10",
                               "-t", "100"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        msg = drive_t()
        msg.drive.speed, msg.drive.steering_angle = 3.25, 0.125
        end = time.monotonic() + 30
        while echo.poll() is None and time.monotonic() < end:
            pub.publish(msg)
            peer.spin_for(0.1)
        text = echo.communicate(timeout=10)[0]
        assert "speed: 3.25" in text and "steering_angle: 0.125" in text, text
        assert peer.spin_for(20.0, lambda: bool(got))
        assert got[0][1].drive.speed == 4.5 and got[0][1].drive.steering_angle == -0.25
    finally:
        for p in (echo, sender):
            if p.poll() is None:
                p.kill()
                p.wait()
