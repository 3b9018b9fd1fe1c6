"""The driving contract: feature values at known poses, bounds, and every action mapping."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dsp_driving.driving.contract import (
    ACTION_NAMES,
    INDEX,
    OBS_DIM,
    OBSERVATION_NAMES,
    ActionLimits,
    Ego,
    Path,
    Scene,
    Vehicle,
    from_physical,
    observation_bounds,
    observe,
    physical_features,
    policy_metadata,
    project,
    to_ackermann,
    to_autoware,
    to_carla,
    to_physical,
)


def straight(length: float = 200.0, **kw) -> Path:
    xs = np.linspace(0.0, length, 41)
    args = {"lane_width": 4.0, "speed_limit": 25.0, "left_width": 6.0, "right_width": 2.0}
    return Path(np.stack([xs, np.zeros_like(xs)], axis=1), **{**args, **kw})


def left_circle(radius: float = 50.0) -> Path:
    """A left turn: starts at the origin heading +x, curves towards +y."""
    theta = np.linspace(0.0, math.pi / 2, 400)
    pts = np.stack([radius * np.sin(theta), radius * (1 - np.cos(theta))], axis=1)
    return Path(pts, lane_width=4.0, speed_limit=15.0, left_width=2.0, right_width=2.0)


def feature(obs: np.ndarray, name: str) -> float:
    return float(obs[INDEX[name]])


def test_twenty_named_features_with_bounds() -> None:
    assert OBS_DIM == 20 == len(set(OBSERVATION_NAMES))
    low, high = observation_bounds()
    assert low.shape == high.shape == (OBS_DIM,) and np.all(low < 0) and np.all(high > 0)
    obs = observe(Scene(Ego(10.0, 0.0, 0.0, 20.0), straight()))
    assert obs.dtype == np.float32 and obs.shape == (OBS_DIM,)
    assert np.all(obs >= low) and np.all(obs <= high)


def test_lateral_offset_and_heading_error_signs() -> None:
    left = observe(Scene(Ego(10.0, 0.5, 0.1, 20.0), straight()))
    right = observe(Scene(Ego(10.0, -0.5, -0.1, 20.0), straight()))
    assert feature(left, "lateral_offset") == pytest.approx(0.5 / 2.0)  # + left of centre
    assert feature(right, "lateral_offset") == pytest.approx(-0.5 / 2.0)
    assert feature(left, "sin_heading_error") == pytest.approx(math.sin(0.1), abs=1e-6)
    assert feature(right, "sin_heading_error") == pytest.approx(-math.sin(0.1), abs=1e-6)
    assert feature(left, "cos_heading_error") == pytest.approx(math.cos(0.1), abs=1e-6)
    # road edges: left edge 6 m, right edge 2 m from the centre line
    assert feature(left, "left_edge_distance") == pytest.approx(5.5 / 10.0)
    assert feature(left, "right_edge_distance") == pytest.approx(2.5 / 10.0)


def test_path_preview_on_a_straight_road_offset_left() -> None:
    obs = observe(Scene(Ego(10.0, 0.5, 0.0, 20.0), straight()))
    for d in (5, 10, 20, 30):
        assert feature(obs, f"path_lateral_{d}m") == pytest.approx(-0.5 / 5.0)  # path is right


def test_path_preview_on_a_left_curve_matches_the_circle() -> None:
    radius = 50.0
    raw = physical_features(Scene(Ego(0.0, 0.0, 0.0, 10.0), left_circle(radius)))
    for d in (5, 10, 20, 30):
        expected = radius * (1 - math.cos(d / radius))  # y of the arc point, ego at its start
        assert raw[INDEX[f"path_lateral_{d}m"]] == pytest.approx(expected, abs=0.02)
    assert raw[INDEX["path_lateral_30m"]] > raw[INDEX["path_lateral_5m"]] > 0


def test_projection_along_a_curve() -> None:
    path = left_circle(50.0)
    # a point 1 m outside (right of) the arc, a quarter of the way round
    phi = math.pi / 8
    x, y = 51.0 * math.sin(phi), 50.0 - 51.0 * math.cos(phi)
    p = project(path.points, x, y)
    assert p.lateral == pytest.approx(-1.0, abs=1e-3)
    assert p.s == pytest.approx(50.0 * phi, abs=0.05)
    assert p.heading == pytest.approx(phi, abs=0.01)


def test_lead_vehicle_gap_relative_speed_and_inverse_ttc() -> None:
    vehicles = (
        Vehicle(40.0, 0.3, 0.0, 15.0),   # lead: same lane, 30 m ahead centre to centre
        Vehicle(60.0, 0.0, 0.0, 30.0),   # further ahead in the same lane
        Vehicle(20.0, 4.0, 0.0, 10.0),   # adjacent lane: not a lead
        Vehicle(0.0, 0.0, 0.0, 25.0),    # behind
    )
    obs = observe(Scene(Ego(10.0, 0.0, 0.0, 20.0), straight(), vehicles))
    gap = 30.0 - 4.5
    assert feature(obs, "has_lead") == 1.0
    assert feature(obs, "lead_gap") == pytest.approx(gap / 100.0)
    assert feature(obs, "lead_relative_speed") == pytest.approx(-5.0 / 30.0)
    assert feature(obs, "inverse_ttc") == pytest.approx(5.0 / gap, rel=1e-6)
    alone = observe(Scene(Ego(10.0, 0.0, 0.0, 20.0), straight(), vehicles[2:]))
    assert (feature(alone, "has_lead"), feature(alone, "lead_gap"),
            feature(alone, "inverse_ttc")) == (0.0, 1.0, 0.0)


def test_speed_features_are_scaled_and_clipped() -> None:
    obs = observe(Scene(Ego(10.0, 0.0, 0.0, 20.0, yaw_rate=0.2, accel=-2.5), straight(),
                        prev_action=(0.25, -0.5)))
    assert feature(obs, "speed") == pytest.approx(20.0 / 30.0)
    assert feature(obs, "target_speed") == pytest.approx(25.0 / 30.0)
    assert feature(obs, "speed_error") == pytest.approx(-5.0 / 30.0)
    assert feature(obs, "accel") == pytest.approx(-0.5)
    assert feature(obs, "yaw_rate") == pytest.approx(0.2)
    assert (feature(obs, "prev_steer"), feature(obs, "prev_accel")) == (0.25, -0.5)
    fast = observe(Scene(Ego(10.0, 0.0, 0.0, 500.0), straight()))
    assert feature(fast, "speed") == 2.0  # clipped


def test_bad_scenes_raise_naming_the_problem() -> None:
    with pytest.raises(ValueError, match="non-finite features: .*'speed'"):
        observe(Scene(Ego(10.0, 0.0, 0.0, float("nan")), straight()))
    with pytest.raises(ValueError, match=r"Path.points shape \(1, 2\)"):
        Path(np.zeros((1, 2)), 4.0, 10.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="repeated consecutive points"):
        Path(np.zeros((3, 2)), 4.0, 10.0, 2.0, 2.0)
    with pytest.raises(ValueError, match=r"Path.lane_width=0.0: must be > 0"):
        straight(lane_width=0.0)


def test_physical_mapping_and_its_inverse() -> None:
    limits = ActionLimits()
    assert to_physical([1.0, 1.0]) == (limits.max_steer_rad, limits.max_accel_mps2)
    assert to_physical([-1.0, -1.0]) == (-limits.max_steer_rad, -limits.max_decel_mps2)
    assert to_physical([3.0, -7.0]) == to_physical([1.0, -1.0])  # clipped
    for action in ([0.3, 0.4], [-0.8, -0.2], [0.0, 0.0]):
        np.testing.assert_allclose(from_physical(*to_physical(action)), action, atol=1e-6)
    with pytest.raises(ValueError, match="not finite"):
        to_physical([float("nan"), 0.0])
    with pytest.raises(ValueError, match=r"action shape \(3,\)"):
        to_physical([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"ActionLimits.max_steer_rad=-1.0"):
        ActionLimits(max_steer_rad=-1.0)


def test_carla_mapping_flips_steer_and_never_brakes_while_throttling() -> None:
    left = to_carla([1.0, 0.5])
    assert left.steer < 0  # CARLA steer is + right; ours is + left
    assert left.steer == pytest.approx(-0.5 / math.radians(70.0))
    assert (left.throttle, left.brake) == (0.5, 0.0)
    braking = to_carla([-0.2, -0.7])
    assert braking.steer > 0 and (braking.throttle, braking.brake) == (0.0, 0.7)
    for steer in np.linspace(-1.5, 1.5, 13):
        for accel in np.linspace(-1.5, 1.5, 13):
            c = to_carla([steer, accel])
            assert not (c.throttle > 0 and c.brake > 0)
            assert 0 <= c.throttle <= 1 and 0 <= c.brake <= 1 and -1 <= c.steer <= 1


def test_ackermann_and_autoware_mappings() -> None:
    drive = to_ackermann([0.5, 1.0], speed_mps=10.0, horizon_s=0.5)
    assert drive["steering_angle"] == pytest.approx(0.25)  # + left (REP-103)
    assert drive["speed"] == pytest.approx(10.0 + 3.0 * 0.5)
    assert drive["acceleration"] == pytest.approx(3.0)
    stop = to_ackermann([0.0, -1.0], speed_mps=1.0)
    assert stop["speed"] == 0.0 and stop["acceleration"] == pytest.approx(6.0)
    control = to_autoware([-0.5, -0.5], speed_mps=10.0)
    assert control["lateral"]["steering_tire_angle"] == pytest.approx(-0.25)
    assert control["longitudinal"]["acceleration"] == pytest.approx(-3.0)
    assert control["longitudinal"]["velocity"] == pytest.approx(10.0 - 3.0 * 0.5)


def test_mapping_keys_are_the_message_fields() -> None:
    msgs = pytest.importorskip("dsp_driving.msgs", reason="needs cyclonedds (dds extra)")
    drive = to_ackermann([0.1, 0.1], 5.0)
    assert msgs.message_from_dict(msgs.AckermannDrive, drive).speed == pytest.approx(5.15)
    control = to_autoware([0.1, 0.1], 5.0)
    built = msgs.message_from_dict(msgs.Control, control)
    assert built.longitudinal.is_defined_acceleration is True


def test_policy_metadata_is_strict_json_and_complete() -> None:
    meta = json.loads(json.dumps(policy_metadata(), allow_nan=False))
    assert [f["name"] for f in meta["features"]] == list(OBSERVATION_NAMES)
    assert meta["action_names"] == list(ACTION_NAMES) == ["steer", "accel"]
    assert meta["action_limits"]["max_steer_rad"] == 0.5


def test_projection_ignores_a_far_end_extension_passing_nearby() -> None:
    """A U-turn path: its last segment, extended without bound, would pass close to a point
    near the start and steal its projection (a jump of 200 m in arc length)."""
    from dsp_driving.driving.contract import END_EXTENSION_M, project

    # 0 -> 100 m east, a U-turn of radius 5 m, back west to x = 60 at y = 10.
    arc = [(100 + 5 * np.sin(a), 5 - 5 * np.cos(a)) for a in np.linspace(0, np.pi, 13)]
    points = np.array([(x, 0.0) for x in range(0, 100, 5)] + arc[1:] + [(80.0, 10.0),
                                                                         (60.0, 10.0)])
    # 6 m left of the start; the return leg's line (y = 10) is only 4 m away from it, but
    # that part of the line lies 55 m beyond the path's end.
    here = project(points, 5.0, 6.0)
    assert here.s == pytest.approx(5.0, abs=1e-6)
    assert here.lateral == pytest.approx(6.0, abs=1e-6)
    length = float(np.sum(np.linalg.norm(np.diff(points, axis=0), axis=1)))
    beyond = project(points, 60.0 - 0.5 * END_EXTENSION_M, 10.0)  # within the extension
    assert beyond.s == pytest.approx(length + 0.5 * END_EXTENSION_M, abs=1e-6)
