"""`dsp-driving report`: real bags of training and driving, foreign bags, broken bags."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

pytest.importorskip("rosbags")
pytest.importorskip("matplotlib")

from dsp_driving.analysis.report import make_report  # noqa: E402
from dsp_driving.cli.report import main as bag_report_main  # noqa: E402
from dsp_driving.nodes.stats_topics import SUMMARY_COMPACTION  # noqa: E402
from dsp_driving.rosbag.reader import BagError, read_bag  # noqa: E402

T0 = 1_700_000_000_000_000_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_images(folder: Path, names: list[str]) -> None:
    """Each file is a PNG that decodes to a non-blank picture."""
    from matplotlib.image import imread

    for name in names:
        path = folder / name
        assert path.read_bytes()[:8] == PNG_MAGIC, name
        pixels = imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100, name
        assert float(pixels[..., :3].std()) > 0.01, f"{name} is blank"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# ---- training ---------------------------------------------------------------------------------


def test_training_bag_report_matches_summary_json_and_stats(cartpole_run: Path,
                                                            tmp_path: Path,
                                                            stats_reader) -> None:
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "dsp_driving", "report",
                           str(cartpole_run / "bag"), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert str(out / "report.md") in done.stdout
    result = json.loads((out / "report.json").read_text())
    summary = json.loads((cartpole_run / "summary.json").read_text())
    stats = stats_reader(cartpole_run)
    assert result["partial"] is False and result["problems"] == []
    final = result["training"]["final"]
    for net in ("actor", "critic"):
        for key in SUMMARY_COMPACTION:
            assert final[net][key] == summary[net][key], (net, key)
        assert final[net]["source"] == "final evaluation"
    assert summary["actor"]["compact_weights"] < summary["actor"]["dense_weights"]  # it pruned

    # per layer and per network, every update, as stats.jsonl has them
    layers = read_csv(out / "compaction_layers.csv")
    assert len(layers) == 2 * 2 * len(stats)  # 2 networks x 2 hidden layers x updates
    last = [r for r in layers if int(r["step"]) == stats[-1]["step"] and r["net"] == "actor"]
    assert [int(r["alive"]) for r in last] == summary["actor"]["hidden_compact"]
    assert [int(r["weights_alive"]) for r in last] == \
        [layer["weights_alive"] for layer in stats[-1]["actor"]["layers"]]
    networks = read_csv(out / "compaction_networks.csv")
    actor = [r for r in networks if r["net"] == "actor"]
    assert [int(r["weights_alive"]) for r in actor] == \
        [s["actor"]["weights_alive"] for s in stats]
    assert [float(r["kappa"]) for r in actor] == [s["kappa"] for s in stats]
    updates = read_csv(out / "training.csv")
    assert [float(r["ep_return_mean"]) if r["ep_return_mean"] else None for r in updates] == \
        [s["ep_return_mean"] for s in stats]

    report = (out / "report.md").read_text()
    assert "### Final compaction" in report and "PARTIAL" not in report
    assert f"{summary['actor']['dense_weights']} → {summary['actor']['compact_weights']}" \
        in report
    pngs = ["neurons_per_layer.png", "weights_per_layer.png", "compression.png", "return.png"]
    assert set(pngs) <= set(result["files"])
    assert_images(out, pngs)
    for png in pngs:
        assert f"]({png})" in report


# ---- driving ----------------------------------------------------------------------------------

RATE_HZ = 20.0


def test_policy_node_bag_gives_the_commands_sent(tmp_path: Path) -> None:
    pytest.importorskip("cyclonedds")
    pytest.importorskip("onnxscript")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from policy_samples import driving_policy, obs_at

    from dsp_driving.transport import create_node
    from dsp_driving.transport.dds import claim_domain_id

    policy_file = driving_policy(tmp_path / "policy.onnx", seed=3)
    bag = tmp_path / "drive_bag"
    domain = claim_domain_id()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dsp_driving", "drive", "--model", str(policy_file),
         "--domain", str(domain), "--duration", "60", "--set", f"rate_hz={RATE_HZ}",
         "--set", "stale_timeout_s=0.3", "--set", f"record_bag={bag}",
         "--set", "record_segment_s=1.0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    node = create_node("harness", backend="dds", domain_id=domain)
    t = node.msg_type
    stamps: list[int] = []
    node.create_subscription(
        t("ackermann_msgs/msg/AckermannDriveStamped"), "ackermann_cmd",
        lambda m: stamps.append(m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec))
    obs_pub = node.create_publisher(t("std_msgs/msg/Float32MultiArray"), "observation")
    try:
        end = time.monotonic() + 20.0
        while len(stamps) < 2 and time.monotonic() < end:
            node.spin_once(0.05)
        assert len(stamps) >= 2, "policy_node sent no command"
        sent, next_send, end = 0, time.monotonic(), time.monotonic() + 3.0
        while time.monotonic() < end:  # 3 s of input at 25 Hz
            if time.monotonic() >= next_send:
                obs_pub.publish(t("std_msgs/msg/Float32MultiArray")(
                    data=[float(v) for v in obs_at(12.0)]))
                sent, next_send = sent + 1, next_send + 0.04
            node.spin_once(0.005)
        node.spin(duration_s=1.5)  # input stops: stale, then safe commands
        proc.send_signal(signal.SIGINT)  # ends like Ctrl-C: the last segment is written
        proc.wait(timeout=20)
        node.spin(duration_s=0.3)
    finally:
        node.destroy()
        if proc.poll() is None:
            proc.kill()
    out = tmp_path / "report"
    result = make_report(bag, out)
    assert result["partial"] is False, result["problems"]
    (cmd,) = result["driving"]["commands"].values()
    assert cmd["topic"] == "/ackermann_cmd" and cmd["clock"] == "header stamps"
    # every command received here is in the bag; the bag also has the ones sent before
    # this subscriber matched, and none after the last one received
    recorded = read_csv(out / "commands_ackermann_cmd.csv")
    assert cmd["count"] == len(recorded)
    bag_stamps = []
    with __import__("rosbags.rosbag2", fromlist=["Reader"]).Reader(bag) as reader:
        from dsp_driving.rosbag.writer import typestore

        for conn, _, raw in reader.messages():
            if conn.topic == "/ackermann_cmd":
                s = typestore().deserialize_cdr(raw, conn.msgtype).header.stamp
                bag_stamps.append(s.sec * 1_000_000_000 + s.nanosec)
    assert len(bag_stamps) == cmd["count"]
    # (SIGINT may fall between publishing the very last command and recording it)
    received = [s for s in stamps if s <= bag_stamps[-1]]
    assert len(stamps) - len(received) <= 1
    assert [s for s in bag_stamps if s >= stamps[0]] == received
    # the rate: what the received stamps say, and the configured rate
    received_rate = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) * 1e-9)
    assert cmd["rate_hz"] == pytest.approx(received_rate, rel=0.02)
    assert cmd["rate_hz"] == pytest.approx(RATE_HZ, rel=0.10)
    # inputs: observations recorded as received (best effort on loopback: nearly all)
    assert 0.9 * sent <= result["driving"]["inputs"]["/observation"] <= sent
    latency = cmd["latency_ms"]["/observation"]
    assert latency["inputs"] >= 0.9 * sent
    assert 0.0 <= latency["p50"] <= 1e3 / RATE_HZ + 5.0
    # the stale input produced safe commands, which the status counters and events show
    totals = result["driving"]["totals"]
    assert totals["safe_commands"] > 0 and totals["stale_commands"] > 0
    assert any(e["new_stale_commands"] > 0 for e in result["driving"]["events"])
    actions = read_csv(out / "actions.csv")
    assert abs(len(actions) - cmd["count"]) <= 1  # one action per command (SIGINT aside)
    assert_images(out, ["commands_ackermann_cmd.png", "histograms_ackermann_cmd.png",
                        "latency_ackermann_cmd.png", "actions.png"])
    report = (out / "report.md").read_text()
    assert f"{cmd['count']} commands" in report and "### Safety" in report
    # safety and comfort: each action with the observation it was decided from (no lead)
    sf = result["driving"]["safety"]
    assert sf["observations"] == "the observations on /observation"
    assert sf["control_steps"] == len(actions)
    assert 0 < sf["observed_steps"] < sf["control_steps"]  # no input at first, stale at last
    assert sf["mean_speed_mps"] == pytest.approx(12.0, rel=1e-6)
    assert sf["lead_steps"] == 0 and sf["min_ttc_s"] is None and sf["ttc_below_pct"] == 0.0
    assert sf["control_period_s"] == pytest.approx(1.0 / RATE_HZ)
    assert "### Safety and comfort over the drive" in report
    assert_images(out, ["safety.png"])


# ---- foreign bags -----------------------------------------------------------------------------


def foreign_bag(path: Path, n_cmd: int = 100) -> None:
    """A bag as `ros2 bag record` on another stack would make it: sqlite3, other packages'
    topics, written with rosbags' own Humble types plus one custom type."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    store.register(get_types_from_msg("float32 steering_angle\nfloat32 steering_angle_velocity"
                                      "\nfloat32 speed\nfloat32 acceleration\nfloat32 jerk",
                                      "ackermann_msgs/msg/AckermannDrive"))
    store.register(get_types_from_msg("std_msgs/Header header\nAckermannDrive drive",
                                      "ackermann_msgs/msg/AckermannDriveStamped"))
    store.register(get_types_from_msg("uint32 seq\nstring who", "acme_msgs/msg/Heartbeat"))
    ty = store.types
    with Writer(path, version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
        cmd = writer.add_connection("/vehicle/ackermann_cmd",
                                    "ackermann_msgs/msg/AckermannDriveStamped", typestore=store)
        odom = writer.add_connection("/localization/odometry", "nav_msgs/msg/Odometry",
                                     typestore=store)
        imu = writer.add_connection("/sensing/imu", "sensor_msgs/msg/Imu", typestore=store)
        beat = writer.add_connection("/acme/heartbeat", "acme_msgs/msg/Heartbeat",
                                     typestore=store)

        def header(ns: int) -> object:
            return ty["std_msgs/msg/Header"](
                stamp=ty["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
                frame_id="base_link")

        for i in range(-10, n_cmd):  # commands at exactly 50 Hz, 2 ms after each odometry
            # (the odometry starts 0.2 s before the first command)
            ns = T0 + i * 20_000_000
            msg = ty["nav_msgs/msg/Odometry"](
                header=header(ns), child_frame_id="base_link",
                pose=ty["geometry_msgs/msg/PoseWithCovariance"](
                    pose=ty["geometry_msgs/msg/Pose"](
                        position=ty["geometry_msgs/msg/Point"](x=float(i), y=0.0, z=0.0),
                        orientation=ty["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0,
                                                                       w=1.0)),
                    covariance=np.zeros(36)),
                twist=ty["geometry_msgs/msg/TwistWithCovariance"](
                    twist=ty["geometry_msgs/msg/Twist"](
                        linear=ty["geometry_msgs/msg/Vector3"](x=10.0, y=0.0, z=0.0),
                        angular=ty["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)),
                    covariance=np.zeros(36)))
            writer.write(odom, ns, store.serialize_cdr(msg, "nav_msgs/msg/Odometry"))
            if i < 0:
                continue
            drive = ty["ackermann_msgs/msg/AckermannDrive"](
                steering_angle=0.1 * np.sin(i / 10), steering_angle_velocity=0.0, speed=10.0,
                acceleration=-1.0 if i % 2 else 1.0, jerk=0.0)
            writer.write(cmd, ns + 2_000_000, store.serialize_cdr(
                ty["ackermann_msgs/msg/AckermannDriveStamped"](header=header(ns + 2_000_000),
                                                               drive=drive),
                "ackermann_msgs/msg/AckermannDriveStamped"))
        vec = ty["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=9.81)
        writer.write(imu, T0, store.serialize_cdr(ty["sensor_msgs/msg/Imu"](
            header=header(T0), orientation=ty["geometry_msgs/msg/Quaternion"](
                x=0.0, y=0.0, z=0.0, w=1.0), orientation_covariance=np.zeros(9),
            angular_velocity=vec, angular_velocity_covariance=np.zeros(9),
            linear_acceleration=vec, linear_acceleration_covariance=np.zeros(9)),
            "sensor_msgs/msg/Imu"))
        writer.write(beat, T0, store.serialize_cdr(ty["acme_msgs/msg/Heartbeat"](
            seq=1, who="acme"), "acme_msgs/msg/Heartbeat"))


def test_a_foreign_sqlite3_bag_is_read_and_its_unknown_topics_listed(tmp_path: Path) -> None:
    bag = tmp_path / "foreign"
    foreign_bag(bag)
    assert yaml.safe_load((bag / "metadata.yaml").read_text())[
        "rosbag2_bagfile_information"]["storage_identifier"] == "sqlite3"
    out = tmp_path / "report"
    result = make_report(bag, out)
    assert result["partial"] is False, result["problems"]
    topics = result["topics"]
    assert {n: (t["type"], t["read"]) for n, t in topics.items()} == {
        "/vehicle/ackermann_cmd": ("ackermann_msgs/msg/AckermannDriveStamped", 100),
        "/localization/odometry": ("nav_msgs/msg/Odometry", 110),
        "/sensing/imu": ("sensor_msgs/msg/Imu", 1),
        "/acme/heartbeat": ("acme_msgs/msg/Heartbeat", 1)}
    assert topics["/vehicle/ackermann_cmd"]["role"] == "command"
    assert topics["/localization/odometry"]["role"] == "input"
    assert topics["/sensing/imu"]["role"] is None and topics["/acme/heartbeat"]["role"] is None
    cmd = result["driving"]["commands"]["/vehicle/ackermann_cmd"]
    assert cmd["count"] == 100
    assert cmd["rate_hz"] == pytest.approx(50.0, rel=1e-9)
    assert cmd["period_ms"]["std"] == pytest.approx(0.0, abs=1e-9)
    # odometry -> command; the odometry long before the first command is left out
    latency = cmd["latency_ms"]["/localization/odometry"]
    assert latency["inputs"] == 100
    assert latency["p50"] == pytest.approx(2.0, abs=1e-6)
    assert latency["max"] == pytest.approx(2.0, abs=1e-6)
    assert cmd["accel"]["min"] == -1.0 and cmd["accel"]["max"] == 1.0
    assert cmd["saturation"] is None  # no policy_node status: the limits are unknown
    assert result["training"] is None
    report = (out / "report.md").read_text()
    assert "| /acme/heartbeat | acme_msgs/msg/Heartbeat | 1 | not analysed (unknown) |" in report
    assert_images(out, ["commands_vehicle_ackermann_cmd.png",
                        "histograms_vehicle_ackermann_cmd.png"])


def test_a_type_without_definition_is_listed_not_fatal(tmp_path: Path) -> None:
    """A Humble-era bag stores no message definitions: a custom type cannot be decoded."""
    import sqlite3

    bag = tmp_path / "foreign"
    foreign_bag(bag, n_cmd=10)
    (db,) = bag.glob("*.db3")
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM message_definitions WHERE topic_type = ?",
                    ("acme_msgs/msg/Heartbeat",))
    result = make_report(bag, tmp_path / "report")
    assert result["partial"] is False
    assert result["topics"]["/acme/heartbeat"]["decoded"] is False
    assert result["driving"]["commands"]["/vehicle/ackermann_cmd"]["count"] == 10
    assert "not decoded" in (tmp_path / "report" / "report.md").read_text()


# ---- broken bags ------------------------------------------------------------------------------


def segmented_bag(path: Path) -> None:
    """Our BagWriter's bag of two files, 30 commands each."""
    from dsp_driving import msgs
    from dsp_driving.rosbag.writer import BagWriter

    make = msgs.ROS_TYPES
    with BagWriter(path, segment_s=3600) as writer:
        writer.add_topic("/ackermann_cmd", "ackermann_msgs/msg/AckermannDriveStamped")
        for i in range(60):
            ns = T0 + i * 100_000_000
            writer.write("/ackermann_cmd", make["ackermann_msgs/msg/AckermannDriveStamped"](
                header=make["std_msgs/msg/Header"](stamp=make["builtin_interfaces/msg/Time"](
                    sec=ns // 10**9, nanosec=ns % 10**9)),
                drive=make["ackermann_msgs/msg/AckermannDrive"](speed=float(i))), ns)
            if i == 29:
                writer.flush()


def test_a_truncated_file_gives_a_partial_report_of_the_rest(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    segmented_bag(bag)
    second = bag / "bag_1.mcap"
    second.write_bytes(second.read_bytes()[: second.stat().st_size // 2])
    out = tmp_path / "report"
    result = make_report(bag, out)
    assert result["partial"] is True
    assert any("bag_1.mcap" in p for p in result["problems"])
    assert any("lists 60 messages, 30 were found" in p for p in result["problems"])
    cmd = result["driving"]["commands"]["/ackermann_cmd"]
    assert cmd["count"] == 30 and cmd["rate_hz"] == pytest.approx(10.0)
    report = (out / "report.md").read_text()
    assert "**PARTIAL REPORT**" in report and "bag_1.mcap" in report
    assert "| /ackermann_cmd | ackermann_msgs/msg/AckermannDriveStamped | 30 of 60 |" in report


def test_unreadable_bags_are_clear_errors(tmp_path: Path, capsys) -> None:
    with pytest.raises(BagError, match="no such bag"):
        read_bag(tmp_path / "nothing")
    bag = tmp_path / "bag"
    segmented_bag(bag)
    # every file cut short: nothing to report
    broken = tmp_path / "broken"
    shutil.copytree(bag, broken)
    for f in broken.glob("*.mcap"):
        f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(BagError, match="no file of the bag could be read"):
        read_bag(broken)
    # a recorder killed before it wrote metadata.yaml
    (bag / "metadata.yaml").unlink()
    with pytest.raises(BagError, match=r"no metadata\.yaml.*ros2 bag reindex"):
        read_bag(bag)
    # the ROS executable: exit status 1 and the reason, no traceback
    with pytest.raises(SystemExit) as exit_info:
        bag_report_main([str(bag), "--ros-args", "-r", "__node:=x"])
    assert exit_info.value.code == 1
    assert "no metadata.yaml" in capsys.readouterr().err


def test_a_corrupt_chunk_loses_only_its_file(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    segmented_bag(bag)
    first = bag / "bag_0.mcap"
    data = bytearray(first.read_bytes())
    for k in range(len(data) // 3, len(data) // 3 + 40):  # inside the chunk, not the footer
        data[k] ^= 0xFF
    first.write_bytes(bytes(data))
    result = make_report(bag, tmp_path / "report")
    assert result["partial"] is True
    assert any(p.startswith("bag_0.mcap: ") for p in result["problems"])
    assert result["driving"]["commands"]["/ackermann_cmd"]["count"] == 30  # bag_1's


def test_a_failed_metadata_write_does_not_duplicate_a_file(tmp_path: Path,
                                                           monkeypatch) -> None:
    from dsp_driving.rosbag import writer as bag_module

    real, calls = bag_module.atomic_write_text, []

    def flaky(path, text):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(path, text)

    monkeypatch.setattr(bag_module, "atomic_write_text", flaky)
    path = tmp_path / "bag"
    writer = bag_module.BagWriter(path, segment_s=3600)
    writer.add_topic("/s", "std_msgs/msg/String")
    make = __import__("dsp_driving.msgs", fromlist=["ROS_TYPES"]).ROS_TYPES
    for i in range(3):
        writer.write("/s", make["std_msgs/msg/String"](data=str(i)), T0 + i)
        if i < 2:
            try:
                writer.flush()
            except OSError:
                pass  # the second segment's metadata write failed
    writer.close()
    meta = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["relative_file_paths"] == ["bag_0.mcap", "bag_1.mcap", "bag_2.mcap"]
    data = read_bag(path)
    assert [m.data for _, m in data.messages["/s"]] == ["0", "1", "2"]
    assert data.problems == []


def test_a_bag_that_cannot_be_written_never_stops_training(
        tmp_path: Path, cartpole_run: Path, stats_reader,
        caplog: pytest.LogCaptureFixture) -> None:
    from dsp_driving.rosbag.stats_bag import StatsBag

    (tmp_path / "bag").write_text("a file where the bag should go")
    recorder = StatsBag(tmp_path / "bag")
    with caplog.at_level(logging.WARNING, logger="dsp_driving"):
        for stats in stats_reader(cartpole_run)[:3]:
            recorder.on_update(stats)
        recorder.close()
    logged = caplog.messages
    assert recorder.failed and len(logged) == 1
    assert "recording" in logged[0] and "training goes on" in logged[0]
