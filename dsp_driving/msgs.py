"""ROS 2 messages as cyclonedds IDL structs, byte-compatible with rmw_cyclonedds_cpp.

Each class carries the DDS type name ROS 2 gives it (``pkg::msg::dds_::Name_``), its fields
in .msg order under their ROS names, and final extensibility, so ``serialize()`` writes plain
CDR (XCDR1, 4-byte encapsulation header, native byte order) that an rclpy node on the same
domain reads. Mapping: ``bool`` is one byte 0/1, ``byte`` is an unsigned octet (an int here,
not rclpy's ``bytes``), ``string`` is UTF-8. Constants are plain class attributes: cyclonedds
11.0.1 turns every annotated name, ``ClassVar`` included, into an IDL member.

Types outside ROS 2 Humble's core set are pinned to: ackermann_msgs 2.0.2 (ros2 branch),
carla_msgs 1.3.0 (carla-simulator/ros-carla-msgs) and autoware_control_msgs from
autoware_msgs ``AUTOWARE_MSGS_RELEASE``; ``MSG_DEFINITIONS`` holds their .msg field lines.
"""

import dataclasses
from dataclasses import dataclass, field
import functools
import math
import re
import typing
from typing import Any, NamedTuple

from cyclonedds.idl import IdlStruct
from cyclonedds.idl.types import array, byte, float32, float64, int32, sequence, uint32

AUTOWARE_MSGS_RELEASE = "1.11.0"


def _zeros36() -> list[float]:
    """A zero 6x6 row-major covariance."""
    return [0.0] * 36


# --- builtin_interfaces ----------------------------------------------------------------------

@dataclass
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    """builtin_interfaces/msg/Time."""

    sec: int32 = 0
    nanosec: uint32 = 0


# --- std_msgs --------------------------------------------------------------------------------

@dataclass
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    """std_msgs/msg/Header."""

    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@dataclass
class String(IdlStruct, typename="std_msgs::msg::dds_::String_"):
    """std_msgs/msg/String."""

    data: str = ""


@dataclass
class Float32(IdlStruct, typename="std_msgs::msg::dds_::Float32_"):
    """std_msgs/msg/Float32."""

    data: float32 = 0.0


