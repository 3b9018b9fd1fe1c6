"""Training throughput of ``dsp-driving train`` against Stable-Baselines3 PPO.

Every measured run is a fresh subprocess (one torch thread, OMP/MKL pinned to one thread),
and runs are interleaved: for each repetition, for each environment, the three variants
(ours with pruning, ours with ``--no-prune``, SB3) run back to back in an order that rotates
from one repetition to the next, so slow drift of the machine's load hits every variant alike.

What is timed:

* ours: the training loop of ``dsp_driving.trainer.Runner.learn`` -- from the moment the PPO
  learner has been constructed (environments made and reset) until ``finish()`` is called. That is
  every ``step_update()`` plus the stats sink (JSONL), the periodic and final checkpoints.
  Process start-up, imports, network construction and the final compaction/evaluation are
  outside the window. The package's own figure, summary.json's ``steps_per_s`` (env steps /
  summed ``step_update`` wall time), is reported alongside as "update-only".
* SB3: ``model.learn()`` only (model and VecNormalize construction excluded), steps counted by
  ``model.num_timesteps``.

Usage::

    python bench/train_throughput.py                     # full run, ~7-15 min on 2 cores
    python bench/train_throughput.py --reps 1 --cartpole-steps 4096 --hopper-steps 4096
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
from pathlib import Path
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench_common import cpu_model

VARIANTS = ("ours-prune", "ours-noprune", "sb3")
ENVS = ("CartPole-v1", "Hopper-v5")
SEED = 1
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


@dataclasses.dataclass(frozen=True)
class HParams:
    """The PPO settings both implementations get for one environment."""

    num_envs: int
    n_steps: int
    minibatch_size: int
    n_epochs: int
    learning_rate: float
    gamma: float
    gae_lambda: float
    clip: float
    ent_coef: float
    vf_coef: float
    max_grad_norm: float
    norm_obs: bool
    norm_reward: bool
    hidden: tuple[int, ...] = (256, 256)

    @property
    def num_minibatches(self) -> int:
        """Minibatches per epoch (ours is configured by count, SB3 by size)."""
        return self.num_envs * self.n_steps // self.minibatch_size


HPARAMS = {
    # CleanRL ppo.py defaults (= config/train.yaml except ent_coef, 0.0 there; both sides
    # get the same value, and throughput does not depend on it).
    "CartPole-v1": HParams(num_envs=4, n_steps=128, minibatch_size=128, n_epochs=4,
                           learning_rate=2.5e-4, gamma=0.99, gae_lambda=0.95, clip=0.2,
                           ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, norm_obs=True,
                           norm_reward=False),
    # The usual MuJoCo PPO settings (CleanRL ppo_continuous_action.py, rl-zoo).
    "Hopper-v5": HParams(num_envs=1, n_steps=2048, minibatch_size=64, n_epochs=10,
                         learning_rate=3e-4, gamma=0.99, gae_lambda=0.95, clip=0.2,
                         ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5, norm_obs=True,
                         norm_reward=True),
}


# -- workers (run in a fresh subprocess each) ----------------------------------------------
def _ours_overrides(env_id: str, steps: int, prune: bool,
                    extra: tuple[str, ...] = ()) -> list[str]:
    """Every setting that matters, spelled out as ``--set`` overrides (``extra`` last)."""
    hp = HPARAMS[env_id]
    hidden = "[" + ",".join(str(h) for h in hp.hidden) + "]"
    return [
        f"train.env_id={env_id}", f"train.total_steps={steps}", f"train.seed={SEED}",
        f"train.num_envs={hp.num_envs}", "train.vector_mode=sync", "train.torch_threads=1",
        "train.tensorboard=false", "train.progress=false", "train.eval_episodes=1",
        f"net.actor_hidden={hidden}", f"net.critic_hidden={hidden}", "net.activation=tanh",
        "net.init_log_std=0.0",
        f"ppo.num_steps={hp.n_steps}", f"ppo.learning_rate={hp.learning_rate}",
        "ppo.anneal_lr=true", f"ppo.gamma={hp.gamma}", f"ppo.gae_lambda={hp.gae_lambda}",
        f"ppo.num_minibatches={hp.num_minibatches}", f"ppo.update_epochs={hp.n_epochs}",
        "ppo.norm_adv=true", f"ppo.clip_coef={hp.clip}", "ppo.clip_vloss=true",
        f"ppo.ent_coef={hp.ent_coef}", f"ppo.vf_coef={hp.vf_coef}",
        f"ppo.max_grad_norm={hp.max_grad_norm}", "ppo.target_kl=0",
        f"ppo.norm_obs={str(hp.norm_obs).lower()}",
        f"ppo.norm_reward={str(hp.norm_reward).lower()}", "ppo.clip_obs=10.0",
        "ppo.clip_reward=10.0", f"pruning.enabled={str(prune).lower()}", *extra,
    ]


def run_ours(env_id: str, steps: int, prune: bool, extra: tuple[str, ...] = ()
             ) -> dict[str, Any]:
    """dsp_driving.trainer.Runner.learn with the training loop timed (see the module docstring)."""
    import torch

    torch.set_num_threads(1)
    from dsp_driving import trainer
    from dsp_driving.config import load_config

    cfg = load_config(None, _ours_overrides(env_id, steps, prune, extra))
    marks: dict[str, float] = {}

    class TimedPPO(trainer.PPO):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            marks["loop_start"] = time.perf_counter()
            marks["cpu_start"] = time.process_time()

    class TimedRunner(trainer.Runner):
        def finish(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            marks["loop_end"] = time.perf_counter()
            marks["cpu_end"] = time.process_time()
            return super().finish(*args, **kwargs)

    trainer.PPO = TimedPPO  # Runner.learn looks PPO up in its module at call time
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        summary = TimedRunner.new(cfg, Path(tmp) / "run", progress=False).learn()
    wall = marks["loop_end"] - marks["loop_start"]
    return {
        "steps": summary["total_steps"],
        "wall_s": wall,
        "steps_per_s": summary["total_steps"] / wall,
        "cpu_s": marks["cpu_end"] - marks["cpu_start"],
        "update_steps_per_s": summary["steps_per_s"],
        "actor_alive": summary["actor"]["hidden_compact"],
        "critic_alive": summary["critic"]["hidden_compact"],
    }


def run_sb3(env_id: str, steps: int) -> dict[str, Any]:
    """Stable-Baselines3 PPO with the same settings; times model.learn() only."""
    import torch

    torch.set_num_threads(1)
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
    from torch import nn

    hp = HPARAMS[env_id]
    venv = DummyVecEnv([lambda: Monitor(gym.make(env_id)) for _ in range(hp.num_envs)])
    venv = VecNormalize(venv, norm_obs=hp.norm_obs, norm_reward=hp.norm_reward,
                        clip_obs=10.0, clip_reward=10.0, gamma=hp.gamma)
    lr = hp.learning_rate
    model = PPO(
        "MlpPolicy", venv, learning_rate=lambda remaining: remaining * lr,
        n_steps=hp.n_steps, batch_size=hp.minibatch_size, n_epochs=hp.n_epochs,
        gamma=hp.gamma, gae_lambda=hp.gae_lambda, clip_range=hp.clip, clip_range_vf=hp.clip,
        normalize_advantage=True, ent_coef=hp.ent_coef, vf_coef=hp.vf_coef,
        max_grad_norm=hp.max_grad_norm, target_kl=None, seed=SEED, device="cpu", verbose=0,
        policy_kwargs={"net_arch": {"pi": list(hp.hidden), "vf": list(hp.hidden)},
                       "activation_fn": nn.Tanh, "ortho_init": True, "log_std_init": 0.0},
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    model.learn(total_timesteps=steps)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    venv.close()
    return {"steps": int(model.num_timesteps), "wall_s": wall, "cpu_s": cpu,
            "steps_per_s": model.num_timesteps / wall}


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measured training run described by ``spec``."""
    if spec["variant"] == "sb3":
        return run_sb3(spec["env"], spec["steps"])
    return run_ours(spec["env"], spec["steps"], prune=spec["variant"] == "ours-prune",
                    extra=tuple(spec.get("ours_set", ())))


