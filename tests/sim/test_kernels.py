"""The compiled loops of :mod:`ivsim.sim.kernels` against the numpy formulas they replace."""

from __future__ import annotations

import numpy as np
import pytest

from ivsim.sim.kernels import a3_step, interp_positions, measure_rows, sinr_ratios, trip_stretches, uplink_interference
from ivsim.sim.pathloss import PathlossCoefficients, evaluate_pathloss


def _store(rng: np.random.Generator, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    step = rng.uniform(0.0, 30.0, n)
    step[rng.integers(1, n, 20)] = 0.0  # repeated coordinates (the gap points of the store are not, but may be)
    g = np.cumsum(step)
    z = rng.normal(0, 500, n) + 1j * rng.normal(0, 500, n)
    return g, z


def test_interp_positions_match_np_interp_as_vehicles_move_and_jump() -> None:
    rng = np.random.default_rng(0)
    g, z = _store(rng)
    m = 50
    base = np.zeros(m)
    s0 = rng.uniform(g[0] - 20, g[-1] + 20, m)  # before the first point and past the last too
    speed = rng.uniform(0, 15, m)
    t0 = np.zeros(m)
    end = np.full(m, np.inf)
    seg = np.full(m, -1, dtype=np.intp)
    ok = np.zeros(m, dtype=bool)
    x, y = np.zeros(m), np.zeros(m)
    idx = np.arange(m, dtype=np.intp)
    for t in (0.0, 0.5, 3.0, 40.0, 41.0):
        ok[:] = False
        interp_positions(idx, t, base, s0, speed, t0, end, g, z, len(g), seg, ok, x, y)
        want = np.interp(s0 + speed * t, g, z)
        np.testing.assert_allclose(x, want.real, rtol=0, atol=1e-9)
        np.testing.assert_allclose(y, want.imag, rtol=0, atol=1e-9)
        assert ok.all()
    s0[:] = rng.uniform(g[0], g[-1], m)  # new trips behind the last search: found again from scratch
    ok[:] = False
    interp_positions(idx, 41.0, base, s0, speed, t0, end, g, z, len(g), seg, ok, x, y)
    want = np.interp(s0 + speed * 41.0, g, z)
    np.testing.assert_allclose(x + 1j * y, want, rtol=0, atol=1e-9)


def test_interp_positions_clamp_to_the_stretch_end_skip_known_and_nan_off_the_road() -> None:
    g = np.array([0.0, 10.0, 20.0])
    z = np.array([0.0, 10.0, 10.0 + 10.0j])
    ok = np.array([False, True, False])
    x, y = np.full(3, -1.0), np.full(3, -1.0)
    base = np.array([0.0, 0.0, np.nan])
    interp_positions(
        np.arange(3, dtype=np.intp), 10.0, base, np.zeros(3), np.full(3, 5.0), np.zeros(3), np.full(3, 15.0),
        g, z, 3, np.full(3, -1, dtype=np.intp), ok, x, y,
    )  # fmt: skip
    assert (x[0], y[0]) == (10.0, 5.0)  # 50 m clamped to the stretch end at 15 m
    assert (x[1], y[1]) == (-1.0, -1.0)  # already known at this instant
    assert np.isnan(x[2]) and np.isnan(y[2]) and ok.all()


@pytest.mark.parametrize(("model", "los"), [("uma", False), ("umi", True), ("rma", True), ("rma", False)])
@pytest.mark.parametrize("m", [30, 1, 4])  # many rows (numpy's log10 and exp) and a few (one compiled pass)
def test_measure_rows_match_the_numpy_link_budget(model: str, los: bool, m: int) -> None:
    rng = np.random.default_rng(1)
    n_bs = 4
    carrier = np.array([3.5e9, 3.5e9, 2.1e9, 28e9])
    height = np.array([25.0, 30.0, 10.0, 35.0])
    coef = np.stack([
        PathlossCoefficients.of(model, los, carrier_hz=carrier, bs_height_m=height, ue_height_m=1.5).as_array(),
        PathlossCoefficients.of("umi", False, carrier_hz=carrier, bs_height_m=height, ue_height_m=1.5).as_array(),
    ])  # fmt: skip
    bs_x, bs_y = rng.uniform(-500, 500, n_bs), rng.uniform(-500, 500, n_bs)
    x, y = rng.uniform(-2000, 2000, m), rng.uniform(-2000, 2000, m)
    s = rng.uniform(0, 100, m)
    scene = rng.integers(0, 2, m).astype(np.int16)
    w = rng.standard_normal((m, n_bs))
    dcorr, sigma, extra = np.array([50.0, 13.0]), np.array([6.0, 7.8]), np.array([0.0, 3.0])
    gain_off, rsrp_off = rng.uniform(0, 10, n_bs), rng.uniform(10, 20, n_bs)
    n = m + 5  # rows of vehicles not measured stay as they were
    z0 = rng.standard_normal((n, n_bs))
    at = np.where(rng.random(n) < 0.3, np.nan, rng.uniform(0, 100, n))
    z, shadow_at = z0.copy(), at.copy()
    gain, rsrp, lin = np.zeros((n, n_bs)), np.zeros((n, n_bs)), np.zeros((n, n_bs))
    idx = rng.permutation(n)[:m].astype(np.intp)
    measure_rows(idx, x, y, s, scene, w, z, shadow_at, dcorr, sigma, extra, coef, bs_x, bs_y, gain_off, rsrp_off,
                 gain, rsrp, lin)  # fmt: skip

    last = at[idx]
    rho = np.where(np.isnan(last), 0.0, np.exp(-np.abs(s - np.nan_to_num(last)) / dcorr[scene]))[:, None]
    want_z = rho * z0[idx] + np.sqrt(1 - rho**2) * w
    d2d = np.hypot(x[:, None] - bs_x, y[:, None] - bs_y)
    pl = evaluate_pathloss(d2d, *np.take(coef, scene.astype(np.intp), axis=0).transpose(1, 0, 2))
    want_gain = gain_off - (pl + extra[scene][:, None] + sigma[scene][:, None] * want_z)
    np.testing.assert_allclose(z[idx], want_z, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gain[idx], want_gain, rtol=1e-12)
    np.testing.assert_allclose(rsrp[idx], rsrp_off + want_gain, rtol=1e-12)
    np.testing.assert_allclose(lin[idx], 10 ** (want_gain / 10), rtol=1e-12)
    np.testing.assert_array_equal(shadow_at[idx], s)
    rest = np.setdiff1d(np.arange(n), idx)
    np.testing.assert_array_equal(z[rest], z0[rest])
    assert (gain[rest] == 0).all()


def _a3_numpy(idx, now, raw, prev_l3, l3_a, serving, target, since, hyst, ttt):
    """The A3 step in numpy (as the radio network computed it before the compiled loop)."""
    prev = prev_l3[idx]
    rsrp = np.where(np.isnan(prev), raw[idx], (1.0 - l3_a) * prev + l3_a * raw[idx])
    prev_l3[idx] = rsrp
    own = rsrp[np.arange(len(idx)), serving[idx]]
    masked = rsrp.copy()
    masked[np.arange(len(idx)), serving[idx]] = -np.inf
    best = np.argmax(masked, axis=1)
    cond = masked[np.arange(len(idx)), best] > own + hyst
    restart = cond & (target[idx] != best)
    since[idx[restart]] = now
    target[idx] = np.where(cond, best, -1)
    fire = cond & ~restart & (now - since[idx] >= ttt - 1e-9) if ttt > 0 else cond
    return fire, best


@pytest.mark.parametrize("ttt", [0.0, 0.5])
def test_a3_step_matches_numpy_over_many_periods(ttt: float) -> None:
    rng = np.random.default_rng(2)
    n, n_bs = 40, 3
    state = {
        "l3": np.full((n, n_bs), np.nan), "serving": rng.integers(0, n_bs, n).astype(np.int32),
        "target": np.full(n, -1, dtype=np.int32), "since": np.zeros(n),
    }  # fmt: skip
    ref = {k: v.copy() for k, v in state.items()}
    fired = 0
    for k in range(1, 30):
        raw = rng.normal(-90, 6, (n, n_bs))
        idx = np.sort(rng.permutation(n)[: n - 5]).astype(np.intp)
        now = 0.5 * k
        fire, best = a3_step(
            idx, now, raw, state["l3"], 0.5, state["serving"], state["target"], state["since"], 3.0, ttt
        )
        want_fire, want_best = _a3_numpy(
            idx, now, raw, ref["l3"], 0.5, ref["serving"], ref["target"], ref["since"], 3.0, ttt
        )
        np.testing.assert_array_equal(fire, want_fire)
        np.testing.assert_array_equal(best[fire], want_best[fire])
        for key in ("l3", "target", "since"):
            np.testing.assert_allclose(state[key], ref[key], rtol=1e-12)
        for s in (state, ref):
            s["serving"][idx[fire]] = best[fire]
            s["target"][idx[fire]] = -1
        fired += int(fire.sum())
    assert fired > 0


def test_uplink_interference_is_the_load_weighted_mean_of_other_cells_vehicles() -> None:
    rng = np.random.default_rng(3)
    n, n_bs = 60, 4
    gain_lin = 10 ** (rng.uniform(-140, -80, (n, n_bs)) / 10)
    serving = rng.integers(0, n_bs - 1, n).astype(np.int32)  # the last cell serves no one
    idx = np.sort(rng.permutation(n)[:50]).astype(np.intp)
    load = np.array([0.5, 0.0, 1.0, 0.7])
    same = np.array([[0, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 0]], dtype=bool)
    out = uplink_interference(idx, serving, gain_lin, 0.2, load, same)
    want = np.zeros(n_bs)
    for b in range(n_bs):
        for c in range(n_bs):
            members = idx[serving[idx] == c]
            if same[b, c] and len(members) and load[c] > 0:
                want[b] += load[c] * np.mean(0.2 * gain_lin[members, b])
    np.testing.assert_allclose(out, want, rtol=1e-12)


def test_sinr_ratios_downlink_and_uplink_match_the_numpy_formulas() -> None:
    rng = np.random.default_rng(4)
    n, n_bs = 30, 4
    gain_lin = 10 ** (rng.uniform(-140, -80, (n, n_bs)) / 10)
    idx = rng.permutation(n)[:20].astype(np.intp)
    bs = rng.integers(0, n_bs, 20).astype(np.intp)
    p_tx, noise, load = 10 ** (rng.uniform(30, 46, n_bs) / 10), rng.uniform(1e-11, 1e-10, n_bs), rng.random(n_bs)
    same = rng.random((n_bs, n_bs)) < 0.7
    np.fill_diagonal(same, False)
    gain = gain_lin[idx]
    own = gain[np.arange(20), bs]
    interf = (p_tx[None, :] * gain * (load[None, :] * same[bs])).sum(axis=1)
    si, sn = sinr_ratios(idx, bs, gain_lin, p_tx, noise, np.empty(0), p_tx, load, same)
    np.testing.assert_allclose(si, p_tx[bs] * own / (noise[bs] + interf), rtol=1e-12)
    np.testing.assert_allclose(sn, p_tx[bs] * own / noise[bs], rtol=1e-12)
    held = rng.uniform(1e-12, 1e-9, n_bs)  # uplink: the interference each cell holds
    si, sn = sinr_ratios(idx, bs, gain_lin, np.full(n_bs, 0.2), noise, held, p_tx, load, same)
    np.testing.assert_allclose(si, 0.2 * own / (noise[bs] + held[bs]), rtol=1e-12)
    np.testing.assert_allclose(sn, 0.2 * own / noise[bs], rtol=1e-12)


def test_trip_stretches_match_the_numpy_split_and_cumsum() -> None:
    rng = np.random.default_rng(4)
    speed_mps = rng.choice([5.0, 8.3, 13.9], 300)
    edge_scene = rng.choice([0, 1, 2], 300).astype(np.int8)
    for trial in range(20):
        n = int(rng.integers(1, 60))
        edges = rng.integers(0, 300, n)
        edges[rng.random(n) < 0.4] = edges[0]  # runs of equal speed and scene
        length = rng.uniform(0, 80, n)
        length[rng.random(n) < 0.1] = 0.0
        end = np.cumsum(length)
        start = np.concatenate(([0.0], end[:-1]))
        factor, t_s = float(rng.uniform(0.8, 1.2)), float(rng.uniform(0, 1000))
        a, b, v, sc, begins = trip_stretches(edges, speed_mps, factor, edge_scene, start, end, t_s)
        speed, scene = speed_mps[edges] * factor, edge_scene[edges]  # the numpy split the kernel replaced
        change = np.flatnonzero((np.diff(speed) != 0) | (np.diff(scene) != 0)) + 1
        starts, ends = np.concatenate(([0], change)), np.concatenate((change, [n]))
        np.testing.assert_array_equal(a, start[starts])
        np.testing.assert_array_equal(b, end[ends - 1])
        np.testing.assert_array_equal(v, speed[starts])
        np.testing.assert_array_equal(sc, scene[starts])
        want = t_s + np.concatenate(([0.0], np.cumsum((end[ends - 1] - start[starts]) / speed[starts])[:-1]))
        np.testing.assert_array_equal(begins, want)  # bit for bit: the trip schedule the log's times come from
        assert len(set(zip(v[1:] == v[:-1], sc[1:] == sc[:-1], strict=True)) & {(True, True)}) == 0
