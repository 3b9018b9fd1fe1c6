"""Carla-v0 driven through the kinematic stand-in on a real OpenDRIVE road (no server).

The stand-in implements the same SimulatorBackend interface as the CARLA client backend, so
reset, step, the termination reasons, crash handling and actor bookkeeping are the env's own.
Lane -1 of test/data/two_lane_arc.xodr runs along y = -1.75 (REP-103) for x in [0, 100].
"""

from __future__ import annotations

import gc
import json
import math
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("carla")

from dsp_driving.driving.backend import Pose, SimulatorCrashed  # noqa: E402
from dsp_driving.driving.carla_config import CarlaConfig  # noqa: E402
from dsp_driving.driving.carla_env import CarlaDriveEnv, make_backend  # noqa: E402
from dsp_driving.driving.carla_map import load_xodr_map  # noqa: E402
from dsp_driving.driving.contract import (  # noqa: E402
    INDEX,
    OBS_DIM,
    observation_bounds,
    to_carla,
)
from dsp_driving.driving.kinematic import KinematicBackend  # noqa: E402
from dsp_driving.driving.ports import ServerPorts  # noqa: E402

XODR = str(Path(__file__).resolve().parents[1] / "data" / "two_lane_arc.xodr")
LANE_1 = (20.0, -1.75)  # lane -1, 80 m of straight ahead
LANE_2 = (20.0, -5.25)  # lane -2, the outer lane: its right edge is the road's edge


def config(**overrides) -> CarlaConfig:
    base = {"backend": "kinematic", "xodr_path": XODR, "npc_count": 4,
            "episode_length_s": 10.0, "route_length_m": 200.0,
            "control_period_s": 0.05}  # one tick per step unless a test says otherwise
    return CarlaConfig(**{**base, **overrides})


def env_with(crash_at_ticks=(), **overrides) -> tuple[CarlaDriveEnv, KinematicBackend]:
    cfg = config(**overrides)
    backend = KinematicBackend(load_xodr_map(XODR), dt_s=cfg.fixed_delta_seconds,
                               npc_speed_mps=cfg.npc_speed_mps, crash_at_ticks=crash_at_ticks)
    return CarlaDriveEnv(cfg, backend=backend), backend


def run(env: CarlaDriveEnv, action, limit: int = 1000) -> tuple[int, float, dict, bool, bool]:
    total = 0.0
    for n in range(1, limit + 1):
        _, reward, terminated, truncated, info = env.step(np.asarray(action, np.float32))
        total += reward
        if terminated or truncated:
            return n, total, info, terminated, truncated
    raise AssertionError(f"no episode end in {limit} steps")


def test_registered_and_lazy() -> None:
    import dsp_driving.driving.registry  # noqa: F401

    env = gym.make("dsp_driving/Carla-v0", config=config())
    inner = env.unwrapped
    assert isinstance(inner, CarlaDriveEnv)
    assert env.observation_space.shape == (OBS_DIM,) and env.action_space.shape == (2,)
    assert env.observation_space.dtype == np.float32
    assert len(inner.observation_names) == OBS_DIM and inner.action_names == ("steer", "accel")
    meta = json.loads(json.dumps(inner.policy_metadata(), allow_nan=False))
    assert meta["simulator"] == "carla" and meta["backend"] == "kinematic"
    assert meta["dt_s"] == 0.05 and meta["max_episode_steps"] == 200
    env.close()
    # Without kwargs: the CARLA backend, and nothing connects before the first reset.
    plain = gym.make("dsp_driving/Carla-v0").unwrapped
    assert plain.config == CarlaConfig() and plain._backend is None
    assert plain.ports == ServerPorts(2000, 2001, 2002, 8000)
    plain.close()


def test_server_index_picks_its_own_ports() -> None:
    env = CarlaDriveEnv(config(port=3000, tm_port=9000), server_index=2)
    assert env.ports == ServerPorts(3006, 3007, 3008, 9002)
    with pytest.raises(ValueError, match="server_index"):
        CarlaDriveEnv(config(), server_index=-1)


