"""The sweep's variants: each overlay, the runs they need, and posthoc's warm start."""

from __future__ import annotations

from collections.abc import Callable
import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dsp_driving.config import Config, PruningConfig, from_dict
from dsp_driving.experiments.variants import (
    VARIANTS,
    check_variants,
    posthoc_steps,
    variant_config,
)
from dsp_driving.pruning.oneshot import prune_to_sizes
from dsp_driving.rl.envs import make_vec_env
from dsp_driving.rl.ppo import PPO
from dsp_driving.trainer import Runner


def _finished(run: Path, actor: list[int], critic: list[int]) -> Path:
    """A run folder whose summary.json says it ended with these sizes."""
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({
        "actor": {"hidden_compact": actor}, "critic": {"hidden_compact": critic}}))
    return run


def test_the_fixed_overlays() -> None:
    base = Config()
    assert variant_config("dense", base, 3, 5000).pruning.enabled is False
    dsp = variant_config("dsp", from_dict({"pruning": {"enabled": False}}), 3, 5000)
    assert dsp.pruning.enabled is True and dsp.train.seed == 3
    assert dsp.train.total_steps == 5000
    assert dsp.pruning == base.pruning  # the method as the base config sets it
    # the ablations keep the base's schedule (today's default: the hybrid threshold)
    gl = variant_config("group_lasso", base, 1, 5000).pruning
    assert (gl.regulariser, gl.lambda_actor, gl.mode) == ("group_lasso", base.pruning
                                                          .lambda_actor, "hybrid")
    assert gl == dataclasses.replace(base.pruning, regulariser="group_lasso")
    mg = variant_config("magnitude_gradual", base, 1, 5000).pruning
    assert (mg.lambda_actor, mg.lambda_critic, mg.mode, mg.kappa_final) == (
        0.0, 0.0, "hybrid", base.pruning.kappa_final)
    assert mg == dataclasses.replace(base.pruning, lambda_actor=0.0, lambda_critic=0.0)
    # dsp_fixed: the pruning defaults before the one recipe, lambda per gradient step, no
    # refit, guard and budget off whatever the base sets
    fixed = variant_config("dsp_fixed", from_dict({"pruning": {
        "enabled": False, "guard": 0.9, "kl_budget": 1e-3}}), 1, 5000).pruning
    assert fixed == PruningConfig(
        enabled=True, prune_critic=True, lambda_units="step", lambda_actor=3e-4,
        lambda_critic=3e-4, regularise_after_ramp=True, mode="dynamic", kappa_final=0.8,
        t_start=0.05, t_end=0.5, ratio_final=0.9, compensate="none")
    # dsp_norefit: the recipe with the cuts' contribution dropped, nothing refitted
    assert base.pruning.compensate == "lstsq"
    norefit = variant_config("dsp_norefit", from_dict({"pruning": {"enabled": False}}), 1,
                             5000).pruning
    assert norefit == dataclasses.replace(base.pruning, compensate="none")


def test_small_dense_gets_dsps_sizes_and_posthoc_starts_from_dense(tmp_path: Path) -> None:
    dsp = _finished(tmp_path / "dsp" / "seed2", [7, 12], [30, 9])
    dense = tmp_path / "dense" / "seed2"
    small = variant_config("small_dense", Config(), 2, 200_000, {"dsp": dsp})
    assert (small.net.actor_hidden, small.net.critic_hidden) == ((7, 12), (30, 9))
    assert small.pruning.enabled is False and small.train.total_steps == 200_000
    post = variant_config("posthoc", Config(), 2, 200_000, {"dsp": dsp, "dense": dense})
    assert (post.net.actor_hidden, post.net.critic_hidden) == ((7, 12), (30, 9))
    assert post.pruning.enabled is False
    assert post.train.total_steps == posthoc_steps(200_000) == 20_000
    assert post.train.init_from == str(dense.resolve())


def test_needed_runs_and_names_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs the dsp run"):
        variant_config("small_dense", Config(), 1, 100)
    with pytest.raises(FileNotFoundError, match="has not finished"):
        variant_config("small_dense", Config(), 1, 100, {"dsp": tmp_path / "nothing"})
    with pytest.raises(ValueError, match="unknown variant 'lasso'"):
        check_variants(["dense", "lasso"])
    assert VARIANTS["posthoc"].needs == ("dense", "dsp")


