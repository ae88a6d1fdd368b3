"""The cloud node: backhaul links, a GPU pool, one job queue, and estimator refinement jobs.

A job travels from its base station to the cloud over that station's backhaul
(latency + bits / rate; one transfer at a time per link and direction), waits in
the cloud's queue for a free GPU (a ``simpy.Resource``), runs, and its result
travels back. :meth:`CloudNode.run` is the dispatcher: it takes a free GPU, then
the next queued job (first in, first out, whatever its kind), and hands it the GPU.

Generic jobs (:class:`Job`, :meth:`CloudNode.submit`) have a fixed service time.
Rows: ``job_queued`` (on arrival at the cloud, with ``queue_len``), ``job_start``
(``wait_s`` in the queue), ``job_done`` (when the result is back at the base
station: ``wait_s``, ``service_s``, ``delay_s`` from submission).

Refinement jobs (:meth:`CloudNode.request_refinement`) refine a vehicle's channel
estimator for a target scene (:mod:`ivsim.refine`). One job, as one short-lived
process:

1. ``refine_request`` (vehicle, ``target_scene``, the ``estimator_scene`` and
   ``estimator_version`` held now, ``samples``, ``steps``, ``upload_bytes``,
   ``policy``; ``bs``, ``sinr_db``, ``rate_bps`` of the uplink hop).
2. Uplink air: ``air_up_s = upload bits / rate``, the Shannon rate
   (:func:`~ivsim.sim.links.shannon_rate_bps`) at the vehicle's uplink SINR to its
   serving base station over that station's whole bandwidth: a short control
   message is modelled as getting the carrier to itself, not sharing the frame
   scheduler's resources. A vehicle not attached or below ``link.min_sinr_db``
   fails the job at once (``outage``).
3. Backhaul up over the serving station's link: ``backhaul_up_s``.
4. Adapter cache: the cloud keeps every adapter it made (``adapter_id -> bytes``,
   the id from :meth:`~ivsim.refine.service.Refiner.adapter_id`); a hit needs no
   GPU (``cached``; queue and GPU stages 0). Jobs in flight for the same adapter
   are not merged: each computes it.
5. Otherwise the job queues for a GPU (``queue_s``; ``refine_start`` with
   ``queue_len``), the refiner runs (:meth:`~ivsim.refine.service.Refiner.refine`,
   at the simulated instant the job starts), and the GPU is held for
   ``lm_infer_s + finetune_s``: from the timing model (``refinement.latency:
   profile``) or the refiner's measured wall times (``measured``). A refiner
   error (an :class:`~ivsim.errors.IvsimError` from ``adapter_id`` or ``refine``)
   fails the job (``reason`` = its message) and changes nothing on the vehicle;
   the run goes on.
6. Backhaul down to the station serving the vehicle *now* (it may have handed
   over), then downlink air at its downlink rate (whole bandwidth):
   ``download_s = backhaul_down_s + air_down_s``. A vehicle that arrived
   meanwhile cancels the job (``vehicle_gone``).
7. ``refine_done``: ``upload_s, queue_s, lm_infer_s, finetune_s, download_s``
   (which add up to ``total_s``, request to end), the hops, bytes, ``gpu_s``,
   ``cached``, ``outcome`` (done, failed, cancelled), ``reason``, ``adapter_id``,
   and ``bs``, ``sinr_db``, ``rate_bps`` of the downlink hop. Stages a job did not
   reach count 0.
8. ``deploy`` (done jobs): the vehicle's ``estimator_version`` goes up by one, its
   ``estimator_scene`` becomes the target, its ``adapter_id`` the new adapter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import simpy

from ivsim.errors import IvsimError
from ivsim.refine.budget import RefineTimingModel
from ivsim.refine.service import RefineRequest
from ivsim.sim.links import shannon_rate_bps

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from ivsim.config.schema import Backhaul
    from ivsim.refine.service import Refiner, RefineWork
    from ivsim.sim.engine import Simulation

__all__ = ["CloudNode", "Job", "JobResult", "RefineResult"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """A unit of cloud work.

    Attributes
    ----------
    job_id
        Unique name.
    kind
        What it is (``"refine"``, ...), logged as ``job_kind``.
    bs
        Index of the base station it comes from and returns to.
    service_s
        GPU time.
    upload_bits, download_bits
        Payload over the backhaul to and from the cloud.
    vehicle
        Requesting vehicle id, if any.
    """

    job_id: str
    kind: str
    bs: int
    service_s: float
    upload_bits: int = 0
    download_bits: int = 0
    vehicle: str | None = None


@dataclass
class JobResult:
    """Times of a finished job (simulated seconds)."""

    job: Job
    submitted_s: float
    queued_s: float = float("nan")
    started_s: float = float("nan")
    finished_s: float = float("nan")
    returned_s: float = float("nan")
    extra: dict = field(default_factory=dict)

    @property
    def wait_s(self) -> float:
        """Time in the cloud's queue."""
        return self.started_s - self.queued_s


