"""Where an artefact came from: the package version and the git commit of its source."""

from __future__ import annotations

from pathlib import Path
import subprocess

from dsp_driving import __version__

_SOURCE = Path(__file__).resolve().parent


def git_commit(source: Path = _SOURCE) -> str | None:
    """The commit of the checkout ``source`` lives in, '+dirty' if it has local changes.

    None when the package is not the ``dsp_driving/`` folder of a git checkout (a wheel, or a
    colcon install that happens to sit inside some repository) or git is absent.
    """
    try:
        head = subprocess.run(["git", "-C", str(source), "rev-parse", "--show-toplevel",
                               "HEAD"], capture_output=True, text=True, timeout=5, check=True)
        status = subprocess.run(["git", "-C", str(source), "status", "--porcelain"],
                                capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = head.stdout.split()
    if len(lines) != 2 or Path(lines[0]).resolve() / "dsp_driving" != source.resolve():
        return None
    commit = lines[1]
    return commit + ("+dirty" if status.stdout.strip() else "") if commit else None


def producer() -> str:
    """'dsp_driving <version>'."""
    return f"dsp_driving {__version__}"
