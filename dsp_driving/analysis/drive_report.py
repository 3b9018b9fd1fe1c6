"""The bag report's drive safety: a recorded drive replayed through policy_node's own
code path -> TTC, headway, speed and the commands' comfort, safety.csv and safety.png.

Safety and comfort over the drive (TTC, headway, speed, commanded jerk and steering rate):
the actions replayed, each with the observation the node decided it from, through the
controller's own input checks (``controller.ObservationInput``; in ros mode the scene is
rebuilt with ``nodes/scene.SceneAssembler`` and ``contract.observe``, as the node does) into
one ``driving/drive_safety.DriveSafety``: policy_node's status's code path. The rest of the
driving report (rates, latency, commands, status): analysis/driving.py, which calls this.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from dsp_driving.analysis.plots import figure, fmt, number, save_png, write_csv
from dsp_driving.rosbag.reader import BagData

COLUMNS = ("t_s", "observed", "has_lead", "speed_mps", "ttc_s", "headway_s", "jerk_mps3",
           "steer_rate_rps")  # safety.csv
TTC_PLOT_MAX_S = 10.0  # the TTC axis stops here (a slow approach gives TTCs of minutes)


def analyse(bag: BagData, roles: dict[str, list[str]], status: dict[str, Any]
            ) -> dict[str, Any] | None:
    """Safety and comfort over the drive: each action of the first action topic, with the
    observation the node decided it from, into one DriveSafety (module doc). ``roles``: the
    bag's topics by role, ``status``: policy_node's status figures (both as driving.py reads
    them). None when no control period can be told."""
    from dsp_driving.controller import ObservationInput, SafetyConfig
    from dsp_driving.driving import contract
    from dsp_driving.driving.drive_safety import DriveSafety

    params, action_topic = status["params"], roles["action"][0]
    actions = [(t, m) for t, m in bag.messages[action_topic] if len(m.data) >= 2]
    rate = number(params.get("rate_hz"), math.nan)
    if math.isfinite(rate) and rate > 0:
        period, period_source = 1.0 / rate, "the status's rate_hz"
    elif len(actions) > 1:
        period = float(np.median(np.diff([t for t, _ in actions]))) * 1e-9
        period_source = "the median action period (no status)"
    else:
        return None
    if not period > 0:
        return None
    try:
        limits = contract.ActionLimits(**(status["limits"] or {}))
    except ValueError:  # a status with limits no node could have run with
        status = {**status, "limits": None}
        limits = contract.ActionLimits()
    mode = params.get("input_mode")
    features = [n for n in roles["input"] if n.endswith("/observation")]
    odom = [n for n in roles["input"] if n.endswith("/odom")]
    path = [n for n in roles["scene"] if n.endswith("/path")]
    lead = [n for n in roles["scene"] if n.endswith("/lead")]
    events: list[tuple[int, int, str, Any]] = [(t, 1, "action", m) for t, m in actions]
    scene = None
    if features and mode != "ros":
        source = f"the observations on {features[0]}"
        events += [(t, 0, "observation", m) for t, m in bag.messages[features[0]]]
    elif odom and path and mode != "features":
        from dsp_driving.nodes.scene import SceneAssembler

        cfg, how = _scene_config(params)
        scene = SceneAssembler(cfg)
        source = (f"rebuilt from {', '.join(odom[:1] + path[:1] + lead[:1])} as the node "
                  f"does ({how})")
        for kind, names in (("odom", odom), ("path", path), ("lead", lead)):
            events += [(t, 0, kind, m) for t, m in bag.messages[names[0]]] if names else []
    else:
        source = "none in the bag: comfort figures only"
    stale_s = number(params.get("stale_timeout_s"), math.nan)
    if not (math.isfinite(stale_s) and stale_s > 0):
        stale_s = SafetyConfig().stale_timeout_s
    drive = DriveSafety(period, window_s=None)
    _replay(sorted(events, key=lambda e: e[:2]), ObservationInput(stale_s), scene, limits,
            drive)
    series = drive.series()
    return {"action_topic": action_topic, "observations": source,
            "period_source": period_source,
            "limits_source": "the status" if status["limits"] else "the contract's defaults",
            **drive.figures().as_dict(),
            **{f"{k}_values": v for k, v in series.items()},
            "t_rel_s": series["t_s"] - bag.start_ns * 1e-9}


def _scene_config(params: dict[str, str]) -> tuple[Any, str]:
    """ros mode: policy_node's scene parameters from its status (defaults where absent)."""
    from dsp_driving.nodes.conversions import SCENE_STATUS_KEYS
    from dsp_driving.nodes.parameters import PolicyNodeConfig

    given = {k: number(params.get(k), math.nan) for k in (*SCENE_STATUS_KEYS,
                                                          "stale_timeout_s")}
    given = {k: x for k, x in given.items() if math.isfinite(x)}
    try:
        return PolicyNodeConfig(input_mode="ros", **given), "the status's scene parameters"
    except ValueError:
        return PolicyNodeConfig(input_mode="ros"), "policy_node's default scene parameters"


