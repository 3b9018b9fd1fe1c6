"""What the launch files decide, in plain Python (tested without ROS 2).

launch/*.launch.py read their arguments, call these functions, and hand the result to
launch_ros ``Node`` actions. Parameters are passed as one flat dict (dotted names), read from
the YAML files here, so they reach the node whatever its namespace (a params file's
``policy_node:`` key would not match ``/ns/policy_node``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from dsp_driving.config import read_yaml_mapping, unwrap_ros_params
from dsp_driving.nodes.parameters import COMMAND_INTERFACES
from dsp_driving.transport.base import flatten_params
from dsp_driving.validation import coerce

SIM_ENVS = {"highway": "dsp_driving/HighwayDrive-v0", "carla": "dsp_driving/Carla-v0"}


def read_parameters(path: str | Path, what: str) -> dict[str, Any]:
    """A params file (ROS 2 form or plain) as flat dotted parameters."""
    return flatten_params(unwrap_ros_params(read_yaml_mapping(path, what)))


def typed(params: dict[str, Any], defaults: dict[str, Any], node: str) -> dict[str, Any]:
    """Each value converted to its parameter's type (ROS 2 refuses a parameter whose type
    differs from the declared default's: a YAML ``1e-8`` is a string, ``1`` an int); unknown
    names are errors here rather than in the node."""
    out = {}
    for name, value in params.items():
        if name not in defaults:
            raise ValueError(f"unknown {node} parameter {name!r}")
        value = coerce(name, value, defaults[name])
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def _port(value: str | int, field: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field}={value!r}: expected a TCP port number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{field}={value!r}: expected a TCP port number (0: the config's)")
    return port


def train_parameters(share: str | Path, sim: str = "highway", env: str = "", config: str = "",
                     out: str = "", carla_host: str = "", carla_port: str | int = "",
                     carla_config: str = "") -> dict[str, Any]:
    """trainer_node's parameters for train.launch.py.

    config/train.yaml (every default), then ``config`` (default: config/highway.yaml, the
    driving task's PPO and pruning settings), then ``train.env_id`` = ``env`` or the sim's
    task. For sim=carla the bridge reads ``carla_config`` (default config/carla.yaml) with
    ``carla_host`` / ``carla_port`` over it.
    """
    if sim not in SIM_ENVS:
        raise ValueError(f"sim={sim!r}: expected one of {sorted(SIM_ENVS)}")
    share = Path(share)
    params = read_parameters(share / "config" / "train.yaml", "config/train.yaml")
    params.update(read_parameters(config or share / "config" / "highway.yaml", "config"))
    params["train.env_id"] = env or SIM_ENVS[sim]
    if out:
        params["out"] = out
    if sim == "carla":
        params["carla_config"] = carla_config or str(share / "config" / "carla.yaml")
        if carla_host:
            params["carla_host"] = carla_host
        if str(carla_port):
            params["carla_port"] = _port(carla_port, "carla_port")
    elif carla_host or str(carla_port) or carla_config:
        raise ValueError(f"carla_host/carla_port/carla_config need sim:=carla (sim={sim!r})")
    from dsp_driving.config import Config
    from dsp_driving.nodes.parameters import TrainerNodeConfig

    defaults = {**flatten_params(Config().to_dict()), **dataclasses.asdict(TrainerNodeConfig())}
    return typed(params, defaults, "trainer_node")


def policy_parameters(share: str | Path, model: str, params_file: str = "",
                      command_interface: str = "", **extra: Any) -> dict[str, Any]:
    """policy_node's parameters for policy.launch.py and sim_eval.launch.py: the params file
    (default config/policy.yaml), then ``model``, ``command_interface`` and ``extra``."""
    if not model:
        raise ValueError("model:='': give the policy file, e.g. model:=runs/x/policy.onnx")
    if not Path(model).is_file():
        raise ValueError(f"model:={model!r}: no such file")
    if command_interface and command_interface not in COMMAND_INTERFACES:
        raise ValueError(f"command_interface:={command_interface!r}: expected one of "
                         f"{COMMAND_INTERFACES}")
    params = read_parameters(params_file or Path(share) / "config" / "policy.yaml",
                             "params_file")
    params["model"] = str(Path(model).resolve())
    if command_interface:
        params["command_interface"] = command_interface
    params.update(extra)
    from dsp_driving.nodes.parameters import PolicyNodeConfig

    return typed(params, dataclasses.asdict(PolicyNodeConfig()), "policy_node")


# carla_spawn_objects' example ego (objects.json) is spawned with this role name
EXAMPLE_EGO_ROLE = "ego_vehicle"


def sim_eval_parameters(share: str | Path, model: str, params_file: str = "",
                        role_name: str = EXAMPLE_EGO_ROLE, start_bridge: str = "false",
                        rate_hz: str | float = 5.0) -> dict[str, Any]:
    """policy_node's parameters for sim_eval.launch.py: ros inputs, CARLA commands at the
    training control rate (``rate_hz`` on the bridge's simulated clock), the latched route of
    carla_waypoint_publisher."""
    if start_bridge.strip().lower() in ("true", "1") and role_name != EXAMPLE_EGO_ROLE:
        raise ValueError(f"role_name:={role_name!r} with start_bridge:=true: the example ego "
                         f"is spawned as {EXAMPLE_EGO_ROLE!r}; start your own ego and bridge "
                         "(start_bridge:=false) to use another role")
    return policy_parameters(share, model, params_file, "carla", input_mode="ros",
                             role_name=role_name, rate_hz=rate_hz,
                             path_qos="transient_local")


def carla_bridge_remappings(role_name: str) -> list[tuple[str, str]]:
    """policy_node's ros-mode inputs from carla-ros-bridge: the ego's odometry and the route
    of carla_waypoint_publisher (the command topic already is /carla/<role>/...)."""
    return [("odom", f"/carla/{role_name}/odometry"),
            ("path", f"/carla/{role_name}/waypoints")]
