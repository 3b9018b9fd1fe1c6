"""Neuron importance s_j and normalised importance r_j (docs/method.md, section 1)."""

from __future__ import annotations

import torch

from dsp_driving.modules.mlp import MLP


def neuron_importance(mlp: MLP, squares: list[torch.Tensor] | None = None
                      ) -> list[torch.Tensor]:
    """Importance s_j of every hidden neuron, one vector per hidden layer.

    s_j = ||W_l[j, :]||^2 + b_l[j]^2 + ||W_{l+1}[:, j]||^2: the squared norm of the neuron's
    group (incoming row, bias, outgoing column). ``squares`` are the layers' squared weight
    matrices when the caller already has them. Differentiable.
    """
    layers = mlp.layers
    sq = [layer.weight.square() for layer in layers] if squares is None else squares
    return [sq[i].sum(1) + layers[i].bias.square() + sq[i + 1].sum(0)
            for i in range(len(layers) - 1)]


def alive_mean(s: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean(s_k over alive k) of one layer (1 when no neuron is alive)."""
    alive = mask > 0
    return s[alive].mean() if bool(alive.any()) else s.new_tensor(1.0)


def relative_importance(s: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """r_j = s_j / mean(s_k over alive k in the layer); masked neurons get 0."""
    return s / alive_mean(s, mask) * mask
