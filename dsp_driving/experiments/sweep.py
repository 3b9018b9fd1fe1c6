"""Sweeps of one env x variants x seeds on Ray Tune (docs/experiments.md).

Every trial is an ordinary run folder, DIR/<env>/<variant>/seed<k>/, and the state of a
sweep is those folders: a trial with eval.json is done, one with summary.json only needs its
evaluation, one with checkpoint.pt resumes from it, anything else starts. So rerunning the
same command re-trains nothing that finished and picks up what was interrupted, on this
machine or another that sees DIR. Variants that need other variants' runs (small_dense and
posthoc) run in a second phase, after every trial they need.

Ray Tune schedules the trials, one CPU each: a local Ray by default, or an existing cluster
(``address``, as ``ray start --head`` / ``ray up`` print it; DIR must then be on storage
every node sees, and dsp_driving installed on each).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import json
import logging
from pathlib import Path
import time
from typing import Any

import yaml

from dsp_driving.callbacks import BaseCallback
from dsp_driving.config import Config, default_config_path, from_dict, load_config
from dsp_driving.experiments.variants import VARIANTS, check_variants, variant_config
from dsp_driving.io_utils import atomic_write_json, atomic_write_text
from dsp_driving.stats import UpdateStats
from dsp_driving.validation import require

log = logging.getLogger(__name__)

EVAL = "eval.json"  # the table's evaluation: policy.onnx through onnxruntime
SWEEP = "sweep.yaml"  # DIR/<env>/sweep.yaml: the settings every trial of the env shares
TRIAL_LOG = "trial.log"
EVAL_SEED = 2_000_000  # held out: training uses seed.., summary.json's eval 1_000_000..
EVAL_EPISODES = 20
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
    address: str | None = None  # None: a local Ray

    def __post_init__(self) -> None:
        require(bool(self.env), "env", self.env, "must name a gymnasium env id")
        check_variants(list(self.variants))
        require(len(self.variants) > 0, "variants", list(self.variants), "must not be empty")
        require(len(self.seeds) > 0 and all(s >= 0 for s in self.seeds), "seeds",
                list(self.seeds), "must be a non-empty list of seeds >= 0")
        require(len(set(self.seeds)) == len(self.seeds), "seeds", list(self.seeds),
                "each seed may be named once")
        require(self.total_steps is None or self.total_steps > 0, "total_steps",
                self.total_steps, "must be > 0")
        require(self.eval_episodes >= 1, "eval_episodes", self.eval_episodes, "must be >= 1")
        require(self.max_concurrent is None or self.max_concurrent >= 1, "max_concurrent",
                self.max_concurrent, "must be >= 1")

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
        values["out"] = Path(values["out"])
        if values.get("config") is not None:
            values["config"] = Path(values["config"])
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
    """The trials in phases (a trial runs after every trial it needs); checks the env's
    sweep.yaml (an env folder holds one set of settings) and the needed runs."""
    base = base_config(spec)
    env_dir = spec.out.resolve() / env_folder(spec.env)
    _check_sweep_file(env_dir, base, spec)
    first, second = [], []
    for variant in spec.variants:
        for seed in spec.seeds:
            needs = {n: str(env_dir / n / f"seed{seed}") for n in VARIANTS[variant].needs}
            for need, path in needs.items():
                if need not in spec.variants and trial_status(path) not in ("done",
                                                                            "evaluate"):
                    raise ValueError(f"variant {variant} needs the {need} run of seed {seed}"
                                     f" ({path}): add {need} to the variants")
            trial = Trial(spec.env, variant, seed, str(env_dir / variant / f"seed{seed}"),
                          base.to_dict(), needs, spec.eval_episodes, EVAL_SEED)
            if not needs:
                check_trial(trial)
            (second if needs else first).append(trial)
    return [phase for phase in (first, second) if phase]


def _check_sweep_file(env_dir: Path, base: Config, spec: SweepSpec) -> None:
    """Write DIR/<env>/sweep.yaml, or check this command's settings against it: what every
    variant shares (net, ppo, train, evaluation). The pruning settings only the pruning
    variants use are checked per trial (``check_trial``)."""
    shared = {k: v for k, v in base.to_dict().items() if k != "pruning"}
    settings = {"env": spec.env, "config": shared,
                "eval": {"episodes": spec.eval_episodes, "seed": EVAL_SEED}}
    path = env_dir / SWEEP
    if path.is_file():
        saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        diff = _first_difference(saved, json.loads(json.dumps(settings)))
        if diff is not None:
            key, old, new = diff
            raise ValueError(f"{path} was made with {key}={old!r}, this command gives "
                             f"{new!r}: one env folder holds one set of settings (choose "
                             "another --out, or the same settings)")
        return
    env_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(settings, sort_keys=False))


def check_trial(trial: Trial) -> None:
    """A started trial must have been started with the config this command gives it (its
    saved config.yaml; pruning settings count only where pruning is on)."""
    saved_path = Path(trial.run_dir) / "config.yaml"
    if trial_status(trial.run_dir) == "new" or not saved_path.is_file():
        return
    saved = _comparable(yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {})
    expected = _comparable(variant_config(trial.variant, from_dict(trial.base), trial.seed,
                                          trial.base["train"]["total_steps"]).to_dict())
    diff = _first_difference(saved, expected)
    if diff is not None:
        key, old, new = diff
        raise ValueError(f"{trial.name} was started with {key}={old!r}, this command gives "
                         f"{new!r}: choose another --out, or delete {trial.run_dir} to "
                         "train it again")


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config without what does not change its result (progress bar, TensorBoard)
    and, where pruning is off, without the pruning settings it never used."""
    out = json.loads(json.dumps(config))
    for key in ("progress", "tensorboard"):
        out.get("train", {}).pop(key, None)
    if not out.get("pruning", {}).get("enabled", True):
        out["pruning"] = {"enabled": False}
    return out


