"""Dynamic structured pruning: importance, regulariser, schedule, masks, compaction."""

from dsp_driving.pruning.compaction import compact_mlp, macs
from dsp_driving.pruning.importance import (
    adaptive_coefficients,
    group_sizes,
    group_sparse_regulariser,
    neuron_importance,
)
from dsp_driving.pruning.masks import NeuronMasks
from dsp_driving.pruning.pruner import DynamicPruner, NetworkPruner
from dsp_driving.pruning.schedule import kappa, prune_ratio

__all__ = [
    "DynamicPruner", "NetworkPruner", "NeuronMasks", "adaptive_coefficients", "compact_mlp",
    "group_sizes", "group_sparse_regulariser", "kappa", "macs", "neuron_importance",
    "prune_ratio",
]
