"""Driving safety of trained policies, dsp against dense, seed by seed (issue #19).

``dsp-driving safety-report SOURCE --out results/driving`` gathers each finished trial's
policy.onnx and policy.json from a sweep's env folder (SOURCE/<variant>/seed<k>/) into
OUT/<variant>/seed<k>/, evaluates each through onnxruntime on held-out episodes (eval.json,
the keys of ``driving.safety_summary.SUMMARY_KEYS`` at its top level; a policy whose eval.json
already has the same file, episodes and seed is not evaluated again, so the command resumes),
and writes OUT/table.md, OUT/table.csv and OUT/safety.png: every safety figure per variant
and seed with its 95 % interval, the mean over seeds, and the targets:

- dsp's collision rate <= ``COLLISION_TARGET`` on every seed;
- dsp's collision rate no higher than dense's (mean over the seeds both have);
- dsp's return >= ``RETURN_TARGET`` x dense's (mean over the seeds both have).
"""

from __future__ import annotations

from collections.abc import Sequence
import csv
import hashlib
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from dsp_driving.driving.safety_summary import SUMMARY_KEYS
from dsp_driving.io_utils import atomic_write, atomic_write_json, atomic_write_text
from dsp_driving.policy_format import POLICY_FILE, sidecar_path

EVAL_FILE = "eval.json"
COLLISION_TARGET = 0.02
RETURN_TARGET = 0.95
MIN_SEEDS = 3  # per variant
MIN_EPISODES = 100  # per seed
VARIANTS = ("dense", "dsp")
# what the table shows per metric (key, header, format)
COLUMNS = (("return_mean", "return", ".1f"), ("collision_rate", "collision rate", ".3f"),
           ("collisions_per_km", "collisions / km", ".3f"), ("offroad_rate", "off-road rate",
                                                           ".3f"),
           ("route_completion", "route completion", ".3f"),
           ("driving_score", "driving score", ".3f"), ("min_ttc_p5_s", "min TTC p5 (s)", ".2f"),
           ("ttc_below_1_5s_pct", "TTC < 1.5 s (% steps)", ".2f"),
           ("jerk_p95", "jerk p95 (m/s3)", ".2f"),
           ("lateral_accel_p95", "lat. accel p95 (m/s2)", ".2f"),
           ("mean_speed_mps", "speed (m/s)", ".2f"))

log = logging.getLogger(__name__)


def _seed_of(path: Path) -> int:
    return int(path.name.removeprefix("seed"))


def _seed_dirs(parent: Path) -> list[Path]:
    """parent/seed<k> folders (others, such as seed1_old, are not trials), by seed."""
    return sorted((p for p in parent.glob("seed*")
                   if p.is_dir() and p.name.removeprefix("seed").isdigit()), key=_seed_of)


def collect(source: Path, out: Path, variants: Sequence[str] = VARIANTS,
            seeds: Sequence[int] | None = None) -> list[Path]:
    """Copy SOURCE/<variant>/seed<k>/policy.onnx and policy.json into OUT (only files that
    changed: a copied policy keeps its eval.json). Returns the policy folders in OUT."""
    folders = []
    for variant in variants:
        for run in _seed_dirs(source / variant):
            if seeds is not None and _seed_of(run) not in seeds:
                continue
            policy = run / POLICY_FILE
            if not policy.is_file():
                log.warning(f"{run}: no {POLICY_FILE} (not finished): skipped")
                continue
            dest = out / variant / run.name
            dest.mkdir(parents=True, exist_ok=True)
            for src in (policy, sidecar_path(policy)):
                target = dest / src.name
                if not target.is_file() or target.read_bytes() != src.read_bytes():
                    data = src.read_bytes()
                    atomic_write(target, lambda f, d=data: f.write(d))
            folders.append(dest)
    if not folders:
        raise FileNotFoundError(f"{source}: no finished trial of {', '.join(variants)} "
                                f"(looked for <variant>/seed<k>/{POLICY_FILE})")
    return folders


