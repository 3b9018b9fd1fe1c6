"""The policy file format module: one reader and one set of names for export and runtime."""

from __future__ import annotations

import dataclasses
import json

from import_checks import import_with_blocked
import pytest

from dsp_driving import export, inference
from dsp_driving.policy_format import (
    METADATA_KEY,
    PolicyLoadError,
    PolicyMetadata,
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
    assert parse_metadata(metadata_json(MINIMAL), "p.onnx").raw == MINIMAL
    with pytest.raises(PolicyMetadataError, match="p.onnx: no 'dsp_driving' entry"):
        parse_metadata(None, "p.onnx")
    with pytest.raises(PolicyMetadataError, match="metadata lacks act_dim"):
        parse_metadata(json.dumps({k: v for k, v in MINIMAL.items() if k != "act_dim"}),
                       "p.onnx")
    with pytest.raises(PolicyMetadataError, match=r"metadata obs_dim=0: must be a positive"):
        parse_metadata(json.dumps({**MINIMAL, "obs_dim": 0}), "p.onnx")
    with pytest.raises(ValueError, match="not strict JSON"):
        metadata_json({**MINIMAL, "x": float("nan")})


CONTINUOUS = {"format_version": 1, "env_id": "Pendulum-v1", "obs_dim": 3, "act_dim": 2,
              "input": {"name": "obs"}, "output": {"name": "action"},
              "action": {"kind": "continuous", "low": [-2, None], "high": [2.0, 1.5]},
              "observation_names": ["cos", "sin", "omega"], "action_names": None,
              "env_metadata": {"speed_scale_mps": 30.0}}


def test_from_dict_gives_typed_fields_and_keeps_the_raw_dict() -> None:
    spec = PolicyMetadata.from_dict(CONTINUOUS, "p.onnx")
    assert spec == PolicyMetadata(
        format_version=1, env_id="Pendulum-v1", obs_dim=3, act_dim=2, input_name="obs",
        output_name="action", action_kind="continuous", action_low=(-2.0, None),
        action_high=(2.0, 1.5), observation_names=("cos", "sin", "omega"), action_names=None,
        raw=CONTINUOUS)
    assert spec.raw is CONTINUOUS and spec.raw["env_metadata"] == {"speed_scale_mps": 30.0}
    assert type(spec.action_low[0]) is float  # JSON ints become floats
    discrete = PolicyMetadata.from_dict(MINIMAL, "p.onnx")
    assert (discrete.action_kind, discrete.action_low, discrete.action_high) == (
        "discrete", None, None)
    assert discrete.observation_names is None and discrete.action_names is None
    assert hash(discrete) == hash(PolicyMetadata.from_dict(dict(MINIMAL), "p.onnx"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        discrete.obs_dim = 5  # type: ignore[misc]


def _without(meta: dict, key: str) -> dict:
    return {k: v for k, v in meta.items() if k != key}


@pytest.mark.parametrize(("meta", "message"), [
    ({**CONTINUOUS, "obs_dim": 0}, "p.onnx: metadata obs_dim=0: must be a positive integer"),
    ({**CONTINUOUS, "obs_dim": True}, "metadata obs_dim=True: must be a positive integer"),
    ({**CONTINUOUS, "act_dim": "2"}, "metadata act_dim='2': must be a positive integer"),
    ({**CONTINUOUS, "output": ["action"]}, "metadata output=['action']: must be a JSON object"),
    ({**CONTINUOUS, "input": {"name": 3}}, "metadata input.name=3: must be a string"),
    ({**CONTINUOUS, "action": {"kind": "x"}},
     "metadata action.kind='x': expected 'continuous' or 'discrete'"),
    ({**CONTINUOUS, "action": {**CONTINUOUS["action"], "low": [-2.0]}},
     "metadata action.low=[-2.0]: must be a list of 2 numbers (null for unbounded)"),
    ({**CONTINUOUS, "action": {**CONTINUOUS["action"], "high": [1, "2"]}},
     "metadata action.high=[1, '2']: must be a list of 2 numbers"),
    ({**CONTINUOUS, "action": _without(CONTINUOUS["action"], "high")},
     "metadata action.high=None: must be a list of 2 numbers"),
    ({**CONTINUOUS, "observation_names": ["cos", "sin"]},
     "metadata observation_names=['cos', 'sin']: must be null or a list of 3 names"),
    ({**CONTINUOUS, "action_names": "steer"},
     "metadata action_names='steer': must be null or a list of 2 names"),
    ({**CONTINUOUS, "format_version": 2},
     "metadata format_version=2, this runtime reads (1,)"),
    (_without(CONTINUOUS, "env_id"), "p.onnx: metadata lacks env_id"),
    (_without(_without(CONTINUOUS, "input"), "action"), "metadata lacks input, action"),
    ([CONTINUOUS], "p.onnx: 'dsp_driving' metadata is not a JSON object"),
])
def test_from_dict_names_the_bad_field_and_value(meta, message: str) -> None:
    with pytest.raises(PolicyMetadataError) as err:
        PolicyMetadata.from_dict(meta, "p.onnx")
    assert message in str(err.value)


def test_from_dict_reports_the_first_bad_field_in_a_fixed_order() -> None:
    """Dims, then the three objects, then the names, the action kind, bounds, name lists."""
    meta = {**CONTINUOUS, "act_dim": 0, "input": "obs", "action": {"kind": "x"}}
    with pytest.raises(PolicyMetadataError, match="act_dim=0"):
        PolicyMetadata.from_dict(meta, "p.onnx")
    meta = {**CONTINUOUS, "input": {}, "action": "discrete"}
    with pytest.raises(PolicyMetadataError, match="action='discrete'"):
        PolicyMetadata.from_dict(meta, "p.onnx")
    meta = {**CONTINUOUS, "output": {}, "action": {"kind": "x"}}
    with pytest.raises(PolicyMetadataError, match="output.name=None"):
        PolicyMetadata.from_dict(meta, "p.onnx")
