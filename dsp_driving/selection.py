"""Safety-first choice of the policy a run exports, and the closed-loop export gate (issue #19).

Selection: once the actor has its final size, the trainer evaluates the masked actor every
``train.select_every`` updates and at the last one, deterministically on
``train.select_episodes`` episodes from ``train.select_seed`` (seeds disjoint from training and
from the held-out evaluation seeds), and keeps the best snapshot by (collision rate, then
return; the later one on a tie). "Final size": updates that start at progress >=
``pruning.t_end``, where the ramp has ended (dense runs use the same window, so both are judged
alike), and a snapshot taken before the actor last shrank no longer competes, so the exported
actor always has the final size. On envs without safety records the collision rate is 0, so
that is the best return. The run's compact actor, its evaluation and policy.onnx come from
that snapshot; summary.json's ``selection`` says which one.

Gate: the masked network, the compact torch actor and the exported ONNX drive the same
evaluation episodes closed loop. On every observation the compact actor's run visited, the
other two must give its action within ``ACTION_TOL`` (discrete: equal), and each of their own
closed-loop episodes must end as the compact actor's did (outcome and collisions; terminated
or not elsewhere). A disagreement raises :class:`GateError`, and the ONNX file is not left as
policy.onnx.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
import contextlib
import copy
import logging
import random
from typing import Any

import numpy as np
import torch

from dsp_driving.config import Config
from dsp_driving.evaluation import collision_rate, evaluate
from dsp_driving.export import ExportError
from dsp_driving.modules.mlp import MLP
from dsp_driving.pruning.compaction import compact_mlp
from dsp_driving.rl.envs import eval_env_kwargs
from dsp_driving.rl.networks import ActionSpec, DeployedActor
from dsp_driving.rl.normalization import ObsNormalizer

ACTION_TOL = 1e-5  # the bound; torch, its compaction and onnxruntime agree to ~1e-7

log = logging.getLogger(__name__)


class GateError(ExportError):
    """The masked network, the compact actor and the exported policy do not drive alike."""


def select_seed_range(cfg: Config) -> range:
    """The reset seeds selection evaluates on."""
    t = cfg.train
    return range(t.select_seed, t.select_seed + t.select_episodes)


class Snapshot:
    """One evaluated actor: the masked network as it was in training (a copy) with its
    masks and observation normaliser; ``deployed()`` is its compact actor."""

    def __init__(self, mlp: MLP, masks: Sequence[torch.Tensor], obs_norm: ObsNormalizer,
                 action: ActionSpec) -> None:
        self.mlp, self.masks = mlp, [m.clone() for m in masks]
        self.obs_norm, self.action = obs_norm, action

    @classmethod
    def of(cls, learner: Any) -> Snapshot:
        """A copy of ``learner``'s (a PPO) actor as it is now."""
        return cls(copy.deepcopy(learner.agent.actor), learner.pruner.masks("actor"),
                   copy.deepcopy(learner.agent.obs_norm), learner.action)

    def masked(self) -> DeployedActor:
        """The masked network as a deterministic policy (the training graph, not compacted)."""
        return DeployedActor(copy.deepcopy(self.obs_norm), copy.deepcopy(self.mlp),
                             self.action).eval()

    def deployed(self) -> DeployedActor:
        """The compact actor (masked neurons physically removed)."""
        return DeployedActor(copy.deepcopy(self.obs_norm), compact_mlp(self.mlp, self.masks),
                             self.action).eval()

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and lists (a checkpoint entry)."""
        return {"hidden": self.mlp.hidden_sizes, "activation": self.mlp.activation,
                "in_dim": self.mlp.layers[0].in_features,
                "out_dim": self.mlp.layers[-1].out_features,
                "mlp": {k: v.clone() for k, v in self.mlp.state_dict().items()},
                "masks": [m.clone() for m in self.masks],
                "obs_norm": {k: v.clone() for k, v in self.obs_norm.state_dict().items()},
                "obs_norm_settings": {"clip": self.obs_norm.clip,
                                      "enabled": self.obs_norm.enabled,
                                      "epsilon": self.obs_norm.epsilon}}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], action: ActionSpec) -> Snapshot:
        mlp = MLP(state["in_dim"], state["hidden"], state["out_dim"], state["activation"])
        mlp.load_state_dict(state["mlp"])
        norm = ObsNormalizer(state["in_dim"], **state["obs_norm_settings"])
        norm.load_state_dict(state["obs_norm"])
        return cls(mlp, state["masks"], norm, action)


class Selector:
    """Evaluates snapshots during training and keeps the best (module doc)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.history: list[dict[str, Any]] = []  # one entry per evaluated snapshot
        self.best: Snapshot | None = None
        self.best_entry: dict[str, Any] | None = None

    @property
    def enabled(self) -> bool:
        return self.cfg.train.select_every > 0

    def due(self, learner: Any) -> bool:
        """Whether the update ``learner`` just finished is one to evaluate."""
        if not self.enabled:
            return False
        if learner.done:  # the last actor always competes (and is the one of final size)
            return True
        return (learner.update_start_progress >= self.cfg.pruning.t_end
                and learner.update % self.cfg.train.select_every == 0)

    def consider(self, learner: Any) -> dict[str, Any]:
        """Evaluate ``learner``'s actor now; keep it if it is the best so far. Returns the
        history entry (update, step, hidden, episodes, collision_rate, return_mean, best)."""
        cfg = self.cfg
        snapshot = Snapshot.of(learner)
        with _rng_preserved():  # training goes on exactly as it would without selection
            result = evaluate(snapshot.masked().act, cfg.train.env_id,
                              cfg.train.select_episodes, cfg.train.select_seed,
                              env_kwargs=eval_env_kwargs(cfg.train), summary=False)
        entry = {"update": learner.update, "step": learner.global_step,
                 "hidden": [int(m.sum()) for m in snapshot.masks],
                 "episodes": result["episodes"], "collision_rate": collision_rate(result),
                 "return_mean": result["return_mean"], "best": False}
        self.offer(entry, snapshot)
        log.info(f"selection at update {entry['update']} (step {entry['step']}): collision "
                 f"rate {entry['collision_rate']:.2f}, return {entry['return_mean']:.2f} over "
                 f"{entry['episodes']} episodes{' (best so far)' if entry['best'] else ''}")
        return entry

    def offer(self, entry: dict[str, Any], snapshot: Snapshot) -> bool:
        """Add an evaluated snapshot (``entry``: update, hidden, collision_rate, return_mean,
        ...) to the history; it becomes the best when it is the first of its size or ranks
        at least as high as the best. Returns whether it did (``entry["best"]`` too)."""
        if self.best_entry is not None and self.best_entry["hidden"] != entry["hidden"]:
            # pruned since: masks only shrink, so every earlier snapshot is larger than the
            # final actor; only snapshots of the final size compete
            log.info(f"actor {self.best_entry['hidden']} -> {entry['hidden']} since update "
                     f"{self.best_entry['update']}: earlier snapshots no longer compete")
            self.best_entry["best"] = False
            self.best = self.best_entry = None
        entry["best"] = self.best_entry is None or _key(entry) <= _key(self.best_entry)
        if entry["best"]:
            if self.best_entry is not None:
                self.best_entry["best"] = False
            self.best, self.best_entry = snapshot, entry
        self.history.append(entry)
        return entry["best"]

    def summary(self) -> dict[str, Any] | None:
        """summary.json's ``selection`` block (None when selection is off)."""
        if not self.enabled:
            return None
        seeds = select_seed_range(self.cfg)
        return {"rule": "min collision_rate, then max return_mean; later on a tie",
                "every_updates": self.cfg.train.select_every,
                "from_progress": self.cfg.pruning.t_end,
                "seeds": [seeds.start, seeds.stop - 1],
                "chosen_update": None if self.best_entry is None else self.best_entry["update"],
                "evaluated": [dict(e) for e in self.history]}

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(e) for e in self.history],
                "best": None if self.best is None else self.best.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any] | None, action: ActionSpec) -> None:
        if not state:
            return
        history = [dict(e) for e in state["history"]]
        # a resume with a larger total_steps moves every update's progress back: snapshots
        # that now fall before t_end no longer competed under this run's schedule
        start = [(e["update"] - 1) / self.cfg.num_updates for e in history]
        self.history = [e for e, p in zip(history, start) if p >= self.cfg.pruning.t_end]
        if len(self.history) < len(history):
            log.info(f"selection: {len(history) - len(self.history)} snapshot(s) of the shorter "
                     "run now fall before pruning.t_end and no longer compete")
        best = [e for e in self.history if e["best"]]
        self.best_entry = best[-1] if best else None
        self.best = None if self.best_entry is None or state["best"] is None \
            else Snapshot.from_state(state["best"], action)


