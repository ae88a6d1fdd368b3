"""The cloud node: backhaul links, a GPU pool and a job queue.

A job (e.g. an estimator refinement) travels from its base station to the cloud
over that station's backhaul (latency + bits / rate; one transfer at a time per
link and direction), waits in the cloud's queue for a free GPU (a
``simpy.Resource``), runs for its service time, and its result travels back.
:meth:`CloudNode.run` is the dispatcher: it takes a free GPU, then the next job
(first in, first out), and starts the job's service as a short-lived process.

Rows: ``job_queued`` (on arrival at the cloud, with ``queue_len``),
``job_start`` (``wait_s`` in the queue), ``job_done`` (when the result is back at
the base station: ``wait_s``, ``service_s``, ``delay_s`` from submission).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import simpy

if TYPE_CHECKING:
    from collections.abc import Generator

    from ivsim.config.schema import Backhaul
    from ivsim.sim.engine import Simulation

__all__ = ["CloudNode", "Job", "JobResult"]

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
        yield self.queue.put((job, res, started, finished))
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
        """Dispatcher: whenever a GPU is free, start the next queued job on it."""
        env = self.sim.env
        while True:
            gpu = self.gpus.request()
            yield gpu
            job, res, started, finished = yield self.queue.get()
            res.started_s = env.now
            started.succeed()
            self.sim.log.log(
                "job_start", env.now, job.job_id, job_id=job.job_id, job_kind=job.kind, vehicle=job.vehicle,
                wait_s=res.wait_s, queue_len=len(self.queue.items),
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
