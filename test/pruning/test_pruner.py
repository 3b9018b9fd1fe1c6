"""DynamicPruner: masks stay monotone, masked weights and Adam moments stay zero, safeguards."""

from __future__ import annotations

from collections.abc import Callable
import math

from pruning_samples import hand_net
import pytest
from regulariser_oracle import pruner_loss
import torch

from dsp_driving.config import PruningConfig
from dsp_driving.modules.mlp import MLP
from dsp_driving.pruning import DynamicPruner, neuron_importance
from dsp_driving.pruning.pruner import NetworkPruner

# The mechanics below are those of the dynamic threshold, lambda per gradient step, both
# networks pruned and a regulariser that never stops: set explicitly, not the defaults.
OLD = {"mode": "dynamic", "lambda_units": "step", "prune_critic": True,
       "regularise_after_ramp": True}


def _cfg(**kw: object) -> PruningConfig:
    """PruningConfig with the OLD semantics, ``kw`` on top."""
    return PruningConfig(**(OLD | kw))


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
    cfg = _cfg(kappa_final=1.0, t_start=0.0, t_end=0.6, max_prune_frac=0.25,
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
    cfg = _cfg(kappa_final=1.0, t_start=0.0, t_end=0.5, max_prune_frac=0.4,
               min_alive=1)
    pruner = NetworkPruner("actor", mlp, 1.0, cfg, True)
    assert pruner.prune(1.0, None) == 1
    assert pruner.thresholds[0] == pytest.approx(12.5 / 3)
    assert pruner.masks.masks[0].tolist() == [1.0, 1.0, 0.0]
    assert mlp.layers[0].weight[2].tolist() == [0.0, 0.0]
    assert mlp.layers[1].weight[0, 2].item() == 0.0
    # Before t_start kappa = 0: nothing is below the threshold.
    early = NetworkPruner("actor", MLP(2, [3], 1), 1.0,
                          _cfg(t_start=0.5, t_end=0.9, min_alive=1), True)
    assert early.prune(0.2, None) == 0 and early.thresholds[0] == 0.0
    # max_prune_frac * alive = 0.2 * 3 -> floor 0: the budget blocks the cut.
    blocked = NetworkPruner("actor", mlp, 1.0,
                            _cfg(kappa_final=1.0, t_start=0.0, t_end=0.5,
                                 max_prune_frac=0.2, min_alive=1), True)
    assert blocked.prune(1.0, None) == 0


def test_min_alive_is_respected_even_with_a_huge_threshold() -> None:
    torch.manual_seed(0)
    mlp = MLP(3, [8, 6], 2)
    cfg = _cfg(kappa_final=100.0, t_start=0.0, t_end=0.1, max_prune_frac=1.0,
               min_alive=3)
    pruner = NetworkPruner("actor", mlp, 1.0, cfg, True)
    for _ in range(5):
        pruner.prune(1.0, None)
    assert pruner.masks.alive() == [3, 3]


def test_ratio_mode_reaches_the_target_alive_count() -> None:
    torch.manual_seed(0)
    actor, critic = MLP(4, [16, 16], 2), MLP(4, [20], 1)
    cfg = _cfg(mode="ratio", ratio_initial=0.0, ratio_final=0.75, t_start=0.0,
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
    cfg = _cfg(mode="ratio", ratio_final=0.6, t_start=0.0, t_end=0.5,
               max_prune_frac=1.0)
    pruner = NetworkPruner("critic", mlp, 1.0, cfg, True)
    assert pruner.prune(1.0, None) == 12
    dead = set(torch.nonzero(pruner.masks.masks[0] == 0).flatten().tolist())
    assert dead == set(torch.argsort(s.detach())[:12].tolist())
    assert pruner.thresholds[0] == pytest.approx(float(s.detach().sort().values[12]))


def test_ratio_mode_target_is_exact_for_decimal_ratios() -> None:
    torch.manual_seed(0)
    cfg = _cfg(mode="ratio", ratio_initial=0.0, ratio_final=0.7, t_start=0.0,
               t_end=0.5, max_prune_frac=1.0, min_alive=1)
    pruner = NetworkPruner("actor", MLP(4, [10], 2), 1.0, cfg, True)
    pruner.prune(1.0, None)
    assert pruner.masks.alive() == [3]  # prune 70 % of 10 neurons -> 3 alive


def test_prune_every_and_disabled_networks() -> None:
    torch.manual_seed(0)
    actor, critic = MLP(4, [10], 2), MLP(4, [10], 1)
    cfg = _cfg(mode="ratio", ratio_final=0.5, t_start=0.0, t_end=0.1,
               max_prune_frac=1.0, prune_every=3, prune_critic=False)
    pruner = DynamicPruner(actor, critic, cfg)
    opt = torch.optim.Adam(list(actor.parameters()) + list(critic.parameters()))
    assert pruner.step(1, 1.0, opt) == 0  # 1 % 3 != 0
    assert pruner.step(3, 1.0, opt) == 5
    assert pruner.nets["actor"].masks.alive() == [5]
    assert pruner.nets["critic"].masks.alive() == [10]


def test_pruner_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    cfg = _cfg(mode="ratio", ratio_final=0.5, t_start=0.0, t_end=0.1,
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
    cfg = _cfg(mode="ratio", ratio_final=0.5, t_start=0.0, t_end=0.1,
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
    cfg = _cfg(mode="ratio", ratio_final=0.5, t_start=0.0, t_end=1.0,
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


def test_dose_lambda_is_spread_over_the_learning_rate_sum() -> None:
    cfg = PruningConfig(lambda_actor=4e-4, lambda_critic=2e-4, prune_critic=True)
    assert cfg.lambda_units == "dose"
    pruner = DynamicPruner(MLP(2, [3], 1), MLP(2, [3], 1), cfg, lr_total=0.5)
    assert pruner.nets["actor"].lam == pytest.approx(8e-4, rel=1e-15)  # 4e-4 / 0.5
    assert pruner.nets["critic"].lam == pytest.approx(4e-4, rel=1e-15)
    pruner.update_regulariser(0.0)
    stats = pruner.stats()
    assert stats["actor"]["lam"] == pytest.approx(8e-4, rel=1e-15)
    assert stats["critic"]["lam"] == pytest.approx(4e-4, rel=1e-15)
    # the defaults: the critic is not pruned, so its lam reads 0
    default = DynamicPruner(MLP(2, [3], 1), MLP(2, [3], 1), PruningConfig(), lr_total=2.0)
    default.update_regulariser(0.0)
    assert default.nets["actor"].lam == pytest.approx(PruningConfig().lambda_actor / 2.0)
    assert default.stats()["actor"]["lam"] == pytest.approx(PruningConfig().lambda_actor / 2.0)
    assert default.stats()["critic"]["lam"] == 0.0
    # lambda per step ignores lr_total
    step = DynamicPruner(MLP(2, [3], 1), MLP(2, [3], 1),
                         PruningConfig(lambda_units="step", lambda_actor=4e-4), lr_total=0.5)
    assert step.nets["actor"].lam == 4e-4
    # nothing regularised (lr_total = 0): lambda 0
    none = DynamicPruner(MLP(2, [3], 1), MLP(2, [3], 1), PruningConfig(), lr_total=0.0)
    assert none.nets["actor"].lam == 0.0


def test_dose_lambda_needs_lr_total() -> None:
    with pytest.raises(ValueError, match=r"pruning\.lambda_units"):
        DynamicPruner(MLP(2, [3], 1), MLP(2, [3], 1), PruningConfig())
    DynamicPruner(MLP(2, [3], 1), MLP(2, [3], 1), PruningConfig(lambda_units="step"))


def _hand_pruner(**kw: object) -> tuple[DynamicPruner, MLP, torch.Tensor]:
    """hand_net (s = [7, 5, 0.5]) as the actor with neuron 1 masked (then s = [7, 0, 0.5])."""
    actor = hand_net()
    pruner = DynamicPruner(actor, MLP(2, [3], 1), PruningConfig(**({"lambda_actor": 4e-4} | kw)),
                           lr_total=0.5)
    pruner.nets["actor"].masks.mask_neurons(0, torch.tensor([1]))
    pruner.nets["actor"].masks.apply_to_weights()
    return pruner, actor, torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.25]])


def _loss_grads(actor: MLP, x: torch.Tensor) -> list[torch.Tensor]:
    """Backward of a stand-in PPO loss, plus 1 on masked neuron 1's entries (a zeroed neuron
    gets no gradient of its own: this makes the masking visible); returns the gradients."""
    actor.zero_grad(set_to_none=False)
    (actor(x) - 1.0).square().mean().backward()
    with torch.no_grad():
        actor.layers[0].weight.grad[1] += 1.0
        actor.layers[0].bias.grad[1] += 1.0
        actor.layers[1].weight.grad[:, 1] += 1.0
    return [p.grad.clone() for p in actor.parameters()]


def _masked(actor: MLP, grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """``grads`` with hidden neuron 1's incoming row, bias and outgoing column zeroed."""
    w0, b0, w1, b1 = (g.clone() for g in grads)
    w0[1], b0[1], w1[:, 1] = 0.0, 0.0, 0.0
    return [w0, b0, w1, b1]


# R by hand with neuron 1 masked: alive mean s = (7 + 0.5) / 2 = 3.75, c = 3.75 / s, and
# sqrt(|g_j|) = sqrt(2 in + 1 bias + 1 out) = 2 for both alive neurons
EPS = PruningConfig().eps
R_HAND = 2 * (3.75 / 7 * math.sqrt(7 + EPS) + 7.5 * math.sqrt(0.5 + EPS))


def test_regulariser_stops_after_the_ramp() -> None:
    pruner, actor, x = _hand_pruner()  # the defaults: regularise_after_ramp False
    pruner.update_regulariser(0.0)  # the coefficients of the last regularised update
    assert pruner.acting
    for progress in (PruningConfig().t_end, 0.9):
        pruner.update_regulariser(progress)
        assert not pruner.acting
        grads = _loss_grads(actor, x)
        assert pruner.regularise() == 0.0
        for p, g in zip(actor.parameters(), _masked(actor, grads), strict=True):
            assert torch.equal(p.grad, g)  # exactly the loss's gradient, masked
        assert torch.count_nonzero(grads[0][1]).item() == 2  # masking had work to do
        assert torch.count_nonzero(actor.layers[0].weight.grad[1]).item() == 0
        stats = pruner.stats()
        assert stats["actor"]["lam"] == 0.0 and stats["critic"]["lam"] == 0.0
        assert stats["actor"]["R"] > 0
        assert stats["actor"]["R"] == pytest.approx(R_HAND, rel=1e-6)


def test_regulariser_acts_before_t_end_or_with_regularise_after_ramp() -> None:
    before_end = PruningConfig().t_end - 0.01  # the defaults: the last update before t_end
    for kw, progress in (({}, 0.0), ({}, before_end), ({"regularise_after_ramp": True}, 0.9)):
        pruner, actor, x = _hand_pruner(**kw)
        pruner.update_regulariser(progress)
        assert pruner.acting
        grads = _masked(actor, _loss_grads(actor, x))
        value = pruner.regularise()
        assert value == pytest.approx(8e-4 * R_HAND, rel=1e-6)  # lam = 4e-4 / 0.5
        changed = [not torch.equal(p.grad, g) for p, g in zip(actor.parameters(), grads)]
        assert changed[:3] == [True, True, True]  # every grouped parameter moved
        assert torch.equal(actor.layers[1].bias.grad, grads[3])  # the output bias is in none
        assert torch.count_nonzero(actor.layers[0].weight.grad[1]).item() == 0  # masked
        stats = pruner.stats()
        assert stats["actor"]["lam"] == pytest.approx(8e-4, rel=1e-15)
        assert stats["actor"]["R"] == pytest.approx(R_HAND, rel=1e-6)


def test_a_stopped_regulariser_stays_stopped_when_the_run_is_extended() -> None:
    """--resume --total-steps moves later updates' progress back before t_end: the
    regulariser, once stopped at t_end, must not come back (and the checkpoint says so)."""
    cfg = _cfg(lambda_units="dose", regularise_after_ramp=False, t_start=0.0, t_end=0.5)
    actor, critic = MLP(4, [10], 2), MLP(4, [6], 1)
    pruner = DynamicPruner(actor, critic, cfg, lr_total=1.0)
    pruner.update_regulariser(0.25)
    assert pruner.acting and not pruner.stopped
    pruner.update_regulariser(0.5)
    assert not pruner.acting and pruner.stopped
    state = pruner.state_dict()
    assert state["regulariser_stopped"] is True
    resumed = DynamicPruner(MLP(4, [10], 2), MLP(4, [6], 1), cfg, lr_total=0.5)
    resumed.load_state_dict(state)
    resumed.update_regulariser(0.3)  # the extended run's progress: before t_end again
    assert not resumed.acting
    assert resumed.regularise() == 0.0
    assert resumed.stats()["actor"]["lam"] == 0.0
    old = {k: v for k, v in state.items() if k != "regulariser_stopped"}
    fresh = DynamicPruner(MLP(4, [10], 2), MLP(4, [6], 1), cfg, lr_total=0.5)
    fresh.load_state_dict(old)  # a checkpoint from before the key: not stopped
    fresh.update_regulariser(0.3)
    assert fresh.acting


def _ratio_pruner(mlp: MLP, compensate: str, ratio: float) -> NetworkPruner:
    cfg = _cfg(mode="ratio", ratio_final=ratio, t_start=0.0, t_end=0.5, max_prune_frac=1.0,
               min_alive=1, compensate=compensate)
    return NetworkPruner("actor", mlp, 1.0, cfg, True)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("compensate", ["mean", "lstsq"])
def test_compensation_keeps_the_batch_mean_output_through_every_layer(compensate: str,
                                                                     activation: str
                                                                     ) -> None:
    # each layer after a cut is refitted, with an intercept, to what it received before
    # the step; the last fit is the output layer's, so the batch-mean output is kept
    # exactly, two pruning steps in a row (the first one's neurons still masked, not
    # compacted), while the plain cut moves it
    x = torch.randn(256, 3, generator=torch.Generator().manual_seed(5)) + 0.5
    errors = {}
    for how in ("none", compensate):
        torch.manual_seed(6)
        mlp = MLP(3, [16, 12], 2, activation=activation, out_gain=1.0)
        cfg = _cfg(mode="ratio", ratio_final=0.75, t_start=0.0, t_end=1.0,
                   max_prune_frac=1.0, min_alive=1, compensate=how,
                   compact_in_training=False)
        pruner = NetworkPruner("actor", mlp, 1.0, cfg, True)
        errors[how] = []
        for t in (0.4, 1.0):
            before = mlp(x).detach()
            assert pruner.prune(t, None, inputs=x) > 0
            after = mlp(x).detach()
            _masked_entries_zero(mlp, pruner.masks.masks)
            errors[how].append((float((after.mean(0) - before.mean(0)).abs().max()),
                                float((after - before).square().mean())))
        assert pruner.masks.alive() == [4, 3]
    for (mean_err, sq_err), (mean_plain, sq_plain) in zip(errors[compensate],
                                                          errors["none"]):
        assert mean_err < 1e-5 < 1e-3 < mean_plain
        assert sq_err < sq_plain


@pytest.mark.parametrize("compensate", ["mean", "lstsq"])
def test_a_cut_below_refits_the_layers_above_it_too(compensate: str) -> None:
    # only hidden layer 0 loses neurons (layer 1 sits at min_alive); the output layer is
    # refitted as well, so the batch-mean output is still kept exactly
    x = torch.randn(256, 3, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(4)
    mlp = MLP(3, [16, 4], 2, out_gain=1.0)
    before = mlp(x).detach()
    cfg = _cfg(mode="ratio", ratio_final=0.75, t_start=0.0, t_end=1.0, max_prune_frac=1.0,
               min_alive=4, compensate=compensate)
    pruner = NetworkPruner("actor", mlp, 1.0, cfg, True)
    assert pruner.prune(1.0, None, inputs=x) == 12
    assert pruner.masks.alive() == [4, 4]
    torch.testing.assert_close(mlp(x).mean(0), before.mean(0), atol=1e-5, rtol=0)


def test_lstsq_fits_better_than_the_mean_through_two_layers() -> None:
    x = torch.randn(512, 4, generator=torch.Generator().manual_seed(1))
    errors = {}
    for how in ("none", "mean", "lstsq"):
        torch.manual_seed(2)
        mlp = MLP(4, [32, 32], 3, out_gain=1.0)
        before = mlp(x).detach()
        _ratio_pruner(mlp, how, 0.5).prune(1.0, None, inputs=x)
        errors[how] = float((mlp(x).detach() - before).square().mean())
    assert errors["lstsq"] < 0.5 * errors["mean"] < 0.5 * errors["none"]


@pytest.mark.parametrize("compensate", ["mean", "lstsq"])
def test_compensation_is_exact_for_constant_neurons_in_every_layer(compensate: str) -> None:
    # neurons with no input weights output tanh(bias) whatever the observation; cutting
    # them with compensation leaves every output unchanged, layer after layer
    torch.manual_seed(7)
    mlp = MLP(3, [8, 6], 2, out_gain=1.0)
    with torch.no_grad():
        for layer, dead in ((0, [1, 4, 6, 7]), (1, [0, 2, 5])):
            mlp.layers[layer].weight[dead] = 0.0
            mlp.layers[layer].bias[dead] = 0.3
            mlp.layers[layer + 1].weight[:, dead] *= 0.01  # lowest importance
    x = torch.randn(64, 3)
    before = mlp(x).detach()
    pruner = _ratio_pruner(mlp, compensate, 0.5)
    assert pruner.prune(1.0, None, inputs=x) == 7
    assert [torch.nonzero(m == 0).flatten().tolist() for m in pruner.masks.masks] == \
        [[1, 4, 6, 7], [0, 2, 5]]
    torch.testing.assert_close(mlp(x), before, atol=1e-5, rtol=0)
    _masked_entries_zero(mlp, pruner.masks.masks)


def test_lstsq_moves_a_duplicate_neuron_onto_its_twin_with_the_ridge_by_hand() -> None:
    # hidden neuron 1 computes what neuron 0 computes and is cut: the one kept neuron's
    # outgoing weights gain w1 / (1 + 1e-3), the ridge being 1e-3 of the gram's diagonal
    torch.manual_seed(11)
    x = torch.randn(512, 3)
    mlp = MLP(3, [2], 2, out_gain=1.0)
    with torch.no_grad():
        mlp.layers[0].weight[1] = mlp.layers[0].weight[0]
        mlp.layers[0].bias[1] = mlp.layers[0].bias[0]
        mlp.layers[1].weight[:, 1] = 0.05 * mlp.layers[1].weight[:, 0].sign()
    w0, w1 = mlp.layers[1].weight[:, 0].clone(), mlp.layers[1].weight[:, 1].clone()
    b = mlp.layers[1].bias.clone()
    before = mlp(x).detach()
    pruner = _ratio_pruner(mlp, "lstsq", 0.5)
    assert pruner.prune(1.0, None, inputs=x) == 1
    assert pruner.masks.masks[0].tolist() == [1.0, 0.0]
    torch.testing.assert_close(mlp.layers[1].weight[:, 0], w0 + w1 / 1.001, atol=1e-6, rtol=0)
    # the intercept takes the ridge's shrinkage of the mean: (w1 - w1 / 1.001) mean(a0)
    a0 = torch.tanh(x @ mlp.layers[0].weight[0] + mlp.layers[0].bias[0]).mean()
    torch.testing.assert_close(mlp.layers[1].bias, b + (w1 - w1 / 1.001) * a0, atol=1e-6,
                               rtol=0)
    assert float((mlp(x).detach() - before).abs().max()) < 1e-4


def test_compensation_needs_inputs_and_the_setting() -> None:
    # without inputs, or with compensate none, pruning is the plain cut
    torch.manual_seed(8)
    x = torch.randn(32, 3)
    results = []
    for how, inputs in (("none", x), ("lstsq", None), ("none", None)):
        torch.manual_seed(9)
        mlp = MLP(3, [10, 10], 2, out_gain=1.0)
        _ratio_pruner(mlp, how, 0.6).prune(1.0, None, inputs=inputs)
        results.append(mlp(x).detach())
    torch.testing.assert_close(results[0], results[2], atol=0, rtol=0)
    torch.testing.assert_close(results[1], results[2], atol=0, rtol=0)


def test_compensate_must_be_a_known_choice() -> None:
    with pytest.raises(ValueError, match="pruning.compensate.*'median'"):
        PruningConfig(compensate="median")


def _gauss_kl(before: torch.Tensor) -> Callable[[torch.Tensor], float]:
    # KL between unit-std Gaussians with means before and out, summed over dims, mean over B
    return lambda out: float(0.5 * (out.detach() - before).square().sum(-1).mean())


@pytest.mark.parametrize("compensate", ["none", "lstsq"])
def test_kl_budget_cuts_the_largest_share_within_it(compensate: str) -> None:
    x = torch.randn(256, 3, generator=torch.Generator().manual_seed(1))
    cfg = _cfg(mode="ratio", ratio_final=0.75, t_start=0.0, t_end=0.5, max_prune_frac=1.0,
               min_alive=1, compensate=compensate)

    def fresh() -> tuple[MLP, NetworkPruner, torch.Tensor]:
        torch.manual_seed(2)
        mlp = MLP(3, [16, 16], 2, out_gain=1.0)
        return mlp, NetworkPruner("actor", mlp, 1.0, cfg, True), mlp(x).detach()

    mlp, free, before = fresh()  # no budget: every candidate, 12 + 12
    assert free.prune(1.0, None, inputs=x) == 24
    full_kl = _gauss_kl(before)(mlp(x))
    mlp, pruner, before = fresh()
    assert pruner.prune(1.0, None, inputs=x, kl_of=_gauss_kl(before), kl_budget=1e3) == 24
    mlp, pruner, before = fresh()  # nothing fits: nothing cut, the net untouched
    state = {k: v.clone() for k, v in mlp.state_dict().items()}
    assert pruner.prune(1.0, None, inputs=x, kl_of=_gauss_kl(before), kl_budget=1e-12) == 0
    assert pruner.masks.alive() == [16, 16]
    pruner.masks.apply_to_weights()  # the masks' own bookkeeping was restored too
    assert not pruner.masks.any_masked
    for key, value in mlp.state_dict().items():
        assert torch.equal(value, state[key]), key
    # a budget between: the shares tried are 12, 6, 3, 1 per layer (lowest importance
    # first); the one taken is within the budget, the one before it was not
    kls = {}
    for n in (12, 6, 3, 1):
        mlp, pruner, before = fresh()
        cuts = [torch.argsort(s.detach(), stable=True)[:n] for s in neuron_importance(mlp)]
        with torch.no_grad():
            pruner._cut(cuts, x)
        kls[n] = _gauss_kl(before)(mlp(x))
    assert kls[12] == pytest.approx(full_kl)
    budget = (kls[6] + kls[12]) / 2
    assert kls[6] < budget < kls[12]
    mlp, pruner, before = fresh()
    assert pruner.prune(1.0, None, inputs=x, kl_of=_gauss_kl(before), kl_budget=budget) == 12
    assert pruner.masks.alive() == [10, 10]
    assert _gauss_kl(before)(mlp(x)) == pytest.approx(kls[6])
    # the threshold recorded is the importance of the lowest neuron kept
    for i, s in enumerate(neuron_importance(fresh()[0])):
        assert pruner.thresholds[i] == pytest.approx(float(s.detach().sort().values[6]))
    _masked_entries_zero(mlp, pruner.masks.masks)


def test_kl_budget_holds_until_t_end_plus_the_lag_and_spares_the_critic() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    cfg = _cfg(mode="ratio", ratio_final=0.5, t_start=0.0, t_end=0.5, max_prune_frac=1.0,
               prune_every=1, kl_budget=1e-12, guard_max_lag=0.2)
    actor, critic = MLP(4, [10], 2), MLP(4, [10], 1)
    pruner = DynamicPruner(actor, critic, cfg)
    before = actor(x).detach()
    assert pruner.step(1, 0.6, None, inputs=x, kl_of=_gauss_kl(before)) == 5  # critic only
    assert (actor.hidden_sizes, critic.hidden_sizes) == ([10], [5])
    assert pruner.step(2, 0.7, None, inputs=x, kl_of=_gauss_kl(before)) == 5  # past 0.5 + 0.2
    assert actor.hidden_sizes == [5]


def test_kl_budget_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="pruning.kl_budget.*-0.1"):
        PruningConfig(kl_budget=-0.1)
    with pytest.raises(ValueError, match="pruning.guard_max_lag"):
        PruningConfig(kl_budget=1e-3, t_end=0.8, guard_max_lag=0.2)
    PruningConfig(kl_budget=1e-3, t_end=0.6, guard_max_lag=0.2)


def test_kl_budget_deadline_reads_training_progress_not_the_guards_clock() -> None:
    # the guard holds the ramp's clock back 0.15 of progress; the budget still ends at
    # t_end + guard_max_lag in training progress, where the clock is still before it
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    cfg = _cfg(mode="ratio", ratio_final=0.5, t_start=0.0, t_end=0.5, max_prune_frac=1.0,
               kl_budget=1e-12, guard=0.9, guard_max_lag=0.2, prune_critic=False)
    actor, critic = MLP(4, [10], 2), MLP(4, [10], 1)
    pruner = DynamicPruner(actor, critic, cfg)
    kl = _gauss_kl(actor(x).detach())
    assert pruner.step(1, 0.05, None, 0.0, 100.0, x, kl) == 0  # the budget blocks every cut
    for update, p in ((2, 0.10), (3, 0.15), (4, 0.20)):  # returns far below 0.9 x best
        assert pruner.step(update, p, None, p - 0.05, 10.0, x, kl) == 0
    assert pruner.clock.held == pytest.approx(0.15)
    assert pruner.step(5, 0.69, None, 0.20, 100.0, x, kl) == 0  # progress 0.69 < 0.7
    assert pruner.clock.clock(0.71) < 0.7
    assert pruner.step(6, 0.71, None, 0.69, 100.0, x, kl) == 5  # 0.71 >= 0.5 + 0.2
    assert actor.hidden_sizes == [5]