@contextlib.contextmanager
def _rng_preserved() -> Iterator[None]:
    """Restore the global torch, numpy and random states on exit (an env may draw on them)."""
    states = (torch.get_rng_state(), np.random.get_state(legacy=False), random.getstate())
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])


def _key(entry: Mapping[str, Any]) -> tuple[float, float]:
    return entry["collision_rate"], -entry["return_mean"]


# ---- the gate ----------------------------------------------------------------------------


def drive(policy: Callable[[np.ndarray], Any], cfg: Config, episodes: int,
          seed: int) -> dict[str, Any]:
    """Closed-loop evaluation that keeps each step's observation and action (for
    :func:`compare`)."""
    return evaluate(policy, cfg.train.env_id, episodes, seed,
                    env_kwargs=eval_env_kwargs(cfg.train), record_actions=True,
                    record_observations=True)


def _differing_steps(policy: Callable[[np.ndarray], Any], obs: np.ndarray, actions: np.ndarray,
                     discrete: bool, tol: float) -> tuple[np.ndarray, float]:
    """Where ``policy`` on ``obs`` differs from ``actions`` (beyond ``tol``; discrete:
    unequal), and the largest difference."""
    if not len(obs):
        return np.zeros(0, dtype=bool), 0.0
    b = np.stack([np.asarray(policy(o.astype(np.float32)), dtype=np.float64).reshape(-1)
                  for o in obs])
    diff = float(np.max(np.abs(actions - b))) if actions.size else 0.0
    bad = np.any(actions != b, axis=1) if discrete \
        else ~(np.max(np.abs(actions - b), axis=1) <= tol)
    return bad, diff if np.isfinite(diff) else float("inf")  # NaN: unbounded


