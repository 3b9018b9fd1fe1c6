"""policy_node latency and memory: observation message in -> command message out (issue 6).

A real ``dsp-driving drive`` process (policy_node over the dds transport, ``trigger=input``:
the command goes out as soon as an observation is accepted) and this process on one DDS
domain on loopback. This process publishes a std_msgs/Float32MultiArray contract observation
on ``observation`` (SENSOR_QOS, best effort, as the node subscribes) and waits for the
ackermann_msgs/AckermannDriveStamped on ``ackermann_cmd``; one observation in flight at a time.
``time.perf_counter_ns`` runs from just before ``publish`` to this process's callback of the
command: both DDS hops, (de)serialisation, the node's input checks, the onnxruntime forward,
the command's limits and message building, and waking each process. An observation without
its command after ``--timeout-ms`` counts as lost (the next one is sent).

With the default ``trigger=timer`` the command waits for the node's next tick as well: add up
to 1/rate_hz (100 ms at 10 Hz) to these figures; that wait is the rate's, not the pipeline's.

Policies: real exported [20] -> hidden -> [2] actors with random weights, one per ``--hidden``
(default: 256,256 -- the dense size trained -- and 9,14, the size DSP leaves on the highway
task, docs/driving.md), or ``--model FILE``. ``--reps`` fresh node processes per policy,
interleaved. RSS: VmRSS and VmHWM (peak) of the node process from /proc after its run.

Usage::

    python bench/policy_node_latency.py --markdown
    python bench/policy_node_latency.py --pin --markdown   # bench on one CPU, node on another
    python bench/policy_node_latency.py --hidden 9,14 --record both --markdown  # bag's cost
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
from pathlib import Path
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import machine_info, markdown_table, text_table  # noqa: E402

TARGET_P99_MS = 1.0
TARGET_RSS_MB = 80.0


def make_policy(path: Path, hidden: list[int], seed: int = 0) -> Path:
    """A real exported driving policy (random weights) of the given hidden sizes."""
    import torch

    from dsp_driving.driving import contract
    from dsp_driving.export import export_actor
    from dsp_driving.modules.mlp import MLP
    from dsp_driving.rl.networks import ActionSpec, DeployedActor
    from dsp_driving.rl.normalization import ObsNormalizer

    torch.manual_seed(seed)
    spec = ActionSpec("continuous", 2, np.full(2, -1, np.float32), np.ones(2, np.float32))
    actor = DeployedActor(ObsNormalizer(contract.OBS_DIM),
                          MLP(contract.OBS_DIM, hidden, 2), spec).eval()
    info = {"observation_names": list(contract.OBSERVATION_NAMES),
            "action_names": list(contract.ACTION_NAMES),
            "policy_metadata": contract.policy_metadata()}
    return export_actor(actor, {"env_id": "dsp_driving/HighwayDrive-v0"}, path, info)[0]


def proc_memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB (1e6 bytes)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024 / 1e6
    return fields["VmRSS"], fields["VmHWM"]


def measure(model: Path, n: int, warmup: int, timeout_ms: float,
            node_cpu: int | None = None, record_bag: Path | None = None) -> dict:
    """One node process: n timed observation -> command latencies (ms), lost, memory.
    ``record_bag``: the node also records its topics into this bag (record_bag)."""
    from dsp_driving.driving import contract
    from dsp_driving.transport import create_node
    from dsp_driving.transport.dds import claim_domain_id

    domain = claim_domain_id()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dsp_driving", "drive", "--model", str(model), "--domain",
         str(domain), "--set", "trigger=input", "--set", "rate_hz=10",
         "--set", "stale_timeout_s=1.0",
         *(["--set", f"record_bag={record_bag}"] if record_bag else [])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=None if node_cpu is None else lambda: os.sched_setaffinity(0, {node_cpu}))
    node = create_node("bench", backend="dds", domain_id=domain)
    t = node.msg_type
    pub = node.create_publisher(t("std_msgs/msg/Float32MultiArray"), "observation")
    arrivals: list[int] = []
    node.create_subscription(t("ackermann_msgs/msg/AckermannDriveStamped"), "ackermann_cmd",
                             lambda _m: arrivals.append(time.perf_counter_ns()))
    try:
        end = time.monotonic() + 60
        while not arrivals and time.monotonic() < end:  # the node is up (timer commands)
            node.spin_once(0.05)
        if not arrivals:
            raise RuntimeError("policy_node sent no command in 60 s:\n" + proc.stdout.read())
        node.spin(duration_s=0.3)
        rng = np.random.default_rng(0)
        obs = np.zeros(contract.OBS_DIM, np.float32)
        obs[contract.INDEX["cos_heading_error"]] = 1.0
        latencies, lost = [], 0
        for i in range(warmup + n):
            obs[contract.INDEX["speed"]] = rng.uniform(0.2, 0.8)
            msg = t("std_msgs/msg/Float32MultiArray")(data=[float(v) for v in obs])
            arrivals.clear()
            start = time.perf_counter_ns()
            pub.publish(msg)
            deadline = start + int(timeout_ms * 1e6)
            while not arrivals and time.perf_counter_ns() < deadline:
                node.spin_once(0.002)
            if not arrivals:
                lost += i >= warmup
                node.spin(duration_s=0.2)  # let a late command pass before the next
                continue
            if i >= warmup:
                latencies.append((arrivals[0] - start) / 1e6)
            time.sleep(0.001)  # not faster than the timer-less node would see on a car
        rss, hwm = proc_memory_mb(proc.pid)
        if proc.poll() is not None:
            raise RuntimeError("policy_node exited during the run")
    finally:
        node.destroy()
        proc.terminate()
        proc.wait(timeout=10)
    return {"latency_ms": latencies, "lost": lost, "rss_mb": rss, "hwm_mb": hwm}


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", action="append",
                        help="hidden sizes of a random policy, e.g. 256,256 (repeatable)")
    parser.add_argument("--model", type=Path, action="append", help="an exported policy.onnx")
    parser.add_argument("--n", type=int, default=3000, help="timed observations per rep")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--timeout-ms", type=float, default=100.0)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--record", choices=("off", "on", "both"), default="off",
                        help="the node records a bag (record_bag): off, on, or both "
                        "interleaved, to see what recording costs")
    parser.add_argument("--pin", action="store_true",
                        help="this process on the first allowed CPU, the node on the second")
    args = parser.parse_args()
    args.node_cpu = None
    if args.pin:
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) < 2:
            parser.error(f"--pin needs two allowed CPUs, have {allowed}")
        os.sched_setaffinity(0, {allowed[0]})
        args.node_cpu = allowed[1]
    return args


def policy_files(args: argparse.Namespace, tmp: str) -> dict[str, Path]:
    """Name -> policy file: the ``--model`` files and random ``--hidden`` ones made in
    ``tmp`` (256,256 and 9,14 when neither is given)."""
    models: dict[str, Path] = {}
    for m in args.model or []:
        models[m.name] = m
    if not models or args.hidden:
        for text in args.hidden or ["256,256", "9,14"]:
            hidden = [int(h) for h in text.split(",")]
            models[f"random [{text}]"] = make_policy(
                Path(tmp) / f"policy_{text.replace(',', '_')}.onnx", hidden)
    return models


def runs_of(args: argparse.Namespace, models: dict[str, Path]) -> dict[str, tuple[Path, bool]]:
    """Run name -> (policy file, record a bag): each policy once per ``--record`` setting."""
    return {f"{name}{' +record_bag' if rec else ''}": (model, rec)
            for name, model in models.items()
            for rec in {"off": [False], "on": [True], "both": [False, True]}[args.record]}


def run_all(args: argparse.Namespace, runs: dict[str, tuple[Path, bool]],
            tmp: str) -> dict[str, list[dict]]:
    """``--reps`` fresh node processes per run, interleaved; progress on stderr."""
    results: dict[str, list[dict]] = {name: [] for name in runs}
    for rep in range(args.reps):
        for name, (model, rec) in runs.items():
            bag = Path(tmp) / f"bag_{len(os.listdir(tmp))}" if rec else None
            results[name].append(measure(model, args.n, args.warmup, args.timeout_ms,
                                         args.node_cpu, bag))
            last = results[name][-1]
            print(f"rep {rep + 1}/{args.reps} {name}: p50 "
                  f"{np.percentile(last['latency_ms'], 50):.3f} ms, lost {last['lost']}, "
                  f"RSS {last['rss_mb']:.1f} MB", file=sys.stderr)
    return results


def summarise(name: str, reps: list[dict]) -> tuple[list[str], dict]:
    """One policy's table row and JSON summary, pooled over its repetitions."""
    lat = np.concatenate([r["latency_ms"] for r in reps])
    p50s = [np.percentile(r["latency_ms"], 50) for r in reps]
    q = np.percentile(lat, [50, 90, 99, 99.9])
    rss = max(r["rss_mb"] for r in reps)
    hwm = max(r["hwm_mb"] for r in reps)
    lost = sum(r["lost"] for r in reps)
    row = [name, str(len(lat)), str(lost), f"{q[0]:.3f}",
           f"{min(p50s):.3f}..{max(p50s):.3f}", f"{q[1]:.3f}", f"{q[2]:.3f}",
           f"{q[3]:.3f}", f"{lat.max():.3f}", f"{rss:.1f}", f"{hwm:.1f}"]
    return row, {"n": int(len(lat)), "lost": lost, "p50_ms": q[0], "p99_ms": q[2],
                 "rss_mb": rss, "peak_rss_mb": hwm,
                 "p99_target_met": bool(q[2] <= TARGET_P99_MS),
                 "rss_target_met": bool(hwm <= TARGET_RSS_MB)}


