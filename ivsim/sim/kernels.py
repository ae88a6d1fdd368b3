"""Compiled loops of the fast core (numba): a pass or two over the vehicles where numpy needs dozens.

The radio network measures every vehicle towards every base station twice a second, and the
vehicle table interpolates every vehicle's position at each instant someone reads it. In numpy
each step of these is a separate pass over a ``(vehicle, base station)`` array (about 40 array
operations per measurement, each with its own temporary); these kernels do the same arithmetic
in loops over the vehicles, leaving to numpy only what it vectorises better (``log10`` and ``exp``
of whole arrays). They take and update plain arrays in place, draw no random numbers (the caller
passes the normal draws of its own stream) and hold no state.

What each computes is documented where it is used: :meth:`ivsim.sim.radio.RadioNetwork.measure`,
:meth:`ivsim.sim.radio.RadioNetwork.run` (A3), :meth:`ivsim.sim.radio.RadioNetwork.sinr_db`,
:meth:`ivsim.sim.mobility.VehicleTable.positions` and a trip's stretches (:mod:`ivsim.sim.vehicle`).
The formulas are the numpy ones of :func:`ivsim.sim.pathloss.evaluate_pathloss`, ``np.interp`` and
``np.cumsum``; ``tests/sim/test_kernels.py`` compares them.

Compiled on first use and cached beside this file (numba's ``cache=True``; a read-only install
falls back to numba's user cache folder).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["a3_step", "interp_positions", "measure_rows", "sinr_ratios", "trip_stretches", "uplink_interference"]

_LN10_10 = math.log(10.0) / 10.0


@njit(cache=True, nogil=True)
def interp_positions(idx, t_s, base_m, s0_m, speed_mps, t0_s, edge_end_m, g, z, n, seg, ok, out_x, out_y):
    """Fill ``out_x/out_y[i]`` for the vehicles ``i`` in ``idx`` not yet ``ok`` at ``t_s``; mark them ``ok``.

    A vehicle's store coordinate is ``base_m + min(s0_m + speed_mps (t_s - t0_s), edge_end_m)``;
    its position is the store polyline ``(g[:n], z[:n])`` there, interpolated as ``np.interp`` does.
    ``seg[i]`` is where the vehicle's last search ended (a store index, -1: unknown): vehicles move
    forward, so the search steps on from there (a binary search when it cannot).
    """
    for r in range(idx.shape[0]):
        i = idx[r]
        if ok[i]:
            continue
        ok[i] = True
        s = s0_m[i] + speed_mps[i] * (t_s - t0_s[i])
        s = min(s, edge_end_m[i])
        q = base_m[i] + s
        if math.isnan(q) or n == 0:  # not on the road since the store was made again
            out_x[i] = np.nan
            out_y[i] = np.nan
            continue
        j = seg[i]
        if j < 0 or j >= n or g[j] > q:
            lo, hi = 0, n  # j: the last point at or before q (-1: none)
            while lo < hi:
                mid = (lo + hi) >> 1
                if g[mid] <= q:
                    lo = mid + 1
                else:
                    hi = mid
            j = lo - 1
        while j + 1 < n and g[j + 1] <= q:
            j += 1
        seg[i] = j
        if j < 0:
            zq = z[0]
        elif j >= n - 1:
            zq = z[n - 1]
        else:
            dg = g[j + 1] - g[j]
            xr = (z[j + 1].real - z[j].real) / dg * (q - g[j]) + z[j].real
            yi = (z[j + 1].imag - z[j].imag) / dg * (q - g[j]) + z[j].imag
            zq = complex(xr, yi)
        out_x[i] = zq.real
        out_y[i] = zq.imag


def measure_rows(
    idx, x, y, s, scene, w,
    shadow_z, shadow_at_m,
    dcorr_m, sigma_db, extra_db, pl_coef,
    bs_x, bs_y, gain_offset_db, rsrp_offset_dbm,
    gain_db, rsrp_dbm, gain_lin,
):  # fmt: skip
    """Update shadowing, gains and RSRP of vehicles ``idx`` (row ``r`` of the inputs is vehicle ``idx[r]``).

    Inputs by row: positions ``x, y``, route distance ``s``, ``scene``, normal draws ``w[r, bs]``.
    State by vehicle: ``shadow_z[i, bs]`` and ``shadow_at_m[i]`` (where it was last updated, NaN: new
    trip). Per scene: decorrelation distance, shadowing sigma, extra loss, and ``pl_coef[scene, field, bs]``
    (:class:`~ivsim.sim.pathloss.PathlossCoefficients` fields in their ``FIELDS`` order). Per base
    station: position and the gain / RSRP offsets. Written by vehicle: ``gain_db``, ``rsrp_dbm`` and
    ``gain_lin`` (``10 ** (gain_db / 10)``).

    Two compiled passes with numpy's vectorised ``log10`` and ``exp`` between and after them
    (a compiled loop calls the scalar ones, several times slower); a few rows (a vehicle
    departing) in one compiled call with the scalar ones, where the calls around them would cost
    more than the arithmetic.
    """
    if len(idx) <= _FEW_ROWS:
        _measure_few(idx, x, y, s, scene, w, shadow_z, shadow_at_m, dcorr_m, sigma_db, extra_db, pl_coef,
                     bs_x, bs_y, gain_offset_db, rsrp_offset_dbm, gain_db, rsrp_dbm, gain_lin)  # fmt: skip
        return
    d2d = np.empty((len(idx), bs_x.shape[0]))
    d3d = np.empty_like(d2d)
    _shadow_and_distances(idx, x, y, s, scene, w, shadow_z, shadow_at_m, dcorr_m, pl_coef, bs_x, bs_y, d2d, d3d)
    gain = _gains(idx, scene, d2d, d3d, np.log10(d3d), shadow_z, sigma_db, extra_db, pl_coef, gain_offset_db,
                  rsrp_offset_dbm, gain_db, rsrp_dbm)  # fmt: skip
    gain *= _LN10_10
    gain_lin[idx] = np.exp(gain, out=gain)


_FEW_ROWS = 4


@njit(cache=True, nogil=True)
def _measure_few(idx, x, y, s, scene, w, shadow_z, shadow_at_m, dcorr_m, sigma_db, extra_db, pl_coef,
                 bs_x, bs_y, gain_offset_db, rsrp_offset_dbm, gain_db, rsrp_dbm, gain_lin):  # fmt: skip
    """:func:`measure_rows` of a few rows in one pass, with the scalar ``log10`` and ``exp``."""
    n_bs = bs_x.shape[0]
    d2d = np.empty((1, n_bs))
    d3d = np.empty((1, n_bs))
    for r in range(idx.shape[0]):
        _shadow_and_distances(idx[r : r + 1], x[r : r + 1], y[r : r + 1], s[r : r + 1], scene[r : r + 1],
                              w[r : r + 1], shadow_z, shadow_at_m, dcorr_m, pl_coef, bs_x, bs_y, d2d, d3d)  # fmt: skip
        lg = np.empty((1, n_bs))
        for b in range(n_bs):
            lg[0, b] = math.log10(d3d[0, b])
        gain = _gains(idx[r : r + 1], scene[r : r + 1], d2d, d3d, lg, shadow_z, sigma_db, extra_db, pl_coef,
                      gain_offset_db, rsrp_offset_dbm, gain_db, rsrp_dbm)  # fmt: skip
        i = idx[r]
        for b in range(n_bs):
            gain_lin[i, b] = math.exp(gain[0, b] * _LN10_10)


@njit(cache=True, nogil=True)
def _shadow_and_distances(idx, x, y, s, scene, w, shadow_z, shadow_at_m, dcorr_m, pl_coef, bs_x, bs_y, d2d, d3d):
    """:func:`measure_rows`' first pass: the AR(1) shadowing step, and the 2D / 3D distances to every cell."""
    for r in range(idx.shape[0]):
        i = idx[r]
        sc = scene[r]
        last = shadow_at_m[i]
        rho = 0.0 if math.isnan(last) else math.exp(-abs(s[r] - last) / dcorr_m[sc])
        keep = math.sqrt(1.0 - rho * rho)
        for b in range(bs_x.shape[0]):
            shadow_z[i, b] = rho * shadow_z[i, b] + keep * w[r, b]
            dx = x[r] - bs_x[b]
            dy = y[r] - bs_y[b]
            d = max(math.sqrt(dx * dx + dy * dy), 10.0)
            d2d[r, b] = d
            d3d[r, b] = math.sqrt(d * d + pl_coef[sc, 8, b])
        shadow_at_m[i] = s[r]


