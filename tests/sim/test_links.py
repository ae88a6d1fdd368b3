"""Link layer: the analytic evaluator, the batching window, and the cells' frame scheduler."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import simpy

from ivsim.config.schema import LinkSpec
from ivsim.sim.engine import Simulation
from ivsim.sim.links import AnalyticLinkEvaluator, LinkBatcher, LinkEvaluator, TxBatch, TxResult, make_link_evaluator
from ivsim.world import RoadMap

from .conftest import bs_at, car, make_scenario

# ---------------------------------------------------------------------- helpers


def batch(sinr_db: Any, *, bandwidth_hz: Any = 20e6, size_bits: Any = 200_000, queue_s: Any = 0.0,
          deadline_s: Any = 0.1, vehicle: Any = None) -> TxBatch:  # fmt: skip
    sinr = np.atleast_1d(np.asarray(sinr_db, dtype=float))
    n = len(sinr)

    def full(v: Any, dtype: Any = float) -> np.ndarray:
        return np.broadcast_to(np.asarray(v, dtype=dtype), (n,)).copy()

    return TxBatch(
        vehicle=np.arange(n) if vehicle is None else np.asarray(vehicle),
        bs=np.zeros(n, dtype=int),
        scene=np.zeros(n, dtype=np.int16),
        uplink=np.zeros(n, dtype=bool),
        size_bits=full(size_bits, np.int64),
        bandwidth_hz=full(bandwidth_hz),
        queue_s=full(queue_s),
        sinr_db=sinr,
        snr_db=sinr.copy(),
        speed_mps=np.full(n, 10.0),
        carrier_hz=np.full(n, 3.5e9),
        deadline_s=full(deadline_s),
    )


def shannon_rate(bandwidth_hz: float, sinr_db: float, *, gap_db: float, se_max: float) -> float:
    return bandwidth_hz * min(math.log2(1 + 10 ** (sinr_db / 10) / 10 ** (gap_db / 10)), se_max)


# ---------------------------------------------------------------------- analytic evaluator


def test_rate_is_bandwidth_times_capped_shannon_with_gap() -> None:
    spec = LinkSpec(gap_db=3.0, max_spectral_efficiency=7.4, min_sinr_db=-6.0, processing_s=0.001)
    ev = AnalyticLinkEvaluator(spec)
    sinr = np.array([-6.0, -2.0, 0.0, 5.0, 12.5, 20.0, 40.0])
    bw = np.array([20e6, 10e6, 5e6, 20e6, 1e6, 20e6, 20e6])
    res = ev.evaluate(batch(sinr, bandwidth_hz=bw))
    want = [shannon_rate(b, s, gap_db=3.0, se_max=7.4) for b, s in zip(bw, sinr, strict=True)]
    np.testing.assert_allclose(res.rate_bps, want, rtol=1e-12)
    # hand check of one value: 0 dB, 3 dB gap -> log2(1 + 10**-0.3) bit/s/Hz
    assert res.rate_bps[2] == pytest.approx(5e6 * math.log2(1 + 10**-0.3), rel=1e-12)
    # 40 dB is capped at 7.4 bit/s/Hz
    assert res.rate_bps[-1] == pytest.approx(20e6 * 7.4, rel=1e-12)
    assert math.log2(1 + 10 ** (37 / 10)) > 7.4
    np.testing.assert_allclose(res.airtime_s, 200_000 / np.asarray(want), rtol=1e-12)
    np.testing.assert_allclose(res.delay_s, 0.0 + res.airtime_s + 0.001, rtol=1e-12)
    assert res.delivered[[3, 5, 6]].all()
    assert np.isnan(res.psnr_db).all() and np.isnan(res.ssim).all() and np.isnan(res.nmse_db).all()
    assert ev.name == "analytic"
    assert isinstance(ev, LinkEvaluator)


def test_gap_and_cap_follow_the_spec() -> None:
    sinr = np.array([10.0, 30.0])
    res = AnalyticLinkEvaluator(LinkSpec(gap_db=0.0, max_spectral_efficiency=5.0)).evaluate(batch(sinr))
    np.testing.assert_allclose(res.rate_bps, [20e6 * math.log2(1 + 10.0), 20e6 * 5.0], rtol=1e-12)


def test_outage_below_min_sinr() -> None:
    ev = AnalyticLinkEvaluator(LinkSpec(min_sinr_db=-6.0))
    res = ev.evaluate(batch([-6.0001, -6.0, -20.0, -np.inf]))
    assert res.delivered.tolist() == [False, True, False, False]
    assert list(res.drop_reason) == ["outage", None, "outage", "outage"]
    assert res.rate_bps[[0, 2, 3]].tolist() == [0.0, 0.0, 0.0]
    assert np.isnan(res.airtime_s[[0, 2, 3]]).all() and np.isnan(res.delay_s[[0, 2, 3]]).all()
    assert res.rate_bps[1] > 0  # exactly at the threshold is not an outage


def test_deadline_drop() -> None:
    ev = AnalyticLinkEvaluator(LinkSpec(gap_db=3.0, max_spectral_efficiency=7.4, processing_s=0.001))
    # 1 Mbit over 5 MHz at 10 dB: ~0.066 s on air
    rate = shannon_rate(5e6, 10.0, gap_db=3.0, se_max=7.4)
    air = 1_000_000 / rate
    queue = np.array([0.0, 0.02, 0.04, 0.0])
    deadline = np.array([0.1, 0.1, 0.1, air + 0.001])  # the last one is exactly on time
    res = ev.evaluate(batch([10.0] * 4, bandwidth_hz=5e6, size_bits=1_000_000, queue_s=queue, deadline_s=deadline))
    delay = queue + air + 0.001
    np.testing.assert_allclose(res.delay_s, delay, rtol=1e-12)
    want = delay <= deadline
    assert want.tolist() == [True, True, False, True]
    assert res.delivered.tolist() == want.tolist()
    assert list(res.drop_reason) == [None, None, "deadline", None]


def test_make_link_evaluator(default_scenario) -> None:  # noqa: ANN001
    assert isinstance(make_link_evaluator(default_scenario, seed=0), AnalyticLinkEvaluator)


def test_take_and_concat_round_trip() -> None:
    a, b = batch([1.0, 2.0], vehicle=[0, 1]), batch([3.0], vehicle=[7])
    merged = TxBatch.concat([a, b])
    assert len(merged) == 3
    assert merged.vehicle.tolist() == [0, 1, 7]
    assert merged.take(slice(2, 3)).sinr_db.tolist() == [3.0]
    assert TxBatch.concat([a]) is a


# ---------------------------------------------------------------------- batching window


class CountingEvaluator:
    """Wraps an evaluator and records every call (time and batch)."""

    name = "counting"

    def __init__(self, inner: LinkEvaluator, env: simpy.Environment | None = None) -> None:
        self.inner = inner
        self.env = env
        self.calls: list[tuple[float | None, TxBatch]] = []

    def evaluate(self, b: TxBatch) -> TxResult:
        self.calls.append((None if self.env is None else self.env.now, b))
        return self.inner.evaluate(b)


def test_batches_submitted_at_the_same_instant_share_one_call(env: simpy.Environment) -> None:
    ev = CountingEvaluator(AnalyticLinkEvaluator(LinkSpec()), env)
    batcher = LinkBatcher(env, ev)
    got: dict[str, tuple[float, TxResult]] = {}

    def submitter(name: str, at: float, b: TxBatch) -> Any:
        yield env.timeout(at)
        res = yield batcher.submit(b)
        got[name] = (env.now, res)

    b1 = batch([0.0, 10.0], vehicle=[0, 1])
    b2 = batch([20.0], vehicle=[2])
    b3 = batch([5.0, 6.0, 7.0], vehicle=[3, 4, 5])
    b4 = batch([30.0], vehicle=[6])
    for name, at, b in (("b1", 1.0, b1), ("b2", 1.0, b2), ("b3", 1.0, b3), ("b4", 2.0, b4)):
        env.process(submitter(name, at, b))
    env.run()
    assert len(ev.calls) == 2 == batcher.calls
    assert batcher.requests == 7
    assert ev.calls[0][0] == 1.0 and ev.calls[0][1].vehicle.tolist() == [0, 1, 2, 3, 4, 5]
    assert ev.calls[1][0] == 2.0 and ev.calls[1][1].vehicle.tolist() == [6]
    # each submitter gets its own slice, at the instant it submitted
    alone = AnalyticLinkEvaluator(LinkSpec())
    for name, b in (("b1", b1), ("b2", b2), ("b3", b3), ("b4", b4)):
        t, res = got[name]
        assert t == {"b4": 2.0}.get(name, 1.0)
        assert len(res.rate_bps) == len(b)
        np.testing.assert_array_equal(res.rate_bps, alone.evaluate(b).rate_bps)


def test_a_window_merges_batches_submitted_within_it(env: simpy.Environment) -> None:
    ev = CountingEvaluator(AnalyticLinkEvaluator(LinkSpec()), env)
    batcher = LinkBatcher(env, ev, window_s=0.5)
    got: dict[int, float] = {}

    def submitter(k: int, at: float) -> Any:
        yield env.timeout(at)
        res = yield batcher.submit(batch([10.0], vehicle=[k]))
        assert len(res.rate_bps) == 1
        got[k] = env.now

    for k, at in enumerate([0.0, 0.2, 0.4, 0.6]):
        env.process(submitter(k, at))
    env.run()
    assert [c[1].vehicle.tolist() for c in ev.calls] == [[0, 1, 2], [3]]
    assert got == {0: 0.5, 1: 0.5, 2: 0.5, 3: 1.1}


# ---------------------------------------------------------------------- cells and the link layer together


def run_line(roadmap: RoadMap, changes: dict[str, Any], *, evaluator: Any = None) -> tuple[Simulation, pd.DataFrame]:
    sim = Simulation(make_scenario(changes), roadmap=roadmap, link_evaluator=evaluator)
    sim.run()
    df = sim.log.to_pandas()
    return sim, df[df.event == "tx"].reset_index(drop=True)


@pytest.mark.parametrize("k", [1, 3, 4])
def test_bandwidth_is_split_among_the_vehicles_of_a_cell(line_roadmap: RoadMap, k: int) -> None:
    changes = {
        "duration_s": 10,
        "base_stations": [bs_at("a", 0.0, 30.0, bandwidth_hz=40e6)],
        "vehicles": [car(f"c{n}", 0, 20) for n in range(k)],
    }
    _, tx = run_line(line_roadmap, changes)
    assert len(tx) == k * 10 * 5
    assert tx.groupby("t_s").size().eq(k).all()
    np.testing.assert_array_equal(tx.bandwidth_hz.to_numpy(), np.full(len(tx), 40e6 / k))
    # same place, same bandwidth: the same SINR and the rate of B/K
    spec = LinkSpec()
    want = [shannon_rate(40e6 / k, s, gap_db=spec.gap_db, se_max=spec.max_spectral_efficiency) for s in tx.sinr_db]
    np.testing.assert_allclose(tx.rate_bps.to_numpy(), want, rtol=1e-12)


def test_bandwidth_split_counts_only_the_cells_own_vehicles(line_roadmap: RoadMap) -> None:
    changes = {
        "duration_s": 5,
        "base_stations": [bs_at("a", 0.0, 30.0), bs_at("b", 2000.0, 30.0)],
        "vehicles": [car("w0", 0, 20), car("w1", 0, 20), car("w2", 0, 20), car("e0", 20, 0)],
        "radio": {"handover": {"hysteresis_db": 100}},
    }
    _, tx = run_line(line_roadmap, changes)
    bw = tx.groupby("bs", observed=True).bandwidth_hz.unique()
    assert list(bw["a"]) == [20e6 / 3]
    assert list(bw["b"]) == [20e6]


def test_all_cells_of_a_frame_instant_go_to_the_evaluator_in_one_call(line_roadmap: RoadMap) -> None:
    changes = {
        "duration_s": 6,
        "base_stations": [bs_at("a", 0.0, 30.0), bs_at("b", 2000.0, 30.0), bs_at("idle", 1000.0, 5000.0)],
        "vehicles": [car("w", 0, 20), car("e", 20, 0)],
    }
    sim = Simulation(make_scenario(changes), roadmap=line_roadmap)
    ev = CountingEvaluator(AnalyticLinkEvaluator(sim.scenario.link), sim.env)
    sim.links.evaluator = ev
    sim.run()
    tx = sim.log.to_pandas().query("event == 'tx'")
    assert sorted(set(tx.bs)) == ["a", "b"]
    instants = sorted(set(tx.t_s))
    assert len(ev.calls) == len(instants) == 6 * 5
    assert [t for t, _ in ev.calls] == pytest.approx(instants)
    for _, b in ev.calls:
        assert sorted(b.vehicle.tolist()) == [0, 1]
        assert sorted(b.bs.tolist()) == [0, 1]


class FixedAirtime:
    """Every frame takes ``airtime_s`` on air: isolates the cell's FIFO scheduler."""

    name = "fixed"

    def __init__(self, airtime_s: float) -> None:
        self.airtime_s = airtime_s

    def evaluate(self, b: TxBatch) -> TxResult:
        n = len(b)
        air = np.full(n, self.airtime_s)
        delay = b.queue_s + air
        late = delay > b.deadline_s
        reason = np.full(n, None, dtype=object)
        reason[late] = "deadline"
        nan = np.full(n, np.nan)
        return TxResult(b.size_bits / air, air, delay, ~late, reason, nan, nan.copy(), nan.copy())


