"""The committed grids of results/paper: one pruning recipe for every env ([paper] issue)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dsp_driving.config import PruningConfig, load_config, unwrap_ros_params
from dsp_driving.experiments.sweep import SweepSpec, base_config
from dsp_driving.experiments.variants import variant_config

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "config/paper/sweeps").glob("*.yaml"))
ENVS = {"cartpole": "CartPole-v1", "lunarlander": "LunarLander-v3", "hopper": "Hopper-v5",
        "walker2d": "Walker2d-v5", "highway": "dsp_driving/HighwayDrive-v0"}


def test_a_spec_per_paper_env():
    assert sorted(p.stem for p in SPECS) == sorted(ENVS)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_prunes_with_the_one_recipe(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the specs' paths are relative to the repository root
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    spec = SweepSpec.from_mapping(data)
    assert spec.env == ENVS[path.stem]
    assert set(spec.variants) >= {"dense", "dsp", "group_lasso", "magnitude_gradual",
                                  "small_dense", "posthoc", "dsp_fixed",
                                  "dsp_norefit"}
    # the env's base config sets no pruning field: only the dense baseline's PPO differs
    raw = unwrap_ros_params(yaml.safe_load(spec.config.read_text(encoding="utf-8")))
    assert "pruning" not in raw, f"{spec.config} sets pruning fields"
    cfg = variant_config("dsp", base_config(spec), seed=1, total_steps=spec.total_steps)
    assert cfg.pruning == load_config(ROOT / "config/train.yaml").pruning == PruningConfig()
    assert cfg.train.env_id == spec.env and cfg.train.total_steps == spec.total_steps


def test_the_driving_quick_start_prunes_with_the_recipe():
    raw = unwrap_ros_params(yaml.safe_load((ROOT / "config/highway.yaml").read_text(
        encoding="utf-8")))
    assert "pruning" not in raw
    assert load_config(ROOT / "config/highway.yaml").pruning == PruningConfig()
