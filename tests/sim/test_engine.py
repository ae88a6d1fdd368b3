"""The simulation as a whole: the default scenario, determinism, fleets, run folders, failures."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ivsim.config.loader import load_scenario
from ivsim.config.schema import Scenario
from ivsim.errors import OutputError, RouteError
from ivsim.results import event_counts, load_run
from ivsim.sim.engine import Simulation, prepare_run_dir
from ivsim.sim.links import AnalyticLinkEvaluator, TxBatch, TxResult
from ivsim.world import RoadMap

from .conftest import ANALYTIC, DEFAULT_SCENARIO, bs_at, distance_to_polyline, expected_xy, make_scenario

# ---------------------------------------------------------------------- the default scenario


@pytest.fixture(scope="module")
def default_run(nyc_map: RoadMap) -> tuple[Simulation, pd.DataFrame]:
    """The shipped scenario, run to the end once, in memory."""
    sim = Simulation(load_scenario(DEFAULT_SCENARIO, overrides=ANALYTIC), roadmap=nyc_map)
    summary = sim.run()
    assert summary.status == "complete"
    return sim, sim.log.to_pandas()


def test_default_scenario_runs(default_run: tuple[Simulation, pd.DataFrame]) -> None:
    sim, df = default_run
    assert sim.status == "complete"
    assert sim.env.now == sim.scenario.duration_s == 400
    assert len(df) == sim.log.rows > 0
    assert event_counts(df).to_dict() == sim.log.counts
    assert set(df.run_id) == {"nyc_brooklyn_bridge"}
    assert df.seq.tolist() == list(range(len(df)))
    tx = df[df.event == "tx"]
    # one frame per 0.2 s while the car drives (it arrives after ~336 s)
    arrive_t = float(df.loc[df.event == "vehicle_arrive", "t_s"].iloc[0])
    assert len(tx) == math.floor(arrive_t * 5) + 1
    assert tx.delivered.mean() > 0.95
    assert tx.frame.tolist() == list(range(len(tx)))
    assert set(tx.direction) == {"downlink"}


def test_default_scenario_runs_shortened(nyc_map: RoadMap) -> None:
    scenario = load_scenario(DEFAULT_SCENARIO, overrides=[*ANALYTIC, "duration_s=30", "traffic.fps=2"])
    sim = Simulation(scenario, roadmap=nyc_map)
    summary = sim.run()
    df = sim.log.to_pandas()
    tx = df[df.event == "tx"]
    assert summary.status == "complete" and summary.sim_time_s == 30.0
    assert len(tx) == 60 == summary.frames
    assert summary.frames_delivered == int(tx.delivered.sum())
    assert summary.handovers == int((df.event == "handover").sum())
    assert summary.counts == sim.log.counts
    assert df.t_s.max() < 30.0
    assert "vehicle_arrive" not in set(df.event)


def test_default_route_goes_through_its_three_scenes_in_order(default_run: tuple[Simulation, pd.DataFrame]) -> None:
    _, df = default_run
    scenes = df[df.event == "scene_enter"]
    assert scenes.scene.astype(str).tolist() == ["street_canyon", "river_bridge", "brooklyn_urban"]
    assert scenes.prev_scene.astype(object).where(scenes.prev_scene.notna(), None).tolist() == [
        None,
        "street_canyon",
        "river_bridge",
    ]
    assert scenes.t_s.is_monotonic_increasing and scenes.t_s.iloc[1] > 60  # the bridge is minutes away
    # each tx row's scene is the last scene entered
    tx = df[df.event == "tx"]
    k = np.searchsorted(scenes.seq.to_numpy(), tx.seq.to_numpy()) - 1
    assert (tx.scene.astype(str).to_numpy() == scenes.scene.astype(str).to_numpy()[k]).all()


def test_depart_before_arrive(default_run: tuple[Simulation, pd.DataFrame]) -> None:
    sim, df = default_run
    depart = df[df.event == "vehicle_depart"]
    arrive = df[df.event == "vehicle_arrive"]
    assert len(depart) == len(arrive) == 1
    assert depart.seq.iloc[0] < arrive.seq.iloc[0] and depart.t_s.iloc[0] < arrive.t_s.iloc[0]
    assert (df.seq < depart.seq.iloc[0]).sum() == 0
    route = sim.fleet[0].first_route
    assert arrive.route_m.iloc[0] == pytest.approx(route.length_m)
    # arrival after the route's polyline driven at the edges' free-flow speeds (close to OSM's travel time)
    drive_s = float(((route.edge_end_m - route.edge_start_m) / sim.roadmap.speed_mps[route.edges]).sum())
    assert arrive.t_s.iloc[0] - depart.t_s.iloc[0] == pytest.approx(drive_s, rel=1e-9)
    assert drive_s == pytest.approx(sim.router.travel_time_s(route), rel=1e-3)
    # nothing of the car after it arrived
    assert (df[df.seq > arrive.seq.iloc[0]].vehicle.dropna() == "car1").sum() == 0


def test_tx_positions_lie_on_the_route(default_run: tuple[Simulation, pd.DataFrame]) -> None:
    sim, df = default_run
    route = sim.fleet[0].first_route
    rows = df[df.event.isin(["tx", "handover", "scene_enter", "vehicle_depart", "vehicle_arrive"])]
    dist = distance_to_polyline(rows.x_m.to_numpy(), rows.y_m.to_numpy(), route.xy)
    assert dist.max() < 1e-6
    # and the car moves forward along it: tx rows' distance along the route grows
    tx = df[df.event == "tx"]
    along = _along(route, tx.x_m.to_numpy(), tx.y_m.to_numpy())
    assert np.all(np.diff(along) >= -1e-6)
    # exactly where driving the route's edges at their speeds puts the car at each instant
    x, y = expected_xy(route, sim.roadmap.speed_mps * sim.fleet[0].speed_factor, 0.0, rows.t_s.to_numpy())
    assert np.hypot(x - rows.x_m.to_numpy(), y - rows.y_m.to_numpy()).max() < 1e-6
    lon, lat = sim.roadmap.to_lonlat(tx.x_m.to_numpy(), tx.y_m.to_numpy())
    np.testing.assert_allclose(tx.lon, lon, atol=1e-9)
    np.testing.assert_allclose(tx.lat, lat, atol=1e-9)


def _along(route: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Distance along ``route`` of points on it (the closest segment's projection)."""
    a, b = route.xy[:-1], route.xy[1:]
    ab = b - a
    denom = np.maximum((ab**2).sum(1), 1e-300)
    out = np.empty(len(x))
    for i, (px, py) in enumerate(zip(x, y, strict=True)):
        t = np.clip(((px - a[:, 0]) * ab[:, 0] + (py - a[:, 1]) * ab[:, 1]) / denom, 0, 1)
        d = np.hypot(a[:, 0] + t * ab[:, 0] - px, a[:, 1] + t * ab[:, 1] - py)
        k = int(np.argmin(d))
        out[i] = route.cum_m[k] + t[k] * math.sqrt(denom[k])
    return out


