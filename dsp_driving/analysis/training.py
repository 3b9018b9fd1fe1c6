"""A training bag (trainer_node's dsp/* topics) -> compaction and learning figures, plots, CSVs.

Topics, matched by the end of their name (any namespace): ``dsp/compaction`` (per network and
per hidden layer), ``dsp/compaction/summary`` (used when dsp/compaction was not recorded),
``dsp/training`` (per update, then the final ``evaluation``) and ``dsp/policy``.
"""

from __future__ import annotations

import ast
from math import nan
from pathlib import Path
from typing import Any

from dsp_driving import topics
from dsp_driving.analysis.plots import figure, save_png, write_csv
from dsp_driving.rosbag.reader import BagData
from dsp_driving.stats import network_R, removed_pct

# the names trainer_node publishes
COMPACTION, SUMMARY, TRAINING, POLICY = (topics.COMPACTION_TOPIC, topics.SUMMARY_TOPIC,
                                         topics.TRAINING_TOPIC, topics.POLICY_TOPIC)
TOPICS = (COMPACTION, SUMMARY, TRAINING, POLICY)
NETS = ("actor", "critic")
LAYER_COLUMNS = ("step", "net", "layer", "alive", "total", "weights_alive", "weights_total",
                 "threshold")
NETWORK_COLUMNS = ("step", "net", "neurons_alive", "neurons_total", "weights_alive",
                   "weights_total", "weights_removed_pct", "R", "kappa")


def topic_role(name: str) -> str | None:
    """Which training topic ``name`` is (None: not one)."""
    for suffix in (SUMMARY, COMPACTION, TRAINING, POLICY):  # longest first
        if name == "/" + suffix or name.endswith("/" + suffix):
            return suffix
    return None


def _value(text: str) -> Any:
    """A diagnostics value: a number (repr; 'nan'), a list (hidden sizes) or the text."""
    try:
        return float(text)
    except ValueError:
        pass
    if text.startswith("["):
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            pass
    return text


def _statuses(msg: Any) -> list[tuple[str, dict[str, Any]]]:
    """(name after 'node: ', values) of each status of a DiagnosticArray."""
    return [(s.name.split(": ", 1)[-1], {kv.key: _value(kv.value) for kv in s.values})
            for s in msg.status]


def _int(v: Any) -> Any:
    return int(v) if isinstance(v, float) and v.is_integer() else v


def analyse(bag: BagData) -> dict[str, Any] | None:
    """The training figures of ``bag`` (None when it holds no training topic)."""
    by_role: dict[str, list[tuple[int, Any]]] = {}
    for name, msgs in bag.messages.items():
        role = topic_role(name)
        if role is not None:
            by_role.setdefault(role, []).extend(msgs)
    if not by_role:
        return None
    layers, networks = _compaction_rows(by_role.get(COMPACTION, []))
    updates, evaluation = _training_rows(by_role.get(TRAINING, []))
    summary = []
    for _, msg in by_role.get(SUMMARY, []):
        labels = msg.layout.dim[0].label.split(",") if len(msg.layout.dim) else []
        if len(labels) == len(msg.data):
            summary.append({k: float(x) for k, x in zip(labels, msg.data)})
    policies = [(t, msg.data) for t, msg in by_role.get(POLICY, [])]
    return {"layers": layers, "networks": networks, "summary": summary, "updates": updates,
            "evaluation": evaluation, "policies": policies,
            "final": _final(layers, networks, evaluation)}


def _compaction_rows(messages: list[tuple[int, Any]]) -> tuple[list[dict], list[dict]]:
    """dsp/compaction as rows: one per hidden layer and update, one per network and update."""
    layers, networks = [], []
    for _, msg in messages:
        for name, v in _statuses(msg):
            net, _, layer = name.partition("/")
            if net not in NETS:
                continue
            if layer:
                layers.append({"step": _int(v.get("step")), "net": net,
                               "layer": int(layer.removeprefix("layer") or 0),
                               **{k: _int(v.get(k)) for k in LAYER_COLUMNS[3:]}})
            else:
                networks.append({"step": _int(v.get("step")), "net": net,
                                 **{k: _int(v.get(k)) for k in NETWORK_COLUMNS[2:]},
                                 "R": _int(network_R(v))})  # older bags: "regulariser"
    return layers, networks


