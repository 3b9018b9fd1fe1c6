"""The percentile-bootstrap helper (dsp_driving.intervals): against the normal approximation
on a large sample, reproducibility, paired samples, degenerate data, bad input."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest

pytest.importorskip("scipy")

from dsp_driving.intervals import percentile_bootstrap  # noqa: E402

SETTINGS = {"n_resamples": 10_000, "confidence": 0.95, "seed": 0}


def ratio_of_sums(c: np.ndarray, d: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.sum(c, axis=axis) / np.sum(d, axis=axis)


def test_the_interval_of_a_mean_matches_the_normal_approximation() -> None:
    # 1..100: mean 50.5, population sd 28.866; the bootstrap distribution of the mean is
    # close to normal with sd 2.887 -> 50.5 +- 5.658 (Monte Carlo error of the ends ~0.1)
    x = np.arange(1.0, 101.0)
    low, high = percentile_bootstrap((x,), np.mean, **SETTINGS)
    half = 1.959964 * x.std() / np.sqrt(x.size)
    assert low == pytest.approx(50.5 - half, abs=0.3)
    assert high == pytest.approx(50.5 + half, abs=0.3)
    assert isinstance(low, float) and isinstance(high, float)


def test_a_known_sample_contains_its_mean_and_the_same_seed_gives_the_same_interval() -> None:
    x = np.random.default_rng(7).normal(10.0, 2.0, size=20)
    ci = percentile_bootstrap((x,), np.mean, **SETTINGS)
    assert ci[0] < x.mean() < ci[1]
    assert x.min() <= ci[0] and ci[1] <= x.max()
    assert percentile_bootstrap((x,), np.mean, **SETTINGS) == ci
    assert percentile_bootstrap((x,), np.mean, **{**SETTINGS, "seed": 1}) != ci
    # a wider confidence level gives a wider interval from the same resamples
    wide = percentile_bootstrap((x,), np.mean, **{**SETTINGS, "confidence": 0.99})
    assert wide[0] < ci[0] and ci[1] < wide[1]


def test_paired_samples_are_resampled_together() -> None:
    num, den = np.array([3.0, 1.0, 2.0, 5.0]), np.array([4.0, 2.0, 3.0, 4.0])
    low, high = percentile_bootstrap((num, den), ratio_of_sums, **SETTINGS)
    # every resample's ratio lies between the smallest and the largest episode rate
    assert 0.5 <= low < 11 / 13 < high <= 1.25


def test_degenerate_data() -> None:
    assert percentile_bootstrap(([7.0],), np.mean, **SETTINGS) is None
    assert percentile_bootstrap(([],), np.mean, **SETTINGS) is None
    # one value repeated: every resample is the data; the mean of one observation (0.1,
    # not np.mean's 0.10000000000000002 of three)
    assert percentile_bootstrap(([0.1, 0.1, 0.1],), np.mean, **SETTINGS) == (0.1, 0.1)
    assert percentile_bootstrap(([2.0, 2.0], [4.0, 4.0]), ratio_of_sums,
                                **SETTINGS) == (0.5, 0.5)
    # a resample with a zero denominator: scipy's non-finite ends come back as they are
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's DegenerateDataWarning
        low, high = percentile_bootstrap(([1.0, 0.0, 0.0], [1.0, 0.0, 0.0]), ratio_of_sums,
                                         **{**SETTINGS, "n_resamples": 1000})
    assert np.isnan(low) and np.isnan(high)


def test_older_scipy_takes_random_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """scipy < 1.15's bootstrap has random_state= instead of rng=: the same draws."""
    from scipy import stats

    real = stats.bootstrap
    assert "rng" in inspect.signature(real).parameters
    seen = []

    def old_bootstrap(data, statistic, *, n_resamples, confidence_level, method, paired,
                      vectorized, random_state):
        seen.append(random_state)
        return real(data, statistic, n_resamples=n_resamples,
                    confidence_level=confidence_level, method=method, paired=paired,
                    vectorized=vectorized, rng=random_state)

    x = np.random.default_rng(3).normal(size=12)
    expected = percentile_bootstrap((x,), np.mean, **SETTINGS)
    monkeypatch.setattr(stats, "bootstrap", old_bootstrap)
    assert percentile_bootstrap((x,), np.mean, **SETTINGS) == expected
    assert len(seen) == 1 and isinstance(seen[0], np.random.Generator)


def test_bad_samples_raise_value_error() -> None:
    with pytest.raises(ValueError, match=r"samples=\(\)"):
        percentile_bootstrap((), np.mean, **SETTINGS)
    with pytest.raises(ValueError, match=r"sample shapes \[\(3,\), \(2,\)\]"):
        percentile_bootstrap(([1.0, 2.0, 3.0], [1.0, 2.0]), ratio_of_sums, **SETTINGS)
    with pytest.raises(ValueError, match=r"sample shapes \[\(2, 2\)\]"):
        percentile_bootstrap((np.ones((2, 2)),), np.mean, **SETTINGS)
