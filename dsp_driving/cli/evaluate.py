"""``dsp-driving eval``: a run's compact actor (or a policy.onnx, without torch), evaluated
deterministically on held-out seeds. Prints the summary (on driving envs the safety figures
with 95 % intervals), writes it as JSON (default: eval.json beside the policy file) and plots
the episodes and the TTC and speed distributions (docs/evaluation.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dsp_driving.config import TrainConfig

DEFAULT_JSON = "eval.json"


def add_parser(sub: Any) -> None:
    """Register `eval` on the dsp-driving parser."""
    p = sub.add_parser("eval", help="evaluate a run's compact actor deterministically")
    p.add_argument("run", help="run folder, actor_compact.pt, or policy.onnx (needs no torch)")
    p.add_argument("--episodes", type=int,
                   help="number of episodes (default: the run's train.eval_episodes)")
    p.add_argument("--seed", type=int, help="first evaluation seed (default: train.eval_seed)")
    p.add_argument("--json", metavar="FILE",
                   help=f"where to write the summary (default: {DEFAULT_JSON} beside the "
                        "policy file)")
    plots = p.add_mutually_exclusive_group()
    plots.add_argument("--plots", metavar="DIR",
                       help="folder for the PNG plots (default: the JSON file's folder)")
    plots.add_argument("--no-plots", action="store_true", help="write no plots")
    p.add_argument("--overwrite", action="store_true", help="replace an existing JSON file "
                   "that holds another evaluation (other episodes or seeds, e.g. a sweep's)")
    p.set_defaults(func=run)


def _writable(option: str, path: Path, kind: str) -> None:
    """ValueError naming ``option`` unless ``path`` can be written as a ``kind`` ("file" or
    "folder"): not the other kind, and under folders (existing or to be made), not files."""
    if kind == "file" and path.is_dir():
        raise ValueError(f"{option}={str(path)!r}: is a folder; give a file path such as "
                         f"{path / DEFAULT_JSON}")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise ValueError(f"{option}={str(path)!r}: is a file; give a folder")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option}={str(path)!r}: {parent} is a file, not a folder")
            break


def _same_evaluation(path: Path, episodes: int, seed: int) -> None:
    """Refuse to replace a JSON file that holds another evaluation (a sweep's eval.json marks
    its trial done and feeds its table); the same episodes and seeds may be rewritten."""
    import json

    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        same = (old.get("episodes"), (old.get("seeds") or [None])[0]) == (episodes, seed)
    except (OSError, ValueError, AttributeError):
        same = False
    if not same:
        raise FileExistsError(f"--json={str(path)!r} holds another evaluation (not "
                              f"{episodes} episodes from seed {seed}); pass --overwrite to "
                              "replace it, or --json to write elsewhere")


def _matplotlib_missing() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return True
    return False


def run(args: argparse.Namespace) -> int:
    from dsp_driving.analysis.eval_report import plot_eval, summary_lines
    from dsp_driving.evaluation import eval_document, evaluate
    from dsp_driving.io_utils import atomic_write_json, json_safe

    path = Path(args.run)
    if path.suffix == ".onnx":
        # torch-free: the ONNX policy carries the normaliser, env id and config
        from dsp_driving.inference import OnnxPolicy

        policy = OnnxPolicy(path)
        policy_path, act, meta, runtime = path, policy.act, policy.metadata, "onnxruntime"
    else:
        from dsp_driving.actor_file import load_actor, resolve_actor_path

        policy_path = resolve_actor_path(path)
        actor, meta = load_actor(policy_path)
        act, runtime = actor.act, "torch"
    cfg = (meta.get("config") or {}).get("train", {})
    defaults = TrainConfig()
    episodes = cfg.get("eval_episodes", defaults.eval_episodes) if args.episodes is None \
        else args.episodes
    seed = cfg.get("eval_seed", defaults.eval_seed) if args.seed is None else args.seed
    # every input checked before the (possibly long) evaluation: nothing is half-written
    if episodes < 1:
        raise ValueError(f"--episodes={episodes}: must be >= 1")
    if seed < 0:
        raise ValueError(f"--seed={seed}: must be >= 0")
    json_path = Path(args.json) if args.json is not None else policy_path.parent / DEFAULT_JSON
    _writable("--json", json_path, "file")
    if not args.overwrite:
        _same_evaluation(json_path, episodes, seed)
    plots_dir = None if args.no_plots else (
        Path(args.plots) if args.plots is not None else json_path.parent)
    if plots_dir is not None:
        _writable("--plots", plots_dir, "folder")
        if _matplotlib_missing():
            print("plots skipped: matplotlib is not installed (pip install matplotlib)")
            plots_dir = None
    env_id = meta["env_id"]
    result = evaluate(act, env_id, episodes, seed, progress=True,
                      env_kwargs=cfg.get("env_kwargs"), series=True)
    header = {"policy": str(policy_path), "env": env_id, "runtime": runtime,
              "deterministic": True}
    if runtime == "onnxruntime":
        header["sha256"] = policy.sha256
    doc = eval_document(result, **header)
    print("\n".join(summary_lines(doc)))
    written = [atomic_write_json(json_path, json_safe(doc))]
    if plots_dir is not None:
        written += plot_eval(result, result.get("series"), plots_dir, stem=json_path.stem)
    for p in written:
        print(f"wrote {p}")
    return 0
