"""The dds backend between real processes on loopback, and its node mechanics in-process."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path
import subprocess
import sys

import pytest

pytest.importorskip("cyclonedds", reason="the dds backend needs cyclonedds (the dds extra)")

from dsp_driving import msgs  # noqa: E402
from dsp_driving.transport import create_node, select_backend  # noqa: E402
from dsp_driving.transport.dds import LOOPBACK_CONFIG, DdsNode, domain_id_from_env  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from msg_samples import sample_message  # noqa: E402

PEER = Path(__file__).with_name("peer.py")



def _start(role: str, domain: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(PEER), role, "--domain", str(domain), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _exchange(domain: int, pub_args: list[str], sub_args: list[str]) -> dict:
    """Start a subscriber, wait until it is ready, run a publisher; the subscriber's report."""
    sub = _start("sub", domain, *sub_args)
    assert json.loads(sub.stdout.readline()) == {"ready": True}
    pub = _start("pub", domain, *pub_args)
    pub_out, pub_err = pub.communicate(timeout=60)
    assert pub.returncode == 0, pub_out + pub_err
    sub_out, sub_err = sub.communicate(timeout=60)
    assert sub.returncode == 0, sub_err
    return json.loads(sub_out.strip().splitlines()[-1])["received"]


def test_every_type_crosses_between_processes_with_equal_content(domain) -> None:
    received = _exchange(domain(), ["--count", "2"], ["--count", "2"])
    assert set(received) == set(msgs.ROS_TYPES)
    for ros_type, got in received.items():
        expected = msgs.message_to_dict(sample_message(ros_type))
        if ros_type == "std_msgs/msg/String":
            assert [m["data"] for m in got] == ["0", "1"]
        else:
            assert got == [expected, expected], ros_type


def test_best_effort_subscriber_receives_from_reliable_publisher(domain) -> None:
    received = _exchange(domain(), ["--types", "std_msgs/msg/String", "--count", "20"],
                         ["--types", "std_msgs/msg/String", "--count", "20",
                          "--qos", "best_effort", "--timeout", "10"])
    data = [m["data"] for m in received["std_msgs/msg/String"]]
    assert 0 < len(data) <= 20
    assert data == sorted(data, key=int)  # in order, no duplicates
    assert set(data) <= {str(i) for i in range(20)}


def test_reliable_subscriber_does_not_match_best_effort_publisher(domain) -> None:
    dom = domain()
    sub = create_node("strict_sub", backend="dds", domain_id=dom)
    pub = _start("pub", dom, "--types", "std_msgs/msg/String", "--qos", "best_effort",
                 "--timeout", "3")
    got = []
    sub.create_subscription(msgs.ROS_TYPES["std_msgs/msg/String"], "/test/std_msgs/String",
                            got.append)
    out, _ = pub.communicate(timeout=30)
    sub.spin(duration_s=0.2)
    sub.destroy()
    assert pub.returncode == 1 and "no subscriber matched" in out  # DDS QoS rule, as in ROS 2
    assert got == []


def test_parallel_domains_never_see_each_other(domain) -> None:
    a, b = domain(), domain()
    assert a != b
    subs = {d: _start("sub", d, "--types", "std_msgs/msg/String", "--count", "5",
                      "--timeout", "15") for d in (a, b)}
    for proc in subs.values():
        assert json.loads(proc.stdout.readline()) == {"ready": True}
    pubs = {d: _start("pub", d, "--types", "std_msgs/msg/String", "--count", "5",
                      "--tag", f"d{d}-") for d in (a, b)}
    for proc in pubs.values():
        proc.communicate(timeout=60)
    for d, proc in subs.items():
        out, _ = proc.communicate(timeout=60)
        data = [m["data"] for m in json.loads(out.strip().splitlines()[-1])["received"][
            "std_msgs/msg/String"]]
        assert data == [f"d{d}-{i}" for i in range(5)]  # all of its own, none of the other's


def test_in_process_publish_subscribe_timer_and_wrong_type(domain) -> None:
    node = create_node("loop", backend="dds", domain_id=domain())
    assert isinstance(node, DdsNode) and node.backend == "dds"
    drive_t = node.msg_type("ackermann_msgs/msg/AckermannDriveStamped")
    pub = node.create_publisher(drive_t, "cmd")
    got: list = []
    node.create_subscription(drive_t, "/cmd", got.append)
    ticks: list[int] = []
    timer = node.create_timer(0.01, lambda: ticks.append(1))
    node.spin(until=lambda: pub.subscription_count() > 0, duration_s=5)
    msg = drive_t()
    msg.drive.speed = 3.5
    msg.header.stamp = node.now_msg()
    pub.publish(msg)
    node.spin(until=lambda: len(got) == 1, duration_s=5)
    assert got[0].drive.speed == 3.5 and got[0].header.stamp == msg.header.stamp
    node.spin(until=lambda: len(ticks) >= 3, duration_s=5)
    assert len(ticks) >= 3
    timer.cancel()
    before = len(ticks)
    node.spin(duration_s=0.05)
    assert len(ticks) == before
    with pytest.raises(TypeError, match="takes ackermann_msgs/msg/AckermannDriveStamped"):
        pub.publish(node.msg_type("std_msgs/msg/String")(data="x"))
    with pytest.raises(ValueError, match="already has type"):
        node.create_publisher(node.msg_type("std_msgs/msg/String"), "/cmd")
    with pytest.raises(ValueError, match="unknown message type 'foo/msg/Bar'"):
        node.msg_type("foo/msg/Bar")
    node.destroy()


