"""The cloud node: backhaul links, a GPU pool, one job queue, and estimator refinement jobs.

A job travels from its base station to the cloud over that station's backhaul
(latency + bits / rate; one transfer at a time per link and direction), waits in
the cloud's queue for a free GPU (a ``simpy.Resource``), runs, and its result
travels back. :meth:`CloudNode.run` is the dispatcher: it takes a free GPU, then
the next queued job (whatever its kind) and hands it the GPU. ``cloud.queue`` says
which job is next: ``fifo`` (arrival order) or ``edf`` (the refinement with the
earliest deadline; jobs without one after, in arrival order).

Generic jobs (:class:`Job`, :meth:`CloudNode.submit`) have a fixed service time.
Rows: ``job_queued`` (on arrival at the cloud, with ``queue_len``), ``job_start``
(``wait_s`` in the queue), ``job_done`` (when the result is back at the base
station: ``wait_s``, ``service_s``, ``delay_s`` from submission).

Refinement jobs (:meth:`CloudNode.request_refinement`) refine a vehicle's channel
estimator for a target scene (:mod:`ivsim.refine`). One job, as one short-lived
process:

1. ``refine_request`` (vehicle, ``target_scene``, the ``estimator_scene`` and
   ``estimator_version`` held now, ``samples``, ``steps``, ``upload_bytes``,
   ``policy``, ``detector``, ``deadline_t_s`` (when the policy wants the estimator on
   board: the predicted boundary arrival); ``bs``, ``sinr_db``, ``rate_bps`` of the
   uplink hop).
2. Uplink air: ``air_up_s = upload bits / rate``, the Shannon rate
   (:func:`~ivsim.sim.links.shannon_rate_bps`) at the vehicle's uplink SINR to its
   serving base station over that station's whole bandwidth: a short control
   message is modelled as getting the carrier to itself, not sharing the frame
   scheduler's resources. A vehicle not attached or below ``link.min_sinr_db``
   fails the job at once (``outage``).
3. Backhaul up over the serving station's link: ``backhaul_up_s``.
4. Adapter cache: the cloud keeps every adapter it made (``adapter_id -> bytes``,
   the id from :meth:`~ivsim.refine.service.Refiner.adapter_id`); a hit needs no
   GPU (``cached``; queue and GPU stages 0). With ``cloud.coalesce`` (default) a
   job whose adapter another job is making right now waits for that one instead
   of making it again (``cached``, the wait counted as ``queue_s``; failed if that
   job fails); without it every job computes its own.
5. Otherwise, unless admission control turns it away (``cloud.admission:
   deadline``: its estimated completion, :meth:`CloudNode.estimate_budget`, is
   after its deadline; outcome ``cancelled``, reason ``admission``), the job
   queues for a GPU (``queue_s``; ``refine_start`` with
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
   ``cached``, ``outcome``, ``reason``, ``adapter_id``, ``policy``,
   ``deadline_t_s``, ``arrival_t_s`` (when the vehicle actually entered, or will
   enter, the target scene on that trip: the truth from its schedule; NaN if it
   never does), ``slack_s = arrival_t_s - t_s`` for finished jobs, and ``bs``,
   ``sinr_db``, ``rate_bps`` of the downlink hop. ``outcome``: ``met`` (the adapter
   arrived before the vehicle entered the scene, or the vehicle never enters it),
   ``late``, ``cancelled`` or ``failed``. Stages a job did not reach count 0.
8. ``deploy`` (finished jobs): the adapter is on board as estimator version
   ``estimator_version`` (one more than the vehicle's last); the vehicle uses it at
   once if it is in the target scene, else when it enters it
   (:meth:`~ivsim.sim.vehicle.Vehicle.install`); ``active`` says which.
"""

from __future__ import annotations

