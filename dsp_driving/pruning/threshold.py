"""The pruning step of one layer: which alive neurons to mask now (docs/method.md).

``mode: dynamic``: tau_l(t) = kappa(t) * mean(s_k over alive k); alive neurons with
s_j < tau_l are cut. ``mode: ratio``: the lowest-importance neurons are cut down to a cubic
target fraction p(t) of the dense layer. Either way at most ``max_prune_frac`` of the alive
neurons go in one step and at least ``min_alive`` stay.
"""

from __future__ import annotations

import math

import torch

from dsp_driving.config import PruningConfig
from dsp_driving.pruning.schedule import kappa, prune_ratio


def dynamic_threshold(s_alive: torch.Tensor, k: float) -> float:
    """tau_l = k * mean(s_alive), with k = kappa(t); 0 for a layer with no neuron alive."""
    return k * float(s_alive.mean()) if s_alive.numel() else 0.0


def ratio_target_alive(p: float, dense_size: int, min_alive: int) -> int:
    """Neurons to keep when a fraction p of the dense layer is to be pruned (>= min_alive)."""
    # round first: (1 - 0.7) * 10 is 3.0000000000000004 in floating point
    return max(min_alive, math.ceil(round((1.0 - p) * dense_size, 9)))


def prune_budget(n_alive: int, max_prune_frac: float, min_alive: int) -> int:
    """Most neurons one step may cut: floor(max_prune_frac * alive), keeping min_alive."""
    return max(0, min(math.floor(max_prune_frac * n_alive), n_alive - min_alive))


def select_to_prune(s: torch.Tensor, mask: torch.Tensor, t: float, dense_size: int,
                    cfg: PruningConfig, k: float | None = None) -> tuple[torch.Tensor, float]:
    """The neurons of one layer to mask at training progress t, and the layer's threshold.

    ``s``: importances s_j of the layer's current neurons; ``mask``: 1 = alive; ``k``:
    kappa(t) when the caller already has it (else computed here). Returns (indices into the
    layer, lowest importance first; tau). In ratio mode tau is the importance of the lowest
    neuron the target keeps (0 when it keeps none).
    """
    alive = torch.nonzero(mask > 0).flatten()
    s_alive = s[alive]
    order = torch.argsort(s_alive, stable=True)
    if cfg.mode == "dynamic":
        k = kappa(t, cfg.kappa_final, cfg.t_start, cfg.t_end) if k is None else k
        tau = dynamic_threshold(s_alive, k)
        n_cut = int((s_alive < tau).sum())
    else:
        p = prune_ratio(t, cfg.ratio_initial, cfg.ratio_final, cfg.t_start, cfg.t_end)
        n_cut = max(0, alive.numel() - ratio_target_alive(p, dense_size, cfg.min_alive))
        tau = float(s_alive[order[n_cut]]) if n_cut < alive.numel() else 0.0
    n_cut = min(n_cut, prune_budget(alive.numel(), cfg.max_prune_frac, cfg.min_alive))
    return alive[order[:n_cut]], tau
