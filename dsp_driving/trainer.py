"""A training run: run folder, stats sinks, checkpoints, resume, evaluation and summary."""

from __future__ import annotations

from collections.abc import Callable, Sequence
import json
import logging
from pathlib import Path
import time
from typing import Any

import torch
import yaml

from dsp_driving.actor_file import ACTOR_FILE, save_actor
from dsp_driving.callbacks import (
    Callback,
    CallbackList,
    JsonlSink,
    ProgressBar,
    TensorBoardSink,
)
from dsp_driving.config import Config, from_dict, from_saved_run
from dsp_driving.io_utils import atomic_torch_save, atomic_write_json, atomic_write_text
from dsp_driving.modules.mlp import count_params, macs, macs_of_sizes, params_of_sizes
from dsp_driving.policy_format import POLICY_FILE, sidecar_path
from dsp_driving.provenance import git_commit
from dsp_driving.rl.envs import check_training_mode, make_vec_env, ray_options
from dsp_driving.rl.networks import DeployedActor
from dsp_driving.rl.ppo import PPO, training_seed_range
from dsp_driving.selection import (
    Selector,
    Snapshot,
    check,
    compare,
    drive,
    select_seed_range,
)
from dsp_driving.stats import NetworkSummary, RunSummary, removed_pct

CHECKPOINT = "checkpoint.pt"
STATS = "stats.jsonl"
SUMMARY = "summary.json"
ACTOR = ACTOR_FILE
CONFIG = "config.yaml"
SNAPSHOTS = "policies"

log = logging.getLogger(__name__)


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """Read RUN_DIR/checkpoint.pt (our own file; holds RNG states, so not weights-only)."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {path}")
    return torch.load(path, map_location="cpu", weights_only=False)


def read_init_from(path: str | Path) -> dict[str, Any]:
    """train.init_from's checkpoint: a run folder (its checkpoint.pt) or the file itself."""
    path = Path(path)
    if path.is_dir():
        return load_checkpoint(path)
    if not path.is_file():
        raise FileNotFoundError(f"train.init_from={str(path)!r}: no such run folder or "
                                "checkpoint file")
    return torch.load(path, map_location="cpu", weights_only=False)