@dataclass
class MultiArrayDimension(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayDimension_"):
    """std_msgs/msg/MultiArrayDimension."""

    label: str = ""
    size: uint32 = 0
    stride: uint32 = 0


@dataclass
class MultiArrayLayout(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayLayout_"):
    """std_msgs/msg/MultiArrayLayout."""

    dim: sequence[MultiArrayDimension] = field(default_factory=list)
    data_offset: uint32 = 0


@dataclass
class Float32MultiArray(IdlStruct, typename="std_msgs::msg::dds_::Float32MultiArray_"):
    """std_msgs/msg/Float32MultiArray."""

    layout: MultiArrayLayout = field(default_factory=MultiArrayLayout)
    data: sequence[float32] = field(default_factory=list)


# --- diagnostic_msgs -------------------------------------------------------------------------

@dataclass
class KeyValue(IdlStruct, typename="diagnostic_msgs::msg::dds_::KeyValue_"):
    """diagnostic_msgs/msg/KeyValue."""

    key: str = ""
    value: str = ""


@dataclass
class DiagnosticStatus(IdlStruct, typename="diagnostic_msgs::msg::dds_::DiagnosticStatus_"):
    """diagnostic_msgs/msg/DiagnosticStatus (level is a ROS ``byte``)."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3

    level: byte = 0
    name: str = ""
    message: str = ""
    hardware_id: str = ""
    values: sequence[KeyValue] = field(default_factory=list)


@dataclass
class DiagnosticArray(IdlStruct, typename="diagnostic_msgs::msg::dds_::DiagnosticArray_"):
    """diagnostic_msgs/msg/DiagnosticArray."""

    header: Header = field(default_factory=Header)
    status: sequence[DiagnosticStatus] = field(default_factory=list)


# --- geometry_msgs ---------------------------------------------------------------------------

@dataclass
class Vector3(IdlStruct, typename="geometry_msgs::msg::dds_::Vector3_"):
    """geometry_msgs/msg/Vector3."""

    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0


@dataclass
class Point(IdlStruct, typename="geometry_msgs::msg::dds_::Point_"):
    """geometry_msgs/msg/Point."""

    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0


@dataclass
class Quaternion(IdlStruct, typename="geometry_msgs::msg::dds_::Quaternion_"):
    """geometry_msgs/msg/Quaternion (identity by default, as in ROS 2)."""

    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0
    w: float64 = 1.0


@dataclass
class Pose(IdlStruct, typename="geometry_msgs::msg::dds_::Pose_"):
    """geometry_msgs/msg/Pose."""

    position: Point = field(default_factory=Point)
    orientation: Quaternion = field(default_factory=Quaternion)


@dataclass
class PoseStamped(IdlStruct, typename="geometry_msgs::msg::dds_::PoseStamped_"):
    """geometry_msgs/msg/PoseStamped."""

    header: Header = field(default_factory=Header)
    pose: Pose = field(default_factory=Pose)


@dataclass
class PoseWithCovariance(IdlStruct, typename="geometry_msgs::msg::dds_::PoseWithCovariance_"):
    """geometry_msgs/msg/PoseWithCovariance."""

    pose: Pose = field(default_factory=Pose)
    covariance: array[float64, 36] = field(default_factory=_zeros36)


@dataclass
class Twist(IdlStruct, typename="geometry_msgs::msg::dds_::Twist_"):
    """geometry_msgs/msg/Twist."""

    linear: Vector3 = field(default_factory=Vector3)
    angular: Vector3 = field(default_factory=Vector3)


@dataclass
class TwistWithCovariance(IdlStruct, typename="geometry_msgs::msg::dds_::TwistWithCovariance_"):
    """geometry_msgs/msg/TwistWithCovariance."""

    twist: Twist = field(default_factory=Twist)
    covariance: array[float64, 36] = field(default_factory=_zeros36)


@dataclass
class Accel(IdlStruct, typename="geometry_msgs::msg::dds_::Accel_"):
    """geometry_msgs/msg/Accel."""

    linear: Vector3 = field(default_factory=Vector3)
    angular: Vector3 = field(default_factory=Vector3)


# --- nav_msgs --------------------------------------------------------------------------------

@dataclass
class Odometry(IdlStruct, typename="nav_msgs::msg::dds_::Odometry_"):
    """nav_msgs/msg/Odometry."""

    header: Header = field(default_factory=Header)
    child_frame_id: str = ""
    pose: PoseWithCovariance = field(default_factory=PoseWithCovariance)
    twist: TwistWithCovariance = field(default_factory=TwistWithCovariance)


@dataclass
class Path(IdlStruct, typename="nav_msgs::msg::dds_::Path_"):
    """nav_msgs/msg/Path."""

    header: Header = field(default_factory=Header)
    poses: sequence[PoseStamped] = field(default_factory=list)


# --- ackermann_msgs --------------------------------------------------------------------------

@dataclass
class AckermannDrive(IdlStruct, typename="ackermann_msgs::msg::dds_::AckermannDrive_"):
    """ackermann_msgs/msg/AckermannDrive (rad, rad/s, m/s, m/s^2, m/s^3)."""

    steering_angle: float32 = 0.0
    steering_angle_velocity: float32 = 0.0
    speed: float32 = 0.0
    acceleration: float32 = 0.0
    jerk: float32 = 0.0


@dataclass
class AckermannDriveStamped(IdlStruct,
                            typename="ackermann_msgs::msg::dds_::AckermannDriveStamped_"):
    """ackermann_msgs/msg/AckermannDriveStamped."""

    header: Header = field(default_factory=Header)
    drive: AckermannDrive = field(default_factory=AckermannDrive)


# --- carla_msgs ------------------------------------------------------------------------------

@dataclass
class CarlaEgoVehicleControl(IdlStruct,
                             typename="carla_msgs::msg::dds_::CarlaEgoVehicleControl_"):
    """carla_msgs/msg/CarlaEgoVehicleControl (ros-carla-msgs 1.3.0 layout)."""

    header: Header = field(default_factory=Header)
    throttle: float32 = 0.0
    steer: float32 = 0.0
    brake: float32 = 0.0
    hand_brake: bool = False
    reverse: bool = False
    gear: int32 = 0
    manual_gear_shift: bool = False


# --- autoware_control_msgs (autoware_msgs AUTOWARE_MSGS_RELEASE) ------------------------------

@dataclass
class Lateral(IdlStruct, typename="autoware_control_msgs::msg::dds_::Lateral_"):
    """autoware_control_msgs/msg/Lateral (tire angle in rad, left positive)."""

    stamp: Time = field(default_factory=Time)
    control_time: Time = field(default_factory=Time)
    steering_tire_angle: float32 = 0.0
    steering_tire_rotation_rate: float32 = 0.0
    is_defined_steering_tire_rotation_rate: bool = False


@dataclass
class Longitudinal(IdlStruct, typename="autoware_control_msgs::msg::dds_::Longitudinal_"):
    """autoware_control_msgs/msg/Longitudinal (m/s, m/s^2, m/s^3 along base_link x)."""

    stamp: Time = field(default_factory=Time)
    control_time: Time = field(default_factory=Time)
    velocity: float32 = 0.0
    acceleration: float32 = 0.0
    jerk: float32 = 0.0
    is_defined_acceleration: bool = False
    is_defined_jerk: bool = False


@dataclass
class Control(IdlStruct, typename="autoware_control_msgs::msg::dds_::Control_"):
    """autoware_control_msgs/msg/Control."""

    stamp: Time = field(default_factory=Time)
    control_time: Time = field(default_factory=Time)
    lateral: Lateral = field(default_factory=Lateral)
    longitudinal: Longitudinal = field(default_factory=Longitudinal)


# --- registry and .msg texts -----------------------------------------------------------------

_DDS_NAME = re.compile(r"(\w+)::msg::dds_::(\w+)_")


def ros_type_name(cls_or_msg: type | Any) -> str:
    """'pkg/msg/Name' of a message class or instance from its DDS type name."""
    cls = cls_or_msg if isinstance(cls_or_msg, type) else type(cls_or_msg)
    match = _DDS_NAME.fullmatch(getattr(cls, "__idl_typename__", ""))
    if match is None:
        raise ValueError(f"{cls.__name__} is not a ROS 2 message type (its DDS type name "
                         f"must read pkg::msg::dds_::Name_)")
    return f"{match[1]}/msg/{match[2]}"


ROS_TYPES: dict[str, type] = {ros_type_name(cls): cls for cls in (
    Time, Header, String, Float32, MultiArrayDimension, MultiArrayLayout, Float32MultiArray,
    KeyValue, DiagnosticStatus, DiagnosticArray,
    Vector3, Point, Quaternion, Pose, PoseStamped, PoseWithCovariance, Twist,
    TwistWithCovariance, Accel,
    Odometry, Path,
    AckermannDrive, AckermannDriveStamped,
    CarlaEgoVehicleControl,
    Lateral, Longitudinal, Control,
)}

# Field lines of the .msg files for the types rosbags' ROS2_HUMBLE store lacks (upstream
# prose comments left out; they do not change the wire format or the type).
MSG_DEFINITIONS: dict[str, str] = {
    "ackermann_msgs/msg/AckermannDrive": """\
# ackermann_msgs 2.0.2 msg/AckermannDrive.msg
float32 steering_angle
float32 steering_angle_velocity
float32 speed
float32 acceleration
float32 jerk
""",
    "ackermann_msgs/msg/AckermannDriveStamped": """\
# ackermann_msgs 2.0.2 msg/AckermannDriveStamped.msg
std_msgs/Header header
AckermannDrive drive
""",
    "carla_msgs/msg/CarlaEgoVehicleControl": """\
# carla_msgs 1.3.0 msg/CarlaEgoVehicleControl.msg
std_msgs/Header header
float32 throttle
float32 steer
float32 brake
bool hand_brake
bool reverse
int32 gear
bool manual_gear_shift
""",
    "autoware_control_msgs/msg/Lateral": f"""\
# autoware_msgs {AUTOWARE_MSGS_RELEASE} autoware_control_msgs/msg/Lateral.msg
builtin_interfaces/Time stamp
builtin_interfaces/Time control_time
float32 steering_tire_angle
float32 steering_tire_rotation_rate
bool is_defined_steering_tire_rotation_rate
""",
    "autoware_control_msgs/msg/Longitudinal": f"""\
# autoware_msgs {AUTOWARE_MSGS_RELEASE} autoware_control_msgs/msg/Longitudinal.msg
builtin_interfaces/Time stamp
builtin_interfaces/Time control_time
float32 velocity
float32 acceleration
float32 jerk
bool is_defined_acceleration
bool is_defined_jerk
""",
    "autoware_control_msgs/msg/Control": f"""\
# autoware_msgs {AUTOWARE_MSGS_RELEASE} autoware_control_msgs/msg/Control.msg
builtin_interfaces/Time stamp
builtin_interfaces/Time control_time
Lateral lateral
Longitudinal longitudinal
""",
}


# --- plain-Python conversion -----------------------------------------------------------------

_INT_RANGES = {"byte": (0, 2**8 - 1), "int32": (-2**31, 2**31 - 1), "uint32": (0, 2**32 - 1)}
_FLOAT32_MAX = 3.4028234663852886e38


class _Kind(NamedTuple):
    """How one IDL member maps to plain Python."""

    kind: str  # "struct", "sequence", "array", "bool", "str" or a primitive: "float32", ...
    element: "_Kind | None" = None  # element of a sequence or array
    struct: type | None = None  # the class of a struct member
    length: int | None = None  # the length of an array


def _kind_of(annotation: Any) -> _Kind:
    """The _Kind of one member annotation of the classes above."""
    if annotation is bool:
        return _Kind("bool")
    if annotation is str:
        return _Kind("str")
    if isinstance(annotation, type) and issubclass(annotation, IdlStruct):
        return _Kind("struct", struct=annotation)
    meta = typing.get_args(annotation)[1]
    if isinstance(meta, str):
        return _Kind(meta)
    if isinstance(meta, sequence):
        return _Kind("sequence", element=_kind_of(meta.subtype))
    if isinstance(meta, array):
        return _Kind("array", element=_kind_of(meta.subtype), length=meta.length)
    raise TypeError(f"unsupported member annotation {annotation!r}")


@functools.cache
def _members(cls: type) -> dict[str, _Kind]:
    """Member name -> _Kind of a message class, in .msg order."""
    ros_type_name(cls)
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: _kind_of(hints[f.name]) for f in dataclasses.fields(cls)}


def _to_plain(value: Any, kind: _Kind) -> Any:
    """One member value as plain Python."""
    if kind.kind == "struct":
        return message_to_dict(value)
    if kind.kind in ("sequence", "array"):
        return [_to_plain(item, kind.element) for item in value]
    if kind.kind == "bool":
        return bool(value)
    if kind.kind == "str":
        return str(value)
    return float(value) if kind.kind.startswith("float") else int(value)


def message_to_dict(msg: Any) -> dict[str, Any]:
    """A message as nested dicts, lists, floats, ints, bools and strs (in .msg order)."""
    return {name: _to_plain(getattr(msg, name), kind)
            for name, kind in _members(type(msg)).items()}


def _bad(path: str, cls: type, expected: str, value: Any) -> ValueError:
    """The error for a value of the wrong type or range."""
    return ValueError(f"field {path!r} of {ros_type_name(cls)}: expected {expected}, "
                      f"got {value!r}")


def _from_plain(value: Any, kind: _Kind, path: str, root: type) -> Any:
    """One member value from plain Python, checked against its IDL type."""
    name = kind.kind
    if name == "struct":
        if isinstance(value, kind.struct):
            return value
        if not isinstance(value, dict):
            raise _bad(path, root, f"a mapping for {ros_type_name(kind.struct)}", value)
        return _build(kind.struct, value, path + ".", root)
    if name in ("sequence", "array"):
        return _list_from_plain(value, kind, path, root)
    if name in ("bool", "str"):
        if not isinstance(value, bool if name == "bool" else str):
            raise _bad(path, root, "true or false" if name == "bool" else "a string", value)
        return value
    if name.startswith("float"):
        return _float_from_plain(value, name, path, root)
    return _int_from_plain(value, name, path, root)


def _list_from_plain(value: Any, kind: _Kind, path: str, root: type) -> list[Any]:
    """A sequence or fixed-size array member."""
    if not isinstance(value, (list, tuple)):
        raise _bad(path, root, f"a list ({kind.kind})", value)
    if kind.length is not None and len(value) != kind.length:
        raise _bad(path, root, f"a list of exactly {kind.length} items", value)
    return [_from_plain(item, kind.element, f"{path}[{i}]", root)
            for i, item in enumerate(value)]


def _float_from_plain(value: Any, name: str, path: str, root: type) -> float:
    """A float32/float64 member: a number (not a bool), float32 within its range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(path, root, f"a number ({name})", value)
    if name == "float32" and math.isfinite(value) and abs(value) > _FLOAT32_MAX:
        raise _bad(path, root, "a number within float32 range", value)
    return float(value)


def _int_from_plain(value: Any, name: str, path: str, root: type) -> int:
    """An integer member within its type's range; a ROS byte may come as rclpy's bytes."""
    if name == "byte" and isinstance(value, bytes) and len(value) == 1:
        return value[0]  # rclpy's form of a ROS byte
    low, high = _INT_RANGES[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(path, root, f"an integer in [{low}, {high}] ({name})", value)
    return value


def _build(cls: type, data: dict[str, Any], prefix: str, root: type) -> Any:
    """An instance of cls from a mapping; missing members keep their defaults."""
    members = _members(cls)
    for key in data:
        if key not in members:
            raise ValueError(f"unknown field {prefix + str(key)!r} for {ros_type_name(cls)}; "
                             f"its fields are {', '.join(members)}")
    return cls(**{key: _from_plain(value, members[key], prefix + key, root)
                  for key, value in data.items()})


def message_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """A message of class cls from nested plain Python (the inverse of message_to_dict)."""
    if not isinstance(data, dict):
        raise ValueError(f"{ros_type_name(cls)} needs a mapping of field values, got {data!r}")
    return _build(cls, data, "", cls)
