"""The radio network: RSRP, association, A3 handover, correlated shadowing, SINR and noise.

Most cases run on a straight 2 km road (:func:`line_map`, 10 m/s) with base stations placed
beside it; a profile ``shadow_fading_db: 0.001`` makes RSRP a deterministic function of
position (to within a few thousandths of a dB).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ivsim.sim.engine import Simulation
from ivsim.sim.pathloss import pathloss_db
from ivsim.world import RoadMap

from .conftest import X0_M, Y0_M, bs_at, car, make_scenario

TINY_SHADOW = {"umi_nlos": {"shadow_fading_db": 0.001}}
N_SC = 20e6 / 30e3  # subcarriers of a default base station


class Recorder:
    """Wraps ``sim.radio.measure`` to record the state after every measurement."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.rows: list[dict[str, Any]] = []
        self._measure = sim.radio.measure
        sim.radio.measure = self  # instance attribute: RadioNetwork.run and attach call it

    def __call__(self, idx: np.ndarray, t_s: float) -> None:
        self._measure(idx, t_s)
        veh = self.sim.vehicles
        x, y = veh.positions(idx, t_s)
        s = veh.distance_m(idx, t_s)
        for k, i in enumerate(idx):
            self.rows.append(
                {
                    "t_s": t_s,
                    "vehicle": int(i),
                    "x_m": float(x[k]),
                    "y_m": float(y[k]),
                    "s_m": float(s[k]),
                    "serving": int(veh.serving[i]),
                    "rsrp": self.sim.radio.rsrp_dbm[i].copy(),
                    "z": self.sim.radio.shadow_z[i].copy(),
                }
            )

    def of(self, vehicle: int) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["vehicle"] == vehicle]


def run(
    roadmap: RoadMap, changes: dict[str, Any], *, record: bool = False
) -> tuple[Simulation, pd.DataFrame, Recorder | None]:
    sim = Simulation(make_scenario(changes), roadmap=roadmap)
    rec = Recorder(sim) if record else None
    sim.run()
    return sim, sim.log.to_pandas(), rec


def rows_of(df: pd.DataFrame, event: str) -> pd.DataFrame:
    return df[df.event == event].reset_index(drop=True)


# ---------------------------------------------------------------------- RSRP


def test_rsrp_decreases_with_distance_and_follows_the_link_budget(line_roadmap: RoadMap) -> None:
    changes = {
        "duration_s": 100,
        "traffic": {"fps": 1},
        "base_stations": [bs_at("a", 0.0, 30.0, tx_power_dbm=40.0, antenna_gain_dbi=8.0)],
        "vehicles": [car("c", 0, 20)],
        "profiles": {"umi_nlos": {"shadow_fading_db": 0.001, "extra_loss_db": 5.0}},
        "radio": {"ue_antenna_gain_dbi": 2.0},
    }
    sim, _, rec = run(line_roadmap, changes, record=True)
    rows = rec.of(0)
    assert len(rows) >= 1000  # at departure, then every 0.1 s
    x = np.array([r["x_m"] for r in rows]) - X0_M
    rsrp = np.array([r["rsrp"][0] for r in rows])
    assert np.all(np.diff(x) > 0)  # driving away from the base station
    assert np.all(np.diff(rsrp) < 0)
    d2d = np.hypot(x, np.array([r["y_m"] for r in rows]) - (Y0_M + 30.0))
    pl = pathloss_db("umi", False, d2d, carrier_hz=3.5e9, bs_height_m=25.0, ue_height_m=1.5)
    want = 40.0 - 10 * math.log10(N_SC) + 8.0 + 2.0 - pl - 5.0
    np.testing.assert_allclose(rsrp, want, atol=0.01)  # 0.001 dB shadowing: |z| < 10


