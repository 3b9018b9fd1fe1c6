"""The torch-free runtime: validation on load, the act fast path, and no torch import."""

from __future__ import annotations

import json
from pathlib import Path
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

from dsp_driving.inference import (
    OnnxPolicy,
    PolicyChecksumError,
    PolicyFileError,
    PolicySignatureError,
)
from dsp_driving.policy_format import METADATA_KEY, PolicyLoadError, PolicyMetadataError


@pytest.fixture
def policy_copy(cartpole_run: Path, tmp_path: Path) -> Path:
    """policy.onnx + policy.json copied where a test may damage them."""
    for name in ("policy.onnx", "policy.json"):
        shutil.copy(cartpole_run / name, tmp_path / name)
    return tmp_path / "policy.onnx"


def _rewrite(path: Path, edit) -> None:
    """Apply ``edit`` to the model proto and save it without a sidecar."""
    model = onnx.load(str(path))
    edit(model)
    onnx.save(model, str(path))
    path.with_suffix(".json").unlink()


def _set_metadata(model: onnx.ModelProto, value: str | None) -> None:
    del model.metadata_props[:]
    if value is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, value


def _metadata(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())[METADATA_KEY]


def test_loads_and_describes_itself(cartpole_run: Path) -> None:
    policy = OnnxPolicy(cartpole_run / "policy.onnx")
    assert (policy.env_id, policy.obs_dim, policy.act_dim, policy.kind) == (
        "CartPole-v1", 4, 2, "discrete")
    assert policy.input_name == "obs" and policy.output_name == "action"
    assert len(policy.sha256) == 64


def test_act_accepts_one_observation_in_any_numeric_form(cartpole_run: Path) -> None:
    policy = OnnxPolicy(cartpole_run / "policy.onnx")
    obs = np.array([0.02, -0.3, 0.05, 0.4], np.float32)
    expected = int(policy.act_batch(obs[None])[0])
    for form in (obs, obs.astype(np.float64), obs.tolist(), obs[None], tuple(obs)):
        action = policy.act(form)
        assert type(action) is int and action == expected
    with pytest.raises(ValueError, match=r"observation shape \(5,\), expected \(4,\)"):
        policy.act(np.zeros(5))
    with pytest.raises(ValueError, match="observation shape"):
        policy.act(1.0)  # a scalar must not broadcast into a whole observation
    with pytest.raises(ValueError, match="not numeric"):
        policy.act(["a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"batch shape \(4,\), expected \(n, 4\)"):
        policy.act_batch(obs)


def test_continuous_act_returns_a_fresh_array(pendulum_run: Path) -> None:
    policy = OnnxPolicy(pendulum_run / "policy.onnx")
    first = policy.act(np.zeros(3))
    kept = first.copy()
    second = policy.act(np.array([1.0, 0.0, 5.0]))
    assert first.shape == (1,) and first.dtype == np.float32
    np.testing.assert_array_equal(first, kept)  # the next call did not overwrite it
    assert first is not second


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="cannot read policy file .*nothing.onnx"):
        OnnxPolicy(tmp_path / "nothing.onnx")


def test_truncated_file(policy_copy: Path) -> None:
    data = policy_copy.read_bytes()
    policy_copy.write_bytes(data[: len(data) // 2])
    with pytest.raises(PolicyFileError, match="not a loadable ONNX model"):
        OnnxPolicy(policy_copy, verify_checksum=False)


def test_sha256_mismatch(policy_copy: Path) -> None:
    model = onnx.load(str(policy_copy))
    model.doc_string = "edited after export"
    onnx.save(model, str(policy_copy))  # the sidecar still has the old sha256
    with pytest.raises(PolicyChecksumError, match="does not match .* recorded in"):
        OnnxPolicy(policy_copy)
    assert OnnxPolicy(policy_copy, verify_checksum=False).obs_dim == 4  # opt-out works


def test_unreadable_sidecar(policy_copy: Path) -> None:
    policy_copy.with_suffix(".json").write_text("{not json")
    with pytest.raises(PolicyChecksumError, match="cannot read the recorded sha256"):
        OnnxPolicy(policy_copy)


def test_missing_metadata(policy_copy: Path) -> None:
    _rewrite(policy_copy, lambda m: _set_metadata(m, None))
    with pytest.raises(PolicyMetadataError, match="no 'dsp_driving' entry"):
        OnnxPolicy(policy_copy)


@pytest.mark.parametrize(("value", "message"), [
    ("{oops", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"format_version": 1}), "metadata lacks env_id, obs_dim"),
])
def test_bad_metadata(policy_copy: Path, value: str, message: str) -> None:
    _rewrite(policy_copy, lambda m: _set_metadata(m, value))
    with pytest.raises(PolicyMetadataError, match=message):
        OnnxPolicy(policy_copy)


def test_unsupported_format_version(policy_copy: Path) -> None:
    meta = {**_metadata(policy_copy), "format_version": 99}
    _rewrite(policy_copy, lambda m: _set_metadata(m, json.dumps(meta)))
    with pytest.raises(PolicyMetadataError, match="format_version=99"):
        OnnxPolicy(policy_copy)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("obs_dim", 5, r"input 'obs' has shape \['.*', 4\], metadata says \[batch, 5\]"),
    ("act_dim", 3, r"output 'action' has type tensor\(int64\), metadata says float32"),
    ("input", {"name": "observation"}, r"graph inputs \['obs'\], metadata says"),
])
def test_wrong_dims_names_or_types(policy_copy: Path, field: str, value, message: str) -> None:
    meta = {**_metadata(policy_copy), field: value}
    if field == "act_dim":  # claim a continuous 3-dim action for a discrete graph
        meta["action"] = {"kind": "continuous", "dim": 3, "low": [-1] * 3, "high": [1] * 3}
    _rewrite(policy_copy, lambda m: _set_metadata(m, json.dumps(meta)))
    with pytest.raises(PolicySignatureError, match=message):
        OnnxPolicy(policy_copy)


