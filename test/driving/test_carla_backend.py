"""The real CarlaBackend (and Carla-v0 over it) driven through test/driving/fake_carla.py.

No CARLA server runs here, so the fake plays the server side; test_fake_carla_contract.py
holds it to the real carla 0.9.16 client. What the backend builds and converts are the
installed client's own classes, and the map is a real carla.Map of test/data/two_lane_arc.xodr.
Every server call lands in ``FakeServer.log`` in order, so the tests check what was called,
with what, and in which order.
"""

from __future__ import annotations

import logging
import math
import re
import socket
import time
from typing import Any

import numpy as np
import pytest

carla = pytest.importorskip("carla")

import fake_carla as fake  # noqa: E402
from fake_carla import (  # noqa: E402
    TIMEOUT,
    FakeCollisionEvent,
    FakeLaneInvasionEvent,
    FakeLaneMarking,
    FakeProcess,
    FakeServer,
    settings,
    settings_dict,
)

from dsp_driving.driving import carla_actors, carla_backend  # noqa: E402
from dsp_driving.driving.backend import (  # noqa: E402
    CollisionEvent,
    LaneInvasionEvent,
    Pose,
    SimulatorCrashed,
)
from dsp_driving.driving.carla_backend import (  # noqa: E402
    CarlaBackend,
    CarlaVersionMismatch,
    FrameJump,
    WorldChanged,
    is_server_failure,
)
from dsp_driving.driving.carla_config import CarlaConfig  # noqa: E402
from dsp_driving.driving.carla_env import CarlaDriveEnv  # noqa: E402
from dsp_driving.driving.contract import ActionLimits, CarlaControl  # noqa: E402
from dsp_driving.driving.ports import PortsInUse, ServerPorts  # noqa: E402

PORTS = ServerPorts(2000, 2001, 2002, 8000)
# What start() applies: every field fresh (the client's defaults), ours set.
OURS = settings_dict(settings(synchronous_mode=True, fixed_delta_seconds=0.05,
                              no_rendering_mode=True, substepping=True,
                              max_substep_delta_time=0.01, max_substeps=10))


def patch_carla(monkeypatch: pytest.MonkeyPatch, server: FakeServer) -> None:
    for module in (carla_backend, carla_actors):
        monkeypatch.setattr(module, "import_carla", lambda: fake.fake_module(server))


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    fake_server = FakeServer()
    patch_carla(monkeypatch, fake_server)
    return fake_server


def config(**overrides: Any) -> CarlaConfig:
    return CarlaConfig(**{"town": "two_lane_arc", "timeout_s": 10.0, "startup_timeout_s": 120.0,
                          "seed": 5, **overrides})


def sensors_of(server: FakeServer) -> dict[str, fake.ActorRecord]:
    return {a.type_id: a for a in server.actors.values() if a.type_id.startswith("sensor.")}


def episode(backend: CarlaBackend, npcs: int = 3) -> list[int]:
    ids = [backend.spawn_ego(Pose(20.0, -1.75, 0.0, 0.0))]
    ids += backend.spawn_npcs([Pose(40.0 + 10 * i, -1.75, 0.0, 0.0) for i in range(npcs)])
    backend.tick()
    return ids


# ---- connection, settings, Traffic Manager ------------------------------------------------


def test_start_applies_fresh_settings_and_the_traffic_manager(server: FakeServer) -> None:
    # The last client left substepping off and other settings of its own (B7).
    server.settings = settings(synchronous_mode=True, fixed_delta_seconds=0.1,
                               substepping=False, max_substeps=3, max_culling_distance=50.0,
                               spectator_as_ego=False)
    backend = CarlaBackend(config(), PORTS)
    backend.start()
    assert server.log[0] == ("Client", "127.0.0.1", 2000)
    assert server.log[2] == ("version",)  # the first server call
    # Connecting and loading the map run under startup_timeout_s, ticking under timeout_s.
    assert server.calls("set_timeout") == [("set_timeout", 120.0), ("set_timeout", 10.0)]
    assert server.calls("get_world") == [("get_world", 120.0)]
    assert server.calls("load_world") == [("load_world", "two_lane_arc", 120.0)]
    assert server.calls("get_map") == [("get_map", 120.0), ("get_map", 120.0)]
    assert server.calls("tick") == [("tick", 120.0, 1001)]
    assert server.index("tick", 120.0, 1001) < server.index("set_timeout", 10.0)
    assert settings_dict(server.settings) == OURS
    (tm,) = server.tms
    assert (tm.port, tm.sync, tm.seeds, tm.hybrid) == (8000, True, [5], (True, 110.0))
    assert backend.road_map().name == "Carla/Maps/two_lane_arc"
    backend.tick()
    assert server.calls("tick")[-1] == ("tick", 10.0, 1002)
    backend.close()


