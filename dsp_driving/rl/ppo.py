"""PPO (clipped surrogate, GAE) with dynamic structured pruning hooked into its update.

The loop follows CleanRL's ppo.py / ppo_continuous_action.py; the pruner adds its
regulariser to the loss and enforces its masks around every optimiser step.
"""

from __future__ import annotations

import collections
import random
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from dsp_driving.config import Config
from dsp_driving.pruning import DynamicPruner, compact_mlp
from dsp_driving.pruning.oneshot import prune_to_sizes
from dsp_driving.pruning.schedule import lr_sum
from dsp_driving.rl.losses import compute_gae, ppo_loss_terms
from dsp_driving.rl.networks import ActionSpec, Agent, DeployedActor
from dsp_driving.rl.normalization import RewardScaler
from dsp_driving.stats import LearnStats, UpdateStats


def seed_everything(seed: int, threads: int, deterministic: bool) -> None:
    """Seed python, numpy and torch; set torch's intra-op threads."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def training_seed_range(cfg: Config, updates: int) -> range:
    """Environment reset seeds of a run that has (re)started its envs at most ``updates`` times.

    Start: seed .. seed + num_envs - 1; a resume at update u reseeds from seed + num_envs * u.
    """
    return range(cfg.train.seed, cfg.train.seed + cfg.train.num_envs * updates)


def regularised_lr_sum(cfg: Config) -> float:
    """The learning-rate sum over the gradient steps the pruning regulariser acts on (the
    divisor of ``pruning.lambda_units: dose``; early stops by target_kl are not foreseen)."""
    ppo, pruning = cfg.ppo, cfg.pruning
    return lr_sum(ppo.learning_rate, ppo.anneal_lr, cfg.num_updates,
                  ppo.num_minibatches * ppo.update_epochs, pruning.t_end,
                  pruning.regularise_after_ramp)


def _hidden_sizes(agent_state: dict[str, torch.Tensor], name: str) -> list[int]:
    """Hidden widths of the ``name`` MLP ('actor' or 'critic') in an Agent's state dict."""
    rows = [(int(k.split(".")[2]), v.shape[0]) for k, v in agent_state.items()
            if k.startswith(f"{name}.layers.") and k.endswith(".weight")]
    return [n for _, n in sorted(rows)][:-1]


def policy_kl(before: torch.distributions.Distribution,
              after: torch.distributions.Distribution) -> float:
    """Mean over the batch of KL(before || after) between two action distributions of the
    same observations (Normal: summed over the action dimensions; Categorical: as is)."""
    kl = torch.distributions.kl_divergence(before, after)
    if isinstance(before, torch.distributions.Normal):
        kl = kl.sum(-1)
    return float(kl.mean())


def _mean_or_none(values: Any) -> float | None:
    return float(np.mean(values)) if len(values) else None


