"""A sweep's trials on Ray Tune, one CPU each: a Ray of the sweep's own by default, or an
existing cluster (``address``, as ``ray start --head`` / ``ray up`` print it; DIR must then
be on storage every node sees, and dsp_driving installed on each). Ray is imported only
here (the ``sweep`` extra)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
import time
from typing import Any

from dsp_driving.experiments.sweep import (
    TRIAL_LOG,
    SweepSpec,
    Trial,
    env_folder,
    run_trial,
    trial_status,
)

INTERRUPTED = "interrupted"


def _trainable(config: dict[str, Any], trials: dict[str, Trial]) -> None:
    """Ray Tune's function trainable: the trial named ``config["trial"]``."""
    from ray import tune

    result = run_trial(trials[config["trial"]], tune.report)
    tune.report({"done": True, "return_mean": result["return_mean"],
                 "return_std": result["return_std"]})


def run_phases(spec: SweepSpec, phases: Sequence[Sequence[Trial]],
               out: Callable[[str], None]) -> dict[str, str]:
    """Run the phases in order; a dependent trial runs only when its own needs are done
    (skipped otherwise, with why). A Ctrl-C stops the sweep between or within phases: the
    trials it stopped say ``interrupted`` and resume on the next run."""
    try:
        import ray
    except ModuleNotFoundError:
        raise ModuleNotFoundError("dsp-driving sweep runs on Ray Tune: pip install -e "
                                  "'.[sweep]'") from None
    started = not ray.is_initialized()
    if started:
        # "local": a Ray of this sweep's own, never one another sweep on this machine started
        ray.init(address=spec.address or "local", include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    outcome: dict[str, str] = {}
    try:
        for i, phase in enumerate(phases, 1):
            ready = [t for t in phase if t.needs_done()]
            for t in phase:
                if t not in ready:
                    failed = [n for n, p in t.needs.items() if trial_status(p) != "done"]
                    outcome[t.name] = (f"skipped: its {', '.join(failed)} run of seed "
                                       f"{t.seed} is not done")
            if ready:
                outcome.update(_fit(spec, i, ready, out))
            if INTERRUPTED in outcome.values():
                for t in (t for later in phases[i:] for t in later):
                    outcome.setdefault(t.name, INTERRUPTED)
                break
    finally:
        if started:
            ray.shutdown()
    return outcome


def _fit(spec: SweepSpec, phase: int, trials: Sequence[Trial],
         out: Callable[[str], None]) -> dict[str, str]:
    from ray import tune

    by_name = {t.name: t for t in trials}
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_trainable, trials=by_name), {"cpu": 1}),
        param_space={"trial": tune.grid_search(list(by_name))},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=spec.max_concurrent,
            trial_name_creator=lambda tr: tr.config["trial"],
            trial_dirname_creator=lambda tr: tr.config["trial"].replace("/", "_")),
        run_config=tune.RunConfig(
            name=f"{env_folder(spec.env)}_phase{phase}_{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(spec.out.resolve() / "_ray"), verbose=0,
            callbacks=[_progress_printer(out)],
            failure_config=tune.FailureConfig(max_failures=0)))
    outcome = {}
    for result in tuner.fit():
        name = result.config["trial"]
        if trial_status(by_name[name].run_dir) == "done":
            outcome[name] = "done"
        elif result.error is not None:
            error = str(result.error).strip().splitlines() or [""]
            outcome[name] = (f"failed: {type(result.error).__name__}: {error[-1]} (log: "
                             f"{Path(by_name[name].run_dir) / TRIAL_LOG}, {result.path})")
        else:  # stopped before it finished: Ctrl-C (Tune returns normally then)
            outcome[name] = INTERRUPTED
    return outcome


def _progress_printer(out: Callable[[str], None]) -> Any:  # -> ray.tune.Callback
    """A Ray Tune callback printing a line per trial report."""
    from ray import tune

    class Printer(tune.Callback):
        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            out(progress_line(trial.config["trial"], result))

        def on_trial_error(self, iteration: int, trials: list, trial: Any,
                           **info: Any) -> None:
            out(f"{trial.config['trial']}: FAILED (see {TRIAL_LOG} in its run folder)")

    return Printer()


def progress_line(name: str, result: dict[str, Any]) -> str:
    """One trial's progress (or its final evaluation) as a line."""
    if result.get("done"):
        return (f"{name}: done, policy.onnx return {result['return_mean']:.2f} +/- "
                f"{result['return_std']:.2f}")
    ret = result.get("ep_return_mean")
    return (f"{name}: {100 * result['progress']:5.1f} % (step {result['step']}), "
            f"training return {'-' if ret is None else f'{ret:.1f}'}, actor "
            f"{result['actor_neurons']} neurons")
