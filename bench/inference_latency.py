"""Batch-1 inference latency, memory and file size of the exported policy (issue 3).

Targets: onnxruntime on the compact policy.onnx, one observation per call, p50 <= 5 us and
p99 <= 10 us; a minimal process that loads ``OnnxPolicy`` and acts stays at RSS <= 80 MB.

Six backends act on the same observations: onnxruntime (``OnnxPolicy.act``), torch eager
(``DeployedActor`` under ``torch.inference_mode``) and a hand-written NumPy forward, each on
the compact actor and on a dense actor with the run's dense hidden sizes. The dense actor has
random weights and the compact actor's normaliser: latency and file size depend only on the
shapes, not on the values. Every backend is checked against its torch actor before timing.
A seventh, "ort 1-node floor", runs a one-node graph with the same inputs, outputs and metadata
through ``OnnxPolicy.act``: onnxruntime's fixed cost per call, whatever the network.

Timing: ``time.perf_counter_ns`` around each call, over a pool of observations cycled through;
``--calls`` timed calls after ``--warmup`` untimed ones per measurement, and ``--reps``
measurements per backend, interleaved (A B C ..., A B C ...) so that slow drift of the machine
hits every backend alike. Reported per backend: the median over repetitions of p50 and p99.
Everything runs on one thread (torch.set_num_threads(1), onnxruntime intra-op 1,
OMP/MKL/OPENBLAS_NUM_THREADS=1); the garbage collector stays on, as in a real control loop.

Usage::

    python bench/inference_latency.py --run runs/results/lunarlander_dspk05_s1
    python bench/inference_latency.py --synthetic                 # no run needed
    taskset -c 1 python bench/inference_latency.py --synthetic --markdown
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import contextlib
import gc
import json
import os
from pathlib import Path
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import bench_common
from inference_backends import (
    Backend,
    Net,
    make_backends,
    normaliser_observations,
    random_actor,
    synthetic_actor,
)
import numpy as np
import onnxruntime as ort
import torch

from dsp_driving.actor_file import load_actor
from dsp_driving.evaluation import visited_observations
from dsp_driving.export import export_actor, sample_observations
from dsp_driving.modules.mlp import count_params
from dsp_driving.rl.networks import ActionSpec

TARGET_P50_US = 5.0
TARGET_P99_US = 10.0
TARGET_RSS_MB = 80.0
TOL = 1e-5
RSS_ACTS = 1000
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
ROOT = Path(__file__).resolve().parents[1]

# A minimal deployment process: the torch-free runtime only, RSS read from the kernel.
RSS_PROBE = """
import json, sys
def status():
    out = {}
    for line in open('/proc/self/status'):
        key, _, value = line.partition(':')
        if key in ('VmRSS', 'VmHWM'):
            out[key] = int(value.split()[0])
    return out
start = status()
from dsp_driving.inference import OnnxPolicy
imported = status()
policy = OnnxPolicy(sys.argv[1])
loaded = status()
import numpy as np
pool = np.random.default_rng(0).standard_normal((64, policy.obs_dim)).astype(np.float32)
for i in range(int(sys.argv[2])):
    policy.act(pool[i % 64])
