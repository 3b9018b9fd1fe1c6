"""Neuron groups, importance and the neuron-importance group-sparse regulariser (method.md)."""

from __future__ import annotations

import torch

from dsp_driving.rl.networks import MLP


def neuron_importance(mlp: MLP) -> list[torch.Tensor]:
    """Importance s_j of every hidden neuron, one vector per hidden layer.

    s_j = ||W_l[j, :]||^2 + b_l[j]^2 + ||W_{l+1}[:, j]||^2: the squared norm of the neuron's
    group (incoming row, bias, outgoing column). Differentiable.
    """
    out = []
    for l in range(len(mlp.layers) - 1):
        w_in, b_in = mlp.layers[l].weight, mlp.layers[l].bias
        w_out = mlp.layers[l + 1].weight
        out.append(w_in.square().sum(1) + b_in.square() + w_out.square().sum(0))
    return out


def group_sizes(mlp: MLP, masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """|g_j| per hidden layer: alive inputs + 1 (bias) + alive outputs of the neuron's group.

    Masked neighbours are fixed at zero and leave the group, so |g_j| is the size the group
    has in the compacted network.
    """
    alive = [float(mlp.layers[0].in_features)] + [float(m.sum()) for m in masks] + \
        [float(mlp.layers[-1].out_features)]
    return [torch.full_like(masks[l], alive[l] + 1.0 + alive[l + 2]) for l in range(len(masks))]


def adaptive_coefficients(importance: list[torch.Tensor], masks: list[torch.Tensor],
                          c_min: float, c_max: float) -> list[torch.Tensor]:
    """c_j = clip(1 / r_j, c_min, c_max), r_j = s_j / mean(s over alive neurons of the layer).

    Computed without gradient; masked neurons get 0.
    """
    coeffs = []
    with torch.no_grad():
        for s, m in zip(importance, masks):
            alive = m > 0
            mean = s[alive].mean() if bool(alive.any()) else s.new_tensor(1.0)
            inv_r = mean / s.clamp_min(torch.finfo(s.dtype).tiny)  # 1 / r_j
            c = torch.clamp(inv_r, c_min, c_max)
            coeffs.append(c * m)
    return coeffs


def group_sparse_regulariser(mlp: MLP, masks: list[torch.Tensor], coeffs: list[torch.Tensor],
                             eps: float) -> torch.Tensor:
    """R = sum_l sum_{j alive} c_j * sqrt(|g_j|) * sqrt(s_j + eps).

    With c_j = 1 for alive neurons this is plain group lasso (the ablation).
    """
    total = mlp.layers[0].weight.new_zeros(())
    for s, m, c, g in zip(neuron_importance(mlp), masks, coeffs, group_sizes(mlp, masks)):
        total = total + (c * m * g.sqrt() * torch.sqrt(s + eps)).sum()
    return total
