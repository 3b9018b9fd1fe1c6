"""The policy file format, in one torch- and onnxruntime-free place (docs/export.md).

``policy.onnx`` is the whole deployed policy: raw observation in (``INPUT_NAME``, float32
[batch, obs_dim]), environment action out (``OUTPUT_NAME``: float32 [batch, act_dim] for
continuous actions, int64 [batch] for discrete ones). Its ``metadata_props`` hold one entry,
``METADATA_KEY``, whose value is strict JSON (``metadata_json``); ``policy.json`` beside it
(``sidecar_path``) repeats that metadata with the file's sha256 and size. The writer is
``dsp_driving.export``; the reader is ``parse_metadata``, used by ``dsp_driving.inference``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METADATA_KEY = "dsp_driving"
FORMAT_VERSION = 1  # what export writes
SUPPORTED_FORMATS = (1,)  # what parse_metadata reads
INPUT_NAME = "obs"
OUTPUT_NAME = "action"
POLICY_FILE = "policy.onnx"
REQUIRED_FIELDS = ("format_version", "env_id", "obs_dim", "act_dim", "input", "output",
                   "action")


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


def parse_metadata(text: str | None, path: str | Path) -> dict[str, Any]:
    """The "dsp_driving" metadata from its JSON text (None: the entry is missing), checked:
    required fields, a format version this code reads, and the types and sizes the runtime
    relies on. PolicyMetadataError names the file, the field and the value."""
    if text is None:
        raise PolicyMetadataError(f"{path}: no '{METADATA_KEY}' entry in the model's "
                                  "metadata_props; export it with `dsp-driving export RUN_DIR`")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyMetadataError(f"{path}: '{METADATA_KEY}' metadata is not JSON: "
                                  f"{exc}") from None
    if not isinstance(meta, dict):
        raise PolicyMetadataError(f"{path}: '{METADATA_KEY}' metadata is not a JSON object")
    missing = [k for k in REQUIRED_FIELDS if k not in meta]
    if missing:
        raise PolicyMetadataError(f"{path}: metadata lacks {', '.join(missing)}")
    if meta["format_version"] not in SUPPORTED_FORMATS:
        raise PolicyMetadataError(f"{path}: metadata format_version="
                                  f"{meta['format_version']!r}, this runtime reads "
                                  f"{SUPPORTED_FORMATS}")
    check_fields(meta, path)
    return meta


def check_fields(meta: dict[str, Any], path: str | Path) -> None:
    """Types and sizes of the metadata fields the runtime relies on."""

    def bad(field: str, value: Any, why: str) -> PolicyMetadataError:
        return PolicyMetadataError(f"{path}: metadata {field}={value!r}: {why}")

    for field in ("obs_dim", "act_dim"):
        value = meta[field]
        if type(value) is not int or value < 1:
            raise bad(field, value, "must be a positive integer")
    for field in ("input", "output", "action"):
        if not isinstance(meta[field], dict):
            raise bad(field, meta[field], "must be a JSON object")
    for field in ("input", "output"):
        if not isinstance(meta[field].get("name"), str):
            raise bad(f"{field}.name", meta[field].get("name"), "must be a string")
    action = meta["action"]
    if action.get("kind") not in ("continuous", "discrete"):
        raise bad("action.kind", action.get("kind"), "expected 'continuous' or 'discrete'")
    if action["kind"] == "continuous":
        for field in ("low", "high"):
            bounds = action.get(field)
            if (not isinstance(bounds, list) or len(bounds) != meta["act_dim"]
                    or not all(b is None or isinstance(b, (int, float)) for b in bounds)):
                raise bad(f"action.{field}", bounds, f"must be a list of {meta['act_dim']} "
                          "numbers (null for unbounded)")
    for field, size in (("observation_names", meta["obs_dim"]),
                        ("action_names", meta["act_dim"])):
        names = meta.get(field)
        if names is not None and (not isinstance(names, list) or len(names) != size):
            raise bad(field, names, f"must be null or a list of {size} names")
