"""Vehicles: drive planned routes, change scenes, depart again on new trips.

A vehicle is one long-lived SimPy process. It waits for its departure, then
drives its route stretch by stretch (consecutive edges with the same scene and
speed form one stretch, one timeout), logging ``vehicle_depart``,
``scene_enter`` and ``vehicle_arrive``. At departure, at each scene change (with a
map-based detector), on its detector's alarms and at the policy's ticks it asks the
run's refinement policy (:mod:`ivsim.refine.policies`) which estimator refinements to
request from the cloud, now or later (:meth:`Vehicle.decide`). It keeps every
estimator it has on board (the base weights and each deployed adapter) and uses the
one made for the scene it is in, if it has one (``estimator_switch`` rows); under the
``oracle`` policy it always has the scene's own. Its position at any instant is exact:
the route polyline at ``s0 + speed * (t - t0)`` (see :mod:`ivsim.sim.mobility`).
Frames are not a per-vehicle process: the serving base station collects the
frames of all its vehicles at each frame instant (see
:mod:`ivsim.sim.basestation`).
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ivsim.errors import RouteError
from ivsim.sim.kernels import trip_stretches

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    import simpy

    from ivsim.refine.policies import Plan
    from ivsim.sim.engine import Simulation
    from ivsim.world.routes import Route

__all__ = ["Vehicle"]

logger = logging.getLogger(__name__)


@dataclass
class Vehicle:
    """One vehicle.

    Parameters
    ----------
    sim
        The owning simulation.
    index
        Row in the simulation's :class:`~ivsim.sim.mobility.VehicleTable`.
    vehicle_id
        Name in the event log.
    depart_s
        Departure time of the first trip.
    speed_factor
        Multiplies every edge speed.
    first_route
        The planned route of the first trip.
    next_route
        For fleet vehicles that depart again: ``next_route(from_node, trip)``
        returns the next trip's route, or ``None`` to stop.
    """

    sim: Simulation
    index: int
    vehicle_id: str
    depart_s: float
    speed_factor: float
    first_route: Route
    next_route: Callable[[int, int], Route | None] | None = None
    trips_done: int = 0
    route: Route | None = None
    """The route of the trip under way (``None`` before departure)."""
    trip: int = -1
    onboard: dict[int, tuple[str, int]] = field(default_factory=dict)
    """Estimators on board: scene -> ``(adapter_id, version)`` (``""``, 0 = the base weights)."""
    planned: dict[int, float] = field(default_factory=dict)
    """Scenes with a request planned for later: scene -> when it is to be sent."""
    waiting: dict[int, tuple[Plan, int]] = field(default_factory=dict)
    """Requests an uplink outage holds back: scene -> ``(plan, trip)``; sent when the radio finds the uplink usable."""
    last_change_s: float = float("nan")
    """When the vehicle last changed scene (not counting departures)."""
    last_alarm_s: float = float("nan")
    _entry_t: list[float] | None = None  # this trip's scene entries (time, scene), in time order
    _entry_scene: list[int] | None = None
    _clock: tuple[np.ndarray, np.ndarray] | None = None

    def run(self) -> Generator[simpy.Event, None, None]:
        """Depart, drive, arrive; repeat while ``next_route`` gives a new trip."""
        env = self.sim.env
        if self.depart_s > env.now:
            yield env.timeout(self.depart_s - env.now)
        route: Route | None = self.first_route
        trip = 0
        while route is not None:
            yield from self._drive(route, trip)
            self.trips_done += 1
            if self.next_route is None:
                return
            trip += 1
            try:
                route = self.next_route(route.nodes[-1], trip)
            except RouteError as exc:  # a random trip that cannot be planned ends the vehicle's day
                logger.warning("%s: no further trip: %s", self.vehicle_id, exc)
                route = None

    # ------------------------------------------------------------------ refinement

    def arrival_t_s(self, scene: int, t_s: float, *, next_entry: bool = False) -> float:
        """When this trip enters ``scene`` after ``t_s``; NaN: never on this trip.

        The truth, from the trip's own schedule (the simulator knows it; detectors predict it).
        If the vehicle is in ``scene`` at ``t_s``, the entry it made (unless ``next_entry``:
        then the next one after ``t_s``).
        """
        et, es = self._entry_t, self._entry_scene
        if et is None or es is None:
            return float("nan")
        k = bisect.bisect_right(et, t_s)  # entries up to t_s: et[:k]; the last of them is the scene at t_s
        if not next_entry and k > 0 and es[k - 1] == scene:
            return et[k - 1]
        for j in range(k, len(es)):
            if es[j] == scene:
                return et[j]
        return float("nan")

    def planned_clock(self) -> tuple[np.ndarray, np.ndarray]:
        """``(distance_m, time_s)`` knots along this trip's route at the map's planned edge speeds."""
        if self._clock is None:
            route = self.route
            assert route is not None
            v = self.sim.roadmap.speed_mps[route.edges]
            s = np.concatenate(([route.edge_start_m[0]], route.edge_end_m))
            t = np.concatenate(([0.0], np.cumsum((route.edge_end_m - route.edge_start_m) / v)))
            self._clock = (s, t)
        return self._clock

    def decide(self, reason: str) -> None:
        """Ask the run's policy what to request at this decision point; send now or plan for later.

        At an ``update`` (the detector's new predictions) requests planned for later are open
        to revision: the policy sees them as not pending, and a new start time replaces the
        old one. At other decision points they stand.
        """
        from ivsim.refine.policies import Decision  # torch-free; local to keep the import graph flat

        sim = self.sim
        now = sim.env.now
        i = self.index
        table = sim.vehicles
        if not table.active[i] or not getattr(sim.refine_policy, "asks", True):
            return
        scene = int(table.scene[i])
        boundaries = sim.detector.boundaries(sim, i, now) if reason in ("depart", "scene", "update") else []
        self._log_boundaries(boundaries)
        spec = sim.scenario.refinement
        pending = set(sim.cloud.refinements_in_flight(i))
        if reason != "update":
            pending |= set(self.planned) | set(self.waiting)
        decision = Decision(
            sim=sim, vehicle=i, t_s=now, reason=reason, scene=scene, boundaries=boundaries,
            covered=frozenset(self.onboard), pending=frozenset(pending), samples=spec.samples, steps=spec.steps,
        )  # fmt: skip
        for plan in sim.refine_policy.decide(decision):
            if plan.start_t_s > now:
                self._plan(plan)
            else:
                self.planned.pop(plan.target_scene, None)
                self._send(plan)

    def _plan(self, plan: Plan) -> None:
        """Send ``plan`` at its start time (replacing an earlier plan for the same scene)."""
        self.waiting.pop(plan.target_scene, None)
        if self.planned.get(plan.target_scene) != plan.start_t_s:
            self.planned[plan.target_scene] = plan.start_t_s
            self.sim.process(self._send_later(plan, self.trip))

    def _send(self, plan: Plan) -> None:
        """Send the request of ``plan`` now; in uplink outage (no way to send it), hold it until the uplink is usable.

        A held request waits for the radio network: at each measurement it checks, in one
        step for every vehicle holding requests, whether the uplink is usable again
        (:meth:`~ivsim.sim.cloud.CloudNode.uplink_changed`), and then :meth:`uplink_usable` sends it.
        """
        sim = self.sim
        if not sim.cloud.can_send(self.index):
            self.waiting[plan.target_scene] = (plan, self.trip)
            sim.cloud.wait_for_uplink(self.index)
            return
        self.waiting.pop(plan.target_scene, None)
        sim.cloud.request_refinement(
            self.index, plan.target_scene, policy=sim.refine_policy.kind, deadline_t_s=plan.deadline_t_s,
            samples=plan.samples, steps=plan.steps,
            arrival_t_s=self.arrival_t_s(plan.target_scene, sim.env.now),
        )  # fmt: skip

    def _still_wanted(self, plan: Plan, trip: int) -> bool:
        """Whether a request planned or held on ``trip`` is still to be sent now."""
        i = self.index
        if self.trip != trip or not self.sim.vehicles.active[i] or plan.target_scene in self.onboard:
            return False
        return plan.target_scene not in self.sim.cloud.refinements_in_flight(i)

    def uplink_usable(self) -> None:
        """The radio found this vehicle's uplink usable: send the requests an outage held back."""
        waiting, self.waiting = self.waiting, {}
        for plan, trip in waiting.values():
            if self._still_wanted(plan, trip):
                self._send(plan)

    def _send_later(self, plan: Plan, trip: int) -> Generator[simpy.Event, None, None]:
        env = self.sim.env
        yield env.timeout(plan.start_t_s - env.now)
        if self.planned.get(plan.target_scene) != plan.start_t_s:
            return  # replaced by a newer plan
        del self.planned[plan.target_scene]
        if self._still_wanted(plan, trip):
            self._send(plan)

    def _ticks(self, every_s: float, trip: int, reason: str) -> Generator[simpy.Event, None, None]:
        """Decide every ``every_s`` while this trip lasts (``tick``: the policy polls; ``update``: new predictions)."""
        env = self.sim.env
        while True:
            yield env.timeout(every_s)
            if self.trip != trip or not self.sim.vehicles.active[self.index]:
                return
            self.decide(reason)

    def _log_boundaries(self, boundaries: list) -> None:
        sim = self.sim
        now = sim.env.now
        seen = set()
        for b in boundaries:
            if b.target_scene in seen:
                continue
            seen.add(b.target_scene)
            truth = self.arrival_t_s(b.target_scene, now, next_entry=True)
            sim.log.log(
                "detect", now, self.vehicle_id, vehicle=self.vehicle_id, detector=sim.detector.kind, detection="boundary",
                target_scene=sim.scene_names[b.target_scene], predicted_t_s=b.predicted_t_s, arrival_t_s=truth,
                error_s=b.predicted_t_s - truth, distance_m=b.distance_m,
            )  # fmt: skip

    def alarm(self, statistic: float) -> None:
        """The detector raised an alarm: log it with the truth beside it, then let the policy decide."""
        sim = self.sim
        now = sim.env.now
        changed = self.last_change_s > (self.last_alarm_s if np.isfinite(self.last_alarm_s) else -np.inf)
        sim.log.log(
            "detect", now, self.vehicle_id, vehicle=self.vehicle_id, detector=sim.detector.kind, detection="alarm",
            target_scene=sim.scene_names[int(sim.vehicles.scene[self.index])], statistic=statistic,
            delay_s=now - self.last_change_s if changed else float("nan"), false_alarm=not changed,
        )  # fmt: skip
        self.last_alarm_s = now
        self.decide("detect")

    def install(self, scene: int, adapter_id: str, version: int) -> None:
        """A refined estimator for ``scene`` arrived (a deploy): keep it; use it now if the vehicle is in ``scene``."""
        self.onboard[scene] = (adapter_id, version)
        if int(self.sim.vehicles.scene[self.index]) == scene:
            self._use(scene, source="deploy")

    def _use(self, scene: int, *, source: str) -> bool:
        """Switch to the on-board estimator of ``scene``; return whether anything changed."""
        sim = self.sim
        table = sim.vehicles
        i = self.index
        adapter, version = self.onboard[scene]
        if int(table.estimator_scene[i]) == scene and table.adapter_id[i] == adapter:
            return False
        table.estimator_scene[i] = scene
        table.set_adapter(i, adapter)
        table.estimator_version[i] = version
        sim.detector.reset(i)
        if source != "deploy":
            sim.log.log(
                "estimator_switch", sim.env.now, self.vehicle_id, vehicle=self.vehicle_id, source=source,
                estimator_scene=sim.scene_names[scene], estimator_version=version, adapter_id=adapter,
            )  # fmt: skip
        return True

    def _entered(self, scene: int, *, departing: bool) -> None:
        """On entering ``scene``: use an estimator made for it if one is on board (or, for the oracle, always)."""
        sim = self.sim
        if not departing:
            self.last_change_s = sim.env.now
        if getattr(sim.refine_policy, "oracle", False):
            if scene not in self.onboard:
                self.onboard[scene] = ("", 0)
                base = sim.vehicles.base_scene
                base[self.index] = scene
            self._use(scene, source="oracle")
        elif scene in self.onboard:
            self._use(scene, source="onboard")
        if departing or sim.detector.maps_scenes:
            self.decide("depart" if departing else "scene")

    def _stretches(
        self, route: Route, t_s: float
    ) -> tuple[list[tuple[float, float, float, int]], np.ndarray, np.ndarray]:
        """Split a route into ``(start_m, end_m, speed_mps, scene)`` stretches of constant speed and scene.

        Also returns when each stretch starts, for a trip departing at ``t_s``, and each stretch's scene.
        """
        start_m, end_m, speed, scene, begins = trip_stretches(
            route.edges, self.sim.roadmap.speed_mps, float(self.speed_factor), self.sim.scene_map.edge_scene,
            route.edge_start_m, route.edge_end_m, float(t_s),
        )  # fmt: skip
        stretches = list(zip(start_m.tolist(), end_m.tolist(), speed.tolist(), scene.tolist(), strict=True))
        return stretches, begins, scene

    def _drive(self, route: Route, trip: int) -> Generator[simpy.Event, None, None]:
        sim = self.sim
        env = sim.env
        table = sim.vehicles
        i = self.index
        vid = self.vehicle_id
        table.start_trip(i, route)
        self.waiting.clear()  # requests of the last trip held back by an outage are void
        stretches, begins, scenes = self._stretches(route, env.now)
        self.route, self.trip, self._clock = route, trip, None
        entry = np.concatenate(([True], scenes[1:] != scenes[:-1]))
        self._entry_t, self._entry_scene = begins[entry].tolist(), scenes[entry].tolist()
        start_m, end_m, speed, scene = stretches[0]
        table.enter_edge(i, env.now, start_m, end_m, speed, scene)
        if table.estimator_scene[i] < 0:  # a vehicle holds the estimator of the scene it first departs in
            table.estimator_scene[i] = scene
            table.base_scene[i] = scene
            self.onboard[scene] = ("", 0)
        bs = sim.radio.attach(i, env.now)
        x, y = float(route.xy[0, 0]), float(route.xy[0, 1])
        scene_name = sim.scene_names[scene]
        sim.log.log(
            "vehicle_depart", env.now, vid, vehicle=vid, trip=trip, bs=sim.radio.bs_ids[bs], scene=scene_name,
            route_m=route.length_m, x_m=x, y_m=y, speed_mps=speed,
        )  # fmt: skip
        sim.log.log(
            "scene_enter", env.now, vid, vehicle=vid, trip=trip, scene=scene_name, prev_scene=None,
            x_m=x, y_m=y, speed_mps=speed,
        )  # fmt: skip
        sim.detector.reset(i)
        if getattr(sim.refine_policy, "asks", True):
            for every, reason in (
                (sim.refine_policy.tick_s, "tick"),
                (getattr(sim.detector, "update_s", None), "update"),
            ):
                if every:
                    sim.process(self._ticks(float(every), trip, reason))
        self._entered(scene, departing=True)
        prev = scene
        for k, (start_m, end_m, speed, scene) in enumerate(stretches):
            if k > 0:
                table.enter_edge(i, env.now, start_m, end_m, speed, scene)
                if scene != prev:
                    x, y = route.position(start_m)
                    sim.log.log(
                        "scene_enter", env.now, vid, vehicle=vid, trip=trip, scene=sim.scene_names[scene],
                        prev_scene=sim.scene_names[prev], x_m=float(x), y_m=float(y), speed_mps=speed,
                    )  # fmt: skip
                    prev = scene
                    self._entered(scene, departing=False)
            yield env.timeout((end_m - start_m) / speed)
        x, y = float(route.xy[-1, 0]), float(route.xy[-1, 1])
        sim.log.log(
            "vehicle_arrive", env.now, vid, vehicle=vid, trip=trip, route_m=route.length_m,
            x_m=x, y_m=y, scene=sim.scene_names[prev],
        )  # fmt: skip
        table.active[i] = False
        table.serving[i] = -1
        sim.radio.forget(i)
