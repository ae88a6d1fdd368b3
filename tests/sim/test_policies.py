"""Refinement timing policies and scene-change detectors in the simulation.

Toy world: a straight 2 km road (100 m edges, 10 m/s) whose edges 8 -> 12 are tagged ``bridge=yes``, so a car
from node 0 to node 20 drives street (0-800 m, 80 s), bridge (800-1200 m, 40 s), street again. Base stations
beside the road; timings stated with ``refinement.assumed`` (GPU service S = 1 s per job), analytic link.
"""

from __future__ import annotations

import sys
import types
from typing import Any, ClassVar

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from ivsim.config.schema import DetectorSpec
from ivsim.refine.detectors import ChannelStatisticsDetector
from ivsim.refine.policies import Decision, Plan
from ivsim.sim.engine import Simulation
from ivsim.world import RoadMap

from .conftest import bs_at, car, line_graph
from .test_refinement import ASSUMED, K, S, refine_sim, rows

BRIDGE_M = (800.0, 1200.0)
SPEED = 10.0


@pytest.fixture(scope="module")
def bridge_line() -> RoadMap:
    graph: nx.MultiDiGraph = line_graph()
    for u, v, data in graph.edges(data=True):
        if 8 <= min(u, v) < 12:
            data["bridge"] = "yes"
    return RoadMap.from_graph(graph, source="bridge-line", name="bridge-line")


BSS = [bs_at(f"b{k}", 250.0 * k, 30.0) for k in range(9)]


def run(roadmap: RoadMap, policy: dict[str, Any], *, detector: dict[str, Any] | None = None, **kw: Any) -> pd.DataFrame:
    refinement = {"policy": policy, **({"detector": detector} if detector else {}), **kw.pop("refinement", {})}
    sim = refine_sim(roadmap, kw.pop("cars", [car("c", 0, 20)]), BSS, refinement=refinement, duration_s=200.0, **kw)
    sim.run()
    return sim.log.to_pandas()


def test_route_lookahead_predicts_the_bridge_at_the_last_sample_before_it(bridge_line: RoadMap) -> None:
    df = run(bridge_line, {"kind": "proactive"}, detector={"kind": "route_lookahead", "spacing_m": 100})
    det = df[(df.event == "detect") & (df.t_s == 0)].set_index("target_scene")
    # samples every 100 m: 700 m is street, 800 m (where the bridge starts) bridge: predicted at 700 m, 10 s early
    assert det.loc["bridge", "predicted_t_s"] == pytest.approx(70.0) and det.loc["bridge", "arrival_t_s"] == 80.0
    assert det.loc["bridge", "distance_m"] == pytest.approx(700.0)
    assert det.loc["bridge", "error_s"] == pytest.approx(-10.0)


def test_route_lookahead_errors_from_spacing_and_from_speed(bridge_line: RoadMap) -> None:
    # 300 m spacing: 600 m is the last sample before the bridge -> predicted 20 s early
    df = run(bridge_line, {"kind": "proactive"}, detector={"kind": "route_lookahead", "spacing_m": 300})
    det = df[(df.event == "detect") & (df.t_s == 0) & (df.target_scene == "bridge")].iloc[0]
    assert det.error_s == pytest.approx(-20.0)
    # 80 m spacing: 720 m before, 800 m on it: 8 s early
    df = run(bridge_line, {"kind": "proactive"}, detector={"kind": "route_lookahead", "spacing_m": 80})
    det = df[(df.event == "detect") & (df.t_s == 0) & (df.target_scene == "bridge")].iloc[0]
    assert det.error_s == pytest.approx(-8.0)
    # a driver at 0.8x the map's speed (100 m spacing): planned speeds predict 70 s, the car arrives at 100 s
    cars = [car("c", 0, 20, speed_factor=0.8)]
    df = run(bridge_line, {"kind": "proactive"}, detector={"kind": "route_lookahead"}, cars=cars)
    det = df[(df.event == "detect") & (df.t_s == 0) & (df.target_scene == "bridge")].iloc[0]
    assert (det.predicted_t_s, det.arrival_t_s) == pytest.approx((70.0, 100.0))
    # ... while the observed speed leaves only the sampling error (700 m at 8 m/s)
    df = run(bridge_line, {"kind": "proactive"}, detector={"kind": "route_lookahead", "speed": "observed"}, cars=cars)
    det = df[(df.event == "detect") & (df.t_s == 0) & (df.target_scene == "bridge")].iloc[0]
    assert det.predicted_t_s == pytest.approx(87.5)


