"""The regulariser R as a differentiable autograd tensor: the oracle of the closed form.

Training adds dR/dtheta in closed form (pruning/regulariser.py:
accumulate_regulariser_grad); the tests compare it with autograd through these functions.
"""

from __future__ import annotations

import torch

from dsp_driving.modules.mlp import MLP
from dsp_driving.pruning import DynamicPruner, NetworkPruner, neuron_importance
from dsp_driving.pruning.regulariser import group_weights


def weighted_group_norms(mlp: MLP, weights: list[torch.Tensor], eps: float) -> torch.Tensor:
    """sum_l sum_j weights_j * sqrt(s_j + eps): R once group_weights() is known."""
    total = mlp.layers[0].weight.new_zeros(())
    for s, w in zip(neuron_importance(mlp), weights):
        total = total + (w * torch.sqrt(s + eps)).sum()
    return total


def group_sparse_regulariser(mlp: MLP, masks: list[torch.Tensor], coeffs: list[torch.Tensor],
                             eps: float) -> torch.Tensor:
    """R = sum_l sum_{j alive} c_j * sqrt(|g_j|) * sqrt(s_j + eps) (|g_j| of the alive group).

    With c_j = 1 for alive neurons this is plain group lasso (the ablation).
    """
    return weighted_group_norms(mlp, group_weights(mlp, masks, coeffs), eps)


def network_regulariser(p: NetworkPruner) -> torch.Tensor:
    """R of one pruned network with its current coefficients and group sizes (no lambda)."""
    return weighted_group_norms(p.mlp, p._weights, p.cfg.eps)


def pruner_loss(pruner: DynamicPruner) -> torch.Tensor | None:
    """lambda_actor * R(actor) + lambda_critic * R(critic); None when nothing is regularised."""
    terms = [p.lam * network_regulariser(p) for p in pruner.active if p.lam != 0]
    return sum(terms[1:], terms[0]) if terms else None
