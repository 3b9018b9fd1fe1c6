"""carla.Map and carla.Waypoint seen in REP-103 (the RoadMap / LanePoint of backend.py).

carla is imported lazily, on first use: ``carla.Map(name, xodr_text)`` needs no server, so the
kinematic backend and the route tests read real OpenDRIVE roads through this module.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from dsp_driving.driving.backend import LanePoint, Pose, rep103_from_carla


def import_carla() -> ModuleType:
    """The carla client module, or an ImportError that says how to install it."""
    try:
        import carla
    except ImportError as exc:
        raise ImportError("the CARLA bridge needs the carla client: pip install carla==0.9.16 "
                          "(the 'carla' extra)") from exc
    return carla


class CarlaLanePoint:
    """A carla.Waypoint as a LanePoint (REP-103 pose; left/right keep the travel direction)."""

    __slots__ = ("waypoint",)

    def __init__(self, waypoint: Any) -> None:
        self.waypoint = waypoint

    @property
    def pose(self) -> Pose:
        """Position and heading along the lane's direction of travel (REP-103)."""
        t = self.waypoint.transform
        x, y, yaw = rep103_from_carla(t.location.x, t.location.y, t.rotation.yaw)
        return Pose(x, y, t.location.z, yaw)

    @property
    def lane_width(self) -> float:
        """Width of the lane here (m)."""
        return float(self.waypoint.lane_width)

    @property
    def key(self) -> tuple[int, int, int]:
        """(road id, section id, lane id)."""
        w = self.waypoint
        return (int(w.road_id), int(w.section_id), int(w.lane_id))

    @property
    def is_junction(self) -> bool:
        """Whether the point lies inside a junction."""
        return bool(self.waypoint.is_junction)

    def next(self, distance_m: float) -> list[LanePoint]:
        """The points ``distance_m`` ahead."""
        return [CarlaLanePoint(w) for w in self.waypoint.next(distance_m)]

    def previous(self, distance_m: float) -> list[LanePoint]:
        """The points ``distance_m`` behind."""
        return [CarlaLanePoint(w) for w in self.waypoint.previous(distance_m)]

    def left(self) -> LanePoint | None:
        """The same-direction driving lane on the left (CARLA's left is per travel direction)."""
        return self._neighbour(self.waypoint.get_left_lane())

    def right(self) -> LanePoint | None:
        """The same-direction driving lane on the right."""
        return self._neighbour(self.waypoint.get_right_lane())

    def _neighbour(self, other: Any) -> LanePoint | None:
        if other is None or (other.lane_id > 0) != (self.waypoint.lane_id > 0):
            return None
        if other.lane_type != import_carla().LaneType.Driving:
            return None
        return CarlaLanePoint(other)


class CarlaRoadMap:
    """A carla.Map as a RoadMap."""

    def __init__(self, carla_map: Any) -> None:
        self.map = carla_map

    @property
    def name(self) -> str:
        """The map's name."""
        return str(self.map.name)

    def lane_point(self, x: float, y: float, project_to_road: bool = True, z: float = 0.0
                   ) -> LanePoint | None:
        """The driving-lane point nearest (x, y, z) (REP-103); None off the road if not projecting.

        carla.Map.get_waypoint searches in 3-D: on a map with several levels pass the actor's
        height, or a point under a bridge may snap to the bridge (or the reverse).
        """
        carla = import_carla()
        location = carla.Location(x=float(x), y=-float(y), z=float(z))
        waypoint = self.map.get_waypoint(location, project_to_road=project_to_road,
                                         lane_type=carla.LaneType.Driving)
        return None if waypoint is None else CarlaLanePoint(waypoint)

    def lane_points(self, spacing_m: float) -> list[LanePoint]:
        """Points every ``spacing_m`` on every driving lane."""
        driving = import_carla().LaneType.Driving
        return [CarlaLanePoint(w) for w in self.map.generate_waypoints(spacing_m)
                if w.lane_type == driving]


def load_xodr_map(path: str | Path, name: str | None = None) -> CarlaRoadMap:
    """A RoadMap from an OpenDRIVE file, built offline by carla.Map (no server)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"OpenDRIVE file not found: {path} (carla.xodr_path)")
    text = path.read_text()
    if "<OpenDRIVE" not in text:
        raise ValueError(f"{path} is not an OpenDRIVE file (no <OpenDRIVE> element)")
    carla_map = import_carla().Map(name or path.stem, text)
    if not carla_map.generate_waypoints(10.0):
        raise ValueError(f"{path}: carla.Map found no lanes in it")
    return CarlaRoadMap(carla_map)