def test_departure_attaches_to_the_strongest_not_the_nearest(line_roadmap: RoadMap) -> None:
    # the weak cell is nearest to node 10 (x = 1000 m), the strong one further away
    bss = [
        bs_at("weak_near", 1050.0, 30.0, tx_power_dbm=10.0),
        bs_at("strong_far", 1500.0, 30.0, tx_power_dbm=46.0),
        bs_at("west", 0.0, 30.0, tx_power_dbm=46.0),
    ]
    changes = {
        "duration_s": 10,
        "base_stations": bss,
        "vehicles": [car("mid", 10, 20), car("start", 0, 20), car("late", 14, 20, depart_s=3.3)],
        "profiles": TINY_SHADOW,
    }
    sim, df, rec = run(line_roadmap, changes, record=True)
    departs = rows_of(df, "vehicle_depart").set_index("vehicle")

    def expected(x_m: float) -> str:
        pos = [(1050.0, 10.0), (1500.0, 46.0), (0.0, 46.0)]
        rsrp = [
            p - 10 * math.log10(N_SC)
            - float(pathloss_db("umi", False, math.hypot(x_m - bx, 30.0), carrier_hz=3.5e9,
                                bs_height_m=25.0, ue_height_m=1.5))
            for bx, p in pos
        ]  # fmt: skip
        return ["weak_near", "strong_far", "west"][int(np.argmax(rsrp))]

    assert expected(1000.0) == "strong_far"  # the case is not trivial
    assert departs.loc["mid", "bs"] == "strong_far"
    assert departs.loc["start", "bs"] == expected(0.0) == "west"
    assert departs.loc["late", "bs"] == expected(1400.0) == "strong_far"
    assert departs.loc["late", "t_s"] == pytest.approx(3.3)
    # whatever the shadowing, a departing vehicle takes the argmax of its measured RSRP
    first = {}
    for r in rec.rows:
        first.setdefault(r["vehicle"], r)
    for i, vid in enumerate(["mid", "start", "late"]):
        assert sim.radio.bs_ids[int(np.argmax(first[i]["rsrp"]))] == departs.loc[vid, "bs"]


def test_departure_takes_the_argmax_with_full_shadowing(line_roadmap: RoadMap) -> None:
    bss = [bs_at(f"bs{k}", 250.0 * k, 40.0 * (-1) ** k) for k in range(9)]
    cars = [car(f"c{n}", n, 20 if n < 10 else 0, depart_s=0.37 * n) for n in range(19)]
    sim, df, rec = run(line_roadmap, {"duration_s": 8, "base_stations": bss, "vehicles": cars}, record=True)
    departs = rows_of(df, "vehicle_depart")
    assert len(departs) == 19
    first = {}
    for r in rec.rows:
        first.setdefault(r["vehicle"], r)
    for n, row in departs.iterrows():
        assert row["bs"] == sim.radio.bs_ids[int(np.argmax(first[n]["rsrp"]))]


# ---------------------------------------------------------------------- A3 handover

TWO_CELLS = [bs_at("a", 0.0, 30.0), bs_at("b", 2000.0, 30.0)]
PERIOD_S = 0.1


def a3_case(
    line_roadmap: RoadMap,
    *,
    hyst: float,
    ttt: float,
    vehicle: dict[str, Any],
    duration_s: float = 125.0,
    l3_filter_k: int = 0,
) -> tuple[pd.DataFrame, Recorder]:
    changes = {
        "duration_s": duration_s,
        "base_stations": TWO_CELLS,
        "vehicles": [vehicle],
        "profiles": TINY_SHADOW,
        "traffic": {"fps": 1},
        "radio": {
            "measurement_period_s": PERIOD_S,
            "l3_filter_k": l3_filter_k,
            "handover": {"hysteresis_db": hyst, "time_to_trigger_s": ttt},
        },
    }
    _, df, rec = run(line_roadmap, changes, record=True)
    return rows_of(df, "handover"), rec


def crossing_x(hyst: float) -> float:
    """Where b's RSRP exceeds a's by ``hyst`` on the road (deterministic path loss, same powers)."""
    x = np.linspace(1000.0, 1300.0, 300_001)
    pl = lambda d: pathloss_db("umi", False, d, carrier_hz=3.5e9, bs_height_m=25.0, ue_height_m=1.5)  # noqa: E731
    margin = pl(np.hypot(x, 30.0)) - pl(np.hypot(2000.0 - x, 30.0))
    return float(x[np.argmax(margin > hyst)])


def condition_times(rec: Recorder, hyst: float) -> tuple[np.ndarray, np.ndarray]:
    rows = rec.of(0)
    t = np.array([r["t_s"] for r in rows])
    cond = np.array([r["rsrp"][1] > r["rsrp"][0] + hyst for r in rows])
    return t, cond


