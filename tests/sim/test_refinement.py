"""Refinement jobs in the simulation: queueing on the cloud GPUs, the time and byte budget, the adapter cache,
failures, the reactive policy on the default scenario, and bad refinement settings.

Toy worlds: the straight road of ``conftest.line_map`` (10 m/s, all scene ``street``) with base stations
beside it; jobs are requested from a process started before the run and refine for scene ``bridge``.
Timings are stated with ``refinement.assumed`` in binary-exact numbers (service S = 0.5 + 8 * 0.0625 = 1 s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ivsim.config.loader import load_scenario
from ivsim.config.schema import RefineTiming
from ivsim.errors import ModelError, ScenarioError
from ivsim.refine.budget import RefineTimingModel, pilot_bytes
from ivsim.refine.service import AnalyticRefiner, RefineRequest, RefineWork
from ivsim.results import refinements
from ivsim.sim.cloud import Job, RefineResult
from ivsim.sim.engine import Simulation
from ivsim.sim.links import AnalyticLinkEvaluator, TxBatch, shannon_rate_bps
from ivsim.world import RoadMap

from .conftest import ANALYTIC, DEFAULT_SCENARIO, bs_at, car, make_scenario

F_S, P_S, K = 0.5, 0.0625, 8
S = F_S + P_S * K  # GPU service of one job: exactly 1.0
ASSUMED = {
    "label": "test timings",
    "lm_infer": {"fixed_s": F_S, "per_item_s": 0.0},
    "finetune": {"fixed_s": 0.0, "per_item_s": P_S},
    "adapter": {"fixed_bytes": 1000, "per_rank_bytes": 500},
}
STAGES = ("upload_s", "queue_s", "lm_infer_s", "finetune_s", "download_s")


def refine_sim(
    roadmap: RoadMap,
    cars: list[dict[str, Any]],
    bss: list[dict[str, Any]],
    *,
    refinement: dict[str, Any] | None = None,
    cloud: dict[str, Any] | None = None,
    link: dict[str, Any] | None = None,
    radio: dict[str, Any] | None = None,
    duration_s: float = 30.0,
    **kw: Any,
) -> Simulation:
    changes = {
        "duration_s": duration_s,
        "traffic": {"fps": 1},
        "base_stations": bss,
        "vehicles": cars,
        "radio": {"interference_load": 0.0, **(radio or {})},
        # queueing is what these tests study: every job computes its own adapter (see test_policies for coalescing)
        "cloud": {"gpus": 1, "backhaul": {"rate_bps": 1e9, "latency_s": 0.005}, "coalesce": False, **(cloud or {})},
        "refinement": {"steps": K, "lora_rank": 4, "assumed": ASSUMED, **(refinement or {})},
        "link": link or {},
    }
    return Simulation(make_scenario(changes), roadmap=roadmap, **kw)


def request(sim: Simulation, jobs: list[tuple[float, int]], target: str = "bridge") -> list[RefineResult]:
    """Request a refinement for ``target`` for each ``(t_s, vehicle index)``; run; return results in job order."""
    results: dict[int, RefineResult] = {}
    scene = sim.scene_names.index(target)

    def waiter(k: int, proc: Any) -> Any:
        results[k] = yield proc

    def requester() -> Any:
        for k, (t_s, i) in enumerate(jobs):
            if t_s > sim.env.now:
                yield sim.env.timeout(t_s - sim.env.now)
            sim.process(waiter(k, sim.cloud.request_refinement(i, scene, policy="test")))

    sim.process(requester())
    sim.run()
    assert len(results) == len(jobs)
    return [results[k] for k in range(len(jobs))]


def rows(sim: Simulation, event: str) -> pd.DataFrame:
    df = sim.log.to_pandas()
    return df[df.event == event].reset_index(drop=True)


def spread_cars(n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``n`` cars 400 m apart, each next to its own base station (own backhaul link, capped uplink rate)."""
    cars = [car(f"c{k}", 4 * k, 20) for k in range(n)]
    bss = [bs_at(f"b{k}", 400.0 * k + 20.0, 15.0) for k in range(n)]
    return cars, bss


