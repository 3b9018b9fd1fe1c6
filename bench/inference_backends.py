"""The backends bench/inference_latency.py times: onnxruntime (compact, dense, a one-node
floor), torch and a hand-written NumPy forward, over actors of a run or made up."""

from __future__ import annotations

from collections.abc import Callable
import contextlib
import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsp_driving.inference import OnnxPolicy
from dsp_driving.modules.mlp import MLP
from dsp_driving.rl.networks import ActionSpec, DeployedActor
from dsp_driving.rl.normalization import ObsNormalizer


class NumpyActor:
    """Hand-written float32 NumPy forward of a DeployedActor's weights, one observation."""

    def __init__(self, actor: DeployedActor) -> None:
        norm = actor.obs_norm
        self.normalize = norm.enabled
        self.mean = norm.mean.numpy().astype(np.float32)
        self.std = np.sqrt(norm.var.numpy() + norm.epsilon).astype(np.float32)
        self.clip = float(norm.clip)
        layers = [(layer.weight.detach().numpy().astype(np.float32).copy(),
                   layer.bias.detach().numpy().astype(np.float32).copy())
                  for layer in actor.mlp.layers]
        *self.hidden, self.out = layers
        self.activation = np.tanh if actor.mlp.activation == "tanh" else _relu
        self.discrete = actor.kind == "discrete"
        if not self.discrete:
            self.low = actor.action_low.numpy().astype(np.float32)
            self.high = actor.action_high.numpy().astype(np.float32)

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """Normalise and clip, then W @ x + b (= x @ W.T + b) with the activation between."""
        x = np.clip((obs - self.mean) / self.std, -self.clip, self.clip) if self.normalize \
            else obs
        for w, b in self.hidden:
            x = self.activation(w @ x + b)
        w, b = self.out
        return w @ x + b

    def act(self, obs: np.ndarray) -> np.ndarray | int:
        """Deterministic action: argmax, or the output clipped to the action bounds."""
        y = self.logits(obs)
        return int(y.argmax()) if self.discrete else np.clip(y, self.low, self.high)


def _relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0)."""
    return np.maximum(x, 0.0)


@dataclasses.dataclass
class Net:
    """One network size: its torch actor and its policy.onnx."""

    name: str  # "compact" or "dense"
    actor: DeployedActor
    onnx_path: Path
    from_run: bool = False

    @property
    def hidden(self) -> list[int]:
        """Hidden layer widths."""
        return self.actor.mlp.hidden_sizes

    @property
    def label(self) -> str:
        """Hidden layer widths as '41x49'."""
        return "x".join(map(str, self.hidden))


@dataclasses.dataclass
class Backend:
    """A callable that maps one raw observation to one action, and the context it runs in."""

    name: str
    net: Net | None  # None: nothing to check it against (the one-node floor graph)
    hidden: str
    act: Callable[[np.ndarray], Any]
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    logits: Callable[[np.ndarray], np.ndarray] | None = None  # checked too, when given
    detail: str = ""
    samples: list[np.ndarray] = dataclasses.field(default_factory=list)


# -- actors and observations ----------------------------------------------------------------
def random_actor(norm: ObsNormalizer, hidden: list[int], action: ActionSpec,
                 activation: str, seed: int) -> DeployedActor:
    """A DeployedActor with the given normaliser and random weights (small random biases)."""
    torch.manual_seed(seed)
    mlp = MLP(norm.mean.numel(), hidden, action.dim, activation)
    with torch.no_grad():
        for layer in mlp.layers:
            layer.bias.normal_(0.0, 0.1)
    return DeployedActor(copy.deepcopy(norm), mlp, action).eval()


def synthetic_actor(obs_dim: int, act_dim: int, hidden: list[int],
                    seed: int) -> tuple[DeployedActor, dict[str, Any]]:
    """A continuous actor in [-1, 1] with a non-trivial normaliser, and run-like metadata."""
    rng = np.random.default_rng(seed)
    norm = ObsNormalizer(obs_dim)
    norm.mean.copy_(torch.as_tensor(rng.normal(0.0, 2.0, obs_dim)))
    norm.var.copy_(torch.as_tensor(rng.uniform(0.05, 4.0, obs_dim)))
    ones = np.ones(act_dim, np.float32)
    action = ActionSpec("continuous", act_dim, -ones, ones)
    meta = {"env_id": "synthetic", "config": None, "actor": {}}
    return random_actor(norm, hidden, action, "tanh", seed), meta


def normaliser_observations(actor: DeployedActor, n: int, seed: int) -> np.ndarray:
    """Observations drawn from the normaliser's statistics: mean + std * N(0, 1)."""
    norm = actor.obs_norm
    z = np.random.default_rng(seed).standard_normal((n, norm.mean.numel()))
    return (norm.mean.numpy() + np.sqrt(norm.var.numpy() + norm.epsilon) * z).astype(np.float32)


def floor_model(template: Path, out: Path) -> Path:
    """A one-node graph (ArgMax, or MatMul to act_dim) with the template's io and metadata."""
    import onnx
    from onnx import helper, numpy_helper

    src = onnx.load(str(template), load_external_data=False)
    (obs,), (action,) = src.graph.input, src.graph.output
    if action.type.tensor_type.elem_type == onnx.TensorProto.INT64:
        node, weights = helper.make_node("ArgMax", [obs.name], [action.name], axis=1,
                                         keepdims=0), []
    else:
        obs_dim, act_dim = (v.type.tensor_type.shape.dim[1].dim_value for v in (obs, action))
        node = helper.make_node("MatMul", [obs.name, "w"], [action.name])
        weights = [numpy_helper.from_array(np.zeros((obs_dim, act_dim), np.float32), "w")]
    graph = helper.make_graph([node], "floor", [obs], [action], initializer=weights)
    model = helper.make_model(graph, opset_imports=src.opset_import)
    model.ir_version = src.ir_version
    model.metadata_props.extend(src.metadata_props)
    onnx.save(model, str(out))
    return out


def make_backends(compact: Net, dense: Net, tmp: Path) -> list[Backend]:
    """ort, torch eager and NumPy on each net, in the order they are interleaved."""
    floor = OnnxPolicy(floor_model(compact.onnx_path, tmp / "floor.onnx"))
    backends = [Backend("ort 1-node floor", None, "-", floor.act)]
    for net in (compact, dense):
        policy = OnnxPolicy(net.onnx_path)
        backends.append(Backend(f"ort {net.name}", net, net.label, policy.act,
                                detail=str(getattr(policy, "fast_path", "n/a"))))
    for net in (compact, dense):
        backends.append(Backend(f"torch {net.name}", net, net.label, _torch_act(net.actor),
                                torch.inference_mode))
    for net in (compact, dense):
        forward = NumpyActor(net.actor)
        backends.append(Backend(f"numpy {net.name}", net, net.label, forward.act,
                                logits=forward.logits))
    return backends


def _torch_act(actor: DeployedActor) -> Callable[[np.ndarray], np.ndarray]:
    """Torch eager batch-1 call: tensor from numpy, forward, output back to numpy."""
    def act(obs: np.ndarray) -> np.ndarray:
        return actor(torch.from_numpy(obs).unsqueeze(0)).numpy()[0]
    return act


# -- checks and measurements -----------------------------------------------------------------
