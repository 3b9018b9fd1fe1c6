"""The scene from a real OpenDRIVE road read by carla.Map: frames, route, features at known poses.

test/data/two_lane_arc.xodr: reference line from (0, 0) along +x for 100 m, then a left arc of
radius 50 m about (100, 50) through 90 degrees; two 3.5 m lanes per direction. Lane -1 (the
right-hand lane next to the centre line, driving +x) has its centre at y = -1.75 on the
straight and on the arc at radius 51.75 about (100, 50), in REP-103 (which is OpenDRIVE's frame;
CARLA's y is the negative of both).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("carla")

from dsp_driving.driving.carla_map import load_xodr_map  # noqa: E402
from dsp_driving.driving.contract import INDEX, Ego, Scene, observe  # noqa: E402
from dsp_driving.driving.route import build_route, edge_widths  # noqa: E402

XODR = Path(__file__).resolve().parents[1] / "data" / "two_lane_arc.xodr"
CENTRE = np.array([100.0, 50.0])
R_LANE1 = 51.75  # lane -1 centre radius on the arc


@pytest.fixture(scope="module")
def road():
    return load_xodr_map(XODR)


def on_arc(theta: float, radius: float = R_LANE1) -> np.ndarray:
    """Point at angle theta of the left arc (theta = 0 where the arc starts)."""
    return CENTRE + radius * np.array([math.sin(theta), -math.cos(theta)])


def test_carla_waypoint_converted_to_rep103(road) -> None:
    point = road.lane_point(20.0, -1.75)
    raw = point.waypoint.transform  # CARLA frame: y right
    assert point.key == (1, 0, -1)
    assert (raw.location.x, raw.location.y) == pytest.approx((20.0, 1.75), abs=1e-4)
    assert point.pose[:2] == pytest.approx((20.0, -1.75), abs=1e-4)
    assert point.pose.yaw == pytest.approx(0.0, abs=1e-6)
    # On the arc at road s = 150 (1 rad into the arc): CARLA yaw -57.2958 deg -> +1 rad.
    far = point.next(130.0)[0]
    assert far.waypoint.transform.rotation.yaw == pytest.approx(-57.2958, abs=1e-3)
    assert far.pose.yaw == pytest.approx(1.0, abs=1e-5)
    assert far.pose[:2] == pytest.approx(tuple(on_arc(1.0)), abs=2e-3)
    # The oncoming lane 1 is at y = +1.75 heading -x.
    oncoming = road.lane_point(20.0, 1.75)
    assert oncoming.key == (1, 0, 1)
    assert abs(oncoming.pose.yaw) == pytest.approx(math.pi, abs=1e-6)
    assert road.lane_point(20.0, 20.0, project_to_road=False) is None


def test_edge_widths_count_same_direction_lanes_only(road) -> None:
    assert edge_widths(road.lane_point(20.0, -1.75)) == pytest.approx((1.75, 5.25))
    assert edge_widths(road.lane_point(20.0, -5.25)) == pytest.approx((5.25, 1.75))
    assert edge_widths(road.lane_point(20.0, 1.75)) == pytest.approx((1.75, 5.25))
    assert edge_widths(road.lane_point(20.0, 5.25)) == pytest.approx((5.25, 1.75))


def test_route_follows_the_lane_centre(road) -> None:
    route = build_route(road.lane_point(50.0, -1.75), ahead_m=500.0, behind_m=20.0,
                        step_m=2.0, speed_limit_mps=20.0)
    assert route.start_s == pytest.approx(20.0, abs=1e-6)
    assert route.points[0] == pytest.approx((30.0, -1.75), abs=1e-4)
    straight = route.points[:, 0] <= 100.0
    assert np.abs(route.points[straight, 1] + 1.75).max() < 1e-4
    radius = np.linalg.norm(route.points[~straight] - CENTRE, axis=1)
    assert np.abs(radius - R_LANE1).max() < 2e-3
    # The lane ends at theta = pi/2, (151.75, 50): the route stops within one step of it.
    assert np.linalg.norm(route.points[-1] - (151.75, 50.0)) < 2.1
    assert route.length == pytest.approx(70.0 + R_LANE1 * math.pi / 2, abs=2.1)
    assert route.lane_width == pytest.approx(np.full(len(route.points), 3.5))
    assert route.left_width == pytest.approx(np.full(len(route.points), 1.75))
    assert route.right_width == pytest.approx(np.full(len(route.points), 5.25))


def test_scene_on_the_straight(road) -> None:
    route = build_route(road.lane_point(40.0, -1.75), 150.0, 20.0, 2.0, speed_limit_mps=20.0)
    ego = Ego(x=50.0, y=-1.25, yaw=0.1, speed=10.0)
    here = route.locate(ego.x, ego.y)
    obs = observe(Scene(ego, route.path_at(here.s)))
    assert here.lateral == pytest.approx(0.5, abs=1e-4)
    assert obs[INDEX["lateral_offset"]] == pytest.approx(0.5 / 2.0, abs=1e-4)
    assert obs[INDEX["sin_heading_error"]] == pytest.approx(math.sin(0.1), abs=1e-5)
    assert obs[INDEX["cos_heading_error"]] == pytest.approx(math.cos(0.1), abs=1e-5)
    # The lane ahead is y = -1.75: in the ego frame a point d ahead lies at
    # -sin(0.1) * d + cos(0.1) * (-0.5), scaled by 1/5.
    for d, expected_m in ((5, -0.99667), (10, -1.49584), (20, -2.49417), (30, -3.49250)):
        assert obs[INDEX[f"path_lateral_{d}m"]] == pytest.approx(expected_m / 5.0, abs=1e-4)
    assert obs[INDEX["left_edge_distance"]] == pytest.approx((1.75 - 0.5) / 10.0, abs=1e-4)
    assert obs[INDEX["right_edge_distance"]] == pytest.approx((5.25 + 0.5) / 10.0, abs=1e-4)
    assert obs[INDEX["target_speed"]] == pytest.approx(20.0 / 30.0)


def test_scene_on_the_arc(road) -> None:
    route = build_route(road.lane_point(90.0, -1.75), 150.0, 10.0, 0.5, speed_limit_mps=20.0)
    theta, inward, error = 0.6, 0.3, 0.05  # 0.3 m left of the centre, heading 0.05 rad left
    x, y = on_arc(theta, R_LANE1 - inward)
    obs = observe(Scene(Ego(x, y, theta + error, 10.0), route.path_at(route.locate(x, y).s)))
    # 0.5 m chords on a 51.75 m circle: sagitta 0.6 mm, heading steps 0.0097 rad.
    assert obs[INDEX["lateral_offset"]] * 2.0 == pytest.approx(inward, abs=2e-3)
    assert obs[INDEX["sin_heading_error"]] == pytest.approx(math.sin(error), abs=6e-3)
    for d in (5, 10, 20, 30):
        # The path point d ahead along the circle, in the frame tangent at theta (t along,
        # n towards the centre): (R sin phi, r_ego - R cos phi), phi = d / R; then the
        # ego's heading error rotates it.
        phi = d / R_LANE1
        dt, dn = R_LANE1 * math.sin(phi), (R_LANE1 - inward) - R_LANE1 * math.cos(phi)
        expected_m = -math.sin(error) * dt + math.cos(error) * dn
        assert obs[INDEX[f"path_lateral_{d}m"]] * 5.0 == pytest.approx(expected_m, abs=5e-3)
    # The same by hand: 5 m -> -0.3081 (right: the heading error dominates), 10 m -> 0.1657,
    # 20 m -> 2.5376, 30 m -> 6.7279 (left: the arc dominates).
    assert obs[INDEX["path_lateral_5m"]] * 5.0 == pytest.approx(-0.3081, abs=5e-3)
    assert obs[INDEX["path_lateral_30m"]] * 5.0 == pytest.approx(6.7279, abs=5e-3)
