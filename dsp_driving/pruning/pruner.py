"""The dynamic structured pruner: hooks that plug into a training loop (method.md)."""

from __future__ import annotations

import math
from typing import Any

import torch

from dsp_driving.config import PruningConfig
from dsp_driving.pruning.importance import (
    adaptive_coefficients,
    group_sparse_regulariser,
    neuron_importance,
)
from dsp_driving.pruning.masks import NeuronMasks
from dsp_driving.pruning.schedule import kappa, prune_ratio
from dsp_driving.rl.networks import MLP


class NetworkPruner:
    """Regulariser, threshold and masks for one MLP."""

    def __init__(self, name: str, mlp: MLP, lam: float, cfg: PruningConfig,
                 enabled: bool) -> None:
        self.name = name
        self.mlp = mlp
        self.lam = lam
        self.cfg = cfg
        self.enabled = enabled
        self.masks = NeuronMasks(mlp)
        self.coeffs = [m.clone() for m in self.masks.masks]
        self.thresholds = [0.0 for _ in self.masks.masks]
        self.last_reg = 0.0

    def refresh_coefficients(self) -> None:
        """Recompute c_j from the current importances (once per PPO update)."""
        if self.cfg.regulariser == "group_lasso":
            self.coeffs = [m.clone() for m in self.masks.masks]
            return
        with torch.no_grad():
            s = neuron_importance(self.mlp)
        self.coeffs = adaptive_coefficients(s, self.masks.masks, self.cfg.c_min, self.cfg.c_max)

    def regulariser(self) -> torch.Tensor:
        """R(theta) of this network (not yet multiplied by lambda)."""
        return group_sparse_regulariser(self.mlp, self.masks.masks, self.coeffs, self.cfg.eps)

    @torch.no_grad()
    def prune(self, t: float, optimizer: torch.optim.Optimizer | None) -> int:
        """One pruning step at training progress t; returns neurons newly masked."""
        cfg = self.cfg
        k = kappa(t, cfg.kappa_final, cfg.t_start, cfg.t_end)
        newly = 0
        for l, s in enumerate(neuron_importance(self.mlp)):
            mask = self.masks.masks[l]
            alive_idx = torch.nonzero(mask > 0).flatten()
            n_alive = alive_idx.numel()
            s_alive = s[alive_idx]
            budget = min(math.floor(cfg.max_prune_frac * n_alive), n_alive - cfg.min_alive)
            order = torch.argsort(s_alive, stable=True)
            if cfg.mode == "adaptive":
                tau = k * float(s_alive.mean()) if n_alive else 0.0
                self.thresholds[l] = tau
                n_cut = int((s_alive < tau).sum())
            else:
                p = prune_ratio(t, cfg.ratio_initial, cfg.ratio_final, cfg.t_start, cfg.t_end)
                # round first: (1 - 0.7) * 10 is 3.0000000000000004 in floating point
                target_alive = max(cfg.min_alive,
                                   math.ceil(round((1.0 - p) * mask.numel(), 9)))
                n_cut = max(0, n_alive - target_alive)
                self.thresholds[l] = float(s_alive[order[n_cut]]) if n_cut < n_alive else 0.0
            n_cut = max(0, min(n_cut, budget))
            if n_cut:
                newly += self.masks.mask_neurons(l, alive_idx[order[:n_cut]])
        if newly:
            self.masks.apply_to_weights()
            if optimizer is not None:
                self.masks.clear_optimizer_state(optimizer)
            self.coeffs = [c * m for c, m in zip(self.coeffs, self.masks.masks)]
        return newly

    def stats(self) -> dict[str, Any]:
        """Alive/total per layer, thresholds, network totals, last regulariser value."""
        alive, totals = self.masks.alive(), self.masks.totals()
        return {
            "layers": [
                {"alive": a, "total": n, "threshold": th}
                for a, n, th in zip(alive, totals, self.thresholds)
            ],
            "neurons_alive": sum(alive),
            "neurons_total": sum(totals),
            "weights_alive": self.masks.weights_alive(),
            "weights_total": self.masks.weights_total(),
            "regulariser": self.last_reg,
        }


class DynamicPruner:
    """Prunes an agent's actor and critic while PPO trains it.

    Call order inside a PPO update: ``refresh_coefficients`` once, then per minibatch
    ``loss()`` (added to the PPO loss), ``before_step()`` after backward, ``after_step()``
    after optimizer.step(); ``maybe_prune`` once per update.
    """

    def __init__(self, actor: MLP, critic: MLP, cfg: PruningConfig) -> None:
        self.cfg = cfg
        self.kappa = 0.0
        self.nets = {
            "actor": NetworkPruner("actor", actor, cfg.lambda_actor, cfg,
                                   cfg.enabled and cfg.prune_actor),
            "critic": NetworkPruner("critic", critic, cfg.lambda_critic, cfg,
                                    cfg.enabled and cfg.prune_critic),
        }
        self.active = [p for p in self.nets.values() if p.enabled]

    def refresh_coefficients(self) -> None:
        """Refresh the adaptive coefficients c_j of every pruned network."""
        for p in self.active:
            p.refresh_coefficients()

    def loss(self) -> torch.Tensor | None:
        """lambda_actor * R(actor) + lambda_critic * R(critic), or None when nothing is pruned."""
        total = None
        for p in self.active:
            if p.lam == 0:
                continue
            reg = p.regulariser()
            p.last_reg = reg.item()
            total = p.lam * reg if total is None else total + p.lam * reg
        return total

    def before_step(self) -> None:
        """Zero the gradients of masked entries."""
        for p in self.active:
            p.masks.apply_to_grads()

    def after_step(self) -> None:
        """Re-zero masked weights after the optimiser step."""
        for p in self.active:
            p.masks.apply_to_weights()

    def maybe_prune(self, update: int, t: float, optimizer: torch.optim.Optimizer) -> int:
        """Run a pruning step every ``prune_every`` updates; returns neurons newly masked."""
        self.kappa = kappa(t, self.cfg.kappa_final, self.cfg.t_start, self.cfg.t_end)
        if not self.active or update % self.cfg.prune_every != 0:
            return 0
        return sum(p.prune(t, optimizer) for p in self.active)

    def masks(self, name: str) -> list[torch.Tensor]:
        """Current masks of 'actor' or 'critic'."""
        return self.nets[name].masks.masks

    def stats(self) -> dict[str, Any]:
        """Per-network compaction figures and kappa."""
        return {"kappa": self.kappa, **{n: p.stats() for n, p in self.nets.items()}}

    def state_dict(self) -> dict[str, Any]:
        """Masks, coefficients and thresholds for a checkpoint."""
        return {n: {"masks": p.masks.state_dict(), "coeffs": [c.clone() for c in p.coeffs],
                    "thresholds": list(p.thresholds), "last_reg": p.last_reg}
                for n, p in self.nets.items()} | {"kappa": self.kappa}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from state_dict()."""
        for n, p in self.nets.items():
            p.masks.load_state_dict(state[n]["masks"])
            p.coeffs = [c.clone() for c in state[n]["coeffs"]]
            p.thresholds = list(state[n]["thresholds"])
            p.last_reg = state[n]["last_reg"]
        self.kappa = state["kappa"]
