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


def regularised(progress: float, t_end: float, after_ramp: bool) -> bool:
    """Whether the regulariser acts in an update that starts at training progress
    ``progress``: always with ``after_ramp``, else only before the ramp ends (t_end)."""
    return after_ramp or progress < t_end


def lr_sum(learning_rate: float, anneal: bool, num_updates: int, steps_per_update: int,
           t_end: float, after_ramp: bool) -> float:
    """Sum of the learning rate over the gradient steps the regulariser acts on.

    Update u (1-based) starts at progress (u - 1) / num_updates, runs ``steps_per_update``
    gradient steps at lr_u = learning_rate * (1 - (u - 1) / num_updates) (annealed, as
    PPO.step_update sets it) or learning_rate, and is regularised per ``regularised``.
    """
    total = 0.0
    for u in range(num_updates):
        start = u / num_updates
        if regularised(start, t_end, after_ramp):
            total += learning_rate * ((1.0 - start) if anneal else 1.0) * steps_per_update
    return total


def lambda_per_step(lam: float, units: str, lr_total: float) -> float:
    """The lambda applied per gradient step: ``lam`` as is (units "step") or the dose
    ``lam`` spread over ``lr_total``, the learning-rate sum of the regularised steps
    (units "dose"; 0 when nothing is regularised)."""
    if units == "step":
        return lam
    return lam / lr_total if lr_total > 0 else 0.0
