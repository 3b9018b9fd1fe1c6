"""Training runs in-process: resume continuity, stats trimming, seeding, run-folder guards."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from dsp_driving.actor_file import load_actor
from dsp_driving.callbacks import BaseCallback
from dsp_driving.trainer import load_checkpoint, train

TIMING = ("steps_per_s", "wall_s")


def _quiet(*_args) -> None:
    pass


def _without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def test_resume_continues_update_and_step(tmp_path: Path, tiny_config, stats_reader,
                                          caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "run"
    first = train(tiny_config(train={"total_steps": 1024}), run)
    assert first["total_steps"] == 1024
    before = (run / "stats.jsonl").read_text().splitlines()
    ckpt = load_checkpoint(run)
    assert ckpt["state"]["progress"]["update"] == 2
    assert ckpt["state"]["progress"]["global_step"] == 1024

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dsp_driving"):
        summary = train(tiny_config(train={"total_steps": 2048}), run, resume=True)
    assert caplog.messages[0] == f"resumed {run} at update 2, step 1024"
    records = stats_reader(run)
    assert [r["update"] for r in records] == [1, 2, 3, 4]
    assert [r["step"] for r in records] == [512, 1024, 1536, 2048]
    assert (run / "stats.jsonl").read_text().splitlines()[:2] == before
    ckpt = load_checkpoint(run)
    assert ckpt["state"]["progress"]["update"] == 4
    assert ckpt["state"]["progress"]["global_step"] == 2048
    assert ckpt["config"]["train"]["total_steps"] == 2048
    assert summary["total_steps"] == 2048
    assert json.loads((run / "summary.json").read_text())["total_steps"] == 2048


def test_resume_drops_stats_written_after_the_checkpoint(tmp_path: Path, tiny_config,
                                                         stats_reader) -> None:
    run = tmp_path / "run"
    train(tiny_config(train={"total_steps": 1024}), run)
    # A kill between the stats line and the checkpoint of update 3, then a torn line.
    with (run / "stats.jsonl").open("a") as f:
        f.write(json.dumps({"update": 3, "step": 1536}) + "\n")
        f.write('{"update": 4, "st')
    train(tiny_config(train={"total_steps": 2048}), run, resume=True)
    records = stats_reader(run)
    assert [r["update"] for r in records] == [1, 2, 3, 4]
    assert "losses" in records[2]  # the real update 3, not the stale line


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_run_folder_guards(tmp_path: Path, tiny_config) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        train(tiny_config(), tmp_path / "nothing", resume=True)
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(tiny_config(), run)
    # an attempt that died before its first checkpoint does not block a fresh run
    died = tmp_path / "died"
    died.mkdir()
    (died / "stats.jsonl").write_text('{"update": 1}\n{"update": 2}\n')
    train(tiny_config(train={"total_steps": 1024}), died)
    updates = [json.loads(x)["update"] for x in (died / "stats.jsonl").read_text().splitlines()]
    assert updates == [1, 2]  # replaced by the new run's two updates, not appended
    assert (died / "summary.json").stat().st_mode & 0o777 == 0o666 & ~_umask()
    with pytest.raises(ValueError, match="train.eval_seed=3: evaluation seeds .* overlap"):
        train(tiny_config(train={"seed": 1, "eval_seed": 3}), tmp_path / "overlap")
    assert not (tmp_path / "overlap").exists()  # a rejected config leaves nothing behind


def _run(tmp_path: Path, name: str, cfg) -> tuple[list[dict], dict[str, torch.Tensor]]:
    run = tmp_path / name
    train(cfg, run)
    records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    actor, _ = load_actor(run / "actor_compact.pt")
    return _without_timing(records), actor.state_dict()


def test_same_seed_same_run_different_seed_differs(tmp_path: Path, tiny_config) -> None:
    stats_a, actor_a = _run(tmp_path, "a", tiny_config(train={"seed": 7}))
    stats_b, actor_b = _run(tmp_path, "b", tiny_config(train={"seed": 7}))
    stats_c, actor_c = _run(tmp_path, "c", tiny_config(train={"seed": 8}))
    assert len(stats_a) == 4
    assert stats_a == stats_b  # losses, alive counts, thresholds, returns: all identical
    assert [r["actor"]["neurons_alive"] for r in stats_a][-1] < 32  # it did prune
    assert actor_a.keys() == actor_b.keys()
    for key in actor_a:
        assert torch.equal(actor_a[key], actor_b[key]), key
    assert [r["losses"] for r in stats_a] != [r["losses"] for r in stats_c]
    same_shapes = all(actor_a[k].shape == actor_c[k].shape for k in actor_a)
    assert not same_shapes or any(not torch.equal(actor_a[k], actor_c[k]) for k in actor_a)


def test_snapshot_exports_leave_training_unchanged(tmp_path: Path, tiny_config) -> None:
    pytest.importorskip("onnxscript")
    plain, actor_plain = _run(tmp_path, "plain", tiny_config(train={"seed": 7}))
    exported: list[Path] = []

    class Recorder(BaseCallback):
        def on_export(self, path: Path) -> None:
            exported.append(path)

    cfg = tiny_config(train={"seed": 7, "export_every": 1, "export_onnx": True})
    run = tmp_path / "snap"
    train(cfg, run, callbacks=[Recorder()])
    records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert _without_timing(records) == plain  # exporting draws no random numbers
    # updates 1-3 are snapshots (the last update's export is policy.onnx itself)
    assert exported == [run / "policies" / f"policy_u{u:06d}.onnx" for u in (1, 2, 3)] + \
        [run / "policy.onnx"]
    hidden = [json.loads(p.with_suffix(".json").read_text())["dsp_driving"]["hidden_compact"]
              for p in exported]
    assert hidden[-1] == [actor_plain[f"mlp.layers.{i}.weight"].shape[0] for i in (0, 1)]
    steps = [json.loads(p.with_suffix(".json").read_text())["dsp_driving"]["global_step"]
             for p in exported]
    assert steps == [512, 1024, 1536, 2048]


def test_runner_resume_reads_the_checkpoint_once_and_keeps_its_config(
        tmp_path: Path, tiny_config, monkeypatch: pytest.MonkeyPatch) -> None:
    from dsp_driving import trainer

    run = tmp_path / "run"
    trainer.Runner.new(tiny_config(train={"total_steps": 1024, "seed": 5}), run).learn()
    reads: list[Path] = []
    real = trainer.load_checkpoint
    monkeypatch.setattr(trainer, "load_checkpoint", lambda d: reads.append(d) or real(d))
    runner = trainer.Runner.resume(run)  # total_steps None: the saved one
    assert runner.cfg.train.total_steps == 1024 and runner.cfg.train.seed == 5
    extended = trainer.Runner.resume(run, 2048)
    assert extended.cfg.train.total_steps == 2048 and extended.cfg.train.seed == 5
    summary = extended.learn()
    assert reads == [run, run]  # once per Runner, nothing re-read while learning
    assert summary["total_steps"] == 2048
    with pytest.raises(FileExistsError, match="already holds a run"):
        trainer.Runner.new(tiny_config(), run)


def _find_pruner_state(state: object) -> dict:
    """The DynamicPruner state_dict inside a checkpoint (the dict holding 'kappa')."""
    if isinstance(state, dict):
        if "kappa" in state and "actor" in state:
            return state
        for value in state.values():
            found = _find_pruner_state(value)
            if found:
                return found
    return {}


def test_resume_of_a_run_saved_before_lambda_units_keeps_lambda_per_step(
        tmp_path: Path, tiny_config, stats_reader) -> None:
    from dsp_driving import trainer

    run = tmp_path / "run"
    # 2 updates of 512 steps, t_end 0.5: the regulariser acts in update 1 only (dose)
    trainer.Runner.new(tiny_config(train={"total_steps": 1024}), run).learn()
    # as a run from before pruning.lambda_units saved it: every other field written out
    path = run / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=False)
    del checkpoint["config"]["pruning"]["lambda_units"]
    del checkpoint["config"]["pruning"]["regularise_after_ramp"]
    pruner_state = _find_pruner_state(checkpoint)
    assert pruner_state.pop("regulariser_stopped") is True  # written by today's code only
    torch.save(checkpoint, path)
    runner = trainer.Runner.resume(run, 2048)
    assert (runner.cfg.pruning.lambda_units, runner.cfg.pruning.regularise_after_ramp) == (
        "step", True)
    runner.learn()
    records = stats_reader(run)
    assert [r["update"] for r in records] == [1, 2, 3, 4]
    # the old meaning: lambda_actor per gradient step, still acting after t_end
    lam = runner.cfg.pruning.lambda_actor
    assert [r["actor"]["lam"] for r in records[2:]] == [lam, lam]
    assert all(r["losses"]["lambda_R"] > 0 for r in records[2:])
    saved = load_checkpoint(run)["config"]["pruning"]
    assert (saved["lambda_units"], saved["regularise_after_ramp"]) == ("step", True)
