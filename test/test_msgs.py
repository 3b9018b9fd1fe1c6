"""dsp_driving.msgs: CDR bytes equal rosbags' serialiser for every type; dict conversion."""

from __future__ import annotations

import dataclasses
import json
import struct
from typing import Any

import pytest

pytest.importorskip("cyclonedds", reason="dsp_driving.msgs needs the cyclonedds Python binding")
pytest.importorskip("rosbags", reason="the golden CDR bytes come from rosbags' serialiser")

from msg_samples import sample, typestore  # noqa: E402
import numpy as np  # noqa: E402
from rosbags.interfaces import Nodetype  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from dsp_driving import msgs  # noqa: E402

EXPECTED_TYPES = {
    "builtin_interfaces/msg/Time",
    "std_msgs/msg/Header", "std_msgs/msg/String", "std_msgs/msg/Float32",
    "std_msgs/msg/Float32MultiArray", "std_msgs/msg/MultiArrayLayout",
    "std_msgs/msg/MultiArrayDimension",
    "diagnostic_msgs/msg/DiagnosticArray", "diagnostic_msgs/msg/DiagnosticStatus",
    "diagnostic_msgs/msg/KeyValue",
    "geometry_msgs/msg/Point", "geometry_msgs/msg/Quaternion", "geometry_msgs/msg/Pose",
    "geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovariance",
    "geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistWithCovariance",
    "geometry_msgs/msg/Vector3", "geometry_msgs/msg/Accel",
    "nav_msgs/msg/Odometry", "nav_msgs/msg/Path",
    "ackermann_msgs/msg/AckermannDrive", "ackermann_msgs/msg/AckermannDriveStamped",
    "carla_msgs/msg/CarlaEgoVehicleControl",
    "autoware_control_msgs/msg/Control", "autoware_control_msgs/msg/Lateral",
    "autoware_control_msgs/msg/Longitudinal",
}
ALL_TYPES = sorted(EXPECTED_TYPES)
HEADER_LE = b"\x00\x01\x00\x00"  # CDR_LE encapsulation, options 0
NUMPY_DTYPES = {"bool": np.bool_, "byte": np.uint8, "char": np.uint8}


@pytest.fixture(scope="module")
def store() -> Any:
    """rosbags' ROS 2 Humble typestore plus the .msg texts msgs.py pins."""
    return typestore()


def _rosbags_value(store: Any, value: Any, node: int, detail: Any) -> Any:
    """One of our field values in rosbags' form (numpy arrays for primitive sequences)."""
    if node == Nodetype.BASE:
        return value
    if node == Nodetype.NAME:
        return to_rosbags(store, value, detail)
    (sub_node, sub_detail), _ = detail
    if sub_node == Nodetype.BASE and sub_detail[0] != "string":
        return np.array(value, dtype=NUMPY_DTYPES.get(sub_detail[0], sub_detail[0]))
    return [_rosbags_value(store, item, sub_node, sub_detail) for item in value]


def to_rosbags(store: Any, msg: Any, name: str) -> Any:
    """Our message as a rosbags message object of type `name`."""
    _, fields = store.fielddefs[name]
    return store.types[name](**{fname: _rosbags_value(store, getattr(msg, fname), node, detail)
                                for fname, (node, detail) in fields})


def rosbags_plain(store: Any, obj: Any, name: str) -> dict[str, Any]:
    """A rosbags message as nested dicts and lists (the shape of dataclasses.asdict)."""

    def value(item: Any, node: int, detail: Any) -> Any:
        if node == Nodetype.BASE:
            return item
        if node == Nodetype.NAME:
            return rosbags_plain(store, item, detail)
        (sub_node, sub_detail), _ = detail
        if isinstance(item, np.ndarray):
            return item.tolist()
        return [value(x, sub_node, sub_detail) for x in item]

    _, fields = store.fielddefs[name]
    return {fname: value(getattr(obj, fname), node, detail) for fname, (node, detail) in fields}


def _assert_plain(value: Any) -> None:
    """Fail unless value is nested dict/list/float/int/bool/str only."""
    if isinstance(value, dict):
        for item in value.values():
            _assert_plain(item)
    elif isinstance(value, list):
        for item in value:
            _assert_plain(item)
    else:
        assert type(value) in (float, int, bool, str), (type(value), value)


# --- the type registry --------------------------------------------------------------------------

def test_ros_types_lists_every_type_under_its_dds_name() -> None:
    assert set(msgs.ROS_TYPES) == EXPECTED_TYPES
    for name, cls in msgs.ROS_TYPES.items():
        pkg, _, short = name.split("/")
        assert cls.__idl_typename__ == f"{pkg}::msg::dds_::{short}_"
        assert getattr(msgs, short) is cls
        assert msgs.ros_type_name(cls) == name
        assert msgs.ros_type_name(cls()) == name


def test_msg_definitions_cover_exactly_what_humble_lacks() -> None:
    humble = get_typestore(Stores.ROS2_HUMBLE)
    missing = {name for name in msgs.ROS_TYPES if name not in humble.types}
    assert set(msgs.MSG_DEFINITIONS) == missing
    assert len(missing) == 6
    assert msgs.AUTOWARE_MSGS_RELEASE in msgs.MSG_DEFINITIONS["autoware_control_msgs/msg/Control"]


