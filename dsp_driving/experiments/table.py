"""The table of a sweep: per env x variant, size and return over seeds with interval
estimates (docs/experiments.md).

Each seed contributes one number, its policy.onnx's mean return over the held-out evaluation
episodes (eval.json). Over seeds: mean, standard deviation, interquartile mean, and a 95 %
percentile-bootstrap confidence interval of the mean (scipy.stats.bootstrap, 10 000
resamples, fixed RNG), as Agarwal et al. 2021 recommend for few runs. Sizes are the actor's
(summary.json), averaged over seeds; return_pct_of_dense is the variant's mean over the
env's dense mean.
"""

from __future__ import annotations

from collections.abc import Sequence
import csv
import io
import json
import logging
import math
from pathlib import Path
import shutil
from typing import Any

import numpy as np
import yaml

from dsp_driving.experiments.sweep import EVAL, SWEEP
from dsp_driving.experiments.variants import VARIANTS
from dsp_driving.io_utils import atomic_write, atomic_write_text
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
TRIAL_FILES = ("summary.json", "config.yaml", EVAL)
POLICY_FILES = ("policy.onnx", "policy.json")


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
    if x.size > 1:
        if np.all(x == x[0]):  # every resample has the same mean
            out["ci_low"] = out["ci_high"] = float(x[0])
        else:
            res = stats.bootstrap((x,), np.mean, confidence_level=CONFIDENCE,
                                  n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                                  rng=np.random.default_rng(0))
            out["ci_low"] = float(res.confidence_interval.low)
            out["ci_high"] = float(res.confidence_interval.high)
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
    rows = []
    for variant in VARIANTS:
        for run in sorted((env_dir / variant).glob("seed*"), key=_seed_of):
            if not all((run / name).is_file() for name in (EVAL, "summary.json",
                                                            "policy.json")):
                log.warning(f"{run}: not in the table (not done: run the sweep again)")
                continue
            summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
            result = json.loads((run / EVAL).read_text(encoding="utf-8"))
            meta = json.loads((run / "policy.json").read_text(encoding="utf-8"))[METADATA_KEY]
            rows.append({"env": env_dir.name, "env_id": summary["env"], "variant": variant,
                         "seed": _seed_of(run),
                         "actor": actor_sizes(meta["obs_dim"], meta["act_dim"], reference,
                                              summary["actor"]["hidden_compact"]),
                         "return": float(result["return_mean"]), "run_dir": run})
    return rows


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


def markdown_text(rows: list[dict[str, Any]], trials: list[dict[str, Any]]) -> str:
    """table.md: how it was measured, the table, then every seed's figures."""
    lines = [f"Return: each seed's policy.onnx (onnxruntime, deterministic) over its held-out "
             f"evaluation episodes (eval.json); over seeds the mean +/- std (ddof 1), the "
             f"interquartile mean and a {100 * CONFIDENCE:.0f} % percentile-bootstrap CI of "
             f"the mean ({BOOTSTRAP_RESAMPLES} resamples; with 3-5 seeds it is narrow, "
             f"close to [min, max], and with fewer than 4 the IQM is the mean). % of dense: "
             f"on the seeds the variant shares with dense. Sizes: the actor's hidden "
             "neurons and weights (biases included) against the env's dense actor, mean "
             "over seeds.", "",
             rows_markdown(rows), "Per seed:", "",
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
    markers = dict(zip(VARIANTS, "osD^vP"))
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


def write_table(root: Path, results: Path | None = None) -> list[dict[str, Any]]:
    """ROOT/table.md, table.csv and table.png over every env folder of ROOT; with
    ``results``, the same and every trial's small files (TRIAL_FILES; dsp's policy too)
    copied there, in the same layout. Returns the rows."""
    root = Path(root)
    dirs = env_dirs(root)
    trials = [t for d in dirs for t in read_trials(d)]
    if not trials:
        raise FileNotFoundError(f"{root}: no evaluated trial yet (run `dsp-driving sweep`)")
    rows = table_rows(trials)
    targets = [root] if results is None else [root, Path(results)]
    for target in targets:
        target.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target / "table.csv", csv_text(rows))
        atomic_write_text(target / "table.md", markdown_text(rows, trials))
        plot(trials, target / "table.png")
    if results is not None:
        _copy_results(root, dirs, trials, Path(results))
    return rows


def _copy_results(root: Path, dirs: list[Path], trials: list[dict[str, Any]],
                  dest: Path) -> None:
    for d in dirs:
        rel = d.relative_to(root) if d != root else Path()
        _copy(d / SWEEP, dest / rel / SWEEP)
    for t in trials:
        run: Path = t["run_dir"]
        names = TRIAL_FILES + (POLICY_FILES if t["variant"] == "dsp" else ())
        for name in names:
            if (run / name).is_file():
                _copy(run / name, dest / run.relative_to(root) / name)


def _copy(src: Path, dst: Path) -> None:
    """Copy a file atomically (temp file + rename), making its folder."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fh:
        atomic_write(dst, lambda out: shutil.copyfileobj(fh, out))
