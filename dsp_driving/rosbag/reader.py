"""Reading a rosbag2 bag (MCAP or sqlite3; ours or ``ros2 bag record``'s) for a report.

Everything is read through rosbags' AnyReader, with the bag's own message definitions where
it has them and otherwise rosbags' ROS 2 Humble types plus the ones dsp_driving.msgs pins
(ackermann, carla, autoware). What cannot be read is not fatal where a report can still be
honest about it: a file of the bag that does not open (a segment cut short), a message that
does not deserialise, a type nobody knows. Each such fault is a ``problem`` and the result
is ``partial``; only a bag with nothing readable is a :class:`BagError`.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import dataclasses
import os
from pathlib import Path
import tempfile
from typing import Any

import yaml

METADATA = "metadata.yaml"


class BagError(Exception):
    """A bag that cannot be read at all (the message says why and what to do)."""


@dataclasses.dataclass
class TopicInfo:
    """One topic of the bag: its type, and how many messages were listed and read."""

    name: str
    msgtype: str
    listed: int = 0  # message count in metadata.yaml
    read: int = 0
    failed: int = 0  # messages that did not deserialise
    known_type: bool = True  # False: no definition in the bag or ours, so not decoded


@dataclasses.dataclass
class BagData:
    """The messages of a bag by topic: [(log time ns, message)], in time order."""

    path: Path
    storage: str
    topics: dict[str, TopicInfo]
    messages: dict[str, list[tuple[int, Any]]]
    start_ns: int
    end_ns: int
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def partial(self) -> bool:
        """Whether anything in the bag could not be read."""
        return bool(self.problems)

    @property
    def duration_s(self) -> float:
        """From the first to the last message read."""
        return max(0, self.end_ns - self.start_ns) * 1e-9


def _bag_folder(path: Path) -> Path:
    if not path.exists():
        raise BagError(f"{path}: no such bag (a rosbag2 bag is a folder with metadata.yaml)")
    if path.is_file():  # a .mcap / .db3 inside a bag folder, or its metadata.yaml
        path = path.parent
    if not (path / METADATA).is_file():
        raise BagError(
            f"{path}: no {METADATA}, so not a rosbag2 bag, or one whose recorder was killed "
            "before it wrote the file (`ros2 bag reindex` rebuilds it from the storage files)")
    return path


def _metadata(folder: Path) -> dict[str, Any]:
    try:
        meta = yaml.safe_load((folder / METADATA).read_text())
        info = meta["rosbag2_bagfile_information"]
        info["relative_file_paths"]  # noqa: B018  (present in every version)
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise BagError(f"{folder / METADATA}: unreadable rosbag2 metadata "
                       f"({type(exc).__name__}: {exc})") from None
    return info


@contextlib.contextmanager
def _single_file_bag(folder: Path, info: dict[str, Any], file_name: str) -> Iterator[Path]:
    """A temporary bag that is ``folder``'s file ``file_name`` alone (a link to it)."""
    with tempfile.TemporaryDirectory(prefix="dsp-bag-") as tmp:
        one = Path(tmp) / folder.name
        one.mkdir()
        os.symlink((folder / file_name).resolve(), one / file_name)
        files = [f for f in info.get("files") or [] if f.get("path") == file_name]
        sub = {**info, "relative_file_paths": [file_name], "files": files}
        (one / METADATA).write_text(yaml.safe_dump({"rosbag2_bagfile_information": sub}))
        yield one


def _read_into(bag: Path, data: BagData, store: Any, label: str | None = None) -> None:
    """Append the messages of the bag ``bag`` to ``data``. Without ``label`` (the whole bag)
    a storage fault raises; with one (a single file of it) what was read before the fault is
    kept and the fault is a problem naming ``label``."""
    from rosbags.highlevel import AnyReader

    with AnyReader([bag], default_typestore=store) as reader:
        for conn in reader.connections:
            data.topics.setdefault(conn.topic, TopicInfo(conn.topic, conn.msgtype))
        messages = reader.messages()
        while True:
            try:
                conn, t_ns, raw = next(messages)
            except StopIteration:
                break
            except Exception as exc:  # noqa: BLE001  (a storage fault mid-file: keep the rest)
                if label is None:
                    raise
                data.problems.append(f"{label}: reading stopped early: "
                                     f"{type(exc).__name__}: {exc}")
                break
            topic = data.topics[conn.topic]
            if not topic.known_type or conn.msgtype not in reader.typestore.fielddefs:
                topic.known_type = False  # listed in the report; not a fault of the bag
                continue
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception as exc:  # noqa: BLE001  (an unknown type or corrupt bytes)
                if not topic.failed:
                    data.problems.append(f"{conn.topic} ({conn.msgtype}): messages do not "
                                         f"deserialise: {type(exc).__name__}: {exc}")
                topic.failed += 1
                continue
            topic.read += 1
            data.messages.setdefault(conn.topic, []).append((t_ns, msg))
            data.start_ns = min(data.start_ns, t_ns)
            data.end_ns = max(data.end_ns, t_ns)


def read_bag(path: str | Path) -> BagData:
    """All messages of the bag at ``path``; faults recorded as ``problems`` (see module)."""
    from dsp_driving.rosbag.writer import typestore

    folder = _bag_folder(Path(path))
    info = _metadata(folder)
    data = BagData(folder, str(info.get("storage_identifier", "?")), {}, {},
                   start_ns=2**63, end_ns=0)
    store = typestore()
    try:
        _read_into(folder, data, store)
    except Exception as whole:  # noqa: BLE001  (a file is damaged: read file by file)
        data.topics.clear()
        data.messages.clear()
        data.problems.clear()
        data.start_ns, data.end_ns = 2**63, 0
        opened = 0
        for file_name in info["relative_file_paths"]:
            if not (folder / file_name).is_file():
                data.problems.append(f"{file_name}: listed in {METADATA} but missing")
                continue
            try:
                with _single_file_bag(folder, info, file_name) as one:
                    _read_into(one, data, store, label=file_name)
                opened += 1
            except Exception as exc:  # noqa: BLE001
                data.problems.append(f"{file_name}: unreadable ({type(exc).__name__}: {exc})")
        if not opened:
            raise BagError(f"{folder}: no file of the bag could be read "
                           f"({type(whole).__name__}: {whole})") from None
        for msgs in data.messages.values():
            msgs.sort(key=lambda m: m[0])
    for entry in info.get("topics_with_message_count") or []:
        meta = entry.get("topic_metadata", {})
        name = meta.get("name")
        if name is None:
            continue
        topic = data.topics.setdefault(name, TopicInfo(name, meta.get("type", "?")))
        topic.listed = int(entry.get("message_count", 0))
    for topic in data.topics.values():
        if topic.known_type and topic.read + topic.failed < topic.listed:
            data.problems.append(f"{topic.name}: {METADATA} lists {topic.listed} messages, "
                                 f"{topic.read + topic.failed} were found")
    if data.start_ns > data.end_ns:
        data.start_ns = data.end_ns = 0
    return data
