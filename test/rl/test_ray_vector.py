"""train.vector_mode=ray on a real local Ray: the same rollouts and training as sync, and
supervision (a killed, hung or crashed env actor is replaced; the run goes on, the counts hold).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path
import signal
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ray import cloudpickle  # noqa: E402  (Ray's own copy pickles the tasks)

from dsp_driving.config import from_dict  # noqa: E402
from dsp_driving.driving.backend import SimulatorCrashed  # noqa: E402
from dsp_driving.rl.envs import make_vec_env  # noqa: E402
from dsp_driving.rl.ppo import PPO  # noqa: E402
from dsp_driving.rl.ray_vector import EnvCrashed, RayVectorEnv  # noqa: E402

# the fault-injecting env below is shipped to the actors by value (this module is not
# importable in a Ray worker)
cloudpickle.register_pickle_by_value(sys.modules[__name__])

XODR = str(Path(__file__).resolve().parents[1] / "data" / "two_lane_arc.xodr")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (logical CPUs: the actors mostly wait)."""
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


class FaultyEnv(gym.Env):
    """CartPole that, at step ``at`` of its first life (a file marks it), raises ``error`` or
    sleeps ``hang_s``; a replacement process finds the marker and behaves."""

    def __init__(self, marker: str, at: int, error: str = "", hang_s: float = 0.0) -> None:
        self.env = gym.make("CartPole-v1")
        self.observation_space, self.action_space = (self.env.observation_space,
                                                     self.env.action_space)
        self.marker, self.at, self.error, self.hang_s = Path(marker), at, error, hang_s
        self.steps = 0

    def reset(self, *, seed=None, options=None):
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        self.steps += 1
        if self.steps == self.at and (self.error == "bug" or not self.marker.exists()):
            self.marker.touch()
            if self.error == "crash":
                raise SimulatorCrashed("test: the simulator stopped answering")
            if self.error == "bug":
                raise ValueError("test: a bug in the env")
            import time

            time.sleep(self.hang_s)
        return self.env.step(action)


def faulty(tmp_path: Path, n: int, **kwargs) -> list:
    return [functools.partial(FaultyEnv, str(tmp_path / f"marker{i}"), **kwargs)
            for i in range(n)]


def rollout(envs: gym.vector.VectorEnv, actions: np.ndarray, seed: int) -> list:
    out = [envs.reset(seed=seed)[0]]
    for a in actions:
        obs, reward, terminated, truncated, info = envs.step(a)
        out += [obs, reward, terminated, truncated]
        if "final_obs" in info:
            out += [o for o in info["final_obs"] if o is not None]
    return out


def test_ray_rollouts_equal_sync_and_async_on_the_kinematic_carla_stand_in(local_ray) -> None:
    pytest.importorskip("carla")
    kwargs = {"config": {"backend": "kinematic", "xodr_path": XODR, "npc_count": 3,
                         "episode_length_s": 4.0, "route_length_m": 120.0}}
    actions = np.random.default_rng(0).uniform(-1, 1, (60, 2, 2)).astype(np.float32)
    runs = {}
    for mode in ("sync", "async", "ray"):
        envs = make_vec_env("dsp_driving/Carla-v0", 2, mode, kwargs)
        try:
            runs[mode] = rollout(envs, actions, seed=7)
        finally:
            envs.close()
    assert len(runs["ray"]) == len(runs["sync"]) > 240  # episodes ended (final_obs) too
    for mode in ("async", "ray"):
        for a, b in zip(runs["sync"], runs[mode]):
            np.testing.assert_array_equal(a, b)


