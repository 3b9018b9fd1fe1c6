"""Collect tuning runs (run folders with summary.json) into one CSV: env, seed, the
pruning settings that differ from config/train.yaml's recipe, the final actor and the
20-episode evaluation of summary.json.

    python bench/tuning_table.py runs/tune/r4_* --out results/tuning/r4_runs.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import yaml

from dsp_driving.config import Config, from_saved_run
from dsp_driving.io_utils import atomic_write_text


def row(run: Path, recipe: dict) -> dict:
    """One run folder's row."""
    summary = json.loads((run / "summary.json").read_text())
    cfg = from_saved_run(yaml.safe_load((run / "config.yaml").read_text())).to_dict()
    pruning = cfg["pruning"]
    if not pruning["enabled"]:
        settings = "dense"
    else:
        diff = {k: v for k, v in pruning.items() if recipe.get(k) != v}
        settings = " ".join(f"{k}={v}" for k, v in sorted(diff.items())) or "recipe"
    return {"run": run.name, "env": cfg["train"]["env_id"], "seed": cfg["train"]["seed"],
            "settings": settings, "actor": summary["actor"]["hidden_compact"],
            "eval_return_mean": round(summary["eval"]["return_mean"], 1),
            "eval_return_std": round(summary["eval"]["return_std"], 1),
            "eval_episodes": summary["eval"]["episodes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    recipe = Config().to_dict()["pruning"]
    rows = [row(r, recipe) for r in args.runs if (r / "summary.json").is_file()]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(args.out, buf.getvalue())
    for r in rows:
        print(f"{r['env']:12s} {r['seed']:4d} {r['settings'][:60]:60s} {r['actor']} "
              f"{r['eval_return_mean']:8.1f} +/- {r['eval_return_std']:.1f}")


if __name__ == "__main__":
    main()
