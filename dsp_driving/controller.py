"""The policy node's logic without ROS: input checks, the stale-input watchdog, command limits.

``policy_node`` wires topics into a :class:`PolicyController`; everything that decides what
the car is told lives here, in plain Python, so it is tested without spinning a node.

- An observation is accepted only if it has the contract's size and finite values; anything
  else is rejected with a reason and the car gets the safe command until a good one arrives.
- The safe command holds the last steering and brakes at ``safe_decel_mps2``.
- Every command goes through :func:`dsp_driving.driving.contract.to_physical`, so steering and
  acceleration never leave ``ActionLimits``; at ``max_speed_mps`` acceleration is cut to 0.
- A new policy file is loaded and checked before it replaces the old one; a bad file leaves
  the old policy driving. A policy is checked (one test forward) once per load: a controller
  takes a policy that passed :func:`check_policy` as it is and checks any other.
- Every command is also a step of ``drive`` (driving/drive_safety.py): speed, TTC and time
  headway of the observation it was decided from, commanded jerk and steering rate, over the
  last STATUS_WINDOW_S: policy_node's status. The input checks and the watchdog are an
  :class:`ObservationInput`, which the bag report replays a drive's inputs through, so the
  report's figures are the status's for the same stream.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, NamedTuple
import weakref

import numpy as np

from dsp_driving.driving import contract
from dsp_driving.driving.drive_safety import STATUS_WINDOW_S, DriveSafety
from dsp_driving.inference import OnnxPolicy
from dsp_driving.policy_format import PolicyLoadError
from dsp_driving.validation import require

_OBS_LOW, _OBS_HIGH = contract.observation_bounds()
DEFAULT_CONTROL_PERIOD_S = 0.1  # policy_node's default rate_hz, 10 Hz


@dataclasses.dataclass(frozen=True)
class SafetyConfig:
    """What the controller decides with: the stale-input watchdog, the safe command's
    braking and the command limits (policy_node builds it from its parameters,
    ``PolicyNodeConfig.safety``)."""

    stale_timeout_s: float = 0.3  # inputs older than this -> the safe command
    safe_decel_mps2: float = 3.0  # the safe command's braking
    limits: contract.ActionLimits = contract.ActionLimits()

    def __post_init__(self) -> None:
        for name in ("stale_timeout_s", "safe_decel_mps2"):
            value = getattr(self, name)
            require(math.isfinite(value) and value > 0, name, value,
                    "must be a finite number > 0")
        require(self.safe_decel_mps2 <= self.limits.max_decel_mps2, "safe_decel_mps2",
                self.safe_decel_mps2,
                f"must be <= max_decel_mps2={self.limits.max_decel_mps2!r}")


class Decision(NamedTuple):
    """What to command now: the normalised action, its physical value, and why."""

    action: np.ndarray  # float32 [2], in [-1, 1]
    physical: contract.PhysicalAction
    safe: bool  # True: the safe command (no fresh, valid input)
    reason: str  # "" when the policy drove; else no_input | stale | rejected: <why>


# the policies that passed check_policy (weak: a dropped policy leaves the set by itself)
_CHECKED: weakref.WeakSet[OnnxPolicy] = weakref.WeakSet()


def check_policy(policy: OnnxPolicy) -> None:
    """Raise PolicyLoadError unless ``policy`` reads the contract observation and acts [2];
    a policy that passes is remembered, so a PolicyController need not check it again."""
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
    _CHECKED.add(policy)


def load_policy(path: str | Path) -> OnnxPolicy:
    """Load and check a driving policy (PolicyLoadError naming the problem); the one check
    of this load, which PolicyController relies on."""
    policy = OnnxPolicy(path)
    check_policy(policy)
    return policy


class ObservationInput:
    """The newest accepted observation, its stamp and ego speed: the controller's input checks
    and watchdog without a policy (the bag report replays a drive's inputs through one)."""

    def __init__(self, stale_timeout_s: float) -> None:
        self.stale_timeout_s = stale_timeout_s
        self.obs: np.ndarray | None = None  # float32, clipped to the contract's bounds
        self.stamp_s = -math.inf
        self.speed_mps = 0.0
        self.rejected = 0  # observations refused (wrong size, non-finite)

    def set_observation(self, values: Any, stamp_s: float, speed_mps: float | None = None
                        ) -> str:
        """Take a contract observation received at ``stamp_s``; returns "" or why it was
        refused (a refused input also voids the previous one)."""
        try:
            obs = np.asarray(values, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            return self.refuse(f"not numeric ({exc})")
        if obs.shape != (contract.OBS_DIM,):
            return self.refuse(f"{obs.size} values, expected {contract.OBS_DIM}")
        if not np.all(np.isfinite(obs)):
            bad = [contract.OBSERVATION_NAMES[i] for i in np.flatnonzero(~np.isfinite(obs))]
            return self.refuse(f"non-finite {bad}")
        self.obs = np.clip(obs, _OBS_LOW, _OBS_HIGH).astype(np.float32)  # as in training
        self.stamp_s = float(stamp_s)
        speed = float(self.obs[contract.INDEX["speed"]]) * contract.SPEED_SCALE_MPS
        self.speed_mps = float(speed if speed_mps is None else speed_mps)
        return ""

    def set_scene(self, scene: contract.Scene, stamp_s: float, prev_action: Any) -> str:
        """Take a scene (ros mode): the observation is built by the training code itself,
        with ``prev_action`` (the last command) as the scene's."""
        try:
            obs = contract.observe(dataclasses.replace(scene, prev_action=tuple(
                float(a) for a in prev_action)))
        except ValueError as exc:
            return self.refuse(str(exc))
        return self.set_observation(obs, stamp_s, scene.ego.speed)

    def refuse(self, why: str) -> str:
        """Refuse an input: the previous observation is void; returns ``why``."""
        self.obs, self.stamp_s = None, -math.inf
        self.rejected += 1
        return why

    def fault(self, now_s: float) -> str:
        """"" when the observation is fresh at ``now_s``; else why not: no_input, rejected or
        stale (older than stale_timeout_s, or from the future: the clock went back)."""
        if self.obs is None:
            return "no_input" if self.rejected == 0 else "rejected"
        age = now_s - self.stamp_s
        if age > self.stale_timeout_s:
            return f"stale ({age:.3f} s old)"
        if age < -self.stale_timeout_s:  # the clock went back: a simulator reset under
            # use_sim_time (a small step of the wall clock is not)
            return (f"stale (received {-age:.3f} s in the future: the clock went "
                    "back)")
        return ""

    def fresh(self, now_s: float) -> np.ndarray | None:
        """The observation when it is fresh at ``now_s``, else None."""
        return None if self.fault(now_s) else self.obs


class PolicyController:
    """Holds the policy and the newest observation; decides each command; keeps the running
    safety and comfort figures of the commands (``drive``, policy_node's status)."""

    def __init__(self, policy: OnnxPolicy, safety: SafetyConfig,
                 control_period_s: float = DEFAULT_CONTROL_PERIOD_S) -> None:
        """``control_period_s``: 1 / policy_node's rate_hz, the period of the status's
        commanded jerk and steering rate."""
        if policy not in _CHECKED:  # load_policy's policies are checked already
            check_policy(policy)
        self.policy, self.safety, self.limits = policy, safety, safety.limits
        self.input = ObservationInput(safety.stale_timeout_s)
        self.drive = DriveSafety(control_period_s, STATUS_WINDOW_S)
        self._last_now_s = 0.0  # the newest decision's time
        # the last command (the scene's prev_action in ros mode); (0, 0) until the policy has
        # driven once, as at an env reset: the safe commands of a node still waiting for its
        # first input are not part of the drive
        self._last_action = np.zeros(contract.ACT_DIM, np.float32)
        self.driving = False  # the policy has produced a command
        self.safe_commands = 0  # commands that were the safe command
        self.stale_commands = 0  # of which: the input was older than stale_timeout_s
        self.reloads = self.reloads_refused = 0  # hot reloads done and refused

    # ---- inputs -----------------------------------------------------------------------------

    @property
    def rejected(self) -> int:
        """Observations refused (wrong size, non-finite; odometry refused in ros mode)."""
        return self.input.rejected

    def set_observation(self, values: Any, stamp_s: float, speed_mps: float | None = None
                        ) -> str:
        """Take a contract observation received at ``stamp_s``; returns "" or why it was
        refused (a refused input also voids the previous one: the safe command follows)."""
        return self.input.set_observation(values, stamp_s, speed_mps)

    def set_scene(self, scene: contract.Scene, stamp_s: float) -> str:
        """Take a scene (ros mode): the observation is built by the training code itself."""
        return self.input.set_scene(scene, stamp_s, self._last_action)

    def refuse(self, why: str) -> str:
        """Refuse an input that never became an observation (a bad odometry message): the
        previous observation is void and the safe command follows; returns ``why``."""
        return self.input.refuse(why)

    # ---- decision ---------------------------------------------------------------------------

    @property
    def speed_mps(self) -> float:
        """The ego speed of the newest accepted input (m/s)."""
        return self.input.speed_mps

    def decide(self, now_s: float) -> Decision:
        """The command for now: the policy's action on fresh input, else the safe command."""
        self._last_now_s = now_s
        why = self.input.fault(now_s)
        if why:
            if why.startswith("stale"):
                self.stale_commands += 1
            return self._safe(why, now_s)
        obs = self.input.obs
        raw = np.asarray(self.policy.act(obs), np.float64).reshape(-1)
        if raw.shape != (contract.ACT_DIM,) or not np.all(np.isfinite(raw)):
            return self._safe(f"policy output {raw.tolist()} is not a finite [2]", now_s)
        action = np.clip(raw, -1.0, 1.0)
        if self.input.speed_mps >= self.limits.max_speed_mps:
            action[1] = min(action[1], 0.0)
        self.driving = True
        return self._command(action, safe=False, reason="", now_s=now_s)

    def safe(self, reason: str, now_s: float | None = None) -> Decision:
        """The safe command, e.g. when deciding failed (``reason`` says why), sent at
        ``now_s`` (default: the newest decision's time)."""
        return self._safe(reason, self._last_now_s if now_s is None else now_s)

    def _safe(self, reason: str, now_s: float) -> Decision:
        self.safe_commands += 1
        brake = -self.safety.safe_decel_mps2 / self.limits.max_decel_mps2
        return self._command(np.array([self._last_action[0], brake]), safe=True, reason=reason,
                             now_s=now_s)

    def _command(self, action: np.ndarray, safe: bool, reason: str, now_s: float) -> Decision:
        # action is in [-1, 1] already: the policy's output clipped, or the safe command's
        # held steering and braking (safe_decel_mps2 <= max_decel_mps2). The command is its
        # float32 value, as published; its physical value is converted once, here, and the
        # command messages are built from it (to_physical's clip_action: once per command).
        command = np.array(action, np.float32).reshape(contract.ACT_DIM)
        physical = contract.to_physical(command, self.limits)
        if self.driving:
            self._last_action = command
        # the step of the status's figures: the command and the observation it was decided
        # from when that was fresh (the bag report replays the same: analysis/drive_report.py)
        self.drive.step(now_s, physical.steer_rad, physical.accel_mps2,
                        self.input.fresh(now_s), self.input.speed_mps)
        return Decision(command, physical, safe, reason)

    # ---- hot reload -------------------------------------------------------------------------

    def reload(self, path: str | Path) -> str:
        """Swap in the policy at ``path`` if it loads and fits; returns "" or why not (the old
        policy keeps driving)."""
        try:
            new = load_policy(path)
        except Exception as exc:  # noqa: BLE001  (whatever is wrong, the old policy drives on)
            self.reloads_refused += 1
            return str(exc)
        self.policy = new
        self.reloads += 1
        return ""
