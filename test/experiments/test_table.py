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
from dsp_driving.experiments.publish import write_table
from dsp_driving.experiments.table import COLUMNS, actor_sizes, interval_stats


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


def _sweep(root: Path, returns: dict[str, list[float] | dict[int, float]],
           compact: dict[str, list[int]], env: str = "cartpole", env_id: str = "CartPole-v1",
           dense: tuple[int, ...] = (10, 10), policies: bool = True) -> None:
    """A synthetic env folder root/<env>: per variant its returns (a list: seeds 1, 2, ...;
    a dict: seed -> return) and its actor's compact hidden sizes (obs 4, act 2);
    ``policies=False``: no policy.json, as trials copied back from results/."""
    env_dir = root / env
    env_dir.mkdir(parents=True)
    (env_dir / "sweep.yaml").write_text(yaml.safe_dump(
        {"env": env_id, "config": {"net": {"actor_hidden": list(dense)}}}))
    for variant, values in returns.items():
        by_seed = values if isinstance(values, dict) else dict(enumerate(values, 1))
        for seed, value in by_seed.items():
            run = env_dir / variant / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "summary.json").write_text(json.dumps(
                {"env": env_id, "actor": {"hidden_compact": compact[variant]}}))
            (run / "eval.json").write_text(json.dumps({"return_mean": value}))
            if policies:
                (run / "policy.json").write_text(json.dumps(
                    {"dsp_driving": {"obs_dim": 4, "act_dim": 2}}))
            (run / "config.yaml").write_text("{}\n")
            (run / "checkpoint.pt").write_bytes(b"not copied")
            (run / "policy.onnx").write_bytes(b"onnx")
    (env_dir / "dsp" / "seed9").mkdir(parents=True)  # an unfinished trial: not in the table


def test_the_policies_of_the_method_and_its_refit_ablation_are_committed(
        tmp_path: Path) -> None:
    root, dest = tmp_path / "sweep", tmp_path / "results"
    _sweep(root, {"dense": [400.0], "dsp": [390.0], "dsp_norefit": [350.0],
                  "group_lasso": [380.0]},
           {"dense": [10, 10], "dsp": [2, 3], "dsp_norefit": [2, 3], "group_lasso": [2, 3]})
    assert cli.main(["table", str(root), "--results", str(dest)]) == 0
    onnx = sorted(str(p.relative_to(dest)) for p in dest.rglob("policy.onnx"))
    assert onnx == ["cartpole/dsp/seed1/policy.onnx", "cartpole/dsp_norefit/seed1/policy.onnx"]
    assert (dest / "cartpole/dsp_norefit/seed1/policy.json").is_file()
    assert (dest / "cartpole/group_lasso/seed1/eval.json").is_file()


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


def test_trials_copied_back_from_results_without_their_policy_are_in_the_table(
        tmp_path: Path) -> None:
    from dsp_driving.experiments.table import read_trials

    # no policy.json anywhere: the dims come from the env's spaces (CartPole: 4 -> 2)
    _sweep(tmp_path, {"dense": [400.0, 420.0], "dsp": [390.0]},
           {"dense": [10, 10], "dsp": [2, 3]}, policies=False)
    trials = read_trials(tmp_path / "cartpole")
    assert [(t["variant"], t["seed"]) for t in trials] == [("dense", 1), ("dense", 2),
                                                          ("dsp", 1)]
    assert trials[2]["actor"] == actor_sizes(4, 2, [10, 10], [2, 3])
    # a policy.json of the folder wins (its dims are the trained actor's)
    (tmp_path / "cartpole" / "dsp" / "seed1" / "policy.json").write_text(json.dumps(
        {"dsp_driving": {"obs_dim": 6, "act_dim": 3}}))
    assert read_trials(tmp_path / "cartpole")[0]["actor"]["compact_weights"] == \
        actor_sizes(6, 3, [10, 10], [10, 10])["compact_weights"]


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