import itertools
import logging
import math
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
    policy: str | None = None
    deadline_t_s: float = float("nan")
    arrival_t_s: float = float("nan")

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
            "adapter_id": self.adapter_id, "policy": self.policy, "deadline_t_s": self.deadline_t_s,
            "arrival_t_s": self.arrival_t_s,
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
        self.queue = simpy.PriorityStore(env)
        self._seq = itertools.count()
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
        self._making: dict[str, simpy.Event] = {}
        """Adapters being made now (``cloud.coalesce``): id -> event whose value is its size (``None``: failed)."""
        self.finished_totals: list[float] = []
        """``total_s`` of every finished (not cached) refinement, in finishing order (what adaptive policies learn)."""
        self.serving = 0
        """Jobs holding a GPU now (the dispatcher's own standing request for the next free GPU is not one)."""
        self._uplink_wait: dict[int, None] = {}  # vehicles holding requests until their uplink is usable

    def _enqueue(self, start: Callable[[simpy.Request, int], None], deadline_t_s: float = math.inf) -> simpy.Event:
        """Queue a job's start callback; the dispatcher calls it with a GPU (order: ``cloud.queue``)."""
        key = deadline_t_s if self.spec.queue == "edf" and not math.isnan(deadline_t_s) else math.inf
        return self.queue.put(simpy.PriorityItem((key, next(self._seq)), start))

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
        yield self._enqueue(lambda gpu, queue_len: self._start_job(job, res, started, finished, gpu, queue_len))
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
            item: simpy.PriorityItem = yield self.queue.get()
            item.item(gpu, len(self.queue.items))

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
        self.serving += 1
        try:
            yield env.timeout(job.service_s)
        finally:
            self.serving -= 1
            self.gpus.release(gpu)
        res.finished_s = env.now
        self.jobs_done += 1
        finished.succeed()

    # ------------------------------------------------------------------ refinement

    def refinements_in_flight(self, vehicle: int) -> list[int]:
        """Target scenes (numbers) of the refinement jobs of ``vehicle`` not finished yet."""
        return self._in_flight.get(vehicle, [])

    def request_refinement(
        self,
        vehicle: int,
        target_scene: int,
        *,
        policy: str = "",
        deadline_t_s: float = float("nan"),
        arrival_t_s: float = float("nan"),
        samples: int | None = None,
        steps: int | None = None,
    ) -> simpy.Process:
        """Start a job refining ``vehicle``'s estimator for ``target_scene`` (see the module docstring).

        Parameters
        ----------
        vehicle
            Row of the vehicle in ``sim.vehicles``.
        target_scene
            Scene number (in ``sim.scene_names``) to refine for.
        policy
            Kind of the policy that asked, for the log.
        deadline_t_s
            When the policy wants the refined estimator on board (EDF orders by it).
        arrival_t_s
            When the vehicle really enters ``target_scene`` (the truth, for the slack).
        samples, steps
            N and K of the job (default ``refinement.samples`` / ``refinement.steps``).

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
        target = names[target_scene]
        bs = int(table.serving[i]) if table.active[i] else -1
        request = self._request(i, target_scene, job_id, samples=samples, steps=steps)
        upload_bytes = RefineTimingModel.upload_bytes(spec.request_bytes, spec.upload_pilots, sim.scenario.link.grid)
        sinr_db, rate_bps = self._air(i, bs, uplink=True)
        sim.log.log(
            "refine_request", env.now, job_id, vehicle=vid, job_id=job_id, target_scene=target,
            estimator_scene=names[held] if held >= 0 else None, estimator_version=int(table.estimator_version[i]),
            samples=request.samples, steps=request.steps, upload_bytes=upload_bytes, policy=policy or None,
            detector=sim.detector.kind, deadline_t_s=deadline_t_s,
            bs=sim.radio.bs_ids[bs] if bs >= 0 else None, sinr_db=sinr_db, rate_bps=rate_bps,
        )  # fmt: skip
        self._in_flight.setdefault(i, []).append(target_scene)
        res = RefineResult(
            job_id=job_id, vehicle=vid, target_scene=target, requested_s=env.now, upload_bytes=upload_bytes,
            policy=policy or None, deadline_t_s=float(deadline_t_s), arrival_t_s=float(arrival_t_s),
        )  # fmt: skip
        return sim.process(self._refine(i, target_scene, request, res, bs, rate_bps, refiner, timing))

    def _request(
        self, i: int, target_scene: int, job_id: str, *, samples: int | None = None, steps: int | None = None
    ) -> RefineRequest:
        """The :class:`RefineRequest` vehicle ``i`` sends now for ``target_scene``."""
        sim = self.sim
        table = sim.vehicles
        spec = sim.scenario.refinement
        names = sim.scene_names
        held = int(table.estimator_scene[i])
        base = int(table.base_scene[i]) if table.base_scene[i] >= 0 else held
        base_name = names[base] if base >= 0 else ""
        target = names[target_scene]
        bs = int(table.serving[i]) if table.active[i] else -1
        distance_m = float("nan")
        if bs >= 0:
            x, y = table.positions(np.array([i]), sim.env.now)
            distance_m = float(np.hypot(x[0] - sim.radio.bs_x[bs], y[0] - sim.radio.bs_y[bs]))
        return RefineRequest(
            job_id=job_id, vehicle=str(sim.vehicle_ids_array()[i]), base_scene=base_name, target_scene=target,
            samples=samples or spec.samples, steps=steps or spec.steps, rank=spec.lora_rank,
            pilots=spec.upload_pilots, speed_mps=float(table.speed_mps[i]), distance_m=distance_m,
            seed=sim.rng.int_seed(f"refine/{base_name or '-'}/{target}"),
        )  # fmt: skip

    def has_adapter(self, vehicle: int, target_scene: int, *, samples: int, steps: int) -> bool:
        """Whether the cloud already holds the adapter ``vehicle`` would get for ``target_scene`` (N, K)."""
        refiner, _ = self.sim.refinement()
        try:
            aid = refiner.adapter_id(self._request(vehicle, target_scene, "probe", samples=samples, steps=steps))
        except IvsimError:
            return False
        return aid in self.adapters

    def estimate_budget(self, vehicle: int, *, samples: int, steps: int) -> dict[str, float]:
        """What a job of ``vehicle`` would cost if asked now, from the configured rates (no randomness).

        Uplink and downlink air at the vehicle's current link to its serving station (the
        downlink assumed to stay as it is), backhaul rate and latency both ways, the wait
        for a GPU (jobs queued and in service ahead of it, each taking this job's GPU
        time, shared by the GPUs), large-model inference and fine-tuning from the timing
        model (0 when there is none, e.g. ``latency: measured`` before any job). A
        vehicle in outage now is priced at the rate of the weakest usable link
        (``link.min_sinr_db``): it is expected to be served again before it sends.

        Returns
        -------
        dict
            ``upload_s, queue_s, lm_infer_s, finetune_s, download_s, total_s`` and
            ``finetune_per_step_s`` (what one more step adds).
        """
        sim = self.sim
        spec = sim.scenario.refinement
        _, timing = sim.refinement()
        table = sim.vehicles
        bs = int(table.serving[vehicle]) if table.active[vehicle] else -1
        up_bits = 8 * RefineTimingModel.upload_bytes(spec.request_bytes, spec.upload_pilots, sim.scenario.link.grid)
        lm = timing.lm_infer_s(samples) if timing is not None else 0.0
        ft = timing.finetune_s(steps) if timing is not None else 0.0
        per_step = timing.cost.finetune.per_item_s if timing is not None else 0.0
        down_bits = 8 * (timing.adapter_bytes(spec.lora_rank) if timing is not None else 0)
        up_rate = self._air(vehicle, bs, uplink=True)[1] or self._edge_rate_bps(bs)
        down_rate = self._air(vehicle, bs, uplink=False)[1] or self._edge_rate_bps(bs)
        link = self.up[bs].spec if bs >= 0 else self.spec.backhaul
        upload = (up_bits / up_rate if up_rate > 0 else math.inf) + up_bits / link.rate_bps + link.latency_s
        download = (down_bits / down_rate if down_rate > 0 else math.inf) + down_bits / link.rate_bps + link.latency_s
        ahead = len(self.queue.items) + self.serving
        queue = (ahead // self.spec.gpus) * (lm + ft)
        total = upload + queue + lm + ft + download
        return {
            "upload_s": upload, "queue_s": queue, "lm_infer_s": lm, "finetune_s": ft, "download_s": download,
            "total_s": total, "finetune_per_step_s": per_step,
        }  # fmt: skip

    def _air(self, i: int, bs: int, *, uplink: bool) -> tuple[float | None, float]:
        """``(sinr_db, rate_bps)`` of vehicle ``i`` to ``bs`` over its whole bandwidth; rate 0 in outage or detached."""
        if bs < 0:
            return None, 0.0
        link = self.sim.scenario.link
        sinr_db = self.sim.radio.sinr_one_db(i, bs, uplink=uplink)
        if not sinr_db >= link.min_sinr_db:
            return sinr_db, 0.0
        rate = shannon_rate_bps(
            sinr_db, float(self.sim.radio.bandwidth_hz[bs]), gap_db=link.gap_db,
            max_spectral_efficiency=link.max_spectral_efficiency,
        )  # fmt: skip
        return sinr_db, float(rate)

    def _edge_rate_bps(self, bs: int) -> float:
        """The rate at ``link.min_sinr_db`` over base station ``bs``'s bandwidth (the first one's if none)."""
        link = self.sim.scenario.link
        bw = float(self.sim.radio.bandwidth_hz[max(bs, 0)])
        rate = shannon_rate_bps(
            link.min_sinr_db, bw, gap_db=link.gap_db, max_spectral_efficiency=link.max_spectral_efficiency
        )
        return float(rate)

    def wait_for_uplink(self, vehicle: int) -> None:
        """``vehicle`` holds requests until its uplink is usable (see :meth:`uplink_changed`)."""
        self._uplink_wait[vehicle] = None

    def uplink_changed(self) -> None:
        """After a radio measurement: release the held requests of every vehicle whose uplink is usable now.

        One vectorised SINR evaluation for all waiting vehicles; a vehicle that is no longer
        on the road is dropped from the waiting set.
        """
        if not self._uplink_wait:
            return
        sim = self.sim
        table = sim.vehicles
        idx = np.fromiter(self._uplink_wait, dtype=np.int64, count=len(self._uplink_wait))
        live = table.active[idx] & (table.serving[idx] >= 0)
        usable = np.zeros(len(idx), dtype=bool)
        if live.any():  # compared linear: the same test as in dB, without the logarithms
            sinr, _ = sim.radio.sinr_ratios(idx[live], table.serving[idx[live]], uplink=True)
            usable[live] = sinr >= 10.0 ** (sim.scenario.link.min_sinr_db / 10.0)
        for i in idx[usable | ~table.active[idx]].tolist():
            del self._uplink_wait[i]
        for i in idx[usable].tolist():
            sim.fleet[i].uplink_usable()

    def can_send(self, vehicle: int) -> bool:
        """Whether ``vehicle`` is attached and its uplink is above ``link.min_sinr_db`` now."""
        table = self.sim.vehicles
        bs = int(table.serving[vehicle]) if table.active[vehicle] else -1
        return self._air(vehicle, bs, uplink=True)[1] > 0.0

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
            making = self._making.get(res.adapter_id)
            if res.adapter_id in self.adapters:
                res.cached = True
                adapter_bytes = self.adapters[res.adapter_id]
            elif making is not None:  # another job is making this very adapter: wait for it, no GPU
                t = env.now
                made = yield making
                res.queue_s = env.now - t
                if made is None:
                    return self._refine_end(res, "failed", "the job making this adapter did not finish")
                res.cached = True
                adapter_bytes = made
            else:
                made_bytes, key = None, res.adapter_id
                if sim.scenario.cloud.coalesce:
                    making = self._making[key] = env.event()
                try:
                    adapter_bytes = yield from self._compute(i, request, res, refiner, timing)
                    made_bytes = adapter_bytes
                finally:
                    if making is not None:
                        del self._making[key]
                        making.succeed(made_bytes)
                if adapter_bytes is None:
                    return res

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
            late = res.arrival_t_s < env.now  # NaN (never enters the scene) compares False: met
            self._refine_end(res, "late" if late else "met", None, **air)
            if not res.cached:
                self.finished_totals.append(res.total_s)
            self._deploy(i, target_scene, res)
            return res
        finally:
            self._in_flight[i].remove(target_scene)

    def _compute(
        self, i: int, request: RefineRequest, res: RefineResult, refiner: Refiner, timing: RefineTimingModel | None
    ) -> Generator[simpy.Event, None, int | None]:
        """Admission, the GPU queue, the refiner: the adapter's size in bytes, or ``None`` (job ended, row logged)."""
        sim = self.sim
        env = sim.env
        if sim.scenario.cloud.admission == "deadline" and not math.isnan(res.deadline_t_s):
            est = self.estimate_budget(i, samples=request.samples, steps=request.steps)
            finish = env.now + est["queue_s"] + est["lm_infer_s"] + est["finetune_s"] + est["download_s"]
            if finish > res.deadline_t_s:
                self._refine_end(res, "cancelled", "admission")
                return None
        queued = env.now
        granted = env.event()
        yield self._enqueue(lambda gpu, queue_len: granted.succeed((gpu, queue_len)), res.deadline_t_s)
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
            self._refine_end(res, "failed", _one_line(exc))
            return None
        self.serving += 1
        try:
            yield env.timeout(lm_s + ft_s)
        finally:
            self.serving -= 1
            self.gpus.release(gpu)
        res.lm_infer_s, res.finetune_s = lm_s, ft_s
        res.adapter_id = work.adapter_id
        self.adapters[res.adapter_id] = int(work.adapter_bytes)
        return int(work.adapter_bytes)

    def _refine_end(self, res: RefineResult, outcome: str, reason: str | None, **air: object) -> RefineResult:
        env = self.sim.env
        res.outcome = outcome
        res.reason = reason
        res.total_s = env.now - res.requested_s
        slack = res.arrival_t_s - env.now if outcome in ("met", "late") else float("nan")
        self.sim.log.log("refine_done", env.now, res.job_id, **res.row(), slack_s=slack, **air)
        return res

    def _deploy(self, i: int, target_scene: int, res: RefineResult) -> None:
        sim = self.sim
        vehicle = sim.fleet[i]
        version = 1 + max(v for _, v in vehicle.onboard.values()) if vehicle.onboard else 1
        vehicle.install(target_scene, res.adapter_id or "", version)
        active = int(sim.vehicles.scene[i]) == target_scene
        sim.log.log(
            "deploy", sim.env.now, res.vehicle, vehicle=res.vehicle, job_id=res.job_id, target_scene=res.target_scene,
            estimator_scene=res.target_scene, estimator_version=version, adapter_id=res.adapter_id,
            policy=res.policy, active=active,
        )  # fmt: skip
