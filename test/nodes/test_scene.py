"""policy_node's ros-mode scene without ROS: hand-made odometry, path and lead sequences."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from dsp_driving.driving import contract
from dsp_driving.nodes.parameters import PolicyNodeConfig
from dsp_driving.nodes.scene import NO_PATH, SceneAssembler

LANE = np.array([[0.0, 0.0], [50.0, 0.0], [100.0, 0.0]])


def ego(speed: float, x: float = 5.0) -> contract.Ego:
    """The ego on the lane, as nodes/conversions.py reads it (accel 0 until the assembler's)."""
    return contract.Ego(x, 0.5, 0.0, speed, 0.1, 0.0, 4.5)


def assembler(**cfg: Any) -> SceneAssembler:
    scene = SceneAssembler(PolicyNodeConfig(input_mode="ros", **cfg))
    assert scene.set_path(LANE) == ""
    return scene


def accel_after(scene: SceneAssembler, speed: float, stamp_s: float, received_s: float
                ) -> float:
    """Feed one odometry and take its scene: the ego's finite-difference acceleration."""
    scene.set_odometry(ego(speed), stamp_s, received_s)
    built, why = scene.take(received_s)
    assert why == "" and built is not None
    return built.ego.accel


def test_acceleration_is_the_finite_difference_over_the_header_stamps() -> None:
    scene = assembler()
    assert accel_after(scene, 10.0, 100.0, 5.0) == 0.0  # no reference yet
    assert accel_after(scene, 11.0, 100.5, 5.01) == 2.0  # header time, not arrival time
    assert accel_after(scene, 10.0, 101.0, 5.02) == -2.0
    assert accel_after(scene, 12.0, 101.0, 5.03) == 0.0  # same stamp: no difference...
    assert accel_after(scene, 13.0, 101.25, 5.04) == 4.0  # ...but the new reference
    assert accel_after(scene, 20.0, 100.0, 5.05) == 0.0  # stamps went back: none either
    assert accel_after(scene, 19.0, 100.5, 5.06) == -2.0


def test_unstamped_odometry_falls_back_to_the_arrival_time() -> None:
    scene = assembler()
    assert accel_after(scene, 10.0, 0.0, 7.0) == 0.0
    assert accel_after(scene, 9.0, 0.0, 7.25) == -4.0


def test_the_scene_is_built_once_per_odometry_from_the_newest_inputs() -> None:
    scene = assembler(ego_length_m=4.0, lane_width_m=3.0, speed_limit_mps=20.0,
                      left_width_m=1.5, right_width_m=4.5)
    assert scene.take(1.0) == (None, "")  # nothing due before any odometry
    scene.set_odometry(ego(10.0), 50.0, 1.0)
    built, why = scene.take(1.05)
    assert why == "" and built is not None and scene.received_s == 1.0
    assert (built.ego.x, built.ego.y, built.ego.speed, built.ego.yaw_rate) == (5.0, 0.5, 10.0,
                                                                              0.1)
    np.testing.assert_array_equal(built.path.points, LANE)
    assert (built.path.lane_width, built.path.speed_limit, built.path.left_width,
            built.path.right_width) == (3.0, 20.0, 1.5, 4.5)
    assert built.vehicles == () and built.prev_action == (0.0, 0.0)
    assert scene.take(1.1) == (None, "")  # one scene per odometry message
    assert scene.set_path(LANE[1:] + 1.0) == ""  # a new path waits for the next odometry
    assert scene.take(1.15) == (None, "")
    scene.set_odometry(ego(10.0), 50.1, 1.2)
    built, _ = scene.take(1.2)
    np.testing.assert_array_equal(built.path.points, [[51.0, 1.0], [101.0, 1.0]])


def test_the_lead_is_forgotten_after_stale_timeout_s() -> None:
    scene = assembler(stale_timeout_s=0.25, lead_length_m=6.0)
    lead = contract.Vehicle(30.0, 0.0, 0.0, 8.0, 6.0)
    scene.set_lead(lead, received_s=1.0)
    for now, expected in ((1.0, (lead,)), (1.25, (lead,)), (1.5, ()), (1.75, ())):
        scene.set_odometry(ego(10.0), now, now)
        built, _ = scene.take(now)
        assert built.vehicles == expected, now
    scene.set_lead(lead, received_s=2.0)  # a fresh message brings it back
    scene.set_odometry(ego(10.0), 2.1, 2.1)
    assert scene.take(2.1)[0].vehicles == (lead,)


@pytest.mark.parametrize("points, why", [
    (np.zeros((0, 2)), "path with 0 distinct (or non-finite) points ignored"),
    (np.array([[1.0, 2.0]]), "path with 1 distinct (or non-finite) points ignored"),
    (np.array([[0.0, 0.0], [math.nan, 1.0]]), "path with 2 distinct (or non-finite) points"),
    (np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0]]), "path ignored: Path.points has repeated"),
])
def test_a_bad_path_is_refused_and_the_previous_one_kept(points: np.ndarray, why: str
                                                         ) -> None:
    scene = assembler()
    assert scene.set_path(points).startswith(why)
    scene.set_odometry(ego(10.0), 1.0, 1.0)
    built, _ = scene.take(1.0)
    np.testing.assert_array_equal(built.path.points, LANE)


