"""rosbag2 bags without ROS: written with rosbags (MCAP storage, metadata version 8).

A bag is written in segments: messages are buffered, and every ``segment_s`` seconds (and at
``close``) they become one more MCAP file of the bag (``<bag>_<k>.mcap``, as rosbag2's own
splitting names them), after which metadata.yaml is rewritten atomically to list every file.
So a process that dies mid-run leaves a bag that ``ros2 bag info`` / ``play``, Foxglove and
rosbags open, holding everything up to the last finished segment (rosbags keeps an MCAP
file's chunks in memory until it closes the file: a single-file bag would be empty).

Each file carries the message definitions (from rosbags' ROS 2 Humble typestore plus the
.msg texts ``dsp_driving.msgs`` pins) and the offered QoS of its topics.
"""

from __future__ import annotations

from collections.abc import Mapping
import functools
import os
from pathlib import Path
import shutil
import tempfile
import time
from typing import Any

import yaml

from dsp_driving.io_utils import atomic_write_text
from dsp_driving.transport.base import DEFAULT_QOS, QosProfile

METADATA = "metadata.yaml"
BAG_VERSION = 8


@functools.lru_cache(maxsize=1)
def typestore() -> Any:
    """rosbags' ROS 2 Humble typestore plus the message types msgs.py pins."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from dsp_driving.msgs import MSG_DEFINITIONS

    store = get_typestore(Stores.ROS2_HUMBLE)
    extra: dict[str, Any] = {}
    for name, text in MSG_DEFINITIONS.items():
        extra.update(get_types_from_msg(text, name))
    store.register(extra)
    return store


def rosbags_qos(profile: QosProfile) -> Any:
    """Our QosProfile as the offered QoS profile rosbag2 records (keep-last, no deadlines)."""
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    never = QosTime(0x7FFFFFFF, 0xFFFFFFFF)  # rmw's "infinite" duration, as ros2 bag writes
    return Qos(QosHistory.KEEP_LAST, profile.depth,
               QosReliability.RELIABLE if profile.reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if profile.transient_local
               else QosDurability.VOLATILE,
               never, never, QosLiveliness.AUTOMATIC, never, False)


def _merge_metadata(total: Mapping[str, Any] | None, segment: Mapping[str, Any],
                    file_name: str) -> dict[str, Any]:
    """``total`` (a bag's metadata, or None) with one more file's metadata added."""
    seg = dict(segment["rosbag2_bagfile_information"])
    (seg_file,) = seg["files"]
    seg_file = {**seg_file, "path": file_name}
    if total is None:
        info = {**seg, "files": [seg_file], "relative_file_paths": [file_name]}
        return {"rosbag2_bagfile_information": info}
    info = dict(total["rosbag2_bagfile_information"])
    start = min(info["starting_time"]["nanoseconds_since_epoch"],
                seg["starting_time"]["nanoseconds_since_epoch"])
    end = max(info["starting_time"]["nanoseconds_since_epoch"]
              + info["duration"]["nanoseconds"],
              seg["starting_time"]["nanoseconds_since_epoch"] + seg["duration"]["nanoseconds"])
    topics = {t["topic_metadata"]["name"]: dict(t) for t in info["topics_with_message_count"]}
    for t in seg["topics_with_message_count"]:
        name = t["topic_metadata"]["name"]
        if name in topics:
            topics[name]["message_count"] += t["message_count"]
        else:
            topics[name] = dict(t)
    info.update({
        "files": [*info["files"], seg_file],
        "relative_file_paths": [*info["relative_file_paths"], file_name],
        "message_count": info["message_count"] + seg["message_count"],
        "starting_time": {"nanoseconds_since_epoch": start},
        "duration": {"nanoseconds": end - start},
        "topics_with_message_count": list(topics.values()),
    })
    return {"rosbag2_bagfile_information": info}


class BagWriter:
    """Records our messages (dsp_driving.msgs instances, or CDR bytes) into a rosbag2 bag."""

    def __init__(self, path: str | Path, segment_s: float = 10.0) -> None:
        """``path``: the bag folder, which must not exist yet (rosbag2 refuses to overwrite)."""
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"bag {self.path} already exists")
        if not segment_s > 0:
            raise ValueError(f"segment_s={segment_s!r}: must be > 0")
        self.segment_s = segment_s
        self._topics: dict[str, tuple[str, QosProfile]] = {}
        self._pending: list[tuple[str, int, bytes]] = []
        self._segments = 0
        self._metadata: dict[str, Any] | None = None
        self._segment_start = time.monotonic()
        self.path.mkdir(parents=True)
        self.closed = False

    def add_topic(self, topic: str, ros_type: str, qos: QosProfile = DEFAULT_QOS) -> None:
        """Declare a topic before writing to it (``/name``, a ROS type 'pkg/msg/Name')."""
        if ros_type not in typestore().fielddefs:
            raise ValueError(f"{topic}: unknown message type {ros_type!r}")
        known = self._topics.get(topic)
        if known is not None and known[0] != ros_type:
            raise ValueError(f"{topic}: already recorded as {known[0]}, not {ros_type}")
        self._topics[topic] = (ros_type, qos)

    def write(self, topic: str, msg: Any, t_ns: int | None = None) -> None:
        """Record one message at ``t_ns`` (default: now, system time in nanoseconds)."""
        if self.closed:
            raise ValueError(f"bag {self.path} is closed")
        if topic not in self._topics:
            raise ValueError(f"{topic}: add_topic() it first")
        data = msg if isinstance(msg, (bytes, bytearray)) else msg.serialize()
        self._pending.append((topic, time.time_ns() if t_ns is None else int(t_ns),
                              bytes(data)))
        if time.monotonic() - self._segment_start >= self.segment_s:
            self.flush()

    def flush(self) -> None:
        """Write the buffered messages as one more file of the bag, then its metadata."""
        self._segment_start = time.monotonic()
        if not self._pending:
            return
        from rosbags.rosbag2 import StoragePlugin, Writer

        name = f"{self.path.name}_{self._segments}"
        with tempfile.TemporaryDirectory(dir=self.path, prefix=".segment-") as tmp:
            seg_dir = Path(tmp) / name
            writer = Writer(seg_dir, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
            writer.open()
            store = typestore()
            connections = {
                topic: writer.add_connection(topic, ros_type, typestore=store,
                                             offered_qos_profiles=[rosbags_qos(qos)])
                for topic, (ros_type, qos) in self._topics.items()}
            for topic, t_ns, data in sorted(self._pending, key=lambda m: m[1]):
                writer.write(connections[topic], t_ns, data)
            writer.close()
            segment = yaml.safe_load((seg_dir / METADATA).read_text())
            file_name = f"{name}.mcap"
            os.replace(seg_dir / file_name, self.path / file_name)
        self._metadata = _merge_metadata(self._metadata, segment, file_name)
        atomic_write_text(self.path / METADATA,
                          yaml.safe_dump(self._metadata, sort_keys=False))
        self._segments += 1
        self._pending.clear()

    def close(self) -> None:
        """Write what is buffered; the bag is complete."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        for leftover in self.path.glob(".segment-*"):  # a segment interrupted earlier
            shutil.rmtree(leftover, ignore_errors=True)

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
