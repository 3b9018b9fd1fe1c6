"""actor_compact.pt: round trip of the deployed actor and rejection of bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dsp_driving.actor_file import load_actor, save_actor
from dsp_driving.io_utils import atomic_torch_save
from dsp_driving.modules.mlp import MLP
from dsp_driving.rl.networks import ActionSpec, DeployedActor
from dsp_driving.rl.normalization import ObsNormalizer


def _actor(kind: str) -> DeployedActor:
    torch.manual_seed(0)
    norm = ObsNormalizer(3, clip=5.0)
    norm.update(torch.randn(50, 3) * 2 + 1)
    if kind == "continuous":
        spec = ActionSpec(kind, 2, np.array([-1.0, -3.0], np.float32),
                          np.array([1.0, 3.0], np.float32))
    else:
        spec = ActionSpec(kind, 3, None, None)
    return DeployedActor(norm, MLP(3, [5, 2], spec.dim, "relu"), spec).eval()


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_round_trip_gives_identical_actions(tmp_path: Path, kind: str) -> None:
    actor = _actor(kind)
    path = save_actor(tmp_path / "actor_compact.pt", actor, {"env_id": "X", "n": 3})
    loaded, meta = load_actor(path)
    assert meta == {"env_id": "X", "n": 3}
    assert loaded.mlp.hidden_sizes == [5, 2]
    assert loaded.mlp.activation == "relu"
    assert loaded.obs_norm.clip == 5.0
    assert torch.equal(loaded.obs_norm.mean, actor.obs_norm.mean)
    obs = torch.randn(100, 3) * 3
    with torch.no_grad():
        assert torch.equal(loaded(obs), actor(obs))


def test_bad_actor_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="actor file not found"):
        load_actor(tmp_path / "none.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable actor file"):
        load_actor(garbage)
    old = atomic_torch_save(tmp_path / "old.pt", {"format_version": 0})
    with pytest.raises(ValueError, match="format_version=0"):
        load_actor(old)
