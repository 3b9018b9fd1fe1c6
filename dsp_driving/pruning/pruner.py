"""The dynamic structured pruner: hooks that plug into a training loop (docs/method.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from dsp_driving.config import PruningConfig
from dsp_driving.modules.mlp import MLP, params_of_sizes
from dsp_driving.pruning.compaction import alive_indices, compact_in_place
from dsp_driving.pruning.importance import neuron_importance
from dsp_driving.pruning.masks import NeuronMasks
from dsp_driving.pruning.refit import preactivations, refit_next_layer
from dsp_driving.pruning.regulariser import (
    accumulate_regulariser_grad,
    group_sizes,
    group_weights,
    group_widths,
    importance_coefficients,
    regulariser_value,
)
from dsp_driving.pruning.schedule import RampClock, kappa, lambda_per_step, regularised
from dsp_driving.pruning.threshold import select_to_prune
from dsp_driving.stats import NetworkStats, PrunerStats


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
    def compact(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Physically remove the masked neurons from ``self.mlp`` now, in place.

        Masked entries are exactly zero with zero gradients and cleared optimiser state, so
        dropping them (and index-selecting the optimiser state of the rest) changes nothing
        but the cost of every later forward and backward pass.
        """
        self._shrink(alive_indices(self.mlp, self.masks.masks), optimizer)

    def _shrink(self, keep: list[torch.Tensor], optimizer: torch.optim.Optimizer | None
                ) -> None:
        # keep: indices into the current hidden layers; the network's masks become all-alive
        compact_in_place(self.mlp, keep, optimizer)
        self.kept = [k[i] for k, i in zip(self.kept, keep)]
        coeffs = [c[i] for c, i in zip(self.coeffs, keep)]
        self.masks = NeuronMasks(self.mlp)
        self._set_coeffs(coeffs)

    def _set_coeffs(self, coeffs: list[torch.Tensor]) -> None:
        # c_j * m_j * sqrt(|g_j|) changes only here, so R's constant factor is cached
        self.coeffs = coeffs
        widths = group_widths(self.mlp, self.dense_sizes, self.cfg.group_size)
        sizes = group_sizes(self.mlp, self.masks.masks, widths)
        self._weights = group_weights(self.mlp, self.masks.masks, coeffs, sizes)

    def update_regulariser(self) -> None:
        """Recompute the coefficients c_j from the current importances (once per update)."""
        if self.cfg.regulariser == "group_lasso":
            self._set_coeffs([m.clone() for m in self.masks.masks])
            return
        with torch.no_grad():
            s = neuron_importance(self.mlp)
        self._set_coeffs(importance_coefficients(s, self.masks.masks, self.cfg.c_min,
                                                 self.cfg.c_max))

    def measure_regulariser(self) -> None:
        """R for the stats of an update the regulariser does not act in: the current weights
        with the coefficients c_j of the last regularised update (frozen since)."""
        self.last_reg = regulariser_value(self.mlp, self._weights, self.cfg.eps)

    def add_regulariser_grad(self) -> float:
        """Add lambda * dR/dtheta to the gradients (closed form); returns lambda * R."""
        reg = accumulate_regulariser_grad(self.mlp, self._weights, self.cfg.eps, self.lam)
        self.last_reg = reg
        return self.lam * reg

    @torch.no_grad()
    def prune(self, t: float, optimizer: torch.optim.Optimizer | None,
              k: float | None = None, inputs: torch.Tensor | None = None,
              kl_of: Callable[[torch.Tensor], float] | None = None,
              kl_budget: float = 0.0) -> int:
        """One pruning step at training progress t (``k``: kappa(t), when the caller has it);
        returns neurons newly masked.

        With ``compensate`` other than none and ``inputs`` (a batch of the network's inputs,
        [B, in]), each layer after a cut is refitted on the batch to what it received
        before this step (``_compensate``), from the bottom up: layer l+1's input from the
        neurons kept in layer l, whose activations already carry the cuts and fits below.
        Which neurons go is decided on the importances from before any fit (the same cuts
        as without compensation).

        With ``kl_of`` (the network's outputs on ``inputs`` -> the policy's KL from before
        the step) and ``kl_budget`` > 0 the step cuts the largest share 1, 1/2, 1/4, ... of
        each layer's candidates (lowest importance first) whose KL stays within the budget,
        possibly none; the rest stay candidates for later steps.
        """
        cuts = []
        importances = neuron_importance(self.mlp)
        for i, s in enumerate(importances):
            cut, self.thresholds[i] = select_to_prune(s, self.masks.masks[i], t,
                                                      self.dense_sizes[i], self.cfg, k)
            cuts.append(cut)
        if kl_of is not None and kl_budget > 0 and inputs is not None:
            taken = self._within_budget(cuts, inputs, kl_of, kl_budget)
            for i, (full, part) in enumerate(zip(cuts, taken)):
                if len(part) < len(full) and self.cfg.mode != "dynamic":
                    # ratio/hybrid threshold: the importance of the lowest neuron kept
                    self.thresholds[i] = float(importances[i][full[len(part)]])
            cuts = taken
        newly = self._cut(cuts, inputs)
        if newly:
            if optimizer is not None:
                self.masks.clear_optimizer_state(optimizer)
            self._set_coeffs([c * m for c, m in zip(self.coeffs, self.masks.masks)])
        return newly

    def _cut(self, cuts: list[torch.Tensor], inputs: torch.Tensor | None) -> int:
        # mask cuts[i] of every hidden layer i, refit the layers above (compensate), zero
        # the masked weights; returns neurons newly masked
        newly = 0
        fit = self.cfg.compensate != "none" and inputs is not None
        if fit:
            targets = preactivations(self.mlp, inputs)  # what each layer received before
        x, changed = inputs, False
        for i, cut in enumerate(cuts):
            newly += self.masks.mask_neurons(i, cut)
            if fit:
                x = self.mlp.act(self._linear(i, x)) * self.masks.masks[i]
                changed = changed or bool(cut.numel())
                if changed:
                    self._compensate(i, x, targets[i + 1])
        if newly:
            self.masks.apply_to_weights()
        return newly

    def _within_budget(self, cuts: list[torch.Tensor], inputs: torch.Tensor,
                       kl_of: Callable[[torch.Tensor], float], budget: float
                       ) -> list[torch.Tensor]:
        # the largest share 1, 1/2, 1/4, ... of each layer's candidates whose cut (with the
        # refits) keeps kl_of(outputs) <= budget; nothing when even the smallest exceeds it
        layers = self.mlp.layers
        saved = ([(layer.weight.clone(), layer.bias.clone()) for layer in layers],
                 self.masks.state_dict())
        share = 1.0
        while True:
            trial = [c[:int(share * c.numel())] for c in cuts]
            if not any(c.numel() for c in trial):
                return trial
            self._cut(trial, inputs)
            kl = kl_of(self.mlp(inputs))
            for layer, (w, b) in zip(layers, saved[0]):
                layer.weight.copy_(w)
                layer.bias.copy_(b)
            self.masks.load_state_dict(saved[1])
            if kl <= budget:
                return trial
            share /= 2

    def _compensate(self, i: int, h: torch.Tensor, target: torch.Tensor) -> None:
        # h: hidden layer i's activations [B, n] after this step's cuts (cut and masked
        # neurons are 0), target: layer i+1's pre-activations before the step (refit.py)
        keep = torch.nonzero(self.masks.masks[i]).flatten()
        refit_next_layer(self.mlp.layers[i + 1], h, keep, target, self.cfg.compensate)

    def _linear(self, i: int, x: torch.Tensor) -> torch.Tensor:
        layer = self.mlp.layers[i]
        return torch.nn.functional.linear(x, layer.weight, layer.bias)

    def state_dict(self) -> dict[str, Any]:
        """Kept indices, masks, coefficients and thresholds for a checkpoint."""
        return {"dense_sizes": list(self.dense_sizes), "kept": [k.clone() for k in self.kept],
                "masks": self.masks.state_dict(), "coeffs": [c.clone() for c in self.coeffs],
                "thresholds": list(self.thresholds), "last_reg": self.last_reg}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from state_dict(). A checkpoint of a compacted network first shrinks
        ``self.mlp`` in place to the kept neurons; load the weights and the optimiser after."""
        if list(state["dense_sizes"]) != list(self.dense_sizes):
            raise ValueError(f"checkpoint {self.name} hidden sizes {state['dense_sizes']} do "
                             f"not match the network's hidden sizes {self.dense_sizes}")
        kept = [k.clone() for k in state["kept"]]
        if any(not torch.equal(k, c) for k, c in zip(kept, self.kept, strict=True)):
            self._shrink([self._position(i, k) for i, k in enumerate(kept)], None)
        self.masks.load_state_dict(state["masks"])
        self._set_coeffs([c.clone() for c in state["coeffs"]])
        self.thresholds = list(state["thresholds"])
        self.last_reg = state["last_reg"]

    def _position(self, layer: int, dense_index: torch.Tensor) -> torch.Tensor:
        # where the dense neurons dense_index sit in the current (possibly compacted) layer
        kept = self.kept[layer]
        pos = torch.searchsorted(kept, dense_index).clamp_(max=kept.numel() - 1)
        if not torch.equal(kept[pos], dense_index):
            raise ValueError(f"checkpoint {self.name} keeps neurons of hidden layer {layer} "
                             "that this network has already removed")
        return pos

    def stats(self) -> NetworkStats:
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
            "R": self.last_reg,
            "lam": self.lam,
        }


class DynamicPruner:
    """Prunes an agent's actor and critic while PPO trains it.

    Call order inside a PPO update: ``update_regulariser(progress)`` once; per minibatch
    ``regularise()`` after the PPO loss's backward (adds lambda * dR/dtheta in closed form
    while the regulariser acts, then masks the gradients) and ``mask_weights()`` after
    optimizer.step(); ``step()`` once at the end of the update (the pruning step, every
    ``prune_every`` updates).
    """

    def __init__(self, actor: MLP, critic: MLP, cfg: PruningConfig,
                 lr_total: float | None = None) -> None:
        """With ``compact_in_training`` the pruning step compacts ``actor`` and ``critic`` in
        place (the same module objects, smaller Parameters); otherwise they stay dense.

        ``lr_total``: the sum of the learning rate over the gradient steps the regulariser
        will act on (schedule.lr_sum); needed with ``lambda_units: dose``, which divides the
        dose lambda_* by it to get the lambda of one gradient step.
        """
        if cfg.lambda_units == "dose" and lr_total is None:
            raise ValueError("pruning.lambda_units='dose' needs lr_total, the learning-rate "
                             "sum of the regularised gradient steps (schedule.lr_sum)")
        self.cfg = cfg
        self.kappa = 0.0
        self.acting = True  # whether the regulariser acts in the current update
        # once it has stopped at t_end it stays stopped, also when --resume --total-steps
        # extends the run (which moves every later update's progress back before t_end)
        self.stopped = False
        lam_actor = lambda_per_step(cfg.lambda_actor, cfg.lambda_units, lr_total or 0.0)
        lam_critic = lambda_per_step(cfg.lambda_critic, cfg.lambda_units, lr_total or 0.0)
        self.nets = {
            "actor": NetworkPruner("actor", actor, lam_actor, cfg,
                                   cfg.enabled and cfg.prune_actor),
            "critic": NetworkPruner("critic", critic, lam_critic, cfg,
                                    cfg.enabled and cfg.prune_critic),
        }
        self.active = [p for p in self.nets.values() if p.enabled]
        self.clock = RampClock(cfg.guard, cfg.guard_max_lag, cfg.t_start, cfg.t_end)

    def update_regulariser(self, progress: float = 0.0) -> None:
        """Start an update at training progress ``progress``: whether the regulariser acts
        in it (``regularise_after_ramp``, t_end) and, if so, the coefficients c_j."""
        self.acting = not self.stopped and regularised(progress, self.cfg.t_end,
                                                        self.cfg.regularise_after_ramp)
        self.stopped = not self.acting
        for p in self.active:
            if self.acting:
                p.update_regulariser()
            else:
                p.measure_regulariser()

    def regularise(self) -> float:
        """Add lambda * dR/dtheta to the gradients (while the regulariser acts), then zero
        masked entries.

        Returns lambda_actor * R(actor) + lambda_critic * R(critic) for logging (0 while
        the regulariser does not act).
        """
        total = 0.0
        for p in self.active:
            if self.acting and p.lam != 0:
                total += p.add_regulariser_grad()
            p.masks.apply_to_grads()
        return total

    def mask_weights(self) -> None:
        """Re-zero masked weights after the optimiser step."""
        for p in self.active:
            p.masks.apply_to_weights()

    def step(self, update: int, progress: float, optimizer: torch.optim.Optimizer | None,
             started: float | None = None, recent_return: float | None = None,
             inputs: torch.Tensor | None = None,
             kl_of: Callable[[torch.Tensor], float] | None = None) -> int:
        """The pruning step, every ``prune_every`` updates; returns neurons newly masked.
        With the return guard (pruning.guard), ``started`` (the update's starting progress)
        and ``recent_return`` (the mean training return at its end) move the ramp's clock,
        which the schedules read instead of ``progress``; a held update prunes nothing.
        ``inputs``: the networks' inputs (normalised observations) for ``compensate``;
        ``kl_of``: the actor's outputs on them -> the policy's KL from before the step, for
        ``kl_budget`` (which holds until t_end + guard_max_lag in training progress)."""
        held = started is not None and self.clock.advance(started, progress, recent_return)
        t = self.clock.clock(progress)
        self.kappa = kappa(t, self.cfg.kappa_final, self.cfg.t_start, self.cfg.t_end)
        if not self.active or update % self.cfg.prune_every != 0 or held:
            return 0
        total = 0
        budget = self.cfg.kl_budget if (
            progress < self.cfg.t_end + self.cfg.guard_max_lag) else 0.0
        for p in self.active:
            newly = p.prune(t, optimizer, self.kappa, inputs,
                            kl_of if p.name == "actor" else None, budget)
            total += newly
            if newly and self.cfg.compact_in_training:
                p.compact(optimizer)
        return total

    def masks(self, name: str) -> list[torch.Tensor]:
        """Current masks of 'actor' or 'critic', in the layout of its current network."""
        return self.nets[name].masks.masks

    def dense_masks(self, name: str) -> list[torch.Tensor]:
        """Masks of 'actor' or 'critic' in the dense network's layout."""
        return self.nets[name].dense_masks()

    def stats(self) -> PrunerStats:
        """Per-network compaction figures (``lam``: the lambda of one gradient step the
        last update applied, 0 where it did not regularise) and kappa."""
        out: PrunerStats = {"kappa": self.kappa, "actor": self.nets["actor"].stats(),
                            "critic": self.nets["critic"].stats()}
        for name, p in self.nets.items():
            if not (p.enabled and self.acting):
                out[name]["lam"] = 0.0
        return out

    def state_dict(self) -> dict[str, Any]:
        """Kept indices, masks, coefficients and thresholds of both networks, and kappa."""
        return {n: p.state_dict() for n, p in self.nets.items()} | {
            "kappa": self.kappa, "regulariser_stopped": self.stopped,
            "ramp_clock": self.clock.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from state_dict() onto the networks given at construction.

        A checkpoint of physically compacted networks shrinks them in place first; the
        caller then loads the weights and builds or loads the optimiser.
        """
        for n, p in self.nets.items():
            p.load_state_dict(state[n])
        self.kappa = state["kappa"]
        self.stopped = bool(state.get("regulariser_stopped", False))  # older checkpoints
        self.clock.load_state_dict(state.get("ramp_clock"))
