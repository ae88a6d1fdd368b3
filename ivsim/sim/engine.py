"""The simulation: one SimPy environment, its entities, RNG streams and event log.

:class:`Simulation` builds the world from a :class:`~ivsim.config.schema.Scenario`
(road map, routes, scene map), creates the entities (vehicles, the radio
network, base stations, the cloud), starts one long-lived ``run()`` process per
entity, and is the only code that calls ``env.run()``. Short-lived processes (a
transmission batch, a cloud job) are started by their owners through
:meth:`Simulation.process`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import simpy

from ivsim.errors import OutputError, RouteError, ScenarioError
from ivsim.refine.budget import RefineTimingModel, load_refine_timing
from ivsim.refine.detectors import make_detector
from ivsim.refine.policies import make_policy
from ivsim.refine.service import Refiner, make_refiner
from ivsim.rng import RngStreams
from ivsim.sim.basestation import BaseStation, FrameScheduler
from ivsim.sim.cloud import CloudNode
from ivsim.sim.eventlog import EventLog
from ivsim.sim.interrupts import caused_by_interrupt, interrupts_at_safe_points
from ivsim.sim.links import LinkBatcher, LinkEvaluator, make_link_evaluator
from ivsim.sim.mobility import VehicleTable
from ivsim.sim.radio import RadioNetwork
from ivsim.sim.vehicle import Vehicle
from ivsim.world.maps import RoadMap, load_map
from ivsim.world.routes import Route, Router, nodes_in_polygon
from ivsim.world.scenes import SceneMap

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from ivsim.config.schema import BaseStationSpec, FleetSpec, NodeSampler, Scenario

__all__ = ["RunSummary", "Simulation", "prepare_run_dir"]

logger = logging.getLogger(__name__)

_VERSIONED = ("ivsim", "simpy", "numpy", "pandas", "pyarrow", "networkx", "osmnx", "pyrosm", "pydantic", "scipy")


@dataclass
class RunSummary:
    """What a finished (or interrupted) run did."""

    run_id: str
    run_dir: Path | None
    status: str
    sim_time_s: float
    wall_s: float
    counts: dict[str, int]
    frames: int = 0
    frames_delivered: int = 0
    handovers: int = 0
    vehicles: int = 0

    @property
    def realtime_factor(self) -> float:
        """Simulated seconds per wall-clock second."""
        return self.sim_time_s / self.wall_s if self.wall_s > 0 else float("inf")


def prepare_run_dir(run_dir: Path, *, force: bool = False) -> Path:
    """Create ``run_dir``; refuse a non-empty one unless ``force`` (then its old log files are removed).

    Raises
    ------
    OutputError
        If the folder holds files (without ``force``) or cannot be written.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        msg = f"{run_dir}: output path exists and is not a folder"
        raise OutputError(msg)
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not force:
            msg = f"{run_dir}: run directory is not empty (use --force to overwrite, or choose another -o)"
            raise OutputError(msg)
        for name in ("events.parquet", "manifest.json", "scenario.resolved.yaml"):
            (run_dir / name).unlink(missing_ok=True)
        parts = run_dir / "parts"
        if parts.is_dir():
            for p in parts.iterdir():
                p.unlink()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        msg = f"{run_dir}: output directory is not writable ({exc.strerror or exc})"
        raise OutputError(msg) from None
    return run_dir


