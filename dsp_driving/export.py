"""Export the compact actor to one self-describing ONNX file (policy.onnx + policy.json).

The graph is the whole deployed policy: raw observation in ("obs", float32 [batch, obs_dim]),
observation normaliser, the compact MLP, and the deterministic head out ("action": the
clipped Gaussian mean, float32 [batch, act_dim], or the argmax, int64 [batch]). Metadata is
JSON in the model's metadata_props under "dsp_driving"; the sidecar policy.json repeats it with
the file's sha256. Needs torch, onnx and onnxscript (the ``export`` extra) and onnxruntime, which
checks every export against the torch actor before anything is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
from pathlib import Path
import time
from typing import Any
import warnings

import numpy as np
import torch

from dsp_driving.actor_file import load_actor, resolve_actor_path
from dsp_driving.io_utils import atomic_write, atomic_write_json
from dsp_driving.modules.mlp import macs
from dsp_driving.policy_format import (
    FORMAT_VERSION,
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_NAME,
    POLICY_FILE,
    metadata_json,
    sidecar_path,
)
from dsp_driving.provenance import producer
from dsp_driving.rl.networks import DeployedActor

OPSET = 18
# torch vs onnxruntime: both run float32 through the same ops, so they agree to rounding
PARITY_TOL = 1e-5
PARITY_SAMPLES = 512


def env_kwargs_of(meta: dict[str, Any]) -> dict[str, Any]:
    """The gym.make arguments a saved actor's run used (train.env_kwargs; {} before them)."""
    return ((meta.get("config") or {}).get("train") or {}).get("env_kwargs") or {}


