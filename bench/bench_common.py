"""What every benchmark report states about the machine and the source it measured."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
import platform
import subprocess

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (platform.processor() elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def git_head() -> str:
    """Short HEAD, flagged when dsp_driving/ or bench/ have uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "dsp_driving", "bench"],
                               cwd=ROOT, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    return head + (" (uncommitted changes in dsp_driving/ or bench/)" if dirty.strip() else "")


def machine_info(versions: dict[str, str]) -> dict[str, str]:
    """CPU model, cores, affinity, Python and the given library versions, git state, load."""
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return {"cpu": cpu_model(), "nproc": str(os.cpu_count()),
            "affinity": ",".join(map(str, affinity)) or "?", "python": platform.python_version(),
            **versions, "git": git_head(),
            "load": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())}


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table, numbers right-aligned."""
    align = ["---" if not rows or not rows[0][i][:1].isdigit() else "---:"
             for i in range(len(head))]
    return "\n".join("| " + " | ".join(r) + " |" for r in [head, align, *rows])


def text_table(head: list[str], rows: list[list[str]]) -> str:
    """A fixed-width text table."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in [head, *rows])


def cpu_times() -> list[int]:
    """The machine's CPU time counters from /proc/stat (user ... steal), or [] elsewhere."""
    with contextlib.suppress(OSError, ValueError):
        return [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    return []


def steal_share(start: list[int], end: list[int]) -> str:
    """Steal time (the host running something else) as a share of all CPU time in between."""
    if len(start) < 8 or len(end) < 8:
        return "unknown"
    delta = [b - a for a, b in zip(start, end)]
    return f"{100 * delta[7] / max(sum(delta), 1):.1f} %"