def print_report(args: argparse.Namespace, results: dict[str, list[dict]]) -> None:
    """Machine line, targets, the table (text or markdown) and the JSON summary."""
    head = ["policy", "observations", "lost", "p50 ms", "p50 per rep", "p90 ms", "p99 ms",
            "p99.9 ms", "max ms", "RSS MB", "peak RSS MB"]
    rows, summary = [], {}
    for name, reps in results.items():
        row, summary[name] = summarise(name, reps)
        rows.append(row)
    versions = {k: importlib.metadata.version(k) for k in ("cyclonedds", "onnxruntime",
                                                            "numpy")}
    info = machine_info(versions)
    print(", ".join(f"{k}: {v}" for k, v in info.items())
          + (f"; pinned: this process on CPU {sorted(os.sched_getaffinity(0))[0]}, the node on "
             f"CPU {args.node_cpu}" if args.pin else "; not pinned"))
    print(f"targets: p99 <= {TARGET_P99_MS} ms, RSS <= {TARGET_RSS_MB} MB")
    print(markdown_table(head, rows) if args.markdown else text_table(head, rows))
    print(json.dumps(summary))


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = run_all(args, runs_of(args, policy_files(args, tmp)), tmp)
    print_report(args, results)


if __name__ == "__main__":
    main()
