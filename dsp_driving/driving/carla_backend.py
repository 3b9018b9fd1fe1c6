"""The real CARLA backend: the carla 0.9.16 client behind the SimulatorBackend interface.

Synchronous mode with fixed_delta_seconds, no-rendering mode, a Traffic Manager on its own
port (synchronous, seeded, hybrid physics); the ego, its sensors and the traffic are spawned,
read and destroyed by :class:`~dsp_driving.driving.carla_actors.CarlaActors`. Connecting and
loading a map are bounded by ``startup_timeout_s``, every later call and world.tick by
``timeout_s``; a time-out, or a client error meaning the server is gone, raises
SimulatorCrashed. With ``server_command`` set the backend launches its own server on its own
ports and, on :meth:`restart`, kills only that server's process group and launches it again.

carla is imported lazily (first :meth:`start`). No CARLA server runs where this is tested:
test/driving/test_carla_backend.py drives it through a recording fake of the carla module.
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
from dsp_driving.driving.carla_actors import CarlaActors
from dsp_driving.driving.carla_config import CarlaConfig
from dsp_driving.driving.carla_map import CarlaRoadMap, import_carla
from dsp_driving.driving.contract import ActionLimits, CarlaControl, Ego, Vehicle
from dsp_driving.driving.ports import ServerPorts, require_free
from dsp_driving.driving.server_process import ServerProcess, carla_server_argv

log = logging.getLogger(__name__)

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
        self._client: Any = None
        self._world: Any = None
        self._tm: Any = None
        self._map: CarlaRoadMap | None = None
        self._original_settings: Any = None
        self._actors = CarlaActors(config, self.limits, self.ports.tm, self._guard)

    @property
    def dt_s(self) -> float:
        """Simulated seconds per tick (fixed_delta_seconds)."""
        return self.config.fixed_delta_seconds

    @property
    def max_steer_rad(self) -> float | None:
        """The ego's front-wheel max steer angle read from its physics (None before a spawn)."""
        return self._actors.max_steer_rad

    @property
    def orphaned_actor_ids(self) -> set[int]:
        """Actors that could not be destroyed, even on a retry (they stay until a reload)."""
        return self._actors.orphaned_ids

    def control_limits(self, limits: ActionLimits) -> ActionLimits:
        """``limits`` with carla_max_steer_rad = the spawned ego's own max steer angle."""
        if self._actors.max_steer_rad is None:
            return limits
        return dataclasses.replace(limits, carla_max_steer_rad=self._actors.max_steer_rad)

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
        self._actors.seed(seed)
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
            self._actors.forget(drop_retries=True)
            self.server.restart()
        else:
            with contextlib.suppress(RuntimeError):  # SimulatorCrashed included
                self.destroy_actors()
            self._actors.queue_for_retry()
            self._release_tm()
        self._client = self._world = self._map = None
        self.restarts += 1
        self._connect()
        self._actors.retry_destroy(self._world, self._client)

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
            self._actors.forget()
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
        self._actors.destroy(self._world, self._client)

    # ---- simulation ------------------------------------------------------------------------

    def apply_control(self, control: CarlaControl) -> None:
        """carla.VehicleControl for the ego (steer + right, as CARLA wants)."""
        self._actors.apply_control(control)

    def tick(self) -> int:
        """world.tick bounded by timeout_s. Right after a spawn with a speed, the velocity is
        set once the car has been ticked onto the road, and one more tick makes it visible."""
        world = self._require_world()
        if self.server is not None and not self.server.running():
            raise SimulatorCrashed(f"the CARLA server (pid {self.server.pid}) has exited")
        with self._guard("tick"):
            frame = int(world.tick(self.config.timeout_s))
            if self._actors.apply_spawn_speed():
                frame = int(world.tick(self.config.timeout_s))
            return frame

    def ego_state(self) -> Ego:
        """Pose, longitudinal speed and acceleration, yaw rate of the ego (REP-103)."""
        return self._actors.ego_state()

    def vehicles(self) -> tuple[Vehicle, ...]:
        """The traffic this backend spawned (REP-103)."""
        return self._actors.vehicles(self._world)

    def events(self) -> Events:
        """Sensor events that arrived since the previous call (callbacks run on client
        threads, after the tick: an event may belong to an earlier frame)."""
        return self._actors.events()
