"""Config: defaults, validation messages, --set parsing and the two YAML forms."""

from __future__ import annotations

import dataclasses
from pathlib import Path
import typing
import warnings

import pytest
import yaml

from dsp_driving.config import (
    Config,
    NetConfig,
    PPOConfig,
    PruningConfig,
    TrainConfig,
    default_config_path,
    from_dict,
    from_saved_run,
    load_config,
    parse_overrides,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PPOConfig(gamma=1.5), "ppo.gamma=1.5"),
        (lambda: PPOConfig(num_steps=0), "ppo.num_steps=0"),
        (lambda: PPOConfig(ent_coef=-0.1), "ppo.ent_coef=-0.1"),
        (lambda: PruningConfig(mode="foo"), "pruning.mode='foo'"),
        (lambda: PruningConfig(regulariser="l1"), "pruning.regulariser='l1'"),
        (lambda: PruningConfig(lambda_units="epoch"), "pruning.lambda_units='epoch'"),
        (lambda: PruningConfig(t_start=0.5, t_end=0.5), "pruning.t_end=0.5"),
        (lambda: PruningConfig(t_start=0.6, t_end=0.2), "pruning.t_end=0.2"),
        (lambda: PruningConfig(c_min=1.0, c_max=0.5), "pruning.c_max=0.5"),
        (lambda: PruningConfig(ratio_final=1.0), "pruning.ratio_final=1.0"),
        (lambda: PruningConfig(max_prune_frac=0.0), "pruning.max_prune_frac=0.0"),
        (lambda: NetConfig(actor_hidden=()), "net.actor_hidden=()"),
        (lambda: NetConfig(critic_hidden=(4, 0)), "net.critic_hidden=(4, 0)"),
        (lambda: NetConfig(activation="gelu"), "net.activation='gelu'"),
        (lambda: NetConfig(init_log_std=float("nan")), "net.init_log_std=nan"),
        (lambda: TrainConfig(vector_mode="threads"), "train.vector_mode='threads'"),
        (lambda: TrainConfig(total_steps=-5), "train.total_steps=-5"),
        (lambda: TrainConfig(env_id=""), "train.env_id=''"),
        (lambda: TrainConfig(export_every=-1), "train.export_every=-1"),
    ],
)
def test_invalid_values_name_field_and_value(make, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_unknown_field_and_section() -> None:
    with pytest.raises(ValueError, match=r"unknown field ppo\.gama"):
        from_dict({"ppo": {"gama": 0.9}})
    with pytest.raises(ValueError, match="unknown section 'optim'"):
        from_dict({"optim": {"lr": 1.0}})
    with pytest.raises(ValueError, match="ppo=3: expected a mapping"):
        from_dict({"ppo": 3})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.total_steps=abc", "train.total_steps='abc': expected int"),
        ("train.total_steps=1.5", "train.total_steps=1.5: expected int"),
        ("train.progress=maybe", "train.progress='maybe': expected bool"),
        ("train.progress=2", "train.progress=2: expected bool"),
        ("ppo.gamma=abc", "ppo.gamma='abc': expected float"),
        ("train.env_id=3", "train.env_id=3: expected str"),
        ("net.actor_hidden=[a, b]", r"net.actor_hidden=\['a', 'b'\]: expected tuple"),
        ("ppo.gamma=1.5", "ppo.gamma=1.5"),
        ("pruning.mode=foo", "pruning.mode='foo'"),
    ],
)
def test_bad_overrides_raise_value_error(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_parse_overrides() -> None:
    parsed = parse_overrides(["pruning.lambda_actor=2.5e-4", "net.actor_hidden=[32, 16]",
                              "train.env_id=Pendulum-v1", "train.progress=false",
                              "ppo.num_steps=64"])
    assert parsed == {"pruning": {"lambda_actor": 2.5e-4},
                      "net": {"actor_hidden": [32, 16]},
                      "train": {"env_id": "Pendulum-v1", "progress": False},
                      "ppo": {"num_steps": 64}}
    for bad in ("pruning", "pruning=3", "lambda_actor=3", "pruning.=3"):
        with pytest.raises(ValueError, match="expected section.field=value"):
            parse_overrides([bad])


def test_load_config_applies_overrides_with_coercion() -> None:
    cfg = load_config(None, ["pruning.lambda_actor=2e-4", "net.actor_hidden=[32, 16]",
                             "net.critic_hidden=8", "train.total_steps=4096.0",
                             "train.progress=off", "ppo.anneal_lr=0", "ppo.gamma=1"])
    assert cfg.pruning.lambda_actor == 2e-4 and isinstance(cfg.pruning.lambda_actor, float)
    assert cfg.net.actor_hidden == (32, 16)
    assert cfg.net.critic_hidden == (8,)
    assert cfg.train.total_steps == 4096 and isinstance(cfg.train.total_steps, int)
    assert cfg.train.progress is False
    assert cfg.ppo.anneal_lr is False
    assert cfg.ppo.gamma == 1.0 and isinstance(cfg.ppo.gamma, float)
    # Untouched fields keep their defaults.
    assert cfg.pruning.lambda_critic == PruningConfig().lambda_critic


def test_ros_params_form_and_plain_form_load_the_same(tmp_path: Path) -> None:
    fields = {"ppo": {"gamma": 0.95, "num_steps": 64},
              "pruning": {"mode": "ratio", "ratio_final": 0.8},
              "train": {"env_id": "Pendulum-v1"}}
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(fields))
    ros = tmp_path / "ros.yaml"
    ros.write_text(yaml.safe_dump({"trainer_node": {"ros__parameters": fields}}))
    a, b = load_config(plain), load_config(ros)
    assert a == b
    assert (a.ppo.gamma, a.ppo.num_steps, a.pruning.mode, a.pruning.ratio_final,
            a.train.env_id) == (0.95, 64, "ratio", 0.8, "Pendulum-v1")
    # Overrides win over the file.
    c = load_config(ros, ["ppo.gamma=0.9"])
    assert c.ppo.gamma == 0.9 and c.ppo.num_steps == 64


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a mapping at top level"):
        load_config(listy)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == Config()


