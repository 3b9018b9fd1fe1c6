"""Deterministic evaluation of a policy over seeded episodes.

On a driving env (one with the contract observation and ``policy_metadata()``: HighwayDrive-v0,
TrackDrive-v0, Carla-v0) every episode is also recorded by ``driving.safety``: the result then
holds per-episode safety rows and the safety summary with 95 % intervals (issue #19).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dsp_driving.io_utils import json_safe
from dsp_driving.rl.envs import make_env


def is_driving_env(env: Any) -> bool:
    """Whether ``env`` (wrapped or not) speaks the driving contract: its observation is the
    contract's and it says its control period."""
    base = getattr(env, "unwrapped", env)
    meta = getattr(base, "policy_metadata", None)
    if not callable(meta):
        return False
    from dsp_driving.driving import contract

    shape = getattr(getattr(env, "observation_space", None), "shape", None)
    try:
        return shape == (contract.OBS_DIM,) and "control_period_s" in meta()
    except Exception:  # an env whose metadata cannot be read is not one we can record
        return False


def evaluate(policy: Callable[[np.ndarray], Any], env_id: str, episodes: int, seed: int,
             progress: bool = False,
             on_step: Callable[[dict[str, Any], bool], None] | None = None,
             env_kwargs: Mapping[str, Any] | None = None, safety: bool | None = None,
             summary: bool = True, record_actions: bool = False,
             series: bool = False, record_observations: bool = False) -> dict[str, Any]:
    """Run ``episodes`` episodes with reset seeds seed, seed + 1, ...; returns figures.

    ``policy`` maps one raw observation to one environment action; ``on_step(info, done)``,
    if given, sees every step's info (done: the episode ended there).

    The result: ``episodes``, ``return_mean``, ``return_std``, ``returns``, ``length_mean``,
    ``seeds`` ([first, last]) and ``rows`` (one dict per episode: seed, return, length, and on
    a driving env its ``EpisodeSafety.to_dict()``). ``safety`` (None: on driving envs only)
    records safety; with ``summary`` the result's ``safety`` key holds
    ``driving.safety_summary.summarise`` of the episodes (bootstrap intervals: skip it where
    only the rates are needed). ``record_actions``: ``actions``, one float64 [steps, act_dim]
    array per episode (as the policy returned them); ``record_observations``:
    ``observations``, the float64 [steps, obs_dim] observations each action was decided
    from. ``series``: ``series``, each episode's
    per-step speed, TTC and headway (``EpisodeRecorder.series``), for plots.
    """
    if episodes < 1:
        raise ValueError(f"episodes={episodes!r}: must be >= 1")
    env = make_env(env_id, env_kwargs)
    recorder = None
    try:
        if safety is None:
            safety = is_driving_env(env)
        if safety:
            from dsp_driving.driving import safety as safety_mod
            from dsp_driving.driving import safety_summary

            if not is_driving_env(env):
                raise ValueError(f"safety=True: {env_id} is not a driving env (no contract "
                                 "observation / policy_metadata()['control_period_s'])")
            recorder = safety_mod.recorder_for(env)
        returns, lengths, rows, records, actions, traces, seen = [], [], [], [], [], [], []
        iterator = range(episodes)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, desc="eval", unit="ep", leave=False)
        for i in iterator:
            obs, info = env.reset(seed=seed + i)
            if recorder is not None:
                recorder.reset(obs, info)
            total, length, done, sent, inputs = 0.0, 0, False, [], []
            while not done:
                action = policy(obs)
                if record_actions:
                    sent.append(np.asarray(action, dtype=np.float64).reshape(-1))
                if record_observations:
                    inputs.append(np.array(obs, dtype=np.float64).reshape(-1))
                obs, reward, terminated, truncated, info = env.step(action)
                total += float(reward)
                length += 1
                done = terminated or truncated
                if recorder is not None:
                    recorder.step(action, obs, reward, terminated, truncated, info)
                if on_step is not None:
                    on_step(info, done)
            returns.append(total)
            lengths.append(length)
            row: dict[str, Any] = {"seed": seed + i, "return": total, "length": length,
                                   "terminated": bool(terminated)}
            if recorder is not None:
                record = recorder.finish()
                records.append(record)
                row.update(record.to_dict())
                if series:
                    traces.append(recorder.series())
            rows.append(row)
            if record_actions:
                actions.append(np.stack(sent) if sent else np.zeros((0, 1)))
            if record_observations:
                seen.append(np.stack(inputs))
    finally:
        env.close()
    result: dict[str, Any] = {
        "episodes": episodes, "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)), "returns": returns,
        "length_mean": float(np.mean(lengths)), "seeds": [seed, seed + episodes - 1],
        "rows": rows}
    if records and summary:
        result["safety"] = safety_summary.summarise(records)
    if record_actions:
        result["actions"] = actions
    if record_observations:
        result["observations"] = seen
    if series and recorder is not None:
        result["series"] = traces
    return result


