"""The MLP that actor and critic are made of, and its size and cost (weights, MACs).

Below both ``rl/`` (which trains it) and ``pruning/`` (which prunes and compacts it), so
neither imports the other for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def layer_init(layer: nn.Linear, gain: float) -> nn.Linear:
    """Orthogonal weights, zero bias (the PPO implementation-details recipe)."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, 0.0)
    return layer


class MLP(nn.Module):
    """A stack of Linear layers with one activation between them; the last layer is linear.

    ``layers[l]`` maps hidden layer l-1 to hidden layer l, so hidden neuron j of hidden layer
    l owns ``layers[l].weight[j]``, ``layers[l].bias[j]`` and ``layers[l + 1].weight[:, j]``.
    Compaction (pruning/compaction.py) shrinks the layers in place: the same Linear modules
    get smaller Parameters, and ``hidden_sizes`` follows their ``out_features``.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int,
                 activation: str = "tanh", out_gain: float = 1.0,
                 hidden_gain: float = float(np.sqrt(2))) -> None:
        super().__init__()
        sizes = [in_dim, *hidden, out_dim]
        self.activation = activation
        self.layers = nn.ModuleList(
            layer_init(nn.Linear(a, b), out_gain if i == len(sizes) - 2 else hidden_gain)
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
        )
        self.act = _ACTIVATIONS[activation]()

    @property
    def hidden_sizes(self) -> list[int]:
        """Widths of the hidden layers."""
        return [layer.out_features for layer in self.layers[:-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the network."""
        # functional calls: slicing a ModuleList or calling modules costs more than the
        # maths at the batch sizes of a rollout
        last = len(self.layers) - 1
        act = torch.tanh if self.activation == "tanh" else torch.relu
        for i, layer in enumerate(self.layers):
            x = F.linear(x, layer.weight, layer.bias)
            if i < last:
                x = act(x)
        return x


def params_of_sizes(sizes: list[int]) -> int:
    """Weights and biases of an MLP with layer widths ``sizes`` (input, hidden..., output)."""
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def macs_of_sizes(sizes: list[int]) -> int:
    """Multiply-accumulates of one forward pass of an MLP with layer widths ``sizes``."""
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def count_params(mlp: MLP) -> int:
    """Every weight and bias of the MLP's Linear layers."""
    return sum(layer.weight.numel() + layer.bias.numel() for layer in mlp.layers)


def macs(mlp: nn.Module) -> int:
    """Multiply-accumulates of one forward pass (batch 1) through the Linear layers."""
    return sum(m.in_features * m.out_features for m in mlp.modules() if isinstance(m, nn.Linear))
