"""policy_node's ros mode without ROS: the newest odometry, path and lead -> one contract.Scene.

The node hands each message over as it arrives (``on_odometry``, ``on_path``, ``on_lead`` read
it through nodes/conversions.py; ``set_*`` take the plain values) and takes the scene at its next
tick; :meth:`PolicyController.set_scene` turns that into the observation with the training
code (``contract.observe``).

- The ego's acceleration is the finite difference of its speed over the odometry's own header
  stamps (simulation or sensor time, as in training); an unstamped message (stamp 0) counts
  at its arrival time. A refused odometry message is never the next difference's reference.
- A scene is built once per odometry message, at the first tick after it: path and lead
  updates wait for the ego's next odometry.
- The lead vehicle is forgotten once it is older than ``stale_timeout_s`` (by arrival time).
- A path needs at least two distinct finite points; a refused path leaves the previous one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from dsp_driving.driving import contract
from dsp_driving.nodes import conversions
from dsp_driving.nodes.parameters import PolicyNodeConfig

NO_PATH = "odometry before any path: waiting for 'path'"


class SceneAssembler:
    """The newest ego, path and lead of ros mode; the scene due after each odometry message."""

    def __init__(self, cfg: PolicyNodeConfig) -> None:
        self.cfg = cfg
        self._path: contract.Path | None = None
        self._ego: contract.Ego | None = None
        self._received_s = -math.inf  # arrival (node clock) of the newest accepted odometry
        self._lead: tuple[float, contract.Vehicle] | None = None  # (arrival, vehicle)
        self._reference: tuple[float, float] | None = None  # (stamp, speed) for the accel
        self._due = False

    @property
    def received_s(self) -> float:
        """Arrival time of the newest accepted odometry (the stamp of the scene it makes)."""
        return self._received_s

    # ---- messages (duck-typed: rclpy's classes or dsp_driving.msgs) ------------------------

    def on_path(self, msg: Any) -> str:
        """Take a nav_msgs/Path (see :meth:`set_path`); returns "" or why it was refused."""
        return self.set_path(conversions.path_points(msg))

    def on_odometry(self, msg: Any, received_s: float) -> str:
        """Take the ego's nav_msgs/Odometry (see :meth:`set_odometry`); returns "" or why it
        was refused (then :meth:`refuse_odometry` has been applied)."""
        try:
            stamp = conversions.stamp_s(msg.header)
            ego = conversions.ego_from_odometry(msg, 0.0, self.cfg.ego_length_m)
        except (ValueError, TypeError) as exc:
            self.refuse_odometry()
            return str(exc)
        self.set_odometry(ego, stamp, received_s)
        return ""

    def on_lead(self, msg: Any, received_s: float) -> str:
        """Take the lead vehicle's nav_msgs/Odometry; returns "" or why it was ignored."""
        try:
            lead = conversions.vehicle_from_odometry(msg, self.cfg.lead_length_m)
        except (ValueError, TypeError) as exc:
            return str(exc)
        self.set_lead(lead, received_s)
        return ""

    # ---- plain values ---------------------------------------------------------------------

    def set_path(self, points: np.ndarray) -> str:
        """Take the lane's centre line ([n, 2], consecutive points distinct) for the next
        scenes; returns "" or why it was refused (the previous path stays)."""
        points = np.asarray(points, np.float64)
        if len(points) < 2 or not np.all(np.isfinite(points)):
            return f"path with {len(points)} distinct (or non-finite) points ignored"
        try:
            self._path = contract.Path(points, self.cfg.lane_width_m, self.cfg.speed_limit_mps,
                                       self.cfg.left_width_m, self.cfg.right_width_m)
        except ValueError as exc:
            return f"path ignored: {exc}"
        return ""

    def set_odometry(self, ego: contract.Ego, stamp_s: float, received_s: float) -> None:
        """Take the ego's odometry (``ego.accel`` is replaced by the finite difference), with
        its header stamp (0: unstamped, ``received_s`` is used) and its arrival time."""
        stamp = stamp_s or received_s
        accel = 0.0
        if self._reference is not None and stamp > self._reference[0]:
            accel = (ego.speed - self._reference[1]) / (stamp - self._reference[0])
        self._reference = (stamp, ego.speed)
        self._ego = dataclasses.replace(ego, accel=accel)
        self._received_s, self._due = received_s, True

    def refuse_odometry(self) -> None:
        """A bad odometry message: no scene until the next good one (nor a reference)."""
        self._ego = None

    def set_lead(self, vehicle: contract.Vehicle, received_s: float) -> None:
        """Take the vehicle ahead, arrived at ``received_s``."""
        self._lead = (received_s, vehicle)

    def take(self, now_s: float) -> tuple[contract.Scene | None, str]:
        """The scene due at this tick, once per odometry message (else None), with "" or why
        none could be built (no path yet)."""
        due, self._due = self._due, False
        if not due or self._ego is None:
            return None, ""
        if self._path is None:
            return None, NO_PATH
        vehicles: tuple[contract.Vehicle, ...] = ()
        if self._lead is not None and now_s - self._lead[0] <= self.cfg.stale_timeout_s:
            vehicles = (self._lead[1],)
        return contract.Scene(self._ego, self._path, vehicles), ""
