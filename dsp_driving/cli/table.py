"""``dsp-driving table``: a sweep's table (table.md, table.csv, table.png) with interval
estimates over seeds (dsp_driving.experiments.table; docs/experiments.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    """Register `table` on the dsp-driving parser."""
    p = sub.add_parser("table", help="tabulate a sweep: size and return per env x variant")
    p.add_argument("dir", type=Path, help="a sweep folder (dsp-driving sweep --out), or one "
                   "env folder of it")
    p.add_argument("--results", type=Path, metavar="DEST", help="also write the table there "
                   "and copy every trial's small files (summary.json, config.yaml, eval.json; "
                   "dsp's policy.onnx and policy.json), e.g. results/paper; for a folder of "
                   "env folders, each env's table goes into its env folder too, and DEST "
                   "gets README.md (the table, dsp's goals, how to reproduce it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dsp_driving.experiments.publish import README, write_table
    from dsp_driving.experiments.table import holds_env_folders, rows_markdown

    rows = write_table(args.dir, args.results)
    print(rows_markdown(rows), end="")
    envs = list(dict.fromkeys(r["env"] for r in rows))
    per_env = holds_env_folders(args.dir)
    for target in filter(None, (args.dir, args.results)):
        print(f"wrote {target / 'table.md'}, table.csv and table.png")
        if per_env:
            print(f"wrote each env's table.md, table.csv and table.png into "
                  f"{', '.join(str(target / env) for env in envs)}")
    if per_env and args.results:
        print(f"wrote {args.results / README} (the table, every env's goals and the "
              "commands that reproduce it)")
    return 0
