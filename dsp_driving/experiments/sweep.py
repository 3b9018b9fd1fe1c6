"""Sweeps of one env x variants x seeds (docs/experiments.md): the spec, the trials, and one
trial's work in whichever process runs it. ``ray_tune.py`` schedules them on Ray Tune.

Every trial is an ordinary run folder, DIR/<env>/<variant>/seed<k>/, and the state of a
sweep is those folders: a trial with eval.json is done, one with summary.json only needs its
export and evaluation, one with checkpoint.pt resumes from it, anything else starts. So
rerunning the same command re-trains nothing that finished and picks up what was
interrupted, on this machine or another that sees DIR. Variants that need other variants'
runs of the same seed (small_dense, posthoc) run in a second phase, each once its own needs
are done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import dataclasses
import json
import logging
from pathlib import Path
import time
from typing import Any
import warnings

import yaml

from dsp_driving.callbacks import BaseCallback
from dsp_driving.config import (
    Config,
    default_config_path,
    from_dict,
    from_saved_run,
    load_config,
)
from dsp_driving.experiments.variants import VARIANTS, check_variants, variant_config
from dsp_driving.io_utils import atomic_write_json, atomic_write_text
from dsp_driving.stats import UpdateStats
from dsp_driving.validation import require

log = logging.getLogger(__name__)

EVAL = "eval.json"  # the table's evaluation: policy.onnx through onnxruntime
SWEEP = "sweep.yaml"  # DIR/<env>/sweep.yaml: the settings every trial of the env shares
LOCK = ".sweep.lock"  # DIR/<env>/.sweep.lock: one sweep command at a time per env folder
TRIAL_LOG = "trial.log"
EVAL_SEED = 2_000_000  # held out: training uses seed.., summary.json's eval 1_000_000..
EVAL_EPISODES = 20  # the protocol's minimum
# short folder names of the paper's environments (others: the id, lower case, "/" -> "_")
ENV_FOLDERS = {"CartPole-v1": "cartpole", "LunarLander-v3": "lunarlander",
               "Hopper-v5": "hopper", "Walker2d-v5": "walker2d",
               "dsp_driving/HighwayDrive-v0": "highway"}
PROGRESS_EVERY_S = 30.0


def env_folder(env_id: str) -> str:
    """DIR/<env>/'s name for ``env_id``."""
    return ENV_FOLDERS.get(env_id) or env_id.lower().replace("/", "_")