@njit(cache=True, nogil=True)
def _gains(idx, scene, d2d, d3d, lg, shadow_z, sigma_db, extra_db, pl_coef, gain_offset_db, rsrp_offset_dbm,
           gain_db, rsrp_dbm):  # fmt: skip
    """:func:`measure_rows`' second pass: path loss (``lg = log10(d3d)``), gains and RSRP; returns the gains by row."""
    out = np.empty_like(d2d)
    for r in range(idx.shape[0]):
        i = idx[r]
        sc = scene[r]
        for b in range(d2d.shape[1]):
            if d2d[r, b] <= pl_coef[sc, 0, b]:
                pl = pl_coef[sc, 1, b] + pl_coef[sc, 2, b] * lg[r, b] + pl_coef[sc, 3, b] * d3d[r, b]
            else:
                pl = pl_coef[sc, 4, b] + pl_coef[sc, 5, b] * lg[r, b]
            pl = max(pl, pl_coef[sc, 6, b] + pl_coef[sc, 7, b] * lg[r, b])
            g = gain_offset_db[b] - (pl + extra_db[sc] + sigma_db[sc] * shadow_z[i, b])
            gain_db[i, b] = g
            rsrp_dbm[i, b] = rsrp_offset_dbm[b] + g
            out[r, b] = g
    return out