assert 'torch' not in sys.modules, 'torch was imported by the runtime'
print(json.dumps({'start': start, 'imported': imported, 'loaded': loaded, 'acted': status()}))
"""


def build_nets(args: argparse.Namespace, tmp: Path) -> tuple[Net, Net, np.ndarray, str]:
    """Compact and dense nets with their ONNX files, the observation pool and its origin."""
    if args.synthetic:
        compact, meta = synthetic_actor(args.obs_dim, args.act_dim, args.compact, args.seed)
        dense_hidden = args.dense
        meta["actor"] = {"hidden_dense": dense_hidden, "hidden_compact": args.compact}
        run_onnx = None
    else:
        compact, meta = load_actor(args.run / "actor_compact.pt")
        dense_hidden = list(meta.get("actor", {}).get("hidden_dense") or [])
        if not dense_hidden:
            raise SystemExit(f"{args.run}: actor_compact.pt metadata has no actor.hidden_dense")
        run_onnx = args.run / "policy.onnx"
    continuous = compact.kind == "continuous"
    action = ActionSpec(compact.kind, compact.action_dim,
                        compact.action_low.numpy() if continuous else None,
                        compact.action_high.numpy() if continuous else None)
    dense = random_actor(compact.obs_norm, dense_hidden, action, compact.mlp.activation,
                         args.seed + 1)
    if run_onnx is not None and run_onnx.is_file():
        compact_net = Net("compact", compact, run_onnx, from_run=True)
    else:  # never write into the run folder
        path, _, _ = export_actor(compact, meta, tmp / "compact" / "policy.onnx")
        compact_net = Net("compact", compact, path)
    path, _, _ = export_actor(dense, meta, tmp / "dense" / "policy.onnx")
    dense_net = Net("dense", dense, path)

    origin = "drawn from the normaliser's statistics (mean + std * N(0, 1))"
    pool = None
    if not args.synthetic:
        try:
            pool = visited_observations(compact.act, meta["env_id"], args.pool, args.seed)
            origin = f"visited by the compact policy in {meta['env_id']}"
        except Exception as exc:  # the simulator is optional: fall back to the statistics
            print(f"note: cannot roll out {meta['env_id']} ({exc}); observations are drawn "
                  "from the normaliser's statistics", file=sys.stderr)
    if pool is None:
        pool = normaliser_observations(compact, args.pool, args.seed)
    return compact_net, dense_net, pool, origin


def verify(backends: list[Backend], pool: np.ndarray) -> list[str]:
    """Every backend against its torch actor on the pool plus clip-exercising samples."""
    lines = []
    for b in backends:
        if b.net is None:
            continue
        actor = b.net.actor
        obs = np.concatenate([pool, sample_observations(actor, 256, seed=1)])
        with torch.inference_mode():
            want = actor(torch.from_numpy(obs)).numpy()
            logits = actor.mlp(actor.obs_norm(torch.from_numpy(obs))).numpy()
            with b.context():
                got = np.asarray([b.act(o) for o in obs])
        if actor.kind == "continuous":
            err = float(np.max(np.abs(got.astype(np.float64) - want)))
            ok, what = err <= TOL, f"max |diff| {err:.2g}"
        else:
            top2 = np.sort(logits, axis=1)[:, -2:]
            decided = (top2[:, 1] - top2[:, 0]) >= TOL  # closer logits: rounding decides
            err = int(np.sum(got[decided] != want[decided]))
            ok, what = err == 0, f"argmax mismatches {err} of {int(decided.sum())}"
        if b.logits is not None:
            lerr = float(np.max(np.abs(np.asarray([b.logits(o) for o in obs]) - logits)))
            ok, what = ok and lerr <= TOL, f"{what}, logits max |diff| {lerr:.2g}"
        if not ok:
            raise SystemExit(f"ABORT: {b.name} disagrees with its torch actor over {len(obs)} "
                             f"observations ({what}; tolerance {TOL:g}); no timing was done")
        lines.append(f"{b.name}: {what} over {len(obs)} observations")
    return lines


def time_calls(act: Callable[[np.ndarray], Any], pool: list[np.ndarray], calls: int,
               warmup: int, context: Callable[[], contextlib.AbstractContextManager]
               = contextlib.nullcontext) -> np.ndarray:
    """Per-call nanoseconds of ``act`` over ``calls`` calls after ``warmup`` untimed ones."""
    n, clock = len(pool), time.perf_counter_ns
    out = np.empty(calls, dtype=np.int64)
    gc.collect()
    with context():
        for i in range(warmup):
            act(pool[i % n])
        for i in range(calls):
            obs = pool[i % n]
            t0 = clock()
            act(obs)
            out[i] = clock() - t0
    return out


def timer_floor(pool: list[np.ndarray], calls: int) -> float:
    """p50 in us of the same loop around a Python no-op call (what every figure includes)."""
    return float(np.percentile(time_calls(lambda obs: None, pool, calls, 1000), 50)) / 1e3


def rss_probe(onnx_path: Path) -> dict[str, dict[str, int]]:
    """Run RSS_PROBE in a fresh interpreter; kB figures at each stage."""
    proc = subprocess.run([sys.executable, "-c", RSS_PROBE, str(onnx_path), str(RSS_ACTS)],
                          capture_output=True, text=True, check=False, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"RSS probe failed (exit {proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def file_figures(net: Net) -> dict[str, int]:
    """File bytes split into JSON metadata, initialisers and the rest; the MLP's weights."""
    import onnx

    model = onnx.load(str(net.onnx_path), load_external_data=False)
    meta = sum(len(p.key.encode()) + len(p.value.encode()) for p in model.metadata_props)
    tensors = sum(t.ByteSize() for t in model.graph.initializer)
    size = net.onnx_path.stat().st_size
    return {"bytes": size, "metadata": meta, "tensors": tensors,
            "rest": size - meta - tensors, "weights": count_params(net.actor.mlp)}


