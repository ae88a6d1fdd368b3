"""Base stations: the frame scheduler of each cell.

Frames are clock-aligned: every vehicle produces a frame at ``k / traffic.fps``
(cameras synchronised to the network clock), so at each frame instant each base
station serves the frames of all vehicles it serves in one batch, on the
downlink (it sends each vehicle a frame) or the uplink (each vehicle sends its
own), per ``link.direction``. The cells' schedulers run together in one
vectorised process (:class:`FrameScheduler`).

Scheduler (documented model):

- The frames of one frame instant form a batch; batches are served first come,
  first served: a batch waits (``queue_s``) while the previous one still occupies
  the cell.
- Within a batch the K frames share the bandwidth equally: each gets B/K for its
  whole transmission (round robin over resource blocks, no reallocation when a
  shorter frame finishes).
- A frame that would finish after its deadline is cut at the deadline and
  counted as dropped (``drop_reason = "deadline"``); a frame below the evaluator's
  minimum SINR is lost (``"outage"``); a frame that would finish after the end of
  the simulation is reported in flight (``"in_flight"``).
- The resource-seconds a batch uses feed the cell's load, which sets the
  interference it causes to others (:mod:`ivsim.sim.radio`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from ivsim.sim.eventlog import Labels
from ivsim.sim.links import TxBatch

if TYPE_CHECKING:
    from collections.abc import Generator

    import simpy

    from ivsim.config.schema import BaseStationSpec
    from ivsim.sim.engine import Simulation

__all__ = ["BaseStation", "FrameScheduler"]

logger = logging.getLogger(__name__)


class BaseStation:
    """One cell: its configuration and counters (its frames are scheduled by :class:`FrameScheduler`).

    Parameters
    ----------
    sim
        The owning simulation.
    index
        Number of this base station (column in the radio matrices).
    spec
        Its scenario entry.
    """

    def __init__(self, sim: Simulation, index: int, spec: BaseStationSpec) -> None:
        self.sim = sim
        self.index = index
        self.spec = spec
        self.id = spec.id

    @property
    def busy_until_s(self) -> float:
        """Until when the cell's resource is occupied by the last batch."""
        return float(self.sim.scheduler.busy_until_s[self.index])

    @property
    def frames(self) -> int:
        """Frames this cell has carried."""
        return int(self.sim.scheduler.frames[self.index])

    @property
    def delivered(self) -> int:
        """Frames this cell has delivered in time."""
        return int(self.sim.scheduler.delivered[self.index])


