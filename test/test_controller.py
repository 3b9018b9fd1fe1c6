"""policy_node's ROS-free logic: input checks, watchdog, limits, hot reload (real ONNX files)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from dsp_driving.controller import PolicyController, load_policy
from dsp_driving.driving import contract
from dsp_driving.export import export_actor
from dsp_driving.inference import OnnxPolicy
from dsp_driving.modules.mlp import MLP
from dsp_driving.nodes.conversions import COMMAND_TOPICS, command_message
from dsp_driving.nodes.parameters import PolicyNodeConfig
from dsp_driving.policy_format import PolicyLoadError
from dsp_driving.rl.networks import ActionSpec, DeployedActor
from dsp_driving.rl.normalization import ObsNormalizer

pytest.importorskip("onnxscript")

from policy_samples import driving_policy, obs_at  # noqa: E402


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return driving_policy(tmp_path_factory.mktemp("policy") / "policy.onnx")


def test_fresh_input_drives_with_the_policy(policy_file: Path) -> None:
    policy = load_policy(policy_file)
    ctl = PolicyController(policy, PolicyNodeConfig().safety)
    assert ctl.set_observation(obs_at(), stamp_s=100.0) == ""
    decision = ctl.decide(now_s=100.1)
    expected = np.clip(policy.act(obs_at()), -1, 1)
    assert not decision.safe and decision.reason == ""
    np.testing.assert_allclose(decision.action, expected, atol=1e-6)
    assert decision.physical.steer_rad == pytest.approx(expected[0] * 0.5, abs=1e-6)


def test_no_input_and_stale_input_give_the_safe_command(policy_file: Path) -> None:
    cfg = PolicyNodeConfig(stale_timeout_s=0.3, safe_decel_mps2=3.0)
    ctl = PolicyController(load_policy(policy_file), cfg.safety)
    first = ctl.decide(0.0)
    assert first.safe and first.reason == "no_input"
    assert first.physical.accel_mps2 == pytest.approx(-3.0)
    assert first.physical.steer_rad == 0.0
    ctl.set_observation(obs_at(), stamp_s=10.0)
    driving = ctl.decide(10.2)
    assert not driving.safe
    stale = ctl.decide(10.31)
    assert stale.safe and stale.reason.startswith("stale")
    # Steering is held at the last command while braking.
    assert stale.action[0] == pytest.approx(driving.action[0])
    assert stale.physical.accel_mps2 == pytest.approx(-3.0)
    assert ctl.safe_commands == 2 and ctl.stale_commands == 1


@pytest.mark.parametrize("bad, why", [
    (np.full(contract.OBS_DIM, np.nan), "non-finite"),
    (np.r_[obs_at()[:-1], np.inf], "non-finite ['has_lead']"),
    (np.zeros(contract.OBS_DIM - 1), "19 values, expected 20"),
    (np.zeros(contract.OBS_DIM + 5), "25 values"),
    ("twenty", "not numeric"),
    ([[1, 2], [3]], "not numeric"),
])
def test_malformed_input_is_refused_and_voids_the_last_good_one(policy_file: Path, bad,
                                                                 why: str) -> None:
    ctl = PolicyController(load_policy(policy_file), PolicyNodeConfig().safety)
    ctl.set_observation(obs_at(), stamp_s=1.0)
    assert why in ctl.set_observation(bad, stamp_s=1.05)
    decision = ctl.decide(1.1)
    assert decision.safe and decision.reason == "rejected" and ctl.rejected == 1


def test_huge_values_are_clipped_like_training_and_commands_stay_in_limits(
        policy_file: Path) -> None:
    cfg = PolicyNodeConfig(max_steer_rad=0.3, max_accel_mps2=2.0, max_decel_mps2=4.0)
    ctl = PolicyController(load_policy(policy_file), cfg.safety)
    rng = np.random.default_rng(0)
    for i in range(300):
        obs = rng.normal(0, 1e6, contract.OBS_DIM)
        assert ctl.set_observation(obs, stamp_s=float(i)) == ""
        d = ctl.decide(float(i))
        assert np.all(np.isfinite(d.action)) and np.all(np.abs(d.action) <= 1.0)
        assert abs(d.physical.steer_rad) <= 0.3 + 1e-9
        assert -4.0 - 1e-9 <= d.physical.accel_mps2 <= 2.0 + 1e-9


def test_no_acceleration_at_max_speed(tmp_path: Path) -> None:
    eager = driving_policy(tmp_path / "eager.onnx", bias=(0.0, 50.0))  # always full throttle
    ctl = PolicyController(load_policy(eager), PolicyNodeConfig(max_speed_mps=20.0).safety)
    ctl.set_observation(obs_at(15.0), stamp_s=0.0)
    assert ctl.decide(0.0).physical.accel_mps2 == pytest.approx(3.0)
    ctl.set_observation(obs_at(20.0), stamp_s=0.0)
    assert ctl.decide(0.0).physical.accel_mps2 == 0.0


def test_hot_reload_validates_and_keeps_the_old_policy_on_a_bad_file(
        policy_file: Path, tmp_path: Path) -> None:
    ctl = PolicyController(load_policy(policy_file), PolicyNodeConfig().safety)
    old = ctl.policy
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(policy_file.read_bytes()[:500])
    assert ctl.reload(corrupt) != "" and ctl.policy is old
    assert ctl.reload(tmp_path / "missing.onnx") != "" and ctl.policy is old
    newer = driving_policy(tmp_path / "newer.onnx", seed=1, bias=(0.5, -0.5))
    assert ctl.reload(newer) == "" and ctl.policy is not old
    ctl.set_observation(obs_at(), 0.0)
    np.testing.assert_allclose(ctl.decide(0.0).action,
                               np.clip(OnnxPolicy(newer).act(obs_at()), -1, 1), atol=1e-6)
    assert (ctl.reloads, ctl.reloads_refused) == (1, 2)  # policy_node's status counts these


def test_ros_mode_builds_the_observation_with_the_training_code(policy_file: Path) -> None:
    """A scene in -> contract.observe(scene with the last commanded action) -> the policy."""
    ctl = PolicyController(load_policy(policy_file), PolicyNodeConfig(input_mode="ros").safety)
    path = contract.Path(np.array([[0.0, 0.0], [100.0, 0.0]]), lane_width=3.5,
                         speed_limit=25.0, left_width=1.75, right_width=5.25)
    scene = contract.Scene(contract.Ego(5.0, 0.4, 0.05, 12.0), path)
    assert ctl.set_scene(scene, stamp_s=0.0) == ""
    first = ctl.decide(0.0)
    assert ctl.speed_mps == 12.0
    ctl.set_scene(scene, stamp_s=0.1)
    second = ctl.decide(0.1)
    expected_obs = contract.observe(contract.Scene(scene.ego, path, (), tuple(first.action)))
    np.testing.assert_allclose(second.action, np.clip(ctl.policy.act(expected_obs), -1, 1),
                               atol=1e-6)
    assert expected_obs[contract.INDEX["lateral_offset"]] == pytest.approx(0.2)
    bad = contract.Scene(contract.Ego(float("nan"), 0.0, 0.0, 1.0), path)
    assert "non-finite" in ctl.set_scene(bad, stamp_s=0.2)
    assert ctl.decide(0.2).safe


def test_a_policy_for_another_task_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = ActionSpec("continuous", 1, np.full(1, -2, np.float32), np.full(1, 2, np.float32))
    actor = DeployedActor(ObsNormalizer(3), MLP(3, [4], 1), spec).eval()
    path, _, _ = export_actor(actor, {"env_id": "Pendulum-v1"}, tmp_path / "pendulum.onnx")
    with pytest.raises(PolicyLoadError, match=r"\[3\] -> \[1\].*Pendulum-v1"):
        load_policy(path)


def test_a_policy_is_checked_once_per_load(policy_file: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """policy_node's PolicyController(load_policy(path), ...) does one test forward, not two;
    a policy that did not come through load_policy is still checked by the controller."""
    probes: list[Path] = []
    act = OnnxPolicy.act
    monkeypatch.setattr(OnnxPolicy, "act", lambda self, obs: probes.append(self.path)
                        or act(self, obs))
    ctl = PolicyController(load_policy(policy_file), PolicyNodeConfig().safety)
    assert probes == [policy_file]
    newer = driving_policy(tmp_path / "newer.onnx", seed=1)
    assert ctl.reload(newer) == "" and probes == [policy_file, newer]  # a reload: one more
    probes.clear()
    PolicyController(OnnxPolicy(policy_file), PolicyNodeConfig().safety)  # not via load_policy
    assert probes == [policy_file]
    torch.manual_seed(0)
    spec = ActionSpec("continuous", 1, np.full(1, -2, np.float32), np.full(1, 2, np.float32))
    actor = DeployedActor(ObsNormalizer(3), MLP(3, [4], 1), spec).eval()
    other, _, _ = export_actor(actor, {"env_id": "Pendulum-v1"}, tmp_path / "pendulum.onnx")
    with pytest.raises(PolicyLoadError, match=r"\[3\] -> \[1\]"):  # never held unchecked
        PolicyController(OnnxPolicy(other), PolicyNodeConfig().safety)


@pytest.mark.parametrize("field, value, match", [
    ("input_mode", "camera", "input_mode='camera'"),
    ("command_interface", "can", "command_interface='can'"),
    ("rate_hz", 0.0, "rate_hz=0.0"),
    ("stale_timeout_s", float("nan"), "stale_timeout_s=nan"),
    ("safe_decel_mps2", 9.0, "safe_decel_mps2=9.0"),
])
def test_bad_parameters_name_the_field(field: str, value, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PolicyNodeConfig(**{field: value})


def test_a_clock_that_went_back_makes_the_input_stale(policy_file: Path) -> None:
    """A simulator reset under use_sim_time: the held input is "from the future"."""
    ctl = PolicyController(load_policy(policy_file), PolicyNodeConfig(stale_timeout_s=0.3).safety)
    ctl.set_observation(obs_at(10.0), 100.0)
    assert not ctl.decide(100.1).safe
    assert not ctl.decide(99.8).safe  # a small step back (NTP) is tolerated
    back = ctl.decide(5.0)
    assert back.safe and "clock went back" in back.reason and ctl.stale_commands == 1
    ctl.set_observation(obs_at(10.0), 5.05)  # a new input on the new clock drives again
    assert not ctl.decide(5.1).safe


class RecordNode:
    """What command_message needs of a node, with plain records for messages."""

    def msg_type(self, ros_type: str) -> Any:
        return SimpleNamespace

    def now_msg(self) -> Any:
        return SimpleNamespace(sec=1, nanosec=2)


@pytest.mark.parametrize("interface", sorted(COMMAND_TOPICS))
def test_each_command_is_converted_once(policy_file: Path, interface: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision carries the physical value of exactly the action published (float32),
    and the command message is built from it: contract.clip_action runs once per command."""
    calls = []
    clip = contract.clip_action
    monkeypatch.setattr(contract, "clip_action", lambda a: calls.append(1) or clip(a))
    cfg = PolicyNodeConfig(command_interface=interface, max_steer_rad=0.3)
    ctl = PolicyController(load_policy(policy_file), cfg.safety)
    ctl.set_observation(obs_at(), stamp_s=0.0)
    decisions = []
    for now in (0.0, 1.0):  # the policy's command, then the safe command (stale input)
        calls.clear()
        d = ctl.decide(now)
        command_message(RecordNode(), cfg, d, 10.0)
        assert len(calls) == 1
        assert d.action.dtype == np.float32
        assert d.physical == contract.to_physical(d.action, cfg.limits)  # bit for bit
        decisions.append(d)
    driving, safe = decisions
    assert not driving.safe and safe.safe and safe.action[0] == driving.action[0]


