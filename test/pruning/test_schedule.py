"""The cubic threshold and ratio schedules, and the regulariser's dose, at hand-computed points."""

from __future__ import annotations

import pytest

from dsp_driving.pruning import kappa, prune_ratio
from dsp_driving.pruning.schedule import lambda_per_step, lr_sum, regularised

KF, T0, T1 = 0.5, 0.1, 0.5


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (0.0, 0.0),
        (0.05, 0.0),  # before t_start
        (0.1, 0.0),  # at t_start: u = 0
        (0.2, 0.5 * (1 - 0.75**3)),  # u = 0.25 -> 0.2890625
        (0.3, 0.5 * 0.875),  # midway: u = 0.5 -> 1 - 0.125 = 0.875
        (0.5, 0.5),  # at t_end
        (0.9, 0.5),  # after
        (1.0, 0.5),
    ],
)
def test_kappa_cubic_ramp(t: float, expected: float) -> None:
    assert kappa(t, KF, T0, T1) == pytest.approx(expected, abs=1e-12)


def test_kappa_hand_values_written_out() -> None:
    assert kappa(0.2, KF, T0, T1) == pytest.approx(0.2890625, abs=1e-12)
    assert kappa(0.3, KF, T0, T1) == pytest.approx(0.4375, abs=1e-12)


@pytest.mark.parametrize(
    ("t", "expected"),
    [(0.0, 0.1), (0.1, 0.1), (0.3, 0.1 + 0.8 * 0.875), (0.5, 0.9), (0.8, 0.9)],
)
def test_prune_ratio_cubic_ramp(t: float, expected: float) -> None:
    assert prune_ratio(t, 0.1, 0.9, T0, T1) == pytest.approx(expected, abs=1e-12)


def test_schedules_are_monotone() -> None:
    grid = [i / 200 for i in range(201)]
    ks = [kappa(t, KF, T0, T1) for t in grid]
    ps = [prune_ratio(t, 0.2, 0.8, T0, T1) for t in grid]
    assert all(b >= a for a, b in zip(ks, ks[1:]))
    assert all(b >= a for a, b in zip(ps, ps[1:]))
    assert (min(ks), max(ks)) == (0.0, 0.5)
    assert (min(ps), max(ps)) == (0.2, 0.8)


def test_regularised_stops_at_t_end_unless_after_ramp() -> None:
    assert regularised(0.0, 0.5, after_ramp=False)
    assert regularised(0.49, 0.5, after_ramp=False)
    assert not regularised(0.5, 0.5, after_ramp=False)  # an update starting at t_end: off
    assert not regularised(0.9, 0.5, after_ramp=False)
    assert regularised(0.5, 0.5, after_ramp=True)
    assert regularised(0.9, 0.5, after_ramp=True)
    assert not regularised(0.0, 0.0, after_ramp=False)


def test_lr_sum_by_hand() -> None:
    # 4 updates start at progress 0, 0.25, 0.5, 0.75, at lr 1, 0.75, 0.5, 0.25 (annealed);
    # 2 gradient steps each; t_end = 0.5 regularises the first two: 2 * (1 + 0.75)
    assert lr_sum(1.0, True, 4, 2, 0.5, False) == 3.5
    assert lr_sum(1.0, False, 4, 2, 0.5, False) == 4.0  # 2 * (1 + 1)
    assert lr_sum(1.0, True, 4, 2, 0.5, True) == 5.0  # 2 * (1 + 0.75 + 0.5 + 0.25)
    assert lr_sum(1.0, False, 4, 2, 0.5, True) == 8.0
    # t_end = 0.6 takes in the update starting at 0.5: 2 * (1 + 0.75 + 0.5)
    assert lr_sum(1.0, True, 4, 2, 0.6, False) == 4.5
    # scales with the learning rate and the steps per update
    assert lr_sum(2.5e-4, True, 4, 16, 0.5, False) == pytest.approx(16 * 2.5e-4 * 1.75)
    # nothing regularised
    assert lr_sum(1.0, True, 4, 2, 0.0, False) == 0.0
    # one update: progress 0, full lr
    assert lr_sum(3e-4, True, 1, 5, 0.5, False) == pytest.approx(1.5e-3)


