"""Plot training return and actor size against environment steps for run folders.

    python bench/plot_runs.py runs/driving/* --out docs/img/highway_returns.png
    python bench/plot_runs.py runs/paper/walker2d/{dense,dsp}/seed1 --out w.png --csv w.csv

Top: the training return each update logs (``ep_return_mean``: the mean of the last 20
finished episodes), smoothed over ``--smooth`` updates, one line per run, coloured by
variant: a sweep trial's variant folder (runs/paper/<env>/<variant>/seed<k>), else DSP /
dense (pruned runs blue, dense gray, other variants in further colours). Bottom: the
actor's alive weights as a % of the dense actor, log scale. The final deterministic
evaluation return (summary.json) is printed per run. ``--csv``: per run and tenth of
training, the mean of that training return over the tenth's updates and the actor's neurons
at its end.
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

from dsp_driving.io_utils import atomic_write, atomic_write_text  # noqa: E402


def load(run: Path) -> dict:
    """The stats series, variant, seed and summary of one run folder."""
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()
            if line.strip()]
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    summary_file = run / "summary.json"
    pruned = bool(cfg["pruning"]["enabled"])
    sweep_trial = run.name.startswith("seed") and run.name[4:].isdigit()
    return {
        "name": f"{run.parent.name}/{run.name}" if sweep_trial else run.name,
        "variant": run.parent.name if sweep_trial else ("DSP" if pruned else "dense"),
        "seed": cfg["train"]["seed"],
        "step": np.array([r["step"] for r in rows]),
        "ret": np.array([r.get("ep_return_mean", np.nan) for r in rows], dtype=float),
        "weights": np.array([r["actor"]["weights_alive"] / r["actor"]["weights_total"]
                             for r in rows]) * 100.0,
        "progress": np.array([r["progress"] for r in rows]),
        "neurons": np.array([r["actor"]["neurons_alive"] for r in rows]),
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


def tenths_csv(runs: list[dict]) -> str:
    """One row per run and tenth of training: the mean of its updates' training return (empty
    where none had one: before the run's first episode ended) and the actor's neurons after
    its last update."""
    lines = ["run,variant,seed,progress_to,train_return_mean,actor_neurons"]
    for run in runs:
        for k in range(1, 11):
            inside = (run["progress"] > (k - 1) / 10) & (run["progress"] <= k / 10 + 1e-9)
            if not inside.any():
                continue
            ret = run["ret"][inside]
            mean = f"{np.nanmean(ret):.1f}" if np.isfinite(ret).any() else ""
            lines.append(f"{run['name']},{run['variant']},{run['seed']},{k / 10:.1f},{mean},"
                         f"{run['neurons'][inside][-1]}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="PNG file")
    parser.add_argument("--smooth", type=int, default=10, help="updates per smoothing window")
    parser.add_argument("--title", default="")
    parser.add_argument("--csv", type=Path, help="also write the per-tenth table here")
    args = parser.parse_args()

    runs = [load(r) for r in args.runs if (r / "stats.jsonl").exists()]
    if not runs:
        raise SystemExit(f"no run folder with a stats.jsonl among {args.runs}")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    colours = {"dsp": "tab:blue", "DSP": "tab:blue", "dense": "tab:gray"}
    others = [v for v in variants if v not in colours]
    palette = ("tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:olive")
    colours |= {v: palette[i % len(palette)] for i, v in enumerate(others)}
    for run in sorted(runs, key=lambda r: (variants.index(r["variant"]), r["seed"])):
        label = f"{run['variant']} seed {run['seed']}"
        style = dict(color=colours[run["variant"]], alpha=0.85, lw=1.3,
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
    if args.csv:
        atomic_write_text(args.csv, tenths_csv(runs))
        print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
