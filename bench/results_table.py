"""Print a markdown results table from training run folders (their summary.json files).

    python bench/results_table.py runs/results/*

Each run folder is one row; runs that share env and variant (pruned / dense, read from the
saved config) are also aggregated as mean +/- std over seeds.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
import json
from pathlib import Path
import statistics

import yaml

from dsp_driving.config import RENAMED_PRUNING_CHOICES


def load(run: Path) -> dict:
    """Summary plus the variant name of one run folder."""
    summary = json.loads((run / "summary.json").read_text())
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    pruning = cfg["pruning"]
    if not pruning["enabled"]:
        variant = "dense PPO"
    else:
        critic = "" if pruning["prune_critic"] else ", critic unpruned"
        # runs saved before the rename say "adaptive": the same variant as the new name
        regulariser = RENAMED_PRUNING_CHOICES["regulariser"].get(pruning["regulariser"],
                                                                 pruning["regulariser"])
        variant = (f"DSP ({regulariser}, lambda_a={pruning['lambda_actor']:g}, "
                   f"kappa={pruning['kappa_final']:g}{critic})")
    return {"run": run.name, "variant": variant, **summary}


def _ms(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} +/- {statistics.stdev(values):.1f}"


def main() -> None:
    """Print per-run and aggregated tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    rows = [load(r) for r in args.runs if (r / "summary.json").is_file()]
    print("| env | variant | seed | actor hidden | actor neurons removed % | "
          "actor weights removed % | critic neurons removed % | eval return | steps | "
          "wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        a, c, e = r["actor"], r["critic"], r["eval"]
        print(f"| {r['env']} | {r['variant']} | {r['seed']} | {a['hidden_compact']} | "
              f"{a['neurons_removed_pct']:.1f} | {a['weights_removed_pct']:.1f} | "
              f"{c['neurons_removed_pct']:.1f} | {e['return_mean']:.1f} +/- "
              f"{e['return_std']:.1f} | {r['total_steps']} | {r['wall_s']:.0f} |")
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["env"], r["variant"])].append(r)
    print()
    print("| env | variant | seeds | actor neurons removed % | actor weights removed % | "
          "eval return (mean over seeds) |")
    print("|---|---|---|---|---|---|")
    for (env, variant), rs in sorted(groups.items()):
        print(f"| {env} | {variant} | {len(rs)} | "
              f"{_ms([r['actor']['neurons_removed_pct'] for r in rs])} | "
              f"{_ms([r['actor']['weights_removed_pct'] for r in rs])} | "
              f"{_ms([r['eval']['return_mean'] for r in rs])} |")


if __name__ == "__main__":
    main()