@pytest.mark.parametrize("ttt", [0.32, 1.0])
def test_a3_fires_once_the_condition_held_for_ttt(line_roadmap: RoadMap, ttt: float) -> None:
    hyst = 3.0
    ho, rec = a3_case(line_roadmap, hyst=hyst, ttt=ttt, vehicle=car("c", 0, 20))
    assert len(ho) == 1
    assert (ho.loc[0, "from_bs"], ho.loc[0, "to_bs"], ho.loc[0, "bs"]) == ("a", "b", "b")
    t, cond = condition_times(rec, hyst)
    k0 = int(np.argmax(cond))
    assert cond[k0] and not cond[:k0].any() and cond[k0:].all()  # one crossing on a straight road
    t_cond = t[k0]
    t_ho = float(ho.loc[0, "t_s"])
    # the first measurement at which the condition has held for TTT
    expected = t[(t >= t_cond + ttt - 1e-9)][0]
    assert t_ho == pytest.approx(expected, abs=1e-9)
    assert ttt - 1e-9 <= t_ho - t_cond < ttt + PERIOD_S + 1e-9
    # until then the vehicle stayed on a; from then on, on b
    serving = np.array([r["serving"] for r in rec.of(0)])
    assert serving[0] == -1  # recorded inside attach(), before the vehicle is attached
    assert np.all(serving[1:][t[1:] < t_ho - 1e-9] == 0)
    assert np.all(serving[t > t_ho + 1e-9] == 1)
    # cross-check the place against the path-loss model alone (10 m/s, 1 m per measurement)
    x_ho = float(ho.loc[0, "x_m"]) - X0_M
    x_c = crossing_x(hyst)
    assert x_c + 10.0 * ttt - 1.0 <= x_ho <= x_c + 10.0 * (ttt + PERIOD_S) + 1.0
    assert float(ho.loc[0, "rsrp_dbm"]) == pytest.approx(rec.of(0)[int(np.searchsorted(t, t_ho))]["rsrp"][1])


def test_a3_without_ttt_fires_at_the_first_measurement_past_the_hysteresis(line_roadmap: RoadMap) -> None:
    ho, rec = a3_case(line_roadmap, hyst=3.0, ttt=0.0, vehicle=car("c", 0, 20))
    t, cond = condition_times(rec, 3.0)
    assert len(ho) == 1
    assert float(ho.loc[0, "t_s"]) == pytest.approx(t[int(np.argmax(cond))], abs=1e-9)


def test_a3_bigger_hysteresis_hands_over_later(line_roadmap: RoadMap) -> None:
    times = []
    for hyst in (0.0, 3.0, 6.0):
        ho, _ = a3_case(line_roadmap, hyst=hyst, ttt=0.32, vehicle=car("c", 0, 20))
        assert len(ho) == 1
        times.append(float(ho.loc[0, "t_s"]))
    assert times[0] < times[1] < times[2]
    # with no hysteresis: just past the midpoint (equal powers) plus TTT
    assert 100.0 + 0.32 <= times[0] <= 100.0 + 0.32 + 2 * PERIOD_S


@pytest.mark.parametrize(("ttt", "fires"), [(30.0, False), (10.0, True)])
def test_a3_condition_must_hold_for_the_whole_ttt(line_roadmap: RoadMap, ttt: float, fires: bool) -> None:
    """Drive into b's territory (node 12, x = 1200 m) and back to node 9: the condition holds ~20 s."""
    vehicle = car("c", 0, 9, via=[{"node": 12}])
    ho, rec = a3_case(line_roadmap, hyst=3.0, ttt=ttt, vehicle=vehicle, duration_s=135.0)
    t, cond = condition_times(rec, 3.0)
    on = np.flatnonzero(cond)
    assert len(on) and np.all(np.diff(on) == 1)  # one stretch while serving a
    held = t[on[-1]] - t[on[0]]
    assert 15.0 < held < 25.0
    if not fires:
        assert ho.empty
        assert {r["serving"] for r in rec.of(0)[1:]} == {0}
    else:
        assert len(ho) == 1
        assert float(ho.loc[0, "t_s"]) == pytest.approx(t[t >= t[on[0]] + ttt - 1e-9][0], abs=1e-9)


def test_no_handover_with_a_huge_hysteresis(line_roadmap: RoadMap) -> None:
    ho, rec = a3_case(line_roadmap, hyst=100.0, ttt=0.32, vehicle=car("c", 0, 20))
    assert ho.empty
    assert {r["serving"] for r in rec.of(0)[1:]} == {0}
    # although b was much stronger by the end of the run
    assert rec.of(0)[-1]["rsrp"][1] > rec.of(0)[-1]["rsrp"][0] + 6.0


# ---------------------------------------------------------------------- shadowing


