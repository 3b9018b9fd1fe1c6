"""A sweep's tables written where they belong: each env folder's table.md/csv/png and, with
``results``, a results folder holding the same tables, every trial's small files, and a
README.md with the combined table, every env's goals and the commands that remake every row
(``readme_text``). The numbers themselves come from ``experiments.table``.
"""

from __future__ import annotations

import logging
from pathlib import Path
import shlex
import shutil
from typing import Any

import yaml

from dsp_driving.experiments.sweep import EVAL, EVAL_EPISODES, SWEEP
from dsp_driving.experiments.table import (
    GOAL_VARIANT,
    compute_markdown,
    csv_text,
    env_dirs,
    goals_markdown,
    holds_env_folders,
    markdown_text,
    measuring_text,
    plot,
    read_trials,
    rows_markdown,
    seeds_text,
    table_rows,
)
from dsp_driving.experiments.variants import VARIANTS
from dsp_driving.io_utils import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

TRIAL_FILES = ("summary.json", "config.yaml", EVAL)
POLICY_FILES = ("policy.onnx", "policy.json")
# the variants whose exported policies are committed: the method and its refit ablation
POLICY_VARIANTS = (GOAL_VARIANT, "dsp_norefit")
# results/README.md's reproduce commands: each env's sweep spec ({env}: its folder name)
SWEEP_SPEC = "config/paper/sweeps/{env}.yaml"
README = "README.md"


def write_table(root: Path, results: Path | None = None, *, sweep_spec: str = SWEEP_SPEC
                ) -> list[dict[str, Any]]:
    """ROOT/table.md, table.csv and table.png over every env folder of ROOT; with
    ``results``, the same and every trial's small files (TRIAL_FILES; dsp's policy too)
    copied there, in the same layout. When ROOT holds env folders (is not one itself),
    each env's own table.md, table.csv and table.png also go into its env folder (of ROOT
    and of ``results``), and ``results`` gets README.md (``readme_text``; ``sweep_spec``:
    each env's sweep spec file, ``{env}`` its folder name). Returns the rows."""
    root = Path(root)
    dirs = env_dirs(root)
    trials = [t for d in dirs for t in read_trials(d)]
    if not trials:
        raise FileNotFoundError(f"{root}: no evaluated trial yet (run `dsp-driving sweep`)")
    rows = table_rows(trials)
    targets = [root] if results is None else [root, Path(results)]
    for target in targets:
        _write_files(target, rows, trials)
    if holds_env_folders(root):
        for env in dict.fromkeys(r["env"] for r in rows):
            env_rows = [r for r in rows if r["env"] == env]
            env_trials = [t for t in trials if t["env"] == env]
            for target in targets:
                _write_files(target / env, env_rows, env_trials)
    if results is not None:
        _copy_results(root, dirs, trials, Path(results))
        if holds_env_folders(root):
            atomic_write_text(Path(results) / README,
                              readme_text(root, Path(results), rows, trials, sweep_spec))
    return rows


def _write_files(target: Path, rows: list[dict[str, Any]], trials: list[dict[str, Any]]
                 ) -> None:
    target.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target / "table.csv", csv_text(rows))
    atomic_write_text(target / "table.md", markdown_text(rows, trials))
    plot(trials, target / "table.png")


def readme_text(root: Path, results: Path, rows: list[dict[str, Any]],
                trials: list[dict[str, Any]], sweep_spec: str = SWEEP_SPEC) -> str:
    """results/README.md: what the numbers are, the combined table, every env's goals, and
    the commands that make exactly these rows (``sweep_commands``) and these tables."""
    envs = list(dict.fromkeys(r["env"] for r in rows))
    lines = [f"# Results: {', '.join(envs)}", "",
             f"Every env x variant of the sweep folder `{root}`: its actor's size against the "
             f"env's dense actor and its return over seeds. {measuring_text()} Each env's "
             "folder holds its own table.md (with every seed's figures), table.csv and "
             "table.png (return against the actor's weights kept), its sweep.yaml (the "
             "settings every variant of the env shares) and every trial's summary.json, "
             "config.yaml and eval.json, with the policy.onnx and policy.json of "
             f"{' and '.join(POLICY_VARIANTS)}.",
             "", rows_markdown(rows), goals_markdown(rows, trials),
             compute_markdown(trials),
             "## Reproduce", "",
             f"Each env's sweep spec is `{sweep_spec.format(env='<env>')}` (the env, its base "
             "config, the training steps and the evaluation episodes); the options after it "
             "choose the variants and seeds of exactly the rows above (variants with the same "
             "seeds share one command). Run them from the repository root (the specs' paths "
             "are relative to it) after `pip install -e \".[export,sweep,sim]\"`, an env's "
             "commands in the order given (small_dense needs the dsp run of its seed, "
             "posthoc the dsp and dense runs). A sweep resumes: rerunning a command retrains "
             "no finished trial (one with eval.json), and an interrupted one continues from "
             f"its checkpoint. On a fresh clone, `cp -rn {results}/. {root}/` first puts "
             "the committed trials back, so that only the missing ones train (posthoc "
             "starts from the dense run's checkpoint.pt, which is not committed: train that "
             "dense seed again; docs/experiments.md, \"On a fresh clone\").", ""]
    for env in envs:
        lines += [f"### {env}", "", "```bash"]
        commands, notes = sweep_commands(root, env, trials, sweep_spec)
        lines += commands + ["```", ""]
        lines += [f"- note: {n}" for n in notes] + ([""] if notes else [])
    lines += ["Then the tables (this README, each env's table.md, table.csv and table.png, "
              "and the copies of the trials' small files):", "", "```bash",
              f"dsp-driving table {shlex.quote(str(root))} --results "
              f"{shlex.quote(str(results))}", "```", ""]
    return "\n".join(lines)