def test_reset_and_steps_stay_in_bounds_and_repeat_with_the_seed() -> None:
    low, high = observation_bounds()

    def rollout() -> bytes:
        env = CarlaDriveEnv(config(), backend="kinematic")
        obs, info = env.reset(seed=7)
        assert info["map"] == "two_lane_arc" and info["route_length_m"] > 40.0
        out = [obs]
        rng = np.random.default_rng(0)
        for _ in range(30):
            obs, reward, terminated, truncated, _ = env.step(rng.uniform(-0.2, 1.0, 2))
            assert np.isfinite(reward)
            out.append(obs)
            if terminated or truncated:
                break
        env.close()
        return np.stack(out).tobytes()

    first = rollout()
    stacked = np.frombuffer(first, np.float32).reshape(-1, OBS_DIM)
    assert np.all(stacked >= low) and np.all(stacked <= high)
    assert rollout() == first


def test_start_observation_on_the_lane_centre() -> None:
    env, _ = env_with(npc_count=0)
    obs, _ = env.reset(seed=0, options={"start": LANE_1})
    assert obs[INDEX["lateral_offset"]] == pytest.approx(0.0, abs=1e-5)
    assert obs[INDEX["cos_heading_error"]] == pytest.approx(1.0, abs=1e-6)
    assert obs[INDEX["left_edge_distance"]] == pytest.approx(0.175, abs=1e-5)
    assert obs[INDEX["right_edge_distance"]] == pytest.approx(0.525, abs=1e-5)
    assert obs[INDEX["has_lead"]] == 0.0
    env.close()


def test_time_limit_truncates_exactly() -> None:
    env, _ = env_with(npc_count=0, episode_length_s=1.0, initial_speed_mps=5.0)
    env.reset(seed=0, options={"start": LANE_1})
    n, _, info, terminated, truncated = run(env, [0.0, 0.0])
    assert (n, terminated, truncated, info["truncation"]) == (20, False, True, "time_limit")
    assert "termination" not in info
    env.close()


def test_route_end_truncates() -> None:
    env, _ = env_with(npc_count=0, initial_speed_mps=20.0, episode_length_s=60.0)
    env.reset(seed=0, options={"start": (60.0, 1.75)})  # oncoming lane 1: 60 m to its end
    n, _, info, terminated, truncated = run(env, [0.0, 0.0])
    assert (terminated, truncated, info["truncation"]) == (False, True, "route_end")
    assert n == 25  # 1 m per step; 60 - 1 (reset tick) - 25 < 35 m left on the route
    env.close()


def test_collision_terminates_with_the_penalty() -> None:
    env, backend = env_with(npc_count=0, npc_speed_mps=0.0, initial_speed_mps=15.0)
    obs, _ = env.reset(seed=0, options={"start": LANE_1, "npcs": [(45.0, -1.75)]})
    # One tick at reset moved the ego 0.75 m: gap 45 - 20.75 - 4.5 = 19.75 m, closing 15 m/s.
    assert obs[INDEX["has_lead"]] == 1.0
    assert obs[INDEX["lead_gap"]] == pytest.approx(19.75 / 100.0, abs=1e-4)
    assert obs[INDEX["lead_relative_speed"]] == pytest.approx(-15.0 / 30.0, abs=1e-5)
    assert obs[INDEX["inverse_ttc"]] == pytest.approx(15.0 / 19.75, abs=1e-4)
    n, _, info, terminated, _ = run(env, [0.0, 0.0])
    assert terminated and info["termination"] == "collision" and info["collisions"] == 1
    assert info["collision_with"] == ["vehicle.kinematic"]  # what was hit: the safety kind
    assert info["terminal"] == pytest.approx(10.0)
    assert n == 27  # contact once the gap (19.75 m) is covered at 0.75 m per step
    assert len(backend.live_actor_ids()) == 4  # ego, two sensors, one NPC
    env.close()


