"""``dsp-driving report BAG [--out DIR]`` (ROS 2: ``ros2 run dsp_driving bag_report BAG``).

Reads a rosbag2 bag (MCAP or sqlite3; RUN_DIR/bag of a training run, policy_node's
record_bag, or ``ros2 bag record``'s) and writes DIR/report.md, DIR/report.json (the
figures), a PNG per plot and a CSV per series. Training topics and driving topics are
recognised (analysis/training.py, analysis/driving.py); the others are listed. A bag that is
partly unreadable gives a report marked PARTIAL that says what was lost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dsp_driving.analysis import driving, training
from dsp_driving.io_utils import atomic_write_json, atomic_write_text, json_safe
from dsp_driving.rosbag.reader import BagData, read_bag


def default_out(bag: str | Path) -> Path:
    """BAG_report beside the bag (the bag folder itself is left as rosbag2 wrote it)."""
    bag = Path(bag).resolve()  # `report .` inside the bag: its name, not '.'
    folder = bag.parent if bag.is_file() else bag
    return folder.parent / f"{folder.name}_report"


def _strip_series(figures: dict[str, Any] | None) -> dict[str, Any] | None:
    """The figures without their numpy series (those live in the CSVs)."""
    if figures is None:
        return None
    out = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            value = _strip_series(value)
        if not isinstance(value, np.ndarray):
            out[key] = value
    return out


def make_report(bag_path: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Analyse the bag and write the report; returns report.json's content."""
    bag = read_bag(bag_path)
    out = Path(out) if out is not None else default_out(bag.path)
    out.mkdir(parents=True, exist_ok=True)
    train_figures, drive_figures = training.analyse(bag), driving.analyse(bag)
    roles = {**driving.topic_roles(bag),  # topic -> what the report uses it for
             **{name: f"training ({role})" for name in bag.topics
                if (role := training.topic_role(name))}}
    lines, files = _header(bag, train_figures, drive_figures, roles), []
    for figures, module in ((train_figures, training), (drive_figures, driving)):
        if figures is not None:
            section, written = module.write(figures, out)
            lines += ["", *section]
            files += written
    if train_figures is None and drive_figures is None:
        lines += ["", "No training (dsp/*) or driving (commands, action, policy_node status) "
                  "topics in this bag: nothing to analyse beyond the topic list."]
    result = {"bag": str(bag.path), "storage": bag.storage, "partial": bag.partial,
              "problems": bag.problems, "duration_s": bag.duration_s,
              "topics": {name: {"type": t.msgtype, "listed": t.listed, "read": t.read,
                                "failed": t.failed, "decoded": t.known_type,
                                "role": roles.get(name)}
                         for name, t in sorted(bag.topics.items())},
              "training": json_safe(_strip_series(train_figures)),
              "driving": json_safe(_strip_series(drive_figures)), "files": files}
    atomic_write_json(out / "report.json", result)
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return result


def _header(bag: BagData, train_figures: Any, drive_figures: Any, roles: dict[str, str]
            ) -> list[str]:
    kinds = [k for k, f in (("training", train_figures), ("driving", drive_figures)) if f]
    lines = [f"# Bag report: {bag.path.name}", "",
             f"`{bag.path}`: {bag.storage}, {sum(t.read for t in bag.topics.values())} "
             f"messages over {bag.duration_s:.2f} s; "
             f"{' and '.join(kinds) or 'no known'} topics."]
    if bag.partial:
        lines += ["", "> **PARTIAL REPORT**: part of this bag could not be read; the figures "
                  "cover only what was.", ">"]
        lines += [f"> - {p}" for p in bag.problems]
    lines += ["", "| topic | type | messages | used as |", "|---|---|---|---|"]
    for name, t in sorted(bag.topics.items()):
        used = roles.get(name, "not analysed (unknown)")
        count = f"{t.read}" + (f" of {t.listed}" if t.listed and t.listed != t.read else "")
        if not t.known_type:
            used, count = "not decoded: its type is defined neither in the bag nor here", \
                str(t.listed or "?")
        lines.append(f"| {name} | {t.msgtype} | {count} | {used} |")
    return lines