def _goals(root: Path, env: str) -> list[str]:
    from dsp_driving.experiments.table import goal_lines, read_trials, table_rows

    trials = read_trials(root / env)
    return goal_lines(env, table_rows(trials), trials)


def test_goals_met_and_missed_with_their_margins(tmp_path: Path) -> None:
    # dense actor 4 -> [16, 16] -> 2: 32 neurons, 80 + 272 + 34 = 386 weights; dsp keeps
    # [1, 1]: 2 neurons (93.75 % removed), 5 + 2 + 4 = 11 weights (97.15 % removed)
    _sweep(tmp_path, {"dense": [100.0, 100.0, 100.0, 100.0], "dsp": [90.0, 90.0],
                      # seed 2 beside dsp's: 80 (below dsp's 90); unpaired, its mean
                      # (540) would be above
                      "small_dense": {2: 80.0, 3: 1000.0}},
           {"dense": [16, 16], "dsp": [1, 1], "small_dense": [1, 1]}, dense=(16, 16))
    head, blank, neurons, weights, ret, small, posthoc = _goals(tmp_path, "cartpole")
    assert head == "**cartpole**: dsp met 3 of 4 goals, 1 skipped." and blank == ""
    assert neurons.startswith("- neurons removed 93.75 % (mean of 2 seeds, lowest seed "
                              "93.75 %; goal >= 93 %)")
    assert neurons.endswith(": met by 0.75 points")
    kept = 100 * 11 / 386
    assert weights.startswith(f"- weights removed {100 - kept:.2f} %, i.e. {kept:.2f} % of "
                              "the dense actor's weights kept")
    assert weights.endswith(f": met by {4 - kept:.2f} points")
    # paired on dsp's seeds 1-2 (dense's 3 and 4 have no partner)
    assert ret == ("- return 90.00 % of dense on seeds 1,2 (goal >= 95 %): missed by 5.00 "
                   "points")
    assert small == ("- mean return above small_dense's on seeds 2: dsp 90.00, small_dense "
                     "80.00: met by 10.00")
    assert posthoc == "- mean return above posthoc's: skipped (no posthoc run in the table)"


def test_goals_missed_sizes_equal_returns_and_missing_variants(tmp_path: Path) -> None:
    _sweep(tmp_path, {"dense": [200.0, 100.0], "dsp": [200.0, 100.0],
                      "posthoc": [250.0, 50.0], "small_dense": {3: 10.0}},
           {"dense": [16, 16], "dsp": [8, 8], "posthoc": [8, 8], "small_dense": [8, 8]},
           dense=(16, 16))
    lines = _goals(tmp_path, "cartpole")
    assert lines[0] == "**cartpole**: dsp met 1 of 4 goals, 1 skipped."
    assert lines[2].endswith("goal >= 93 %): missed by 43.00 points")  # 50 % removed
    assert lines[4].endswith("(goal >= 95 %): met by 5.00 points")  # 100 % of dense
    assert lines[5] == ("- mean return above small_dense's: skipped (no seed that both dsp "
                        "and small_dense have)")
    assert lines[6] == ("- mean return above posthoc's on seeds 1,2: dsp 150.00, posthoc "
                        "150.00: missed (equal means)")
    _sweep(tmp_path, {"dense": [1.0]}, {"dense": [16, 16]}, env="hopper", env_id="Hopper-v5")
    assert _goals(tmp_path, "hopper") == [
        "**hopper**: goals not judged: no dsp run in the table."]
    _sweep(tmp_path, {"dsp": [1.0]}, {"dsp": [1, 1]}, env="walker2d", env_id="Walker2d-v5")
    assert _goals(tmp_path, "walker2d") == [
        "**walker2d**: goals not judged: no dense run in the table."]


