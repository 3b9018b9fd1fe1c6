"""The ROS-free core imports with rclpy, carla, cyclonedds and ROS 2 launch blocked."""

from __future__ import annotations

import json
import subprocess
import sys

from import_checks import import_with_blocked

BLOCKED = ("rclpy", "carla", "cyclonedds", "launch_ros", "launch", "ament_index_python",
           "ray")
CORE = ("dsp_driving", "dsp_driving.config", "dsp_driving.rl.ppo", "dsp_driving.pruning",
        "dsp_driving.trainer", "dsp_driving.cli", "dsp_driving.actor_file",
        "dsp_driving.evaluation", "dsp_driving.callbacks", "dsp_driving.export",
        "dsp_driving.inference", "dsp_driving.provenance", "dsp_driving.transport",
        "dsp_driving.transport.base", "dsp_driving.driving.contract",
        "dsp_driving.driving.reward", "dsp_driving.driving.highway",
        "dsp_driving.driving.registry",
        "dsp_driving.controller", "dsp_driving.nodes.trainer_node",
        "dsp_driving.nodes.policy_node", "dsp_driving.nodes.launch_support",
        "dsp_driving.rosbag.writer", "dsp_driving.analysis.report",
        "dsp_driving.experiments.sweep", "dsp_driving.experiments.table",
        "dsp_driving.pruning.oneshot")
# What runs on the car: never torch.
CAR = ("dsp_driving.controller", "dsp_driving.inference", "dsp_driving.driving.contract",
       "dsp_driving.nodes.policy_node", "dsp_driving.cli.drive", "dsp_driving.rosbag.writer",
       "dsp_driving.analysis.report")

SCRIPT = """
import importlib, json, sys

BLOCKED = {blocked!r}

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked for the layering test: {{name}}")
        return None

sys.meta_path.insert(0, Blocker())
for name in BLOCKED:  # the blocker works
    try:
        importlib.import_module(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{{name}} was importable despite the blocker")
for name in {core!r}:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({{"loaded": loaded, "core": sorted(m for m in sys.modules
                                                 if m.startswith("dsp_driving"))}}))
"""


def test_core_imports_without_ros_carla_or_dds() -> None:
    code = SCRIPT.format(blocked=BLOCKED, core=CORE)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert set(CORE) <= set(result["core"])


def test_the_car_side_imports_without_torch() -> None:
    code = SCRIPT.format(blocked=(*BLOCKED, "torch"), core=CAR)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []


def test_the_launch_files_need_none_of_the_nodes_dependencies() -> None:
    """launch/*.launch.py run launch_support in the launch process: no onnxruntime, numpy
    or torch there (nor any of the nodes' other dependencies)."""
    heavy = ("onnxruntime", "numpy", "torch", "gymnasium", "cyclonedds", "rosbags",
             "matplotlib")
    code = SCRIPT.format(blocked=(*BLOCKED, *heavy),
                         core=("dsp_driving.nodes.launch_support",
                               "dsp_driving.nodes.parameters"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["loaded"] == []


def test_pruning_does_not_import_rl() -> None:
    """rl/ (the PPO loop) uses pruning/ (the hooks); both build on modules/ (the MLP), and
    pruning/ never imports rl/ back."""
    proc = import_with_blocked(("dsp_driving.pruning", "dsp_driving.modules"),
                               ("dsp_driving.rl",))
    assert proc.returncode == 0, proc.stderr