def test_repo_train_yaml_loads_and_matches_the_defaults() -> None:
    path = REPO / "config" / "train.yaml"
    cfg = load_config(path)
    assert cfg.net.actor_hidden == (256, 256)
    # the one recipe
    assert (cfg.pruning.lambda_units, cfg.pruning.lambda_actor) == ("dose", 1e-4)
    assert cfg.pruning.mode == "hybrid"
    assert (cfg.pruning.kappa_final, cfg.pruning.t_start, cfg.pruning.t_end,
            cfg.pruning.ratio_final) == (0.5, 0.1, 0.6, 0.94)
    assert (cfg.pruning.prune_critic, cfg.pruning.regularise_after_ramp) == (False, False)
    assert cfg.pruning.regulariser == "importance_weighted"
    assert cfg.train.env_id == "CartPole-v1"
    assert cfg.train.eval_seed == 1_000_000
    assert cfg == Config()  # the YAML mirrors every default in config.py
    assert default_config_path() == path


def test_derived_sizes_round_trip_and_frozen() -> None:
    cfg = from_dict({"ppo": {"num_steps": 100, "num_minibatches": 4},
                     "train": {"num_envs": 3, "total_steps": 1000}})
    assert (cfg.batch_size, cfg.minibatch_size, cfg.num_updates) == (300, 75, 4)
    data = cfg.to_dict()
    assert data["net"]["actor_hidden"] == [256, 256]
    assert from_dict(data) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.ppo.gamma = 0.5  # type: ignore[misc]


def test_pruning_choices_are_literals_with_distinct_names() -> None:
    hints = typing.get_type_hints(PruningConfig)
    assert typing.get_args(hints["mode"]) == ("hybrid", "dynamic", "ratio")
    assert typing.get_args(hints["lambda_units"]) == ("dose", "step")
    assert typing.get_args(hints["regulariser"]) == ("importance_weighted", "group_lasso")
    assert typing.get_args(hints["group_size"]) == ("alive", "dense")
    assert (PruningConfig().mode, PruningConfig().regulariser) == ("hybrid",
                                                                   "importance_weighted")
    assert PruningConfig().lambda_units == "dose"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new names load without a warning
        cfg = load_config(None, ["pruning.mode=ratio", "pruning.regulariser=group_lasso"])
    assert (cfg.pruning.mode, cfg.pruning.regulariser) == ("ratio", "group_lasso")


@pytest.mark.parametrize(("field", "new"), [("mode", "dynamic"),
                                            ("regulariser", "importance_weighted")])