# -- report ----------------------------------------------------------------------------------
def machine_info() -> dict[str, str]:
    """CPU model, cores, affinity, library versions and the git state."""
    return bench_common.machine_info({"onnxruntime": ort.__version__, "numpy": np.__version__,
                                      "torch": torch.__version__})


def summarise(b: Backend) -> dict[str, Any]:
    """Per-rep p50/p99/p99.9 in us and their medians over repetitions."""
    per = np.asarray([np.percentile(s, [50, 99, 99.9]) / 1e3 for s in b.samples])
    return {"p50": statistics.median(per[:, 0]), "p50_min": per[:, 0].min(),
            "p50_max": per[:, 0].max(), "p99": statistics.median(per[:, 1]),
            "p99_max": per[:, 1].max(), "p999": statistics.median(per[:, 2]),
            "mean": statistics.median(float(s.mean()) / 1e3 for s in b.samples)}


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(args: argparse.Namespace, info: dict[str, str], nets: tuple[Net, Net],
           backends: list[Backend], floor_us: float, rss: dict[str, Any], origin: str,
           checks: list[str], markdown: bool) -> str:
    """The whole report, as plain text or markdown tables."""
    compact, dense = nets
    stats = {b.name: summarise(b) for b in backends}
    ref = stats["ort compact"]["p50"]
    hwm_mb = rss["compact"]["acted"]["VmHWM"] / 1024  # kB -> MiB
    rss_mb = rss["compact"]["acted"]["VmRSS"] / 1024
    verdicts = [
        ("ort compact p50", f"{ref:.2f} us", f"<= {TARGET_P50_US:g} us",
         _verdict(ref <= TARGET_P50_US)),
        ("ort compact p99", f"{stats['ort compact']['p99']:.2f} us", f"<= {TARGET_P99_US:g} us",
         _verdict(stats["ort compact"]["p99"] <= TARGET_P99_US)),
        ("RSS, peak (VmHWM) of the minimal process", f"{hwm_mb:.1f} MiB "
         f"({hwm_mb * 1.048576:.1f} MB)", f"<= {TARGET_RSS_MB:g} MB",  # 1 MiB = 1.048576 MB
         _verdict(hwm_mb * 1.048576 <= TARGET_RSS_MB)),
    ]
    source = ("synthetic actor" if args.synthetic else f"run {args.run}") + (
        f"; compact policy.onnx {'from the run' if compact.from_run else 'exported to a temp dir'}"
        "; dense actor: same normaliser, random weights (latency and size depend on shapes only)")
    header = [
        "Command: `" + " ".join(shlex.quote(a) for a in ["python", *sys.argv]) + "`",
        f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"Machine: {info['cpu']}, nproc {info['nproc']}, CPUs allowed {info['affinity']}, "
        f"load avg {args.load_start} at the start, {info['load']} at the end; Python "
        f"{info['python']}, onnxruntime "
        f"{info['onnxruntime']}, numpy {info['numpy']}, torch {info['torch']}",
        f"Source: git {info['git']}",
        f"Policy: {source}",
        f"Shapes: obs {compact.actor.mlp.layers[0].in_features} -> compact {compact.hidden} / "
        f"dense {dense.hidden} -> {compact.actor.kind} {compact.actor.action_dim}; activation "
        f"{compact.actor.mlp.activation}",
        f"Observations: pool of {args.pool} {origin}, cycled",
        f"OnnxPolicy.act run path: {next(b.detail for b in backends if b.name == 'ort compact')}",
        f"Timing: {args.calls} timed calls after {args.warmup} warm-up per measurement, "
        f"{args.reps} reps interleaved; figures are medians over reps; timer + loop floor "
        f"(p50 of a no-op call) {floor_us:.2f} us, included in every figure",
        "Parity before timing: " + "; ".join(checks),
    ]
    lo, hi = stats["ort compact"]["p50_min"], stats["ort compact"]["p50_max"]
    if hi > 1.25 * lo:
        header.append(f"WARNING: ort compact p50 ranged {lo:.2f}..{hi:.2f} us over the reps: "
                      "the machine's speed changed during the run; compare the min p50 too")
    if markdown:
        header = [f"- {line}" for line in header]
    lat_head = ["backend", "hidden", "p50 us", "p50 min..max", "p99 us", "p99 max",
                "p99.9 us", "mean us", "p50 / ort compact"]
    lat_rows = [[b.name, b.hidden, f"{s['p50']:.2f}",
                 f"{s['p50_min']:.2f}..{s['p50_max']:.2f}", f"{s['p99']:.2f}",
                 f"{s['p99_max']:.2f}", f"{s['p999']:.2f}", f"{s['mean']:.2f}",
                 f"{s['p50'] / ref:.2f}x"] for b in backends for s in [stats[b.name]]]
    files = {n.name: file_figures(n) for n in nets}
    file_head = ["policy.onnx", "hidden", "file bytes", "JSON metadata", "initialisers",
                 "graph and node annotations", "MLP weights", "x 4 bytes"]
    file_rows = [[n.name, n.label]
                 + [str(f[k]) for k in ("bytes", "metadata", "tensors", "rest", "weights")]
                 + [str(4 * f["weights"])] for n in nets for f in [files[n.name]]]
    ratio = files["dense"]["bytes"] / files["compact"]["bytes"]
    mem_head = ["process", "start", "+ import inference", "+ OnnxPolicy", f"+ {RSS_ACTS} acts",
                "VmHWM"]
    mem_rows = [[f"{name} policy.onnx"] + [f"{r[k]['VmRSS'] / 1024:.1f}" for k in
                                           ("start", "imported", "loaded", "acted")]
                + [f"{r['acted']['VmHWM'] / 1024:.1f}"] for name, r in rss.items()]
    verdict_head = ["figure", "measured", "target", "verdict"]
    table = bench_common.markdown_table if markdown else bench_common.text_table
    parts = ["\n".join(header), "Latency, one observation per call (us):",
             table(lat_head, lat_rows),
             f"Memory: VmRSS in MiB of `python -c` importing only dsp_driving.inference "
             f"(torch absent from sys.modules); compact VmRSS at the end {rss_mb:.1f} MiB:",
             table(mem_head, mem_rows),
             f"Files (bytes; dense / compact file size {ratio:.1f}x):",
             table(file_head, file_rows),
             "Against the targets:", table(verdict_head, [list(v) for v in verdicts])]
    return "\n\n".join(parts) + "\n"