# ---------------------------------------------------------------------- queueing


@pytest.mark.parametrize(("gpus", "waits"), [(1, [0, 1, 2, 3, 4]), (2, [0, 0, 1, 1, 2])])
def test_simultaneous_requests_queue_for_the_gpus(line_roadmap: RoadMap, gpus: int, waits: list[int]) -> None:
    cars, bss = spread_cars(5)
    sim = refine_sim(line_roadmap, cars, bss, cloud={"gpus": gpus})
    results = request(sim, [(1.0, k) for k in range(5)])
    uploads = {r.upload_s for r in results}
    assert len(uploads) == 1  # identical uploads: each car on its own cell at the capped rate
    assert sorted(r.queue_s for r in results) == pytest.approx([w * S for w in waits], abs=1e-9)
    assert all(r.outcome == "met" and not r.cached for r in results)
    assert all(r.gpu_s == S and r.lm_infer_s == F_S and r.finetune_s == P_S * K for r in results)
    start = rows(sim, "refine_start")
    assert sorted(start.queue_s) == pytest.approx([w * S for w in waits], abs=1e-9)
    assert start.queue_len.tolist() == [4, 3, 2, 1, 0]  # all five arrive at once: the jobs still behind it
    # never more GPUs busy than there are
    t0 = 1.0 + uploads.pop()
    starts = sorted(t0 + r.queue_s for r in results)
    for t in starts:
        assert sum(1 for s in starts if s <= t < s + S) <= gpus


def test_refinement_and_generic_jobs_share_one_fifo_queue(line_roadmap: RoadMap) -> None:
    sim = refine_sim(line_roadmap, [car("c", 0, 20)], [bs_at("a", 20.0, 15.0)])
    sim.process(_submit_at(sim, 0.5, Job("generic", "other", 0, 2.0)))
    (res,) = request(sim, [(1.0, 0)])
    # the generic job reaches the cloud at 0.5 + 5 ms and holds the only GPU for 2 s; the refinement arrives
    # at 1 + upload and waits behind it
    assert res.queue_s == pytest.approx(2.505 - (1.0 + res.upload_s), abs=1e-9)
    assert list(rows(sim, "job_start").job_id) == ["generic"] and len(rows(sim, "refine_start")) == 1


def _submit_at(sim: Simulation, t_s: float, job: Job) -> Any:
    yield sim.env.timeout(t_s)
    sim.cloud.submit(job)


# ---------------------------------------------------------------------- budget


