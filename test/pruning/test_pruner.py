"""DynamicPruner: masks stay monotone, masked weights and Adam moments stay zero, safeguards."""

from __future__ import annotations

import math

import pytest
from regulariser_oracle import pruner_loss
import torch

from dsp_driving.config import PruningConfig
from dsp_driving.modules.mlp import MLP
from dsp_driving.pruning import DynamicPruner, neuron_importance
from dsp_driving.pruning.pruner import NetworkPruner


def _masked_entries_zero(mlp: MLP, masks: list[torch.Tensor]) -> None:
    """Every masked neuron's incoming row, bias and outgoing column is exactly zero."""
    for i, m in enumerate(masks):
        dead = torch.nonzero(m == 0).flatten()
        assert torch.count_nonzero(mlp.layers[i].weight[dead]).item() == 0
        assert torch.count_nonzero(mlp.layers[i].bias[dead]).item() == 0
        assert torch.count_nonzero(mlp.layers[i + 1].weight[:, dead]).item() == 0


def _adam_state_zero(opt: torch.optim.Adam, mlp: MLP, masks: list[torch.Tensor]) -> int:
    """Assert Adam's moments are zero at masked entries; returns how many tensors checked."""
    checked = 0
    for i, m in enumerate(masks):
        dead = torch.nonzero(m == 0).flatten()
        for key in ("exp_avg", "exp_avg_sq"):
            w_in = opt.state[mlp.layers[i].weight][key]
            b_in = opt.state[mlp.layers[i].bias][key]
            w_out = opt.state[mlp.layers[i + 1].weight][key]
            assert torch.count_nonzero(w_in[dead]).item() == 0
            assert torch.count_nonzero(b_in[dead]).item() == 0
            assert torch.count_nonzero(w_out[:, dead]).item() == 0
            checked += 3
    return checked


def test_masks_monotone_weights_and_adam_state_stay_zero() -> None:
    torch.manual_seed(0)
    actor, critic = MLP(4, [16, 12], 2), MLP(4, [16], 1)
    # masked, not compacted: the masks and the Adam moments at masked entries are the subject
    cfg = PruningConfig(kappa_final=1.0, t_start=0.0, t_end=0.6, max_prune_frac=0.25,
                        min_alive=3, lambda_actor=1e-2, lambda_critic=1e-2,
                        compact_in_training=False)
    pruner = DynamicPruner(actor, critic, cfg)
    params = list(actor.parameters()) + list(critic.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    x = torch.randn(32, 4)
    initial = {id(p): p.detach().clone() for p in params}
    previous = {name: [m.clone() for m in pruner.masks(name)] for name in ("actor", "critic")}
    any_masked = 0
    n_updates = 30
    for update in range(1, n_updates + 1):
        pruner.update_regulariser()
        for _ in range(3):
            # Pulls every parameter towards 1: masked entries would leave zero at once.
            loss = sum(((p - 1.0) ** 2).sum() for p in params) + actor(x).square().mean()
            loss = loss + pruner_loss(pruner)
            opt.zero_grad()
            loss.backward()
            pruner.regularise()
            opt.step()
            pruner.mask_weights()
            for name, mlp in (("actor", actor), ("critic", critic)):
                _masked_entries_zero(mlp, pruner.masks(name))
                if update > 1:
                    _adam_state_zero(opt, mlp, pruner.masks(name))
        alive_before = {n: pruner.nets[n].masks.alive() for n in ("actor", "critic")}
        newly = pruner.step(update, update / n_updates, opt)
        for name, mlp in (("actor", actor), ("critic", critic)):
            masks = pruner.masks(name)
            for old, new, before in zip(previous[name], masks, alive_before[name]):
                assert bool((new <= old).all())  # never 0 -> 1
                cut = int((old - new).sum())
                assert cut <= math.floor(cfg.max_prune_frac * before)
                assert int(new.sum()) >= cfg.min_alive
            _masked_entries_zero(mlp, masks)
            assert _adam_state_zero(opt, mlp, masks) > 0
            previous[name] = [m.clone() for m in masks]
        any_masked += newly
    assert any_masked > 0
    alive = pruner.nets["actor"].masks.alive()
    assert alive[0] < 16 and alive[1] < 12  # pruning happened in both layers
    # Alive weights did move (the loss pushes them), masked ones are zero.
    moved = [(p - initial[id(p)]).abs().max().item() for p in params]
    assert min(moved) > 0.0
    stats = pruner.stats()
    assert stats["actor"]["neurons_alive"] == sum(alive)
    assert stats["actor"]["weights_alive"] == pruner.nets["actor"].masks.weights_alive()
    assert stats["kappa"] == pytest.approx(1.0)


def test_dynamic_threshold_by_hand_and_max_prune_frac() -> None:
    mlp = MLP(2, [3], 1)
    with torch.no_grad():
        mlp.layers[0].weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 1.0], [0.5, 0.0]]))
        mlp.layers[0].bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
        mlp.layers[1].weight.copy_(torch.tensor([[1.0, 2.0, 0.5]]))
    # s = [7, 5, 0.5]; at t >= t_end kappa = 1, tau = mean(s) = 12.5 / 3; only s_2 < tau.
    cfg = PruningConfig(kappa_final=1.0, t_start=0.0, t_end=0.5, max_prune_frac=0.4,
                        min_alive=1)
    pruner = NetworkPruner("actor", mlp, 1.0, cfg, True)
    assert pruner.prune(1.0, None) == 1
    assert pruner.thresholds[0] == pytest.approx(12.5 / 3)
    assert pruner.masks.masks[0].tolist() == [1.0, 1.0, 0.0]
    assert mlp.layers[0].weight[2].tolist() == [0.0, 0.0]
    assert mlp.layers[1].weight[0, 2].item() == 0.0
    # Before t_start kappa = 0: nothing is below the threshold.
    early = NetworkPruner("actor", MLP(2, [3], 1), 1.0,
                          PruningConfig(t_start=0.5, t_end=0.9, min_alive=1), True)
    assert early.prune(0.2, None) == 0 and early.thresholds[0] == 0.0
    # max_prune_frac * alive = 0.2 * 3 -> floor 0: the budget blocks the cut.
    blocked = NetworkPruner("actor", mlp, 1.0,
                            PruningConfig(kappa_final=1.0, t_start=0.0, t_end=0.5,
                                          max_prune_frac=0.2, min_alive=1), True)
    assert blocked.prune(1.0, None) == 0


