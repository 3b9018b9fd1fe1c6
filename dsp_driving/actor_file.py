"""actor_compact.pt: the compacted deterministic actor with its normaliser, as plain tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsp_driving.io_utils import atomic_torch_save
from dsp_driving.modules.mlp import MLP
from dsp_driving.rl.networks import ActionSpec, DeployedActor
from dsp_driving.rl.normalization import ObsNormalizer

FORMAT_VERSION = 1
ACTOR_FILE = "actor_compact.pt"


def resolve_actor_path(source: str | Path) -> Path:
    """A run folder means its actor_compact.pt; a file is taken as it is."""
    source = Path(source)
    return source / ACTOR_FILE if source.is_dir() else source


def save_actor(path: str | Path, actor: DeployedActor, meta: dict[str, Any]) -> Path:
    """Write the actor (weights, normaliser, action spec) and metadata atomically."""
    mlp = actor.mlp
    action = {"kind": actor.kind, "dim": actor.action_dim}
    if actor.kind == "continuous":
        action["low"] = actor.action_low.tolist()
        action["high"] = actor.action_high.tolist()
    payload = {
        "format_version": FORMAT_VERSION,
        "obs_dim": mlp.layers[0].in_features,
        "hidden": mlp.hidden_sizes,
        "activation": mlp.activation,
        "action": action,
        "normalizer": {"enabled": actor.obs_norm.enabled, "clip": actor.obs_norm.clip,
                       "epsilon": actor.obs_norm.epsilon},
        "state_dict": {k: v.detach().clone() for k, v in actor.state_dict().items()},
        "meta": meta,
    }
    return atomic_torch_save(path, payload)


def load_actor(path: str | Path) -> tuple[DeployedActor, dict[str, Any]]:
    """Read actor_compact.pt back into a DeployedActor; returns (actor, meta)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"actor file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable actor file: {exc}") from exc
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version={payload.get('format_version')!r}, "
                         f"expected {FORMAT_VERSION}")
    a = payload["action"]
    low = np.asarray(a["low"], dtype=np.float32) if a["kind"] == "continuous" else None
    high = np.asarray(a["high"], dtype=np.float32) if a["kind"] == "continuous" else None
    spec = ActionSpec(a["kind"], int(a["dim"]), low, high)
    norm_cfg = payload["normalizer"]
    norm = ObsNormalizer(payload["obs_dim"], norm_cfg["clip"], norm_cfg["enabled"],
                         norm_cfg["epsilon"])
    mlp = MLP(payload["obs_dim"], payload["hidden"], spec.dim, payload["activation"])
    actor = DeployedActor(norm, mlp, spec)
    actor.load_state_dict(payload["state_dict"])
    return actor.eval(), payload["meta"]
