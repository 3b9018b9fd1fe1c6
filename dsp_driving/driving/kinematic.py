"""A kinematic stand-in for the CARLA server, behind the same SimulatorBackend interface.

The ego is a kinematic bicycle driven by the CarlaControl the env sends; traffic follows its
lane centre at a constant speed on a RoadMap (a real OpenDRIVE road read by carla.Map, or any
other implementation). Collision = the ego's box overlaps a vehicle's box; a lane invasion =
the ego's lane changes within a road section or it leaves the driving lanes. Fault injection
(``crash_at_ticks``) makes a tick fail as a server time-out would: the world and its actors
are gone until :meth:`restart`. Every actor id handed out is accounted for: ``destroyed``
(by destroy_actors, reload_world or close) or ``lost`` (with a crashed world), or still live.
No carla import here.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
import dataclasses
import math

import numpy as np

from dsp_driving.driving.backend import (
    CollisionEvent,
    Events,
    LaneInvasionEvent,
    LanePoint,
    Pose,
    RoadMap,
    SimulatorBackend,
    SimulatorCrashed,
    SpawnError,
)
from dsp_driving.driving.contract import ActionLimits, CarlaControl, Ego, Vehicle

VEHICLE_MASS_KG = 1500.0


@dataclasses.dataclass
class _Body:
    """A vehicle's state (REP-103)."""

    x: float
    y: float
    yaw: float
    speed: float
    yaw_rate: float = 0.0
    accel: float = 0.0
    lane: LanePoint | None = None  # the lane an NPC follows


def _corners(b: _Body, length: float, width: float) -> np.ndarray:
    c, s = math.cos(b.yaw), math.sin(b.yaw)
    half = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * (0.5 * length, 0.5 * width)
    return half @ np.array([[c, s], [-s, c]]) + (b.x, b.y)


