"""config/carla.yaml and CarlaConfig: every field, the defaults, clear errors."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import yaml

from dsp_driving.driving.carla_config import (
    CarlaConfig,
    carla_config_from_dict,
    default_carla_config_path,
    load_carla_config,
    resolve_carla_config,
    run_env_kwargs,
)

YAML = Path(__file__).resolve().parents[2] / "config" / "carla.yaml"


def test_yaml_lists_every_field_with_the_default() -> None:
    params = yaml.safe_load(YAML.read_text())["carla_env"]["ros__parameters"]
    assert sorted(params) == sorted(f.name for f in dataclasses.fields(CarlaConfig))
    assert load_carla_config(YAML) == CarlaConfig()
    assert default_carla_config_path() == YAML
    assert CarlaConfig().max_episode_steps == 300  # 60 s at 0.2 s per step
    assert CarlaConfig().ticks_per_step == 4  # 0.2 s of 0.05 s ticks


def test_overrides_and_plain_mappings() -> None:
    cfg = load_carla_config(YAML, {"port": 2100, "backend": "kinematic", "xodr_path": "r.xodr"})
    assert (cfg.port, cfg.backend, cfg.tm_port) == (2100, "kinematic", 8000)
    assert carla_config_from_dict({"npc_count": "7", "no_rendering": "false"}) == \
        CarlaConfig(npc_count=7, no_rendering=False)


def test_no_config_means_the_defaults(monkeypatch) -> None:
    monkeypatch.setenv("DSP_DRIVING_CARLA_CONFIG", "/nonexistent.yaml")  # no longer read
    assert resolve_carla_config(None) == CarlaConfig()


@pytest.mark.parametrize("fields, message", [
    ({"port": 80}, "carla.port=80"),
    ({"port": 65534}, "carla.port=65534"),
    ({"tm_port": 2001}, "carla.tm_port=2001"),
    ({"backend": "gazebo"}, "carla.backend='gazebo'"),
    ({"backend": "kinematic"}, "carla.xodr_path=''"),
    ({"timeout_s": 0.0}, "carla.timeout_s=0.0"),
    ({"fixed_delta_seconds": float("nan")}, "carla.fixed_delta_seconds=nan"),
    ({"npc_count": -1}, "carla.npc_count=-1"),
    ({"max_restarts": -1}, "carla.max_restarts=-1"),
    ({"max_substeps": 0}, "carla.max_substeps=0"),
    ({"max_substeps": 17}, "carla.max_substeps=17"),
    ({"max_substep_delta_time": 0.0}, "carla.max_substep_delta_time=0.0"),
    ({"fixed_delta_seconds": 0.1, "control_period_s": 0.2, "max_substeps": 5},
     "carla.fixed_delta_seconds=0.1: must be <= max_substep_delta_time . max_substeps = "
     "0.01 . 5 = 0.05"),
    ({"server_gpu": -2}, "carla.server_gpu=-2"),
    ({"server_gpu": True}, "carla.server_gpu=True"),
    ({"route_length_m": 30.0}, "carla.route_length_m=30.0"),
    ({"route_step_m": 20.0}, "carla.route_step_m=20.0"),
])
def test_bad_values_name_the_field(fields, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        CarlaConfig(**fields)


def test_bad_file_content() -> None:
    with pytest.raises(ValueError, match="unknown field carla.tm_prot"):
        carla_config_from_dict({"carla_env": {"ros__parameters": {"tm_prot": 8001}}})
    with pytest.raises(ValueError, match="carla.port='abc': expected int"):
        carla_config_from_dict({"port": "abc"})
    with pytest.raises(ValueError, match="not found"):
        load_carla_config("/nonexistent/carla.yaml")


def test_large_step_warns() -> None:
    with pytest.warns(UserWarning, match="fixed_delta_seconds=0.2"):
        CarlaConfig(fixed_delta_seconds=0.2, max_substeps=16, max_substep_delta_time=0.0125)


def test_substepping_rule_only_binds_with_substepping() -> None:
    assert CarlaConfig(fixed_delta_seconds=0.1, control_period_s=0.2).max_substeps == 10
    off = CarlaConfig(fixed_delta_seconds=0.1, control_period_s=0.2, max_substeps=2,
                      substepping=False)
    assert (off.substepping, off.max_substeps) == (False, 2)


def test_new_fields_defaults_and_old_configs() -> None:
    cfg = CarlaConfig()
    assert (cfg.substepping, cfg.max_substep_delta_time, cfg.max_substeps) == (True, 0.01, 10)
    assert (cfg.server_gpu, cfg.server_quality_low, cfg.server_nullrhi) == (-1, False, False)
    assert cfg.hybrid_physics_radius_m == 110.0  # beyond the 100 m lead range
    # A run saved before these fields (and with max_restarts) still loads; the unused
    # max_restarts warns only when it is not the old default.
    old = {k: v for k, v in cfg.to_dict().items()
           if k not in ("substepping", "max_substep_delta_time", "max_substeps", "server_gpu",
                        "server_quality_low", "server_nullrhi")}
    assert carla_config_from_dict({**old, "hybrid_physics_radius_m": 70.0}) == \
        CarlaConfig(hybrid_physics_radius_m=70.0)
    with pytest.warns(UserWarning, match="carla.max_restarts=5 is no longer used"):
        assert carla_config_from_dict({**old, "max_restarts": 5}).max_restarts == 5


def test_server_options_without_a_server_command_warn() -> None:
    with pytest.warns(UserWarning, match="only apply to a server the env launches"):
        CarlaConfig(server_nullrhi=True)
    launched = CarlaConfig(server_command="/opt/carla/CarlaUE4.sh", server_gpu=2,
                           server_quality_low=True)
    assert (launched.server_gpu, launched.server_quality_low) == (2, True)


def test_control_period_must_be_whole_ticks() -> None:
    assert CarlaConfig(fixed_delta_seconds=0.1, control_period_s=0.3).ticks_per_step == 3
    with pytest.raises(ValueError, match="carla.control_period_s=0.125"):
        CarlaConfig(control_period_s=0.125)
    with pytest.raises(ValueError, match="carla.control_period_s=0.02"):
        CarlaConfig(control_period_s=0.02)


def test_a_run_keeps_its_carla_settings_in_its_env_kwargs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dsp_driving")
    base = tmp_path / "base.yaml"
    base.write_text("carla_env:\n  ros__parameters:\n    town: Town06\n    port: 2000\n")
    kwargs = run_env_kwargs("dsp_driving/Carla-v0", {"other": 1}, base, "10.0.0.5", 3000,
                            tmp_path / "run")
    cfg = resolve_carla_config(kwargs["config"])  # what every env of the run is made with
    assert (cfg.town, cfg.host, cfg.port) == ("Town06", "10.0.0.5", 3000)
    assert kwargs["other"] == 1 and "10.0.0.5:3000" in caplog.messages[-1]
    # a resume with nothing new keeps the run's own settings
    assert run_env_kwargs("dsp_driving/Carla-v0", kwargs) == kwargs
    # a new port over the saved settings, the rest kept
    moved = run_env_kwargs("dsp_driving/Carla-v0", kwargs, port=2100)
    assert (moved["config"]["town"], moved["config"]["port"]) == ("Town06", 2100)
    # runs made before env_kwargs kept theirs in RUN_DIR/carla.yaml
    legacy = tmp_path / "old_run"
    legacy.mkdir()
    (legacy / "carla.yaml").write_text(base.read_text())
    assert run_env_kwargs("dsp_driving/Carla-v0", {}, run_dir=legacy)["config"]["town"] == "Town06"
    # not a CARLA env: the kwargs unchanged, the settings ignored with a warning
    assert run_env_kwargs("dsp_driving/HighwayDrive-v0", {}, None, "10.0.0.5") == {}
    assert "ignored" in caplog.messages[-1]
    with pytest.raises(ValueError, match="carla.port=70000"):
        run_env_kwargs("dsp_driving/Carla-v0", {}, None, None, 70000)