# -- driver ----------------------------------------------------------------------------------
def machine_info() -> dict[str, str]:
    """CPU, core count and library versions (imported here only, never in the timed runs)."""
    probe = ("import json, torch, stable_baselines3, gymnasium, mujoco, numpy; print(json.dumps("
             "{'torch': torch.__version__, 'stable_baselines3': stable_baselines3.__version__, "
             "'gymnasium': gymnasium.__version__, 'mujoco': mujoco.__version__, "
             "'numpy': numpy.__version__}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    return {"cpu": cpu_model(), "nproc": str(os.cpu_count()), "python": platform.python_version(),
            **json.loads(out.strip().splitlines()[-1])}


def source_state() -> tuple[str, str]:
    """The repository's git HEAD (with a dirty flag) and a hash of the package sources."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted((root / "dsp_driving").rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "dsp_driving"],
                               cwd=root, check=True, capture_output=True, text=True).stdout
        head += " (dsp_driving/ has uncommitted changes)" if dirty.strip() else ""
    except (OSError, subprocess.CalledProcessError):
        head = "unknown (no git)"
    return head, digest.hexdigest()[:12]


def launch(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one worker subprocess and return its JSON result."""
    env = {**os.environ, **THREAD_ENV}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise RuntimeError(f"worker {spec} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _spread(values: list[float]) -> str:
    """Median with min..max."""
    return f"{statistics.median(values):.0f} ({min(values):.0f}..{max(values):.0f})"


def _ratio_line(what: str, num: list[dict[str, Any]], den: list[dict[str, Any]],
                key: str, target: float) -> str:
    """Ratio of medians of ``key`` (num / den), paired per-rep range and the verdict."""
    paired_den = {r["rep"]: r[key] for r in den}
    paired = [r[key] / paired_den[r["rep"]] for r in num]
    ratio = statistics.median(r[key] for r in num) / statistics.median(r[key] for r in den)
    verdict = "met" if ratio >= target else "MISSED"
    return (f"{what}: {ratio:.2f}x (ratio of medians; paired per rep {min(paired):.2f}.."
            f"{max(paired):.2f}x) -- target >= {target:.1f}x: {verdict}")


def _overhead_line(what: str, prune: list[dict[str, Any]], noprune: list[dict[str, Any]],
                   key: str, target_pct: float) -> str:
    """(prune / noprune - 1) * 100 on medians of ``key``, per-rep range and the verdict."""
    paired_den = {r["rep"]: r[key] for r in noprune}
    paired = [100 * (r[key] / paired_den[r["rep"]] - 1) for r in prune]
    pct = 100 * (statistics.median(r[key] for r in prune) /
                 statistics.median(r[key] for r in noprune) - 1)
    verdict = "met" if pct <= target_pct else "MISSED"
    return (f"{what}: {pct:+.1f} % (medians; paired per rep {min(paired):+.1f}.."
            f"{max(paired):+.1f} %) -- target <= {target_pct:.0f} %: {verdict}")


def _run_row(r: dict[str, Any]) -> str:
    """One row of the per-run table."""
    upd = f"{r['update_steps_per_s']:.0f}" if "update_steps_per_s" in r else "-"
    alive = ("/".join(str(a) for a in r["actor_alive"]) + " ; "
             + "/".join(str(a) for a in r["critic_alive"])) if "actor_alive" in r else "-"
    return (f"| {r['rep']} | {r['env']} | {r['variant']} | {r['steps']} | "
            f"{r['wall_s']:.2f} | {r['steps_per_s']:.0f} | {r['cpu_s']:.2f} | "
            f"{r['cpu_steps_per_s']:.0f} | {upd} | {r['load_before']:.2f} | {alive} |")


def _summary_rows(env_id: str, by: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The summary table's rows of one environment, one per variant."""
    rows = []
    for v in VARIANTS:
        upd = [r["update_steps_per_s"] for r in by[v] if "update_steps_per_s" in r]
        rows.append(f"| {env_id} | {v} | {_spread([r['steps_per_s'] for r in by[v]])} | "
                    f"{_spread([r['cpu_steps_per_s'] for r in by[v]])} | "
                    f"{_spread(upd) if upd else '-'} |")
    return rows


def _verdicts(env_id: str, by: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One environment's lines against the targets: speed vs SB3, pruning overhead, note."""
    verdicts = []
    for v in ("ours-prune", "ours-noprune"):
        for key, unit in (("steps_per_s", "wall"), ("cpu_steps_per_s", "CPU")):
            verdicts.append("- " + _ratio_line(f"{env_id}, {v} / sb3 steps/s ({unit})",
                                               by[v], by["sb3"], key, 1.0))
    for key, unit in (("wall_s", "wall"), ("cpu_s", "CPU")):
        verdicts.append("- " + _overhead_line(
            f"{env_id}, pruning overhead ({unit} time, prune / no-prune - 1)",
            by["ours-prune"], by["ours-noprune"], key, 5.0))
    dense = 2 * sum(HPARAMS[env_id].hidden)
    pruned = [r for r in by["ours-prune"]
              if sum(r["actor_alive"]) + sum(r["critic_alive"]) < dense]
    if len(pruned) < len(by["ours-prune"]):
        verdicts.append(
            f"- NOTE {env_id}: {len(by['ours-prune']) - len(pruned)} of "
            f"{len(by['ours-prune'])} ours-prune runs pruned no neuron, so their overhead "
            "covers the regulariser only, not masking or compaction")
    return verdicts


def report(runs: list[dict[str, Any]], envs: list[str], header: list[str]) -> str:
    """The markdown report: per-run table, summary table, ratios against the targets."""
    for r in runs:
        r["cpu_steps_per_s"] = r["steps"] / r["cpu_s"]
    lines = [*header, "", "### Per run", "",
             ("| rep | env | variant | steps | wall s | steps/s | CPU s | steps/CPU-s "
              "| update-only steps/s | load avg 1 min | actor ; critic alive at end |"),
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
             *(_run_row(r) for r in runs)]
    lines += ["", "### Summary (median over repetitions, min..max)", "",
              "| env | variant | steps/s (wall) | steps/CPU-s | update-only steps/s |",
              "|---|---|---:|---:|---:|"]
    verdicts = []
    for env_id in envs:
        by = {v: [r for r in runs if r["env"] == env_id and r["variant"] == v]
              for v in VARIANTS}
        lines += _summary_rows(env_id, by)
        verdicts += _verdicts(env_id, by)
    lines += ["", "### Against the targets", "", *verdicts]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions per (env, variant)")
    parser.add_argument("--cartpole-steps", type=int, default=50_000)
    parser.add_argument("--hopper-steps", type=int, default=24_576)
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    parser.add_argument("--ours-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for the ours runs, e.g. pruning.mode=ratio")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.reps < 1:
        parser.error(f"--reps={args.reps}: must be >= 1")

    command = "python " + " ".join(shlex.quote(a) for a in
                                   ["bench/train_throughput.py", *sys.argv[1:]])
    info = machine_info()
    head, src_hash = source_state()
    header = [
        f"Command: `{command}`",
        f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        (f"Machine: {info['cpu']}, nproc {info['nproc']}; Python {info['python']}, torch "
         f"{info['torch']}, stable-baselines3 {info['stable_baselines3']}, gymnasium "
         f"{info['gymnasium']}, mujoco {info['mujoco']}, numpy {info['numpy']}; one torch "
         "thread per run (OMP/MKL/OPENBLAS_NUM_THREADS=1)"),
        "Steps per run: " + ", ".join(
            f"{e} {args.cartpole_steps if e == 'CartPole-v1' else args.hopper_steps}"
            for e in args.envs) + f"; {args.reps} repetitions, interleaved",
    ]
    header.append(f"Source: git {head}; dsp_driving/*.py sha256 {src_hash}")
    if args.ours_set:
        header.append("Extra overrides for ours: " + " ".join(f"`{o}`" for o in args.ours_set))
    print("\n".join(header), flush=True)
    steps = {"CartPole-v1": args.cartpole_steps, "Hopper-v5": args.hopper_steps}
    runs = []
    for rep in range(args.reps):
        order = VARIANTS[rep % len(VARIANTS):] + VARIANTS[:rep % len(VARIANTS)]
        for env_id in args.envs:
            for variant in order:
                spec = {"env": env_id, "variant": variant, "steps": steps[env_id],
                        "ours_set": args.ours_set}
                load = os.getloadavg()[0]
                result = launch(spec)
                runs.append({**spec, **result, "rep": rep, "load_before": load})
                print(f"rep {rep} {env_id:<12} {variant:<13} {result['steps']:>7} steps "
                      f"{result['wall_s']:7.2f} s {result['steps_per_s']:7.0f} steps/s "
                      f"(load {load:.2f})", flush=True)
    end_head, end_hash = source_state()
    if end_hash != src_hash:
        header.append(f"WARNING: the package sources changed during the run (now git "
                      f"{end_head}, sha256 {end_hash}): runs measured different code")
    text = report(runs, args.envs, header)
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