def test_substepping_settings_come_from_the_config(server: FakeServer) -> None:
    backend = CarlaBackend(config(fixed_delta_seconds=0.1, control_period_s=0.2,
                                  max_substep_delta_time=0.008, max_substeps=16), PORTS)
    backend.start()
    assert settings_dict(server.settings) == {**OURS, "fixed_delta_seconds": 0.1,
                                              "max_substep_delta_time": 0.008,
                                              "max_substeps": 16}
    backend.close()


def test_a_server_of_another_release_fails_fast_and_is_not_a_crash(server: FakeServer) -> None:
    server.version = "0.9.15"
    backend = CarlaBackend(config(), PORTS)
    with pytest.raises(CarlaVersionMismatch, match="carla client 0.9.16 .* server 0.9.15") as e:
        backend.start()
    assert not isinstance(e.value, SimulatorCrashed) and not backend.crashed
    assert "pip install carla==0.9.15" in str(e.value)
    assert server.calls("get_world") == [] and server.tms == []  # nothing else was called
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
    assert all(s.parent_id == ego_id and s.callback is not None for s in sensors.values())
    assert (ego.control.throttle, ego.control.brake, ego.control.manual_gear_shift,
            ego.control.hand_brake) == (0.0, 0.0, False, False)  # not stuck in neutral
    assert server.calls("set_target_velocity") == []  # not before the car is on the road

    # B1: Response.has_error() is a method; read as an attribute every spawn looked failed.
    npc_ids = backend.spawn_npcs([Pose(60.0, -1.75, 0.0, 0.0), Pose(80.0, -5.25, 0.0, 0.0)])
    assert len(npc_ids) == 2
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
    near, far = backend.vehicles()  # the traffic, through its handles
    assert (near.x, near.y, near.yaw, near.speed) == pytest.approx((60.0, -1.75, 0.0, 0.0),
                                                                   abs=1e-5)
    assert (far.x, far.y) == pytest.approx((80.0, -5.25), abs=1e-5)

    backend.apply_control(CarlaControl(throttle=0.4, steer=-0.2, brake=0.0))
    assert (ego.control.throttle, ego.control.steer, ego.control.brake) == pytest.approx(
        (0.4, -0.2, 0.0))

    other = server.actors[npc_ids[0]]  # (an actor handle in CARLA; type_id is what is read)
    sensors["sensor.other.collision"].callback(FakeCollisionEvent(
        1003, other, carla.Vector3D(300.0, 400.0, 0.0)))
    sensors["sensor.other.lane_invasion"].callback(FakeLaneInvasionEvent(
        1003, [FakeLaneMarking(carla.LaneMarkingType.Solid)]))
    events = backend.events()
    assert events.collisions == (CollisionEvent(1003, other.type_id, 500.0),)
    assert events.lane_invasions == (LaneInvasionEvent(1003, ("Solid",)),)
    assert backend.events().collisions == ()  # drained

    held = server.held()
    backend.destroy_actors()
    for sensor_id in (s.id for s in sensors.values()):  # original handles: stop, then destroy
        assert server.index("stop", sensor_id) < server.index("destroy", sensor_id)
    assert server.index("destroy", ego_id) < server.index("DestroyActor", npc_ids[0])
    assert server.calls("apply_batch_sync")[-1] == ("apply_batch_sync", 2)  # the NPCs, once
    assert held == {ego_id, *npc_ids, *(s.id for s in sensors.values())}
    assert server.held() == set() and backend.orphaned_actor_ids == set()
    backend.close()


def test_a_blocked_npc_spawn_is_skipped_and_the_rest_are_tracked(server: FakeServer) -> None:
    backend = CarlaBackend(config(), PORTS)
    backend.start()
    server.occupied_x = [50.0]
    ids = backend.spawn_npcs([Pose(40.0 + 10 * i, -1.75, 0.0, 0.0) for i in range(3)])
    assert len(ids) == 2 and set(ids) == server.held()
    assert sorted(v.x for v in backend.vehicles()) == pytest.approx([40.0, 60.0])
    backend.destroy_actors()
    assert server.held() == set()
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
    assert len(first) == 6 and models(3) == first and models(4) != first
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