def test_shadowing_is_exponentially_correlated_along_the_route(line_roadmap: RoadMap) -> None:
    """AR(1) in distance: corr(z(s), z(s + d)) = exp(-d / d_corr), d_corr = 13 m for UMi NLOS."""
    bss = [bs_at(f"bs{k}", 200.0 * k, 50.0) for k in range(10)]  # 10 independent series
    changes = {"duration_s": 100, "base_stations": bss, "vehicles": [car("c", 0, 20)], "traffic": {"fps": 1}}
    sim, _, rec = run(line_roadmap, changes, record=True)
    rows = rec.of(0)
    s = np.array([r["s_m"] for r in rows])
    z = np.array([r["z"] for r in rows])  # (n, 10)
    step = np.diff(s)
    np.testing.assert_allclose(step, 1.0, atol=1e-6)  # 10 m/s, every 0.1 s
    assert sim.radio.scene_dcorr_m[0] == 13.0
    assert abs(z.std() - 1.0) < max(0.15, 2 / math.sqrt(z.size))
    assert abs(z.mean()) < max(0.15, 2 / math.sqrt(z.size))
    for lag in (3, 13, 26, 39):
        a, b = z[:-lag].ravel(), z[lag:].ravel()
        n = len(a)
        r = float(np.corrcoef(a, b)[0, 1])
        assert r == pytest.approx(math.exp(-lag / 13.0), abs=max(0.15, 2 / math.sqrt(n))), lag
    # far apart: uncorrelated
    a, b = z[:-150].ravel(), z[150:].ravel()
    assert abs(float(np.corrcoef(a, b)[0, 1])) < max(0.15, 2 / math.sqrt(len(a)))


def test_shadowing_scales_with_the_profile_sigma(line_roadmap: RoadMap) -> None:
    """RSRP minus the deterministic budget is sigma * z."""
    changes = {
        "duration_s": 30,
        "base_stations": [bs_at("a", 0.0, 30.0)],
        "vehicles": [car("c", 0, 20)],
        "profiles": {"umi_nlos": {"shadow_fading_db": 5.5}},
        "traffic": {"fps": 1},
    }
    _, _, rec = run(line_roadmap, changes, record=True)
    rows = rec.of(0)
    x = np.array([r["x_m"] for r in rows]) - X0_M
    pl = pathloss_db("umi", False, np.hypot(x, 30.0), carrier_hz=3.5e9, bs_height_m=25.0, ue_height_m=1.5)
    budget = 43.0 - 10 * math.log10(N_SC) - pl
    rsrp = np.array([r["rsrp"][0] for r in rows])
    z = np.array([r["z"][0] for r in rows])
    np.testing.assert_allclose(budget - rsrp, 5.5 * z, atol=1e-9)


def test_shadowing_restarts_fresh_on_a_new_trip(grid_roadmap: RoadMap) -> None:
    changes = {
        "duration_s": 90,
        "traffic": {"fps": 1},
        "base_stations": [bs_at("a", 0.0, 0.0), bs_at("b", 450.0, 450.0)],
        "fleets": [{"id": "f", "count": 2, "respawn": True, "min_trip_m": 200}],
    }
    sim = Simulation(make_scenario(changes), roadmap=grid_roadmap)
    fresh: list[bool] = []
    orig = sim.radio.measure

    def measure(idx: np.ndarray, t_s: float) -> None:
        fresh.extend(np.isnan(sim.radio.shadow_at_m[idx]).tolist())
        orig(idx, t_s)

    sim.radio.measure = measure
    sim.run()
    departs = int((sim.log.to_pandas().event == "vehicle_depart").sum())
    assert departs > 2
    assert sum(fresh) == departs  # exactly the departures start from a fresh state


# ---------------------------------------------------------------------- SINR, noise


def two_cell_run(line_roadmap: RoadMap, load: Any, *, direction: str = "downlink") -> pd.DataFrame:
    changes = {
        "duration_s": 20,
        "base_stations": TWO_CELLS,
        "vehicles": [car("west", 0, 20), car("east", 20, 0)],
        "radio": {"interference_load": load},
        "link": {"direction": direction},
    }
    _, df, _ = run(line_roadmap, changes)
    tx = rows_of(df, "tx")
    assert len(tx) == 2 * 20 * 5
    assert set(tx.bs) == {"a", "b"}  # both cells serve someone
    return tx


@pytest.mark.parametrize("direction", ["downlink", "uplink"])
def test_sinr_equals_snr_when_other_cells_are_idle(line_roadmap: RoadMap, direction: str) -> None:
    tx = two_cell_run(line_roadmap, 0, direction=direction)
    np.testing.assert_array_equal(tx.sinr_db.to_numpy(), tx.snr_db.to_numpy())


