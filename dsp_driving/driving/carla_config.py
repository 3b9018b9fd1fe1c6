"""Settings of the CARLA bridge: one frozen dataclass holds every default.

config/carla.yaml (ROS 2 ``carla_env: ros__parameters:`` form, or a plain mapping) is read
into it at the edge; a ROS node can build it with ``transport.dataclass_from_parameters``.
Validation raises ValueError naming the field and the bad value.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import logging
import math
from pathlib import Path
from typing import Any
import warnings

from dsp_driving.config import read_yaml_mapping, unwrap_ros_params
from dsp_driving.driving.ports import MAX_PORT, MIN_PORT, PORTS_PER_SERVER
from dsp_driving.validation import coerce, require

BACKENDS = ("carla", "kinematic")
MAX_SUBSTEPS = 16  # CARLA's upper bound on WorldSettings.max_substeps
DEFAULT_MAX_RESTARTS = 3  # the unused carla.max_restarts' old default (no warning for it)
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CarlaConfig:
    """Everything the Carla-v0 env and its backends are configured with."""

    backend: str = "carla"  # carla (a real server) | kinematic (the offline stand-in)
    host: str = "127.0.0.1"
    port: int = 2000  # RPC port P; P + 1 (streaming) and P + 2 (secondary) are reserved too
    tm_port: int = 8000  # this server's Traffic Manager
    timeout_s: float = 10.0  # client RPC timeout and the bound on every world.tick
    startup_timeout_s: float = 120.0  # bound on launching, connecting, loading the map
    fixed_delta_seconds: float = 0.05  # simulated seconds per tick (synchronous mode)
    substepping: bool = True  # physics substeps inside each tick (WorldSettings.substepping)
    max_substep_delta_time: float = 0.01  # at most this long per physics substep (s)
    max_substeps: int = 10  # at most this many substeps per tick (CARLA allows 1..16)
    control_period_s: float = 0.2  # one env step (action held): a whole number of ticks;
    # 0.2 s = 5 Hz, the embedded highway task's period, so one policy serves both
    no_rendering: bool = True
    town: str = "Town04"  # a highway town; loaded when the server runs another map
    vehicle_blueprint: str = "vehicle.tesla.model3"
    npc_count: int = 20
    npc_speed_mps: float = 20.0  # kinematic backend only (the Traffic Manager sets CARLA's)
    npc_min_distance_m: float = 20.0  # no traffic spawned closer than this to the ego
    seed: int = 0  # TM seed at connection; each reset reseeds from reset(seed=) (np_random)
    hybrid_physics: bool = True
    hybrid_physics_radius_m: float = 110.0  # full physics this close to the ego: beyond the
    # observation's lead range (contract.GAP_RANGE_M = 100 m), so every lead it sees is physical
    reload_every_episodes: int = 50  # reload the world every N episodes (0 = never)
    server_command: str = ""  # e.g. "/opt/carla/CarlaUE4.sh"; empty = use a running server
    server_log: str = ""  # file for a launched server's output (empty = discard)
    server_gpu: int = -1  # launched server: -graphicsadapter=N; -1 = the GPU Ray gave this
    # process (CUDA_VISIBLE_DEVICES holding one index), else the server's default
    server_quality_low: bool = False  # launched server: -quality-level=Low
    server_nullrhi: bool = False  # launched server: -nullrhi (no GPU rendering at all)
    max_restarts: int = 3  # UNUSED, kept so old configs load: a crashed env raises
    # SimulatorCrashed; the run restarts its process (train.env_max_restarts, vector_mode ray)
    episode_length_s: float = 60.0  # then the episode is truncated
    initial_speed_mps: float = 0.0  # the ego's speed from the first state after a reset
    speed_limit_mps: float = 25.0
    route_length_m: float = 500.0  # lane-centre route built ahead of the ego at reset
    route_step_m: float = 2.0  # spacing of the route's points
    xodr_path: str = ""  # OpenDRIVE file of the kinematic backend's road

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float):
                require(math.isfinite(value), f"carla.{f.name}", value, "must be finite")
        require(self.backend in BACKENDS, "carla.backend", self.backend,
                f"must be one of {BACKENDS}")
        require(bool(self.host), "carla.host", self.host, "must not be empty")
        last = MAX_PORT - PORTS_PER_SERVER + 1
        require(MIN_PORT <= self.port <= last, "carla.port", self.port,
                f"must be in [{MIN_PORT}, {last}] (P, P + 1 and P + 2 are used)")
        require(MIN_PORT <= self.tm_port <= MAX_PORT, "carla.tm_port", self.tm_port,
                f"must be in [{MIN_PORT}, {MAX_PORT}]")
        require(not self.port <= self.tm_port < self.port + PORTS_PER_SERVER,
                "carla.tm_port", self.tm_port,
                f"clashes with the server's ports {self.port}..{self.port + 2}")
        for name in ("timeout_s", "startup_timeout_s", "fixed_delta_seconds", "control_period_s",
                     "episode_length_s", "speed_limit_mps", "route_step_m",
                     "hybrid_physics_radius_m"):
            value = getattr(self, name)
            require(value > 0, f"carla.{name}", value, "must be > 0")
        for name in ("npc_count", "npc_speed_mps", "npc_min_distance_m", "seed",
                     "reload_every_episodes", "max_restarts", "initial_speed_mps"):
            value = getattr(self, name)
            require(value >= 0, f"carla.{name}", value, "must be >= 0")
        self._check_physics_and_server()
        require(self.route_length_m >= 60.0, "carla.route_length_m", self.route_length_m,
                "must be >= 60 (the observation previews 30 m ahead)")
        require(self.route_step_m <= 10.0, "carla.route_step_m", self.route_step_m,
                "must be <= 10 (the path preview samples every 5 m)")
        require(self.backend != "kinematic" or bool(self.xodr_path), "carla.xodr_path",
                self.xodr_path, "the kinematic backend needs an OpenDRIVE file")
        ticks = self.control_period_s / self.fixed_delta_seconds
        require(round(ticks) >= 1 and abs(ticks - round(ticks)) < 1e-6, "carla.control_period_s",
                self.control_period_s,
                f"must be a whole multiple of fixed_delta_seconds={self.fixed_delta_seconds}")
        if self.fixed_delta_seconds > 0.1:
            warnings.warn(f"carla.fixed_delta_seconds={self.fixed_delta_seconds} > 0.1: CARLA's "
                          "physics becomes unreliable above 0.1 s per step", stacklevel=3)

    def _check_physics_and_server(self) -> None:
        require(self.max_substep_delta_time > 0, "carla.max_substep_delta_time",
                self.max_substep_delta_time, "must be > 0")
        require(isinstance(self.max_substeps, int) and not isinstance(self.max_substeps, bool)
                and 1 <= self.max_substeps <= MAX_SUBSTEPS, "carla.max_substeps",
                self.max_substeps, f"must be an integer in [1, {MAX_SUBSTEPS}]")
        room = self.max_substep_delta_time * self.max_substeps
        require(not self.substepping or self.fixed_delta_seconds <= room + 1e-9,
                "carla.fixed_delta_seconds", self.fixed_delta_seconds,
                f"must be <= max_substep_delta_time * max_substeps = "
                f"{self.max_substep_delta_time} * {self.max_substeps} = {room:g} (CARLA's "
                "substepping rule): raise max_substeps or max_substep_delta_time")
        require(isinstance(self.server_gpu, int) and not isinstance(self.server_gpu, bool)
                and self.server_gpu >= -1, "carla.server_gpu", self.server_gpu,
                "must be an integer >= -1 (-1 = the GPU Ray assigned, else the default)")
        launch_options = (self.server_gpu != -1 or self.server_quality_low
                          or self.server_nullrhi)
        if launch_options and not self.server_command:
            warnings.warn("carla.server_gpu / server_quality_low / server_nullrhi only apply "
                          "to a server the env launches (carla.server_command is empty)",
                          stacklevel=4)
        if self.max_restarts != DEFAULT_MAX_RESTARTS:
            warnings.warn(f"carla.max_restarts={self.max_restarts} is no longer used: a crashed "
                          "CarlaDriveEnv raises SimulatorCrashed and is not restarted in its "
                          "process; set train.env_max_restarts (train.vector_mode=ray)",
                          stacklevel=4)

    @property
    def ticks_per_step(self) -> int:
        """Simulator ticks per env step (the action is held for all of them)."""
        return round(self.control_period_s / self.fixed_delta_seconds)

    @property
    def max_episode_steps(self) -> int:
        """Steps before the time limit truncates an episode."""
        return max(1, round(self.episode_length_s / self.control_period_s))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, suitable for YAML and JSON."""
        return dataclasses.asdict(self)