def test_three_modes_train_identically_on_highway(tmp_path: Path) -> None:
    """The issue's command: the same stats.jsonl returns and losses in every vector mode."""
    pytest.importorskip("highway_env")
    stats = {}
    for mode in ("sync", "async", "ray"):
        out = tmp_path / mode
        subprocess.run([sys.executable, "-m", "dsp_driving", "train", "--env",
                        "dsp_driving/HighwayDrive-v0", "--num-envs", "2", "--seed", "3",
                        "--total-steps", "2048", "--out", str(out), "--no-bag",
                        "--set", f"train.vector_mode={mode}", "--set", "train.progress=false",
                        "--set", "train.tensorboard=false", "--set", "train.select_every=0",
                        "--set", "train.eval_episodes=1", "--set", "train.export_onnx=false"],
                       check=True, capture_output=True, timeout=600)
        stats[mode] = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert len(stats["sync"]) >= 2
    assert stats["sync"][-1]["step"] == 2048
    for mode in ("async", "ray"):
        assert [r["step"] for r in stats[mode]] == [r["step"] for r in stats["sync"]]
        assert [r["ep_return_mean"] for r in stats[mode]] == \
            [r["ep_return_mean"] for r in stats["sync"]]
        assert [r["losses"] for r in stats[mode]] == [r["losses"] for r in stats["sync"]]
    assert any(r["ep_return_mean"] is not None for r in stats["sync"])


def test_a_killed_env_actor_mid_rollout_is_replaced_and_training_goes_on(
        local_ray, tiny_config, caplog: pytest.LogCaptureFixture) -> None:
    cfg = tiny_config(train={"vector_mode": "ray", "num_envs": 2, "total_steps": 768})
    envs = make_vec_env("CartPole-v1", 2, "ray", ray_options={"step_timeout_s": 30})
    assert isinstance(envs, RayVectorEnv)
    learner = PPO(cfg, envs)
    pids = envs.worker_pids()
    calls = {"n": 0}
    step = envs.step

    def killing_step(actions):  # the 50th step of the third rollout: env 1's process dies
        calls["n"] += 1
        if calls["n"] == 2 * 128 + 50:
            os.kill(pids[1], signal.SIGKILL)
            result = step(actions)
            calls["result"] = [x.copy() for x in result]  # PPO adds bootstraps in place
            return result
        return step(actions)

    envs.step = killing_step
    try:
        with caplog.at_level(logging.WARNING, logger="dsp_driving.rl.ray_vector"):
            for _ in range(3):
                learner.step_update()
        new_pids = envs.worker_pids()
    finally:
        envs.close()
    assert calls["n"] == 3 * 128 and envs.restarts == 1
    assert new_pids[0] == pids[0] and new_pids[1] not in pids  # only env 1 was replaced
    assert "env 1: its process died during step" in caplog.text
    _, reward, terminated, truncated, info = calls["result"]  # the step of the kill
    assert truncated[1] and not terminated[1] and reward[1] == 0.0
    assert info["final_info"]["env_restarted"][1]
    # the third rollout holds that step once, at its place, as the end of env 1's episode
    assert learner.buf_dones[49, 1] == 1.0
    assert learner.buf_rewards.shape == (128, 2)
    # the cut episode is not reported as an episode's return
    assert all(r >= 8 for r in learner.episode_returns)  # CartPole: 8+ steps of reward 1


def test_a_kill_truncates_the_episode_with_the_last_observation(local_ray) -> None:
    envs = RayVectorEnv(faulty(Path("/nonexistent"), 2, at=10**9), step_timeout_s=30)
    try:
        obs, _ = envs.reset(seed=1)
        last = obs.copy()
        os.kill(envs.worker_pids()[0], signal.SIGKILL)
        obs, reward, terminated, truncated, info = envs.step(np.array([0, 0]))
    finally:
        envs.close()
    assert truncated.tolist() == [True, False] and terminated.tolist() == [False, False]
    assert reward[0] == 0.0
    np.testing.assert_array_equal(info["final_obs"][0], last[0])
    assert info["final_info"]["env_restarted"][0]
    assert info["_final_obs"].tolist() == [True, False]
    assert np.all(np.abs(obs[0]) <= 0.05)  # a new CartPole episode starts near upright


