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


@torch.no_grad()
def transplant_optimizer_state(optimizer: torch.optim.Optimizer, old: MLP, new: MLP,
                               keep: list[torch.Tensor]) -> None:
    """Point ``optimizer`` at ``new``'s parameters, carrying the kept entries' state over.

    ``keep`` holds the kept neuron indices of each hidden layer (``new = compact(old)``).
    Per-parameter state tensors (Adam's moments) are index-selected like the weights; scalar
    state (Adam's step) is copied. The kept entries' update is then what it would have been.
    """
    full = [torch.arange(old.layers[0].in_features), *keep,
            torch.arange(old.layers[-1].out_features)]
    for i, (src, dst) in enumerate(zip(old.layers, new.layers)):
        rows, cols = full[i + 1], full[i]
        pairs = ((src.weight, dst.weight,
                  lambda t, r=rows, c=cols: t.index_select(0, r).index_select(1, c)),
                 (src.bias, dst.bias, lambda t, r=rows: t.index_select(0, r)))
        for old_p, new_p, select in pairs:
            state = optimizer.state.pop(old_p, None)
            if state:
                optimizer.state[new_p] = {
                    k: (select(v).clone() if torch.is_tensor(v) and v.shape == old_p.shape
                        else v.clone() if torch.is_tensor(v) else v)
                    for k, v in state.items()
                }
            for group in optimizer.param_groups:
                group["params"] = [new_p if p is old_p else p for p in group["params"]]
