"""Group sizes, coefficients c_j, R by hand, and the closed-form gradient vs autograd."""

from __future__ import annotations

import math

from pruning_samples import hand_net, masked_net
import pytest
from regulariser_oracle import group_sparse_regulariser, network_regulariser, pruner_loss
import torch
from torch import nn

from dsp_driving.config import PruningConfig
from dsp_driving.modules.mlp import MLP
from dsp_driving.pruning import (
    DynamicPruner,
    NetworkPruner,
    accumulate_regulariser_grad,
    group_sizes,
    importance_coefficients,
    neuron_importance,
)
from dsp_driving.pruning.regulariser import group_weights, regulariser_value


def test_group_sizes_count_alive_inputs_bias_and_alive_outputs() -> None:
    ones = [torch.ones(3)]
    assert group_sizes(hand_net(), ones)[0].tolist() == [4.0, 4.0, 4.0]  # 2 in + 1 + 1 out
    deep = MLP(2, [3, 2], 1)
    a, b = group_sizes(deep, [torch.tensor([1.0, 0.0, 1.0]), torch.ones(2)])
    assert a.tolist() == [5.0, 5.0, 5.0]  # 2 inputs + 1 + 2 alive outputs
    assert b.tolist() == [4.0, 4.0]  # 2 alive inputs (of 3) + 1 + 1 output
    a, b = group_sizes(deep, [torch.ones(3), torch.tensor([0.0, 1.0])])
    assert a.tolist() == [4.0, 4.0, 4.0]  # 2 + 1 + 1 alive output (of 2)
    assert b.tolist() == [5.0, 5.0]  # 3 + 1 + 1


def test_importance_coefficients_by_hand() -> None:
    s = [torch.tensor([7.0, 5.0, 0.5])]
    # mean = 12.5 / 3; c = clip(mean / s, c_min, c_max)
    (c,) = importance_coefficients(s, [torch.ones(3)], c_min=0.7, c_max=5.0)
    mean = 12.5 / 3
    assert c.tolist() == pytest.approx([0.7, mean / 5.0, 5.0], abs=1e-6)
    assert mean / 7.0 < 0.7 and mean / 0.5 > 5.0  # both clips are exercised
    # Masked neuron 1: mean over alive {7, 0.5} = 3.75; its coefficient is 0.
    (c,) = importance_coefficients(s, [torch.tensor([1.0, 0.0, 1.0])], c_min=0.1, c_max=10.0)
    assert c.tolist() == pytest.approx([3.75 / 7.0, 0.0, 7.5], abs=1e-6)
    assert not c.requires_grad


def test_regulariser_value_importance_weighted_and_group_lasso_by_hand() -> None:
    mlp = hand_net()
    eps = 1e-6
    masks = [torch.ones(3)]
    coeffs = [torch.tensor([0.7, 12.5 / 15.0, 5.0])]
    reg = group_sparse_regulariser(mlp, masks, coeffs, eps)
    # sqrt(|g|) = sqrt(4) = 2 for every neuron
    expected = (0.7 * 2 * math.sqrt(7 + eps) + (12.5 / 15.0) * 2 * math.sqrt(5 + eps)
                + 5.0 * 2 * math.sqrt(0.5 + eps))
    assert reg.item() == pytest.approx(expected, rel=1e-6)
    # The closed form returns the same R.
    weights = group_weights(mlp, masks, coeffs)
    assert accumulate_regulariser_grad(mlp, weights, eps, 1.0) == pytest.approx(expected,
                                                                                rel=1e-6)
    # Plain group lasso: coefficients are the masks.
    lasso = group_sparse_regulariser(mlp, masks, [m.clone() for m in masks], eps)
    expected = 2 * (math.sqrt(7 + eps) + math.sqrt(5 + eps) + math.sqrt(0.5 + eps))
    assert lasso.item() == pytest.approx(expected, rel=1e-6)
    # A masked neuron contributes nothing, even with a non-zero coefficient left over.
    masked = group_sparse_regulariser(mlp, [torch.tensor([1.0, 0.0, 1.0])],
                                      [torch.ones(3)], eps)
    assert masked.item() == pytest.approx(2 * (math.sqrt(7 + eps) + math.sqrt(0.5 + eps)),
                                          rel=1e-6)


def test_regulariser_value_is_r_and_touches_no_gradient() -> None:
    mlp = hand_net()
    eps = 1e-6
    coeffs = [torch.tensor([0.7, 12.5 / 15.0, 5.0])]
    weights = group_weights(mlp, [torch.ones(3)], coeffs)
    expected = 2 * (0.7 * math.sqrt(7 + eps) + (12.5 / 15.0) * math.sqrt(5 + eps)
                    + 5.0 * math.sqrt(0.5 + eps))
    for p in mlp.parameters():
        p.grad = torch.full_like(p, 0.25)
    assert regulariser_value(mlp, weights, eps) == pytest.approx(expected, rel=1e-6)
    assert all(bool((p.grad == 0.25).all()) for p in mlp.parameters())
    # the masked neuron 1 (weight 0) leaves its term out
    masked = group_weights(mlp, [torch.tensor([1.0, 0.0, 1.0])], coeffs)
    assert regulariser_value(mlp, masked, eps) == pytest.approx(
        2 * (0.7 * math.sqrt(7 + eps) + 5.0 * math.sqrt(0.5 + eps)), rel=1e-6)


