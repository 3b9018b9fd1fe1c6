"""PolicyNode in this process on a dds node: what no message can make it do."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("cyclonedds")
pytest.importorskip("onnxscript")

from policy_samples import driving_policy, obs_at  # noqa: E402

from dsp_driving.controller import PolicyNodeConfig  # noqa: E402
from dsp_driving.nodes.policy_node import PolicyNode  # noqa: E402
from dsp_driving.transport import create_node  # noqa: E402
from dsp_driving.transport.dds import claim_domain_id  # noqa: E402


def test_a_failing_decision_still_sends_the_safe_command(tmp_path: Path) -> None:
    model = driving_policy(tmp_path / "policy.onnx")
    with create_node("policy_node", backend="dds", domain_id=claim_domain_id()) as node:
        pn = PolicyNode(node, PolicyNodeConfig(model=str(model)))
        sent = []
        pn.command_pub.publish = sent.append  # what would go on the wire
        pn.controller.set_observation(obs_at(10.0), pn._now_s())

        def broken(now_s: float):
            raise RuntimeError("onnxruntime went away")

        pn.controller.decide = broken
        pn._command()
        pn._command()
    assert len(sent) == 2
    for msg in sent:  # braking at safe_decel_mps2 = 3, steering held at 0 (never driven)
        assert msg.drive.acceleration == pytest.approx(3.0)
        assert msg.drive.steering_angle == 0.0
    assert pn.controller.safe_commands == 2


def test_status_is_published_once_a_second_at_any_rate(tmp_path: Path) -> None:
    model = driving_policy(tmp_path / "policy.onnx")
    with create_node("policy_node", backend="dds", domain_id=claim_domain_id()) as node:
        pn = PolicyNode(node, PolicyNodeConfig(model=str(model), rate_hz=1.2))
        statuses = []
        pn.status_pub.publish = statuses.append
        node.spin(duration_s=2.9)  # ticks every 0.83 s: statuses at the 1st and 3rd (2.5 s)
    assert len(statuses) == 2
