"""``dsp-driving``: train, export, evaluate, drive, inspect topics and report on bags without
ROS. One module per subcommand; each registers its parser with ``add_parser``."""

from __future__ import annotations

import argparse
import logging
import sys

from dsp_driving.cli import (
    drive,
    evaluate,
    export,
    report,
    safety_report,
    sweep,
    table,
    topic,
    train,
)
from dsp_driving.transport.base import interrupt_on_signals, package_logging_to

SUBCOMMANDS = (train, evaluate, export, topic, drive, report, sweep, table, safety_report)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dsp-driving``."""
    parser = argparse.ArgumentParser(prog="dsp-driving", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


class _CliFormatter(logging.Formatter):
    """INFO as the plain message; warnings and errors prefixed as the CLI always wrote them."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        return text


def _stdout_handler() -> logging.Handler:
    """The package's log records on stdout, formatted as the CLI always wrote them."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_CliFormatter())
    return handler


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so bags, checkpoints and DDS entities are closed
    try:
        with interrupt_on_signals(), package_logging_to(_stdout_handler()):
            return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, ModuleNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
