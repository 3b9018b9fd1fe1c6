"""Physical compaction during training: Adam state carried over, the same learned function."""

from __future__ import annotations

import gymnasium as gym
from pruning_samples import masked_net
import torch

from dsp_driving.pruning import compact_mlp
from dsp_driving.pruning.compaction import transplant_optimizer_state
from dsp_driving.rl.ppo import PPO


def test_transplanted_adam_state_gives_the_same_step_as_the_masked_network() -> None:
    mlp, masks = masked_net(torch.float32)
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-2)
    x = torch.randn(32, 5)
    for _ in range(3):  # build up Adam moments
        opt.zero_grad()
        mlp(x).square().mean().backward()
        masks.apply_to_grads()
        opt.step()
        masks.apply_to_weights()
    masks.clear_optimizer_state(opt)
    keep = [torch.nonzero(m > 0).flatten() for m in masks.masks]
    compact = compact_mlp(mlp, masks.masks)
    opt_c = torch.optim.Adam(mlp.parameters(), lr=1e-2)
    opt_c.load_state_dict(opt.state_dict())
    transplant_optimizer_state(opt_c, mlp, compact, keep)
    assert {id(p) for p in opt_c.param_groups[0]["params"]} == {id(p) for p in
                                                                 compact.parameters()}
    # one more step on each: masked dense network vs compact network
    opt.zero_grad()
    mlp(x).square().mean().backward()
    masks.apply_to_grads()
    opt.step()
    masks.apply_to_weights()
    opt_c.zero_grad()
    compact(x).square().mean().backward()
    opt_c.step()
    assert (compact(x) - mlp(x)).abs().max().item() <= 1e-6
    assert opt_c.state[compact.layers[1].weight]["exp_avg"].shape == (4, 6)  # alive: 4 out, 6 in


def _run(flag: bool, tiny_config) -> tuple[list[tuple[int, int]], PPO]:
    cfg = tiny_config(pruning={"compact_in_training": flag},
                      train={"total_steps": 4096})
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 4,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    ppo = PPO(cfg, envs)
    alive = []
    while not ppo.done:
        stats = ppo.step_update()
        alive.append((stats["actor"]["neurons_alive"], stats["critic"]["neurons_alive"]))
    envs.close()
    return alive, ppo


def test_compaction_in_training_changes_shapes_not_the_learned_function(tiny_config) -> None:
    alive_c, ppo_c = _run(True, tiny_config)
    alive_m, ppo_m = _run(False, tiny_config)
    assert alive_c == alive_m
    assert alive_c[-1][0] < 32  # it did prune
    # compacted in training: the actor's layers have the alive widths; masked: dense widths
    assert ppo_c.agent.actor.hidden_sizes == ppo_c.pruner.nets["actor"].masks.alive()
    assert ppo_m.agent.actor.hidden_sizes == [16, 16]
    for name in ("actor", "critic"):
        for a, b in zip(ppo_c.pruner.dense_masks(name), ppo_m.pruner.dense_masks(name)):
            assert torch.equal(a, b)
    x = torch.randn(128, 4) * 2
    with torch.no_grad():
        diff = (ppo_c.deployed_actor().mlp(x) - ppo_m.deployed_actor().mlp(x)).abs().max()
    assert diff.item() <= 1e-4