# ---------------------------------------------------------------------- determinism


def _short(nyc_map: RoadMap, *overrides: str, run_id: str | None = None) -> pd.DataFrame:
    scenario = load_scenario(DEFAULT_SCENARIO, overrides=[*ANALYTIC, "duration_s=60", *overrides])
    sim = Simulation(scenario, roadmap=nyc_map, run_id=run_id)
    sim.run()
    return sim.log.to_pandas()


def test_same_seed_same_events(nyc_map: RoadMap) -> None:
    a = _short(nyc_map, run_id="first")
    b = _short(nyc_map, run_id="second")
    assert set(a.run_id) == {"first"} and set(b.run_id) == {"second"}
    a, b = a.drop(columns="run_id"), b.drop(columns="run_id")
    assert len(a) > 300
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_different_seed_different_shadowing(nyc_map: RoadMap) -> None:
    a = _short(nyc_map)
    b = _short(nyc_map, "seed=2")
    ta, tb = a[a.event == "tx"].reset_index(drop=True), b[b.event == "tx"].reset_index(drop=True)
    # the same drive (a single planned route is not random) ...
    np.testing.assert_array_equal(ta.t_s, tb.t_s)
    np.testing.assert_array_equal(ta.x_m, tb.x_m)
    # ... under different shadowing
    diff = (ta.snr_db - tb.snr_db).abs()
    assert (diff > 1e-6).mean() > 0.9
    assert diff.mean() > 1.0