def test_a_hung_env_is_replaced_after_the_watchdog(local_ray, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    # 2 s for a step; starting the actors and resets keep env_reset_timeout_s
    envs = RayVectorEnv(faulty(tmp_path, 2, at=3, hang_s=3600.0), step_timeout_s=2.0)
    try:
        envs.reset(seed=0)
        with caplog.at_level(logging.WARNING, logger="dsp_driving.rl.ray_vector"):
            for _ in range(4):
                _, _, _, truncated, _ = envs.step(np.array([1, 1]))
                if truncated.all():
                    break
    finally:
        envs.close()
    assert truncated.tolist() == [True, True]  # both hung at their third step
    assert envs.restarts == 2
    assert "no answer to step within train.env_step_timeout_s=2.0" in caplog.text


def test_a_simulator_crash_restarts_the_env_and_a_bug_is_raised(local_ray,
                                                               tmp_path: Path) -> None:
    envs = RayVectorEnv(faulty(tmp_path, 1, at=2, error="crash"), step_timeout_s=30)
    try:
        envs.reset(seed=0)
        envs.step(np.array([0]))
        _, _, _, truncated, info = envs.step(np.array([0]))
        assert truncated.tolist() == [True] and envs.restarts == 1
        assert "simulator crashed" in info["final_info"]["reason"][0]
    finally:
        envs.close()
    (tmp_path / "bug").mkdir()
    envs = RayVectorEnv(faulty(tmp_path / "bug", 1, at=1, error="bug"), step_timeout_s=30)
    try:
        envs.reset(seed=0)
        with pytest.raises(ValueError, match="a bug in the env"):
            envs.step(np.array([0]))
        assert envs.restarts == 0
    finally:
        envs.close()


def test_an_env_that_keeps_failing_stops_training_with_its_name(local_ray,
                                                                tmp_path: Path) -> None:
    class AlwaysCrashes(FaultyEnv):
        def step(self, action):
            raise SimulatorCrashed("test: down for good")

    fns = [functools.partial(AlwaysCrashes, str(tmp_path / "m"), 1)]
    envs = RayVectorEnv(fns, step_timeout_s=30, max_restarts=2)
    try:
        envs.reset(seed=0)
        with pytest.raises(EnvCrashed, match=r"env 0 failed 3 times in a row "
                                             r"\(train.env_max_restarts=2\)"):
            # each step fails; each replacement resets fine: the third step is one too many
            for _ in range(5):
                envs.step(np.array([0]))
    finally:
        envs.close()


class CrashesOnReset(FaultyEnv):
    """Ends its first episode at step 2 (terminated, reward -5); its next reset crashes."""

    def step(self, action):
        obs, _, _, truncated, info = self.env.step(action)
        self.steps += 1
        return obs, -5.0, self.steps == 2, truncated, info

    def reset(self, *, seed=None, options=None):
        if self.steps == 2 and not self.marker.exists():
            self.marker.touch()
            raise SimulatorCrashed("test: down during the reset")
        return self.env.reset(seed=seed, options=options)


def test_a_crash_in_the_reset_after_an_episode_keeps_its_last_transition(
        local_ray, tmp_path: Path) -> None:
    envs = RayVectorEnv([functools.partial(CrashesOnReset, str(tmp_path / "m"), 0)],
                        step_timeout_s=30)
    try:
        envs.reset(seed=0)
        envs.step(np.array([0]))
        obs, reward, terminated, truncated, info = envs.step(np.array([0]))
    finally:
        envs.close()
    # the real transition: terminated with its reward, final_obs the env's own last one
    assert terminated.tolist() == [True] and truncated.tolist() == [False]
    assert reward.tolist() == [-5.0] and envs.restarts == 1
    assert "env_restarted" not in info["final_info"]
    assert not np.array_equal(info["final_obs"][0], obs[0])


def test_env_actors_start_inside_a_ray_tune_trials_placement_group(local_ray) -> None:
    """A trial's placement group (one CPU) captures child tasks by default; the env actors
    must be placed outside it (dsp-driving sweep runs trials like this)."""
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    group = placement_group([{"CPU": 1}])
    ray.get(group.ready(), timeout=60)

    def trial() -> float:
        envs = make_vec_env("CartPole-v1", 2, "ray", ray_options={"step_timeout_s": 30,
                                                                  "reset_timeout_s": 30})
        try:
            envs.reset(seed=0)
            return float(envs.step(np.array([0, 1]))[1].sum())
        finally:
            envs.close()

    inside = PlacementGroupSchedulingStrategy(group, placement_group_capture_child_tasks=True)
    run = ray.remote(trial).options(num_cpus=1, scheduling_strategy=inside)
    try:
        assert ray.get(run.remote(), timeout=120) == 2.0
    finally:
        remove_placement_group(group)


def broken_env() -> gym.Env:
    raise ValueError("test: no such map")


def test_an_env_that_cannot_be_made_is_an_error_not_a_restart(local_ray) -> None:
    with pytest.raises(RuntimeError, match="(?s)env 0 could not be made.*no such map"):
        RayVectorEnv([broken_env], step_timeout_s=30)


def test_ray_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="train.vector_mode.*'ray'"):
        from_dict({"train": {"vector_mode": "threads"}})
    with pytest.raises(ValueError, match="train.env_step_timeout_s"):
        from_dict({"train": {"env_step_timeout_s": 0}})
    with pytest.raises(ValueError, match="train.env_reset_timeout_s"):
        from_dict({"train": {"env_reset_timeout_s": -1}})
    with pytest.raises(ValueError, match="train.env_max_restarts"):
        from_dict({"train": {"env_max_restarts": -1}})
    with pytest.raises(ValueError, match="train.env_num_gpus"):
        from_dict({"train": {"env_num_gpus": -1}})


