"""Small networks with hand-set weights or masks, shared by the pruning tests."""

from __future__ import annotations

import torch

from dsp_driving.modules.mlp import MLP
from dsp_driving.pruning.masks import NeuronMasks


def hand_net() -> MLP:
    """MLP(2, [3], 1) with s = [7, 5, 0.5]."""
    mlp = MLP(2, [3], 1)
    with torch.no_grad():
        mlp.layers[0].weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 1.0], [0.5, 0.0]]))
        mlp.layers[0].bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
        mlp.layers[1].weight.copy_(torch.tensor([[1.0, 2.0, 0.5]]))
        mlp.layers[1].bias.copy_(torch.tensor([0.3]))
    return mlp


def masked_net(dtype: torch.dtype = torch.float64) -> tuple[MLP, NeuronMasks]:
    """MLP(5, [7, 6], 3) with neuron 2 of layer 0 and neurons 0, 4 of layer 1 masked."""
    torch.manual_seed(0)
    mlp = MLP(5, [7, 6], 3).to(dtype)
    masks = NeuronMasks(mlp)
    masks.mask_neurons(0, torch.tensor([2]))
    masks.mask_neurons(1, torch.tensor([0, 4]))
    masks.apply_to_weights()
    return mlp, masks