def evaluate_folder(folder: Path, episodes: int, seed: int, plots: bool = True
                    ) -> dict[str, Any]:
    """FOLDER/eval.json for FOLDER/policy.onnx (episodes from reset seed ``seed``), unless
    one with the same policy sha256, episodes and seed is there already; returns it."""
    from dsp_driving.evaluation import evaluate_onnx

    path = folder / EVAL_FILE
    if path.is_file():
        done = json.loads(path.read_text(encoding="utf-8"))
        first = (done.get("seeds") or [None])[0]
        sha = hashlib.sha256((folder / POLICY_FILE).read_bytes()).hexdigest()
        if (done.get("sha256"), done.get("episodes"), first) == (sha, episodes, seed):
            return done
    log.info(f"evaluating {folder / POLICY_FILE} on {episodes} episodes from seed {seed}")
    result, doc = evaluate_onnx(folder / POLICY_FILE, episodes, seed, series=plots)
    atomic_write_json(path, doc)
    if plots and "series" in result:
        try:
            from dsp_driving.analysis.eval_report import plot_eval
        except ModuleNotFoundError:  # matplotlib missing: the figures still count
            pass
        else:
            plot_eval(result, result["series"], folder, "eval")
    return doc


def load(out: Path) -> list[dict[str, Any]]:
    """One row per OUT/<variant>/seed<k>/eval.json: variant, seed and the document."""
    rows = []
    for variant_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        for folder in _seed_dirs(variant_dir):
            path = folder / EVAL_FILE
            if path.is_file():
                doc = json.loads(path.read_text(encoding="utf-8"))
                missing = [k for k in SUMMARY_KEYS if k not in doc]
                if missing:
                    raise ValueError(f"{path}: not a driving evaluation (no {missing})")
                rows.append({"variant": variant_dir.name, "seed": _seed_of(folder),
                             "doc": doc})
    if not rows:
        raise FileNotFoundError(f"{out}: no <variant>/seed<k>/{EVAL_FILE}")
    settings = {(r["doc"]["episodes"], r["doc"]["seeds"][0]) for r in rows}
    if len(settings) > 1:
        raise ValueError(f"{out}: the eval.json files hold different evaluations (episodes, "
                         f"first seed) {sorted(settings)}: evaluate every policy alike")
    return rows


