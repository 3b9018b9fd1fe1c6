"""trainer_node as a real process (`dsp-driving train --publish`) publishing over DDS."""

from __future__ import annotations

import ast
from pathlib import Path
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("cyclonedds")
pytest.importorskip("onnxscript")

from dsp_driving import topics  # noqa: E402
from dsp_driving.nodes import stats_topics, trainer_node  # noqa: E402
from dsp_driving.transport import create_node  # noqa: E402
from dsp_driving.transport.dds import claim_domain_id  # noqa: E402


def values_of(status) -> dict[str, float | list]:
    """Diagnostic values: repr of numbers ('nan' for null), or of lists (hidden sizes)."""
    return {kv.key: ast.literal_eval(kv.value) if kv.value.startswith("[") else float(kv.value)
            for kv in status.values}


def same(received: float, recorded) -> bool:
    """A diagnostics value (exact repr) against stats.jsonl's (null for non-finite)."""
    return np.isnan(received) if recorded is None else received == recorded


def test_trainer_process_publishes_the_figures_of_stats_jsonl(
        tmp_path: Path, tiny_cli_args, stats_reader) -> None:
    domain = claim_domain_id()
    node = create_node("listener", backend="dds", domain_id=domain)
    t = node.msg_type
    got: dict[str, list] = {"summary": [], "compaction": [], "training": [], "policy": []}
    node.create_subscription(t("std_msgs/msg/Float32MultiArray"), topics.SUMMARY_TOPIC,
                             got["summary"].append)
    node.create_subscription(t("diagnostic_msgs/msg/DiagnosticArray"),
                             topics.COMPACTION_TOPIC, got["compaction"].append)
    node.create_subscription(t("diagnostic_msgs/msg/DiagnosticArray"),
                             topics.TRAINING_TOPIC, got["training"].append)
    node.create_subscription(t("std_msgs/msg/String"), topics.POLICY_TOPIC,
                             got["policy"].append, stats_topics.POLICY_QOS)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dsp_driving", "train", "--publish", "--domain", str(domain),
         "--wait-subscribers", "30", "--env", "CartPole-v1", "--total-steps", "2048",
         "--out", str(run_dir),
         *tiny_cli_args({"train": {"export_onnx": True, "export_every": 2}})],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < end:
            node.spin_once(0.05)
        node.spin(duration_s=1.0)  # the last samples in flight
        output = proc.communicate(timeout=10)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        node.destroy()
    assert proc.returncode == 0, output

    stats = stats_reader(run_dir)
    assert [r["update"] for r in stats] == [1, 2, 3, 4]
    # dsp/compaction/summary: every update, the labelled figures as float32.
    assert len(got["summary"]) == len(stats)
    assert got["summary"][0].layout.dim[0].label == ",".join(topics.SUMMARY_LABELS)
    for msg, rec in zip(got["summary"], stats):
        a, c = rec["actor"], rec["critic"]
        want = [rec["step"], a["neurons_alive"], a["weights_alive"], c["neurons_alive"],
                c["weights_alive"], 100 * (1 - a["weights_alive"] / a["weights_total"]),
                rec["kappa"], np.nan if rec["ep_return_mean"] is None else rec["ep_return_mean"]]
        np.testing.assert_array_equal(np.asarray(msg.data, np.float32),
                                      np.asarray(want, np.float32))
    # the run pruned something, so the figures are not all the dense constants
    assert stats[-1]["actor"]["neurons_alive"] < stats[0]["actor"]["neurons_total"]

    # dsp/compaction: a status per network and per layer, exact values.
    assert len(got["compaction"]) == len(stats)
    for msg, rec in zip(got["compaction"], stats):
        by_name = {s.name: values_of(s) for s in msg.status}
        assert sorted(by_name) == sorted(
            f"trainer_node: {net}{suffix}" for net in ("actor", "critic")
            for suffix in ("", "/layer0", "/layer1"))
        for net in ("actor", "critic"):
            v = by_name[f"trainer_node: {net}"]
            for key in ("neurons_alive", "neurons_total", "weights_alive", "weights_total",
                        "R"):
                assert same(v[key], rec[net][key]), (net, key)
            assert v["kappa"] == rec["kappa"] and v["step"] == rec["step"]
            for i, layer in enumerate(rec[net]["layers"]):
                lv = by_name[f"trainer_node: {net}/layer{i}"]
                assert (lv["alive"], lv["total"], lv["threshold"]) == \
                    (layer["alive"], layer["total"], layer["threshold"])

    # dsp/training: losses, approx_kl, steps_per_s per update, then the evaluation.
    assert len(got["training"]) == len(stats) + 1
    for msg, rec in zip(got["training"], stats):
        v = values_of(msg.status[0])
        assert msg.status[0].name == "trainer_node: training"
        for key in ("policy", "value", "entropy", "lambda_R", "total"):
            assert same(v[f"losses/{key}"], rec["losses"][key]), key
        for key in ("approx_kl", "steps_per_s", "learning_rate", "ep_return_mean", "update"):
            assert same(v[key], rec[key]), key
    final = values_of(got["training"][-1].status[0])
    summary = __import__("json").loads((run_dir / "summary.json").read_text())
    assert final["eval/return_mean"] == summary["eval"]["return_mean"]
    for net in ("actor", "critic"):
        for key in stats_topics.SUMMARY_COMPACTION:
            assert final[f"{net}/{key}"] == summary[net][key], (net, key)

    # dsp/policy: the snapshot at update 2, then the final policy.onnx (transient local).
    paths = [m.data for m in got["policy"]]
    assert paths == [str((run_dir / "policies" / "policy_u000002.onnx").resolve()),
                     str((run_dir / "policy.onnx").resolve())]
    assert all(Path(p).is_file() for p in paths)

    # RUN_DIR/bag (record_bag, on by default) holds what was published (stamps aside)
    from rosbags.rosbag2 import Reader

    recorded: dict[str, list] = {}
    with Reader(run_dir / "bag") as reader:
        for conn, _, raw in reader.messages():
            cls = t(conn.msgtype)
            recorded.setdefault(conn.topic, []).append(cls.deserialize(raw))
    assert [m.data for m in recorded["/dsp/policy"]] == paths
    assert [m.data for m in recorded["/dsp/compaction/summary"]] == \
        [m.data for m in got["summary"]]
    for topic, key in (("/dsp/compaction", "compaction"), ("/dsp/training", "training")):
        assert [m.status for m in recorded[topic]] == [m.status for m in got[key]], topic


