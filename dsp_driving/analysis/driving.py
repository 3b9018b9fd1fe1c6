"""A driving bag (policy_node's, or any with vehicle commands) -> rate, latency, safety and
command figures, plots, CSVs.

Recognised topics: commands by type (AckermannDriveStamped, AckermannDrive,
CarlaEgoVehicleControl, autoware Control, whatever the name); ``.../action``
(Float32MultiArray, the normalised [steer, accel]); ``.../status`` DiagnosticArrays with a
``policy_node`` status; inputs: ``.../observation`` (Float32MultiArray) and Odometry (not
``.../lead``); the scene: ``.../path`` (nav_msgs/Path) and ``.../lead``. Times are the bag's
log times (the recorder's clock), except the command rate and jitter, which use the commands'
header stamps (the publisher's clock) where they all have one.

Safety and comfort over the drive (the recorded drive replayed through policy_node's own code
path): analysis/drive_report.py.
"""

from __future__ import annotations

import math
from pathlib import Path
import re
from typing import Any

import numpy as np

from dsp_driving.analysis import drive_report
from dsp_driving.analysis.commands import COMMAND_TYPES
from dsp_driving.analysis.plots import figure, fmt, number, percentile, save_png, write_csv
from dsp_driving.rosbag.reader import BagData

SATURATED = 0.999  # |value| >= this share of its limit counts as saturated


def slug(topic: str) -> str:
    """A topic name as a file-name part: /carla/ego/cmd -> carla_ego_cmd."""
    return re.sub(r"[^A-Za-z0-9]+", "_", topic).strip("_") or "root"


def _roles(bag: BagData) -> dict[str, list[str]]:
    roles: dict[str, list[str]] = {"command": [], "action": [], "status": [], "input": [],
                                   "scene": []}
    for name, info in bag.topics.items():
        if name not in bag.messages:
            continue
        if info.msgtype in COMMAND_TYPES:
            roles["command"].append(name)
        elif info.msgtype == "std_msgs/msg/Float32MultiArray" and name.endswith("/action"):
            roles["action"].append(name)
        elif info.msgtype == "std_msgs/msg/Float32MultiArray" and name.endswith("/observation"):
            roles["input"].append(name)
        elif info.msgtype == "nav_msgs/msg/Odometry" and not name.endswith("/lead"):
            roles["input"].append(name)
        elif (info.msgtype == "nav_msgs/msg/Path" and name.endswith("/path")) or \
                info.msgtype == "nav_msgs/msg/Odometry":  # .../lead
            roles["scene"].append(name)
        elif info.msgtype == "diagnostic_msgs/msg/DiagnosticArray" and any(
                s.name == "policy_node" for _, m in bag.messages[name] for s in m.status):
            roles["status"].append(name)
    return roles


def topic_roles(bag: BagData) -> dict[str, str]:
    """topic -> its role in a driving report (command, action, status, input, scene)."""
    return {name: role for role, names in _roles(bag).items() for name in names}