@njit(cache=True, nogil=True)
def a3_step(idx, now, rsrp_dbm, rsrp_l3_dbm, l3_a, serving, ttt_target, ttt_since_s, hyst_db, ttt_s):
    """Layer-3 filter and A3 time-to-trigger of vehicles ``idx``; return ``(fire, best)`` per row.

    ``fire[r]``: vehicle ``idx[r]`` hands over now to ``best[r]`` (the strongest neighbour by filtered
    RSRP, stronger than the serving cell by ``hyst_db`` since ``ttt_s`` ago). Updates the filter and
    the trigger state in place.
    """
    n = idx.shape[0]
    n_bs = rsrp_dbm.shape[1]
    fire = np.zeros(n, dtype=np.bool_)
    best_out = np.full(n, -1, dtype=np.int32)
    for r in range(n):
        i = idx[r]
        for b in range(n_bs):
            prev = rsrp_l3_dbm[i, b]
            raw = rsrp_dbm[i, b]
            rsrp_l3_dbm[i, b] = raw if math.isnan(prev) else (1.0 - l3_a) * prev + l3_a * raw
        own_bs = serving[i]
        own = rsrp_l3_dbm[i, own_bs]
        best = -1
        best_v = -np.inf
        for b in range(n_bs):
            if b != own_bs and (best < 0 or rsrp_l3_dbm[i, b] > best_v):
                best, best_v = b, rsrp_l3_dbm[i, b]
        best = max(best, 0)  # a single cell has no neighbour (argmax over all -inf: the first)
        best_out[r] = best
        cond = best_v > own + hyst_db
        restart = cond and ttt_target[i] != best
        if restart:
            ttt_since_s[i] = now
        ttt_target[i] = best if cond else -1
        if ttt_s <= 0:
            fire[r] = cond
        else:
            fire[r] = cond and not restart and (now - ttt_since_s[i] >= ttt_s - 1e-9)
    return fire, best_out


