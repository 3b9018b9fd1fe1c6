"""`dsp-driving topic` against real publisher processes on loopback."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

pytest.importorskip("cyclonedds", reason="the dds backend needs cyclonedds (the dds extra)")

from dsp_driving.cli.topic import format_rate  # noqa: E402

CLI = [sys.executable, "-m", "dsp_driving"]



def _pub(domain: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "topic", "pub", "--domain", str(domain), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "topic", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_echo_prints_what_a_publisher_sends_as_yaml(domain) -> None:
    dom = domain()
    pub = _pub(dom, "/dsp/cmd", "ackermann_msgs/msg/AckermannDriveStamped",
               "{header: {frame_id: base_link}, drive: {speed: 2.5, steering_angle: -0.25}}",
               "--rate", "20", "--times", "200")
    try:
        echo = _run("echo", "/dsp/cmd", "--count", "2", "--domain", str(dom),
                    "--wait", "3", "--timeout", "30")
    finally:
        pub.kill()
        pub.communicate()
    assert echo.returncode == 0, echo.stderr
    docs = [d for d in yaml.safe_load_all(echo.stdout) if d is not None]
    assert len(docs) == 2 and echo.stdout.count("---\n") == 2
    for doc in docs:
        assert doc["header"]["frame_id"] == "base_link"
        assert doc["drive"] == {"steering_angle": -0.25, "steering_angle_velocity": 0.0,
                                "speed": 2.5, "acceleration": 0.0, "jerk": 0.0}
        assert doc["header"]["stamp"] == {"sec": 0, "nanosec": 0}


def test_list_and_hz_report_a_publisher(domain) -> None:
    dom = domain()
    pub = _pub(dom, "/dsp/rate_test", "std_msgs/msg/Float32", "{data: 1.5}",
               "--rate", "20", "--times", "400")
    try:
        listing = _run("list", "-t", "--domain", str(dom), "--wait", "2")
        hz = _run("hz", "/dsp/rate_test", "--domain", str(dom), "--wait", "2",
                  "--duration", "3")
    finally:
        pub.kill()
        pub.communicate()
    assert listing.returncode == 0, listing.stderr
    assert "/dsp/rate_test [std_msgs/msg/Float32]" in listing.stdout.splitlines()
    assert hz.returncode == 0, hz.stderr
    rates = [float(line.split(":")[1]) for line in hz.stdout.splitlines()
             if line.startswith("average rate:")]
    assert rates and 10.0 < rates[-1] < 30.0  # a 20 Hz publisher (loose: a shared machine)


def test_pub_rejects_bad_input() -> None:
    bad_type = _run("pub", "/x", "std_msgs/msg/Nope", "{data: 1}", "--once")
    assert bad_type.returncode == 2 and "type 'std_msgs/msg/Nope' is not one of ours" in \
        bad_type.stderr
    bad_field = _run("pub", "/x", "std_msgs/msg/Float32", "{dat: 1.0}", "--once")
    assert bad_field.returncode == 2 and "dat" in bad_field.stderr
    bad_yaml = _run("pub", "/x", "std_msgs/msg/Float32", "[1, 2]", "--once")
    assert bad_yaml.returncode == 2 and "expected a YAML mapping" in bad_yaml.stderr


def test_echo_without_type_or_publisher_says_so(domain) -> None:
    result = _run("echo", "/nobody/here", "--domain", str(domain()), "--wait", "0.5")
    assert result.returncode == 2 and "cannot determine the type of /nobody/here" in result.stderr


def test_format_rate_matches_ros2_layout() -> None:
    text = format_rate([0.0, 0.1, 0.2, 0.3])
    assert text.splitlines() == ["average rate: 10.000",
                                 "\tmin: 0.100s max: 0.100s std dev: 0.00000s window: 4"]
