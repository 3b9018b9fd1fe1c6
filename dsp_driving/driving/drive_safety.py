"""Safety and comfort figures of a drive, control step by control step (issue #19).

One :class:`DriveSafety` per command stream, two callers that read the same
:meth:`DriveSafety.figures`: ``controller.PolicyController`` feeds it every command it makes
(policy_node's status: the last STATUS_WINDOW_S), and ``analysis/drive_report.py`` replays a
drive bag's inputs and actions into one (the bag report: the whole drive). So the status and
the report give the same figures for the same stream.

A control step k is one command sent at t_k, with the observation it was decided from: the
newest accepted observation when it was fresh (the controller's watchdog), else none.

- Speed, TTC and time headway: :func:`dsp_driving.driving.safety.lead_measures` of that
  observation (``safety``'s module doc defines them: TTC = gap / closing speed where a lead
  is seen and closing, time headway = gap / speed), with the ego speed of the input (the
  odometry's in ros mode, else the observation's ``speed`` feature). A step without an
  observation (none yet, stale, refused), or whose observation ``lead_measures`` refuses
  (non-finite, wrong size), has none of these and is left out of them, the denominator of
  ``ttc_below_pct`` included.
- Commanded longitudinal jerk j_k = (a_k - a_{k-1}) / T and steering rate r_k = (delta_k -
  delta_{k-1}) / T, from the physical commands (m/s^2; road-wheel rad), T the control period
  1 / rate_hz (the node's nominal period, not the measured one). Every command sent counts,
  safe commands included; the first command of a stream has neither.

Figures (:class:`DriveFigures`; None where undefined): the newest step's speed, TTC and
headway; over the steps: min and 5th percentile (linear) of TTC, the % of observed steps with
TTC < ``safety.TTC_THRESHOLD_S``, min and median headway, mean speed, p95 and max of |jerk|
and |steering rate|.

The lead measures are computed when the figures are asked for (once per step, cached), not in
:meth:`DriveSafety.step`: a command costs an append, not a ``lead_measures`` call.
"""

from __future__ import annotations

from collections import deque
import dataclasses
import math
from typing import Any, NamedTuple

import numpy as np

from dsp_driving.driving import safety

STATUS_WINDOW_S = 10.0  # policy_node's status: figures over the last this many seconds
MAX_WINDOW_STEPS = 10_000  # a window never holds more (a clock that stands still; 10 s at 1 kHz)
TTC_THRESHOLD_S = safety.TTC_THRESHOLD_S


class DriveStep(NamedTuple):
    """One control step's values (nan: undefined, or no observation)."""

    t_s: float
    observed: bool  # decided from a valid, fresh observation
    has_lead: bool
    speed_mps: float
    ttc_s: float
    headway_s: float
    jerk_mps3: float  # commanded longitudinal jerk
    steer_rate_rps: float  # commanded road-wheel steering rate


class _Pending(NamedTuple):
    t_s: float
    obs: Any
    speed_mps: float | None
    jerk_mps3: float
    steer_rate_rps: float


@dataclasses.dataclass(frozen=True)
class DriveFigures:
    """The figures over a window of control steps (SI units; None: undefined)."""

    window_s: float | None  # None: since the start
    control_period_s: float  # T of the jerk and steering rate
    control_steps: int  # commands in the window
    observed_steps: int  # of which decided from a valid, fresh observation
    lead_steps: int  # of which with a lead seen
    bad_observations: int  # observations lead_measures refused (left out)
    speed_mps: float | None  # the newest step's
    ttc_s: float | None  # the newest step's (None: no lead, not closing, or no observation)
    headway_s: float | None  # the newest step's
    min_ttc_s: float | None
    ttc_p5_s: float | None
    ttc_below_pct: float | None  # % of observed steps with TTC < TTC_THRESHOLD_S
    min_headway_s: float | None
    median_headway_s: float | None
    mean_speed_mps: float | None
    jerk_p95_mps3: float | None  # |commanded longitudinal jerk|
    jerk_max_mps3: float | None
    steer_rate_p95_rps: float | None  # |commanded steering rate|
    steer_rate_max_rps: float | None

    def as_dict(self) -> dict[str, Any]:
        """The figures as a plain dict (strict JSON: None where undefined)."""
        return dataclasses.asdict(self)


FIGURE_KEYS = tuple(f.name for f in dataclasses.fields(DriveFigures))


