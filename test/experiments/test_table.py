"""`dsp-driving table`: its statistics checked by hand on synthetic sweep folders."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from dsp_driving import cli
from dsp_driving.experiments.table import (
    COLUMNS,
    actor_sizes,
    interval_stats,
    write_table,
)


def test_interval_stats_by_hand() -> None:
    st = interval_stats([1.0, 2.0, 3.0, 4.0, 100.0])
    assert st["mean"] == 22.0
    assert st["std"] == pytest.approx(math.sqrt(sum((v - 22) ** 2 for v in
                                                    (1, 2, 3, 4, 100)) / 4))
    assert st["iqm"] == 3.0  # 25 % trimmed: drop 1 and 100
    # the bootstrap CI of the mean lies inside [min, max] and around the mean; fixed RNG
    assert 1.0 <= st["ci_low"] < 22.0 < st["ci_high"] <= 100.0
    assert interval_stats([1.0, 2.0, 3.0, 4.0, 100.0]) == st
    same = interval_stats([500.0, 500.0, 500.0])
    assert (same["std"], same["ci_low"], same["ci_high"]) == (0.0, 500.0, 500.0)
    one = interval_stats([7.0])
    assert one["mean"] == one["iqm"] == 7.0 and one["std"] == 0.0
    assert math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])


def test_actor_sizes_against_the_dense_actor() -> None:
    # 4 -> [10, 10] -> 2: 50 + 110 + 22 = 182 weights; 4 -> [2, 3] -> 2: 10 + 9 + 8 = 27
    sizes = actor_sizes(4, 2, [10, 10], [2, 3])
    assert sizes["compact_weights"] == 27
    assert sizes["neurons_removed_pct"] == pytest.approx(75.0)
    assert sizes["weights_removed_pct"] == pytest.approx(100 * (1 - 27 / 182))
    assert sizes["macs"] == 8 + 6 + 6


def _sweep(root: Path, returns: dict[str, list[float]], compact: dict[str, list[int]]
           ) -> None:
    env = root / "cartpole"
    env.mkdir(parents=True)
    (env / "sweep.yaml").write_text(yaml.safe_dump(
        {"env": "CartPole-v1", "config": {"net": {"actor_hidden": [10, 10]}}}))
    for variant, values in returns.items():
        for seed, value in enumerate(values, 1):
            run = env / variant / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "summary.json").write_text(json.dumps(
                {"env": "CartPole-v1", "actor": {"hidden_compact": compact[variant]}}))
            (run / "eval.json").write_text(json.dumps({"return_mean": value}))
            (run / "policy.json").write_text(json.dumps(
                {"dsp_driving": {"obs_dim": 4, "act_dim": 2}}))
            (run / "config.yaml").write_text("{}\n")
            (run / "checkpoint.pt").write_bytes(b"not copied")
            if variant == "dsp":
                (run / "policy.onnx").write_bytes(b"onnx")
    (env / "dsp" / "seed9").mkdir()  # an unfinished trial: not in the table


def test_write_table_on_a_synthetic_sweep(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    root, dest = tmp_path / "sweep", tmp_path / "results"
    _sweep(root, {"dense": [400.0, 500.0, 450.0], "dsp": [450.0, 300.0]},
           {"dense": [10, 10], "dsp": [2, 3]})
    assert cli.main(["table", str(root), "--results", str(dest)]) == 0
    rows = list(csv.DictReader((root / "table.csv").open()))
    assert tuple(rows[0]) == COLUMNS
    dense, dsp = rows
    assert (dense["variant"], dense["seeds"], dsp["variant"], dsp["seeds"]) == (
        "dense", "3", "dsp", "2")
    assert float(dense["return_mean"]) == 450.0
    assert float(dense["return_std"]) == pytest.approx(50.0)
    assert float(dense["return_pct_of_dense"]) == 100.0
    assert float(dsp["return_mean"]) == 375.0
    assert float(dsp["return_iqm"]) == 375.0
    assert float(dsp["return_pct_of_dense"]) == pytest.approx(100 * 375 / 450)
    assert float(dsp["neurons_removed_pct"]) == pytest.approx(75.0)
    assert float(dsp["weights_removed_pct"]) == pytest.approx(100 * (1 - 27 / 182))
    assert float(dsp["macs"]) == 20.0 and float(dense["macs"]) == 160.0
    assert 300.0 <= float(dsp["return_ci_low"]) < 375.0 < float(dsp["return_ci_high"]) \
        <= 450.0
    assert "| cartpole | dsp | 2 |" in capsys.readouterr().out
    for target in (root, dest):
        assert (target / "table.png").read_bytes()[:4] == b"\x89PNG"
        assert (target / "table.md").read_text().count("| cartpole |") == 2 + 5
    copied = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert "cartpole/dsp/seed1/policy.onnx" in copied
    assert "cartpole/dense/seed1/policy.onnx" not in copied
    assert not [p for p in copied if p.endswith("checkpoint.pt")]
    assert "cartpole/dense/seed3/eval.json" in copied and "cartpole/sweep.yaml" in copied
    # the same rows from the env folder itself
    assert write_table(root / "cartpole")[1]["return_mean"] == 375.0
    np.testing.assert_allclose(float(rows[1]["return_std"]), np.std([450, 300], ddof=1))


def test_table_errors_name_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    assert cli.main(["table", str(tmp_path)]) == 2
    assert f"{tmp_path}: no sweep here" in capsys.readouterr().err


def test_pct_of_dense_pairs_seeds_and_refuses_a_non_positive_dense() -> None:
    from dsp_driving.experiments.table import pct_of_dense

    group = [{"seed": 1, "return": 90.0}, {"seed": 2, "return": 50.0}]
    # paired: dense's seeds 1 and 2 only (seed 5 has no partner)
    assert pct_of_dense(group, {1: 100.0, 2: 100.0, 5: 400.0}) == pytest.approx(70.0)
    assert pct_of_dense(group, {7: 200.0}) == pytest.approx(35.0)  # none shared: all
    assert math.isnan(pct_of_dense(group, {}))
    assert math.isnan(pct_of_dense(group, {1: -20.0, 2: 10.0}))
