"""Dynamic structured pruning of the actor and critic MLPs while PPO trains them.

The method of Su, Li, Xu, Kang, Niyato and Xie, "Compressing Deep Reinforcement Learning
Networks with a Dynamic Structured Pruning Method for Autonomous Driving" (arXiv 2402.05146,
IEEE TVT 2024), as docs/method.md states it, equation by equation, with the function that
computes each: importance (s_j, r_j), regulariser (c_j, |g_j|, R, dR/dtheta), schedule
(kappa(t), p(t)), threshold (the pruning step of a layer), masks, compaction, and pruner
(the hooks a training loop calls); refit (the least-squares repair after a cut, shared
with the one-shot cut of oneshot.py).
"""

from dsp_driving.modules.mlp import macs
from dsp_driving.pruning.compaction import compact_mlp
from dsp_driving.pruning.importance import neuron_importance, relative_importance
from dsp_driving.pruning.masks import NeuronMasks
from dsp_driving.pruning.pruner import DynamicPruner, NetworkPruner
from dsp_driving.pruning.regulariser import (
    accumulate_regulariser_grad,
    group_sizes,
    importance_coefficients,
)
from dsp_driving.pruning.schedule import kappa, prune_ratio
from dsp_driving.pruning.threshold import select_to_prune

__all__ = [
    "DynamicPruner", "NetworkPruner", "NeuronMasks", "accumulate_regulariser_grad",
    "compact_mlp", "group_sizes", "importance_coefficients", "kappa", "macs",
    "neuron_importance", "prune_ratio", "relative_importance", "select_to_prune",
]
