"""Golden trace: three vehicles on the NYC map, compared with a stored summary of their event log.

The summary (``tests/sim/golden/three_vehicles.json``) holds the row count of every event kind,
every non-``tx`` row as ``(t_s, event, entity_id, scene, prev_scene, from_bs, to_bs)``, the sum
and mean of ``sinr_db`` and ``delay_s`` over the ``tx`` rows (rounded to 6 decimals), and the
first 20 ``tx`` rows as ``(t_s, vehicle, bs)``. Strings and counts must match exactly, floats to
a relative 1e-9.

A change to the simulation that is *meant* to change the trace (a new model, a fixed bug)
regenerates the file with::

    IVSIM_UPDATE_GOLDEN=1 pytest tests/sim/test_golden.py

Review the diff of the JSON file before committing it: every change in it is a change in what
the simulator does.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ivsim.config.loader import load_scenario_text
from ivsim.sim.engine import Simulation
from ivsim.world import RoadMap

from .conftest import SCENARIOS

GOLDEN = Path(__file__).parent / "golden" / "three_vehicles.json"
UPDATE = os.environ.get("IVSIM_UPDATE_GOLDEN") == "1"

SCENARIO = """\
name: golden_three_vehicles
seed: 11
duration_s: 200
map:
  source: maps/nyc_lower_manhattan_brooklyn_drive.osm.bz2
profiles:
  uma_nlos: {model: uma, los: false}
  rma_los: {model: rma, los: true}
  umi_nlos: {model: umi, los: false}
scenes:
  street_canyon: {profile: uma_nlos, speed_mps: [3, 15]}
  river_bridge: {profile: rma_los, speed_mps: [8, 20]}
  brooklyn_urban: {profile: umi_nlos, speed_mps: [3, 15]}
scene_rules:
  default: street_canyon
  rules:
    - scene: river_bridge
      tags: {name: Brooklyn Bridge}
      polygon: [[-74.0070, 40.7000], [-74.0070, 40.7130], [-73.9880, 40.7130], [-73.9880, 40.7000]]
    - scene: river_bridge
      tags: {bridge: "yes"}
    - scene: brooklyn_urban
      polygon: [[-74.0000, 40.6900], [-74.0000, 40.7000], [-73.9960, 40.7040], [-73.9850, 40.7045],
                [-73.9750, 40.7060], [-73.9650, 40.7080], [-73.9650, 40.6900]]
base_stations:
  - {id: bs_fidi, position: {lon: -74.0100, lat: 40.7085}, height_m: 30, tx_power_dbm: 46}
  - {id: bs_city_hall, position: {lon: -74.0040, lat: 40.7135}, height_m: 25, tx_power_dbm: 46}
  - {id: bs_south_street, position: {lon: -73.9990, lat: 40.7075}, height_m: 25, tx_power_dbm: 46}
  - {id: bs_dumbo, position: {lon: -73.9895, lat: 40.7025}, height_m: 25, tx_power_dbm: 46}
  - {id: bs_downtown_bk, position: {lon: -73.9880, lat: 40.6930}, height_m: 25, tx_power_dbm: 46}
vehicles:
  - id: north                                   # Bowling Green up Broadway towards City Hall
    origin: {lon: -74.0137, lat: 40.7050}
    destination: {lon: -74.0050, lat: 40.7140}
    depart_s: 0
  - id: bridge                                  # City Hall over the Brooklyn Bridge into Brooklyn
    origin: {lon: -74.0040, lat: 40.7120}
    destination: {lon: -73.9900, lat: 40.6955}
    depart_s: 15
  - id: brooklyn                                # Downtown Brooklyn towards DUMBO
    origin: {lon: -73.9880, lat: 40.6930}
    destination: {lon: -73.9890, lat: 40.7030}
    depart_s: 42.5
