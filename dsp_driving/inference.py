"""Torch-free policy runtime: load policy.onnx with onnxruntime and act on raw observations.

Imports numpy and onnxruntime only (a test runs it with torch blocked), so the car needs
neither torch nor the trainer. ``OnnxPolicy(path)`` validates the file on load and fails with
one of the PolicyLoadError subclasses below; ``act`` is the batch-1 hot path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from dsp_driving.policy_format import (
    METADATA_KEY,
    PolicyLoadError,
    PolicyMetadata,
    parse_metadata,
)

_ORT_DTYPES = {"float32": "tensor(float)", "int64": "tensor(int64)"}


class PolicyFileError(PolicyLoadError):
    """The file is missing, unreadable, or not a valid ONNX model (e.g. truncated)."""


class PolicySignatureError(PolicyLoadError):
    """The graph's input/output names, dims or dtypes disagree with the metadata."""


class PolicyChecksumError(PolicyLoadError):
    """The file's sha256 differs from the one its sidecar policy.json records."""


def read_metadata(session: ort.InferenceSession, path: Path) -> PolicyMetadata:
    """The parsed, checked "dsp_driving" metadata of a loaded session."""
    return parse_metadata(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY), path)


def _bounds(values: tuple[float | None, ...], unbounded: float) -> np.ndarray:
    """JSON action bounds (null = unbounded) as float32."""
    return np.array([unbounded if v is None else v for v in values], np.float32)


def _as_list(names: tuple[str, ...] | None) -> list[str] | None:
    return None if names is None else list(names)


def _check_signature(session: ort.InferenceSession, spec: PolicyMetadata, path: Path) -> None:
    """Graph input/output names, dims and dtypes must be what the metadata promises."""
    continuous = spec.action_kind == "continuous"
    _check_args("input", session.get_inputs(), spec.input_name, "float32", [spec.obs_dim], path)
    _check_args("output", session.get_outputs(), spec.output_name,
                "float32" if continuous else "int64", [spec.act_dim] if continuous else [], path)


def _check_args(role: str, args: list[Any], name: str, dtype: str, feature_dims: list[int],
                path: Path) -> None:
    """The graph's ``role``s are exactly one named ``name``, of ``dtype``, [batch, *dims]."""
    if [a.name for a in args] != [name]:
        raise PolicySignatureError(f"{path}: graph {role}s {[a.name for a in args]}, "
                                   f"metadata says [{name!r}]")
    arg = args[0]
    if arg.type != _ORT_DTYPES[dtype]:
        raise PolicySignatureError(f"{path}: {role} '{name}' has type {arg.type}, "
                                   f"metadata says {dtype}")
    shape = list(arg.shape)
    if len(shape) != 1 + len(feature_dims) or shape[1:] != feature_dims:
        expected = ", ".join(["batch", *map(str, feature_dims)])
        raise PolicySignatureError(f"{path}: {role} '{name}' has shape {shape}, metadata "
                                   f"says [{expected}]")
    if isinstance(shape[0], int):
        raise PolicySignatureError(f"{path}: {role} '{name}' has a fixed batch of "
                                   f"{shape[0]}; the policy must be exported with a "
                                   "dynamic batch axis")


