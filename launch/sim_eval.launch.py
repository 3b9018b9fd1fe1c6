"""Closed-loop evaluation in CARLA: policy_node wired to carla-ros-bridge.

    ros2 launch dsp_driving sim_eval.launch.py model:=/path/to/policy.onnx
    ros2 launch dsp_driving sim_eval.launch.py model:=policy.onnx start_bridge:=true \
        host:=10.0.0.2 town:=Town04

policy_node runs with input_mode ros: the ego's odometry (/carla/<role>/odometry) and
carla_waypoint_publisher's route (/carla/<role>/waypoints) become the contract observation,
and CarlaEgoVehicleControl goes to /carla/<role>/vehicle_control_cmd. With start_bridge:=true
carla_ros_bridge (synchronous, waiting for our command each tick), an ego vehicle and the
waypoint publisher are started too (packages of carla-simulator/ros-bridge).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from dsp_driving.nodes.launch_support import carla_bridge_remappings, policy_parameters

ARGUMENTS = (
    ("model", "", "policy.onnx exported by training (required)"),
    ("params_file", "", "policy_node parameters; empty: config/policy.yaml"),
    ("role_name", "ego_vehicle", "the ego's role name in carla-ros-bridge"),
    ("start_bridge", "false", "also start carla_ros_bridge, an ego and the waypoint publisher"),
    ("host", "localhost", "start_bridge: the CARLA server's host"),
    ("port", "2000", "start_bridge: the CARLA server's RPC port"),
    ("town", "Town04", "start_bridge: the map"),
    ("fixed_delta_seconds", "0.05", "start_bridge: simulated seconds per tick"),
)


def _policy_node(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    role = value["role_name"]
    params = policy_parameters(get_package_share_directory("dsp_driving"), value["model"],
                               value["params_file"], "carla", input_mode="ros",
                               role_name=role)
    return [Node(package="dsp_driving", executable="policy_node", name="policy_node",
                 parameters=[params], remappings=carla_bridge_remappings(role),
                 output="screen", emulate_tty=True)]


def _include(package, launch_file, arguments):
    return IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            os.path.join(get_package_share_directory(package), launch_file)),
        launch_arguments={k: LaunchConfiguration(v) for k, v in arguments.items()}.items(),
        condition=IfCondition(LaunchConfiguration("start_bridge")))


def generate_launch_description():
    server = {"host": "host", "port": "port"}
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, default, text in ARGUMENTS]
        + [DeclareLaunchArgument("synchronous_mode_wait_for_vehicle_control_command",
                                 default_value="true"),
           _include("carla_ros_bridge", "carla_ros_bridge.launch.py",
                    {**server, "town": "town", "fixed_delta_seconds": "fixed_delta_seconds",
                     "synchronous_mode_wait_for_vehicle_control_command":
                     "synchronous_mode_wait_for_vehicle_control_command"}),
           _include("carla_spawn_objects", "carla_example_ego_vehicle.launch.py",
                    {**server, "role_name": "role_name"}),
           _include("carla_waypoint_publisher", "carla_waypoint_publisher.launch.py",
                    {**server, "role_name": "role_name"}),
           OpaqueFunction(function=_policy_node)])
