"""The embedded driving task: highway-env behind the contract (real highway-env episodes)."""

from __future__ import annotations

import functools
import json

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("highway_env")

from dsp_driving.driving import contract  # noqa: E402
from dsp_driving.driving.highway import HighwayDriveEnv  # noqa: E402
from dsp_driving.rl.envs import describe_env, make_env, make_vec_env  # noqa: E402

IDX = contract.INDEX


def _run(env: gym.Env, action, steps: int, seed: int = 0):
    obs, _ = env.reset(seed=seed)
    observations, rewards, infos = [obs], [], []
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(np.asarray(action, np.float32))
        observations.append(obs)
        rewards.append(reward)
        infos.append(info)
        if terminated or truncated:
            break
    return np.array(observations), np.array(rewards), infos


@pytest.mark.parametrize("env_id", ["dsp_driving/HighwayDrive-v0", "dsp_driving/TrackDrive-v0"])
def test_episodes_have_finite_in_bound_observations(env_id):
    env = make_env(env_id)
    rng = np.random.default_rng(0)
    lengths = []
    for episode in range(2):
        obs, _ = env.reset(seed=episode)
        assert obs.shape == (contract.OBS_DIM,) and obs.dtype == np.float32
        steps = 0
        while steps < 400:
            action = rng.uniform(-0.3, 0.3, 2).astype(np.float32)
            obs, reward, terminated, truncated, info = env.step(action)
            steps += 1
            assert env.observation_space.contains(obs), obs
            assert np.isfinite(reward)
            if terminated or truncated:
                break
        lengths.append(steps)
    env.close()
    assert max(lengths) <= 150  # 30 s at 5 Hz: the time limit truncates


def test_reset_scene_on_the_lane_centre_with_road_edges():
    env = HighwayDriveEnv(vehicles_count=1)
    obs, _ = env.reset(seed=3)
    scene = env.scene
    lane_id = env._sim.vehicle.lane_index[2]
    assert obs[IDX["lateral_offset"]] == pytest.approx(0.0, abs=1e-6)
    assert obs[IDX["sin_heading_error"]] == pytest.approx(0.0, abs=1e-6)
    assert scene.path.lane_width == pytest.approx(4.0)
    # 3 lanes of 4 m; lane 0 is the leftmost (highway-env draws it at the top, y down).
    assert scene.path.left_width == pytest.approx(2.0 + 4.0 * lane_id)
    assert scene.path.right_width == pytest.approx(2.0 + 4.0 * (2 - lane_id))
    assert scene.path.speed_limit == pytest.approx(30.0)
    assert obs[IDX["speed"]] == pytest.approx(scene.ego.speed / contract.SPEED_SCALE_MPS)
    env.close()


def test_positive_steer_turns_left():
    """REP-103 end to end: steer + is left, so the lateral offset and the yaw rate grow +."""
    env = HighwayDriveEnv(vehicles_count=1)
    obs, _, _ = _run(env, [0.05, 0.0], 3, seed=1)  # small: stays in its lane
    assert obs[-1][IDX["yaw_rate"]] > 0.05
    assert obs[-1][IDX["lateral_offset"]] > obs[0][IDX["lateral_offset"]] + 0.05
    assert obs[-1][IDX["sin_heading_error"]] > 0.05
    # The path ahead is now to the right of the ego's nose.
    assert obs[-1][IDX["path_lateral_10m"]] < 0
    env.close()


def test_more_progress_earns_more_reward():
    env = HighwayDriveEnv(vehicles_count=1)
    _, cruise, infos_cruise = _run(env, [0.0, 0.0], 30, seed=2)
    _, brake, infos_brake = _run(env, [0.0, -1.0], 30, seed=2)
    progress_cruise = sum(i["progress_m"] for i in infos_cruise)
    progress_brake = sum(i["progress_m"] for i in infos_brake)
    assert len(cruise) == len(brake) == 30
    assert progress_cruise > progress_brake + 50.0
    assert cruise.sum() > brake.sum() + 1.0
    # Cruising at 25 m/s under the 30 m/s limit, on the lane centre: reward = 25/30 per step.
    assert cruise[3] == pytest.approx(25.0 / 30.0, rel=0.02)
    # Braking to a stop never reverses the car.
    assert infos_brake[-1]["speed_mps"] == pytest.approx(0.0, abs=1e-6)
    env.close()


