"""The safety summary over episodes: the evaluation's safety block (issue #19).

:func:`summarise` turns ``safety.EpisodeSafety`` records (per-episode figures, defined in
``safety``'s module doc) into SUMMARY_KEYS, each figure with a ``<key>_ci95`` [low, high]
interval (None with fewer than two values; [x, x] when all values are equal) and
``ci95_method``: "percentile_bootstrap" (``intervals.percentile_bootstrap``:
scipy.stats.bootstrap, BOOTSTRAP_RESAMPLES resamples, fixed RNG; the default when scipy
imports) or "normal_approximation" (mean +- 1.96 s / sqrt(n); the order-statistic interval
for the 5th percentile; the delta method for collisions_per_km). Pure numpy; scipy only for
the bootstrap, imported when used.

- return_mean, route_completion, driving_score, mean_speed_mps: means of the episode values.
- collision_rate / offroad_rate: fraction of episodes with a collision / off-road infraction;
  their interval is the Wilson score interval (``intervals.wilson``) whatever ``ci95_method``
  says, because a bootstrap of zero events is [0, 0] (0 of 100 episodes: [0, 0.037]).
- collisions_per_km: all collision infractions / (total distance_m / 1000); None when the
  episodes drove no distance at all (a rate per zero km is undefined, and None keeps the
  summary strict JSON, unlike inf). With no collision at all its interval is [0, the exact
  Poisson bound 3.689 / km driven]; otherwise the ratio's bootstrap (or delta method).
- min_ttc_p5_s: 5th percentile (linear) over episodes of each episode's minimum TTC;
  episodes in which TTC was never defined (no lead, or never closing on one) are excluded
  (so the figure describes the episodes that had a conflict); None when none had one.
- ttc_below_1_5s_pct: mean over episodes of the % of steps with TTC < safety.TTC_THRESHOLD_S.
- jerk_p95 / lateral_accel_p95: mean over episodes of each episode's 95th percentile of
  |jerk| (m/s^3) / |lateral acceleration| (m/s^2); episodes without a value are excluded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import math
from typing import Any

import numpy as np

from dsp_driving.driving.safety import EpisodeSafety
from dsp_driving.intervals import percentile_bootstrap, poisson_upper_at_zero, wilson

SUMMARY_KEYS = ("episodes", "return_mean", "collision_rate", "collisions_per_km",
                "offroad_rate", "route_completion", "driving_score", "min_ttc_p5_s",
                "ttc_below_1_5s_pct", "jerk_p95", "lateral_accel_p95", "mean_speed_mps")
CI_KEYS = tuple(f"{key}_ci95" for key in SUMMARY_KEYS if key != "episodes")
CI_METHOD_KEY = "ci95_method"
BOOTSTRAP = "percentile_bootstrap"
NORMAL = "normal_approximation"
BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95
RATE_KEYS = ("collision_rate", "offroad_rate")  # fractions of episodes: Wilson intervals
_Z95 = 1.959963984540054


def _bad(field: str, value: Any, why: str) -> ValueError:
    return ValueError(f"{field}={value!r}: {why}")


def summarise(episodes: Sequence[EpisodeSafety], ci_method: str = "auto",
              n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """The safety summary over episodes: SUMMARY_KEYS, a CI_KEYS interval for each figure
    and ``ci95_method`` (module doc). ``ci_method``: "auto" (bootstrap when scipy imports),
    "bootstrap" or "normal"."""
    episodes = list(episodes)
    if not episodes:
        raise _bad("episodes", episodes, "need at least one EpisodeSafety")
    for i, e in enumerate(episodes):
        if not isinstance(e, EpisodeSafety):
            raise _bad(f"episodes[{i}]", type(e).__name__, "must be an EpisodeSafety")
    if ci_method not in ("auto", "bootstrap", "normal"):
        raise _bad("ci_method", ci_method, "expected 'auto', 'bootstrap' or 'normal'")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 100:
        raise _bad("n_resamples", n_resamples, "must be an int >= 100")
    bootstrap = ci_method != "normal"
    if bootstrap:
        try:
            import scipy.stats  # noqa: F401 (the bootstrap's: "auto" goes on without it)
        except ModuleNotFoundError:
            if ci_method == "bootstrap":
                raise
            bootstrap = False
    ci = _Intervals(bootstrap, n_resamples, seed)

    def column(get: Callable[[EpisodeSafety], Any]) -> np.ndarray:
        return np.asarray([x for x in map(get, episodes) if x is not None], dtype=np.float64)

    values: dict[str, Any] = {"episodes": len(episodes)}
    intervals: dict[str, Any] = {}
    means = {
        "return_mean": column(lambda e: e.episode_return),
        "collision_rate": column(lambda e: float(e.collisions > 0)),
        "offroad_rate": column(lambda e: float(e.off_road)),
        "route_completion": column(lambda e: e.route_completion),
        "driving_score": column(lambda e: e.driving_score),
        "ttc_below_1_5s_pct": 100.0 * column(lambda e: e.ttc_below_frac),
        "jerk_p95": column(lambda e: e.p95_abs_jerk_mps3),
        "lateral_accel_p95": column(lambda e: e.p95_abs_lateral_accel_mps2),
        "mean_speed_mps": column(lambda e: e.mean_speed_mps),
    }
    for key, x in means.items():
        values[key] = float(np.mean(x)) if x.size else None
        intervals[key] = ci.mean(x)
    for key in RATE_KEYS:  # episode counts: Wilson, never [0, 0] at zero events
        x = means[key]
        intervals[key] = list(wilson(int(x.sum()), x.size, CONFIDENCE))
    collisions = column(lambda e: e.collisions)
    distance_km = column(lambda e: e.distance_m) / 1000.0
    total_km = float(distance_km.sum())
    values["collisions_per_km"] = float(collisions.sum() / total_km) if total_km > 0 else None
    if total_km <= 0:
        intervals["collisions_per_km"] = None
    elif collisions.sum() == 0:
        intervals["collisions_per_km"] = [0.0, poisson_upper_at_zero(CONFIDENCE) / total_km]
    else:
        intervals["collisions_per_km"] = ci.ratio(collisions, distance_km)
    ttc = column(lambda e: e.min_ttc_s)
    values["min_ttc_p5_s"] = float(np.percentile(ttc, 5)) if ttc.size else None
    intervals["min_ttc_p5_s"] = ci.p5(ttc)
    out: dict[str, Any] = {key: values[key] for key in SUMMARY_KEYS}
    out.update({f"{key}_ci95": intervals[key] for key in SUMMARY_KEYS[1:]})
    out[CI_METHOD_KEY] = BOOTSTRAP if bootstrap else NORMAL
    return out


class _Intervals:
    """95 % intervals of a mean, a 5th percentile and a ratio of sums, over episodes."""

    def __init__(self, bootstrap: bool, n_resamples: int, seed: int) -> None:
        self.bootstrap, self.n_resamples, self.seed = bootstrap, n_resamples, seed

    def _bootstrap(self, data: tuple[np.ndarray, ...], statistic: Callable[..., Any]
                   ) -> list[float] | None:
        ends = percentile_bootstrap(data, statistic, n_resamples=self.n_resamples,
                                    confidence=CONFIDENCE, seed=self.seed)
        return None if ends is None else _pair(*ends)

    @staticmethod
    def _degenerate(x: np.ndarray) -> tuple[bool, list[float] | None]:
        """(True, the interval) when x alone fixes it: None below two values, [x, x] when
        every value is the same; else (False, None)."""
        if x.size < 2:
            return True, None
        if np.all(x == x[0]):
            return True, [float(x[0]), float(x[0])]
        return False, None

    def mean(self, x: np.ndarray) -> list[float] | None:
        fixed, interval = self._degenerate(x)
        if fixed:
            return interval
        if self.bootstrap:
            return self._bootstrap((x,), np.mean)
        half = _Z95 * float(np.std(x, ddof=1)) / math.sqrt(x.size)
        return _pair(x.mean() - half, x.mean() + half)

    def p5(self, x: np.ndarray) -> list[float] | None:
        fixed, interval = self._degenerate(x)
        if fixed:
            return interval
        if self.bootstrap:
            return self._bootstrap(
                (x,), lambda s, axis=-1: np.percentile(s, 5, axis=axis))
        # order statistics around rank n p (normal approximation of the binomial)
        n, p, point = x.size, 0.05, float(np.percentile(x, 5))
        spread = _Z95 * math.sqrt(n * p * (1 - p))
        s = np.sort(x)
        lo = s[min(max(math.floor(n * p - spread), 1), n) - 1]
        hi = s[min(max(math.ceil(n * p + spread), 1), n) - 1]
        return _pair(min(lo, point), max(hi, point))

    def ratio(self, num: np.ndarray, den: np.ndarray) -> list[float] | None:
        if num.size < 2:
            return None
        r = float(num.sum() / den.sum())
        if np.all(num * den.sum() == den * num.sum()):  # every episode has the same rate
            return [r, r]
        if self.bootstrap:
            return self._bootstrap(
                (num, den),
                lambda c, d, axis=-1: np.sum(c, axis=axis) / np.sum(d, axis=axis))
        n, resid = num.size, num - r * den  # delta method for a ratio of sums
        se = math.sqrt(n / (n - 1) * float(np.sum(resid ** 2))) / float(den.sum())
        return _pair(max(r - _Z95 * se, 0.0), r + _Z95 * se)


def _pair(low: Any, high: Any) -> list[float] | None:
    low, high = float(low), float(high)
    return [low, high] if math.isfinite(low) and math.isfinite(high) else None