traffic: {fps: 2, frame_bits: 200000, deadline_s: 0.1}
link: {direction: downlink, fidelity: analytic}
"""


def _str(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA else str(value)


def summarise(df: pd.DataFrame) -> dict[str, Any]:
    """The golden summary of an event log (JSON-ready)."""
    tx = df[df.event == "tx"]
    other = df[df.event != "tx"].astype(object).where(df[df.event != "tx"].notna(), None)
    return {
        "counts": {str(k): int(v) for k, v in sorted(df.event.value_counts().items()) if v > 0},
        "rows": [
            [float(r.t_s), str(r.event), str(r.entity_id), _str(r.scene), _str(r.prev_scene), _str(r.from_bs),
             _str(r.to_bs)]
            for r in other.itertuples()
        ],  # fmt: skip
        "tx": {
            "sinr_db_sum": round(float(tx.sinr_db.sum()), 6),
            "sinr_db_mean": round(float(tx.sinr_db.mean()), 6),
            "delay_s_sum": round(float(tx.delay_s.sum()), 6),
            "delay_s_mean": round(float(tx.delay_s.mean()), 6),
            "delivered": int(tx.delivered.sum()),
        },
        "first_tx": [[float(r.t_s), str(r.vehicle), str(r.bs)] for r in tx.head(20).itertuples()],
    }


def assert_same(got: Any, want: Any, path: str = "") -> None:
    """Exact for strings, ints, None and structure; floats to a relative 1e-9."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{path}: keys {sorted(got)} != {sorted(want)}"
        for k in want:
            assert_same(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{path}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, float), f"{path}: {got!r} is not a float"
        assert got == pytest.approx(want, rel=1e-9, abs=0.0), f"{path}: {got!r} != {want!r}"
    else:
        assert type(got) is type(want) and got == want, f"{path}: {got!r} != {want!r}"


@pytest.fixture(scope="module")
def golden_run(nyc_map: RoadMap) -> pd.DataFrame:
    scenario = load_scenario_text(SCENARIO, name="golden", base_dir=SCENARIOS)
    sim = Simulation(scenario, roadmap=nyc_map)
    assert sim.run().status == "complete"
    return sim.log.to_pandas()


def test_golden_scenario_is_what_the_trace_needs(golden_run: pd.DataFrame) -> None:
    """The scenario exercises departures, arrivals, scene changes and handovers of all three cars."""
    df = golden_run
    assert set(df.loc[df.event == "vehicle_depart", "vehicle"].astype(str)) == {"north", "bridge", "brooklyn"}
    for event in ("vehicle_arrive", "scene_enter", "handover", "tx"):
        assert (df.event == event).any(), event
    assert {"street_canyon", "river_bridge", "brooklyn_urban"} <= set(df.scene.dropna().astype(str))


def test_golden_trace(golden_run: pd.DataFrame) -> None:
    got = json.loads(json.dumps(summarise(golden_run)))  # the same types as a file read back
    if UPDATE:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n", encoding="utf-8")
    if not GOLDEN.is_file():
        pytest.fail(f"{GOLDEN} is missing: create it with IVSIM_UPDATE_GOLDEN=1 pytest {Path(__file__).name}")
    want = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert_same(got, want)


def test_assert_same_catches_differences() -> None:
    """The comparison itself: a relative 1e-9 on floats, exact elsewhere."""
    base = {"a": [1.0, "x", None, 3], "b": {"c": 2.5}}
    assert_same(json.loads(json.dumps(base)), base)
    assert_same({"a": [1.0 + 1e-12, "x", None, 3], "b": {"c": 2.5}}, base)
    for changed in (
        {"a": [1.0 + 1e-6, "x", None, 3], "b": {"c": 2.5}},
        {"a": [1.0, "y", None, 3], "b": {"c": 2.5}},
        {"a": [1.0, "x", "z", 3], "b": {"c": 2.5}},
        {"a": [1.0, "x", None, 4], "b": {"c": 2.5}},
        {"a": [1.0, "x", None], "b": {"c": 2.5}},
        {"a": [1.0, "x", None, 3], "b": {"c": 2.5, "d": 1}},
    ):
        with pytest.raises(AssertionError):
            assert_same(changed, base)
