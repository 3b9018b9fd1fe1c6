"""The dynamic structured pruner: hooks that plug into a training loop (method.md)."""

from __future__ import annotations

from collections.abc import Callable
import math
from typing import Any

import torch

from dsp_driving.config import PruningConfig
from dsp_driving.pruning.compaction import compact_mlp, transplant_optimizer_state
from dsp_driving.pruning.importance import (
    accumulate_regulariser_grad,
    adaptive_coefficients,
    group_sizes,
    group_weights,
    neuron_importance,
    weighted_group_norms,
)
from dsp_driving.pruning.masks import NeuronMasks
from dsp_driving.pruning.schedule import kappa, prune_ratio
from dsp_driving.rl.networks import MLP, params_of_sizes


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
        self.dense_sizes = mlp.hidden_sizes
        self.dense_weights = self.masks.weights_total()
        # dense index of every neuron the (possibly compacted) mlp still has
        self.kept = [torch.arange(n) for n in self.dense_sizes]
        self.thresholds = [0.0 for _ in self.masks.masks]
        self.last_reg = 0.0
        self._set_coeffs([m.clone() for m in self.masks.masks])

    def dense_masks(self) -> list[torch.Tensor]:
        """The masks in the dense network's layout (1 = alive)."""
        out = []
        for n, kept, m in zip(self.dense_sizes, self.kept, self.masks.masks):
            dense = torch.zeros(n, dtype=m.dtype)
            dense[kept] = m
            out.append(dense)
        return out

    @torch.no_grad()
    def compact(self, optimizer: torch.optim.Optimizer | None) -> MLP:
        """Physically remove the masked neurons now; returns the smaller MLP.

        Masked entries are exactly zero with zero gradients and cleared optimiser state, so
        dropping them (and index-selecting the optimiser state of the rest) changes nothing
        but the cost of every later forward and backward pass.
        """
        keep = [torch.nonzero(m > 0).flatten() for m in self.masks.masks]
        new = compact_mlp(self.mlp, self.masks.masks)
        if optimizer is not None:
            transplant_optimizer_state(optimizer, self.mlp, new, keep)
        self.kept = [k[i] for k, i in zip(self.kept, keep)]
        coeffs = [c[i] for c, i in zip(self.coeffs, keep)]
        self.mlp = new
        self.masks = NeuronMasks(new)
        self._set_coeffs(coeffs)
        return new

    def _set_coeffs(self, coeffs: list[torch.Tensor]) -> None:
        # c_j * m_j * sqrt(|g_j|) changes only here, so R's constant factor is cached
        self.coeffs = coeffs
        widths = None  # "alive": the group's size in the compacted network
        if self.cfg.group_size == "dense":  # the group's size in the dense network
            widths = [self.mlp.layers[0].in_features, *self.dense_sizes,
                      self.mlp.layers[-1].out_features]
        sizes = group_sizes(self.mlp, self.masks.masks, widths)
        self._weights = group_weights(self.mlp, self.masks.masks, coeffs, sizes)

    def refresh_coefficients(self) -> None:
        """Recompute c_j from the current importances (once per PPO update)."""
        if self.cfg.regulariser == "group_lasso":
            self._set_coeffs([m.clone() for m in self.masks.masks])
            return
        with torch.no_grad():
            s = neuron_importance(self.mlp)
        self._set_coeffs(adaptive_coefficients(s, self.masks.masks, self.cfg.c_min,
                                               self.cfg.c_max))

    def regulariser(self) -> torch.Tensor:
        """R(theta) of this network (not yet multiplied by lambda), differentiable."""
        return weighted_group_norms(self.mlp, self._weights, self.cfg.eps)

    def add_regulariser_grad(self) -> float:
        """Add lambda * dR/dtheta to the gradients (closed form); returns lambda * R."""
        reg = accumulate_regulariser_grad(self.mlp, self._weights, self.cfg.eps, self.lam)
        self.last_reg = reg
        return self.lam * reg

    @torch.no_grad()
    def prune(self, t: float, optimizer: torch.optim.Optimizer | None) -> int:
        """One pruning step at training progress t; returns neurons newly masked."""
        cfg = self.cfg
        k = kappa(t, cfg.kappa_final, cfg.t_start, cfg.t_end)
        newly = 0
        for i, s in enumerate(neuron_importance(self.mlp)):
            mask = self.masks.masks[i]
            alive_idx = torch.nonzero(mask > 0).flatten()
            n_alive = alive_idx.numel()
            s_alive = s[alive_idx]
            budget = min(math.floor(cfg.max_prune_frac * n_alive), n_alive - cfg.min_alive)
            order = torch.argsort(s_alive, stable=True)
            if cfg.mode == "adaptive":
                tau = k * float(s_alive.mean()) if n_alive else 0.0
                self.thresholds[i] = tau
                n_cut = int((s_alive < tau).sum())
            else:
                p = prune_ratio(t, cfg.ratio_initial, cfg.ratio_final, cfg.t_start, cfg.t_end)
                # round first: (1 - 0.7) * 10 is 3.0000000000000004 in floating point
                target_alive = max(cfg.min_alive,
                                   math.ceil(round((1.0 - p) * self.dense_sizes[i], 9)))
                n_cut = max(0, n_alive - target_alive)
                self.thresholds[i] = float(s_alive[order[n_cut]]) if n_cut < n_alive else 0.0
            n_cut = max(0, min(n_cut, budget))
            if n_cut:
                newly += self.masks.mask_neurons(i, alive_idx[order[:n_cut]])
        if newly:
            self.masks.apply_to_weights()
            if optimizer is not None:
                self.masks.clear_optimizer_state(optimizer)
            self._set_coeffs([c * m for c, m in zip(self.coeffs, self.masks.masks)])
        return newly

    def stats(self) -> dict[str, Any]:
        """Per hidden layer: neurons alive/total, the weights and biases into it alive/total
        and its threshold; network totals (with the output layer); last regulariser value."""
        alive, totals = self.masks.alive(), self.dense_sizes
        n_in, n_out = self.mlp.layers[0].in_features, self.mlp.layers[-1].out_features
        wide_alive, wide_total = [n_in, *alive, n_out], [n_in, *totals, n_out]
        return {
            "layers": [
                {"alive": a, "total": n, "threshold": th,
                 "weights_alive": params_of_sizes(wide_alive[i:i + 2]),
                 "weights_total": params_of_sizes(wide_total[i:i + 2])}
                for i, (a, n, th) in enumerate(zip(alive, totals, self.thresholds))
            ],
            "neurons_alive": sum(alive),
            "neurons_total": sum(totals),
            "weights_alive": self.masks.weights_alive(),
            "weights_total": self.dense_weights,
            "regulariser": self.last_reg,
        }