def test_reload_world_applies_our_settings_again(server: FakeServer) -> None:
    backend = CarlaBackend(config(), PORTS)
    backend.start()
    episode(backend)
    first_world = server.episode
    server.settings = settings(substepping=False)  # as if reload had reset them
    backend.reload_world()
    assert server.episode == first_world + 1 and server.held() == set()
    assert server.calls("reload_world") == [("reload_world", False, 120.0)]
    assert settings_dict(server.settings) == OURS
    ids = episode(backend)  # the frame count goes on from the reload's own tick
    assert set(ids) <= server.held() and backend.reloads == 1
    backend.close()
    assert server.held() == set()


# ---- teardown -----------------------------------------------------------------------------


def test_close_restores_the_server(server: FakeServer) -> None:
    backend = CarlaBackend(config(), PORTS)
    backend.start()
    episode(backend)
    sensor_ids = list(sensors_of(server))
    backend.close()
    assert server.held() == set() and sensor_ids
    assert settings_dict(server.settings) == settings_dict(server.original)  # asynchronous
    (tm,) = server.tms
    assert tm.sync is False and tm.shut
    restored = max(i for i, call in enumerate(server.log) if call == ("apply_settings",))
    assert server.index("tm sync", 8000, False) < restored < server.index("tm shut_down", 8000)
    assert server.log[-1] == ("tm shut_down", 8000)
    backend.close()  # twice: nothing left to do, nothing raised
    assert len(server.calls("tm shut_down")) == 1


def test_close_restores_a_synchronous_original_as_asynchronous(server: FakeServer) -> None:
    # B9: the server ran synchronously before; restored as-is it would stand still.
    server.original = settings(synchronous_mode=True, fixed_delta_seconds=0.02,
                               no_rendering_mode=True, max_substeps=12)
    server.settings = fake.copy_settings(server.original)
    backend = CarlaBackend(config(), PORTS)
    backend.start()
    backend.close()
    assert settings_dict(server.settings) == {
        **settings_dict(server.original), "synchronous_mode": False,
        "fixed_delta_seconds": None}


def test_close_after_the_traffic_manager_failed(server: FakeServer) -> None:
    server.tm_error = "trafficmanager could not bind port 8000"
    backend = CarlaBackend(config(), PORTS)
    with pytest.raises(RuntimeError, match="could not bind") as error:
        backend.start()
    assert not isinstance(error.value, SimulatorCrashed)  # a bad request, not a dead server
    assert not backend.crashed
    backend.close()  # no AttributeError on the missing handle
    assert settings_dict(server.settings) == settings_dict(server.original)


def test_a_destroy_the_server_refuses_is_retried_by_id_and_what_stays_reported(
        server: FakeServer, caplog: pytest.LogCaptureFixture) -> None:
    backend = CarlaBackend(config(), PORTS)
    backend.start()
    ids = episode(backend)
    sensor_id = next(iter(sensors_of(server).values())).id
    # Refused once (the retry destroys it) or for ever (reported): a sensor, the ego, NPCs.
    server.refuse_destroy = {sensor_id: 1, ids[0]: 1, ids[1]: 1, ids[2]: 99}
    with caplog.at_level(logging.WARNING, logger=carla_actors.__name__):
        backend.destroy_actors()
    # B6: the retry's own responses decide (get_actors(ids) would still list the destroyed).
    assert server.held() == {ids[2]} and backend.orphaned_actor_ids == {ids[2]}
    retried = [c[1] for c in server.calls("DestroyActor")][-4:]
    assert sorted(retried) == sorted([sensor_id, *ids[:3]])
    assert f"actors [{ids[2]}] could not be destroyed" in caplog.text
    backend.reload_world()  # the reload takes the orphan with it
    assert backend.orphaned_actor_ids == set() and server.held() == set()
    backend.close()


