"""The policy file format module: one reader and one set of names for export and runtime."""

from __future__ import annotations

import json

from import_checks import import_with_blocked
import pytest

from dsp_driving import export, inference
from dsp_driving.policy_format import (
    METADATA_KEY,
    PolicyLoadError,
    PolicyMetadataError,
    metadata_json,
    parse_metadata,
    sidecar_path,
)

MINIMAL = {"format_version": 1, "env_id": "CartPole-v1", "obs_dim": 4, "act_dim": 2,
           "input": {"name": "obs"}, "output": {"name": "action"},
           "action": {"kind": "discrete"}}


def test_it_needs_neither_torch_nor_onnxruntime_nor_numpy() -> None:
    proc = import_with_blocked(("dsp_driving.policy_format",),
                               ("torch", "onnxruntime", "numpy"))
    assert proc.returncode == 0, proc.stderr


def test_export_and_runtime_share_the_names_and_the_reader() -> None:
    """One home: export writes and inference reads through policy_format's names."""
    assert export.METADATA_KEY is METADATA_KEY is inference.METADATA_KEY
    assert inference.parse_metadata is parse_metadata
    assert issubclass(inference.PolicyFileError, PolicyLoadError)
    assert export.sidecar_path is sidecar_path
    assert str(sidecar_path("runs/x/policy.onnx")) == "runs/x/policy.json"


def test_parse_round_trips_and_names_the_bad_field() -> None:
    assert parse_metadata(metadata_json(MINIMAL), "p.onnx") == MINIMAL
    with pytest.raises(PolicyMetadataError, match="p.onnx: no 'dsp_driving' entry"):
        parse_metadata(None, "p.onnx")
    with pytest.raises(PolicyMetadataError, match="metadata lacks act_dim"):
        parse_metadata(json.dumps({k: v for k, v in MINIMAL.items() if k != "act_dim"}),
                       "p.onnx")
    with pytest.raises(PolicyMetadataError, match=r"metadata obs_dim=0: must be a positive"):
        parse_metadata(json.dumps({**MINIMAL, "obs_dim": 0}), "p.onnx")
    with pytest.raises(ValueError, match="not strict JSON"):
        metadata_json({**MINIMAL, "x": float("nan")})
