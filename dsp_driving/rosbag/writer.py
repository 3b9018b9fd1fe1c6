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

from collections.abc import Callable, Mapping
import functools
import os
from pathlib import Path
import shutil
import tempfile
import threading
import time
from typing import Any

import yaml

from dsp_driving.io_utils import atomic_write_text
from dsp_driving.transport.base import DEFAULT_QOS, Node, Publisher, QosProfile

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
    """Records our messages (dsp_driving.msgs instances, or CDR bytes) into a rosbag2 bag.

    With ``background=True`` the segments are written by a thread of their own, so ``write``
    only appends to a list (a node's timer never waits for a file); otherwise ``write``
    writes a segment itself once ``segment_s`` has passed.
    """

    def __init__(self, path: str | Path, segment_s: float = 10.0, background: bool = False,
                 on_error: Callable[[Exception], None] | None = None) -> None:
        """``path``: the bag folder, which must not exist yet (rosbag2 refuses to overwrite).
        ``on_error(exc)``: told when the background thread fails to write a segment (its
        messages are lost; the bag keeps the segments before it and goes on)."""
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
        self._lock = threading.Lock()  # guards _pending and _topics
        self._flush_lock = threading.Lock()  # one segment written at a time
        self.closed = False  # the folder itself is made with the first segment
        self._stop = threading.Event()
        self._on_error = on_error
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._flush_loop, daemon=True,
                                            name=f"bag {self.path.name}")
            self._thread.start()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.segment_s):
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001  (a full disk must not end the node)
                if self._on_error is not None:
                    self._on_error(exc)

    def add_topic(self, topic: str, ros_type: str, qos: QosProfile = DEFAULT_QOS) -> None:
        """Declare a topic before writing to it (``/name``, a ROS type 'pkg/msg/Name')."""
        if ros_type not in typestore().fielddefs:
            raise ValueError(f"{topic}: unknown message type {ros_type!r}")
        with self._lock:
            known = self._topics.get(topic)
            if known is not None and known[0] != ros_type:
                raise ValueError(f"{topic}: already recorded as {known[0]}, not {ros_type}")
            self._topics[topic] = (ros_type, qos)

    def write(self, topic: str, msg: Any, t_ns: int | None = None) -> None:
        """Record one message at ``t_ns`` (default: now, system time in nanoseconds)."""
        data = msg if isinstance(msg, (bytes, bytearray)) else msg.serialize()
        with self._lock:
            if self.closed:
                raise ValueError(f"bag {self.path} is closed")
            if topic not in self._topics:
                raise ValueError(f"{topic}: add_topic() it first")
            self._pending.append((topic, time.time_ns() if t_ns is None else int(t_ns),
                                  bytes(data)))
        if self._thread is None and time.monotonic() - self._segment_start >= self.segment_s:
            self.flush()

    def flush(self) -> None:
        """Write the buffered messages as one more file of the bag, then its metadata."""
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, []
                topics = dict(self._topics)
            self._segment_start = time.monotonic()
            if pending:
                self._write_segment(pending, topics)

    def _write_segment(self, pending: list[tuple[str, int, bytes]],
                       topics: dict[str, tuple[str, QosProfile]]) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        name = f"{self.path.name}_{self._segments}"
        self.path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.path, prefix=".segment-") as tmp:
            seg_dir = Path(tmp) / name
            writer = Writer(seg_dir, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
            writer.open()
            store = typestore()
            connections = {
                topic: writer.add_connection(topic, ros_type, typestore=store,
                                             offered_qos_profiles=[rosbags_qos(qos)])
                for topic, (ros_type, qos) in topics.items()}
            for topic, t_ns, data in sorted(pending, key=lambda m: m[1]):
                writer.write(connections[topic], t_ns, data)
            writer.close()
            segment = yaml.safe_load((seg_dir / METADATA).read_text())
            file_name = f"{name}.mcap"
            os.replace(seg_dir / file_name, self.path / file_name)
        # the file is in the bag from now on: a failed metadata write below is made good by
        # the next segment's, which lists it too
        self._segments += 1
        self._metadata = _merge_metadata(self._metadata, segment, file_name)
        atomic_write_text(self.path / METADATA,
                          yaml.safe_dump(self._metadata, sort_keys=False))

    def close(self) -> None:
        """Write what is buffered; the bag is complete."""
        if self.closed:
            return
        with self._lock:
            self.closed = True  # write() refuses from now on
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        self.flush()
        if self.path.is_dir():
            for leftover in self.path.glob(".segment-*"):  # a segment interrupted earlier
                shutil.rmtree(leftover, ignore_errors=True)

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordedPublisher(Publisher):
    """A publisher that also records each message it publishes (after publishing it)."""

    def __init__(self, pub: Publisher, recorder: Recorder, topic: str) -> None:
        self._pub, self._recorder, self.topic = pub, recorder, topic

    def publish(self, msg: Any) -> None:
        """Publish, then record."""
        self._pub.publish(msg)
        self._recorder.record(self.topic, msg)

    def subscription_count(self) -> int:
        """The wrapped publisher's."""
        return self._pub.subscription_count()

    def wait_for_acked(self, timeout_s: float) -> bool:
        """The wrapped publisher's."""
        return self._pub.wait_for_acked(timeout_s)


class Recorder:
    """Records what a node publishes and receives into a bag, as ``ros2 bag record`` would
    (full topic names, the node clock's receive/publish time, the topics' QoS).

    Recording never stops the node: a message that cannot be recorded is logged (throttled)
    and dropped. The segments are written by a background thread.
    """

    def __init__(self, node: Node, path: str | Path, segment_s: float = 10.0) -> None:
        self.node = node
        self.bag = BagWriter(path, segment_s, background=True, on_error=self._failed)
        self.dropped = 0

    def _failed(self, exc: Exception) -> None:
        self.node.logger.error(f"bag {self.bag.path}: a segment was lost: "
                               f"{type(exc).__name__}: {exc}", throttle_s=10.0, key="bag")

    def add(self, topic: str, ros_type: str, qos: QosProfile = DEFAULT_QOS) -> str:
        """Declare a topic; returns its full name (as recorded)."""
        name = self.node.resolve_topic(topic)
        self.bag.add_topic(name, ros_type, qos)
        return name

    def publisher(self, ros_type: str, topic: str, qos: QosProfile = DEFAULT_QOS
                  ) -> Publisher:
        """``node.create_publisher`` whose messages are recorded too."""
        pub = self.node.create_publisher(self.node.msg_type(ros_type), topic, qos)
        return RecordedPublisher(pub, self, self.add(topic, ros_type, qos))

    def subscription(self, ros_type: str, topic: str, callback: Callable[[Any], None],
                     qos: QosProfile = DEFAULT_QOS) -> Any:
        """``node.create_subscription`` recording each message before ``callback`` sees it."""
        name = self.add(topic, ros_type, qos)

        def recorded(msg: Any) -> None:
            self.record(name, msg)
            callback(msg)

        return self.node.create_subscription(self.node.msg_type(ros_type), topic, recorded,
                                             qos)

    def record(self, topic: str, msg: Any) -> None:
        """Record one message on a declared topic at the node clock's now."""
        try:
            self.bag.write(topic, self.node.serialize(msg), self.node.now_ns())
        except Exception as exc:  # noqa: BLE001  (a recording failure never stops driving)
            self.dropped += 1
            self.node.logger.error(f"bag {self.bag.path}: {topic} not recorded: "
                                   f"{type(exc).__name__}: {exc}", throttle_s=10.0, key="bag")

    def close(self) -> None:
        """Write the last segment (a failure is logged, never raised)."""
        try:
            self.bag.close()
        except Exception as exc:  # noqa: BLE001  (the node must still shut down cleanly)
            self.node.logger.error(f"bag {self.bag.path}: the last segment was lost: "
                                   f"{type(exc).__name__}: {exc}")
