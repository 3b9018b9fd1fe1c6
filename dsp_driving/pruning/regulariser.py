"""The neuron-importance group-sparse regulariser R and its gradient (docs/method.md).

R(theta) = sum_l sum_{j alive} c_j * sqrt(|g_j|) * sqrt(s_j + eps). Training never builds R
as an autograd graph: ``accumulate_regulariser_grad`` adds lambda * dR/dtheta in closed form.
The differentiable R it is tested against is test/pruning/regulariser_oracle.py.
"""

from __future__ import annotations

import torch

from dsp_driving.modules.mlp import MLP
from dsp_driving.pruning.importance import alive_mean, neuron_importance


def group_widths(mlp: MLP, dense_sizes: list[int], group_size: str) -> list[int] | None:
    """The layer widths |g_j| counts, by ``pruning.group_size``: ``alive`` (None: the alive
    widths, the group's size in the compacted network) or ``dense`` (the dense network's)."""
    if group_size == "dense":
        return [mlp.layers[0].in_features, *dense_sizes, mlp.layers[-1].out_features]
    return None


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


def importance_coefficients(importance: list[torch.Tensor], masks: list[torch.Tensor],
                            c_min: float, c_max: float) -> list[torch.Tensor]:
    """c_j = clip(1 / r_j, c_min, c_max), r_j = s_j / mean(s over alive neurons of the layer).

    The ``importance_weighted`` regulariser's coefficients (``group_lasso`` uses c_j = m_j).
    Computed without gradient; masked neurons get 0.
    """
    coeffs = []
    with torch.no_grad():
        for s, m in zip(importance, masks):
            inv_r = alive_mean(s, m) / s.clamp_min(torch.finfo(s.dtype).tiny)  # 1 / r_j
            coeffs.append(torch.clamp(inv_r, c_min, c_max) * m)
    return coeffs


def group_weights(mlp: MLP, masks: list[torch.Tensor], coeffs: list[torch.Tensor],
                  sizes: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """The constant factor c_j * m_j * sqrt(|g_j|) of every neuron's term of R.

    ``sizes`` gives |g_j| per hidden layer; default: group_sizes(mlp, masks).
    """
    sizes = group_sizes(mlp, masks) if sizes is None else sizes
    with torch.no_grad():
        return [c * m * g.sqrt() for c, m, g in zip(coeffs, masks, sizes)]


@torch.no_grad()
def regulariser_value(mlp: MLP, weights: list[torch.Tensor], eps: float) -> float:
    """R = sum_j weights_j * sqrt(s_j + eps), without touching any gradient."""
    return sum(float((w * torch.sqrt(s + eps)).sum())
               for w, s in zip(weights, neuron_importance(mlp)))


@torch.no_grad()
def accumulate_regulariser_grad(mlp: MLP, weights: list[torch.Tensor], eps: float,
                                scale: float) -> float:
    """Add ``scale * dR/dtheta`` to the parameters' .grad in closed form; returns R.

    ``weights`` are group_weights(), so R = sum_j weights_j * sqrt(s_j + eps). With
    a_j = weights_j / sqrt(s_j + eps): dR/dW_l[j, :] = a_j W_l[j, :], dR/db_l[j] = a_j b_l[j]
    and dR/dW_{l+1}[:, j] = a_j W_{l+1}[:, j]. Each weight matrix is squared once and no
    autograd graph is built, which keeps the regulariser cheap next to the PPO minibatch.
    """
    layers = mlp.layers
    sq = [layer.weight.square() for layer in layers]
    total = 0.0
    coef = []  # scale * a_j per hidden layer
    for w, s in zip(weights, neuron_importance(mlp, sq)):
        root = torch.sqrt(s + eps)
        total += float((w * root).sum())
        coef.append(w / root * scale)
    for i, layer in enumerate(layers):
        row = coef[i] if i < len(coef) else None  # neurons this layer feeds (its outputs)
        col = coef[i - 1] if i > 0 else None  # neurons it reads (its inputs)
        _add_group_grad(layer, row, col)
    return total


def _add_group_grad(layer: torch.nn.Linear, row: torch.Tensor | None,
                    col: torch.Tensor | None) -> None:
    """grad += a_row W (rows of the layer's own neurons) + W a_col (columns of its inputs)."""
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
