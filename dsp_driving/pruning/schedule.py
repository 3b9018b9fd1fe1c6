"""Dynamic pruning schedules: the cubic threshold ramp and the cubic ratio ramp."""

from __future__ import annotations

from typing import Any


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


class RampClock:
    """The training progress the pruning ramp reads, held back by the return guard.

    clock(progress) = progress - held. Before t_start, and once the clock has reached
    t_end, nothing is held. In between, an update that ends at progress p1 with a mean
    training return below the guard's bar adds p1 minus the previous update's end to
    ``held`` (the ramp stands still through it, and the pruning step skips it), as long as
    ``held`` stays within ``max_lag``; the bar is ``guard`` x the best mean return seen since
    t_start (best - (1 - guard) x |best| for a negative best). ``guard`` 0 never holds.
    """

    def __init__(self, guard: float, max_lag: float, t_start: float, t_end: float) -> None:
        self.guard, self.max_lag = guard, max_lag
        self.t_start, self.t_end = t_start, t_end
        self.held = 0.0
        self.best: float | None = None
        self.holds = 0  # updates held, over the run
        self.last = 0.0  # the progress at the end of the previous update

    def clock(self, progress: float) -> float:
        """The ramp's time at training progress ``progress``."""
        return max(0.0, progress - self.held)

    def advance(self, p0: float, p1: float, recent_return: float | None) -> bool:
        """Account the update that started at progress p0 and ended at p1 with mean training
        return ``recent_return`` (None: no episode yet); whether it was held."""
        step, self.last = p1 - self.last, p1
        if self.guard <= 0 or p0 < self.t_start or recent_return is None \
                or self.clock(p1) >= self.t_end:
            return False
        self.best = recent_return if self.best is None else max(self.best, recent_return)
        bar = self.best - (1.0 - self.guard) * abs(self.best)
        if recent_return < bar and 0 < step and self.held + step <= self.max_lag + 1e-12:
            self.held += step
            self.holds += 1
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"held": self.held, "best": self.best, "holds": self.holds, "last": self.last}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state:  # checkpoints from before the guard hold nothing
            self.held, self.best = float(state["held"]), state["best"]
            self.holds, self.last = int(state["holds"]), float(state.get("last", 0.0))
