"""The nodes' own parameters, each dataclass field one ROS 2 parameter.

Kept apart from the nodes and free of numpy, onnxruntime and torch: the launch files check
parameters with these classes (nodes/launch_support.py) in the launch process, which must not
need the nodes' dependencies.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from dsp_driving.topics import POLICY_TOPIC
from dsp_driving.transport.base import ros_topic
from dsp_driving.validation import require

if TYPE_CHECKING:
    from dsp_driving.controller import SafetyConfig
    from dsp_driving.driving import contract

INPUT_MODES = ("features", "ros")
TRIGGERS = ("timer", "input")
PATH_QOS = ("volatile", "transient_local")
COMMAND_INTERFACES = ("ackermann", "carla", "carla_ackermann", "autoware")


@dataclasses.dataclass(frozen=True)
class PolicyNodeConfig:
    """policy_node's parameters (flat: each field is one ROS parameter)."""

    model: str = ""  # policy.onnx (its policy.json sidecar beside it)
    input_mode: str = "features"  # features (Float32MultiArray) | ros (Odometry + Path)
    command_interface: str = "ackermann"  # ackermann | carla | carla_ackermann | autoware
    rate_hz: float = 10.0
    trigger: str = "timer"  # timer: a command every 1/rate_hz from the newest input; input:
    # also one at once on each accepted input (lowest latency), the timer filling any gap
    stale_timeout_s: float = 0.3  # inputs older than this -> the safe command
    role_name: str = "ego_vehicle"  # carla-ros-bridge's /carla/<role_name>/...
    frame_id: str = "base_link"
    max_steer_rad: float = 0.5
    max_accel_mps2: float = 3.0
    max_decel_mps2: float = 6.0
    max_speed_mps: float = 40.0
    carla_max_steer_rad: float = math.radians(70.0)
    safe_decel_mps2: float = 3.0  # the safe command's braking
    speed_horizon_s: float = 0.5  # AckermannDrive/autoware target speed = v + a * horizon
    speed_limit_mps: float = 25.0  # ros mode: the target speed (nav_msgs/Path has none)
    lane_width_m: float = 3.5  # ros mode
    left_width_m: float = 1.75  # ros mode: lane centre to the road's left edge
    right_width_m: float = 1.75  # ros mode: lane centre to the road's right edge
    ego_length_m: float = 4.5  # ros mode: bumper-to-bumper gaps to the lead vehicle
    lead_length_m: float = 4.5  # ros mode
    warn_period_s: float = 2.0  # throttle for repeated warnings
    policy_topic: str = POLICY_TOPIC  # hot reload: new policy paths (empty: no hot reload)
    path_qos: str = "volatile"  # ros mode: the path subscription's durability; transient_local
    # receives a latched path published before the node started (carla_waypoint_publisher)
    record_bag: str = ""  # record inputs, action, command and status into this new rosbag2
    # folder ({stamp} -> YYYYmmdd-HHMMSS); empty: no recording
    record_segment_s: float = 10.0  # the bag is written in segments: a crash loses at most this

    def __post_init__(self) -> None:
        for name, choices in (("input_mode", INPUT_MODES), ("path_qos", PATH_QOS),
                              ("trigger", TRIGGERS), ("command_interface", COMMAND_INTERFACES)):
            value = getattr(self, name)
            require(value in choices, name, value, f"expected one of {choices}")
        if self.policy_topic:
            try:
                ros_topic(self.policy_topic)
            except ValueError as exc:
                require(False, "policy_topic", self.policy_topic, str(exc))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float):
                require(math.isfinite(value) and value > 0, f.name, value,
                        "must be a finite number > 0")
        require(self.safe_decel_mps2 <= self.max_decel_mps2, "safe_decel_mps2",
                self.safe_decel_mps2, f"must be <= max_decel_mps2={self.max_decel_mps2!r}")

    @property
    def safety(self) -> SafetyConfig:
        """What the controller decides with (its watchdog, safe command and limits)."""
        from dsp_driving.controller import SafetyConfig

        return SafetyConfig(self.stale_timeout_s, self.safe_decel_mps2, self.limits)

    @property
    def limits(self) -> contract.ActionLimits:
        """The command limits as the contract's ActionLimits."""
        from dsp_driving.driving import contract

        return contract.ActionLimits(self.max_steer_rad, self.max_accel_mps2,
                                     self.max_decel_mps2, self.max_speed_mps,
                                     self.carla_max_steer_rad)


@dataclasses.dataclass(frozen=True)
class TrainerNodeConfig:
    """trainer_node's own parameters (besides the training config's)."""

    out: str = ""  # run folder; empty: runs/<env>_s<seed>_<time>
    resume: bool = False  # continue the run in `out` (its saved config; train.total_steps)
    carla_config: str = ""  # dsp_driving/Carla-v0's YAML; empty: a resumed run's, else defaults
    carla_host: str = ""  # overrides the carla config's host when set
    carla_port: int = 0  # overrides the carla config's port when > 0
    wait_for_subscribers_s: float = 0.0  # before training, wait this long for a subscriber
    record_bag: bool = True  # also write the dsp/* topics into RUN_DIR/bag (rosbag2, MCAP)

    def __post_init__(self) -> None:
        require(0 <= self.carla_port <= 65535, "carla_port", self.carla_port,
                "must be 0 (the config's) or a TCP port")
        require(math.isfinite(self.wait_for_subscribers_s) and self.wait_for_subscribers_s >= 0,
                "wait_for_subscribers_s", self.wait_for_subscribers_s, "must be >= 0")
