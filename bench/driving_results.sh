#!/usr/bin/env bash
# Reproduce the runs behind docs/driving.md, two at a time, then print the tables and draw
# the plot.
#   bash bench/driving_results.sh [OUT_DIR] [SEEDS]     (default runs/driving, "1 2 3")
# Every run uses config/highway.yaml (200k steps on dsp_driving/HighwayDrive-v0, 2 envs);
# the dense baselines add --no-prune. Runs whose folder already has a summary.json are
# skipped. About 25 minutes per pair of runs on a 2-core machine (needs the `highway` extra).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/driving}
seeds=${2:-1 2 3}
mkdir -p "$out"
{
  for s in $seeds; do
    echo "--seed $s --out $out/highway_dsp_s$s"
    echo "--seed $s --no-prune --out $out/highway_dense_s$s"
  done
} | { grep -v -E -f <(for d in "$out"/*/; do
        [ -f "$d/summary.json" ] && echo "--out ${d%/}\$"; done; echo "^@none@$") || true; } \
  | xargs -r -P 2 -L 1 dsp-driving train --config config/highway.yaml --set train.progress=false \
    > "$out.log" 2>&1 || { echo "a run failed: see $out.log" >&2; exit 1; }
runs=()
for s in $seeds; do runs+=("$out/highway_dsp_s$s" "$out/highway_dense_s$s"); done
python bench/results_table.py "${runs[@]}"
python bench/plot_runs.py "${runs[@]}" --out docs/img/highway_returns.png \
  --title "dsp_driving/HighwayDrive-v0, 200k steps"