def test_old_adaptive_names_load_with_a_deprecation_warning(field: str, new: str) -> None:
    with pytest.warns(FutureWarning, match=f"pruning.{field}='adaptive'.*{new}"):
        cfg = load_config(None, [f"pruning.{field}=adaptive"])
    assert getattr(cfg.pruning, field) == new
    with pytest.warns(FutureWarning):
        direct = PruningConfig(**{field: "adaptive"})
    assert direct == PruningConfig(**{field: new})


def test_an_old_run_folders_config_yaml_still_loads(tmp_path: Path) -> None:
    old = Config().to_dict()
    old["pruning"].update(mode="adaptive", regulariser="adaptive")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old, sort_keys=False))
    with pytest.warns(FutureWarning) as record:
        cfg = load_config(path)
    assert len(record) == 2
    # "adaptive" was the dynamic mode, not today's default (hybrid)
    assert cfg == dataclasses.replace(Config(), pruning=PruningConfig(mode="dynamic"))
    # saved again (a resume rewrites config.yaml), it carries the new names
    assert (cfg.to_dict()["pruning"]["mode"], cfg.to_dict()["pruning"]["regulariser"]) == (
        "dynamic", "importance_weighted")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert from_dict(cfg.to_dict()) == cfg


def _saved_run(pruning: dict | None) -> dict:
    """A complete saved run config (every field written out), its pruning section replaced."""
    data = Config().to_dict()
    if pruning is None:
        del data["pruning"]
    else:
        data["pruning"] = pruning
    return data


def test_a_saved_run_from_before_lambda_units_loads_with_the_old_meaning() -> None:
    # the pruning section a run saved before lambda_units existed: every field written out
    old = Config().to_dict()["pruning"]
    del old["lambda_units"], old["regularise_after_ramp"]
    old.update(lambda_actor=3e-4, lambda_critic=3e-4, mode="dynamic", kappa_final=0.8,
               t_start=0.05, t_end=0.5, ratio_final=0.9, prune_critic=True)
    cfg = from_saved_run(_saved_run(old))
    assert (cfg.pruning.lambda_units, cfg.pruning.regularise_after_ramp) == ("step", True)
    assert cfg.pruning == PruningConfig(**old, lambda_units="step", regularise_after_ramp=True)
    assert (cfg.net, cfg.ppo, cfg.train) == (Config().net, Config().ppo, Config().train)
    # the same dict through from_dict takes today's defaults instead
    assert from_dict(_saved_run(old)).pruning.lambda_units == "dose"
    # in the ROS 2 parameter-file form too
    wrapped = {"trainer_node": {"ros__parameters": _saved_run(old)}}
    assert from_saved_run(wrapped).pruning.lambda_units == "step"
    # field by field: a run saved with only regularise_after_ramp keeps it
    partial = dict(old, regularise_after_ramp=False)
    cfg = from_saved_run(_saved_run(partial))
    assert (cfg.pruning.lambda_units, cfg.pruning.regularise_after_ramp) == ("step", False)


def test_a_saved_run_with_lambda_units_keeps_them() -> None:
    for units, after in (("dose", False), ("step", False), ("dose", True)):
        section = dict(Config().to_dict()["pruning"], lambda_units=units,
                       regularise_after_ramp=after)
        cfg = from_saved_run(_saved_run(section))
        assert (cfg.pruning.lambda_units, cfg.pruning.regularise_after_ramp) == (units, after)
    assert from_saved_run(Config().to_dict()) == Config()


def test_a_saved_run_without_a_pruning_section_gets_todays_defaults() -> None:
    assert from_saved_run(_saved_run(None)) == Config()
    assert from_saved_run(_saved_run({})) == Config()
    assert from_saved_run({"train": {"total_steps": 4096}}).pruning == PruningConfig()


def test_a_saved_run_from_before_compensation_and_the_guard_loads_without_them() -> None:
    # runs saved before pruning.compensate and pruning.guard existed cut without
    # compensation and never held the ramp, whatever today's defaults are
    old = Config().to_dict()["pruning"]
    del old["compensate"], old["guard"]
    cfg = from_saved_run(_saved_run(old))
    assert (cfg.pruning.compensate, cfg.pruning.guard) == ("none", 0.0)
    section = dict(Config().to_dict()["pruning"], compensate="lstsq", guard=0.9)
    cfg = from_saved_run(_saved_run(section))
    assert (cfg.pruning.compensate, cfg.pruning.guard) == ("lstsq", 0.9)