def eval_document(result: Mapping[str, Any], **header: Any) -> dict[str, Any]:
    """eval.json's content from an ``evaluate`` result: on a driving env the safety summary's
    keys at the top level (``driving.safety_summary.SUMMARY_KEYS``, each with its ``_ci95``
    interval, and ``ci95_method``), elsewhere episodes and return_mean; then return_std,
    length_mean, seeds and returns, the ``header`` fields (policy, env, runtime, ...) and
    ``per_episode`` (the rows). Strict JSON: no NaN or infinity anywhere."""
    if "safety" in result:
        top = dict(result["safety"])
    else:
        top = {"episodes": result["episodes"], "return_mean": result["return_mean"]}
    doc = {**top, "return_std": result["return_std"], "length_mean": result["length_mean"],
           "seeds": list(result["seeds"]), "returns": list(result["returns"]), **header,
           "per_episode": list(result["rows"])}
    return json_safe(doc)


def evaluate_onnx(path: str | Path, episodes: int, seed: int, series: bool = False
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """A policy.onnx through onnxruntime, deterministic, on ``episodes`` episodes from reset
    seed ``seed``, in the env (and env_kwargs) its metadata names: what ships is what is
    measured. Returns the ``evaluate`` result and its eval.json document (header: the file's
    name, sha256, env, runtime)."""
    from dsp_driving.inference import OnnxPolicy

    path = Path(path)
    policy = OnnxPolicy(path)
    env_kwargs = ((policy.metadata.get("config") or {}).get("train") or {}).get("env_kwargs")
    result = evaluate(policy.act, policy.env_id, episodes, seed, env_kwargs=env_kwargs,
                      series=series)
    doc = eval_document(result, policy=path.name, sha256=policy.sha256, env=policy.env_id,
                        runtime="onnxruntime", deterministic=True)
    return result, doc


def collision_rate(result: Mapping[str, Any]) -> float:
    """Fraction of an ``evaluate`` result's episodes with a collision (0 on envs that record
    no safety: nothing there collides)."""
    rows = result["rows"]
    return float(np.mean([bool(r.get("collisions", 0)) for r in rows])) if rows else 0.0


def visited_observations(policy: Callable[[np.ndarray], Any], env_id: str, n: int,
                         seed: int) -> np.ndarray:
    """The first ``n`` raw observations ``policy`` visits (episodes chained, the first reset
    seeded): real inputs for parity checks and benchmarks. float32 [n, obs_dim]."""
    env = make_env(env_id)
    try:
        obs, _ = env.reset(seed=seed)
        seen = []
        while len(seen) < n:
            seen.append(obs)
            obs, _, terminated, truncated, _ = env.step(policy(obs))
            if terminated or truncated:
                obs, _ = env.reset()
    finally:
        env.close()
    return np.asarray(seen, dtype=np.float32)
