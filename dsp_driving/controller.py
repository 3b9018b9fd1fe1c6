"""The policy node's logic without ROS: input checks, the stale-input watchdog, command limits.

``policy_node`` wires topics into a :class:`PolicyController`; everything that decides what
the car is told lives here, in plain Python, so it is tested without spinning a node.

- An observation is accepted only if it has the contract's size and finite values; anything
  else is rejected with a reason and the car gets the safe command until a good one arrives.
- The safe command holds the last steering and brakes at ``safe_decel_mps2``.
- Every command goes through :func:`dsp_driving.driving.contract.to_physical`, so steering and
  acceleration never leave ``ActionLimits``; at ``max_speed_mps`` acceleration is cut to 0.
- A new policy file is loaded and checked before it replaces the old one; a bad file leaves
  the old policy driving.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from dsp_driving.driving import contract
from dsp_driving.inference import OnnxPolicy, PolicyLoadError
from dsp_driving.transport.base import ros_topic

INPUT_MODES = ("features", "ros")
TRIGGERS = ("timer", "input")
PATH_QOS = ("volatile", "transient_local")
COMMAND_INTERFACES = ("ackermann", "carla", "carla_ackermann", "autoware")
_OBS_LOW, _OBS_HIGH = contract.observation_bounds()


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
    policy_topic: str = "dsp/policy"  # hot reload: new policy paths (empty: no hot reload)
    path_qos: str = "volatile"  # ros mode: the path subscription's durability; transient_local
    # receives a latched path published before the node started (carla_waypoint_publisher)
    record_bag: str = ""  # record inputs, action, command and status into this new rosbag2
    # folder ({stamp} -> YYYYmmdd-HHMMSS); empty: no recording
    record_segment_s: float = 10.0  # the bag is written in segments: a crash loses at most this

    def __post_init__(self) -> None:
        if self.input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode={self.input_mode!r}: expected one of {INPUT_MODES}")
        if self.policy_topic:
            try:
                ros_topic(self.policy_topic)
            except ValueError as exc:
                raise ValueError(f"policy_topic={self.policy_topic!r}: {exc}") from None
        if self.path_qos not in PATH_QOS:
            raise ValueError(f"path_qos={self.path_qos!r}: expected one of {PATH_QOS}")
        if self.trigger not in TRIGGERS:
            raise ValueError(f"trigger={self.trigger!r}: expected one of {TRIGGERS}")
        if self.command_interface not in COMMAND_INTERFACES:
            raise ValueError(f"command_interface={self.command_interface!r}: expected one of "
                             f"{COMMAND_INTERFACES}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{f.name}={value!r}: must be a finite number > 0")
        if self.safe_decel_mps2 > self.max_decel_mps2:
            raise ValueError(f"safe_decel_mps2={self.safe_decel_mps2!r}: must be <= "
                             f"max_decel_mps2={self.max_decel_mps2!r}")

    @property
    def limits(self) -> contract.ActionLimits:
        """The command limits as the contract's ActionLimits."""
        return contract.ActionLimits(self.max_steer_rad, self.max_accel_mps2,
                                     self.max_decel_mps2, self.max_speed_mps,
                                     self.carla_max_steer_rad)


class Decision(NamedTuple):
    """What to command now: the normalised action, its physical value, and why."""

    action: np.ndarray  # float32 [2], in [-1, 1]
    physical: contract.PhysicalAction
    safe: bool  # True: the safe command (no fresh, valid input)
    reason: str  # "" when the policy drove; else no_input | stale | rejected: <why>


def check_policy(policy: OnnxPolicy) -> None:
    """Raise PolicyLoadError unless ``policy`` reads the contract observation and acts [2]."""
    if policy.discrete or policy.obs_dim != contract.OBS_DIM or policy.act_dim != contract.ACT_DIM:
        raise PolicyLoadError(
            f"{policy.path}: a driving policy maps [{contract.OBS_DIM}] observations to "
            f"[{contract.ACT_DIM}] continuous actions; this one is {policy.kind} "
            f"[{policy.obs_dim}] -> [{policy.act_dim}] (env {policy.env_id!r})")
    names = policy.observation_names
    if names is not None and tuple(names) != contract.OBSERVATION_NAMES:
        raise PolicyLoadError(f"{policy.path}: its observation names {names} are not the "
                              "contract's: trained on another observation")
    # one forward on a plain scene: a graph that loads but cannot run never starts driving
    probe = np.zeros(contract.OBS_DIM, np.float32)
    probe[contract.INDEX["cos_heading_error"]] = 1.0
    try:
        out = np.asarray(policy.act(probe), np.float64).reshape(-1)
    except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own exception types)
        raise PolicyLoadError(f"{policy.path}: a test forward failed: {exc}") from None
    if out.shape != (contract.ACT_DIM,) or not np.all(np.isfinite(out)):
        raise PolicyLoadError(f"{policy.path}: a test forward gave {out.tolist()}, not a "
                              f"finite [{contract.ACT_DIM}]")