def paper_config(env_id: str) -> Path | None:
    """config/paper/<env>.yaml beside the default config, when there is one."""
    default = default_config_path()
    if default is None:
        return None
    path = default.parent / "paper" / f"{env_folder(env_id)}.yaml"
    return path if path.is_file() else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """What ``dsp-driving sweep`` runs (from its options or a YAML spec file)."""

    env: str
    variants: tuple[str, ...]
    seeds: tuple[int, ...]
    out: Path
    config: Path | None = None  # None: config/paper/<env>.yaml, else config/train.yaml
    total_steps: int | None = None  # None: the config's train.total_steps
    eval_episodes: int = EVAL_EPISODES
    max_concurrent: int | None = None  # None: one trial per CPU Ray sees
    address: str | None = None  # None: a Ray of this sweep's own

    def __post_init__(self) -> None:
        require(isinstance(self.env, str) and bool(self.env), "env", self.env,
                "must name a gymnasium env id")
        require(len(self.variants) > 0, "variants", list(self.variants), "must not be empty")
        check_variants(list(self.variants))
        require(len(self.seeds) > 0 and all(_is_int(s) and s >= 0 for s in self.seeds),
                "seeds", list(self.seeds), "must be a non-empty list of integers >= 0")
        require(len(set(self.seeds)) == len(self.seeds), "seeds", list(self.seeds),
                "each seed may be named once")
        for name, minimum in (("total_steps", 1), ("eval_episodes", 1),
                              ("max_concurrent", 1)):
            value = getattr(self, name)
            if value is not None or name == "eval_episodes":
                require(_is_int(value) and value >= minimum, name, value,
                        f"must be an integer >= {minimum}")
        require(self.address is None or isinstance(self.address, str), "address",
                self.address, "must be a Ray address such as HOST:6379 or auto")
        if self.eval_episodes < EVAL_EPISODES:
            warnings.warn(f"eval_episodes={self.eval_episodes}: the table's protocol asks "
                          f"for at least {EVAL_EPISODES}", UserWarning, stacklevel=3)

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> SweepSpec:
        """From a spec file's mapping (unknown keys are errors; lists or comma strings)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"sweep spec: unknown key {unknown[0]!r} (known: "
                             f"{sorted(known)})")
        for key in ("env", "variants", "seeds", "out"):
            require(data.get(key) not in (None, "", []), key, data.get(key), "is required")
        values = dict(data)
        values["variants"] = tuple(_split(values["variants"], str, "variants"))
        values["seeds"] = tuple(_split(values["seeds"], int, "seeds"))
        for key in ("out", "config"):
            if values.get(key) is not None:
                require(isinstance(values[key], (str, Path)), key, values[key],
                        "must be a path")
                values[key] = Path(values[key])
        return cls(**values)


def _split(value: Any, kind: type, field: str) -> list[Any]:
    items = value.split(",") if isinstance(value, str) else value
    require(isinstance(items, (list, tuple)), field, value, "must be a list or a comma list")
    try:
        return [kind(str(v).strip()) for v in items]
    except ValueError:
        raise ValueError(f"invalid {field}={value!r}: expected {kind.__name__}s") from None


@dataclasses.dataclass(frozen=True)
class Trial:
    """One run of the sweep; plain values, so Ray ships it to any worker."""

    env: str
    variant: str
    seed: int
    run_dir: str
    base: dict[str, Any]  # the env's base config (Config.to_dict), budget included
    needs: dict[str, str]  # variant -> run folder of the same seed
    eval_episodes: int
    eval_seed: int

    @property
    def name(self) -> str:
        return f"{env_folder(self.env)}/{self.variant}/seed{self.seed}"

    def config(self) -> Config:
        """The run's config: the base, the variant's overlay, the seed and budget."""
        return variant_config(self.variant, from_dict(self.base), self.seed,
                              self.base["train"]["total_steps"],
                              {k: Path(v) for k, v in self.needs.items()})

    def needs_done(self) -> bool:
        return all(trial_status(path) == "done" for path in self.needs.values())


def trial_status(run_dir: str | Path) -> str:
    """done (evaluated) | evaluate (trained) | resume (checkpointed) | new."""
    run_dir = Path(run_dir)
    for name, status in ((EVAL, "done"), ("summary.json", "evaluate"),
                         ("checkpoint.pt", "resume")):
        if (run_dir / name).is_file():
            return status
    return "new"


def base_config(spec: SweepSpec) -> Config:
    """The env's base config: the config file (default config/paper/<env>.yaml, else
    config/train.yaml), the env, the budget; no progress bar (trials report to the sweep)."""
    path = spec.config or paper_config(spec.env) or default_config_path()
    cfg = load_config(path)
    train: dict[str, Any] = {"env_id": spec.env, "progress": False, "export_onnx": True}
    if spec.total_steps is not None:
        train["total_steps"] = spec.total_steps
    return from_dict({"train": train}, cfg)


def plan(spec: SweepSpec) -> list[list[Trial]]:
    """The trials in phases (a trial runs after the trials it needs), every check done
    before anything is written: the env's settings (sweep.yaml), each started trial's own
    config, and the needed runs. Then sweep.yaml is written (the first time)."""
    base = base_config(spec)
    t = base.train
    if t.select_every and t.select_seed < EVAL_SEED + spec.eval_episodes \
            and EVAL_SEED < t.select_seed + t.select_episodes:
        last = EVAL_SEED + spec.eval_episodes - 1
        raise ValueError(f"train.select_seed={t.select_seed}: the selection seeds overlap the "
                         f"sweep's evaluation seeds {EVAL_SEED}..{last}: a policy would be "
                         "scored on the episodes it was chosen on")
    env_dir = spec.out.resolve() / env_folder(spec.env)
    settings = _settings(spec, base)
    _check_settings(env_dir, settings)
    first, second = [], []
    for variant in spec.variants:
        for seed in spec.seeds:
            needs = {n: str(env_dir / n / f"seed{seed}") for n in VARIANTS[variant].needs}
            for need, path in needs.items():
                if need not in spec.variants and trial_status(path) != "done":
                    raise ValueError(f"variant {variant} needs the {need} run of seed {seed}"
                                     f" ({path}): add {need} to the variants")
            trial = Trial(spec.env, variant, seed, str(env_dir / variant / f"seed{seed}"),
                          base.to_dict(), needs, spec.eval_episodes, EVAL_SEED)
            _check_start(trial)
            check_trial(trial)
            (second if needs else first).append(trial)
    if not (env_dir / SWEEP).is_file():
        env_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(env_dir / SWEEP, yaml.safe_dump(settings, sort_keys=False))
    return [phase for phase in (first, second) if phase]


def _check_start(trial: Trial) -> None:
    """A trial that starts from another run's weights (posthoc: the dense run's) needs that
    run's checkpoint.pt; a run copied back from results/ (summary, config, eval) has none."""
    source = VARIANTS[trial.variant].starts_from
    if source is None or trial_status(trial.run_dir) != "new":
        return
    path = Path(trial.needs[source])
    if trial_status(path) == "done" and not (path / "checkpoint.pt").is_file():
        raise ValueError(f"{trial.name} starts from the {source} run's weights, but {path} "
                         "has no checkpoint.pt (copied from results/?): move that run aside "
                         f"and add {source} to the variants to train it again")


