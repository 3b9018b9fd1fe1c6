"""The PPO learner: bounded environment actions, checkpoint state, minibatch settings."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from dsp_driving.rl.ppo import PPO, policy_kl, regularised_lr_sum


class RecordActions(gym.Wrapper):
    """Keeps every action the environment receives."""

    def __init__(self, env: gym.Env, sink: list[np.ndarray]) -> None:
        super().__init__(env)
        self.sink = sink

    def step(self, action: Any):
        self.sink.append(np.array(action, dtype=np.float64))
        return self.env.step(action)


def _pendulum_envs(sink: list[np.ndarray], n: int = 2) -> gym.vector.VectorEnv:
    return gym.vector.SyncVectorEnv(
        [lambda: RecordActions(gym.make("Pendulum-v1"), sink) for _ in range(n)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def test_continuous_actions_sent_to_env_are_clipped(tiny_config) -> None:
    sink: list[np.ndarray] = []
    cfg = tiny_config(net={"init_log_std": 1.0}, ppo={"num_steps": 64},
                      train={"env_id": "Pendulum-v1", "num_envs": 2, "total_steps": 256})
    envs = _pendulum_envs(sink)
    try:
        ppo = PPO(cfg, envs)
        stats = ppo.step_update()
        ppo.step_update()
    finally:
        envs.close()
    sent = np.concatenate([a.reshape(-1) for a in sink])
    assert sent.size == 2 * 64 * 2
    assert sent.min() >= -2.0 and sent.max() <= 2.0
    # std = e: many sampled actions fall outside the box, so clipping really happened
    assert float(ppo.buf_actions.abs().max()) > 2.0
    assert np.isclose(np.abs(sent).max(), 2.0)
    assert ppo.global_step == 256 and ppo.update == 2
    assert stats["step"] == 128 and np.isfinite(stats["losses"]["total"])


def test_state_dict_round_trip_restores_progress_and_weights(tiny_config) -> None:
    cfg = tiny_config(ppo={"num_steps": 32}, train={"num_envs": 2, "total_steps": 256})
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    try:
        src = PPO(cfg, envs)
        for _ in range(3):
            src.step_update()
        state = src.state_dict()
        dst = PPO(cfg, envs)
        dst.load_state_dict(state)
    finally:
        envs.close()
    assert (dst.update, dst.global_step) == (3, 192)
    src_state, dst_state = src.agent.state_dict(), dst.agent.state_dict()
    assert src_state.keys() == dst_state.keys()
    for key in src_state:
        assert torch.equal(src_state[key], dst_state[key]), key
    for name in ("actor", "critic"):
        for a, b in zip(src.pruner.masks(name), dst.pruner.masks(name), strict=True):
            assert torch.equal(a, b)
    assert list(dst.episode_returns) == list(src.episode_returns)
    assert list(dst.training_seeds()) == list(range(1, 1 + 2 * 4))


def test_resume_of_a_compacted_run_shrinks_the_agents_own_networks(tiny_config) -> None:
    # the critic pruned too (not the default), so both networks are compacted
    cfg = tiny_config(ppo={"num_steps": 32}, pruning={"prune_critic": True},
                      train={"num_envs": 2, "total_steps": 512})
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    try:
        src = PPO(cfg, envs)
        src_actor = src.agent.actor
        for _ in range(6):
            src.step_update()
        assert src.agent.actor is src_actor and sum(src_actor.hidden_sizes) < 32  # compacted
        assert sum(src.agent.critic.hidden_sizes) < 32
        dst = PPO(cfg, envs)
        actor, critic = dst.agent.actor, dst.agent.critic
        dst.load_state_dict(src.state_dict())
        assert dst.agent.actor is actor and dst.agent.critic is critic
        assert actor.hidden_sizes == src.agent.actor.hidden_sizes
        assert critic.hidden_sizes == src.agent.critic.hidden_sizes
        src_params, dst_params = list(src.agent.parameters()), list(dst.agent.parameters())
        assert [id(p) for p in dst.optimizer.param_groups[0]["params"]] == \
            [id(p) for p in dst_params]
        for p_src, p_dst in zip(src_params, dst_params, strict=True):
            assert torch.equal(p_src, p_dst)
            s_src, s_dst = src.optimizer.state[p_src], dst.optimizer.state[p_dst]
            assert s_src.keys() == s_dst.keys() == {"step", "exp_avg", "exp_avg_sq"}
            for key in s_src:
                assert torch.equal(s_src[key], s_dst[key]), key
        stats = dst.step_update()
    finally:
        envs.close()
    assert dst.agent.actor is actor and stats["update"] == 7
    assert [id(p) for p in dst.optimizer.param_groups[0]["params"]] == \
        [id(p) for p in dst.agent.parameters()]


@pytest.mark.parametrize(("num_steps", "num_minibatches"), [(10, 3), (2, 4), (3, 3)])
def test_minibatch_settings_that_break_training_are_rejected(tiny_config, num_steps: int,
                                                             num_minibatches: int) -> None:
    """A short last minibatch (std of 1 sample = NaN) or an empty one is a config error."""
    with pytest.raises(ValueError, match=r"ppo\.num_minibatches="):
        tiny_config(ppo={"num_steps": num_steps, "num_minibatches": num_minibatches},
                    train={"num_envs": 1, "total_steps": 3 * num_steps})


def test_regularised_lr_sum_by_hand(tiny_config) -> None:
    # batch 2 * 32 = 64, 256 steps: 4 updates starting at progress 0, 0.25, 0.5, 0.75, at
    # lr 1e-3 * (1, 0.75, 0.5, 0.25); 2 minibatches * 3 epochs = 6 gradient steps each
    def cfg(ppo: dict, pruning: dict):
        return tiny_config(ppo={"num_steps": 32, "learning_rate": 1e-3, "num_minibatches": 2,
                                "update_epochs": 3, **ppo},
                           pruning={"t_start": 0.0, "t_end": 0.5, **pruning},
                           train={"num_envs": 2, "total_steps": 256})

    # t_end = 0.5: the updates starting at 0 and 0.25
    assert regularised_lr_sum(cfg({}, {})) == pytest.approx(6 * 1e-3 * (1 + 0.75))
    assert regularised_lr_sum(cfg({"anneal_lr": False}, {})) == pytest.approx(6 * 1e-3 * 2)
    assert regularised_lr_sum(cfg({}, {"regularise_after_ramp": True})) == pytest.approx(
        6 * 1e-3 * (1 + 0.75 + 0.5 + 0.25))
    assert regularised_lr_sum(cfg({}, {"t_end": 0.6})) == pytest.approx(
        6 * 1e-3 * (1 + 0.75 + 0.5))


def test_the_regulariser_stops_in_updates_that_start_after_t_end(tiny_config) -> None:
    # 4 updates starting at progress 0, 0.25, 0.5, 0.75; t_end = 0.3: the first two regularise
    cfg = tiny_config(ppo={"num_steps": 32},
                      pruning={"t_start": 0.0, "t_end": 0.3, "prune_critic": True},
                      train={"num_envs": 2, "total_steps": 256})
    assert cfg.pruning.lambda_units == "dose" and not cfg.pruning.regularise_after_ramp
    # 16 gradient steps per update at lr 2.5e-4 * (1, 0.75)
    lr_total = 16 * 2.5e-4 * (1 + 0.75)
    assert regularised_lr_sum(cfg) == pytest.approx(lr_total)
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    try:
        ppo = PPO(cfg, envs)
        records, starts = [], []
        for _ in range(4):
            records.append(ppo.step_update())
            starts.append(ppo.update_start_progress)
    finally:
        envs.close()
    assert starts == [0.0, 0.25, 0.5, 0.75]
    lam_actor = cfg.pruning.lambda_actor / lr_total  # 0.01 / 0.007
    lam_critic = cfg.pruning.lambda_critic / lr_total
    for rec in records[:2]:
        assert rec["actor"]["lam"] == pytest.approx(lam_actor)
        assert rec["critic"]["lam"] == pytest.approx(lam_critic)
        assert rec["losses"]["lambda_R"] > 0
    for rec in records[2:]:
        assert rec["actor"]["lam"] == 0.0 and rec["critic"]["lam"] == 0.0
        assert rec["losses"]["lambda_R"] == 0.0
        assert rec["actor"]["R"] > 0 and rec["critic"]["R"] > 0  # still measured


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_prune_kl_measures_the_pruning_steps_change_of_the_policy(tiny_config,
                                                                  env_id: str) -> None:
    # prune_kl: KL(before || after) of the action distribution over the rollout's
    # observations, 0 in updates that prune nothing. Compensation (lstsq) refits what the
    # cut neurons sent the next layer; for a Gaussian policy (KL = the squared mean shift
    # over 2 std^2) it shrinks the shift of the same first cut
    records = {}
    for replace in ("none", "lstsq"):
        cfg = tiny_config(ppo={"num_steps": 32}, train={"env_id": env_id, "num_envs": 2,
                                                        "total_steps": 512},
                          pruning={"compensate": replace})
        envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id)] * 2,
                                        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        try:
            ppo = PPO(cfg, envs)
            stats = [ppo.step_update()]
            while not stats[-1]["newly_pruned"]:
                stats.append(ppo.step_update())
        finally:
            envs.close()
        assert all(s["prune_kl"] == 0.0 for s in stats[:-1])
        assert stats[-1]["prune_kl"] > 0.0
        records[replace] = stats[-1]
    plain, replaced = records["none"], records["lstsq"]
    assert (plain["update"], plain["newly_pruned"]) == \
        (replaced["update"], replaced["newly_pruned"])
    if env_id == "Pendulum-v1":
        assert replaced["prune_kl"] < plain["prune_kl"]


def test_policy_kl_by_hand() -> None:
    # Normal with the same std: sum over action dims of (mu1 - mu2)^2 / (2 std^2), mean over
    # the batch; Categorical: sum p1 log(p1 / p2)
    mu1 = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    mu2 = torch.tensor([[0.3, -0.4], [1.0, -1.0]])
    std = torch.tensor([0.5, 2.0]).expand_as(mu1)
    normal = torch.distributions.Normal
    expected = ((0.3 ** 2) / (2 * 0.25) + (0.4 ** 2) / (2 * 4.0)) / 2
    assert policy_kl(normal(mu1, std), normal(mu2, std)) == pytest.approx(expected, rel=1e-6)
    p1, p2 = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.25, 0.75]])
    cat = torch.distributions.Categorical
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert policy_kl(cat(probs=p1), cat(probs=p2)) == pytest.approx(expected, rel=1e-6)


def test_kl_budget_bounds_every_pruning_steps_kl(tiny_config) -> None:
    # until t_end + guard_max_lag each update's pruning step stays within the budget
    budget = 1e-7
    cfg = tiny_config(ppo={"num_steps": 32},
                      train={"env_id": "Pendulum-v1", "num_envs": 2, "total_steps": 1024},
                      pruning={"kl_budget": budget, "compensate": "lstsq",
                               "guard_max_lag": 0.2})
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("Pendulum-v1")] * 2,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    try:
        ppo = PPO(cfg, envs)
        stats = [ppo.step_update() for _ in range(16)]
    finally:
        envs.close()
    deadline = cfg.pruning.t_end + cfg.pruning.guard_max_lag
    within = [s for s in stats if s["progress"] < deadline]
    assert within and all(s["prune_kl"] <= budget for s in within)
    assert sum(s["newly_pruned"] for s in within) > 0  # it did prune, in small steps