def test_parameters_are_typed_and_declared(domain) -> None:
    given = {"rate_hz": 20, "topic": "/x", "limits": [1.0, 2.0]}
    node = DdsNode("params", domain_id=domain(), parameters=given)
    values = node.get_parameters({"rate_hz": 50.0, "topic": "/cmd", "limits": (0.5, 0.5),
                                  "enabled": True})
    assert values == {"rate_hz": 20.0, "topic": "/x", "limits": [1.0, 2.0], "enabled": True}
    assert isinstance(values["rate_hz"], float)  # YAML's 20 for a float parameter
    # a node may read its parameters in several groups (two dataclasses, say)
    first = DdsNode("split", domain_id=domain(), parameters=given)
    assert first.get_parameters({"rate_hz": 50.0}, strict=False) == {"rate_hz": 20.0}
    assert first.get_parameters({"topic": "/cmd", "limits": []}) == {"topic": "/x",
                                                                     "limits": [1.0, 2.0]}
    typo = DdsNode("typo", domain_id=domain(), parameters={**given, "rate_hzz": 5.0})
    with pytest.raises(ValueError, match=r"unknown parameter 'rate_hzz' for node typo"):
        typo.get_parameters({"rate_hz": 50.0, "topic": "/cmd", "limits": []})
    bad = DdsNode("bad", domain_id=domain(), parameters={"enabled": "yes"})
    with pytest.raises(ValueError, match=r"parameter enabled='yes': expected bool"):
        bad.get_parameters({"enabled": True})


def test_domain_id_and_backend_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROS_DOMAIN_ID", "42")
    assert domain_id_from_env() == 42 and domain_id_from_env(7) == 7
    monkeypatch.setenv("ROS_DOMAIN_ID", "x")
    with pytest.raises(ValueError, match="ROS_DOMAIN_ID='x'"):
        domain_id_from_env()
    with pytest.raises(ValueError, match=r"domain_id=300: must be in \[0, 232\]"):
        domain_id_from_env(300)
    monkeypatch.setenv("DSP_TRANSPORT", "dds")
    assert select_backend() == "dds"
    monkeypatch.setenv("DSP_TRANSPORT", "zenoh")
    with pytest.raises(ValueError, match="DSP_TRANSPORT='zenoh'"):
        select_backend()
    monkeypatch.delenv("DSP_TRANSPORT")
    spec = importlib.util.find_spec("rclpy")
    real_rclpy = spec is not None and spec.origin is not None  # not just a folder named rclpy
    assert select_backend() == ("rclpy" if real_rclpy else "dds")