log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The export could not produce a policy file that matches the torch actor."""


def missing_export_modules() -> list[str]:
    """Modules the export needs that are not installed (empty when export can run)."""
    return [m for m in ("onnx", "onnxscript", "onnxruntime")
            if importlib.util.find_spec(m) is None]


def onnx_model(actor: DeployedActor) -> Any:
    """Trace ``actor`` into an onnx.ModelProto with a dynamic batch axis."""
    obs_dim = actor.mlp.layers[0].in_features
    example = torch.zeros(2, obs_dim)
    batch = torch.export.Dim("batch")
    with contextlib.ExitStack() as stack:
        # the exporter narrates each pass on stdout and warns about optional packages
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        torch_onnx_log = logging.getLogger("torch.onnx")
        level = torch_onnx_log.level
        torch_onnx_log.setLevel(logging.ERROR)
        stack.callback(torch_onnx_log.setLevel, level)
        program = torch.onnx.export(
            actor.eval(), (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes={INPUT_NAME: {0: batch}}, opset_version=OPSET, dynamo=True,
            external_data=False, verbose=False)
    model = program.model_proto
    # the exporter annotates every node and tensor with its torch.fx origin (debug info
    # that was ~45 % of a compact actor's file); the car has no use for it
    graph = model.graph
    for item in (*graph.node, *graph.value_info, *graph.input, *graph.output,
                 *graph.initializer):
        del item.metadata_props[:]
        item.doc_string = ""
    model.graph.name = "dsp_driving_actor"
    model.producer_name, model.producer_version = producer().split(" ", 1)
    return model


def sample_observations(actor: DeployedActor, n: int = PARITY_SAMPLES,
                        seed: int = 0) -> np.ndarray:
    """Raw observations spread around the normaliser's statistics, some beyond its clip."""
    rng = np.random.default_rng(seed)
    obs_dim = actor.mlp.layers[0].in_features
    z = rng.standard_normal((n, obs_dim)) * 3.0
    z[: n // 8] *= 10.0  # exercise the normaliser's clipping
    norm = actor.obs_norm
    if norm.enabled:
        z = norm.mean.numpy() + np.sqrt(norm.var.numpy() + norm.epsilon) * z
    return z.astype(np.float32)


def parity_error(model_bytes: bytes, actor: DeployedActor, obs: np.ndarray) -> float:
    """Largest |onnxruntime - torch| action difference over ``obs`` (discrete: mismatch count).

    Discrete observations whose two best logits are closer than PARITY_TOL are skipped: there
    the argmax is decided by rounding, not by the policy.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    onnx_out = session.run([OUTPUT_NAME], {INPUT_NAME: obs})[0]
    with torch.no_grad():
        x = torch.as_tensor(obs)
        torch_out = actor(x).numpy()
        if actor.kind == "continuous":
            return float(np.max(np.abs(onnx_out - torch_out)))
        logits = actor.mlp(actor.obs_norm(x)).numpy()
    if logits.shape[1] == 1:
        decided = np.ones(len(obs), dtype=bool)  # one action: nothing to decide
    else:
        top2 = np.sort(logits, axis=1)[:, -2:]
        decided = (top2[:, 1] - top2[:, 0]) >= PARITY_TOL
    return float(np.sum(onnx_out[decided] != torch_out[decided]))


def _bounds(values: torch.Tensor) -> list[float | None]:
    """Action bounds for JSON: an infinite (unbounded) entry is written as null."""
    return [float(v) if np.isfinite(v) else None for v in values.tolist()]


def _check_names(names: Any, size: int, field: str) -> list[str] | None:
    if names is None:
        return None
    if len(names) != size:
        raise ValueError(f"the env's {field} has {len(names)} entries, the policy {size}")
    return [str(n) for n in names]


def policy_metadata(actor: DeployedActor, meta: dict[str, Any],
                    env_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The "dsp_driving" metadata JSON of an exported actor (see docs/export.md)."""
    env_info = env_info or {}
    obs_dim = actor.mlp.layers[0].in_features
    continuous = actor.kind == "continuous"
    actor_block = meta.get("actor", {})
    return {
        "format_version": FORMAT_VERSION,
        "producer": producer(),
        "env_id": meta["env_id"],
        "obs_dim": obs_dim,
        "act_dim": actor.action_dim,
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", obs_dim]},
        "output": {"name": OUTPUT_NAME, "dtype": "float32" if continuous else "int64",
                   "shape": ["batch", actor.action_dim] if continuous else ["batch"]},
        "action": {"kind": actor.kind, "dim": actor.action_dim,
                   "low": _bounds(actor.action_low) if continuous else None,
                   "high": _bounds(actor.action_high) if continuous else None},
        "observation_names": _check_names(env_info.get("observation_names"), obs_dim,
                                          "observation_names"),
        "action_names": _check_names(env_info.get("action_names"), actor.action_dim,
                                     "action_names"),
        "env_metadata": env_info.get("policy_metadata"),
        "normalizer": {"enabled": actor.obs_norm.enabled, "clip": actor.obs_norm.clip,
                       "epsilon": actor.obs_norm.epsilon, "in_graph": True},
        "activation": actor.mlp.activation,
        "hidden_dense": actor_block.get("hidden_dense"),
        "hidden_compact": actor.mlp.hidden_sizes,
        "compaction": {**{k: v for k, v in actor_block.items() if not k.startswith("hidden")},
                       "macs": macs(actor.mlp),
                       "dense_macs": meta.get("dense_macs")},
        "config": meta.get("config"),
        "global_step": meta.get("global_step"),
        # safety-first selection: the snapshot exported (update and step), else absent
        **({"selected": meta["selected"]} if meta.get("selected") else {}),
        "git_commit": meta.get("git_commit"),
        "git_commits": meta.get("git_commits") or [meta.get("git_commit")],
        "created_unix": meta.get("created_unix"),
        "exported_unix": time.time(),
        "opset": OPSET,
    }


def write_policy(model: Any, metadata: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Embed ``metadata``, then write the model and its sidecar atomically; returns paths."""
    import onnx

    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata_json(metadata)
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    out = Path(out)
    sidecar = {"file": out.name, "sha256": hashlib.sha256(data).hexdigest(),
               "size_bytes": len(data), METADATA_KEY: metadata}
    # Each file is replaced atomically. The old sidecar goes first, so a crash between the two
    # leaves a new model with no sidecar (loads, unverified), never one with a stale sha256.
    sidecar_path(out).unlink(missing_ok=True)
    atomic_write(out, lambda f: f.write(data))
    atomic_write_json(sidecar_path(out), sidecar)
    return out, sidecar_path(out)


def export_actor(actor: DeployedActor, meta: dict[str, Any], out: str | Path,
                 env_info: dict[str, Any] | None = None,
                 check_obs: np.ndarray | None = None) -> tuple[Path, Path, float]:
    """Export ``actor`` to ``out`` after checking it against torch; returns paths and error."""
    metadata = policy_metadata(actor, meta, env_info)
    metadata_json(metadata)  # fail on bad env metadata before the slow part
    model = onnx_model(actor)
    obs = sample_observations(actor) if check_obs is None else check_obs
    error = parity_error(model.SerializeToString(), actor, obs)
    if not error <= (0.0 if actor.kind == "discrete" else PARITY_TOL):  # NaN fails too
        what = "argmax mismatches" if actor.kind == "discrete" else "max |onnx - torch|"
        raise ExportError(f"exported graph disagrees with the torch actor: {what} = {error:g} "
                          f"over {len(obs)} observations; nothing was written")
    metadata["parity"] = {"samples": len(obs), "max_abs_diff": error,
                          "tolerance": PARITY_TOL}
    onnx_path, json_path = write_policy(model, metadata, out)
    return onnx_path, json_path, error


def export_run(source: str | Path, out: str | Path | None = None) -> tuple[Path, Path]:
    """Export a run folder's (or an actor_compact.pt file's) actor to policy.onnx."""
    missing = missing_export_modules()
    if missing:
        raise ModuleNotFoundError(f"export needs {', '.join(missing)}: "
                                  "pip install -e '.[export]' (and onnxruntime)")
    if out is not None and (Path(out).suffix != ".onnx" or Path(out).is_dir()):
        raise ValueError(f"--out={out}: must be a file path ending in .onnx (its sidecar "
                         "goes beside it as .json)")
    actor_path = resolve_actor_path(source)
    actor, meta = load_actor(actor_path)
    out = Path(out) if out is not None else actor_path.parent / POLICY_FILE
    env_info = None
    try:
        from dsp_driving.rl.envs import describe_env

        env_info = describe_env(meta["env_id"], env_kwargs_of(meta))
    except Exception as exc:  # names are optional: a missing simulator must not block export
        log.warning(f"could not open {meta['env_id']} to read its observation/action "
                    f"names ({exc}); exporting without them")
    onnx_path, json_path, error = export_actor(actor, meta, out, env_info)
    size_kib = onnx_path.stat().st_size / 1024
    log.info(f"wrote {onnx_path} ({size_kib:.1f} KiB, hidden {actor.mlp.hidden_sizes}, "
             f"onnxruntime vs torch max diff {error:.2g}) and {json_path}")
    return onnx_path, json_path
