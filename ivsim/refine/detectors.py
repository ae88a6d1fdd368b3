"""Scene-change detectors: how a vehicle learns that its channel estimator is about to be, or has become, wrong.

A detector is built once per run from ``refinement.detector`` (:class:`~ivsim.config.schema.DetectorSpec`)
and answers two questions for the run's policy (:mod:`ivsim.refine.policies`):

``boundaries(sim, vehicle, t_s)``
    the scene boundaries ahead of a vehicle with their predicted arrival times (map-based
    detectors; asked at departure and at each scene entry);
``observe(sim, vehicles, t_s, tx)``
    after each batch of frames, which vehicles raise an alarm now (statistics-based detectors).

``update_s`` (``None``: never) asks the vehicle for new predictions every so many seconds
between scene entries (a detector that looks along the heading must, as roads turn).
``maps_scenes`` says whether the vehicle knows the scene it is in (a map-based detector does,
so a reactive policy acts on scene entries; a statistics-based one does not, so it acts on
alarms). Every prediction and alarm is logged as a ``detect`` row with the truth beside it,
so a detector's errors are measured, not assumed: ``predicted_t_s`` vs ``arrival_t_s``
(``error_s`` = predicted - actual) for boundaries; ``delay_s`` (alarm time - the last true
scene change) and ``false_alarm`` for alarms.

Built-in kinds:

``route_lookahead``
    the CTCD method: sample the planned route every ``spacing_m`` from the vehicle's position
    (at departure, at each scene entry and, with ``update_s``, every so many seconds),
    look up each sample's scene, and predict the arrival at each change of scene from the
    map's planned edge speeds (``speed: planned``) or the vehicle's speed now (``observed``).
    A boundary lies between the last sample before a change and the first after it; the
    prediction takes the earlier end (at planned speed it is early by less than the spacing,
    never late). Errors come from that sampling (and a scene stretch shorter than the spacing
    can be missed) and from the speeds (a vehicle driving faster or slower than the map's).
``knowledge_map``
    no route: a grid of ``cell_m`` cells holding the scene of the roads in each cell (built
    from the scene map, as a base station would hold a map of channel-estimation knowledge);
    looks along the vehicle's heading for ``horizon_m`` and predicts the arrival at the first
    cell of another scene at the vehicle's speed now, again every ``update_s``. Errors: roads
    turn, and a cell holds the scene of most of its road length.
``channel_statistics``
    no map at all: a two-sided CUSUM on a statistic the receiver computes for every frame
    (``statistic``, default ``pilot_resid_db``, the pilot residual of its own estimate, in
    ``tx`` rows with ``link.fidelity: full``), standardised by a baseline (median and MAD) of
    ``warmup_frames`` frames learnt after departure, after each deploy and after each alarm,
    each frame's score clipped to +-4 sigmas (one outlier cannot raise an alarm alone);
    alarms at ``threshold`` sigmas with ``drift`` sigmas allowed per frame.

A researcher's own detector is a class with the same attributes, named ``module:Class``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import numpy as np
from numba import njit

from ivsim.errors import ScenarioError
from ivsim.registry import resolve_kind

if TYPE_CHECKING:
    from ivsim.config.schema import DetectorSpec
    from ivsim.sim.engine import Simulation

__all__ = [
    "KINDS",
    "Boundary",
    "ChannelStatisticsDetector",
    "Detector",
    "KnowledgeMapDetector",
    "RouteLookaheadDetector",
    "make_detector",
]

logger = logging.getLogger(__name__)

_CLIP = 4.0  # CUSUM: a frame's standardised score counts at most this many sigmas


@dataclass(frozen=True)
class Boundary:
    """A predicted scene boundary ahead of a vehicle.

    Attributes
    ----------
    target_scene
        Scene number (in ``sim.scene_names``) beyond the boundary.
    predicted_t_s
        When the detector expects the vehicle there.
    distance_m
        How far ahead it is, as the detector sees it.
    """

    target_scene: int
    predicted_t_s: float
    distance_m: float


@runtime_checkable
class Detector(Protocol):
    """What a refinement policy learns about scene changes (see the module docstring)."""

    kind: str
    maps_scenes: bool
    update_s: float | None

    def boundaries(self, sim: Simulation, vehicle: int, t_s: float) -> list[Boundary]:
        """Predicted scene boundaries ahead of ``vehicle`` at ``t_s``, nearest first (empty: none seen)."""
        ...

    def observe(self, sim: Simulation, vehicles: np.ndarray, t_s: float, tx: dict[str, np.ndarray]) -> np.ndarray:
        """Vehicles (a subset of ``vehicles``) that raise an alarm after this batch of frames."""
        ...

    def reset(self, vehicle: int) -> None:
        """The vehicle's estimator changed (a deploy) or it departed: forget what was learnt of the old one."""
        ...


