"""The simulator-backend interface of the CARLA bridge: every server call lives behind it.

:class:`~dsp_driving.driving.carla_env.CarlaDriveEnv` drives any :class:`SimulatorBackend`:
the real CARLA client (``carla_backend``) or the kinematic stand-in (``kinematic``) that the
tests use. Everything crossing this interface is in REP-103 (x forward, y left, yaw CCW, SI
units); the CARLA modules convert from CARLA's left-handed frame (y right, yaw clockwise, in
degrees). No simulator imports here.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
import dataclasses
import math
from typing import NamedTuple, Protocol

from dsp_driving.driving.contract import ActionLimits, CarlaControl, Ego, Vehicle


class SimulatorCrashed(RuntimeError):
    """The simulator stopped answering (a tick or call timed out, or the server died)."""


class SpawnError(RuntimeError):
    """An actor could not be placed (the spawn point is blocked); the server is fine."""


class Pose(NamedTuple):
    """A place in the world (REP-103): x, y, z (m) and yaw (rad, CCW)."""

    x: float
    y: float
    z: float
    yaw: float


@dataclasses.dataclass(frozen=True)
class CollisionEvent:
    """The ego hit something: frame, what (a type id) and the impulse magnitude (N s)."""

    frame: int
    other: str
    impulse: float


@dataclasses.dataclass(frozen=True)
class LaneInvasionEvent:
    """The ego crossed lane markings: frame and the marking types crossed."""

    frame: int
    markings: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Events:
    """What the sensors reported since the previous :meth:`SimulatorBackend.events` call.

    Each event carries the frame it happened in. CARLA delivers sensor data on a client
    thread after ``world.tick()`` has returned, so an event of frame F may only arrive after
    the call that follows F's tick: it is then reported by the next call (the env counts it
    in the step in which it arrives, never earlier than its frame).
    """

    collisions: tuple[CollisionEvent, ...] = ()
    lane_invasions: tuple[LaneInvasionEvent, ...] = ()


class LanePoint(Protocol):
    """A point on a lane centre (a carla.Waypoint seen in REP-103)."""

    @property
    def pose(self) -> Pose:
        """Position and heading along the lane's direction of travel."""

    @property
    def lane_width(self) -> float:
        """Width of the lane here (m)."""

    @property
    def key(self) -> tuple[int, int, int]:
        """(road id, section id, lane id): which lane this is."""

    @property
    def is_junction(self) -> bool:
        """Whether the point lies inside a junction."""

    def next(self, distance_m: float) -> list[LanePoint]:
        """The points ``distance_m`` ahead along the lane (several at a fork, none at an end)."""

    def previous(self, distance_m: float) -> list[LanePoint]:
        """The points ``distance_m`` behind along the lane."""

    def left(self) -> LanePoint | None:
        """The driving lane on the left with the same direction of travel, if any."""

    def right(self) -> LanePoint | None:
        """The driving lane on the right with the same direction of travel, if any."""


class RoadMap(Protocol):
    """The road network (a carla.Map seen in REP-103)."""

    @property
    def name(self) -> str:
        """The map's name."""

    def lane_point(self, x: float, y: float, project_to_road: bool = True, z: float = 0.0
                   ) -> LanePoint | None:
        """The driving-lane centre point nearest (x, y, z); None off the road unless projecting.

        On maps with several levels (bridges, overpasses) pass the height: the nearest lane in
        3-D is returned, so z = 0 picks the lowest level under the point.
        """

    def lane_points(self, spacing_m: float) -> list[LanePoint]:
        """Points every ``spacing_m`` on every driving lane."""


class SimulatorBackend(abc.ABC):
    """One simulator world the env drives: actors, control, a fixed-step clock, events.

    Any method may raise :class:`SimulatorCrashed`; afterwards only :meth:`close` is
    meaningful. The env never restarts a backend in its process: recovery is a new process
    with a new env (``train.vector_mode: ray``, dsp_driving/rl/ray_vector.py).
    """

    @property
    @abc.abstractmethod
    def dt_s(self) -> float:
        """Simulated seconds per :meth:`tick`."""

    @abc.abstractmethod
    def start(self) -> None:
        """Connect (launching a server if configured), load the world, apply its settings."""

    @abc.abstractmethod
    def road_map(self) -> RoadMap:
        """The current world's road network."""

    def seed_episode(self, seed: int) -> None:
        """Seed this backend's own random choices for the coming episode (default: none)."""
        del seed  # a backend without random choices of its own

    def control_limits(self, limits: ActionLimits) -> ActionLimits:
        """``limits`` with carla_max_steer_rad set to the ego's own maximum steer angle where
        the backend knows it (after :meth:`spawn_ego`); the env maps actions with these."""
        return limits

    @abc.abstractmethod
    def spawn_ego(self, pose: Pose, speed_mps: float = 0.0) -> int:
        """Spawn the ego (role_name hero) with its sensors; returns its actor id. The ego moves
        at ``speed_mps`` (along its heading) from the state the next :meth:`tick` returns."""

    @abc.abstractmethod
    def spawn_npcs(self, poses: Sequence[Pose]) -> list[int]:
        """Spawn autopiloted traffic; blocked poses are skipped. Returns the new actor ids."""

    @abc.abstractmethod
    def apply_control(self, control: CarlaControl) -> None:
        """Set the ego's control for the next tick."""

    @abc.abstractmethod
    def tick(self) -> int:
        """Advance one fixed step (bounded by a timeout -> SimulatorCrashed); the frame id."""

    @abc.abstractmethod
    def ego_state(self) -> Ego:
        """The ego's pose, speed, yaw rate and longitudinal acceleration."""

    @abc.abstractmethod
    def vehicles(self) -> tuple[Vehicle, ...]:
        """The other vehicles this backend spawned."""

    @abc.abstractmethod
    def events(self) -> Events:
        """Collision and lane-invasion events that arrived since the previous call (drained);
        late ones may belong to an earlier frame (see :class:`Events`)."""

    @abc.abstractmethod
    def destroy_actors(self) -> None:
        """Stop the sensors, then destroy the sensors, the ego and the traffic."""

    @abc.abstractmethod
    def reload_world(self) -> None:
        """Reload the current world (a fresh episode state; settings kept); no actors after."""

    @abc.abstractmethod
    def restart(self) -> None:
        """Start afresh with no actors where that is safe in this process (the kinematic
        stand-in); CarlaBackend refuses (RuntimeError): its process must be replaced."""

    @abc.abstractmethod
    def close(self) -> None:
        """Destroy the actors, restore the world's original settings, release the server."""

    @abc.abstractmethod
    def live_actor_ids(self) -> frozenset[int]:
        """Ids of the vehicles and sensors alive in the world now (for leak checks)."""


# ---- CARLA's left-handed frame <-> REP-103 ---------------------------------------------------


def rep103_from_carla(x: float, y: float, yaw_deg: float) -> tuple[float, float, float]:
    """CARLA (y right, yaw clockwise in degrees) -> REP-103 (y left, yaw CCW in radians)."""
    return x, -y, -math.radians(yaw_deg)


def carla_from_rep103(x: float, y: float, yaw_rad: float) -> tuple[float, float, float]:
    """REP-103 -> CARLA: the inverse of :func:`rep103_from_carla`."""
    return x, -y, -math.degrees(yaw_rad)