# ---------------------------------------------------------------------- fleets


def fleet_scenario(fleets: list[dict[str, Any]], **changes: Any) -> Scenario:
    return make_scenario(
        {
            "base_stations": [bs_at("a", 0.0, 0.0), bs_at("b", 450.0, 450.0)],
            "fleets": fleets,
            "traffic": {"fps": 1},
            **changes,
        }
    )


def test_fleet_counts_and_ids(grid_roadmap: RoadMap) -> None:
    sc = fleet_scenario(
        [{"id": "taxi", "count": 4}, {"id": "bus", "count": 3, "departures": {"kind": "uniform", "end_s": 5}}],
        vehicles=[{"id": "solo", "origin": {"node": 0}, "destination": {"node": 15}}],
    )
    sim = Simulation(sc, roadmap=grid_roadmap)
    ids = ["solo", "taxi-0", "taxi-1", "taxi-2", "taxi-3", "bus-0", "bus-1", "bus-2"]
    assert [v.vehicle_id for v in sim.fleet] == ids
    assert sim.vehicles.n == 8
    summary = sim.run()
    assert summary.vehicles == 8
    df = sim.log.to_pandas()
    departs = df[df.event == "vehicle_depart"]
    assert sorted(set(departs.vehicle.astype(str))) == sorted(v.vehicle_id for v in sim.fleet)
    first = departs.groupby("vehicle", observed=True).t_s.min()
    for v in sim.fleet:
        assert first[v.vehicle_id] == pytest.approx(v.depart_s)
        assert v.first_route.length_m >= 300.0 or v.vehicle_id == "solo"  # min_trip_m (straight line) <= route


def test_respawn_keeps_vehicles_departing(grid_roadmap: RoadMap) -> None:
    sc = fleet_scenario([{"id": "f", "count": 5, "respawn": True, "min_trip_m": 300}], duration_s=150)
    sim = Simulation(sc, roadmap=grid_roadmap)
    sim.run()
    df = sim.log.to_pandas()
    for v in sim.fleet:
        rows = df[df.vehicle == v.vehicle_id]
        departs = rows[rows.event == "vehicle_depart"]
        arrives = rows[rows.event == "vehicle_arrive"]
        assert v.trips_done >= 2 and departs.trip.max() > 0
        assert departs.trip.tolist() == list(range(len(departs)))
        assert arrives.trip.tolist() == list(range(len(arrives)))
        assert len(departs) == len(arrives) + 1  # still driving at the end
        # each arrival is followed at once by the next departure, from the same place
        for (_, arr), (_, dep) in zip(arrives.iterrows(), departs.iloc[1:].iterrows(), strict=True):
            assert dep.t_s == arr.t_s and dep.seq > arr.seq
            assert (dep.x_m, dep.y_m) == (arr.x_m, arr.y_m)


def test_without_respawn_each_vehicle_drives_once(grid_roadmap: RoadMap) -> None:
    sc = fleet_scenario([{"id": "f", "count": 5, "respawn": False}], duration_s=150)
    sim = Simulation(sc, roadmap=grid_roadmap)
    sim.run()
    df = sim.log.to_pandas()
    assert (df.event == "vehicle_depart").sum() == 5 == (df.event == "vehicle_arrive").sum()
    assert all(v.trips_done == 1 for v in sim.fleet)
    assert df.loc[df.event == "tx", "t_s"].max() < df.loc[df.event == "vehicle_arrive", "t_s"].max() + 1e-9


