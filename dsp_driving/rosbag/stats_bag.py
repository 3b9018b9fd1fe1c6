"""StatsBag: a training callback that records trainer_node's dsp/* topics into a rosbag2
bag (RUN_DIR/bag), with no node and no ROS 2: the same messages StatsPublisher publishes
(built by dsp_driving.nodes.stats_topics), written by BagWriter."""

from __future__ import annotations

from collections.abc import Callable
import logging
from pathlib import Path
import time
from typing import Any

from dsp_driving.callbacks import BaseCallback
from dsp_driving.nodes.stats_topics import (
    POLICY_QOS,
    compaction_message,
    evaluation_message,
    summary_message,
    training_message,
)
from dsp_driving.stats import UpdateStats
from dsp_driving.topics import COMPACTION_TOPIC, POLICY_TOPIC, SUMMARY_TOPIC, TRAINING_TOPIC
from dsp_driving.transport.base import DEFAULT_QOS, ros_topic

log = logging.getLogger(__name__)
BAG_SEGMENT_S = 60.0  # RUN_DIR/bag gets a file a minute: a crash loses at most the last one


class _BagClock:
    """What the message builders use of a node (msg_type, now_msg, backend), for messages
    built to be recorded rather than published: dsp_driving.msgs classes, stamped ``t_ns``."""

    backend = "dds"

    def __init__(self) -> None:
        self.t_ns = 0

    def msg_type(self, ros_type: str) -> type:
        from dsp_driving.msgs import ROS_TYPES

        return ROS_TYPES[ros_type]

    def now_msg(self) -> Any:
        return self.msg_type("builtin_interfaces/msg/Time")(
            sec=self.t_ns // 1_000_000_000, nanosec=self.t_ns % 1_000_000_000)


class StatsBag(BaseCallback):
    """A training callback that records the dsp/* topics into a rosbag2 bag: the messages
    StatsPublisher publishes, stamped (header and log time) when the update is reported.

    The bag is created at its first segment, so a run that fails to start leaves none. A bag
    that cannot be written (a full disk) stops the recording, with a message, never training.
    """

    def __init__(self, path: str | Path, hardware_id: str = "",
                 resolve: Callable[[str], str] | None = None) -> None:
        """``resolve``: a topic's full name (a node's resolve_topic, for its namespace;
        default: no namespace)."""
        self.path, self.hardware_id = Path(path), hardware_id
        self._resolve = resolve or ros_topic
        self._clock = _BagClock()
        self._bag: Any = None
        self.failed = False
        self.topics = {self._resolve(topic): (ros_type, qos) for topic, ros_type, qos in (
            (COMPACTION_TOPIC, "diagnostic_msgs/msg/DiagnosticArray", DEFAULT_QOS),
            (SUMMARY_TOPIC, "std_msgs/msg/Float32MultiArray", DEFAULT_QOS),
            (TRAINING_TOPIC, "diagnostic_msgs/msg/DiagnosticArray", DEFAULT_QOS),
            (POLICY_TOPIC, "std_msgs/msg/String", POLICY_QOS))}

    def _stop(self, exc: Exception) -> None:
        self.failed = True
        log.warning(f"recording {self.path} stopped ({type(exc).__name__}: {exc}); "
                    "training goes on, stats.jsonl has every update")

    def _write(self, topic: str, build: Callable[[Any], Any]) -> None:
        from dsp_driving.rosbag.writer import BagWriter

        if self.failed:
            return
        try:
            if self._bag is None:
                self._bag = BagWriter(self.path, segment_s=BAG_SEGMENT_S)
                for name, (ros_type, qos) in self.topics.items():
                    self._bag.add_topic(name, ros_type, qos)
            self._clock.t_ns = time.time_ns()
            self._bag.write(self._resolve(topic), build(self._clock), self._clock.t_ns)
        except Exception as exc:  # noqa: BLE001  (a bag never ends a training run)
            self._stop(exc)

    def on_update(self, stats: UpdateStats) -> None:
        """Record dsp/compaction, dsp/compaction/summary and dsp/training."""
        self._write(COMPACTION_TOPIC, lambda n: compaction_message(n, stats, self.hardware_id))
        self._write(SUMMARY_TOPIC, lambda n: summary_message(n, stats))
        self._write(TRAINING_TOPIC, lambda n: training_message(n, stats, self.hardware_id))

    def on_export(self, path: Path) -> None:
        """Record dsp/policy."""
        self._write(POLICY_TOPIC, lambda n: n.msg_type("std_msgs/msg/String")(
            data=str(Path(path).resolve())))

    def on_end(self, summary: dict[str, Any]) -> None:
        """Record the final evaluation on dsp/training."""
        self._write(TRAINING_TOPIC,
                    lambda n: evaluation_message(n, summary, self.hardware_id))

    def close(self) -> None:
        """Write the last segment."""
        if self._bag is not None and not self.failed:
            try:
                self._bag.close()
            except Exception as exc:  # noqa: BLE001
                self._stop(exc)
