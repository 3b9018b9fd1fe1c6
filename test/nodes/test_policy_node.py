"""policy_node as a real process (`dsp-driving drive`) talking DDS on loopback to this one."""

from __future__ import annotations

import hashlib
from pathlib import Path
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("cyclonedds")
pytest.importorskip("onnxscript")

from policy_samples import driving_policy, obs_at  # noqa: E402

from dsp_driving.driving import contract  # noqa: E402
from dsp_driving.inference import OnnxPolicy  # noqa: E402
from dsp_driving.transport import create_node  # noqa: E402
from dsp_driving.transport.dds import claim_domain_id  # noqa: E402

RATE_HZ = 10.0
STALE_S = 0.3


class Harness:
    """This process's side: publishes observations and policy paths, records commands."""

    def __init__(self, domain: int) -> None:
        self.node = create_node("harness", backend="dds", domain_id=domain)
        t = self.node.msg_type
        self.obs_pub = self.node.create_publisher(t("std_msgs/msg/Float32MultiArray"),
                                                  "observation")
        from dsp_driving.nodes.policy_node import POLICY_TOPIC_QOS

        self.policy_pub = self.node.create_publisher(t("std_msgs/msg/String"), "dsp/policy",
                                                     POLICY_TOPIC_QOS)
        self.commands: list[tuple[float, object]] = []
        self.node.create_subscription(t("ackermann_msgs/msg/AckermannDriveStamped"),
                                      "ackermann_cmd",
                                      lambda m: self.commands.append((time.monotonic(), m)))
        self.statuses: list = []
        self.node.create_subscription(t("diagnostic_msgs/msg/DiagnosticArray"),
                                      "policy_node/status", self.statuses.append)

    def status(self) -> dict[str, str]:
        """The newest policy_node/status values."""
        return {kv.key: kv.value for kv in self.statuses[-1].status[0].values}

    def send(self, values) -> None:
        msg = self.node.msg_type("std_msgs/msg/Float32MultiArray")(
            data=[float(v) for v in values])
        self.obs_pub.publish(msg)

    def spin_sending(self, seconds: float, values=None, period_s: float = 0.05) -> float:
        """Spin for ``seconds``, publishing ``values`` every ``period_s``; the last send time."""
        end, last = time.monotonic() + seconds, 0.0
        next_send = time.monotonic()
        while time.monotonic() < end:
            if values is not None and time.monotonic() >= next_send:
                self.send(values() if callable(values) else values)
                last, next_send = time.monotonic(), next_send + period_s
            self.node.spin_once(0.01)
        return last

    def wait_for_commands(self, n: int, timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        while len(self.commands) < n and time.monotonic() < end:
            self.node.spin_once(0.05)
        assert len(self.commands) >= n, f"only {len(self.commands)} commands in {timeout_s} s"


def expected_drive(policy: OnnxPolicy, obs: np.ndarray) -> dict[str, float]:
    action = np.clip(policy.act(obs), -1, 1)
    speed = float(obs[contract.INDEX["speed"]]) * contract.SPEED_SCALE_MPS
    return contract.to_ackermann(action, speed)


def is_safe(msg, speed: float) -> bool:
    return (msg.drive.acceleration == pytest.approx(3.0)
            and msg.drive.speed == pytest.approx(max(0.0, speed - 3.0 * 0.5), abs=1e-4))


@pytest.fixture
def drive_process(tmp_path: Path):
    """A `dsp-driving drive` process and a harness on a fresh domain."""
    policy_file = driving_policy(tmp_path / "policy.onnx", seed=3)
    domain = claim_domain_id()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dsp_driving", "drive", "--model", str(policy_file),
         "--domain", str(domain), "--duration", "60", "--set", f"rate_hz={RATE_HZ}",
         "--set", f"stale_timeout_s={STALE_S}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    harness = Harness(domain)
    try:
        harness.wait_for_commands(2, timeout_s=20.0)
        yield proc, harness, policy_file, tmp_path
    finally:
        harness.node.destroy()
        proc.terminate()
        proc.wait(timeout=10)


def test_rate_values_watchdog_malformed_input_and_hot_reload(drive_process) -> None:
    proc, harness, policy_file, tmp = drive_process
    policy = OnnxPolicy(policy_file)
    obs = obs_at(12.0)
    want = expected_drive(policy, obs)

    # Fresh input: the policy's command at rate_hz (within 10 %).
    harness.commands.clear()
    harness.spin_sending(3.0, obs)
    times = np.array([t for t, _ in harness.commands])
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert abs(rate - RATE_HZ) / RATE_HZ < 0.10, rate
    driven = [m for _, m in harness.commands[3:]]
    for msg in driven:
        assert msg.drive.steering_angle == pytest.approx(want["steering_angle"], abs=1e-5)
        assert msg.drive.speed == pytest.approx(want["speed"], abs=1e-4)

    # Input stops: the safe command within stale_timeout + 3 periods.
    harness.commands.clear()
    last_sent = harness.spin_sending(0.3, obs)
    harness.spin_sending(1.2)
    first_safe = next(t for t, m in harness.commands if is_safe(m, 12.0))
    assert STALE_S - 0.02 <= first_safe - last_sent <= STALE_S + 3.0 / RATE_HZ, \
        first_safe - last_sent
    assert all(m.drive.steering_angle == pytest.approx(want["steering_angle"], abs=1e-5)
               for _, m in harness.commands)  # steering held while braking

    # 1000 malformed inputs: never a non-finite or out-of-limit command, the node goes on.
    rng = np.random.default_rng(0)
    bad_inputs = [np.full(contract.OBS_DIM, np.nan), np.full(contract.OBS_DIM, np.inf),
                  np.zeros(3), np.zeros(40), np.zeros(0), np.full(contract.OBS_DIM, 3e38)]
    harness.commands.clear()
    for i in range(1000):
        bad = bad_inputs[i % len(bad_inputs)] if i % 7 else rng.normal(0, 1e30, 20)
        harness.send(bad)
        harness.node.spin_once(0.002)
    harness.spin_sending(0.5)
    assert proc.poll() is None
    assert len(harness.commands) >= 3
    for _, m in harness.commands:
        values = [m.drive.steering_angle, m.drive.speed, m.drive.acceleration]
        assert np.all(np.isfinite(values))
        assert abs(m.drive.steering_angle) <= 0.5 + 1e-6
        assert 0.0 <= m.drive.speed <= 40.0 and 0.0 < m.drive.acceleration <= 6.0 + 1e-6
    # only refused input: only the safe command (braking at 3 m/s^2, steering held)
    harness.spin_sending(0.3, np.full(contract.OBS_DIM, np.nan))
    harness.commands.clear()
    harness.spin_sending(0.6, np.full(contract.OBS_DIM, np.nan))
    assert len(harness.commands) >= 4
    assert all(m.drive.acceleration == pytest.approx(3.0) for _, m in harness.commands)
    harness.spin_sending(1.1, np.full(contract.OBS_DIM, np.nan))  # a status (1 Hz) after them
    # observations are best effort (sensor QoS, keep-last 5): at 500 Hz some never reach the
    # node, but most must have arrived and been refused
    assert int(harness.status()["rejected_inputs"]) >= 600

    # A corrupt policy on dsp/policy: the old one keeps driving; a good one takes over.
    corrupt = tmp / "corrupt.onnx"
    corrupt.write_bytes(policy_file.read_bytes()[:400])
    harness.policy_pub.publish(harness.node.msg_type("std_msgs/msg/String")(data=str(corrupt)))
    harness.commands.clear()
    harness.spin_sending(1.5, obs)
    assert proc.poll() is None
    assert harness.commands[-1][1].drive.steering_angle == pytest.approx(
        want["steering_angle"], abs=1e-5)
    assert harness.status()["policy_reloads_refused"] == "1"  # it did arrive, and was refused
    newer = driving_policy(tmp / "newer.onnx", seed=4, bias=(0.6, 0.0))
    want_new = expected_drive(OnnxPolicy(newer), obs)
    assert abs(want_new["steering_angle"] - want["steering_angle"]) > 1e-3
    harness.policy_pub.publish(harness.node.msg_type("std_msgs/msg/String")(data=str(newer)))
    harness.commands.clear()
    harness.spin_sending(1.5, obs)
    assert harness.commands[-1][1].drive.steering_angle == pytest.approx(
        want_new["steering_angle"], abs=1e-5)
    assert harness.status()["policy_reloads"] == "1"


def test_trigger_input_commands_each_observation_and_the_timer_fills_gaps(tmp_path) -> None:
    policy_file = driving_policy(tmp_path / "policy.onnx", seed=4)
    domain = claim_domain_id()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dsp_driving", "drive", "--model", str(policy_file),
         "--domain", str(domain), "--duration", "60", "--set", f"rate_hz={RATE_HZ}",
         "--set", f"stale_timeout_s={STALE_S}", "--set", "trigger=input"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    harness = Harness(domain)
    try:
        harness.wait_for_commands(2, timeout_s=20.0)
        policy = OnnxPolicy(policy_file)
        harness.commands.clear()
        speeds = iter(np.linspace(5.0, 20.0, 10_000))
        sent: list[float] = []

        def next_obs():
            sent.append(next(speeds))
            return obs_at(sent[-1])

        harness.spin_sending(2.0, next_obs, period_s=0.02)  # 50 Hz input, rate_hz 10
        commands = list(harness.commands)
        # about one command per observation, not rate_hz (best-effort input: allow a few lost)
        assert len(commands) >= 0.8 * len(sent), (len(commands), len(sent))
        # each is the policy's answer to one of the observations sent
        answers = {round(expected_drive(policy, obs_at(v))["speed"], 4) for v in sent}
        assert sum(round(m.drive.speed, 4) in answers for _, m in commands) >= \
            0.95 * len(commands)
        # input stops: the timer goes on at rate_hz, braking once the input is stale
        harness.commands.clear()
        harness.spin_sending(1.5)
        times = np.array([t for t, _ in harness.commands])
        rate = (len(times) - 1) / (times[-1] - times[0])
        assert abs(rate - RATE_HZ) / RATE_HZ < 0.10, rate
        assert is_safe(harness.commands[-1][1], sent[-1])
        assert proc.poll() is None
        # ~/status, once a second: the model's sha256, latency, safe and stale counts
        harness.spin_sending(1.2)
        status = harness.statuses[-1].status[0]
        values = {kv.key: kv.value for kv in status.values}
        assert values["model_sha256"] == hashlib.sha256(policy_file.read_bytes()).hexdigest()
        assert int(values["stale_commands"]) >= 5 and status.message.startswith("stale")
        assert status.level == 1 and 0.0 < float(values["decide_latency_ms"]) < 1000.0
        assert values["trigger"] == "input"
    finally:
        harness.node.destroy()
        proc.terminate()
        proc.wait(timeout=10)


def test_sigterm_sends_the_safe_command_once_and_exits_0(tmp_path: Path) -> None:
    policy_file = driving_policy(tmp_path / "policy.onnx", seed=3)
    domain = claim_domain_id()
    # stale_timeout_s 30: after driving, the only safe command can be the shutdown one
    proc = subprocess.Popen(
        [sys.executable, "-m", "dsp_driving", "drive", "--model", str(policy_file),
         "--domain", str(domain), "--duration", "60", "--set", f"rate_hz={RATE_HZ}",
         "--set", "stale_timeout_s=30.0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    harness = Harness(domain)
    try:
        harness.wait_for_commands(2, timeout_s=20.0)
        harness.spin_sending(1.0, obs_at(12.0))
        assert not is_safe(harness.commands[-1][1], 12.0)
        proc.terminate()
        output = proc.communicate(timeout=20)[0]
        harness.spin_sending(1.0)
        assert proc.returncode == 0, output
        assert "Traceback" not in output
        assert not is_safe(harness.commands[-2][1], 12.0)
        assert is_safe(harness.commands[-1][1], 12.0)  # braking, as the last word
    finally:
        harness.node.destroy()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
