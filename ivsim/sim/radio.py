"""The radio access network: received powers, SINR, association and A3 handover.

One long-lived process (:meth:`RadioNetwork.run`) measures every active
vehicle's RSRP towards every base station each ``radio.measurement_period_s``,
in one vectorised step, filters it (layer-3 filter of TS 38.331, ``l3_filter_k``)
and hands vehicles over A3-style (a neighbour stronger than the serving cell by
``hysteresis_db`` for ``time_to_trigger_s``, on filtered RSRP).

Model
-----
- Path loss: TR 38.901 Table 7.4.1-1 for the *vehicle's current scene* (its
  profile's model and LOS/NLOS condition, plus the profile's extra loss), to
  every base station, with the base station's carrier and height.
- Shadowing: log-normal, spatially correlated along the vehicle's route: a
  standard-normal state per (vehicle, base station) evolves as an AR(1) process in
  travelled distance, ``z <- rho z + sqrt(1 - rho^2) w`` with
  ``rho = exp(-delta_d / d_corr)`` (the exponential correlation of TR 38.901
  7.5, decorrelation distance of the current scene), scaled by the scene's
  sigma. Draws come from the run's ``shadowing`` stream.
- RSRP (dBm per subcarrier) = P_tx - 10 log10(N_sc) + G_bs + G_ue - PL - SF.
- Downlink SINR = S / (N + sum_c load_c * P_c) over the other base stations on the
  same carrier; uplink SINR at BS b = S / (N + sum_c load_c * mean_{u in c} P_ue G[u, b]),
  the interference of the vehicles that other cells serve. Noise kTB + NF
  (the vehicle's NF on the downlink, the base station's on the uplink).
- ``load_c`` is the share of BS c's time-frequency resource used over the last
  measurement period (``radio.interference_load: auto``) or a fixed number. The
  uplink interference at each cell is evaluated at each measurement and held until
  the next (as the loads are).

The per-vehicle arithmetic of a measurement, of A3 and of the uplink interference runs
in compiled loops (:mod:`ivsim.sim.kernels`); the shadowing draws come from numpy's
generator here, in the same order as ever.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np

from ivsim.sim.eventlog import Labels
from ivsim.sim.kernels import a3_step, measure_rows, sinr_ratios, uplink_interference
from ivsim.sim.pathloss import PathlossCoefficients, shadow_params

if TYPE_CHECKING:
    from collections.abc import Generator

    import simpy

    from ivsim.sim.engine import Simulation

__all__ = ["RadioNetwork", "db_to_lin", "lin_to_db"]

logger = logging.getLogger(__name__)

_KT_DBM_PER_HZ = -174.0


def db_to_lin(x_db: np.ndarray | float) -> np.ndarray:
    """Return ``10 ** (x_db / 10)``."""
    return np.power(10.0, np.asarray(x_db) / 10.0)


def lin_to_db(x: np.ndarray | float) -> np.ndarray:
    """Return ``10 log10(x)`` (``-inf`` for 0)."""
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(x)


class RadioNetwork:
    """Large-scale radio state of every (vehicle, base station) pair, and mobility management.

    Parameters
    ----------
    sim
        The owning simulation (for the scenario, the vehicle table, the log and the RNG).
    """

    def __init__(self, sim: Simulation) -> None:
        sc = sim.scenario
        self.sim = sim
        self.spec = sc.radio
        bss = sc.base_stations
        self.n_bs = len(bss)
        self.bs_ids = [b.id for b in bss]
        self._bs_ids_arr = np.asarray(self.bs_ids, dtype=object)
        xy = np.array([sim.bs_xy(b) for b in bss], dtype=float).reshape(-1, 2)
        self.bs_x, self.bs_y = xy[:, 0], xy[:, 1]
        self.bs_height_m = np.array([b.height_m for b in bss])
        self.carrier_hz = np.array([b.carrier_hz for b in bss])
        self.bandwidth_hz = np.array([b.bandwidth_hz for b in bss])
        self.tx_power_dbm = np.array([b.tx_power_dbm for b in bss])
        self.n_subcarriers = np.array([b.bandwidth_hz / b.subcarrier_spacing_hz for b in bss])
        self.bs_gain_dbi = np.array([b.antenna_gain_dbi for b in bss])
        self.bs_nf_db = np.array([b.noise_figure_db for b in bss])
        # same[b, c]: BS b and c share a carrier and so interfere
        self.same_carrier = (self.carrier_hz[:, None] == self.carrier_hz[None, :]) & ~np.eye(self.n_bs, dtype=bool)

        # per scene (index in sim.scene_names): propagation condition
        self.scene_pl: list[tuple[str, bool]] = []
        extra, sigma, dcorr = [], [], []
        for name in sim.scene_names:
            prof = sc.profile_of(name)
            pl = prof.pathloss
            self.scene_pl.append((pl.model, pl.los))
            default = shadow_params(pl.model, pl.los)
            extra.append(prof.extra_loss_db)
            sigma.append(prof.shadow_fading_db or default.sigma_db)
            dcorr.append(prof.shadow_decorrelation_m or default.decorrelation_m)
        # path-loss coefficients of every (scene, base station): one set of array operations for all vehicles
        self._pl_coef = np.stack(  # (scene, field, base station)
            [
                PathlossCoefficients.of(
                    model,
                    los,
                    carrier_hz=self.carrier_hz,
                    bs_height_m=self.bs_height_m,
                    ue_height_m=sc.radio.ue_height_m,
                ).as_array()
                for model, los in self.scene_pl
            ]
        )
        self.scene_extra_db = np.array(extra)
        self.scene_sigma_db = np.array(sigma)
        self.scene_dcorr_m = np.array(dcorr)
        # received power = _rsrp_offset_dbm + gain; gain = _gain_offset_db - (path loss + extra loss + shadowing)
        self._gain_offset_db = self.bs_gain_dbi + sc.radio.ue_antenna_gain_dbi
        self._rsrp_offset_dbm = self.tx_power_dbm - 10 * np.log10(self.n_subcarriers)
        # SINR terms per base station (mW): transmit powers, and the noise on each link direction
        self._p_tx_mw = db_to_lin(self.tx_power_dbm)
        self._p_ue_mw = float(db_to_lin(sc.radio.ue_tx_power_dbm))
        self._p_ue_mw_per_bs = np.full(self.n_bs, self._p_ue_mw)  # the uplink's signal power, by serving cell
        noise_dbm = _KT_DBM_PER_HZ + lin_to_db(self.bandwidth_hz)
        self._noise_dl_mw = db_to_lin(noise_dbm + sc.radio.ue_noise_figure_db)
        self._noise_ul_mw = db_to_lin(noise_dbm + self.bs_nf_db)

        n = sim.vehicles.n
        self._rng = sim.rng.numpy("shadowing")
        self.shadow_z = np.zeros((n, self.n_bs))  # standard-normal shadowing state
        self.shadow_at_m = np.full(n, np.nan)  # route distance of the last shadowing update (nan = new trip)
        self.rsrp_dbm = np.full((n, self.n_bs), -np.inf)  # latest measurement
        self.rsrp_l3_dbm = np.full((n, self.n_bs), np.nan)  # layer-3 filtered, what A3 compares (nan = none yet)
        self._l3_a = 0.5 ** (sc.radio.l3_filter_k / 4.0)
        self.gain_db = np.full((n, self.n_bs), -np.inf)  # -(PL + SF + extra) + antenna gains
        self.gain_lin = np.zeros((n, self.n_bs))  # the same, linear
        self.ttt_target = np.full(n, -1, dtype=np.int32)
        self.ttt_since_s = np.zeros(n)
        self.load = np.zeros(self.n_bs) if sc.radio.interference_load == "auto" else None
        self._fixed_load = None if sc.radio.interference_load == "auto" else float(sc.radio.interference_load)
        self.resource_s = np.zeros(self.n_bs)  # resource-seconds used since the last load update
        self._load_t_s = 0.0
        self.handovers = 0
        self._ul_interf: np.ndarray | None = None  # uplink interference per BS, as of the last measurement

    # ------------------------------------------------------------------ measurement

    def measure(self, idx: np.ndarray, t_s: float) -> None:
        """Update shadowing, gains and RSRP of vehicles ``idx`` at ``t_s``."""
        if len(idx) == 0:
            return
        veh = self.sim.vehicles
        idx = np.asarray(idx, dtype=np.intp)
        x, y = veh.positions(idx, t_s)
        w = self._rng.standard_normal((len(idx), self.n_bs))  # shadowing innovations
        measure_rows(
            idx, x, y, veh.distance_m(idx, t_s), veh.scene[idx], w, self.shadow_z, self.shadow_at_m,
            self.scene_dcorr_m, self.scene_sigma_db, self.scene_extra_db, self._pl_coef,
            self.bs_x, self.bs_y, self._gain_offset_db, self._rsrp_offset_dbm, self.gain_db, self.rsrp_dbm, self.gain_lin,
        )  # fmt: skip

    def forget(self, i: int) -> None:
        """Reset vehicle ``i``'s radio state at the end of a trip."""
        self.shadow_at_m[i] = np.nan
        self.ttt_target[i] = -1
        self.rsrp_dbm[i] = -np.inf
        self.rsrp_l3_dbm[i] = np.nan
        self.gain_db[i] = -np.inf
        self.gain_lin[i] = 0.0

    def attach(self, i: int, t_s: float) -> int:
        """Measure a departing vehicle and attach it to its strongest base station."""
        idx = np.array([i])
        self.measure(idx, t_s)
        best = int(self.rsrp_dbm[i].argmax())
        self.sim.vehicles.serving[i] = best
        return best

    # ------------------------------------------------------------------ SINR

    def interference_load(self) -> np.ndarray:
        """Activity factor of every base station."""
        if self._fixed_load is not None:
            return np.full(self.n_bs, self._fixed_load)
        return self.load

    def sinr_db(self, idx: np.ndarray, bs: np.ndarray, *, uplink: bool) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(sinr_db, snr_db)`` of vehicles ``idx`` served by ``bs`` (arrays of equal length)."""
        si, sn = self.sinr_ratios(idx, bs, uplink=uplink)
        return lin_to_db(si), lin_to_db(sn)

    def sinr_ratios(self, idx: np.ndarray, bs: np.ndarray, *, uplink: bool) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`sinr_db`'s ``(SINR, SNR)``, linear."""
        load = np.asarray(self.interference_load(), dtype=float)
        idx = np.asarray(idx, dtype=np.intp)
        bs = np.asarray(bs, dtype=np.intp)
        if uplink:
            return sinr_ratios(idx, bs, self.gain_lin, self._p_ue_mw_per_bs, self._noise_ul_mw,
                               self._uplink_interference(load), self._p_tx_mw, load, self.same_carrier)  # fmt: skip
        return sinr_ratios(idx, bs, self.gain_lin, self._p_tx_mw, self._noise_dl_mw, np.empty(0), self._p_tx_mw,
                           load, self.same_carrier)  # fmt: skip

    def sinr_one_db(self, i: int, bs: int, *, uplink: bool) -> float:
        """:meth:`sinr_db`'s SINR for one vehicle ``i`` served by ``bs``, in scalar arithmetic (requests, budgets)."""
        gain = self.gain_lin[i]
        own = float(gain[bs])
        load = self.interference_load()
        if uplink:
            signal = self._p_ue_mw * own
            noise = float(self._noise_ul_mw[bs])
            interf = float(self._uplink_interference(load)[bs])
        else:
            signal = float(self._p_tx_mw[bs]) * own
            noise = float(self._noise_dl_mw[bs])
            interf = float((self._p_tx_mw * gain * load * self.same_carrier[bs]).sum())
        ratio = signal / (noise + interf)
        return 10.0 * math.log10(ratio) if ratio > 0 else -math.inf

    def _uplink_interference(self, load: np.ndarray) -> np.ndarray:
        """Mean interference (mW) at each BS from the vehicles the other cells serve.

        Evaluated once per measurement period (after the measurement and its handovers) and
        held until the next, like the loads: a vehicle that departs or arrives in between
        changes it at the next measurement.
        """
        if self._ul_interf is not None:
            return self._ul_interf
        veh = self.sim.vehicles
        idx = np.flatnonzero(veh.active & (veh.serving >= 0))
        out = uplink_interference(
            idx, veh.serving, self.gain_lin, self._p_ue_mw, np.asarray(load, float), self.same_carrier
        )
        self._ul_interf = out
        return out

    def add_resource(self, resource_s: np.ndarray) -> None:
        """Account resource-seconds (bandwidth share x time) used by each BS, for the load estimate."""
        self.resource_s += resource_s

    # ------------------------------------------------------------------ process

    def run(self) -> Generator[simpy.Event, None, None]:
        """Measure every active vehicle each period; update loads; hand over (A3)."""
        env = self.sim.env
        period = self.spec.measurement_period_s
        hyst = self.spec.handover.hysteresis_db
        ttt = self.spec.handover.time_to_trigger_s
        veh = self.sim.vehicles
        k = 0
        while True:
            k += 1
            yield env.timeout(k * period - env.now)  # k * period: no drift from repeated additions
            now = env.now
            if self.load is not None:
                self.load = np.minimum(1.0, self.resource_s / max(now - self._load_t_s, 1e-12))
                self.resource_s[:] = 0.0
                self._load_t_s = now
            idx = np.flatnonzero(veh.active & (veh.serving >= 0))
            if len(idx) == 0:
                continue
            self.measure(idx, now)
            self._ul_interf = None  # measured with the new gains, loads and (below) associations
            fire, best = a3_step(
                idx, now, self.rsrp_dbm, self.rsrp_l3_dbm, self._l3_a, veh.serving, self.ttt_target,
                self.ttt_since_s, hyst, ttt,
            )  # fmt: skip
            if fire.any():
                self._handover(idx[fire], veh.serving[idx[fire]], best[fire], now)
            self.sim.cloud.uplink_changed()  # requests held back by an uplink outage may go now

    def _handover(self, idx: np.ndarray, src: np.ndarray, dst: np.ndarray, t_s: float) -> None:
        veh = self.sim.vehicles
        veh.serving[idx] = dst
        self.ttt_target[idx] = -1
        self.handovers += len(idx)
        x, y = veh.positions(idx, t_s)
        ids = Labels(idx, self.sim.vehicle_ids_array())
        bs_ids = self._bs_ids_arr
        self.sim.log.log_many(
            "handover",
            t_s,
            ids,
            vehicle=ids,
            from_bs=Labels(src, bs_ids),
            to_bs=Labels(dst, bs_ids),
            bs=Labels(dst, bs_ids),
            rsrp_dbm=self.rsrp_l3_dbm[idx, dst],
            scene=Labels(veh.scene[idx], self.sim.scene_names_array()),
            x_m=x,
            y_m=y,
        )
