"""Registers the driving tasks with gymnasium (imported by ``rl.envs`` for ``dsp_driving/*`` ids).

- ``dsp_driving/HighwayDrive-v0``: the embedded default, highway-env with traffic on a
  multi-lane highway (``variant="highway"``) or a curvy track (``variant="track"``, also
  registered as ``dsp_driving/TrackDrive-v0``).
- ``dsp_driving/Carla-v0``: the CARLA bridge (needs the ``carla`` extra and a server, or the
  kinematic stand-in backend for tests).
"""

from __future__ import annotations

import gymnasium as gym

_TASKS = {
    "dsp_driving/HighwayDrive-v0": ("dsp_driving.driving.highway:HighwayDriveEnv",
                                    {"variant": "highway"}),
    "dsp_driving/TrackDrive-v0": ("dsp_driving.driving.highway:HighwayDriveEnv",
                                  {"variant": "track"}),
    "dsp_driving/Carla-v0": ("dsp_driving.driving.carla_env:CarlaDriveEnv", {}),
}

# Envs that drive a simulator server: vector env slot i gets ``server_index=i`` (its own server
# and ports, dsp_driving.driving.ports).
SERVER_ENVS = frozenset({"dsp_driving/Carla-v0"})

for _env_id, (_entry_point, _kwargs) in _TASKS.items():
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point=_entry_point, kwargs=_kwargs)
