"""Round trip and throughput of the dds transport between two processes on loopback (issue 4).

Round trip: this process publishes an ackermann_msgs/AckermannDriveStamped on /bench/ping; a
child process (this script, ``--role echo``) publishes every ping it receives back on
/bench/pong. One message is in flight at a time. ``time.perf_counter_ns`` runs from just before
``publish`` (serialisation included) to the moment the pong is handed over (deserialisation
included). Pings and pongs are matched by header.stamp, which is unique per ping. Paths:

* node: what our nodes use in both processes -- ``create_node(backend="dds")`` publishers and
  subscriptions, the callback run by ``spin_once`` (WaitSet wait, take, deserialise, callback);
* raw: cyclonedds DataWriter / DataReader / WaitSet directly, with the same Domain
  configuration and QoS and no node, in both processes: the node layer's share;
* udp: not DDS -- a 48-byte datagram echoed by a child over a loopback UDP socket from Python,
  the floor set by the kernel and by waking a process on this machine.

node and raw run on reliable (DEFAULT_QOS) and best effort (SENSOR_QOS). A ping without its
pong after ``--timeout-ms`` counts as lost; a pong arriving later is counted as late and not
timed. The echo notes the time just before it publishes the pong, which splits each round
trip into two one-way times (publish call -> subscriber callback); ``perf_counter_ns`` is
CLOCK_MONOTONIC on Linux, one clock for both processes. ``--reps`` repetitions of every
configuration, interleaved in a rotating order with a fresh child each time, so that the
machine's drift hits every configuration alike; the figures pool all repetitions, and the
range of the per-repetition p50 shows the drift.

Throughput: a std_msgs/Float32MultiArray of 1024 floats (4112 bytes serialised, sequence number
in layout.data_offset) is published in a tight loop for ``--seconds`` to a child (``--role
sink``), reliable: keep-last 10 (ROS default) and keep-last 100 through the node on both sides,
and keep-all (unlimited resource limits, as rmw_cyclonedds) with raw cyclonedds on both
sides. Reported: the sender's rate, the rate received over the receiver's first-to-last
message (the receiver drains its backlog after the sender stops), MB/s of serialised payload,
loss (sent - received) and how long the receiver kept going after the sender stopped.
Last, in this process alone: serialize() and deserialize() of both messages, and one ping
published and received through raw cyclonedds and through a node (Cyclone delivers to a reader
of the same participant without the network or a thread hand-over), interleaved call by call.
The garbage collector stays on, as in a node.

Usage::

    python bench/dds_latency.py
    python bench/dds_latency.py --pin --markdown   # this process on one CPU, the child on another
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import contextlib
import gc
import importlib.metadata
import json
import os
from pathlib import Path
import shlex
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import bench_common
import numpy as np

from dsp_driving import msgs
from dsp_driving.transport import DEFAULT_QOS, SENSOR_QOS, QosProfile, create_node
from dsp_driving.transport.dds import claim_domain_id

ROOT = Path(__file__).resolve().parents[1]
DRIVE = msgs.ROS_TYPES["ackermann_msgs/msg/AckermannDriveStamped"]
ARRAY = msgs.ROS_TYPES["std_msgs/msg/Float32MultiArray"]
ARRAY_FLOATS = 1024
PING, PONG, BULK = "/bench/ping", "/bench/pong", "/bench/bulk"
UDP_BYTES = 48  # the serialised size of the ping
MATCH_TIMEOUT_S = 20.0
IDLE_S = 0.5  # a sink reports once nothing arrived for this long after the stop line
LOCAL_CALLS = 5000
LATENCY_CONFIGS = [("node", "reliable"), ("node", "best_effort"), ("raw", "reliable"),
                   ("raw", "best_effort"), ("udp", "-")]


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


# -- child roles ----------------------------------------------------------------------------------
def _stop_event() -> threading.Event:
    """Set when the parent writes a line to our stdin or closes it."""
    stop = threading.Event()

    def watch() -> None:
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    return stop


def _say(payload: dict[str, Any]) -> None:
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
        _say({"ready": True, "port": sock.getsockname()[1]})
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                data, peer = sock.recvfrom(UDP_BYTES)
                log.append((int.from_bytes(data, "little"), clock()))
                sock.sendto(data, peer)
    elif args.path == "raw":
        raw = RawEndpoint(args.domain, DRIVE, qos_of(args.qos), PING, PONG)
        await_match(raw.subscription_count, PONG)
        _say({"ready": True})
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
        _say({"ready": True})
        node.spin(until=stop.is_set)
        node.destroy()
    _say({"echoed": len(log), "log": log})


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
        _say({"ready": True})
        while not done():
            for msg in raw.poll(0.05):
                keep(msg)
    else:
        node = create_node("bench_sink", backend="dds", domain_id=args.domain)
        node.create_subscription(ARRAY, BULK, keep, qos_of("reliable", args.depth))
        _say({"ready": True})
        node.spin(until=done)
        node.destroy()
    _say(state)


# -- parent side ----------------------------------------------------------------------------------
class Child:
    """This script in another process, in one role; JSON lines on its stdout."""

    def __init__(self, args: argparse.Namespace, role: str, *extra: str) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--role", role,
               "--domain", str(args.domain), *extra]
        if args.child_cpu is not None:
            cmd += ["--cpu", str(args.child_cpu)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=ROOT)

    def read(self) -> dict[str, Any]:
        """The next JSON line; exits if the child ended without one."""
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"child {self.proc.args[3]} exited (code {self.proc.wait()}) "
                             "without a report")
        report = json.loads(line)
        if "error" in report:
            raise SystemExit(f"child {self.proc.args[3]}: {report['error']}")
        return report

    def stop(self) -> dict[str, Any]:
        """Tell it to stop; its final report. Killed if it does not exit within 10 s."""
        self.proc.stdin.write("stop\n")
        self.proc.stdin.close()
        report = self.read()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return report


def stamp_key(msg: Any) -> tuple[int, int]:
    """A ping's identity: its header.stamp."""
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def round_trip(args: argparse.Namespace, path: str, qos_name: str) -> dict[str, Any]:
    """Time ``--roundtrips`` ping-pongs after ``--warmup`` on one path and QoS."""
    clock = time.perf_counter_ns
    replies: list[tuple[int, Any]] = []  # (arrival ns, key)
    child = Child(args, "echo", "--path", path, *([] if path == "udp" else ["--qos", qos_name]))
    if path == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer = ("127.0.0.1", child.read()["port"])

        def write(data: bytes) -> None:
            sock.sendto(data, peer)

        def poll(timeout_s: float) -> None:
            sock.settimeout(timeout_s)
            with contextlib.suppress(TimeoutError):
                data = sock.recv(UDP_BYTES)
                replies.append((clock(), int.from_bytes(data, "little")))

        def make(seq: int) -> tuple[bytes, int]:
            return seq.to_bytes(UDP_BYTES, "little"), seq
    else:
        if path == "raw":
            raw = RawEndpoint(args.domain, DRIVE, qos_of(qos_name), PONG, PING)
            write, count = raw.writer.write, raw.subscription_count

            def poll(timeout_s: float) -> None:
                for msg in raw.poll(timeout_s):
                    replies.append((clock(), stamp_key(msg)))
        else:
            node = create_node("bench_ping", backend="dds", domain_id=args.domain)
            pub = node.create_publisher(DRIVE, PING, qos_of(qos_name))
            node.create_subscription(DRIVE, PONG,
                                     lambda msg: replies.append((clock(), stamp_key(msg))),
                                     qos_of(qos_name))
            write, count, poll = pub.publish, pub.subscription_count, node.spin_once
        child.read()
        await_match(count, PING)
        stamps = [0]

        def make(seq: int) -> tuple[Any, tuple[int, int]]:
            msg = DRIVE()
            stamps[0] = max(time.time_ns(), stamps[0] + 1)  # unique: the ping's identity
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamps[0], 1_000_000_000)
            msg.header.frame_id = "base_link"
            msg.drive.steering_angle, msg.drive.speed = 0.1, 5.0
            return msg, stamp_key(msg)

    timeout_ns = int(args.timeout_ms * 1e6)
    timed: list[tuple[Any, int, int]] = []  # (key, t0, t1)
    lost, late = 0, 0
    gc.collect()
    for i in range(args.warmup + args.roundtrips):
        payload, sent = make(i)
        t0 = clock()
        write(payload)
        deadline, t1 = t0 + timeout_ns, None
        while True:
            for t, got in replies:
                if got == sent and t <= deadline:
                    t1 = t
                else:
                    late += 1  # a reply after its ping's timeout
            replies.clear()
            left = deadline - clock()
            if t1 is not None or left <= 0:
                break
            poll(left / 1e9)
        if i < args.warmup:
            continue
        if t1 is None:
            lost += 1
        else:
            timed.append((sent, t0, t1))
    final = child.stop()
    # perf_counter_ns is CLOCK_MONOTONIC on Linux: one clock for both processes
    echo = {tuple(k) if isinstance(k, list) else k: t for k, t in final["log"]}
    hops = np.asarray([(echo[k] - t0, t1 - echo[k]) for k, t0, t1 in timed if k in echo],
                      dtype=np.int64).reshape(-1, 2)
    return {"samples": np.asarray([t1 - t0 for _, t0, t1 in timed], dtype=np.int64),
            "hops": hops, "lost": lost, "late": late, "echoed": final["echoed"]}