def test_a_retried_destroy_that_worked_is_not_reported(server: FakeServer) -> None:
    # B6: world.get_actors(ids) still lists the ego after the retry destroyed it (the
    # client's cache); only the retry's responses tell.
    backend = CarlaBackend(config(), PORTS)
    backend.start()
    ego_id = backend.spawn_ego(Pose(20.0, -1.75, 0.0, 0.0))
    backend.tick()
    server.refuse_destroy = {ego_id: 1}
    backend.destroy_actors()
    assert server.calls("DestroyActor") == [("DestroyActor", ego_id)]  # the retry, by id
    assert server.held() == set() and backend.orphaned_actor_ids == set()
    backend.close()


def test_a_silent_server_during_teardown_is_a_crash_not_a_refusal(server: FakeServer) -> None:
    # B5: Actor.destroy() swallows the time-out and returns False after timeout_s.
    backend = CarlaBackend(config(timeout_s=0.3), PORTS)
    backend.start()
    episode(backend)
    server.down_for = 99
    started = time.monotonic()
    with pytest.raises(SimulatorCrashed, match="failed after 0.[3-9] s .* not answering"):
        backend.destroy_actors()
    assert time.monotonic() - started < 2.0  # one time-out, not one per actor and retry
    assert len(server.calls("TIMED OUT")) == 1 and backend.crashed
    assert backend.orphaned_actor_ids == set()  # nothing mistaken for a refusal


def test_close_on_a_dead_server_stops_at_the_first_time_out(server: FakeServer) -> None:
    backend = CarlaBackend(config(timeout_s=0.2), PORTS)
    backend.start()
    episode(backend)
    server.down_for = 99
    backend.close()
    assert len(server.calls("TIMED OUT")) == 1  # the first destroy; then no call at all
    assert server.log[-1][:2] == ("TIMED OUT", "destroy")
    assert not server.tms[0].shut and backend._tm is None  # B2: no TM call after the crash


def test_after_a_crash_no_server_call_is_made(server: FakeServer) -> None:
    # B2: a crash is final; close() drops the handles and kills our server, nothing else.
    backend = CarlaBackend(config(server_command="/opt/carla/CarlaUE4.sh"), PORTS)
    backend.server = FakeProcess(server)  # type: ignore[assignment]
    backend.start()
    episode(backend)
    server.down_for = 1
    with pytest.raises(SimulatorCrashed, match="failed during tick: time-out"):
        backend.tick()
    assert backend.crashed
    calls = len(server.log)
    for call in (backend.tick, backend.destroy_actors, backend.ego_state, backend.vehicles,
                 lambda: backend.seed_episode(1), backend.start):
        with pytest.raises(SimulatorCrashed):
            call()
    with pytest.raises(RuntimeError, match="no in-process restart"):
        backend.restart()
    backend.close()
    assert server.log[calls:] == [("server kill",)]
    assert server.tms[0].sync is True and not server.tms[0].shut
    assert backend._tm is None and backend._world is None and backend._client is None


def test_a_frame_jump_is_a_crash(server: FakeServer) -> None:
    backend = CarlaBackend(config(), PORTS)
    backend.start()
    episode(backend)
    assert backend.tick() == server.frame
    server.frame += 3  # another client ticked this world three times
    with pytest.raises(FrameJump, match=f"frame {server.frame + 1}, not {server.frame - 2}"):
        backend.tick()
    assert isinstance(FrameJump("x"), SimulatorCrashed) and backend.crashed
    calls = len(server.log)
    backend.close()
    assert len(server.log) == calls  # no call after it (no server of ours to kill)


def test_a_frame_counter_starting_again_is_a_frame_jump(server: FakeServer) -> None:
    backend = CarlaBackend(config(), PORTS)
    backend.start()
    server.frame = 0  # the server restarted under us (its frames count from 0 again)
    with pytest.raises(FrameJump, match="frame 1, not 1002"):
        backend.tick()


def test_ids_of_a_world_the_server_no_longer_runs_are_never_destroyed_by_id(
        server: FakeServer) -> None:
    # B8: after a server restart ids name other actors; nothing is destroyed by id.
    backend = CarlaBackend(config(), PORTS)
    backend.start()
    ids = episode(backend, npcs=2)
    world = server.episode
    server.restart()
    foreign = [server.add("vehicle.audi.tt", carla.Transform()).id for _ in range(5)]
    assert set(ids) & set(foreign)  # the new server reuses the ids
    # the old server had loaded other maps (episode 7001); the new one counts from 1 again
    with pytest.raises(WorldChanged, match=f"episode {world} -> 1"):
        backend.destroy_actors()
    assert server.held() == set(foreign) and server.calls("DestroyActor") == []
    assert server.calls("destroy") == [] and backend.crashed


