"""Per-step and per-episode safety and comfort metrics (issue #19).

Pure numpy: an :class:`EpisodeRecorder` is fed the contract observation, the action, the
reward and the env's ``info`` one step at a time and returns an :class:`EpisodeSafety`
record; :func:`driving_score` is the CARLA Leaderboard's route completion x product of
infraction penalties. ``safety_summary.summarise`` turns records into the evaluation's
safety block over episodes with 95 % intervals (its module doc defines those figures).

What each env gives in ``info`` and what is derived from the contract observation is tabled
in docs/evaluation.md ("What each env gives"): highway-env has no route (completion on a time
basis) and says no collision kind (inferred: vehicle); Carla-v0 says both
(``route_target_m``, ``collision_with``); neither reports red lights or stop signs yet.

Definitions (all per control step k = 1..N after the reset observation k = 0):

- speed v_k: ``info["speed_mps"]`` when present, else the observation's ``speed`` feature;
  distance_m = sum 0.5 (|v_{k-1}| + |v_k|) dt_k (an odometer, env-agnostic); progress_m = sum of
  ``info["progress_m"]`` (arc length along the env's lane / route; None if the env omits it).
- a_k = (v_k - v_{k-1}) / dt_k; jerk_k = (a_k - a_{k-1}) / dt_k for k >= 2 (fewer than two
  steps: no jerk). Lateral acceleration = v_k x yaw_rate_k. Steering rate = (steer_k -
  steer_{k-1}) x max_steer_rad / dt_k (road-wheel rad/s), steer_0 = 0 as the envs' reset
  prev_action.
- gap = ``lead_gap`` (bumper to bumper along the path), closing = -``lead_relative_speed``;
  TTC = gap / closing where a lead is seen and closing > 0 (else undefined, not infinite);
  time headway = gap / v where a lead is seen and v > MIN_HEADWAY_SPEED_MPS.
- Infractions: one record per kind per step. Collision kinds come from a CARLA type id
  (:func:`collision_kind`); where the env does not say, the recorder's
  ``default_collision_kind`` (vehicle) and the record's detail says "inferred". Off-road and
  lane invasions are recorded but carry no penalty: as in the Leaderboard, leaving the road
  costs route completion (here the episode ends).
- Outcome (:func:`outcome_from`): collision / off_road from ``info["termination"]``;
  route_end -> route_complete; time_limit or a truncation without a reason (highway-env) ->
  timeout; simulator_crash (Carla-v0 before issue 20), an unknown reason or an unfinished
  episode -> other.
- Route completion in [0, 1]: "route" basis (reset ``info["route_target_m"]``, the distance
  from the start to the env's route end): progress / target; "route_approx" basis (reset
  ``info["route_length_m"]`` only, Carla-v0 today): target = route_length_m -
  CARLA_ROUTE_BEHIND_M - CARLA_ROUTE_END_MARGIN_M (a lane start with less than 20 m behind
  it makes the target too short, so completion reads a little high); "time" basis (no route,
  ``max_steps`` given: highway-env): steps / max_steps; "outcome" basis (neither): 1 for
  timeout / route_complete, else 0. Always 1.0 when the outcome is route_complete; clipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
import dataclasses
import math
from typing import Any, NamedTuple

import numpy as np

from dsp_driving.driving import contract

# ---- infractions and the CARLA Leaderboard driving score ------------------------------------

PENALTY_COLLISION_PEDESTRIAN = 0.50
PENALTY_COLLISION_VEHICLE = 0.60
PENALTY_COLLISION_STATIC = 0.65
PENALTY_RED_LIGHT = 0.70
PENALTY_STOP_SIGN = 0.80

COLLISION_PEDESTRIAN = "collision_pedestrian"
COLLISION_VEHICLE = "collision_vehicle"
COLLISION_STATIC = "collision_static"
RED_LIGHT = "red_light"
STOP_SIGN = "stop_sign"
OFF_ROAD = "off_road"
LANE_INVASION = "lane_invasion"

COLLISION_KINDS = (COLLISION_PEDESTRIAN, COLLISION_VEHICLE, COLLISION_STATIC)
# kind -> multiplicative penalty per occurrence (1.0: recorded, not penalised)
PENALTIES: dict[str, float] = {
    COLLISION_PEDESTRIAN: PENALTY_COLLISION_PEDESTRIAN,
    COLLISION_VEHICLE: PENALTY_COLLISION_VEHICLE,
    COLLISION_STATIC: PENALTY_COLLISION_STATIC,
    RED_LIGHT: PENALTY_RED_LIGHT,
    STOP_SIGN: PENALTY_STOP_SIGN,
    OFF_ROAD: 1.0,
    LANE_INVASION: 1.0,
}
INFRACTION_KINDS = tuple(PENALTIES)

# ---- outcomes --------------------------------------------------------------------------------

COLLISION, TIMEOUT, ROUTE_COMPLETE, OTHER = "collision", "timeout", "route_complete", "other"
OUTCOMES = (COLLISION, OFF_ROAD, TIMEOUT, ROUTE_COMPLETE, OTHER)
_TERMINATIONS = {"collision": COLLISION, "off_road": OFF_ROAD}
_TRUNCATIONS = {"time_limit": TIMEOUT, "route_end": ROUTE_COMPLETE,
                "simulator_crash": OTHER}

# ---- thresholds and env constants ---------------------------------------------------------

TTC_THRESHOLD_S = 1.5
MIN_HEADWAY_SPEED_MPS = 0.1  # below this the time headway is undefined (a stopped ego)
# carla_env.ROUTE_BEHIND_M and ROUTE_END_MARGIN_M (not imported: that module needs gymnasium)
CARLA_ROUTE_BEHIND_M = 20.0
CARLA_ROUTE_END_MARGIN_M = 35.0

_SPEED = contract.INDEX["speed"]
_YAW_RATE = contract.INDEX["yaw_rate"]
_GAP = contract.INDEX["lead_gap"]
_REL_SPEED = contract.INDEX["lead_relative_speed"]
_HAS_LEAD = contract.INDEX["has_lead"]
_SCALE = {name: scale for name, scale, _ in contract.FEATURES}


def _bad(field: str, value: Any, why: str) -> ValueError:
    return ValueError(f"{field}={value!r}: {why}")


def _finite(field: str, value: Any) -> float:
    """``value`` as a finite float; ValueError naming the field otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _bad(field, value, "must be a finite number") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise _bad(field, value, "must be a finite number")
    return number


