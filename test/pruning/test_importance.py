"""Neuron importance s_j and normalised importance r_j by hand."""

from __future__ import annotations

from pruning_samples import hand_net
import pytest
import torch

from dsp_driving.modules.mlp import MLP
from dsp_driving.pruning import neuron_importance, relative_importance
from dsp_driving.pruning.importance import alive_mean


def test_neuron_importance_by_hand() -> None:
    (s,) = neuron_importance(hand_net())
    # s_0 = 1 + 4 + 1 (bias) + 1 = 7; s_1 = 0 + 1 + 0 + 4 = 5; s_2 = 0.25 + 0 + 0 + 0.25 = 0.5
    assert s.tolist() == [7.0, 5.0, 0.5]
    assert s.requires_grad


def test_neuron_importance_from_given_squares_is_the_same() -> None:
    torch.manual_seed(0)
    mlp = MLP(3, [5, 4], 2)
    squares = [layer.weight.square() for layer in mlp.layers]
    for a, b in zip(neuron_importance(mlp), neuron_importance(mlp, squares), strict=True):
        assert torch.equal(a, b)
        assert a.shape == b.shape


def test_relative_importance_by_hand() -> None:
    s = torch.tensor([7.0, 5.0, 0.5])
    # all alive: mean = 12.5 / 3
    assert relative_importance(s, torch.ones(3)).tolist() == pytest.approx(
        [7.0 * 3 / 12.5, 5.0 * 3 / 12.5, 0.5 * 3 / 12.5], abs=1e-6)
    # neuron 1 masked: mean over alive {7, 0.5} = 3.75; r_1 = 0
    mask = torch.tensor([1.0, 0.0, 1.0])
    assert alive_mean(s, mask).item() == 3.75
    assert relative_importance(s, mask).tolist() == pytest.approx([7.0 / 3.75, 0.0,
                                                                   0.5 / 3.75], abs=1e-6)
    assert alive_mean(s, torch.zeros(3)).item() == 1.0  # no neuron alive
