"""The one validation idiom: ``require(cond, field, value, why)``.

Every configuration dataclass checks its fields in ``__post_init__`` with it, so every bad
value fails the same way: a ValueError naming the field and the value, e.g.
``invalid config: ppo.gamma=1.5: must be in [0, 1]``. No dependencies: the car side, the
launch files and the trainer all use it.
"""

from __future__ import annotations

import math
from typing import Any


def require(cond: bool, field: str, value: Any, why: str) -> None:
    """Raise ValueError naming ``field`` and its bad ``value`` unless ``cond`` holds."""
    if not cond:
        raise ValueError(f"invalid config: {field}={value!r}: {why}")


def is_finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is finite."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))