class Simulation:
    """A scenario built into a running SimPy world.

    Parameters
    ----------
    scenario
        The validated scenario.
    run_dir
        Where the event log, manifest and resolved scenario go; ``None`` keeps
        the log in memory (``sim.log.to_pandas()``).
    run_id
        Name of the run in the log; default: the run folder's name or the scenario name.
    roadmap
        An already loaded road map (skips loading ``scenario.map``).
    link_evaluator
        Replaces the evaluator chosen by ``link.fidelity``.
    refiner
        Replaces the refiner chosen by ``link.fidelity`` (:func:`ivsim.refine.service.make_refiner`).
    force
        Overwrite a non-empty ``run_dir``.

    Raises
    ------
    MapError, RouteError, OutputError
        On a bad map, an unroutable vehicle or an unusable run folder.
    ModelError, ScenarioError
        When a refinement policy can request jobs but they cannot be priced or
        computed (no refine timings, a policy class that cannot be imported).
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        run_dir: str | Path | None = None,
        run_id: str | None = None,
        roadmap: RoadMap | None = None,
        link_evaluator: LinkEvaluator | None = None,
        refiner: Refiner | None = None,
        force: bool = False,
    ) -> None:
        self.scenario = scenario
        self.run_dir = prepare_run_dir(Path(run_dir), force=force) if run_dir is not None else None
        self.run_id = run_id or (self.run_dir.name if self.run_dir else scenario.name)
        self.env = simpy.Environment()
        self.rng = RngStreams(scenario.seed)
        self.roadmap = roadmap if roadmap is not None else load_map(scenario.map)
        self.router = Router(self.roadmap)
        self.scene_names: tuple[str, ...] = tuple(scenario.scenes)
        self.scene_map = SceneMap(self.roadmap, scenario.scene_rules, self.scene_names)
        self._scene_names_arr = np.asarray(self.scene_names, dtype=object)
        self._ids: list[str] = []
        plans = self._plan_vehicles()
        self.link_notes: list[str] = []
        """Lines the link evaluator asked to put in the log (e.g. an estimator's fall-back), logged at start."""
        evaluator = link_evaluator or make_link_evaluator(scenario, seed=self.rng.int_seed("link"), notes=self.link_notes)
        self.refine_policy = make_policy(scenario.refinement.policy)
        self.detector = make_detector(scenario.refinement.detector)
        statistic = getattr(self.detector, "statistic", None)
        if statistic is not None and not getattr(evaluator, "scores_images", False):
            msg = (
                f"refinement.detector.kind {scenario.refinement.detector.kind!r} watches the receiver's "
                f"{statistic!r}, which only link.fidelity full reports"
            )
            raise ScenarioError(msg)
        self.refiner: Refiner | None = refiner
        """Computes refinement jobs; built here when the policy can request any, else on the first request."""
        self.refine_timing: RefineTimingModel | None = None
        self.refine_notes: list[str] = []
        """Lines the refiner asked to put in the log, logged at start (or at once when built later)."""
        self._evaluator = evaluator
        self._refine_ready = False
        self._started = False
        if refiner is not None or scenario.refinement.policy.kind not in ("never", "oracle"):
            self.refinement()  # fail before the log creates the run folder's parts/
        # only now that every vehicle is routable: the log creates parts/, which would leave the run
        # folder non-empty (and refused on the next try) if planning failed
        self.log = EventLog(
            self.run_dir,
            self.run_id,
            flush_rows=scenario.output.flush_rows,
            flush_interval_s=scenario.output.flush_interval_s,
            background=scenario.output.combine == "background",
            lonlat=self.roadmap.to_lonlat,
        )
        self.vehicles = VehicleTable(len(plans), len(scenario.base_stations))
        self._ids_arr = np.asarray(self._ids, dtype=object)
        self.radio = RadioNetwork(self)
        self.base_stations = [BaseStation(self, i, spec) for i, spec in enumerate(scenario.base_stations)]
        self.scheduler = FrameScheduler(self)
        self.cloud = CloudNode(self)
        self.links = LinkBatcher(self.env, evaluator, window_s=scenario.link.batch_window_s)
        self.fleet: list[Vehicle] = [Vehicle(self, i, *plan) for i, plan in enumerate(plans)]
        self.status = "created"

    # ------------------------------------------------------------------ building

    def bs_xy(self, spec: BaseStationSpec) -> tuple[float, float]:
        """Projected position of a base station."""
        pos = spec.position
        if hasattr(pos, "x_m"):
            return float(pos.x_m), float(pos.y_m)
        x, y = self.roadmap.to_xy(pos.lon, pos.lat)
        return float(x), float(y)

    def _plan_vehicles(self) -> list[tuple]:
        """Plan every vehicle's first route; return ``(id, depart_s, speed_factor, route, next_route)`` rows."""
        sc = self.scenario
        plans: list[tuple] = []
        for i, spec in enumerate(sc.vehicles):
            try:
                route = self.router.route(spec.origin, spec.destination, via=spec.via)
            except RouteError as exc:
                msg = f"vehicles.{i} ({spec.id}): {exc}"
                raise RouteError(msg) from None
            self._ids.append(spec.id)
            plans.append((spec.id, spec.depart_s, spec.speed_factor, route, None))
        for f, fleet in enumerate(sc.fleets):
            plans.extend(self._plan_fleet(f, fleet))
        return plans

    def _sampler_nodes(self, sampler: NodeSampler, where: str) -> np.ndarray:
        if sampler.kind == "any":
            return np.array(sorted(self.roadmap.graph.nodes), dtype=np.int64)
        if sampler.kind == "polygon":
            try:
                return np.sort(nodes_in_polygon(self.roadmap, sampler.polygon))
            except RouteError as exc:
                msg = f"{where}: {exc}"
                raise RouteError(msg) from None
        missing = [n for n in sampler.nodes if n not in self.roadmap.graph]
        if missing:
            msg = f"{where}.nodes: nodes not on the map (largest connected part): {missing[:5]}"
            raise RouteError(msg)
        return np.asarray(sampler.nodes, dtype=np.int64)

    def _plan_fleet(self, f: int, fleet: FleetSpec) -> list[tuple]:
        origins = self._sampler_nodes(fleet.origins, f"fleets.{f}.origins")
        dests = self._sampler_nodes(fleet.destinations, f"fleets.{f}.destinations")
        rng = self.rng.numpy(f"departures/{fleet.id}")
        dep = fleet.departures
        if dep.kind == "at_start":
            departs = dep.t_s + rng.uniform(0.0, dep.spread_s, fleet.count)
        elif dep.kind == "poisson":
            departs = dep.start_s + np.cumsum(rng.exponential(1.0 / dep.rate_per_s, fleet.count))
        else:
            departs = rng.uniform(dep.start_s, dep.end_s, fleet.count)
        factors = rng.uniform(fleet.speed_factor[0], fleet.speed_factor[1], fleet.count)
        plans = []
        for n in range(fleet.count):
            vid = f"{fleet.id}-{n}"
            trips = self.rng.numpy(f"trips/{vid}")
            origin = int(origins[trips.integers(len(origins))])

            def next_route(node: int, trip: int, *, _rng=trips, _f=fleet, _d=dests) -> Route | None:
                return self._random_trip(node, _d, _rng, _f.min_trip_m)

            route = self._random_trip(origin, dests, trips, fleet.min_trip_m)
            self._ids.append(vid)
            plans.append((vid, float(departs[n]), float(factors[n]), route, next_route if fleet.respawn else None))
        return plans

    def _random_trip(self, origin: int, dests: np.ndarray, rng: np.random.Generator, min_trip_m: float) -> Route:
        """Route from ``origin`` to a random destination at least ``min_trip_m`` away (straight line)."""
        ox, oy = self.roadmap.node_xy(origin)
        best = None
        for _ in range(32):
            d = int(dests[rng.integers(len(dests))])
            if d == origin:
                continue
            dx, dy = self.roadmap.node_xy(d)
            best = d
            if np.hypot(dx - ox, dy - oy) >= min_trip_m:
                break
        if best is None:
            msg = f"no destination other than node {origin} to drive to"
            raise RouteError(msg)
        return self.router.route(origin, best)

    # ------------------------------------------------------------------ helpers for entities

    def process(self, generator: Generator) -> simpy.Process:
        """Start a short-lived process (a transmission, a job) in this simulation."""
        return self.env.process(generator)

    def vehicle_ids_array(self) -> np.ndarray:
        """Vehicle ids as an object array, indexed by vehicle number."""
        return self._ids_arr

    def refinement(self) -> tuple[Refiner, RefineTimingModel | None]:
        """Return the run's refiner and refinement timing model, building them on first use.

        The refiner is :func:`~ivsim.refine.service.make_refiner`'s (given the link
        evaluator and the ``refine`` RNG stream's seed) unless one was passed in;
        the timings are ``refinement.assumed`` or the profile's (required with
        ``refinement.latency: profile``).

        Raises
        ------
        ModelError
            No refine timings where they are needed.
        """
        if not self._refine_ready:
            spec = self.scenario.refinement
            self.refine_timing = load_refine_timing(spec, required=spec.latency == "profile")
            notes: list[str] = []
            if self.refiner is None:
                self.refiner = make_refiner(
                    self.scenario, evaluator=self._evaluator, timing=self.refine_timing,
                    seed=self.rng.int_seed("refine"), notes=notes,
                )  # fmt: skip
            self._refine_ready = True
            if self._started:
                for note in notes:
                    self.log.log("note", self.env.now, "refine", message=note)
            else:
                self.refine_notes.extend(notes)
        return self.refiner, self.refine_timing

    def scene_names_array(self) -> np.ndarray:
        """Scene names as an object array, indexed by scene number."""
        return self._scene_names_arr

    # ------------------------------------------------------------------ running

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        for note in self.link_notes:
            self.log.log("note", self.env.now, "link", message=note)
        for note in self.refine_notes:
            self.log.log("note", self.env.now, "refine", message=note)
        for v in self.fleet:
            self.env.process(v.run())
        self.env.process(self.radio.run())
        self.env.process(self.scheduler.run())
        self.env.process(self.cloud.run())

    def run(self, *, progress: Callable[[float], None] | None = None, steps: int = 200) -> RunSummary:
        """Run to ``scenario.duration_s``; write the log, manifest and resolved scenario.

        Parameters
        ----------
        progress
            Called with the simulated time after each of ``steps`` chunks.
        steps
            Number of chunks the run is cut into for progress reporting.

        Returns
        -------
        RunSummary
            Counts and timings. On Ctrl-C (``KeyboardInterrupt``) or an error the
            log is closed with status ``interrupted`` / ``failed`` and the
            exception propagates.
        """
        self._start()
        duration = self.scenario.duration_s
        started_at = dt.datetime.now(dt.UTC)
        wall0 = time.perf_counter()
        self._write_resolved()
        self._write_manifest("running", started_at, 0.0)
        self.status = "running"
        try:
            with interrupts_at_safe_points(), _long_lived_frozen():
                for k in range(1, steps + 1):
                    self.env.run(until=duration * k / steps)
                    if progress is not None:
                        progress(self.env.now)
        except BaseException as exc:
            # an interrupt that C code turned into another error (a SystemError) is still an interrupt
            self.status = "interrupted" if caused_by_interrupt(exc) else "failed"
            self._finish(started_at, wall0)
            if self.status == "interrupted" and not isinstance(exc, KeyboardInterrupt):
                raise KeyboardInterrupt from exc
            raise
        self.status = "complete"
        return self._finish(started_at, wall0)

    def _finish(self, started_at: dt.datetime, wall0: float) -> RunSummary:
        try:
            if self.status == "complete":
                self.log.close()
            else:
                self.log.abort()
        finally:
            wall_s = time.perf_counter() - wall0
            self._write_manifest(self.status, started_at, wall_s)
        frames = int(self.scheduler.frames.sum())
        return RunSummary(
            run_id=self.run_id,
            run_dir=self.run_dir,
            status=self.status,
            sim_time_s=float(self.env.now),
            wall_s=wall_s,
            counts=dict(self.log.counts),
            frames=frames,
            frames_delivered=int(self.scheduler.delivered.sum()),
            handovers=self.radio.handovers,
            vehicles=self.vehicles.n,
        )

    def _write_resolved(self) -> None:
        if self.run_dir is None:
            return
        from ivsim.config.loader import scenario_to_yaml

        _atomic_write(self.run_dir / "scenario.resolved.yaml", scenario_to_yaml(self.scenario))

    def _write_manifest(self, status: str, started_at: dt.datetime, wall_s: float) -> None:
        if self.run_dir is None:
            return
        versions = {}
        for name in _VERSIONED:
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                versions[name] = None
        manifest = {
            "run_id": self.run_id,
            "status": status,
            "scenario": self.scenario.name,
            "scenario_hash": self.scenario.scenario_hash(),
            "seed": self.scenario.seed,
            "ivsim_version": versions["ivsim"],
            "python": platform.python_version(),
            "packages": versions,
            "platform": platform.platform(),
            "device": {"requested": self.scenario.device, "used": str(getattr(self.links.evaluator, "device", "cpu"))},
            "link_evaluator": getattr(self.links.evaluator, "name", type(self.links.evaluator).__name__),
            "refiner": None if self.refiner is None else getattr(self.refiner, "name", type(self.refiner).__name__),
            "refine_timing": None if self.refine_timing is None else self.refine_timing.source,
            "started_at": started_at.isoformat(timespec="seconds"),
            "wall_s": round(wall_s, 3),
            "sim_time_s": float(self.env.now),
            "duration_s": self.scenario.duration_s,
            "vehicles": self.vehicles.n,
            "base_stations": len(self.base_stations),
            "event_counts": dict(sorted(self.log.counts.items())),
            "rows": self.log.rows,
        }
        _atomic_write(self.run_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def _long_lived_frozen() -> Generator[None, None, None]:
    """While a run goes, keep the objects that exist at its start out of the garbage collector's full passes.

    The map, the routes, the models and the modules loaded before the run live as long as it
    does; without this, every full collection during the run walks them all again (``gc.freeze``,
    undone by ``gc.unfreeze`` when the run stops, however it stops). Python's collector is
    process-wide: another simulation running in a thread of the same process at the same time
    sees its objects frozen too, which changes when memory is freed, not what is computed.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
