"""Import a module in a fresh interpreter with some packages blocked (layering tests)."""

from __future__ import annotations

import subprocess
import sys

BLOCKER = """
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in {blocked!r}):
            raise ImportError(f"blocked: {{name}}")
sys.meta_path.insert(0, Blocker())
{imports}
"""


def import_with_blocked(modules: tuple[str, ...], blocked: tuple[str, ...]
                        ) -> subprocess.CompletedProcess:
    """``import`` each of ``modules`` while every name in ``blocked`` (and below) fails."""
    code = BLOCKER.format(blocked=blocked, imports="\n".join(f"import {m}" for m in modules))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def run_with_blocked(code: str, blocked: tuple[str, ...], timeout: float = 300
                     ) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter while every name in ``blocked`` (and below) fails
    to import (``sys`` is imported for it)."""
    return subprocess.run([sys.executable, "-c", BLOCKER.format(blocked=blocked, imports=code)],
                          capture_output=True, text=True, timeout=timeout)
