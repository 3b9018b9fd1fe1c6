"""trainer_node's topics: the messages built from each update's stats and a callback that
publishes them (StatsPublisher); dsp_driving.rosbag.stats_bag records the same messages into a
rosbag2 bag (StatsBag).

Values in the diagnostics are ``repr`` of the numbers in stats.jsonl (exact; null -> ``nan``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
import time
from typing import Any

from dsp_driving.callbacks import BaseCallback
from dsp_driving.nodes.conversions import diagnostic_array, diagnostic_status
from dsp_driving.stats import UpdateStats, removed_pct
from dsp_driving.topics import (
    COMPACTION_TOPIC,
    POLICY_TOPIC,
    SUMMARY_LABELS,
    SUMMARY_TOPIC,
    TRAINING_TOPIC,
)
from dsp_driving.transport import DEFAULT_QOS, LATCHED_QOS, Node

POLICY_QOS = LATCHED_QOS  # policy_node subscribes to dsp/policy with the same
NAME = "trainer_node"
log = logging.getLogger(__name__)
# summary.json's per-network figures that the final `evaluation` status repeats
SUMMARY_COMPACTION = ("hidden_dense", "hidden_compact", "dense_neurons", "compact_neurons",
                      "dense_weights", "compact_weights", "neurons_removed_pct",
                      "weights_removed_pct")


# ---- messages -------------------------------------------------------------------------------


def _value(value: Any) -> str:
    """A stats value as diagnostics text: repr of the number (exact), 'nan' for null."""
    if value is None:
        return "nan"
    return repr(value)


def _status(node: Node, name: str, message: str, values: dict[str, Any], hardware_id: str
            ) -> Any:
    return diagnostic_status(node, name, message, {k: _value(v) for k, v in values.items()},
                             hardware_id)


def compaction_message(node: Node, stats: dict[str, Any], hardware_id: str = "") -> Any:
    """dsp/compaction: a status per network (``trainer_node: actor``) and per layer
    (``trainer_node: actor/layer0``)."""
    statuses = []
    for net in ("actor", "critic"):
        s = stats[net]
        removed = removed_pct(s["weights_alive"], s["weights_total"])
        statuses.append(_status(
            node, f"{NAME}: {net}",
            f"{s['neurons_alive']}/{s['neurons_total']} neurons, "
            f"{s['weights_alive']}/{s['weights_total']} weights", {
                "step": stats["step"], "neurons_alive": s["neurons_alive"],
                "neurons_total": s["neurons_total"], "weights_alive": s["weights_alive"],
                "weights_total": s["weights_total"], "weights_removed_pct": removed,
                "R": s["R"], "kappa": stats["kappa"]}, hardware_id))
        for i, layer in enumerate(s["layers"]):
            statuses.append(_status(
                node, f"{NAME}: {net}/layer{i}", f"{layer['alive']}/{layer['total']} neurons",
                {"step": stats["step"], "alive": layer["alive"], "total": layer["total"],
                 "weights_alive": layer["weights_alive"],
                 "weights_total": layer["weights_total"],
                 "threshold": layer["threshold"]}, hardware_id))
    return diagnostic_array(node, statuses)


def summary_values(stats: dict[str, Any]) -> list[float]:
    """The SUMMARY_LABELS figures of one stats record (null return -> NaN)."""
    actor, critic = stats["actor"], stats["critic"]
    ret = stats.get("ep_return_mean")
    return [float(stats["step"]), float(actor["neurons_alive"]), float(actor["weights_alive"]),
            float(critic["neurons_alive"]), float(critic["weights_alive"]),
            removed_pct(actor["weights_alive"], actor["weights_total"]),
            float(stats["kappa"]), math.nan if ret is None else float(ret)]


def summary_message(node: Node, stats: dict[str, Any]) -> Any:
    """dsp/compaction/summary: Float32MultiArray with a labelled one-dimension layout."""
    make = node.msg_type
    dim = make("std_msgs/msg/MultiArrayDimension")(label=",".join(SUMMARY_LABELS),
                                                   size=len(SUMMARY_LABELS),
                                                   stride=len(SUMMARY_LABELS))
    layout = make("std_msgs/msg/MultiArrayLayout")(dim=[dim], data_offset=0)
    return make("std_msgs/msg/Float32MultiArray")(layout=layout, data=summary_values(stats))


def training_values(stats: dict[str, Any]) -> dict[str, Any]:
    """Everything in a stats record but the compaction (losses flattened as losses/policy)."""
    out: dict[str, Any] = {}
    for key, value in stats.items():
        if key in ("actor", "critic", "kappa"):
            continue
        if isinstance(value, dict):
            out.update({f"{key}/{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def training_message(node: Node, stats: dict[str, Any], hardware_id: str = "") -> Any:
    """dsp/training: one status ``trainer_node: training``."""
    return diagnostic_array(node, [_status(node, f"{NAME}: training",
                                 f"update {stats['update']}, step {stats['step']}",
                                 training_values(stats), hardware_id)])


def evaluation_message(node: Node, summary: dict[str, Any], hardware_id: str = "") -> Any:
    """dsp/training at the end: ``trainer_node: evaluation`` (summary.json's figures)."""
    values = {"total_steps": summary["total_steps"], "wall_s": summary["wall_s"],
              **{f"eval/{k}": v for k, v in summary["eval"].items()},
              **{f"{net}/{k}": summary[net][k] for net in ("actor", "critic")
                 for k in SUMMARY_COMPACTION}}
    return diagnostic_array(node, [_status(node, f"{NAME}: evaluation",
                                 f"finished: eval return {summary['eval']['return_mean']:.2f}",
                                 values, hardware_id)])


class StatsPublisher(BaseCallback):
    """A training callback that publishes every update's stats on the dsp/* topics."""

    def __init__(self, node: Node, hardware_id: str = "") -> None:
        self.node, self.hardware_id = node, hardware_id
        t = node.msg_type
        diag = t("diagnostic_msgs/msg/DiagnosticArray")
        self.compaction_pub = node.create_publisher(diag, COMPACTION_TOPIC, DEFAULT_QOS)
        self.summary_pub = node.create_publisher(t("std_msgs/msg/Float32MultiArray"),
                                                 SUMMARY_TOPIC, DEFAULT_QOS)
        self.training_pub = node.create_publisher(diag, TRAINING_TOPIC, DEFAULT_QOS)
        self.policy_pub = node.create_publisher(t("std_msgs/msg/String"), POLICY_TOPIC,
                                                POLICY_QOS)

    def wait_for_subscribers(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a subscriber on every stats topic (so none of the
        first updates is missed); returns whether they all matched."""
        pubs = (self.compaction_pub, self.summary_pub, self.training_pub)
        end = time.monotonic() + timeout_s
        while True:
            if all(p.subscription_count() > 0 for p in pubs):
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(0.05)

    def on_update(self, stats: UpdateStats) -> None:
        self.compaction_pub.publish(compaction_message(self.node, stats, self.hardware_id))
        self.summary_pub.publish(summary_message(self.node, stats))
        self.training_pub.publish(training_message(self.node, stats, self.hardware_id))

    def on_export(self, path: Path) -> None:
        self.policy_pub.publish(self.node.msg_type("std_msgs/msg/String")(
            data=str(Path(path).resolve())))

    def on_end(self, summary: dict[str, Any]) -> None:
        self.training_pub.publish(evaluation_message(self.node, summary, self.hardware_id))