def test_a_folder_of_env_folders_gets_per_env_tables_and_a_readme(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dsp_driving.experiments.publish import README
    from dsp_driving.experiments.table import read_trials, rows_markdown, table_rows

    root, dest = tmp_path / "paper runs", tmp_path / "results"
    five, three = [500.0, 480.0, 490.0, 470.0, 460.0], [300.0, 310.0, 320.0]
    _sweep(root, {"dense": five, "dsp": five, "group_lasso": three, "small_dense": three,
                  "posthoc": three, "dsp_fixed": three},
           {"dense": [10, 10], "dsp": [1, 0], "group_lasso": [2, 2], "small_dense": [1, 0],
            "posthoc": [1, 0], "dsp_fixed": [3, 3]})
    _sweep(root, {"dense": [200.0, 220.0], "dsp": [200.0, 200.0]},
           {"dense": [10, 10], "dsp": [2, 3]}, env="lunarlander", env_id="LunarLander-v3")
    assert cli.main(["table", str(root), "--results", str(dest)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {dest / README}" in out
    assert f"into {root / 'cartpole'}, {root / 'lunarlander'}" in out
    assert f"into {dest / 'cartpole'}, {dest / 'lunarlander'}" in out
    combined = list(csv.DictReader((root / "table.csv").open()))
    assert [r["env"] for r in combined] == ["cartpole"] * 6 + ["lunarlander"] * 2
    for target in (root, dest):
        for env, variants in (("cartpole", ["dense", "dsp", "group_lasso", "small_dense",
                                            "posthoc", "dsp_fixed"]),
                              ("lunarlander", ["dense", "dsp"])):
            rows = list(csv.DictReader((target / env / "table.csv").open()))
            assert tuple(rows[0]) == COLUMNS
            assert [(r["env"], r["variant"]) for r in rows] == [(env, v) for v in variants]
            assert rows == [r for r in combined if r["env"] == env]  # the same numbers
            md = (target / env / "table.md").read_text()
            assert f"**{env}**: dsp met" in md and "## Goals" in md
            other = "lunarlander" if env == "cartpole" else "cartpole"
            assert f"| {other} |" not in md and f"**{other}**" not in md
            assert (target / env / "table.png").read_bytes()[:4] == b"\x89PNG"
        md = (target / "table.md").read_text()
        assert "**cartpole**: dsp met" in md and "**lunarlander**: dsp met" in md
    assert not (root / README).exists()  # the README is the results folder's
    readme = (dest / README).read_text()
    assert readme.startswith("# Results: cartpole, lunarlander\n")
    assert "Return: each seed's policy.onnx" in readme
    assert rows_markdown(table_rows(read_trials(root / "cartpole")
                                    + read_trials(root / "lunarlander"))) in readme
    assert "**lunarlander**: dsp met" in readme
    assert "return 95.24 % of dense on seeds 1,2" in readme  # 190 / 210
    assert "`config/paper/sweeps/<env>.yaml`" in readme and "resumes" in readme
    quoted = f"'{root}'"  # the root as given, quoted for the shell (it has a space)
    cartpole = readme[readme.index("### cartpole"):readme.index("### lunarlander")]
    assert [line for line in cartpole.splitlines() if line.startswith("dsp-driving")] == [
        "dsp-driving sweep config/paper/sweeps/cartpole.yaml --variants dense,dsp --seeds "
        f"1,2,3,4,5 --out {quoted}",
        "dsp-driving sweep config/paper/sweeps/cartpole.yaml --variants group_lasso,"
        f"small_dense,posthoc,dsp_fixed --seeds 1,2,3 --out {quoted}"]
    assert ("dsp-driving sweep config/paper/sweeps/lunarlander.yaml --variants dense,dsp "
            f"--seeds 1,2 --out {quoted}") in readme
    assert f"dsp-driving table {quoted} --results {dest}\n" in readme
    assert readme.index("### lunarlander") < readme.index("dsp-driving table")


def test_one_env_folder_is_unchanged_no_readme_no_per_env_folder(tmp_path: Path) -> None:
    root, dest = tmp_path / "sweep", tmp_path / "results"
    _sweep(root, {"dense": [400.0, 500.0], "dsp": [450.0, 300.0]},
           {"dense": [10, 10], "dsp": [2, 3]})
    write_table(root / "cartpole", dest)
    assert sorted(p.name for p in dest.iterdir()) == [
        "dense", "dsp", "sweep.yaml", "table.csv", "table.md", "table.png"]
    assert sorted(p.name for p in (root / "cartpole").iterdir()) == [
        "dense", "dsp", "sweep.yaml", "table.csv", "table.md", "table.png"]
    assert list(csv.DictReader((dest / "table.csv").open()))[0].keys() == set(COLUMNS)
    assert "**cartpole**: dsp met" in (dest / "table.md").read_text()


def test_sweep_commands_order_needs_and_check_the_spec(tmp_path: Path) -> None:
    from dsp_driving.experiments.publish import sweep_commands

    def trials(spec: dict[str, list[int]]) -> list[dict[str, object]]:
        return [{"env": "hopper", "variant": v, "seed": s} for v, seeds in spec.items()
                for s in seeds]

    root = tmp_path / "runs"
    _sweep(root, {"dense": [1.0]}, {"dense": [10, 10]}, env="hopper", env_id="Hopper-v5")
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "hopper.yaml").write_text(yaml.safe_dump({"env": "Walker2d-v5"}))
    # small_dense needs dsp (in the second group), posthoc needs dense (in the first): the
    # first group's dense runs first, alone
    commands, notes = sweep_commands(
        root, "hopper", trials({"dense": [1, 2, 3], "small_dense": [1, 2, 3],
                                "dsp": [1, 2, 3, 4, 5], "posthoc": [1, 2, 3, 4, 5]}),
        str(specs / "{env}.yaml"))
    spec = specs / "hopper.yaml"
    assert commands == [
        f"dsp-driving sweep {spec} --variants dense --seeds 1,2,3 --out {root}",
        f"dsp-driving sweep {spec} --variants dsp,posthoc --seeds 1,2,3,4,5 --out {root}",
        f"dsp-driving sweep {spec} --variants small_dense --seeds 1,2,3 --out {root}"]
    assert notes == [
        "posthoc of seeds 4,5 needs the dense run of the same seed, which is not in the "
        "table: add dense to its command",
        f"{spec} gives env='Walker2d-v5' but {root / 'hopper' / 'sweep.yaml'} was made with "
        "'Hopper-v5': the command would not remake these rows"]
    _, notes = sweep_commands(root, "hopper", trials({"dense": [1]}),
                              str(tmp_path / "nowhere" / "{env}.yaml"))
    assert notes == [f"{tmp_path / 'nowhere' / 'hopper.yaml'}: no such file here (write "
                     "one, or give the env with --env)"]


def test_compute_section_sums_the_trials_training_wall_time() -> None:
    from dsp_driving.experiments.table import compute_markdown

    trials = [{"env": "hopper", "variant": "dense", "wall_s": 1800.0},
              {"env": "hopper", "variant": "dense", "wall_s": 2400.0},
              {"env": "hopper", "variant": "dsp", "wall_s": 3600.0},
              {"env": "hopper", "variant": "posthoc", "wall_s": math.nan},  # no wall_s
              {"env": "cartpole", "variant": "dsp", "wall_s": 180.0}]
    lines = compute_markdown(trials).splitlines()
    assert "| hopper | dense | 2 | 35.0 | 1.17 |" in lines
    assert "| hopper | dsp | 1 | 60.0 | 1.00 |" in lines
    assert "| hopper | all | 3 | | **2.17** |" in lines
    assert "| cartpole | all | 1 | | **0.05** |" in lines
    assert "fine-tuning only (10 % of the budget)" in lines[2]
    assert not [line for line in lines if "posthoc" in line and line.startswith("|")]
