"""Plot training return and actor size against environment steps for run folders.

    python bench/plot_runs.py runs/driving/* --out docs/img/highway_returns.png

Top: the mean return of the training episodes that ended in each update (smoothed over
``--smooth`` updates), one line per run, coloured by variant (DSP / dense). Bottom: the
actor's alive weights as a % of the dense actor, log scale. The final deterministic
evaluation return (summary.json) is printed per run.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from dsp_driving.io_utils import atomic_write  # noqa: E402


def load(run: Path) -> dict:
    """The stats series, variant, seed and summary of one run folder."""
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()
            if line.strip()]
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    summary_file = run / "summary.json"
    return {
        "name": run.name,
        "pruned": bool(cfg["pruning"]["enabled"]),
        "seed": cfg["train"]["seed"],
        "step": np.array([r["step"] for r in rows]),
        "ret": np.array([r.get("ep_return_mean", np.nan) for r in rows], dtype=float),
        "weights": np.array([r["actor"]["weights_alive"] / r["actor"]["weights_total"]
                             for r in rows]) * 100.0,
        "summary": json.loads(summary_file.read_text()) if summary_file.exists() else None,
    }


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` points, ignoring NaN (updates with no finished episode)."""
    out = np.full_like(values, np.nan)
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1): i + 1]
        if np.any(np.isfinite(chunk)):
            out[i] = np.nanmean(chunk)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="PNG file")
    parser.add_argument("--smooth", type=int, default=10, help="updates per smoothing window")
    parser.add_argument("--title", default="")
    args = parser.parse_args()

    runs = [load(r) for r in args.runs if (r / "stats.jsonl").exists()]
    if not runs:
        raise SystemExit(f"no run folder with a stats.jsonl among {args.runs}")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    colours = {True: "tab:blue", False: "tab:gray"}
    for run in sorted(runs, key=lambda r: (not r["pruned"], r["seed"])):
        label = f"{'DSP' if run['pruned'] else 'dense'} seed {run['seed']}"
        style = dict(color=colours[run["pruned"]], alpha=0.85, lw=1.3,
                     ls=("-", "--", ":", "-.")[run["seed"] % 4])
        top.plot(run["step"], smooth(run["ret"], args.smooth), label=label, **style)
        bottom.plot(run["step"], run["weights"], **style)
        final = run["summary"]["eval"]["return_mean"] if run["summary"] else float("nan")
        print(f"{run['name']}: {label}, final eval return {final:.1f}, actor weights alive "
              f"{run['weights'][-1]:.2f} %")
    top.set_ylabel("training episode return")
    top.legend(fontsize=8, ncol=2)
    top.grid(alpha=0.3)
    if args.title:
        top.set_title(args.title)
    bottom.set_yscale("log")
    bottom.set_ylabel("actor weights alive (%)")
    bottom.set_xlabel("environment steps")
    bottom.grid(alpha=0.3, which="both")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write(args.out, lambda f: f.write(buffer.getvalue()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
