"""One-shot structured magnitude pruning: the compress-after-training route (the ``posthoc``
baseline of docs/experiments.md), with the same neuron importance s_j as the method.

Each hidden layer keeps the ``sizes[l]`` neurons of highest s_j, all scored on the trained
network at once, and the MLP is compacted in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dsp_driving.modules.mlp import MLP
from dsp_driving.pruning.compaction import compact_in_place
from dsp_driving.pruning.importance import neuron_importance
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


def prune_to_sizes(mlp: MLP, sizes: Sequence[int]) -> list[torch.Tensor]:
    """Shrink ``mlp`` in place to ``sizes`` hidden neurons per layer (``top_neurons``);
    returns the kept indices."""
    keep = top_neurons(mlp, sizes)
    compact_in_place(mlp, keep)
    return keep
