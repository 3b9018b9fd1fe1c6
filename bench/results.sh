#!/usr/bin/env bash
# Reproduce the runs behind docs/results.md, two at a time, then print the tables.
#   bash bench/results.sh [OUT_DIR] [SEEDS]     (default runs/results, "1 2 3")
# CartPole-v1 uses config/train.yaml unchanged; LunarLander-v3 (needs the `sim` extra) the
# overrides below. Runs whose folder already has a summary.json are skipped. About 30
# minutes on a 2-core machine for three seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/results}
seeds=${2:-1 2 3}
ll="--env LunarLander-v3 --total-steps 1000000 --num-envs 8 --set ppo.num_steps=256
    --set ppo.num_minibatches=8 --set ppo.gamma=0.999 --set ppo.gae_lambda=0.98
    --set ppo.ent_coef=0.01 --set pruning.lambda_actor=3e-5 --set pruning.lambda_critic=3e-5
    --set pruning.t_start=0.1 --set pruning.t_end=0.7"
{
  for s in $seeds; do
    echo "--env CartPole-v1 --total-steps 200000 --seed $s --out $out/cartpole_dsp_s$s"
    echo "--env CartPole-v1 --total-steps 200000 --seed $s --no-prune --out $out/cartpole_dense_s$s"
  done
  for s in $seeds; do
    echo $ll --seed "$s" --out "$out/lunarlander_dsp_s$s"
    echo $ll --seed "$s" --no-prune --out "$out/lunarlander_dense_s$s"
    # gentler: a lower threshold and the critic left dense
    echo $ll --seed "$s" --set pruning.kappa_final=0.5 --set pruning.prune_critic=false \
      --out "$out/lunarlander_dspk05_s$s"
  done
} | { grep -v -E -f <(for d in "$out"/*/; do
        [ -f "$d/summary.json" ] && echo "--out ${d%/}\$"; done; echo "^@none@$") || true; } \
  | xargs -r -P 2 -L 1 dsp-driving train --set train.progress=false --set train.tensorboard=false \
    > "$out.log" 2>&1 || { echo "a run failed: see $out.log" >&2; exit 1; }
python bench/results_table.py "$out"/*