def test_leaving_the_road_terminates_with_the_penalty():
    env = HighwayDriveEnv(vehicles_count=1)
    _, rewards, infos = _run(env, [1.0, 0.0], 100, seed=0)
    assert infos[-1]["termination"] == "off_road"
    assert infos[-1]["terminal"] == pytest.approx(10.0)
    assert rewards[-1] < -9.0
    env.close()


def test_leaving_the_road_to_the_right_names_the_reason():
    env = HighwayDriveEnv(vehicles_count=1)
    _, _, infos = _run(env, [-1.0, 0.0], 100, seed=0)
    assert infos[-1]["termination"] == "off_road"
    # The centre crossed the right edge of the rightmost lane (half a 4 m lane right of it).
    assert infos[-1]["lateral_offset_m"] < -2.0
    assert env.scene.path.right_width == pytest.approx(2.0)
    env.close()


def test_same_seed_same_episode_bytes():
    env = HighwayDriveEnv()
    first = _run(env, [0.1, 0.2], 30, seed=5)
    again = _run(env, [0.1, 0.2], 30, seed=5)
    other = _run(env, [0.1, 0.2], 30, seed=6)
    assert first[0].tobytes() == again[0].tobytes()
    assert first[1].tobytes() == again[1].tobytes()
    assert first[0].shape != other[0].shape or first[0].tobytes() != other[0].tobytes()
    env.close()


def test_track_path_runs_forward_across_lane_segments():
    """TrackDrive's path follows the next lanes around the curves without stepping back."""
    env = HighwayDriveEnv(variant="track")
    from dsp_driving.driving.reference import reference_action

    roads = set()
    for seed in (0, 1):
        obs, _ = env.reset(seed=seed)
        for _ in range(60):
            points = env.scene.path.points
            seg = np.diff(points, axis=0)
            length = np.linalg.norm(seg, axis=1)
            turn = np.einsum("ij,ij->i", seg[:-1], seg[1:]) / (length[:-1] * length[1:])
            assert length.max() < 2.6 and turn.min() > 0.9  # no fold-back at a lane joint
            assert np.sum(length) > 100.0  # reaches the lead-vehicle search range
            roads.add(env._sim.vehicle.lane_index[:2])
            speed = env.scene.ego.speed
            obs, _, terminated, truncated, info = env.step(reference_action(obs, 1.5))
            assert not (terminated or truncated)
            # Progress is what the car drove (no jump onto a far part of the loop).
            assert info["progress_m"] <= 0.2 * max(speed, info["speed_mps"]) + 0.3
    assert len(roads) >= 3  # the episodes crossed several road segments (straights and arcs)
    env.close()


def test_collision_terminates_with_the_penalty():
    env = HighwayDriveEnv(vehicles_count=1)
    env.reset(seed=0)
    ego = env._sim.vehicle
    other = next(v for v in env._sim.road.vehicles if v is not ego)
    other.position = ego.position + np.array([8.0, 0.0])  # stopped, 8 m ahead in our lane
    other.heading, other.speed, other.target_speed = ego.heading, 0.0, 0.0
    for _ in range(10):
        _, reward, terminated, truncated, info = env.step(np.array([0.0, 1.0], np.float32))
        if terminated:
            break
    assert terminated and not truncated
    assert info["termination"] == "collision"
    assert reward < -9.0
    env.close()


def test_time_limit_only_truncates():
    env = HighwayDriveEnv(vehicles_count=1, duration_s=2.0)
    env.reset(seed=0)
    flags = [env.step(np.zeros(2, np.float32))[2:4] for _ in range(10)]
    assert flags[:9] == [(False, False)] * 9
    assert flags[9] == (False, True)
    env.close()


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="variant='city'"):
        HighwayDriveEnv(variant="city")
    with pytest.raises(ValueError, match="policy_frequency_hz=3"):
        HighwayDriveEnv(policy_frequency_hz=3)
    env = HighwayDriveEnv()
    with pytest.raises(ValueError, match="action shape"):
        env.reset(seed=0)
        env.step(np.zeros(3))
    env.close()