def test_proactive_starts_budget_plus_margin_ahead_and_meets_its_deadline(bridge_line: RoadMap) -> None:
    df = run(bridge_line, {"kind": "proactive", "margin_s": 4.0})
    (req,) = rows_of(df, "refine_request").itertuples()
    (done,) = rows_of(df, "refine_done").itertuples()
    # request at 70 (predicted) - estimated budget - 4; the estimate is the job's real budget (no queue, same link)
    assert req.deadline_t_s == pytest.approx(70.0) and req.target_scene == "bridge"
    assert req.t_s == pytest.approx(70.0 - done.total_s - 4.0, abs=0.05)
    assert done.outcome == "met" and done.slack_s == pytest.approx(80.0 - done.t_s) and done.slack_s > 13.9
    # deployed before the bridge, used from the bridge on, the base weights again on the street after it
    switches = rows_of(df, "estimator_switch")
    assert list(zip(switches.t_s, switches.estimator_scene, strict=True)) == [(80.0, "bridge"), (120.0, "street")]
    tx = rows_of(df, "tx")
    assert not tx.mismatched.any()


def test_reactive_is_late_by_its_whole_budget_and_frames_are_mismatched_meanwhile(bridge_line: RoadMap) -> None:
    df = run(bridge_line, {"kind": "reactive"})
    (req,) = rows_of(df, "refine_request").itertuples()
    (done,) = rows_of(df, "refine_done").itertuples()
    assert req.t_s == 80.0 and req.deadline_t_s == 80.0
    assert done.outcome == "late" and done.slack_s == pytest.approx(-done.total_s)
    tx = rows_of(df, "tx")
    bad = tx[tx.mismatched]
    assert len(bad) > 0 and bad.scene.eq("bridge").all() and bad.t_s.between(80.0, done.t_s).all()
    # back on the street the car swaps to its base weights on board: no second job
    assert len(rows_of(df, "refine_request")) == 1


def test_never_and_oracle_bound_the_mismatch(bridge_line: RoadMap) -> None:
    never = rows_of(run(bridge_line, {"kind": "never"}), "tx")
    assert never[never.scene == "bridge"].mismatched.all() and not never[never.scene == "street"].mismatched.any()
    df = run(bridge_line, {"kind": "oracle"})
    assert not rows_of(df, "tx").mismatched.any()
    assert rows_of(df, "refine_request").empty and rows_of(df, "detect").empty
    switches = rows_of(df, "estimator_switch")
    assert list(switches.source.unique()) == ["oracle"] and list(switches.t_s) == [80.0, 120.0]


def test_periodic_polls(bridge_line: RoadMap) -> None:
    df = run(bridge_line, {"kind": "periodic", "period_s": 25.0})
    (req,) = rows_of(df, "refine_request").itertuples()
    assert req.t_s == 100.0 and req.target_scene == "bridge"  # the first tick on the bridge


def test_cached_fetches_only_what_the_cloud_holds(bridge_line: RoadMap) -> None:
    # a first car (reactive-like fallback) fills the cloud cache; the second only downloads, ahead of time
    cars = [car("a", 0, 20), car("b", 0, 20, depart_s=100.0)]
    df = run(bridge_line, {"kind": "cached", "fallback": "reactive", "margin_s": 2.0}, cars=cars)
    done = rows_of(df, "refine_done").set_index("vehicle")
    assert not done.loc["a", "cached"] and done.loc["a", "outcome"] == "late"
    assert done.loc["b", "cached"] and done.loc["b", "gpu_s"] == 0.0
    # b's bridge entry at 180 s; the download was planned at its departure, after a's adapter was made
    assert done.loc["b", "outcome"] == "met"
    assert rows_of(run(bridge_line, {"kind": "cached"}), "refine_request").empty  # nothing cached, no fallback