class DriveSafety:
    """The control steps of one command stream and their figures (module doc).

    ``window_s``: keep the steps of the last ``window_s`` seconds (by their times; a time
    that goes back, a simulator reset, starts the window anew); None keeps every step.
    Never raises on what a step is given.
    """

    def __init__(self, control_period_s: float, window_s: float | None = STATUS_WINDOW_S
                 ) -> None:
        if not (isinstance(control_period_s, (int, float)) and math.isfinite(control_period_s)
                and control_period_s > 0):
            raise ValueError(f"control_period_s={control_period_s!r}: must be a finite "
                             "number > 0")
        if window_s is not None and not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s={window_s!r}: must be a finite number > 0, or None")
        self.control_period_s, self.window_s = float(control_period_s), window_s
        limit = MAX_WINDOW_STEPS if window_s is not None else None
        self._pending: deque[_Pending] = deque(maxlen=limit)
        self._steps: deque[DriveStep] = deque(maxlen=limit)
        self._bad: deque[float] = deque(maxlen=limit)  # times of refused observations
        self._last_t = -math.inf
        self._last_command: tuple[float, float] | None = None  # (steer rad, accel m/s^2)

    def step(self, t_s: float, steer_rad: float, accel_mps2: float, obs: Any = None,
             speed_mps: float | None = None) -> None:
        """Add one command sent at ``t_s`` (physical values) and the observation it was
        decided from (None: none fresh), with the ego speed where known better than the
        observation's (``obs`` is kept, not copied: it must not change afterwards)."""
        try:
            t = float(t_s)
            steer, accel = float(steer_rad), float(accel_mps2)
        except (TypeError, ValueError):
            return
        if not math.isfinite(t):
            t = self._last_t if math.isfinite(self._last_t) else 0.0
        if self.window_s is not None and t < self._last_t:  # the clock went back
            self._pending.clear()
            self._steps.clear()
            self._bad.clear()
        self._last_t = t
        jerk = rate = math.nan
        if self._last_command is not None:
            jerk = (accel - self._last_command[1]) / self.control_period_s
            rate = (steer - self._last_command[0]) / self.control_period_s
        self._last_command = (steer, accel)
        self._pending.append(_Pending(t, obs, speed_mps, jerk, rate))
        self._trim()

    def _trim(self) -> None:
        if self.window_s is None:
            return
        oldest = self._last_t - self.window_s
        for queue in (self._steps, self._pending):
            while queue and queue[0].t_s <= oldest:
                queue.popleft()
        while self._bad and self._bad[0] <= oldest:
            self._bad.popleft()

    def _measure(self) -> None:
        """Turn the pending steps into DriveSteps (lead_measures once per step)."""
        while self._pending:
            p = self._pending.popleft()
            lead = None
            if p.obs is not None:
                try:
                    speed = None if p.speed_mps is None else float(p.speed_mps)
                    if speed is not None and not math.isfinite(speed):
                        raise ValueError(f"speed_mps={speed!r}")
                    lead = safety.lead_measures(p.obs, speed)
                except (TypeError, ValueError):
                    self._bad.append(p.t_s)
            if lead is None:
                self._steps.append(DriveStep(p.t_s, False, False, math.nan, math.nan, math.nan,
                                             p.jerk_mps3, p.steer_rate_rps))
            else:
                self._steps.append(DriveStep(p.t_s, True, lead.has_lead, lead.speed_mps,
                                             lead.ttc_s, lead.headway_s, p.jerk_mps3,
                                             p.steer_rate_rps))

    def steps(self) -> list[DriveStep]:
        """The steps in the window, oldest first."""
        self._measure()
        return list(self._steps)

    def series(self) -> dict[str, np.ndarray]:
        """The window's steps as arrays (one per DriveStep field), for plots and CSVs."""
        steps = self.steps()
        return {name: np.array([s[i] for s in steps],
                               dtype=bool if name in ("observed", "has_lead") else np.float64)
                for i, name in enumerate(DriveStep._fields)}

    def figures(self) -> DriveFigures:
        """The figures over the window (module doc)."""
        s = self.series()
        observed = s["observed"]
        speed = s["speed_mps"][observed]
        ttc = s["ttc_s"][np.isfinite(s["ttc_s"])]
        headway = s["headway_s"][np.isfinite(s["headway_s"])]
        jerk = np.abs(s["jerk_mps3"][np.isfinite(s["jerk_mps3"])])
        rate = np.abs(s["steer_rate_rps"][np.isfinite(s["steer_rate_rps"])])
        newest = observed.size > 0 and bool(observed[-1])
        n_obs = int(observed.sum())
        return DriveFigures(
            window_s=self.window_s, control_period_s=self.control_period_s,
            control_steps=int(observed.size), observed_steps=n_obs,
            lead_steps=int(s["has_lead"].sum()), bad_observations=len(self._bad),
            speed_mps=_value(s["speed_mps"][-1]) if newest else None,
            ttc_s=_value(s["ttc_s"][-1]) if newest else None,
            headway_s=_value(s["headway_s"][-1]) if newest else None,
            min_ttc_s=_stat(np.min, ttc), ttc_p5_s=_percentile(ttc, 5),
            ttc_below_pct=100.0 * int(np.count_nonzero(ttc < TTC_THRESHOLD_S)) / n_obs
            if n_obs else None,
            min_headway_s=_stat(np.min, headway), median_headway_s=_percentile(headway, 50),
            mean_speed_mps=_stat(np.mean, speed),
            jerk_p95_mps3=_percentile(jerk, 95), jerk_max_mps3=_stat(np.max, jerk),
            steer_rate_p95_rps=_percentile(rate, 95), steer_rate_max_rps=_stat(np.max, rate))


def _value(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _stat(fn: Any, values: np.ndarray) -> float | None:
    return float(fn(values)) if values.size else None


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if values.size else None