def _positive(field: str, value: Any) -> float:
    number = _finite(field, value)
    if number <= 0:
        raise _bad(field, value, "must be > 0")
    return number


@dataclasses.dataclass(frozen=True)
class Infraction:
    """One infraction: its kind (INFRACTION_KINDS), the step it was seen in (1-based) and a
    free-form detail (the CARLA type id hit, "inferred", an event count)."""

    kind: str
    step: int
    detail: str = ""

    def __post_init__(self) -> None:
        if self.kind not in PENALTIES:
            raise _bad("Infraction.kind", self.kind, f"expected one of {INFRACTION_KINDS}")


def collision_kind(type_id: str) -> str:
    """The Leaderboard collision kind of a CARLA actor type id: ``walker.*`` -> pedestrian,
    ``vehicle.*`` -> vehicle, anything else (``static.*``, ``traffic.*``...) -> static."""
    if not isinstance(type_id, str):
        raise _bad("collision type id", type_id, "must be a string")
    if type_id.startswith("walker."):
        return COLLISION_PEDESTRIAN
    if type_id.startswith("vehicle."):
        return COLLISION_VEHICLE
    return COLLISION_STATIC


def driving_score(route_completion: float, infractions: Iterable[Infraction | str]) -> float:
    """CARLA Leaderboard driving score: route completion (a fraction in [0, 1]) x the product
    of PENALTIES over the infractions (kinds or :class:`Infraction`; each one counts)."""
    rc = _finite("route_completion", route_completion)
    if not 0.0 <= rc <= 1.0:
        raise _bad("route_completion", route_completion, "must be in [0, 1]")
    score = rc
    for item in infractions:
        kind = item.kind if isinstance(item, Infraction) else item
        if kind not in PENALTIES:
            raise _bad("infraction kind", kind, f"expected one of {INFRACTION_KINDS}")
        score *= PENALTIES[kind]
    return score