def throughput(args: argparse.Namespace, depth: int | None) -> dict[str, Any]:
    """Publish the 4 KiB array for ``--seconds`` as fast as possible to a sink child."""
    if depth is None:  # keep-all: raw cyclonedds on both sides
        raw = RawEndpoint(args.domain, ARRAY, None, write_topic=BULK)
        write, count = raw.writer.write, raw.subscription_count
        child = Child(args, "sink", "--path", "raw")
    else:
        node = create_node("bench_source", backend="dds", domain_id=args.domain)
        pub = node.create_publisher(ARRAY, BULK, qos_of("reliable", depth))
        write, count = pub.publish, pub.subscription_count
        child = Child(args, "sink", "--depth", str(depth))
    child.read()
    await_match(count, BULK)
    time.sleep(0.2)  # let the reader side finish matching the writer
    msg = ARRAY(data=[0.5] * ARRAY_FLOATS)
    size = len(msg.serialize())
    sent, clock = 0, time.perf_counter_ns
    gc.collect()
    start = clock()
    end = start + int(args.seconds * 1e9)
    while clock() < end:
        msg.layout.data_offset = sent  # the sequence number
        write(msg)  # reliable writers block (no timeout) while Cyclone throttles them
        sent += 1
    stop = clock()
    got = child.stop()  # the child's clock is ours: CLOCK_MONOTONIC
    return {"depth": depth, "size": size, "sent": sent, "elapsed": (stop - start) / 1e9,
            "received": got["received"], "span": max(got["last_ns"] - got["first_ns"], 1) / 1e9,
            "jumps": got["jumps"], "tail": max(0, got["last_ns"] - stop) / 1e9}


