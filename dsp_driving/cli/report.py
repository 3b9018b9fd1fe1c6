"""``dsp-driving report BAG`` and ROS 2's ``bag_report``: a rosbag2 bag of training or
driving -> report.md, PNG plots, CSVs (dsp_driving.analysis.report.make_report)."""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
from typing import Any

from dsp_driving.analysis.report import default_out, make_report
from dsp_driving.rosbag.reader import BagError


def add_parser(sub: Any) -> None:
    """Register `report` on the dsp-driving parser."""
    p = sub.add_parser("report", help="analyse a rosbag2 bag of training or driving: "
                       "report.md, PNG plots, CSVs")
    _arguments(p)
    p.set_defaults(func=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bag", type=Path, help="the bag folder (with metadata.yaml), e.g. "
                   "runs/RUN/bag")
    p.add_argument("--out", type=Path, help="report folder (default: BAG_report beside it)")


def run(args: argparse.Namespace) -> int:
    try:
        result = make_report(args.bag, args.out)
    except BagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else default_out(args.bag)
    if result["partial"]:
        print(f"warning: PARTIAL report, part of the bag is unreadable: "
              f"{'; '.join(result['problems'])}", file=sys.stderr)
    print(f"report: {out / 'report.md'} ({len(result['files'])} plots and tables)")
    return 0


def main(argv: list[str] | None = None) -> None:
    """``ros2 run dsp_driving bag_report BAG [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="bag_report", description=__doc__.split("\n\n")[0])
    _arguments(parser)
    args, _ = parser.parse_known_args(argv)  # ros2 run may append --ros-args
    sys.exit(run(args))