def test_the_controller_takes_only_its_safety_config() -> None:
    """The ROS-free controller decides with SafetyConfig (watchdog, safe braking, limits);
    policy_node derives it from its parameters, and it checks its own values."""
    from dsp_driving.controller import SafetyConfig

    cfg = PolicyNodeConfig(stale_timeout_s=0.2, safe_decel_mps2=2.0, max_decel_mps2=5.0)
    assert cfg.safety == SafetyConfig(0.2, 2.0, cfg.limits)
    with pytest.raises(ValueError, match="safe_decel_mps2=7.0: must be <= max_decel_mps2"):
        SafetyConfig(safe_decel_mps2=7.0)
    with pytest.raises(ValueError, match="stale_timeout_s=0.0"):
        SafetyConfig(stale_timeout_s=0.0)


def lead_obs(speed_mps: float, gap_m: float, closing_mps: float) -> np.ndarray:
    """obs_at with a lead ``gap_m`` ahead, closing at ``closing_mps`` (exact in float32 for
    the values used here)."""
    obs = obs_at(speed_mps)
    obs[contract.INDEX["has_lead"]] = 1.0
    obs[contract.INDEX["lead_gap"]] = gap_m / contract.GAP_RANGE_M
    obs[contract.INDEX["lead_relative_speed"]] = -closing_mps / contract.SPEED_SCALE_MPS
    return obs


