"""Physical compaction during training: Adam state carried over, the same learned function."""

from __future__ import annotations

import copy

import gymnasium as gym
from pruning_samples import masked_net
import pytest
import torch

from dsp_driving.pruning import NeuronMasks
from dsp_driving.pruning.compaction import alive_indices, compact_in_place
from dsp_driving.rl.ppo import PPO


@pytest.mark.parametrize("fused", [False, True])
def test_compaction_in_place_carries_adam_state_and_gives_the_masked_step(fused: bool) -> None:
    mlp, masks = masked_net(torch.float32)
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-2, fused=fused)
    x = torch.randn(32, 5)
    for _ in range(3):  # build up Adam moments
        opt.zero_grad()
        mlp(x).square().mean().backward()
        masks.apply_to_grads()
        opt.step()
        masks.apply_to_weights()
    masks.clear_optimizer_state(opt)
    # the masked reference: a copy of the network with a copy of the optimiser
    masked = copy.deepcopy(mlp)
    opt_m = torch.optim.Adam(masked.parameters(), lr=1e-2, fused=fused)
    opt_m.load_state_dict(opt.state_dict())
    keep = alive_indices(mlp, masks.masks)
    layers, old = list(mlp.layers), list(mlp.parameters())  # kept alive: ids stay unique
    compact_in_place(mlp, keep, opt)
    assert all(a is b for a, b in zip(mlp.layers, layers, strict=True))  # same modules
    assert mlp.hidden_sizes == [6, 4]
    # torch.optim keys state by Parameter object and lists them in param_groups (in order)
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for p in mlp.parameters()]
    assert {id(p) for p in opt.state} == {id(p) for p in mlp.parameters()}
    assert not {id(p) for p in old} & {id(p) for p in mlp.parameters()}
    w1 = opt.state[mlp.layers[1].weight]
    assert w1["exp_avg"].shape == (4, 6)  # alive: 4 out, 6 in
    assert torch.equal(w1["exp_avg"],
                       opt_m.state[masked.layers[1].weight]["exp_avg"][keep[1]][:, keep[0]])
    assert float(w1["step"]) == 3.0
    # one more step on each, at a new learning rate (the annealing schedule writes the group)
    for o in (opt, opt_m):
        o.param_groups[0]["lr"] = 5e-3
    opt_m.zero_grad()
    masked(x).square().mean().backward()
    masks_m = NeuronMasks(masked)
    masks_m.load_state_dict(masks.masks)
    masks_m.apply_to_grads()
    opt_m.step()
    masks_m.apply_to_weights()
    before = mlp.layers[0].weight.detach().clone()
    opt.zero_grad()
    mlp(x).square().mean().backward()
    opt.step()
    assert not torch.equal(before, mlp.layers[0].weight)  # the optimiser stepped the new ones
    assert float(opt.state[mlp.layers[1].weight]["step"]) == 4.0
    with torch.no_grad():
        assert (mlp(x) - masked(x)).abs().max().item() <= 1e-6
        assert torch.equal(mlp.layers[1].weight, masked.layers[1].weight[keep[1]][:, keep[0]])


def _run(flag: bool, tiny_config) -> tuple[list[tuple[int, int]], PPO]:
    cfg = tiny_config(pruning={"compact_in_training": flag},
                      train={"total_steps": 4096})
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 4,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    ppo = PPO(cfg, envs)
    actor, critic = ppo.agent.actor, ppo.agent.critic
    alive = []
    while not ppo.done:
        stats = ppo.step_update()
        alive.append((stats["actor"]["neurons_alive"], stats["critic"]["neurons_alive"]))
        # compaction is in place: the agent keeps its networks, the pruner and the
        # optimiser hold exactly the agent's current Parameters
        assert ppo.agent.actor is actor and ppo.agent.critic is critic
        assert ppo.pruner.nets["actor"].mlp is actor and ppo.pruner.nets["critic"].mlp is critic
        assert [id(p) for p in ppo.optimizer.param_groups[0]["params"]] == \
            [id(p) for p in ppo.agent.parameters()]
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
