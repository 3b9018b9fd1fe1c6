"""One-shot structured magnitude pruning: the compress-after-training route (the ``posthoc``
baseline of docs/experiments.md), with the same neuron importance s_j as the method.

Each hidden layer keeps the ``sizes[l]`` neurons of highest s_j, all scored on the trained
network at once; given a batch of the network's inputs, the layers above each cut are
refitted on it as the method's pruning steps refit theirs (refit.py, ``compensate``); then
the MLP is compacted in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dsp_driving.config import COMPENSATIONS, Compensation
from dsp_driving.modules.mlp import MLP
from dsp_driving.pruning.compaction import compact_in_place
from dsp_driving.pruning.importance import neuron_importance
from dsp_driving.pruning.refit import preactivations, refit_next_layer
from dsp_driving.validation import require


@torch.no_grad()
def top_neurons(mlp: MLP, sizes: Sequence[int]) -> list[torch.Tensor]:
    """The indices (ascending) of the ``sizes[l]`` neurons of highest importance s_j in each
    hidden layer l; ties go to the lower index."""
    hidden = mlp.hidden_sizes
    require(len(sizes) == len(hidden), "sizes", list(sizes),
            f"needs one size per hidden layer ({len(hidden)})")
    for i, (k, n) in enumerate(zip(sizes, hidden)):
        require(1 <= k <= n, f"sizes[{i}]", k, f"must be in [1, {n}] (the layer's width)")
    keep = []
    for s, k in zip(neuron_importance(mlp), sizes):
        order = torch.sort(s, descending=True, stable=True).indices
        keep.append(torch.sort(order[:k]).values)
    return keep


@torch.no_grad()
def prune_to_sizes(mlp: MLP, sizes: Sequence[int], inputs: torch.Tensor | None = None,
                   compensate: Compensation = "none") -> list[torch.Tensor]:
    """Shrink ``mlp`` in place to ``sizes`` hidden neurons per layer (``top_neurons``);
    returns the kept indices. With ``inputs`` ([B, in]) and ``compensate`` mean or lstsq,
    each layer above a cut is first refitted on the batch to the pre-activations it had
    before the cut, from the bottom up (each fit sees the cuts and fits below it)."""
    require(compensate in COMPENSATIONS, "pruning.compensate", compensate,
            f"must be one of {', '.join(COMPENSATIONS)}")
    require(compensate == "none" or inputs is not None, "inputs", None,
            f"the refit (compensate={compensate}) needs a batch of the network's inputs")
    keep = top_neurons(mlp, sizes)
    if inputs is not None and compensate != "none":
        _refit(mlp, keep, inputs, compensate)
    compact_in_place(mlp, keep)
    return keep


def _refit(mlp: MLP, keep: list[torch.Tensor], inputs: torch.Tensor, method: str) -> None:
    layers = mlp.layers
    targets = preactivations(mlp, inputs)  # before the cut
    x, changed = inputs, False
    for i, kept in enumerate(keep):
        mask = torch.zeros(layers[i].out_features, dtype=inputs.dtype, device=inputs.device)
        mask[kept] = 1.0
        x = mlp.act(torch.nn.functional.linear(x, layers[i].weight, layers[i].bias)) * mask
        changed = changed or kept.numel() < layers[i].out_features
        if changed:
            refit_next_layer(layers[i + 1], x, kept, targets[i + 1], method)