class FrameScheduler:
    """The cells' schedulers, run together: one vectorised step per frame instant.

    Every cell applies the same rules (module docstring) to its own vehicles;
    doing all cells in one numpy step costs one process wake-up per frame
    instant instead of one per cell, and gives the link evaluator all frames of
    the instant in one batch.

    Parameters
    ----------
    sim
        The owning simulation.
    """

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        n_bs = len(sim.scenario.base_stations)
        self.busy_until_s = np.zeros(n_bs)
        self.frames = np.zeros(n_bs, dtype=np.int64)
        self.delivered = np.zeros(n_bs, dtype=np.int64)
        self.bandwidth_hz = np.array([b.bandwidth_hz for b in sim.scenario.base_stations])
        self.carrier_hz = np.array([b.carrier_hz for b in sim.scenario.base_stations])
        self.bs_ids = np.asarray([b.id for b in sim.scenario.base_stations], dtype=object)

    def run(self) -> Generator[simpy.Event, None, None]:
        """At every frame instant ``k / fps``, serve the frames of every vehicle on the road."""
        sim = self.sim
        env = sim.env
        period = 1.0 / sim.scenario.traffic.fps
        table = sim.vehicles
        k = int(np.ceil(env.now / period - 1e-9))
        while True:
            t_next = k * period
            if t_next > env.now:
                yield env.timeout(t_next - env.now)
            k += 1
            idx = np.flatnonzero(table.active & (table.serving >= 0))
            if len(idx):
                yield from self._serve(idx)

    def _serve(self, idx: np.ndarray) -> Generator[simpy.Event, None, None]:
        sim = self.sim
        now = sim.env.now
        n_bs = len(self.busy_until_s)
        traffic = sim.scenario.traffic
        uplink = sim.scenario.link.direction == "uplink"
        table = sim.vehicles
        bs = table.serving[idx]
        per_cell = np.bincount(bs, minlength=n_bs)
        k = per_cell[bs]
        queue_s = np.maximum(0.0, self.busy_until_s[bs] - now)
        sinr_db, snr_db = sim.radio.sinr_db(idx, bs, uplink=uplink)
        n = len(idx)
        evaluator = sim.links.evaluator
        frame = table.frames_sent[idx].copy()
        batch = TxBatch(
            vehicle=idx,
            bs=bs,
            scene=table.scene[idx],
            uplink=np.full(n, uplink),
            size_bits=np.full(n, getattr(evaluator, "frame_bits", traffic.frame_bits), dtype=np.int64),
            bandwidth_hz=self.bandwidth_hz[bs] / k,
            queue_s=queue_s,
            sinr_db=sinr_db,
            snr_db=snr_db,
            speed_mps=table.speed_mps[idx],
            carrier_hz=self.carrier_hz[bs],
            deadline_s=np.full(n, traffic.deadline_s),
            frame=frame,
            # downlink: the vehicle's own estimator; uplink: the base station holds one for every scene
            estimator_scene=table.scene[idx] if uplink else table.estimator_scene[idx],
            adapter_id=np.full(n, "", dtype=object) if uplink else table.adapter_id[idx],
            estimator_version=np.zeros(n, dtype=np.int32) if uplink else table.estimator_version[idx],
            adapter_code=None if uplink else Labels(table.adapter_code[idx], table.adapter_labels),
        )
        result = yield sim.links.submit(batch)

        # occupancy of each cell: every frame until it ends or is cut at its deadline
        # (fmax: a frame not sent, NaN airtime, occupies nothing)
        occupancy = np.fmax(np.minimum(result.airtime_s, traffic.deadline_s - queue_s), 0.0)
        end = np.full(n_bs, -np.inf)
        np.maximum.at(end, bs, now + queue_s + occupancy)
        served = per_cell > 0
        self.busy_until_s[served] = end[served]
        sim.radio.add_resource(np.bincount(bs, weights=occupancy / k, minlength=n_bs))

        delivered = result.delivered.copy()
        reason = result.drop_reason.copy()
        in_flight = delivered & (now + result.delay_s > sim.scenario.duration_s)
        delivered[in_flight] = False
        reason[in_flight] = "in_flight"

        table.frames_sent[idx] += 1
        self.frames += per_cell
        self.delivered += np.bincount(bs, weights=delivered, minlength=n_bs).astype(np.int64)
        x, y = table.positions(idx, now)
        ids = Labels(idx, sim.vehicle_ids_array())
        scores = getattr(evaluator, "scores_images", False)
        # the receiver's estimator (version, adapter); an evaluator's own columns in `extra` take precedence
        mismatched = np.zeros(n, dtype=bool) if uplink else batch.estimator_scene != batch.scene
        adapters = Labels(np.zeros(n, dtype=np.int64), table.adapter_labels) if uplink else batch.adapter_code
        extra = {"estimator_version": batch.estimator_version, "adapter_id": adapters, "mismatched": mismatched}
        if scores:
            extra |= {"psnr_db": result.psnr_db, "ssim": result.ssim, "nmse_db": result.nmse_db}
        extra |= result.extra
        sim.log.log_many(
            "tx", now, ids, vehicle=ids, bs=Labels(bs, self.bs_ids), direction="uplink" if uplink else "downlink",
            scene=Labels(batch.scene, sim.scene_names_array()), frame=frame, sinr_db=sinr_db, snr_db=snr_db,
            size_bits=batch.size_bits, bandwidth_hz=batch.bandwidth_hz, rate_bps=result.rate_bps, queue_s=queue_s,
            airtime_s=result.airtime_s, delay_s=result.delay_s, delivered=delivered, drop_reason=reason,
            x_m=x, y_m=y, speed_mps=batch.speed_mps, **extra,
        )  # fmt: skip
        if not uplink:  # the receiver's own statistics feed a map-free scene-change detector
            alarms = sim.detector.observe(sim, idx, now, extra)
            for v in alarms.tolist():
                sim.fleet[v].alarm(float(getattr(sim.detector, "last_stat", {}).get(v, np.nan)))
