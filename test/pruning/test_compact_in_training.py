"""Closed-form regulariser gradient and physical compaction during training."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from dsp_driving.pruning import adaptive_coefficients, compact_mlp, neuron_importance
from dsp_driving.pruning.compaction import transplant_optimizer_state
from dsp_driving.pruning.importance import (
    accumulate_regulariser_grad,
    group_weights,
    weighted_group_norms,
)
from dsp_driving.pruning.masks import NeuronMasks
from dsp_driving.rl.networks import MLP
from dsp_driving.rl.ppo import PPO


def _masked_net(dtype: torch.dtype = torch.float64) -> tuple[MLP, NeuronMasks]:
    torch.manual_seed(0)
    mlp = MLP(5, [7, 6], 3).to(dtype)
    masks = NeuronMasks(mlp)
    masks.mask_neurons(0, torch.tensor([2]))
    masks.mask_neurons(1, torch.tensor([0, 4]))
    masks.apply_to_weights()
    return mlp, masks


def test_closed_form_regulariser_grad_equals_autograd() -> None:
    mlp, masks = _masked_net()
    coeffs = adaptive_coefficients(neuron_importance(mlp), masks.masks, 0.1, 10.0)
    weights = group_weights(mlp, masks.masks, coeffs)
    reg = weighted_group_norms(mlp, weights, 1e-8)
    reg.backward()
    expected = [(layer.weight.grad.clone(),
                 torch.zeros_like(layer.bias) if layer.bias.grad is None
                 else layer.bias.grad.clone()) for layer in mlp.layers]
    for layer in mlp.layers:
        layer.weight.grad = torch.full_like(layer.weight, 0.5)  # accumulates onto existing
        layer.bias.grad = None
    value = accumulate_regulariser_grad(mlp, weights, 1e-8, scale=3.0)
    assert value == pytest.approx(reg.item(), rel=1e-12)
    for layer, (gw, gb) in zip(mlp.layers, expected):
        assert torch.allclose(layer.weight.grad, 0.5 + 3.0 * gw, atol=1e-12)
        assert torch.allclose(layer.bias.grad, 3.0 * gb, atol=1e-12)


def test_transplanted_adam_state_gives_the_same_step_as_the_masked_network() -> None:
    mlp, masks = _masked_net(torch.float32)
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


def test_group_size_dense_uses_the_dense_group_size() -> None:
    from dsp_driving.config import PruningConfig
    from dsp_driving.pruning.pruner import NetworkPruner

    mlp, masks = _masked_net(torch.float32)  # 5 -> [7, 6] -> 3, alive [6, 4]
    alive = NetworkPruner("a", mlp, 1.0, PruningConfig(regulariser="group_lasso"), True)
    dense = NetworkPruner("a", mlp, 1.0, PruningConfig(regulariser="group_lasso",
                                                       group_size="dense"), True)
    for p in (alive, dense):
        p.masks.load_state_dict([m.clone() for m in masks.masks])
        p.refresh_coefficients()
    # layer 0 neuron 0: alive group 5 + 1 + 4 = 10; dense group 5 + 1 + 6 = 12
    assert alive._weights[0][0].item() == pytest.approx(10 ** 0.5)
    assert dense._weights[0][0].item() == pytest.approx(12 ** 0.5)
    # layer 1 neuron 1: alive 6 + 1 + 3 = 10; dense 7 + 1 + 3 = 11; masked neuron 0 is 0
    assert alive._weights[1][1].item() == pytest.approx(10 ** 0.5)
    assert dense._weights[1][1].item() == pytest.approx(11 ** 0.5)
    assert dense._weights[1][0].item() == 0.0