def outcome_from(terminated: bool, truncated: bool, info: Mapping[str, Any]) -> tuple[str, str]:
    """(outcome, the env's own reason or "") of an episode's last step (see the module doc)."""
    if terminated:
        reason = str(info.get("termination", ""))
        return _TERMINATIONS.get(reason, OTHER), reason
    if truncated:
        reason = str(info.get("truncation", ""))
        if not reason:  # highway-env truncates only at its time limit, with no reason
            return TIMEOUT, ""
        return _TRUNCATIONS.get(reason, OTHER), reason
    return OTHER, "unfinished"


# ---- one step ---------------------------------------------------------------------------------


class LeadMeasures(NamedTuple):
    """What one contract observation says about the lead vehicle (SI units; nan: undefined)."""

    speed_mps: float
    has_lead: bool
    gap_m: float  # bumper to bumper along the path (0 when no lead is seen)
    closing_mps: float  # > 0: closing in on the lead
    ttc_s: float  # gap / closing where a lead is seen and closing > 0
    headway_s: float  # gap / speed where a lead is seen and speed > MIN_HEADWAY_SPEED_MPS


def lead_measures(obs: Any, speed_mps: float | None = None) -> LeadMeasures:
    """TTC, time headway and gap from one contract observation (the module doc's
    definitions; the same figures the evaluation, the bag report and policy_node's status
    give). ``speed_mps``: the ego speed where known better than the observation's
    ``speed`` feature (``info["speed_mps"]``)."""
    x = EpisodeRecorder._obs(obs)
    speed = float(x[_SPEED]) * _SCALE["speed"] if speed_mps is None else float(speed_mps)
    lead = bool(x[_HAS_LEAD] > 0.5)
    gap = max(float(x[_GAP]) * _SCALE["lead_gap"], 0.0) if lead else 0.0
    closing = -float(x[_REL_SPEED]) * _SCALE["lead_relative_speed"] if lead else 0.0
    ttc = gap / closing if lead and closing > 0 else math.nan
    headway = gap / speed if lead and speed > MIN_HEADWAY_SPEED_MPS else math.nan
    return LeadMeasures(speed, lead, gap, closing, ttc, headway)