def test_min_alive_is_respected_even_with_a_huge_threshold() -> None:
    torch.manual_seed(0)
    mlp = MLP(3, [8, 6], 2)
    cfg = PruningConfig(kappa_final=100.0, t_start=0.0, t_end=0.1, max_prune_frac=1.0,
                        min_alive=3)
    pruner = NetworkPruner("actor", mlp, 1.0, cfg, True)
    for _ in range(5):
        pruner.prune(1.0, None)
    assert pruner.masks.alive() == [3, 3]


def test_ratio_mode_reaches_the_target_alive_count() -> None:
    torch.manual_seed(0)
    actor, critic = MLP(4, [16, 16], 2), MLP(4, [20], 1)
    cfg = PruningConfig(mode="ratio", ratio_initial=0.0, ratio_final=0.75, t_start=0.0,
                        t_end=0.5, max_prune_frac=0.3, min_alive=2)
    pruner = DynamicPruner(actor, critic, cfg)
    opt = torch.optim.Adam(list(actor.parameters()) + list(critic.parameters()))
    counts = []
    for update in range(1, 21):
        pruner.step(update, update / 20, opt)
        counts.append(pruner.nets["actor"].masks.alive())
    assert all(b[0] <= a[0] and b[1] <= a[1] for a, b in zip(counts, counts[1:]))
    # ceil((1 - 0.75) * 16) = 4 and ceil(0.25 * 20) = 5
    assert pruner.nets["actor"].masks.alive() == [4, 4]
    assert pruner.nets["critic"].masks.alive() == [5]
    # compacted in place as it pruned, and the optimiser follows the new Parameters
    assert (actor.hidden_sizes, critic.hidden_sizes) == ([4, 4], [5])
    assert [id(p) for p in opt.param_groups[0]["params"]] == \
        [id(p) for p in [*actor.parameters(), *critic.parameters()]]


def test_ratio_mode_removes_the_lowest_importance_neurons() -> None:
    torch.manual_seed(3)
    mlp = MLP(4, [20], 1)
    (s,) = neuron_importance(mlp)
    cfg = PruningConfig(mode="ratio", ratio_final=0.6, t_start=0.0, t_end=0.5,
                        max_prune_frac=1.0)
    pruner = NetworkPruner("critic", mlp, 1.0, cfg, True)
    assert pruner.prune(1.0, None) == 12
    dead = set(torch.nonzero(pruner.masks.masks[0] == 0).flatten().tolist())
    assert dead == set(torch.argsort(s.detach())[:12].tolist())
    assert pruner.thresholds[0] == pytest.approx(float(s.detach().sort().values[12]))


def test_ratio_mode_target_is_exact_for_decimal_ratios() -> None:
    torch.manual_seed(0)
    cfg = PruningConfig(mode="ratio", ratio_initial=0.0, ratio_final=0.7, t_start=0.0,
                        t_end=0.5, max_prune_frac=1.0, min_alive=1)
    pruner = NetworkPruner("actor", MLP(4, [10], 2), 1.0, cfg, True)
    pruner.prune(1.0, None)
    assert pruner.masks.alive() == [3]  # prune 70 % of 10 neurons -> 3 alive


