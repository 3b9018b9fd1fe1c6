"""``dsp-driving safety-report``: driving safety of a sweep's dsp and dense policies, seed by
seed, on held-out episodes, against the targets (dsp_driving.experiments.safety_report;
docs/driving.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    """Register `safety-report` on the dsp-driving parser."""
    p = sub.add_parser("safety-report", help="evaluate a sweep's driving policies for safety "
                       "and tabulate dsp against dense (resumable)")
    p.add_argument("source", type=Path, nargs="?", help="a sweep's env folder, e.g. "
                   "runs/paper/highway (its <variant>/seed<k>/policy.onnx); omit to only "
                   "re-tabulate --out")
    p.add_argument("--out", type=Path, default=Path("results/driving"),
                   help="where policies, eval.json files and the table go "
                   "(default: results/driving)")
    p.add_argument("--variants", default="dense,dsp", help="comma-separated (default: "
                   "dense,dsp)")
    p.add_argument("--seeds", help="comma-separated training seeds (default: every finished "
                   "one)")
    p.add_argument("--episodes", type=int, default=100, help="held-out episodes per policy "
                   "(default: 100)")
    p.add_argument("--seed", type=int, default=31000, help="first held-out reset seed "
                   "(default: 31000)")
    p.add_argument("--no-plots", action="store_true", help="no per-policy eval plots")
    p.set_defaults(func=run)


def _ints(text: str | None, field: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{field}={text!r}: expected comma-separated integers") from None


def run(args: argparse.Namespace) -> int:
    from dsp_driving.experiments import safety_report as sr

    if args.episodes < 1:
        raise ValueError(f"--episodes={args.episodes}: must be >= 1")
    if args.seed < 0:
        raise ValueError(f"--seed={args.seed}: must be >= 0")
    if args.source is not None:
        if not args.source.is_dir():
            raise FileNotFoundError(f"source={args.source}: no such folder")
        variants = [v for v in args.variants.split(",") if v]
        folders = sr.collect(args.source, args.out, variants, _ints(args.seeds, "--seeds"))
        for i, folder in enumerate(folders, 1):
            doc = sr.evaluate_folder(folder, args.episodes, args.seed,
                                     plots=not args.no_plots)
            print(f"[{i}/{len(folders)}] {folder}: return {doc['return_mean']:.2f}, collision "
                  f"rate {doc['collision_rate']:.3f}, driving score {doc['driving_score']:.3f}")
    rows, written = sr.write(args.out)
    print((args.out / "table.md").read_text(encoding="utf-8"), end="")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
