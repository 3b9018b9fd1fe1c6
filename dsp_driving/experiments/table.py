"""The table of a sweep: per env x variant, size and return over seeds with interval
estimates (docs/experiments.md).

Each seed contributes one number, its policy.onnx's mean return over the held-out evaluation
episodes (eval.json). Over seeds: mean, standard deviation, interquartile mean, and a 95 %
percentile-bootstrap confidence interval of the mean (scipy.stats.bootstrap, 10 000
resamples, fixed RNG), as Agarwal et al. 2021 recommend for few runs. Sizes are the actor's
(summary.json), averaged over seeds; return_pct_of_dense is the variant's mean over the
env's dense mean.

Goals (``goal_lines``): whether each env's ``dsp`` row meets the paper's figures
(GOAL_NEURONS_REMOVED_PCT, GOAL_WEIGHTS_REMOVED_PCT, GOAL_RETURN_PCT_OF_DENSE) and beats the
simpler routes to the same size (GOAL_ABOVE, paired on shared seeds), each with its margin.
Writing the tables into the sweep's folders and a results folder (with its README.md):
``experiments.publish``.
"""

from __future__ import annotations

from collections.abc import Sequence
import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dsp_driving.experiments.sweep import EVAL, SWEEP
from dsp_driving.experiments.variants import POSTHOC_BUDGET, VARIANTS
from dsp_driving.intervals import percentile_bootstrap
from dsp_driving.io_utils import atomic_write
from dsp_driving.modules.mlp import macs_of_sizes, params_of_sizes
from dsp_driving.policy_format import METADATA_KEY
from dsp_driving.stats import removed_pct

log = logging.getLogger(__name__)

COLUMNS = ("env", "variant", "seeds", "neurons_removed_pct", "weights_removed_pct", "macs",
           "return_mean", "return_std", "return_iqm", "return_ci_low", "return_ci_high",
           "return_pct_of_dense")
BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95
# what --results copies of each trial (and of dsp's, the deployable policy too)
# the goals dsp is held to, per env (docs/experiments.md): its row's neurons and weights
# removed against the dense actor (>= 96 % removed: <= 4 % of the dense actor's weights
# kept), its return in % of dense's (paired seeds), and a mean return above each of
# GOAL_ABOVE's on the seeds both have
GOAL_VARIANT = "dsp"
GOAL_NEURONS_REMOVED_PCT = 93.0
GOAL_WEIGHTS_REMOVED_PCT = 96.0
GOAL_RETURN_PCT_OF_DENSE = 95.0
GOAL_ABOVE = ("small_dense", "posthoc")


