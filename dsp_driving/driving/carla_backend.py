"""The real CARLA backend: the carla 0.9.16 client behind the SimulatorBackend interface.

Synchronous mode with fixed_delta_seconds and substepping, no-rendering mode, a Traffic
Manager on its own port (synchronous, seeded, hybrid physics); the ego, its sensors and the
traffic are spawned, read and destroyed by :class:`~dsp_driving.driving.carla_actors.CarlaActors`.
Connecting and loading a map are bounded by ``startup_timeout_s``, every later call and
world.tick by ``timeout_s``; a time-out, a client error meaning the server is gone, or a tick
that is not the previous frame + 1 raises SimulatorCrashed. With ``server_command`` set the
backend launches its own server on its own ports.

A crash is final for the process: the Traffic Manager runs threads in this process that call
the server, and an error on those threads (after the server hung or died) ends the process
with std::terminate (carla issues #4577, #4072, #6748), so no in-process restart is safe.
Once SimulatorCrashed has been raised the backend makes no further server call: close() only
drops the handles and kills the server it launched. Recovery is a new process with a fresh
env and server (``train.vector_mode: ray``).

carla is imported lazily (first :meth:`start`). No CARLA server runs where this is tested:
test/driving/test_carla_backend.py drives it through test/driving/fake_carla.py, whose classes
test/driving/test_fake_carla_contract.py holds against the real 0.9.16 client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import contextlib
import dataclasses
import logging
from typing import Any

from dsp_driving.driving.backend import (
    Events,
    Pose,
    RoadMap,
    SimulatorBackend,
    SimulatorCrashed,
    SpawnError,
)
from dsp_driving.driving.carla_actors import CarlaActors, WorldChanged
from dsp_driving.driving.carla_config import CarlaConfig
from dsp_driving.driving.carla_map import CarlaRoadMap, import_carla
from dsp_driving.driving.contract import ActionLimits, CarlaControl, Ego, Vehicle
from dsp_driving.driving.ports import ServerPorts, require_free
from dsp_driving.driving.server_process import (
    ServerProcess,
    carla_server_argv,
    server_gpu_index,
)

log = logging.getLogger(__name__)

# What the client's errors say when the server is gone or is not the one we set up:
# rpc time-outs and socket errors, load_world/reload_world never seeing the new map, and
# handles of an episode the server no longer runs.
_SERVER_GONE = ("time-out", "timeout", "timed out", "connection refused", "connection reset",
                "broken pipe", "not connected", "end of file", "bad file descriptor",
                "network is unreachable", "no route to host",
                "failed to connect to newly created map", "trying to access an expired episode")
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

__all__ = ["CarlaBackend", "CarlaVersionMismatch", "FrameJump", "WorldChanged",
           "is_server_failure"]


class FrameJump(WorldChanged):
    """world.tick returned a frame other than the previous + 1: another client ticked this
    world, or the server restarted under us."""


class CarlaVersionMismatch(RuntimeError):
    """The carla client and the server are different releases (never retried)."""


def is_server_failure(exc: BaseException) -> bool:
    """Whether a carla client error means the server stopped answering or changed under us
    (vs. a bad request)."""
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
            argv = carla_server_argv(config.server_command, self.ports,
                                     gpu=server_gpu_index(config.server_gpu),
                                     quality_low=config.server_quality_low,
                                     nullrhi=config.server_nullrhi)
            self.server = ServerProcess(argv, self.ports.rpc, host=config.host,
                                        startup_timeout_s=config.startup_timeout_s,
                                        log_path=config.server_log or None)
        self.reloads = 0
        self._crashed = False
        self._client: Any = None
        self._world: Any = None
        self._tm: Any = None
        self._map: CarlaRoadMap | None = None
        self._frame: int | None = None  # the last frame world.tick returned
        self._original_settings: Any = None
        self._actors = CarlaActors(config, self.limits, self.ports.tm, self._guard)

    @property
    def dt_s(self) -> float:
        """Simulated seconds per tick (fixed_delta_seconds)."""
        return self.config.fixed_delta_seconds

    @property
    def crashed(self) -> bool:
        """Whether SimulatorCrashed has happened (no server call is made after it)."""
        return self._crashed

    @property
    def max_steer_rad(self) -> float | None:
        """The ego's front-wheel max steer angle read from its physics (None before a spawn)."""
        return self._actors.max_steer_rad

    @property
    def orphaned_actor_ids(self) -> set[int]:
        """Actors that could not be destroyed, even on a retry (they stay until a reload)."""
        return self._actors.orphaned_ids

    def mark_crashed(self) -> None:
        """Make no further server call (the env calls this on any SimulatorCrashed)."""
        self._crashed = True

    def control_limits(self, limits: ActionLimits) -> ActionLimits:
        """``limits`` with carla_max_steer_rad = the spawned ego's own max steer angle."""
        if self._actors.max_steer_rad is None:
            return limits
        return dataclasses.replace(limits, carla_max_steer_rad=self._actors.max_steer_rad)

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Refuse every call after a crash; turn a dead, silent or changed server into
        SimulatorCrashed (and remember it); other errors pass through."""
        if self._crashed:
            raise SimulatorCrashed(f"CARLA backend: no {what} after a simulator crash; "
                                   "recovery is a new process (train.vector_mode=ray)")
        try:
            yield
        except SimulatorCrashed:
            self._crashed = True
            raise
        except (SpawnError, CarlaVersionMismatch):
            raise
        except RuntimeError as exc:
            died = self.server is not None and not self.server.running()
            if died or is_server_failure(exc):
                self._crashed = True
                raise SimulatorCrashed(f"CARLA at {self.config.host}:{self.ports.rpc} "
                                       f"failed during {what}: {exc}") from exc
            raise

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Launch the server if configured (first killing a stale one a dead process left on
        this port; PortsInUse if the ports are taken), connect, load the town, apply fresh
        settings."""
        if self._crashed:
            raise SimulatorCrashed("CARLA backend: no start after a simulator crash")
        if self.server is not None and not self.server.running():
            self.server.reap_stale()
            require_free(self.ports, self.config.host)
            try:
                self.server.start()
            except SimulatorCrashed:
                self._crashed = True
                raise
        self._connect()

    def _connect(self) -> None:
        carla, cfg = import_carla(), self.config
        with self._guard("connect"):
            client = carla.Client(cfg.host, self.ports.rpc)
            client.set_timeout(cfg.startup_timeout_s)  # a fresh server or a map load is slow
            self._check_version(client)
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
            self._frame = int(world.tick(cfg.startup_timeout_s))
            client.set_timeout(cfg.timeout_s)

    def _check_version(self, client: Any) -> None:
        mine, theirs = str(client.get_client_version()), str(client.get_server_version())
        if mine != theirs:
            raise CarlaVersionMismatch(
                f"carla client {mine} (pip package) against CARLA server {theirs} at "
                f"{self.config.host}:{self.ports.rpc}: install the client of the server's "
                f"release (pip install carla=={theirs}) or run a {mine} server")

    def _apply_settings(self) -> None:
        """Fresh, complete settings (none inherited from an earlier client)."""
        cfg = self.config
        settings = import_carla().WorldSettings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = cfg.fixed_delta_seconds
        settings.no_rendering_mode = cfg.no_rendering
        settings.substepping = cfg.substepping
        settings.max_substep_delta_time = cfg.max_substep_delta_time
        settings.max_substeps = cfg.max_substeps
        self._world.apply_settings(settings)

    def _require_world(self) -> Any:
        if self._crashed:
            raise SimulatorCrashed("CARLA backend: the simulator crashed; no further calls")
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
        self._actors.seed(seed)
        if self._tm is not None:
            with self._guard("seed_episode"):
                self._tm.set_random_device_seed(int(seed))

    def reload_world(self) -> None:
        """client.reload_world, then our settings again; the actors go with the old world."""
        self.destroy_actors()
        with self._guard("reload_world"):
            self._client.set_timeout(self.config.startup_timeout_s)
            self._world = self._client.reload_world(False)
            self._actors.world_reloaded()
            self._apply_settings()
            self._frame = int(self._world.tick(self.config.startup_timeout_s))
            self._client.set_timeout(self.config.timeout_s)
        self.reloads += 1

    def restart(self) -> None:
        """Not supported: a crashed CARLA client cannot be recovered in its process (see the
        module docstring); build a new env in a new process instead."""
        raise RuntimeError("CarlaBackend.restart: no in-process restart (the Traffic Manager's "
                           "threads may end the process); let the env's process be replaced "
                           "(train.vector_mode=ray, train.env_max_restarts)")

    def close(self) -> None:
        """Destroy the actors, TM back to asynchronous, restore the original settings (made
        asynchronous, see :meth:`_settings_to_restore`), shut the TM down, stop our server.
        After a crash only the handles are dropped and our server killed: no server call.
        Never raises for a missing or dead handle."""
        steps: list[tuple[str, Callable[[], Any]]] = []
        if self._world is not None:
            steps.append(("destroy the actors", self.destroy_actors))
        if self._tm is not None:
            steps.append(("set the Traffic Manager asynchronous",
                          lambda: self._tm.set_synchronous_mode(False)))
        if self._world is not None and self._original_settings is not None:
            steps.append(("restore the world settings",
                          lambda: self._world.apply_settings(self._settings_to_restore())))
        if self._tm is not None:
            steps.append(("shut the Traffic Manager down", self._tm.shut_down))
        try:
            for what, step in steps:
                if self._crashed:
                    break  # each further call could wait for its own time-out, or worse
                try:
                    with self._guard(what):
                        step()
                except SimulatorCrashed as exc:
                    log.warning("CARLA close: could not %s, server gone (%s)", what, exc)
                except RuntimeError as exc:
                    log.warning("CARLA close: could not %s (%s)", what, exc)
        finally:
            self._tm = None  # dropping the handle makes no call
            self._actors.forget()
            self._client = self._world = self._map = None
            self._frame = None
            if self.server is not None:
                self.server.kill()

    def _settings_to_restore(self) -> Any:
        """The settings saved at connection, but never synchronous: with no client left to
        tick, a synchronous server would stand still, so those get synchronous_mode False
        and a variable step (fixed_delta_seconds None) instead."""
        saved = self._original_settings
        if not saved.synchronous_mode:
            return saved
        settings = import_carla().WorldSettings()
        for name in ("no_rendering_mode", "substepping", "max_substep_delta_time",
                     "max_substeps", "max_culling_distance", "deterministic_ragdolls",
                     "tile_stream_distance", "actor_active_distance", "spectator_as_ego"):
            setattr(settings, name, getattr(saved, name))
        settings.synchronous_mode = False
        settings.fixed_delta_seconds = None
        return settings

    def live_actor_ids(self) -> frozenset[int]:
        """Every vehicle and sensor in the world at the last tick (a dedicated server holds
        only ours)."""
        world = self._require_world()
        with self._guard("get_actors"):
            return frozenset(a.id for a in world.get_actors()
                             if a.type_id.startswith(("vehicle.", "sensor.")))

    # ---- actors (see carla_actors) ---------------------------------------------------------

    def spawn_ego(self, pose: Pose, speed_mps: float = 0.0) -> int:
        """The ego (role_name hero) with a collision and a lane-invasion sensor; reads its max
        steer angle. The speed is set after the next world tick, when the car is settled."""
        return self._actors.spawn_ego(self._require_world(), pose, speed_mps)

    def spawn_npcs(self, poses: Sequence[Pose]) -> list[int]:
        """Autopiloted traffic in one batch: SpawnActor then SetAutopilot(FutureActor)."""
        if not poses:
            return []
        return self._actors.spawn_npcs(self._require_world(), self._client, poses)

    def destroy_actors(self) -> None:
        """Through the original handles: stop the sensors, destroy them, the ego, the NPCs.
        A destroy the server refuses is retried once; what still stands is reported."""
        if self._world is None:
            return
        self._require_world()
        self._actors.destroy(self._client)

    # ---- simulation ------------------------------------------------------------------------

    def apply_control(self, control: CarlaControl) -> None:
        """carla.VehicleControl for the ego (steer + right, as CARLA wants)."""
        self._require_world()
        self._actors.apply_control(control)

    def tick(self) -> int:
        """world.tick bounded by timeout_s; FrameJump unless it is the previous frame + 1.
        Right after a spawn with a speed, the velocity is set once the car has been ticked
        onto the road, and one more tick makes it visible."""
        world = self._require_world()
        if self.server is not None and not self.server.running():
            self._crashed = True
            raise SimulatorCrashed(f"the CARLA server (pid {self.server.pid}) has exited")
        with self._guard("tick"):
            frame = self._tick_once(world)
            if self._actors.apply_spawn_speed():
                frame = self._tick_once(world)
            return frame

    def _tick_once(self, world: Any) -> int:
        frame = int(world.tick(self.config.timeout_s))
        expected = None if self._frame is None else self._frame + 1
        self._frame = frame
        if expected is not None and frame != expected:
            raise FrameJump(f"world.tick returned frame {frame}, not {expected}: another client "
                            "ticks this world or the server restarted; this env's world is "
                            "gone (use one server per env, with nothing else ticking it)")
        return frame

    def ego_state(self) -> Ego:
        """Pose, longitudinal speed and acceleration, yaw rate of the ego (REP-103)."""
        self._require_world()
        return self._actors.ego_state()

    def vehicles(self) -> tuple[Vehicle, ...]:
        """The traffic this backend spawned (REP-103)."""
        self._require_world()
        return self._actors.vehicles()

    def events(self) -> Events:
        """Sensor events that arrived since the previous call (callbacks run on client
        threads, after the tick: an event may belong to an earlier frame)."""
        return self._actors.events()
