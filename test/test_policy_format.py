"""The policy file format module: one reader and one set of names for export and runtime."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dsp_driving import export, inference
from dsp_driving.policy_format import (
    METADATA_KEY,
    PolicyMetadataError,
    metadata_json,
    parse_metadata,
    sidecar_path,
)

MINIMAL = {"format_version": 1, "env_id": "CartPole-v1", "obs_dim": 4, "act_dim": 2,
           "input": {"name": "obs"}, "output": {"name": "action"},
           "action": {"kind": "discrete"}}


def test_it_needs_neither_torch_nor_onnxruntime_nor_numpy() -> None:
    code = ("import sys\n"
            "class B:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'onnxruntime', 'numpy'):\n"
            "            raise ImportError(name)\n"
            "sys.meta_path.insert(0, B())\n"
            "import dsp_driving.policy_format\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_export_and_runtime_share_the_names_and_the_reader() -> None:
    assert export.METADATA_KEY is METADATA_KEY is inference.METADATA_KEY
    assert inference.PolicyMetadataError is PolicyMetadataError
    assert export.sidecar_path("runs/x/policy.onnx") == sidecar_path("runs/x/policy.onnx")
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