def test_budget_adds_up_and_follows_from_bits_and_rates(line_roadmap: RoadMap) -> None:
    pilots, request_bytes, rank = 3, 100, 4
    sim = refine_sim(
        line_roadmap, [car("c", 0, 20)], [bs_at("a", 100.0, 100.0)],
        refinement={"upload_pilots": pilots, "request_bytes": request_bytes, "lora_rank": rank},
    )  # fmt: skip
    (res,) = request(sim, [(2.0, 0)])
    grid = sim.scenario.link.grid
    assert pilot_bytes(grid) == grid.num_rx_ant * len(grid.pilot_ofdm_symbol_indices) * grid.fft_size * 8 == 1152
    up_bytes = request_bytes + pilots * 1152
    down_bytes = 1000 + 500 * rank
    assert (res.upload_bytes, res.download_bytes) == (up_bytes, down_bytes)
    (req,) = rows(sim, "refine_request").itertuples()
    (done,) = rows(sim, "refine_done").itertuples()
    link = sim.scenario.link
    se_max = link.max_spectral_efficiency

    def rate(sinr_db: float) -> float:
        return float(shannon_rate_bps(sinr_db, 20e6, gap_db=link.gap_db, max_spectral_efficiency=se_max))

    assert req.upload_bytes == up_bytes and req.samples == 256 and req.steps == K and req.policy == "test"
    assert req.estimator_scene == "street" and req.estimator_version == 0 and req.target_scene == "bridge"
    assert req.rate_bps == pytest.approx(rate(req.sinr_db), rel=1e-12)
    assert req.rate_bps < 20e6 * se_max  # not capped: the formula is exercised
    assert done.air_up_s == pytest.approx(8 * up_bytes / rate(req.sinr_db), rel=1e-12)
    assert done.air_down_s == pytest.approx(8 * down_bytes / rate(done.sinr_db), rel=1e-12)
    assert done.backhaul_up_s == pytest.approx(0.005 + 8 * up_bytes / 1e9, rel=1e-9)
    assert done.backhaul_down_s == pytest.approx(0.005 + 8 * down_bytes / 1e9, rel=1e-9)
    assert done.upload_s == pytest.approx(done.air_up_s + done.backhaul_up_s, rel=1e-12)
    assert done.download_s == pytest.approx(done.backhaul_down_s + done.air_down_s, rel=1e-12)
    assert (done.queue_s, done.lm_infer_s, done.finetune_s, done.gpu_s) == (0.0, F_S, P_S * K, S)
    assert sum(getattr(done, c) for c in STAGES) == pytest.approx(done.total_s, rel=1e-12, abs=1e-12)
    assert done.total_s == pytest.approx(done.t_s - req.t_s, rel=1e-12)
    assert (done.outcome, done.cached, done.upload_bytes, done.download_bytes) == ("met", False, up_bytes, down_bytes)
    assert pd.isna(done.reason)
    (deploy,) = rows(sim, "deploy").itertuples()
    assert deploy.t_s == done.t_s and deploy.adapter_id == done.adapter_id == res.adapter_id
    assert (deploy.estimator_version, deploy.estimator_scene) == (1, "bridge")
    # the adapter is on board; the car uses it only in the bridge scene (it asked from the street)
    bridge = sim.scene_names.index("bridge")
    assert sim.fleet[0].onboard[bridge] == (res.adapter_id, 1)
    in_bridge = sim.vehicles.scene[0] == bridge
    assert deploy.active == bool(sim.scene_names[sim.vehicles.scene[0]] == "bridge" and deploy.t_s == sim.env.now)
    if in_bridge:
        assert sim.vehicles.estimator_version[0] == 1 and sim.vehicles.adapter_id[0] == res.adapter_id
    table = refinements(sim.log.to_pandas())
    assert len(table) == 1 and table.total_s.iloc[0] == done.total_s


def test_a_second_request_for_the_same_adapter_is_served_from_the_cache(line_roadmap: RoadMap) -> None:
    cars, bss = spread_cars(2)
    sim = refine_sim(line_roadmap, cars, bss)
    first, second = request(sim, [(1.0, 0), (5.0, 1)])
    assert not first.cached and first.gpu_s == S
    assert second.cached and second.adapter_id == first.adapter_id
    assert (second.queue_s, second.lm_infer_s, second.finetune_s, second.gpu_s) == (0.0, 0.0, 0.0, 0.0)
    assert second.download_bytes == first.download_bytes > 0
    assert second.total_s == pytest.approx(second.upload_s + second.download_s, rel=1e-12)
    assert list(rows(sim, "refine_start").job_id) == [first.job_id]  # no GPU for the cached one
    assert list(rows(sim, "deploy").vehicle) == ["c0", "c1"]
    assert sim.cloud.adapters == {first.adapter_id: first.download_bytes}


# ---------------------------------------------------------------------- failures


class FailsForC0:
    """Refines analytically, but raises ModelError for vehicle c0."""

    name = "fails_for_c0"

    def __init__(self, inner: AnalyticRefiner) -> None:
        self.inner = inner

    def adapter_id(self, request: RefineRequest) -> str:
        return f"{request.vehicle}-{self.inner.adapter_id(request)}"  # distinct ids: no cache hit

    def refine(self, request: RefineRequest) -> RefineWork:
        if request.vehicle == "c0":
            msg = "no base weights for scene 'street'"
            raise ModelError(msg)
        work = self.inner.refine(request)
        work.adapter_id = self.adapter_id(request)
        return work


