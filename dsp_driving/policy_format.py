"""The policy file format, in one torch- and onnxruntime-free place (docs/export.md).

``policy.onnx`` is the whole deployed policy: raw observation in (``INPUT_NAME``, float32
[batch, obs_dim]), environment action out (``OUTPUT_NAME``: float32 [batch, act_dim] for
continuous actions, int64 [batch] for discrete ones). Its ``metadata_props`` hold one entry,
``METADATA_KEY``, whose value is strict JSON (``metadata_json``); ``policy.json`` beside it
(``sidecar_path``) repeats that metadata with the file's sha256 and size. The writer is
``dsp_driving.export``; the reader is ``parse_metadata`` (the checked, typed
:class:`PolicyMetadata`), used by ``dsp_driving.inference``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal, cast

METADATA_KEY = "dsp_driving"
FORMAT_VERSION = 1  # what export writes
SUPPORTED_FORMATS = (1,)  # what parse_metadata reads
INPUT_NAME = "obs"
OUTPUT_NAME = "action"
POLICY_FILE = "policy.onnx"
REQUIRED_FIELDS = ("format_version", "env_id", "obs_dim", "act_dim", "input", "output",
                   "action")
ActionKind = Literal["continuous", "discrete"]
Bounds = tuple[float | None, ...]  # None: unbounded


class PolicyLoadError(ValueError):
    """policy.onnx cannot be used; the subclass says why."""


class PolicyMetadataError(PolicyLoadError):
    """The "dsp_driving" metadata is missing, not JSON, or incomplete."""


def sidecar_path(onnx_path: str | Path) -> Path:
    """policy.json beside policy.onnx."""
    return Path(onnx_path).with_suffix(".json")


def metadata_json(metadata: dict[str, Any]) -> str:
    """Strict JSON (no NaN/Infinity tokens, which C++ and JS readers reject)."""
    try:
        return json.dumps(metadata, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"policy metadata is not strict JSON: {exc}; the env's "
                         "policy_metadata must hold plain finite numbers, strings, lists "
                         "and dicts") from None


@dataclasses.dataclass(frozen=True)
class PolicyMetadata:
    """The checked "dsp_driving" metadata: the fields the runtime relies on, typed, and the
    whole parsed JSON object as ``raw`` (env_metadata, config, parity, ... live only there)."""

    format_version: int
    env_id: str
    obs_dim: int
    act_dim: int
    input_name: str
    output_name: str
    action_kind: ActionKind
    action_low: Bounds | None  # None for discrete actions
    action_high: Bounds | None
    observation_names: tuple[str, ...] | None
    action_names: tuple[str, ...] | None
    raw: dict[str, Any] = dataclasses.field(repr=False, hash=False)

    @classmethod
    def from_dict(cls, meta: Any, path: str | Path) -> PolicyMetadata:
        """Check ``meta`` (required fields, a format version this code reads, the types and
        sizes the runtime relies on); PolicyMetadataError names the file, field and value."""
        _check_object(meta, path)  # the checks run in this order: the first failure is told
        obs_dim = _positive_int(meta, "obs_dim", path)
        act_dim = _positive_int(meta, "act_dim", path)
        for field in ("input", "output", "action"):
            _require(isinstance(meta[field], dict), path, field, meta[field],
                     "must be a JSON object")
        input_name, output_name = _name(meta, "input", path), _name(meta, "output", path)
        kind = _action_kind(meta["action"], path)
        return cls(int(meta["format_version"]), meta["env_id"], obs_dim, act_dim, input_name,
                   output_name, kind, _bounds(meta["action"], kind, "low", act_dim, path),
                   _bounds(meta["action"], kind, "high", act_dim, path),
                   _names(meta, "observation_names", obs_dim, path),
                   _names(meta, "action_names", act_dim, path), meta)


def _require(ok: bool, path: str | Path, field: str, value: Any, why: str) -> None:
    if not ok:
        raise PolicyMetadataError(f"{path}: metadata {field}={value!r}: {why}")


def _check_object(meta: Any, path: str | Path) -> None:
    """A JSON object with every required field and a format version this code reads."""
    if not isinstance(meta, dict):
        raise PolicyMetadataError(f"{path}: '{METADATA_KEY}' metadata is not a JSON object")
    missing = [k for k in REQUIRED_FIELDS if k not in meta]
    if missing:
        raise PolicyMetadataError(f"{path}: metadata lacks {', '.join(missing)}")
    if meta["format_version"] not in SUPPORTED_FORMATS:
        raise PolicyMetadataError(f"{path}: metadata format_version="
                                  f"{meta['format_version']!r}, this runtime reads "
                                  f"{SUPPORTED_FORMATS}")


def _positive_int(meta: dict[str, Any], field: str, path: str | Path) -> int:
    value = meta[field]
    _require(type(value) is int and value >= 1, path, field, value,
             "must be a positive integer")
    return cast(int, value)


def _name(meta: dict[str, Any], field: str, path: str | Path) -> str:
    name = meta[field].get("name")
    _require(isinstance(name, str), path, f"{field}.name", name, "must be a string")
    return cast(str, name)


def _action_kind(action: dict[str, Any], path: str | Path) -> ActionKind:
    kind = action.get("kind")
    _require(kind in ("continuous", "discrete"), path, "action.kind", kind,
             "expected 'continuous' or 'discrete'")
    return cast(ActionKind, kind)


def _bounds(action: dict[str, Any], kind: ActionKind, field: str, act_dim: int,
            path: str | Path) -> Bounds | None:
    if kind == "discrete":
        return None
    bounds = action.get(field)
    ok = (isinstance(bounds, list) and len(bounds) == act_dim
          and all(b is None or isinstance(b, (int, float)) for b in bounds))
    _require(ok, path, f"action.{field}", bounds,
             f"must be a list of {act_dim} numbers (null for unbounded)")
    return tuple(None if b is None else float(b) for b in cast(list, bounds))


def _names(meta: dict[str, Any], field: str, size: int, path: str | Path
           ) -> tuple[str, ...] | None:
    names = meta.get(field)
    _require(names is None or (isinstance(names, list) and len(names) == size), path, field,
             names, f"must be null or a list of {size} names")
    return None if names is None else tuple(names)


def parse_metadata(text: str | None, path: str | Path) -> PolicyMetadata:
    """The "dsp_driving" metadata from its JSON text (None: the entry is missing), checked by
    :meth:`PolicyMetadata.from_dict`. PolicyMetadataError names the file, field and value."""
    if text is None:
        raise PolicyMetadataError(f"{path}: no '{METADATA_KEY}' entry in the model's "
                                  "metadata_props; export it with `dsp-driving export RUN_DIR`")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyMetadataError(f"{path}: '{METADATA_KEY}' metadata is not JSON: "
                                  f"{exc}") from None
    return PolicyMetadata.from_dict(meta, path)
