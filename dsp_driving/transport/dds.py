"""The dds backend: ROS 2 wire-compatible topics over Cyclone DDS, without ROS 2.

ROS 2 (rmw_cyclonedds) maps topic '/x' to DDS topic 'rt/x' with type 'pkg::msg::dds_::Name_'
and plain CDR; ``dsp_driving.msgs`` holds those types, so rclpy nodes on the same domain see
ours and we see theirs. The Domain is created with a loopback-only configuration (interface lo,
multicast off, unicast discovery to 127.0.0.1) unless the caller passes their own XML, and is
kept alive for the life of the process: a dropped Domain silently falls back to Cyclone's
default configuration, which multicasts on every interface and never finds loopback peers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
import fcntl
import heapq
import itertools
import os
from pathlib import Path
import sys
import tempfile
import threading
import time
from typing import Any

from cyclonedds.core import (
    GuardCondition,
    InstanceState,
    ReadCondition,
    SampleState,
    ViewState,
    WaitSet,
)
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.qos import Policy, Qos
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from dsp_driving import msgs
from dsp_driving.transport.base import (
    DEFAULT_QOS,
    Logger,
    Node,
    Publisher,
    QosProfile,
    Timer,
    guarded,
    resolve_parameters,
    ros_topic,
)

# Loopback only: no multicast, unicast SPDP to 127.0.0.1 on the ports of participant indices
# 0..MaxAutoParticipantIndex, so up to that many participants per domain id find each other.
LOOPBACK_CONFIG = """<?xml version="1.0" encoding="UTF-8" ?>
<CycloneDDS xmlns="https://cdds.io/config">
  <Domain Id="any">
    <General>
      <Interfaces><NetworkInterface name="lo"/></Interfaces>
      <AllowMulticast>false</AllowMulticast>
    </General>
    <Discovery>
      <ParticipantIndex>auto</ParticipantIndex>
      <MaxAutoParticipantIndex>{max_participants}</MaxAutoParticipantIndex>
      <Peers><Peer address="127.0.0.1"/></Peers>
    </Discovery>
  </Domain>
