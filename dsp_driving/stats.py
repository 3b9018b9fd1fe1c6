"""The run's records, typed: the per-update stats (what ``PPO.step_update`` returns,
stats.jsonl stores one per line, the TensorBoard sink flattens, trainer_node publishes from
nodes/stats_topics.py and the bag reports read back in analysis/training.py), the two parts
it is built from (LearnStats from ``PPO.learn``, PrunerStats from ``DynamicPruner.stats``),
and summary.json (RunSummary).

Names, one per quantity (docs/method.md):
- a network's ``R``: its regulariser R(theta), unscaled, after the update's last minibatch;
- ``losses["lambda_R"]``: lambda_actor R(actor) + lambda_critic R(critic), the term the loss
  adds, averaged over the update's minibatches.
Records written before these names carried ``regulariser`` for both; readers take either
(``network_R``, ``loss_lambda_R``).
"""

from __future__ import annotations

from typing import Any, TypedDict

try:
    from typing import NotRequired
except ImportError:  # Python 3.10 (Humble): the annotations below stay unevaluated strings
    pass


class LayerStats(TypedDict):
    """One hidden layer after the update (the dense layout's counts)."""

    alive: int
    total: int
    threshold: float  # tau_l of the last pruning step (ratio mode: the lowest kept s_j)
    weights_alive: int  # weights and biases into the layer
    weights_total: int


class NetworkStats(TypedDict):
    """The actor or the critic after the update (weights: every Linear, output included)."""

    layers: list[LayerStats]
    neurons_alive: int
    neurons_total: int
    weights_alive: int
    weights_total: int
    R: float
    lam: float  # lambda per gradient step the update applied (0: not regularised)


class LossStats(TypedDict):
    """The update's losses, averaged over minibatches."""

    policy: float
    value: float
    entropy: float
    lambda_R: float
    total: float


class LearnStats(TypedDict):
    """What ``PPO.learn`` returns: the PPO epochs' losses and diagnostics."""

    losses: LossStats
    approx_kl: float  # averaged over minibatches, like the losses
    clipfrac: float
    explained_variance: float  # of the rollout's values for its returns (NaN: constant returns)


class PrunerStats(TypedDict):
    """What ``DynamicPruner.stats`` returns: kappa and both networks after the update."""

    kappa: float  # kappa(t) at the progress of the last step() call (0 before any)
    actor: NetworkStats
    critic: NetworkStats


class UpdateStats(TypedDict):
    """One PPO update."""

    step: int
    update: int
    progress: float  # training progress t in [0, 1]
    kappa: float
    actor: NetworkStats
    critic: NetworkStats
    newly_pruned: int
    # KL(before || after) of the actor's action distribution across the update's pruning
    # step, mean over the rollout's observations (0: nothing pruned; absent in older records)
    prune_kl: NotRequired[float]
    losses: LossStats
    approx_kl: float
    clipfrac: float
    entropy: float
    explained_variance: float
    learning_rate: float
    ep_return_mean: float | None  # None before the first finished episode
    ep_length_mean: float | None
    steps_per_s: float
    wall_s: float


class NetworkSummary(TypedDict):
    """summary.json's block of one network at the end of a run."""

    hidden_dense: list[int]
    hidden_compact: list[int]
    dense_neurons: int
    compact_neurons: int
    dense_weights: int
    compact_weights: int
    neurons_removed_pct: float
    weights_removed_pct: float


class EvalSummary(TypedDict):
    """The deterministic evaluation on held-out seeds."""

    episodes: int
    return_mean: float
    return_std: float
    collision_rate: NotRequired[float]  # driving envs: fraction of episodes with a collision


class RunSummary(TypedDict):
    """summary.json: what a run ends with (trainer.Runner.finish writes it)."""

    env: str
    seed: int
    total_steps: int
    wall_s: float
    steps_per_s: float
    actor: NetworkSummary
    critic: NetworkSummary
    eval: EvalSummary
    # driving envs: driving.safety_summary.summarise of the evaluation episodes
    safety: NotRequired[dict[str, Any]]
    # the closed-loop gate (selection.gate): masked vs compact vs ONNX on those episodes
    gate: dict[str, Any]
    # train.select_every > 0: the evaluated snapshots and the one exported
    selection: NotRequired[dict[str, Any]]


def removed_pct(alive: float, total: float) -> float:
    """Percent removed, 100 * (1 - alive / total): the one convention for neurons and
    weights alike (NaN when ``total`` is 0)."""
    return 100.0 * (1.0 - alive / total) if total else float("nan")


def network_R(network: dict[str, Any]) -> float | None:
    """A network record's R (older records: ``regulariser``)."""
    return network.get("R", network.get("regulariser"))


def loss_lambda_R(losses: dict[str, Any]) -> float | None:
    """A losses record's lambda * R (older records: ``regulariser``)."""
    return losses.get("lambda_R", losses.get("regulariser"))
