"""The typed per-update stats record (dsp_driving/stats.py) against what training writes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import NotRequired, get_origin, get_type_hints

import pytest

from dsp_driving.stats import (
    LayerStats,
    LearnStats,
    LossStats,
    NetworkStats,
    PrunerStats,
    UpdateStats,
    loss_lambda_R,
    network_R,
    removed_pct,
)


def test_stats_jsonl_records_have_exactly_the_typed_fields(cartpole_run: Path,
                                                           stats_reader) -> None:
    records = stats_reader(cartpole_run)
    assert records
    for rec in records:
        assert set(rec) == set(get_type_hints(UpdateStats))
        assert set(rec["losses"]) == set(get_type_hints(LossStats))
        for net in ("actor", "critic"):
            assert set(rec[net]) == set(get_type_hints(NetworkStats))
            for layer in rec[net]["layers"]:
                assert set(layer) == set(get_type_hints(LayerStats))
                assert 0 <= layer["alive"] <= layer["total"]
            assert rec[net]["R"] >= 0 and rec[net]["lam"] >= 0
        assert rec["losses"]["lambda_R"] >= 0


def test_removed_pct_and_the_readers_of_old_names() -> None:
    assert removed_pct(25, 100) == pytest.approx(75.0)
    assert removed_pct(100, 100) == 0.0
    assert math.isnan(removed_pct(0, 0))
    assert network_R({"R": 1.5}) == 1.5 and network_R({"regulariser": 2.0}) == 2.0
    assert loss_lambda_R({"lambda_R": 0.1}) == 0.1
    assert loss_lambda_R({"regulariser": 0.2}) == 0.2
    assert network_R({}) is None


def test_summary_json_has_exactly_the_typed_fields(cartpole_run: Path) -> None:
    import json

    from dsp_driving.stats import EvalSummary, NetworkSummary, RunSummary

    summary = json.loads((cartpole_run / "summary.json").read_text())
    # CartPole: no safety block and no selection, the NotRequired keys
    hints = get_type_hints(RunSummary, include_extras=True)
    optional = {k for k, v in hints.items() if get_origin(v) is NotRequired}
    assert optional == {"safety", "selection"}
    assert set(summary) == set(hints) - optional
    eval_hints = get_type_hints(EvalSummary, include_extras=True)
    assert set(summary["eval"]) == {k for k, v in eval_hints.items()
                                    if get_origin(v) is not NotRequired}
    for net in ("actor", "critic"):
        block = summary[net]
        assert set(block) == set(get_type_hints(NetworkSummary))
        assert block["neurons_removed_pct"] == pytest.approx(
            removed_pct(block["compact_neurons"], block["dense_neurons"]))


def test_each_producer_returns_exactly_its_typed_keys_in_order(tiny_config) -> None:
    """PPO.learn -> LearnStats, DynamicPruner.stats -> PrunerStats, PPO.step_update ->
    UpdateStats: the keys, in the declared order (stats.jsonl writes them in this order)."""
    import gymnasium as gym

    from dsp_driving.rl.ppo import PPO

    cfg = tiny_config(ppo={"num_steps": 32}, train={"num_envs": 2, "total_steps": 128})
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    try:
        ppo = PPO(cfg, envs)
        ppo.collect()
        learned = ppo.learn()
        ppo.pruner.step(1, 0.5, ppo.optimizer)
        pruned = ppo.pruner.stats()
        record = ppo.step_update()
    finally:
        envs.close()
    assert list(learned) == list(LearnStats.__annotations__)
    assert list(learned["losses"]) == list(LossStats.__annotations__)
    assert all(isinstance(v, float) for v in learned["losses"].values())
    assert list(pruned) == list(PrunerStats.__annotations__)
    for net in ("actor", "critic"):
        assert list(pruned[net]) == list(NetworkStats.__annotations__)
    assert list(record) == list(UpdateStats.__annotations__)
    assert list(record["losses"]) == list(LossStats.__annotations__)
    assert record["entropy"] == record["losses"]["entropy"]