def _learner(cfg: Config, start: Callable[[PPO], None]) -> PPO:
    envs = make_vec_env(cfg.train.env_id, cfg.train.num_envs)
    try:
        learner = PPO(cfg, envs)
        start(learner)
    finally:
        envs.close()
    return learner


@pytest.mark.parametrize("compensate", ["none", "lstsq"])
def test_posthoc_warm_start_is_the_dense_agent_pruned_once(tmp_path: Path, tiny_config,
                                                           compensate: str) -> None:
    dense_cfg = tiny_config(pruning={"enabled": False, "compensate": compensate},
                            train={"total_steps": 1024})
    Runner.new(dense_cfg, tmp_path / "dense").learn()
    checkpoint = torch.load(tmp_path / "dense" / "checkpoint.pt", weights_only=False)
    cfg = from_dict({"net": {"actor_hidden": [5, 3], "critic_hidden": [4, 6]},
                     "train": {"init_from": str(tmp_path / "dense")}}, dense_cfg)
    learner = _learner(cfg, lambda ppo: ppo.warm_start(checkpoint["state"]))
    dense = _learner(dense_cfg, lambda ppo: ppo.load_state_dict(checkpoint["state"]))
    # the refit's batch: one rollout of the dense agent, as warm_start draws it (a learner
    # of the same config starts from the same RNG state and env seeds)
    batch: list[torch.Tensor] = []
    _learner(cfg, lambda ppo: batch.append(ppo._observe(copy.deepcopy(dense.agent))))
    x = batch[0]
    assert x.shape == (cfg.ppo.num_steps * cfg.train.num_envs, 4)
    # its first rows: the training envs' first observations, through the dense normaliser
    envs = make_vec_env(cfg.train.env_id, cfg.train.num_envs)
    first = envs.reset(seed=cfg.train.seed)[0]
    envs.close()
    torch.testing.assert_close(x[:cfg.train.num_envs], torch.from_numpy(
        dense.agent.obs_norm.normalize_np(first)))
    for name, sizes in (("actor", [5, 3]), ("critic", [4, 6])):
        source = getattr(dense.agent, name)
        expected = copy.deepcopy(source)
        prune_to_sizes(expected, sizes, x if compensate != "none" else None, compensate)
        assert getattr(learner.agent, name).hidden_sizes == sizes
        torch.testing.assert_close(getattr(learner.agent, name)(x), expected(x))
        if compensate != "none":  # the refit cut is closer to the dense net on the batch
            plain = copy.deepcopy(source)
            prune_to_sizes(plain, sizes)
            with torch.no_grad():
                err = float((expected(x) - source(x)).square().mean())
                err_plain = float((plain(x) - source(x)).square().mean())
            assert err < 0.5 * err_plain
    torch.testing.assert_close(learner.agent.obs_norm.mean, dense.agent.obs_norm.mean)
    assert learner.agent.obs_norm.count == dense.agent.obs_norm.count


def test_posthoc_refit_rollout_leaves_the_run_to_start_as_without_it(tmp_path: Path,
                                                                     tiny_config) -> None:
    # the refit's rollout steps the training envs and draws actions; afterwards the envs
    # are where a run without it starts and torch's RNG is untouched
    dense_cfg = tiny_config(pruning={"enabled": False}, train={"total_steps": 1024})
    Runner.new(dense_cfg, tmp_path / "dense").learn()
    state = torch.load(tmp_path / "dense" / "checkpoint.pt", weights_only=False)["state"]
    starts = {}
    for how in ("none", "lstsq"):
        cfg = from_dict({"net": {"actor_hidden": [5, 3], "critic_hidden": [4, 6]},
                         "pruning": {"compensate": how}}, dense_cfg)

        def start(ppo: PPO, how: str = how) -> None:
            ppo.warm_start(state)
            rng = torch.get_rng_state()
            ppo.collect()
            starts[how] = (ppo.next_obs.copy(), rng, ppo.buf_obs[0].clone())

        _learner(cfg, start)
    assert torch.equal(starts["none"][1], starts["lstsq"][1])  # the same RNG state
    torch.testing.assert_close(starts["none"][2], starts["lstsq"][2])  # the same first obs
    assert not np.array_equal(starts["none"][0], starts["lstsq"][0])  # other policies