def test_the_status_figures_follow_each_command_and_the_observation_it_came_from(
        policy_file: Path) -> None:
    """Every command is a step of ``drive``: TTC and headway where it was decided from a
    fresh observation, commanded jerk and steering rate over the control period always."""
    cfg = PolicyNodeConfig(rate_hz=20.0, stale_timeout_s=0.3)
    ctl = PolicyController(load_policy(policy_file), cfg.safety,
                           control_period_s=1.0 / cfg.rate_hz)
    decisions = [ctl.decide(0.0)]  # no input yet: the safe command, no observation
    ctl.set_observation(lead_obs(15.0, 12.5, 7.5), 0.0)  # TTC 1.667 s, headway 0.833 s
    decisions += [ctl.decide(0.05)]
    ctl.set_observation(lead_obs(15.0, 6.25, 7.5), 0.1)  # TTC 0.833 s
    decisions += [ctl.decide(0.1), ctl.decide(0.5)]  # then stale: no observation
    assert "non-finite" in ctl.set_observation(np.full(contract.OBS_DIM, np.nan), 0.55)
    decisions += [ctl.decide(0.6)]  # refused: no observation, and no crash
    assert [d.safe for d in decisions] == [True, False, False, True, True]
    f = ctl.drive.figures()
    assert f.window_s == 10.0 and f.control_period_s == 0.05
    assert (f.control_steps, f.observed_steps, f.lead_steps) == (5, 2, 2)
    assert f.min_ttc_s == 6.25 / 7.5 and f.ttc_below_pct == 50.0
    assert (f.min_headway_s, f.mean_speed_mps) == (6.25 / 15.0, 15.0)
    assert f.ttc_s is None and f.speed_mps is None  # the newest command had no observation
    accel = np.array([d.physical.accel_mps2 for d in decisions])
    steer = np.array([d.physical.steer_rad for d in decisions])
    assert f.jerk_max_mps3 == pytest.approx(np.abs(np.diff(accel)).max() / 0.05, rel=1e-12)
    assert f.jerk_p95_mps3 == pytest.approx(np.percentile(np.abs(np.diff(accel)) / 0.05, 95))
    assert f.steer_rate_max_rps == pytest.approx(np.abs(np.diff(steer)).max() / 0.05)
    assert f.jerk_max_mps3 > 0  # the policy's commands differ from the safe braking


def test_the_status_window_forgets_old_commands(policy_file: Path) -> None:
    ctl = PolicyController(load_policy(policy_file), PolicyNodeConfig().safety)
    for k in range(150):  # every 0.125 s (exact in binary) up to 18.625 s
        ctl.set_observation(lead_obs(15.0, 12.5 if k < 60 else 25.0, 7.5), 0.125 * k)
        ctl.decide(0.125 * k)
    f = ctl.drive.figures()  # the last 10 s: t in (8.625, 18.625], k = 70..149
    assert f.control_steps == 80 and f.control_period_s == 0.1  # the default, 10 Hz
    assert f.min_ttc_s == 25.0 / 7.5  # the 12.5 m gap was more than 10 s ago
