"""Per-episode safety metrics (dsp_driving.driving.safety) and their summary
(dsp_driving.driving.safety_summary): hand-computed profiles, the envs' real info keys, and
real HighwayDrive-v0 / Carla-v0 (kinematic) episodes."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from dsp_driving.driving import contract, safety, safety_summary
from dsp_driving.driving.safety import EpisodeRecorder, EpisodeSafety, Infraction

SCALE = {name: scale for name, scale, _ in contract.FEATURES}


def obs(speed=0.0, yaw_rate=0.0, gap=None, rel=0.0):
    """A contract observation with these physical values (no lead when gap is None)."""
    x = np.zeros(contract.OBS_DIM, np.float32)
    x[contract.INDEX["speed"]] = speed / SCALE["speed"]
    x[contract.INDEX["yaw_rate"]] = yaw_rate / SCALE["yaw_rate"]
    x[contract.INDEX["lead_gap"]] = 1.0 if gap is None else gap / SCALE["lead_gap"]
    x[contract.INDEX["lead_relative_speed"]] = rel / SCALE["lead_relative_speed"]
    x[contract.INDEX["has_lead"]] = 0.0 if gap is None else 1.0
    return x


def drive(speeds, dt=0.5, steers=None, yaw_rates=None, leads=None, infos=None, end=None,
          reset_info=None, **recorder_kwargs):
    """Feed a profile: speeds[0] at reset, one step per later speed; the last step ends the
    episode with ``end`` = (terminated, truncated, info) (default: a highway time limit)."""
    n = len(speeds) - 1
    steers = steers or [0.0] * n
    yaw_rates = yaw_rates or [0.0] * n
    leads = leads or [(None, 0.0)] * n
    infos = infos or [{} for _ in range(n)]
    terminated, truncated, last = end or (False, True, {})
    rec = EpisodeRecorder(dt, **recorder_kwargs)
    rec.reset(obs(speeds[0]), reset_info or {})
    for k in range(n):
        done = k == n - 1
        info = {**infos[k], **(last if done else {})}
        gap, rel = leads[k]
        rec.step([steers[k], 0.0], obs(speeds[k + 1], yaw_rates[k], gap, rel), 1.0,
                 terminated and done, truncated and done, info)
    return rec.finish()


def episode(**overrides) -> EpisodeSafety:
    base = dict(episode_return=10.0, steps=100, duration_s=20.0, outcome="timeout",
                outcome_detail="", distance_m=400.0, progress_m=400.0, route_completion=1.0,
                route_basis="time", infractions=(), mean_speed_mps=20.0, max_speed_mps=22.0,
                min_ttc_s=None, ttc_below_frac=0.0, min_headway_s=None, lead_steps=0,
                p95_abs_jerk_mps3=1.0, p95_abs_lateral_accel_mps2=0.5,
                p95_abs_steer_rate_rps=0.1)
    return EpisodeSafety(**{**base, **overrides})


# ---- one episode: kinematics ------------------------------------------------------------------


def test_jerk_distance_and_speed_of_a_known_profile():
    # v = 10, 10, 11, 13, 13 m/s every 0.5 s: a = 0, 2, 4, 0; jerk = 4, 4, -8 m/s^3
    e = drive([10.0, 10.0, 11.0, 13.0, 13.0], dt=0.5)
    assert e.steps == 4 and e.duration_s == pytest.approx(2.0)
    assert e.p95_abs_jerk_mps3 == pytest.approx(4.0 + 0.9 * 4.0, rel=1e-5)  # |4, 4, 8| p95
    assert e.distance_m == pytest.approx(0.25 * (20 + 21 + 24 + 26), rel=1e-6)  # trapezoid
    assert e.mean_speed_mps == pytest.approx((10 + 11 + 13 + 13) / 4, rel=1e-6)
    assert e.max_speed_mps == pytest.approx(13.0, rel=1e-6)
    assert e.progress_m is None  # no info["progress_m"] given


def test_lateral_acceleration_and_steering_rate():
    # lateral = v x yaw rate: 10 x 0.2 = 2, 10 x -0.5 = 5 (abs), 10 x 0 = 0 m/s^2
    # steer 0.2, 0.2, -0.2 from 0 at reset, 0.5 rad at steer 1, dt 0.5: 0.2, 0, 0.4 rad/s
    e = drive([10.0] * 4, dt=0.5, steers=[0.2, 0.2, -0.2], yaw_rates=[0.2, -0.5, 0.0])
    assert e.p95_abs_lateral_accel_mps2 == pytest.approx(2.0 + 0.9 * 3.0, rel=1e-5)
    assert e.p95_abs_steer_rate_rps == pytest.approx(0.2 + 0.9 * 0.2, rel=1e-5)
    assert e.p95_abs_jerk_mps3 == pytest.approx(0.0, abs=1e-9)


def test_ttc_and_headway_of_a_known_gap_sequence():
    # ego at 20 m/s; lead closing at 10 m/s from 40, 30, 20 m (TTC 4, 3, 2 s), then at
    # 15 m/s from 15 m (TTC 1 s); then an opening lead (TTC undefined), then no lead.
    leads = [(40.0, -10.0), (30.0, -10.0), (20.0, -10.0), (15.0, -15.0), (25.0, 5.0),
             (None, 0.0)]
    e = drive([20.0] * 7, dt=0.2, leads=leads)
    assert e.min_ttc_s == pytest.approx(1.0, rel=1e-5)
    assert e.ttc_below_frac == pytest.approx(1 / 6)  # one step of six under 1.5 s
    assert e.min_headway_s == pytest.approx(15.0 / 20.0, rel=1e-5)
    assert e.lead_steps == 5


def test_no_lead_or_never_closing_leaves_ttc_undefined():
    e = drive([20.0] * 4, leads=[(None, 0.0), (50.0, 0.0), (60.0, 2.0)])
    assert e.min_ttc_s is None and e.ttc_below_frac == 0.0
    assert e.min_headway_s == pytest.approx(50.0 / 20.0, rel=1e-5)
    stopped = drive([0.0] * 3, leads=[(5.0, 0.0), (5.0, 0.0)])
    assert stopped.min_headway_s is None  # a stopped ego has no time headway


def test_info_speed_wins_over_the_observation_and_progress_is_summed():
    rec = EpisodeRecorder(0.2)
    rec.reset(obs(0.0), {"speed_mps": 10.0})
    rec.step([0, 0], obs(0.0), 0.5, False, False, {"speed_mps": 10.0, "progress_m": 1.9})
    rec.step([0, 0], obs(0.0), 0.25, False, True, {"speed_mps": 12.0, "progress_m": 2.1})
    e = rec.finish()
    assert e.distance_m == pytest.approx(0.1 * 20 + 0.1 * 22)
    assert e.progress_m == pytest.approx(4.0)
    assert e.episode_return == pytest.approx(0.75)


# ---- outcomes and infractions from the envs' info keys ------------------------------------


@pytest.mark.parametrize("terminated, truncated, info, expected", [
    (True, False, {"termination": "collision"}, ("collision", "collision")),
    (True, False, {"termination": "off_road"}, ("off_road", "off_road")),
    (True, False, {}, ("other", "")),
    (False, True, {}, ("timeout", "")),  # highway-env: a time limit without a reason
    (False, True, {"truncation": "time_limit"}, ("timeout", "time_limit")),
    (False, True, {"truncation": "route_end"}, ("route_complete", "route_end")),
    (False, True, {"truncation": "simulator_crash"}, ("other", "simulator_crash")),
    (False, False, {}, ("other", "unfinished")),
])
def test_outcome_from_the_envs_info(terminated, truncated, info, expected):
    assert safety.outcome_from(terminated, truncated, info) == expected


def test_highway_collision_is_an_inferred_vehicle_collision():
    e = drive([10.0, 10.0, 10.0], end=(True, False, {"termination": "collision"}),
              max_steps=10)
    assert e.outcome == "collision"
    assert e.infractions == (Infraction("collision_vehicle", 2, "inferred"),)
    assert e.collisions == 1 and not e.off_road
    assert (e.route_completion, e.route_basis) == (pytest.approx(0.2), "time")
    assert e.driving_score == pytest.approx(0.2 * 0.6)


def test_carla_info_counts_collisions_lane_invasions_and_typed_hits():
    infos = [{"collisions": 0, "lane_invasions": 2}, {"red_light": True},
             {"collisions": 3, "collision_with": ["walker.pedestrian.0001",
                                                  "static.prop.bin", "vehicle.audi.tt"]}]
    e = drive([10.0] * 4, infos=infos,
              end=(True, False, {"termination": "collision", "collisions": 3}))
    kinds = [(i.kind, i.step) for i in e.infractions]
    assert kinds == [("lane_invasion", 1), ("red_light", 2), ("collision_pedestrian", 3),
                     ("collision_static", 3), ("collision_vehicle", 3)]
    assert e.collisions == 3
    assert e.infractions[0].detail == "2"
    plain = drive([10.0] * 2, end=(True, False, {"termination": "collision", "collisions": 1}))
    assert [i.kind for i in plain.infractions] == ["collision_vehicle"]


def test_off_road_is_recorded_without_a_penalty():
    e = drive([10.0] * 3, end=(True, False, {"termination": "off_road"}), max_steps=4)
    assert e.outcome == "off_road" and e.off_road and e.collisions == 0
    assert e.driving_score == pytest.approx(e.route_completion) == pytest.approx(0.5)


def test_collision_kind_of_carla_type_ids():
    assert safety.collision_kind("walker.pedestrian.0003") == "collision_pedestrian"
    assert safety.collision_kind("vehicle.kinematic") == "collision_vehicle"
    assert safety.collision_kind("static.prop.streetbarrier") == "collision_static"
    assert safety.collision_kind("traffic.traffic_light") == "collision_static"


def test_simulator_crash_step_adds_no_motion():
    rec = EpisodeRecorder(0.2)
    rec.reset(obs(10.0))
    rec.step([0, 0], obs(10.0), 1.0, False, False, {})
    rec.step([0, 0], obs(99.0), 0.0, False, True, {"truncation": "simulator_crash"})
    e = rec.finish()
    assert (e.outcome, e.outcome_detail, e.steps) == ("other", "simulator_crash", 1)
    assert e.max_speed_mps == pytest.approx(10.0, rel=1e-6)


# ---- route completion ------------------------------------------------------------------------


def test_route_completion_bases():
    progress = [{"progress_m": 10.0}] * 3
    exact = drive([10.0] * 4, infos=progress, reset_info={"route_target_m": 60.0},
                  end=(True, False, {"termination": "collision"}))
    assert (exact.route_completion, exact.route_basis) == (pytest.approx(0.5), "route")
    approx = drive([10.0] * 4, infos=progress, reset_info={"route_length_m": 115.0},
                   end=(False, True, {"truncation": "time_limit"}))
    assert (approx.route_completion, approx.route_basis) == (pytest.approx(0.5),
                                                             "route_approx")
    done = drive([10.0] * 4, infos=progress, reset_info={"route_length_m": 500.0},
                 end=(False, True, {"truncation": "route_end"}))
    assert done.outcome == "route_complete" and done.route_completion == 1.0
    timed = drive([10.0] * 4, max_steps=3)  # a highway time limit: the whole scenario
    assert (timed.route_completion, timed.route_basis) == (1.0, "time")
    bare = drive([10.0] * 3, end=(True, False, {"termination": "collision"}))
    assert (bare.route_completion, bare.route_basis) == (0.0, "outcome")


def test_carla_route_constants_match_the_env():
    pytest.importorskip("gymnasium")
    from dsp_driving.driving import carla_env

    assert safety.CARLA_ROUTE_BEHIND_M == carla_env.ROUTE_BEHIND_M
    assert safety.CARLA_ROUTE_END_MARGIN_M == carla_env.ROUTE_END_MARGIN_M


# ---- driving score ----------------------------------------------------------------------------


def test_driving_score_of_a_mix_of_infractions():
    kinds = ["collision_pedestrian", "collision_vehicle", "collision_static", "red_light",
             "stop_sign", "off_road", "lane_invasion"]
    assert safety.driving_score(0.8, kinds) == pytest.approx(
        0.8 * 0.5 * 0.6 * 0.65 * 0.7 * 0.8)
    assert safety.driving_score(0.5, [Infraction("collision_vehicle", 3)] * 2) == \
        pytest.approx(0.5 * 0.36)
    assert safety.driving_score(1.0, []) == 1.0
    assert (safety.PENALTY_COLLISION_PEDESTRIAN, safety.PENALTY_COLLISION_VEHICLE,
            safety.PENALTY_COLLISION_STATIC, safety.PENALTY_RED_LIGHT,
            safety.PENALTY_STOP_SIGN) == (0.50, 0.60, 0.65, 0.70, 0.80)


@pytest.mark.parametrize("rc, kinds, message", [
    (1.2, [], "route_completion=1.2"),
    (float("nan"), [], "route_completion=nan"),
    (0.5, ["speeding"], "infraction kind='speeding'"),
])
def test_driving_score_rejects_bad_input(rc, kinds, message):
    with pytest.raises(ValueError, match=message):
        safety.driving_score(rc, kinds)


# ---- summary ----------------------------------------------------------------------------------


def mixed_episodes() -> list[EpisodeSafety]:
    return [
        episode(episode_return=10.0, distance_m=500.0, min_ttc_s=1.0, ttc_below_frac=0.1,
                outcome="collision", route_completion=0.5,
                infractions=(Infraction("collision_vehicle", 50),)),
        episode(episode_return=20.0, distance_m=1000.0, min_ttc_s=2.0,
                p95_abs_jerk_mps3=3.0, mean_speed_mps=25.0),
        episode(episode_return=12.0, distance_m=500.0, min_ttc_s=3.0, outcome="off_road",
                route_completion=0.25, infractions=(Infraction("off_road", 25),)),
        episode(episode_return=30.0, distance_m=0.0, min_ttc_s=None, route_completion=1.0,
                outcome="other", infractions=(Infraction("collision_static", 1),),
                p95_abs_jerk_mps3=None, mean_speed_mps=0.0),
    ]


def test_summary_keys_and_values():
    s = safety_summary.summarise(mixed_episodes(), n_resamples=1000)
    assert list(s) == [*safety_summary.SUMMARY_KEYS, *safety_summary.CI_KEYS, "ci95_method"]
    assert safety_summary.SUMMARY_KEYS == (
        "episodes", "return_mean", "collision_rate", "collisions_per_km", "offroad_rate",
        "route_completion", "driving_score", "min_ttc_p5_s", "ttc_below_1_5s_pct",
        "jerk_p95", "lateral_accel_p95", "mean_speed_mps")
    assert s["episodes"] == 4
    assert s["return_mean"] == pytest.approx(18.0)
    assert s["collision_rate"] == pytest.approx(0.5)
    assert s["collisions_per_km"] == pytest.approx(2 / 2.0)  # 2 collisions in 2 km
    assert s["offroad_rate"] == pytest.approx(0.25)
    assert s["route_completion"] == pytest.approx((0.5 + 1.0 + 0.25 + 1.0) / 4)
    assert s["driving_score"] == pytest.approx((0.5 * 0.6 + 1.0 + 0.25 + 0.65) / 4)
    assert s["min_ttc_p5_s"] == pytest.approx(1.1)  # [1, 2, 3]: the no-TTC episode excluded
    assert s["ttc_below_1_5s_pct"] == pytest.approx(2.5)
    assert s["jerk_p95"] == pytest.approx((1.0 + 3.0 + 1.0) / 3)  # None excluded
    assert s["lateral_accel_p95"] == pytest.approx(0.5)
    assert s["mean_speed_mps"] == pytest.approx((20 + 25 + 20 + 0) / 4)
    assert s["ci95_method"] == "percentile_bootstrap"
    json.dumps(s, allow_nan=False)  # strict JSON


@pytest.mark.parametrize("method, name", [("bootstrap", "percentile_bootstrap"),
                                          ("normal", "normal_approximation")])
def test_intervals_contain_the_estimate(method, name):
    s = safety_summary.summarise(mixed_episodes(), ci_method=method, n_resamples=1000)
    assert s["ci95_method"] == name
    for key in safety_summary.SUMMARY_KEYS[1:]:
        low, high = s[f"{key}_ci95"]
        assert low <= s[key] <= high, (key, low, s[key], high)
    low, high = s["return_mean_ci95"]
    assert low < high  # the returns differ: a real interval


def test_bootstrap_is_reproducible_and_degenerate_data_give_a_point():
    a = safety_summary.summarise(mixed_episodes(), n_resamples=500, seed=3)
    b = safety_summary.summarise(mixed_episodes(), n_resamples=500, seed=3)
    assert a == b
    same = safety_summary.summarise([episode(), episode()], n_resamples=500)
    assert same["return_mean_ci95"] == [10.0, 10.0]
    # zero events are not certainty: 0 collisions in 0.8 km -> [0, 3.689 / 0.8] per km
    assert same["collisions_per_km_ci95"] == pytest.approx([0.0, 3.6888794541 / 0.8])


def test_rates_get_wilson_intervals_never_zero_width_at_zero_events():
    clean = safety_summary.summarise([episode()] * 100, n_resamples=500)
    assert clean["collision_rate"] == 0.0
    assert clean["collision_rate_ci95"] == pytest.approx([0.0, 0.036995], abs=1e-5)
    assert clean["offroad_rate_ci95"] == clean["collision_rate_ci95"]
    hit = episode(outcome="collision", infractions=(Infraction("collision_vehicle", 5),))
    two = safety_summary.summarise([hit] * 2 + [episode()] * 98, n_resamples=500)
    assert two["collision_rate"] == 0.02
    assert two["collision_rate_ci95"] == pytest.approx([0.005502, 0.070012], abs=1e-5)


def test_one_episode_and_no_distance():
    s = safety_summary.summarise([episode(distance_m=0.0, min_ttc_s=None)])
    assert s["collisions_per_km"] is None and s["collisions_per_km_ci95"] is None
    assert s["min_ttc_p5_s"] is None and s["min_ttc_p5_s_ci95"] is None
    assert s["return_mean"] == 10.0 and s["return_mean_ci95"] is None


def test_episode_record_round_trips_to_json():
    e = mixed_episodes()[0]
    d = json.loads(json.dumps(e.to_dict(), allow_nan=False))
    assert d["infractions"] == [{"kind": "collision_vehicle", "step": 50, "detail": ""}]
    assert d["collisions"] == 1 and d["driving_score"] == pytest.approx(0.3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.outcome = "timeout"


# ---- bad input ------------------------------------------------------------------------------


def test_bad_recorder_settings_name_the_field():
    with pytest.raises(ValueError, match=r"dt_s=-0.1: must be > 0"):
        EpisodeRecorder(-0.1)
    with pytest.raises(ValueError, match=r"dt_s=nan: must be a finite number"):
        EpisodeRecorder(math.nan)
    with pytest.raises(ValueError, match=r"max_steps=0"):
        EpisodeRecorder(0.2, max_steps=0)
    with pytest.raises(ValueError, match=r"default_collision_kind='tree'"):
        EpisodeRecorder(0.2, default_collision_kind="tree")


def test_bad_steps_name_the_field_and_value():
    rec = EpisodeRecorder(0.2)
    with pytest.raises(RuntimeError, match="before reset"):
        rec.step([0, 0], obs(1.0), 0.0, False, False, {})
    rec.reset(obs(10.0), {"speed_mps": 10.0})
    with pytest.raises(ValueError, match=r"info\['speed_mps'\]=nan"):
        rec.step([0, 0], obs(10.0), 0.0, False, False, {"speed_mps": float("nan")})
    with pytest.raises(ValueError, match=r"dt_s \(step 1\)=-0.2: must be > 0"):
        rec.step([0, 0], obs(10.0), 0.0, False, False, {}, dt_s=-0.2)
    with pytest.raises(ValueError, match=r"reward \(step 1\)=inf"):
        rec.step([0, 0], obs(10.0), float("inf"), False, False, {})
    with pytest.raises(ValueError, match=r"observation shape=\(3,\)"):
        rec.step([0, 0], np.zeros(3), 0.0, False, False, {})
    bad = obs(10.0)
    bad[contract.INDEX["lead_gap"]] = np.nan
    with pytest.raises(ValueError, match=r"observation=\{'lead_gap': nan\}: must be finite"):
        rec.step([0, 0], bad, 0.0, False, False, {})
    with pytest.raises(ValueError, match=r"info\['infractions'\] \(step 1\)='speeding'"):
        rec.step([0, 0], obs(10.0), 0.0, False, False, {"infractions": ["speeding"]})
    with pytest.raises(ValueError, match="not finite"):
        rec.step([np.nan, 0], obs(10.0), 0.0, False, False, {})
    rec.reset(obs(10.0))
    rec.step([0, 0], obs(10.0), 0.0, True, False, {"termination": "collision"})
    with pytest.raises(RuntimeError, match="after the episode ended"):
        rec.step([0, 0], obs(10.0), 0.0, False, False, {})


def test_bad_summary_input():
    with pytest.raises(ValueError, match="episodes=\\[\\]"):
        safety_summary.summarise([])
    with pytest.raises(ValueError, match=r"episodes\[0\]='dict'"):
        safety_summary.summarise([{}])
    with pytest.raises(ValueError, match="ci_method='exact'"):
        safety_summary.summarise([episode()], ci_method="exact")
    with pytest.raises(ValueError, match="EpisodeSafety.route_completion=1.5"):
        episode(route_completion=1.5)
    with pytest.raises(ValueError, match="EpisodeSafety.outcome='crash'"):
        episode(outcome="crash")


# ---- real envs ----------------------------------------------------------------------------------


def record(env, action, seed, options=None):
    rec = safety.recorder_for(env)
    o, info = env.reset(seed=seed, options=options)
    rec.reset(o, info)
    speeds, obs_speeds = [info["speed_mps"]], [float(o[contract.INDEX["speed"]]) * 30.0]
    done = False
    while not done:
        o, reward, terminated, truncated, info = env.step(np.asarray(action, np.float32))
        rec.step(action, o, reward, terminated, truncated, info)
        speeds.append(info["speed_mps"])
        obs_speeds.append(float(o[contract.INDEX["speed"]]) * 30.0)
        done = terminated or truncated
    return rec.finish(), np.array(speeds), np.array(obs_speeds)


def test_real_highway_episode_feeds_the_recorder():
    pytest.importorskip("highway_env")
    from dsp_driving.rl.envs import make_env

    env = make_env("dsp_driving/HighwayDrive-v0", {"vehicles_count": 3, "duration_s": 4.0})
    try:
        assert safety.recorder_for(env).dt_s == pytest.approx(0.2)
        e, speeds, obs_speeds = record(env, [0.01, 0.2], seed=0)
    finally:
        env.close()
    np.testing.assert_allclose(obs_speeds, speeds, rtol=1e-5)  # contract speed = info speed
    assert (e.outcome, e.steps, e.route_basis, e.route_completion) == ("timeout", 20, "time",
                                                                       1.0)
    assert e.distance_m > 0 and e.distance_m == pytest.approx(e.progress_m, rel=0.02)
    assert e.mean_speed_mps == pytest.approx(np.mean(speeds[1:]), rel=1e-9)
    assert e.distance_m == pytest.approx(e.mean_speed_mps * e.duration_s, rel=0.01)
    # steer 0 -> 0.01 in step 1 (0.01 x 0.5 rad / 0.2 s = 0.025 rad/s), then constant:
    # the p95 of 19 zeros and one 0.025 sits 5 % of the way from 0 to 0.025
    assert e.p95_abs_steer_rate_rps == pytest.approx(0.05 * 0.025)
    values = [v for v in dataclasses.asdict(e).values() if isinstance(v, float)]
    assert all(math.isfinite(v) for v in values)
    assert e.p95_abs_lateral_accel_mps2 > 0  # steering 0.01 turns it


def test_real_highway_collision_with_a_stopped_car():
    pytest.importorskip("highway_env")
    from dsp_driving.driving.highway import HighwayDriveEnv

    env = HighwayDriveEnv(vehicles_count=1)
    try:
        rec = safety.recorder_for(env)
        o, info = env.reset(seed=0)
        ego = env._sim.vehicle
        other = next(v for v in env._sim.road.vehicles if v is not ego)
        other.position = ego.position + np.array([8.0, 0.0])  # stopped, 8 m ahead
        other.heading, other.speed, other.target_speed = ego.heading, 0.0, 0.0
        rec.reset(o, info)
        for _ in range(10):
            o, reward, terminated, truncated, info = env.step(np.array([0.0, 1.0], np.float32))
            rec.step([0.0, 1.0], o, reward, terminated, truncated, info)
            if terminated or truncated:
                break
        e = rec.finish()
    finally:
        env.close()
    assert e.outcome == "collision"
    assert [i.kind for i in e.infractions] == ["collision_vehicle"]
    assert e.min_ttc_s is not None and e.min_ttc_s < safety.TTC_THRESHOLD_S
    assert e.ttc_below_frac > 0 and e.min_headway_s < 1.0
    assert e.route_completion == pytest.approx(e.steps / env.max_steps)
    assert e.driving_score == pytest.approx(0.6 * e.route_completion)


def test_real_carla_kinematic_collision_and_route_end():
    pytest.importorskip("carla")  # as test_carla_env: the kinematic stand-in's map loader
    from pathlib import Path

    from dsp_driving.driving.carla_config import CarlaConfig
    from dsp_driving.driving.carla_env import CarlaDriveEnv

    xodr = str(Path(__file__).resolve().parents[1] / "data" / "two_lane_arc.xodr")
    cfg = CarlaConfig(backend="kinematic", xodr_path=xodr, npc_count=0, npc_speed_mps=0.0,
                      initial_speed_mps=15.0, episode_length_s=10.0, route_length_m=200.0,
                      control_period_s=0.05)
    env = CarlaDriveEnv(cfg)
    try:
        hit, _, _ = record(env, [0.0, 0.0], seed=0,
                           options={"start": (20.0, -1.75), "npcs": [(45.0, -1.75)]})
        end, _, _ = record(env, [0.0, 0.0], seed=0, options={"start": (60.0, 1.75)})
    finally:
        env.close()
    assert hit.outcome == "collision" and hit.steps == 27
    assert [i.kind for i in hit.infractions] == ["collision_vehicle"]
    assert hit.infractions[0].detail == "vehicle.kinematic"  # Carla-v0's collision_with
    # gap 19.75 m closing at 15 m/s at reset; 0.75 m per step: the last TTC is under 0.05 s
    assert hit.min_ttc_s == pytest.approx(0.0, abs=0.06)
    assert hit.route_basis == "route" and 0 < hit.route_completion < 1  # route_target_m
    assert end.outcome == "route_complete" and end.route_completion == 1.0
    assert end.collisions == 0 and end.driving_score == 1.0