def agreement(reference: Mapping[str, Any], other: Mapping[str, Any],
              policy: Callable[[np.ndarray], Any], discrete: bool,
              tol: float = ACTION_TOL,
              reference_policy: Callable[[np.ndarray], Any] | None = None) -> dict[str, Any]:
    """Compare ``policy`` (whose own closed-loop run is ``other``) with the reference run
    of the same episodes.

    Actions: ``policy`` on every observation the reference visited, against the reference's
    action there (within ``tol``; discrete: equal). Outcomes: each episode of ``other``
    must end as the reference's did (outcome and collisions on driving tasks; terminated or
    truncated elsewhere). Closed-loop actions are not compared step by step: the envs are
    chaotic enough (traffic, contact) that float32 rounding differences (~1e-7) between two
    implementations grow over 100+ steps (measured: 8e-3 after 134 steps on HighwayDrive-v0
    with the same outcome), so they are reported (``closed_loop_max_abs_diff``), not judged.
    With ``reference_policy`` (the policy of the reference run) it is also run on every
    observation ``other`` visited, against ``other``'s actions. An episode whose outcome
    differs although both policies agree within ``tol`` on every state either run visited
    is not a mismatch: the two are the same function there, and the simulator amplified
    their rounding (measured: Walker2d-v5, 1.5e-6 apart on every visited state, one of 20
    episodes fell in one run and not in the other). It is listed in
    ``outcome_differences`` instead.
    Returns ``max_abs_diff``, ``mismatches`` (a list of "episode seed s: why") and
    ``outcome_differences``."""
    mismatches: list[str] = []
    explained: list[str] = []
    worst = 0.0
    for i, (obs, a, ra) in enumerate(zip(reference["observations"], reference["actions"],
                                         reference["rows"])):
        seed = ra["seed"]
        bad, diff = _differing_steps(policy, obs, a, discrete, tol)
        worst = max(worst, diff)
        if np.any(bad):
            mismatches.append(f"episode seed {seed}: actions differ from step "
                              f"{int(np.argmax(bad))} (max |diff| {diff:.3g})")
        rb = other["rows"][i]
        fields = ("outcome", "collisions") if "outcome" in ra else ("terminated",)
        differs = [f"{f} {ra.get(f)!r} vs {rb.get(f)!r}" for f in fields
                   if ra.get(f) != rb.get(f)]
        if not differs:
            continue
        if reference_policy is not None and not np.any(bad):
            back, back_diff = _differing_steps(reference_policy, other["observations"][i],
                                               other["actions"][i], discrete, tol)
            worst = max(worst, back_diff)
            if not np.any(back):
                explained.append(f"episode seed {seed}: {', '.join(differs)} (the policies "
                                 f"agree within {tol:g} on both runs' states)")
                continue
        mismatches += [f"episode seed {seed}: {d}" for d in differs]
    closed = [float(np.max(np.abs(x[:n] - y[:n]))) for x, y in
              zip(reference["actions"], other["actions"]) if (n := min(len(x), len(y)))]
    return {"max_abs_diff": worst, "mismatches": mismatches,
            "outcome_differences": explained,
            "closed_loop_max_abs_diff": max(closed, default=0.0)}