def test_ros_type_name_rejects_non_messages() -> None:
    with pytest.raises(ValueError, match="int is not a ROS 2 message type"):
        msgs.ros_type_name(int)
    with pytest.raises(ValueError, match="str is not a ROS 2 message type"):
        msgs.message_to_dict("hello")


def test_constants_are_class_attributes_not_fields(store: Any) -> None:
    status = msgs.DiagnosticStatus
    assert (status.OK, status.WARN, status.ERROR, status.STALE) == (0, 1, 2, 3)
    consts, _ = store.fielddefs["diagnostic_msgs/msg/DiagnosticStatus"]
    assert [(c[0], c[2]) for c in consts] == [("OK", 0), ("WARN", 1), ("ERROR", 2), ("STALE", 3)]
    names = [f.name for f in dataclasses.fields(status)]
    assert names == ["level", "name", "message", "hardware_id", "values"]


def test_defaults_match_ros2() -> None:
    assert msgs.Quaternion() == msgs.Quaternion(0.0, 0.0, 0.0, 1.0)
    assert msgs.Odometry().pose.pose.orientation.w == 1.0
    assert msgs.PoseWithCovariance().covariance == [0.0] * 36
    assert msgs.PoseWithCovariance().covariance is not msgs.PoseWithCovariance().covariance


# --- golden bytes --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_TYPES)
def test_sample_bytes_equal_rosbags(name: str, store: Any) -> None:
    msg = sample(store, name)
    cls = type(msg)
    for f in dataclasses.fields(cls):  # the sample exercises every field
        assert getattr(msg, f.name) != getattr(cls(), f.name), f.name
    ours = msg.serialize()
    theirs = bytes(store.serialize_cdr(to_rosbags(store, msg, name), name))
    assert ours[:4] == HEADER_LE
    assert ours == theirs
    assert cls.deserialize(theirs) == msg
    assert rosbags_plain(store, store.deserialize_cdr(ours, name), name) == dataclasses.asdict(msg)


@pytest.mark.parametrize("name", ALL_TYPES)
def test_default_bytes_equal_rosbags(name: str, store: Any) -> None:
    msg = msgs.ROS_TYPES[name]()
    ours = msg.serialize()
    assert ours == bytes(store.serialize_cdr(to_rosbags(store, msg, name), name))
    assert type(msg).deserialize(ours) == msg


def test_lateral_bytes_by_hand() -> None:
    msg = msgs.Lateral(stamp=msgs.Time(1, 2), control_time=msgs.Time(-3, 4),
                       steering_tire_angle=0.5, steering_tire_rotation_rate=-1.0,
                       is_defined_steering_tire_rotation_rate=True)
    body = struct.pack("<iIiIff?", 1, 2, -3, 4, 0.5, -1.0, True)
    assert msg.serialize() == HEADER_LE + body
    assert len(msg.serialize()) == 29  # no trailing padding


def test_float64_aligns_to_8_after_the_encapsulation_header() -> None:
    msg = msgs.PoseStamped(header=msgs.Header(msgs.Time(1, 2), "ab"),
                           pose=msgs.Pose(msgs.Point(1.0, 2.0, 3.0),
                                          msgs.Quaternion(0.0, 0.0, 0.0, 1.0)))
    body = struct.pack("<iII3s", 1, 2, 3, b"ab\x00")  # 15 bytes, then pad to 16
    body += b"\x00" + struct.pack("<7d", 1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 1.0)
    assert msg.serialize() == HEADER_LE + body


def test_strings_are_utf8_with_terminating_nul() -> None:
    assert msgs.String("ü").serialize() == HEADER_LE + struct.pack("<I", 3) + b"\xc3\xbc\x00"
    assert msgs.String.deserialize(msgs.String("ü🚗").serialize()).data == "ü🚗"


def test_float32_fields_round_trip_at_float32_precision() -> None:
    drive = msgs.AckermannDrive.deserialize(msgs.AckermannDrive(speed=0.1).serialize())
    assert drive.speed == float(np.float32(0.1))
    assert drive.speed != 0.1
    array = msgs.Float32MultiArray.deserialize(msgs.Float32MultiArray(data=[1 / 3]).serialize())
    assert array.data == [float(np.float32(1 / 3))]
    point = msgs.Point.deserialize(msgs.Point(x=0.1).serialize())
    assert point.x == 0.1  # float64 stays exact


def test_byte_and_bool_are_one_octet() -> None:
    status = msgs.DiagnosticStatus(level=msgs.DiagnosticStatus.STALE)
    assert status.serialize()[4:5] == b"\x03"
    control = msgs.CarlaEgoVehicleControl(hand_brake=True, gear=-1, manual_gear_shift=True)
    body = control.serialize()[4:]
    # header (4+4+4+1 -> pad 3), 3 float32, 2 bools, pad 2, int32 gear, bool
    assert body[28:] == b"\x01\x00\x00\x00" + struct.pack("<i", -1) + b"\x01"