class DynamicPruner:
    """Prunes an agent's actor and critic while PPO trains it.

    Call order inside a PPO update: ``refresh_coefficients`` once, then per minibatch
    ``before_step()`` after the PPO loss's backward (it adds the regulariser's gradient in
    closed form and masks gradients), ``after_step()`` after optimizer.step();
    ``maybe_prune`` once per update. ``loss()`` is the same regulariser as a differentiable
    tensor, for callers that prefer autograd.
    """

    def __init__(self, actor: MLP, critic: MLP, cfg: PruningConfig,
                 on_compact: Callable[[str, MLP], None] | None = None) -> None:
        """``on_compact(name, mlp)`` installs a compacted network in its owner; without it
        the networks keep their dense shapes and masks (``compact_in_training`` is moot)."""
        self.cfg = cfg
        self.on_compact = on_compact
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

    def before_step(self) -> float:
        """Add lambda * dR/dtheta to the gradients, then zero masked entries.

        Returns lambda_actor * R(actor) + lambda_critic * R(critic) for logging.
        """
        total = 0.0
        for p in self.active:
            if p.lam != 0:
                total += p.add_regulariser_grad()
            p.masks.apply_to_grads()
        return total

    def after_step(self) -> None:
        """Re-zero masked weights after the optimiser step."""
        for p in self.active:
            p.masks.apply_to_weights()

    def maybe_prune(self, update: int, t: float, optimizer: torch.optim.Optimizer) -> int:
        """Run a pruning step every ``prune_every`` updates; returns neurons newly masked."""
        self.kappa = kappa(t, self.cfg.kappa_final, self.cfg.t_start, self.cfg.t_end)
        if not self.active or update % self.cfg.prune_every != 0:
            return 0
        total = 0
        for p in self.active:
            newly = p.prune(t, optimizer)
            total += newly
            if newly and self.cfg.compact_in_training and self.on_compact is not None:
                self.on_compact(p.name, p.compact(optimizer))
        return total

    def masks(self, name: str) -> list[torch.Tensor]:
        """Current masks of 'actor' or 'critic', in the layout of its current network."""
        return self.nets[name].masks.masks

    def dense_masks(self, name: str) -> list[torch.Tensor]:
        """Masks of 'actor' or 'critic' in the dense network's layout."""
        return self.nets[name].dense_masks()

    def stats(self) -> dict[str, Any]:
        """Per-network compaction figures and kappa."""
        return {"kappa": self.kappa, **{n: p.stats() for n, p in self.nets.items()}}

    def state_dict(self) -> dict[str, Any]:
        """Kept indices, masks, coefficients and thresholds for a checkpoint."""
        return {n: {"dense_sizes": list(p.dense_sizes), "kept": [k.clone() for k in p.kept],
                    "masks": p.masks.state_dict(),
                    "coeffs": [c.clone() for c in p.coeffs],
                    "thresholds": list(p.thresholds), "last_reg": p.last_reg}
                for n, p in self.nets.items()} | {"kappa": self.kappa}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from state_dict() onto freshly built dense networks.

        A checkpoint of physically compacted networks reshapes them (through
        ``on_compact``) before the caller loads the weights and the optimiser state.
        """
        for n, p in self.nets.items():
            if list(state[n]["dense_sizes"]) != list(p.dense_sizes):
                raise ValueError(f"checkpoint {n} hidden sizes {state[n]['dense_sizes']} do "
                                 f"not match the network's hidden sizes {p.dense_sizes}")
            kept = [k.clone() for k in state[n]["kept"]]
            if [k.numel() for k in kept] != p.masks.totals():
                if self.on_compact is None:
                    raise ValueError(f"checkpoint holds a compacted {n} but no on_compact "
                                     "hook was given to install it")
                keep_masks = [torch.zeros(size) for size in p.masks.totals()]
                for km, k in zip(keep_masks, kept):
                    km[k] = 1.0
                p.masks.load_state_dict(keep_masks)
                p.compact(None)
                self.on_compact(n, p.mlp)
            p.kept = kept
            p.masks.load_state_dict(state[n]["masks"])
            p._set_coeffs([c.clone() for c in state[n]["coeffs"]])
            p.thresholds = list(state[n]["thresholds"])
            p.last_reg = state[n]["last_reg"]
        self.kappa = state["kappa"]
