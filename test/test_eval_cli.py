"""`dsp-driving eval` (issue #19): eval.json with the driving safety summary, the printed
summary and the plots, on real policies (an exported HighwayDrive-v0 policy.onnx, a compact
actor file, a CartPole-v1 policy) in the real envs."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path
import shutil
import struct
import sys
from typing import Any

import numpy as np
import pytest
import torch

from dsp_driving import cli
from dsp_driving.actor_file import save_actor
from dsp_driving.analysis.eval_report import FIGURES, plot_eval, summary_lines
from dsp_driving.driving import contract, safety, safety_summary
from dsp_driving.export import export_actor
from dsp_driving.modules.mlp import MLP
from dsp_driving.rl.networks import ActionSpec, DeployedActor
from dsp_driving.rl.normalization import ObsNormalizer

pytest.importorskip("onnxscript")
pytest.importorskip("highway_env")

from import_checks import run_with_blocked  # noqa: E402
from policy_samples import ENV_INFO  # noqa: E402

HIGHWAY = "dsp_driving/HighwayDrive-v0"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# what eval.json holds besides the summary (evaluation.eval_document and the CLI's header;
# sha256: the ONNX file's, only where onnxruntime ran it)
REST = {"return_std", "length_mean", "seeds", "returns", "policy", "env", "runtime",
        "deterministic", "per_episode", "sha256"}


def constant_actor(obs_dim: int, action: tuple[float, ...] | None = None) -> DeployedActor:
    """A real DeployedActor whose output is fixed: zero last-layer weights, ``action`` as the
    bias (a continuous [steer, accel] driver); None: a random discrete CartPole actor."""
    torch.manual_seed(0)
    if action is None:
        return DeployedActor(ObsNormalizer(obs_dim), MLP(obs_dim, [8], 2),
                             ActionSpec("discrete", 2, None, None)).eval()
    spec = ActionSpec("continuous", 2, np.full(2, -1, np.float32), np.ones(2, np.float32))
    actor = DeployedActor(ObsNormalizer(obs_dim), MLP(obs_dim, [8], 2), spec).eval()
    with torch.no_grad():
        actor.mlp.layers[-1].weight.zero_()
        actor.mlp.layers[-1].bias.copy_(torch.tensor(action))
    return actor


def run_eval(*args: str) -> tuple[int, str]:
    """`dsp-driving eval ARGS`: (exit status, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli.main(["eval", *args])
    return rc, out.getvalue()


def strict_json(path: Path) -> dict[str, Any]:
    """The file as JSON, failing on NaN / Infinity."""
    def refuse(name: str) -> None:
        raise AssertionError(f"{path} holds {name}: not strict JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG file, after checking its signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    assert len(data) > 10_000  # a drawn figure, not an empty canvas
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def highway_eval(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    """An exported HighwayDrive-v0 policy (straight ahead, easing off the throttle: on seeds
    0..3 some episodes end in a collision, some time out), evaluated by
    `dsp-driving eval policy.onnx --episodes 4 --seed 0`; (its folder, eval.json, stdout)."""
    folder = tmp_path_factory.mktemp("highway_onnx")
    model, _, _ = export_actor(constant_actor(contract.OBS_DIM, (0.0, -0.02)),
                               {"env_id": HIGHWAY}, folder / "policy.onnx", ENV_INFO)
    rc, out = run_eval(str(model), "--episodes", "4", "--seed", "0")
    assert rc == 0
    doc = strict_json(folder / "eval.json")
    # the figures below are only a test if both kinds of ending occur
    assert {r["outcome"] for r in doc["per_episode"]} == {"collision", "timeout"}
    return folder, doc, out


def test_driving_eval_json_has_exactly_the_summary_keys_first(highway_eval) -> None:
    folder, doc, _ = highway_eval
    assert list(doc)[:12] == ["episodes", "return_mean", "collision_rate", "collisions_per_km",
                              "offroad_rate", "route_completion", "driving_score",
                              "min_ttc_p5_s", "ttc_below_1_5s_pct", "jerk_p95",
                              "lateral_accel_p95", "mean_speed_mps"]
    assert set(doc) == {*safety_summary.SUMMARY_KEYS, *safety_summary.CI_KEYS,
                        safety_summary.CI_METHOD_KEY, *REST}
    for key in safety_summary.CI_KEYS:
        ci = doc[key]
        assert ci is None or (len(ci) == 2 and ci[0] <= ci[1]), (key, ci)
    assert doc["ci95_method"] in (safety_summary.BOOTSTRAP, safety_summary.NORMAL)
    assert doc["episodes"] == 4 and doc["seeds"] == [0, 3]
    assert [r["seed"] for r in doc["per_episode"]] == [0, 1, 2, 3]
    assert (doc["policy"], doc["env"], doc["runtime"], doc["deterministic"]) == \
        (str(folder / "policy.onnx"), HIGHWAY, "onnxruntime", True)
    assert doc["sha256"] == hashlib.sha256((folder / "policy.onnx").read_bytes()).hexdigest()


def test_driving_figures_agree_with_the_episode_rows(highway_eval) -> None:
    _, doc, _ = highway_eval
    rows = doc["per_episode"]
    assert {r["outcome"] for r in rows} <= set(safety.OUTCOMES)
    assert doc["returns"] == [r["return"] for r in rows]
    assert doc["return_mean"] == pytest.approx(np.mean([r["return"] for r in rows]))
    assert doc["collision_rate"] == pytest.approx(np.mean([r["collisions"] > 0 for r in rows]))
    assert doc["collision_rate"] == pytest.approx(
        np.mean([r["outcome"] == safety.COLLISION for r in rows]))
    assert doc["offroad_rate"] == pytest.approx(np.mean(
        [any(i["kind"] == safety.OFF_ROAD for i in r["infractions"]) for r in rows]))
    assert doc["collisions_per_km"] == pytest.approx(
        sum(r["collisions"] for r in rows) / (sum(r["distance_m"] for r in rows) / 1000))
    for key, column in (("route_completion", "route_completion"),
                        ("driving_score", "driving_score"),
                        ("mean_speed_mps", "mean_speed_mps")):
        assert doc[key] == pytest.approx(np.mean([r[column] for r in rows])), key
    minima = [r["min_ttc_s"] for r in rows if r["min_ttc_s"] is not None]
    assert doc["min_ttc_p5_s"] == pytest.approx(np.percentile(minima, 5))
    assert doc["ttc_below_1_5s_pct"] == pytest.approx(
        100 * np.mean([r["ttc_below_frac"] for r in rows]))


def test_driving_eval_prints_each_figure_with_its_interval(highway_eval) -> None:
    folder, doc, out = highway_eval
    lines = out.splitlines()
    assert lines[0] == f"{folder / 'policy.onnx'} on {HIGHWAY} (onnxruntime, deterministic)"
    assert "{" not in out  # the summary, not the JSON
    for key, (spec, unit) in FIGURES.items():
        [line] = [x for x in lines if x.split()[0] == key]
        ci = doc[f"{key}_ci95"]
        interval = "(no interval)" if ci is None else f"[{ci[0]:{spec}}, {ci[1]:{spec}}]"
        assert line.split()[1] == format(doc[key], spec)
        assert f"  {interval}  " in line and line.endswith(unit)
    assert lines[-3:] == [f"wrote {folder / name}" for name in
                          ("eval.json", "eval_episodes.png", "eval_distributions.png")]


def test_driving_eval_plots_are_pngs_beside_the_json(highway_eval) -> None:
    folder, _, _ = highway_eval
    assert sorted(p.name for p in folder.iterdir()) == [
        "eval.json", "eval_distributions.png", "eval_episodes.png", "policy.json",
        "policy.onnx"]
    assert png_size(folder / "eval_episodes.png") == (800, 300)
    assert png_size(folder / "eval_distributions.png") == (1100, 350)


def test_compact_actor_run_folder_defaults_and_output_options(tmp_path: Path) -> None:
    run = tmp_path / "run"
    meta = {"env_id": HIGHWAY, "config": {"train": {"eval_episodes": 2, "eval_seed": 7}}}
    save_actor(run / "actor_compact.pt", constant_actor(contract.OBS_DIM, (0.0, 1.0)), meta)
    rc, out = run_eval(str(run), "--json", str(tmp_path / "out" / "other.json"),
                       "--plots", str(tmp_path / "figs"))
    assert rc == 0
    doc = strict_json(tmp_path / "out" / "other.json")
    assert (doc["runtime"], doc["policy"], doc["seeds"]) == \
        ("torch", str(run / "actor_compact.pt"), [7, 8])  # the run's eval_episodes / seed
    assert [r["seed"] for r in doc["per_episode"]] == [7, 8]
    assert sorted(p.name for p in run.iterdir()) == ["actor_compact.pt"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["other.json"]
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "other_distributions.png", "other_episodes.png"]
    assert out.splitlines()[-3] == f"wrote {tmp_path / 'out' / 'other.json'}"

    rc, out = run_eval(str(run), "--no-plots", "--episodes", "1")
    assert rc == 0
    assert sorted(p.name for p in run.iterdir()) == ["actor_compact.pt", "eval.json"]
    again = strict_json(run / "eval.json")
    assert again["episodes"] == 1 and again["seeds"] == [7, 7]
    assert again["per_episode"][0] == doc["per_episode"][0]  # deterministic: same seed, same
    assert again["return_mean_ci95"] is None  # no interval from one episode
    assert out.splitlines()[-1] == f"wrote {run / 'eval.json'}"


@pytest.fixture(scope="module")
def cartpole_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CartPole-v1 policy.onnx (random weights) whose config asks for 3 episodes from 10."""
    meta = {"env_id": "CartPole-v1", "config": {"train": {"eval_episodes": 3, "eval_seed": 10}}}
    model, _, _ = export_actor(constant_actor(4), meta,
                               tmp_path_factory.mktemp("cartpole") / "policy.onnx")
    return model


@pytest.fixture
def cartpole_onnx(cartpole_export: Path, tmp_path: Path) -> Path:
    """A fresh copy of cartpole_export (policy.onnx and its policy.json) in its own folder."""
    for name in ("policy.onnx", "policy.json"):
        shutil.copy(cartpole_export.parent / name, tmp_path / name)
    return tmp_path / "policy.onnx"


def test_cartpole_eval_has_no_safety_keys_and_one_plot(cartpole_onnx: Path) -> None:
    rc, out = run_eval(str(cartpole_onnx))
    assert rc == 0
    folder = cartpole_onnx.parent
    doc = strict_json(folder / "eval.json")
    assert set(doc) == {"episodes", "return_mean", *REST}
    assert doc["episodes"] == 3 and doc["seeds"] == [10, 12]
    assert [set(r) for r in doc["per_episode"]] == [{"seed", "return", "length", "terminated"}] * 3
    assert doc["return_mean"] == pytest.approx(np.mean([r["return"] for r in doc["per_episode"]]))
    assert doc["length_mean"] == doc["return_mean"]  # CartPole pays 1 per step
    assert sorted(p.name for p in folder.iterdir()) == [
        "eval.json", "eval_episodes.png", "policy.json", "policy.onnx"]
    assert png_size(folder / "eval_episodes.png") == (800, 300)
    assert out.splitlines()[2].split()[:2] == ["return_mean", f"{doc['return_mean']:.2f}"]
    assert "collision_rate" not in out


def test_onnx_eval_needs_no_torch(cartpole_onnx: Path) -> None:
    proc = run_with_blocked(f"""
from dsp_driving import cli
rc = cli.main(["eval", {str(cartpole_onnx)!r}, "--episodes", "2"])
sys.exit(rc or 10 * any(m.split(".")[0] == "torch" for m in sys.modules))
""", ("torch",))
    assert proc.returncode == 0, proc.stderr
    assert strict_json(cartpole_onnx.parent / "eval.json")["runtime"] == "onnxruntime"
    assert proc.stdout.splitlines()[-1] == f"wrote {cartpole_onnx.parent / 'eval_episodes.png'}"


def test_bad_arguments_name_the_field_and_write_nothing(cartpole_onnx: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    folder = cartpole_onnx.parent
    (folder / "afile").write_text("x")
    before = sorted(p.name for p in folder.iterdir())
    cases = [
        (["--episodes", "0"], "--episodes=0: must be >= 1"),
        (["--seed", "-1"], "--seed=-1: must be >= 0"),
        (["--json", str(folder)], f"--json={str(folder)!r}: is a folder"),
        (["--json", str(folder / "afile" / "x.json")], f"{folder / 'afile'} is a file"),
        (["--plots", str(folder / "afile")], f"--plots={str(folder / 'afile')!r}: is a file"),
    ]
    for args, message in cases:
        rc, _ = run_eval(str(cartpole_onnx), *args)
        assert rc == 2, args
        assert message in capsys.readouterr().err, args
    rc, _ = run_eval(str(folder / "missing.onnx"))
    assert rc == 2
    assert f"cannot read policy file {folder / 'missing.onnx'}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        run_eval(str(cartpole_onnx), "--plots", str(folder), "--no-plots")
    assert exit_info.value.code == 2
    assert "argument --no-plots: not allowed with argument --plots" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == before


def test_without_matplotlib_the_json_is_still_written(cartpole_onnx: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    rc, out = run_eval(str(cartpole_onnx), "--episodes", "1")
    assert rc == 0
    assert out.splitlines()[0] == \
        "plots skipped: matplotlib is not installed (pip install matplotlib)"
    assert sorted(p.name for p in cartpole_onnx.parent.iterdir()) == [
        "eval.json", "policy.json", "policy.onnx"]


def test_report_functions_on_a_document_and_undefined_figures(highway_eval,
                                                              tmp_path: Path) -> None:
    _, doc, _ = highway_eval
    # from eval.json alone (no per-step series): the episodes figure only
    assert plot_eval(doc, None, tmp_path, "doc") == [tmp_path / "doc_episodes.png"]
    no_ttc = [{"speed_mps": np.array([10.0, 11.0]), "ttc_s": np.zeros(0),
               "headway_s": np.zeros(0)}]
    paths = plot_eval(doc, no_ttc, tmp_path, "no_ttc")
    assert [png_size(p) for p in paths] == [(800, 300), (1100, 350)]
    undefined = {**doc, "min_ttc_p5_s": None, "min_ttc_p5_s_ci95": None}
    [line] = [x for x in summary_lines(undefined) if x.startswith("min_ttc_p5_s")]
    assert line.split()[1] == "n/a" and "  (no interval)  " in line
    with pytest.raises(ValueError, match="no per-episode rows"):
        plot_eval({"episodes": 1}, None, tmp_path, "bad")
