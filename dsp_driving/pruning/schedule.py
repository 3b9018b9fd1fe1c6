"""Dynamic pruning schedules: the cubic threshold ramp and the cubic ratio ramp."""

from __future__ import annotations


def _ramp(t: float, t_start: float, t_end: float) -> float:
    """Cubic ramp 1 - (1 - u)^3 of u = (t - t_start) / (t_end - t_start), held in [0, 1]."""
    if t <= t_start:
        return 0.0
    if t >= t_end:
        return 1.0
    u = (t - t_start) / (t_end - t_start)
    return 1.0 - (1.0 - u) ** 3


def kappa(t: float, kappa_final: float, t_start: float, t_end: float) -> float:
    """Threshold multiplier kappa(t) (Zhu & Gupta 2017 cubic schedule, docs/method.md)."""
    return kappa_final * _ramp(t, t_start, t_end)


def prune_ratio(t: float, ratio_initial: float, ratio_final: float, t_start: float,
                t_end: float) -> float:
    """Target pruned fraction p(t) for ``mode: ratio``: p_i to p_f along the cubic ramp."""
    return ratio_initial + (ratio_final - ratio_initial) * _ramp(t, t_start, t_end)