def test_fleet_node_samplers(grid_roadmap: RoadMap) -> None:
    fleets = [
        {
            "id": "f",
            "count": 20,
            "origins": {"kind": "nodes", "nodes": [0, 3]},
            "destinations": {"kind": "nodes", "nodes": [12, 15]},
        }
    ]
    sim = Simulation(fleet_scenario(fleets), roadmap=grid_roadmap)
    assert {v.first_route.origin for v in sim.fleet} == {0, 3}
    assert {v.first_route.destination for v in sim.fleet} == {12, 15}
    with pytest.raises(RouteError, match=r"fleets\.0\.origins\.nodes"):
        Simulation(fleet_scenario([{**fleets[0], "origins": {"kind": "nodes", "nodes": [999]}}]), roadmap=grid_roadmap)


def _departures(grid_roadmap: RoadMap, departures: dict[str, Any], count: int) -> np.ndarray:
    sc = fleet_scenario([{"id": "f", "count": count, "departures": departures, "min_trip_m": 0}])
    return np.array([v.depart_s for v in Simulation(sc, roadmap=grid_roadmap).fleet])


def test_departures_at_start(grid_roadmap: RoadMap) -> None:
    t = _departures(grid_roadmap, {"kind": "at_start", "t_s": 4.0}, 10)
    assert t.tolist() == [4.0] * 10
    t = _departures(grid_roadmap, {"kind": "at_start", "t_s": 4.0, "spread_s": 6.0}, 300)
    assert t.min() >= 4.0 and t.max() <= 10.0
    n = len(t)
    assert t.mean() == pytest.approx(7.0, abs=max(0.15, 2 / math.sqrt(n)) * 6.0 / math.sqrt(12))


def test_departures_poisson(grid_roadmap: RoadMap) -> None:
    rate, start, n = 0.5, 10.0, 400
    t = _departures(grid_roadmap, {"kind": "poisson", "rate_per_s": rate, "start_s": start}, n)
    assert np.all(np.diff(t) > 0)  # arrivals of a process, in order
    gaps = np.diff(np.concatenate(([start], t)))
    tol = max(0.15, 2 / math.sqrt(n))
    assert gaps.mean() == pytest.approx(1 / rate, rel=tol)
    assert gaps.std() == pytest.approx(1 / rate, rel=tol)  # exponential: std = mean
    assert t.min() > start


def test_departures_uniform(grid_roadmap: RoadMap) -> None:
    start, end, n = 20.0, 80.0, 400
    t = _departures(grid_roadmap, {"kind": "uniform", "start_s": start, "end_s": end}, n)
    assert t.min() >= start and t.max() <= end
    # empirical CDF within the tolerance of the uniform one
    u = np.sort((t - start) / (end - start))
    ks = np.max(np.abs(u - (np.arange(1, n + 1) - 0.5) / n))
    assert ks < max(0.15, 2 / math.sqrt(n))
    assert t.mean() == pytest.approx(50.0, abs=max(0.15, 2 / math.sqrt(n)) * (end - start) / math.sqrt(12))


# ---------------------------------------------------------------------- run folders


def _short_scenario(*overrides: str) -> Scenario:
    return load_scenario(DEFAULT_SCENARIO, overrides=[*ANALYTIC, "duration_s=20", *overrides])


