"""The actors a CarlaBackend puts into the CARLA world, and what their sensors report.

The ego (role_name hero) with a collision and a lane-invasion sensor; autopiloted traffic in
one apply_batch_sync of SpawnActor then SetAutopilot(FutureActor, True, tm_port); the ego's
control and state and the traffic's state in REP-103; teardown through the original handles.
The sensor callbacks run on client threads, so their events are kept under a lock until
:meth:`CarlaActors.events` drains them.

What carla 0.9.16 says about teardown, and what is done about it (LibCarla client sources):

- ``Actor.destroy()`` never raises for a dead server: the client catches the error and
  returns False, after waiting out the RPC time-out. A False that took (nearly) timeout_s is
  therefore a silent server (SimulatorCrashed), not a refusal.
- ``command.Response.has_error()`` is a method; ``error`` says why ("unable to destroy actor:
  not found" means already gone).
- ``World.get_actors(ids)`` answers from a client-side cache that keeps destroyed actors, so
  it proves nothing about liveness (nor does ``Actor.is_alive``, read from the last tick's
  snapshot). A destroy the server refused is retried once as a DestroyActor batch, whose
  responses say what happened.
- Ids name actors only within one episode; a new server reuses them. The ids held are tied to
  the world (episode id) they were spawned in and are never destroyed by id in another one.

The backend owns the connection: it passes the world and the client in, and its error guard
(``guard``) turns a dead server into SimulatorCrashed. carla is imported lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
import logging
import math
import random
import threading
import time
from typing import Any

from dsp_driving.driving.backend import (
    CollisionEvent,
    Events,
    LaneInvasionEvent,
    Pose,
    SimulatorCrashed,
    SpawnError,
    carla_from_rep103,
    rep103_from_carla,
)
from dsp_driving.driving.carla_config import CarlaConfig
from dsp_driving.driving.carla_map import import_carla
from dsp_driving.driving.contract import ActionLimits, CarlaControl, Ego, Vehicle

log = logging.getLogger(__name__)

SPAWN_LIFT_M = 0.3  # spawn slightly above the road so the car does not start in it
STEER_MISMATCH_RAD = 1e-3  # a blueprint's max steer angle further than this from the limits
SILENT_FRACTION = 0.9  # a failed destroy that took this share of timeout_s timed out
NOT_FOUND = "not found"  # in a DestroyActor response's error: the actor is already gone


class WorldChanged(SimulatorCrashed):
    """The server no longer runs the world this client set up (another client loaded or
    reloaded a map); recovery is a new process with a fresh server. A restarted server may
    reuse the old episode id: that case is caught by the failing connection or FrameJump."""

Guard = Callable[[str], AbstractContextManager[None]]


class CarlaActors:
    """The ego, its two sensors and the traffic one backend spawned, with their events."""

    def __init__(self, config: CarlaConfig, limits: ActionLimits, tm_port: int,
                 guard: Guard) -> None:
        self.config, self.limits, self.tm_port = config, limits, tm_port
        self._guard = guard
        self.orphaned_ids: set[int] = set()  # could not be destroyed, even on a retry
        self.max_steer_rad: float | None = None  # the ego's, read at spawn
        self._rng = random.Random(config.seed)  # reseeded by seed() every episode
        self._ego: Any = None
        self._pending_speed = 0.0
        self._sensors: list[Any] = []
        self._npcs: list[Any] = []  # handles of the traffic spawned here
        self._retry: set[int] = set()  # refused destroys, retried once by id
        self._world_id: int | None = None  # the episode every id held here belongs to
        self._lock = threading.Lock()
        self._collisions: list[CollisionEvent] = []
        self._invasions: list[LaneInvasionEvent] = []

    def seed(self, seed: int) -> None:
        """Reseed the NPC blueprint choice."""
        self._rng = random.Random(seed)

    # ---- spawning --------------------------------------------------------------------------

    def _transform(self, pose: Pose) -> Any:
        carla = import_carla()
        x, y, yaw_deg = carla_from_rep103(pose.x, pose.y, pose.yaw)
        return carla.Transform(carla.Location(x=x, y=y, z=pose.z + SPAWN_LIFT_M),
                               carla.Rotation(yaw=yaw_deg))

    def spawn_ego(self, world: Any, pose: Pose, speed_mps: float = 0.0) -> int:
        """The ego (role_name hero) with a collision and a lane-invasion sensor; reads its max
        steer angle. The speed waits for :meth:`apply_spawn_speed` after the next tick."""
        carla = import_carla()
        with self._guard("spawn_ego"):
            self._note_world(world)
            library = world.get_blueprint_library()
            found = library.filter(self.config.vehicle_blueprint)
            if not found:
                raise ValueError(f"carla.vehicle_blueprint={self.config.vehicle_blueprint!r}: "
                                 "no such blueprint on this server")
            blueprint = found[0]
            if blueprint.has_attribute("role_name"):
                blueprint.set_attribute("role_name", "hero")
            ego = world.try_spawn_actor(blueprint, self._transform(pose))
            if ego is None:
                raise SpawnError(f"ego spawn blocked at {pose}")
            self._ego = ego
            for sensor_id, callback in (("sensor.other.collision", self._on_collision),
                                        ("sensor.other.lane_invasion", self._on_invasion)):
                sensor = world.spawn_actor(library.find(sensor_id), carla.Transform(),
                                           attach_to=ego)
                self._sensors.append(sensor)
                sensor.listen(callback)
            # Automatic gearbox, no hand brake: a fresh car can otherwise sit in neutral.
            ego.apply_control(carla.VehicleControl(throttle=0.0, steer=0.0, brake=0.0,
                                                   hand_brake=False, manual_gear_shift=False))
            self._read_max_steer(ego)
        self._pending_speed = max(0.0, float(speed_mps))
        return int(ego.id)

    def _read_max_steer(self, ego: Any) -> None:
        max_steer = math.radians(float(ego.get_physics_control().wheels[0].max_steer_angle))
        configured = self.limits.carla_max_steer_rad
        if abs(max_steer - configured) > STEER_MISMATCH_RAD and max_steer != self.max_steer_rad:
            log.warning("CARLA: %s steers at most %.1f deg, not ActionLimits.carla_max_steer_rad"
                        " = %.1f deg: CARLA steer is normalised by the vehicle's %.1f deg",
                        self.config.vehicle_blueprint, math.degrees(max_steer),
                        math.degrees(configured), math.degrees(max_steer))
        self.max_steer_rad = max_steer

    def apply_spawn_speed(self) -> bool:
        """Set the speed spawn_ego was asked for, once the car has been ticked onto the road;
        whether it did (the caller ticks once more to make it visible). Call in a guard."""
        if self._pending_speed <= 0 or self._ego is None:
            return False
        forward = self._ego.get_transform().get_forward_vector()
        self._ego.set_target_velocity(forward * self._pending_speed)
        self._pending_speed = 0.0
        return True

    def _note_world(self, world: Any) -> None:
        """Tie what is spawned next to ``world``'s episode (ids mean nothing in another)."""
        if not self.held_ids() and not self._retry:
            self._world_id = int(world.id)

    def spawn_npcs(self, world: Any, client: Any, poses: Sequence[Pose]) -> list[int]:
        """Autopiloted traffic in one batch: SpawnActor then SetAutopilot(FutureActor); a
        response with an error (a blocked spawn point) skips that NPC."""
        command = import_carla().command
        with self._guard("spawn_npcs"):
            self._note_world(world)
            cars = [bp for bp in world.get_blueprint_library().filter("vehicle.*")
                    if bp.has_attribute("number_of_wheels")
                    and bp.get_attribute("number_of_wheels").as_int() == 4]
            batch = []
            for pose in poses:
                blueprint = self._rng.choice(cars)
                if blueprint.has_attribute("role_name"):
                    blueprint.set_attribute("role_name", "autopilot")
                batch.append(command.SpawnActor(blueprint, self._transform(pose)).then(
                    command.SetAutopilot(command.FutureActor, True, self.tm_port)))
            responses = client.apply_batch_sync(batch, False)
            ids = [int(r.actor_id) for r in responses if not r.has_error()]
            skipped = [str(r.error) for r in responses if r.has_error()]
            if ids:  # handles for reading their state (fresh: these ids are new to the cache)
                self._npcs.extend(world.get_actors(ids))
        if skipped:
            log.debug("CARLA: %d of %d NPC spawns skipped (%s)", len(skipped), len(poses),
                      skipped[0])
        return ids

    # ---- control and state -----------------------------------------------------------------

    def apply_control(self, control: CarlaControl) -> None:
        """carla.VehicleControl for the ego (steer + right, as CARLA wants)."""
        carla = import_carla()
        if self._ego is None:
            raise RuntimeError("no ego: spawn_ego() first")
        with self._guard("apply_control"):
            self._ego.apply_control(carla.VehicleControl(
                throttle=float(control.throttle), steer=float(control.steer),
                brake=float(control.brake), hand_brake=False, manual_gear_shift=False))

    def ego_state(self) -> Ego:
        """Pose, longitudinal speed and acceleration, yaw rate of the ego (REP-103)."""
        if self._ego is None:
            raise RuntimeError("no ego: spawn_ego() first")
        with self._guard("ego_state"):
            t = self._ego.get_transform()
            v, a = self._ego.get_velocity(), self._ego.get_acceleration()
            w = self._ego.get_angular_velocity()  # deg/s, about CARLA's z (clockwise seen up)
            forward = t.get_forward_vector()
            length = 2.0 * self._ego.bounding_box.extent.x
        x, y, yaw = rep103_from_carla(t.location.x, t.location.y, t.rotation.yaw)
        speed = v.x * forward.x + v.y * forward.y + v.z * forward.z
        accel = a.x * forward.x + a.y * forward.y + a.z * forward.z
        return Ego(x, y, yaw, float(speed), -math.radians(w.z), float(accel), float(length))

    def vehicles(self) -> tuple[Vehicle, ...]:
        """The traffic spawned here (REP-103), read through its handles."""
        if not self._npcs:
            return ()
        out = []
        with self._guard("vehicles"):
            for actor in self._npcs:
                t, v = actor.get_transform(), actor.get_velocity()
                x, y, yaw = rep103_from_carla(t.location.x, t.location.y, t.rotation.yaw)
                out.append(Vehicle(x, y, yaw, math.hypot(v.x, v.y),
                                   2.0 * actor.bounding_box.extent.x))
        return tuple(out)

    # ---- sensor events ---------------------------------------------------------------------

    def _on_collision(self, event: Any) -> None:
        impulse = event.normal_impulse
        other = event.other_actor.type_id if event.other_actor is not None else "unknown"
        with self._lock:
            self._collisions.append(CollisionEvent(
                int(event.frame), str(other),
                math.sqrt(impulse.x ** 2 + impulse.y ** 2 + impulse.z ** 2)))

    def _on_invasion(self, event: Any) -> None:
        markings = tuple(str(m.type) for m in event.crossed_lane_markings)
        with self._lock:
            self._invasions.append(LaneInvasionEvent(int(event.frame), markings))

    def events(self) -> Events:
        """Sensor events that arrived since the previous call (callbacks run on client
        threads, after the tick: an event may belong to an earlier frame)."""
        with self._lock:
            out = Events(tuple(self._collisions), tuple(self._invasions))
            self._collisions, self._invasions = [], []
        return out

    # ---- teardown --------------------------------------------------------------------------

    def destroy(self, client: Any) -> None:
        """Through the original handles: stop the sensors, destroy them, the ego, then the NPCs
        in one DestroyActor batch. A refused destroy is retried once by id; what still stands
        is reported in :attr:`orphaned_ids`. WorldChanged (nothing destroyed) when the server
        no longer runs the world these actors were spawned in."""
        with self._guard("destroy_actors"):
            if self.held_ids() or self._retry:
                self._require_same_world(client)
            for sensor in self._sensors:
                if sensor.is_listening():
                    sensor.stop()
            while self._sensors:  # dropped one by one: a crash keeps the rest
                self._destroy_handle(self._sensors[0])
                self._sensors.pop(0)
            if self._ego is not None:
                self._destroy_handle(self._ego)
                self._ego = None
            if self._npcs:
                ids, self._npcs = [int(a.id) for a in self._npcs], []
                self._retry.update(self._destroy_ids(client, ids))
            if self._retry:
                left = self._destroy_ids(client, sorted(self._retry))
                self._retry.clear()
                if left:
                    self.orphaned_ids.update(left)
                    log.warning("CARLA: actors %s could not be destroyed (even on a retry); "
                                "they stay in the world until it is reloaded", left)
        self.events()

    def _require_same_world(self, client: Any) -> None:
        """WorldChanged, after dropping every id held, unless the client's current episode
        is the one those ids were spawned in (client.get_world() is answered client-side)."""
        current = int(client.get_world().id)
        if current == self._world_id:
            return
        dropped = sorted({*self.held_ids(), *self._retry})
        spawned_in = self._world_id
        self.forget()
        raise WorldChanged(f"the CARLA world changed under this client (episode {spawned_in} "
                           f"-> {current}: another client loaded a map, or the server "
                           f"restarted after other loads); actors {dropped} are not "
                           "destroyed by id, as ids may now name other actors")

    def _destroy_handle(self, actor: Any) -> None:
        """actor.destroy(); a False that took nearly timeout_s is a silent server (0.9.16's
        destroy swallows the time-out), a quick one a refusal queued for the retry."""
        started = time.monotonic()
        if actor.destroy():
            return
        took = time.monotonic() - started
        if took >= SILENT_FRACTION * self.config.timeout_s:
            raise SimulatorCrashed(f"destroying actor {int(actor.id)} failed after {took:.1f} s "
                                   f"(carla.timeout_s={self.config.timeout_s}): the server is "
                                   "not answering")
        self._retry.add(int(actor.id))

    def _destroy_ids(self, client: Any, ids: list[int]) -> list[int]:
        """One DestroyActor batch; the ids the server refused (gone ones are not refused)."""
        command = import_carla().command
        responses = client.apply_batch_sync([command.DestroyActor(i) for i in ids], False)
        return [i for i, r in zip(ids, responses, strict=True)
                if r.has_error() and NOT_FOUND not in str(r.error)]

    def held_ids(self) -> list[int]:
        """Ids of the actors held here (local attributes: no server call)."""
        ego = [] if self._ego is None else [int(self._ego.id)]
        return [int(s.id) for s in self._sensors] + ego + [int(a.id) for a in self._npcs]

    def forget(self) -> None:
        """Drop every handle and queued id without a server call (their world is gone, or the
        server must not be called any more)."""
        self._sensors, self._ego, self._npcs = [], None, []
        self._retry.clear()
        self._world_id = None
        self._pending_speed = 0.0
        self.events()

    def world_reloaded(self) -> None:
        """The world was reloaded: every actor of the old one is gone, orphans included."""
        self.forget()
        self.orphaned_ids.clear()
