"""Vehicles: drive planned routes, change scenes, depart again on new trips.

A vehicle is one long-lived SimPy process. It waits for its departure, then
drives its route stretch by stretch (consecutive edges with the same scene and
speed form one stretch, one timeout), logging ``vehicle_depart``,
``scene_enter`` and ``vehicle_arrive``. At departure and at each scene change it
asks the run's refinement policy (:mod:`ivsim.refine.policies`) which estimator
refinements to request from the cloud. Its position at any instant is exact:
the route polyline at ``s0 + speed * (t - t0)`` (see :mod:`ivsim.sim.mobility`).
Frames are not a per-vehicle process: the serving base station collects the
frames of all its vehicles at each frame instant (see
:mod:`ivsim.sim.basestation`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ivsim.errors import RouteError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    import simpy

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

    def _consult_policy(self, scene: int, *, departing: bool) -> None:
        """Request the refinements the run's policy asks for on entering ``scene``."""
        sim = self.sim
        policy = sim.refine_policy
        for target in policy.on_scene(sim, self.index, scene, departing=departing):
            sim.cloud.request_refinement(self.index, target, policy=policy.kind)

    def _stretches(self, route: Route) -> list[tuple[float, float, float, int]]:
        """Split a route into ``(start_m, end_m, speed_mps, scene)`` stretches of constant speed and scene."""
        roadmap = self.sim.roadmap
        edges = route.edges
        speed = roadmap.speed_mps[edges] * self.speed_factor
        scene = self.sim.scene_map.edge_scene[edges]
        change = np.flatnonzero((np.diff(speed) != 0) | (np.diff(scene) != 0)) + 1
        starts = np.concatenate(([0], change))
        ends = np.concatenate((change, [len(edges)]))
        return [
            (float(route.edge_start_m[a]), float(route.edge_end_m[b - 1]), float(speed[a]), int(scene[a]))
            for a, b in zip(starts, ends, strict=True)
        ]

    def _drive(self, route: Route, trip: int) -> Generator[simpy.Event, None, None]:
        sim = self.sim
        env = sim.env
        table = sim.vehicles
        i = self.index
        vid = self.vehicle_id
        table.start_trip(i, route)
        stretches = self._stretches(route)
        start_m, end_m, speed, scene = stretches[0]
        table.enter_edge(i, env.now, start_m, end_m, speed, scene)
        if table.estimator_scene[i] < 0:  # a vehicle holds the estimator of the scene it first departs in
            table.estimator_scene[i] = scene
            table.base_scene[i] = scene
        bs = sim.radio.attach(i, env.now)
        x, y = float(route.xy[0, 0]), float(route.xy[0, 1])
        lon, lat = sim.roadmap.to_lonlat(x, y)
        scene_name = sim.scene_names[scene]
        sim.log.log(
            "vehicle_depart", env.now, vid, vehicle=vid, trip=trip, bs=sim.radio.bs_ids[bs], scene=scene_name,
            route_m=route.length_m, x_m=x, y_m=y, lon=float(lon), lat=float(lat), speed_mps=speed,
        )  # fmt: skip
        sim.log.log(
            "scene_enter", env.now, vid, vehicle=vid, trip=trip, scene=scene_name, prev_scene=None,
            x_m=x, y_m=y, lon=float(lon), lat=float(lat), speed_mps=speed,
        )  # fmt: skip
        self._consult_policy(scene, departing=True)
        prev = scene
        for k, (start_m, end_m, speed, scene) in enumerate(stretches):
            if k > 0:
                table.enter_edge(i, env.now, start_m, end_m, speed, scene)
                if scene != prev:
                    x, y = route.position(start_m)
                    lon, lat = sim.roadmap.to_lonlat(x, y)
                    sim.log.log(
                        "scene_enter", env.now, vid, vehicle=vid, trip=trip, scene=sim.scene_names[scene],
                        prev_scene=sim.scene_names[prev], x_m=float(x), y_m=float(y), lon=float(lon),
                        lat=float(lat), speed_mps=speed,
                    )  # fmt: skip
                    prev = scene
                    self._consult_policy(scene, departing=False)
            yield env.timeout((end_m - start_m) / speed)
        x, y = float(route.xy[-1, 0]), float(route.xy[-1, 1])
        lon, lat = sim.roadmap.to_lonlat(x, y)
        sim.log.log(
            "vehicle_arrive", env.now, vid, vehicle=vid, trip=trip, route_m=route.length_m,
            x_m=x, y_m=y, lon=float(lon), lat=float(lat), scene=sim.scene_names[prev],
        )  # fmt: skip
        table.active[i] = False
        table.serving[i] = -1
        sim.radio.forget(i)