@dataclass
class RefineResult:
    """The budget of one refinement job (simulated seconds, bytes); the process value of a refinement.

    The five stages ``upload_s, queue_s, lm_infer_s, finetune_s, download_s`` add
    up to ``total_s`` (request to the adapter at the vehicle, or to the end of a
    job that did not finish); stages a job did not reach are 0.
    """

    job_id: str
    vehicle: str
    target_scene: str
    requested_s: float
    upload_bytes: int
    download_bytes: int = 0
    air_up_s: float = 0.0
    backhaul_up_s: float = 0.0
    queue_s: float = 0.0
    lm_infer_s: float = 0.0
    finetune_s: float = 0.0
    backhaul_down_s: float = 0.0
    air_down_s: float = 0.0
    total_s: float = 0.0
    cached: bool = False
    outcome: str = ""
    reason: str | None = None
    adapter_id: str | None = None

    @property
    def upload_s(self) -> float:
        """Uplink air + backhaul up."""
        return self.air_up_s + self.backhaul_up_s

    @property
    def gpu_s(self) -> float:
        """GPU time used: inference + fine-tuning."""
        return self.lm_infer_s + self.finetune_s

    @property
    def download_s(self) -> float:
        """Backhaul down + downlink air."""
        return self.backhaul_down_s + self.air_down_s

    def row(self) -> dict:
        """The ``refine_done`` columns of this result."""
        return {
            "vehicle": self.vehicle, "job_id": self.job_id, "target_scene": self.target_scene,
            "upload_s": self.upload_s, "queue_s": self.queue_s, "lm_infer_s": self.lm_infer_s,
            "finetune_s": self.finetune_s, "download_s": self.download_s, "total_s": self.total_s,
            "air_up_s": self.air_up_s, "backhaul_up_s": self.backhaul_up_s, "backhaul_down_s": self.backhaul_down_s,
            "air_down_s": self.air_down_s, "upload_bytes": self.upload_bytes, "download_bytes": self.download_bytes,
            "gpu_s": self.gpu_s, "cached": self.cached, "outcome": self.outcome, "reason": self.reason,
            "adapter_id": self.adapter_id,
        }  # fmt: skip


