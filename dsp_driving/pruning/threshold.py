"""The pruning step of one layer: which alive neurons to mask now (docs/method.md).

``mode: dynamic``: tau_l(t) = kappa(t) * mean(s_k over alive k); alive neurons with
s_j < tau_l are cut. ``mode: ratio``: the lowest-importance neurons are cut down to a cubic
target fraction p(t) of the dense layer. ``mode: hybrid``: the dynamic threshold's cut, but
at least the ratio schedule's and never below the final size (1 - ratio_final) of the dense
layer: the threshold decides when and which, the schedule guarantees the size by t_end.
Either way at most ``max_prune_frac`` of the alive neurons go in one step and at least
``min_alive`` stay.
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
    layer, lowest importance first; tau). In ratio and hybrid mode tau is the importance of
    the lowest neuron kept (0 when none is).
    """
    alive = torch.nonzero(mask > 0).flatten()
    s_alive = s[alive]
    order = torch.argsort(s_alive, stable=True)
    n_alive = alive.numel()
    if cfg.mode == "ratio":
        n_cut = _ratio_cut(t, n_alive, dense_size, cfg)
    else:
        k = kappa(t, cfg.kappa_final, cfg.t_start, cfg.t_end) if k is None else k
        n_cut = int((s_alive < dynamic_threshold(s_alive, k)).sum())
        if cfg.mode == "hybrid":
            final = ratio_target_alive(cfg.ratio_final, dense_size, cfg.min_alive)
            n_cut = min(max(n_cut, _ratio_cut(t, n_alive, dense_size, cfg)),
                        max(0, n_alive - final))
    n_cut = min(n_cut, prune_budget(n_alive, cfg.max_prune_frac, cfg.min_alive))
    if cfg.mode == "dynamic":
        tau = dynamic_threshold(s_alive, k)
    else:  # the importance of the lowest neuron kept
        tau = float(s_alive[order[n_cut]]) if n_cut < n_alive else 0.0
    return alive[order[:n_cut]], tau


def _ratio_cut(t: float, n_alive: int, dense_size: int, cfg: PruningConfig) -> int:
    """Neurons the cubic ratio schedule cuts from a layer with ``n_alive`` at progress t."""
    p = prune_ratio(t, cfg.ratio_initial, cfg.ratio_final, cfg.t_start, cfg.t_end)
    return max(0, n_alive - ratio_target_alive(p, dense_size, cfg.min_alive))