class PPO:
    """One PPO learner over a vector environment; ``step_update()`` runs one update."""

    def __init__(self, cfg: Config, envs: gym.vector.VectorEnv) -> None:
        self.cfg = cfg
        self.envs = envs
        seed_everything(cfg.train.seed, cfg.train.torch_threads, cfg.train.torch_deterministic)
        obs_space = envs.single_observation_space
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
            raise ValueError(f"unsupported observation space {obs_space}: need a 1-D Box")
        self.obs_dim = int(obs_space.shape[0])
        self.action = ActionSpec.from_space(envs.single_action_space)
        net, ppo = cfg.net, cfg.ppo
        self.agent = Agent(self.obs_dim, self.action, net.actor_hidden, net.critic_hidden,
                           net.activation, net.init_log_std, ppo.norm_obs, ppo.clip_obs)
        self.optimizer = self._make_optimizer()
        # compacts agent.actor and agent.critic in place (and the optimiser with them)
        self.pruner = DynamicPruner(self.agent.actor, self.agent.critic, cfg.pruning,
                                    lr_total=regularised_lr_sum(cfg))
        n, t = cfg.train.num_envs, ppo.num_steps
        self.reward_scaler = (RewardScaler(n, ppo.gamma, ppo.clip_reward)
                              if ppo.norm_reward else None)
        self.generator = torch.Generator().manual_seed(cfg.train.seed)
        self.global_step = 0
        self.update = 0
        self.wall_s = 0.0
        self.episode_returns: collections.deque[float] = collections.deque(maxlen=20)
        self.episode_lengths: collections.deque[int] = collections.deque(maxlen=20)
        self._running_return = np.zeros(n)
        self._running_length = np.zeros(n, dtype=np.int64)
        act_shape = (self.action.dim,) if self.action.kind == "continuous" else ()
        act_dtype = torch.float32 if self.action.kind == "continuous" else torch.long
        self.buf_obs = torch.zeros((t, n, self.obs_dim))
        self.buf_actions = torch.zeros((t, n, *act_shape), dtype=act_dtype)
        self.buf_logprobs = torch.zeros((t, n))
        self.buf_rewards = torch.zeros((t, n))
        self.buf_dones = torch.zeros((t, n))
        self.buf_values = torch.zeros((t, n))
        self.next_obs = self._reset_envs(cfg.train.seed)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        # fused Adam: one kernel for all parameters instead of a Python loop over them
        return torch.optim.Adam(self.agent.parameters(), lr=self.cfg.ppo.learning_rate,
                                eps=1e-5, fused=True)

    # -- environment ---------------------------------------------------------------------
    def _reset_envs(self, seed: int) -> np.ndarray:
        obs, _ = self.envs.reset(seed=seed)
        self.envs.action_space.seed(seed)
        self._running_return[:] = 0.0
        self._running_length[:] = 0
        return obs

    def training_seeds(self) -> range:
        """Every environment seed training has used or will use on this resume count."""
        return training_seed_range(self.cfg, self.update + 1)

    def _normalise(self, obs_raw: np.ndarray, update_stats: bool) -> torch.Tensor:
        if update_stats:
            self.agent.obs_norm.update(obs_raw)
        return torch.from_numpy(self.agent.obs_norm.normalize_np(obs_raw))

    def _env_action(self, action: torch.Tensor) -> np.ndarray:
        """A sampled action as the envs take it: continuous ones clipped to the action box."""
        if self.action.kind == "continuous":
            return np.clip(action.numpy(), self.action.low, self.action.high)
        return action.numpy()

    @torch.no_grad()
    def collect(self) -> None:
        """Fill the rollout buffers with num_steps steps of every environment."""
        ppo = self.cfg.ppo
        agent = self.agent
        for step in range(ppo.num_steps):
            obs = self._normalise(self.next_obs, update_stats=True)
            action, logprob, value = agent.sample(obs)
            next_obs, reward, terminated, truncated, info = self.envs.step(
                self._env_action(action))
            done = np.logical_or(terminated, truncated)
            self._track_episodes(reward, done, info)
            reward = np.asarray(reward, dtype=np.float64)
            if self.reward_scaler is not None:
                reward = self.reward_scaler(reward, done)
            bootstrap = np.logical_and(truncated, np.logical_not(terminated))
            if bootstrap.any():  # value of the real final state of a time-limited episode
                final = np.stack([info["final_obs"][i] for i in np.flatnonzero(bootstrap)])
                final_v = agent.get_value(self._normalise(final, update_stats=False))
                reward[bootstrap] += ppo.gamma * final_v.numpy()
            self.buf_obs[step] = obs
            self.buf_actions[step] = action
            self.buf_logprobs[step] = logprob
            self.buf_values[step] = value
            self.buf_rewards[step] = torch.as_tensor(reward, dtype=torch.float32)
            self.buf_dones[step] = torch.as_tensor(done, dtype=torch.float32)
            self.next_obs = next_obs
            self.global_step += self.cfg.train.num_envs

    def _track_episodes(self, reward: np.ndarray, done: np.ndarray,
                        info: dict[str, Any]) -> None:
        self._running_return += reward
        self._running_length += 1
        # an episode a failed env cut short (vector_mode ray) is not an episode's return
        final = info.get("final_info")
        cut = final.get("env_restarted") if isinstance(final, dict) else None
        for i in np.flatnonzero(done):
            if cut is not None and final["_env_restarted"][i] and cut[i]:
                continue
            self.episode_returns.append(float(self._running_return[i]))
            self.episode_lengths.append(int(self._running_length[i]))
        self._running_return[done] = 0.0
        self._running_length[done] = 0

    # -- learning ------------------------------------------------------------------------
    def learn(self) -> LearnStats:
        """PPO epochs over the collected rollout; returns the losses and diagnostics."""
        cfg, ppo = self.cfg, self.cfg.ppo
        agent = self.agent
        with torch.no_grad():
            last_value = agent.get_value(self._normalise(self.next_obs, update_stats=False))
        advantages, returns = compute_gae(self.buf_rewards, self.buf_values, self.buf_dones,
                                          last_value, ppo.gamma, ppo.gae_lambda)
        b_obs = self.buf_obs.reshape(-1, self.obs_dim)
        b_actions = self.buf_actions.reshape(-1, *self.buf_actions.shape[2:])
        b_logprobs = self.buf_logprobs.reshape(-1)
        b_adv, b_returns = advantages.reshape(-1), returns.reshape(-1)
        b_values = self.buf_values.reshape(-1)
        batch, mb = cfg.batch_size, cfg.minibatch_size
        params = [p for p in agent.parameters() if p.requires_grad]
        self.pruner.update_regulariser(self.update_start_progress)
        sums: dict[str, float] = collections.defaultdict(float)
        count = 0
        for _epoch in range(ppo.update_epochs):
            perm = torch.randperm(batch, generator=self.generator)
            for start in range(0, batch, mb):
                idx = perm[start:start + mb]
                _, new_logprob, entropy, new_value = agent.get_action_and_value(
                    b_obs[idx], b_actions[idx])
                mb_adv = b_adv[idx]
                if ppo.norm_adv:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                terms = ppo_loss_terms(new_logprob, b_logprobs[idx], mb_adv, new_value,
                                       b_values[idx], b_returns[idx], entropy, ppo.clip_coef,
                                       ppo.clip_vloss)
                loss = terms.pg_loss - ppo.ent_coef * terms.entropy + ppo.vf_coef * terms.v_loss
                self.optimizer.zero_grad(set_to_none=False)
                loss.backward()
                # + lambda_actor * R(actor) + lambda_critic * R(critic) (docs/method.md, (6)):
                # the pruner adds their gradient in closed form, then masks the gradients
                reg_loss = self.pruner.regularise()
                nn.utils.clip_grad_norm_(params, ppo.max_grad_norm)
                self.optimizer.step()
                self.pruner.mask_weights()
                sums["policy"] += terms.pg_loss.item()
                sums["value"] += terms.v_loss.item()
                sums["entropy"] += terms.entropy.item()
                sums["lambda_R"] += reg_loss
                sums["total"] += loss.item() + reg_loss
                sums["approx_kl"] += terms.approx_kl.item()
                sums["clipfrac"] += terms.clipfrac.item()
                count += 1
            if ppo.target_kl > 0 and terms.approx_kl.item() > ppo.target_kl:
                break
        mean = {k: v / count for k, v in sums.items()}
        y_pred, y_true = b_values.numpy(), b_returns.numpy()
        var_y = np.var(y_true)
        return {
            "losses": {"policy": mean["policy"], "value": mean["value"],
                       "entropy": mean["entropy"], "lambda_R": mean["lambda_R"],
                       "total": mean["total"]},
            "approx_kl": mean["approx_kl"],
            "clipfrac": mean["clipfrac"],
            "explained_variance": float("nan") if var_y == 0 else
            float(1 - np.var(y_true - y_pred) / var_y),
        }

    def step_update(self) -> UpdateStats:
        """Collect, learn, prune: one PPO update. Returns the update's stats record."""
        cfg = self.cfg
        start = time.perf_counter()
        self.update += 1
        if cfg.ppo.anneal_lr:
            frac = 1.0 - (self.update - 1.0) / cfg.num_updates
            self.optimizer.param_groups[0]["lr"] = frac * cfg.ppo.learning_rate
        self.collect()
        learned = self.learn()
        progress = min(1.0, self.global_step / cfg.train.total_steps)
        # between updates only: compaction replaces Parameters that learn() lists at its start
        b_obs = self.buf_obs.reshape(-1, self.obs_dim)
        before = None
        if self.pruner.active and self.update % cfg.pruning.prune_every == 0:
            with torch.no_grad():
                before = self.agent.distribution(b_obs)
        def kl_of(out: torch.Tensor) -> float:  # the actor's outputs on b_obs -> the KL
            return policy_kl(before, self.agent.distribution_of(out))

        newly_pruned = self.pruner.step(self.update, progress, self.optimizer,
                                        self.update_start_progress,
                                        _mean_or_none(self.episode_returns), b_obs,
                                        kl_of if before is not None else None)
        prune_kl = 0.0
        if newly_pruned and before is not None:
            with torch.no_grad():
                prune_kl = kl_of(self.agent.actor(b_obs))
        elapsed = time.perf_counter() - start
        self.wall_s += elapsed
        pruning = self.pruner.stats()
        return {
            "step": self.global_step,
            "update": self.update,
            "progress": progress,
            "kappa": pruning["kappa"],
            "actor": pruning["actor"],
            "critic": pruning["critic"],
            "newly_pruned": newly_pruned,
            "prune_kl": prune_kl,
            "losses": learned["losses"],
            "approx_kl": learned["approx_kl"],
            "clipfrac": learned["clipfrac"],
            "entropy": learned["losses"]["entropy"],
            "explained_variance": learned["explained_variance"],
            "learning_rate": self.optimizer.param_groups[0]["lr"],
            "ep_return_mean": _mean_or_none(self.episode_returns),
            "ep_length_mean": _mean_or_none(self.episode_lengths),
            "steps_per_s": cfg.batch_size / elapsed,
            "wall_s": self.wall_s,
        }

    @property
    def update_start_progress(self) -> float:
        """Training progress when the current update began: (update - 1) / num_updates,
        the fraction the learning-rate annealing and schedule.lr_sum count with."""
        return max(0, self.update - 1) / self.cfg.num_updates

    @property
    def done(self) -> bool:
        """True once train.total_steps environment steps have been collected."""
        return self.global_step >= self.cfg.train.total_steps

    # -- products ------------------------------------------------------------------------
    def deployed_actor(self) -> DeployedActor:
        """The compacted, deterministic actor with a copy of the observation normaliser."""
        import copy

        compact = compact_mlp(self.agent.actor, self.pruner.masks("actor"))
        return DeployedActor(copy.deepcopy(self.agent.obs_norm), compact, self.action).eval()

    def compact_critic_hidden(self) -> list[int]:
        """Alive neurons per critic hidden layer."""
        return self.pruner.nets["critic"].masks.alive()

    def _load_reward_scaler(self, saved: dict[str, torch.Tensor] | None) -> bool:
        """Restore the reward scaler from a state_dict's entry; whether one was restored."""
        if self.reward_scaler is None or saved is None:
            return False
        self.reward_scaler.load_state_dict(
            {k: v.numpy() if v.ndim else float(v) for k, v in saved.items()})
        return True

    @torch.no_grad()
    def warm_start(self, state: dict[str, Any]) -> None:
        """Start from another run's trained agent (``state``: its checkpoint's learner state),
        every hidden layer cut to this learner's sizes by keeping its neurons of highest
        importance s_j (pruning/oneshot.py): the posthoc route. With ``pruning.compensate``
        on (and something to cut), the layers above each cut are refitted as the method
        refits its cuts, on one rollout of the trained agent (``_observe``: num_steps x
        num_envs states, not counted in the budget). The observation normaliser and reward
        scaler come along; the optimiser starts afresh."""
        source_agent = state["agent"]
        hidden = {name: _hidden_sizes(source_agent, name) for name in ("actor", "critic")}
        source = Agent(self.obs_dim, self.action, hidden["actor"], hidden["critic"],
                       self.cfg.net.activation, self.cfg.net.init_log_std,
                       self.cfg.ppo.norm_obs, self.cfg.ppo.clip_obs)
        try:
            source.load_state_dict(source_agent)
        except RuntimeError as exc:
            raise ValueError(f"train.init_from: that agent does not fit this run's "
                             f"environment or settings ({exc})") from None
        method = self.cfg.pruning.compensate
        cut = hidden != {name: getattr(self.agent, name).hidden_sizes
                         for name in ("actor", "critic")}
        inputs = self._observe(source) if method != "none" and cut else None
        for name in ("actor", "critic"):
            prune_to_sizes(getattr(source, name), getattr(self.agent, name).hidden_sizes,
                           inputs, method)
        self.agent.load_state_dict(source.state_dict())
        self.optimizer = self._make_optimizer()
        if self._load_reward_scaler(state.get("reward_scaler")):
            # its statistics carry over; the running returns belong to the source's episodes
            self.reward_scaler.returns = np.zeros(self.cfg.train.num_envs)

    @torch.no_grad()
    def _observe(self, agent: Agent) -> torch.Tensor:
        """One rollout (num_steps x num_envs) of ``agent``'s stochastic policy on the training
        envs: the normalised observations it visited (its normaliser, not updated). The envs
        are then reset as at the start, and its actions are drawn with torch's RNG forked
        and seeded with train.seed (restored after), so the run's own rollouts and draws
        begin as they would without it."""
        obs_raw, seen = self.next_obs, []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.train.seed)
            for _ in range(self.cfg.ppo.num_steps):
                obs = torch.from_numpy(agent.obs_norm.normalize_np(obs_raw))
                seen.append(obs)
                action, _, _ = agent.sample(obs)
                obs_raw = self.envs.step(self._env_action(action))[0]
        self.next_obs = self._reset_envs(self.cfg.train.seed)
        return torch.cat(seen)

    # -- checkpointing -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly where it stopped."""
        return {
            "agent": self.agent.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "pruner": self.pruner.state_dict(),
            "reward_scaler": None if self.reward_scaler is None else {
                k: torch.as_tensor(v) for k, v in self.reward_scaler.state_dict().items()},
            "rng": {"torch": torch.get_rng_state(), "generator": self.generator.get_state(),
                    "numpy": np.random.get_state(legacy=False), "python": random.getstate()},
            "progress": {"global_step": self.global_step, "update": self.update,
                         "wall_s": self.wall_s},
            "episodes": {"returns": list(self.episode_returns),
                         "lengths": list(self.episode_lengths)},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from state_dict(); environments restart from fresh, reseeded episodes."""
        # first: may shrink the networks in place; then an optimiser over their new Parameters
        self.pruner.load_state_dict(state["pruner"])
        self.optimizer = self._make_optimizer()
        self.agent.load_state_dict(state["agent"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._load_reward_scaler(state["reward_scaler"])
        progress = state["progress"]
        self.global_step = int(progress["global_step"])
        self.update = int(progress["update"])
        self.wall_s = float(progress["wall_s"])
        self.episode_returns.extend(state["episodes"]["returns"])
        self.episode_lengths.extend(state["episodes"]["lengths"])
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["generator"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        # Environment state cannot be checkpointed (async workers, simulators): start new
        # episodes with seeds that continue the training seed range.
        self.next_obs = self._reset_envs(self.cfg.train.seed + self.cfg.train.num_envs *
                                         self.update)
