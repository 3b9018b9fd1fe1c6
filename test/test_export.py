"""ONNX export: file layout, torch vs onnxruntime parity, metadata, and the export command."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import gymnasium as gym
import numpy as np
import onnx
import pytest
import torch
import yaml

from dsp_driving import cli
from dsp_driving.actor_file import load_actor
from dsp_driving.evaluation import visited_observations
import dsp_driving.export as export_module
from dsp_driving.export import ExportError, export_actor, export_run, sample_observations
from dsp_driving.inference import OnnxPolicy
from dsp_driving.modules.mlp import MLP
from dsp_driving.policy_format import METADATA_KEY
from dsp_driving.rl.envs import describe_env
from dsp_driving.rl.networks import ActionSpec, DeployedActor
from dsp_driving.rl.normalization import ObsNormalizer

TOL = 1e-5


@pytest.fixture(params=["cartpole_run", "pendulum_run"])
def run(request: pytest.FixtureRequest) -> Path:
    """Both a discrete (CartPole) and a continuous (Pendulum) finished run."""
    return request.getfixturevalue(request.param)


def test_train_exports_one_self_contained_file(run: Path) -> None:
    model = onnx.load(str(run / "policy.onnx"), load_external_data=False)
    assert not any(onnx.external_data_helper.uses_external_data(t)
                   for t in model.graph.initializer)
    assert sorted(p.name for p in run.iterdir() if p.suffix == ".onnx") == ["policy.onnx"]
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,), (out,) = model.graph.input, model.graph.output
    in_dims = inp.type.tensor_type.shape.dim
    assert inp.name == "obs" and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert in_dims[0].dim_param and not in_dims[0].HasField("dim_value")  # dynamic batch
    actor, _ = load_actor(run / "actor_compact.pt")
    assert in_dims[1].dim_value == actor.mlp.layers[0].in_features
    out_dims = out.type.tensor_type.shape.dim
    assert out.name == "action" and out_dims[0].dim_param
    if actor.kind == "discrete":
        assert out.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert len(out_dims) == 1
    else:
        assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert [d.dim_value for d in out_dims[1:]] == [actor.action_dim]


def test_graph_holds_only_the_compact_layers(cartpole_run: Path) -> None:
    actor, _ = load_actor(cartpole_run / "actor_compact.pt")
    model = onnx.load(str(cartpole_run / "policy.onnx"))
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    gemm_weights = [weights[n.input[1]] for n in model.graph.node if n.op_type == "Gemm"]
    sizes = [actor.mlp.layers[0].in_features, *actor.mlp.hidden_sizes, actor.action_dim]
    assert [w.shape for w in gemm_weights] == [(o, i) for i, o in zip(sizes, sizes[1:])]
    assert actor.mlp.hidden_sizes != [16, 16]  # TINY prunes, so this is really compact
    for w in gemm_weights:  # no masked (all-zero) neuron survived
        assert np.all(np.abs(w).sum(axis=1) > 0)


@pytest.mark.parametrize("batch", [1, 64])
def test_onnxruntime_matches_torch_on_random_observations(run: Path, batch: int) -> None:
    actor, _ = load_actor(run / "actor_compact.pt")
    policy = OnnxPolicy(run / "policy.onnx")
    obs = sample_observations(actor, n=batch, seed=batch)
    expected = actor.act(obs)
    got = policy.act_batch(obs)
    assert got.shape == expected.shape
    assert got.dtype == (np.int64 if actor.kind == "discrete" else np.float32)
    if actor.kind == "discrete":
        np.testing.assert_array_equal(got, expected)
    else:
        assert np.max(np.abs(got - expected)) <= TOL
        assert np.all(got >= actor.action_low.numpy()) and np.all(got <= actor.action_high.numpy())
    single = np.array([policy.act(o) for o in obs])
    np.testing.assert_allclose(single.reshape(got.shape), got, atol=TOL, rtol=0)


def test_onnxruntime_matches_torch_on_real_observations(run: Path) -> None:
    actor, meta = load_actor(run / "actor_compact.pt")
    policy = OnnxPolicy(run / "policy.onnx")
    obs = visited_observations(actor.act, meta["env_id"], 300, seed=7)
    expected, got = actor.act(obs), policy.act_batch(obs)
    if actor.kind == "discrete":
        np.testing.assert_array_equal(got, expected)
        assert len(np.unique(expected)) == 2  # both CartPole actions really occur
    else:
        assert np.max(np.abs(got - expected)) <= TOL
    for o, e in zip(obs[:50], expected[:50]):
        a = policy.act(o)
        assert (a == e) if actor.kind == "discrete" else np.max(np.abs(a - e)) <= TOL


def test_metadata_round_trip(run: Path) -> None:
    actor, meta = load_actor(run / "actor_compact.pt")
    policy = OnnxPolicy(run / "policy.onnx")
    model = onnx.load(str(run / "policy.onnx"))
    embedded = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    sidecar = json.loads((run / "policy.json").read_text())
    assert policy.metadata == embedded == sidecar[METADATA_KEY]
    assert sidecar["sha256"] == hashlib.sha256((run / "policy.onnx").read_bytes()).hexdigest()
    assert sidecar["size_bytes"] == (run / "policy.onnx").stat().st_size

    summary = json.loads((run / "summary.json").read_text())
    config = yaml.safe_load((run / "config.yaml").read_text())
    env = gym.make(summary["env"])
    assert embedded["format_version"] == 1
    assert embedded["env_id"] == summary["env"] == policy.env_id
    assert embedded["obs_dim"] == env.observation_space.shape[0] == policy.obs_dim
    if actor.kind == "discrete":
        assert embedded["act_dim"] == env.action_space.n
        assert embedded["action"] == {"kind": "discrete", "dim": 2, "low": None, "high": None}
    else:
        assert embedded["act_dim"] == env.action_space.shape[0]
        assert embedded["action"]["low"] == env.action_space.low.tolist()
        assert embedded["action"]["high"] == env.action_space.high.tolist()
    assert embedded["hidden_dense"] == summary["actor"]["hidden_dense"] == [16, 16]
    assert embedded["hidden_compact"] == summary["actor"]["hidden_compact"]
    assert embedded["compaction"]["compact_weights"] == summary["actor"]["compact_weights"]
    assert embedded["compaction"]["macs"] == meta["macs"]
    assert embedded["config"] == config
    assert embedded["global_step"] == summary["total_steps"]
    assert embedded["git_commit"] == meta["git_commit"]
    assert embedded["git_commits"] == meta["git_commits"] == [meta["git_commit"]]
    assert embedded["created_unix"] <= embedded["exported_unix"]
    assert embedded["parity"]["max_abs_diff"] <= TOL
    assert embedded["observation_names"] is None  # gymnasium's classic envs name nothing


class NamedEnv(gym.Env):
    """A tiny env that names its observations and actions, as the driving contract does."""

    observation_names = ["speed", "lateral_offset", "heading_error"]
    action_names = ["steer", "accel"]
    policy_metadata = {"speed_scale_mps": 30.0}

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-5.0, 5.0, (3,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), 0.0, True, False, {}


def test_env_names_and_contract_metadata_travel_with_the_policy(tmp_path: Path) -> None:
    gym.register("dsp_test/Named-v0", entry_point=NamedEnv)
    try:
        info = describe_env("dsp_test/Named-v0")
    finally:
        gym.registry.pop("dsp_test/Named-v0")
    torch.manual_seed(0)
    norm = ObsNormalizer(3)
    norm.update(np.random.default_rng(0).normal(2.0, 3.0, size=(100, 3)))
    actor = DeployedActor(norm, MLP(3, [5, 4], 2), ActionSpec("continuous", 2,
                          np.full(2, -1, np.float32), np.ones(2, np.float32))).eval()
    meta = {"env_id": "dsp_test/Named-v0", "config": None, "global_step": 0}
    onnx_path, _, err = export_actor(actor, meta, tmp_path / "named.onnx", info)
    policy = OnnxPolicy(onnx_path)
    assert err <= TOL
    assert policy.observation_names == NamedEnv.observation_names
    assert policy.action_names == NamedEnv.action_names
    assert policy.metadata["env_metadata"] == {"speed_scale_mps": 30.0}
    assert policy.metadata["hidden_compact"] == [5, 4]
    obs = np.random.default_rng(1).normal(2.0, 30.0, size=(64, 3)).astype(np.float32)
    assert np.max(np.abs(policy.act_batch(obs) - actor.act(obs))) <= TOL


def test_export_refuses_a_graph_that_disagrees_and_writes_nothing(
        cartpole_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_module, "parity_error", lambda *args: 3.0)
    with pytest.raises(ExportError, match="argmax mismatches = 3"):
        export_run(cartpole_run, tmp_path / "policy.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_command(cartpole_run: Path, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nested" / "p.onnx"
    assert cli.main(["export", str(cartpole_run / "actor_compact.pt"), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert json.loads(out.with_suffix(".json").read_text())["file"] == "p.onnx"
    # same actor, same weights: the graph bytes equal the automatic export's, bar metadata
    a, b = onnx.load(str(out)), onnx.load(str(cartpole_run / "policy.onnx"))
    del a.metadata_props[:], b.metadata_props[:]
    assert a.SerializeToString() == b.SerializeToString()
    assert cli.main(["export", str(tmp_path / "missing")]) == 2
    assert "actor file not found" in capsys.readouterr().err


def test_train_skips_export_without_the_extra(tiny_config, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    from dsp_driving.trainer import train

    monkeypatch.setattr(export_module, "missing_export_modules", lambda: ["onnxscript"])
    cfg = tiny_config(train={"total_steps": 512, "export_onnx": True})
    with caplog.at_level(logging.INFO, logger="dsp_driving"):
        train(cfg, tmp_path / "run")
    lines = caplog.messages
    assert not (tmp_path / "run" / "policy.onnx").exists()
    assert (tmp_path / "run" / "actor_compact.pt").is_file()
    assert any("skipped ONNX export (onnxscript not installed)" in line for line in lines)
    with pytest.raises(ModuleNotFoundError, match="export needs onnxscript"):
        export_run(tmp_path / "run")


def _actor(obs_dim: int, hidden: list[int], action: ActionSpec, seed: int = 0) -> DeployedActor:
    torch.manual_seed(seed)
    norm = ObsNormalizer(obs_dim)
    norm.update(np.random.default_rng(seed).normal(1.0, 2.0, size=(100, obs_dim)))
    return DeployedActor(norm, MLP(obs_dim, hidden, action.dim), action).eval()


def test_single_action_discrete_policy(tmp_path: Path) -> None:
    actor = _actor(2, [3], ActionSpec("discrete", 1, None, None))
    path, _, err = export_actor(actor, {"env_id": "x"}, tmp_path / "one.onnx")
    policy = OnnxPolicy(path)
    assert err == 0 and policy.act_dim == 1
    assert policy.act([0.5, -2.0]) == 0
    np.testing.assert_array_equal(policy.act_batch(np.ones((5, 2))), np.zeros(5, np.int64))


def test_unbounded_action_dims_are_strict_json_nulls(tmp_path: Path) -> None:
    low, high = np.array([-1.0, -np.inf], np.float32), np.array([1.0, np.inf], np.float32)
    actor = _actor(3, [6], ActionSpec("continuous", 2, low, high))
    with torch.no_grad():  # push the mean far out, so the finite bound really clips
        actor.mlp.layers[-1].bias.copy_(torch.tensor([50.0, 50.0]))
    path, json_path, err = export_actor(actor, {"env_id": "x"}, tmp_path / "inf.onnx")

    def reject(token: str) -> None:
        raise ValueError(f"non-standard JSON token {token}")

    sidecar = json.loads(json_path.read_text(), parse_constant=reject)
    assert sidecar[METADATA_KEY]["action"]["low"] == [-1.0, None]
    assert sidecar[METADATA_KEY]["action"]["high"] == [1.0, None]
    policy = OnnxPolicy(path)
    np.testing.assert_array_equal(policy.action_low, low)
    np.testing.assert_array_equal(policy.action_high, high)
    obs = sample_observations(actor, n=64)
    got = policy.act_batch(obs)
    assert err <= TOL and np.max(np.abs(got - actor.act(obs))) <= TOL
    assert np.all(got[:, 0] == 1.0) and np.all(got[:, 1] > 1.0)  # clipped / unbounded


def test_env_names_must_fit_the_policy(tmp_path: Path) -> None:
    actor = _actor(3, [4], ActionSpec("discrete", 2, None, None))
    with pytest.raises(ValueError, match="observation_names has 2 entries, the policy 3"):
        export_actor(actor, {"env_id": "x"}, tmp_path / "p.onnx",
                     {"observation_names": ["a", "b"]})
    with pytest.raises(ValueError, match="not strict JSON"):
        export_actor(actor, {"env_id": "x"}, tmp_path / "p.onnx",
                     {"policy_metadata": {"scale": float("nan")}})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [1.0, float("nan")])
def test_continuous_parity_failure_or_nan_stops_the_export(
        pendulum_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        error: float) -> None:
    monkeypatch.setattr(export_module, "parity_error", lambda *args: error)
    with pytest.raises(ExportError, match=r"max \|onnx - torch\|"):
        export_run(pendulum_run, tmp_path / "policy.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_does_not_fail_the_finished_run(
        tiny_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from dsp_driving.trainer import train

    monkeypatch.setattr(export_module, "parity_error", lambda *args: 5.0)
    with caplog.at_level(logging.INFO, logger="dsp_driving"):
        summary = train(tiny_config(train={"total_steps": 512, "export_onnx": True}),
                        tmp_path / "run")
    lines = caplog.messages
    assert summary["total_steps"] == 512
    assert (tmp_path / "run" / "summary.json").is_file()
    assert not (tmp_path / "run" / "policy.onnx").exists()
    assert any("ONNX export failed (ExportError" in line and "dsp-driving export" in line
               for line in lines)


def test_export_out_must_be_an_onnx_file(cartpole_run: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["export", str(cartpole_run), "--out", str(tmp_path / "p.json")]) == 2
    assert "must be a file path ending in .onnx" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_reexport_replaces_model_and_sidecar_together(cartpole_run: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "policy.onnx"
    export_run(cartpole_run, out)
    first = json.loads(out.with_suffix(".json").read_text())
    export_run(cartpole_run, out)
    second = json.loads(out.with_suffix(".json").read_text())
    assert second[METADATA_KEY]["exported_unix"] > first[METADATA_KEY]["exported_unix"]
    assert OnnxPolicy(out).sha256 == second["sha256"] != first["sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.json", "policy.onnx"]
