"""The cubic threshold and ratio schedules at hand-computed points."""

from __future__ import annotations

import pytest

from dsp_driving.pruning import kappa, prune_ratio

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