def test_parameters_are_the_config_fields_dotted_plus_the_node_settings() -> None:
    params = {"ppo.learning_rate": 1e-3, "net.actor_hidden": [32, 16],
              "pruning.lambda_actor": 5e-4, "train.env_id": "dsp_driving/HighwayDrive-v0",
              "out": "runs/x", "carla_port": 2100}
    with create_node("trainer_node", backend="dds", domain_id=claim_domain_id(),
                     parameters=params) as node:
        cfg, own = trainer_node.parameters(node)
    assert cfg.ppo.learning_rate == 1e-3 and cfg.net.actor_hidden == (32, 16)
    assert cfg.pruning.lambda_actor == 5e-4
    assert cfg.train.env_id == "dsp_driving/HighwayDrive-v0"
    assert cfg.ppo.num_steps == 128  # the rest: defaults (config/train.yaml)
    assert (own.out, own.carla_port, own.resume) == ("runs/x", 2100, False)
    for bad, match in (({"ppo.lerning_rate": 1.0}, "unknown parameter 'ppo.lerning_rate'"),
                       ({"ppo.gamma": 2.0}, r"ppo\.gamma=2\.0"),
                       ({"carla_port": 70000}, "carla_port=70000")):
        with create_node("trainer_node", backend="dds", domain_id=claim_domain_id(),
                         parameters=bad) as node, pytest.raises(ValueError, match=match):
            trainer_node.parameters(node)
