"""``dsp-driving drive``: policy_node without ROS 2, over the DDS transport.

    dsp-driving drive --model policy.onnx [--params-file config/policy.yaml] [--set key=value]

The keys are policy_node's parameters (dsp_driving.nodes.parameters.PolicyNodeConfig); a params
file is in ROS 2 form (``policy_node: ros__parameters: ...``) or a plain mapping.
"""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from dsp_driving.config import read_yaml_mapping, unwrap_ros_params


def parameters(params_file: str | None, model: str | None, sets: list[str]) -> dict[str, Any]:
    """Parameters from the file, then --model, then --set key=value (YAML values)."""
    values: dict[str, Any] = {}
    if params_file:
        values.update(unwrap_ros_params(read_yaml_mapping(params_file, "--params-file")))
    if model:
        values["model"] = model
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected key=value")
        values[key.strip()] = yaml.safe_load(text)
    return values


def _drive(args: argparse.Namespace) -> int:
    from dsp_driving.nodes.policy_node import run
    from dsp_driving.transport import create_node

    values = parameters(args.params_file, args.model, args.set or [])
    try:  # the dds backend imports cyclonedds here
        node = create_node("policy_node", backend="dds", domain_id=args.domain,
                           parameters=values)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"`dsp-driving drive` needs {exc.name}: pip install -e "
                                  "'.[dds]'") from None
    run(node, duration_s=args.duration)
    return 0


def add_parser(sub: Any) -> None:
    """Register `drive` on the dsp-driving parser."""
    p = sub.add_parser("drive", help="run policy_node over DDS (no ROS 2 needed)")
    p.add_argument("--model", help="policy.onnx (parameter `model`)")
    p.add_argument("--params-file", help="YAML of policy_node parameters (ROS 2 form or plain)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a parameter, e.g. --set rate_hz=20")
    p.add_argument("--domain", type=int, help="DDS domain id (default: $ROS_DOMAIN_ID or 0)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.set_defaults(func=_drive)