def _stats(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {}
    return {"min": float(values.min()), "max": float(values.max()),
            "mean": float(values.mean()), "std": float(values.std())}


def _limits(status_values: dict[str, str]) -> dict[str, float] | None:
    try:
        return {k: float(status_values[k])
                for k in ("max_steer_rad", "max_accel_mps2", "max_decel_mps2")}
    except (KeyError, ValueError):
        return None


def _saturation(steer: np.ndarray, accel: np.ndarray, max_steer: float, max_accel: float,
                max_decel: float) -> dict[str, float]:
    n = max(1, len(steer))
    return {"steer_pct": 100.0 * float(np.sum(np.abs(steer) >= SATURATED * max_steer)) / n,
            "accel_pct": 100.0 * float(np.sum(accel >= SATURATED * max_accel)) / n,
            "brake_pct": 100.0 * float(np.sum(accel <= -SATURATED * max_decel)) / n}


def analyse(bag: BagData) -> dict[str, Any] | None:
    """The driving figures of ``bag`` (None when it holds no command, action or status)."""
    roles = _roles(bag)
    if not (roles["command"] or roles["action"] or roles["status"]):
        return None
    status = _status_figures(bag, roles["status"])
    inputs = {name: [t for t, _ in bag.messages[name]] for name in roles["input"]}
    commands = {name: _command_figures(bag, name, inputs, status["limits"])
                for name in roles["command"]}
    actions = _action_figures(bag, roles["action"][0]) if roles["action"] else None
    safety = drive_report.analyse(bag, roles, status) if roles["action"] else None
    return {"commands": commands, "actions": actions, "status": status["rows"],
            "events": status["events"], "limits": status["limits"],
            "command_interface": status["interface"],
            "inputs": {name: len(bag.messages[name]) for name in roles["input"]},
            "totals": status["last"] if status["rows"] else None, "safety": safety}


_COUNTS = ("safe_commands", "stale_commands", "rejected_inputs")


def _status_figures(bag: BagData, topics: list[str]) -> dict[str, Any]:
    """policy_node's statuses: one row each, the events (a warning level or a count that
    grew), the command limits and interface they announce, the last counts."""
    rows, events, limits, interface, params = [], [], None, None, {}
    last = dict.fromkeys(_COUNTS, 0)
    for name in topics:
        for t, msg in bag.messages[name]:
            for s in msg.status:
                if s.name != "policy_node":
                    continue
                v = {kv.key: kv.value for kv in s.values}
                row = _status_row(s, v, (t - bag.start_ns) * 1e-9)
                rows.append(row)
                delta = {k: row[k] - last[k] for k in last}
                if row["level"] or any(d > 0 for d in delta.values()):
                    events.append({**row, **{f"new_{k}": d for k, d in delta.items()}})
                last = {k: row[k] for k in _COUNTS}
                limits = _limits(v) or limits
                interface = v.get("command_interface", interface)
                params = v
    return {"rows": rows, "events": events, "limits": limits, "interface": interface,
            "last": last, "params": params}


def _status_row(status: Any, values: dict[str, str], t_s: float) -> dict[str, Any]:
    """One status as a row: time, level, message, the counts, the decision latency."""
    level = status.level if isinstance(status.level, int) \
        else int.from_bytes(status.level, "little")
    counts = {k: number(values.get(k), 0) for k in _COUNTS}
    counts = {k: int(x) if math.isfinite(x) else 0 for k, x in counts.items()}
    return {"t_s": t_s, "level": level, "message": status.message, **counts,
            "decide_latency_ms": number(values.get("decide_latency_ms"), math.nan)}


def _action_figures(bag: BagData, name: str) -> dict[str, Any]:
    """The normalised action stream (one per report): steer, accel, saturation at +-1."""
    kept = [(t, m) for t, m in bag.messages[name] if len(m.data) >= 2]
    data = np.array([list(m.data)[:2] for _, m in kept], np.float64).reshape(-1, 2)
    times = np.array([(t - bag.start_ns) * 1e-9 for t, _ in kept])
    return {"topic": name, "count": len(data), "t_s": times, "steer": data[:, 0],
            "accel": data[:, 1], "saturation": _saturation(data[:, 0], data[:, 1], 1.0, 1.0,
                                                           1.0)}


def _latency(log: np.ndarray, inputs: list[int]) -> tuple[np.ndarray, dict[str, float] | None]:
    """Each input's wait for the next command (both on the bag's clock). Inputs after the
    last command have none; inputs more than one command period (the median) before the
    first command came before the node commanded at all (starting up): both are left out."""
    ins = np.array(sorted(inputs), np.int64)
    if not len(log):
        return np.array([]), None
    period = int(np.median(np.diff(log))) if len(log) > 1 else 0
    ins = ins[(ins >= log[0] - period) & (ins <= log[-1])]
    lat = (log[np.searchsorted(log, ins, side="left")] - ins) * 1e-9
    if not len(lat):
        return lat, None
    return lat, {"inputs": len(lat), "mean": 1e3 * float(lat.mean()),
                 "p50": 1e3 * percentile(lat, 50), "p99": 1e3 * percentile(lat, 99),
                 "max": 1e3 * float(lat.max())}


def _command_figures(bag: BagData, name: str, inputs: dict[str, list[int]],
                     limits: dict[str, float] | None) -> dict[str, Any]:
    """One command topic: rate and jitter, value statistics, saturation against the
    announced limits, and each input topic's wait for the next command."""
    kind = COMMAND_TYPES[bag.topics[name].msgtype]
    log_t, steer, accel, speed, stamps = [], [], [], [], []
    for t, msg in bag.messages[name]:
        s, a, v, stamp = kind.read(msg)
        log_t.append(t)
        steer.append(float(s))
        accel.append(float(a))
        speed.append(math.nan if v is None else float(v))
        stamps.append(stamp)
    log = np.array(log_t, np.int64)
    steer_a, accel_a, speed_a = np.array(steer), np.array(accel), np.array(speed)
    figures: dict[str, Any] = {
        "topic": name, "type": bag.topics[name].msgtype, "count": len(log),
        **_timing(log, stamps),
        "steer": _stats(steer_a), "accel": _stats(accel_a),
        "speed": _stats(speed_a[np.isfinite(speed_a)]),
        "steer_unit": kind.steer_unit, "accel_unit": kind.accel_unit,
        "accel_signed": kind.signed,
        "t_s": (log - bag.start_ns) * 1e-9, "steer_values": steer_a,
        "accel_values": accel_a, "speed_values": speed_a,
        "saturation": None, "latency_ms": {}, "latencies_s": {}}
    if limits is not None and kind.steer_unit == "rad":
        sat = _saturation(steer_a, accel_a, limits["max_steer_rad"], limits["max_accel_mps2"],
                          limits["max_decel_mps2"])
        if not kind.signed:  # |accel| cannot tell throttle from brake: the action topic can
            sat["accel_pct"] = sat["brake_pct"] = math.nan
        figures["saturation"] = sat
    for topic, times in inputs.items():  # per input topic: they need not be in step
        lat, summary = _latency(log, times)
        if summary is not None:
            figures["latencies_s"][topic], figures["latency_ms"][topic] = lat, summary
    return figures


def _timing(log: np.ndarray, stamps: list[int | None]) -> dict[str, Any]:
    """Rate and periods on the publisher's clock when every command is stamped (a single
    zero stamp, sim time 0, is left out); unstamped types and zero stamps otherwise: the
    bag's log time."""
    nonzero = [s for s in stamps if s]
    stamped = len(nonzero) >= 2 and None not in stamps and len(stamps) - len(nonzero) <= 1
    clock = np.array(nonzero, np.int64) if stamped else log
    periods = np.diff(clock) * 1e-9
    duration = float(clock[-1] - clock[0]) * 1e-9 if len(clock) > 1 else 0.0
    median = float(np.median(periods)) if len(periods) else math.nan
    some = len(periods) > 0
    return {
        "clock": "header stamps" if stamped else "bag log time",
        "duration_s": duration,
        "rate_hz": (len(clock) - 1) / duration if duration > 0 else math.nan,
        "period_ms": {"mean": 1e3 * float(periods.mean()) if some else math.nan,
                      "std": 1e3 * float(periods.std()) if some else math.nan,
                      "p50": 1e3 * median, "p99": 1e3 * percentile(periods, 99),
                      "max": 1e3 * float(periods.max()) if some else math.nan},
        "late_periods": int(np.sum(periods > 1.5 * median)) if some else 0,
        "periods_s": periods}


def write(figures: dict[str, Any], out: Path) -> tuple[list[str], list[str]]:
    """CSVs and plots of the driving figures into ``out``; returns (markdown lines, files)."""
    files = []
    for name, c in figures["commands"].items():
        s = slug(name)
        files.append(write_csv(out / f"commands_{s}.csv", ("t_s", "steer", "accel", "speed"),
                               list(zip(c["t_s"].tolist(), c["steer_values"].tolist(),
                                        c["accel_values"].tolist(),
                                        c["speed_values"].tolist()))).name)
        if c["latencies_s"]:
            files.append(write_csv(out / f"latency_{s}.csv", ("input_topic", "latency_ms"),
                                   [[topic, 1e3 * x] for topic, lat in c["latencies_s"].items()
                                    for x in lat.tolist()]).name)
    a = figures["actions"]
    if a is not None:
        files.append(write_csv(out / "actions.csv", ("t_s", "steer", "accel"),
                               list(zip(a["t_s"].tolist(), a["steer"].tolist(),
                                        a["accel"].tolist()))).name)
    columns = ("t_s", "level", "message", "safe_commands", "stale_commands", "rejected_inputs",
               "decide_latency_ms")
    if figures["status"]:
        files.append(write_csv(out / "status.csv", columns,
                               [[r[k] for k in columns] for r in figures["status"]]).name)
    if figures["events"]:
        cols = (*columns[:3], "new_safe_commands", "new_stale_commands",
                "new_rejected_inputs")
        files.append(write_csv(out / "events.csv", cols,
                               [[r[k] for k in cols] for r in figures["events"]]).name)
    if figures["safety"] is not None:
        files.append(drive_report.write_series(figures["safety"], out))
    files += _plots(figures, out)
    return _markdown(figures, files), files


def _plots(figures: dict[str, Any], out: Path) -> list[str]:
    files = []
    for name, c in figures["commands"].items():
        s = slug(name)
        has_speed = bool(c["speed"])
        fig = figure(3 if has_speed else 2, 1)
        steer_ax, accel_ax = fig.axes[:2]
        steer_ax.plot(c["t_s"], c["steer_values"], lw=0.8)
        steer_ax.set(title=f"{name}: steering", ylabel=c["steer_unit"])
        accel_ax.plot(c["t_s"], c["accel_values"], lw=0.8, color="tab:orange")
        accel_ax.set(title=f"{name}: acceleration", ylabel=c["accel_unit"])
        if has_speed:
            fig.axes[2].plot(c["t_s"], c["speed_values"], lw=0.8, color="tab:green")
            fig.axes[2].set(title=f"{name}: target speed", ylabel="m/s")
        fig.axes[-1].set(xlabel="time (s)")
        for ax in fig.axes:
            ax.grid(alpha=0.3)
        files.append(save_png(fig, out / f"commands_{s}.png").name)
        fig = figure(1, 3, width=13)
        steer_ax, accel_ax, period_ax = fig.axes
        steer_ax.hist(c["steer_values"], bins=41)
        steer_ax.set(title="steering", xlabel=c["steer_unit"], ylabel="commands")
        accel_ax.hist(c["accel_values"], bins=41, color="tab:orange")
        accel_ax.set(title="acceleration", xlabel=c["accel_unit"])
        if len(c["periods_s"]):
            period_ax.hist(1e3 * c["periods_s"], bins=50, color="tab:green")
        period_ax.set(title=f"command period ({c['clock']})", xlabel="ms")
        files.append(save_png(fig, out / f"histograms_{s}.png").name)
        if c["latencies_s"]:
            fig = figure()
            ax = fig.axes[0]
            for topic, lat in c["latencies_s"].items():
                ax.hist(1e3 * lat, bins=50, alpha=0.7, label=topic)
            ax.set(title=f"input to next command on {name}", xlabel="ms", ylabel="inputs")
            ax.legend()
            files.append(save_png(fig, out / f"latency_{s}.png").name)
    a = figures["actions"]
    if a is not None and a["count"]:
        fig = figure()
        ax = fig.axes[0]
        ax.plot(a["t_s"], a["steer"], lw=0.8, label="steer")
        ax.plot(a["t_s"], a["accel"], lw=0.8, label="accel")
        ax.set(title=f"{a['topic']}: normalised action", xlabel="time (s)", ylim=(-1.05, 1.05))
        ax.grid(alpha=0.3)
        ax.legend()
        files.append(save_png(fig, out / "actions.png").name)
    if figures["safety"] is not None and (png := drive_report.plot(figures["safety"], out)):
        files.append(png)
    return files


def _markdown(figures: dict[str, Any], files: list[str]) -> list[str]:
    lines = ["## Driving", ""]
    totals = figures["totals"]
    if figures["inputs"]:
        lines.append("Inputs: " + ", ".join(f"{n} ({k} messages)"
                                            for n, k in figures["inputs"].items()) + ".")
    for name, c in figures["commands"].items():
        s, p = slug(name), c["period_ms"]
        lines += ["", f"### Commands on {name} ({c['type']})", "",
                  f"- {c['count']} commands over {fmt(c['duration_s'])} s: "
                  f"**{fmt(c['rate_hz'])} Hz** ({c['clock']})",
                  f"- period (jitter): mean {fmt(p['mean'], '.3f')} ms, std {fmt(p['std'], '.3f')}"
                  f" ms, p50 {fmt(p['p50'], '.3f')}, p99 {fmt(p['p99'], '.3f')}, max "
                  f"{fmt(p['max'], '.3f')} ms; {c['late_periods']} periods over 1.5x the median"]
        for topic, lat in c["latency_ms"].items():
            lines.append(f"- {topic} to the next command: {lat['inputs']} inputs, mean "
                         f"{fmt(lat['mean'], '.3f')} ms, p50 {fmt(lat['p50'], '.3f')}, p99 "
                         f"{fmt(lat['p99'], '.3f')}, max {fmt(lat['max'], '.3f')} ms (bag clock)")
        for key in ("steer", "accel", "speed"):
            st = c[key]
            if st:
                unit = c.get(key + "_unit", "m/s")
                lines.append(f"- {key} ({unit}): min {fmt(st['min'], '.3f')}, max "
                             f"{fmt(st['max'], '.3f')}, mean {fmt(st['mean'], '.3f')}, std "
                             f"{fmt(st['std'], '.3f')}")
        sat = c["saturation"]
        if sat is not None:
            text = (f"- at the limits (the status's max_steer_rad / max_accel_mps2 / "
                    f"max_decel_mps2): steering {fmt(sat['steer_pct'], '.1f')} %")
            if c["accel_signed"]:
                text += (f", accelerating {fmt(sat['accel_pct'], '.1f')} %, braking "
                         f"{fmt(sat['brake_pct'], '.1f')} %")
            else:
                text += " (acceleration: see the action's saturation)"
            lines.append(text)
        for png, what in ((f"commands_{s}.png", "Commands vs time"),
                          (f"histograms_{s}.png", "Command histograms and period"),
                          (f"latency_{s}.png", "Input-to-command latency")):
            if png in files:
                lines += ["", f"![{what}]({png})"]
    a = figures["actions"]
    if a is not None:
        sat = a["saturation"]
        lines += ["", f"### Actions on {a['topic']}", "",
                  f"{a['count']} actions; saturated (|a| >= {SATURATED}): steering "
                  f"{fmt(sat['steer_pct'], '.1f')} %, full throttle {fmt(sat['accel_pct'], '.1f')}"
                  f" %, full brake {fmt(sat['brake_pct'], '.1f')} %"]
        if "actions.png" in files:
            lines += ["", "![Actions](actions.png)"]
    if figures["safety"] is not None:
        lines += drive_report.markdown(figures["safety"], files)
    if totals is not None:
        lines += ["", "### Safety (policy_node status)", "",
                  f"- safe commands: {totals['safe_commands']}, stale-input commands: "
                  f"{totals['stale_commands']}, rejected inputs: {totals['rejected_inputs']} "
                  "(the node's counters at its last status)",
                  f"- {len(figures['status'])} status messages, "
                  f"{sum(r['level'] > 0 for r in figures['status'])} at WARN or above"]
        if figures["events"]:
            lines += ["", "| t (s) | level | message | new safe | new stale | new rejected |",
                      "|---|---|---|---|---|---|"]
            for e in figures["events"][:50]:
                lines.append(f"| {e['t_s']:.2f} | {e['level']} | {e['message']} | "
                             f"{e['new_safe_commands']} | {e['new_stale_commands']} | "
                             f"{e['new_rejected_inputs']} |")
            if len(figures["events"]) > 50:
                lines.append(f"\n({len(figures['events']) - 50} more in events.csv)")
    return lines