class _MapDetector:
    """Shared by the map-based detectors: no alarms, the vehicle knows its scene."""

    maps_scenes: ClassVar[bool] = True
    update_s: float | None = None

    def observe(self, sim: Simulation, vehicles: np.ndarray, t_s: float, tx: dict[str, np.ndarray]) -> np.ndarray:
        """Map-based detectors raise no alarms."""
        return vehicles[:0]

    def reset(self, vehicle: int) -> None:
        """Nothing is learnt per vehicle."""


def _changes(scenes: np.ndarray, current: int) -> np.ndarray:
    """Positions in ``scenes`` where the scene differs from the one before (``current`` before the first)."""
    prev = np.concatenate(([current], scenes[:-1]))
    return np.flatnonzero(scenes != prev)


@njit(cache=True, nogil=True)
def _route_changes_ahead(s_now, spacing_m, n_samples, edge_end_m, edges, edge_scene, current):
    """Samples ``s_now + spacing_m * j`` (``j = 1 .. n_samples``) along a route: where the scene changes.

    Returns ``(s_before, scene)``: for each sample whose edge's scene differs from the previous
    sample's (``current`` before the first), the previous sample's distance (``s_now`` for the
    first) and the new scene. A sample on an edge joint belongs to the edge that starts there.
    """
    s_before = np.empty(n_samples)
    scene = np.empty(n_samples, dtype=np.int64)
    m = 0
    k = 0
    last = edges.shape[0] - 1
    prev, prev_s = current, s_now
    for j in range(1, n_samples + 1):
        s = s_now + spacing_m * j
        while k < last and edge_end_m[k] <= s:
            k += 1
        sc = edge_scene[edges[k]]
        if sc != prev:
            s_before[m] = prev_s
            scene[m] = sc
            m += 1
        prev, prev_s = sc, s
    return s_before[:m], scene[:m]