def test_a_folder_named_rclpy_is_not_ros(monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    """test/rclpy (a folder, so a namespace package on a test run's path) must not make the
    dds backend look like ROS 2."""
    spec = importlib.util.find_spec("rclpy")
    if spec is not None and spec.origin is not None:
        pytest.skip("a real rclpy is installed here")
    (tmp_path / "rclpy").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("DSP_TRANSPORT", raising=False)
    assert importlib.util.find_spec("rclpy") is not None
    assert select_backend() == "dds"


def test_default_configuration_is_loopback_only() -> None:
    assert '<NetworkInterface name="lo"/>' in LOOPBACK_CONFIG
    assert "<AllowMulticast>false</AllowMulticast>" in LOOPBACK_CONFIG
    assert '<Peer address="127.0.0.1"/>' in LOOPBACK_CONFIG


def test_throttled_logging_emits_once_per_period(domain) -> None:
    log = io.StringIO()
    node = DdsNode("logs", domain_id=domain(), log_stream=log)
    emitted = [node.logger.warning("bad message", throttle_s=60.0) for _ in range(5)]
    assert emitted == [True, False, False, False, False]
    assert node.logger.warning("other site", throttle_s=60.0)  # another call site
    assert sum("[WARN]" in line and "[logs]: bad message" in line
               for line in log.getvalue().splitlines()) == 1


def test_parameters_into_config_dataclasses(domain) -> None:
    import dataclasses

    from dsp_driving.transport import config_from_parameters, dataclass_from_parameters

    @dataclasses.dataclass(frozen=True)
    class DriveParams:
        rate_hz: float = 50.0
        max_steer_rad: float = 0.5
        frame_id: str = "base_link"
        limits: tuple[float, ...] = (1.0, 2.0)

        def __post_init__(self) -> None:
            if not self.rate_hz > 0:
                raise ValueError(f"rate_hz={self.rate_hz!r}: must be > 0")

    node = DdsNode("p", domain_id=domain(), parameters={"rate_hz": 20, "limits": [3.0]})
    assert dataclass_from_parameters(node, DriveParams) == DriveParams(20.0, 0.5, "base_link",
                                                                       (3.0,))
    bad = DdsNode("p", domain_id=domain(), parameters={"rate_hz": -1.0})
    with pytest.raises(ValueError, match=r"rate_hz=-1.0: must be > 0"):
        dataclass_from_parameters(bad, DriveParams)

    trainer = DdsNode("trainer_node", domain_id=domain(),
                      parameters={"ppo.gamma": 0.95, "net.actor_hidden": [32, 32],
                                  "train.env_id": "Pendulum-v1"})
    cfg = config_from_parameters(trainer)
    assert (cfg.ppo.gamma, cfg.net.actor_hidden, cfg.train.env_id) == (0.95, (32, 32),
                                                                       "Pendulum-v1")
    invalid = DdsNode("trainer_node", domain_id=domain(), parameters={"ppo.gamma": 1.5})
    with pytest.raises(ValueError, match=r"invalid config: ppo.gamma=1.5"):
        config_from_parameters(invalid)


@pytest.mark.skipif(not Path("/proc/net/igmp").exists(), reason="needs Linux /proc/net/igmp")
def test_no_multicast_group_is_joined(domain) -> None:
    """Cyclone's default joins 239.255.0.1 (SPDP); the loopback config must join nothing."""
    code = f"""
import time
from dsp_driving.transport import create_node
node = create_node("igmp", backend="dds", domain_id={domain()})
node.create_publisher(node.msg_type("std_msgs/msg/String"), "/x")
time.sleep(0.5)
print(open("/proc/net/igmp").read())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "0100FFEF" not in out.upper()  # 239.255.0.1, little-endian hex


def test_a_failing_callback_or_timer_never_stops_the_node(domain) -> None:
    log = io.StringIO()
    node = DdsNode("robust", domain_id=domain(), log_stream=log)
    string_t = node.msg_type("std_msgs/msg/String")
    pub = node.create_publisher(string_t, "/robust")
    got: list[str] = []

    def picky(msg) -> None:
        if msg.data == "bad":
            raise ValueError("cannot use this one")
        got.append(msg.data)

    node.create_subscription(string_t, "/robust", picky)
    ticks: list[int] = []

    def flaky_tick() -> None:
        ticks.append(1)
        if len(ticks) == 1:
            raise RuntimeError("first tick fails")

    node.create_timer(0.01, flaky_tick)
    node.spin(until=lambda: pub.subscription_count() > 0, duration_s=5)
    for text in ("a", "bad", "b", "c"):
        pub.publish(string_t(data=text))
    node.spin(until=lambda: len(got) == 3 and len(ticks) >= 3, duration_s=5)
    assert got == ["a", "b", "c"] and len(ticks) >= 3  # later messages and ticks still run
    text = log.getvalue()
    assert "callback on /robust raised ValueError: cannot use this one" in text
    assert "timer callback raised RuntimeError: first tick fails" in text


def test_topic_names_follow_ros_rules() -> None:
    from dsp_driving.transport.base import ros_topic

    assert ros_topic("dsp/compaction") == "/dsp/compaction" == ros_topic("/dsp/compaction")
    for bad in ("", "/", "/1abc", "/a b", "/a-b", "~/x", "/a//b", "/a/"):
        with pytest.raises(ValueError, match="invalid topic name"):
            ros_topic(bad)


def test_destroy_unmatches_remote_peers(domain) -> None:
    dom = domain()
    left = DdsNode("left", domain_id=dom)
    right = DdsNode("right", domain_id=dom)
    string_t = left.msg_type("std_msgs/msg/String")
    pub = left.create_publisher(string_t, "/bye")
    right.create_subscription(string_t, "/bye", lambda msg: None)
    left.spin(until=lambda: pub.subscription_count() == 1, duration_s=5)
    assert pub.subscription_count() == 1
    right.destroy()
    right.destroy()  # idempotent
    left.spin(until=lambda: pub.subscription_count() == 0, duration_s=5)
    assert pub.subscription_count() == 0
    left.destroy()
