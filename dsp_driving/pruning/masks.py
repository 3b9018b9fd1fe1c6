"""Monotone binary neuron masks for an MLP and their enforcement on weights, grads and Adam."""

from __future__ import annotations

import torch

from dsp_driving.modules.mlp import MLP, params_of_sizes


class NeuronMasks:
    """One 0/1 mask per hidden layer of an MLP. Masks only ever go from 1 to 0.

    A masked neuron's incoming row, bias and outgoing column are held at zero: gradients
    are zeroed before each optimiser step, weights after it, and Adam's moments of those
    entries are cleared when the neuron is masked.
    """

    def __init__(self, mlp: MLP) -> None:
        self.mlp = mlp
        ref = mlp.layers[0].weight
        self.masks = [torch.ones(n, dtype=ref.dtype, device=ref.device)
                      for n in mlp.hidden_sizes]
        self._param_masks: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.any_masked = False
        self._rebuild()

    # -- bookkeeping -------------------------------------------------------------------
    def _rebuild(self) -> None:
        ref = self.mlp.layers[0].weight
        n_layers = len(self.mlp.layers)
        self._param_masks = []
        for i, layer in enumerate(self.mlp.layers):
            out_m = self.masks[i] if i < n_layers - 1 else torch.ones(
                layer.out_features, dtype=ref.dtype, device=ref.device)
            in_m = self.masks[i - 1] if i > 0 else torch.ones(
                layer.in_features, dtype=ref.dtype, device=ref.device)
            self._param_masks.append((torch.outer(out_m, in_m), out_m.clone()))
        self.any_masked = any(bool((m == 0).any()) for m in self.masks)

    def alive(self) -> list[int]:
        """Alive neurons per hidden layer."""
        return [int(m.sum().item()) for m in self.masks]

    def totals(self) -> list[int]:
        """Neurons per hidden layer in the dense network."""
        return [m.numel() for m in self.masks]

    def weights_alive(self) -> int:
        """Weights and biases that survive compaction."""
        sizes = [self.mlp.layers[0].in_features, *self.alive(),
                 self.mlp.layers[-1].out_features]
        return params_of_sizes(sizes)

    def weights_total(self) -> int:
        """Weights and biases of the dense network."""
        return sum(layer.weight.numel() + layer.bias.numel() for layer in self.mlp.layers)

    def state_dict(self) -> list[torch.Tensor]:
        """Masks for a checkpoint."""
        return [m.clone() for m in self.masks]

    def load_state_dict(self, masks: list[torch.Tensor]) -> None:
        """Restore masks from a checkpoint and re-apply them."""
        if [m.numel() for m in masks] != self.totals():
            raise ValueError(f"mask sizes {[m.numel() for m in masks]} do not match the "
                             f"network's hidden sizes {self.totals()}")
        self.masks = [m.to(self.masks[0]).clone() for m in masks]
        self._rebuild()
        self.apply_to_weights()

    # -- enforcement --------------------------------------------------------------------
    @torch.no_grad()
    def apply_to_weights(self) -> None:
        """Zero the weights and biases of masked neurons."""
        if not self.any_masked:
            return
        for layer, (wm, bm) in zip(self.mlp.layers, self._param_masks):
            layer.weight.mul_(wm)
            layer.bias.mul_(bm)

    @torch.no_grad()
    def apply_to_grads(self) -> None:
        """Zero the gradients of masked entries (call after backward, before the step)."""
        if not self.any_masked:
            return
        for layer, (wm, bm) in zip(self.mlp.layers, self._param_masks):
            if layer.weight.grad is not None:
                layer.weight.grad.mul_(wm)
            if layer.bias.grad is not None:
                layer.bias.grad.mul_(bm)

    @torch.no_grad()
    def clear_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero every per-parameter state tensor (Adam's exp_avg, exp_avg_sq) at masked entries."""
        for layer, (wm, bm) in zip(self.mlp.layers, self._param_masks):
            for param, mask in ((layer.weight, wm), (layer.bias, bm)):
                for value in optimizer.state.get(param, {}).values():
                    if torch.is_tensor(value) and value.shape == param.shape:
                        value.mul_(mask)

    def mask_neurons(self, layer: int, indices: torch.Tensor) -> int:
        """Mask the given neurons of one hidden layer; returns how many were newly masked."""
        if indices.numel() == 0:
            return 0
        before = int(self.masks[layer].sum().item())
        self.masks[layer][indices] = 0.0
        self._rebuild()
        return before - int(self.masks[layer].sum().item())