def _trim_stats(path: Path, last_update: int) -> None:
    """Drop stats lines written after the checkpoint being resumed (and any torn last line)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("update", 0) <= last_update:
            kept.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in kept))


def network_summary(hidden_dense: list[int], hidden_compact: list[int], in_dim: int,
                    out_dim: int) -> NetworkSummary:
    """The summary.json block of one network (removed % = 1 - compact / dense)."""
    dense_n, compact_n = sum(hidden_dense), sum(hidden_compact)
    dense_w = params_of_sizes([in_dim, *hidden_dense, out_dim])
    compact_w = params_of_sizes([in_dim, *hidden_compact, out_dim])
    return {
        "hidden_dense": list(hidden_dense), "hidden_compact": list(hidden_compact),
        "dense_neurons": dense_n, "compact_neurons": compact_n,
        "dense_weights": dense_w, "compact_weights": compact_w,
        "neurons_removed_pct": removed_pct(compact_n, dense_n),
        "weights_removed_pct": removed_pct(compact_w, dense_w),
    }


def compaction_table(summary: dict[str, Any]) -> str:
    """A plain-text per-layer compaction table for the terminal."""
    lines = [f"{'network':<8} {'layer':<6} {'dense':>7} {'compact':>8} {'removed':>8}"]
    for name in ("actor", "critic"):
        net = summary[name]
        for i, (d, c) in enumerate(zip(net["hidden_dense"], net["hidden_compact"])):
            lines.append(f"{name:<8} {i:<6} {d:>7} {c:>8} {removed_pct(c, d):>7.1f}%")
        lines.append(f"{name:<8} {'neur.':<6} {net['dense_neurons']:>7} "
                     f"{net['compact_neurons']:>8} {net['neurons_removed_pct']:>7.1f}%")
        lines.append(f"{name:<8} {'wts.':<6} {net['dense_weights']:>7} "
                     f"{net['compact_weights']:>8} {net['weights_removed_pct']:>7.1f}%")
    return "\n".join(lines)


def _check_seeds(cfg: Config) -> None:
    """Evaluation seeds (and selection's) must be disjoint from every environment seed
    training may use, and from each other."""
    t = cfg.train
    eval_seeds = range(t.eval_seed, t.eval_seed + t.eval_episodes)
    train_seeds = training_seed_range(cfg, cfg.num_updates + 1)
    if _overlap(eval_seeds, train_seeds):
        raise ValueError(f"invalid config: train.eval_seed={t.eval_seed}: evaluation seeds "
                         f"{eval_seeds} overlap training seeds {train_seeds}")
    if t.select_every:
        select_seeds = select_seed_range(cfg)
        for name, other in (("training", train_seeds), ("evaluation", eval_seeds)):
            if _overlap(select_seeds, other):
                raise ValueError(f"invalid config: train.select_seed={t.select_seed}: "
                                 f"selection seeds {select_seeds} overlap {name} seeds "
                                 f"{other}")


def _overlap(a: range, b: range) -> bool:
    return a.start < b.stop and b.start < a.stop


class Runner:
    """One training run in its folder: PPO with pruning, stats sinks, checkpoints, resume,
    snapshots, and at the end the compact actor, its evaluation and summary.json.

    ``Runner.new(cfg, run_dir)`` starts a run; ``Runner.resume(run_dir)`` loads one from its
    checkpoint (read once), with its saved configuration. Before ``learn``: ``set_env_kwargs``
    (e.g. the CARLA settings), ``record_bag`` (the dsp/* topics into RUN_DIR/bag) and
    ``add_callback`` (any other sink, such as trainer_node's StatsPublisher). ``learn()``
    trains to ``cfg.train.total_steps``, saving checkpoints, then ``finish()`` writes the
    compact actor, its evaluation and summary.json and ``export()`` policy.onnx.
    rsl_rl's OnPolicyRunner is the model.
    """

    def __init__(self, cfg: Config, run_dir: str | Path, checkpoint: dict[str, Any] | None,
                 callbacks: Sequence[Callback] = (), progress: bool | None = None) -> None:
        self.cfg, self.run_dir, self.checkpoint = cfg, Path(run_dir), checkpoint
        self.callbacks, self.progress = list(callbacks), progress
        _check_seeds(cfg)
        # the code that trained this run: one entry per training segment (start, each resume)
        commits = list(checkpoint.get("git_commits", [])) if checkpoint is not None else []
        commits.append(git_commit())
        self.commits = commits
        self.learner: PPO | None = None
        self.selector = Selector(cfg)

    @classmethod
    def new(cls, cfg: Config, run_dir: str | Path, **kwargs: Any) -> Runner:
        """A fresh run in ``run_dir`` (refused where a run already checkpointed)."""
        if (Path(run_dir) / CHECKPOINT).exists():
            raise FileExistsError(f"{run_dir} already holds a run: pass --resume {run_dir} "
                                  "to continue it, or choose another --out")
        return cls(cfg, run_dir, None, **kwargs)

    @classmethod
    def resume(cls, run_dir: str | Path, total_steps: int | None = None,
               **kwargs: Any) -> Runner:
        """The run in ``run_dir`` from its checkpoint, with the configuration saved there;
        ``total_steps`` (None: the saved one) may extend a finished run. Stats written after
        the checkpoint are dropped."""
        run_dir = Path(run_dir)
        checkpoint = load_checkpoint(run_dir)
        cfg = from_saved_run(checkpoint["config"])
        if total_steps is not None:
            cfg = from_dict({"train": {"total_steps": total_steps}}, cfg)
        _trim_stats(run_dir / STATS, checkpoint["state"]["progress"]["update"])
        return cls(cfg, run_dir, checkpoint, **kwargs)

    def add_callback(self, callback: Callback) -> None:
        """One more stats sink (before ``learn``)."""
        self.callbacks.append(callback)

    def set_env_kwargs(self, env_kwargs: dict[str, Any]) -> None:
        """The run's train.env_kwargs (before ``learn``; saved with the run's config)."""
        self.update_train(env_kwargs=env_kwargs)

    def update_train(self, **fields: Any) -> None:
        """Change train.* fields before ``learn`` (validated; saved with the run's config):
        settings of where the run executes (env_kwargs, vector_mode, ray_address), also on a
        resume."""
        self.cfg = from_dict({"train": fields}, self.cfg)

    def record_bag(self, resolve: Callable[[str], str] | None = None) -> Path:
        """Record the dsp/* topics into RUN_DIR/bag (RUN_DIR/bag_2 ... after a resume);
        ``resolve``: a node's resolve_topic, for its namespace. Returns the bag's path."""
        from dsp_driving.rosbag.stats_bag import StatsBag

        path = bag_dir(self.run_dir)
        self.add_callback(StatsBag(path, self.cfg.train.env_id, resolve))
        log.info(f"recording the dsp/* topics to {path} (dsp-driving report {path})")
        return path

    def learn(self) -> RunSummary:
        """Train to the configured total steps, then ``finish``; returns summary.json's
        content."""
        cfg, run_dir = self.cfg, self.run_dir
        if len(set(self.commits)) > 1:
            log.warning(f"this run was trained by several code versions: {self.commits}")
        check_training_mode(cfg.train)
        envs = make_vec_env(cfg.train.env_id, cfg.train.num_envs, cfg.train.vector_mode,
                            cfg.train.env_kwargs, ray_options(cfg.train))
        sinks: list[Callback] = []
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            # a fresh run replaces the stats of an earlier attempt that never checkpointed
            sinks.append(JsonlSink(run_dir / STATS, append=self.checkpoint is not None))
            learner = self.learner = PPO(cfg, envs)
            self.selector = Selector(cfg)
            if self.checkpoint is not None:
                learner.load_state_dict(self.checkpoint["state"])
                self.selector.load_state_dict(self.checkpoint.get("selection"),
                                              learner.action)
                log.info(f"resumed {run_dir} at update {learner.update}, step "
                         f"{learner.global_step}")
            elif cfg.train.init_from:
                learner.warm_start(read_init_from(cfg.train.init_from)["state"])
                log.info(f"started from {cfg.train.init_from}, cut to actor "
                         f"{learner.agent.actor.hidden_sizes}, critic "
                         f"{learner.agent.critic.hidden_sizes} by neuron importance")
            sinks.extend(self._own_sinks(learner))
            sinks.extend(self.callbacks)
            sink = CallbackList(sinks)
            snapshots = _Snapshots(cfg, run_dir) if cfg.train.export_every else None
            while not learner.done:
                sink.on_update(learner.step_update())
                if self.selector.due(learner):
                    self.selector.consider(learner)
                if learner.update % cfg.train.checkpoint_every == 0:
                    self.save()
                if snapshots is not None and not learner.done \
                        and learner.update % cfg.train.export_every == 0:
                    path = snapshots.export(learner, self.commits)
                    if path is not None:
                        sink.on_export(path)
            if learner.update % cfg.train.checkpoint_every != 0:
                self.save()  # the final state, unless the loop just wrote it
            for cb in sinks:
                if isinstance(cb, ProgressBar):
                    cb.close()
            summary = self.finish(on_export=sink.on_export)
            sink.on_end(summary)
            return summary
        finally:
            envs.close()
            for cb in sinks:
                cb.close()

    def _own_sinks(self, learner: PPO) -> list[Callback]:
        """TensorBoard and the progress bar, as the config asks."""
        cfg, sinks = self.cfg, []
        if cfg.train.tensorboard:
            purge = learner.global_step + 1 if self.checkpoint is not None else None
            sinks.append(TensorBoardSink(self.run_dir / "tb", purge_step=purge))
        if self.progress if self.progress is not None else cfg.train.progress:
            sinks.append(ProgressBar(cfg.num_updates * cfg.batch_size, learner.global_step,
                                     desc=cfg.train.env_id))
        return sinks

    def save(self) -> None:
        """RUN_DIR/checkpoint.pt, atomically: config, learner state and code versions."""
        atomic_torch_save(self.run_dir / CHECKPOINT,
                          {"config": self.cfg.to_dict(), "state": self.learner.state_dict(),
                           "selection": self.selector.state_dict(),
                           "git_commits": self.commits})

    def finish(self, on_export: Callable[[Path], None] | None = None) -> RunSummary:
        """Compact the chosen actor (the best snapshot under train.select_every, else the
        last), save it, evaluate it, ``export`` it, then write summary.json (``on_export(path)``
        is told about the file). The masked network, the compact actor and policy.onnx must
        drive the evaluation episodes alike (selection.compare): if they do not, summary.json
        records it, no policy.onnx is left (policy.rejected.onnx) and GateError is raised.
        summary.json is written last, so a run that has it has passed or failed its gate."""
        cfg, learner, run_dir = self.cfg, self.learner, self.run_dir
        # products of an earlier finish (a resume that extends the run) must not outlive it
        for stale in (run_dir / SUMMARY, run_dir / POLICY_FILE, sidecar_path(run_dir /
                                                                             POLICY_FILE)):
            stale.unlink(missing_ok=True)
        chosen = self.selector.best if self.selector.best is not None else Snapshot.of(learner)
        actor = chosen.deployed()
        meta = actor_meta(cfg, learner, actor, self.commits)
        if self.selector.best_entry is not None:
            meta["selected"] = {k: self.selector.best_entry[k] for k in ("update", "step")}
            meta["global_step"] = self.selector.best_entry["step"]  # the snapshot's step
        critic_block = network_summary(list(cfg.net.critic_hidden),
                                       learner.compact_critic_hidden(), learner.obs_dim, 1)
        save_actor(run_dir / ACTOR, actor, meta)
        episodes, seed = cfg.train.eval_episodes, cfg.train.eval_seed
        result = drive(actor.act, cfg, episodes, seed)
        masked = chosen.masked()
        runs = {"compact": result, "masked": drive(masked.act, cfg, episodes, seed)}
        policies = {"compact": actor.act, "masked": masked.act}
        discrete = actor.kind == "discrete"
        gate = compare(runs, policies, discrete)
        path = None
        if gate["passed"] and cfg.train.export_onnx:
            path = self.export()
            if path is not None:
                from dsp_driving.inference import OnnxPolicy

                policies["onnx"] = OnnxPolicy(path).act
                runs["onnx"] = drive(policies["onnx"], cfg, episodes, seed)
                gate = compare(runs, policies, discrete)
                if not gate["passed"]:
                    _reject(path)
                    path = None
        gate["onnx_checked"] = "onnx" in runs  # False: no policy.onnx (not exported)
        wall_s = learner.wall_s
        summary: RunSummary = {
            "env": cfg.train.env_id,
            "seed": cfg.train.seed,
            "total_steps": learner.global_step,
            "wall_s": wall_s,
            "steps_per_s": learner.global_step / wall_s if wall_s > 0 else 0.0,
            "actor": meta["actor"],
            "critic": critic_block,
            "eval": {k: result[k] for k in ("episodes", "return_mean", "return_std")},
            "gate": gate,
        }
        if "safety" in result:
            summary["eval"]["collision_rate"] = result["safety"]["collision_rate"]
            summary["safety"] = result["safety"]
        selection = self.selector.summary()
        if selection is not None:
            summary["selection"] = selection
        atomic_write_json(run_dir / SUMMARY, summary)
        log.info(compaction_table(summary))
        log.info(f"actor MACs per forward: {meta['dense_macs']} dense -> {meta['macs']} "
                 "compact")
        log.info(f"eval ({result['episodes']} episodes, seeds {result['seeds'][0]}.."
                 f"{result['seeds'][1]}): return {result['return_mean']:.2f} "
                 f"+/- {result['return_std']:.2f}")
        if selection is not None and self.selector.best_entry is not None:
            best = self.selector.best_entry
            log.info(f"chose the snapshot of update {best['update']} (step {best['step']}; "
                     f"selection: collision rate {best['collision_rate']:.2f}, return "
                     f"{best['return_mean']:.2f} on seeds {selection['seeds'][0]}.."
                     f"{selection['seeds'][1]}), best of {len(selection['evaluated'])}")
        log.info(f"wrote {run_dir / SUMMARY} and {run_dir / ACTOR}")
        self._check_gate(summary)
        if path is not None and on_export is not None:
            on_export(path)
        return summary

    def _check_gate(self, summary: RunSummary) -> None:
        block = summary["gate"]
        compared = ", ".join(f"{k} {v['max_abs_diff']:.2g}"
                             for k, v in block["compared"].items())
        if block["passed"]:
            log.info(f"gate: {' = '.join([block['reference'], *block['compared']])} on "
                     f"{block['episodes']} episodes (max |action diff| {compared})")
            return
        log.error(f"gate FAILED: {block['failures'][:3]}")
        check(block)

    def export(self) -> Path | None:
        """RUN_DIR/policy.onnx (and policy.json) from the saved compact actor, when the
        export extra is installed; its path, or None when nothing was exported (a failed
        export is logged, never raised: the run's own files are already saved)."""
        from dsp_driving.export import missing_export_modules

        missing = missing_export_modules()
        if missing:
            log.info(f"skipped ONNX export ({', '.join(missing)} not installed): pip install "
                     f"-e '.[export]', then `dsp-driving export {self.run_dir}`")
            return None
        from dsp_driving.export import export_run

        try:
            return export_run(self.run_dir)[0]
        except Exception as exc:  # the run is saved; a failed export must not crash it
            log.error(f"ONNX export failed ({type(exc).__name__}: {exc}); the run itself is "
                      f"complete. Retry with `dsp-driving export {self.run_dir}`")
            return None


def _reject(path: Path) -> None:
    """Move a policy.onnx that failed the gate (and its sidecar) aside:
    policy.rejected.onnx, so nothing deploys it by its usual name."""
    rejected = path.with_name(path.stem + ".rejected" + path.suffix)
    path.replace(rejected)
    if sidecar_path(path).exists():
        sidecar_path(path).replace(sidecar_path(rejected))
    log.error(f"moved {path} to {rejected}: it failed the closed-loop gate")


def train(cfg: Config, run_dir: str | Path, resume: bool = False,
          callbacks: Sequence[Callback] = (), progress: bool | None = None) -> dict[str, Any]:
    """Train (or resume) a run in ``run_dir``; returns summary.json's content.

    On resume the configuration saved in the checkpoint is used; only
    ``cfg.train.total_steps`` is taken from ``cfg`` (so a finished run can be extended).
    """
    kwargs = {"callbacks": callbacks, "progress": progress}
    runner = (Runner.resume(run_dir, cfg.train.total_steps, **kwargs) if resume
              else Runner.new(cfg, run_dir, **kwargs))
    return runner.learn()


def default_run_dir(cfg: Config) -> Path:
    """runs/<env>_s<seed>_<YYYYmmdd-HHMMSS>."""
    return Path("runs") / (f"{cfg.train.env_id.replace('/', '_')}_s{cfg.train.seed}_"
                           f"{time.strftime('%Y%m%d-%H%M%S')}")


def bag_dir(run_dir: str | Path) -> Path:
    """RUN_DIR/bag, or after a resume the first free RUN_DIR/bag_2, bag_3, ... (a rosbag2
    bag is never appended to)."""
    run_dir = Path(run_dir)
    path, k = run_dir / "bag", 2
    while path.exists():
        path, k = run_dir / f"bag_{k}", k + 1
    return path


def actor_meta(cfg: Config, learner: PPO, actor: DeployedActor,
               git_commits: Sequence[str | None] = ()) -> dict[str, Any]:
    """The metadata saved with a compact actor (actor_compact.pt, and policy.onnx's)."""
    obs_dim, act_dim = learner.obs_dim, learner.action.dim
    actor_block = network_summary(list(cfg.net.actor_hidden), actor.mlp.hidden_sizes,
                                  obs_dim, act_dim)
    assert actor_block["compact_weights"] == count_params(actor.mlp)
    return {"env_id": cfg.train.env_id, "config": cfg.to_dict(),
            "global_step": learner.global_step, "actor": actor_block,
            "macs": macs(actor.mlp),
            "dense_macs": macs_of_sizes([obs_dim, *cfg.net.actor_hidden, act_dim]),
            "git_commit": git_commits[0] if git_commits else git_commit(),
            "git_commits": list(dict.fromkeys(git_commits)),
            "created_unix": time.time()}


class _Snapshots:
    """Exports the current compact actor to RUN_DIR/policies/policy_uUPDATE.onnx."""

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        from dsp_driving.export import missing_export_modules

        self.cfg, self.dir = cfg, run_dir / SNAPSHOTS
        self.missing = missing_export_modules()
        if self.missing:
            log.warning(f"train.export_every={cfg.train.export_every} but "
                f"{', '.join(self.missing)} is not installed: no snapshots are exported "
                "(pip install -e '.[export]')")
        self._env_info: dict[str, Any] | None = None

    def export(self, learner: PPO, git_commits: Sequence[str | None]) -> Path | None:
        """Write one snapshot; None when the export extra is missing or the export failed."""
        if self.missing:
            return None
        from dsp_driving.export import export_actor
        from dsp_driving.rl.envs import describe_env

        if self._env_info is None:
            self._env_info = describe_env(self.cfg.train.env_id, self.cfg.train.env_kwargs)
        actor = learner.deployed_actor()
        self.dir.mkdir(parents=True, exist_ok=True)
        out = self.dir / f"policy_u{learner.update:06d}.onnx"
        try:
            export_actor(actor, actor_meta(self.cfg, learner, actor, git_commits), out,
                         self._env_info)
        except Exception as exc:  # a failed snapshot must not stop training
            log.warning(f"snapshot export at update {learner.update} failed "
                     f"({type(exc).__name__}: {exc})")
            return None
        return out