@pytest.mark.parametrize("direction", ["downlink", "uplink"])
def test_sinr_below_snr_when_other_cells_are_busy(line_roadmap: RoadMap, direction: str) -> None:
    busy = two_cell_run(line_roadmap, 1, direction=direction)
    assert np.all(busy.sinr_db < busy.snr_db)
    idle = two_cell_run(line_roadmap, 0, direction=direction)
    # same seed, same shadowing: the SNR does not depend on the load
    np.testing.assert_allclose(busy.snr_db.to_numpy(), idle.snr_db.to_numpy(), rtol=0, atol=1e-9)


def test_sinr_never_above_snr_with_measured_load(line_roadmap: RoadMap) -> None:
    tx = two_cell_run(line_roadmap, "auto")
    assert np.all(tx.sinr_db <= tx.snr_db)
    assert np.any(tx.sinr_db < tx.snr_db)  # the other cell carries traffic, so it interferes


def started_two_cell_sim(line_roadmap: RoadMap, load: float, *, t_s: float = 5.05, **radio: Any) -> Simulation:
    changes = {
        "duration_s": 30,
        "base_stations": [
            bs_at("a", 0.0, 30.0, tx_power_dbm=44.0, noise_figure_db=4.0),
            bs_at("b", 2000.0, 30.0, tx_power_dbm=41.0, noise_figure_db=6.0),
        ],
        "vehicles": [car("west", 0, 20), car("east", 20, 0)],
        "radio": {"interference_load": load, **radio},
    }
    sim = Simulation(make_scenario(changes), roadmap=line_roadmap)
    sim._start()
    sim.env.run(until=t_s)
    assert list(sim.vehicles.serving) == [0, 1]
    return sim


def test_downlink_noise_is_ktb_plus_nf(line_roadmap: RoadMap) -> None:
    sim = started_two_cell_sim(line_roadmap, 0.0, ue_noise_figure_db=7.0)
    sinr, snr = sim.radio.sinr_db(np.array([0]), np.array([0]), uplink=False)
    noise_dbm = -174.0 + 10 * math.log10(20e6) + 7.0
    assert noise_dbm == pytest.approx(-93.98970004336019, abs=1e-12)
    want = 44.0 + float(sim.radio.gain_db[0, 0]) - noise_dbm
    assert float(snr[0]) == pytest.approx(want, abs=1e-9)
    assert float(sinr[0]) == float(snr[0])


def test_downlink_sinr_adds_the_other_cells_power(line_roadmap: RoadMap) -> None:
    sim = started_two_cell_sim(line_roadmap, 0.5)
    sinr, snr = sim.radio.sinr_db(np.array([0, 1]), np.array([0, 1]), uplink=False)
    g = 10 ** (sim.radio.gain_db / 10)  # (vehicle, bs)
    n_mw = 10 ** ((-174.0 + 10 * math.log10(20e6) + 9.0) / 10)
    p = [10 ** (44.0 / 10), 10 ** (41.0 / 10)]
    want0 = 10 * math.log10(p[0] * g[0, 0] / (n_mw + 0.5 * p[1] * g[0, 1]))
    want1 = 10 * math.log10(p[1] * g[1, 1] / (n_mw + 0.5 * p[0] * g[1, 0]))
    np.testing.assert_allclose(sinr, [want0, want1], atol=1e-9)
    np.testing.assert_allclose(snr, [10 * math.log10(p[0] * g[0, 0] / n_mw), 10 * math.log10(p[1] * g[1, 1] / n_mw)])


def test_uplink_noise_uses_the_bs_noise_figure_and_ue_power(line_roadmap: RoadMap) -> None:
    sim = started_two_cell_sim(line_roadmap, 0.0, ue_tx_power_dbm=20.0)
    sinr, snr = sim.radio.sinr_db(np.array([0, 1]), np.array([0, 1]), uplink=True)
    for k, nf in ((0, 4.0), (1, 6.0)):
        want = 20.0 + float(sim.radio.gain_db[k, k]) - (-174.0 + 10 * math.log10(20e6) + nf)
        assert float(snr[k]) == pytest.approx(want, abs=1e-9)
    np.testing.assert_array_equal(sinr, snr)