def _replay(events: list[tuple[int, int, str, Any]], inputs: Any, scene: Any,
            limits: Any, drive: Any) -> None:
    """The bag's inputs and actions, in log-time order, as policy_node took them: inputs into
    the controller's ObservationInput (ros mode: through the SceneAssembler), each action a
    DriveSafety step with the observation that was fresh then."""
    from dsp_driving.driving import contract

    last_action, driving = np.zeros(contract.ACT_DIM, np.float32), False
    for t_ns, _, kind, msg in events:
        t = t_ns * 1e-9  # the node clock, as the controller's times
        if kind == "observation":
            inputs.set_observation(list(msg.data), t)
        elif kind == "odom":
            why = scene.on_odometry(msg, t)
            if why:
                inputs.refuse(why)
        elif kind == "path":
            scene.on_path(msg)
        elif kind == "lead":
            scene.on_lead(msg, t)
        else:
            if scene is not None:  # as policy_node's _command: the scene due, then decide
                due, _ = scene.take(t)
                if due is not None:
                    inputs.set_scene(due, scene.received_s, last_action)
            action = np.array(list(msg.data)[:2], np.float32)
            try:
                physical = contract.to_physical(action, limits)
            except ValueError:  # not finite: no command a node sends
                continue
            obs = inputs.fresh(t)
            drive.step(t, physical.steer_rad, physical.accel_mps2, obs, inputs.speed_mps)
            # the controller's prev_action: (0, 0) until its first command on a fresh input
            driving = driving or obs is not None
            if driving:
                last_action = action


def write_series(sf: dict[str, Any], out: Path) -> str:
    """safety.csv: the drive's per-step values (COLUMNS); returns its file name."""
    rows = zip(sf["t_rel_s"].tolist(), *(sf[f"{c}_values"].tolist() for c in COLUMNS[1:]))
    return write_csv(out / "safety.csv", COLUMNS, list(rows)).name


def plot(sf: dict[str, Any], out: Path) -> str | None:
    """safety.png (TTC and speed over the drive); None without a control step."""
    return _plot(sf, out / "safety.png").name if sf["control_steps"] else None


def _plot(sf: dict[str, Any], path: Path) -> Path:
    """TTC (with the threshold) and speed over the drive."""
    from dsp_driving.driving.drive_safety import TTC_THRESHOLD_S

    fig = figure(2, 1)
    ttc_ax, speed_ax = fig.axes
    speed_ax.sharex(ttc_ax)
    t, ttc = sf["t_rel_s"], sf["ttc_s_values"]
    ttc_ax.plot(t, ttc, lw=0.8, marker=".", ms=2, label="TTC")
    ttc_ax.axhline(TTC_THRESHOLD_S, color="tab:red", ls="--", lw=0.8,
                   label=f"{TTC_THRESHOLD_S:g} s")
    top = float(np.nanmax(ttc)) if np.isfinite(ttc).any() else TTC_PLOT_MAX_S
    ttc_ax.set(title="time to collision with the lead (where closing)", ylabel="s",
               ylim=(0.0, min(max(top * 1.05, 2 * TTC_THRESHOLD_S), TTC_PLOT_MAX_S)))
    ttc_ax.legend(loc="upper right")
    speed_ax.plot(t, sf["speed_mps_values"], lw=0.8, color="tab:green")
    speed_ax.set(title="speed (of the observation each command was decided from)",
                 ylabel="m/s", xlabel="time (s)")
    for ax in fig.axes:
        ax.grid(alpha=0.3)
    return save_png(fig, path)


def markdown(sf: dict[str, Any], files: list[str]) -> list[str]:
    """The report section "Safety and comfort over the drive" (``files``: those written)."""
    from dsp_driving.driving.drive_safety import TTC_THRESHOLD_S

    lines = ["", "### Safety and comfort over the drive", "",
             f"{sf['control_steps']} control steps (the commands on {sf['action_topic']}), "
             f"{sf['observed_steps']} of them decided from a fresh observation "
             f"({sf['observations']}), {sf['lead_steps']} with a lead seen. policy_node's "
             "status gives the same figures over its last seconds (definitions: "
             "dsp_driving/driving/drive_safety.py and safety.py).", "",
             f"- time to collision: min **{fmt(sf['min_ttc_s'], '.3f')} s**, 5th percentile "
             f"{fmt(sf['ttc_p5_s'], '.3f')} s; **{fmt(sf['ttc_below_pct'], '.1f')} %** of the "
             f"observed steps below {TTC_THRESHOLD_S:g} s",
             f"- time headway: min {fmt(sf['min_headway_s'], '.3f')} s, median "
             f"{fmt(sf['median_headway_s'], '.3f')} s",
             f"- mean speed {fmt(sf['mean_speed_mps'], '.3f')} m/s",
             f"- commanded longitudinal jerk |Δa| / T: p95 {fmt(sf['jerk_p95_mps3'], '.3f')}, "
             f"max {fmt(sf['jerk_max_mps3'], '.3f')} m/s³ (T = "
             f"{fmt(sf['control_period_s'], '.4g')} s, {sf['period_source']}; limits from "
             f"{sf['limits_source']})",
             f"- commanded steering rate |Δδ| / T: p95 {fmt(sf['steer_rate_p95_rps'], '.3f')}, "
             f"max {fmt(sf['steer_rate_max_rps'], '.3f')} rad/s (road wheel)"]
    if sf["bad_observations"]:
        lines.append(f"- {sf['bad_observations']} observations could not be measured "
                     "(left out)")
    if "safety.png" in files:
        lines += ["", "![TTC and speed](safety.png)"]
    return lines