def _training_rows(messages: list[tuple[int, Any]]) -> tuple[list[dict], dict | None]:
    """dsp/training as one row per update, and the final evaluation status (None: none)."""
    updates, evaluation = [], None
    for _, msg in messages:
        for name, v in _statuses(msg):
            if name == "training":
                updates.append({k: _int(x) for k, x in v.items()})
            elif name == "evaluation":
                evaluation = v
    return updates, evaluation


def _final(layers: list[dict], networks: list[dict], evaluation: dict | None
           ) -> dict[str, Any]:
    """The final compaction per network: the evaluation status (summary.json's figures) when
    the bag has it, else the last dsp/compaction update."""
    out: dict[str, Any] = {}
    for net in NETS:
        if evaluation is not None and f"{net}/compact_weights" in evaluation:
            out[net] = {k.split("/", 1)[1]: _int(v) for k, v in evaluation.items()
                        if k.startswith(net + "/")}
            out[net]["source"] = "final evaluation"
            continue
        last = [n for n in networks if n["net"] == net]
        if not last:
            continue
        n = last[-1]
        hidden = [row for row in layers if row["net"] == net and row["step"] == n["step"]]
        alive, total = n.get("neurons_alive"), n.get("neurons_total")
        removed = removed_pct(alive, total) if isinstance(alive, (int, float)) \
            and isinstance(total, (int, float)) else nan
        out[net] = {"hidden_dense": [row["total"] for row in hidden],
                    "hidden_compact": [row["alive"] for row in hidden],
                    "dense_neurons": total, "compact_neurons": alive,
                    "dense_weights": n.get("weights_total"),
                    "compact_weights": n.get("weights_alive"),
                    "weights_removed_pct": n.get("weights_removed_pct", nan),
                    "neurons_removed_pct": removed,
                    "source": f"last update (step {n['step']}): no final evaluation in the bag"}
    return out


def write(figures: dict[str, Any], out: Path) -> tuple[list[str], list[str]]:
    """CSVs and plots of the training figures into ``out``; returns (markdown lines, files)."""
    files: list[str] = []
    layers, networks, updates = figures["layers"], figures["networks"], figures["updates"]
    if layers:
        files.append(write_csv(out / "compaction_layers.csv", LAYER_COLUMNS,
                               [[r[k] for k in LAYER_COLUMNS] for r in layers]).name)
    if networks:
        files.append(write_csv(out / "compaction_networks.csv", NETWORK_COLUMNS,
                               [[r[k] for k in NETWORK_COLUMNS] for r in networks]).name)
    if figures["summary"]:
        cols = list(figures["summary"][0])
        files.append(write_csv(out / "compaction_summary.csv", cols,
                               [[r.get(k) for k in cols] for r in figures["summary"]]).name)
    if updates:
        cols = sorted({k for u in updates for k in u}, key=lambda k: (k not in ("update", "step"),
                                                                      k))
        files.append(write_csv(out / "training.csv", cols,
                               [[u.get(k) for k in cols] for u in updates]).name)
    files += _plots(figures, out)
    return _markdown(figures, files), files


def _series(rows: list[dict], key: str, **match: Any) -> tuple[list[float], list[float]]:
    sel = [r for r in rows if all(r.get(k) == v for k, v in match.items())
           and isinstance(r.get(key), (int, float)) and isinstance(r.get("step"), (int, float))]
    return [r["step"] for r in sel], [r[key] for r in sel]


