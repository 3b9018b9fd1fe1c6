"""``dsp-driving eval``'s text and plots (issue #19): the summary of an eval.json as printed
lines, and figures of the episodes (return coloured by outcome) and of the per-step TTC and
speed distributions. The figures look like the bag report's (analysis/plots.py: matplotlib's
object API on the Agg canvas, PNGs written atomically); matplotlib is imported only to plot.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
import math
from pathlib import Path
from typing import Any

import numpy as np

from dsp_driving.driving import safety, safety_summary

OUTCOME_COLOURS = {safety.COLLISION: "tab:red", safety.OFF_ROAD: "tab:orange",
                   safety.TIMEOUT: "tab:blue", safety.ROUTE_COMPLETE: "tab:green",
                   safety.OTHER: "tab:gray"}
# the TTC histogram's range (log scale); TTCs outside it are counted in its first / last bin
TTC_PLOT_RANGE_S = (0.1, 1000.0)

# summary key -> (number format, unit and meaning); definitions: driving/safety_summary.py's doc
FIGURES: dict[str, tuple[str, str]] = {
    "return_mean": (".2f", "mean episode return"),
    "collision_rate": (".3f", "fraction of episodes with a collision"),
    "collisions_per_km": (".3f", "collisions per km driven"),
    "offroad_rate": (".3f", "fraction of episodes that left the road"),
    "route_completion": (".3f", "mean fraction of the route"),
    "driving_score": (".3f", "mean route completion x infraction penalties"),
    "min_ttc_p5_s": (".2f", "s, 5th percentile of the episodes' minimum TTC"),
    "ttc_below_1_5s_pct": (".1f", f"% of steps with TTC < {safety.TTC_THRESHOLD_S:g} s"),
    "jerk_p95": (".2f", "m/s^3, p95 of |jerk| (episode mean)"),
    "lateral_accel_p95": (".2f", "m/s^2, p95 of |lateral accel.| (episode mean)"),
    "mean_speed_mps": (".2f", "m/s, mean speed"),
}


def _number(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(value, spec)


def _interval(ci: Sequence[float] | None, spec: str) -> str:
    if ci is None:
        return "(no interval)"
    return f"[{_number(ci[0], spec)}, {_number(ci[1], spec)}]"


def _rows(result_or_doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The per-episode rows of an ``evaluate`` result (rows) or an eval.json (per_episode)."""
    rows = result_or_doc.get("rows", result_or_doc.get("per_episode"))
    if rows is None:
        raise ValueError("no per-episode rows: expected an evaluate() result ('rows') or an "
                         "eval.json document ('per_episode')")
    return list(rows)


def summary_lines(doc: Mapping[str, Any]) -> list[str]:
    """eval.json's figures as text: a header, then one line per figure (value, 95 %
    interval, unit), the outcome counts and the interval method."""
    parts = [str(doc["policy"])] if "policy" in doc else []
    if "env" in doc:
        parts.append(f"on {doc['env']}")
    if "runtime" in doc:
        parts.append(f"({doc['runtime']}{', deterministic' if doc.get('deterministic') else ''})")
    lines = [" ".join(parts)] if parts else []
    seeds = doc.get("seeds")
    lines.append(f"{'episodes':<20}{doc['episodes']:>10}  "
                 + (f"seeds {seeds[0]}..{seeds[1]}" if seeds else ""))
    if "collision_rate" not in doc:  # not a driving env: no safety figures, no intervals
        lines.append(f"{'return_mean':<20}{_number(doc['return_mean'], '.2f'):>10}  "
                     f"std {_number(doc.get('return_std'), '.2f')}, mean episode return")
        if "length_mean" in doc:
            lines.append(f"{'length_mean':<20}{_number(doc['length_mean'], '.1f'):>10}  "
                         "steps per episode")
        return lines
    for key, (spec, unit) in FIGURES.items():
        lines.append(f"{key:<20}{_number(doc.get(key), spec):>10}  "
                     f"{_interval(doc.get(f'{key}_ci95'), spec):<20}  {unit}")
    rows = doc.get("per_episode") or []
    outcomes = Counter(r.get("outcome") for r in rows if r.get("outcome"))
    if outcomes:
        lines.append("outcomes: " + ", ".join(f"{name} {outcomes[name]}"
                                              for name in safety.OUTCOMES if outcomes[name]))
    bases = sorted({r["route_basis"] for r in rows if r.get("route_basis")})
    if bases:
        lines.append(f"route completion basis: {', '.join(bases)}")
    if doc.get(safety_summary.CI_METHOD_KEY):
        lines.append("[low, high]: 95 % intervals over episodes "
                     f"({doc[safety_summary.CI_METHOD_KEY]})")
    return lines