def compare(runs: Mapping[str, Mapping[str, Any]],
            policies: Mapping[str, Callable[[np.ndarray], Any]],
            discrete: bool) -> dict[str, Any]:
    """summary.json's ``gate`` block from ``drive`` results of the same episodes (and the
    policies that drove them), each compared with the first (the reference; see
    :func:`agreement`); ``passed`` is False when any disagrees."""
    names = list(runs)
    ref = runs[names[0]]
    block: dict[str, Any] = {"episodes": ref["episodes"], "seeds": list(ref["seeds"]),
                             "tolerance": 0.0 if discrete else ACTION_TOL,
                             "reference": names[0], "compared": {}, "failures": []}
    for name in names[1:]:
        found = agreement(ref, runs[name], policies[name], discrete,
                          reference_policy=policies.get(names[0]))
        block["compared"][name] = {
            "max_abs_diff": found["max_abs_diff"], "agree": not found["mismatches"],
            "closed_loop_max_abs_diff": found["closed_loop_max_abs_diff"],
            "outcome_differences": found["outcome_differences"]}
        block["failures"] += [f"{name} vs {names[0]}: {m}" for m in found["mismatches"]]
    block["passed"] = not block["failures"]
    block["return_mean"] = {name: r["return_mean"] for name, r in runs.items()}
    return block


def check(block: Mapping[str, Any]) -> None:
    """Raise :class:`GateError` when a ``compare`` block did not pass."""
    failures = block["failures"]
    if failures:
        shown = "; ".join(failures[:5]) + (f"; ... ({len(failures)} in all)"
                                          if len(failures) > 5 else "")
        raise GateError(f"closed-loop gate failed over {block['episodes']} episodes from "
                        f"seed {block['seeds'][0]}: {shown}")