# ---- one episode ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EpisodeSafety:
    """One episode's safety record (SI units; None: undefined in this episode)."""

    episode_return: float
    steps: int
    duration_s: float
    outcome: str  # one of OUTCOMES
    outcome_detail: str  # the env's termination / truncation string ("" if none)
    distance_m: float  # odometer: trapezoid of |speed| over time
    progress_m: float | None  # sum of info["progress_m"] along the env's lane / route
    route_completion: float  # in [0, 1]
    route_basis: str  # "route", "route_approx", "time" or "outcome" (module doc)
    infractions: tuple[Infraction, ...]
    mean_speed_mps: float  # time average over the steps (the reset speed excluded)
    max_speed_mps: float
    min_ttc_s: float | None  # None: TTC never defined (no lead, or never closing)
    ttc_below_frac: float  # fraction of the steps with TTC < TTC_THRESHOLD_S
    min_headway_s: float | None
    lead_steps: int  # steps with a lead vehicle seen
    p95_abs_jerk_mps3: float | None  # None: fewer than two steps
    p95_abs_lateral_accel_mps2: float | None
    p95_abs_steer_rate_rps: float | None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise _bad("EpisodeSafety.outcome", self.outcome, f"expected one of {OUTCOMES}")
        if not 0.0 <= self.route_completion <= 1.0:
            raise _bad("EpisodeSafety.route_completion", self.route_completion,
                       "must be in [0, 1]")
        if not self.distance_m >= 0.0:
            raise _bad("EpisodeSafety.distance_m", self.distance_m, "must be >= 0")

    @property
    def collisions(self) -> int:
        """How many collision infractions."""
        return sum(i.kind in COLLISION_KINDS for i in self.infractions)

    @property
    def off_road(self) -> bool:
        """Whether the episode left the road."""
        return any(i.kind == OFF_ROAD for i in self.infractions)

    @property
    def driving_score(self) -> float:
        """Route completion x the Leaderboard penalties of the infractions."""
        return driving_score(self.route_completion, self.infractions)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (infractions as dicts, plus driving_score and collisions)."""
        out = dataclasses.asdict(self)
        out["infractions"] = [dataclasses.asdict(i) for i in self.infractions]
        out["collisions"] = self.collisions
        out["driving_score"] = self.driving_score
        return out


class EpisodeRecorder:
    """Accumulates one episode at a time: :meth:`reset` with the reset observation and info,
    :meth:`step` after every ``env.step`` with what it returned, :meth:`finish` for the
    record. Reusable: :meth:`reset` starts the next episode.

    ``dt_s``: the control period (``policy_metadata()["control_period_s"]``); a step may
    override it. ``max_steps``: the env's step limit (the "time" route-completion basis).
    ``max_steer_rad``: the road-wheel angle at steer = 1 (``ActionLimits.max_steer_rad``).
    """

    def __init__(self, dt_s: float, max_steps: int | None = None,
                 max_steer_rad: float = contract.ActionLimits().max_steer_rad,
                 default_collision_kind: str = COLLISION_VEHICLE) -> None:
        self.dt_s = _positive("dt_s", dt_s)
        if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(
                max_steps, (int, np.integer)) or max_steps < 1):
            raise _bad("max_steps", max_steps, "must be an int >= 1 or None")
        self.max_steps = None if max_steps is None else int(max_steps)
        self.max_steer_rad = _positive("max_steer_rad", max_steer_rad)
        if default_collision_kind not in COLLISION_KINDS:
            raise _bad("default_collision_kind", default_collision_kind,
                       f"expected one of {COLLISION_KINDS}")
        self.default_collision_kind = default_collision_kind
        self._started = False

    # ---- feeding ------------------------------------------------------------------------

    def reset(self, obs: Any, info: Mapping[str, Any] | None = None) -> None:
        """Start an episode from the reset observation and info."""
        info = info or {}
        x = self._obs(obs)
        self._speeds = [self._speed(x, info)]
        self._dts: list[float] = []
        self._yaw_rates: list[float] = []
        self._steers = [0.0]
        self._ttc: list[float] = []  # nan where undefined
        self._headway: list[float] = []
        self._lead: list[bool] = []
        self._progress: float | None = None
        self._return = 0.0
        self._infractions: list[Infraction] = []
        self._end: tuple[bool, bool, Mapping[str, Any]] | None = None
        self._route_target, self._route_basis = None, ""
        target = info.get("route_target_m")
        if target is not None and _finite("info['route_target_m']", target) > 0:
            self._route_target = float(target)
            self._route_basis = "route"
        elif "route_length_m" in info:
            length = _finite("info['route_length_m']", info["route_length_m"])
            target = length - CARLA_ROUTE_BEHIND_M - CARLA_ROUTE_END_MARGIN_M
            if target > 0:
                self._route_target, self._route_basis = target, "route_approx"
        self._started = True

    def step(self, action: Any, obs: Any, reward: float, terminated: bool, truncated: bool,
             info: Mapping[str, Any], dt_s: float | None = None) -> None:
        """Add one env step: the action sent and what ``env.step`` returned."""
        if not self._started:
            raise RuntimeError("EpisodeRecorder.step() before reset()")
        if self._end is not None:
            raise RuntimeError("EpisodeRecorder.step() after the episode ended; reset() first")
        k = len(self._dts) + 1
        self._return += _finite(f"reward (step {k})", reward)
        if terminated or truncated:
            self._end = (bool(terminated), bool(truncated), dict(info))
        if info.get("truncation") == "simulator_crash":
            return  # the env returned its last observation again: no new motion to record
        dt = self.dt_s if dt_s is None else _positive(f"dt_s (step {k})", dt_s)
        x = self._obs(obs)
        steer, _ = contract.clip_action(action)
        speed = self._speed(x, info)
        self._dts.append(dt)
        self._speeds.append(speed)
        self._steers.append(steer)
        self._yaw_rates.append(float(x[_YAW_RATE]) * _SCALE["yaw_rate"])
        lead = lead_measures(x, speed)
        self._lead.append(lead.has_lead)
        self._ttc.append(lead.ttc_s)
        self._headway.append(lead.headway_s)
        if "progress_m" in info:
            progress = _finite(f"info['progress_m'] (step {k})", info["progress_m"])
            self._progress = (self._progress or 0.0) + progress
        self._infractions.extend(self._step_infractions(k, info))

    def _step_infractions(self, k: int, info: Mapping[str, Any]) -> list[Infraction]:
        found: list[Infraction] = []
        termination = info.get("termination", "")
        hit = info.get("collision_with")
        count = int(info.get("collisions", 0) or 0)
        if hit:
            if isinstance(hit, str):
                hit = [hit]
            for kind, ids in _group(hit).items():
                found.append(Infraction(kind, k, ",".join(ids)))
        elif count > 0 or termination == "collision":
            found.append(Infraction(self.default_collision_kind, k, "inferred"))
        if termination == "off_road":
            found.append(Infraction(OFF_ROAD, k))
        invasions = int(info.get("lane_invasions", 0) or 0)
        if invasions > 0:
            found.append(Infraction(LANE_INVASION, k, str(invasions)))
        for key, kind in (("red_light", RED_LIGHT), ("stop_sign", STOP_SIGN)):
            if info.get(key):
                found.append(Infraction(kind, k))
        extra = info.get("infractions") or ()
        for kind in ([extra] if isinstance(extra, str) else extra):
            if kind not in PENALTIES:
                raise _bad(f"info['infractions'] (step {k})", kind,
                           f"expected kinds from {INFRACTION_KINDS}")
            if not any(f.kind == kind for f in found):
                found.append(Infraction(kind, k))
        return found

    # ---- the record -----------------------------------------------------------------------

    def finish(self) -> EpisodeSafety:
        """The episode's record (an unfinished episode has outcome "other")."""
        if not self._started:
            raise RuntimeError("EpisodeRecorder.finish() before reset()")
        if self._end is None:
            outcome, detail = OTHER, "unfinished"
        else:
            outcome, detail = outcome_from(*self._end)
        steps = len(self._dts)
        v = np.asarray(self._speeds)
        dt = np.asarray(self._dts)
        distance = float(np.sum(0.5 * (np.abs(v[:-1]) + np.abs(v[1:])) * dt))
        duration = float(np.sum(dt))
        accel = np.diff(v) / dt if steps else np.zeros(0)
        jerk = np.diff(accel) / dt[1:] if steps >= 2 else np.zeros(0)
        lateral = v[1:] * np.asarray(self._yaw_rates)
        steer_rate = np.diff(self._steers) * self.max_steer_rad / dt if steps else np.zeros(0)
        ttc, headway = np.asarray(self._ttc), np.asarray(self._headway)
        defined = ttc[np.isfinite(ttc)]
        completion, basis = self._completion(outcome, distance)
        return EpisodeSafety(
            episode_return=self._return, steps=steps, duration_s=duration, outcome=outcome,
            outcome_detail=detail, distance_m=max(distance, 0.0), progress_m=self._progress,
            route_completion=completion, route_basis=basis,
            infractions=tuple(self._infractions),
            mean_speed_mps=float(np.sum(v[1:] * dt) / duration) if steps else float(v[0]),
            max_speed_mps=float(np.max(v[1:])) if steps else float(v[0]),
            min_ttc_s=float(defined.min()) if defined.size else None,
            ttc_below_frac=float(np.count_nonzero(defined < TTC_THRESHOLD_S) / steps)
            if steps else 0.0,
            min_headway_s=float(np.nanmin(headway)) if np.isfinite(headway).any() else None,
            lead_steps=int(sum(self._lead)),
            p95_abs_jerk_mps3=_p95(jerk), p95_abs_lateral_accel_mps2=_p95(lateral),
            p95_abs_steer_rate_rps=_p95(steer_rate))

    def series(self) -> dict[str, np.ndarray]:
        """The current episode's per-step values behind the record, for distributions
        (plots): ``speed_mps`` (after each step), ``ttc_s`` and ``headway_s`` (only the steps
        where they are defined)."""
        if not self._started:
            raise RuntimeError("EpisodeRecorder.series() before reset()")
        ttc, headway = np.asarray(self._ttc), np.asarray(self._headway)
        return {"speed_mps": np.asarray(self._speeds[1:], dtype=np.float64),
                "ttc_s": ttc[np.isfinite(ttc)], "headway_s": headway[np.isfinite(headway)]}

    def _completion(self, outcome: str, distance: float) -> tuple[float, str]:
        if outcome == ROUTE_COMPLETE:
            return 1.0, self._route_basis or "outcome"
        if self._route_target is not None:
            covered = self._progress if self._progress is not None else distance
            return float(np.clip(covered / self._route_target, 0.0, 1.0)), self._route_basis
        if self.max_steps is not None:
            steps = len(self._dts) if outcome != TIMEOUT else self.max_steps
            return float(min(steps / self.max_steps, 1.0)), "time"
        return (1.0 if outcome == TIMEOUT else 0.0), "outcome"

    # ---- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _obs(obs: Any) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float64).reshape(-1)
        if x.shape != (contract.OBS_DIM,):
            raise _bad("observation shape", x.shape, f"expected ({contract.OBS_DIM},)")
        if not np.all(np.isfinite(x)):
            bad = [contract.OBSERVATION_NAMES[i] for i in np.flatnonzero(~np.isfinite(x))]
            raise _bad("observation", {n: float(x[contract.INDEX[n]]) for n in bad},
                       "must be finite")
        return x

    @staticmethod
    def _speed(x: np.ndarray, info: Mapping[str, Any]) -> float:
        if "speed_mps" in info:
            return _finite("info['speed_mps']", info["speed_mps"])
        return float(x[_SPEED]) * _SCALE["speed"]


def _group(type_ids: Iterable[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for type_id in type_ids:
        out.setdefault(collision_kind(type_id), []).append(type_id)
    return out


def _p95(values: np.ndarray) -> float | None:
    return float(np.percentile(np.abs(values), 95)) if values.size else None


def recorder_for(env: Any) -> EpisodeRecorder:
    """A recorder with an env's control period, step limit and steer scale, read from the
    unwrapped HighwayDriveEnv / CarlaDriveEnv (duck-typed: ``policy_metadata()``,
    ``max_steps`` or ``config.max_episode_steps``, ``limits``)."""
    base = getattr(env, "unwrapped", env)
    meta = base.policy_metadata()
    max_steps = getattr(base, "max_steps", None)
    if max_steps is None and hasattr(base, "config"):
        max_steps = getattr(base.config, "max_episode_steps", None)
    limits = getattr(base, "limits", None) or contract.ActionLimits()
    return EpisodeRecorder(meta["control_period_s"], max_steps=max_steps,
                           max_steer_rad=limits.max_steer_rad)