def boxes_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test of two convex quadrilaterals given as [4, 2] corners."""
    for box in (a, b):
        for i in range(4):
            edge = box[(i + 1) % 4] - box[i]
            axis = np.array([-edge[1], edge[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


class KinematicBackend(SimulatorBackend):
    """Kinematic bicycle ego and lane-following traffic on a RoadMap, with a fixed step."""

    def __init__(self, road_map: RoadMap, dt_s: float = 0.05,
                 limits: ActionLimits | None = None, npc_speed_mps: float = 20.0,
                 wheelbase_m: float = 2.8, vehicle_length_m: float = 4.5,
                 vehicle_width_m: float = 1.9, timeout_s: float = 10.0,
                 crash_at_ticks: Collection[int] = ()) -> None:
        for name, value in (("dt_s", dt_s), ("wheelbase_m", wheelbase_m),
                            ("vehicle_length_m", vehicle_length_m),
                            ("vehicle_width_m", vehicle_width_m)):
            if not value > 0:
                raise ValueError(f"KinematicBackend {name}={value!r}: must be > 0")
        self._map, self._dt = road_map, float(dt_s)
        self.limits = limits or ActionLimits()
        self.npc_speed_mps, self.wheelbase_m = float(npc_speed_mps), float(wheelbase_m)
        self.length_m, self.width_m, self.timeout_s = vehicle_length_m, vehicle_width_m, timeout_s
        self.crash_at_ticks = frozenset(crash_at_ticks)
        self.ticks = 0  # every tick() call over the backend's life (what crash_at_ticks counts)
        self.starts = self.restarts = self.reloads = 0
        self.frame = 0
        self.started = self.dead = False
        self._next_id = 1
        self.destroy_calls = 0
        self.destroyed: list[int] = []  # ids removed by destroy_actors / reload_world / close
        self.lost: list[int] = []  # ids that vanished with a crashed world
        self._ego: _Body | None = None
        self._ego_id: int | None = None
        self._sensor_ids: list[int] = []
        self._npcs: dict[int, _Body] = {}
        self._control = CarlaControl(0.0, 0.0, 0.0)
        self._collisions: list[CollisionEvent] = []
        self._invasions: list[LaneInvasionEvent] = []
        self._ego_lane: tuple[int, int, int] | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def dt_s(self) -> float:
        """Simulated seconds per tick."""
        return self._dt

    def start(self) -> None:
        """Bring the world up (no server here)."""
        self.starts += 1
        self.started, self.dead = True, False

    def _alive(self) -> None:
        if self.dead:
            raise SimulatorCrashed("the kinematic world is down after an injected crash: "
                                   "restart() it")
        if not self.started:
            raise RuntimeError("KinematicBackend: call start() first")

    def road_map(self) -> RoadMap:
        """The road network."""
        self._alive()
        return self._map

    def control_limits(self, limits: ActionLimits) -> ActionLimits:
        """``limits`` with this stand-in's own steering scale (what its bicycle model uses)."""
        return dataclasses.replace(limits, carla_max_steer_rad=self.limits.carla_max_steer_rad)

    def destroy_actors(self) -> None:
        """Remove the sensors, the ego and the traffic."""
        self._alive()
        self.destroy_calls += 1
        self.destroyed.extend(self._held())
        self._clear()

    def _held(self) -> list[int]:
        ego = [] if self._ego_id is None else [self._ego_id]
        return [*ego, *self._sensor_ids, *self._npcs]

    def _clear(self) -> None:
        self._ego = self._ego_id = self._ego_lane = None
        self._sensor_ids, self._npcs = [], {}
        self._collisions, self._invasions = [], []
        self._control = CarlaControl(0.0, 0.0, 0.0)

    def reload_world(self) -> None:
        """A fresh world with the same map."""
        self._alive()
        self.destroyed.extend(self._held())
        self._clear()
        self.reloads += 1
        self.frame = 0

    def restart(self) -> None:
        """Recover from a crash: a fresh, started world with no actors."""
        self._clear()
        self.restarts += 1
        self.frame = 0
        self.started, self.dead = True, False

    def close(self) -> None:
        """Drop everything."""
        if not self.dead:
            self.destroyed.extend(self._held())
        self._clear()
        self.started = False

    def live_actor_ids(self) -> frozenset[int]:
        """The ego, its two sensors and the traffic (nothing once the world is down)."""
        if self.dead or not self.started:
            return frozenset()
        return frozenset(self._held())

    # ---- actors ----------------------------------------------------------------------------

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _blocked(self, body: _Body, ignore: int | None = None) -> bool:
        box = _corners(body, self.length_m, self.width_m)
        others = [(i, b) for i, b in self._npcs.items() if i != ignore]
        if self._ego is not None:
            others.append((-1, self._ego))
        return any(boxes_overlap(box, _corners(b, self.length_m, self.width_m))
                   for _, b in others)

    def spawn_ego(self, pose: Pose, speed_mps: float = 0.0) -> int:
        """The ego and its collision and lane-invasion sensors (three actor ids; ego's back)."""
        self._alive()
        if self._ego is not None:
            raise RuntimeError("the ego exists already: destroy_actors() first")
        body = _Body(pose.x, pose.y, pose.yaw, float(speed_mps))
        if self._blocked(body):
            raise SpawnError(f"ego spawn blocked at {pose}")
        self._ego, self._ego_id = body, self._new_id()
        self._sensor_ids = [self._new_id(), self._new_id()]
        lane = self._map.lane_point(pose.x, pose.y, project_to_road=False, z=pose.z)
        self._ego_lane = None if lane is None else lane.key
        return self._ego_id

    def spawn_npcs(self, poses: Sequence[Pose]) -> list[int]:
        """Vehicles that follow the lane nearest each pose; blocked poses are skipped."""
        self._alive()
        ids = []
        for pose in poses:
            lane = self._map.lane_point(pose.x, pose.y, z=pose.z)
            if lane is None:
                continue
            p = lane.pose
            body = _Body(p.x, p.y, p.yaw, self.npc_speed_mps, lane=lane)
            if self._blocked(body):
                continue
            npc_id = self._new_id()
            self._npcs[npc_id] = body
            ids.append(npc_id)
        return ids

    def apply_control(self, control: CarlaControl) -> None:
        """Throttle and brake in [0, 1], steer in [-1, 1] (CARLA: + right)."""
        self._alive()
        if not (0 <= control.throttle <= 1 and 0 <= control.brake <= 1
                and -1 <= control.steer <= 1):
            raise ValueError(f"control out of range: {control}")
        self._control = control

    # ---- simulation ------------------------------------------------------------------------

    def tick(self) -> int:
        """One fixed step: ego bicycle, traffic along its lanes, then the sensors."""
        self._alive()
        self.ticks += 1
        if self.ticks in self.crash_at_ticks:
            self.dead = True
            self.lost.extend(self._held())
            self._clear()
            raise SimulatorCrashed(f"time-out of {self.timeout_s} s while waiting for the "
                                   f"simulator (injected at tick {self.ticks})")
        self.frame += 1
        if self._ego is not None:
            self._move_ego(self._ego)
        for body in self._npcs.values():
            self._move_npc(body)
        if self._ego is not None:
            self._sense(self._ego)
        return self.frame

    def _move_ego(self, b: _Body) -> None:
        c, dt = self._control, self._dt
        steer_rad = -c.steer * self.limits.carla_max_steer_rad  # CARLA steer is + right
        accel = c.throttle * self.limits.max_accel_mps2 - c.brake * self.limits.max_decel_mps2
        speed = float(np.clip(b.speed + accel * dt, 0.0, self.limits.max_speed_mps))
        mean_speed = 0.5 * (b.speed + speed)
        b.yaw_rate = mean_speed * math.tan(steer_rad) / self.wheelbase_m
        mid_yaw = b.yaw + 0.5 * b.yaw_rate * dt
        b.x += mean_speed * math.cos(mid_yaw) * dt
        b.y += mean_speed * math.sin(mid_yaw) * dt
        b.yaw = math.atan2(math.sin(b.yaw + b.yaw_rate * dt), math.cos(b.yaw + b.yaw_rate * dt))
        b.accel, b.speed = (speed - b.speed) / dt, speed

    def _move_npc(self, b: _Body) -> None:
        if b.lane is None or b.speed <= 0:
            return
        ahead = b.lane.next(b.speed * self._dt)
        if not ahead:  # the lane ends: stop there
            b.speed = 0.0
            return
        b.lane = ahead[0]
        p = b.lane.pose
        b.x, b.y, b.yaw = p.x, p.y, p.yaw

    def _sense(self, ego: _Body) -> None:
        box = _corners(ego, self.length_m, self.width_m)
        for body in self._npcs.values():
            if boxes_overlap(box, _corners(body, self.length_m, self.width_m)):
                rel = math.hypot(ego.speed * math.cos(ego.yaw) - body.speed * math.cos(body.yaw),
                                 ego.speed * math.sin(ego.yaw) - body.speed * math.sin(body.yaw))
                self._collisions.append(CollisionEvent(self.frame, "vehicle.kinematic",
                                                       VEHICLE_MASS_KG * rel))
        lane = self._map.lane_point(ego.x, ego.y, project_to_road=False)  # planar: z = 0
        key = None if lane is None else lane.key
        previous, self._ego_lane = self._ego_lane, key
        if previous is not None and key is None:
            self._invasions.append(LaneInvasionEvent(self.frame, ("road_edge",)))
        elif previous is not None and key[:2] == previous[:2] and key[2] != previous[2]:
            self._invasions.append(LaneInvasionEvent(self.frame, ("lane",)))

    # ---- state -----------------------------------------------------------------------------

    def ego_state(self) -> Ego:
        """The ego (REP-103)."""
        self._alive()
        if self._ego is None:
            raise RuntimeError("no ego: spawn_ego() first")
        b = self._ego
        return Ego(b.x, b.y, b.yaw, b.speed, b.yaw_rate, b.accel, self.length_m)

    def vehicles(self) -> tuple[Vehicle, ...]:
        """The traffic (REP-103)."""
        self._alive()
        return tuple(Vehicle(b.x, b.y, b.yaw, b.speed, self.length_m)
                     for b in self._npcs.values())

    def events(self) -> Events:
        """Collisions and lane invasions since the previous call."""
        self._alive()
        out = Events(tuple(self._collisions), tuple(self._invasions))
        self._collisions, self._invasions = [], []
        return out