def test_batches_queue_first_come_first_served(line_roadmap: RoadMap) -> None:
    """Frames every 0.2 s, 0.3 s on air: batch k waits 0.1 k s until the deadline cuts occupancy."""
    changes = {
        "duration_s": 3,
        "base_stations": [bs_at("a", 0.0, 30.0)],
        "vehicles": [car("c", 0, 20)],
        "traffic": {"deadline_s": 1.0},
    }
    _, tx = run_line(line_roadmap, changes, evaluator=FixedAirtime(0.3))
    q = tx.queue_s.to_numpy()
    # busy_until = t + queue + min(0.3, deadline - queue)
    busy, want = 0.0, []
    for k in range(len(tx)):
        t = 0.2 * k
        queue = max(0.0, busy - t)
        want.append(queue)
        busy = t + queue + min(0.3, 1.0 - queue)
    np.testing.assert_allclose(q, want, atol=1e-12)
    assert q[:5].tolist() == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    want = np.asarray(want)
    late = want + 0.3 > 1.0
    in_flight = ~late & (tx.t_s.to_numpy() + want + 0.3 > 3.0)
    assert late.any() and (~late).any()
    np.testing.assert_array_equal(tx.delivered.to_numpy(dtype=bool), ~late & ~in_flight)
    reason = tx.drop_reason.astype(object).to_numpy()
    assert (reason[late] == "deadline").all() and (reason[in_flight] == "in_flight").all()


def test_frames_ending_after_the_run_are_in_flight(line_roadmap: RoadMap) -> None:
    changes = {
        "duration_s": 2,
        "base_stations": [bs_at("a", 0.0, 30.0)],
        "vehicles": [car("c", 0, 20)],
        "traffic": {"deadline_s": 1.0, "fps": 5},
    }
    _, tx = run_line(line_roadmap, changes, evaluator=FixedAirtime(0.15))
    # frames at 0, 0.2, ..., 1.8; the one at 1.8 ends at 1.95 < 2, none is in flight
    assert tx.delivered.all()
    _, tx = run_line(line_roadmap, changes, evaluator=FixedAirtime(0.25))
    # queueing builds up: frame k ends at 0.25 (k + 1); those ending after 2 s are in flight
    ends = 0.25 * (np.arange(len(tx)) + 1)
    np.testing.assert_allclose(tx.t_s + tx.delay_s, ends, atol=1e-12)
    in_flight = (tx.drop_reason.astype(object) == "in_flight").to_numpy()
    np.testing.assert_array_equal(in_flight, ends > 2.0)
    assert in_flight.any() and (~in_flight).any()
    assert not tx.delivered[in_flight].any()