def test_prune_every_and_disabled_networks() -> None:
    torch.manual_seed(0)
    actor, critic = MLP(4, [10], 2), MLP(4, [10], 1)
    cfg = PruningConfig(mode="ratio", ratio_final=0.5, t_start=0.0, t_end=0.1,
                        max_prune_frac=1.0, prune_every=3, prune_critic=False)
    pruner = DynamicPruner(actor, critic, cfg)
    opt = torch.optim.Adam(list(actor.parameters()) + list(critic.parameters()))
    assert pruner.step(1, 1.0, opt) == 0  # 1 % 3 != 0
    assert pruner.step(3, 1.0, opt) == 5
    assert pruner.nets["actor"].masks.alive() == [5]
    assert pruner.nets["critic"].masks.alive() == [10]


def test_pruner_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    cfg = PruningConfig(mode="ratio", ratio_final=0.5, t_start=0.0, t_end=0.1,
                        max_prune_frac=1.0)
    src = DynamicPruner(MLP(4, [10], 2), MLP(4, [6], 1), cfg)
    src.step(1, 1.0, None)
    assert src.nets["actor"].mlp.hidden_sizes == [5]  # compact_in_training: shrunk in place
    actor, critic = MLP(4, [10], 2), MLP(4, [6], 1)
    dst = DynamicPruner(actor, critic, cfg)
    dst.load_state_dict(src.state_dict())
    # the checkpoint of a compacted network shrinks the given network, the same object
    assert dst.nets["actor"].mlp is actor and dst.nets["critic"].mlp is critic
    assert (actor.hidden_sizes, critic.hidden_sizes) == ([5], [3])
    for name in ("actor", "critic"):
        for a, b in zip(src.masks(name), dst.masks(name), strict=True):
            assert torch.equal(a, b)
        for a, b in zip(src.dense_masks(name), dst.dense_masks(name), strict=True):
            assert torch.equal(a, b)
        for a, b in zip(src.nets[name].kept, dst.nets[name].kept, strict=True):
            assert torch.equal(a, b)
    _masked_entries_zero(dst.nets["actor"].mlp, dst.masks("actor"))
    assert dst.kappa == src.kappa
    bad = DynamicPruner(MLP(4, [9], 2), MLP(4, [6], 1), cfg)
    with pytest.raises(ValueError, match="do not match"):
        bad.load_state_dict(src.state_dict())


def test_pruner_state_dict_of_a_masked_network_keeps_the_dense_shapes() -> None:
    torch.manual_seed(0)
    cfg = PruningConfig(mode="ratio", ratio_final=0.5, t_start=0.0, t_end=0.1,
                        max_prune_frac=1.0, compact_in_training=False)
    src = DynamicPruner(MLP(4, [10], 2), MLP(4, [6], 1), cfg)
    src.step(1, 1.0, None)
    actor = MLP(4, [10], 2)
    dst = DynamicPruner(actor, MLP(4, [6], 1), cfg)
    dst.load_state_dict(src.state_dict())
    assert actor.hidden_sizes == [10] and dst.nets["actor"].masks.alive() == [5]
    assert torch.equal(dst.masks("actor")[0], src.masks("actor")[0])
    _masked_entries_zero(actor, dst.masks("actor"))


def test_pruner_state_dict_onto_an_already_compacted_network() -> None:
    torch.manual_seed(0)
    cfg = PruningConfig(mode="ratio", ratio_final=0.5, t_start=0.0, t_end=1.0,
                        max_prune_frac=1.0)
    src = DynamicPruner(MLP(4, [10], 2), MLP(4, [6], 1), cfg)
    src.step(1, 0.3, None)
    early = src.state_dict()
    src.step(2, 1.0, None)
    late = src.state_dict()
    assert [len(k) for k in early["actor"]["kept"]] == [7]
    assert [len(k) for k in late["actor"]["kept"]] == [5]
    actor = MLP(4, [10], 2)
    dst = DynamicPruner(actor, MLP(4, [6], 1), cfg)
    dst.load_state_dict(early)
    with torch.no_grad():
        mark = actor.layers[0].bias.copy_(torch.arange(7.0)).clone()
    dst.load_state_dict(late)  # shrinks 7 -> 5 further, keeping the right neurons
    assert actor.hidden_sizes == [5]
    assert torch.equal(dst.nets["actor"].kept[0], late["actor"]["kept"][0])
    position = torch.searchsorted(early["actor"]["kept"][0], late["actor"]["kept"][0])
    assert torch.equal(actor.layers[0].bias, mark[position])
    with pytest.raises(ValueError, match="already removed"):
        dst.load_state_dict(early)  # it holds neurons this network no longer has