def test_a_refiner_error_fails_the_job_and_frees_the_gpu(line_roadmap: RoadMap) -> None:
    cars, bss = spread_cars(2)
    timing = RefineTimingModel(RefineTiming.model_validate(ASSUMED), "test")
    sim = refine_sim(line_roadmap, cars, bss, refiner=FailsForC0(AnalyticRefiner(timing)))
    assert isinstance(sim.refiner, FailsForC0)  # the injected refiner is the run's
    failed, ok = request(sim, [(1.0, 0), (1.0, 1)])
    assert (failed.outcome, failed.reason) == ("failed", "no base weights for scene 'street'")
    assert failed.gpu_s == 0.0 and failed.download_bytes == 0
    assert failed.total_s == pytest.approx(failed.upload_s + failed.queue_s, rel=1e-12)
    assert ok.outcome == "met" and ok.queue_s == pytest.approx(0.0, abs=1e-12)  # the GPU was released at once
    bridge = sim.scene_names.index("bridge")  # the failed job left c0 without; c1 holds the adapter on board
    assert [bridge in v.onboard for v in sim.fleet] == [False, True]
    done = rows(sim, "refine_done").set_index("vehicle")
    assert done.loc["c0", "outcome"] == "failed" and done.loc["c0", "reason"] == failed.reason
    assert list(rows(sim, "deploy").vehicle) == ["c1"]
    assert sim.cloud.refinements_in_flight(0) == []


class NoBaseWeights:
    """A refiner that cannot even name the adapter."""

    name = "no_base"

    def adapter_id(self, request: RefineRequest) -> str:
        msg = f"the estimator held for scene {request.base_scene!r} cannot be refined"
        raise ModelError(msg)

    def refine(self, request: RefineRequest) -> RefineWork:  # pragma: no cover - never reached
        raise AssertionError


def test_an_adapter_id_error_fails_the_job_before_the_gpu(line_roadmap: RoadMap) -> None:
    sim = refine_sim(line_roadmap, [car("c", 0, 20)], [bs_at("a", 20.0, 15.0)], refiner=NoBaseWeights())
    (res,) = request(sim, [(1.0, 0)])
    assert (res.outcome, res.reason) == ("failed", "the estimator held for scene 'street' cannot be refined")
    assert res.total_s == pytest.approx(res.upload_s, rel=1e-12) and res.gpu_s == 0.0
    assert len(rows(sim, "refine_start")) == 0 and sim.vehicles.estimator_version[0] == 0


def test_outage_fails_at_once_and_changes_nothing(line_roadmap: RoadMap) -> None:
    sim = refine_sim(line_roadmap, [car("c", 0, 20)], [bs_at("a", 20.0, 15.0)], link={"min_sinr_db": 200.0})
    (res,) = request(sim, [(1.0, 0)])
    assert (res.outcome, res.reason, res.total_s, res.gpu_s) == ("failed", "outage", 0.0, 0.0)
    (req,) = rows(sim, "refine_request").itertuples()
    assert req.rate_bps == 0.0 and req.sinr_db < 200.0
    assert sim.vehicles.estimator_version[0] == 0 and len(rows(sim, "deploy")) == 0


def test_a_vehicle_that_arrives_before_the_adapter_cancels_the_job(line_roadmap: RoadMap) -> None:
    slow = {**ASSUMED, "lm_infer": {"fixed_s": 50.0, "per_item_s": 0.0}}
    sim = refine_sim(
        line_roadmap, [car("c", 0, 2)], [bs_at("a", 20.0, 15.0)], refinement={"assumed": slow}, duration_s=60.0
    )
    (res,) = request(sim, [(1.0, 0)])  # the car arrives after 20 s, the GPU stage ends after 51 s
    assert (res.outcome, res.reason) == ("cancelled", "vehicle_gone")
    assert res.download_s == 0.0 and res.gpu_s == pytest.approx(50.0 + P_S * K)
    assert sum(getattr(res, c) for c in STAGES) == pytest.approx(res.total_s, rel=1e-12)
    assert sim.vehicles.estimator_version[0] == 0


