"""DriveSafety: the figures of policy_node's status and the bag report on hand-built steps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsp_driving.driving import contract
from dsp_driving.driving.drive_safety import FIGURE_KEYS, DriveFigures, DriveSafety


def obs(speed_mps: float, gap_m: float | None = None, rel_speed_mps: float = 0.0
        ) -> np.ndarray:
    """A contract observation with the ego speed and, where ``gap_m`` is given, a lead.
    The values used below are exact in float32 (speed / 30, gap / 100, rel / 30)."""
    x = np.zeros(contract.OBS_DIM, np.float32)
    x[contract.INDEX["speed"]] = speed_mps / contract.SPEED_SCALE_MPS
    x[contract.INDEX["cos_heading_error"]] = 1.0
    x[contract.INDEX["lead_gap"]] = 1.0 if gap_m is None else gap_m / contract.GAP_RANGE_M
    if gap_m is not None:
        x[contract.INDEX["has_lead"]] = 1.0
        x[contract.INDEX["lead_relative_speed"]] = rel_speed_mps / contract.SPEED_SCALE_MPS
    return x


def test_ttc_headway_speed_and_comfort_on_known_steps() -> None:
    drive = DriveSafety(control_period_s=0.1, window_s=None)
    # (observation, steer rad, accel m/s^2) per step at 10 Hz
    steps = [(obs(15.0), 0.0, 0.0),
             (obs(15.0, 25.0, -7.5), 0.05, 1.5),  # closing at 7.5 m/s on 25 m
             (obs(15.0, 6.25, -7.5), 0.05, -3.0),  # 6.25 m: TTC 0.833 s
             (obs(15.0, 12.5, 3.0), -0.05, -3.0),  # opening: no TTC, a headway
             (None, 0.0, 0.0)]  # no fresh observation: comfort only
    for k, (x, steer, accel) in enumerate(steps):
        drive.step(100.0 + 0.1 * k, steer, accel, x)
    f = drive.figures()
    assert (f.control_steps, f.observed_steps, f.lead_steps, f.bad_observations) == (5, 4, 3, 0)
    assert f.window_s is None and f.control_period_s == 0.1
    assert f.min_ttc_s == 6.25 / 7.5
    assert f.ttc_p5_s == pytest.approx(6.25 / 7.5 + 0.05 * (25 / 7.5 - 6.25 / 7.5))
    assert f.ttc_below_pct == 25.0  # 1 of 4 observed steps
    assert f.min_headway_s == 6.25 / 15.0
    assert f.median_headway_s == 12.5 / 15.0
    assert f.mean_speed_mps == 15.0
    # commanded jerk: accel differences / 0.1 s = 15, -45, 0, 30 m/s^3
    assert f.jerk_max_mps3 == pytest.approx(45.0)
    assert f.jerk_p95_mps3 == pytest.approx(30.0 + 0.85 * 15.0)
    # steering rate: 0.5, 0, -1, 0.5 rad/s
    assert f.steer_rate_max_rps == pytest.approx(1.0)
    assert f.steer_rate_p95_rps == pytest.approx(0.5 + 0.85 * 0.5)
    assert (f.speed_mps, f.ttc_s, f.headway_s) == (None, None, None)  # the newest: no obs
    series = drive.series()
    np.testing.assert_array_equal(series["observed"], [True, True, True, True, False])
    np.testing.assert_allclose(series["ttc_s"], [np.nan, 25 / 7.5, 6.25 / 7.5, np.nan, np.nan])
    assert math.isnan(series["jerk_mps3"][0])  # the first command has no jerk


def test_the_newest_step_gives_the_current_figures_and_the_odometry_speed_wins() -> None:
    drive = DriveSafety(0.05)
    drive.step(1.0, 0.0, 0.0, obs(15.0, 25.0, -7.5), speed_mps=12.5)
    f = drive.figures()
    assert f.speed_mps == 12.5 and f.ttc_s == 25.0 / 7.5 and f.headway_s == 25.0 / 12.5
    drive.step(1.05, 0.0, 0.0, obs(15.0))  # the lead is gone
    f = drive.figures()
    assert f.speed_mps == 15.0 and f.ttc_s is None and f.headway_s is None
    assert f.min_ttc_s == 25.0 / 7.5 and f.ttc_below_pct == 0.0


@pytest.mark.parametrize("bad", [
    np.full(contract.OBS_DIM, np.nan),
    np.r_[obs(10.0)[:-1], np.inf],
    np.zeros(contract.OBS_DIM - 1),
    "twenty",
    [[1, 2], [3]],
    object(),
])
def test_a_bad_observation_is_skipped_without_raising(bad) -> None:
    drive = DriveSafety(0.1)
    drive.step(0.0, 0.0, 0.0, obs(15.0, 12.5, -7.5))
    drive.step(0.1, 0.0, 1.0, bad)
    drive.step(0.2, 0.0, 1.0, obs(15.0), speed_mps=math.nan)  # a non-finite speed: skipped
    f = drive.figures()
    assert (f.control_steps, f.observed_steps, f.bad_observations) == (3, 1, 2)
    assert f.min_ttc_s == 12.5 / 7.5 and f.ttc_below_pct == 0.0  # the one observed step
    assert f.jerk_max_mps3 == pytest.approx(10.0)  # the commands still count
    assert f.speed_mps is None


def test_nothing_a_step_is_given_raises() -> None:
    drive = DriveSafety(0.1)
    for args in [(math.nan, 0.0, 0.0), (0.1, "x", 0.0), (0.2, 0.0, math.inf),
                 (None, 0.0, 0.0), (0.3, 0.0, 0.0, obs(10.0), "fast")]:
        drive.step(*args)
    f = drive.figures()  # a step without a numeric time or command is dropped; a nan time
    # is the previous step's; an infinite command gives no finite jerk
    assert f.control_steps == 3 and f.observed_steps == 0 and f.bad_observations == 1
    assert f.jerk_max_mps3 is None and f.steer_rate_max_rps == 0.0


def test_no_steps_give_no_figures() -> None:
    f = DriveSafety(0.1).figures()
    assert f.control_steps == 0
    assert all(getattr(f, k) is None for k in FIGURE_KEYS
               if k not in ("window_s", "control_period_s", "control_steps", "observed_steps",
                            "lead_steps", "bad_observations"))
    assert isinstance(f, DriveFigures) and set(f.as_dict()) == set(FIGURE_KEYS)


def test_the_window_keeps_the_last_seconds_and_restarts_when_the_clock_goes_back() -> None:
    drive = DriveSafety(1.0, window_s=10.0)
    for k in range(21):  # 1 Hz, t = 0..20: the window holds t in (10, 20]
        drive.step(float(k), 0.0, float(k), obs(float(k) * 0.5))
    f = drive.figures()
    assert f.control_steps == 10 and f.mean_speed_mps == pytest.approx(7.75)
    assert f.jerk_max_mps3 == 1.0  # t = 11 still has its difference from t = 10
    drive.step(25.0, 0.0, 0.0, None)  # (16..20 and 25: 11..15 leave before being measured)
    assert drive.figures().control_steps == 6
    drive.step(3.0, 0.0, 0.0, obs(10.0))  # a simulator reset
    assert drive.figures().control_steps == 1


def test_a_bad_control_period_is_refused() -> None:
    with pytest.raises(ValueError, match="control_period_s=0"):
        DriveSafety(0)
    with pytest.raises(ValueError, match="window_s=nan"):
        DriveSafety(0.1, window_s=math.nan)
