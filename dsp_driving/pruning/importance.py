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
    for i in range(len(mlp.layers) - 1):
        w_in, b_in = mlp.layers[i].weight, mlp.layers[i].bias
        w_out = mlp.layers[i + 1].weight
        out.append(w_in.square().sum(1) + b_in.square() + w_out.square().sum(0))
    return out


def group_sizes(mlp: MLP, masks: list[torch.Tensor],
                widths: list[int] | None = None) -> list[torch.Tensor]:
    """|g_j| per hidden layer: inputs + 1 (bias) + outputs of the neuron's group.

    ``widths`` are the layer widths [input, hidden..., output] to count; by default the
    alive ones: masked neighbours are fixed at zero and leave the group, so |g_j| is the size
    the group has in the compacted network.
    """
    if widths is None:
        widths = [mlp.layers[0].in_features, *(int(m.sum()) for m in masks),
                  mlp.layers[-1].out_features]
    return [torch.full_like(masks[i], widths[i] + 1.0 + widths[i + 2])
            for i in range(len(masks))]


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


def group_weights(mlp: MLP, masks: list[torch.Tensor], coeffs: list[torch.Tensor],
                  sizes: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """The constant factor c_j * m_j * sqrt(|g_j|) of every neuron's regulariser term.

    ``sizes`` gives |g_j| per hidden layer; default: group_sizes(mlp, masks).
    """
    sizes = group_sizes(mlp, masks) if sizes is None else sizes
    with torch.no_grad():
        return [c * m * g.sqrt() for c, m, g in zip(coeffs, masks, sizes)]


def weighted_group_norms(mlp: MLP, weights: list[torch.Tensor], eps: float) -> torch.Tensor:
    """sum_l sum_j weights_j * sqrt(s_j + eps): R once group_weights() is known."""
    total = mlp.layers[0].weight.new_zeros(())
    for s, w in zip(neuron_importance(mlp), weights):
        total = total + (w * torch.sqrt(s + eps)).sum()
    return total


def group_sparse_regulariser(mlp: MLP, masks: list[torch.Tensor], coeffs: list[torch.Tensor],
                             eps: float) -> torch.Tensor:
    """R = sum_l sum_{j alive} c_j * sqrt(|g_j|) * sqrt(s_j + eps).

    With c_j = 1 for alive neurons this is plain group lasso (the ablation).
    """
    return weighted_group_norms(mlp, group_weights(mlp, masks, coeffs), eps)


@torch.no_grad()
def accumulate_regulariser_grad(mlp: MLP, weights: list[torch.Tensor], eps: float,
                                scale: float) -> float:
    """Add ``scale * dR/dtheta`` to the parameters' .grad in closed form; returns R.

    With a_j = weights_j / sqrt(s_j + eps), dR/dW_l[j, :] = a_j W_l[j, :],
    dR/db_l[j] = a_j b_l[j] and dR/dW_{l+1}[:, j] = a_j W_{l+1}[:, j]. Each weight matrix is
    squared once and no autograd graph is built, which keeps the regulariser cheap next to
    the PPO minibatch (``weighted_group_norms`` is the autograd reference it is tested on).
    """
    layers = mlp.layers
    sq = [layer.weight.square() for layer in layers]
    total = 0.0
    coef = []  # a_j per hidden layer
    for i, w in enumerate(weights):
        s = sq[i].sum(1) + layers[i].bias.square() + sq[i + 1].sum(0)
        root = torch.sqrt(s + eps)
        total += float((w * root).sum())
        coef.append(w / root * scale)
    for i, layer in enumerate(layers):
        row = coef[i] if i < len(coef) else None  # neurons this layer feeds (its outputs)
        col = coef[i - 1] if i > 0 else None  # neurons it reads (its inputs)
        if layer.weight.grad is None:
            layer.weight.grad = torch.zeros_like(layer.weight)
        if layer.bias.grad is None:
            layer.bias.grad = torch.zeros_like(layer.bias)
        if row is not None and col is not None:
            factor = row.unsqueeze(1) + col.unsqueeze(0)
        elif row is not None:
            factor = row.unsqueeze(1)
        else:
            factor = col.unsqueeze(0)
        layer.weight.grad.addcmul_(layer.weight, factor)
        if row is not None:
            layer.bias.grad.addcmul_(layer.bias, row)
    return total
