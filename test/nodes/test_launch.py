"""The launch files' decisions (nodes/launch_support.py), fed to the real nodes' parameter code.

ROS 2's `launch` cannot run here; the files' own code is checked for the arguments the issue
names and for calling launch_support with exactly its keywords.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

from dsp_driving.config import Config, load_config
from dsp_driving.nodes import launch_support
from dsp_driving.nodes.launch_support import (
    carla_bridge_remappings,
    policy_parameters,
    sim_eval_parameters,
    train_parameters,
)
from dsp_driving.nodes.parameters import PolicyNodeConfig

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"


def launch_table(name: str, table: str = "ARGUMENTS") -> list:
    """A module-level literal tuple of a launch file (its ARGUMENTS table, ...)."""
    tree = ast.parse((LAUNCH / name).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == table:
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"{name} has no {table}")


def launch_arguments(name: str) -> list[str]:
    """The names in a launch file's ARGUMENTS table."""
    return [row[0] for row in launch_table(name)]


def test_launch_files_declare_the_arguments_and_match_launch_support() -> None:
    train = launch_arguments("train.launch.py")
    assert {"env", "config", "out", "sim", "carla_host", "carla_port"} <= set(train)
    # the file calls train_parameters(share, **arguments): the names must be its keywords
    assert set(train) == set(inspect.signature(train_parameters).parameters) - {"share"}
    assert launch_arguments("policy.launch.py") == ["model", "params_file", "command_interface",
                                                    "namespace"]
    sim_eval = launch_arguments("sim_eval.launch.py")
    assert {"model", "params_file", "role_name", "start_bridge"} <= set(sim_eval)
    node_args = launch_table("sim_eval.launch.py", "NODE_ARGUMENTS")
    assert set(node_args) <= set(sim_eval)
    assert set(node_args) == set(inspect.signature(sim_eval_parameters).parameters) - {"share"}
    for name in ("train.launch.py", "policy.launch.py", "sim_eval.launch.py"):
        compile((LAUNCH / name).read_text(), name, "exec")


def config_of(params: dict) -> Config:
    from dsp_driving.config import SECTIONS, from_dict
    from dsp_driving.transport.base import unflatten_params

    return from_dict(unflatten_params({k: v for k, v in params.items()
                                       if k.split(".")[0] in SECTIONS}))


def test_train_parameters_per_sim() -> None:
    params = train_parameters(REPO)
    want = load_config(REPO / "config" / "highway.yaml")
    assert config_of(params) == want  # train.yaml's defaults under highway.yaml
    assert params["train.env_id"] == "dsp_driving/HighwayDrive-v0" and "out" not in params

    params = train_parameters(REPO, sim="carla", out="runs/c", carla_host="10.0.0.2",
                              carla_port="2100")
    assert params["train.env_id"] == "dsp_driving/Carla-v0"
    assert (params["out"], params["carla_host"], params["carla_port"]) == \
        ("runs/c", "10.0.0.2", 2100)
    assert params["carla_config"] == str(REPO / "config" / "carla.yaml")
    assert config_of(params).ppo == want.ppo  # the same PPO settings drive CARLA

    own = REPO / "config" / "train.yaml"  # config:= replaces highway.yaml
    params = train_parameters(REPO, env="CartPole-v1", config=str(own))
    assert config_of(params) == load_config(own, ["train.env_id=CartPole-v1"])


def test_values_get_their_parameters_types(tmp_path: Path) -> None:
    """ROS 2 refuses a value whose type differs from the declared default's."""
    mine = tmp_path / "mine.yaml"
    mine.write_text("trainer_node:\n  ros__parameters:\n    pruning:\n      eps: 1e-8\n"
                    "      kappa_final: 1\n    net:\n      actor_hidden: [64]\n")
    params = train_parameters(REPO, config=str(mine))
    assert params["pruning.eps"] == 1e-8 and type(params["pruning.eps"]) is float
    assert type(params["pruning.kappa_final"]) is float  # 1 -> 1.0
    assert params["net.actor_hidden"] == [64]
    mine.write_text("trainer_node:\n  ros__parameters:\n    ppo:\n      gama: 0.9\n")
    with pytest.raises(ValueError, match="unknown trainer_node parameter 'ppo.gama'"):
        train_parameters(REPO, config=str(mine))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"sim": "gazebo"}, "sim='gazebo'"),
    ({"sim": "carla", "carla_port": "20o0"}, "carla_port='20o0'"),
    ({"sim": "carla", "carla_port": "70000"}, "carla_port='70000'"),
    ({"carla_host": "10.0.0.2"}, "need sim:=carla"),
    ({"config": "/nonexistent.yaml"}, "config not found: /nonexistent.yaml"),
])
def test_train_parameters_reject_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        train_parameters(REPO, **kwargs)


def test_policy_parameters(tmp_path: Path) -> None:
    model = tmp_path / "policy.onnx"
    with pytest.raises(ValueError, match="model:=''"):
        policy_parameters(REPO, "")
    with pytest.raises(ValueError, match="no such file"):
        policy_parameters(REPO, str(model))
    model.write_bytes(b"onnx")  # the node itself checks the model; here only the path
    with pytest.raises(ValueError, match="command_interface:='can'"):
        policy_parameters(REPO, str(model), command_interface="can")
    params = policy_parameters(REPO, str(model), command_interface="autoware")
    cfg = PolicyNodeConfig(**params)  # every name is a parameter of the node
    assert cfg == dataclasses.replace(PolicyNodeConfig(), model=str(model),
                                      command_interface="autoware")
    # sim_eval.launch.py: ros inputs from carla-ros-bridge (latched route), CARLA commands at
    # the training control rate
    params = sim_eval_parameters(REPO, str(model), role_name="hero", rate_hz="5.0")
    assert (params["input_mode"], params["command_interface"], params["role_name"],
            params["rate_hz"], params["path_qos"]) == ("ros", "carla", "hero", 5.0,
                                                       "transient_local")
    with pytest.raises(ValueError, match="role_name:='hero' with start_bridge:=true"):
        sim_eval_parameters(REPO, str(model), role_name="hero", start_bridge="true")
    assert carla_bridge_remappings("hero") == [("odom", "/carla/hero/odometry"),
                                               ("path", "/carla/hero/waypoints")]


def test_launch_parameters_are_accepted_by_the_nodes(tmp_path: Path) -> None:
    """The dicts the launch files pass, given to the real nodes' parameter code (dds)."""
    pytest.importorskip("cyclonedds")
    from dsp_driving.nodes import trainer_node
    from dsp_driving.transport import create_node, dataclass_from_parameters
    from dsp_driving.transport.dds import claim_domain_id

    params = train_parameters(REPO, sim="carla", carla_port="2100", out=str(tmp_path))
    with create_node("trainer_node", backend="dds", domain_id=claim_domain_id(),
                     parameters=params) as node:
        cfg, own = trainer_node.parameters(node)
    assert cfg.train.env_id == "dsp_driving/Carla-v0" and own.carla_port == 2100
    assert cfg.pruning == load_config(REPO / "config" / "highway.yaml").pruning

    model = tmp_path / "policy.onnx"
    model.write_bytes(b"onnx")
    params = policy_parameters(REPO, str(model), input_mode="ros")
    with create_node("policy_node", backend="dds", domain_id=claim_domain_id(),
                     parameters=params) as node:
        cfg = dataclass_from_parameters(node, PolicyNodeConfig)
    assert cfg.input_mode == "ros" and cfg.model == str(model)


def test_launch_support_needs_no_ros() -> None:
    source = inspect.getsource(launch_support)
    assert "import launch" not in source and "rclpy" not in source