# --- plain-Python conversion ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_TYPES)
def test_dict_round_trip(name: str, store: Any) -> None:
    msg = sample(store, name)
    data = msgs.message_to_dict(msg)
    _assert_plain(data)
    assert list(data) == [f.name for f in dataclasses.fields(type(msg))]
    assert msgs.message_from_dict(type(msg), json.loads(json.dumps(data))) == msg


def test_message_to_dict_plain_values() -> None:
    odom = msgs.Odometry(child_frame_id="base_link")
    data = msgs.message_to_dict(odom)
    assert data["pose"]["covariance"] == [0.0] * 36
    assert data["pose"]["pose"]["orientation"] == {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}
    assert data["header"] == {"stamp": {"sec": 0, "nanosec": 0}, "frame_id": ""}
    status = msgs.DiagnosticStatus(level=2, values=[msgs.KeyValue("k", "v")])
    assert msgs.message_to_dict(status)["values"] == [{"key": "k", "value": "v"}]


def test_message_from_dict_fills_defaults_and_widens_ints() -> None:
    msg = msgs.message_from_dict(msgs.AckermannDriveStamped, {"drive": {"speed": 2}})
    assert msg == msgs.AckermannDriveStamped(drive=msgs.AckermannDrive(speed=2.0))
    assert isinstance(msg.drive.speed, float)
    assert msgs.message_from_dict(msgs.Quaternion, {}) == msgs.Quaternion()
    status = msgs.message_from_dict(msgs.DiagnosticStatus, {"level": b"\x02"})
    assert status.level == 2  # rclpy's bytes form of a ROS byte


@pytest.mark.parametrize(("name", "data", "fragment"), [
    ("std_msgs/msg/String", {"dat": "x"},
     "unknown field 'dat' for std_msgs/msg/String; its fields are data"),
    ("ackermann_msgs/msg/AckermannDriveStamped", {"drive": {"sped": 1.0}},
     "unknown field 'drive.sped' for ackermann_msgs/msg/AckermannDrive"),
    ("nav_msgs/msg/Path", {"poses": [{"pose": {"position": {"w": 1.0}}}]},
     "unknown field 'poses[0].pose.position.w' for geometry_msgs/msg/Point"),
])
def test_message_from_dict_unknown_field(name: str, data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        msgs.message_from_dict(msgs.ROS_TYPES[name], data)
    assert fragment in str(info.value)


@pytest.mark.parametrize(("name", "data", "fragment"), [
    ("std_msgs/msg/String", {"data": 3}, "field 'data' of std_msgs/msg/String: expected a "
     "string, got 3"),
    ("std_msgs/msg/Float32", {"data": "fast"}, "field 'data' of std_msgs/msg/Float32: expected "
     "a number (float32), got 'fast'"),
    ("std_msgs/msg/Float32", {"data": True}, "field 'data'"),
    ("std_msgs/msg/Float32", {"data": 1e39}, "within float32 range, got 1e+39"),
    ("carla_msgs/msg/CarlaEgoVehicleControl", {"reverse": 1}, "field 'reverse' of "
     "carla_msgs/msg/CarlaEgoVehicleControl: expected true or false, got 1"),
    ("carla_msgs/msg/CarlaEgoVehicleControl", {"gear": 1.5}, "field 'gear'"),
    ("builtin_interfaces/msg/Time", {"nanosec": -1}, "field 'nanosec' of "
     "builtin_interfaces/msg/Time: expected an integer in [0, 4294967295] (uint32), got -1"),
    ("builtin_interfaces/msg/Time", {"sec": 2**31}, "[-2147483648, 2147483647] (int32)"),
    ("diagnostic_msgs/msg/DiagnosticStatus", {"level": 256}, "[0, 255] (byte), got 256"),
    ("geometry_msgs/msg/PoseWithCovariance", {"covariance": [0.0] * 35},
     "field 'covariance' of geometry_msgs/msg/PoseWithCovariance: expected a list of exactly "
     "36 items"),
    ("std_msgs/msg/Float32MultiArray", {"data": 1.0}, "field 'data' of "
     "std_msgs/msg/Float32MultiArray: expected a list (sequence), got 1.0"),
    ("std_msgs/msg/Float32MultiArray", {"data": [1.0, "x"]}, "field 'data[1]'"),
    ("nav_msgs/msg/Odometry", {"header": "now"}, "field 'header' of nav_msgs/msg/Odometry: "
     "expected a mapping for std_msgs/msg/Header, got 'now'"),
    ("nav_msgs/msg/Odometry", {"header": {"stamp": {"sec": "1"}}},
     "field 'header.stamp.sec' of nav_msgs/msg/Odometry"),
])
def test_message_from_dict_wrong_value(name: str, data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        msgs.message_from_dict(msgs.ROS_TYPES[name], data)
    assert fragment in str(info.value)


def test_message_from_dict_needs_a_mapping() -> None:
    with pytest.raises(ValueError, match="std_msgs/msg/String needs a mapping"):
        msgs.message_from_dict(msgs.String, "hello")  # type: ignore[arg-type]