def _first_difference(old: Any, new: Any, key: str = "") -> tuple[str, Any, Any] | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in [*old, *(k for k in new if k not in old)]:
            found = _first_difference(old.get(k), new.get(k), f"{key}.{k}" if key else k)
            if found is not None:
                return found
        return None
    return None if old == new else (key, old, new)


# ---- a trial, in whichever process runs it ------------------------------------------------


def run_trial(trial: Trial, report: Callable[[dict[str, Any]], None] | None = None
              ) -> dict[str, Any]:
    """Train (or resume) the trial's run, then evaluate its policy.onnx; returns eval.json's
    content. A finished trial is only read."""
    from dsp_driving.trainer import Runner

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
            if status == "resume":
                runner = Runner.resume(run_dir)
            else:
                cfg = variant_config(trial.variant, from_dict(trial.base), trial.seed,
                                     trial.base["train"]["total_steps"],
                                     {k: Path(v) for k, v in trial.needs.items()})
                runner = Runner.new(cfg, run_dir)
            if report is not None:
                runner.add_callback(_Progress(report))
            runner.learn()
        return evaluate_policy(run_dir, trial.eval_episodes, trial.eval_seed)
    finally:
        package.removeHandler(handler)
        handler.close()


def evaluate_policy(run_dir: Path, episodes: int, seed: int) -> dict[str, Any]:
    """RUN_DIR/policy.onnx through onnxruntime, deterministic, on ``episodes`` held-out
    seeds from ``seed``: what ships is what is measured. Writes RUN_DIR/eval.json."""
    from dsp_driving.evaluation import evaluate
    from dsp_driving.inference import OnnxPolicy

    path = run_dir / "policy.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the run has no exported policy (pip install -e "
                                f"'.[export]', then `dsp-driving export {run_dir}`)")
    policy = OnnxPolicy(path)
    env_kwargs = policy.metadata.get("config", {}).get("train", {}).get("env_kwargs")
    result = evaluate(policy.act, policy.env_id, episodes, seed, env_kwargs=env_kwargs)
    out = {"policy": path.name, "sha256": policy.sha256, "runtime": "onnxruntime",
           "deterministic": True, **result}
    atomic_write_json(run_dir / EVAL, out)
    return out


class _Progress(BaseCallback):
    """Reports a trial's progress to Ray Tune at most every PROGRESS_EVERY_S (and at its
    last update)."""

    def __init__(self, report: Callable[[dict[str, Any]], None]) -> None:
        self.report, self._last = report, -float("inf")

    def on_update(self, stats: UpdateStats) -> None:
        now = time.monotonic()
        if now - self._last < PROGRESS_EVERY_S and stats["progress"] < 1.0:
            return
        self._last = now
        self.report({"step": stats["step"], "progress": stats["progress"],
                     "ep_return_mean": stats["ep_return_mean"],
                     "actor_neurons": stats["actor"]["neurons_alive"],
                     "done": False})


# ---- the sweep, on Ray Tune ---------------------------------------------------------------


def _trainable(config: dict[str, Any]) -> None:
    """Ray Tune's function trainable: one trial."""
    from ray import tune

    trial = Trial(**config["trial"])
    result = run_trial(trial, tune.report)
    tune.report({"done": True, "return_mean": result["return_mean"],
                 "return_std": result["return_std"]})


def run_sweep(spec: SweepSpec, out: Callable[[str], None] = print) -> dict[str, str]:
    """Run every trial of ``spec`` that is not done; returns trial name -> final status
    (done, or failed: why). Prints a line per trial as it progresses, then a summary."""
    phases = plan(spec)
    trials = [t for phase in phases for t in phase]
    counts: dict[str, int] = {}
    for t in trials:
        counts[trial_status(t.run_dir)] = counts.get(trial_status(t.run_dir), 0) + 1
    out(f"sweep {env_folder(spec.env)}: {len(trials)} trials ("
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ")")
    todo = [[t for t in phase if trial_status(t.run_dir) != "done"] for phase in phases]
    outcome = {t.name: "done" for t in trials if trial_status(t.run_dir) == "done"}
    if any(todo):
        _check_export()
        outcome.update(_run_on_ray(spec, [p for p in todo if p], out))
    _print_summary(trials, outcome, out)
    return outcome


