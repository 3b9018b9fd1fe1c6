"""Closed-loop evaluation in CARLA: policy_node wired to carla-ros-bridge.

    ros2 launch dsp_driving sim_eval.launch.py model:=/path/to/policy.onnx
    ros2 launch dsp_driving sim_eval.launch.py model:=policy.onnx start_bridge:=true \
        host:=10.0.0.2 town:=Town04

policy_node runs with input_mode ros: the ego's odometry (/carla/<role>/odometry) and
carla_waypoint_publisher's route (/carla/<role>/waypoints, latched) become the contract
observation, and CarlaEgoVehicleControl goes to /carla/<role>/vehicle_control_cmd. The node
runs on the bridge's simulated clock (use_sim_time) at rate_hz = 5, the training control
period of 0.2 s, while the bridge ticks synchronously every fixed_delta_seconds without
waiting for commands, as the Carla-v0 env holds each action for 4 ticks of 0.05 s. With
start_bridge:=true carla_ros_bridge, the example ego (role ego_vehicle) and the waypoint
publisher are started too (packages of carla-simulator/ros-bridge; only then are they
needed).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from dsp_driving.nodes.launch_support import carla_bridge_remappings, sim_eval_parameters

ARGUMENTS = (
    ("model", "", "policy.onnx exported by training (required)"),
    ("params_file", "", "policy_node parameters; empty: config/policy.yaml"),
    ("role_name", "ego_vehicle", "the ego's role name in carla-ros-bridge"),
    ("rate_hz", "5.0", "commands per simulated second: 1 / the training control period"),
    ("start_bridge", "false", "also start carla_ros_bridge, the example ego and the waypoint "
                              "publisher"),
    ("host", "localhost", "start_bridge: the CARLA server's host"),
    ("port", "2000", "start_bridge: the CARLA server's RPC port"),
    ("town", "Town04", "start_bridge: the map"),
    ("fixed_delta_seconds", "0.05", "start_bridge: simulated seconds per tick"),
)
NODE_ARGUMENTS = ("model", "params_file", "role_name", "start_bridge", "rate_hz")


def _policy_node(context, *args, **kwargs):
    from ament_index_python.packages import get_package_share_directory

    value = {name: LaunchConfiguration(name).perform(context) for name in NODE_ARGUMENTS}
    params = sim_eval_parameters(get_package_share_directory("dsp_driving"), **value)
    return [Node(package="dsp_driving", executable="policy_node", name="policy_node",
                 parameters=[params, {"use_sim_time": True}],
                 remappings=carla_bridge_remappings(value["role_name"]),
                 output="screen", emulate_tty=True)]


def _include(package, launch_file, arguments):
    """Another package's launch file, looked up only when start_bridge is true."""
    return IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare(package),
                                                            launch_file])),
        launch_arguments=arguments.items(),
        condition=IfCondition(LaunchConfiguration("start_bridge")))


def generate_launch_description():
    server = {"host": LaunchConfiguration("host"), "port": LaunchConfiguration("port")}
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, default, text in ARGUMENTS]
        + [_include("carla_ros_bridge", "carla_ros_bridge.launch.py",
                    {**server, "town": LaunchConfiguration("town"),
                     "fixed_delta_seconds": LaunchConfiguration("fixed_delta_seconds"),
                     "synchronous_mode": "True",
                     "synchronous_mode_wait_for_vehicle_control_command": "False"}),
           _include("carla_spawn_objects", "carla_example_ego_vehicle.launch.py", {}),
           _include("carla_waypoint_publisher", "carla_waypoint_publisher.launch.py",
                    {**server, "role_name": LaunchConfiguration("role_name")}),
           OpaqueFunction(function=_policy_node)])
