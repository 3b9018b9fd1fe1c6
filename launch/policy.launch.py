"""Drive with the compact policy: policy_node on the car.

    ros2 launch dsp_driving policy.launch.py model:=/path/to/policy.onnx
    ros2 launch dsp_driving policy.launch.py model:=policy.onnx command_interface:=autoware \
        namespace:=vehicle params_file:=my_policy.yaml

The parameters are decided by dsp_driving.nodes.launch_support.policy_parameters.
"""

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from dsp_driving.nodes.launch_support import policy_parameters

ARGUMENTS = (
    ("model", "", "policy.onnx exported by training (required)"),
    ("params_file", "", "policy_node parameters; empty: config/policy.yaml"),
    ("command_interface", "", "ackermann | carla | carla_ackermann | autoware; empty: the "
                              "params file's (ackermann)"),
    ("namespace", "", "the node's namespace (its relative topics follow it)"),
)


def _nodes(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    params = policy_parameters(get_package_share_directory("dsp_driving"), value["model"],
                               value["params_file"], value["command_interface"])
    return [Node(package="dsp_driving", executable="policy_node", name="policy_node",
                 namespace=value["namespace"], parameters=[params], output="screen",
                 emulate_tty=True)]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, default, text in ARGUMENTS]
        + [OpaqueFunction(function=_nodes)])