def _settings(spec: SweepSpec, base: Config) -> dict[str, Any]:
    """What every variant of the env shares (net, ppo, train, the evaluation); the pruning
    settings only the pruning variants use are checked per trial (``check_trial``)."""
    shared = {k: v for k, v in base.to_dict().items() if k != "pruning"}
    return json.loads(json.dumps({"env": spec.env, "config": shared, "eval": {
        "episodes": spec.eval_episodes, "seed": EVAL_SEED}}))


def _check_settings(env_dir: Path, settings: dict[str, Any]) -> None:
    """This command's settings against DIR/<env>/sweep.yaml; while no trial of the env has
    started, a sweep.yaml left by a refused or mistyped command is simply replaced."""
    path = env_dir / SWEEP
    if not path.is_file():
        return
    if not any(p.is_dir() for p in env_dir.glob("*/seed*")):
        path.unlink()
        return
    saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if isinstance(saved.get("config"), dict):
        # as Runner.resume reads a run's config: fields added since take their defaults
        saved["config"] = {k: v for k, v in from_saved_run(saved["config"]).to_dict().items()
                           if k != "pruning"}
    diff = _first_difference(saved, settings)
    if diff is not None:
        key, old, new = diff
        raise ValueError(f"{path} was made with {key}={old!r}, this command gives {new!r}: "
                         "one env folder holds one set of settings (choose another --out, "
                         "or the same settings)")


