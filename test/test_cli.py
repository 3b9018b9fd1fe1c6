"""`dsp-driving` end to end: CartPole and Pendulum runs, eval, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from dsp_driving import cli
from dsp_driving.actor_file import load_actor
from dsp_driving.config import load_config

NET_KEYS = {"hidden_dense", "hidden_compact", "dense_neurons", "compact_neurons",
            "dense_weights", "compact_weights", "neurons_removed_pct", "weights_removed_pct"}


def _check_net_block(block: dict, in_dim: int, out_dim: int) -> None:
    assert set(block) == NET_KEYS
    dense, compact = block["hidden_dense"], block["hidden_compact"]
    assert block["dense_neurons"] == sum(dense)
    assert block["compact_neurons"] == sum(compact)

    def weights(hidden: list[int]) -> int:
        sizes = [in_dim, *hidden, out_dim]
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))

    assert block["dense_weights"] == weights(dense)
    assert block["compact_weights"] == weights(compact)
    assert block["neurons_removed_pct"] == pytest.approx(100 * (1 - sum(compact) / sum(dense)))
    assert block["weights_removed_pct"] == pytest.approx(
        100 * (1 - weights(compact) / weights(dense)))


def test_cartpole_run_writes_summary_with_exact_keys(cartpole_run: Path) -> None:
    summary = json.loads((cartpole_run / "summary.json").read_text())
    assert set(summary) == {"env", "seed", "total_steps", "wall_s", "steps_per_s", "actor",
                            "critic", "eval", "gate"}
    # the masked network, its compaction and policy.onnx drove the episodes alike
    assert summary["gate"]["passed"] and list(summary["gate"]["compared"]) == ["masked", "onnx"]
    assert summary["gate"]["compared"]["masked"]["max_abs_diff"] == 0.0  # argmax: exact
    assert summary["env"] == "CartPole-v1"
    assert summary["seed"] == 1
    assert summary["total_steps"] == 2048
    assert summary["wall_s"] > 0
    assert summary["steps_per_s"] == pytest.approx(2048 / summary["wall_s"])
    assert set(summary["eval"]) == {"episodes", "return_mean", "return_std"}
    assert summary["eval"]["episodes"] == 2
    assert summary["eval"]["return_mean"] >= 1.0  # CartPole pays 1 per step survived
    _check_net_block(summary["actor"], 4, 2)
    _check_net_block(summary["critic"], 4, 1)
    assert summary["actor"]["hidden_dense"] == [16, 16]
    assert summary["actor"]["compact_neurons"] < 32  # the tiny config prunes


def test_cartpole_run_products(cartpole_run: Path) -> None:
    summary = json.loads((cartpole_run / "summary.json").read_text())
    actor, meta = load_actor(cartpole_run / "actor_compact.pt")
    assert actor.mlp.hidden_sizes == summary["actor"]["hidden_compact"]
    assert sum(p.numel() for p in actor.mlp.parameters()) == summary["actor"]["compact_weights"]
    assert meta["env_id"] == "CartPole-v1"
    assert meta["global_step"] == 2048
    assert actor.act(np.zeros(4, dtype=np.float32)).shape == ()
    saved = yaml.safe_load((cartpole_run / "config.yaml").read_text())
    assert saved["net"]["actor_hidden"] == [16, 16]
    assert saved["train"]["total_steps"] == 2048
    assert load_config(cartpole_run / "config.yaml").to_dict() == saved
    assert meta["config"] == saved
    records = [json.loads(x) for x in (cartpole_run / "stats.jsonl").read_text().splitlines()]
    assert [r["update"] for r in records] == [1, 2, 3, 4]


def test_eval_command(cartpole_run: Path, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert cli.main(["eval", str(cartpole_run), "--episodes", "2", "--json",
                     str(tmp_path / "e.json")]) == 0
    assert f"wrote {tmp_path / 'e.json'}" in capsys.readouterr().out
    out = json.loads((tmp_path / "e.json").read_text())
    assert out["episodes"] == 2
    assert out["env"] == "CartPole-v1"
    assert out["seeds"] == [1_000_000, 1_000_001]
    summary = json.loads((cartpole_run / "summary.json").read_text())
    # Same policy, same seeds as the run's own evaluation: the same returns.
    assert out["return_mean"] == summary["eval"]["return_mean"]
    # another evaluation is not written over it unless asked
    assert cli.main(["eval", str(cartpole_run), "--episodes", "3", "--json",
                     str(tmp_path / "e.json")]) == 2
    assert "holds another evaluation" in capsys.readouterr().err
    assert json.loads((tmp_path / "e.json").read_text())["episodes"] == 2
    assert cli.main(["eval", str(cartpole_run), "--episodes", "3", "--json",
                     str(tmp_path / "e.json"), "--overwrite", "--no-plots"]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["episodes"] == 3


def test_cli_errors_exit_with_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    assert cli.main(["train", "--resume", str(tmp_path / "x"), "--seed", "0"]) == 2
    assert "with --resume only --total-steps (and the --publish, --address and --carla-* " \
        "options) may be given (got --seed)" in capsys.readouterr().err
    assert cli.main(["train", "--domain", "3"]) == 2
    assert "--domain and --wait-subscribers need --publish" in capsys.readouterr().err
    assert cli.main(["train", "--env", "CartPole-v1", "--set", "net.actor_hidden=[64,",
                     "--out", str(tmp_path / "x")]) == 2
    assert "invalid override 'net.actor_hidden=[64,': not a YAML value" in \
        capsys.readouterr().err
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("ppo: {gamma: [0.9\n")
    assert cli.main(["train", "--env", "CartPole-v1", "--config", str(bad_yaml)]) == 2
    assert f"config file {bad_yaml} is not valid YAML" in capsys.readouterr().err
    assert cli.main(["train", "--env", "CartPole-v1", "--set", "pruning.lambda_actor=.inf",
                     "--out", str(tmp_path / "x")]) == 2
    assert "pruning.lambda_actor=inf: must be finite" in capsys.readouterr().err
    assert cli.main(["train", "--env", "CartPole-v1", "--set", "train.eval_seed=-100",
                     "--out", str(tmp_path / "x")]) == 2
    assert "train.eval_seed=-100: must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert cli.main(["train", "--env", "CartPole-v1", "--set", "ppo.gamma=1.5",
                     "--out", str(tmp_path / "y")]) == 2
    assert "ppo.gamma=1.5" in capsys.readouterr().err
    assert cli.main(["train", "--env", "NoSuchEnv-v0", "--out", str(tmp_path / "z"),
                     "--set", "train.progress=false"]) == 2
    assert "unknown environment train.env_id='NoSuchEnv-v0'" in capsys.readouterr().err
    assert cli.main(["eval", str(tmp_path / "missing")]) == 2
    assert "actor file not found" in capsys.readouterr().err


def test_pendulum_continuous_run(tmp_path: Path, tiny_cli_args) -> None:
    run = tmp_path / "pendulum"
    rc = cli.main(["train", "--env", "Pendulum-v1", "--total-steps", "2048", "--out", str(run),
                   *tiny_cli_args({"net": {"init_log_std": 0.5}})])
    assert rc == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env"] == "Pendulum-v1"
    _check_net_block(summary["actor"], 3, 1)
    _check_net_block(summary["critic"], 3, 1)
    records = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["losses"]["total"]) for r in records)
    actor, meta = load_actor(run / "actor_compact.pt")
    assert actor.kind == "continuous"
    assert actor.mlp.hidden_sizes == summary["actor"]["hidden_compact"]
    assert actor.action_low.tolist() == [-2.0] and actor.action_high.tolist() == [2.0]
    obs = torch.randn(200, 3) * 5.0
    with torch.no_grad():
        actions = actor(obs)
    assert actions.shape == (200, 1)
    assert float(actions.min()) >= -2.0 and float(actions.max()) <= 2.0
    with torch.no_grad():  # force the mean far out of bounds: the actor clips it exactly
        actor.mlp.layers[-1].bias.fill_(50.0)
        assert torch.equal(actor(obs), torch.full((200, 1), 2.0))
        actor.mlp.layers[-1].bias.fill_(-50.0)
        assert torch.equal(actor(obs), torch.full((200, 1), -2.0))


def test_resume_without_total_steps_keeps_the_saved_budget(cartpole_run: Path,
                                                           tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    import dsp_driving.trainer as trainer

    run = tmp_path / "copy"
    shutil.copytree(cartpole_run, run)

    def stop(*_args, **_kwargs):  # config.yaml is written before environments are made
        raise RuntimeError("stop before training")

    monkeypatch.setattr(trainer, "make_vec_env", stop)
    with pytest.raises(RuntimeError, match="stop before training"):
        cli.main(["train", "--resume", str(run)])
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["total_steps"] == 2048


def _stats_updates(path: Path) -> list[int]:
    return [json.loads(line)["update"] for line in path.read_text().splitlines()]


def _complete_lines(path: Path) -> list[str]:
    """Lines of a file a killed process was appending to, without a torn last line."""
    text = path.read_text()
    return text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]


def test_sigkill_then_resume_loses_nothing_but_the_unsaved_update(tmp_path: Path,
                                                                  tiny_cli_args) -> None:
    run = tmp_path / "killed"
    total = 25_000  # 49 updates of 512 steps: several seconds of training
    base = [sys.executable, "-m", "dsp_driving", "train", "--total-steps", str(total)]
    proc = subprocess.Popen([*base, "--env", "CartPole-v1", "--out", str(run),
                             *tiny_cli_args()],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stats = run / "stats.jsonl"
    try:
        deadline = time.monotonic() + 300  # a guard against hanging, not a speed check
        while time.monotonic() < deadline and proc.poll() is None:
            if (run / "checkpoint.pt").exists() and stats.exists() and \
                    len(stats.read_text().splitlines()) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"training ended before the kill: {proc.stderr.read()}"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert not (run / "summary.json").exists()
    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    ckpt_update = ckpt["state"]["progress"]["update"]
    assert ckpt_update >= 2
    assert ckpt["state"]["progress"]["global_step"] == 512 * ckpt_update
    killed_lines = _complete_lines(stats)
    killed_updates = [json.loads(line)["update"] for line in killed_lines]
    assert killed_updates[:ckpt_update] == list(range(1, ckpt_update + 1))
    assert len(killed_updates) - ckpt_update in (0, 1)  # at most one unsaved update

    # no --total-steps: the resumed run keeps the budget saved in its folder
    resumed = subprocess.run([sys.executable, "-m", "dsp_driving", "train", "--resume",
                              str(run)], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed {run} at update {ckpt_update}, step {512 * ckpt_update}" in resumed.stdout
    assert (run / "summary.json").exists()
    n_updates = -(-total // 512)
    updates = _stats_updates(stats)
    assert updates == list(range(1, n_updates + 1))  # consecutive, no duplicates
    assert stats.read_text().splitlines()[:ckpt_update] == killed_lines[:ckpt_update]
    first_new = json.loads(stats.read_text().splitlines()[ckpt_update])
    assert first_new["update"] == ckpt_update + 1
    assert first_new["step"] == 512 * (ckpt_update + 1)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["total_steps"] == 512 * n_updates
    final = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert final["state"]["progress"]["update"] == n_updates
    # the resumed segment records a new bag (never appended to the killed one's)
    from rosbags.rosbag2 import Reader

    # (the killed run made `bag` only if it lived past its first one-minute segment)
    with Reader(run / ("bag_2" if (run / "bag_2").exists() else "bag")) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts["/dsp/compaction"] == n_updates - ckpt_update
    assert counts["/dsp/training"] == n_updates - ckpt_update + 1  # + the evaluation


def test_train_without_publish_never_loads_the_node_module(tmp_path: Path,
                                                           tiny_cli_args) -> None:
    """`dsp-driving train` builds a trainer.Runner itself: the ROS-free path records its bag
    and trains without importing trainer_node or a transport backend (its messages are
    dsp_driving.msgs, cyclonedds IdlStructs: no DDS participant)."""
    run = tmp_path / "run"
    code = ("import json, sys\nfrom dsp_driving import cli\n"
            f"rc = cli.main(['train', '--env', 'CartPole-v1', '--total-steps', '512', "
            f"'--out', {str(run)!r}, *{tiny_cli_args()!r}])\n"
            "print(json.dumps([rc, sorted(m for m in sys.modules if m.startswith(("
            "'dsp_driving.nodes.trainer_node', 'dsp_driving.transport.dds', "
            "'dsp_driving.transport.ros', 'rclpy')))]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    rc, loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (rc, loaded) == (0, [])
    assert f"run folder: {run}" in proc.stdout
    assert (run / "summary.json").is_file()
    assert (run / "bag" / "metadata.yaml").is_file()
