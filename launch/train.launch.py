"""Train a pruned PPO driving policy with trainer_node, publishing its compaction as it learns.

    ros2 launch dsp_driving train.launch.py                      # highway-env, the default
    ros2 launch dsp_driving train.launch.py sim:=carla carla_host:=10.0.0.2 carla_port:=2000
    ros2 launch dsp_driving train.launch.py config:=my_train.yaml out:=runs/exp1

Topics: dsp/compaction, dsp/compaction/summary, dsp/training, dsp/policy (docs/ros.md).
The parameters are decided by dsp_driving.nodes.launch_support.train_parameters.
"""

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from dsp_driving.nodes.launch_support import train_parameters

ARGUMENTS = (
    ("sim", "highway", "simulator: highway (embedded highway-env) or carla (a CARLA server)"),
    ("env", "", "gymnasium env id; empty: the sim's task (dsp_driving/HighwayDrive-v0 or "
                "dsp_driving/Carla-v0)"),
    ("config", "", "training params file over config/train.yaml; empty: config/highway.yaml"),
    ("out", "", "run folder; empty: runs/<env>_s<seed>_<time>"),
    ("carla_host", "", "sim:=carla: the server's host; empty: carla config's (127.0.0.1)"),
    ("carla_port", "", "sim:=carla: the server's RPC port; empty: carla config's (2000)"),
    ("carla_config", "", "sim:=carla: the bridge's YAML; empty: config/carla.yaml"),
)


def _nodes(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    params = train_parameters(get_package_share_directory("dsp_driving"), **value)
    return [Node(package="dsp_driving", executable="trainer_node", name="trainer_node",
                 parameters=[params], output="screen", emulate_tty=True)]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, default, text in ARGUMENTS]
        + [OpaqueFunction(function=_nodes)])
