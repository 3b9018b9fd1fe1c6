"""Training configuration: frozen dataclasses that hold every default.

YAML files (plain or ROS 2 ``ros__parameters`` form) and ``--set section.field=value``
overrides are read into these at the edge. Validation raises ValueError naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Literal, get_args
import warnings

import yaml

from dsp_driving.validation import (
    coerce,
    require,
)

Activation = Literal["tanh", "relu"]
Regulariser = Literal["importance_weighted", "group_lasso"]
ThresholdMode = Literal["hybrid", "dynamic", "ratio"]
LambdaUnits = Literal["dose", "step"]
GroupSize = Literal["alive", "dense"]
Compensation = Literal["none", "mean", "lstsq"]
VectorMode = Literal["sync", "async", "ray"]
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
REGULARISERS: tuple[str, ...] = get_args(Regulariser)
THRESHOLD_MODES: tuple[str, ...] = get_args(ThresholdMode)
GROUP_SIZES: tuple[str, ...] = get_args(GroupSize)
LAMBDA_UNITS: tuple[str, ...] = get_args(LambdaUnits)
COMPENSATIONS: tuple[str, ...] = get_args(Compensation)
VECTOR_MODES: tuple[str, ...] = get_args(VectorMode)
# Renamed pruning choices, old -> new; old names still load (config files, --set, the
# config.yaml of older runs) with a FutureWarning (users see it; a DeprecationWarning they
# would not).
RENAMED_PRUNING_CHOICES: dict[str, dict[str, str]] = {
    "mode": {"adaptive": "dynamic"},
    "regulariser": {"adaptive": "importance_weighted"},
}


def _rename_deprecated(section: str, obj: Any, renamed: Mapping[str, Mapping[str, str]]
                       ) -> None:
    """Replace each old choice value of ``obj`` by its new name, with a FutureWarning."""
    for name, old_to_new in renamed.items():
        old = getattr(obj, name)
        if isinstance(old, str) and old in old_to_new:
            new = old_to_new[old]
            warnings.warn(f"config {section}.{name}={old!r} is the deprecated name of {new!r}:"
                          f" use {section}.{name}={new}", FutureWarning, stacklevel=4)
            object.__setattr__(obj, name, new)


def _positive(section: str, obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        require(value > 0, f"{section}.{name}", value, "must be > 0")


def _finite_floats(section: str, obj: Any) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, float):
            require(math.isfinite(value), f"{section}.{f.name}", value, "must be finite")


def _fraction(section: str, obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        require(0.0 <= value <= 1.0, f"{section}.{name}", value, "must be in [0, 1]")


@dataclasses.dataclass(frozen=True)
class NetConfig:
    """Actor and critic MLP shapes."""

    actor_hidden: tuple[int, ...] = (256, 256)
    critic_hidden: tuple[int, ...] = (256, 256)
    activation: Activation = "tanh"
    init_log_std: float = 0.0

    def __post_init__(self) -> None:
        for name in ("actor_hidden", "critic_hidden"):
            value = tuple(int(v) for v in getattr(self, name))
            object.__setattr__(self, name, value)
            require(len(value) >= 1, f"net.{name}", value, "needs at least one hidden layer")
            require(all(v >= 1 for v in value), f"net.{name}", value, "sizes must be >= 1")
        require(self.activation in ACTIVATIONS, "net.activation", self.activation,
                f"must be one of {ACTIVATIONS}")
        _finite_floats("net", self)


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters (CleanRL names)."""

    num_steps: int = 128
    learning_rate: float = 2.5e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    num_minibatches: int = 4
    update_epochs: int = 4
    norm_adv: bool = True
    clip_coef: float = 0.2
    clip_vloss: bool = True
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float = 0.0  # 0 disables early stopping (ROS parameters cannot be null)
    norm_obs: bool = True
    norm_reward: bool = False
    clip_obs: float = 10.0
    clip_reward: float = 10.0

    def __post_init__(self) -> None:
        _finite_floats("ppo", self)
        _positive("ppo", self, "num_steps", "learning_rate", "num_minibatches",
                  "update_epochs", "clip_coef", "max_grad_norm", "clip_obs", "clip_reward")
        _fraction("ppo", self, "gamma", "gae_lambda")
        for name in ("ent_coef", "vf_coef", "target_kl"):
            value = getattr(self, name)
            require(value >= 0, f"ppo.{name}", value, "must be >= 0")


