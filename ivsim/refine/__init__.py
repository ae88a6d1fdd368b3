"""Cloud refinement of the vehicles' channel estimators (torch-free).

A vehicle's downlink channel estimator is made for one scene; the cloud can
refine it for another: the vehicle uploads a request, the job waits for a cloud
GPU, the large model generates channel samples of the target scene, a LoRA
adapter is fine-tuned on them, and the adapter travels back to the vehicle, which
deploys it. The job's life as SimPy events is in :mod:`ivsim.sim.cloud`
(:meth:`~ivsim.sim.cloud.CloudNode.request_refinement`); this package holds what
it is made of:

``detectors``
    how a vehicle learns of scene changes ahead or under way
    (:class:`~ivsim.refine.detectors.Detector`, the registry
    :data:`~ivsim.refine.detectors.KINDS` keyed by ``refinement.detector.kind``).
``policies``
    when a vehicle asks, and for what (:class:`~ivsim.refine.policies.RefinePolicy`, the
    registry :data:`~ivsim.refine.policies.KINDS` keyed by ``refinement.policy.kind``).
``budget``
    what a job costs in seconds and bytes (:class:`~ivsim.refine.budget.RefineTimingModel`).
``service``
    what a job computes (:class:`~ivsim.refine.service.Refiner`; the analytic one
    computes nothing, the full one is :data:`~ivsim.refine.service.FULL_REFINER`).
"""

from __future__ import annotations

from ivsim.refine.budget import RefineTimingModel, load_refine_timing, pilot_bytes
from ivsim.refine.detectors import Boundary, Detector, make_detector
from ivsim.refine.policies import POLICIES, Decision, Plan, RefinePolicy, make_policy
from ivsim.refine.service import (
    FULL_REFINER,
    AnalyticRefiner,
    Refiner,
    RefineRequest,
    RefineWork,
    make_refiner,
)

__all__ = [
    "FULL_REFINER",
    "POLICIES",
    "AnalyticRefiner",
    "Boundary",
    "Decision",
    "Detector",
    "Plan",
    "RefinePolicy",
    "RefineRequest",
    "RefineTimingModel",
    "RefineWork",
    "Refiner",
    "load_refine_timing",
    "make_detector",
    "make_policy",
    "make_refiner",
    "pilot_bytes",
]
