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
import contextlib
import gc
import json
import os
from pathlib import Path
import socket
import subprocess
import sys
import time
from typing import Any

import bench_common
from dds_peers import (
    ARRAY,
    ARRAY_FLOATS,
    BULK,
    DRIVE,
    PING,
    PONG,
    UDP_BYTES,
    RawEndpoint,
    await_match,
    qos_of,
    run_echo,
    run_sink,
    sample_messages,
    say,
    stamp_key,
)
from dds_report import LOCAL_CALLS, machine_info, report
import numpy as np

from dsp_driving.transport import DEFAULT_QOS, create_node
from dsp_driving.transport.dds import claim_domain_id

ROOT = Path(__file__).resolve().parents[1]
LATENCY_CONFIGS = [("node", "reliable"), ("node", "best_effort"), ("raw", "reliable"),
                   ("raw", "best_effort"), ("udp", "-")]


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


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The parser and the command line, parsed."""
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
    return parser, parser.parse_args(argv)


def child_main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """An echo or sink child; a failed match is reported to the parent, exit code 1."""
    if args.domain is None:
        parser.error(f"--role {args.role} needs --domain")
    try:
        if args.role == "echo":
            run_echo(args)
        else:
            run_sink(args)
    except SystemExit as exc:  # a failed match: tell the parent, which stops
        say({"error": str(exc)})
        return 1
    return 0


def prepare_parent(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check the parent's options, claim a domain, pin, note the load and CPU counters."""
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
    args.cpu_start = bench_common.cpu_times()


def latency_runs(args: argparse.Namespace) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every round-trip configuration ``--reps`` times, in a rotating order."""
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
    return trips


def throughput_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One throughput run per ``--depths`` entry."""
    flows = []
    for depth in args.depths:
        flows.append(throughput(args, depth))
        f = flows[-1]
        print(f"throughput {'keep-all' if depth is None else f'keep-last {depth}'}: "
              f"sent {f['sent']}, received {f['received']}", file=sys.stderr, flush=True)
        gc.collect()
    return flows


def main(argv: list[str] | None = None) -> int:
    """Entry point (the parent, or a child role)."""
    parser, args = parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.role != "main":
        return child_main(parser, args)
    prepare_parent(parser, args)
    trips, flows = latency_runs(args), throughput_runs(args)
    print(report(args, machine_info(), trips, flows, in_process_costs(args.domain, LOCAL_CALLS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