class OnnxPolicy:
    """A deterministic policy from policy.onnx: raw observation in, environment action out.

    Validates on load: the file is readable ONNX, carries "dsp_driving" metadata, its graph
    input/output names, dims and dtypes match that metadata, and its sha256 matches the
    sidecar policy.json when one sits beside it. ``act`` reuses preallocated input/output
    buffers and one intra-op thread; an instance is therefore not thread-safe.
    """

    use_private_binding_api = True  # see _bind_fast_path

    def __init__(self, path: str | Path, *, verify_checksum: bool = True,
                 intra_op_threads: int = 1) -> None:
        self.path = Path(path)
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise PolicyFileError(f"cannot read policy file {self.path}: "
                                  f"{exc.strerror or exc}") from None
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.sidecar = self.path.with_suffix(".json")
        if verify_checksum and self.sidecar.is_file():
            self._verify_sidecar(len(data))
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(data, options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own pybind types
            raise PolicyFileError(f"{self.path} is not a loadable ONNX model (truncated or "
                                  f"corrupt?): {str(exc).splitlines()[0]}") from None
        self.spec = read_metadata(self.session, self.path)  # the checked, typed fields
        self.metadata: dict[str, Any] = self.spec.raw  # the whole JSON, extra keys included
        _check_signature(self.session, self.spec, self.path)

        spec = self.spec
        self.env_id: str = spec.env_id
        self.obs_dim: int = spec.obs_dim
        self.act_dim: int = spec.act_dim
        self.kind: str = spec.action_kind
        self.discrete = self.kind == "discrete"
        self.action_low = None if spec.action_low is None else _bounds(spec.action_low, -np.inf)
        self.action_high = None if spec.action_high is None else _bounds(spec.action_high,
                                                                          np.inf)
        # lists, as in the JSON (callers compare them with lists)
        self.observation_names: list[str] | None = _as_list(spec.observation_names)
        self.action_names: list[str] | None = _as_list(spec.action_names)
        self.input_name: str = spec.input_name
        self.output_name: str = spec.output_name
        self._bind_fast_path()

    def _verify_sidecar(self, size: int) -> None:
        try:
            sidecar = json.loads(self.sidecar.read_text(encoding="utf-8"))
            recorded = sidecar["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PolicyChecksumError(f"{self.sidecar}: cannot read the recorded sha256 "
                                      f"({exc!r}); pass verify_checksum=False to skip") from None
        expected_size = sidecar.get("size_bytes")
        if isinstance(expected_size, int) and size < expected_size:
            raise PolicyFileError(f"{self.path} is truncated: {size} of {expected_size} bytes "
                                  f"(size recorded in {self.sidecar.name})")
        if recorded != self.sha256:
            raise PolicyChecksumError(f"{self.path}: sha256 {self.sha256} does not match "
                                      f"{recorded} recorded in {self.sidecar}: the file was "
                                      "changed or the sidecar belongs to another export")

    def _bind_fast_path(self) -> None:
        """Bind preallocated [1, obs_dim] and [1(, act_dim)] buffers once, for ``act``."""
        self._obs = np.zeros((1, self.obs_dim), np.float32)
        self._obs_row = self._obs[0]
        self._action = (np.zeros((1,), np.int64) if self.discrete
                        else np.zeros((1, self.act_dim), np.float32))
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(self._obs))
        binding.bind_ortvalue_output(self.output_name,
                                     ort.OrtValue.ortvalue_from_numpy(self._action))
        self._binding = binding
        self._run_options = ort.RunOptions()
        # The public InferenceSession.run_with_iobinding adds Python-side WebGPU graph-capture
        # checks that cost ~40 us per call in onnxruntime 1.31 (bench/inference_latency.py);
        # the C session's method is the same run without them. Fall back if it ever moves.
        # Probed once here, so a changed private API shows at load, not in the first act().
        public = lambda: self.session.run_with_iobinding(binding, self._run_options)  # noqa: E731
        self._run, self.fast_path = public, "public"
        if self.use_private_binding_api:
            try:
                run, c_binding = self.session._sess.run_with_iobinding, binding._iobinding
                run(c_binding, self._run_options)
            except (AttributeError, TypeError, RuntimeError):
                pass
            else:
                self._run = lambda: run(c_binding, self._run_options)
                self.fast_path = "private"

    def act(self, obs: Any) -> np.ndarray | int:
        """One raw observation [obs_dim] -> one action (float32 [act_dim], or an int)."""
        if getattr(obs, "shape", None) == self._obs_row.shape:
            try:
                np.copyto(self._obs_row, obs, casting="same_kind")
            except TypeError:
                self._obs_row[:] = self._as_observation(obs)
        else:
            self._obs_row[:] = self._as_observation(obs)
        self._run()
        return int(self._action[0]) if self.discrete else self._action[0].copy()

    def _as_observation(self, obs: Any) -> np.ndarray:
        if np.iscomplexobj(obs):
            raise ValueError("observation is complex; expected real numbers")
        try:
            x = np.asarray(obs, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"observation is not numeric: {exc}") from None
        if x.shape not in ((self.obs_dim,), (1, self.obs_dim)):
            raise ValueError(f"observation shape {x.shape}, expected ({self.obs_dim},)")
        return x.reshape(self.obs_dim)

    def act_batch(self, obs: Any) -> np.ndarray:
        """Raw observations [n, obs_dim] -> actions [n, act_dim] float32, or [n] int64."""
        x = np.ascontiguousarray(obs, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.obs_dim:
            raise ValueError(f"observation batch shape {x.shape}, expected (n, {self.obs_dim})")
        return self.session.run([self.output_name], {self.input_name: x})[0]

    __call__ = act

    def __repr__(self) -> str:
        return (f"OnnxPolicy({str(self.path)!r}, env={self.env_id}, obs_dim={self.obs_dim}, "
                f"{self.kind} act_dim={self.act_dim})")
