"""``dsp-driving export``: RUN_DIR/policy.onnx (+ policy.json) from a run's compact actor."""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    """Register `export` on the dsp-driving parser."""
    p = sub.add_parser("export", help="write RUN_DIR/policy.onnx (+ policy.json) from a run's "
                       "compact actor")
    p.add_argument("run", help="run folder or actor_compact.pt")
    p.add_argument("--out", type=Path, help="output .onnx (default: RUN_DIR/policy.onnx)")
    p.set_defaults(func=run)



def run(args: argparse.Namespace) -> int:
    from dsp_driving.export import ExportError, export_run

    try:
        export_run(args.run, args.out)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