def check_trial(trial: Trial) -> None:
    """A started trial must have been started with the config this command gives it (its
    saved config.yaml; pruning settings count only where pruning is on). A dependent trial
    is checked once its needs are done (its sizes come from them)."""
    saved_path = Path(trial.run_dir) / "config.yaml"
    if trial_status(trial.run_dir) == "new" or not saved_path.is_file() \
            or not trial.needs_done():
        return
    # as Runner.resume reads it: fields added since it was saved take their old meaning
    saved = _comparable(from_saved_run(
        yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}).to_dict())
    diff = _first_difference(saved, _comparable(trial.config().to_dict()))
    if diff is not None:
        key, old, new = diff
        raise ValueError(f"{trial.name} was started with {key}={old!r}, this command gives "
                         f"{new!r}: choose another --out, or delete {trial.run_dir} to "
                         "train it again")


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config without what does not change its result (progress bar, TensorBoard,
    where init_from's run lies) and, where pruning (selection) is off, without the pruning
    (selection) settings it never used (a dense run with selection keeps pruning.t_end: its
    selection starts there)."""
    out = json.loads(json.dumps(config))
    train = out.get("train", {})
    # init_from: the absolute path of the run it starts from (posthoc: the dense run of the
    # seed, pinned by the variant's needs and the folder layout), so a sweep folder copied
    # elsewhere (a fresh clone's results/ copied back) still matches
    for key in ("progress", "tensorboard", "init_from"):
        train.pop(key, None)
    if not train.get("select_every"):  # no selection: its episodes and seeds are unused
        for key in ("select_every", "select_episodes", "select_seed"):
            train.pop(key, None)
    pruning = out.get("pruning", {})
    if not pruning.get("enabled", True):
        out["pruning"] = {"enabled": False}
        if train.get("select_every") and "t_end" in pruning:
            out["pruning"]["t_end"] = pruning["t_end"]
    return out


def _first_difference(old: Any, new: Any, key: str = "") -> tuple[str, Any, Any] | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in [*old, *(k for k in new if k not in old)]:
            found = _first_difference(old.get(k), new.get(k), f"{key}.{k}" if key else k)
            if found is not None:
                return found
        return None
    return None if old == new else (key, old, new)


@contextlib.contextmanager
def sweep_lock(env_dir: Path) -> Iterator[None]:
    """Hold DIR/<env>/.sweep.lock: a second sweep command on the same env folder would train
    the same run folders twice (a lock on shared storage works where it supports flock)."""
    import fcntl

    env_dir.mkdir(parents=True, exist_ok=True)
    with open(env_dir / LOCK, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"{env_dir} is in use by another dsp-driving sweep; wait for "
                               "it, or stop it (its trials resume on the next run)") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---- a trial, in whichever process runs it ------------------------------------------------


def run_trial(trial: Trial, report: Callable[[dict[str, Any]], None] | None = None
              ) -> dict[str, Any]:
    """Train (or resume) the trial's run, export it if it has no policy.onnx yet, evaluate
    that policy; returns eval.json's content. A finished trial is only read. Everything,
    a failure's traceback included, is logged to RUN_DIR/trial.log."""
    run_dir = Path(trial.run_dir)
    status = trial_status(run_dir)
    if status == "done":
        return json.loads((run_dir / EVAL).read_text(encoding="utf-8"))
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / TRIAL_LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    package = logging.getLogger("dsp_driving")
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    try:
        if status in ("resume", "new"):
            _train(trial, status, report)
        gate = json.loads((run_dir / "summary.json").read_text(encoding="utf-8")).get("gate")
        if gate is not None and not gate["passed"]:
            from dsp_driving.selection import GateError

            # its policy.onnx was moved aside, or never written: exporting it again here
            # would ship what the gate refused
            raise GateError(f"{trial.name} failed the closed-loop gate: {gate['failures'][:3]}"
                            f" (summary.json); delete {run_dir} to train it again")
        if not all((run_dir / f).is_file() for f in ("policy.onnx", "policy.json")):
            from dsp_driving.export import export_run

            export_run(run_dir)  # raises: a trial without its policy is not done
        return evaluate_policy(run_dir, trial.eval_episodes, trial.eval_seed)
    except Exception:
        log.exception(f"trial {trial.name} failed")
        raise
    finally:
        package.removeHandler(handler)
        handler.close()


def _train(trial: Trial, status: str, report: Callable[[dict[str, Any]], None] | None
           ) -> None:
    from dsp_driving.trainer import Runner

    if status == "resume":
        runner = Runner.resume(trial.run_dir)
    else:
        runner = Runner.new(trial.config(), trial.run_dir)
    if report is not None:
        runner.add_callback(_Progress(report))
    runner.learn()


def evaluate_policy(run_dir: Path, episodes: int, seed: int) -> dict[str, Any]:
    """RUN_DIR/policy.onnx through onnxruntime, deterministic, on ``episodes`` held-out
    seeds from ``seed``: what ships is what is measured. Writes RUN_DIR/eval.json."""
    from dsp_driving.evaluation import evaluate_onnx

    _, out = evaluate_onnx(run_dir / "policy.onnx", episodes, seed)
    atomic_write_json(run_dir / EVAL, out)
    return out


class _Progress(BaseCallback):
    """Reports a trial's progress to the scheduler at most every PROGRESS_EVERY_S (and at
    its last update)."""

    def __init__(self, report: Callable[[dict[str, Any]], None]) -> None:
        self.report, self._last = report, -float("inf")

    def on_update(self, stats: UpdateStats) -> None:
        now = time.monotonic()
        if now - self._last < PROGRESS_EVERY_S and stats["progress"] < 1.0:
            return
        self._last = now
        self.report({"step": stats["step"], "progress": stats["progress"],
                     "ep_return_mean": stats["ep_return_mean"],
                     "actor_neurons": stats["actor"]["neurons_alive"], "done": False})


# ---- the sweep ----------------------------------------------------------------------------


def run_sweep(spec: SweepSpec, out: Callable[[str], None] = print) -> dict[str, str]:
    """Run every trial of ``spec`` that is not done, on Ray Tune; returns trial name ->
    final status (done | failed: why | skipped: why | interrupted). Prints a line per
    trial as it progresses, then a summary."""
    phases = plan(spec)
    trials = [t for phase in phases for t in phase]
    statuses = [trial_status(t.run_dir) for t in trials]
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    out(f"sweep {env_folder(spec.env)}: {len(trials)} trials ("
        + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")")
    outcome = {t.name: "done" for t, status in zip(trials, statuses) if status == "done"}
    todo = [[t for t in phase if t.name not in outcome] for phase in phases]
    if any(todo):
        _check_export()
        from dsp_driving.experiments.ray_tune import run_phases

        with sweep_lock(spec.out.resolve() / env_folder(spec.env)):
            outcome.update(run_phases(spec, [p for p in todo if p], out))
    print_summary(trials, outcome, out)
    return outcome


def _check_export() -> None:
    from dsp_driving.export import missing_export_modules

    missing = missing_export_modules()
    if missing:
        raise ModuleNotFoundError(f"a sweep evaluates each trial's policy.onnx: "
                                  f"{', '.join(missing)} is not installed (pip install -e "
                                  "'.[export,sweep]')")


def print_summary(trials: list[Trial], outcome: dict[str, str],
                  out: Callable[[str], None]) -> None:
    """A line per trial: its status and, when done, its return and actor sizes."""
    width = max(len(t.name) for t in trials) + 2
    out(f"{'trial':<{width}} {'status':<12} {'return':>18} {'actor':>12}")
    for t in trials:
        status = outcome.get(t.name, "not run")
        ret = actor = ""
        if status == "done" and trial_status(t.run_dir) == "done":
            result = json.loads((Path(t.run_dir) / EVAL).read_text(encoding="utf-8"))
            summary = json.loads((Path(t.run_dir) / "summary.json").read_text(
                encoding="utf-8"))
            ret = f"{result['return_mean']:.2f} +/- {result['return_std']:.2f}"
            actor = str(summary["actor"]["hidden_compact"])
        out(f"{t.name:<{width}} {status.split(':')[0]:<12} {ret:>18} {actor:>12}")
        if ":" in status:
            out(f"    {status}")