def _check_export() -> None:
    from dsp_driving.export import missing_export_modules

    missing = missing_export_modules()
    if missing:
        raise ModuleNotFoundError(f"a sweep evaluates each trial's policy.onnx: "
                                  f"{', '.join(missing)} is not installed (pip install -e "
                                  "'.[export,sweep]')")


def _run_on_ray(spec: SweepSpec, phases: Sequence[Sequence[Trial]],
                out: Callable[[str], None]) -> dict[str, str]:
    try:
        import ray
        from ray import tune
    except ModuleNotFoundError:
        raise ModuleNotFoundError("dsp-driving sweep runs on Ray Tune: pip install -e "
                                  "'.[sweep]'") from None
    started = not ray.is_initialized()
    if started:
        # "local": a Ray of this sweep's own, never one another sweep on this machine started
        ray.init(address=spec.address or "local", include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    outcome: dict[str, str] = {}
    storage = spec.out.resolve() / "_ray"
    try:
        for i, phase in enumerate(phases, 1):
            if i > 1 and any(s != "done" for s in outcome.values()):
                failed = sorted(n for n, s in outcome.items() if s != "done")
                for t in phase:
                    outcome[t.name] = f"skipped: needs runs that failed ({', '.join(failed)})"
                break
            by_name = {t.name: t for t in phase}
            printer = _progress_printer(out)
            tuner = tune.Tuner(
                tune.with_resources(_trainable, {"cpu": 1}),
                param_space={"trial": tune.grid_search(
                    [dataclasses.asdict(t) for t in phase])},
                tune_config=tune.TuneConfig(
                    max_concurrent_trials=spec.max_concurrent,
                    trial_name_creator=lambda tr: Trial(**tr.config["trial"]).name,
                    trial_dirname_creator=lambda tr: Trial(**tr.config["trial"]).name
                    .replace("/", "_")),
                run_config=tune.RunConfig(
                    name=f"{env_folder(spec.env)}_phase{i}_{time.strftime('%Y%m%d-%H%M%S')}",
                    storage_path=str(storage), verbose=0, callbacks=[printer],
                    failure_config=tune.FailureConfig(max_failures=0)))
            for result in tuner.fit():
                name = Trial(**result.config["trial"]).name
                outcome[name] = ("done" if result.error is None else
                                 f"failed: {type(result.error).__name__}: "
                                 f"{str(result.error).strip().splitlines()[-1]} (log: "
                                 f"{Path(by_name[name].run_dir) / TRIAL_LOG})")
    finally:
        if started:
            ray.shutdown()
    return outcome


def _progress_printer(out: Callable[[str], None]) -> Any:
    """A Ray Tune callback printing a line per trial report (ray is imported only here)."""
    from ray import tune

    class Printer(tune.Callback):
        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            out(_progress_line(trial.config["trial"], result))

        def on_trial_error(self, iteration: int, trials: list, trial: Any,
                           **info: Any) -> None:
            t = Trial(**trial.config["trial"])
            out(f"{t.name}: FAILED (log: {Path(t.run_dir) / TRIAL_LOG})")

    return Printer()


def _progress_line(trial: dict[str, Any], result: dict[str, Any]) -> str:
    name = Trial(**trial).name
    if result.get("done"):
        return (f"{name}: done, policy.onnx return {result['return_mean']:.2f} +/- "
                f"{result['return_std']:.2f}")
    ret = result.get("ep_return_mean")
    return (f"{name}: {100 * result['progress']:5.1f} % (step {result['step']}), "
            f"training return {'-' if ret is None else f'{ret:.1f}'}, actor "
            f"{result['actor_neurons']} neurons")


def _print_summary(trials: list[Trial], outcome: dict[str, str],
                   out: Callable[[str], None]) -> None:
    out(f"{'trial':<32} {'status':<8} {'return':>16} {'actor':>12}")
    for t in trials:
        status = outcome.get(t.name, "not run")
        ret, actor = "", ""
        if status == "done":
            result = json.loads((Path(t.run_dir) / EVAL).read_text(encoding="utf-8"))
            summary = json.loads((Path(t.run_dir) / "summary.json").read_text(
                encoding="utf-8"))
            ret = f"{result['return_mean']:.2f} +/- {result['return_std']:.2f}"
            actor = str(summary["actor"]["hidden_compact"])
        out(f"{t.name:<32} {status.split(':')[0]:<8} {ret:>16} {actor:>12}")
        if status not in ("done",):
            out(f"    {status}")
