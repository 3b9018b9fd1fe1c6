"""`dsp-driving drive` parameters: config/policy.yaml, --model and --set, and their errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from dsp_driving.cli.drive import parameters
from dsp_driving.nodes.parameters import PolicyNodeConfig

YAML = Path(__file__).resolve().parents[2] / "config" / "policy.yaml"


def test_policy_yaml_lists_every_parameter_with_its_default() -> None:
    params = yaml.safe_load(YAML.read_text())["policy_node"]["ros__parameters"]
    assert params == dataclasses.asdict(PolicyNodeConfig())


def test_model_and_set_override_the_file(tmp_path: Path) -> None:
    values = parameters(str(YAML), "car.onnx", ["rate_hz=20", "command_interface=carla"])
    assert values["model"] == "car.onnx" and values["rate_hz"] == 20
    assert values["command_interface"] == "carla" and values["stale_timeout_s"] == 0.3
    plain = tmp_path / "plain.yaml"
    plain.write_text("rate_hz: 5.0\n")
    assert parameters(str(plain), None, []) == {"rate_hz": 5.0}


def test_bad_input_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--set 'rate_hz': expected key=value"):
        parameters(None, None, ["rate_hz"])
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a mapping at top level, got list"):
        parameters(str(listed), None, [])


def test_drive_refuses_a_missing_model_or_an_unknown_parameter(capsys, tmp_path) -> None:
    pytest.importorskip("cyclonedds")
    from dsp_driving import cli
    from dsp_driving.transport.dds import claim_domain_id

    domain = str(claim_domain_id())
    assert cli.main(["drive", "--domain", domain, "--duration", "0"]) == 2
    assert "model='': set the policy file" in capsys.readouterr().err
    assert cli.main(["drive", "--domain", domain, "--model", "x.onnx",
                     "--set", "rate_hz_typo=5"]) == 2
    assert "unknown parameter 'rate_hz_typo'" in capsys.readouterr().err
    assert cli.main(["drive", "--domain", domain, "--model", str(tmp_path / "none.onnx")]) == 2
    assert "none.onnx" in capsys.readouterr().err


def test_without_cyclonedds_the_dds_commands_say_what_to_install(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = """
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "cyclonedds":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Blocker())
from dsp_driving import cli
sys.exit(cli.main(sys.argv[1:]))
"""
    for args in (["drive", "--model", str(tmp_path / "p.onnx")],
                 ["train", "--publish", "--total-steps", "1", "--out", str(tmp_path / "r")]):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert "needs cyclonedds: pip install -e '.[dds]'" in done.stderr, done.stderr