def test_policy_never_builds_nothing_until_a_request(line_roadmap: RoadMap, tmp_path: Path) -> None:
    profile = tmp_path / "latency_bare.yaml"
    profile.write_text("name: bare\ndevice: cpu\nsource: test\ncodec: {}\nestimator: {}\n")
    sim = refine_sim(
        line_roadmap, [car("c", 0, 20)], [bs_at("a", 20.0, 15.0)],
        refinement={"assumed": None, "latency_profile": str(profile)},
    )  # fmt: skip
    assert sim.refiner is None  # a profile without refine timings is no error while nothing asks
    with pytest.raises(ModelError, match="latency profile 'bare' has no refine timings"):
        sim.cloud.request_refinement(0, 1)


# ---------------------------------------------------------------------- policies


def test_policy_never_logs_no_refinement_and_tx_rows_carry_the_base_estimator(grid_roadmap: RoadMap) -> None:
    changes = {
        "duration_s": 40,
        "base_stations": [bs_at("a", 225.0, 200.0)],
        "vehicles": [car("c", 4, 11)],  # up to the middle row, then along it: street, then bridge
    }
    sim = Simulation(make_scenario(changes), roadmap=grid_roadmap)
    sim.run()
    df = sim.log.to_pandas()
    assert "bridge" in set(df.loc[df.event == "scene_enter", "scene"])
    assert not df.event.str.startswith("refine").any() and not (df.event == "deploy").any()
    tx = df[df.event == "tx"]
    assert len(tx) and (tx.estimator_version == 0).all() and (tx.adapter_id == "").all()
    assert sim.refiner is None


def test_reactive_policy_refines_the_default_car_for_the_bridge(nyc_map: RoadMap) -> None:
    assumed = "{label: test, lm_infer: {fixed_s: 2.0}, finetune: {per_item_s: 0.05}, adapter: {fixed_bytes: 4096}}"
    scenario = load_scenario(
        DEFAULT_SCENARIO,
        overrides=[*ANALYTIC, "duration_s=160", "refinement.policy.kind=reactive", f"refinement.assumed={assumed}"],
    )
    sim = Simulation(scenario, roadmap=nyc_map)
    sim.run()
    df = sim.log.to_pandas()
    enter = df[(df.event == "scene_enter") & (df.scene == "river_bridge")]
    (req,) = rows(sim, "refine_request").itertuples()
    assert req.t_s == enter.t_s.iloc[0] and req.vehicle == "car1" and req.policy == "reactive"
    assert (req.target_scene, req.estimator_scene, req.estimator_version) == ("river_bridge", "street_canyon", 0)
    (done,) = rows(sim, "refine_done").itertuples()
    assert done.outcome == "late" and done.gpu_s == pytest.approx(2.0 + 0.05 * 100)
    (deploy,) = rows(sim, "deploy").itertuples()
    assert deploy.adapter_id == done.adapter_id and len(deploy.adapter_id) == 12
    tx = df[df.event == "tx"]
    after, before = tx[tx.t_s > deploy.t_s], tx[tx.t_s < req.t_s]
    assert len(after) and (after.estimator_version == 1).all() and (after.adapter_id == deploy.adapter_id).all()
    assert len(before) and (before.estimator_version == 0).all() and (before.adapter_id == "").all()


def test_profile_mode_without_refine_timings_fails_at_construction(line_roadmap: RoadMap, tmp_path: Path) -> None:
    profile = tmp_path / "latency_bare.yaml"
    profile.write_text("name: bare\ndevice: cpu\nsource: test\ncodec: {}\nestimator: {}\n")
    with pytest.raises(ModelError, match=r"latency profile 'bare' has no refine timings; run `ivsim bench refine"):
        refine_sim(
            line_roadmap, [car("c", 0, 20)], [bs_at("a", 20.0, 15.0)],
            refinement={"assumed": None, "latency_profile": str(profile), "policy": {"kind": "reactive"}},
        )  # fmt: skip