def test_run_dir_outputs(nyc_map: RoadMap, tmp_path: Path) -> None:
    scenario = _short_scenario()
    run_dir = tmp_path / "runs" / "r1"
    sim = Simulation(scenario, roadmap=nyc_map, run_dir=run_dir)
    assert sim.run_id == "r1"
    summary = sim.run()
    assert summary.run_dir == run_dir and summary.status == "complete"
    assert (run_dir / "events.parquet").is_file()
    assert not (run_dir / "parts").exists() or not any((run_dir / "parts").iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    df = load_run(run_dir)
    assert manifest["status"] == "complete"
    assert manifest["run_id"] == "r1" and set(df.run_id) == {"r1"}
    assert manifest["seed"] == scenario.seed == 1
    assert manifest["scenario_hash"] == scenario.scenario_hash()
    assert manifest["event_counts"] == event_counts(df).to_dict() == summary.counts
    assert manifest["rows"] == len(df)
    assert manifest["sim_time_s"] == 20.0 and manifest["vehicles"] == 1 and manifest["base_stations"] == 5
    assert df.attrs["manifest"] == manifest
    back = load_scenario(run_dir / "scenario.resolved.yaml")
    assert back == scenario
    assert back.scenario_hash() == scenario.scenario_hash()
    # the file log holds what the in-memory log of the same run holds
    mem = Simulation(scenario, roadmap=nyc_map, run_id="r1")
    mem.run()
    pd.testing.assert_frame_equal(df.reset_index(drop=True), mem.log.to_pandas().reset_index(drop=True))


def test_interrupted_run_keeps_what_was_logged(nyc_map: RoadMap, tmp_path: Path) -> None:
    scenario = _short_scenario("duration_s=60")
    run_dir = tmp_path / "run"
    sim = Simulation(scenario, roadmap=nyc_map, run_dir=run_dir)
    stop_at: list[float] = []

    def progress(t_s: float) -> None:
        if t_s >= 25.0:
            stop_at.append(t_s)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sim.run(progress=progress, steps=60)
    assert sim.status == "interrupted"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    df = load_run(run_dir)
    assert len(df) > 0 and len(df) == sim.log.rows == manifest["rows"]
    assert df.t_s.max() <= stop_at[0]
    assert df.t_s.max() >= stop_at[0] - 1.0  # it ran up to the interruption
    assert manifest["event_counts"] == event_counts(df).to_dict()
    assert manifest["sim_time_s"] == stop_at[0]


def test_ctrl_c_inside_a_flush_waits_for_it_and_keeps_every_row(
    nyc_map: RoadMap, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ivsim.sim import eventlog

    scenario = _short_scenario("duration_s=60", "output.flush_rows=40")
    run_dir = tmp_path / "run"
    sim = Simulation(scenario, roadmap=nyc_map, run_dir=run_dir)
    flush = eventlog.EventLog._flush
    calls: list[tuple[int, int]] = []  # (rows logged, rows flushed) when each flush returned

    def flush_with_ctrl_c(log: eventlog.EventLog, *, wait: bool) -> Path | None:
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)  # Python's handler would raise here, mid-flush
        path = flush(log, wait=wait)
        calls.append((log._seq, log._flushed_seq))
        return path

    monkeypatch.setattr(eventlog.EventLog, "_flush", flush_with_ctrl_c)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever an earlier test left
    try:
        with pytest.raises(KeyboardInterrupt):
            sim.run()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sim.status == "interrupted"
    assert 3 <= len(calls) <= 4  # the third flush ran to its end; the abort flushed once more
    assert calls[2][0] == calls[2][1] > calls[1][0]  # and it flushed everything logged before it
    df = load_run(run_dir)
    assert len(df) == sim.log.rows == json.loads((run_dir / "manifest.json").read_text())["rows"]
    assert (df["seq"].to_numpy() == np.arange(len(df))).all()  # no row twice, none missing
    assert df.t_s.max() < 60.0


def test_an_error_caused_by_ctrl_c_counts_as_an_interrupt(nyc_map: RoadMap, tmp_path: Path) -> None:
    """C code (numba's dispatcher) can turn Ctrl-C into a SystemError; the run is still interrupted."""
    run_dir = tmp_path / "run"
    sim = Simulation(_short_scenario(), roadmap=nyc_map, run_dir=run_dir)

    def progress(t_s: float) -> None:
        if t_s >= 5.0:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as exc:
                msg = "CPUDispatcher(a3_step) returned a result with an exception set"
                raise SystemError(msg) from exc

    with pytest.raises(KeyboardInterrupt) as caught:
        sim.run(progress=progress, steps=20)
    assert isinstance(caught.value.__cause__, SystemError)
    assert sim.status == "interrupted"
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "interrupted"


class FailingEvaluator:
    """Evaluates normally, then raises on call ``fail_at``."""

    name = "failing"

    def __init__(self, inner: AnalyticLinkEvaluator, fail_at: int) -> None:
        self.inner = inner
        self.fail_at = fail_at
        self.calls = 0

    def evaluate(self, batch: TxBatch) -> TxResult:
        self.calls += 1
        if self.calls == self.fail_at:
            msg = "evaluator broke"
            raise RuntimeError(msg)
        return self.inner.evaluate(batch)


def test_error_inside_the_run_marks_it_failed(nyc_map: RoadMap, tmp_path: Path) -> None:
    scenario = _short_scenario()
    run_dir = tmp_path / "run"
    evaluator = FailingEvaluator(AnalyticLinkEvaluator(scenario.link), fail_at=26)
    sim = Simulation(scenario, roadmap=nyc_map, run_dir=run_dir, link_evaluator=evaluator)
    with pytest.raises(RuntimeError, match="evaluator broke"):
        sim.run()
    assert sim.status == "failed"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["link_evaluator"] == "failing"
    df = load_run(run_dir)
    assert (df.event == "tx").sum() == 25  # the frames evaluated before the failure
    assert df.t_s.max() <= 25 * 0.2


def test_prepare_run_dir_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert prepare_run_dir(run_dir) == run_dir and run_dir.is_dir()
    assert prepare_run_dir(run_dir) == run_dir  # empty: fine
    (run_dir / "events.parquet").write_text("old")
    (run_dir / "manifest.json").write_text("{}")
    (run_dir / "parts").mkdir()
    (run_dir / "parts" / "part-00000.parquet").write_text("old")
    with pytest.raises(OutputError, match="not empty"):
        prepare_run_dir(run_dir)
    assert (run_dir / "events.parquet").read_text() == "old"  # untouched
    prepare_run_dir(run_dir, force=True)
    assert not (run_dir / "events.parquet").exists() and not (run_dir / "manifest.json").exists()
    assert not any((run_dir / "parts").iterdir())


def test_simulation_refuses_a_non_empty_run_dir(grid_roadmap: RoadMap, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    sc = fleet_scenario([{"id": "f", "count": 1}], duration_s=2)
    with pytest.raises(OutputError, match="not empty"):
        Simulation(sc, roadmap=grid_roadmap, run_dir=tmp_path)


def test_prepare_run_dir_unwritable(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    with pytest.raises(OutputError, match="not writable"):
        prepare_run_dir(blocker / "run")
    with pytest.raises(OutputError, match="not a folder"):
        prepare_run_dir(blocker)


# ---------------------------------------------------------------------- bad vehicles


def test_off_map_origin_names_the_vehicle(nyc_map: RoadMap) -> None:
    scenario = load_scenario(DEFAULT_SCENARIO, overrides=["vehicles.0.origin.lon=-73.5"])
    with pytest.raises(RouteError, match=r"^vehicles\.0 \(car1\): .*off the map"):
        Simulation(scenario, roadmap=nyc_map)


def test_unroutable_vehicle_leaves_the_run_folder_reusable(grid_roadmap: RoadMap, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    bad = fleet_scenario([], vehicles=[{"id": "lost", "origin": {"node": 0}, "destination": {"node": 999}}])
    with pytest.raises(RouteError, match=r"^vehicles\.0 \(lost\): node 999"):
        Simulation(bad, roadmap=grid_roadmap, run_dir=run_dir)
    assert not any(run_dir.rglob("*"))  # nothing written: the corrected scenario may use the folder
    good = fleet_scenario([], vehicles=[{"id": "found", "origin": {"node": 0}, "destination": {"node": 15}}])
    assert Simulation(good, roadmap=grid_roadmap, run_dir=run_dir).run().status == "complete"
    assert (run_dir / "events.parquet").is_file()