def test_safety_record_of_a_collision_and_of_a_finished_route() -> None:
    from dsp_driving.driving import safety

    env, _ = env_with(npc_count=0, npc_speed_mps=0.0, initial_speed_mps=15.0)
    rec = safety.recorder_for(env)
    obs, info = env.reset(seed=0, options={"start": LANE_1, "npcs": [(45.0, -1.75)]})
    # route_target_m: from where the ego stands (20 m of route behind it, plus the reset
    # tick's 0.75 m) to where the route_end truncation fires (35 m before the route's end)
    assert info["route_target_m"] == pytest.approx(info["route_length_m"] - 35.0 - 20.75,
                                                   abs=0.05)
    rec.reset(obs, info)
    done = False
    while not done:
        action = np.zeros(2, np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        rec.step(action, obs, reward, terminated, truncated, info)
        done = terminated or truncated
    record = rec.finish()
    assert record.outcome == safety.COLLISION and record.route_basis == "route"
    assert [i.kind for i in record.infractions] == [safety.COLLISION_VEHICLE]
    assert record.infractions[0].detail != "inferred"  # the env said what was hit
    # 27 steps of 0.75 m against the target: completion and the Leaderboard's 0.6 penalty
    assert record.route_completion == pytest.approx(27 * 0.75 / rec._route_target, rel=0.02)
    assert record.driving_score == pytest.approx(0.6 * record.route_completion)
    env.close()


@pytest.mark.parametrize("start, steer, lateral_sign", [(LANE_1, 1.0, 1), (LANE_2, -1.0, -1)])
def test_leaving_the_carriageway_terminates(start, steer, lateral_sign) -> None:
    env, _ = env_with(npc_count=0, initial_speed_mps=10.0)
    env.reset(seed=0, options={"start": start})
    invasions = 0
    for _ in range(200):
        _, _, terminated, truncated, info = env.step(np.array([steer, 0.0], np.float32))
        invasions += info["lane_invasions"]
        if terminated or truncated:
            break
    assert terminated and info["termination"] == "off_road"
    assert lateral_sign * info["lateral_offset_m"] > 1.75  # past the edge 1.75 m off centre
    assert invasions == 1  # the centre line (lane 1) or the road edge, crossed once
    env.close()


def test_more_progress_more_reward() -> None:
    returns = []
    for accel in (1.0, -1.0):
        env, _ = env_with(npc_count=0, initial_speed_mps=5.0)
        env.reset(seed=0, options={"start": LANE_1})
        returns.append(sum(env.step(np.array([0.0, accel], np.float32))[1] for _ in range(20)))
        env.close()
    # Progress / (25 m/s * 0.05 s) on the lane centre minus 0.05 * (accel change)^2 once.
    # Throttle: 5 m/s + 3 m/s^2 for 1 s -> 6.5 m -> 5.2 - 0.05. Brake: 6 m/s^2 stops the
    # car in 2.085 m (trapezoids over 17 steps) -> 1.668 - 0.05.
    assert returns == pytest.approx([5.15, 1.618], abs=1e-6)


def test_a_crash_in_step_escapes_and_the_env_stays_down() -> None:
    env, backend = env_with(crash_at_ticks={5})
    env.reset(seed=1)  # tick 1
    first_ids = backend.live_actor_ids()
    assert len(first_ids) == 3 + 4  # ego + collision + lane-invasion sensors, 4 NPCs
    for _ in range(3):  # ticks 2, 3, 4
        assert not env.step(np.zeros(2, np.float32))[3]
    with pytest.raises(SimulatorCrashed, match="injected at tick 5"):
        env.step(np.zeros(2, np.float32))
    # No restart in the process: the recovery is a new process (train.vector_mode=ray).
    assert (backend.restarts, backend.starts) == (0, 1)
    assert sorted(backend.lost) == sorted(first_ids) and backend.destroyed == []
    for call in (lambda: env.step(np.zeros(2, np.float32)), lambda: env.reset(seed=2)):
        with pytest.raises(SimulatorCrashed, match="crashed earlier .*injected at tick 5"):
            call()
    assert (backend.restarts, backend.starts, backend.ticks) == (0, 1, 5)
    env.close()
    assert backend.destroyed == [] and not backend.started


def test_positive_steer_turns_the_stand_in_left_at_the_bicycle_yaw_rate() -> None:
    backend = KinematicBackend(load_xodr_map(XODR), dt_s=0.05, wheelbase_m=2.8)
    backend.start()
    backend.spawn_ego(Pose(20.0, -1.75, 0.0, 0.0), speed_mps=10.0)
    control = to_carla((0.5, 0.0))  # 0.5 * max_steer_rad 0.5 = 0.25 rad road-wheel, left
    assert control.steer == pytest.approx(-0.25 / math.radians(70.0))  # CARLA steer: + right
    backend.apply_control(control)
    backend.tick()
    ego = backend.ego_state()
    # Kinematic bicycle: yaw rate = v tan(delta) / L = 10 tan(0.25) / 2.8 = 0.911935 rad/s.
    assert ego.yaw_rate == pytest.approx(0.9119354329, abs=1e-9)
    assert ego.yaw == pytest.approx(0.0455967716, abs=1e-9)  # CCW, REP-103's left
    # Midpoint heading 0.022798 rad over 0.5 m: y grows (left), x advances 0.49987 m.
    assert (ego.x, ego.y) == pytest.approx((20.4998700640, -1.7386017945), abs=1e-9)


def test_a_crash_in_reset_escapes() -> None:
    env, backend = env_with(crash_at_ticks={1})
    with pytest.raises(SimulatorCrashed, match="injected at tick 1"):
        env.reset(seed=0)
    assert (backend.restarts, env.episodes) == (0, 0)  # the crashed attempt is no episode
    with pytest.raises(SimulatorCrashed, match="crashed earlier"):
        env.reset(seed=0)
    env.close()


def test_old_max_restarts_is_accepted_and_unused() -> None:
    with pytest.warns(UserWarning, match="carla.max_restarts=0 is no longer used"):
        env, _ = env_with(crash_at_ticks={2}, max_restarts=0)
    env.reset(seed=0)
    with pytest.raises(SimulatorCrashed):
        env.step(np.zeros(2, np.float32))
    env.close()


def test_kinematic_envs_may_share_a_process_carla_ones_may_not() -> None:
    first, second = env_with()[0], env_with()[0]  # the kinematic backend is exempt
    carla_env = CarlaDriveEnv(CarlaConfig())  # nothing connects before reset
    try:
        with pytest.raises(ValueError, match="train.vector_mode=ray"):
            CarlaDriveEnv(CarlaConfig(), server_index=1)
        first.reset(seed=0)
        second.reset(seed=0)
    finally:
        for env in (first, second, carla_env):
            env.close()
    CarlaDriveEnv(CarlaConfig()).close()  # closed: the next one may be made


def test_actors_replaced_every_episode_and_world_reloaded_every_n() -> None:
    env, backend = env_with(reload_every_episodes=2, npc_count=3)
    seen: set[int] = set()
    for seed in range(5):
        env.reset(seed=seed)
        ids = backend.live_actor_ids()
        assert len(ids) == 3 + 3 and not ids & seen
        seen |= ids
    assert backend.reloads == 2  # before episodes 3 and 5
    env.close()
    assert backend.live_actor_ids() == frozenset()


def test_make_backend_builds_the_kinematic_stand_in() -> None:
    backend = make_backend(config(fixed_delta_seconds=0.1, control_period_s=0.1))
    assert isinstance(backend, KinematicBackend) and backend.dt_s == 0.1
    with pytest.raises(ValueError, match="OpenDRIVE file not found"):
        make_backend(config(xodr_path="/nonexistent/road.xodr"))


def test_vector_env_slots_get_their_own_server_ports():
    """make_vec_env gives Carla-v0 slot i server_index=i: no two slots share a port."""
    from dsp_driving.rl.envs import make_vec_env

    kwargs = {"config": config(npc_count=0).to_dict()}  # kinematic: may share a process
    envs = make_vec_env("dsp_driving/Carla-v0", 3, mode="sync", env_kwargs=kwargs)
    try:
        ports = [env.unwrapped.ports for env in envs.envs]
    finally:
        envs.close()
    used = [p for slot in ports for p in (slot.rpc, slot.streaming, slot.secondary, slot.tm)]
    assert len(set(used)) == 12


def test_sync_vector_mode_refuses_several_carla_envs_in_one_process():
    from dsp_driving.driving import carla_env
    from dsp_driving.rl.envs import make_vec_env

    try:
        with pytest.raises(ValueError, match="train.vector_mode=ray"):
            make_vec_env("dsp_driving/Carla-v0", 2, mode="sync")
    finally:  # the first slot's env, made before the second failed
        gc.collect()
        for env in list(carla_env._LIVE_CARLA_ENVS):
            env.close()
    assert len(carla_env._LIVE_CARLA_ENVS) == 0


def test_control_period_holds_the_action_for_whole_ticks() -> None:
    """control_period_s=0.2 over 0.05 s ticks: 4 ticks per step, reward per 0.2 s."""
    env, backend = env_with(control_period_s=0.2, npc_count=0, initial_speed_mps=10.0)
    env.reset(seed=0, options={"start": LANE_1})
    ticks = backend.ticks
    _, reward, _, _, info = env.step(np.zeros(2, np.float32))
    assert backend.ticks - ticks == 4
    # About 10 m/s * 0.2 s along the lane centre; reward = progress / (limit * 0.2 s).
    assert info["progress_m"] == pytest.approx(2.0, rel=0.05)
    assert reward == pytest.approx(info["progress_m"] / (25.0 * 0.2), rel=1e-3)
    assert env.unwrapped.policy_metadata()["control_period_s"] == 0.2
    env.close()


def test_a_training_run_carries_its_carla_settings_in_its_config(tmp_path: Path) -> None:
    """`dsp-driving train` on Carla-v0 (kinematic stand-in): the bridge settings live in the
    run's train.env_kwargs (config.yaml, checkpoint, the exported actor's metadata), and the
    evaluation and a resume use them; no process-wide variable is involved."""
    import yaml

    from dsp_driving.cli import main
    from dsp_driving.trainer import load_checkpoint

    carla_yaml = tmp_path / "carla.yaml"
    carla_yaml.write_text(yaml.safe_dump({"backend": "kinematic", "xodr_path": XODR,
                                          "npc_count": 2, "episode_length_s": 4.0}))
    run = tmp_path / "run"
    sets = ["--set", "ppo.num_steps=32", "--set", "ppo.num_minibatches=2",
            "--set", "ppo.update_epochs=1", "--set", "train.eval_episodes=1",
            "--set", "train.tensorboard=false", "--set", "train.progress=false",
            "--set", "train.export_onnx=false", "--set", "net.actor_hidden=[8,8]",
            "--set", "net.critic_hidden=[8,8]"]
    assert main(["train", "--env", "dsp_driving/Carla-v0", "--num-envs", "1",
                 "--total-steps", "64", "--seed", "3", "--out", str(run), "--no-bag",
                 "--carla-config", str(carla_yaml), "--carla-port", "2300", *sets]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())["train"]["env_kwargs"]
    assert saved["config"]["backend"] == "kinematic" and saved["config"]["port"] == 2300
    assert load_checkpoint(run)["config"]["train"]["env_kwargs"] == saved
    assert not (run / "carla.yaml").exists()
    assert "DSP_DRIVING_CARLA_CONFIG" not in os.environ
    assert main(["train", "--resume", str(run), "--total-steps", "96", "--no-bag"]) == 0
    resumed = load_checkpoint(run)["config"]["train"]
    assert resumed["env_kwargs"] == saved and resumed["total_steps"] == 96