def _sizes(text: str) -> list[int]:
    """'256,256' -> [256, 256]."""
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers") \
            from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive layer widths")
    return sizes


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="run folder with actor_compact.pt")
    source.add_argument("--synthetic", action="store_true",
                        help="random continuous actor, no run needed")
    parser.add_argument("--obs-dim", type=int, default=20, help="synthetic: observation size")
    parser.add_argument("--act-dim", type=int, default=2, help="synthetic: action size")
    parser.add_argument("--dense", type=_sizes, default=[256, 256],
                        help="synthetic: dense hidden sizes (default 256,256)")
    parser.add_argument("--compact", type=_sizes, default=[32, 24],
                        help="synthetic: compact hidden sizes (default 32,24)")
    parser.add_argument("--calls", type=int, default=20_000, help="timed calls per measurement")
    parser.add_argument("--warmup", type=int, default=2_000, help="untimed calls before them")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions")
    parser.add_argument("--pool", type=int, default=256, help="observations cycled through")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = parser.parse_args(argv)
    if args.calls < 10_000:
        parser.error(f"--calls={args.calls}: p99 needs >= 10000 calls per measurement")
    if args.reps < 1 or args.warmup < 0 or args.pool < 1:
        parser.error("--reps and --pool must be >= 1, --warmup >= 0")
    if args.run is not None and not (args.run / "actor_compact.pt").is_file():
        parser.error(f"--run {args.run}: no actor_compact.pt there (bench/results.sh makes "
                     "runs/results/*)")
    if any(k not in os.environ for k in THREAD_ENV):  # BLAS reads these only at start-up
        os.execve(sys.executable, [sys.executable, *sys.argv], {**THREAD_ENV, **os.environ})
    torch.set_num_threads(1)
    args.load_start = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())

    with tempfile.TemporaryDirectory(prefix="bench_latency_") as tmp:
        compact, dense, pool_array, origin = build_nets(args, Path(tmp))
        backends = make_backends(compact, dense, Path(tmp))
        checks = verify(backends, pool_array)
        pool = [np.ascontiguousarray(o) for o in pool_array]
        floor_us = timer_floor(pool, args.calls)
        print(f"timer + loop floor: {floor_us:.2f} us", file=sys.stderr)
        for rep in range(args.reps):
            for b in backends:
                b.samples.append(time_calls(b.act, pool, args.calls, args.warmup, b.context))
                p50, p99 = np.percentile(b.samples[-1], [50, 99]) / 1e3
                print(f"rep {rep} {b.name:<14} p50 {p50:7.2f} us  p99 {p99:7.2f} us",
                      file=sys.stderr, flush=True)
        rss = {net.name: rss_probe(net.onnx_path) for net in (compact, dense)}
        text = report(args, machine_info(), (compact, dense), backends, floor_us, rss, origin,
                      checks, args.markdown)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
