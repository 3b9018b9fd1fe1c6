"""`colcon build` of the package (colcon-core + colcon-ros from PyPI) and its ROS install tree."""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import subprocess
import sys

REPO = Path(__file__).resolve().parents[1]
EXECUTABLES = ("trainer_node", "policy_node", "bag_report", "dsp-driving")
LAUNCH_FILES = ("train.launch.py", "policy.launch.py", "sim_eval.launch.py")
CONFIG_FILES = ("train.yaml", "policy.yaml", "highway.yaml", "carla.yaml")


def test_colcon_build_installs_the_ros_layout(tmp_path: Path) -> None:
    colcon = shutil.which("colcon")
    assert colcon, "colcon is not installed: pip install -e '.[test]'"
    done = subprocess.run(
        [colcon, "--log-base", str(tmp_path / "log"), "build", "--base-paths", str(REPO),
         "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install"),
         "--event-handlers", "console_direct-"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Finished <<< dsp_driving" in done.stdout
    prefix = tmp_path / "install" / "dsp_driving"
    for name in EXECUTABLES:  # where `ros2 run dsp_driving <name>` looks
        exe = prefix / "lib" / "dsp_driving" / name
        assert exe.is_file() and os.access(exe, os.X_OK), exe
    share = prefix / "share" / "dsp_driving"
    for name in LAUNCH_FILES:
        assert (share / "launch" / name).read_text() == (REPO / "launch" / name).read_text()
    for name in CONFIG_FILES:
        assert (share / "config" / name).read_text() == (REPO / "config" / name).read_text()
    assert (share / "package.xml").read_bytes() == (REPO / "package.xml").read_bytes()
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / "dsp_driving"
    assert marker.is_file()  # what ament_index (get_package_share_directory) looks up

    # The installed package, not this checkout, finds its config in share/.
    site = next(prefix.glob("lib/python3*/site-packages"))
    probe = subprocess.run(
        [sys.executable, "-c", "import dsp_driving, dsp_driving.config as c; "
         "print(dsp_driving.__file__); print(c.default_config_path())"],
        env={**os.environ, "PYTHONPATH": str(site)}, cwd=tmp_path, capture_output=True,
        text=True, timeout=60, check=True)
    module, config = probe.stdout.split()
    assert Path(module).is_relative_to(site)
    assert Path(config) == share / "config" / "train.yaml"