def test_odometry_before_any_path_waits_for_the_path() -> None:
    scene = SceneAssembler(PolicyNodeConfig(input_mode="ros"))
    assert scene.set_path(np.array([[0.0, 0.0]])) != ""  # refused: still no path
    scene.set_odometry(ego(10.0), 1.0, 1.0)
    assert scene.take(1.0) == (None, NO_PATH)
    assert scene.take(1.1) == (None, "")  # said once per odometry message
    assert scene.set_path(LANE) == ""
    assert scene.take(1.2) == (None, "")  # the path waits for the next odometry
    scene.set_odometry(ego(12.0), 1.5, 1.5)
    built, why = scene.take(1.5)
    assert why == "" and built.ego.accel == 4.0  # the first odometry was a reference


# ---- the same through messages (dsp_driving.msgs: rclpy's classes read the same) -----------

@pytest.fixture
def make() -> Any:
    pytest.importorskip("cyclonedds")
    from dsp_driving import msgs

    return lambda name, **fields: msgs.ROS_TYPES[name](**fields)


def odometry(make: Any, stamp_s: float, speed: float, x: float = 5.0, yaw: float = 0.0) -> Any:
    ns = round(stamp_s * 1e9)
    stamp = make("builtin_interfaces/msg/Time", sec=ns // 10**9, nanosec=ns % 10**9)
    pose = make("geometry_msgs/msg/Pose",
                position=make("geometry_msgs/msg/Point", x=x, y=0.5, z=0.0),
                orientation=make("geometry_msgs/msg/Quaternion", x=0.0, y=0.0,
                                 z=math.sin(yaw / 2), w=math.cos(yaw / 2)))
    twist = make("geometry_msgs/msg/Twist",
                 linear=make("geometry_msgs/msg/Vector3", x=speed, y=0.0, z=0.0),
                 angular=make("geometry_msgs/msg/Vector3", x=0.0, y=0.0, z=0.1))
    return make("nav_msgs/msg/Odometry",
                header=make("std_msgs/msg/Header", stamp=stamp, frame_id="map"),
                pose=make("geometry_msgs/msg/PoseWithCovariance", pose=pose),
                twist=make("geometry_msgs/msg/TwistWithCovariance", twist=twist))


def path(make: Any, points: list[tuple[float, float]]) -> Any:
    def pose(x: float, y: float) -> Any:
        return make("geometry_msgs/msg/PoseStamped", pose=make(
            "geometry_msgs/msg/Pose", position=make("geometry_msgs/msg/Point", x=x, y=y, z=0.0)))

    return make("nav_msgs/msg/Path", poses=[pose(x, y) for x, y in points])


def test_a_refused_odometry_is_not_the_next_acceleration_reference(make: Any) -> None:
    scene = SceneAssembler(PolicyNodeConfig(input_mode="ros", ego_length_m=4.0))
    assert scene.on_path(path(make, [(0.0, 0.0), (0.0, 0.0), (50.0, 0.0), (100.0, 0.0)])) == ""
    assert scene.on_odometry(odometry(make, 10.0, 10.0), 1.0) == ""
    built, _ = scene.take(1.0)
    assert (built.ego.speed, built.ego.accel, built.ego.length) == (10.0, 0.0, 4.0)
    np.testing.assert_array_equal(built.path.points, LANE)  # the repeated point dropped
    why = scene.on_odometry(odometry(make, 10.5, math.nan), 1.5)
    assert why == "odometry with non-finite ['speed']"
    assert scene.take(1.5) == (None, "")  # no scene from the bad message
    assert scene.on_odometry(odometry(make, 11.0, 12.0), 2.0) == ""
    built, _ = scene.take(2.0)
    assert built.ego.accel == 2.0  # (12 - 10) / (11 - 10): the bad message skipped
    assert scene.received_s == 2.0


def test_a_refused_odometry_voids_the_pending_scene(make: Any) -> None:
    scene = SceneAssembler(PolicyNodeConfig(input_mode="ros"))
    scene.set_path(LANE)
    assert scene.on_odometry(odometry(make, 1.0, 10.0), 1.0) == ""
    assert scene.on_odometry(odometry(make, 1.1, math.inf, x=math.nan), 1.1) != ""
    assert scene.take(1.1) == (None, "")  # the good one before it is not used either


def test_lead_and_path_messages(make: Any) -> None:
    scene = SceneAssembler(PolicyNodeConfig(input_mode="ros", lead_length_m=6.0))
    assert scene.on_path(path(make, [(1.0, 1.0), (1.0, 1.0)])) == (
        "path with 1 distinct (or non-finite) points ignored")
    assert scene.on_path(path(make, [(0.0, 0.0), (50.0, 0.0), (100.0, 0.0)])) == ""
    assert scene.on_lead(odometry(make, 0.0, math.nan), 1.0) == (
        "odometry with non-finite ['speed']")
    assert scene.on_lead(odometry(make, 0.0, 8.0, x=30.0, yaw=0.5), 1.0) == ""
    scene.on_odometry(odometry(make, 0.0, 10.0), 1.1)
    (lead,) = scene.take(1.1)[0].vehicles
    assert (lead.x, lead.y, lead.speed, lead.length) == (30.0, 0.5, 8.0, 6.0)
    assert lead.yaw == pytest.approx(0.5, abs=1e-12)
