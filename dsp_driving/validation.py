"""The one validation idiom: ``require(cond, field, value, why)``.

Every configuration dataclass checks its fields in ``__post_init__`` with it, so every bad
value fails the same way: a ValueError naming the field and the value, e.g.
``invalid config: ppo.gamma=1.5: must be in [0, 1]``; ``coerce`` turns a YAML or command-line
value into its field's type the same way. The car side, the launch files and the trainer all
use it (no dependency beyond PyYAML).
"""

from __future__ import annotations

from collections.abc import Mapping
import math
from typing import Any

import yaml


def require(cond: bool, field: str, value: Any, why: str) -> None:
    """Raise ValueError naming ``field`` and its bad ``value`` unless ``cond`` holds."""
    if not cond:
        raise ValueError(f"invalid config: {field}={value!r}: {why}")


def is_finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is finite."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def coerce(field: str, value: Any, default: Any) -> Any:
    """Convert a YAML/CLI value to the type of the field's default."""
    kind = next((k for k in _COERCERS if isinstance(default, k)), None)  # bool before int
    if kind is None:
        return value
    try:
        return _COERCERS[kind](field, value)
    except (TypeError, ValueError):
        raise ValueError(
            f"invalid config: {field}={value!r}: expected {type(default).__name__}"
        ) from None


def _to_bool(field: str, value: Any) -> bool:
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ValueError
    if isinstance(value, (bool, int)) and value in (0, 1):
        return bool(value)
    raise ValueError


def _to_int(field: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError
    number = float(value) if isinstance(value, str) else value
    if isinstance(number, float) and not number.is_integer():
        raise ValueError
    return int(number)


def _to_float(field: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError
    return float(value)


def _to_tuple(field: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        value = yaml.safe_load(value)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    return tuple(coerce(f"{field}[{i}]", v, 0) for i, v in enumerate(value))


def _to_str(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError
    return value


def _to_dict(field: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = yaml.safe_load(value) or {}
    if not isinstance(value, Mapping):
        raise ValueError
    return dict(value)


# the default's type -> its converter; bool first (a bool is an int too)
_COERCERS = {bool: _to_bool, int: _to_int, float: _to_float, tuple: _to_tuple, str: _to_str,
             dict: _to_dict}
