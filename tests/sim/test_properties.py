"""Invariants of any run (hypothesis): time order, trips, frame accounting, positions, handovers.

Runs random small scenarios on the synthetic 4 x 4 grid (fleets of 1-15 vehicles, 20-120 s,
random seed, frame rate, link direction, departures, respawning, interference and frame size)
and checks what must hold for every event log:

- ``t_s`` never decreases in ``seq`` order, and ``seq`` is 0, 1, 2, ...;
- every trip of every vehicle departs before it arrives, trips are numbered 0, 1, ... and a
  vehicle's next trip departs where and when the previous one arrived;
- frames: each vehicle's ``tx`` rows = delivered + dropped (``outage``/``deadline``) + in flight
  (``in_flight``), each row in exactly one class, and its ``frame`` numbers are 0 .. n-1;
- every row's position lies on the route that vehicle drives on that trip, at the very point that
  driving the route's edges at their speeds (times the vehicle's speed factor) reaches by then;
- handovers chain: each ``from_bs`` is the serving cell (from the trip's ``vehicle_depart`` and
  the handovers since), ``to_bs`` differs from it; ``tx`` rows come from the serving cell.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivsim.sim.engine import Simulation
from ivsim.world import RoadMap, Route

from .conftest import bs_at, distance_to_polyline, expected_xy, make_scenario

DROP_REASONS = {"outage", "deadline"}

scenarios = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "fps": st.sampled_from([0.5, 1.0, 2.0, 3.0, 5.0]),
        "count": st.integers(1, 15),
        # a fraction past the last frame instant leaves frames in flight at the end
        "duration_s": st.builds(lambda s, f: s + f, st.integers(20, 120), st.sampled_from([0.0, 0.03, 0.07])),
        "direction": st.sampled_from(["downlink", "uplink"]),
        "respawn": st.booleans(),
        "departures": st.sampled_from(
            [
                {"kind": "at_start"},
                {"kind": "at_start", "t_s": 2.5, "spread_s": 10.0},
                {"kind": "poisson", "rate_per_s": 0.5},
                {"kind": "uniform", "start_s": 0.0, "end_s": 30.0},
            ]
        ),
        "load": st.sampled_from(["auto", 0.0, 1.0]),
        "frame_bits": st.sampled_from([200_000, 3_000_000]),
        "deadline_s": st.sampled_from([0.1, 0.5]),
        "hysteresis_db": st.sampled_from([0.0, 1.0, 3.0]),
    }
)


def build(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "seed": p["seed"],
        "duration_s": p["duration_s"],
        "base_stations": [
            bs_at("sw", -50.0, -50.0),
            bs_at("ne", 500.0, 500.0, tx_power_dbm=40.0),
            bs_at("se", 500.0, -50.0, bandwidth_hz=10e6),
            bs_at("other_band", 0.0, 450.0, carrier_hz=3.7e9),
        ],
        "fleets": [
            {
                "id": "f",
                "count": p["count"],
                "respawn": p["respawn"],
                "departures": p["departures"],
                "min_trip_m": 250,
                "speed_factor": [0.8, 1.2],
            }
        ],
        "traffic": {"fps": p["fps"], "frame_bits": p["frame_bits"], "deadline_s": p["deadline_s"]},
        "link": {"direction": p["direction"]},
        "radio": {"interference_load": p["load"], "handover": {"hysteresis_db": p["hysteresis_db"]}},
    }


def run(roadmap: RoadMap, p: dict[str, Any]) -> tuple[Simulation, pd.DataFrame, dict[str, list[Route]]]:
    sim = Simulation(make_scenario(build(p)), roadmap=roadmap)
    routes: dict[str, list[Route]] = defaultdict(list)
    start_trip = sim.vehicles.start_trip

    def recording_start_trip(i: int, route: Route) -> None:
        routes[sim.fleet[i].vehicle_id].append(route)
        start_trip(i, route)

    sim.vehicles.start_trip = recording_start_trip  # every trip's route, in order
    summary = sim.run()
    assert summary.status == "complete"
    df = sim.log.to_pandas()
    for col in ("event", "vehicle", "bs", "from_bs", "to_bs", "drop_reason", "scene", "prev_scene"):
        df[col] = df[col].astype(object).where(df[col].notna(), None)
    return sim, df, routes


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=scenarios)
def test_run_invariants(grid_roadmap: RoadMap, p: dict[str, Any]) -> None:
    sim, df, routes = run(grid_roadmap, p)
    if df.empty:  # every departure fell after the end of the run
        assert all(v.depart_s >= p["duration_s"] for v in sim.fleet)
        return

    # --- time never goes back; seq numbers every row once
    assert df.seq.tolist() == list(range(len(df)))
    assert np.all(np.diff(df.t_s.to_numpy()) >= 0)
    assert df.t_s.min() >= 0 and df.t_s.max() <= p["duration_s"]

    trips_of_rows = check_trips(df)
    check_frames(sim, df, p)
    check_positions(sim, df, routes, trips_of_rows)
    check_handovers(df)
    # one route recorded per trip that departed
    departs = df[df.event == "vehicle_depart"]
    assert {v: len(r) for v, r in routes.items()} == departs.groupby("vehicle").size().to_dict()


def check_trips(df: pd.DataFrame) -> pd.Series:
    """Depart/arrive order per trip; return the trip number of every vehicle row (by seq)."""
    trip_of = pd.Series(-1, index=df.index)
    for vid, rows in df[df.vehicle.notna()].groupby("vehicle"):
        departs = rows[rows.event == "vehicle_depart"]
        arrives = rows[rows.event == "vehicle_arrive"]
        assert departs.trip.tolist() == list(range(len(departs))), vid
        assert arrives.trip.tolist() == list(range(len(arrives))), vid
        assert len(departs) - len(arrives) in (0, 1), vid  # at most the last trip still going
        assert departs.index[0] == rows.index[0], vid  # nothing of a vehicle before it departs
        for k, (dep, arr) in enumerate(zip(departs.itertuples(), arrives.itertuples(), strict=False)):
            assert dep.seq < arr.seq and dep.t_s < arr.t_s, (vid, k)
            if k + 1 < len(departs):  # respawn: the next trip starts where and when this one ended
                nxt = departs.iloc[k + 1]
                assert nxt.seq > arr.seq and nxt.t_s == arr.t_s
                assert (nxt.x_m, nxt.y_m) == (arr.x_m, arr.y_m)
        # every row of the vehicle belongs to the trip of the last departure before it
        k = np.searchsorted(departs.seq.to_numpy(), rows.seq.to_numpy(), side="right") - 1
        assert (k >= 0).all()
        trip_of[rows.index] = k
        # and nothing between an arrival and the next departure
        for arr in arrives.itertuples():
            later = rows[rows.seq > arr.seq]
            if len(later):
                assert later.iloc[0].event == "vehicle_depart"
        # scene_enter rows chain within a trip: the first has no previous scene
        for _, scenes in rows[rows.event == "scene_enter"].groupby(trip_of[rows.index][rows.event == "scene_enter"]):
            assert scenes.prev_scene.iloc[0] is None
            assert scenes.prev_scene.iloc[1:].tolist() == scenes.scene.iloc[:-1].tolist()
    return trip_of


def check_frames(sim: Simulation, df: pd.DataFrame, p: dict[str, Any]) -> None:
    tx = df[df.event == "tx"]
    delivered = tx.delivered.to_numpy(dtype=bool)
    reason = tx.drop_reason.to_numpy(dtype=object)
    dropped = np.isin(reason, list(DROP_REASONS))
    in_flight = reason == "in_flight"
    # each frame in exactly one class
    assert np.all(delivered.astype(int) + dropped.astype(int) + in_flight.astype(int) == 1)
    assert all(r is None for r in reason[delivered])
    for vid, rows in tx.groupby("vehicle"):
        sent = len(rows)
        d = rows.delivered.to_numpy(dtype=bool).sum()
        r = rows.drop_reason.to_numpy(dtype=object)
        assert sent == d + np.isin(r, list(DROP_REASONS)).sum() + (r == "in_flight").sum(), vid
        assert rows.frame.tolist() == list(range(sent)), vid
    # in flight: delivered too late for the run to see it
    ends = (tx.t_s + tx.delay_s).to_numpy()
    assert np.all(ends[in_flight] > p["duration_s"])
    assert np.all(ends[delivered] <= p["duration_s"])
    assert np.all(tx.delay_s.to_numpy()[delivered | in_flight] <= p["deadline_s"] + 1e-12)
    assert np.all(tx.delay_s.to_numpy()[reason == "deadline"] > p["deadline_s"])
    assert np.all(np.isnan(tx.delay_s.to_numpy()[reason == "outage"]))
    assert set(tx.direction) <= {p["direction"]}
    assert np.all(tx.sinr_db.to_numpy() <= tx.snr_db.to_numpy() + 1e-9)
    assert int(sum(bs.frames for bs in sim.base_stations)) == len(tx)
    assert int(sum(bs.delivered for bs in sim.base_stations)) == int(delivered.sum())


def check_positions(sim: Simulation, df: pd.DataFrame, routes: dict[str, list[Route]], trip_of: pd.Series) -> None:
    located = df[df.vehicle.notna() & df.x_m.notna()]
    factor = {v.vehicle_id: v.speed_factor for v in sim.fleet}
    for (vid, trip), rows in located.groupby([located.vehicle, trip_of[located.index]]):
        route = routes[vid][int(trip)]
        x, y = rows.x_m.to_numpy(), rows.y_m.to_numpy()
        dist = distance_to_polyline(x, y, route.xy)
        assert dist.max() < 1e-6, (vid, trip, float(dist.max()))
        # and at the very point of the route the vehicle has reached by then
        assert rows.event.iloc[0] == "vehicle_depart"
        depart_s = float(rows.t_s.iloc[0])
        ex, ey = expected_xy(route, sim.roadmap.speed_mps * factor[vid], depart_s, rows.t_s.to_numpy())
        assert np.hypot(ex - x, ey - y).max() < 1e-6, (vid, trip)


def check_handovers(df: pd.DataFrame) -> None:
    mobility = df[df.event.isin(["vehicle_depart", "handover", "tx"])]
    for vid, rows in mobility.groupby("vehicle"):
        serving = None  # as of the rows logged so far
        serving_at: dict[float, Any] = {}  # serving cell as it was before the first handover at an instant
        for r in rows.itertuples():
            if r.event == "vehicle_depart":
                serving = r.bs
                serving_at = {}
            elif r.event == "handover":
                assert r.from_bs == serving, (vid, r.t_s)
                assert r.to_bs != r.from_bs and r.bs == r.to_bs
                serving_at.setdefault(r.t_s, serving)
                serving = r.to_bs
            else:
                # a frame comes from the serving cell (or from the cell the vehicle left at that very instant)
                assert r.bs in {serving, serving_at.get(r.t_s, serving)}, (vid, r.t_s)
