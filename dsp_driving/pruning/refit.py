"""The refit after a cut (``pruning.compensate``, docs/method.md section 5): layer l+1 is
refitted on a batch to the pre-activations it received before hidden layer l lost neurons.
Used by each pruning step of the method (pruner.py) and by the one-shot cut of the
``posthoc`` baseline (oneshot.py), so both routes get the same repair."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def refit_next_layer(nxt: nn.Linear, h: torch.Tensor, keep: torch.Tensor,
                     target: torch.Tensor, method: str) -> None:
    """Refit ``nxt`` in place. ``h``: hidden layer l's activations [B, n] after the cut (cut
    neurons are 0), ``keep``: its kept neurons' indices, ``target``: ``nxt``'s
    pre-activations before the cut [B, m]. The residual r = target - nxt(h) is replaced by
    its batch mean (``mean``) or its ridge least-squares fit on the kept neurons' activations
    plus a constant (``lstsq``), added to their outgoing weights and to ``nxt``'s bias."""
    r = target - nn.functional.linear(h, nxt.weight, nxt.bias)
    r_mean = r.mean(0)
    if method == "lstsq":
        a = h[:, keep].double()
        a_mean = a.mean(0)
        a = a - a_mean
        gram = a.T @ a
        # ridge: 1e-3 of the gram's mean diagonal (B times the kept activations' mean
        # variance), so a near-constant or duplicate neuron cannot get a huge weight from
        # the batch's noise
        ridge = 1e-3 * float(gram.diagonal().mean()) + 1e-12 if keep.numel() else 0.0
        gram.diagonal().add_(ridge)
        coef = torch.linalg.solve(gram, a.T @ (r.double() - r_mean.double()))
        nxt.weight[:, keep] += coef.T.to(nxt.weight.dtype)
        r_mean = r_mean - (a_mean @ coef).to(r_mean.dtype)
    elif method != "mean":
        raise ValueError(f"invalid pruning.compensate={method!r}: the refit takes mean or "
                         "lstsq")
    nxt.bias.add_(r_mean)


def preactivations(mlp: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's pre-activations on the batch ``x`` (the output layer's last): what the
    refit fits each layer back to."""
    out = []
    for layer in mlp.layers:
        out.append(nn.functional.linear(x, layer.weight, layer.bias))
        x = mlp.act(out[-1])
    return out
