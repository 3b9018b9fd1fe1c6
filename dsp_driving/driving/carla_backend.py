"""The real CARLA backend: the carla 0.9.16 client behind the SimulatorBackend interface.

Synchronous mode with fixed_delta_seconds, no-rendering mode, a Traffic Manager on its own
port (synchronous, seeded, hybrid physics); the ego spawned with role_name hero and a
collision and a lane-invasion sensor; traffic via apply_batch_sync with
SetAutopilot(FutureActor, True, tm_port). Every world.tick is bounded by ``timeout_s``; a
time-out, or a client error meaning the server is gone, raises SimulatorCrashed. With
``server_command`` set the backend launches its own server on its own ports and, on
:meth:`restart`, kills only that server's process group and launches it again.

carla is imported lazily (first :meth:`start`). Needs a running CARLA server: the tests
exercise only the failure path here (a dummy server that never answers).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import contextlib
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
from dsp_driving.driving.contract import CarlaControl, Ego, Vehicle
from dsp_driving.driving.ports import ServerPorts, busy_ports
from dsp_driving.driving.server_process import ServerProcess, carla_server_argv

log = logging.getLogger(__name__)

SPAWN_LIFT_M = 0.3  # spawn slightly above the road so the car does not start in it
_SERVER_GONE = ("time-out", "timeout", "timed out", "connection refused", "connection reset",
                "broken pipe", "not connected", "end of file")
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_server_failure(exc: BaseException) -> bool:
    """Whether a carla client error means the server stopped answering (vs. a bad request)."""
    return isinstance(exc, RuntimeError) and any(k in str(exc).lower() for k in _SERVER_GONE)


class CarlaBackend(SimulatorBackend):
    """One CARLA server (connected to, or launched and supervised) and this env's actors."""

    def __init__(self, config: CarlaConfig, ports: ServerPorts | None = None) -> None:
        self.config = config
        self.ports = ports or ServerPorts(config.port, config.port + 1, config.port + 2,
                                          config.tm_port)
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
        self._rng = random.Random(config.seed)
        self._client: Any = None
        self._world: Any = None
        self._tm: Any = None
        self._map: CarlaRoadMap | None = None
        self._original_settings: Any = None
        self._ego: Any = None
        self._sensors: list[Any] = []
        self._npc_ids: list[int] = []
        self._lock = threading.Lock()
        self._collisions: list[CollisionEvent] = []
        self._invasions: list[LaneInvasionEvent] = []

    @property
    def dt_s(self) -> float:
        """Simulated seconds per tick (fixed_delta_seconds)."""
        return self.config.fixed_delta_seconds

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
        """Launch the server if configured, connect, load the town, apply the settings."""
        if self.server is not None and not self.server.running():
            busy = busy_ports(self.ports.all(), self.config.host)
            if busy:
                raise ValueError(f"ports {busy} of {self.ports} are in use: another server? "
                                 "Choose other carla.port / carla.tm_port")
            self.server.start()
        self._connect()

    def _connect(self) -> None:
        carla, cfg = import_carla(), self.config
        with self._guard("connect"):
            client = carla.Client(cfg.host, self.ports.rpc)
            client.set_timeout(cfg.timeout_s)
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
            world.tick(cfg.timeout_s)

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

    def reload_world(self) -> None:
        """client.reload_world keeping our settings; the actors go with the old world."""
        self.destroy_actors()
        with self._guard("reload_world"):
            self._world = self._client.reload_world(False)
            self._apply_settings()
            self._world.tick(self.config.timeout_s)
        self.reloads += 1

    def restart(self) -> None:
        """Kill and relaunch our own server (or just reconnect to an external one)."""
        if self.server is not None:
            self._forget_actors()
            self.server.restart()
        else:
            with contextlib.suppress(RuntimeError):
                self.destroy_actors()  # best effort: the server may still hold them
            self._forget_actors()
        self._client = self._world = self._tm = None
        self.restarts += 1
        self._connect()

    def close(self) -> None:
        """Destroy the actors, restore the original settings, stop our server."""
        try:
            if self._world is not None:
                self.destroy_actors()
                self._tm.set_synchronous_mode(False)
                if self._original_settings is not None:
                    self._world.apply_settings(self._original_settings)
        except RuntimeError as exc:
            log.warning("CARLA close: could not restore the server (%s)", exc)
        finally:
            self._forget_actors()
            self._client = self._world = self._tm = None
            if self.server is not None:
                self.server.kill()

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
        """The ego (role_name hero) with a collision and a lane-invasion sensor."""
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
            if speed_mps > 0:
                forward = self._transform(pose).get_forward_vector()
                ego.set_target_velocity(forward * float(speed_mps))
            return int(ego.id)

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
        """Through the original handles: stop the sensors, destroy them, the ego, the NPCs."""
        if self._world is None:
            return
        carla = import_carla()
        with self._guard("destroy_actors"):
            for sensor in self._sensors:
                if sensor.is_listening():
                    sensor.stop()
            for sensor in self._sensors:
                sensor.destroy()
            self._sensors = []
            if self._ego is not None:
                self._ego.destroy()
                self._ego = None
            if self._npc_ids:
                self._client.apply_batch_sync(
                    [carla.command.DestroyActor(i) for i in self._npc_ids], False)
                self._npc_ids = []
        self.events()

    def _forget_actors(self) -> None:
        self._sensors, self._ego, self._npc_ids = [], None, []
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
                brake=float(control.brake)))

    def tick(self) -> int:
        """world.tick bounded by timeout_s."""
        world = self._require_world()
        if self.server is not None and not self.server.running():
            raise SimulatorCrashed(f"the CARLA server (pid {self.server.pid}) has exited")
        with self._guard("tick"):
            return int(world.tick(self.config.timeout_s))

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
        """Sensor events since the previous call (the callbacks run on client threads)."""
        with self._lock:
            out = Events(tuple(self._collisions), tuple(self._invasions))
            self._collisions, self._invasions = [], []
        return out
