"""Physical compaction: shrink a masked MLP's Linear layers to its alive neurons, in place.

As Torch-Pruning prunes the user's module (``pruner/function.py``: ``LinearPruner`` and
``_prune_parameter_and_grad``), each Linear keeps its identity: its weight and bias are
replaced by index-selected Parameters and ``in_features`` / ``out_features`` follow, so
whoever holds the MLP (the agent, an optimiser through ``transplant_optimizer_state``)
keeps holding it.
"""

from __future__ import annotations

from collections.abc import Callable
import copy

import torch
from torch import nn

from dsp_driving.modules.mlp import MLP


def alive_indices(mlp: MLP, masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """The indices of the alive neurons of every hidden layer (ascending)."""
    if len(masks) != len(mlp.layers) - 1:
        raise ValueError(f"got {len(masks)} masks for {len(mlp.layers) - 1} hidden layers")
    return [torch.nonzero(m > 0).flatten() for m in masks]


@torch.no_grad()
def compact_in_place(mlp: MLP, keep: list[torch.Tensor],
                     optimizer: torch.optim.Optimizer | None = None) -> None:
    """Keep only the hidden neurons ``keep[l]`` of every hidden layer l, on the same modules.

    Each Linear's weight becomes the kept rows of alive outputs and columns of alive inputs
    (index_select), its bias the kept rows; inputs and outputs of the network stay whole.
    With ``optimizer``, its parameter groups and per-parameter state follow the new
    Parameters (``transplant_optimizer_state``).
    """
    if len(keep) != len(mlp.layers) - 1:
        raise ValueError(f"got {len(keep)} index sets for {len(mlp.layers) - 1} hidden layers")
    hidden = [int(k.numel()) for k in keep]
    if min(hidden) < 1:
        raise ValueError(f"cannot compact: a hidden layer has no alive neuron ({hidden})")
    full = [torch.arange(mlp.layers[0].in_features), *keep,
            torch.arange(mlp.layers[-1].out_features)]
    for i, layer in enumerate(mlp.layers):
        rows, cols = full[i + 1], full[i]
        _replace(layer, "weight", optimizer,
                 lambda t, r=rows, c=cols: t.index_select(0, r).index_select(1, c))
        _replace(layer, "bias", optimizer, lambda t, r=rows: t.index_select(0, r))
        layer.out_features, layer.in_features = int(rows.numel()), int(cols.numel())


def _replace(layer: nn.Linear, name: str, optimizer: torch.optim.Optimizer | None,
             select: Callable[[torch.Tensor], torch.Tensor]) -> None:
    old = getattr(layer, name)
    new = nn.Parameter(select(old.detach()), requires_grad=old.requires_grad)
    setattr(layer, name, new)  # same slot in layer._parameters: parameter order is kept
    if optimizer is not None:
        transplant_optimizer_state(optimizer, old, new, select)


@torch.no_grad()
def compact_mlp(mlp: MLP, masks: list[torch.Tensor]) -> MLP:
    """A compacted copy of ``mlp``: the same function under ``masks`` with fewer neurons."""
    keep = alive_indices(mlp, masks)
    compact = copy.deepcopy(mlp)
    compact_in_place(compact, keep)
    return compact


@torch.no_grad()
def transplant_optimizer_state(optimizer: torch.optim.Optimizer, old: torch.Tensor,
                               new: torch.Tensor,
                               select: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Point ``optimizer`` at ``new`` instead of ``old``, carrying the kept entries' state over.

    ``new = select(old)``. torch.optim keys its per-parameter state by the Parameter object
    and lists the Parameter objects in ``param_groups`` (whose order is what its state_dict
    records), so both are rewritten: ``new`` takes ``old``'s place in its group (and with it
    the group's learning rate), and tensors of ``old``'s shape in ``old``'s state (Adam's
    moments) are index-selected with ``select``; other state (Adam's step) is copied. The
    kept entries' next update is then what it would have been.
    """
    state = optimizer.state.pop(old, None)
    if state:
        optimizer.state[new] = {
            k: (select(v) if torch.is_tensor(v) and v.shape == old.shape
                else v.clone() if torch.is_tensor(v) else v)
            for k, v in state.items()
        }
    for group in optimizer.param_groups:
        group["params"] = [new if p is old else p for p in group["params"]]
