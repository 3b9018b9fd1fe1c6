"""Shared fixtures: tiny, fast training configurations and one finished CartPole run."""

from __future__ import annotations

from collections.abc import Callable
import json
from pathlib import Path
from typing import Any

import pytest

from dsp_driving.config import Config, from_dict

# A CartPole run that trains in well under a second and prunes hard enough to compact.
TINY: dict[str, dict[str, Any]] = {
    "net": {"actor_hidden": [16, 16], "critic_hidden": [16, 16]},
    "ppo": {"num_steps": 128, "num_minibatches": 4, "update_epochs": 4},
    "pruning": {"kappa_final": 1.0, "t_start": 0.0, "t_end": 0.5, "max_prune_frac": 0.5,
                "lambda_actor": 0.01},
    "train": {"env_id": "CartPole-v1", "total_steps": 2048, "num_envs": 4,
              "eval_episodes": 2, "checkpoint_every": 1, "tensorboard": False,
              "progress": False, "export_onnx": False},
}


def _merge(base: dict[str, dict[str, Any]], extra: dict[str, dict[str, Any]]
           ) -> dict[str, dict[str, Any]]:
    out = {k: dict(v) for k, v in base.items()}
    for section, fields in extra.items():
        out.setdefault(section, {}).update(fields)
    return out


@pytest.fixture
def tiny_config() -> Callable[..., Config]:
    """Factory: the TINY config with per-section overrides, e.g. train={'seed': 3}."""

    def make(**sections: dict[str, Any]) -> Config:
        return from_dict(_merge(TINY, sections))

    return make


def cli_set_args(extra: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """TINY (plus ``extra``) as `dsp-driving train --set` arguments, env and steps excluded."""
    args = []
    for section, fields in _merge(TINY, extra or {}).items():
        for key, value in fields.items():
            if section == "train" and key in ("env_id", "total_steps"):
                continue
            text = json.dumps(value) if isinstance(value, (list, bool)) else str(value)
            args += ["--set", f"{section}.{key}={text}"]
    return args


@pytest.fixture
def tiny_cli_args() -> Callable[..., list[str]]:
    """Factory: cli_set_args as a fixture."""
    return cli_set_args


def read_stats(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of RUN_DIR/stats.jsonl."""
    lines = (run_dir / "stats.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture
def stats_reader() -> Callable[[Path], list[dict[str, Any]]]:
    """read_stats as a fixture (test modules do not import conftest)."""
    return read_stats


@pytest.fixture(scope="session")
def cartpole_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One TINY CartPole run trained once per session through `dsp-driving train`.

    It ends with the automatic ONNX export, so it holds policy.onnx and policy.json.
    """
    from dsp_driving import cli

    run_dir = tmp_path_factory.mktemp("runs") / "cartpole"
    rc = cli.main(["train", "--env", "CartPole-v1", "--total-steps", "2048",
                   "--out", str(run_dir), *cli_set_args({"train": {"export_onnx": True}})])
    assert rc == 0
    return run_dir


@pytest.fixture(scope="session")
def pendulum_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TINY continuous-action (Pendulum-v1) run with its automatic ONNX export."""
    from dsp_driving import cli

    run_dir = tmp_path_factory.mktemp("runs") / "pendulum"
    rc = cli.main(["train", "--env", "Pendulum-v1", "--total-steps", "2048",
                   "--out", str(run_dir), *cli_set_args({"train": {"export_onnx": True}})])
    assert rc == 0
    return run_dir


@pytest.fixture(scope="session")
def highway_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 512-step TINY run on dsp_driving/HighwayDrive-v0 with its policy.onnx (about 6 s)."""
    pytest.importorskip("highway_env")
    pytest.importorskip("onnxscript")
    from dsp_driving.trainer import train

    run_dir = tmp_path_factory.mktemp("runs") / "highway"
    cfg = from_dict(_merge(TINY, {"train": {
        "env_id": "dsp_driving/HighwayDrive-v0", "total_steps": 512, "num_envs": 2,
        "eval_episodes": 1, "export_onnx": True}}))
    train(cfg, run_dir)
    return run_dir