def test_network_pruner_coefficients_follow_the_regulariser_setting() -> None:
    mlp = hand_net()
    weighted = NetworkPruner("actor", mlp, 1.0, PruningConfig(c_min=0.7, c_max=5.0), True)
    weighted.update_regulariser()
    assert weighted.coeffs[0].tolist() == pytest.approx([0.7, 12.5 / 15.0, 5.0], abs=1e-6)
    lasso = NetworkPruner("actor", mlp, 1.0,
                          PruningConfig(regulariser="group_lasso", c_min=0.7, c_max=5.0), True)
    lasso.masks.mask_neurons(0, torch.tensor([2]))
    lasso.update_regulariser()
    assert lasso.coeffs[0].tolist() == [1.0, 1.0, 0.0]


def test_regularise_returns_the_lambda_weighted_sum_and_masks_gradients() -> None:
    torch.manual_seed(0)
    actor, critic = MLP(3, [5, 4], 2), MLP(3, [6], 1)
    # lambda per gradient step, both networks regularised (not the defaults)
    cfg = PruningConfig(lambda_units="step", lambda_actor=0.5, lambda_critic=0.25,
                        prune_critic=True)
    pruner = DynamicPruner(actor, critic, cfg)
    pruner.nets["actor"].masks.mask_neurons(0, torch.tensor([1]))
    pruner.update_regulariser()
    ra = network_regulariser(pruner.nets["actor"]).item()
    rc = network_regulariser(pruner.nets["critic"]).item()
    assert ra == pytest.approx(group_sparse_regulariser(
        actor, pruner.masks("actor"), pruner.nets["actor"].coeffs, cfg.eps).item(), rel=1e-6)
    assert pruner_loss(pruner).item() == pytest.approx(0.5 * ra + 0.25 * rc, rel=1e-6)
    assert pruner.regularise() == pytest.approx(0.5 * ra + 0.25 * rc, rel=1e-6)
    assert pruner.nets["actor"].last_reg == pytest.approx(ra, rel=1e-6)
    assert torch.count_nonzero(actor.layers[0].weight.grad[1]).item() == 0
    assert torch.count_nonzero(actor.layers[1].weight.grad[:, 1]).item() == 0
    off = DynamicPruner(actor, critic, PruningConfig(lambda_units="step", prune_critic=False,
                                                     lambda_actor=0.0))
    assert pruner_loss(off) is None
    assert off.regularise() == 0.0


def test_closed_form_regulariser_grad_equals_autograd() -> None:
    mlp, masks = masked_net()
    coeffs = importance_coefficients(neuron_importance(mlp), masks.masks, 0.1, 10.0)
    weights = group_weights(mlp, masks.masks, coeffs)
    reg = group_sparse_regulariser(mlp, masks.masks, coeffs, 1e-8)
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


def test_group_size_dense_uses_the_dense_group_size() -> None:
    mlp, masks = masked_net(torch.float32)  # 5 -> [7, 6] -> 3, alive [6, 4]
    alive = NetworkPruner("a", mlp, 1.0, PruningConfig(regulariser="group_lasso"), True)
    dense = NetworkPruner("a", mlp, 1.0, PruningConfig(regulariser="group_lasso",
                                                       group_size="dense"), True)
    for p in (alive, dense):
        p.masks.load_state_dict([m.clone() for m in masks.masks])
        p.update_regulariser()
    # layer 0 neuron 0: alive group 5 + 1 + 4 = 10; dense group 5 + 1 + 6 = 12
    assert alive._weights[0][0].item() == pytest.approx(10 ** 0.5)
    assert dense._weights[0][0].item() == pytest.approx(12 ** 0.5)
    # layer 1 neuron 1: alive 6 + 1 + 3 = 10; dense 7 + 1 + 3 = 11; masked neuron 0 is 0
    assert alive._weights[1][1].item() == pytest.approx(10 ** 0.5)
    assert dense._weights[1][1].item() == pytest.approx(11 ** 0.5)
    assert dense._weights[1][0].item() == 0.0


class _Regulariser(nn.Module):
    """R(theta) of a wrapped MLP as a module, so functional_call can swap its weights."""

    def __init__(self, mlp: MLP, masks: list[torch.Tensor], coeffs: list[torch.Tensor]) -> None:
        super().__init__()
        self.mlp, self.masks, self.coeffs = mlp, masks, coeffs

    def forward(self) -> torch.Tensor:
        return group_sparse_regulariser(self.mlp, self.masks, self.coeffs, 1e-6)


@pytest.mark.parametrize("masked", [False, True])
def test_regulariser_oracle_gradcheck_float64(masked: bool) -> None:
    torch.manual_seed(0)
    mlp = MLP(3, [4, 3], 2).double()
    masks = [torch.ones(4, dtype=torch.float64), torch.ones(3, dtype=torch.float64)]
    if masked:
        masks[0][1] = 0.0
        masks[1][2] = 0.0
    coeffs = importance_coefficients([s.detach() for s in neuron_importance(mlp)], masks,
                                     0.1, 10.0)
    module = _Regulariser(mlp, masks, coeffs)
    names = [n for n, _ in module.named_parameters()]
    inputs = tuple(p.detach().clone().requires_grad_() for p in module.parameters())
    assert len(inputs) == 6 and all(t.dtype == torch.float64 for t in inputs)

    def reg(*params: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(module, dict(zip(names, params)), ())

    assert torch.autograd.gradcheck(reg, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)
    if masked:  # the masked neuron's own group term contributes no gradient to its row
        grads = torch.autograd.grad(reg(*inputs), inputs, allow_unused=True)
        # A masked neuron's incoming row appears only in its own (masked) group term.
        assert torch.equal(grads[0][1], torch.zeros(3, dtype=torch.float64))
        assert grads[0][0].abs().sum().item() > 0.0
        assert grads[5] is None  # the output bias is in no group