def test_traffic_of_a_world_the_server_no_longer_runs_is_not_destroyed_by_id(
        server: FakeServer) -> None:
    # B8, the by-id path alone: NPCs are destroyed by a DestroyActor batch of their ids.
    backend = CarlaBackend(config(), PORTS)
    backend.start()
    npc_ids = backend.spawn_npcs([Pose(40.0 + 10 * i, -1.75, 0.0, 0.0) for i in range(3)])
    server.restart()
    foreign = {server.add("vehicle.audi.tt", carla.Transform()).id for _ in range(3)}
    assert foreign == set(npc_ids)
    with pytest.raises(WorldChanged, match=re.escape(f"actors {sorted(npc_ids)} are not")):
        backend.destroy_actors()
    assert server.held() == foreign and server.calls("DestroyActor") == []


def test_server_failure_classifier(server: FakeServer) -> None:
    assert is_server_failure(RuntimeError(TIMEOUT))
    assert is_server_failure(RuntimeError("rpc::rpc_error during call: connection refused"))
    # B3: the restart path's own errors (load_world / reload_world, stale handles)
    assert is_server_failure(RuntimeError("failed to connect to newly created map"))
    assert is_server_failure(RuntimeError(fake.EXPIRED))
    assert not is_server_failure(RuntimeError(fake.DESTROYED))  # our own bug, not the server
    assert not is_server_failure(RuntimeError("Spawn failed because of collision at spawn "
                                              "position"))
    assert not is_server_failure(ValueError(TIMEOUT))  # only the client's RuntimeError
    backend = CarlaBackend(config(), PORTS)
    backend.start()
    with pytest.raises(RuntimeError, match="blueprint") as error:
        with backend._guard("spawn_ego"):
            raise RuntimeError("blueprint 'vehicle.x' not found")
    assert type(error.value) is RuntimeError and not backend.crashed
    with pytest.raises(SimulatorCrashed, match="failed during tick: time-out of 10000ms"):
        with backend._guard("tick"):
            raise RuntimeError(TIMEOUT)
    assert backend.crashed
    backend.close()


@pytest.mark.parametrize("at", ["start", "reload"])
def test_a_map_that_never_comes_up_is_a_crash(server: FakeServer, at: str) -> None:
    backend = CarlaBackend(config(), PORTS)
    if at == "reload":
        backend.start()
    server.load_error = "failed to connect to newly created map"
    with pytest.raises(SimulatorCrashed, match="newly created map"):
        backend.start() if at == "start" else backend.reload_world()
    assert backend.crashed
    backend.close()