def test_lambda_per_step_in_both_units() -> None:
    assert lambda_per_step(4e-4, "step", 3.5) == 4e-4
    assert lambda_per_step(4e-4, "step", 0.0) == 4e-4
    assert lambda_per_step(4e-4, "dose", 3.5) == pytest.approx(4e-4 / 3.5, rel=1e-15)
    assert lambda_per_step(7.0, "dose", 3.5) == 2.0
    assert lambda_per_step(4e-4, "dose", 0.0) == 0.0  # nothing regularised: no lambda
    assert lambda_per_step(0.0, "dose", 3.5) == 0.0


def test_ramp_clock_holds_below_the_bar_and_at_most_the_lag() -> None:
    from dsp_driving.pruning.schedule import RampClock

    clock = RampClock(guard=0.9, max_lag=0.2, t_start=0.1, t_end=0.6)
    ends = [0.05 * k for k in range(21)]  # updates of 0.05 progress each

    def update(k: int, ret: float | None) -> bool:  # the update ending at ends[k]
        return clock.advance(ends[k - 1], ends[k], ret)

    assert not update(1, 10.0) and not update(2, 10.0)  # before t_start: never held
    assert clock.best is None and clock.clock(0.1) == 0.1
    assert not update(3, 100.0)  # the best so far
    assert update(4, 89.0)  # below 0.9 x 100: the ramp stands still
    assert clock.clock(0.2) == pytest.approx(0.15)
    assert not update(5, 91.0)  # above the bar again
    assert all(update(k, 50.0) for k in (6, 7, 8))  # three more holds reach the lag
    assert clock.held == pytest.approx(0.2) and clock.holds == 4
    assert not update(9, 50.0)  # the lag is spent: the ramp moves on
    assert clock.clock(1.0) == pytest.approx(0.8)
    assert not update(10, None)  # no episode finished: nothing to judge


def test_ramp_clock_never_runs_backwards_or_holds_past_t_end() -> None:
    from dsp_driving.pruning.schedule import RampClock

    # updates on a grid other than the starting progress's (total_steps not a multiple of
    # the batch): a held update holds exactly the progress since the previous one
    clock = RampClock(guard=1.0, max_lag=0.5, t_start=0.0, t_end=0.3)
    clock.advance(0.0, 0.3, 100.0)
    times = [clock.clock(0.3)]
    for p0, p1 in ((0.25, 0.6), (0.5, 0.9), (0.75, 1.0)):
        clock.advance(p0, p1, 0.0)  # always below the bar
        times.append(clock.clock(p1))
    assert times == sorted(times)
    # the clock reached t_end at the first update: nothing is held after it
    assert clock.holds == 0 and times[-1] == 1.0


def test_ramp_clock_with_negative_returns_and_off() -> None:
    from dsp_driving.pruning.schedule import RampClock

    clock = RampClock(guard=0.9, max_lag=0.5, t_start=0.0, t_end=0.9)
    clock.advance(0.0, 0.1, -100.0)  # best -100: the bar is -110
    assert not clock.advance(0.1, 0.2, -105.0)
    assert clock.advance(0.2, 0.3, -120.0)
    off = RampClock(guard=0.0, max_lag=0.5, t_start=0.0, t_end=0.9)
    assert not any(off.advance(0.1 * k, 0.1 * (k + 1), -1e9) for k in range(5))
    assert off.clock(0.7) == 0.7
    again = RampClock(guard=0.9, max_lag=0.5, t_start=0.0, t_end=0.9)
    again.load_state_dict(clock.state_dict())
    assert again.state_dict() == clock.state_dict()
    fresh = RampClock(guard=0.9, max_lag=0.5, t_start=0.0, t_end=0.9)
    fresh.load_state_dict(None)  # a checkpoint from before the guard: nothing held
    assert (fresh.held, fresh.best, fresh.holds) == (0.0, None, 0)