def carla_config_from_dict(data: Mapping[str, Any], base: CarlaConfig | None = None
                           ) -> CarlaConfig:
    """Build a CarlaConfig from a (ROS-parameters or plain) mapping; unknown fields are errors."""
    base = base or CarlaConfig()
    data = unwrap_ros_params(data)
    if not isinstance(data, Mapping):
        raise ValueError(f"invalid carla config: expected a mapping, got {data!r}")
    known = {f.name for f in dataclasses.fields(CarlaConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"invalid config: unknown field carla.{unknown[0]} "
                         f"(known: {sorted(known)})")
    changes = {k: coerce(f"carla.{k}", v, getattr(base, k)) for k, v in data.items()}
    return dataclasses.replace(base, **changes)


def load_carla_config(path: str | Path | None = None,
                      overrides: Mapping[str, Any] | None = None) -> CarlaConfig:
    """Read a YAML file (optional), then apply ``overrides`` (field -> value)."""
    config = CarlaConfig()
    if path is not None:
        data = read_yaml_mapping(path, "carla config file")
        config = carla_config_from_dict(_merge(data, overrides), config)
    elif overrides:
        config = carla_config_from_dict(overrides, config)
    return config


def _merge(data: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    flat = dict(unwrap_ros_params(data))
    flat.update(overrides or {})
    return flat


def resolve_carla_config(config: str | Path | Mapping[str, Any] | CarlaConfig | None
                         ) -> CarlaConfig:
    """A CarlaConfig from a config, a YAML path, a mapping, or None (the defaults)."""
    if isinstance(config, CarlaConfig):
        return config
    if isinstance(config, Mapping):
        return carla_config_from_dict(config)
    if config is None:
        return CarlaConfig()
    return load_carla_config(config)


def default_carla_config_path() -> Path | None:
    """config/carla.yaml of the source tree, or of an install prefix's share/dsp_driving/."""
    here = Path(__file__).resolve().parent.parent
    candidates = [here.parent / "config" / "carla.yaml"]
    candidates += [p / "share" / "dsp_driving" / "config" / "carla.yaml" for p in here.parents]
    return next((c for c in candidates if c.is_file()), None)


LEGACY_RUN_FILE = "carla.yaml"  # where runs made before train.env_kwargs kept their settings


def run_env_kwargs(env_id: str, env_kwargs: Mapping[str, Any], path: str | Path | None = None,
                   host: str | None = None, port: int | None = None,
                   run_dir: str | Path | None = None) -> dict[str, Any]:
    """A run's train.env_kwargs with its CARLA settings resolved under ``"config"``.

    Only for server envs (dsp_driving/Carla-v0); others get ``env_kwargs`` back unchanged.
    With nothing new given, a resumed run keeps its own settings (its saved
    ``env_kwargs["config"]``, or RUN_DIR/carla.yaml for runs made before env_kwargs);
    otherwise ``path`` (else the run's saved settings, else the defaults), then ``host`` and
    ``port``, make them. They are saved with the run's config, so every env of the run (also
    in AsyncVectorEnv workers), its evaluation and its export read the same.
    """
    from dsp_driving.driving.registry import SERVER_ENVS

    given = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if env_id not in SERVER_ENVS:
        if path is not None or given:
            log.warning(f"carla settings ignored: {env_id} is not a CARLA env")
        return dict(env_kwargs)
    saved = env_kwargs.get("config")
    legacy = Path(run_dir) / LEGACY_RUN_FILE if run_dir is not None else None
    if path is None and saved is None and legacy is not None and legacy.is_file():
        saved = dict(unwrap_ros_params(read_yaml_mapping(legacy, "carla config file")))
    if path is not None:
        config = load_carla_config(path, given)
    else:
        config = carla_config_from_dict({**(saved or {}), **given})
    log.info(f"carla: {config.backend} backend, {config.host}:{config.port}")
    return {**env_kwargs, "config": config.to_dict()}