def sweep_commands(root: Path, env: str, trials: list[dict[str, Any]],
                   sweep_spec: str = SWEEP_SPEC) -> tuple[list[str], list[str]]:
    """The ``dsp-driving sweep`` commands that make exactly ``env``'s trials under ``root``:
    one per set of seeds (the variants with those seeds, in VARIANTS' order), ordered so a
    variant's needs (small_dense, posthoc) run in the same command or an earlier one; and
    notes on anything that keeps them from remaking the rows (a spec file that does not
    match the env folder's sweep.yaml, a needed run missing)."""
    seeds: dict[str, list[int]] = {}
    for t in trials:
        if t["env"] == env:
            seeds.setdefault(t["variant"], []).append(t["seed"])
    by_seeds: dict[tuple[int, ...], list[str]] = {}
    for variant in VARIANTS:
        if variant in seeds:
            by_seeds.setdefault(tuple(sorted(seeds[variant])), []).append(variant)
    spec = sweep_spec.format(env=env)
    commands = [f"dsp-driving sweep {shlex.quote(spec)} --variants {','.join(names)} "
                f"--seeds {seeds_text(group)} --out {shlex.quote(str(root))}"
                for group, names in _ordered(by_seeds)]
    notes = []
    for variant, have in seeds.items():
        for need in VARIANTS[variant].needs:
            lacking = sorted(set(have) - set(seeds.get(need, ())))
            if lacking:
                notes.append(f"{variant} of seed{'s' if len(lacking) > 1 else ''} "
                             f"{seeds_text(lacking)} needs the {need} run of the same seed, which "
                             f"is not in the table: add {need} to its command")
    notes += _spec_notes(Path(spec), root / env)
    return commands, notes


def _ordered(groups: dict[tuple[int, ...], list[str]]
             ) -> list[tuple[tuple[int, ...], list[str]]]:
    """The (seeds, variants) groups in an order where every variant's needs (among the
    variants present) come in its own group or an earlier one; where two groups need each
    other, one is split into its variants that need nothing and the rest."""
    present = {v for names in groups.values() for v in names}
    first = list(VARIANTS).index
    pending = sorted(groups.items(), key=lambda g: first(g[1][0]))
    done: set[str] = set()
    out = []
    while pending:
        for i, (_, names) in enumerate(pending):
            if all(n in done or n in names or n not in present
                   for v in names for n in VARIANTS[v].needs):
                out.append(pending.pop(i))
                done.update(names)
                break
        else:  # a cycle between groups: run one group's variants that need nothing first
            i, (group, names) = next((i, g) for i, g in enumerate(pending)
                                     if any(not VARIANTS[v].needs for v in g[1]))
            free = [v for v in names if not VARIANTS[v].needs]
            pending[i:i + 1] = [(group, free), (group, [v for v in names if v not in free])]
    return out


def _spec_notes(spec: Path, env_dir: Path) -> list[str]:
    """Where the spec file (relative to the current folder) would not remake the env
    folder: missing, or another env, training steps or evaluation episodes than its
    sweep.yaml."""
    if not spec.is_file():
        return [f"{spec}: no such file here (write one, or give the env with --env)"]
    try:
        wanted = yaml.safe_load(spec.read_text(encoding="utf-8")) or {}
        made = yaml.safe_load((env_dir / SWEEP).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        return [f"{spec}: not checked against {env_dir / SWEEP} ({exc})"]
    if not isinstance(wanted, dict) or not isinstance(made, dict):
        return [f"{spec}: not checked against {env_dir / SWEEP} (not a mapping)"]
    config = made.get("config") or {}
    pairs = (("env", wanted.get("env"), made.get("env")),
             ("total_steps", wanted.get("total_steps"),
              (config.get("train") or {}).get("total_steps")),
             ("eval_episodes", wanted.get("eval_episodes", EVAL_EPISODES),
              (made.get("eval") or {}).get("episodes")))
    return [f"{spec} gives {key}={ours!r} but {env_dir / SWEEP} was made with {theirs!r}: "
            "the command would not remake these rows" for key, ours, theirs in pairs
            if ours is not None and theirs is not None and ours != theirs]


def _copy_results(root: Path, dirs: list[Path], trials: list[dict[str, Any]],
                  dest: Path) -> None:
    for d in dirs:
        rel = d.relative_to(root) if d != root else Path()
        _copy(d / SWEEP, dest / rel / SWEEP)
    for t in trials:
        run: Path = t["run_dir"]
        names = TRIAL_FILES + (POLICY_FILES if t["variant"] in POLICY_VARIANTS else ())
        for name in names:
            if (run / name).is_file():
                _copy(run / name, dest / run.relative_to(root) / name)


def _copy(src: Path, dst: Path) -> None:
    """Copy a file atomically (temp file + rename), making its folder."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fh:
        atomic_write(dst, lambda out: shutil.copyfileobj(fh, out))