def test_async_vector_env_with_two_workers():
    envs = make_vec_env("dsp_driving/HighwayDrive-v0", 2, mode="async")
    try:
        obs, _ = envs.reset(seed=[0, 1])
        assert obs.shape == (2, contract.OBS_DIM)
        assert not np.array_equal(obs[0], obs[1])
        for _ in range(20):
            obs, rewards, terminated, truncated, _ = envs.step(
                np.tile(np.array([0.0, 0.2], np.float32), (2, 1)))
            assert obs.shape == (2, contract.OBS_DIM) and np.all(np.isfinite(obs))
            assert rewards.shape == (2,) and np.all(np.isfinite(rewards))
    finally:
        envs.close()


def test_async_vector_env_with_spawned_workers():
    """A spawned worker starts with an empty gymnasium registry: the factory registers ours."""
    from dsp_driving.rl.envs import _make_registered

    envs = gym.vector.AsyncVectorEnv(
        [functools.partial(_make_registered, "dsp_driving/HighwayDrive-v0")] * 2,
        context="spawn")
    try:
        obs, _ = envs.reset(seed=[0, 1])
        assert obs.shape == (2, contract.OBS_DIM) and np.all(np.isfinite(obs))
    finally:
        envs.close()


def test_metadata_carries_the_contract():
    described = describe_env("dsp_driving/HighwayDrive-v0")
    assert described["observation_names"] == list(contract.OBSERVATION_NAMES)
    assert described["action_names"] == ["steer", "accel"]
    meta = described["policy_metadata"]
    json.dumps(meta, allow_nan=False)
    assert meta["simulator"] == "highway-env" and meta["control_period_s"] == 0.2
    assert [f["name"] for f in meta["features"]] == list(contract.OBSERVATION_NAMES)
    assert meta["action_limits"]["max_steer_rad"] == 0.5


def test_a_short_training_run_exports_a_contract_policy(highway_run):
    """train -> compact actor -> policy.onnx that carries the contract and drives the env."""
    from dsp_driving.inference import OnnxPolicy

    policy = OnnxPolicy(highway_run / "policy.onnx")
    meta = policy.metadata
    assert meta["observation_names"] == list(contract.OBSERVATION_NAMES)
    assert meta["env_metadata"]["features"][0] == {"name": "speed", "scale": 30.0,
                                                      "clip": 2.0}
    env = HighwayDriveEnv()
    obs, _ = env.reset(seed=0)
    action = policy.act(obs)
    assert action.shape == (2,) and np.all(np.abs(action) <= 1.0)
    env.step(action)
    env.close()


@pytest.mark.parametrize("env_id", ["dsp_driving/HighwayDrive-v0", "dsp_driving/TrackDrive-v0"])
def test_a_driver_reading_only_the_observation_stays_on_the_road(env_id):
    """The scene's geometry end to end: pure pursuit on path_lateral_10m and gap keeping on
    lead_gap keep the car on the road and out of the traffic for whole episodes."""
    from dsp_driving.driving.reference import reference_action

    env = make_env(env_id)
    for seed in (0, 1):
        obs, _ = env.reset(seed=seed)
        lane_id = env.unwrapped._sim.vehicle.lane_index[2]
        total, steps, done = 0.0, 0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(reference_action(obs, 1.5))
            total, steps, done = total + reward, steps + 1, terminated or truncated
            lane_width = env.unwrapped.scene.path.lane_width
            assert abs(info["lateral_offset_m"]) < 0.5 * lane_width  # never leaves its lane
            assert env.unwrapped._sim.vehicle.lane_index[2] == lane_id
        assert not terminated and steps == 150
        assert total > 80.0  # about 0.7 of the 150 a limit-speed, centred drive would earn
    env.close()