def test_busy_port_names_the_port_and_how_to_find_its_holder(tmp_path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        rpc = 20000 + 3 * (taken % 1000)
        backend = CarlaBackend(CarlaConfig(server_command="/opt/carla/CarlaUE4.sh", port=rpc,
                                           tm_port=taken))
        assert backend.server is not None
        backend.server.pid_dir = tmp_path
        with pytest.raises(PortsInUse, match=f"ss -ltnp \\| grep :{taken}") as error:
            backend.start()
    assert isinstance(error.value, RuntimeError) and taken in error.value.ports
    assert f"{taken} on 127.0.0.1 already in use" in str(error.value)
    assert backend.server.launches == 0 and not backend.crashed


def test_the_launched_server_gets_its_gpu_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # what Ray sets for an actor's one GPU
    cfg = config(server_command="/opt/carla/CarlaUE4.sh", server_quality_low=True,
                 server_nullrhi=True)
    argv = CarlaBackend(cfg, PORTS).server.argv  # type: ignore[union-attr]
    assert argv[-3:] == ["-graphicsadapter=3", "-quality-level=Low", "-nullrhi"]
    pinned = CarlaBackend(config(server_command="/opt/carla/CarlaUE4.sh", server_gpu=1), PORTS)
    assert pinned.server.argv[-1] == "-graphicsadapter=1"  # type: ignore[union-attr]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # not one GPU: the server's own choice
    plain = CarlaBackend(config(server_command="/opt/carla/CarlaUE4.sh"), PORTS)
    assert not any(a.startswith("-graphicsadapter") for a in plain.server.argv)  # type: ignore


# ---- Carla-v0 over the CARLA backend -------------------------------------------------------


def test_env_steers_with_the_vehicle_scale_and_drops_late_events(server: FakeServer) -> None:
    server.max_steer_deg = 60.0
    cfg = config(npc_count=0, initial_speed_mps=5.0, route_length_m=200.0)
    env = CarlaDriveEnv(cfg, backend=CarlaBackend(cfg, PORTS))
    try:
        _, info = env.reset(seed=0, options={"start": (20.0, -1.75)})
        assert info["speed_mps"] == pytest.approx(5.0, abs=1e-5)  # set after the reset tick
        first = server.frame
        ego = next(a for a in server.actors.values() if a.attributes.get("role_name") == "hero")
        collision = sensors_of(server)["sensor.other.collision"].callback

        def hit(frame: int) -> None:
            collision(FakeCollisionEvent(frame, None, carla.Vector3D(1.0, 0.0, 0.0)))

        hit(first)  # caused by spawning, delivered late: not the policy's doing
        _, _, terminated, _, info = env.step(np.array([1.0, 0.5], np.float32))
        assert not terminated and info["collisions"] == 0
        # steer +1 -> 0.5 rad left -> CARLA steer -0.5 / 60 deg, not / ActionLimits' 70 deg.
        assert ego.control.steer == pytest.approx(-0.5 / math.radians(60.0), abs=1e-6)
        assert (ego.control.throttle, ego.control.brake) == pytest.approx((0.5, 0.0))
        hit(server.frame)  # this step's frame, arriving after its tick: counted next step
        _, _, terminated, _, info = env.step(np.zeros(2, np.float32))
        assert terminated and info["termination"] == "collision" and info["collisions"] == 1
    finally:
        env.close()
    assert server.held() == set()
    assert settings_dict(server.settings) == settings_dict(server.original)


def test_env_reset_seed_determines_the_episode(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(seed: int) -> tuple[list[str], list[int], tuple[float, float]]:
        fake_server = FakeServer()
        patch_carla(monkeypatch, fake_server)
        cfg = config(npc_count=3, npc_min_distance_m=10.0, route_length_m=100.0)
        env = CarlaDriveEnv(cfg, backend=CarlaBackend(cfg, PORTS))
        try:
            env.reset(seed=seed)
            ego = env.backend.ego_state()
            models = sorted(fake_server.actors[i].type_id for i in fake_server.autopilot)
        finally:
            env.close()
        return models, fake_server.tms[0].seeds, (ego.x, ego.y)

    first = run(3)
    assert len(first[0]) == 3 and len(first[1]) == 2
    assert run(3) == first and run(4) != first


def test_env_crash_escapes_step_and_close_makes_no_server_call(server: FakeServer) -> None:
    cfg = config(npc_count=2, npc_min_distance_m=10.0, route_length_m=100.0)
    backend = CarlaBackend(cfg, PORTS)
    env = CarlaDriveEnv(cfg, backend=backend)
    try:
        env.reset(seed=1)
        server.down_for = 1
        with pytest.raises(SimulatorCrashed, match="time-out"):
            env.step(np.zeros(2, np.float32))
        assert backend.crashed
        calls = len(server.log)
        with pytest.raises(SimulatorCrashed, match="crashed earlier"):
            env.reset(seed=2)
        with pytest.raises(SimulatorCrashed, match="crashed earlier"):
            env.step(np.zeros(2, np.float32))
    finally:
        env.close()
    assert len(server.log) == calls and not server.tms[0].shut
    assert len(server.held()) == 3 + 2  # left on the external server: its process is the fix


def test_one_live_carla_env_per_process(server: FakeServer) -> None:
    cfg = config(npc_count=0)
    first = CarlaDriveEnv(cfg, backend=CarlaBackend(cfg, PORTS))
    try:
        with pytest.raises(ValueError, match="train.vector_mode=ray"):
            CarlaDriveEnv(cfg, backend=CarlaBackend(cfg, PORTS))
        with pytest.raises(ValueError, match="already live in this process"):
            CarlaDriveEnv(cfg)  # the carla backend by config
    finally:
        first.close()
    second = CarlaDriveEnv(cfg, backend=CarlaBackend(cfg, PORTS))  # the first one is closed
    second.close()
