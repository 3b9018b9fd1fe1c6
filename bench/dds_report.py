"""The report of bench/dds_latency.py: machine and run header, round-trip, one-way,
throughput and in-process tables (plain text or markdown)."""

from __future__ import annotations

import argparse
import importlib.metadata
import shlex
import sys
import time
from typing import Any

import bench_common
from dds_peers import ARRAY_FLOATS, sample_messages
import numpy as np

LOCAL_CALLS = 5000  # in-process calls per step (dds_latency.in_process_costs)


def machine_info() -> dict[str, str]:
    """CPU model, cores, affinity, versions and the git state."""
    return bench_common.machine_info({"cyclonedds": importlib.metadata.version("cyclonedds"),
                                      "numpy": np.__version__})


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
        f"during the run {bench_common.steal_share(args.cpu_start, bench_common.cpu_times())}",
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
