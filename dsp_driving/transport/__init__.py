"""Transports: one small node interface (base.py), two backends.

- ``rclpy`` (ros.py): real ROS 2, used when rclpy is importable (ROS 2 sourced);
- ``dds`` (dds.py): ROS 2 wire-compatible Cyclone DDS on loopback, everywhere else.

``DSP_TRANSPORT=dds`` (or ``rclpy``) forces a backend. Importing this package imports neither.
"""

from __future__ import annotations

from collections.abc import Mapping
import importlib.util
import os
from typing import Any

from dsp_driving.transport.base import (
    DEFAULT_QOS,
    LATCHED_QOS,
    SENSOR_QOS,
    Logger,
    Node,
    Publisher,
    QosProfile,
    Timer,
    config_from_parameters,
    dataclass_from_parameters,
    flatten_params,
    unflatten_params,
)

BACKENDS = ("rclpy", "dds")

__all__ = ["BACKENDS", "DEFAULT_QOS", "LATCHED_QOS", "SENSOR_QOS", "Logger", "Node",
           "Publisher", "QosProfile", "Timer", "config_from_parameters", "create_node",
           "dataclass_from_parameters", "flatten_params", "select_backend",
           "unflatten_params"]


def select_backend(requested: str | None = None) -> str:
    """``requested``, else $DSP_TRANSPORT, else rclpy when importable, else dds."""
    choice = (requested or os.environ.get("DSP_TRANSPORT", "")).strip().lower()
    if choice:
        if choice not in BACKENDS:
            raise ValueError(f"DSP_TRANSPORT={choice!r}: expected one of {BACKENDS}")
        return choice
    spec = importlib.util.find_spec("rclpy")
    if spec is None or spec.origin is None:  # absent, or a bare folder named rclpy (a
        return "dds"  # namespace package, e.g. test/rclpy on a test run's path)
    try:  # on the path is not enough: a ROS built for another Python fails to import
        import rclpy  # noqa: F401
    except ImportError:
        return "dds"
    return "rclpy"


def create_node(name: str, backend: str | None = None,
                parameters: Mapping[str, Any] | None = None, domain_id: int | None = None,
                **kwargs: Any) -> Node:
    """A node on the selected backend.

    ``parameters`` (dotted names) are the dds backend's parameter values; under rclpy they come
    from ROS 2 itself (params files, --ros-args), so passing them there is an error.
    """
    backend = select_backend(backend)
    if backend == "dds":
        from dsp_driving.transport.dds import DdsNode

        return DdsNode(name, domain_id=domain_id, parameters=parameters, **kwargs)
    if parameters:
        raise ValueError("under rclpy, parameters come from ROS 2 (--ros-args --params-file "
                         "FILE or -p name:=value), not from create_node")
    if domain_id is not None:
        raise ValueError("under rclpy the domain id comes from ROS_DOMAIN_ID")
    from dsp_driving.transport.ros import RclpyNode

    return RclpyNode(name, **kwargs)