def sample_messages() -> tuple[Any, Any]:
    """The ping (AckermannDriveStamped with a frame_id) and the 4 KiB array."""
    drive = DRIVE()
    drive.header.frame_id = "base_link"
    return drive, ARRAY(data=[0.5] * ARRAY_FLOATS)


def in_process_costs(domain: int, calls: int) -> list[list[str]]:
    """p50 and p99 of the Python and in-process DDS steps, interleaved call by call.

    A reader in the same participant gets the sample from Cyclone without the network or a
    thread hand-over: what is left of a hop is the Python side, the binding and Cyclone's own
    bookkeeping. Every step runs once per iteration, so drift of the machine hits all alike.
    """
    drive, array = sample_messages()
    drive_bytes, array_bytes = drive.serialize(), array.serialize()
    raw = RawEndpoint(domain, DRIVE, DEFAULT_QOS, "/bench/local", "/bench/local")
    node = create_node("bench_local", backend="dds", domain_id=domain)
    got: list[Any] = []
    pub = node.create_publisher(DRIVE, "/bench/local_node")
    node.create_subscription(DRIVE, "/bench/local_node", got.append)

    def via_raw() -> None:
        raw.writer.write(drive)
        raw.poll(0.01)

    def via_node() -> None:
        pub.publish(drive)
        node.spin_once(0.01)
        got.clear()

    steps = [
        ("AckermannDriveStamped serialize()", drive.serialize),
        ("AckermannDriveStamped deserialize()", lambda: DRIVE.deserialize(drive_bytes)),
        ("raw: write, WaitSet wait, take (reliable)", via_raw),
        ("node: publish, spin_once, callback (reliable)", via_node),
        (f"Float32MultiArray x{ARRAY_FLOATS} serialize()", array.serialize),
        (f"Float32MultiArray x{ARRAY_FLOATS} deserialize()",
         lambda: ARRAY.deserialize(array_bytes)),
    ]
    times = np.empty((len(steps), calls))
    clock = time.perf_counter_ns
    for i in range(-calls // 10, calls):
        for j, (_, step) in enumerate(steps):
            t0 = clock()
            step()
            times[j, i % calls] = clock() - t0  # the warm-up's entries are overwritten
    node.destroy()
    return [[name, f"{np.percentile(t, 50) / 1e3:.1f}", f"{np.percentile(t, 99) / 1e3:.1f}"]
            for (name, _), t in zip(steps, times)]


# -- report ---------------------------------------------------------------------------------------
def machine_info() -> dict[str, str]:
    """CPU model, cores, affinity, versions and the git state."""
    return bench_common.machine_info({"cyclonedds": importlib.metadata.version("cyclonedds"),
                                      "numpy": np.__version__})


def cpu_times() -> list[int]:
    """The machine's CPU time counters from /proc/stat (user ... steal), or [] elsewhere."""
    with contextlib.suppress(OSError, ValueError):
        return [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    return []


def steal_share(start: list[int], end: list[int]) -> str:
    """Steal time (the host running something else) as a share of all CPU time in between."""
    if len(start) < 8 or len(end) < 8:
        return "unknown"
    delta = [b - a for a, b in zip(start, end)]
    return f"{100 * delta[7] / max(sum(delta), 1):.1f} %"


def trip_row(path: str, qos: str, reps: list[dict[str, Any]], sent_per_rep: int) -> list[str]:
    """One round-trip table row: pooled percentiles, per-rep p50 range, loss."""
    us = np.concatenate([r["samples"] for r in reps]) / 1e3
    rep_p50 = [float(np.percentile(r["samples"], 50)) / 1e3 for r in reps if len(r["samples"])]
    if len(us):
        p50, p99, p999 = np.percentile(us, [50, 99, 99.9])
        stats = [f"{p50:.1f}", f"{min(rep_p50):.1f}..{max(rep_p50):.1f}", f"{p99:.1f}",
                 f"{p999:.1f}", f"{us.mean():.1f}", f"{us.max():.1f}"]
    else:
        stats = ["-"] * 6
    lost = sum(r["lost"] for r in reps)
    return [path, qos.replace("_", " "), str(len(us)), *stats,
            f"{lost} of {sent_per_rep * len(reps)}", str(sum(r["late"] for r in reps))]


def hop_row(path: str, qos: str, reps: list[dict[str, Any]]) -> list[str]:
    """One-way p50 and p99 of ping and pong, pooled over repetitions."""
    hops = np.concatenate([r["hops"] for r in reps]) / 1e3
    if not len(hops):
        return [path, qos.replace("_", " "), "-", "-", "-", "-", "-"]
    (ping50, pong50), (ping99, pong99) = np.percentile(hops, [50, 99], axis=0)
    return [path, qos.replace("_", " "), str(len(hops)), f"{ping50:.1f}", f"{ping99:.1f}",
            f"{pong50:.1f}", f"{pong99:.1f}"]


def flow_row(f: dict[str, Any]) -> list[str]:
    """One throughput table row."""
    rate = f["received"] / f["span"]
    lost = f["sent"] - f["received"]
    history = "keep-all" if f["depth"] is None else f"keep-last {f['depth']}"
    return [f"reliable {history}", "raw" if f["depth"] is None else "node", str(f["sent"]),
            f"{f['sent'] / f['elapsed']:.0f}", str(f["received"]), f"{rate:.0f}",
            f"{rate * f['size'] / 1e6:.1f}", f"{lost} ({100 * lost / max(f['sent'], 1):.1f} %)",
            str(f["jumps"]), f"{f['tail']:.2f}"]


def report(args: argparse.Namespace, info: dict[str, str],
           trips: dict[tuple[str, str], list[dict[str, Any]]], flows: list[dict[str, Any]],
           local: list[list[str]]) -> str:
    """The whole report, as plain text or markdown tables."""
    sizes = [len(m.serialize()) for m in sample_messages()]
    pin = (f"; pinned: this process CPU {args.parent_cpu}, children CPU {args.child_cpu}"
           if args.pin else "; not pinned")
    header = [
        "Command: `" + " ".join(shlex.quote(a) for a in ["python", *sys.argv]) + "`",
        f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"Machine: {info['cpu']}, nproc {info['nproc']}, CPUs allowed {info['affinity']}{pin}; "
        f"load avg {args.load_start} at the start, {info['load']} at the end; CPU steal "
        f"during the run {steal_share(args.cpu_start, cpu_times())}",
        f"Versions: Python {info['python']}, cyclonedds {info['cyclonedds']}, "
        f"numpy {info['numpy']}; git {info['git']}",
        f"Transport: dds backend, loopback Domain configuration, domain id {args.domain}",
        f"Round trip: AckermannDriveStamped ({sizes[0]} bytes serialised), {args.reps} reps "
        f"x {args.roundtrips} timed after {args.warmup} warm-up, interleaved, one in flight, "
        f"timeout {args.timeout_ms:g} ms",
        f"Throughput: Float32MultiArray x{ARRAY_FLOATS} ({sizes[1]} bytes serialised), "
        f"{args.seconds:g} s tight publish loop, one run each",
    ]
    if args.markdown:
        header = [f"- {line}" for line in header]
    trip_head = ["path", "QoS", "timed", "p50 us", "p50 per rep", "p99 us", "p99.9 us",
                 "mean us", "max us", "lost", "late"]
    trip_rows = [trip_row(path, qos, reps, args.roundtrips)
                 for (path, qos), reps in trips.items()]
    flow_head = ["QoS", "path", "sent", "sender msg/s", "received", "received msg/s",
                 "MB/s received", "lost", "seq jumps", "receiver tail s"]
    table = bench_common.markdown_table if args.markdown else bench_common.text_table
    parts = ["\n".join(header),
             "Round trip (publish -> echo process -> reply handed to us), us:",
             table(trip_head, trip_rows),
             "One way, publish call -> subscriber callback (ping: us -> echo; pong: echo -> "
             "us), us; one clock for both processes (perf_counter_ns is CLOCK_MONOTONIC):",
             table(["path", "QoS", "matched", "ping p50", "ping p99", "pong p50", "pong p99"],
                   [hop_row(path, qos, reps) for (path, qos), reps in trips.items()]),
             "Throughput, one publisher process to one subscriber process:",
             table(flow_head, [flow_row(f) for f in flows]),
             f"In this process, no network, no thread hand-over ({LOCAL_CALLS} calls each, "
             "interleaved):",
             table(["step", "p50 us", "p99 us"], local)]
    return "\n\n".join(parts) + "\n"


def _depths(text: str) -> list[int | None]:
    """'10,100,all' -> [10, 100, None]."""
    try:
        depths = [None if d.strip() == "all" else int(d) for d in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected depths or 'all', comma-separated") \
            from None
    if any(d is not None and d < 1 for d in depths):
        raise argparse.ArgumentTypeError(f"{text!r}: depths must be >= 1")
    return depths


def main(argv: list[str] | None = None) -> int:
    """Entry point (the parent, or a child role)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--roundtrips", type=int, default=5000,
                        help="timed round trips per configuration and repetition")
    parser.add_argument("--warmup", type=int, default=200, help="untimed round trips first")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions")
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput: publish time")
    parser.add_argument("--domain", type=int, default=None,
                        help="DDS domain id (default: one in 1-101 that no other process "
                        "holds, claimed like the tests do)")
    parser.add_argument("--timeout-ms", type=float, default=100.0,
                        help="a ping without a reply after this long is lost")
    parser.add_argument("--depths", type=_depths, default=[10, 100, None],
                        help="throughput: reliable histories (default 10,100,all)")
    parser.add_argument("--pin", action="store_true",
                        help="this process on the first allowed CPU, the children on the second")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    child = parser.add_argument_group("child roles (started by the script itself)")
    child.add_argument("--role", choices=["main", "echo", "sink"], default="main")
    child.add_argument("--path", choices=["node", "raw", "udp"], default="node")
    child.add_argument("--qos", choices=["reliable", "best_effort"], default="reliable")
    child.add_argument("--depth", type=int, default=None)
    child.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.role != "main":
        if args.domain is None:
            parser.error(f"--role {args.role} needs --domain")
        try:
            if args.role == "echo":
                run_echo(args)
            else:
                run_sink(args)
        except SystemExit as exc:  # a failed match: tell the parent, which stops
            _say({"error": str(exc)})
            return 1
        return 0

    if args.roundtrips < 2000:
        parser.error(f"--roundtrips={args.roundtrips}: p99 needs >= 2000 round trips")
    if args.reps < 1 or args.warmup < 0 or args.seconds <= 0 or args.timeout_ms <= 0:
        parser.error("--reps must be >= 1, --warmup >= 0, --seconds and --timeout-ms > 0")
    if args.domain is None:  # the tests' claim, so a run never shares a domain with them
        try:
            args.domain = claim_domain_id(start=os.getpid())
        except RuntimeError as exc:
            raise SystemExit(f"{exc}; pass --domain") from None
    args.parent_cpu = args.child_cpu = None
    if args.pin:
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) < 2:
            parser.error(f"--pin needs two allowed CPUs, have {allowed}")
        args.parent_cpu, args.child_cpu = allowed[:2]
        os.sched_setaffinity(0, {args.parent_cpu})
    args.load_start = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    args.cpu_start = cpu_times()

    trips: dict[tuple[str, str], list[dict[str, Any]]] = {c: [] for c in LATENCY_CONFIGS}
    for rep in range(args.reps):
        shift = rep % len(LATENCY_CONFIGS)
        for path, qos in LATENCY_CONFIGS[shift:] + LATENCY_CONFIGS[:shift]:
            result = round_trip(args, path, qos)
            trips[path, qos].append(result)
            p50, p99 = (np.percentile(result["samples"], [50, 99]) / 1e3
                        if len(result["samples"]) else (np.nan, np.nan))
            print(f"rep {rep} {path:<4} {qos:<11}: p50 {p50:7.1f} us, p99 {p99:7.1f} us, "
                  f"lost {result['lost']}, late {result['late']}", file=sys.stderr, flush=True)
            gc.collect()  # delete this run's entities before the next one matches
    flows = []
    for depth in args.depths:
        flows.append(throughput(args, depth))
        f = flows[-1]
        print(f"throughput {'keep-all' if depth is None else f'keep-last {depth}'}: "
              f"sent {f['sent']}, received {f['received']}", file=sys.stderr, flush=True)
        gc.collect()
    print(report(args, machine_info(), trips, flows, in_process_costs(args.domain, LOCAL_CALLS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
