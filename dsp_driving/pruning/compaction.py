"""Physical compaction: rebuild a masked MLP with only its alive neurons."""

from __future__ import annotations

import torch
from torch import nn

from dsp_driving.rl.networks import MLP


@torch.no_grad()
def compact_mlp(mlp: MLP, masks: list[torch.Tensor]) -> MLP:
    """A dense MLP computing the same function as ``mlp`` under ``masks`` with fewer neurons.

    Each Linear keeps the rows of alive outputs and the columns of alive inputs
    (index_select); inputs and outputs of the network are kept whole.
    """
    if len(masks) != len(mlp.layers) - 1:
        raise ValueError(f"got {len(masks)} masks for {len(mlp.layers) - 1} hidden layers")
    keep = [torch.arange(mlp.layers[0].in_features)]
    keep += [torch.nonzero(m > 0).flatten() for m in masks]
    keep += [torch.arange(mlp.layers[-1].out_features)]
    hidden = [int(k.numel()) for k in keep[1:-1]]
    if min(hidden) < 1:
        raise ValueError(f"cannot compact: a hidden layer has no alive neuron ({hidden})")
    with torch.random.fork_rng():  # the throwaway init must not shift the training RNG
        compact = MLP(mlp.layers[0].in_features, hidden, mlp.layers[-1].out_features,
                      mlp.activation)
    for i, (src, dst) in enumerate(zip(mlp.layers, compact.layers)):
        w = src.weight.index_select(0, keep[i + 1]).index_select(1, keep[i])
        dst.weight.copy_(w)
        dst.bias.copy_(src.bias.index_select(0, keep[i + 1]))
    return compact.to(mlp.layers[0].weight.dtype)


def macs(mlp: nn.Module) -> int:
    """Multiply-accumulates of one forward pass (batch 1) through the Linear layers."""
    return sum(m.in_features * m.out_features for m in mlp.modules() if isinstance(m, nn.Linear))