def plot_eval(result_or_doc: Mapping[str, Any],
              series: Sequence[Mapping[str, np.ndarray]] | None, out_dir: str | Path,
              stem: str = "eval") -> list[Path]:
    """PNGs of an evaluation into ``out_dir``: ``<stem>_episodes.png`` (return per episode,
    coloured by outcome) and, given the per-step ``series`` (``evaluate(series=True)``),
    ``<stem>_distributions.png`` (TTC where defined, and speed, pooled over all steps).
    Returns the paths written."""
    from dsp_driving.analysis.plots import figure, save_png

    rows = _rows(result_or_doc)
    if not rows:
        raise ValueError("no episodes to plot")
    out_dir = Path(out_dir)
    fig = figure(1, 1, width=8.0, height=3.0)
    _plot_returns(fig.axes[0], rows)
    paths = [save_png(fig, out_dir / f"{stem}_episodes.png")]
    if series:
        fig = figure(1, 2, width=11.0, height=3.5)
        _plot_ttc(fig.axes[0], series)
        _plot_speed(fig.axes[1], series)
        paths.append(save_png(fig, out_dir / f"{stem}_distributions.png"))
    return paths


def _plot_returns(ax: Any, rows: list[Mapping[str, Any]]) -> None:
    from matplotlib.ticker import MaxNLocator

    returns = np.asarray([float(r["return"]) for r in rows])
    index = np.arange(len(rows))
    outcomes = [r.get("outcome") for r in rows]
    if any(outcomes):
        for name in safety.OUTCOMES:
            picked = [i for i, o in enumerate(outcomes) if o == name]
            if picked:
                ax.bar(index[picked], returns[picked], color=OUTCOME_COLOURS[name],
                       label=f"{name} ({len(picked)})")
    else:
        ax.bar(index, returns, color="tab:blue")
    ax.axhline(float(returns.mean()), color="black", ls="--", lw=0.8,
               label=f"mean {returns.mean():.2f}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(title="return per episode", xlabel=f"episode i (reset seed {rows[0]['seed']} + i)",
           ylabel="return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _plot_ttc(ax: Any, series: Sequence[Mapping[str, np.ndarray]]) -> None:
    ttc = np.concatenate([np.asarray(s["ttc_s"], np.float64) for s in series])
    steps = sum(len(s["speed_mps"]) for s in series)
    low, high = TTC_PLOT_RANGE_S
    if ttc.size:
        ax.hist(np.clip(ttc, low, high), bins=np.geomspace(low, high, 41), color="tab:purple")
        below = 100.0 * np.count_nonzero(ttc < safety.TTC_THRESHOLD_S) / max(steps, 1)
        ax.axvline(safety.TTC_THRESHOLD_S, color="tab:red", ls="--",
                   label=f"{safety.TTC_THRESHOLD_S:g} s ({below:.1f} % of all steps below)")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "TTC never defined\n(no lead vehicle closed in)", ha="center",
                va="center", transform=ax.transAxes)
    ax.set_xscale("log")
    ax.set(title=f"TTC to the lead ({ttc.size} of {steps} steps defined)",
           xlabel=f"s (log; outside {low:g}-{high:g} s: the end bins)", ylabel="steps",
           xlim=(low, high))
    ax.grid(alpha=0.3)


def _plot_speed(ax: Any, series: Sequence[Mapping[str, np.ndarray]]) -> None:
    speed = np.concatenate([np.asarray(s["speed_mps"], np.float64) for s in series])
    if speed.size:
        ax.hist(speed, bins=40, color="tab:green")
    ax.set(title=f"speed (all {speed.size} steps)", xlabel="m/s", ylabel="steps")
    ax.grid(alpha=0.3)