def test_edf_serves_the_earliest_deadline_first(bridge_line: RoadMap) -> None:
    cars = [car(f"c{k}", 0, 20) for k in range(4)]
    deadlines = [50.0, 40.0, 30.0, 20.0]
    got = {}
    for queue in ("fifo", "edf"):
        sim = refine_sim(bridge_line, cars, BSS, cloud={"queue": queue}, duration_s=40.0)

        def ask(sim: Simulation = sim) -> Any:
            for i, d in enumerate(deadlines):  # 10 ms apart: uploads take well under that
                yield sim.env.timeout(1.0 + 0.01 * i - sim.env.now)
                sim.cloud.request_refinement(i, 1, policy="test", deadline_t_s=d)

        sim.process(ask())
        sim.run()
        start = rows(sim, "refine_start")
        got[queue] = list(start.vehicle)
    # c0 takes the idle GPU, the rest wait
    assert got["fifo"] == ["c0", "c1", "c2", "c3"]
    assert got["edf"] == ["c0", "c3", "c2", "c1"]


def test_coalescing_makes_an_adapter_once_for_simultaneous_requests(line_roadmap: RoadMap) -> None:
    from .test_refinement import request, spread_cars

    cars, bss = spread_cars(4)
    sim = refine_sim(line_roadmap, cars, bss, cloud={"coalesce": True})
    results = request(sim, [(1.0 + 0.01 * k, k) for k in range(4)])
    first, *rest = results
    assert not first.cached and first.gpu_s == S and first.queue_s == 0.0
    for r in rest:  # they wait for the first job's adapter: no GPU, the wait counted as queue time
        assert r.cached and r.gpu_s == 0.0 and r.adapter_id == first.adapter_id
        assert r.requested_s + r.upload_s + r.queue_s == pytest.approx(first.requested_s + first.upload_s + S)
    assert sum(r.gpu_s for r in results) == S


def test_admission_turns_away_jobs_that_cannot_make_their_deadline(bridge_line: RoadMap) -> None:
    cars = [car(f"c{k}", 0, 20) for k in range(3)]
    sim = refine_sim(bridge_line, cars, BSS, cloud={"admission": "deadline"}, duration_s=30.0)

    def ask() -> Any:
        for i in range(3):  # each needs S of GPU; the third waits 2 S and would finish after its deadline
            yield sim.env.timeout(1.0 + 0.01 * i - sim.env.now)
            sim.cloud.request_refinement(i, 1, policy="test", deadline_t_s=1.0 + 2.5 * S)

    sim.process(ask())
    sim.run()
    done = rows(sim, "refine_done").set_index("vehicle")
    assert list(done.loc[["c0", "c1"], "outcome"]) == ["met", "met"]
    assert (done.loc["c2", "outcome"], done.loc["c2", "reason"]) == ("cancelled", "admission")


def test_adaptive_learns_a_quantile_of_finished_jobs(bridge_line: RoadMap) -> None:
    sim = refine_sim(bridge_line, [car("c", 0, 20)], BSS, refinement={"policy": {"kind": "adaptive", "quantile": 0.5,
                     "min_observed": 2}})  # fmt: skip
    policy = sim.refine_policy
    decision = Decision(sim=sim, vehicle=0, t_s=0.0, reason="scene", scene=0, samples=256, steps=K)
    sim.env.run(until=1.0)
    estimate = policy.budget_s(decision, 256, K)
    assert estimate == pytest.approx(sim.cloud.estimate_budget(0, samples=256, steps=K)["total_s"])
    sim.cloud.finished_totals.extend([10.0])
    assert policy.budget_s(decision, 256, K) == estimate  # one observation is not enough
    sim.cloud.finished_totals.extend([30.0, 50.0])
    assert policy.budget_s(decision, 256, K) == pytest.approx(30.0)


def test_adaptive_fit_steps_cuts_k_to_the_time_left(bridge_line: RoadMap) -> None:
    policy = {"kind": "adaptive", "fit_steps": True, "min_steps": 4, "margin_s": 1.0}
    # a car 400 m (40 s) before the bridge, predicted at the 700 m sample (30 s): 1024 steps (64.5 s of GPU) do
    # not fit; 30 - 1 (margin) - 0.5 (inference) - air and backhaul leave room for about 455 steps of 0.0625 s
    df = run(bridge_line, policy, refinement={"steps": 1024}, cars=[car("c", 4, 20)])
    (req,) = rows_of(df, "refine_request").itertuples()
    (done,) = rows_of(df, "refine_done").itertuples()
    assert 440 <= req.steps <= 456 and req.t_s == 0.0 and done.outcome == "met"
    assert done.t_s == pytest.approx(30.0 - 1.0, abs=0.1)


