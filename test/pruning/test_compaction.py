"""Physical compaction: the compact MLP computes the masked MLP's function with fewer weights."""

from __future__ import annotations

import pytest
import torch

from dsp_driving.modules.mlp import MLP, count_params, macs
from dsp_driving.pruning import compact_mlp
from dsp_driving.pruning.compaction import alive_indices, compact_in_place
from dsp_driving.pruning.masks import NeuronMasks


def _masked(activation: str, seed: int) -> tuple[MLP, NeuronMasks]:
    torch.manual_seed(seed)
    mlp = MLP(5, [12, 10, 8], 3, activation)
    with torch.no_grad():
        for layer in mlp.layers:
            layer.bias.uniform_(-0.5, 0.5)  # non-zero biases make the parity meaningful
    masks = NeuronMasks(mlp)
    masks.mask_neurons(0, torch.tensor([1, 4, 5, 10, 11]))  # 7 alive
    masks.mask_neurons(1, torch.tensor([0, 1, 2, 3, 5, 6, 8, 9]))  # cut to 2 (min_alive)
    masks.mask_neurons(2, torch.tensor([0, 7, 3]))  # 5 alive
    masks.apply_to_weights()
    return mlp, masks


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_compact_matches_masked_network(activation: str) -> None:
    mlp, masks = _masked(activation, seed=0)
    compact = compact_mlp(mlp, masks.masks)
    assert compact.hidden_sizes == [7, 2, 5]
    assert compact.activation == activation
    x = torch.randn(1000, 5) * 3.0
    with torch.no_grad():
        diff = (mlp(x) - compact(x)).abs().max().item()
    assert diff <= 1e-5
    assert count_params(compact) == masks.weights_alive()
    assert masks.weights_alive() == 5 * 7 + 7 + 7 * 2 + 2 + 2 * 5 + 5 + 5 * 3 + 3
    assert masks.weights_total() == count_params(mlp)
    assert macs(compact) == 5 * 7 + 7 * 2 + 2 * 5 + 5 * 3
    assert macs(mlp) == 5 * 12 + 12 * 10 + 10 * 8 + 8 * 3


def test_compact_keeps_alive_weights_in_order() -> None:
    mlp, masks = _masked("tanh", seed=1)
    compact = compact_mlp(mlp, masks.masks)
    keep0 = torch.tensor([0, 2, 3, 6, 7, 8, 9])
    keep1 = torch.tensor([4, 7])
    assert torch.equal(compact.layers[0].weight, mlp.layers[0].weight[keep0])
    assert torch.equal(compact.layers[1].weight, mlp.layers[1].weight[keep1][:, keep0])
    assert torch.equal(compact.layers[1].bias, mlp.layers[1].bias[keep1])


def test_compact_in_place_keeps_the_modules_and_shrinks_their_parameters() -> None:
    mlp, masks = _masked("relu", seed=3)
    x = torch.randn(1000, 5) * 3.0
    with torch.no_grad():
        expected = mlp(x)
    layers, old = list(mlp.layers), [p for p in mlp.parameters()]
    names = [n for n, _ in mlp.named_parameters()]
    compact_in_place(mlp, alive_indices(mlp, masks.masks))
    assert all(a is b for a, b in zip(mlp.layers, layers, strict=True))
    assert mlp.hidden_sizes == [7, 2, 5]
    assert [(m.in_features, m.out_features) for m in mlp.layers] == \
        [(5, 7), (7, 2), (2, 5), (5, 3)]
    assert all(m.weight.shape == (m.out_features, m.in_features) for m in mlp.layers)
    assert all(m.bias.shape == (m.out_features,) for m in mlp.layers)
    assert [n for n, _ in mlp.named_parameters()] == names  # same slots, same order
    assert not {id(p) for p in old} & {id(p) for p in mlp.parameters()}
    assert all(p.requires_grad and p.grad is None for p in mlp.parameters())
    assert count_params(mlp) == masks.weights_alive()
    with torch.no_grad():
        assert (mlp(x) - expected).abs().max().item() <= 1e-5


def test_compact_mlp_leaves_the_network_whole() -> None:
    mlp, masks = _masked("tanh", seed=4)
    params = list(mlp.parameters())
    compact = compact_mlp(mlp, masks.masks)
    assert compact is not mlp and compact.hidden_sizes == [7, 2, 5]
    assert mlp.hidden_sizes == [12, 10, 8]
    assert all(a is b for a, b in zip(mlp.parameters(), params, strict=True))
    assert not {id(p) for p in params} & {id(p) for p in compact.parameters()}


def test_compact_float64_and_unmasked() -> None:
    torch.manual_seed(2)
    mlp = MLP(3, [4], 2).double()
    compact = compact_mlp(mlp, [torch.ones(4, dtype=torch.float64)])
    assert compact.layers[0].weight.dtype == torch.float64
    x = torch.randn(10, 3, dtype=torch.float64)
    assert torch.equal(mlp(x), compact(x))


def test_compact_rejects_bad_masks() -> None:
    mlp = MLP(3, [4, 4], 2)
    with pytest.raises(ValueError, match="got 1 masks for 2 hidden layers"):
        compact_mlp(mlp, [torch.ones(4)])
    with pytest.raises(ValueError, match="no alive neuron"):
        compact_mlp(mlp, [torch.ones(4), torch.zeros(4)])
    with pytest.raises(ValueError, match="got 1 index sets for 2 hidden layers"):
        compact_in_place(mlp, [torch.arange(4)])
    with pytest.raises(ValueError, match="no alive neuron"):
        compact_in_place(mlp, [torch.arange(4), torch.arange(0)])
    assert mlp.hidden_sizes == [4, 4]  # rejected before touching the network


def test_neuron_masks_bookkeeping() -> None:
    mlp = MLP(3, [4, 5], 2)
    masks = NeuronMasks(mlp)
    assert masks.alive() == [4, 5] and masks.totals() == [4, 5]
    assert not masks.any_masked
    assert masks.mask_neurons(1, torch.tensor([0, 2])) == 2
    assert masks.mask_neurons(1, torch.tensor([2, 3])) == 1  # 2 was already masked
    assert masks.mask_neurons(0, torch.tensor([], dtype=torch.long)) == 0
    assert masks.alive() == [4, 2] and masks.any_masked
    assert masks.weights_alive() == 3 * 4 + 4 + 4 * 2 + 2 + 2 * 2 + 2
    with pytest.raises(ValueError, match="do not match"):
        masks.load_state_dict([torch.ones(4)])
