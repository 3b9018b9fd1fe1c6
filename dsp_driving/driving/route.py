"""The route the CARLA bridge follows: lane-centre points from a RoadMap, in REP-103.

Built once per episode from the ego's start lane (a little behind it, ``ahead_m`` in front),
with the lane width and the distances to the carriageway's edges at every point: the left and
right neighbours driving in the same direction belong to the road, the oncoming lanes do not.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses

import numpy as np

from dsp_driving.driving.backend import LanePoint
from dsp_driving.driving.contract import Path, Projection, project

Chooser = Callable[[list[LanePoint]], LanePoint]


def edge_widths(point: LanePoint) -> tuple[float, float]:
    """Distances (m) from the lane centre to the left and right edges of its carriageway."""
    widths = []
    for side in ("left", "right"):
        width, lane, seen = 0.5 * point.lane_width, getattr(point, side)(), {point.key}
        while lane is not None and lane.key not in seen:
            seen.add(lane.key)
            width += lane.lane_width
            lane = getattr(lane, side)()
        widths.append(width)
    return widths[0], widths[1]


@dataclasses.dataclass(frozen=True)
class Route:
    """A lane-centre polyline with per-point lane width and edge widths (REP-103, m)."""

    points: np.ndarray  # [n, 2]
    lane_width: np.ndarray  # [n]
    left_width: np.ndarray  # [n]
    right_width: np.ndarray  # [n]
    speed_limit: float
    start_s: float  # arc length of the start point (the points behind it come first)
    s: np.ndarray = dataclasses.field(init=False, repr=False)  # [n] arc length of each point

    def __post_init__(self) -> None:
        n = len(self.points)
        if n < 2 or any(len(a) != n for a in (self.lane_width, self.left_width,
                                              self.right_width)):
            raise ValueError(f"Route needs >= 2 points and one width per point, got {n}")
        seg = np.linalg.norm(np.diff(self.points, axis=0), axis=1)
        object.__setattr__(self, "s", np.concatenate([[0.0], np.cumsum(seg)]))

    @property
    def length(self) -> float:
        """Arc length of the whole polyline (m)."""
        return float(self.s[-1])

    def _window(self, s: float, behind_m: float, ahead_m: float) -> slice:
        lo = int(np.searchsorted(self.s, s - behind_m, side="right")) - 1
        hi = int(np.searchsorted(self.s, s + ahead_m, side="left")) + 1
        lo = min(max(lo, 0), len(self.s) - 2)
        return slice(lo, max(min(hi, len(self.s)), lo + 2))

    def locate(self, x: float, y: float, s_hint: float | None = None) -> Projection:
        """Project (x, y) onto the route near ``s_hint`` (whole route if None); global s."""
        window = (slice(0, len(self.s)) if s_hint is None
                  else self._window(s_hint, 15.0, 45.0))
        here = project(self.points[window], x, y)
        return Projection(here.s + float(self.s[window.start]), here.lateral, here.heading)

    def index_at(self, s: float) -> int:
        """Index of the route point nearest arc length ``s``."""
        return int(np.argmin(np.abs(self.s - s)))

    def path_at(self, s: float, behind_m: float = 15.0, ahead_m: float = 60.0) -> Path:
        """The contract Path around arc length ``s``, with the widths of the nearest point."""
        i, window = self.index_at(s), self._window(s, behind_m, ahead_m)
        return Path(self.points[window], lane_width=float(self.lane_width[i]),
                    speed_limit=self.speed_limit, left_width=float(self.left_width[i]),
                    right_width=float(self.right_width[i]))


def build_route(start: LanePoint, ahead_m: float, behind_m: float = 20.0, step_m: float = 2.0,
                speed_limit_mps: float = 25.0, choose: Chooser | None = None) -> Route:
    """Walk the lane from ``start``: ``behind_m`` back, ``ahead_m`` forward (or to a dead end).

    ``choose`` picks a branch at a fork (default: the first one).
    """
    if not step_m > 0:
        raise ValueError(f"step_m={step_m!r}: must be > 0")
    choose = choose or (lambda options: options[0])
    behind: list[LanePoint] = []
    point = start
    for _ in range(int(behind_m // step_m)):
        options = point.previous(step_m)
        if not options:
            break
        point = choose(options)
        behind.append(point)
    ahead: list[LanePoint] = [start]
    point = start
    for _ in range(int(np.ceil(ahead_m / step_m))):
        options = point.next(step_m)
        if not options:
            break
        point = choose(options)
        ahead.append(point)
    lanes = [*reversed(behind), *ahead]
    xy = np.array([(p.pose.x, p.pose.y) for p in lanes], dtype=np.float64)
    keep = np.concatenate([[True], np.linalg.norm(np.diff(xy, axis=0), axis=1) > 1e-3])
    lanes = [p for p, k in zip(lanes, keep, strict=True) if k]
    if len(lanes) < 2:
        raise ValueError(f"lane {start.key} at {start.pose} is too short for a route")
    widths = np.array([edge_widths(p) for p in lanes])
    xy = xy[keep]
    start_index = int(np.sum(keep[:len(behind) + 1])) - 1
    start_s = float(np.sum(np.linalg.norm(np.diff(xy[:start_index + 1], axis=0), axis=1)))
    return Route(points=xy, lane_width=np.array([p.lane_width for p in lanes]),
                 left_width=widths[:, 0], right_width=widths[:, 1],
                 speed_limit=speed_limit_mps, start_s=start_s)
