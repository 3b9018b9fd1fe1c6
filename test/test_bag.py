"""dsp_driving.rosbag.writer: rosbag2 bags (MCAP, version 8), crash-safe by segments."""

from __future__ import annotations

from pathlib import Path
import subprocess
import sys
import time

import pytest
import yaml

pytest.importorskip("rosbags")

from rosbags.interfaces import QosDurability, QosReliability  # noqa: E402
from rosbags.rosbag2 import Reader  # noqa: E402

from dsp_driving import msgs  # noqa: E402
from dsp_driving.rosbag.writer import BagWriter, typestore  # noqa: E402
from dsp_driving.transport import SENSOR_QOS, QosProfile  # noqa: E402

T0 = 1_700_000_000_000_000_000


def drive(speed: float):
    return msgs.ROS_TYPES["ackermann_msgs/msg/AckermannDriveStamped"](
        drive=msgs.ROS_TYPES["ackermann_msgs/msg/AckermannDrive"](speed=speed))


def read(bag: Path) -> list[tuple[str, int, object]]:
    store = typestore()
    with Reader(bag) as reader:
        return [(c.topic, t, store.deserialize_cdr(raw, c.msgtype))
                for c, t, raw in reader.messages()]


def test_a_bag_holds_types_definitions_qos_and_the_messages(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    latched = QosProfile(reliable=True, transient_local=True, depth=1)
    with BagWriter(bag, segment_s=3600) as writer:
        writer.add_topic("/ackermann_cmd", "ackermann_msgs/msg/AckermannDriveStamped",
                         SENSOR_QOS)
        writer.add_topic("/dsp/policy", "std_msgs/msg/String", latched)
        for i in range(5):
            writer.write("/ackermann_cmd", drive(float(i)), T0 + i * 100_000_000)
        writer.flush()  # a second file
        writer.write("/dsp/policy", msgs.ROS_TYPES["std_msgs/msg/String"](data="/p.onnx"),
                     T0 + 10)
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 8 and meta["storage_identifier"] == "mcap"
    assert meta["relative_file_paths"] == ["bag_0.mcap", "bag_1.mcap"]
    assert meta["message_count"] == 6
    assert meta["starting_time"]["nanoseconds_since_epoch"] == T0
    assert meta["duration"]["nanoseconds"] == 400_000_000
    counts = {t["topic_metadata"]["name"]: t["message_count"]
              for t in meta["topics_with_message_count"]}
    assert counts == {"/ackermann_cmd": 5, "/dsp/policy": 1}

    with Reader(bag) as reader:
        by_topic = {c.topic: c for c in reader.connections}
        cmd = by_topic["/ackermann_cmd"]
        assert cmd.msgtype == "ackermann_msgs/msg/AckermannDriveStamped"
        assert "AckermannDrive drive" in cmd.msgdef.data  # the definition travels with it
        assert cmd.ext.offered_qos_profiles[0].reliability == QosReliability.BEST_EFFORT
        policy_qos = by_topic["/dsp/policy"].ext.offered_qos_profiles[0]
        assert policy_qos.durability == QosDurability.TRANSIENT_LOCAL and policy_qos.depth == 1
    messages = read(bag)
    assert [m.drive.speed for topic, _, m in messages if topic == "/ackermann_cmd"] == \
        [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [m.data for topic, _, m in messages if topic == "/dsp/policy"] == ["/p.onnx"]


CRASH = """
import os, sys
sys.path.insert(0, {test_dir!r})
from test_bag import drive, T0
from dsp_driving.rosbag.writer import BagWriter
writer = BagWriter({bag!r}, segment_s=3600)
writer.add_topic("/ackermann_cmd", "ackermann_msgs/msg/AckermannDriveStamped")
for i in range(15):
    writer.write("/ackermann_cmd", drive(float(i)), T0 + i)
    if i == 9:
        writer.flush()
os._exit(1)  # dies without closing: the last 5 were never written
"""


def test_a_process_that_dies_leaves_a_readable_bag(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    code = CRASH.format(test_dir=str(Path(__file__).parent), bag=str(bag))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    messages = read(bag)
    assert [m.drive.speed for _, _, m in messages] == [float(i) for i in range(10)]


def test_bad_use_is_refused(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        BagWriter(tmp_path / "old")
    writer = BagWriter(tmp_path / "bag")
    with pytest.raises(ValueError, match="unknown message type 'std_msgs/msg/Nope'"):
        writer.add_topic("/x", "std_msgs/msg/Nope")
    with pytest.raises(ValueError, match="/y: add_topic"):
        writer.write("/y", drive(0.0))
    writer.add_topic("/x", "std_msgs/msg/String")
    with pytest.raises(ValueError, match="already recorded as std_msgs/msg/String"):
        writer.add_topic("/x", "std_msgs/msg/Float32")
    writer.close()
    assert not (tmp_path / "bag" / "metadata.yaml").exists()  # nothing was recorded
    with pytest.raises(ValueError, match="is closed"):
        writer.write("/x", msgs.ROS_TYPES["std_msgs/msg/String"](data="late"))


def test_a_background_writer_writes_segments_while_recording(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    writer = BagWriter(bag, segment_s=0.1, background=True)
    writer.add_topic("/ackermann_cmd", "ackermann_msgs/msg/AckermannDriveStamped")
    for i in range(10):
        writer.write("/ackermann_cmd", drive(float(i)), T0 + i)
    deadline = time.monotonic() + 30  # a guard, not a speed check
    while time.monotonic() < deadline:  # the thread may split them over several segments
        if (bag / "metadata.yaml").exists() and len(read(bag)) == 10:
            break
        time.sleep(0.02)
    # on disk before close: a crash now would keep them
    assert [m.drive.speed for _, _, m in read(bag)] == [float(i) for i in range(10)]
    writer.write("/ackermann_cmd", drive(10.0), T0 + 10)
    writer.close()
    assert [m.drive.speed for _, _, m in read(bag)] == [float(i) for i in range(11)]


def test_a_recorder_records_what_a_node_publishes_and_receives(tmp_path: Path) -> None:
    pytest.importorskip("cyclonedds")
    from dsp_driving.rosbag.writer import Recorder
    from dsp_driving.transport import create_node
    from dsp_driving.transport.dds import claim_domain_id

    domain = claim_domain_id()
    bag = tmp_path / "bag"
    with create_node("recorded", backend="dds", domain_id=domain) as node, \
            create_node("other", backend="dds", domain_id=domain) as other:
        recorder = Recorder(node, bag, segment_s=3600)
        seen: list[str] = []
        recorder.subscription("std_msgs/msg/String", "chatter", lambda m: seen.append(m.data))
        pub = recorder.publisher("ackermann_msgs/msg/AckermannDriveStamped", "ackermann_cmd",
                                 SENSOR_QOS)
        chatter = other.create_publisher(other.msg_type("std_msgs/msg/String"), "chatter")
        deadline = time.monotonic() + 20
        while chatter.subscription_count() == 0 and time.monotonic() < deadline:
            node.spin_once(0.05)
        for i in range(3):
            chatter.publish(other.msg_type("std_msgs/msg/String")(data=f"hello {i}"))
            pub.publish(drive(float(i)))
        node.spin(duration_s=5.0, until=lambda: len(seen) == 3)
        recorder.record("/ackermann_cmd", object())  # cannot be serialised: dropped, logged
        assert recorder.dropped == 1
        recorder.close()
    assert seen == ["hello 0", "hello 1", "hello 2"]
    by_topic: dict[str, list] = {}
    for topic, _, msg in read(bag):
        by_topic.setdefault(topic, []).append(msg)
    assert [m.data for m in by_topic["/chatter"]] == seen
    assert [m.drive.speed for m in by_topic["/ackermann_cmd"]] == [0.0, 1.0, 2.0]
    with Reader(bag) as reader:
        qos = {c.topic: c.ext.offered_qos_profiles[0] for c in reader.connections}
    assert qos["/ackermann_cmd"].reliability == QosReliability.BEST_EFFORT  # SENSOR_QOS
