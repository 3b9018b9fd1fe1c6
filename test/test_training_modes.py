"""Training options end to end: async vector envs, reward normalisation, TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dsp_driving.rl.normalization import RewardScaler
from dsp_driving.trainer import train


def _quiet(*_args: object) -> None:
    pass


def test_async_vector_env_run(tmp_path: Path, tiny_config) -> None:
    cfg = tiny_config(train={"vector_mode": "async", "num_envs": 2, "total_steps": 1024})
    summary = train(cfg, tmp_path / "async")
    assert summary["total_steps"] == 1024
    lines = (tmp_path / "async" / "stats.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [256, 512, 768, 1024]


def test_reward_normalisation_run_has_finite_losses(tmp_path: Path, tiny_config) -> None:
    cfg = tiny_config(ppo={"norm_reward": True}, train={"total_steps": 1024})
    train(cfg, tmp_path / "rn")
    records = [json.loads(x) for x in (tmp_path / "rn" / "stats.jsonl").read_text().splitlines()]
    values = [r["losses"]["value"] for r in records]
    assert len(values) == 2 and all(np.isfinite(values))


def test_reward_scaler_divides_by_return_std_and_clips() -> None:
    scaler = RewardScaler(num_envs=1, gamma=0.0, clip=5.0, epsilon=0.0)
    # gamma 0: the tracked "return" is the reward itself
    rewards = [np.array([v]) for v in (2.0, 4.0, 6.0)]
    outs = [scaler(r, np.array([False]))[0] for r in rewards]
    history = np.array([2.0, 4.0, 6.0])
    var = np.var(history)  # the 1e-4 prior count is negligible
    assert outs[-1] == pytest.approx(6.0 / np.sqrt(var), rel=1e-3)
    for i in range(200):  # a long run of rewards near 1, then an outlier
        scaler(np.array([1.0 + 0.01 * (i % 2)]), np.array([False]))
    assert scaler(np.array([10.0]), np.array([False]))[0] == 5.0


def test_tensorboard_scalars_are_written(tmp_path: Path, tiny_config) -> None:
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator")
    cfg = tiny_config(train={"tensorboard": True, "total_steps": 1024})
    train(cfg, tmp_path / "tb")
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tb" / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"actor/neurons_alive", "critic/weights_alive", "losses/policy",
            "charts/kappa", "charts/steps_per_s", "actor/layers0/alive"} <= tags
    assert [e.step for e in acc.Scalars("actor/neurons_alive")] == [512, 1024]


def test_the_return_guard_holds_the_ramp_and_still_reaches_the_final_size(
        tmp_path: Path, tiny_config) -> None:
    """guard 1.0 holds every update whose mean return is below its best since t_start (and
    prunes nothing in it); the ramp still ends in time, at the unguarded run's size, also
    with prune_every 2 and a budget that is not a multiple of the batch."""
    from dsp_driving.config import from_dict
    from dsp_driving.trainer import Runner

    sizes, kappas, alive = {}, {}, {}
    for guard in (0.0, 1.0):
        cfg = tiny_config(net={"actor_hidden": [32, 32]},
                          pruning={"guard": guard, "guard_max_lag": 0.3, "mode": "ratio",
                                   "ratio_final": 0.75, "max_prune_frac": 0.5,
                                   "t_start": 0.1, "t_end": 0.5, "prune_every": 2},
                          train={"total_steps": 9000})  # batch 512: 18 updates, 9216 steps
        runner = Runner.new(cfg, tmp_path / f"g{guard}", progress=False)
        summary = runner.learn()
        sizes[guard] = summary["actor"]["hidden_compact"]
        records = [json.loads(x) for x in
                   (tmp_path / f"g{guard}" / "stats.jsonl").read_text().splitlines()]
        kappas[guard] = [r["kappa"] for r in records]
        alive[guard] = [r["actor"]["neurons_alive"] for r in records]
        clock = runner.learner.pruner.clock
        if guard:
            assert 0 < clock.held <= 0.3 + 1e-9 and clock.holds >= 1
        else:
            assert clock.held == 0.0 and clock.holds == 0
    assert sizes[0.0] == [8, 8]  # 25 % of 32 each: above the min_alive floor
    assert sizes[1.0] == sizes[0.0]  # the size is still reached
    assert kappas[1.0][-1] == kappas[0.0][-1] == 1.0  # the ramp ended (kappa_final)
    # held updates: the guarded ramp is behind (kappa lower, more neurons) somewhere, never
    # ahead
    assert all(g <= u + 1e-12 for g, u in zip(kappas[1.0], kappas[0.0]))
    assert any(g < u for g, u in zip(kappas[1.0], kappas[0.0]))
    assert all(g >= u for g, u in zip(alive[1.0], alive[0.0]))
    with pytest.raises(ValueError, match="pruning.guard_max_lag"):
        from_dict({"pruning": {"t_end": 0.8, "guard": 0.9, "guard_max_lag": 0.2}})
    assert from_dict({"pruning": {"t_end": 0.9}}).pruning.guard == 0.0  # off: no constraint
    with pytest.raises(ValueError, match="pruning.guard"):
        from_dict({"pruning": {"guard": 1.5}})
