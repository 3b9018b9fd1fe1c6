"""`dsp-driving sweep` on a real local Ray: trials, dependencies, interruption and rerun."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from dsp_driving.config import Config, from_dict
from dsp_driving.experiments.sweep import SweepSpec, base_config, plan, trial_status
from dsp_driving.experiments.variants import variant_config

pytest.importorskip("ray")
pytest.importorskip("onnxscript")

# TINY CartPole (test/conftest.py) with a budget of a few seconds per trial
TINY = {"net": {"actor_hidden": [16, 16], "critic_hidden": [16, 16]},
        "ppo": {"num_steps": 128, "num_minibatches": 4, "update_epochs": 4},
        "pruning": {"kappa_final": 1.0, "t_start": 0.0, "t_end": 0.5, "max_prune_frac": 0.5,
                    "lambda_actor": 0.01},
        "train": {"num_envs": 4, "eval_episodes": 2, "checkpoint_every": 1,
                  "tensorboard": False}}


def _sweep(config: Path, out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "dsp_driving", "sweep", "--env", "CartPole-v1",
            "--variants", "dsp,small_dense", "--seeds", "1,2", "--total-steps", str(steps),
            "--config", str(config), "--out", str(out), "--eval-episodes", "3",
            "--max-concurrent", "2"]


def _files(run: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()}


def test_interrupted_sweep_reruns_without_retraining(tmp_path: Path) -> None:
    config, out = tmp_path / "tiny.yaml", tmp_path / "sweep"
    config.write_text(yaml.safe_dump(TINY))
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    proc = subprocess.Popen(_sweep(config, out, 25_600), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    runs = {v: [out / "cartpole" / v / f"seed{k}" for k in (1, 2)]
            for v in ("dsp", "small_dense")}
    try:  # interrupt phase 1 as soon as both dsp runs have checkpoints
        deadline = time.monotonic() + 300  # a guard against hanging, not a speed check
        while time.monotonic() < deadline and proc.poll() is None:
            if all((r / "checkpoint.pt").is_file() for r in runs["dsp"]):
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stdout.read()
        os.killpg(proc.pid, signal.SIGINT)
        first, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, first
    assert "interrupted" in first
    assert not any(r.exists() for r in runs["small_dense"])  # phase 2 never started
    interrupted = [r for r in runs["dsp"] if trial_status(r) == "resume"]
    finished = [r for r in runs["dsp"] if trial_status(r) == "done"]
    kept = {r: _files(r) for r in finished}
    lines_before = {r: (r / "stats.jsonl").read_text().splitlines() for r in interrupted}

    second = subprocess.run(_sweep(config, out, 25_600), capture_output=True, text=True,
                            env=env, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "4 trials" in second.stdout
    for r in [*runs["dsp"], *runs["small_dense"]]:
        assert trial_status(r) == "done"
    for r, files in kept.items():  # finished before the interruption: untouched
        assert _files(r) == files
    for r, before in lines_before.items():  # resumed from its checkpoint, not restarted
        log = (r / "trial.log").read_text()
        assert "resumed" in log
        after = (r / "stats.jsonl").read_text().splitlines()
        assert len(after) == 50 and after[:2] == before[:2]
    for k, dsp in enumerate(runs["dsp"]):  # small_dense of seed k has dsp's sizes of seed k
        dsp_summary = json.loads((dsp / "summary.json").read_text())
        small = json.loads((runs["small_dense"][k] / "summary.json").read_text())
        assert small["actor"]["hidden_dense"] == dsp_summary["actor"]["hidden_compact"]
        assert small["critic"]["hidden_dense"] == dsp_summary["critic"]["hidden_compact"]
        result = json.loads((runs["small_dense"][k] / "eval.json").read_text())
        assert result["runtime"] == "onnxruntime" and result["episodes"] == 3
        assert result["seeds"] == [2_000_000, 2_000_002]

    third = subprocess.run(_sweep(config, out, 25_600), capture_output=True, text=True,
                           env=env, timeout=300)
    assert third.returncode == 0 and "4 trials (4 done)" in third.stdout
    assert "Ray" not in third.stdout  # nothing to run: Ray is not even started


def _started(run: Path, cfg: Config) -> None:
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    (run / "checkpoint.pt").write_bytes(b"")


def test_a_dense_run_with_selection_keeps_the_window_it_was_selected_in(tmp_path: Path
                                                                        ) -> None:
    # safety-first selection starts at pruning.t_end, in dense runs too: a dense run selected
    # from another t_end is another run; without selection t_end is unused
    selecting = tmp_path / "selecting.yaml"
    selecting.write_text(yaml.safe_dump({"train": {"select_every": 1}}))
    for config, out in ((None, tmp_path / "plain"), (selecting, tmp_path / "selecting")):
        spec = SweepSpec(env="CartPole-v1", variants=("dense",), seeds=(1,), out=out,
                         total_steps=1000, config=config)
        base = base_config(spec)
        moved = from_dict({"pruning": {"t_end": base.pruning.t_end + 0.1}}, base)
        _started(out / "cartpole" / "dense" / "seed1", variant_config("dense", moved, 1, 1000))
        if config is None:
            assert len(plan(spec)[0]) == 1
        else:
            with pytest.raises(ValueError, match=r"cartpole/dense/seed1 was started with "
                               rf"pruning.t_end={base.pruning.t_end + 0.1!r}"):
                plan(spec)


def test_a_run_saved_before_the_refit_is_the_norefit_ablation(tmp_path: Path) -> None:
    # a dsp run saved before pruning.compensate existed (its config.yaml has no such key)
    # was not refitted: it resumes as dsp_norefit, and dsp (now refitting) refuses it
    spec = SweepSpec(env="CartPole-v1", variants=("dsp_norefit",), seeds=(1,),
                     out=tmp_path, total_steps=1000)
    old = variant_config("dsp", base_config(spec), 1, 1000).to_dict()
    del old["pruning"]["compensate"], old["pruning"]["kl_budget"], old["pruning"]["guard"]
    for variant in ("dsp_norefit", "dsp"):
        run = tmp_path / "cartpole" / variant / "seed1"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump(old))
        (run / "checkpoint.pt").write_bytes(b"")
    assert [t.name for phase in plan(spec) for t in phase] == ["cartpole/dsp_norefit/seed1"]
    with pytest.raises(ValueError, match=r"cartpole/dsp/seed1 was started with "
                       r"pruning.compensate='none', this command gives 'lstsq'"):
        plan(SweepSpec(env="CartPole-v1", variants=("dsp",), seeds=(1,), out=tmp_path,
                       total_steps=1000))


def test_settings_of_an_env_folder_cannot_change(tmp_path: Path) -> None:
    spec = SweepSpec(env="CartPole-v1", variants=("dense", "dsp"), seeds=(1,), out=tmp_path,
                     total_steps=1000)
    assert [t.name for phase in plan(spec) for t in phase] == ["cartpole/dense/seed1",
                                                               "cartpole/dsp/seed1"]
    base = base_config(spec)
    other_lambda = from_dict({"pruning": {"lambda_actor": 1e-3}}, base)
    # a started dense trial never used the pruning settings: still this sweep's
    _started(tmp_path / "cartpole" / "dense" / "seed1",
             variant_config("dense", other_lambda, 1, 1000))
    assert len(plan(spec)[0]) == 2
    _started(tmp_path / "cartpole" / "dsp" / "seed1",
             variant_config("dsp", other_lambda, 1, 1000))
    with pytest.raises(ValueError, match=r"cartpole/dsp/seed1 was started with "
                       rf"pruning.lambda_actor=0.001, this command gives "
                       rf"{base.pruning.lambda_actor!r}"):
        plan(spec)
    other = SweepSpec(env="CartPole-v1", variants=("dense",), seeds=(1, 2), out=tmp_path,
                      total_steps=2000)
    with pytest.raises(ValueError, match="train.total_steps=1000.*2000"):
        plan(other)
    with pytest.raises(ValueError, match="small_dense needs the dsp run of seed 1"):
        plan(SweepSpec(env="CartPole-v1", variants=("small_dense",), seeds=(1,),
                       out=tmp_path, total_steps=1000))
    with pytest.raises(ValueError, match="seeds=.*each seed may be named once"):
        SweepSpec.from_mapping({"env": "CartPole-v1", "variants": "dense",
                                "seeds": "1,1", "out": str(tmp_path)})
    with pytest.raises(ValueError, match="unknown key 'seed'"):
        SweepSpec.from_mapping({"env": "CartPole-v1", "seed": 1})


def test_a_trained_trial_without_its_policy_is_exported_then_evaluated(
        tmp_path: Path, tiny_config) -> None:
    from dsp_driving.experiments.sweep import EVAL_SEED, Trial, run_trial
    from dsp_driving.trainer import Runner

    cfg = tiny_config(train={"total_steps": 512, "export_onnx": False})
    run = tmp_path / "cartpole" / "dsp" / "seed1"
    Runner.new(cfg, run).learn()
    assert trial_status(run) == "evaluate" and not (run / "policy.onnx").exists()
    trial = Trial("CartPole-v1", "dsp", 1, str(run), cfg.to_dict(), {}, 2, EVAL_SEED)
    result = run_trial(trial)
    assert trial_status(run) == "done" and (run / "policy.json").is_file()
    assert json.loads((run / "eval.json").read_text()) == result
    assert result["episodes"] == 2 and result["seeds"] == [EVAL_SEED, EVAL_SEED + 1]
    assert "trial cartpole/dsp/seed1" not in (run / "trial.log").read_text()  # no failure


def test_an_env_folder_from_before_new_config_fields_still_continues(tmp_path: Path) -> None:
    spec = SweepSpec(env="CartPole-v1", variants=("dense",), seeds=(1,), out=tmp_path,
                     total_steps=1000)
    plan(spec)
    _started(tmp_path / "cartpole" / "dense" / "seed1",
             variant_config("dense", base_config(spec), 1, 1000))
    path = tmp_path / "cartpole" / "sweep.yaml"
    saved = yaml.safe_load(path.read_text())
    for key in ("select_every", "select_episodes", "select_seed"):  # fields added later
        del saved["config"]["train"][key]
    path.write_text(yaml.safe_dump(saved))
    assert [t.name for phase in plan(spec) for t in phase] == ["cartpole/dense/seed1"]


def test_selection_seeds_may_not_be_the_sweeps_evaluation_seeds(tmp_path: Path) -> None:
    from dsp_driving.experiments.sweep import EVAL_SEED

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"train": {"select_every": 5,
                                                "select_seed": EVAL_SEED + 10}}))
    spec = SweepSpec(env="CartPole-v1", variants=("dense",), seeds=(1,), out=tmp_path,
                     total_steps=1000, config=config)
    with pytest.raises(ValueError, match=rf"train.select_seed={EVAL_SEED + 10}: the selection "
                       "seeds overlap the sweep's evaluation seeds"):
        plan(spec)
    assert not (tmp_path / "cartpole").exists()  # refused before anything was written


def test_posthoc_refuses_a_dense_run_copied_back_without_its_checkpoint(tmp_path: Path
                                                                         ) -> None:
    # a fresh clone seeds its sweep folder from results/ (summary, config, eval): such a dense
    # run is done, but posthoc starts from its weights, so plan() must refuse before training
    spec = SweepSpec(env="CartPole-v1", variants=("posthoc",), seeds=(1,), out=tmp_path,
                     total_steps=1000)
    base = base_config(spec)
    for variant in ("dense", "dsp"):
        run = tmp_path / "cartpole" / variant / "seed1"
        _started(run, variant_config(variant, base, 1, 1000))
        (run / "checkpoint.pt").unlink(missing_ok=True)
        hidden = [64, 64] if variant == "dense" else [4, 4]
        (run / "summary.json").write_text(json.dumps(
            {"actor": {"hidden_compact": hidden}, "critic": {"hidden_compact": hidden}}))
        (run / "eval.json").write_text("{}")
    dense = tmp_path / "cartpole" / "dense" / "seed1"
    with pytest.raises(ValueError, match=r"cartpole/posthoc/seed1 starts from the dense run's "
                       rf"weights, but {re.escape(str(dense))} has no checkpoint.pt"):
        plan(spec)
    (dense / "checkpoint.pt").write_bytes(b"ckpt")
    assert [t.name for phase in plan(spec) for t in phase] == ["cartpole/posthoc/seed1"]


def test_a_finished_posthoc_copied_to_another_folder_still_matches(tmp_path: Path) -> None:
    # posthoc's config.yaml holds the absolute path of the dense run it started from; the
    # same sweep folder copied elsewhere (results/ copied back on a fresh clone) is the same
    spec = SweepSpec(env="CartPole-v1", variants=("posthoc",), seeds=(1,),
                     out=tmp_path / "a", total_steps=1000)
    base = base_config(spec)
    env_dir = tmp_path / "a" / "cartpole"
    needed = {}
    for variant in ("dense", "dsp"):
        needed[variant] = run = env_dir / variant / "seed1"
        _started(run, variant_config(variant, base, 1, 1000))
        (run / "summary.json").write_text(json.dumps(
            {"actor": {"hidden_compact": [4, 4]}, "critic": {"hidden_compact": [4, 4]}}))
        (run / "eval.json").write_text("{}")
    _started(env_dir / "posthoc" / "seed1", variant_config("posthoc", base, 1, 1000, needed))
    (env_dir / "posthoc" / "seed1" / "eval.json").write_text("{}")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    moved = dataclasses.replace(spec, out=tmp_path / "b")
    assert [t.name for phase in plan(moved) for t in phase] == ["cartpole/posthoc/seed1"]
    saved = yaml.safe_load((tmp_path / "b" / "cartpole" / "posthoc" / "seed1" /
                            "config.yaml").read_text())
    assert saved["train"]["init_from"].startswith(str(tmp_path / "a"))  # still the old path
