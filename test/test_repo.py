"""Repository contracts: CI runs the README's test command; the ROS package files agree."""

from __future__ import annotations

from pathlib import Path
import xml.etree.ElementTree as ET

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    command = ci_lines[-1]
    assert command.startswith("pip install torch==2.13.0 && ")
    assert command.endswith("&& ruff check . && python -m pytest -q test")  # lint, then tests
    readme = (REPO / "README.md").read_text().splitlines()
    assert command in readme  # the README's fenced test command, verbatim


def test_package_xml_is_ament_python_format_3_with_required_depends() -> None:
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "dsp_driving"
    assert root.find("export").findtext("build_type") == "ament_python"
    exec_depends = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "launch_ros", "std_msgs", "diagnostic_msgs", "nav_msgs",
            "geometry_msgs", "ackermann_msgs", "python3-numpy"} <= exec_depends
    assert [e.text for e in root.findall("test_depend")] == ["python3-pytest"]
    assert root.findtext("license") == "Apache-2.0"
    assert (REPO / "resource" / "dsp_driving").is_file()
    assert "script_dir=$base/lib/dsp_driving" in (REPO / "setup.cfg").read_text()


def test_python_dependencies_are_rosdep_keys_where_a_key_exists() -> None:
    """`rosdep install --from-paths src` installs what a key exists for (rosdistro's
    rosdep/python.yaml); torch, cyclonedds and highway-env have none (README says so)."""
    root = ET.parse(REPO / "package.xml").getroot()
    exec_depends = {e.text for e in root.findall("exec_depend")}
    assert {"python3-onnxruntime-pip", "python3-rosbags-pip", "python3-gymnasium-pip",
            "python3-tqdm", "python3-tensorboard-pip", "python3-yaml",
            "python3-matplotlib"} <= exec_depends
    assert not {d for d in exec_depends if "torch" in d or "cyclone" in d}
    setup = (REPO / "setup.py").read_text()
    assert '"rosbags>=0.11.9,<0.12"' in setup
    readme = (REPO / "README.md").read_text()
    assert "rosdep install --from-paths src" in readme and "no usable rosdep key" in readme