def test_profile_file_with_refine_timings_prices_the_job(line_roadmap: RoadMap, tmp_path: Path) -> None:
    profile = tmp_path / "latency_mine.yaml"
    profile.write_text(
        "name: mine\ndevice: cpu\nsource: test\ncodec: {}\nestimator: {}\n"
        "refine: {lm_infer: {fixed_s: 0.25, per_item_s: 0.0}, finetune: {fixed_s: 0.0, per_item_s: 0.125},"
        " adapter: {fixed_bytes: 10, per_rank_bytes: 1}}\n"
    )
    sim = refine_sim(
        line_roadmap, [car("c", 0, 20)], [bs_at("a", 20.0, 15.0)],
        refinement={"assumed": None, "latency_profile": str(profile)},
    )  # fmt: skip
    (res,) = request(sim, [(1.0, 0)])
    assert (res.lm_infer_s, res.finetune_s, res.download_bytes) == (0.25, 0.125 * K, 10 + 4)
    assert sim.refine_timing.source == "profile mine"


# ---------------------------------------------------------------------- link batch fields


def test_tx_batch_take_and_concat_keep_adapter_fields() -> None:
    def batch(n: int, aid: str, version: int) -> TxBatch:
        z = np.zeros(n)
        return TxBatch(
            vehicle=np.arange(n), bs=np.zeros(n, int), scene=np.zeros(n, int), uplink=np.zeros(n, bool),
            size_bits=np.full(n, 1000), bandwidth_hz=np.full(n, 1e6), queue_s=z, sinr_db=np.full(n, 10.0),
            snr_db=np.full(n, 10.0), speed_mps=z, carrier_hz=np.full(n, 3.5e9), deadline_s=np.full(n, 0.1),
            adapter_id=np.full(n, aid, dtype=object), estimator_version=np.full(n, version, dtype=np.int32),
        )  # fmt: skip

    both = TxBatch.concat([batch(2, "", 0), batch(3, "abc", 1)])
    assert both.adapter_id.tolist() == ["", "", "abc", "abc", "abc"]
    assert both.estimator_version.tolist() == [0, 0, 1, 1, 1]
    part = both.take(slice(1, 3))
    assert part.adapter_id.tolist() == ["", "abc"] and part.estimator_version.tolist() == [0, 1]
    link = make_scenario({"base_stations": [bs_at("a", 0, 0)], "vehicles": [car("c", 0, 1)]}).link
    rate = AnalyticLinkEvaluator(link).evaluate(both).rate_bps
    assert rate == pytest.approx(shannon_rate_bps(10.0, 1e6, gap_db=3.0, max_spectral_efficiency=7.4))


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("override", "field", "words"),
    [
        ("refinement.policy.kind=sometimes", "refinement.policy.kind", "allowed: adaptive, cached, never, oracle"),
        ("refinement.detector.kind=psychic", "refinement.detector.kind", "allowed: channel_statistics, knowledge_map"),
        ("refinement.policy={kind: proactive, margin_s: 0}", "refinement.policy.margin_s", "greater than 0"),
        ("refinement.policy={kind: periodic, period_s: -1}", "refinement.policy.period_s", "greater than 0"),
        ("refinement.detector.spacing_m=0", "refinement.detector.spacing_m", "greater than 0"),
        ("refinement.policy={kind: reactive, margin_s: 2}", "refinement.policy",
         "margin_s: not a parameter of policy 'reactive' (its parameters: samples, steps)"),
        ("refinement.detector={kind: knowledge_map, spacing_m: 50}", "refinement.detector",
         "spacing_m: not a parameter of detector 'knowledge_map' (its parameters: cell_m, horizon_m, update_s)"),
        ("cloud.queue=lifo", "cloud.queue", "edf"),
        ("refinement.samples=0", "refinement.samples", "greater than or equal to 1"),
        ("refinement.steps=10000", "refinement.steps", "less than or equal to 5000"),
        ("refinement.lora_rank=65", "refinement.lora_rank", "less than or equal to 64"),
        ("refinement.upload_pilots=-1", "refinement.upload_pilots", "greater than or equal to 0"),
        ("cloud.backhaul.rate_bps=0", "cloud.backhaul.rate_bps", "greater than 0"),
        ("cloud.gpus=0", "cloud.gpus", "greater than or equal to 1"),
        ("refinement.latency=measured", "refinement.latency", "needs link.fidelity: full"),
        ("refinement.assumed={lm_infer: {}, finetune: {}, adapter: {}}", "refinement.assumed.label", "missing"),
        ("refinement.assumed={label: '', lm_infer: {}, finetune: {}, adapter: {}}", "refinement.assumed.label", "1"),
        ("refinement.assumed={label: x, lm_infer: {fixed_s: -1}, finetune: {}, adapter: {}}",
         "refinement.assumed.lm_infer.fixed_s", "greater than or equal to 0"),
    ],
)  # fmt: skip
def test_bad_refinement_settings_are_load_errors(override: str, field: str, words: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(DEFAULT_SCENARIO, overrides=[*ANALYTIC, override])
    (problem,) = info.value.problems
    assert f": {field}: " in problem and words in problem


def test_refinement_is_off_unless_a_scenario_asks() -> None:
    from ivsim.config.schema import RefinementSpec

    assert load_scenario(DEFAULT_SCENARIO.parent / "helsinki.yaml").refinement == RefinementSpec()
    assert load_scenario(DEFAULT_SCENARIO, overrides=ANALYTIC).refinement.policy.kind == "proactive"
    spec = RefinementSpec()
    assert (spec.policy.kind, spec.samples, spec.steps, spec.lora_rank, spec.upload_pilots) == ("never", 256, 100, 8, 0)
    assert (spec.request_bytes, spec.latency, spec.latency_profile, spec.assumed, spec.cache_dir) == (
        512, "profile", "cpu", None, None,
    )  # fmt: skip


def test_a_request_held_by_an_uplink_outage_goes_at_the_first_measurement_with_a_usable_uplink(
    line_roadmap: RoadMap,
) -> None:
    """The car drives towards its only cell; asked at 1 s in uplink outage, it sends once the uplink is usable."""
    from ivsim.refine.policies import Plan

    bss = [bs_at("a", 2000.0, 15.0)]
    radio = {"measurement_period_s": 0.5}
    probe = refine_sim(line_roadmap, [car("c", 0, 20)], bss, radio=radio, duration_s=120.0)
    probe._start()
    instants = np.arange(0.5, 120.0, 0.5)
    sinr = []
    for t in instants:  # the uplink SINR the radio finds at each measurement
        probe.env.run(until=t + 1e-6)
        sinr.append(float(probe.radio.sinr_db(np.array([0]), np.array([0]), uplink=True)[0][0]))
    sinr = np.array(sinr)
    threshold = float(sinr[1] + sinr[-1]) / 2  # outage at 1 s, usable before the end
    expected = float(instants[(instants >= 1.0) & (sinr >= threshold)][0])
    assert expected > 2.0

    sim = refine_sim(
        line_roadmap, [car("c", 0, 20)], bss, radio=radio, duration_s=120.0, link={"min_sinr_db": threshold}
    )
    bridge = sim.scene_names.index("bridge")

    def ask() -> Any:
        yield sim.env.timeout(1.0)
        sim.fleet[0]._send(Plan(bridge, 1.0, 100.0, 16, K))
        assert sim.fleet[0].waiting and not sim.cloud.can_send(0)

    sim.process(ask())
    sim.run()
    (req,) = rows(sim, "refine_request").itertuples()
    assert req.t_s == pytest.approx(expected) and req.sinr_db >= threshold
    assert not sim.fleet[0].waiting
