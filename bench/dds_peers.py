"""The peers of bench/dds_latency.py: QoS, a raw cyclonedds endpoint, and the child roles
(``echo``: send every ping back; ``sink``: count a bulk stream) that the parent starts as
``dds_latency.py --role ...`` in a process of their own."""

from __future__ import annotations

import argparse
from collections.abc import Callable
import contextlib
import json
import socket
import sys
import threading
import time
from typing import Any

from dsp_driving import msgs
from dsp_driving.transport import DEFAULT_QOS, SENSOR_QOS, QosProfile, create_node

DRIVE = msgs.ROS_TYPES["ackermann_msgs/msg/AckermannDriveStamped"]
ARRAY = msgs.ROS_TYPES["std_msgs/msg/Float32MultiArray"]
ARRAY_FLOATS = 1024
PING, PONG, BULK = "/bench/ping", "/bench/pong", "/bench/bulk"
UDP_BYTES = 48  # the serialised size of the ping
MATCH_TIMEOUT_S = 20.0
IDLE_S = 0.5  # a sink reports once nothing arrived for this long after the stop line


def stamp_key(msg: Any) -> tuple[int, int]:
    """A ping's identity: its header.stamp."""
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def qos_of(name: str, depth: int | None = None) -> QosProfile:
    """'reliable' (DEFAULT_QOS) or 'best_effort' (SENSOR_QOS), optionally with another depth."""
    base = {"reliable": DEFAULT_QOS, "best_effort": SENSOR_QOS}[name]
    return base if depth is None else QosProfile(base.reliable, base.transient_local, depth)


def cyclone_qos(qos: QosProfile | None, writer: bool) -> Any:
    """The dds backend's Cyclone QoS for ``qos``; None: the same but keep-all (reliable)."""
    from cyclonedds.qos import Policy, Qos

    from dsp_driving.transport.dds import dds_qos

    if qos is not None:
        return dds_qos(qos, writer=writer)
    return Qos(Policy.History.KeepAll, base=dds_qos(DEFAULT_QOS, writer=writer))


class RawEndpoint:
    """A cyclonedds DataWriter and/or a DataReader with its WaitSet: no node in between."""

    def __init__(self, domain: int, msg_type: type, qos: QosProfile | None,
                 read_topic: str | None = None, write_topic: str | None = None) -> None:
        from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState, WaitSet
        from cyclonedds.pub import DataWriter
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic

        from dsp_driving.transport.dds import participant

        self.participant = participant(domain)
        self.writer = self.reader = topic = None
        if write_topic is not None:
            topic = Topic(self.participant, "rt" + write_topic, msg_type)
            self.writer = DataWriter(self.participant, topic, qos=cyclone_qos(qos, True))
        self.waitset = WaitSet(self.participant)
        if read_topic is not None:
            if read_topic != write_topic:
                topic = Topic(self.participant, "rt" + read_topic, msg_type)
            self.reader = DataReader(self.participant, topic, qos=cyclone_qos(qos, False))
            self.waitset.attach(ReadCondition(self.reader, SampleState.Any | ViewState.Any
                                              | InstanceState.Any))

    def poll(self, timeout_s: float) -> list[Any]:
        """Wait up to timeout_s for data, then take what is there."""
        self.waitset.wait(int(timeout_s * 1e9))
        return self.reader.take(N=256)

    def subscription_count(self) -> int:
        """Readers matched by the writer."""
        return len(self.writer.get_matched_subscriptions())


def await_match(count: Callable[[], int], what: str) -> None:
    """Wait until ``count() >= 1``; SystemExit (the child reports it) on timeout."""
    deadline = time.monotonic() + MATCH_TIMEOUT_S
    while count() < 1:
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: no subscriber matched in {MATCH_TIMEOUT_S:g} s")
        time.sleep(0.01)


def _stop_event() -> threading.Event:
    """Set when the parent writes a line to our stdin or closes it."""
    stop = threading.Event()

    def watch() -> None:
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    return stop


def say(payload: dict[str, Any]) -> None:
    print(json.dumps(payload), flush=True)


def run_echo(args: argparse.Namespace) -> None:
    """Send every ping back (DDS pong or UDP datagram) until told to stop; log the times.

    The log holds (key, ns) per ping, the time taken in the callback (node), after take (raw)
    or after recvfrom (udp), just before the reply is published: the end of the ping's one-way
    trip and the start of the pong's.
    """
    stop, clock = _stop_event(), time.perf_counter_ns
    log: list[tuple[Any, int]] = []
    if args.path == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.05)
        say({"ready": True, "port": sock.getsockname()[1]})
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                data, peer = sock.recvfrom(UDP_BYTES)
                log.append((int.from_bytes(data, "little"), clock()))
                sock.sendto(data, peer)
    elif args.path == "raw":
        raw = RawEndpoint(args.domain, DRIVE, qos_of(args.qos), PING, PONG)
        await_match(raw.subscription_count, PONG)
        say({"ready": True})
        while not stop.is_set():
            for msg in raw.poll(0.05):
                log.append((stamp_key(msg), clock()))
                raw.writer.write(msg)
    else:
        node = create_node("bench_echo", backend="dds", domain_id=args.domain)
        pong = node.create_publisher(DRIVE, PONG, qos_of(args.qos))

        def echo(msg: Any) -> None:
            log.append((stamp_key(msg), clock()))
            pong.publish(msg)

        node.create_subscription(DRIVE, PING, echo, qos_of(args.qos))
        await_match(pong.subscription_count, PONG)
        say({"ready": True})
        node.spin(until=stop.is_set)
        node.destroy()
    say({"echoed": len(log), "log": log})


def run_sink(args: argparse.Namespace) -> None:
    """Count Float32MultiArray messages until told to stop and then idle for IDLE_S."""
    stop = _stop_event()
    state = {"received": 0, "first_ns": 0, "last_ns": 0, "last_seq": -1, "jumps": 0,
             "stop_ns": 0}

    def keep(msg: Any) -> None:
        now = time.perf_counter_ns()
        state["first_ns"] = state["first_ns"] or now
        state["last_ns"] = now
        state["received"] += 1
        seq = msg.layout.data_offset
        state["jumps"] += seq != state["last_seq"] + 1
        state["last_seq"] = seq

    def done() -> bool:
        if not stop.is_set():
            return False
        state["stop_ns"] = state["stop_ns"] or time.perf_counter_ns()
        return time.perf_counter_ns() - max(state["last_ns"], state["stop_ns"]) > IDLE_S * 1e9

    if args.path == "raw":  # keep-all
        raw = RawEndpoint(args.domain, ARRAY, None, read_topic=BULK)
        say({"ready": True})
        while not done():
            for msg in raw.poll(0.05):
                keep(msg)
    else:
        node = create_node("bench_sink", backend="dds", domain_id=args.domain)
        node.create_subscription(ARRAY, BULK, keep, qos_of("reliable", args.depth))
        say({"ready": True})
        node.spin(until=done)
        node.destroy()
    say(state)


def sample_messages() -> tuple[Any, Any]:
    """The ping (AckermannDriveStamped with a frame_id) and the 4 KiB array."""
    drive = DRIVE()
    drive.header.frame_id = "base_link"
    return drive, ARRAY(data=[0.5] * ARRAY_FLOATS)