@dataclasses.dataclass(frozen=True)
class PruningConfig:
    """Dynamic structured pruning (docs/method.md; the defaults are the one recipe of
    section 11, the same for every env).

    ``regulariser``: importance_weighted (c_j = clip(1/r_j, c_min, c_max)) or group_lasso
    (c_j = 1, the ablation). ``lambda_units``: dose (lambda_* is the regulariser's dose: the
    lambda applied per gradient step is lambda_* / sum of the learning rate over the gradient
    steps it acts on, so the same number suits any PPO) or step (lambda_* per gradient step,
    as the paper writes it). ``regularise_after_ramp``: false stops the regulariser at t_end
    so the pruned net recovers. ``mode``: hybrid (the dynamic threshold, held between the
    cubic ratio schedule and its final size: at least p(t) and at most ratio_final of each
    layer pruned), dynamic (threshold kappa(t) * mean alive importance only) or ratio (the
    cubic target fraction only). The old name "adaptive" of either choice still loads, with
    a FutureWarning.
    """

    enabled: bool = True
    prune_actor: bool = True
    prune_critic: bool = False
    regulariser: Regulariser = "importance_weighted"
    group_size: GroupSize = "alive"
    lambda_units: LambdaUnits = "dose"
    lambda_actor: float = 1e-4
    lambda_critic: float = 1e-4
    regularise_after_ramp: bool = False
    eps: float = 1e-8
    c_min: float = 0.1
    c_max: float = 10.0
    mode: ThresholdMode = "hybrid"
    kappa_final: float = 0.5
    t_start: float = 0.1
    t_end: float = 0.6
    ratio_initial: float = 0.0
    ratio_final: float = 0.94
    prune_every: int = 1
    min_alive: int = 2
    max_prune_frac: float = 0.2
    compact_in_training: bool = True
    # return guard (pruning/schedule.RampClock): 0 = off; g in (0, 1]: the ramp's clock
    # (kappa(t), the ratio schedule) stands still, and nothing is pruned, through an update
    # whose mean training return is below g x its best since t_start, at most guard_max_lag
    # of progress in all (t_end + it <= 0.95: the ramp ends with updates left to reach the
    # final size). The regulariser's window (until t_end in training progress) and its dose
    # are unchanged
    guard: float = 0.0
    guard_max_lag: float = 0.2
    # whether a pruning step refits the layers above its cuts to what they received before
    # it, on the last rollout's observations (docs/method.md section 5): none (the cut
    # contribution is dropped) | mean (its batch mean moves into the bias) | lstsq (ridge
    # least squares onto the alive neurons' outgoing weights and the bias)
    compensate: Compensation = "lstsq"
    # budget per pruning step (docs/method.md section 5): 0 = off; b > 0: a step cuts the
    # largest share 1, 1/2, 1/4, ... of each actor layer's candidates whose KL(before ||
    # after) of the policy on the last rollout stays <= b (possibly none; the rest wait),
    # until t_end + guard_max_lag in training progress, after which the schedule cuts freely
    kl_budget: float = 0.0

    def __post_init__(self) -> None:
        _rename_deprecated("pruning", self, RENAMED_PRUNING_CHOICES)
        _finite_floats("pruning", self)
        require(self.regulariser in REGULARISERS, "pruning.regulariser", self.regulariser,
                f"must be one of {REGULARISERS}")
        require(self.group_size in GROUP_SIZES, "pruning.group_size", self.group_size,
                f"must be one of {GROUP_SIZES}")
        require(self.mode in THRESHOLD_MODES, "pruning.mode", self.mode,
                f"must be one of {THRESHOLD_MODES}")
        require(self.lambda_units in LAMBDA_UNITS, "pruning.lambda_units", self.lambda_units,
                f"must be one of {LAMBDA_UNITS}")
        for name in ("lambda_actor", "lambda_critic", "kappa_final"):
            value = getattr(self, name)
            require(value >= 0, f"pruning.{name}", value, "must be >= 0")
        _positive("pruning", self, "eps", "c_min", "prune_every", "min_alive",
                  "max_prune_frac")
        require(self.c_max >= self.c_min, "pruning.c_max", self.c_max,
                f"must be >= pruning.c_min ({self.c_min})")
        _fraction("pruning", self, "t_start", "t_end", "ratio_initial", "ratio_final",
                  "max_prune_frac")
        require(self.t_end > self.t_start, "pruning.t_end", self.t_end,
                f"must be > pruning.t_start ({self.t_start})")
        require(self.ratio_final < 1.0, "pruning.ratio_final", self.ratio_final,
                "must be < 1 (a layer cannot lose every neuron)")
        require(self.compensate in COMPENSATIONS, "pruning.compensate", self.compensate,
                f"must be one of {COMPENSATIONS}")
        require(self.kl_budget >= 0, "pruning.kl_budget", self.kl_budget,
                "must be >= 0 (0: off)")
        require(0.0 <= self.guard <= 1.0, "pruning.guard", self.guard,
                "must be in [0, 1] (0: off)")
        require(self.guard_max_lag >= 0 and ((self.guard == 0 and self.kl_budget == 0)
                                             or self.t_end + self.guard_max_lag <= 0.95),
                "pruning.guard_max_lag", self.guard_max_lag,
                f"must be >= 0, and with the guard or kl_budget on pruning.t_end + it <= "
                f"0.95 (t_end {self.t_end}: the ramp must end with updates left to reach "
                "the size)")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Run-level settings."""

    env_id: str = "CartPole-v1"
    total_steps: int = 200_000
    seed: int = 1
    num_envs: int = 4
    vector_mode: VectorMode = "sync"  # sync | async (subprocesses) | ray (supervised actors)
    # vector_mode ray (dsp_driving/rl/ray_vector.py): "" = a local Ray (or the Ray cluster a
    # sweep's trial runs in); else a cluster's address. Each env actor gets env_num_cpus and
    # env_num_gpus; a step longer than env_step_timeout_s, a start or reset longer than
    # env_reset_timeout_s (a CARLA reset may launch a server and load a map), a dead actor or
    # a crashed simulator restarts that env, at most env_max_restarts times in a row
    ray_address: str = ""
    env_num_cpus: float = 1.0
    env_num_gpus: float = 0.0
    env_step_timeout_s: float = 60.0
    env_reset_timeout_s: float = 300.0
    env_max_restarts: int = 3
    torch_threads: int = 1
    torch_deterministic: bool = True
    checkpoint_every: int = 10
    eval_episodes: int = 10
    eval_seed: int = 1_000_000
    tensorboard: bool = True
    progress: bool = True
    export_onnx: bool = True  # write policy.onnx at the end when the export extra is installed
    export_every: int = 0  # also export the compact actor every N updates (0: only at the end)
    # safety-first selection (dsp_driving/selection.py): once the actor has its final size
    # (progress >= pruning.t_end), evaluate it every N updates and at the end on
    # select_episodes episodes from select_seed; export the best by (collision rate, then
    # return). 0: export the last actor
    select_every: int = 0
    select_episodes: int = 20
    select_seed: int = 3_000_000
    # a trained run (its folder or checkpoint.pt) whose agent starts this one, each hidden
    # layer cut to net.*_hidden by neuron importance (the posthoc baseline; "" = from scratch)
    init_from: str = ""
    # keyword arguments of gym.make for every env of the run (training, evaluation, export),
    # saved with it: dsp_driving/Carla-v0 gets {"config": {...}}, its bridge settings
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        require(bool(self.env_id), "train.env_id", self.env_id, "must not be empty")
        require(isinstance(self.env_kwargs, Mapping)
                and all(isinstance(k, str) for k in self.env_kwargs),
                "train.env_kwargs", self.env_kwargs, "must be a mapping of argument names")
        _positive("train", self, "total_steps", "num_envs", "torch_threads",
                  "checkpoint_every")
        require(self.eval_episodes >= 1, "train.eval_episodes", self.eval_episodes,
                "must be >= 1")
        require(self.export_every >= 0, "train.export_every", self.export_every,
                "must be >= 0 (0: export only at the end)")
        require(self.select_every >= 0, "train.select_every", self.select_every,
                "must be >= 0 (0: export the last actor, no selection)")
        require(self.select_episodes >= 1, "train.select_episodes", self.select_episodes,
                "must be >= 1")
        require(self.select_seed >= 0, "train.select_seed", self.select_seed, "must be >= 0")
        require(self.seed >= 0, "train.seed", self.seed, "must be >= 0")
        require(self.eval_seed >= 0, "train.eval_seed", self.eval_seed, "must be >= 0")
        require(self.vector_mode in VECTOR_MODES, "train.vector_mode", self.vector_mode,
                f"must be one of {VECTOR_MODES}")
        require(self.env_num_cpus >= 0, "train.env_num_cpus", self.env_num_cpus,
                "must be >= 0")
        require(self.env_num_gpus >= 0, "train.env_num_gpus", self.env_num_gpus,
                "must be >= 0")
        require(self.env_step_timeout_s > 0, "train.env_step_timeout_s",
                self.env_step_timeout_s, "must be > 0 seconds")
        require(self.env_reset_timeout_s > 0, "train.env_reset_timeout_s",
                self.env_reset_timeout_s, "must be > 0 seconds")
        require(self.env_max_restarts >= 0, "train.env_max_restarts", self.env_max_restarts,
                "must be >= 0")


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole resolved configuration of a run."""

    net: NetConfig = dataclasses.field(default_factory=NetConfig)
    ppo: PPOConfig = dataclasses.field(default_factory=PPOConfig)
    pruning: PruningConfig = dataclasses.field(default_factory=PruningConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        batch = self.train.num_envs * self.ppo.num_steps
        require(batch % self.ppo.num_minibatches == 0, "ppo.num_minibatches",
                self.ppo.num_minibatches,
                f"must divide the batch train.num_envs * ppo.num_steps = {batch}")
        require(batch // self.ppo.num_minibatches >= 2, "ppo.num_minibatches",
                self.ppo.num_minibatches,
                f"leaves minibatches of fewer than 2 samples (batch {batch})")

    @property
    def batch_size(self) -> int:
        """Environment steps per PPO update."""
        return self.train.num_envs * self.ppo.num_steps

    @property
    def minibatch_size(self) -> int:
        """Samples per gradient step."""
        return self.batch_size // self.ppo.num_minibatches

    @property
    def num_updates(self) -> int:
        """PPO updates needed to reach train.total_steps (the last one may overshoot)."""
        return max(1, math.ceil(self.train.total_steps / self.batch_size))

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (tuples as lists), suitable for YAML and JSON."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


SECTIONS: dict[str, type] = {
    "net": NetConfig,
    "ppo": PPOConfig,
    "pruning": PruningConfig,
    "train": TrainConfig,
}


def unwrap_ros_params(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept ``node_name: {ros__parameters: {...}}`` (ROS 2 params file) or a plain dict."""
    if len(data) == 1:
        (only,) = data.values()
        if isinstance(only, Mapping) and "ros__parameters" in only:
            return only["ros__parameters"]
    return data


def from_dict(data: Mapping[str, Any], base: Config | None = None) -> Config:
    """Build a Config from a nested dict; unknown sections or fields are errors."""
    base = base or Config()
    data = unwrap_ros_params(data)
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        current = getattr(base, name)
        given = data.get(name) or {}
        if not isinstance(given, Mapping):
            raise ValueError(f"invalid config: {name}={given!r}: expected a mapping")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(
                f"invalid config: unknown field {name}.{unknown[0]} (known: {sorted(known)})"
            )
        changes = {k: coerce(f"{name}.{k}", v, getattr(current, k)) for k, v in given.items()}
        sections[name] = dataclasses.replace(current, **changes)
    unknown_sections = sorted(set(data) - set(SECTIONS))
    if unknown_sections:
        raise ValueError(
            f"invalid config: unknown section {unknown_sections[0]!r} (known: {list(SECTIONS)})"
        )
    return Config(**sections)


# Fields added to a section after runs were saved with every field written out: the value
# that reproduces what those runs did (a saved run config lacking the field predates it).
ADDED_FIELDS_OLD_MEANING: dict[str, dict[str, Any]] = {
    "pruning": {"lambda_units": "step", "regularise_after_ramp": True, "guard": 0.0,
                "compensate": "none", "kl_budget": 0.0},
}


def from_saved_run(data: Mapping[str, Any]) -> Config:
    """The Config of a saved run (a checkpoint's or config.yaml's complete dict): fields
    added since it was saved take the value that reproduces what it did, not today's
    default (a run from before pruning.lambda_units applied lambda per gradient step)."""
    data = dict(unwrap_ros_params(data))
    for section, old in ADDED_FIELDS_OLD_MEANING.items():
        given = data.get(section)
        if isinstance(given, Mapping) and given:
            data[section] = {**{k: v for k, v in old.items() if k not in given}, **given}
    return from_dict(data)


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Turn ``["pruning.lambda_actor=2e-4", ...]`` into a nested dict of YAML-parsed values."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        section, dot, field = key.strip().partition(".")
        if not sep or not dot or not field:
            raise ValueError(f"invalid override {item!r}: expected section.field=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError as exc:
            raise ValueError(f"invalid override {item!r}: not a YAML value ({exc})") from None
        out.setdefault(section, {})[field] = value
    return out


def read_yaml_mapping(path: str | Path, what: str = "config file") -> Mapping[str, Any]:
    """A YAML file whose top level is a mapping (empty file: {}); ValueError naming ``what``
    and the path if it is missing, not YAML, or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{what} {path} is not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} {path}: expected a mapping at top level, got "
                         f"{type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: Config | None = None) -> Config:
    """Load a YAML config file (optional), then apply ``--set`` overrides."""
    config = base or Config()
    if path is not None:
        config = from_dict(read_yaml_mapping(path), config)
    if overrides:
        config = from_dict(parse_overrides(overrides), config)
    return config


def default_config_path() -> Path | None:
    """config/train.yaml of the source tree, or of an install prefix's share/dsp_driving/."""
    here = Path(__file__).resolve().parent
    candidates = [here.parent / "config" / "train.yaml"]
    # pip, colcon and ament installs: <prefix>/lib/pythonX.Y/site-packages/dsp_driving
    candidates += [p / "share" / "dsp_driving" / "config" / "train.yaml" for p in here.parents]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None
