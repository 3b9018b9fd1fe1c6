"""The CARLA bridge's generic modules import, and the env builds, with carla blocked."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

MODULES = ("dsp_driving.driving.registry", "dsp_driving.driving.carla_env",
           "dsp_driving.driving.backend",
           "dsp_driving.driving.kinematic", "dsp_driving.driving.route",
           "dsp_driving.driving.ports", "dsp_driving.driving.carla_config",
           "dsp_driving.driving.server_process", "dsp_driving.driving.carla_map",
           "dsp_driving.driving.carla_actors", "dsp_driving.driving.carla_backend")
XODR = Path(__file__).resolve().parents[1] / "data" / "two_lane_arc.xodr"

SCRIPT = """
import importlib, json, sys

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "carla":
            raise ImportError("blocked: carla")
        return None

sys.meta_path.insert(0, Blocker())
for name in {modules!r}:
    importlib.import_module(name)
from dsp_driving.driving.carla_config import CarlaConfig
from dsp_driving.driving.carla_env import CarlaDriveEnv, make_backend
env = CarlaDriveEnv()
meta = env.policy_metadata()
try:
    make_backend(CarlaConfig(backend="kinematic", xodr_path={xodr!r}))
except ImportError as exc:
    error = str(exc)
print(json.dumps({{"carla": sorted(m for m in sys.modules if m.split(".")[0] == "carla"),
                  "simulator": meta["simulator"], "error": error}}))
"""


def test_bridge_imports_without_carla() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(modules=MODULES, xodr=str(XODR))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["carla"] == [] and result["simulator"] == "carla"
    assert "pip install carla==0.9.16" in result["error"]
