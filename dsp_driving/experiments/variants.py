"""The variants a sweep compares, each a config overlay over the env's base config
(docs/method.md, "Baselines"; docs/experiments.md, "Adding a variant").

- ``dense``: no pruning, the baseline every percentage is taken against;
- ``dsp``: the method, as the base config sets it;
- ``group_lasso``: the same schedule with c_j = 1 (no importance weighting);
- ``magnitude_gradual``: lambda = 0: the same dynamic threshold and masks, no regulariser;
- ``small_dense``: a dense net trained from scratch with the per-layer sizes ``dsp`` ended
  with for the same seed, for the same steps;
- ``posthoc``: the trained ``dense`` run of the seed, pruned once to ``dsp``'s sizes by the
  same neuron importance (pruning/oneshot.py), then fine-tuned for 10 % of the budget;
- ``dsp_fixed``: the ablation of the recipe (docs/method.md section 11): the schedule the
  defaults held before it, fixed in gradient steps: lambda 3e-4 per step for the whole run,
  the dynamic threshold alone (kappa 0.8, t 0.05-0.5), the critic pruned too, no refit;
- ``dsp_norefit``: the ablation of the refit: the recipe with ``compensate: none`` (the cut
  neurons' contribution is dropped, the layers above are not refitted; the recipe until
  the refit became its default).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from dsp_driving.config import Config, from_dict

POSTHOC_BUDGET = 0.1  # posthoc's fine-tuning, as a fraction of the other variants' steps
SUMMARY = "summary.json"

# (base config, total_steps, run folders of the variants it needs) -> the overlay
Overlay = Callable[[Config, int, Mapping[str, Path]], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row group of the table: how its config differs from the base, and the variants
    of the same seed it needs finished first."""

    name: str
    overlay: Overlay
    needs: tuple[str, ...] = ()
    doc: str = ""
    starts_from: str | None = None  # the needed variant whose checkpoint.pt it starts from

    def __post_init__(self) -> None:
        if self.starts_from is not None and self.starts_from not in self.needs:
            raise ValueError(f"variant {self.name}: starts_from={self.starts_from!r} must be "
                             f"one of its needs {self.needs}")


def _fixed(overlay: dict[str, Any]) -> Overlay:
    return lambda base, steps, needed: overlay


def compact_sizes(run_dir: Path) -> tuple[list[int], list[int]]:
    """(actor, critic) hidden sizes a finished run ended with (its summary.json)."""
    path = Path(run_dir) / SUMMARY
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the run this variant needs has not finished")
    summary = json.loads(path.read_text(encoding="utf-8"))
    return list(summary["actor"]["hidden_compact"]), list(summary["critic"]["hidden_compact"])


def _small_dense(base: Config, steps: int, needed: Mapping[str, Path]) -> dict[str, Any]:
    actor, critic = compact_sizes(needed["dsp"])
    return {"net": {"actor_hidden": actor, "critic_hidden": critic},
            "pruning": {"enabled": False}}


def _posthoc(base: Config, steps: int, needed: Mapping[str, Path]) -> dict[str, Any]:
    actor, critic = compact_sizes(needed["dsp"])
    return {"net": {"actor_hidden": actor, "critic_hidden": critic},
            "pruning": {"enabled": False},
            "train": {"init_from": str(Path(needed["dense"]).resolve()),
                      "total_steps": posthoc_steps(steps)}}


def posthoc_steps(total_steps: int) -> int:
    """posthoc's fine-tuning budget: POSTHOC_BUDGET of the others' (at least 1 step)."""
    return max(1, math.ceil(POSTHOC_BUDGET * total_steps))


# dsp_fixed: the defaults before the one recipe (docs/method.md section 11), every pruning
# field the recipe changed (the guard and the budget: off, as they were)
FIXED_SCHEDULE: dict[str, Any] = {
    "enabled": True, "prune_critic": True, "lambda_units": "step", "lambda_actor": 3e-4,
    "lambda_critic": 3e-4, "regularise_after_ramp": True, "mode": "dynamic",
    "kappa_final": 0.8, "t_start": 0.05, "t_end": 0.5, "ratio_final": 0.9,
    "compensate": "none", "kl_budget": 0.0, "guard": 0.0,
}

VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("dense", _fixed({"pruning": {"enabled": False}}),
            doc="no pruning: the baseline"),
    Variant("dsp", _fixed({"pruning": {"enabled": True}}), doc="the method"),
    Variant("group_lasso", _fixed({"pruning": {"enabled": True,
                                               "regulariser": "group_lasso"}}),
            doc="c_j = 1: is the importance weighting needed?"),
    Variant("magnitude_gradual", _fixed({"pruning": {"enabled": True, "lambda_actor": 0.0,
                                                     "lambda_critic": 0.0}}),
            doc="lambda = 0: is the regulariser needed?"),
    Variant("small_dense", _small_dense, needs=("dsp",),
            doc="dsp's final sizes from scratch: is pruning needed at all?"),
    Variant("posthoc", _posthoc, needs=("dense", "dsp"),
            doc="the trained dense net pruned once to dsp's sizes, fine-tuned 10 %",
            starts_from="dense"),
    Variant("dsp_fixed", _fixed({"pruning": FIXED_SCHEDULE}),
            doc="ablation: the defaults the recipe replaced (fixed schedule, no refit)"),
    Variant("dsp_norefit", _fixed({"pruning": {"enabled": True, "compensate": "none"}}),
            doc="ablation: the recipe without the refit after each cut"),
)}


def check_variants(names: list[str]) -> list[str]:
    """The names, in the order given, each known (ValueError naming an unknown one)."""
    for name in names:
        if name not in VARIANTS:
            raise ValueError(f"unknown variant {name!r} (known: {', '.join(VARIANTS)})")
    if len(set(names)) != len(names):
        raise ValueError(f"variants {names}: each may be named once")
    return names


def variant_config(name: str, base: Config, seed: int, total_steps: int,
                   needed: Mapping[str, Path] | None = None) -> Config:
    """The config of variant ``name`` for ``seed``: the base, then the variant's overlay,
    ``train.seed`` and the budget (``needed``: run folders of the variants it needs)."""
    variant = VARIANTS[name]
    needed = dict(needed or {})
    missing = [n for n in variant.needs if n not in needed]
    if missing:
        raise ValueError(f"variant {name} needs the {', '.join(missing)} run of the seed")
    cfg = from_dict({"train": {"seed": seed, "total_steps": total_steps}}, base)
    overlay = variant.overlay(cfg, total_steps, needed)
    return from_dict(overlay, cfg)
