"""A recording fake of the carla 0.9.16 module's server side, for the CARLA bridge's tests.

No CARLA server runs here, so the fake plays the server and the client's network side:
actors, world settings, episodes, the Traffic Manager, batches, RPC time-outs (with the
client's real message). The values the bridge builds and reads are the installed client's own
(carla.Transform, Location, Rotation, Vector3D, VehicleControl, WorldSettings,
VehiclePhysicsControl, command.SetAutopilot, command.DestroyActor, command.FutureActor), and
the map is a real carla.Map read from test/data/two_lane_arc.xodr. Every server call lands in
``FakeServer.log`` in order.

Each Fake class stands for the real class named in ``REAL`` and is held to it by
test_fake_carla_contract.py: every public name it defines exists on the real class with the
same kind (method or property) and parameters, and its own state is private (the test state
lives in the server's records: ``FakeServer.actors``, ``FakeServer.tms``). The behaviour
follows the 0.9.16 client (LibCarla sources):

- ``Actor.destroy()`` never raises for a dead server: it waits out the client's time-out and
  returns False (Client::DestroyActor catches every error). A destroy the server refuses, or
  of an actor already gone, returns False at once.
- A handle of an episode the server no longer runs raises "trying to access an expired
  episode" (EpisodeProxy::Lock); one destroyed through itself raises "trying to operate on a
  destroyed actor".
- ``World.get_actors(ids)`` answers from the client's actor cache, which keeps destroyed
  actors (Episode::GetActorsById); ``get_actors()`` lists the actors of the last tick.
- ``command.Response.has_error()`` is a method; ``error`` is the server's text.
- ``Client.get_world()`` calls the server once, then answers from the client's episode state.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
from pathlib import Path
import time
from types import SimpleNamespace
from typing import Any

import carla

XODR = (Path(__file__).resolve().parents[1] / "data" / "two_lane_arc.xodr").read_text()
CLIENT_VERSION = "0.9.16"  # what the installed wheel's get_client_version() says
TIMEOUT = ("time-out of 10000ms while waiting for the simulator, make sure the simulator is "
           "ready and connected to 127.0.0.1:2000")  # the client's TimeoutException text
EXPIRED = ("trying to access an expired episode; a new episode was started in the simulation "
           "but an object tried accessing the old one.")
DESTROYED = ("trying to operate on a destroyed actor; an actor's function was called, but the "
             "actor is already destroyed.")
NOT_FOUND = "unable to destroy actor: not found"
REFUSED = "internal error: unable to destroy actor"
COLLIDES = "Spawn failed because of collision at spawn position"
CARS = ("vehicle.tesla.model3", "vehicle.audi.tt", "vehicle.bmw.grandtourer",
        "vehicle.mini.cooper_s", "vehicle.nissan.patrol", "vehicle.seat.leon")
SETTINGS_FIELDS = ("synchronous_mode", "no_rendering_mode", "fixed_delta_seconds",
                   "substepping", "max_substep_delta_time", "max_substeps",
                   "max_culling_distance", "deterministic_ragdolls", "tile_stream_distance",
                   "actor_active_distance", "spectator_as_ego")


def settings(**fields: Any) -> Any:
    """A fresh carla.WorldSettings (the client's defaults) with ``fields`` set."""
    out = carla.WorldSettings()
    for name, value in fields.items():
        setattr(out, name, value)
    return out


def copy_settings(value: Any) -> Any:
    return settings(**settings_dict(value))


def settings_dict(value: Any) -> dict[str, Any]:
    """Every field of a WorldSettings (for readable comparisons)."""
    return {name: getattr(value, name) for name in SETTINGS_FIELDS}


# ---- the server's side: what one CARLA server holds ------------------------------------------


@dataclasses.dataclass
class ActorRecord:
    """One actor as the server holds it (tests read and change these)."""

    id: int
    type_id: str
    attributes: dict[str, str]
    transform: Any
    parent_id: int | None = None
    velocity: Any = dataclasses.field(default_factory=carla.Vector3D)
    angular_velocity: Any = dataclasses.field(default_factory=carla.Vector3D)
    acceleration: Any = dataclasses.field(default_factory=carla.Vector3D)
    control: Any = None
    callback: Any = None  # what a sensor handle listens with (the stream's subscriber)


@dataclasses.dataclass
class TMRecord:
    """One Traffic Manager and its settings."""

    port: int
    sync: bool | None = None
    seeds: list[int] = dataclasses.field(default_factory=list)
    hybrid: tuple[bool, float] = (False, 0.0)
    shut: bool = False


class FakeServer:
    """What one CARLA server holds, shared by every client connected to it."""

    def __init__(self, max_steer_deg: float = 70.0) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.actors: dict[int, ActorRecord] = {}
        self.snapshot: set[int] = set()  # actor ids of the last tick
        self.original = settings(fixed_delta_seconds=0.02)  # what ran before the env connected
        self.settings = copy_settings(self.original)
        self.map = carla.Map("Carla/Maps/Town10HD_Opt", XODR)
        self.frame, self.next_id, self.episode = 1000, 100, 7001
        self.version = CLIENT_VERSION
        self.down_for = 0  # the next N server calls time out
        self.refuse_destroy: dict[int, int] = {}  # actor id -> destroys refused before one works
        self.tm_error = ""  # get_trafficmanager raises this
        self.load_error = ""  # load_world / reload_world raise this
        self.occupied_x: list[float] = []  # a SpawnActor within 1 m of these x collides
        self.tms: list[TMRecord] = []
        self.autopilot: dict[int, tuple[bool, int]] = {}
        self.max_steer_deg = max_steer_deg
        self.blueprints = [FakeBlueprint(c, 4) for c in CARS]
        self.blueprints.append(FakeBlueprint("vehicle.yamaha.yzf", 2))

    def rpc(self, *call: Any) -> None:
        """Record a call; raise the client's time-out while the server is down."""
        if self.down_for > 0:
            self.down_for -= 1
            self.log.append(("TIMED OUT", *call))
            raise RuntimeError(TIMEOUT)
        self.log.append(call)

    def add(self, type_id: str, transform: Any, attributes: dict[str, str] | None = None,
            parent_id: int | None = None) -> ActorRecord:
        self.next_id += 1
        record = ActorRecord(self.next_id, type_id, dict(attributes or {}), transform, parent_id)
        self.actors[record.id] = record
        return record

    def destroy(self, actor_id: int) -> str:
        """The server's destroy_actor: "" when done, else its error text."""
        if actor_id not in self.actors:
            return NOT_FOUND
        if self.refuse_destroy.get(actor_id, 0) > 0:
            self.refuse_destroy[actor_id] -= 1
            return REFUSED
        del self.actors[actor_id]
        return ""

    def new_episode(self, reset_settings: bool = True) -> None:
        """load_world / reload_world: a new episode, every actor gone."""
        self.episode += 1
        self.actors.clear()
        self.snapshot.clear()
        if reset_settings:
            self.settings = settings()

    def restart(self) -> None:
        """The server process restarted: default settings, no actors, and frames, actor ids
        and episode ids counted from the start again (CARLA's per-process counters: ids of the
        old server get reused; the episode id is the first one, not the next)."""
        self.new_episode()
        self.frame, self.next_id, self.episode = 0, 100, 1
        self.log.append(("server restarted",))

    def held(self) -> set[int]:
        return {i for i, a in self.actors.items() if a.type_id.startswith(("vehicle", "sensor"))}

    def calls(self, name: str) -> list[tuple[Any, ...]]:
        return [c for c in self.log if c[0] == name]

    def index(self, *call: Any) -> int:
        return self.log.index(call)


# ---- blueprints ------------------------------------------------------------------------------


class FakeAttribute:
    """carla.ActorAttribute."""

    def __init__(self, attribute_id: str, value: str) -> None:
        self._id, self._value = attribute_id, value

    @property
    def id(self) -> str:
        return self._id

    def as_int(self) -> int:
        return int(self._value)

    def as_str(self) -> str:
        return self._value

    def __int__(self) -> int:
        return int(self._value)

    def __str__(self) -> str:
        return self._value


class FakeBlueprint:
    """carla.ActorBlueprint."""

    def __init__(self, type_id: str, wheels: int) -> None:
        self._id = type_id
        self._attributes = {"role_name": "", "number_of_wheels": str(wheels)}

    @property
    def id(self) -> str:
        return self._id

    def has_attribute(self, name: str) -> bool:
        return name in self._attributes

    def get_attribute(self, name: str) -> FakeAttribute:
        return FakeAttribute(name, self._attributes[name])

    def set_attribute(self, name: str, value: str) -> None:
        self._attributes[name] = value


class FakeLibrary:
    """carla.BlueprintLibrary."""

    def __init__(self, blueprints: list[FakeBlueprint]) -> None:
        self._blueprints = list(blueprints)

    def filter(self, wildcard_pattern: str) -> FakeLibrary:
        if wildcard_pattern.endswith("*"):
            prefix = wildcard_pattern[:-1]
            return FakeLibrary([b for b in self._blueprints if b.id.startswith(prefix)])
        return FakeLibrary([b for b in self._blueprints if b.id == wildcard_pattern])

    def find(self, id: str) -> FakeBlueprint:  # the real parameter's name
        return FakeBlueprint(id, 0)

    def __iter__(self) -> Iterator[FakeBlueprint]:
        return iter(self._blueprints)

    def __len__(self) -> int:
        return len(self._blueprints)

    def __getitem__(self, index: int) -> FakeBlueprint:
        return self._blueprints[index]


# ---- actor handles (client side) -------------------------------------------------------------


class FakeActor:
    """carla.Actor: a client-side handle reading the server's record."""

    def __init__(self, client: FakeClient, record: ActorRecord, episode: int) -> None:
        self._client, self._server = client, client._server
        self._record, self._episode = record, episode
        self._destroyed = False

    def _lock(self) -> ActorRecord:
        """EpisodeProxy::Lock: a destroyed handle or an old episode's raises."""
        if self._destroyed:
            raise RuntimeError(DESTROYED)
        if self._episode != self._server.episode:
            raise RuntimeError(EXPIRED)
        return self._record

    @property
    def id(self) -> int:
        return self._record.id

    @property
    def type_id(self) -> str:
        return self._record.type_id

    @property
    def attributes(self) -> dict[str, str]:
        return dict(self._record.attributes)

    @property
    def parent(self) -> FakeActor | None:
        parent = self._record.parent_id
        return None if parent is None else self._client._handle(self._server.actors[parent])

    @property
    def bounding_box(self) -> Any:
        return carla.BoundingBox(carla.Location(), carla.Vector3D(2.4, 1.0, 0.8))

    def get_transform(self) -> Any:
        return self._lock().transform

    def get_velocity(self) -> Any:
        return self._lock().velocity

    def get_angular_velocity(self) -> Any:
        return self._lock().angular_velocity

    def get_acceleration(self) -> Any:
        return self._lock().acceleration

    def set_target_velocity(self, velocity: Any) -> None:
        record = self._lock()
        self._server.rpc("set_target_velocity", record.id, self._server.frame)
        record.velocity = velocity

    def destroy(self) -> bool:
        record = self._lock()
        if self._server.down_for > 0:  # the client swallows the time-out after waiting it out
            self._server.down_for -= 1
            self._server.log.append(("TIMED OUT", "destroy", record.id))
            time.sleep(self._client._timeout or 0.0)
            return False
        self._server.log.append(("destroy", record.id))
        if self._server.destroy(record.id):  # an error text: refused, or already gone
            return False
        self._destroyed = True
        return True


class FakeVehicle(FakeActor):
    """carla.Vehicle."""

    def apply_control(self, control: Any) -> None:
        record = self._lock()
        self._server.rpc("apply_control", record.id)
        record.control = control

    def get_control(self) -> Any:
        return self._lock().control

    def get_physics_control(self) -> Any:
        record = self._lock()
        self._server.rpc("get_physics_control", record.id)
        wheel = carla.WheelPhysicsControl(max_steer_angle=self._server.max_steer_deg)
        return carla.VehiclePhysicsControl(wheels=[wheel] * 4)


class FakeSensor(FakeActor):
    """carla.Sensor."""

    def listen(self, callback: Any) -> None:
        record = self._lock()
        self._server.rpc("listen", record.id)
        record.callback = callback

    def is_listening(self) -> bool:
        return self._record.callback is not None

    def stop(self) -> None:  # unsubscribes the client's stream: no server call
        self._server.log.append(("stop", self._record.id))
        self._record.callback = None


class FakeCollisionEvent:
    """carla.CollisionEvent (what a collision sensor's callback gets)."""

    def __init__(self, frame: int, other_actor: Any, normal_impulse: Any) -> None:
        self._frame, self._other, self._impulse = frame, other_actor, normal_impulse

    @property
    def frame(self) -> int:
        return self._frame

    @property
    def other_actor(self) -> Any:
        return self._other

    @property
    def normal_impulse(self) -> Any:
        return self._impulse


class FakeLaneMarking:
    """carla.LaneMarking."""

    def __init__(self, marking_type: Any) -> None:
        self._type = marking_type

    @property
    def type(self) -> Any:
        return self._type


class FakeLaneInvasionEvent:
    """carla.LaneInvasionEvent."""

    def __init__(self, frame: int, markings: list[FakeLaneMarking]) -> None:
        self._frame, self._markings = frame, list(markings)

    @property
    def frame(self) -> int:
        return self._frame

    @property
    def crossed_lane_markings(self) -> list[FakeLaneMarking]:
        return list(self._markings)


# ---- Traffic Manager, world, client ----------------------------------------------------------


class FakeTM:
    """carla.TrafficManager (its state is the server's TMRecord)."""

    def __init__(self, server: FakeServer, record: TMRecord) -> None:
        self._server, self._record = server, record

    def get_port(self) -> int:
        return self._record.port

    def set_synchronous_mode(self, mode_switch: bool) -> None:
        self._server.rpc("tm sync", self._record.port, mode_switch)
        self._record.sync = mode_switch

    def set_random_device_seed(self, value: int) -> None:
        self._server.log.append(("tm seed", self._record.port, value))
        self._record.seeds.append(value)

    def set_hybrid_physics_mode(self, enabled: bool) -> None:
        self._record.hybrid = (enabled, self._record.hybrid[1])

    def set_hybrid_physics_radius(self, r: float) -> None:
        self._record.hybrid = (self._record.hybrid[0], r)

    def shut_down(self) -> None:
        self._server.rpc("tm shut_down", self._record.port)
        self._record.shut = True


class FakeWorld:
    """carla.World of one episode."""

    def __init__(self, client: FakeClient, episode: int) -> None:
        self._client, self._server, self._episode = client, client._server, episode

    def _lock(self) -> FakeServer:
        if self._episode != self._server.episode:
            raise RuntimeError(EXPIRED)
        return self._server

    @property
    def id(self) -> int:
        return self._episode

    def get_settings(self) -> Any:
        return copy_settings(self._lock().settings)

    def apply_settings(self, settings: Any, seconds: float = 0.0) -> int:
        server = self._lock()
        server.rpc("apply_settings")
        server.settings = copy_settings(settings)
        return server.frame

    def get_map(self) -> Any:
        server = self._lock()
        server.rpc("get_map", self._client._timeout)
        return server.map

    def tick(self, seconds: float = 0.0) -> int:
        server = self._lock()
        server.rpc("tick", seconds, server.frame + 1)
        server.frame += 1
        server.snapshot = set(server.actors)
        return server.frame

    def get_blueprint_library(self) -> FakeLibrary:
        return FakeLibrary(self._lock().blueprints)

    def try_spawn_actor(self, blueprint: FakeBlueprint, transform: Any,
                        attach_to: Any = None) -> Any:
        server = self._lock()
        server.rpc("spawn", blueprint.id)
        record = server.add(blueprint.id, transform, blueprint._attributes,
                            None if attach_to is None else attach_to.id)
        return self._client._handle(record)

    def spawn_actor(self, blueprint: FakeBlueprint, transform: Any, attach_to: Any = None) -> Any:
        return self.try_spawn_actor(blueprint, transform, attach_to)

    def get_actors(self, actor_ids: list[int] | None = None) -> list[FakeActor]:
        """From the client's cache first (destroyed actors stay in it); the ids missing there
        are asked from the server. Without ids: the actors of the last tick."""
        server = self._lock()
        wanted = sorted(server.snapshot) if actor_ids is None else list(actor_ids)
        missing = [i for i in wanted if i not in self._client._cache]
        if missing:
            server.rpc("get_actors_by_id", tuple(missing))
            for i in missing:
                if i in server.actors:
                    self._client._handle(server.actors[i])
        return [self._client._cache[i] for i in wanted if i in self._client._cache]


class FakeClient:
    """carla.Client connected to one FakeServer."""

    def __init__(self, server: FakeServer, host: str, port: int) -> None:
        self._server, self._timeout = server, None
        self._episode: int | None = None  # the episode the client's state follows
        self._cache: dict[int, FakeActor] = {}
        server.log.append(("Client", host, port))

    def _handle(self, record: ActorRecord) -> FakeActor:
        """A handle for ``record``, kept in the client's actor cache."""
        if self._episode != self._server.episode:
            self._episode, self._cache = self._server.episode, {}
        if record.id not in self._cache:
            kind = FakeSensor if record.type_id.startswith("sensor.") else FakeVehicle
            self._cache[record.id] = kind(self, record, self._server.episode)
        return self._cache[record.id]

    def set_timeout(self, seconds: float) -> None:
        self._server.log.append(("set_timeout", seconds))
        self._timeout = seconds

    def get_client_version(self) -> str:
        return CLIENT_VERSION

    def get_server_version(self) -> str:
        self._server.rpc("version")
        return self._server.version

    def get_world(self) -> FakeWorld:
        if self._episode is None:
            self._server.rpc("get_world", self._timeout)
        if self._episode != self._server.episode:
            self._episode, self._cache = self._server.episode, {}
        return FakeWorld(self, self._server.episode)

    def load_world(self, map_name: str, reset_settings: bool = True) -> FakeWorld:
        self._server.rpc("load_world", map_name, self._timeout)
        if self._server.load_error:
            raise RuntimeError(self._server.load_error)
        self._server.new_episode(reset_settings)
        self._server.map = carla.Map(f"Carla/Maps/{map_name}", XODR)
        return self.get_world()

    def reload_world(self, reset_settings: bool = True) -> FakeWorld:
        self._server.rpc("reload_world", reset_settings, self._timeout)
        if self._server.load_error:
            raise RuntimeError(self._server.load_error)
        self._server.new_episode(reset_settings)
        return self.get_world()

    def get_trafficmanager(self, port: int = 8000) -> FakeTM:
        self._server.rpc("get_trafficmanager", port)
        if self._server.tm_error:
            raise RuntimeError(self._server.tm_error)
        record = TMRecord(port)
        self._server.tms.append(record)
        return FakeTM(self._server, record)

    def apply_batch_sync(self, commands: list[Any], do_tick: bool = False) -> list[FakeResponse]:
        self._server.rpc("apply_batch_sync", len(commands))
        return [self._run(command) for command in commands]

    def _run(self, command: Any) -> FakeResponse:
        if isinstance(command, carla.command.DestroyActor):
            self._server.log.append(("DestroyActor", command.actor_id))
            return FakeResponse(command.actor_id, self._server.destroy(command.actor_id))
        blueprint, x = command._blueprint, command.transform.location.x
        if any(abs(x - taken) < 1.0 for taken in self._server.occupied_x):
            return FakeResponse(0, COLLIDES)
        record = self._server.add(blueprint.id, command.transform, blueprint._attributes)
        then = command._then
        if isinstance(then, carla.command.SetAutopilot) \
                and then.actor_id == carla.command.FutureActor:
            self._server.autopilot[record.id] = (then.enabled, then.tm_port)
        return FakeResponse(record.id)


class FakeSpawnActor:
    """carla.command.SpawnActor."""

    def __init__(self, blueprint: FakeBlueprint, transform: Any) -> None:
        self._blueprint, self._transform, self._then = blueprint, transform, None

    @property
    def transform(self) -> Any:
        return self._transform

    def then(self, command: Any) -> FakeSpawnActor:
        self._then = command
        return self


class FakeResponse:
    """carla.command.Response."""

    def __init__(self, actor_id: int, error: str = "") -> None:
        self._actor_id, self._error = actor_id, error

    @property
    def actor_id(self) -> int:
        return self._actor_id

    @property
    def error(self) -> str:
        return self._error

    def has_error(self) -> bool:
        return bool(self._error)


class FakeProcess:
    """dsp_driving's ServerProcess for a launched server, killed into the void."""

    def __init__(self, server: FakeServer) -> None:
        self._server, self._alive = server, True

    @property
    def pid(self) -> int | None:
        return 4242 if self._alive else None

    def running(self) -> bool:
        return self._alive

    def reap_stale(self) -> int | None:
        return None

    def start(self) -> None:
        self._alive = True

    def kill(self) -> None:
        self._server.log.append(("server kill",))
        self._alive = False


# Each fake and the real class it stands for (test_fake_carla_contract.py checks them).
REAL = {FakeAttribute: carla.ActorAttribute, FakeBlueprint: carla.ActorBlueprint,
        FakeLibrary: carla.BlueprintLibrary, FakeActor: carla.Actor, FakeVehicle: carla.Vehicle,
        FakeSensor: carla.Sensor, FakeCollisionEvent: carla.CollisionEvent,
        FakeLaneInvasionEvent: carla.LaneInvasionEvent, FakeLaneMarking: carla.LaneMarking,
        FakeTM: carla.TrafficManager, FakeWorld: carla.World, FakeClient: carla.Client,
        FakeSpawnActor: carla.command.SpawnActor, FakeResponse: carla.command.Response}


def fake_module(server: FakeServer) -> SimpleNamespace:
    """The carla module as the bridge uses it: the server side faked, the values real."""
    return SimpleNamespace(
        Client=lambda host, port: FakeClient(server, host, port),
        command=SimpleNamespace(SpawnActor=FakeSpawnActor,
                                SetAutopilot=carla.command.SetAutopilot,
                                DestroyActor=carla.command.DestroyActor,
                                FutureActor=carla.command.FutureActor),
        Transform=carla.Transform, Location=carla.Location, Rotation=carla.Rotation,
        Vector3D=carla.Vector3D, VehicleControl=carla.VehicleControl,
        WorldSettings=carla.WorldSettings, LaneType=carla.LaneType)
