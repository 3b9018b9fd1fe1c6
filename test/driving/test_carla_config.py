"""config/carla.yaml and CarlaConfig: every field, the defaults, clear errors."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import yaml

from dsp_driving.driving.carla_config import (
    CONFIG_ENV_VAR,
    CarlaConfig,
    carla_config_from_dict,
    default_carla_config_path,
    load_carla_config,
    prepare_run_carla_config,
    resolve_carla_config,
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


def test_env_var_names_the_file_when_no_config_is_given(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("carla_env:\n  ros__parameters:\n    port: 2300\n    tm_port: 8300\n")
    monkeypatch.setenv(CONFIG_ENV_VAR, str(path))
    assert resolve_carla_config(None) == CarlaConfig(port=2300, tm_port=8300)
    monkeypatch.delenv(CONFIG_ENV_VAR)
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
        CarlaConfig(fixed_delta_seconds=0.2)


def test_control_period_must_be_whole_ticks() -> None:
    assert CarlaConfig(fixed_delta_seconds=0.1, control_period_s=0.3).ticks_per_step == 3
    with pytest.raises(ValueError, match="carla.control_period_s=0.125"):
        CarlaConfig(control_period_s=0.125)
    with pytest.raises(ValueError, match="carla.control_period_s=0.02"):
        CarlaConfig(control_period_s=0.02)


def test_a_run_writes_its_carla_config_and_points_the_envs_at_it(tmp_path: Path,
                                                                  monkeypatch) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("carla_env:\n  ros__parameters:\n    town: Town06\n    port: 2000\n")
    monkeypatch.setenv(CONFIG_ENV_VAR, str(base))
    run = tmp_path / "run"
    logs: list[str] = []
    written = prepare_run_carla_config(run, "dsp_driving/Carla-v0", None, "10.0.0.5", 3000,
                                       logs.append)
    assert written == run / "carla.yaml"
    assert os.environ[CONFIG_ENV_VAR] == str(written.resolve())
    cfg = resolve_carla_config(None)  # what every env of the run reads
    assert (cfg.town, cfg.host, cfg.port) == ("Town06", "10.0.0.5", 3000)
    # a resume with nothing new keeps the run's own file, whatever the variable says
    monkeypatch.setenv(CONFIG_ENV_VAR, str(base))
    assert prepare_run_carla_config(run, "dsp_driving/Carla-v0", log=logs.append) == written
    assert resolve_carla_config(None).host == "10.0.0.5"
    # not a CARLA env: nothing written, the settings ignored with a warning
    assert prepare_run_carla_config(tmp_path / "hw", "dsp_driving/HighwayDrive-v0",
                                    None, "10.0.0.5", log=logs.append) is None
    assert not (tmp_path / "hw").exists() and "ignored" in logs[-1]
    with pytest.raises(ValueError, match="carla.port=70000"):
        prepare_run_carla_config(tmp_path / "bad", "dsp_driving/Carla-v0", None, None, 70000)