class RouteLookaheadDetector(_MapDetector):
    """Sample the planned route ahead every ``spacing_m``; predict when each scene change is reached."""

    kind: ClassVar[str] = "route_lookahead"

    def __init__(self, spec: DetectorSpec) -> None:
        self.spec = spec
        self.spacing_m = float(spec.spacing_m)
        self.observed = spec.speed == "observed"
        self.update_s = spec.update_s

    def boundaries(self, sim: Simulation, vehicle: int, t_s: float) -> list[Boundary]:
        """Scene changes among the route samples ahead, with their predicted arrival times."""
        veh = sim.fleet[vehicle]
        route = veh.route
        if route is None:
            return []
        table = sim.vehicles
        s_now = table.distance_of(vehicle, t_s)
        n_samples = int((route.length_m - s_now) // self.spacing_m)
        if n_samples <= 0:
            return []
        s_hit, scenes = _route_changes_ahead(
            s_now, self.spacing_m, n_samples, route.edge_end_m, route.edges, sim.scene_map.edge_scene,
            int(table.scene[vehicle]),
        )  # fmt: skip
        if len(scenes) == 0:
            return []
        # the boundary lies between the last sample before the change and the first after it: take the
        # earlier end, so that at planned speed the prediction is never late (early by < spacing_m)
        if self.observed:
            speed = max(float(table.speed_mps[vehicle]), 0.1)
            when = t_s + (s_hit - s_now) / speed
        else:  # the map's edge speeds, as a route planner knows them (not the driver's own pace)
            knots_s, knots_t = veh.planned_clock()
            when = t_s + np.interp(s_hit, knots_s, knots_t) - np.interp(s_now, knots_s, knots_t)
        return [
            Boundary(sc, w, d)
            for sc, w, d in zip(scenes.tolist(), when.tolist(), (s_hit - s_now).tolist(), strict=True)
        ]


class KnowledgeMapDetector(_MapDetector):
    """Scenes on a grid of cells; look along the heading for the first cell of another scene."""

    kind: ClassVar[str] = "knowledge_map"

    def __init__(self, spec: DetectorSpec) -> None:
        self.spec = spec
        self.cell_m = float(spec.cell_m)
        self.horizon_m = float(spec.horizon_m)
        self.update_s = float(spec.update_s or 5.0)
        self._cells: dict[tuple[int, int], int] | None = None

    def _build(self, sim: Simulation) -> dict[tuple[int, int], int]:
        """Cell -> scene of the most road length in it (edge polylines sampled every half cell)."""
        roadmap = sim.roadmap
        weight: dict[tuple[int, int, int], float] = {}
        step = self.cell_m / 2
        for e, xy in enumerate(roadmap.edge_xy):
            if len(xy) < 2:
                continue
            seg = np.hypot(*np.diff(xy, axis=0).T)
            cum = np.concatenate(([0.0], np.cumsum(seg)))
            if cum[-1] <= 0:
                continue
            s = np.arange(0.0, cum[-1] + 1e-9, step)
            px = np.floor(np.interp(s, cum, xy[:, 0]) / self.cell_m).astype(np.int64)
            py = np.floor(np.interp(s, cum, xy[:, 1]) / self.cell_m).astype(np.int64)
            scene = int(sim.scene_map.edge_scene[e])
            for cx, cy in zip(px.tolist(), py.tolist(), strict=True):
                key = (cx, cy, scene)
                weight[key] = weight.get(key, 0.0) + step
        best: dict[tuple[int, int], tuple[float, int]] = {}
        for (cx, cy, scene), w in weight.items():
            if (cx, cy) not in best or w > best[(cx, cy)][0]:
                best[(cx, cy)] = (w, scene)
        return {cell: scene for cell, (_, scene) in best.items()}

    def boundaries(self, sim: Simulation, vehicle: int, t_s: float) -> list[Boundary]:
        """Scene changes among the known cells along the heading, reached at the vehicle's speed now."""
        if self._cells is None:
            self._cells = self._build(sim)
        veh = sim.fleet[vehicle]
        route = veh.route
        if route is None:
            return []
        table = sim.vehicles
        idx = np.array([vehicle])
        s_now = table.distance_of(vehicle, t_s)
        x, y = table.positions(idx, t_s)
        heading = float(route.heading_rad(s_now))
        d = np.arange(self.cell_m / 2, self.horizon_m + 1e-9, self.cell_m / 2)
        cx = np.floor((x[0] + d * np.cos(heading)) / self.cell_m).astype(np.int64)
        cy = np.floor((y[0] + d * np.sin(heading)) / self.cell_m).astype(np.int64)
        known = [(k, self._cells.get((a, b))) for k, (a, b) in enumerate(zip(cx.tolist(), cy.tolist(), strict=True))]
        known = [(k, sc) for k, sc in known if sc is not None]
        if not known:
            return []
        pos = np.array([k for k, _ in known])
        scenes = np.array([sc for _, sc in known])
        hits = _changes(scenes, int(table.scene[vehicle]))
        speed = max(float(table.speed_mps[vehicle]), 0.1)
        return [Boundary(int(scenes[h]), t_s + float(d[pos[h]]) / speed, float(d[pos[h]])) for h in hits]


class ChannelStatisticsDetector:
    """Two-sided CUSUM on a per-frame receiver statistic, one per vehicle; no map."""

    kind: ClassVar[str] = "channel_statistics"
    maps_scenes: ClassVar[bool] = False
    update_s: float | None = None

    def __init__(self, spec: DetectorSpec) -> None:
        self.spec = spec
        self.statistic = spec.statistic
        self.threshold = float(spec.threshold)
        self.drift = float(spec.drift)
        self.warmup = int(spec.warmup_frames)
        self._base: dict[int, list[float]] = {}
        self._mu_sd: dict[int, tuple[float, float]] = {}
        self._up: dict[int, float] = {}
        self._down: dict[int, float] = {}
        self.last_stat: dict[int, float] = {}

    def boundaries(self, sim: Simulation, vehicle: int, t_s: float) -> list[Boundary]:
        """No map: no predictions."""
        return []

    def reset(self, vehicle: int) -> None:
        """Learn a new baseline from the next ``warmup_frames`` frames."""
        self._base[vehicle] = []
        self._mu_sd.pop(vehicle, None)
        self._up[vehicle] = 0.0
        self._down[vehicle] = 0.0

    def observe(self, sim: Simulation, vehicles: np.ndarray, t_s: float, tx: dict[str, np.ndarray]) -> np.ndarray:
        """Update each vehicle's CUSUM with its frame's statistic; return the vehicles over the threshold."""
        values = tx.get(self.statistic)
        if values is None:
            msg = (
                f"refinement.detector: channel_statistics watches the tx column {self.statistic!r}, which this "
                "link does not report (use link.fidelity: full)"
            )
            raise ScenarioError(msg)
        alarms = []
        for v, x in zip(vehicles.tolist(), np.asarray(values, dtype=float).tolist(), strict=True):
            if not np.isfinite(x):
                continue
            if v not in self._mu_sd:
                base = self._base.setdefault(v, [])
                base.append(x)
                if len(base) >= self.warmup:  # robust: median and MAD (the residual has heavy tails)
                    mu = float(np.median(base))
                    sd = max(1.4826 * float(np.median(np.abs(np.asarray(base) - mu))), 0.1)
                    self._mu_sd[v] = (mu, sd)
                    self._up[v] = self._down[v] = 0.0
                continue
            mu, sd = self._mu_sd[v]
            z = float(np.clip((x - mu) / sd, -_CLIP, _CLIP))
            self._up[v] = max(0.0, self._up[v] + z - self.drift)
            self._down[v] = max(0.0, self._down[v] - z - self.drift)
            stat = max(self._up[v], self._down[v])
            if stat > self.threshold:
                self.last_stat[v] = stat
                alarms.append(v)
                self.reset(v)
        return np.asarray(alarms, dtype=np.int64)


KINDS: dict[str, type] = {
    "route_lookahead": RouteLookaheadDetector,
    "knowledge_map": KnowledgeMapDetector,
    "channel_statistics": ChannelStatisticsDetector,
}
"""Built-in detectors by ``refinement.detector.kind``."""


def make_detector(spec: DetectorSpec) -> Detector:
    """Build the detector of ``refinement.detector`` (a key of :data:`KINDS` or ``module:Class``).

    Raises
    ------
    ScenarioError
        Unknown kind, or a ``module:Class`` that cannot be imported or lacks the protocol.
    """
    cls = resolve_kind(spec.kind, KINDS, what="refinement.detector.kind", error=ScenarioError)
    detector = cls(spec)
    if not isinstance(detector, Detector):
        msg = (
            f"refinement.detector.kind {spec.kind!r}: {cls.__name__} lacks kind, maps_scenes, update_s, boundaries(), "
            "observe() or reset()"
        )
        raise ScenarioError(msg)
    return detector