def test_uplink_interference_comes_from_the_other_cells_vehicles(line_roadmap: RoadMap) -> None:
    sim = started_two_cell_sim(line_roadmap, 1.0)
    sinr, snr = sim.radio.sinr_db(np.array([0, 1]), np.array([0, 1]), uplink=True)
    g = 10 ** (sim.radio.gain_db / 10)
    p_ue = 10 ** (23.0 / 10)
    for k, nf in ((0, 4.0), (1, 6.0)):
        other = 1 - k
        n_mw = 10 ** ((-174.0 + 10 * math.log10(20e6) + nf) / 10)
        # the vehicle served by the other cell, received at this vehicle's cell
        want = 10 * math.log10(p_ue * g[k, k] / (n_mw + p_ue * g[other, k]))
        assert float(sinr[k]) == pytest.approx(want, abs=1e-9)
    assert np.all(sinr < snr)


def two_cells_three_cars(roadmap: RoadMap) -> Simulation:
    """One car in cell a, two in cell b (fixed load 0.5), run to 3.05 s."""
    changes = {
        "duration_s": 30,
        "base_stations": TWO_CELLS,
        "vehicles": [car("west", 0, 20), car("east", 20, 0), car("east2", 19, 0)],
        "radio": {"interference_load": 0.5},
    }
    sim = Simulation(make_scenario(changes), roadmap=roadmap)
    sim._start()
    sim.env.run(until=3.05)
    return sim


def test_uplink_interference_is_the_mean_over_the_other_cells_vehicles(line_roadmap: RoadMap) -> None:
    """Two vehicles in cell b: cell a hears b's load times their mean received power."""
    sim = two_cells_three_cars(line_roadmap)
    assert list(sim.vehicles.serving) == [0, 1, 1]
    sinr, _ = sim.radio.sinr_db(np.array([0]), np.array([0]), uplink=True)
    g = 10 ** (sim.radio.gain_db / 10)
    p_ue = 10 ** (23.0 / 10)
    n_mw = 10 ** ((-174.0 + 10 * math.log10(20e6) + 5.0) / 10)
    interference = 0.5 * p_ue * (g[1, 0] + g[2, 0]) / 2
    assert float(sinr[0]) == pytest.approx(10 * math.log10(p_ue * g[0, 0] / (n_mw + interference)), abs=1e-9)


def test_uplink_run_logs_uplink_rows(line_roadmap: RoadMap) -> None:
    tx = two_cell_run(line_roadmap, "auto", direction="uplink")
    assert set(tx.direction) == {"uplink"}
    assert tx.delivered.sum() > 0.9 * len(tx)
    down = two_cell_run(line_roadmap, "auto", direction="downlink")
    assert set(down.direction) == {"downlink"}
    # 23 dBm from the car vs 43 dBm from the cell, NF 5 vs 9 dB: 16 dB less SNR on the uplink
    np.testing.assert_allclose(down.snr_db.to_numpy() - tx.snr_db.to_numpy(), 16.0, atol=1e-9)


def test_l3_filter_delays_the_handover_and_reports_the_filtered_rsrp(line_roadmap: RoadMap) -> None:
    raw_ho, _ = a3_case(line_roadmap, hyst=3.0, ttt=0.32, vehicle=car("c", 0, 20), l3_filter_k=0)
    ho, rec4 = a3_case(line_roadmap, hyst=3.0, ttt=0.32, vehicle=car("c", 0, 20), l3_filter_k=8)
    assert len(raw_ho) == len(ho) == 1
    assert float(ho.loc[0, "t_s"]) > float(raw_ho.loc[0, "t_s"])
    # F_n = (1 - a) F_(n-1) + a M_n with a = 1 / 2^(k/4) = 1/4, started at the first measurement after attach
    rows = rec4.of(0)[1:]
    t = np.array([r["t_s"] for r in rows])
    m = np.array([r["rsrp"][1] for r in rows])
    f = m[0]
    for value in m[1:][t[1:] <= float(ho.loc[0, "t_s"]) + 1e-9]:
        f = 0.75 * f + 0.25 * value
    assert float(ho.loc[0, "rsrp_dbm"]) == pytest.approx(f, abs=1e-9)


@pytest.mark.parametrize("uplink", [False, True])
def test_the_scalar_sinr_of_one_vehicle_is_the_vectorised_one(line_roadmap: RoadMap, uplink: bool) -> None:
    sim = two_cells_three_cars(line_roadmap)
    for i in range(3):
        for bs in range(2):
            want = float(sim.radio.sinr_db(np.array([i]), np.array([bs]), uplink=uplink)[0][0])
            assert sim.radio.sinr_one_db(i, bs, uplink=uplink) == pytest.approx(want, abs=1e-9)