def _plots(figures: dict[str, Any], out: Path) -> list[str]:
    layers, networks, updates = figures["layers"], figures["networks"], figures["updates"]
    files = []
    if layers:
        for key, title, name in (("alive", "neurons alive", "neurons_per_layer.png"),
                                 ("weights_alive", "weights alive (into the layer)",
                                  "weights_per_layer.png")):
            fig = figure(1, 2, width=10)
            for ax, net in zip(fig.axes, NETS):
                for i in sorted({r["layer"] for r in layers if r["net"] == net}):
                    ax.plot(*_series(layers, key, net=net, layer=i), label=f"layer {i}",
                            drawstyle="steps-post")
                ax.set(title=f"{net}: {title}", xlabel="step")
                ax.set_ylim(bottom=0)
                ax.grid(alpha=0.3)
                if ax.lines:
                    ax.legend()
            files.append(save_png(fig, out / name).name)
    if networks:
        fig = figure(1, 3, width=13)
        compression, kappa_ax, reg_ax = fig.axes
        for net in NETS:
            compression.plot(*_series(networks, "weights_removed_pct", net=net), label=net)
            reg_ax.plot(*_series(networks, "R", net=net), label=net)
        kappa_ax.plot(*_series(networks, "kappa", net=NETS[0]))
        compression.set(title="weights removed (%)", xlabel="step")
        kappa_ax.set(title="threshold factor kappa", xlabel="step")
        reg_ax.set(title="regulariser R (last minibatch)", xlabel="step")
        for ax in fig.axes:
            ax.grid(alpha=0.3)
        compression.legend()
        reg_ax.legend()
        files.append(save_png(fig, out / "compression.png").name)
    steps, returns = _series(updates, "ep_return_mean")
    if not steps and figures["summary"]:
        steps, returns = _series(figures["summary"], "ep_return_mean")
    if steps:
        fig = figure()
        ax = fig.axes[0]
        ax.plot(steps, returns)
        ax.set(title="episode return (mean of episodes finished in the update)", xlabel="step")
        ax.grid(alpha=0.3)
        files.append(save_png(fig, out / "return.png").name)
    return files


def _pct(value: Any) -> str:
    return f"{value:.1f} %" if isinstance(value, (int, float)) else "n/a"


def _markdown(figures: dict[str, Any], files: list[str]) -> list[str]:
    lines = ["## Training", ""]
    updates, final, evaluation = figures["updates"], figures["final"], figures["evaluation"]
    steps = [u["step"] for u in updates if isinstance(u.get("step"), (int, float))]
    if steps:
        lines.append(f"{len(updates)} updates, steps {steps[0]:,} to {steps[-1]:,}.")
    if evaluation is not None:
        ret, std = evaluation.get("eval/return_mean"), evaluation.get("eval/return_std")
        if isinstance(ret, float) and isinstance(std, float):
            lines.append(f"Final evaluation: return {ret:.2f} ± {std:.2f} over "
                         f"{_int(evaluation.get('eval/episodes', 'n/a'))} episodes.")
    if final:
        lines += ["", "### Final compaction", "",
                  "| network | hidden (dense → compact) | neurons | weights | "
                  "weights removed | from |", "|---|---|---|---|---|---|"]
        for net, f in final.items():
            lines.append(
                f"| {net} | {f.get('hidden_dense')} → {f.get('hidden_compact')} | "
                f"{f.get('dense_neurons')} → {f.get('compact_neurons')} | "
                f"{f.get('dense_weights')} → {f.get('compact_weights')} | "
                f"{_pct(f.get('weights_removed_pct'))} | {f['source']} |")
    for name, what in (("neurons_per_layer.png", "Neurons alive per layer"),
                       ("weights_per_layer.png", "Weights alive per layer"),
                       ("compression.png", "Compression, kappa and regulariser"),
                       ("return.png", "Return")):
        if name in files:
            lines += ["", f"![{what}]({name})"]
    if figures["policies"]:
        lines += ["", f"Policies announced on dsp/policy: {len(figures['policies'])}, the "
                  f"last {figures['policies'][-1][1]}"]
    return lines