def interval_stats(values: Sequence[float]) -> dict[str, float]:
    """mean, std (ddof 1; 0 for one value), IQM (25 % trimmed mean) and the 95 % bootstrap
    CI of the mean over ``values`` (NaN with fewer than two values)."""
    try:
        from scipy import stats
    except ModuleNotFoundError:
        raise ModuleNotFoundError("dsp-driving table needs scipy: pip install -e "
                                  "'.[sweep]'") from None
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("interval_stats: no values")
    out = {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
           "iqm": float(stats.trim_mean(x, 0.25)), "ci_low": math.nan, "ci_high": math.nan}
    ci = percentile_bootstrap((x,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES,
                              confidence=CONFIDENCE, seed=0)
    if ci is not None:
        out["ci_low"], out["ci_high"] = ci
    return out


def env_dirs(root: Path) -> list[Path]:
    """The env folders of a sweep folder (or the folder itself when it is one)."""
    root = Path(root)
    if (root / SWEEP).is_file():
        return [root]
    found = sorted(p.parent for p in root.glob(f"*/{SWEEP}"))
    if not found:
        raise FileNotFoundError(f"{root}: no sweep here (no {SWEEP} in it or its folders)")
    return found


def read_trials(env_dir: Path) -> list[dict[str, Any]]:
    """One record per evaluated trial of an env folder: env, variant, seed, the actor's
    sizes against the env's dense actor (sweep.yaml's net.actor_hidden: small_dense and
    posthoc are smaller nets, but what they save is measured against the same dense one),
    MACs, and the policy.onnx return."""
    settings = yaml.safe_load((env_dir / SWEEP).read_text(encoding="utf-8"))
    reference = list(settings["config"]["net"]["actor_hidden"])
    rows, dims = [], None
    for variant in VARIANTS:
        for run in sorted((env_dir / variant).glob("seed*"), key=_seed_of):
            if not all((run / name).is_file() for name in (EVAL, "summary.json")):
                log.warning(f"{run}: not in the table (not done: run the sweep again)")
                continue
            summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
            result = json.loads((run / EVAL).read_text(encoding="utf-8"))
            dims = dims or env_dims(env_dir, settings)
            rows.append({"env": env_dir.name, "env_id": summary["env"], "variant": variant,
                         "seed": _seed_of(run),
                         "actor": actor_sizes(*dims, reference,
                                              summary["actor"]["hidden_compact"]),
                         "return": float(result["return_mean"]),
                         "wall_s": float(summary.get("wall_s", math.nan)), "run_dir": run})
    return rows


def env_dims(env_dir: Path, settings: dict[str, Any]) -> tuple[int, int]:
    """(obs_dim, act_dim) of an env folder's actors: from a policy.json of the folder (every
    trial of it shares the env), else from the env's spaces. A trial needs only eval.json
    and summary.json to be in the table, so trials copied back from results/ (where only the
    published variants keep their policy) count as done on a fresh clone. ``settings``:
    the folder's sweep.yaml."""
    for path in sorted(Path(env_dir).glob("*/seed*/policy.json")):
        meta = json.loads(path.read_text(encoding="utf-8"))[METADATA_KEY]
        return int(meta["obs_dim"]), int(meta["act_dim"])
    from dsp_driving.rl.envs import make_env
    from dsp_driving.rl.networks import ActionSpec

    train = (settings.get("config") or {}).get("train") or {}
    env = make_env(settings["env"], train.get("env_kwargs"))
    try:
        return int(env.observation_space.shape[0]), ActionSpec.from_space(env.action_space).dim
    finally:
        env.close()


def actor_sizes(obs_dim: int, act_dim: int, dense: list[int], compact: list[int]
                ) -> dict[str, Any]:
    """An actor's size against the dense one: neurons, weights (biases included), MACs."""
    dense_w = params_of_sizes([obs_dim, *dense, act_dim])
    compact_w = params_of_sizes([obs_dim, *compact, act_dim])
    return {"hidden_dense": list(dense), "hidden_compact": list(compact),
            "compact_weights": compact_w,
            "neurons_removed_pct": removed_pct(sum(compact), sum(dense)),
            "weights_removed_pct": removed_pct(compact_w, dense_w),
            "macs": macs_of_sizes([obs_dim, *compact, act_dim])}


def _seed_of(run: Path) -> int:
    return int(run.name.removeprefix("seed"))


def table_rows(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's rows (COLUMNS), one per env x variant, in VARIANTS' order."""
    rows = []
    for env in dict.fromkeys(t["env"] for t in trials):
        of_env = [t for t in trials if t["env"] == env]
        dense = {t["seed"]: t["return"] for t in of_env if t["variant"] == "dense"}
        for variant in dict.fromkeys(t["variant"] for t in of_env):
            group = [t for t in of_env if t["variant"] == variant]
            st = interval_stats([t["return"] for t in group])
            rows.append({
                "env": env, "variant": variant, "seeds": len(group),
                "neurons_removed_pct": _mean(t["actor"]["neurons_removed_pct"] for t in group),
                "weights_removed_pct": _mean(t["actor"]["weights_removed_pct"] for t in group),
                "macs": _mean(t["actor"]["macs"] for t in group),
                "return_mean": st["mean"], "return_std": st["std"], "return_iqm": st["iqm"],
                "return_ci_low": st["ci_low"], "return_ci_high": st["ci_high"],
                "return_pct_of_dense": pct_of_dense(group, dense)})
    return rows


def pct_of_dense(group: list[dict[str, Any]], dense: dict[int, float]) -> float:
    """100 x the variant's mean return over dense's, on the seeds both have (paired; all of
    dense's when they share none); NaN without a dense run or when dense's mean is <= 0
    (a ratio of returns means nothing there)."""
    shared = [t for t in group if t["seed"] in dense]
    if not dense:
        return math.nan
    if shared:
        ours, theirs = _mean(t["return"] for t in shared), _mean(dense[t["seed"]]
                                                                  for t in shared)
    else:
        ours, theirs = _mean(t["return"] for t in group), _mean(dense.values())
    return 100.0 * ours / theirs if theirs > 0 else math.nan


def _mean(values: Any) -> float:
    return float(np.mean(list(values)))


def goal_results(env: str, rows: list[dict[str, Any]], trials: list[dict[str, Any]]
                 ) -> list[tuple[str, str]] | str:
    """``env``'s dsp against the goals: a (``met`` | ``missed`` | ``skipped``, sentence) per
    goal, each sentence with the measured value and the margin; or, when the env has no dsp
    or no dense row, the sentence saying why nothing is judged. Sizes and the % of dense
    are the dsp row's (means over its seeds); the comparisons with GOAL_ABOVE are the mean
    returns on the seeds both variants have."""
    by_variant = {r["variant"]: r for r in rows if r["env"] == env}
    missing = [v for v in ("dense", GOAL_VARIANT) if v not in by_variant]
    if missing:
        return (f"goals not judged: no {' and no '.join(missing)} run in the table")
    row = by_variant[GOAL_VARIANT]
    returns = _returns_by_seed(env, trials)
    ours, dense = returns[GOAL_VARIANT], returns["dense"]
    out = []
    seeds = f"mean of {row['seeds']} seed{'s' if row['seeds'] != 1 else ''}"
    lowest = min(t["actor"]["neurons_removed_pct"] for t in trials
                 if t["env"] == env and t["variant"] == GOAL_VARIANT)
    out.append(_threshold(
        f"neurons removed {row['neurons_removed_pct']:.2f} % ({seeds}, lowest seed "
        f"{lowest:.2f} %; goal >= {GOAL_NEURONS_REMOVED_PCT:g} %)",
        row["neurons_removed_pct"], GOAL_NEURONS_REMOVED_PCT))
    lowest = min(t["actor"]["weights_removed_pct"] for t in trials
                 if t["env"] == env and t["variant"] == GOAL_VARIANT)
    out.append(_threshold(
        f"weights removed {row['weights_removed_pct']:.2f} %, i.e. "
        f"{100 - row['weights_removed_pct']:.2f} % of the dense actor's weights kept ({seeds}, "
        f"lowest seed {lowest:.2f} % removed; goal >= {GOAL_WEIGHTS_REMOVED_PCT:g} % removed, "
        f"<= {100 - GOAL_WEIGHTS_REMOVED_PCT:g} % kept)",
        row["weights_removed_pct"], GOAL_WEIGHTS_REMOVED_PCT))
    shared = sorted(set(ours) & set(dense))
    paired = f"seeds {seeds_text(shared)}" if shared else "all seeds (none shared with dense)"
    pct = row["return_pct_of_dense"]
    if math.isnan(pct):
        out.append(("skipped", f"return in % of dense on {paired}: not judged (dense's mean "
                               "return there is <= 0, a ratio of returns means nothing)"))
    else:
        out.append(_threshold(f"return {pct:.2f} % of dense on {paired} (goal >= "
                              f"{GOAL_RETURN_PCT_OF_DENSE:g} %)", pct,
                              GOAL_RETURN_PCT_OF_DENSE))
    for other in GOAL_ABOVE:
        if other not in returns:
            out.append(("skipped", f"mean return above {other}'s: skipped (no {other} run "
                                   "in the table)"))
            continue
        shared = sorted(set(ours) & set(returns[other]))
        if not shared:
            out.append(("skipped", f"mean return above {other}'s: skipped (no seed that both "
                                   f"{GOAL_VARIANT} and {other} have)"))
            continue
        mine = _mean(ours[s] for s in shared)
        theirs = _mean(returns[other][s] for s in shared)
        margin = mine - theirs
        text = (f"mean return above {other}'s on seeds {seeds_text(shared)}: {GOAL_VARIANT} "
                f"{mine:.2f}, {other} {theirs:.2f}")
        if margin > 0:
            out.append(("met", f"{text}: met by {margin:.2f}"))
        elif margin == 0:
            out.append(("missed", f"{text}: missed (equal means)"))
        else:
            out.append(("missed", f"{text}: missed by {-margin:.2f}"))
    return out


def _threshold(text: str, value: float, goal: float) -> tuple[str, str]:
    """A ``value >= goal`` goal (percent): met or missed, by how many points."""
    if value >= goal:
        return "met", f"{text}: met by {value - goal:.2f} points"
    return "missed", f"{text}: missed by {goal - value:.2f} points"


def _returns_by_seed(env: str, trials: list[dict[str, Any]]) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for t in trials:
        if t["env"] == env:
            out.setdefault(t["variant"], {})[t["seed"]] = t["return"]
    return out


def seeds_text(seeds: Sequence[int]) -> str:
    return ",".join(str(s) for s in seeds)


def goal_lines(env: str, rows: list[dict[str, Any]], trials: list[dict[str, Any]]
               ) -> list[str]:
    """``env``'s goals as markdown: a line saying how many dsp met, then a bullet per goal."""
    results = goal_results(env, rows, trials)
    if isinstance(results, str):
        return [f"**{env}**: {results}."]
    judged = [status for status, _ in results if status != "skipped"]
    met = judged.count("met")
    head = (f"**{env}**: {GOAL_VARIANT} met every goal ({met} of {len(judged)})"
            if met == len(judged) else
            f"**{env}**: {GOAL_VARIANT} met {met} of {len(judged)} goals")
    skipped = len(results) - len(judged)
    if skipped:
        head += f", {skipped} skipped"
    return [head + ".", ""] + [f"- {text}" for _, text in results]


def goals_markdown(rows: list[dict[str, Any]], trials: list[dict[str, Any]]) -> str:
    """The Goals section: every env's goal lines."""
    above = " and ".join(f"{v}'s" for v in GOAL_ABOVE)
    lines = ["## Goals", "",
             f"{GOAL_VARIANT} per env: neurons removed >= {GOAL_NEURONS_REMOVED_PCT:g} %, "
             f"weights removed >= {GOAL_WEIGHTS_REMOVED_PCT:g} % (<= "
             f"{100 - GOAL_WEIGHTS_REMOVED_PCT:g} % of the dense actor's weights kept), "
             f"return >= {GOAL_RETURN_PCT_OF_DENSE:g} % of dense (paired seeds), and a mean "
             f"return above {above} on the seeds both have.", ""]
    for env in dict.fromkeys(r["env"] for r in rows):
        lines += goal_lines(env, rows, trials) + [""]
    return "\n".join(lines)


def compute_markdown(trials: list[dict[str, Any]]) -> str:
    """The Compute section: per env x variant, the trials' training wall time (summary.json's
    wall_s: the PPO updates, rollouts included) and the core-hours, one trial per core."""
    lines = ["## Compute", "",
             "Training wall time per trial: summary.json's wall_s, the PPO updates (rollouts "
             "and learning) on the one core the trial ran on; not included are the "
             "in-training selection evaluations, checkpoints, the export and the table's "
             f"evaluation. posthoc's is its fine-tuning only ({100 * POSTHOC_BUDGET:g} % of "
             "the budget). Times depend on the machine and on what ran beside the trial "
             "(docs/experiments.md).", "",
             "| env | variant | trials | minutes per trial (mean) | core-hours |",
             "|---|---|---|---|---|"]
    totals: dict[str, list[float]] = {}
    groups: dict[tuple[str, str], list[float]] = {}
    for t in trials:
        wall = t.get("wall_s", math.nan)
        if not math.isnan(wall):
            groups.setdefault((t["env"], t["variant"]), []).append(wall)
            totals.setdefault(t["env"], []).append(wall)
    for (env, variant), walls in groups.items():
        lines.append(f"| {env} | {variant} | {len(walls)} | {np.mean(walls) / 60:.1f} | "
                     f"{sum(walls) / 3600:.2f} |")
    for env, walls in totals.items():
        lines.append(f"| {env} | all | {len(walls)} | | **{sum(walls) / 3600:.2f}** |")
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict[str, Any]]) -> str:
    """table.csv: COLUMNS, full precision (NaN as empty)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v
                         for k, v in row.items()})
    return buf.getvalue()


def _f(v: float, digits: int = 1) -> str:
    return "-" if math.isnan(v) else f"{v:.{digits}f}"


def rows_markdown(rows: list[dict[str, Any]]) -> str:
    """The table's rows as a markdown table."""
    lines = ["| env | variant | seeds | neurons removed % | weights removed % | actor MACs | "
             "return mean +/- std | IQM | 95 % CI | % of dense |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['env']} | {r['variant']} | {r['seeds']} | {_f(r['neurons_removed_pct'])} "
            f"| {_f(r['weights_removed_pct'])} | {_f(r['macs'], 0)} | "
            f"{_f(r['return_mean'], 2)} +/- {_f(r['return_std'], 2)} | "
            f"{_f(r['return_iqm'], 2)} | [{_f(r['return_ci_low'], 2)}, "
            f"{_f(r['return_ci_high'], 2)}] | {_f(r['return_pct_of_dense'])} |")
    return "\n".join(lines) + "\n"


def measuring_text() -> str:
    """The sentence that says what the table's numbers are."""
    return (f"Return: each seed's policy.onnx (onnxruntime, deterministic) over its held-out "
            f"evaluation episodes (eval.json); over seeds the mean +/- std (ddof 1), the "
            f"interquartile mean and a {100 * CONFIDENCE:.0f} % percentile-bootstrap CI of "
            f"the mean ({BOOTSTRAP_RESAMPLES} resamples; with 3-5 seeds it is narrow, "
            f"close to [min, max], and with fewer than 4 the IQM is the mean). % of dense: "
            f"on the seeds the variant shares with dense. Sizes: the actor's hidden "
            "neurons and weights (biases included) against the env's dense actor, mean "
            "over seeds.")


def markdown_text(rows: list[dict[str, Any]], trials: list[dict[str, Any]]) -> str:
    """table.md: how it was measured, the table, every env's goals, then every seed's
    figures."""
    lines = [measuring_text(), "", rows_markdown(rows), goals_markdown(rows, trials),
             "Per seed:", "",
             "| env | variant | seed | actor hidden | neurons removed % | weights removed % "
             "| return |", "|---|---|---|---|---|---|---|"]
    for t in trials:
        a = t["actor"]
        lines.append(f"| {t['env']} | {t['variant']} | {t['seed']} | {a['hidden_compact']} | "
                     f"{a['neurons_removed_pct']:.1f} | {a['weights_removed_pct']:.1f} | "
                     f"{t['return']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(trials: list[dict[str, Any]], path: Path) -> None:
    """Eval return against the actor's weights kept: a panel per env, a point per seed, a
    colour per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(t["env"] for t in trials))
    fig, axes = plt.subplots(1, len(envs), figsize=(5.5 * len(envs), 4.2), squeeze=False)
    colours = {v: plt.get_cmap("tab10")(i) for i, v in enumerate(VARIANTS)}
    markers = dict(zip(VARIANTS, "osD^vPX*hd"))
    for ax, env in zip(axes[0], envs):
        for variant in dict.fromkeys(t["variant"] for t in trials if t["env"] == env):
            group = [t for t in trials if t["env"] == env and t["variant"] == variant]
            # variants of the same size (dsp, small_dense, posthoc) side by side, not on top
            shift = 1.0 + 0.03 * (list(VARIANTS).index(variant) - len(VARIANTS) / 2)
            ax.scatter([t["actor"]["compact_weights"] * shift for t in group],
                       [t["return"] for t in group], color=colours[variant], label=variant,
                       marker=markers[variant], alpha=0.8, edgecolors="none")
        ax.set_xscale("log")
        ax.set_xlabel("actor weights kept (log; variants nudged apart)")
        ax.set_ylabel("policy.onnx return (held-out episodes)")
        ax.set_title(env)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)


def holds_env_folders(root: Path) -> bool:
    """Whether ``root`` is a sweep folder of env folders (not itself one env folder)."""
    return not (Path(root) / SWEEP).is_file()