@njit(cache=True, nogil=True)
def uplink_interference(idx, serving, gain_lin, p_ue_mw, load, same_carrier):
    """Mean uplink interference (mW) at each base station from the vehicles ``idx`` that the other cells serve.

    Cell ``c``'s vehicles add ``load[c] * mean_u(p_ue_mw * gain_lin[u, b])`` at base station ``b`` when
    ``same_carrier[b, c]``.
    """
    n_bs = gain_lin.shape[1]
    total = np.zeros((n_bs, n_bs))  # [cell, bs]: sum over the cell's vehicles
    count = np.zeros(n_bs)
    for r in range(idx.shape[0]):
        i = idx[r]
        c = serving[i]
        count[c] += 1.0
        for b in range(n_bs):
            total[c, b] += p_ue_mw * gain_lin[i, b]
    out = np.zeros(n_bs)
    for b in range(n_bs):
        acc = 0.0
        for c in range(n_bs):
            if same_carrier[b, c] and count[c] > 0 and load[c] > 0:
                acc += load[c] * total[c, b] / count[c]
        out[b] = acc
    return out


@njit(cache=True, nogil=True)
def sinr_ratios(idx, bs, gain_lin, p_signal_mw, noise_mw, interf_mw, p_tx_mw, load, same_carrier):
    """Linear ``(S / (N + I), S / N)`` of vehicles ``idx`` served by cells ``bs`` (one row each).

    ``S = p_signal_mw[bs] * gain_lin[i, bs]``, ``N = noise_mw[bs]``. ``I = interf_mw[bs]`` when given
    (uplink: held per cell); else (``interf_mw`` empty: downlink) the other cells on the serving
    carrier, ``sum_c p_tx_mw[c] * gain_lin[i, c] * load[c]``.
    """
    n = idx.shape[0]
    si = np.empty(n)
    sn = np.empty(n)
    for r in range(n):
        i = idx[r]
        b = bs[r]
        signal = p_signal_mw[b] * gain_lin[i, b]
        if interf_mw.shape[0] > 0:
            interf = interf_mw[b]
        else:
            interf = 0.0
            for c in range(gain_lin.shape[1]):
                interf += p_tx_mw[c] * gain_lin[i, c] * (load[c] * same_carrier[b, c])
        si[r] = signal / (noise_mw[b] + interf)
        sn[r] = signal / noise_mw[b]
    return si, sn


@njit(cache=True, nogil=True)
def trip_stretches(edges, speed_mps, speed_factor, edge_scene, edge_start_m, edge_end_m, t_s):
    """A route's stretches of constant speed and scene, and when a trip departing at ``t_s`` starts each.

    Edge ``k`` of the route is map edge ``edges[k]`` (speed ``speed_mps[edges[k]] * speed_factor``,
    scene ``edge_scene[edges[k]]``), from ``edge_start_m[k]`` to ``edge_end_m[k]`` along the route.
    Returns ``(start_m, end_m, speed, scene, begins_s)``, one entry per stretch; a stretch's start
    time is ``t_s`` plus the running sum of the earlier stretches' durations, as ``np.cumsum`` adds.
    """
    n = edges.shape[0]
    start_m = np.empty(n)
    end_m = np.empty(n)
    speed = np.empty(n)
    scene = np.empty(n, dtype=edge_scene.dtype)
    begins = np.empty(n)
    m = -1
    acc = 0.0
    for k in range(n):
        v = speed_mps[edges[k]] * speed_factor
        sc = edge_scene[edges[k]]
        if m < 0 or v != speed[m] or sc != scene[m]:
            if m >= 0:
                acc += (end_m[m] - start_m[m]) / speed[m]
            m += 1
            start_m[m] = edge_start_m[k]
            speed[m] = v
            scene[m] = sc
            begins[m] = t_s + acc
        end_m[m] = edge_end_m[k]
    m += 1
    return start_m[:m], end_m[:m], speed[:m], scene[:m], begins[:m]
