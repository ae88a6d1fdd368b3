"""What a refinement job computes: the :class:`Refiner` protocol, the analytic refiner and the factory.

The cloud (:meth:`ivsim.sim.cloud.CloudNode.request_refinement`) turns a
vehicle's request into a :class:`RefineRequest`, asks the refiner for the
request's :meth:`Refiner.adapter_id` (its cache key: a second request with the
same inputs is served from the cloud's adapter cache without a GPU) and, on a
miss, calls :meth:`Refiner.refine` when the job gets a GPU. The returned
:class:`RefineWork` gives the adapter's size (the download) and, when something
really ran, its wall times (``refinement.latency: measured`` prices the GPU
stages with them).

``link.fidelity: analytic`` uses :class:`AnalyticRefiner`, which computes
nothing; ``full`` uses :data:`FULL_REFINER`, imported by name on demand so that
the simulation never imports torch (as :func:`ivsim.sim.links.make_link_evaluator`
does for the neural link); ``fast`` uses :data:`FAST_REFINER`, an analytic refiner
that registers each adapter's calibrated estimator state with the fast link.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ivsim.errors import ModelError

if TYPE_CHECKING:
    from ivsim.config.schema import Scenario
    from ivsim.refine.budget import RefineTimingModel

__all__ = [
    "FAST_REFINER",
    "FULL_REFINER",
    "AnalyticRefiner",
    "RefineRequest",
    "RefineWork",
    "Refiner",
    "adapter_key",
    "make_refiner",
]


@dataclass(frozen=True)
class RefineRequest:
    """One vehicle's request to refine its estimator for a scene.

    Attributes
    ----------
    job_id
        Unique name of the job.
    vehicle
        Vehicle id.
    base_scene
        Scene of the base weights the adapter is trained on (the estimator the
        vehicle departed with).
    target_scene
        Scene to refine for.
    samples, steps, rank
        Channel samples N the large model generates, LoRA steps K, LoRA rank.
    pilots
        LS pilot observations uploaded with the request.
    speed_mps
        Vehicle speed at the request.
    distance_m
        Distance from the vehicle to its serving base station at the request.
    seed
        Seed of the job's computation; the same for every request of the same
        ``(base_scene, target_scene)`` in a run, so equal requests share an adapter.
    """

    job_id: str
    vehicle: str
    base_scene: str
    target_scene: str
    samples: int
    steps: int
    rank: int
    pilots: int
    speed_mps: float
    distance_m: float
    seed: int


@dataclass
class RefineWork:
    """What a refiner produced for one request.

    Attributes
    ----------
    adapter_id
        The adapter's id (equals :meth:`Refiner.adapter_id` of the request).
    adapter_bytes
        Its size: the download to the vehicle.
    lm_infer_wall_s, finetune_wall_s
        Measured wall times of the real computation; ``None`` when nothing ran.
    """

    adapter_id: str
    adapter_bytes: int
    lm_infer_wall_s: float | None = None
    finetune_wall_s: float | None = None


@runtime_checkable
class Refiner(Protocol):
    """Refines an estimator for a request (one call per job that gets a GPU)."""

    name: str

    def adapter_id(self, request: RefineRequest) -> str:
        """Cache key of the request's adapter: the same inputs give the same id."""
        ...

    def refine(self, request: RefineRequest) -> RefineWork:
        """Compute the adapter; an :class:`~ivsim.errors.IvsimError` makes the job fail (the run goes on)."""
        ...


def adapter_key(request: RefineRequest) -> str:
    """12 hex digits of the SHA-256 of ``[base_scene, target_scene, samples, steps, rank, seed]``."""
    return _key_digest(request.base_scene, request.target_scene, request.samples, request.steps, request.rank,
                       request.seed)  # fmt: skip


@functools.lru_cache(maxsize=4096)
def _key_digest(*key: object) -> str:
    """:func:`adapter_key` of its fields (a run asks for the same few keys thousands of times)."""
    return hashlib.sha256(json.dumps(list(key)).encode()).hexdigest()[:12]


class AnalyticRefiner:
    """Computes nothing: the adapter's id is :func:`adapter_key`, its size the timing model's.

    Parameters
    ----------
    timing
        The job's timing model (its adapter size).
    """

    name = "analytic"

    def __init__(self, timing: RefineTimingModel) -> None:
        self.timing = timing

    def adapter_id(self, request: RefineRequest) -> str:
        """Return :func:`adapter_key` of ``request``."""
        return adapter_key(request)

    def refine(self, request: RefineRequest) -> RefineWork:
        """Return the adapter's id and size; no wall times (nothing ran)."""
        return RefineWork(adapter_id=self.adapter_id(request), adapter_bytes=self.timing.adapter_bytes(request.rank))


FULL_REFINER = "ivsim.ai.refine_job:NeuralRefiner"
"""The refiner of ``link.fidelity: full`` (it follows :class:`Refiner`)."""
FAST_REFINER = "ivsim.phy.abstraction:CalibratedRefiner"
"""The refiner of ``link.fidelity: fast``: an :class:`AnalyticRefiner` that tells the calibrated link which
refined estimator state each adapter stands for (nothing is computed)."""


def make_refiner(
    scenario: Scenario,
    *,
    evaluator: Any,
    timing: RefineTimingModel | None,
    seed: int,
    notes: list[str] | None = None,
) -> Refiner:
    """Return the refiner for ``link.fidelity``.

    Parameters
    ----------
    scenario
        The scenario (``link.fidelity``, ``refinement``).
    evaluator
        The run's link evaluator (the full refiner takes the estimators from it).
    timing
        The job's timing model; ``None`` only with ``refinement.latency: measured``.
    seed
        Seed of the refiner's own randomness.
    notes
        Lines for the run's log are appended here (e.g. a fall-back).

    Raises
    ------
    ModelError
        The analytic refiner is needed but there are no timings to size its adapters.
    """
    if scenario.link.fidelity == "full":
        mod_name, _, cls_name = FULL_REFINER.partition(":")
        try:
            cls = getattr(import_module(mod_name), cls_name)
        except (ImportError, AttributeError) as exc:
            if notes is not None:
                notes.append(f"refinement: {FULL_REFINER} unavailable ({exc}); using the analytic refiner")
        else:
            return cls(scenario, evaluator=evaluator, timing=timing, seed=seed, notes=notes)
    if scenario.link.fidelity == "fast" and timing is not None and hasattr(evaluator, "register_adapter"):
        # analytic timing and sizes; the refined state a job delivers is registered with the calibrated link
        mod_name, _, cls_name = FAST_REFINER.partition(":")
        cls = getattr(import_module(mod_name), cls_name)
        return cls(scenario, evaluator=evaluator, timing=timing, seed=seed, notes=notes)
    if timing is None:
        msg = (
            f"refinement: the analytic refiner needs adapter sizes, and latency profile "
            f"{scenario.refinement.latency_profile!r} has no refine timings; state refinement.assumed"
        )
        raise ModelError(msg)
    return AnalyticRefiner(timing)
