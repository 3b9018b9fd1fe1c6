"""Real exported driving policies for the controller and node tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dsp_driving.driving import contract
from dsp_driving.export import export_actor
from dsp_driving.modules.mlp import MLP
from dsp_driving.rl.networks import ActionSpec, DeployedActor
from dsp_driving.rl.normalization import ObsNormalizer

ENV_INFO = {"observation_names": list(contract.OBSERVATION_NAMES),
            "action_names": list(contract.ACTION_NAMES),
            "policy_metadata": contract.policy_metadata()}


def driving_policy(path: Path, seed: int = 0, bias: tuple[float, float] = (0.0, 0.0)) -> Path:
    """A real exported [20] -> [2] continuous policy (random weights, given output bias)."""
    torch.manual_seed(seed)
    spec = ActionSpec("continuous", 2, np.full(2, -1, np.float32), np.ones(2, np.float32))
    actor = DeployedActor(ObsNormalizer(contract.OBS_DIM), MLP(contract.OBS_DIM, [8, 6], 2),
                          spec).eval()
    with torch.no_grad():
        actor.mlp.layers[-1].bias.copy_(torch.tensor(bias))
    model, _, _ = export_actor(actor, {"env_id": "dsp_driving/HighwayDrive-v0"}, path,
                               ENV_INFO)
    return model


def obs_at(speed_mps: float = 10.0) -> np.ndarray:
    """A contract observation: on the lane centre, aligned, at ``speed_mps``."""
    obs = np.zeros(contract.OBS_DIM, np.float32)
    obs[contract.INDEX["speed"]] = speed_mps / contract.SPEED_SCALE_MPS
    obs[contract.INDEX["cos_heading_error"]] = 1.0
    return obs
