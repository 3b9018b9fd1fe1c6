"""DDS domain ids claimed per test, so concurrent test sessions never share one."""

from __future__ import annotations

from collections.abc import Callable
import fcntl
import os
from pathlib import Path
import tempfile

import pytest

# ROS 2 advises ids 0-101 on Linux (higher ones reach the ephemeral port range); 0 is the
# default a developer's own ROS 2 might be using.
FIRST_ID, LAST_ID = 1, 101
_held: list[int] = []  # open lock files: held until this process exits


def claim_domain() -> int:
    """An id no other process on this machine holds (exclusive flock on a file per id)."""
    lock_dir = Path(tempfile.gettempdir())
    for domain in range(FIRST_ID, LAST_ID + 1):
        fd = os.open(lock_dir / f"dsp_driving_dds_domain_{domain}.lock",
                     os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _held.append(fd)
        return domain
    raise RuntimeError(f"all DDS domain ids {FIRST_ID}-{LAST_ID} are held by other processes")


@pytest.fixture
def domain() -> Callable[[], int]:
    """Factory: a fresh domain id for each call."""
    return claim_domain
