"""Safety-first snapshot selection and the closed-loop export gate (dsp_driving/selection.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dsp_driving.actor_file import load_actor
from dsp_driving.config import from_dict
from dsp_driving.driving import contract
from dsp_driving.evaluation import evaluate
from dsp_driving.modules.mlp import MLP
from dsp_driving.rl.networks import ActionSpec
from dsp_driving.rl.normalization import ObsNormalizer
from dsp_driving.selection import (
    ACTION_TOL,
    GateError,
    Selector,
    Snapshot,
    check,
    compare,
    drive,
)
from dsp_driving.trainer import Runner, load_checkpoint, train

HIGHWAY = "dsp_driving/HighwayDrive-v0"
SPEC = ActionSpec("continuous", 2, np.full(2, -1, np.float32), np.ones(2, np.float32))


def _snapshot(seed: int = 0, hidden: tuple[int, ...] = (8, 6)) -> Snapshot:
    torch.manual_seed(seed)
    mlp = MLP(contract.OBS_DIM, list(hidden), 2)
    return Snapshot(mlp, [torch.ones(n) for n in hidden], ObsNormalizer(contract.OBS_DIM), SPEC)


def _entry(update: int, collision_rate: float, ret: float, hidden=(8, 6)) -> dict:
    return {"update": update, "step": 100 * update, "hidden": list(hidden), "episodes": 10,
            "collision_rate": collision_rate, "return_mean": ret}


def test_offer_ranks_collisions_before_return_and_prefers_the_later_on_a_tie() -> None:
    sel = Selector(from_dict({"train": {"select_every": 1}}))
    snaps = [_snapshot(i) for i in range(5)]
    assert sel.offer(_entry(10, 0.2, 120.0), snaps[0])
    assert sel.offer(_entry(20, 0.0, 90.0), snaps[1])  # fewer collisions beats more return
    assert not sel.offer(_entry(30, 0.1, 200.0), snaps[2])
    assert not sel.offer(_entry(40, 0.0, 89.0), snaps[3])
    assert sel.offer(_entry(50, 0.0, 90.0), snaps[4])  # a tie: the later one
    assert sel.best is snaps[4] and sel.best_entry["update"] == 50
    assert [e["best"] for e in sel.history] == [False, False, False, False, True]
    summary = sel.summary()
    assert summary["chosen_update"] == 50 and len(summary["evaluated"]) == 5
    assert summary["seeds"] == [3_000_000, 3_000_019]


def test_a_snapshot_from_before_the_actor_shrank_no_longer_competes() -> None:
    sel = Selector(from_dict({"train": {"select_every": 1}}))
    big, small = _snapshot(0, (8, 6)), _snapshot(1, (4, 3))
    assert sel.offer(_entry(10, 0.0, 150.0, (8, 6)), big)
    # worse, but the only one of the final size: it must be the one exported
    assert sel.offer(_entry(20, 0.5, 50.0, (4, 3)), small)
    assert sel.best is small and sel.best_entry["hidden"] == [4, 3]


def test_snapshot_state_round_trips_and_compacts_to_the_same_function() -> None:
    snap = _snapshot(3, (8, 6))
    with torch.no_grad():  # mask neuron 2 of layer 0 as the pruner does: its weights zeroed
        snap.mlp.layers[0].weight[2].zero_()
        snap.mlp.layers[0].bias[2] = 0.0
        snap.mlp.layers[1].weight[:, 2].zero_()
    snap.masks[0][2] = 0.0
    again = Snapshot.from_state(snap.state_dict(), SPEC)
    obs = np.random.default_rng(0).standard_normal((64, contract.OBS_DIM)).astype(np.float32)
    np.testing.assert_array_equal(again.masked().act(obs), snap.masked().act(obs))
    assert again.deployed().mlp.hidden_sizes == [7, 6]
    np.testing.assert_allclose(again.deployed().act(obs), snap.masked().act(obs), atol=1e-6)


def test_compare_judges_actions_on_the_reference_states_and_outcomes_closed_loop() -> None:
    cfg = from_dict({"train": {"env_id": HIGHWAY}})
    snap = _snapshot(0)
    base = snap.masked()
    with torch.no_grad():  # a calm policy that drives forward
        base.mlp.layers[-1].weight.mul_(0.01)
        base.mlp.layers[-1].bias.copy_(torch.tensor([0.0, 0.4]))

    def nudged(delta: float):
        return lambda obs: np.clip(base.act(obs) + np.float32(delta), -1, 1)

    policies = {"compact": base.act, "same": nudged(0.0), "tiny": nudged(ACTION_TOL / 10)}
    runs = {name: drive(policy, cfg, 2, seed=11) for name, policy in policies.items()}
    block = compare(runs, policies, discrete=False)
    assert block["passed"] and block["failures"] == []
    assert block["compared"]["same"]["max_abs_diff"] == 0.0
    assert block["compared"]["tiny"]["max_abs_diff"] == pytest.approx(ACTION_TOL / 10, rel=0.2)
    check(block)  # does not raise

    policies["off"] = nudged(1e-3)
    runs["off"] = drive(policies["off"], cfg, 2, seed=11)
    block = compare(runs, policies, discrete=False)
    assert not block["passed"] and not block["compared"]["off"]["agree"]
    assert block["compared"]["off"]["max_abs_diff"] == pytest.approx(1e-3, rel=0.01)
    assert any("off vs compact: episode seed 11: actions differ from step 0" in f
               for f in block["failures"])
    with pytest.raises(GateError, match="closed-loop gate failed over 2 episodes from seed 11"):
        check(block)


def test_compare_fails_when_an_episode_ends_differently() -> None:
    """An episode that ends differently fails the gate unless both policies agree within
    the tolerance on every state either run visited (then the simulator amplified their
    rounding: reported, not judged)."""
    cfg = from_dict({"train": {"env_id": HIGHWAY}})
    base = _snapshot(0).masked()
    with torch.no_grad():
        base.mlp.layers[-1].weight.mul_(0.01)
        base.mlp.layers[-1].bias.copy_(torch.tensor([0.0, 0.4]))
    ref = drive(base.act, cfg, 2, seed=11)
    assert ref["rows"][1]["outcome"] == "collision"  # the calm policy runs into traffic
    other = drive(base.act, cfg, 2, seed=11)
    other["rows"][1] = {**other["rows"][1], "outcome": "timeout", "collisions": 0}
    policies = {"compact": base.act, "onnx": base.act}
    block = compare({"compact": ref, "onnx": other}, policies, discrete=False)
    assert block["passed"] and block["compared"]["onnx"]["max_abs_diff"] == 0.0
    assert block["compared"]["onnx"]["outcome_differences"] == [
        "episode seed 12: outcome 'collision' vs 'timeout', collisions 1 vs 0 (the policies "
        "agree within 1e-05 on both runs' states)"]
    # the other run's own actions are not the reference policy's on its states: a failure
    other["actions"][1] = other["actions"][1] + 1e-3
    block = compare({"compact": ref, "onnx": other}, policies, discrete=False)
    assert not block["passed"]
    assert block["failures"] == ["onnx vs compact: episode seed 12: outcome 'collision' vs "
                                 "'timeout'", "onnx vs compact: episode seed 12: collisions 1 "
                                 "vs 0"]
    assert block["compared"]["onnx"]["max_abs_diff"] == pytest.approx(1e-3, rel=0.01)


def test_run_exports_the_selected_snapshot(tmp_path: Path, tiny_config) -> None:
    cfg = tiny_config(train={"select_every": 1, "select_episodes": 2, "export_onnx": True})
    summary = train(cfg, tmp_path / "run")
    sel = summary["selection"]
    # t_end 0.5 of 4 updates: updates starting at progress >= 0.5 are 3 and 4
    assert [e["update"] for e in sel["evaluated"]] == [3, 4]
    chosen = [e for e in sel["evaluated"] if e["best"]]
    assert len(chosen) == 1 and sel["chosen_update"] == chosen[0]["update"]
    actor, meta = load_actor(tmp_path / "run" / "actor_compact.pt")
    assert meta["selected"]["update"] == chosen[0]["update"]
    assert meta["global_step"] == chosen[0]["step"] == 512 * chosen[0]["update"]
    sidecar = json.loads((tmp_path / "run" / "policy.json").read_text())["dsp_driving"]
    assert sidecar["selected"] == meta["selected"]
    assert sidecar["global_step"] == chosen[0]["step"]
    assert actor.mlp.hidden_sizes == chosen[0]["hidden"]
    # the saved actor is the chosen snapshot: it scores the entry's return on those seeds
    again = evaluate(actor.act, "CartPole-v1", 2, sel["seeds"][0])
    assert again["return_mean"] == pytest.approx(chosen[0]["return_mean"])
    gate = summary["gate"]
    assert gate["passed"] and set(gate["compared"]) == {"masked", "onnx"}
    assert (tmp_path / "run" / "policy.onnx").is_file()
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["gate"]["compared"]["onnx"]["agree"] is True


def test_selection_survives_a_resume(tmp_path: Path, tiny_config) -> None:
    run = tmp_path / "run"
    cfg = tiny_config(train={"select_every": 1, "select_episodes": 2, "total_steps": 1536})
    train(cfg, run)  # 3 updates: update 3 is evaluated
    saved = load_checkpoint(run)["selection"]
    assert [e["update"] for e in saved["history"]] == [3] and saved["best"] is not None
    summary = train(tiny_config(train={"total_steps": 2048}), run, resume=True)
    assert [e["update"] for e in summary["selection"]["evaluated"]] == [3, 4]
    # extended again to 16 updates: updates 3 and 4 now start before t_end (0.5) and drop out
    summary = train(tiny_config(train={"total_steps": 8192}), run, resume=True)
    evaluated = [e["update"] for e in summary["selection"]["evaluated"]]
    assert evaluated == list(range(9, 17)) and summary["selection"]["chosen_update"] >= 9


def test_selection_does_not_change_training(tmp_path: Path, tiny_config, stats_reader) -> None:
    train(tiny_config(), tmp_path / "plain")
    train(tiny_config(train={"select_every": 1, "select_episodes": 2}), tmp_path / "sel")
    keep = ("step", "losses", "actor", "ep_return_mean")
    a = [{k: r[k] for k in keep} for r in stats_reader(tmp_path / "plain")]
    b = [{k: r[k] for k in keep} for r in stats_reader(tmp_path / "sel")]
    assert a == b


def test_a_masked_network_that_disagrees_with_its_compaction_fails_the_gate(
        tmp_path: Path, tiny_config) -> None:
    run = tmp_path / "run"
    cfg = tiny_config(train={"select_every": 1, "select_episodes": 2, "export_onnx": True})
    runner = Runner.new(cfg, run)
    original = Runner.finish

    def corrupt_then_finish(self, on_export=None):
        # a mask that says "removed" for a neuron whose weights still act (the pruner forgot
        # to zero it): compaction drops a live neuron, so compact and masked drive apart
        self.selector.best.masks[0][0] = 0.0
        return original(self, on_export)

    runner.finish = corrupt_then_finish.__get__(runner)
    with pytest.raises(GateError, match="masked vs compact"):
        runner.learn()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["gate"]["passed"] is False
    assert not (run / "policy.onnx").exists()


def test_selection_seeds_must_not_overlap_evaluation(tiny_config) -> None:
    cfg = tiny_config(train={"select_every": 1, "select_seed": 1_000_005,
                             "eval_seed": 1_000_000, "eval_episodes": 10})
    with pytest.raises(ValueError, match="train.select_seed=1000005"):
        Runner.new(cfg, "/nonexistent/run")


def test_selection_with_too_few_updates_still_takes_the_last(tmp_path: Path, tiny_config
                                                              ) -> None:
    # 2 updates: neither starts at progress >= t_end (0.5 needs update 2 to start at 0.5; make
    # t_end 0.9): only the last is evaluated, and it is exported
    cfg = tiny_config(train={"select_every": 1, "select_episodes": 2, "total_steps": 1024},
                      pruning={"t_end": 0.9})
    summary = train(cfg, tmp_path / "run")
    assert [e["update"] for e in summary["selection"]["evaluated"]] == [2]
    assert summary["selection"]["chosen_update"] == 2


def test_an_onnx_file_that_drives_differently_is_rejected(tmp_path: Path, tiny_config) -> None:
    from dsp_driving.export import export_actor

    run = tmp_path / "run"
    runner = Runner.new(tiny_config(train={"export_onnx": True}), run)
    original = Runner.export

    def broken_export(self):
        # an exporter that writes another function: the compact actor with its first
        # output flipped (CartPole's argmax then always differs)
        path = original(self)
        actor, meta = load_actor(run / "actor_compact.pt")
        with torch.no_grad():
            actor.mlp.layers[-1].weight.mul_(-1)
            actor.mlp.layers[-1].bias.mul_(-1)
        export_actor(actor, meta, path)
        return path

    runner.export = broken_export.__get__(runner)
    with pytest.raises(GateError, match="onnx vs compact"):
        runner.learn()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["gate"]["passed"] is False and summary["gate"]["onnx_checked"] is True
    assert summary["gate"]["compared"]["masked"]["agree"] is True
    assert not (run / "policy.onnx").exists() and not (run / "policy.json").exists()
    assert (run / "policy.rejected.onnx").is_file() and (run / "policy.rejected.json").is_file()