def test_errors_are_distinct_value_errors() -> None:
    kinds = (PolicyFileError, PolicyMetadataError, PolicySignatureError, PolicyChecksumError)
    for kind in kinds:
        assert issubclass(kind, PolicyLoadError) and issubclass(kind, ValueError)
        assert sum(issubclass(kind, other) for other in kinds) == 1


BLOCK_TORCH = """
import json, sys

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch is blocked: the runtime must not need it")
        return None

sys.meta_path.insert(0, Blocker())
"""


def test_runtime_acts_without_torch(cartpole_run: Path, pendulum_run: Path) -> None:
    code = BLOCK_TORCH + f"""
import numpy as np
from dsp_driving.inference import OnnxPolicy
out = {{}}
for path in ({str(cartpole_run / 'policy.onnx')!r}, {str(pendulum_run / 'policy.onnx')!r}):
    policy = OnnxPolicy(path)
    a = policy.act(np.zeros(policy.obs_dim, np.float32))
    b = policy.act_batch(np.zeros((64, policy.obs_dim), np.float32))
    out[policy.kind] = [np.asarray(a).tolist(), list(b.shape)]
out["torch_loaded"] = sorted(m for m in sys.modules if m.split(".")[0] == "torch")
out["loaded_packages"] = sorted({{m.split(".")[0] for m in sys.modules}} & {{"gymnasium", "onnx"}})
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["torch_loaded"] == [] and out["loaded_packages"] == []
    assert out["discrete"][1] == [64] and out["continuous"][1] == [64, 1]
    assert len(out["continuous"][0]) == 1


def test_eval_of_an_onnx_policy_needs_no_torch(cartpole_run: Path, tmp_path: Path) -> None:
    onnx_json, torch_json = tmp_path / "onnx.json", tmp_path / "torch.json"
    code = BLOCK_TORCH + f"""
from dsp_driving import cli
rc = cli.main(["eval", {str(cartpole_run / 'policy.onnx')!r}, "--episodes", "2",
               "--json", {str(onnx_json)!r}, "--no-plots"])