def load_policy(path: str | Path) -> OnnxPolicy:
    """Load and check a driving policy (PolicyLoadError naming the problem)."""
    policy = OnnxPolicy(path)
    check_policy(policy)
    return policy


class PolicyController:
    """Holds the policy and the newest observation; decides each command."""

    def __init__(self, policy: OnnxPolicy, cfg: PolicyNodeConfig) -> None:
        check_policy(policy)
        self.policy, self.cfg, self.limits = policy, cfg, cfg.limits
        self._obs: np.ndarray | None = None
        self._stamp_s = -math.inf
        self._speed_mps = 0.0
        # the last command (the scene's prev_action in ros mode); (0, 0) until the policy has
        # driven once, as at an env reset: the safe commands of a node still waiting for its
        # first input are not part of the drive
        self._last_action = np.zeros(contract.ACT_DIM, np.float32)
        self.driving = False  # the policy has produced a command
        self.rejected = 0  # observations refused (wrong size, non-finite)
        self.safe_commands = 0  # commands that were the safe command
        self.stale_commands = 0  # of which: the input was older than stale_timeout_s

    # ---- inputs -----------------------------------------------------------------------------

    def set_observation(self, values: Any, stamp_s: float, speed_mps: float | None = None
                        ) -> str:
        """Take a contract observation received at ``stamp_s``; returns "" or why it was
        refused (a refused input also voids the previous one: the safe command follows)."""
        try:
            obs = np.asarray(values, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            return self._reject(f"not numeric ({exc})")
        if obs.shape != (contract.OBS_DIM,):
            return self._reject(f"{obs.size} values, expected {contract.OBS_DIM}")
        if not np.all(np.isfinite(obs)):
            bad = [contract.OBSERVATION_NAMES[i] for i in np.flatnonzero(~np.isfinite(obs))]
            return self._reject(f"non-finite {bad}")
        self._obs = np.clip(obs, _OBS_LOW, _OBS_HIGH).astype(np.float32)  # as in training
        self._stamp_s = float(stamp_s)
        speed = float(self._obs[contract.INDEX["speed"]]) * contract.SPEED_SCALE_MPS
        self._speed_mps = float(speed if speed_mps is None else speed_mps)
        return ""

    def set_scene(self, scene: contract.Scene, stamp_s: float) -> str:
        """Take a scene (ros mode): the observation is built by the training code itself."""
        try:
            obs = contract.observe(dataclasses.replace(scene, prev_action=tuple(
                float(a) for a in self._last_action)))
        except ValueError as exc:
            return self._reject(str(exc))
        return self.set_observation(obs, stamp_s, scene.ego.speed)

    def refuse(self, why: str) -> str:
        """Refuse an input that never became an observation (a bad odometry message): the
        previous observation is void and the safe command follows; returns ``why``."""
        return self._reject(why)

    def _reject(self, why: str) -> str:
        self._obs, self._stamp_s = None, -math.inf
        self.rejected += 1
        return why

    # ---- decision ---------------------------------------------------------------------------

    @property
    def speed_mps(self) -> float:
        """The ego speed of the newest accepted input (m/s)."""
        return self._speed_mps

    def decide(self, now_s: float) -> Decision:
        """The command for now: the policy's action on fresh input, else the safe command."""
        if self._obs is None:
            return self._safe("no_input" if self.rejected == 0 else "rejected")
        age = now_s - self._stamp_s
        if age > self.cfg.stale_timeout_s:
            self.stale_commands += 1
            return self._safe(f"stale ({age:.3f} s old)")
        raw = np.asarray(self.policy.act(self._obs), np.float64).reshape(-1)
        if raw.shape != (contract.ACT_DIM,) or not np.all(np.isfinite(raw)):
            return self._safe(f"policy output {raw.tolist()} is not a finite [2]")
        action = np.clip(raw, -1.0, 1.0)
        if self._speed_mps >= self.limits.max_speed_mps:
            action[1] = min(action[1], 0.0)
        self.driving = True
        return self._command(action, safe=False, reason="")

    def safe(self, reason: str) -> Decision:
        """The safe command, e.g. when deciding failed (``reason`` says why)."""
        return self._safe(reason)

    def _safe(self, reason: str) -> Decision:
        self.safe_commands += 1
        brake = -self.cfg.safe_decel_mps2 / self.limits.max_decel_mps2
        return self._command(np.array([self._last_action[0], brake]), safe=True, reason=reason)

    def _command(self, action: np.ndarray, safe: bool, reason: str) -> Decision:
        steer, accel = contract.clip_action(action)
        command = np.array([steer, accel], np.float32)
        if self.driving:
            self._last_action = command
        physical = contract.to_physical((steer, accel), self.limits)
        return Decision(command, physical, safe, reason)

    # ---- hot reload -------------------------------------------------------------------------

    def reload(self, path: str | Path) -> str:
        """Swap in the policy at ``path`` if it loads and fits; returns "" or why not (the old
        policy keeps driving)."""
        try:
            new = load_policy(path)
        except Exception as exc:  # noqa: BLE001  (whatever is wrong, the old policy drives on)
            return str(exc)
        self.policy = new
        return ""