def _one_line(exc: Exception) -> str:
    """An error's message as one line (its class name if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Link:
    """A one-direction backhaul link: FIFO transfers at ``rate_bps`` after ``latency_s``."""

    def __init__(self, env: simpy.Environment, spec: Backhaul) -> None:
        self.env = env
        self.spec = spec
        self.busy = simpy.Resource(env, capacity=1)

    def transfer(self, bits: int) -> Generator[simpy.Event, None, None]:
        with self.busy.request() as req:
            yield req
            yield self.env.timeout(bits / self.spec.rate_bps)
        yield self.env.timeout(self.spec.latency_s)


class CloudNode:
    """GPUs behind per-base-station backhaul links, serving jobs first come, first served.

    Parameters
    ----------
    sim
        The owning simulation.
    """

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        spec = sim.scenario.cloud
        self.spec = spec
        self.id = spec.id
        env = sim.env
        self.gpus = simpy.Resource(env, capacity=spec.gpus)
        self.queue = simpy.Store(env)
        self.up = []
        self.down = []
        for bs in sim.scenario.base_stations:
            link = bs.backhaul or spec.backhaul
            self.up.append(_Link(env, link))
            self.down.append(_Link(env, link))
        self.jobs_done = 0
        self.adapters: dict[str, int] = {}
        """The cloud's adapter cache: adapter id -> size in bytes."""
        self.refinements = 0
        self._in_flight: dict[int, list[int]] = {}

    def submit(self, job: Job) -> simpy.Process:
        """Start ``job``; the returned process's value is its :class:`JobResult`."""
        return self.sim.process(self._lifecycle(job))

    def _lifecycle(self, job: Job) -> Generator[simpy.Event, None, JobResult]:
        env = self.sim.env
        res = JobResult(job=job, submitted_s=env.now)
        yield from self.up[job.bs].transfer(job.upload_bits)
        res.queued_s = env.now
        started = env.event()
        finished = env.event()
        self.sim.log.log(
            "job_queued", env.now, job.job_id, job_id=job.job_id, job_kind=job.kind, vehicle=job.vehicle,
            bs=self.sim.radio.bs_ids[job.bs], upload_bits=job.upload_bits, queue_len=len(self.queue.items),
        )  # fmt: skip
        yield self.queue.put(lambda gpu, queue_len: self._start_job(job, res, started, finished, gpu, queue_len))
        yield finished
        yield from self.down[job.bs].transfer(job.download_bits)
        res.returned_s = env.now
        self.sim.log.log(
            "job_done", env.now, job.job_id, job_id=job.job_id, job_kind=job.kind, vehicle=job.vehicle,
            wait_s=res.wait_s, service_s=job.service_s, download_bits=job.download_bits,
            delay_s=env.now - res.submitted_s,
        )  # fmt: skip
        return res

    def run(self) -> Generator[simpy.Event, None, None]:
        """Dispatcher: whenever a GPU is free, hand it to the next queued job (of any kind)."""
        while True:
            gpu = self.gpus.request()
            yield gpu
            start: Callable[[simpy.Request, int], None] = yield self.queue.get()
            start(gpu, len(self.queue.items))

    def _start_job(
        self, job: Job, res: JobResult, started: simpy.Event, finished: simpy.Event, gpu: simpy.Request, queue_len: int
    ) -> None:
        env = self.sim.env
        res.started_s = env.now
        started.succeed()
        self.sim.log.log(
            "job_start", env.now, job.job_id, job_id=job.job_id, job_kind=job.kind, vehicle=job.vehicle,
            wait_s=res.wait_s, queue_len=queue_len,
        )  # fmt: skip
        self.sim.process(self._serve(job, res, gpu, finished))

    def _serve(
        self, job: Job, res: JobResult, gpu: simpy.Request, finished: simpy.Event
    ) -> Generator[simpy.Event, None, None]:
        env = self.sim.env
        try:
            yield env.timeout(job.service_s)
        finally:
            self.gpus.release(gpu)
        res.finished_s = env.now
        self.jobs_done += 1
        finished.succeed()

    # ------------------------------------------------------------------ refinement

    def refinements_in_flight(self, vehicle: int) -> list[int]:
        """Target scenes (numbers) of the refinement jobs of ``vehicle`` not finished yet."""
        return self._in_flight.get(vehicle, [])

    def request_refinement(self, vehicle: int, target_scene: int, *, policy: str = "") -> simpy.Process:
        """Start a job refining ``vehicle``'s estimator for ``target_scene`` (see the module docstring).

        Parameters
        ----------
        vehicle
            Row of the vehicle in ``sim.vehicles``.
        target_scene
            Scene number (in ``sim.scene_names``) to refine for.
        policy
            Kind of the policy that asked, for the log.

        Returns
        -------
        simpy.Process
            Its value is the job's :class:`RefineResult`.

        Raises
        ------
        ModelError, ScenarioError
            The run's refiner cannot be built (e.g. no timings for it).
        """
        sim = self.sim
        env = sim.env
        refiner, timing = sim.refinement()
        spec = sim.scenario.refinement
        table = sim.vehicles
        i = int(vehicle)
        vid = str(sim.vehicle_ids_array()[i])
        names = sim.scene_names
        self.refinements += 1
        job_id = f"refine{self.refinements}-{vid}"
        held = int(table.estimator_scene[i])
        base = int(table.base_scene[i]) if table.base_scene[i] >= 0 else held
        base_name = names[base] if base >= 0 else ""
        target = names[target_scene]
        bs = int(table.serving[i]) if table.active[i] else -1
        idx = np.array([i])
        distance_m = float("nan")
        if bs >= 0:
            x, y = table.positions(idx, env.now)
            distance_m = float(np.hypot(x[0] - sim.radio.bs_x[bs], y[0] - sim.radio.bs_y[bs]))
        request = RefineRequest(
            job_id=job_id, vehicle=vid, base_scene=base_name, target_scene=target, samples=spec.samples,
            steps=spec.steps, rank=spec.lora_rank, pilots=spec.upload_pilots,
            speed_mps=float(table.speed_mps[i]), distance_m=distance_m,
            seed=sim.rng.int_seed(f"refine/{base_name or '-'}/{target}"),
        )  # fmt: skip
        upload_bytes = RefineTimingModel.upload_bytes(spec.request_bytes, spec.upload_pilots, sim.scenario.link.grid)
        sinr_db, rate_bps = self._air(i, bs, uplink=True)
        sim.log.log(
            "refine_request", env.now, job_id, vehicle=vid, job_id=job_id, target_scene=target,
            estimator_scene=names[held] if held >= 0 else None, estimator_version=int(table.estimator_version[i]),
            samples=spec.samples, steps=spec.steps, upload_bytes=upload_bytes, policy=policy or None,
            bs=sim.radio.bs_ids[bs] if bs >= 0 else None, sinr_db=sinr_db, rate_bps=rate_bps,
        )  # fmt: skip
        self._in_flight.setdefault(i, []).append(target_scene)
        res = RefineResult(
            job_id=job_id, vehicle=vid, target_scene=target, requested_s=env.now, upload_bytes=upload_bytes
        )
        return sim.process(self._refine(i, target_scene, request, res, bs, rate_bps, refiner, timing))

    def _air(self, i: int, bs: int, *, uplink: bool) -> tuple[float | None, float]:
        """``(sinr_db, rate_bps)`` of vehicle ``i`` to ``bs`` over its whole bandwidth; rate 0 in outage or detached."""
        if bs < 0:
            return None, 0.0
        link = self.sim.scenario.link
        sinr, _ = self.sim.radio.sinr_db(np.array([i]), np.array([bs]), uplink=uplink)
        sinr_db = float(sinr[0])
        if not sinr_db >= link.min_sinr_db:
            return sinr_db, 0.0
        rate = shannon_rate_bps(
            sinr_db, float(self.sim.radio.bandwidth_hz[bs]), gap_db=link.gap_db,
            max_spectral_efficiency=link.max_spectral_efficiency,
        )  # fmt: skip
        return sinr_db, float(rate)

    def _gpu_times(
        self, work: RefineWork, request: RefineRequest, timing: RefineTimingModel | None
    ) -> tuple[float, float]:
        """``(lm_infer_s, finetune_s)``: measured wall times (``latency: measured``) or the timing model's."""
        measured = self.sim.scenario.refinement.latency == "measured"
        times = []
        for wall, model, items in (
            (work.lm_infer_wall_s, "lm_infer_s", request.samples),
            (work.finetune_wall_s, "finetune_s", request.steps),
        ):
            if measured and wall is not None:
                times.append(float(wall))
            elif timing is not None:
                times.append(getattr(timing, model)(items))
            else:
                msg = f"refinement: the refiner measured no {model[:-2]} time and there are no refine timings"
                raise IvsimError(msg)
        return times[0], times[1]

    def _refine(
        self,
        i: int,
        target_scene: int,
        request: RefineRequest,
        res: RefineResult,
        bs: int,
        rate_bps: float,
        refiner: Refiner,
        timing: RefineTimingModel | None,
    ) -> Generator[simpy.Event, None, RefineResult]:
        sim = self.sim
        env = sim.env
        table = sim.vehicles
        try:
            if rate_bps <= 0.0:
                return self._refine_end(res, "failed", "outage")
            bits = 8 * res.upload_bytes
            res.air_up_s = bits / rate_bps
            yield env.timeout(res.air_up_s)
            t = env.now
            yield from self.up[bs].transfer(bits)
            res.backhaul_up_s = env.now - t

            try:
                res.adapter_id = refiner.adapter_id(request)
            except IvsimError as exc:
                return self._refine_end(res, "failed", _one_line(exc))
            if res.adapter_id in self.adapters:
                res.cached = True
                adapter_bytes = self.adapters[res.adapter_id]
            else:
                queued = env.now
                granted = env.event()
                yield self.queue.put(lambda gpu, queue_len: granted.succeed((gpu, queue_len)))
                gpu, queue_len = yield granted
                res.queue_s = env.now - queued
                sim.log.log(
                    "refine_start", env.now, request.job_id, vehicle=request.vehicle, job_id=request.job_id,
                    target_scene=request.target_scene, queue_s=res.queue_s, queue_len=queue_len,
                )  # fmt: skip
                try:
                    work = refiner.refine(request)
                    lm_s, ft_s = self._gpu_times(work, request, timing)
                except IvsimError as exc:
                    self.gpus.release(gpu)
                    return self._refine_end(res, "failed", _one_line(exc))
                try:
                    yield env.timeout(lm_s + ft_s)
                finally:
                    self.gpus.release(gpu)
                res.lm_infer_s, res.finetune_s = lm_s, ft_s
                res.adapter_id = work.adapter_id
                adapter_bytes = int(work.adapter_bytes)
                self.adapters[res.adapter_id] = adapter_bytes

            bs_now = int(table.serving[i]) if table.active[i] else -1
            if bs_now < 0:
                return self._refine_end(res, "cancelled", "vehicle_gone")
            t = env.now
            yield from self.down[bs_now].transfer(8 * adapter_bytes)
            res.backhaul_down_s = env.now - t
            bs_now = int(table.serving[i]) if table.active[i] else -1
            if bs_now < 0:
                return self._refine_end(res, "cancelled", "vehicle_gone")
            sinr_db, rate = self._air(i, bs_now, uplink=False)
            air = {"bs": sim.radio.bs_ids[bs_now], "sinr_db": sinr_db, "rate_bps": rate}
            if rate <= 0.0:
                return self._refine_end(res, "failed", "outage", **air)
            res.air_down_s = 8 * adapter_bytes / rate
            yield env.timeout(res.air_down_s)
            if not table.active[i]:
                return self._refine_end(res, "cancelled", "vehicle_gone", **air)
            res.download_bytes = adapter_bytes
            self._refine_end(res, "done", None, **air)
            self._deploy(i, target_scene, res)
            return res
        finally:
            self._in_flight[i].remove(target_scene)

    def _refine_end(self, res: RefineResult, outcome: str, reason: str | None, **air: object) -> RefineResult:
        env = self.sim.env
        res.outcome = outcome
        res.reason = reason
        res.total_s = env.now - res.requested_s
        self.sim.log.log("refine_done", env.now, res.job_id, **res.row(), **air)
        return res

    def _deploy(self, i: int, target_scene: int, res: RefineResult) -> None:
        sim = self.sim
        table = sim.vehicles
        table.estimator_version[i] += 1
        table.estimator_scene[i] = target_scene
        table.adapter_id[i] = res.adapter_id
        sim.log.log(
            "deploy", sim.env.now, res.vehicle, vehicle=res.vehicle, job_id=res.job_id, target_scene=res.target_scene,
            estimator_scene=res.target_scene, estimator_version=int(table.estimator_version[i]),
            adapter_id=res.adapter_id,
        )  # fmt: skip
