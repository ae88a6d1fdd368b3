"""The cloud node: FIFO queue over a GPU pool, backhaul transfer times, job rows and results.

A tiny scenario (one vehicle on the straight road, one or two base stations) hosts the cloud;
jobs are submitted from a process started before the run. Times are chosen exactly
representable in binary (service 0.25 s, rates that divide evenly) so waits compare exactly.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest

from ivsim.sim.cloud import Job, JobResult
from ivsim.sim.engine import Simulation
from ivsim.world import RoadMap

from .conftest import bs_at, car, make_scenario

S = 0.25  # service time


def cloud_sim(
    roadmap: RoadMap, *, gpus: int = 1, rate_bps: float = 1e9, latency_s: float = 0.0, bs_backhaul: dict | None = None
) -> Simulation:
    bss = [bs_at("a", 0.0, 30.0), bs_at("b", 2000.0, 30.0, **({"backhaul": bs_backhaul} if bs_backhaul else {}))]
    changes = {
        "duration_s": 20,
        "traffic": {"fps": 1},
        "base_stations": bss,
        "vehicles": [car("c", 0, 20)],
        "cloud": {"gpus": gpus, "backhaul": {"rate_bps": rate_bps, "latency_s": latency_s}},
    }
    return Simulation(make_scenario(changes), roadmap=roadmap)


def submit_all(sim: Simulation, jobs: list[tuple[float, Job]]) -> list[JobResult]:
    """Submit each ``(t_s, job)`` at its time (in list order within an instant); collect results in job order."""
    results: dict[str, JobResult] = {}

    def waiter(proc: Any) -> Any:
        res = yield proc
        results[res.job.job_id] = res

    def submitter() -> Any:
        for t_s, job in jobs:
            if t_s > sim.env.now:
                yield sim.env.timeout(t_s - sim.env.now)
            sim.process(waiter(sim.cloud.submit(job)))

    sim.process(submitter())
    sim.run()
    assert len(results) == len(jobs)
    return [results[job.job_id] for _, job in jobs]


def job_rows(sim: Simulation, event: str) -> pd.DataFrame:
    df = sim.log.to_pandas()
    return df[df.event == event].reset_index(drop=True)


def jobs_at_zero(n: int, *, service_s: float = S, **kw: Any) -> list[tuple[float, Job]]:
    return [(0.0, Job(f"j{k}", "refine", 0, service_s, vehicle="c", **kw)) for k in range(n)]


# ---------------------------------------------------------------------- queueing


@pytest.mark.parametrize("latency_s", [0.0, 0.005])
def test_one_gpu_job_k_waits_k_services(line_roadmap: RoadMap, latency_s: float) -> None:
    n = 6
    sim = cloud_sim(line_roadmap, gpus=1, latency_s=latency_s)
    results = submit_all(sim, jobs_at_zero(n))
    for k, res in enumerate(results):
        assert res.submitted_s == 0.0
        assert res.queued_s == latency_s  # zero bits: the latency only
        assert res.wait_s == pytest.approx(k * S, abs=1e-12)
        assert res.started_s == pytest.approx(latency_s + k * S, abs=1e-12)
        assert res.finished_s == pytest.approx(latency_s + (k + 1) * S, abs=1e-12)
        assert res.returned_s == pytest.approx(res.finished_s + latency_s, abs=1e-12)
    if latency_s == 0.0:  # exactly representable: exact equality
        assert [r.wait_s for r in results] == [k * S for k in range(n)]
    start = job_rows(sim, "job_start")
    done = job_rows(sim, "job_done")
    assert list(start.job_id) == [f"j{k}" for k in range(n)]  # FIFO
    assert list(done.job_id) == [f"j{k}" for k in range(n)]
    for rows in (start, done):
        assert rows.wait_s.tolist() == pytest.approx([k * S for k in range(n)], abs=1e-12)
    assert start.t_s.tolist() == pytest.approx([latency_s + k * S for k in range(n)], abs=1e-12)
    # the row is written when the result is back at the base station (zero bits: after the latency)
    assert done.t_s.tolist() == pytest.approx([2 * latency_s + (k + 1) * S for k in range(n)], abs=1e-12)
    assert done.delay_s.tolist() == pytest.approx([r.returned_s - r.submitted_s for r in results], abs=1e-12)
    assert done.service_s.tolist() == [S] * n
    assert set(done.job_kind) == {"refine"} and set(done.vehicle) == {"c"}
    assert sim.cloud.jobs_done == n


@pytest.mark.parametrize("gpus", [2, 3])
def test_several_gpus_serve_in_waves(line_roadmap: RoadMap, gpus: int) -> None:
    n = 7
    sim = cloud_sim(line_roadmap, gpus=gpus)
    results = submit_all(sim, jobs_at_zero(n))
    # job k starts when the (k // gpus)-th wave ends: wait = ceil((k + 1) / gpus - 1) * S
    want = [math.ceil((k + 1) / gpus - 1) * S for k in range(n)]
    assert [r.wait_s for r in results] == want
    assert job_rows(sim, "job_start").wait_s.tolist() == want
    assert job_rows(sim, "job_done").wait_s.tolist() == want
    # never more than `gpus` jobs in service at once
    for r in results:
        busy = sum(1 for o in results if o.started_s <= r.started_s < o.finished_s)
        assert busy <= gpus


def test_fifo_by_arrival_with_mixed_service_times(line_roadmap: RoadMap) -> None:
    sim = cloud_sim(line_roadmap, gpus=1)
    jobs = [
        (0.0, Job("long", "refine", 0, 1.0)),
        (0.25, Job("short1", "refine", 0, 0.125)),
        (0.5, Job("short2", "refine", 0, 0.125)),
        (0.5, Job("short3", "refine", 0, 0.125)),
    ]
    results = submit_all(sim, jobs)
    assert [r.started_s for r in results] == [0.0, 1.0, 1.125, 1.25]
    assert [r.wait_s for r in results] == [0.0, 0.75, 0.625, 0.75]
    assert list(job_rows(sim, "job_start").job_id) == ["long", "short1", "short2", "short3"]


def test_queue_len_counts_the_jobs_waiting(line_roadmap: RoadMap) -> None:
    n = 5
    sim = cloud_sim(line_roadmap, gpus=1)
    submit_all(sim, jobs_at_zero(n))
    queued = job_rows(sim, "job_queued")
    # job 0 goes straight to the GPU; job k >= 1 finds jobs 1 .. k-1 waiting
    assert queued.queue_len.tolist() == [0, 0, 1, 2, 3]
    # job 0 starts before the others have arrived (same instant, later events); when job k >= 1
    # starts, jobs k+1 .. n-1 are still waiting
    assert job_rows(sim, "job_start").queue_len.tolist() == [0, 3, 2, 1, 0]


def test_idle_cloud_starts_a_job_at_once(line_roadmap: RoadMap) -> None:
    sim = cloud_sim(line_roadmap, gpus=1)
    jobs = [(0.0, Job("a", "refine", 0, S)), (5.0, Job("b", "refine", 0, S))]
    a, b = submit_all(sim, jobs)
    assert (a.wait_s, b.wait_s) == (0.0, 0.0)
    assert b.started_s == 5.0


# ---------------------------------------------------------------------- backhaul


def test_transfer_time_is_latency_plus_bits_over_rate(line_roadmap: RoadMap) -> None:
    rate, lat = 2e9, 0.005
    up, down = 3_000_000, 1_000_000
    sim = cloud_sim(line_roadmap, rate_bps=rate, latency_s=lat)
    (res,) = submit_all(sim, [(1.0, Job("j", "refine", 0, S, upload_bits=up, download_bits=down, vehicle="c"))])
    assert res.queued_s - res.submitted_s == pytest.approx(lat + up / rate, rel=1e-12)
    assert res.started_s == res.queued_s
    assert res.finished_s - res.started_s == pytest.approx(S, rel=1e-12)
    assert res.returned_s - res.finished_s == pytest.approx(lat + down / rate, rel=1e-12)
    (queued,) = job_rows(sim, "job_queued").itertuples()
    assert queued.t_s == pytest.approx(1.0 + lat + up / rate, rel=1e-12)
    assert queued.upload_bits == up and queued.bs == "a"
    (done,) = job_rows(sim, "job_done").itertuples()
    assert done.download_bits == down
    assert done.t_s == res.returned_s


def test_done_row_delay_runs_from_submission_to_the_result_back_at_the_bs(line_roadmap: RoadMap) -> None:
    """The module documents ``delay_s`` of ``job_done`` as submission to result back at the base station."""
    rate, lat = 1e9, 0.005
    sim = cloud_sim(line_roadmap, rate_bps=rate, latency_s=lat)
    (res,) = submit_all(sim, [(0.0, Job("j", "refine", 0, S, upload_bits=2_000_000, download_bits=4_000_000))])
    (done,) = job_rows(sim, "job_done").itertuples()
    assert done.delay_s == pytest.approx(res.returned_s - res.submitted_s, rel=1e-12)
    assert done.delay_s == pytest.approx(lat + 2e-3 + S + lat + 4e-3, rel=1e-12)


def test_one_transfer_at_a_time_per_link(line_roadmap: RoadMap) -> None:
    rate, lat, bits = 1e9, 0.005, 10_000_000  # 10 ms per transfer
    sim = cloud_sim(line_roadmap, rate_bps=rate, latency_s=lat)
    jobs = [(0.0, Job(f"j{k}", "refine", 0, S, upload_bits=bits)) for k in range(3)]
    jobs.append((0.0, Job("other_bs", "refine", 1, S, upload_bits=bits)))  # b's link is free
    results = submit_all(sim, jobs)
    for k in range(3):
        assert results[k].queued_s == pytest.approx((k + 1) * bits / rate + lat, rel=1e-12)
    assert results[3].queued_s == pytest.approx(bits / rate + lat, rel=1e-12)


def test_a_base_station_backhaul_overrides_the_cloud_default(line_roadmap: RoadMap) -> None:
    sim = cloud_sim(line_roadmap, rate_bps=1e9, latency_s=0.005, bs_backhaul={"rate_bps": 1e8, "latency_s": 0.02})
    bits = 1_000_000
    a, b = submit_all(sim, [(0.0, Job("a", "x", 0, S, upload_bits=bits)), (0.0, Job("b", "x", 1, S, upload_bits=bits))])
    assert a.queued_s == pytest.approx(0.005 + bits / 1e9, rel=1e-12)
    assert b.queued_s == pytest.approx(0.02 + bits / 1e8, rel=1e-12)
    assert job_rows(sim, "job_queued").set_index("job_id").bs.to_dict() == {"a": "a", "b": "b"}