</CycloneDDS>
"""
MAX_PARTICIPANTS = 32
ROS_DOMAIN_ID_MAX = 232  # ROS 2's limit for the default port mapping

_domains: dict[int, Domain] = {}  # process-wide: see the module docstring
_domains_lock = threading.Lock()


# ROS 2 advises ids 0-101 on Linux (higher ones reach the ephemeral port range); 0 is the
# default a developer's own ROS 2 is likely using, so claims start at 1.
CLAIMABLE_DOMAIN_IDS = range(1, 102)
_claimed: list[int] = []  # lock file descriptors, held until this process exits


def claim_domain_id(start: int = 0) -> int:
    """A domain id no other process on this machine has claimed, held until this one exits.

    An exclusive flock on one file per id in the temp folder; tests and benchmarks use it so
    runs side by side never share a domain. ``start`` rotates where the search begins.
    """
    ids = list(CLAIMABLE_DOMAIN_IDS)
    start %= len(ids)
    for domain in ids[start:] + ids[:start]:
        fd = os.open(Path(tempfile.gettempdir()) / f"dsp_driving_dds_domain_{domain}.lock",
                     os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _claimed.append(fd)
        return domain
    raise RuntimeError(f"all DDS domain ids {ids[0]}-{ids[-1]} are claimed by other processes")


def domain_id_from_env(domain_id: int | None = None) -> int:
    """An explicit id, else ROS_DOMAIN_ID, else 0; validated like ROS 2 does."""
    if domain_id is None:
        raw = os.environ.get("ROS_DOMAIN_ID", "").strip()
        try:
            domain_id = int(raw) if raw else 0
        except ValueError:
            raise ValueError(f"ROS_DOMAIN_ID={raw!r}: must be an integer") from None
    if not 0 <= domain_id <= ROS_DOMAIN_ID_MAX:
        raise ValueError(f"domain_id={domain_id!r}: must be in [0, {ROS_DOMAIN_ID_MAX}]")
    return domain_id


def default_config() -> str:
    """$CYCLONEDDS_URI's content when set (the user's own choice), else LOOPBACK_CONFIG."""
    uri = os.environ.get("CYCLONEDDS_URI", "").strip()
    if not uri:
        return LOOPBACK_CONFIG.format(max_participants=MAX_PARTICIPANTS)
    if uri.lstrip().startswith("<"):
        return uri
    path = uri.removeprefix("file://")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise ValueError(f"CYCLONEDDS_URI={uri!r}: cannot read it ({exc.strerror}); unset it "
                         "for the loopback-only default") from None


def participant(domain_id: int, config: str | None = None) -> DomainParticipant:
    """A participant on ``domain_id``; the first call per id creates and keeps its Domain."""
    with _domains_lock:
        if domain_id not in _domains:
            _domains[domain_id] = Domain(domain_id, config or default_config())
        elif config is not None:
            raise ValueError(f"domain {domain_id} already exists in this process with another "
                             "configuration; pass config only to the first node")
    return DomainParticipant(domain_id)


def dds_qos(profile: QosProfile, writer: bool = False) -> Qos:
    """Our QoS profile as Cyclone QoS, with XCDR1 (plain CDR) forced as ROS 2 uses."""
    # rmw_cyclonedds: reliable with an infinite max_blocking_time, no autodispose
    reliability = (Policy.Reliability.Reliable(duration(infinite=True)) if profile.reliable
                   else Policy.Reliability.BestEffort)
    durability = (Policy.Durability.TransientLocal if profile.transient_local
                  else Policy.Durability.Volatile)
    policies = [reliability, durability, Policy.History.KeepLast(profile.depth),
                Policy.DataRepresentation(use_cdrv0_representation=True)]
    if writer:
        policies.append(Policy.WriterDataLifecycle(autodispose=False))
    return Qos(*policies)


class DdsPublisher(Publisher):
    """A DataWriter on rt/<topic>."""

    def __init__(self, writer: DataWriter, topic: str, msg_type: type) -> None:
        self._writer = writer
        self.topic = topic
        self.msg_type = msg_type

    def publish(self, msg: Any) -> None:
        """Write one message (must be an instance of the publisher's type)."""
        if type(msg) is not self.msg_type:
            raise TypeError(f"publisher on {self.topic} takes {msgs.ros_type_name(self.msg_type)}"
                            f", got {type(msg).__name__}")
        self._writer.write(msg)

    def subscription_count(self) -> int:
        """Number of matched DataReaders."""
        return len(self._writer.get_matched_subscriptions())

    def wait_for_acked(self, timeout_s: float) -> bool:
        """DataWriter.wait_for_acks."""
        return bool(self._writer.wait_for_acks(duration(seconds=timeout_s)))


class DdsTimer(Timer):
    """A timer the node's spin loop fires (no thread of its own)."""

    def __init__(self, period_s: float, callback: Callable[[], None]) -> None:
        if not period_s > 0:
            raise ValueError(f"timer period_s={period_s!r}: must be > 0")
        self.period_s = float(period_s)
        self.callback = callback
        self.next_s = time.monotonic() + self.period_s
        self.cancelled = False

    def cancel(self) -> None:
        """Stop firing."""
        self.cancelled = True


@dataclasses.dataclass
class _Subscription:
    reader: DataReader
    condition: ReadCondition
    callback: Callable[[Any], None]
    topic: str


class DdsNode(Node):
    """A node on the dds backend: one participant, a WaitSet, single-threaded callbacks.

    ``parameters`` are the values given to the node (from a params file and overrides, by
    dotted name); ``get_parameters`` checks them against the declared defaults.
    """

    backend = "dds"

    def __init__(self, name: str, domain_id: int | None = None,
                 parameters: Mapping[str, Any] | None = None, config: str | None = None,
                 log_stream=None) -> None:
        self.name = name
        self.domain_id = domain_id_from_env(domain_id)
        self._participant = participant(self.domain_id, config)
        self._waitset = WaitSet(self._participant)
        self._wake = GuardCondition(self._participant)
        self._waitset.attach(self._wake)
        self._topics: dict[str, tuple[Topic, type]] = {}
        self._subscriptions: list[_Subscription] = []
        self._writers: list[DataWriter] = []
        self._timers: list[tuple[float, int, DdsTimer]] = []
        self._order = itertools.count()
        self._given = dict(parameters or {})
        self._declared: set[str] = set()
        self._stream = log_stream or sys.stderr
        self.logger = Logger(name, self._emit)

    def _emit(self, level: str, text: str) -> None:
        print(f"[{level}] [{time.time():.3f}] [{self.name}]: {text}", file=self._stream,
              flush=True)

    def msg_type(self, ros_type: str) -> type:
        """The dsp_driving.msgs class for 'pkg/msg/Name'."""
        try:
            return msgs.ROS_TYPES[ros_type]
        except KeyError:
            raise ValueError(f"unknown message type {ros_type!r} (known: "
                             f"{sorted(msgs.ROS_TYPES)})") from None

    def _topic(self, msg_type: type, name: str) -> Topic:
        dds_name = "rt" + ros_topic(name)
        if dds_name not in self._topics:
            self._topics[dds_name] = (Topic(self._participant, dds_name, msg_type), msg_type)
        topic, known = self._topics[dds_name]
        if known is not msg_type:
            raise ValueError(f"topic {ros_topic(name)} already has type "
                             f"{msgs.ros_type_name(known)} in this node")
        return topic

    def create_publisher(self, msg_type: type, topic: str,
                         qos: QosProfile = DEFAULT_QOS) -> DdsPublisher:
        """A DataWriter on rt/<topic>."""
        writer = DataWriter(self._participant, self._topic(msg_type, topic),
                            qos=dds_qos(qos, writer=True))
        self._writers.append(writer)
        return DdsPublisher(writer, ros_topic(topic), msg_type)

    def create_subscription(self, msg_type: type, topic: str, callback: Callable[[Any], None],
                            qos: QosProfile = DEFAULT_QOS) -> _Subscription:
        """A DataReader on rt/<topic> whose samples go to ``callback`` during spin."""
        reader = DataReader(self._participant, self._topic(msg_type, topic), qos=dds_qos(qos))
        condition = ReadCondition(reader, SampleState.Any | ViewState.Any | InstanceState.Any)
        self._waitset.attach(condition)
        sub = _Subscription(reader, condition,
                            guarded(self.logger, f"callback on {ros_topic(topic)}", callback),
                            ros_topic(topic))
        self._subscriptions.append(sub)
        return sub

    def create_timer(self, period_s: float, callback: Callable[[], None]) -> DdsTimer:
        """Fire ``callback`` every ``period_s`` from spin_once (catch-up is skipped, as rclpy)."""
        timer = DdsTimer(period_s, guarded(self.logger, "timer callback", callback))
        heapq.heappush(self._timers, (timer.next_s, next(self._order), timer))
        return timer

    def now_ns(self) -> int:
        """System time (there is no /clock without ROS 2)."""
        return time.time_ns()

    def get_parameters(self, defaults: Mapping[str, Any], strict: bool = True
                       ) -> dict[str, Any]:
        """The given values over ``defaults``; wrong types are errors, and so (when ``strict``)
        are given names not declared by this or an earlier call (a typo in a params file)."""
        return resolve_parameters(self.name, self._given, self._declared, defaults, strict)

    def wake(self) -> None:
        """Interrupt a spin_once waiting in another thread."""
        self._wake.set(True)

    def spin_once(self, timeout_s: float = 0.1) -> None:
        """Wait for data or the next timer (at most ``timeout_s``), then dispatch."""
        now = time.monotonic()
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        wait_s = timeout_s
        if self._timers:
            wait_s = max(0.0, min(timeout_s, self._timers[0][0] - now))
        if wait_s > 0:
            self._waitset.wait(duration(seconds=wait_s))
        self._wake.set(False)
        self._fire_timers()
        for sub in self._subscriptions:
            for _ in range(256):  # one sample at a time: a bad one costs only itself
                try:
                    taken = sub.reader.take(N=1)
                except Exception as exc:  # a sample that does not deserialise: drop, go on
                    self.logger.error(f"dropped a sample on {sub.topic}: "
                                      f"{type(exc).__name__}: {exc}", throttle_s=5.0,
                                      key=f"take:{sub.topic}")
                    continue
                if not taken:
                    break
                sample = taken[0]
                info = getattr(sample, "sample_info", None)
                if info is not None and not info.valid_data:
                    continue  # writer gone / disposed: no data
                sub.callback(sample)

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            timer.callback()  # guarded at creation: cannot raise
            # next deadline on the period grid; missed periods are skipped, not bunched
            periods = max(1, int((time.monotonic() - timer.next_s) // timer.period_s) + 1)
            timer.next_s += periods * timer.period_s
            heapq.heappush(self._timers, (timer.next_s, next(self._order), timer))

    def destroy(self) -> None:
        """Delete the node's readers, writers, topics and participant, children first.

        Remote peers see them go (unmatched); a publisher kept by the caller stops working.
        The Domain stays for the process (see the module docstring). Idempotent.
        """
        for sub in self._subscriptions:
            try:
                self._waitset.detach(sub.condition)
            except Exception:  # already detached
                pass
        entities = [e for sub in self._subscriptions for e in (sub.condition, sub.reader)]
        entities += [*self._writers, self._wake, self._waitset]
        entities += [topic for topic, _ in self._topics.values()]
        entities.append(self._participant)
        for entity in entities:
            entity.__del__()  # cyclonedds' own delete; a no-op for one already deleted
        self._subscriptions.clear()
        self._writers.clear()
        self._timers.clear()
        self._topics.clear()
