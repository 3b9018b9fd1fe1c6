"""One-shot structured pruning (the posthoc baseline): the kept neurons, hand-checked."""

from __future__ import annotations

import pytest
import torch

from dsp_driving.modules.mlp import MLP
from dsp_driving.pruning.importance import neuron_importance
from dsp_driving.pruning.oneshot import prune_to_sizes, top_neurons


def _mlp_with_known_importance() -> MLP:
    """2 -> [3] -> 1 with s = [row^2 + bias^2 + out-col^2] = [1+0+4, 9+0+0, 0+1+1]."""
    mlp = MLP(2, [3], 1, "tanh", out_gain=1.0)
    with torch.no_grad():
        mlp.layers[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 3.0], [0.0, 0.0]]))
        mlp.layers[0].bias.copy_(torch.tensor([0.0, 0.0, 1.0]))
        mlp.layers[1].weight.copy_(torch.tensor([[2.0, 0.0, 1.0]]))
        mlp.layers[1].bias.copy_(torch.tensor([0.5]))
    return mlp


def test_top_neurons_keeps_the_highest_importance_in_index_order() -> None:
    mlp = _mlp_with_known_importance()
    assert neuron_importance(mlp)[0].tolist() == [5.0, 9.0, 2.0]
    assert top_neurons(mlp, [1])[0].tolist() == [1]
    assert top_neurons(mlp, [2])[0].tolist() == [0, 1]  # ascending, not by rank
    assert top_neurons(mlp, [3])[0].tolist() == [0, 1, 2]


def test_prune_to_sizes_is_the_network_without_the_dropped_neurons() -> None:
    torch.manual_seed(0)
    mlp = MLP(5, [8, 6], 2, "tanh", out_gain=1.0)
    x = torch.randn(32, 5)
    first, second = mlp.layers[0], mlp.layers[1]
    keep = top_neurons(mlp, [3, 4])
    # the reference: zero every dropped neuron's outgoing weights in a copy
    with torch.no_grad():
        ref = MLP(5, [8, 6], 2, "tanh", out_gain=1.0)
        ref.load_state_dict(mlp.state_dict())
        for layer, kept in zip(ref.layers[1:], keep):
            dropped = torch.ones(layer.in_features, dtype=torch.bool)
            dropped[kept] = False
            layer.weight[:, dropped] = 0.0
        expected = ref(x)
    prune_to_sizes(mlp, [3, 4])
    assert mlp.hidden_sizes == [3, 4]
    assert mlp.layers[0] is first and mlp.layers[1] is second  # in place
    torch.testing.assert_close(mlp(x), expected)


@pytest.mark.parametrize("sizes, field", [([3], "sizes"), ([0, 2], "sizes[0]"),
                                          ([8, 7], "sizes[1]")])
def test_bad_sizes_are_refused_by_name(sizes: list[int], field: str) -> None:
    mlp = MLP(5, [8, 6], 2, "tanh", out_gain=1.0)
    with pytest.raises(ValueError, match=rf"{field.replace('[', '.').replace(']', '.')}"):
        top_neurons(mlp, sizes)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_the_one_shot_cut_refitted_keeps_the_batch_mean_and_fits_better(activation: str
                                                                        ) -> None:
    # the refit the method applies to its cuts (refit.py), on the one-shot cut: the output
    # layer is fitted last with an intercept, so the batch-mean output is kept exactly;
    # lstsq's squared error on the batch is below the plain cut's
    x = torch.randn(512, 5, generator=torch.Generator().manual_seed(1)) + 0.3
    outputs = {}
    for how in ("none", "mean", "lstsq"):
        torch.manual_seed(2)
        mlp = MLP(5, [32, 24], 3, activation, out_gain=1.0)
        with torch.no_grad():
            before = mlp(x)
        keep = prune_to_sizes(mlp, [6, 5], x, how)
        assert mlp.hidden_sizes == [6, 5] and [k.numel() for k in keep] == [6, 5]
        with torch.no_grad():
            outputs[how] = (mlp(x) - before)
    for how in ("mean", "lstsq"):
        torch.testing.assert_close(outputs[how].mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    assert float(outputs["none"].mean(0).abs().max()) > 1e-3
    sq = {how: float(d.square().mean()) for how, d in outputs.items()}
    assert sq["lstsq"] < sq["mean"] < sq["none"] and sq["lstsq"] < 0.5 * sq["none"]
    # the same neurons are kept whatever the refit: they are chosen before any fit
    torch.manual_seed(2)
    mlp = MLP(5, [32, 24], 3, activation, out_gain=1.0)
    assert [k.tolist() for k in top_neurons(mlp, [6, 5])] == \
        [k.tolist() for k in prune_to_sizes(mlp, [6, 5], x, "lstsq")]


def test_an_unknown_refit_or_a_refit_without_inputs_is_refused_by_name() -> None:
    mlp = MLP(5, [8, 6], 2, "tanh", out_gain=1.0)
    with pytest.raises(ValueError, match="pruning.compensate='ridge'"):
        prune_to_sizes(mlp, [3, 4], torch.randn(16, 5), "ridge")
    with pytest.raises(ValueError, match="pruning.compensate='ridge'"):
        prune_to_sizes(mlp, [3, 4], None, "ridge")  # refused even where nothing is fitted
    with pytest.raises(ValueError, match="inputs=None.*compensate=lstsq"):
        prune_to_sizes(mlp, [3, 4], None, "lstsq")
    assert mlp.hidden_sizes == [8, 6]  # nothing cut by a refused call


@pytest.mark.parametrize("compensate", ["mean", "lstsq"])
@pytest.mark.parametrize("sizes", [[6, 5], [32, 5], [6, 24], [32, 24]])
def test_the_one_shot_refit_is_the_pruning_steps_refit(compensate: str, sizes: list[int]
                                                      ) -> None:
    # the same cut made by a pruning step (masks, refit, then compaction) gives the same
    # network: one refit procedure for both routes, layers kept whole included
    from dsp_driving.config import PruningConfig
    from dsp_driving.pruning.compaction import compact_in_place
    from dsp_driving.pruning.pruner import NetworkPruner

    x = torch.randn(256, 5, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(4)
    one = MLP(5, [32, 24], 3, "tanh", out_gain=1.0)
    step = MLP(5, [32, 24], 3, "tanh", out_gain=1.0)
    step.load_state_dict(one.state_dict())
    keep = prune_to_sizes(one, sizes, x, compensate)
    pruner = NetworkPruner("actor", step, 1.0, PruningConfig(compensate=compensate), True)
    cuts = []
    for kept, n in zip(keep, [32, 24]):
        dropped = torch.ones(n, dtype=torch.bool)
        dropped[kept] = False
        cuts.append(torch.nonzero(dropped).flatten())
    pruner._cut(cuts, x)
    compact_in_place(step, keep)
    with torch.no_grad():
        torch.testing.assert_close(one(x), step(x), atol=1e-6, rtol=0)
