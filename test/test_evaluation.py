"""Deterministic evaluation over seeded episodes."""

from __future__ import annotations

import numpy as np
import pytest

from dsp_driving.evaluation import evaluate


def test_constant_policy_is_reproducible_and_counts_episodes() -> None:
    a = evaluate(lambda obs: 0, "CartPole-v1", 3, seed=123)
    b = evaluate(lambda obs: 0, "CartPole-v1", 3, seed=123)
    assert a == b
    assert a["episodes"] == 3 and len(a["returns"]) == 3
    assert a["seeds"] == [123, 125]
    assert a["return_mean"] == pytest.approx(np.mean(a["returns"]))
    assert a["length_mean"] == a["return_mean"]  # CartPole: reward 1 per step
    assert a["return_mean"] < 20  # always pushing left falls quickly


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="episodes=0"):
        evaluate(lambda obs: 0, "CartPole-v1", 0, seed=1)
    with pytest.raises(ValueError, match="unknown environment"):
        evaluate(lambda obs: 0, "NoSuchEnv-v0", 1, seed=1)


def test_visited_observations_chain_episodes_and_are_seeded() -> None:
    from dsp_driving.evaluation import visited_observations

    def push_right(obs: np.ndarray) -> int:
        return 1  # the pole falls within ~10 steps, so 60 observations chain episodes

    first = visited_observations(push_right, "CartPole-v1", 60, seed=3)
    again = visited_observations(push_right, "CartPole-v1", 60, seed=3)
    assert first.shape == (60, 4) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, visited_observations(push_right, "CartPole-v1", 60, seed=4))


def test_on_step_sees_every_step_and_each_episode_end() -> None:
    seen: list[bool] = []
    result = evaluate(lambda obs: 0, "CartPole-v1", episodes=3, seed=0,
                      on_step=lambda info, done: seen.append(done))
    assert len(seen) == round(result["length_mean"] * 3)
    assert sum(seen) == 3 and seen[-1]
