"""Non-trivial instances of every dsp_driving.msgs type, driven by rosbags' field definitions.

Shared by test_msgs.py (golden bytes) and the transport tests, whose publisher and subscriber
processes each build the same sample independently.
"""

from __future__ import annotations

from collections.abc import Iterator
import itertools
from typing import Any

from rosbags.interfaces import Nodetype

from dsp_driving import msgs


def typestore() -> Any:
    """rosbags' ROS 2 Humble typestore plus the .msg texts msgs.py pins."""
    from dsp_driving.rosbag.writer import typestore as store

    return store()


def sample_message(ros_type: str) -> Any:
    """The deterministic sample of ``ros_type`` ('pkg/msg/Name')."""
    return sample(typestore(), ros_type)


def _scalar(ros_type: str, n: int) -> Any:
    """A non-default value of a ROS primitive, distinct per counter n."""
    if ros_type == "string":
        return f"ü✓ 漢字 {n} 🚗"
    if ros_type == "bool":
        return True
    if ros_type.startswith("float"):
        return (-1) ** n * (n + 0.25)  # exact in float32
    if ros_type in ("byte", "char", "uint8"):
        return n % 250 + 1
    return n * (-1 if ros_type.startswith("int") and n % 2 else 1)


def _sample_value(store: Any, node: int, detail: Any, counter: Iterator[int]) -> Any:
    """A non-default value for one field definition."""
    if node == Nodetype.BASE:
        return _scalar(detail[0], next(counter))
    if node == Nodetype.NAME:
        return sample(store, detail, counter)
    (sub_node, sub_detail), length = detail
    count = length if node == Nodetype.ARRAY else 2
    return [_sample_value(store, sub_node, sub_detail, counter) for _ in range(count)]


def sample(store: Any, name: str, counter: Iterator[int] | None = None) -> Any:
    """A msgs instance of `name` with every field non-default, sequences of two, nested."""
    counter = counter if counter is not None else itertools.count(1)
    _, fields = store.fielddefs[name]
    kwargs = {fname: _sample_value(store, node, detail, counter)
              for fname, (node, detail) in fields}
    return msgs.ROS_TYPES[name](**kwargs)