def test_carla_runs_default_to_one_process_per_env() -> None:
    from dsp_driving.cli.train import _one_process_per_server

    def cfg(env: str, backend: str = "carla", mode: str = "sync"):
        config = {"backend": backend, "xodr_path": XODR if backend == "kinematic" else ""}
        kwargs = {"config": config} if env.endswith("Carla-v0") else {}
        return from_dict({"train": {"env_id": env, "vector_mode": mode,
                                    "env_kwargs": kwargs}})

    assert _one_process_per_server(cfg("dsp_driving/Carla-v0"), [])
    assert not _one_process_per_server(cfg("dsp_driving/Carla-v0"), ["train.vector_mode=sync"])
    assert not _one_process_per_server(cfg("dsp_driving/Carla-v0", "kinematic"), [])
    assert not _one_process_per_server(cfg("dsp_driving/Carla-v0", mode="async"), [])
    assert not _one_process_per_server(cfg("dsp_driving/HighwayDrive-v0"), [])


def test_carla_backend_training_in_the_trainers_process_is_refused(tmp_path: Path) -> None:
    from dsp_driving.trainer import train

    cfg = from_dict({"train": {"env_id": "dsp_driving/Carla-v0", "vector_mode": "sync",
                               "env_kwargs": {"config": {"backend": "carla"}}}})
    with pytest.raises(ValueError, match="train.vector_mode='sync'.*carla backend"):
        train(cfg, tmp_path / "run")
    cfg = from_dict({"train": {"env_id": "dsp_driving/Carla-v0", "vector_mode": "ray",
                               "env_reset_timeout_s": 100,
                               "env_kwargs": {"config": {"backend": "carla",
                                                         "startup_timeout_s": 120}}}})
    with pytest.raises(ValueError, match=r"train.env_reset_timeout_s=100.*must be > "
                                         r"carla.startup_timeout_s=120"):
        train(cfg, tmp_path / "run2")