def test_cusum_alarms_after_a_step_and_not_before() -> None:
    det = ChannelStatisticsDetector(DetectorSpec(kind="channel_statistics", warmup_frames=20))
    rng = np.random.default_rng(0)
    series = np.concatenate([rng.normal(0.0, 1.0, 40), rng.normal(4.0, 1.0, 20)])
    alarms = [k for k, x in enumerate(series) if len(det.observe(None, np.array([7]), float(k), {"pilot_resid_db":
              np.array([x])}))]  # fmt: skip
    assert alarms and alarms[0] >= 40 and alarms[0] <= 44  # a 4-sigma step is caught within a few frames
    assert not [a for a in alarms if a < 40]


def test_channel_statistics_needs_the_full_link(bridge_line: RoadMap) -> None:
    from ivsim.errors import ScenarioError

    with pytest.raises(ScenarioError, match="only link.fidelity full reports"):
        refine_sim(bridge_line, [car("c", 0, 20)], BSS, refinement={"detector": {"kind": "channel_statistics"}})


def test_plugin_policy_with_its_own_parameter(bridge_line: RoadMap, monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("my_policies")

    class AtFixedLead:
        """Ask ``lead_s`` seconds before every predicted boundary."""

        kind: ClassVar[str] = "at_fixed_lead"
        tick_s = None

        def __init__(self, spec: Any) -> None:
            self.lead_s = float(spec.model_extra["lead_s"])

        def decide(self, d: Decision) -> list[Plan]:
            return [Plan(b.target_scene, b.predicted_t_s - self.lead_s, b.predicted_t_s, d.samples, d.steps)
                    for b in d.upcoming()]  # fmt: skip

    module.AtFixedLead = AtFixedLead
    monkeypatch.setitem(sys.modules, "my_policies", module)
    df = run(bridge_line, {"kind": "my_policies:AtFixedLead", "lead_s": 30})
    (req,) = rows_of(df, "refine_request").itertuples()
    assert req.t_s == pytest.approx(40.0) and req.policy == "at_fixed_lead"


def test_common_random_numbers_across_policies(bridge_line: RoadMap) -> None:
    runs = {p: run(bridge_line, {"kind": p}) for p in ("never", "reactive", "proactive")}
    cols = ["t_s", "vehicle", "scene", "prev_scene", "bs", "frame", "sinr_db", "x_m", "y_m", "rate_bps", "to_bs"]

    def same(df: pd.DataFrame, event: str) -> pd.DataFrame:
        return rows_of(df, event)[cols].astype(object).reset_index(drop=True)

    for p in ("reactive", "proactive"):
        for event in ("tx", "scene_enter", "handover"):
            pd.testing.assert_frame_equal(same(runs[p], event), same(runs["never"], event))


def rows_of(df: pd.DataFrame, event: str) -> pd.DataFrame:
    return df[df.event == event].reset_index(drop=True)


def test_assumed_timings_give_one_second_jobs() -> None:
    assert S == 1.0 and ASSUMED["lm_infer"]["fixed_s"] + ASSUMED["finetune"]["per_item_s"] * K == S


def test_default_scenario_proactive_meets_both_deadlines(nyc_map: RoadMap) -> None:
    from ivsim.config.loader import load_scenario

    from .conftest import ANALYTIC, DEFAULT_SCENARIO

    scenario = load_scenario(DEFAULT_SCENARIO, overrides=ANALYTIC)
    assert (scenario.refinement.policy.kind, scenario.refinement.detector.kind) == ("proactive", "route_lookahead")
    sim = Simulation(scenario, roadmap=nyc_map)
    sim.run()
    df = sim.log.to_pandas()
    done = rows_of(df, "refine_done")
    assert list(done.target_scene) == ["river_bridge", "brooklyn_urban"]
    assert (done.outcome == "met").all() and (done.slack_s > 0).all()
    assert not rows_of(df, "tx").mismatched.any()
