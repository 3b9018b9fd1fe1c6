"""Confidence intervals: the one percentile-bootstrap wrapper around ``scipy.stats.bootstrap``
that the sweep table (experiments/table.py) and the safety summary
(driving/safety_summary.py) share, and the closed-form intervals of rare-event rates
(Wilson for a proportion, the exact Poisson bound at zero events).

The percentile interval (Efron and Tibshirani 1993, *An Introduction to the Bootstrap*,
ch. 13): the statistic over ``n_resamples`` resamples drawn with replacement by a fixed RNG,
and the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of those values. Pure numpy;
scipy is imported when an interval is computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import inspect
import math
from typing import Any

import numpy as np


def percentile_bootstrap(samples: Sequence[Any], statistic: Callable[..., Any], *,
                         n_resamples: int, confidence: float, seed: int
                         ) -> tuple[float, float] | None:
    """The percentile-bootstrap interval (low, high) of ``statistic`` over ``samples``.

    ``samples``: one or more 1-D samples of the same length; more than one are resampled
    together (paired: the same draws of each). ``statistic(*samples, axis=-1)`` must be
    vectorised, as ``np.mean`` is. ``seed`` fixes the RNG: the same seed, the same interval.

    Degenerate data: None with fewer than two values; when every sample holds one value
    repeated, every resample is the data itself and the interval is the statistic of one
    observation, (v, v) (for a mean or a percentile: that value). Otherwise scipy's ends, as
    floats; they may be non-finite (a ratio whose resample has a zero denominator).
    """
    from scipy import stats

    data = tuple(np.asarray(s, dtype=np.float64) for s in samples)
    if not data:
        raise ValueError("percentile_bootstrap: samples=(): need at least one sample")
    sizes = [x.shape for x in data]
    if any(len(shape) != 1 for shape in sizes) or len(set(sizes)) != 1:
        raise ValueError(f"percentile_bootstrap: sample shapes {sizes}: need 1-D samples of "
                         "the same length")
    if data[0].size < 2:
        return None
    if all(np.all(x == x[0]) for x in data):
        value = float(statistic(*(x[:1] for x in data), axis=-1))
        return value, value
    kwargs = {"confidence_level": confidence, "n_resamples": n_resamples,
              "method": "percentile", "paired": len(data) > 1, "vectorized": True}
    # scipy >= 1.15 takes rng=, older versions random_state=
    name = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    kwargs[name] = np.random.default_rng(seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        res = stats.bootstrap(data, statistic, **kwargs)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion ``successes / n`` (n >= 1): unlike
    the bootstrap or the normal approximation it is never [0, 0] at zero events (0 of 100:
    [0, 0.037]), which is what a rate held to a small target needs."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"wilson: successes={successes!r}, n={n!r}: need 0 <= successes <= n"
                         ", n >= 1")
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def poisson_upper_at_zero(confidence: float = 0.95) -> float:
    """The exact (Garwood) upper bound of a Poisson mean when no event was seen: -ln(alpha/2)
    (3.689 at 95 %), per unit of exposure."""
    return -math.log((1 - confidence) / 2)
