"""The real CARLA backend: the carla 0.9.16 client behind the SimulatorBackend interface.

Synchronous mode with fixed_delta_seconds, no-rendering mode, a Traffic Manager on its own
port (synchronous, seeded, hybrid physics); the ego spawned with role_name hero and a
collision and a lane-invasion sensor; traffic via apply_batch_sync with
SetAutopilot(FutureActor, True, tm_port). Connecting and loading a map are bounded by
``startup_timeout_s``, every later call and world.tick by ``timeout_s``; a time-out, or a
client error meaning the server is gone, raises SimulatorCrashed. With ``server_command`` set
the backend launches its own server on its own ports and, on :meth:`restart`, kills only that
server's process group and launches it again.

carla is imported lazily (first :meth:`start`). No CARLA server runs where this is tested:
test/driving/test_carla_backend.py drives it through a recording fake of the carla module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import contextlib
import dataclasses
import logging
import math
import random
import threading
from typing import Any

from dsp_driving.driving.backend import (
    CollisionEvent,
    Events,
    LaneInvasionEvent,
    Pose,
    RoadMap,
    SimulatorBackend,
    SimulatorCrashed,
    SpawnError,
    carla_from_rep103,
    rep103_from_carla,
)
from dsp_driving.driving.carla_config import CarlaConfig
from dsp_driving.driving.carla_map import CarlaRoadMap, import_carla
from dsp_driving.driving.contract import ActionLimits, CarlaControl, Ego, Vehicle
from dsp_driving.driving.ports import ServerPorts, require_free
from dsp_driving.driving.server_process import ServerProcess, carla_server_argv

log = logging.getLogger(__name__)

SPAWN_LIFT_M = 0.3  # spawn slightly above the road so the car does not start in it
STEER_MISMATCH_RAD = 1e-3  # a blueprint's max steer angle further than this from the limits
_SERVER_GONE = ("time-out", "timeout", "timed out", "connection refused", "connection reset",
                "broken pipe", "not connected", "end of file")
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_server_failure(exc: BaseException) -> bool:
    """Whether a carla client error means the server stopped answering (vs. a bad request)."""
    return isinstance(exc, RuntimeError) and any(k in str(exc).lower() for k in _SERVER_GONE)


class CarlaBackend(SimulatorBackend):
    """One CARLA server (connected to, or launched and supervised) and this env's actors."""

    def __init__(self, config: CarlaConfig, ports: ServerPorts | None = None,
                 limits: ActionLimits | None = None) -> None:
        self.config = config
        self.ports = ports or ServerPorts(config.port, config.port + 1, config.port + 2,
                                          config.tm_port)
        self.limits = limits or ActionLimits()
        self.server: ServerProcess | None = None
        if config.server_command:
            if config.host not in _LOCAL_HOSTS:
                raise ValueError(f"carla.host={config.host!r}: a server launched through "
                                 "carla.server_command runs here, so host must be 127.0.0.1")
            self.server = ServerProcess(carla_server_argv(config.server_command, self.ports),
                                        self.ports.rpc, host=config.host,
                                        startup_timeout_s=config.startup_timeout_s,
                                        log_path=config.server_log or None)
        self.restarts = self.reloads = 0
        self.orphaned_actor_ids: set[int] = set()  # could not be destroyed, even on a retry
        self._rng = random.Random(config.seed)  # reseeded by seed_episode() every reset
        self._client: Any = None
        self._world: Any = None
        self._tm: Any = None
        self._map: CarlaRoadMap | None = None
        self._original_settings: Any = None
        self._ego: Any = None
        self._max_steer_rad: float | None = None
        self._pending_speed = 0.0
        self._sensors: list[Any] = []
        self._npc_ids: list[int] = []
        self._undestroyed: set[int] = set()  # destroy failed or never ran; retried
        self._lock = threading.Lock()
        self._collisions: list[CollisionEvent] = []
        self._invasions: list[LaneInvasionEvent] = []

    @property
    def dt_s(self) -> float:
        """Simulated seconds per tick (fixed_delta_seconds)."""
        return self.config.fixed_delta_seconds

    @property
    def max_steer_rad(self) -> float | None:
        """The ego's front-wheel max steer angle read from its physics (None before a spawn)."""
        return self._max_steer_rad

    def control_limits(self, limits: ActionLimits) -> ActionLimits:
        """``limits`` with carla_max_steer_rad = the spawned ego's own max steer angle."""
        if self._max_steer_rad is None:
            return limits
        return dataclasses.replace(limits, carla_max_steer_rad=self._max_steer_rad)

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Turn a dead or silent server into SimulatorCrashed; other errors pass through."""
        try:
            yield
        except (SimulatorCrashed, SpawnError):
            raise
        except RuntimeError as exc:
            died = self.server is not None and not self.server.running()
            if died or is_server_failure(exc):
                raise SimulatorCrashed(f"CARLA at {self.config.host}:{self.ports.rpc} "
                                       f"failed during {what}: {exc}") from exc
            raise

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Launch the server if configured (PortsInUse if its ports are taken), connect,
        load the town, apply the settings."""
        if self.server is not None and not self.server.running():
            require_free(self.ports, self.config.host)
            self.server.start()
        self._connect()

    def _connect(self) -> None:
        carla, cfg = import_carla(), self.config
        with self._guard("connect"):
            client = carla.Client(cfg.host, self.ports.rpc)
            client.set_timeout(cfg.startup_timeout_s)  # a fresh server or a map load is slow
            world = client.get_world()
            if self._original_settings is None:
                self._original_settings = world.get_settings()
            carla_map = world.get_map()
            if carla_map.name.split("/")[-1] != cfg.town:
                world = client.load_world(cfg.town)
                carla_map = world.get_map()
            self._client, self._world = client, world
            self._apply_settings()
            self._tm = client.get_trafficmanager(self.ports.tm)
            self._tm.set_synchronous_mode(True)
            self._tm.set_random_device_seed(cfg.seed)
            self._tm.set_hybrid_physics_mode(cfg.hybrid_physics)
            self._tm.set_hybrid_physics_radius(cfg.hybrid_physics_radius_m)
            self._map = CarlaRoadMap(carla_map)
            world.tick(cfg.startup_timeout_s)
            client.set_timeout(cfg.timeout_s)

    def _apply_settings(self) -> None:
        settings = self._world.get_settings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = self.config.fixed_delta_seconds
        settings.no_rendering_mode = self.config.no_rendering
        self._world.apply_settings(settings)

    def _require_world(self) -> Any:
        if self._world is None:
            raise RuntimeError("CarlaBackend: call start() first")
        return self._world

    def road_map(self) -> RoadMap:
        """The town's road network (fetched once per load)."""
        self._require_world()
        assert self._map is not None
        return self._map

    def seed_episode(self, seed: int) -> None:
        """Reseed the NPC blueprint choice and the Traffic Manager for the coming episode."""
        self._rng = random.Random(seed)
        if self._tm is not None:
            with self._guard("seed_episode"):
                self._tm.set_random_device_seed(int(seed))

    def reload_world(self) -> None:
        """client.reload_world keeping our settings; the actors go with the old world."""
        self.destroy_actors()
        with self._guard("reload_world"):
            self._client.set_timeout(self.config.startup_timeout_s)
            self._world = self._client.reload_world(False)
            self._apply_settings()
            self._world.tick(self.config.startup_timeout_s)
            self._client.set_timeout(self.config.timeout_s)
        self.reloads += 1

    def restart(self) -> None:
        """Kill and relaunch our own server (its actors die with it), or reconnect to an
        external one after destroying what it still holds (retried on the new connection)."""
        if self.server is not None:
            self._release_tm()
            self._forget_actors()
            self._undestroyed.clear()
            self.server.restart()
        else:
            with contextlib.suppress(RuntimeError):  # SimulatorCrashed included
                self.destroy_actors()
            self._undestroyed.update(self._held_ids())
            self._forget_actors()
            self._release_tm()
        self._client = self._world = self._map = None
        self.restarts += 1
        self._connect()
        self._retry_destroy()

    def close(self) -> None:
        """Destroy the actors, TM back to asynchronous, restore the original settings, shut
        the TM down, stop our server. Never raises for a missing or dead handle."""
        steps: list[tuple[str, Callable[[], Any]]] = []
        if self._world is not None:
            steps.append(("destroy the actors", self.destroy_actors))
        if self._tm is not None:
            steps.append(("set the Traffic Manager asynchronous",
                          lambda: self._tm.set_synchronous_mode(False)))
        if self._world is not None and self._original_settings is not None:
            steps.append(("restore the world settings",
                          lambda: self._world.apply_settings(self._original_settings)))
        try:
            for what, step in steps:
                try:
                    with self._guard(what):
                        step()
                except SimulatorCrashed as exc:
                    log.warning("CARLA close: could not %s, server gone (%s)", what, exc)
                    break  # each further call would wait for its own time-out
                except RuntimeError as exc:
                    log.warning("CARLA close: could not %s (%s)", what, exc)
        finally:
            self._release_tm()
            self._forget_actors()
            self._client = self._world = self._map = None
            if self.server is not None:
                self.server.kill()

    def _release_tm(self) -> None:
        """Shut our Traffic Manager down (frees tm_port in this process) and drop it."""
        tm, self._tm = self._tm, None
        if tm is not None:
            with contextlib.suppress(RuntimeError):
                tm.shut_down()

    def live_actor_ids(self) -> frozenset[int]:
        """Every vehicle and sensor in the world (a dedicated server holds only ours)."""
        world = self._require_world()
        with self._guard("get_actors"):
            return frozenset(a.id for a in world.get_actors()
                             if a.type_id.startswith(("vehicle.", "sensor.")))

    # ---- actors ----------------------------------------------------------------------------

    def _transform(self, pose: Pose) -> Any:
        carla = import_carla()
        x, y, yaw_deg = carla_from_rep103(pose.x, pose.y, pose.yaw)
        return carla.Transform(carla.Location(x=x, y=y, z=pose.z + SPAWN_LIFT_M),
                               carla.Rotation(yaw=yaw_deg))

    def spawn_ego(self, pose: Pose, speed_mps: float = 0.0) -> int:
        """The ego (role_name hero) with a collision and a lane-invasion sensor; reads its max
        steer angle. The speed is set after the next world tick, when the car is settled."""
        carla, world = import_carla(), self._require_world()
        with self._guard("spawn_ego"):
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
        if abs(max_steer - configured) > STEER_MISMATCH_RAD and max_steer != self._max_steer_rad:
            log.warning("CARLA: %s steers at most %.1f deg, not ActionLimits.carla_max_steer_rad"
                        " = %.1f deg: CARLA steer is normalised by the vehicle's %.1f deg",
                        self.config.vehicle_blueprint, math.degrees(max_steer),
                        math.degrees(configured), math.degrees(max_steer))
        self._max_steer_rad = max_steer

    def spawn_npcs(self, poses: Sequence[Pose]) -> list[int]:
        """Autopiloted traffic in one batch: SpawnActor then SetAutopilot(FutureActor)."""
        if not poses:
            return []
        carla, world = import_carla(), self._require_world()
        command = carla.command
        with self._guard("spawn_npcs"):
            cars = [bp for bp in world.get_blueprint_library().filter("vehicle.*")
                    if bp.has_attribute("number_of_wheels")
                    and int(bp.get_attribute("number_of_wheels")) == 4]
            batch = []
            for pose in poses:
                blueprint = self._rng.choice(cars)
                if blueprint.has_attribute("role_name"):
                    blueprint.set_attribute("role_name", "autopilot")
                batch.append(command.SpawnActor(blueprint, self._transform(pose)).then(
                    command.SetAutopilot(command.FutureActor, True, self.ports.tm)))
            responses = self._client.apply_batch_sync(batch, False)
        ids = [int(r.actor_id) for r in responses if not r.has_error]
        skipped = [r.error for r in responses if r.has_error]
        if skipped:
            log.debug("CARLA: %d of %d NPC spawns skipped (%s)", len(skipped), len(poses),
                      skipped[0])
        self._npc_ids.extend(ids)
        return ids

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

    def destroy_actors(self) -> None:
        """Through the original handles: stop the sensors, destroy them, the ego, the NPCs.
        A destroy the server refuses is retried once; what still stands is reported."""
        if self._world is None:
            return
        carla = import_carla()
        with self._guard("destroy_actors"):
            for sensor in self._sensors:
                if sensor.is_listening():
                    sensor.stop()
            while self._sensors:  # dropped one by one: a crash keeps the rest for a retry
                sensor = self._sensors[0]
                if not sensor.destroy():
                    self._undestroyed.add(int(sensor.id))
                self._sensors.pop(0)
            if self._ego is not None:
                if not self._ego.destroy():
                    self._undestroyed.add(int(self._ego.id))
                self._ego = None
            if self._npc_ids:
                responses = self._client.apply_batch_sync(
                    [carla.command.DestroyActor(i) for i in self._npc_ids], False)
                self._undestroyed.update(i for i, r in zip(self._npc_ids, responses)
                                         if r.has_error)
                self._npc_ids = []
        self._retry_destroy()
        self.events()

    def _retry_destroy(self) -> None:
        """Destroy the actors an earlier destroy missed that still exist; report the rest."""
        if not self._undestroyed or self._world is None:
            return
        command = import_carla().command
        wanted = sorted(self._undestroyed)
        with self._guard("destroy_actors retry"):
            alive = [int(a.id) for a in self._world.get_actors(wanted)]
            if alive:
                self._client.apply_batch_sync([command.DestroyActor(i) for i in alive], False)
                left = sorted(int(a.id) for a in self._world.get_actors(alive))
            else:
                left = []
        self._undestroyed.clear()
        if left:
            self.orphaned_actor_ids.update(left)
            log.warning("CARLA: actors %s could not be destroyed (even on a retry); they stay "
                        "in the world until it is reloaded", left)

    def _held_ids(self) -> list[int]:
        """Ids of the actors this backend holds (local attributes: no server call)."""
        ego = [] if self._ego is None else [int(self._ego.id)]
        return [int(s.id) for s in self._sensors] + ego + list(self._npc_ids)

    def _forget_actors(self) -> None:
        """Drop the handles (their server is gone, or they are queued for a retry by id)."""
        self._sensors, self._ego, self._npc_ids = [], None, []
        self._pending_speed = 0.0
        self.events()

    # ---- simulation ------------------------------------------------------------------------

    def apply_control(self, control: CarlaControl) -> None:
        """carla.VehicleControl for the ego (steer + right, as CARLA wants)."""
        carla = import_carla()
        if self._ego is None:
            raise RuntimeError("no ego: spawn_ego() first")
        with self._guard("apply_control"):
            self._ego.apply_control(carla.VehicleControl(
                throttle=float(control.throttle), steer=float(control.steer),
                brake=float(control.brake), hand_brake=False, manual_gear_shift=False))

    def tick(self) -> int:
        """world.tick bounded by timeout_s. Right after a spawn with a speed, the velocity is
        set once the car has been ticked onto the road, and one more tick makes it visible."""
        world = self._require_world()
        if self.server is not None and not self.server.running():
            raise SimulatorCrashed(f"the CARLA server (pid {self.server.pid}) has exited")
        with self._guard("tick"):
            frame = int(world.tick(self.config.timeout_s))
            if self._pending_speed > 0 and self._ego is not None:
                forward = self._ego.get_transform().get_forward_vector()
                self._ego.set_target_velocity(forward * self._pending_speed)
                self._pending_speed = 0.0
                frame = int(world.tick(self.config.timeout_s))
            return frame

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
        """The traffic this backend spawned (REP-103)."""
        if not self._npc_ids:
            return ()
        world = self._require_world()
        out = []
        with self._guard("vehicles"):
            for actor in world.get_actors(list(self._npc_ids)):
                t, v = actor.get_transform(), actor.get_velocity()
                x, y, yaw = rep103_from_carla(t.location.x, t.location.y, t.rotation.yaw)
                out.append(Vehicle(x, y, yaw, math.hypot(v.x, v.y),
                                   2.0 * actor.bounding_box.extent.x))
        return tuple(out)

    def events(self) -> Events:
        """Sensor events that arrived since the previous call (callbacks run on client
        threads, after the tick: an event may belong to an earlier frame)."""
        with self._lock:
            out = Events(tuple(self._collisions), tuple(self._invasions))
            self._collisions, self._invasions = [], []
        return out