def _mean(rows: list[dict[str, Any]], variant: str, key: str,
          seeds: set[int] | None = None) -> float | None:
    values = [r["doc"][key] for r in rows if r["variant"] == variant
              and (seeds is None or r["seed"] in seeds) and r["doc"][key] is not None]
    return float(np.mean(values)) if values else None


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured figure and whether it holds."""
    dsp = {r["seed"]: r["doc"] for r in rows if r["variant"] == "dsp"}
    dense = {r["seed"]: r["doc"] for r in rows if r["variant"] == "dense"}
    shared = set(dsp) & set(dense)
    out = []
    episodes = min(r["doc"]["episodes"] for r in rows)
    out.append({"target": f">= {MIN_SEEDS} seeds each of dsp and dense, >= {MIN_EPISODES} "
                          "held-out episodes per seed",
                "measured": f"dsp {len(dsp)} seeds, dense {len(dense)}; {episodes} episodes",
                "holds": min(len(dsp), len(dense)) >= MIN_SEEDS
                and episodes >= MIN_EPISODES})
    worst = max((d["collision_rate"] for d in dsp.values()), default=None)
    out.append({"target": f"dsp collision rate <= {COLLISION_TARGET:.0%} on every seed",
                "measured": "none" if worst is None else
                ", ".join(f"seed {s}: {d['collision_rate']:.1%}" for s, d in
                          sorted(dsp.items())),
                "holds": worst is not None and worst <= COLLISION_TARGET})
    if shared:
        c_dsp = _mean(rows, "dsp", "collision_rate", shared)
        c_dense = _mean(rows, "dense", "collision_rate", shared)
        r_dsp = _mean(rows, "dsp", "return_mean", shared)
        r_dense = _mean(rows, "dense", "return_mean", shared)
        out.append({"target": "dsp collision rate no higher than dense (mean over seeds "
                              f"{sorted(shared)})",
                    "measured": f"dsp {c_dsp:.1%}, dense {c_dense:.1%}",
                    "holds": c_dsp <= c_dense})
        ratio = r_dsp / r_dense if r_dense else math.nan
        out.append({"target": f"dsp return >= {RETURN_TARGET:.0%} of dense (mean over seeds "
                              f"{sorted(shared)})",
                    "measured": f"{r_dsp:.1f} vs {r_dense:.1f} ({ratio:.1%})",
                    "holds": bool(ratio >= RETURN_TARGET)})
    return out


def _cell(doc: dict[str, Any], key: str, spec: str) -> str:
    value, ci = doc[key], doc.get(f"{key}_ci95")
    if value is None:
        return "n/a"
    text = format(value, spec)
    if ci is not None and ci[0] is not None and ci[0] != ci[1]:
        text += f" [{format(ci[0], spec)}, {format(ci[1], spec)}]"
    return text


def markdown(rows: list[dict[str, Any]]) -> str:
    """table.md: per variant and seed, every figure with its 95 % interval over episodes,
    then the means over seeds and the targets."""
    header = ["variant", "seed", "episodes", *(h for _, h, _ in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        d = r["doc"]
        lines.append("| " + " | ".join([r["variant"], str(r["seed"]), str(d["episodes"]),
                                        *(_cell(d, k, s) for k, _, s in COLUMNS)]) + " |")
    for variant in dict.fromkeys(r["variant"] for r in rows):
        n = sum(r["variant"] == variant for r in rows)
        cells = []
        for key, _, spec in COLUMNS:
            m = _mean(rows, variant, key)
            cells.append("n/a" if m is None else format(m, spec))
        lines.append("| " + " | ".join([f"**{variant} mean**", f"{n} seeds", "",
                                        *cells]) + " |")
    lines += ["", "| target | measured | holds |", "|---|---|---|"]
    for t in targets(rows):
        lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['holds'] else 'NO'} |")
    first = rows[0]["doc"]
    lines += ["", f"Each row: the policy.onnx of that trial through onnxruntime, deterministic, "
              f"on {first['episodes']} held-out episodes (reset seeds {first['seeds'][0]}.."
              f"{first['seeds'][1]}); brackets: 95 % interval over episodes "
              f"({first.get('ci95_method', '')}). Definitions: "
              "dsp_driving/driving/safety_summary.py (over episodes) and safety.py (per "
              "episode)."]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict[str, Any]]) -> str:
    """table.csv: one row per variant and seed, each figure and its interval."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    keys = [k for k in SUMMARY_KEYS if k != "episodes"]
    writer.writerow(["variant", "seed", "episodes", *(f for k in keys
                                                      for f in (k, f"{k}_ci_low",
                                                                f"{k}_ci_high"))])
    for r in rows:
        d = r["doc"]
        cells: list[Any] = [r["variant"], r["seed"], d["episodes"]]
        for k in keys:
            ci = d.get(f"{k}_ci95") or [None, None]
            cells += [d[k], ci[0], ci[1]]
        writer.writerow(["" if c is None else c for c in cells])
    return buf.getvalue()


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """safety.png: collision rate, return, min TTC p5 and driving score per seed, dsp next
    to dense, with the 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("collision_rate", "collision rate"), ("return_mean", "return"),
              ("min_ttc_p5_s", "min TTC, 5th pct. (s)"), ("driving_score", "driving score"))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    width = 0.8 / max(len(variants), 1)
    for ax, (key, title) in zip(axes, panels):
        for i, variant in enumerate(variants):
            xs, ys, lo, hi = [], [], [], []
            for r in rows:
                if r["variant"] != variant or r["doc"][key] is None:
                    continue
                v = r["doc"][key]
                ci = r["doc"].get(f"{key}_ci95") or [v, v]
                xs.append(seeds.index(r["seed"]) + (i - (len(variants) - 1) / 2) * width)
                ys.append(v)
                lo.append(max(v - ci[0], 0.0))  # an interval may exclude its estimate
                hi.append(max(ci[1] - v, 0.0))
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=variant)
        if key == "collision_rate":
            ax.axhline(COLLISION_TARGET, color="k", lw=0.8, ls="--", label="target")
        ax.set_xticks(range(len(seeds)), [f"seed {s}" for s in seeds])
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    data = buf.getvalue()
    atomic_write(path, lambda f: f.write(data))
    return path


def write(out: Path) -> tuple[list[dict[str, Any]], list[Path]]:
    """OUT/table.md, table.csv and safety.png from the eval.json files under OUT."""
    rows = load(out)
    written = [atomic_write_text(out / "table.md", markdown(rows)),
               atomic_write_text(out / "table.csv", csv_text(rows))]
    try:
        written.append(plot(rows, out / "safety.png"))
    except ModuleNotFoundError:
        log.warning("matplotlib is not installed: no safety.png")
    return rows, written
