"""The real CarlaBackend (and Carla-v0 over it) driven through a recording fake of carla.

No CARLA server runs here, so the fake plays the server side only: actors, world settings,
the Traffic Manager, batches, RPC time-outs (with the client's real message). What the backend
builds and converts are the installed client's own classes (carla.Transform, Location,
Rotation, Vector3D, VehicleControl, WorldSettings, VehiclePhysicsControl), and the map is a
real carla.Map read from test/data/two_lane_arc.xodr. Every call lands in ``FakeServer.log``
in order, so the tests check what was called, with what, and in which order.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
import socket
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

carla = pytest.importorskip("carla")

from dsp_driving.driving import carla_actors, carla_backend  # noqa: E402
from dsp_driving.driving.backend import (  # noqa: E402
    CollisionEvent,
    LaneInvasionEvent,
    Pose,
    SimulatorCrashed,
)
from dsp_driving.driving.carla_backend import CarlaBackend, is_server_failure  # noqa: E402
from dsp_driving.driving.carla_config import CarlaConfig  # noqa: E402
from dsp_driving.driving.carla_env import CarlaDriveEnv  # noqa: E402
from dsp_driving.driving.contract import ActionLimits, CarlaControl  # noqa: E402
from dsp_driving.driving.ports import PortsInUse, ServerPorts  # noqa: E402

XODR = (Path(__file__).resolve().parents[1] / "data" / "two_lane_arc.xodr").read_text()
PORTS = ServerPorts(2000, 2001, 2002, 8000)
TIMEOUT = ("time-out of 10000ms while waiting for the simulator, make sure the simulator is "
           "ready and connected to 127.0.0.1:2000")  # the client's TimeoutException text
CARS = ("vehicle.tesla.model3", "vehicle.audi.tt", "vehicle.bmw.grandtourer",
        "vehicle.mini.cooper_s", "vehicle.nissan.patrol", "vehicle.seat.leon")


def settings(sync: bool = False, delta: float | None = None, no_render: bool = False) -> Any:
    out = carla.WorldSettings()
    out.synchronous_mode, out.fixed_delta_seconds, out.no_rendering_mode = sync, delta, no_render
    return out


def copy_settings(s: Any) -> Any:
    return settings(s.synchronous_mode, s.fixed_delta_seconds, s.no_rendering_mode)


# ---- the fake server ----------------------------------------------------------------------


class FakeServer:
    """What one CARLA server holds, shared by every client connected to it."""

    def __init__(self, max_steer_deg: float = 70.0) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.actors: dict[int, FakeActor] = {}
        self.original = settings(delta=0.02)  # what the user ran before the env connected
        self.settings = copy_settings(self.original)
        self.map = carla.Map("Carla/Maps/Town10HD_Opt", XODR)
        self.frame, self.next_id = 1000, 100
        self.down_for = 0  # the next N server calls time out
        self.refuse_destroy: dict[int, int] = {}  # actor id -> destroys refused before one works
        self.tm_error = ""  # get_trafficmanager raises this
        self.tms: list[FakeTM] = []
        self.autopilot: dict[int, tuple[bool, int]] = {}
        self.max_steer_deg = max_steer_deg
        self.blueprints = [FakeBlueprint(c, 4) for c in CARS]
        self.blueprints.append(FakeBlueprint("vehicle.yamaha.yzf", 2))

    def rpc(self, *call: Any) -> None:
        if self.down_for > 0:
            self.down_for -= 1
            self.log.append(("TIMED OUT", *call))
            raise RuntimeError(TIMEOUT)
        self.log.append(call)

    def add(self, cls: type, type_id: str, transform: Any, **kw: Any) -> Any:
        self.next_id += 1
        actor = cls(self, self.next_id, type_id, transform, **kw)
        self.actors[actor.id] = actor
        return actor

    def destroy(self, actor_id: int) -> bool:
        if self.refuse_destroy.get(actor_id, 0) > 0:
            self.refuse_destroy[actor_id] -= 1
            return False
        return self.actors.pop(actor_id, None) is not None

    def held(self) -> set[int]:
        return {i for i, a in self.actors.items() if a.type_id.startswith(("vehicle", "sensor"))}

    def calls(self, name: str) -> list[tuple[Any, ...]]:
        return [c for c in self.log if c[0] == name]

    def index(self, *call: Any) -> int:
        return self.log.index(call)


class FakeBlueprint:
    def __init__(self, type_id: str, wheels: int) -> None:
        self.id = type_id
        self.attributes = {"role_name": "", "number_of_wheels": str(wheels)}

    def has_attribute(self, name: str) -> bool:
        return name in self.attributes

    def get_attribute(self, name: str) -> str:
        return self.attributes[name]

    def set_attribute(self, name: str, value: str) -> None:
        self.attributes[name] = value


class FakeLibrary:
    def __init__(self, blueprints: list[FakeBlueprint]) -> None:
        self.blueprints = blueprints

    def filter(self, pattern: str) -> list[FakeBlueprint]:
        if pattern.endswith("*"):
            return [b for b in self.blueprints if b.id.startswith(pattern[:-1])]
        return [b for b in self.blueprints if b.id == pattern]

    def find(self, type_id: str) -> FakeBlueprint:
        return FakeBlueprint(type_id, 0)


class FakeActor:
    def __init__(self, server: FakeServer, actor_id: int, type_id: str, transform: Any,
                 attributes: dict[str, str] | None = None, parent: int | None = None) -> None:
        self.server, self.id, self.type_id = server, actor_id, type_id
        self.attributes, self.parent = dict(attributes or {}), parent
        self.transform = transform
        self.velocity = carla.Vector3D()
        self.angular_velocity = carla.Vector3D()
        self.acceleration = carla.Vector3D()
        self.bounding_box = carla.BoundingBox(carla.Location(), carla.Vector3D(2.4, 1.0, 0.8))
        self.control: Any = None

    def get_transform(self) -> Any:
        return self.transform

    def get_velocity(self) -> Any:
        return self.velocity

    def get_angular_velocity(self) -> Any:
        return self.angular_velocity

    def get_acceleration(self) -> Any:
        return self.acceleration

    def destroy(self) -> bool:
        self.server.rpc("destroy", self.id)
        return self.server.destroy(self.id)

    def apply_control(self, control: Any) -> None:
        self.server.rpc("apply_control", self.id)
        self.control = control

    def set_target_velocity(self, velocity: Any) -> None:
        self.server.rpc("set_target_velocity", self.id, self.server.frame)
        self.velocity = velocity

    def get_physics_control(self) -> Any:
        self.server.rpc("get_physics_control", self.id)
        wheel = carla.WheelPhysicsControl(max_steer_angle=self.server.max_steer_deg)
        return carla.VehiclePhysicsControl(wheels=[wheel] * 4)


class FakeSensor(FakeActor):
    callback: Any = None

    def listen(self, callback: Any) -> None:
        self.server.rpc("listen", self.id)
        self.callback = callback

    def is_listening(self) -> bool:
        return self.callback is not None

    def stop(self) -> None:
        self.server.log.append(("stop", self.id))
        self.callback = None


class FakeTM:
    def __init__(self, server: FakeServer, port: int) -> None:
        self.server, self.port = server, port
        self.sync: bool | None = None
        self.seeds: list[int] = []
        self.hybrid: tuple[bool, float] = (False, 0.0)
        self.shut = False

    def set_synchronous_mode(self, mode: bool) -> None:
        self.server.log.append(("tm sync", self.port, mode))
        self.sync = mode

    def set_random_device_seed(self, seed: int) -> None:
        self.seeds.append(seed)

    def set_hybrid_physics_mode(self, mode: bool) -> None:
        self.hybrid = (mode, self.hybrid[1])

    def set_hybrid_physics_radius(self, radius: float) -> None:
        self.hybrid = (self.hybrid[0], radius)

    def shut_down(self) -> None:
        self.server.log.append(("tm shut_down", self.port))
        self.shut = True


class FakeWorld:
    def __init__(self, server: FakeServer, client: FakeClient) -> None:
        self.server, self.client = server, client

    def get_settings(self) -> Any:
        return copy_settings(self.server.settings)

    def apply_settings(self, value: Any) -> None:
        self.server.rpc("apply_settings")
        self.server.settings = copy_settings(value)

    def get_map(self) -> Any:
        self.server.rpc("get_map", self.client.timeout)
        return self.server.map

    def tick(self, seconds: float = 0.0) -> int:
        self.server.rpc("tick", seconds, self.server.frame + 1)
        self.server.frame += 1
        return self.server.frame

    def get_blueprint_library(self) -> FakeLibrary:
        return FakeLibrary(self.server.blueprints)

    def try_spawn_actor(self, blueprint: FakeBlueprint, transform: Any) -> Any:
        self.server.rpc("spawn", blueprint.id)
        return self.server.add(FakeActor, blueprint.id, transform, attributes=blueprint.attributes)

    def spawn_actor(self, blueprint: FakeBlueprint, transform: Any, attach_to: Any) -> Any:
        self.server.rpc("spawn", blueprint.id)
        return self.server.add(FakeSensor, blueprint.id, transform, parent=attach_to.id)

    def get_actors(self, ids: list[int] | None = None) -> list[Any]:
        self.server.rpc("get_actors")
        return [a for i, a in self.server.actors.items() if ids is None or i in ids]


class FakeClient:
    def __init__(self, server: FakeServer, host: str, port: int) -> None:
        self.server, self.timeout = server, None
        server.log.append(("Client", host, port))

    def set_timeout(self, seconds: float) -> None:
        self.server.log.append(("set_timeout", seconds))
        self.timeout = seconds

    def get_world(self) -> FakeWorld:
        self.server.rpc("get_world", self.timeout)
        return FakeWorld(self.server, self)

    def load_world(self, name: str) -> FakeWorld:
        self.server.rpc("load_world", name, self.timeout)
        self.server.map = carla.Map(f"Carla/Maps/{name}", XODR)
        self.server.settings = settings()  # load_world resets the settings by default
        return FakeWorld(self.server, self)

    def get_trafficmanager(self, port: int) -> FakeTM:
        self.server.rpc("get_trafficmanager", port)
        if self.server.tm_error:
            raise RuntimeError(self.server.tm_error)
        tm = FakeTM(self.server, port)
        self.server.tms.append(tm)
        return tm

    def apply_batch_sync(self, batch: list[Any], do_tick: bool = False) -> list[Any]:
        self.server.rpc("apply_batch_sync", len(batch))
        return [self._run(command) for command in batch]

    def _run(self, command: Any) -> Any:
        if isinstance(command, DestroyActor):
            ok = self.server.destroy(command.actor_id)
            return SimpleNamespace(actor_id=command.actor_id, has_error=not ok,
                                   error="" if ok else "unable to destroy actor: not found")
        actor = self.server.add(FakeActor, command.blueprint.id, command.transform,
                                attributes=command.blueprint.attributes)
        then = command.next
        if isinstance(then, SetAutopilot) and then.actor is FUTURE_ACTOR:
            self.server.autopilot[actor.id] = (then.enabled, then.port)
        return SimpleNamespace(actor_id=actor.id, has_error=False, error="")


class SpawnActor:
    def __init__(self, blueprint: FakeBlueprint, transform: Any) -> None:
        self.blueprint, self.transform, self.next = blueprint, transform, None

    def then(self, command: Any) -> SpawnActor:
        self.next = command
        return self


class SetAutopilot:
    def __init__(self, actor: Any, enabled: bool, port: int) -> None:
        self.actor, self.enabled, self.port = actor, enabled, port


class DestroyActor:
    def __init__(self, actor_id: int) -> None:
        self.actor_id = actor_id


FUTURE_ACTOR = object()


class FakeProcess:
    """A launched server that restarts into a fresh world (no actors, default settings)."""

    def __init__(self, server: FakeServer) -> None:
        self.server, self.pid, self.alive = server, 4242, True

    def running(self) -> bool:
        return self.alive

    def restart(self) -> None:
        self.server.log.append(("server restart",))
        self.server.actors.clear()
        self.server.settings = settings()
        self.server.map = carla.Map("Carla/Maps/Town10HD_Opt", XODR)

    def kill(self) -> None:
        self.server.log.append(("server kill",))
        self.alive = False


def fake_carla(server: FakeServer) -> SimpleNamespace:
    """The carla module as the backend uses it: the server side faked, the values real."""
    return SimpleNamespace(
        Client=lambda host, port: FakeClient(server, host, port),
        command=SimpleNamespace(SpawnActor=SpawnActor, SetAutopilot=SetAutopilot,
                                DestroyActor=DestroyActor, FutureActor=FUTURE_ACTOR),
        Transform=carla.Transform, Location=carla.Location, Rotation=carla.Rotation,
        Vector3D=carla.Vector3D, VehicleControl=carla.VehicleControl, LaneType=carla.LaneType)


def patch_carla(monkeypatch: pytest.MonkeyPatch, fake: FakeServer) -> None:
    for module in (carla_backend, carla_actors):
        monkeypatch.setattr(module, "import_carla", lambda: fake_carla(fake))


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    fake = FakeServer()
    patch_carla(monkeypatch, fake)
    return fake


def config(**overrides: Any) -> CarlaConfig:
    return CarlaConfig(**{"town": "two_lane_arc", "timeout_s": 10.0, "startup_timeout_s": 120.0,
                          "seed": 5, **overrides})


def sensors_of(server: FakeServer) -> dict[str, FakeSensor]:
    return {a.type_id: a for a in server.actors.values() if isinstance(a, FakeSensor)}


# ---- connection, settings, Traffic Manager ------------------------------------------------


def test_start_applies_settings_and_the_traffic_manager(server: FakeServer) -> None:
    backend = CarlaBackend(config(), PORTS)
    backend.start()
    assert server.log[0] == ("Client", "127.0.0.1", 2000)
    # Connecting and loading the map run under startup_timeout_s, ticking under timeout_s.
    assert server.calls("set_timeout") == [("set_timeout", 120.0), ("set_timeout", 10.0)]
    assert server.calls("get_world") == [("get_world", 120.0)]
    assert server.calls("load_world") == [("load_world", "two_lane_arc", 120.0)]
    assert server.calls("get_map") == [("get_map", 120.0), ("get_map", 120.0)]
    assert server.calls("tick") == [("tick", 120.0, 1001)]
    assert server.index("tick", 120.0, 1001) < server.index("set_timeout", 10.0)
    assert server.settings == settings(sync=True, delta=0.05, no_render=True)
    (tm,) = server.tms
    assert (tm.port, tm.sync, tm.seeds, tm.hybrid) == (8000, True, [5], (True, 70.0))
    assert backend.road_map().name == "Carla/Maps/two_lane_arc"
    backend.tick()
    assert server.calls("tick")[-1] == ("tick", 10.0, 1002)
    backend.close()


def test_episode_spawn_tick_state_events_and_teardown(server: FakeServer) -> None:
    backend = CarlaBackend(config(), PORTS)
    backend.start()
    backend.seed_episode(11)
    # REP-103 yaw +30 deg (left) is CARLA yaw -30 deg; y flips.
    ego_id = backend.spawn_ego(Pose(20.0, -1.75, 0.0, math.radians(30.0)), speed_mps=5.0)
    ego = server.actors[ego_id]
    assert ego.type_id == "vehicle.tesla.model3" and ego.attributes["role_name"] == "hero"
    assert (ego.transform.location.y, ego.transform.location.z) == pytest.approx((1.75, 0.3))
    assert ego.transform.rotation.yaw == pytest.approx(-30.0)
    sensors = sensors_of(server)
    assert sorted(sensors) == ["sensor.other.collision", "sensor.other.lane_invasion"]
    assert all(s.parent == ego_id and s.is_listening() for s in sensors.values())
    assert (ego.control.throttle, ego.control.brake, ego.control.manual_gear_shift,
            ego.control.hand_brake) == (0.0, 0.0, False, False)  # not stuck in neutral
    assert server.calls("set_target_velocity") == []  # not before the car is on the road

    npc_ids = backend.spawn_npcs([Pose(60.0, -1.75, 0.0, 0.0), Pose(80.0, -5.25, 0.0, 0.0)])
    assert [server.autopilot[i] for i in npc_ids] == [(True, 8000), (True, 8000)]
    assert all(server.actors[i].attributes["number_of_wheels"] == "4" for i in npc_ids)

    frame = backend.tick()  # (start ticked 1001) tick 1002, then the velocity, tick 1003
    assert server.calls("set_target_velocity") == [("set_target_velocity", ego_id, 1002)]
    assert frame == 1003 and server.calls("tick")[-1][2] == 1003
    assert (ego.velocity.x, ego.velocity.y) == pytest.approx(
        (5 * math.cos(math.radians(30)), -5 * math.sin(math.radians(30))), abs=1e-5)
    backend.tick()
    assert len(server.calls("set_target_velocity")) == 1  # once per spawn

    # ego_state: CARLA pose (10, 5) yaw 30 deg (clockwise), v = (3, 4, 0), w_z = 10 deg/s.
    ego.transform = carla.Transform(carla.Location(x=10.0, y=5.0, z=0.3),
                                    carla.Rotation(yaw=30.0))
    ego.velocity, ego.acceleration = carla.Vector3D(3.0, 4.0, 0.0), carla.Vector3D(1.0, 0, 0)
    ego.angular_velocity = carla.Vector3D(0.0, 0.0, 10.0)
    state = backend.ego_state()
    c30, s30 = math.cos(math.radians(30)), math.sin(math.radians(30))
    assert (state.x, state.y, state.yaw) == pytest.approx((10.0, -5.0, -math.pi / 6), abs=1e-5)
    assert state.speed == pytest.approx(3 * c30 + 4 * s30, abs=1e-5)  # 4.598 along the heading
    assert state.yaw_rate == pytest.approx(-math.radians(10.0), abs=1e-6)  # turning right
    assert state.accel == pytest.approx(c30, abs=1e-5)
    assert state.length == pytest.approx(4.8, abs=1e-5)
    npc = backend.vehicles()[0]
    assert (npc.x, npc.y, npc.yaw, npc.speed) == pytest.approx((60.0, -1.75, 0.0, 0.0),
                                                               abs=1e-5)

    backend.apply_control(CarlaControl(throttle=0.4, steer=-0.2, brake=0.0))
    assert (ego.control.throttle, ego.control.steer, ego.control.brake) == pytest.approx(
        (0.4, -0.2, 0.0))

    sensors["sensor.other.collision"].callback(SimpleNamespace(
        frame=1003, other_actor=SimpleNamespace(type_id="vehicle.audi.tt"),
        normal_impulse=carla.Vector3D(300.0, 400.0, 0.0)))
    sensors["sensor.other.lane_invasion"].callback(SimpleNamespace(
        frame=1003, crossed_lane_markings=[SimpleNamespace(type=carla.LaneMarkingType.Solid)]))
    events = backend.events()
    assert events.collisions == (CollisionEvent(1003, "vehicle.audi.tt", 500.0),)
    assert events.lane_invasions == (LaneInvasionEvent(1003, ("Solid",)),)
    assert backend.events().collisions == ()  # drained

    backend.destroy_actors()
    for sensor in sensors.values():  # through the original handles: stop, then destroy
        assert server.index("stop", sensor.id) < server.index("destroy", sensor.id)
    destroy_batches = server.calls("apply_batch_sync")[-1]
    assert destroy_batches == ("apply_batch_sync", len(npc_ids))
    assert server.held() == set() and backend.orphaned_actor_ids == set()
    backend.close()


def test_npc_models_and_tm_follow_the_episode_seed(server: FakeServer) -> None:
    backend = CarlaBackend(config(), PORTS)
    backend.start()
    poses = [Pose(20.0 + 10 * i, -1.75, 0.0, 0.0) for i in range(6)]

    def models(seed: int) -> list[str]:
        backend.seed_episode(seed)
        ids = backend.spawn_npcs(poses)
        out = [server.actors[i].type_id for i in ids]
        backend.destroy_actors()
        return out

    first = models(3)
    assert models(3) == first and models(4) != first
    assert "vehicle.yamaha.yzf" not in first  # four-wheelers only
    assert server.tms[0].seeds == [5, 3, 3, 4]  # config seed at connect, then each episode
    backend.close()


def test_steer_scale_comes_from_the_vehicle(server: FakeServer,
                                            caplog: pytest.LogCaptureFixture) -> None:
    server.max_steer_deg = 60.0
    backend = CarlaBackend(config(), PORTS, ActionLimits())
    backend.start()
    assert backend.max_steer_rad is None
    assert backend.control_limits(ActionLimits()) == ActionLimits()
    with caplog.at_level(logging.WARNING, logger=carla_actors.__name__):
        backend.spawn_ego(Pose(20.0, -1.75, 0.0, 0.0))
    assert backend.max_steer_rad == pytest.approx(math.radians(60.0))
    limits = backend.control_limits(ActionLimits(max_steer_rad=0.4))
    assert (limits.carla_max_steer_rad, limits.max_steer_rad) == pytest.approx(
        (math.radians(60.0), 0.4))
    assert "60.0 deg, not ActionLimits.carla_max_steer_rad = 70.0 deg" in caplog.text
    backend.close()


# ---- teardown and crashes -----------------------------------------------------------------


def episode(backend: CarlaBackend, npcs: int = 3) -> list[int]:
    ids = [backend.spawn_ego(Pose(20.0, -1.75, 0.0, 0.0))]
    ids += backend.spawn_npcs([Pose(40.0 + 10 * i, -1.75, 0.0, 0.0) for i in range(npcs)])
    backend.tick()
    return ids


def test_close_restores_the_server(server: FakeServer) -> None:
    backend = CarlaBackend(config(), PORTS)
    backend.start()
    episode(backend)
    sensors = list(sensors_of(server).values())
    backend.close()
    assert server.held() == set()
    for sensor in sensors:
        assert server.index("stop", sensor.id) < server.index("destroy", sensor.id)
    assert server.settings == server.original  # as before the env connected
    (tm,) = server.tms
    assert tm.sync is False and tm.shut
    assert server.index("tm sync", 8000, False) < server.index("tm shut_down", 8000)
    backend.close()  # twice: nothing left to do, nothing raised
    assert len(server.calls("tm shut_down")) == 1


def test_close_after_the_traffic_manager_failed(server: FakeServer) -> None:
    server.tm_error = "trafficmanager could not bind port 8000"
    backend = CarlaBackend(config(), PORTS)
    with pytest.raises(RuntimeError, match="could not bind") as error:
        backend.start()
    assert not isinstance(error.value, SimulatorCrashed)  # a bad request, not a dead server
    assert backend._tm is None
    backend.close()  # no AttributeError on the missing handle
    assert server.settings == server.original


def test_close_on_a_dead_server_gives_up_after_the_first_time_out(server: FakeServer) -> None:
    backend = CarlaBackend(config(), PORTS)
    backend.start()
    episode(backend)
    server.down_for = 99
    backend.close()
    assert len(server.calls("TIMED OUT")) == 1  # no time-out per remaining call
    assert server.tms[0].shut and backend._world is None and backend._tm is None


def test_restart_of_an_external_server_destroys_what_it_holds(server: FakeServer) -> None:
    backend = CarlaBackend(config(), PORTS)
    backend.start()
    episode(backend)
    # The tick times out, and so does the first destroy after it (the server is recovering).
    server.down_for = 2
    with pytest.raises(SimulatorCrashed, match="time-out of 10000ms"):
        backend.tick()
    old_tm = server.tms[0]
    backend.restart()
    assert old_tm.shut and len(server.tms) == 2 and server.tms[1].sync is True
    gets = [i for i, call in enumerate(server.log) if call == ("get_trafficmanager", 8000)]
    assert gets[0] < server.index("tm shut_down", 8000) < gets[1]  # shut down, then reconnect
    # The actors the failed destroy left were retried by id on the new connection.
    assert server.held() == set() and backend.orphaned_actor_ids == set()
    assert backend.restarts == 1 and server.settings.synchronous_mode
    episode(backend)
    backend.close()
    assert server.held() == set()


def test_actors_the_server_refuses_to_destroy_are_reported(
        server: FakeServer, caplog: pytest.LogCaptureFixture) -> None:
    backend = CarlaBackend(config(), PORTS)
    backend.start()
    ids = episode(backend)
    server.refuse_destroy = {ids[1]: 1, ids[2]: 99}  # once (retried), for ever (reported)
    with caplog.at_level(logging.WARNING, logger=carla_actors.__name__):
        backend.destroy_actors()
    assert server.held() == {ids[2]} and backend.orphaned_actor_ids == {ids[2]}
    assert f"actors [{ids[2]}] could not be destroyed" in caplog.text
    backend.close()


def test_restart_of_our_own_server_shuts_the_tm_down_first(server: FakeServer) -> None:
    backend = CarlaBackend(config(server_command="/opt/carla/CarlaUE4.sh"), PORTS)
    backend.server = FakeProcess(server)  # type: ignore[assignment]
    backend.start()
    episode(backend)
    server.down_for = 1
    with pytest.raises(SimulatorCrashed):
        backend.tick()
    backend.restart()
    assert server.index("tm shut_down", 8000) < server.index("server restart")
    assert server.held() == set() and backend._actors.held_ids() == []
    assert server.settings == settings(sync=True, delta=0.05, no_render=True)
    assert server.calls("load_world")[-1][1:] == ("two_lane_arc", 120.0)
    episode(backend)
    backend.close()
    assert server.held() == set() and server.log[-1] == ("server kill",)
    assert [tm.shut for tm in server.tms] == [True, True]


def test_server_failure_classifier(server: FakeServer) -> None:
    assert is_server_failure(RuntimeError(TIMEOUT))
    assert is_server_failure(RuntimeError("rpc::rpc_error during call: connection refused"))
    assert not is_server_failure(RuntimeError("Spawn failed because of collision at spawn "
                                              "position"))
    assert not is_server_failure(ValueError(TIMEOUT))  # only the client's RuntimeError
    backend = CarlaBackend(config(), PORTS)
    backend.start()
    with pytest.raises(SimulatorCrashed, match="failed during tick: time-out of 10000ms"):
        with backend._guard("tick"):
            raise RuntimeError(TIMEOUT)
    with pytest.raises(RuntimeError, match="blueprint") as error:
        with backend._guard("spawn_ego"):
            raise RuntimeError("blueprint 'vehicle.x' not found")
    assert type(error.value) is RuntimeError
    backend.close()


def test_busy_port_names_the_port_and_how_to_find_its_holder() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        rpc = 20000 + 3 * (taken % 1000)
        backend = CarlaBackend(CarlaConfig(server_command="/opt/carla/CarlaUE4.sh", port=rpc,
                                           tm_port=taken))
        with pytest.raises(PortsInUse, match=f"ss -ltnp \\| grep :{taken}") as error:
            backend.start()
    assert isinstance(error.value, RuntimeError) and taken in error.value.ports
    assert f"{taken} on 127.0.0.1 already in use" in str(error.value)
    assert backend.server is not None and backend.server.launches == 0


# ---- Carla-v0 over the CARLA backend -------------------------------------------------------


def test_env_steers_with_the_vehicle_scale_and_drops_late_events(server: FakeServer) -> None:
    server.max_steer_deg = 60.0
    cfg = config(npc_count=0, initial_speed_mps=5.0, route_length_m=200.0)
    backend = CarlaBackend(cfg, PORTS)
    env = CarlaDriveEnv(cfg, backend=backend)
    _, info = env.reset(seed=0, options={"start": (20.0, -1.75)})
    assert info["speed_mps"] == pytest.approx(5.0, abs=1e-5)  # set after the reset tick
    first = server.frame
    ego = next(a for a in server.actors.values() if a.attributes.get("role_name") == "hero")
    collision = sensors_of(server)["sensor.other.collision"].callback

    def hit(frame: int) -> None:
        collision(SimpleNamespace(frame=frame, other_actor=None,
                                  normal_impulse=carla.Vector3D(1.0, 0.0, 0.0)))

    hit(first)  # caused by spawning, delivered late: not the policy's doing
    _, _, terminated, _, info = env.step(np.array([1.0, 0.5], np.float32))
    assert not terminated and info["collisions"] == 0
    # steer +1 -> 0.5 rad left -> CARLA steer -0.5 / 60 deg, not / ActionLimits' 70 deg.
    assert ego.control.steer == pytest.approx(-0.5 / math.radians(60.0), abs=1e-6)
    assert (ego.control.throttle, ego.control.brake) == pytest.approx((0.5, 0.0))
    hit(server.frame)  # this step's frame, arriving after its tick: counted in the next step
    _, _, terminated, _, info = env.step(np.zeros(2, np.float32))
    assert terminated and info["termination"] == "collision" and info["collisions"] == 1
    env.close()
    assert server.held() == set() and server.settings == server.original


def test_env_reset_seed_determines_the_episode(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(seed: int) -> tuple[list[str], list[int], tuple[float, float]]:
        fake = FakeServer()
        patch_carla(monkeypatch, fake)
        cfg = config(npc_count=3, npc_min_distance_m=10.0, route_length_m=100.0)
        env = CarlaDriveEnv(cfg, backend=CarlaBackend(cfg, PORTS))
        env.reset(seed=seed)
        ego = env.backend.ego_state()
        models = sorted(a.type_id for a in fake.actors.values() if a.id in fake.autopilot)
        env.close()
        return models, fake.tms[0].seeds, (ego.x, ego.y)

    first = run(3)
    assert len(first[0]) == 3 and len(first[1]) == 2
    assert run(3) == first and run(4) != first