assert not any(m.split(".")[0] == "torch" for m in sys.modules)
sys.exit(rc)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(onnx_json.read_text())
    assert result["runtime"] == "onnxruntime" and len(result["sha256"]) == 64
    assert result["env"] == "CartPole-v1" and result["episodes"] == 2
    assert result["seeds"] == [1_000_000, 1_000_001]
    # the same policy through torch (actor_compact.pt) takes the same actions, so scores the same
    from dsp_driving import cli

    assert cli.main(["eval", str(cartpole_run), "--episodes", "2", "--json", str(torch_json),
                     "--no-plots"]) == 0
    through_torch = json.loads(torch_json.read_text())
    assert through_torch["policy"].endswith("actor_compact.pt")
    assert through_torch["return_mean"] == result["return_mean"]
    assert through_torch["length_mean"] == result["length_mean"]


def test_wrong_continuous_action_dim(pendulum_run: Path, tmp_path: Path) -> None:
    for name in ("policy.onnx", "policy.json"):
        shutil.copy(pendulum_run / name, tmp_path / name)
    path = tmp_path / "policy.onnx"
    meta = _metadata(path)
    meta["act_dim"] = 2
    meta["action"] = {**meta["action"], "dim": 2, "low": [-2.0] * 2, "high": [2.0] * 2}
    _rewrite(path, lambda m: _set_metadata(m, json.dumps(meta)))
    with pytest.raises(PolicySignatureError,
                       match=r"output 'action' has shape \['.*', 1\], metadata says \[batch, 2\]"):
        OnnxPolicy(path)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("obs_dim", "4", r"metadata obs_dim='4': must be a positive integer"),
    ("act_dim", 0, r"metadata act_dim=0: must be a positive integer"),
    ("action", "discrete", r"metadata action='discrete': must be a JSON object"),
    ("input", "obs", r"metadata input='obs': must be a JSON object"),
    ("observation_names", ["x"], r"observation_names=\['x'\]: must be null or a list of 4"),
])
def test_malformed_metadata_fields(policy_copy: Path, field: str, value, message: str) -> None:
    meta = {**_metadata(policy_copy), field: value}
    _rewrite(policy_copy, lambda m: _set_metadata(m, json.dumps(meta)))
    with pytest.raises(PolicyMetadataError, match=message):
        OnnxPolicy(policy_copy)


def test_continuous_bounds_must_match_act_dim(pendulum_run: Path, tmp_path: Path) -> None:
    shutil.copy(pendulum_run / "policy.onnx", tmp_path / "policy.onnx")
    path = tmp_path / "policy.onnx"
    meta = json.loads((pendulum_run / "policy.json").read_text())[METADATA_KEY]
    meta["action"] = {**meta["action"], "low": [-2.0, -2.0]}
    model = onnx.load(str(path))
    _set_metadata(model, json.dumps(meta))
    onnx.save(model, str(path))
    with pytest.raises(PolicyMetadataError, match=r"action.low=\[-2.0, -2.0\]: must be a list "
                       "of 1 numbers"):
        OnnxPolicy(path)


def test_truncated_file_with_its_sidecar_says_truncated(policy_copy: Path) -> None:
    data = policy_copy.read_bytes()
    policy_copy.write_bytes(data[:100])
    with pytest.raises(PolicyFileError, match=f"truncated: 100 of {len(data)} bytes"):
        OnnxPolicy(policy_copy)


def test_complex_observation_is_rejected(cartpole_run: Path) -> None:
    policy = OnnxPolicy(cartpole_run / "policy.onnx")
    with pytest.raises(ValueError, match="complex"):
        policy.act(np.ones(4, np.complex64))


def test_public_binding_fallback_gives_the_same_actions(
        pendulum_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = OnnxPolicy(pendulum_run / "policy.onnx")
    monkeypatch.setattr(OnnxPolicy, "use_private_binding_api", False)
    public = OnnxPolicy(pendulum_run / "policy.onnx")
    assert (fast.fast_path, public.fast_path) == ("private", "public")
    obs = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    for o in obs:
        np.testing.assert_array_equal(fast.act(o), public.act(o))
    np.testing.assert_allclose(np.stack([fast.act(o) for o in obs]), fast.act_batch(obs),
                               atol=1e-6, rtol=0)
