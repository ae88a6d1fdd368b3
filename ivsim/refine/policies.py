"""Refinement timing policies: when a vehicle asks the cloud to refine its channel estimator, and for what.

A vehicle consults the run's policy at *decision points*: when it departs (``"depart"``), when it
enters a scene (``"scene"``, only with a map-based detector: without a map it does not know),
when its detector raises an alarm (``"detect"``), every ``tick_s`` seconds for policies that
poll (``"tick"``) and every ``update_s`` seconds for detectors that re-predict as the vehicle
moves (``"update"``). The policy sees a :class:`Decision` (the vehicle, the time, the scene it is in,
the boundaries its detector predicts, the scenes its on-board estimators cover, the jobs it has
pending, and a budget estimate) and returns :class:`Plan` s: a target scene, when to send the
request (now or later: the vehicle waits and re-checks before sending) and the deadline it aims
for (the predicted arrival at the boundary). The cloud logs every job's deadline, the actual
arrival and the slack (:mod:`ivsim.sim.cloud`).

Built-in kinds (``refinement.policy.kind``; parameters beside ``kind``, see
:class:`~ivsim.config.schema.RefinePolicySpec`):

``never``
    never asks (the lower bound).
``reactive``
    asks for the scene it is in when its estimators do not cover it: on entering it (map-based
    detector) or on an alarm (``channel_statistics``). The deadline is already behind it.
``proactive``
    for each predicted boundary into a scene not covered: asks at ``predicted arrival - estimated
    budget - margin_s`` (the budget from the configured rates, the vehicle's link now, the cloud's
    queue and the job size: :meth:`~ivsim.sim.cloud.CloudNode.estimate_budget`); reactive as a
    fall-back when it finds itself in a scene not covered.
``adaptive``
    proactive, but the budget is the ``quantile`` of the total times of the last ``window``
    finished jobs (the whole cloud's, once ``min_observed`` have finished; the estimate before),
    so it learns the queueing the estimate cannot see. With ``fit_steps`` it cuts K so the job
    fits the time left (never below ``min_steps``): a policy choosing quality vs time.
``cached``
    asks only for adapters the cloud already holds (download only), ahead of the boundary by the
    estimated download time plus ``margin_s``; with ``fallback: reactive`` asks like reactive
    when the cloud holds none.
``periodic``
    every ``period_s``, asks for the scene it is in when not covered (polling, no detector needed).
``oracle``
    the scene's own estimator is always on board at no cost (the upper bound; no jobs): the
    vehicle swaps to it on every scene entry.

A researcher's policy is a class with ``kind``, ``tick_s`` (``None`` unless it polls) and
``decide(decision) -> list[Plan]``, named ``package.module:Class`` in the scenario; its own
parameters beside ``kind`` arrive in ``spec.model_extra``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import numpy as np

from ivsim.errors import ScenarioError
from ivsim.registry import resolve_kind

if TYPE_CHECKING:
    from ivsim.config.schema import RefinePolicySpec
    from ivsim.refine.detectors import Boundary
    from ivsim.sim.engine import Simulation

__all__ = [
    "KINDS",
    "POLICIES",
    "AdaptivePolicy",
    "CachedPolicy",
    "Decision",
    "NeverPolicy",
    "OraclePolicy",
    "PeriodicPolicy",
    "Plan",
    "ProactivePolicy",
    "ReactivePolicy",
    "RefinePolicy",
    "make_policy",
]


@dataclass(frozen=True)
class Plan:
    """A refinement a policy wants.

    Attributes
    ----------
    target_scene
        Scene number to refine for.
    start_t_s
        When to send the request (the vehicle sends it at once if this is not in the future).
    deadline_t_s
        When the refined estimator should be on board (the predicted arrival; the request time for
        a reactive request).
    samples, steps
        N and K of the job.
    """

    target_scene: int
    start_t_s: float
    deadline_t_s: float
    samples: int
    steps: int


@dataclass
class Decision:
    """What a policy sees at a decision point.

    Attributes
    ----------
    sim
        The running simulation.
    vehicle
        Row of the vehicle in ``sim.vehicles``.
    t_s
        Now.
    reason
        ``"depart"``, ``"scene"``, ``"detect"``, ``"tick"`` (the policy's own polling) or
        ``"update"`` (the detector's periodic new predictions).
    scene
        The scene the vehicle is in (for a map-free detector: as the cloud resolves it from the
        position the vehicle reports with its request).
    boundaries
        The detector's predicted boundaries ahead, nearest first.
    covered
        Scenes the vehicle's on-board estimators (base weights and deployed adapters) are made for.
    pending
        Scenes with a job in flight or a request planned.
    samples, steps
        The scenario's N and K (``refinement.samples``, ``refinement.steps``).
    """

    sim: Simulation
    vehicle: int
    t_s: float
    reason: str
    scene: int
    boundaries: Sequence[Boundary] = ()
    covered: frozenset[int] = frozenset()
    pending: frozenset[int] = frozenset()
    samples: int = 256
    steps: int = 100
    _taken: set[int] = field(default_factory=set)

    def wants(self, scene: int) -> bool:
        """Whether ``scene`` is neither covered nor pending nor already planned in this decision."""
        if scene in self.covered or scene in self.pending or scene in self._taken:
            return False
        self._taken.add(scene)
        return True

    def budget(self, *, samples: int, steps: int) -> dict[str, float]:
        """The cloud's estimate of a job's stages and ``total_s`` for this vehicle now."""
        return self.sim.cloud.estimate_budget(self.vehicle, samples=samples, steps=steps)

    def upcoming(self) -> list[Boundary]:
        """The first predicted boundary into each scene not covered and not pending, nearest first."""
        return [b for b in self.boundaries if self.wants(b.target_scene)]


@runtime_checkable
class RefinePolicy(Protocol):
    """Decides, at a vehicle's decision points, which refinements it requests and when."""

    kind: str
    tick_s: float | None

    def decide(self, decision: Decision) -> Sequence[Plan]:
        """Return the refinements to request (now or later); empty: none."""
        ...


class _Policy:
    """Shared by the built-in policies: the job size of ``refinement`` or the policy's own."""

    kind: ClassVar[str] = ""
    tick_s: float | None = None
    oracle: ClassVar[bool] = False

    def __init__(self, spec: RefinePolicySpec) -> None:
        self.spec = spec

    def size(self, d: Decision) -> tuple[int, int]:
        """``(samples, steps)`` of this policy's jobs."""
        return (self.spec.samples or d.samples, self.spec.steps or d.steps)

    def now(self, d: Decision) -> list[Plan]:
        """A request for the scene the vehicle is in, now, if it is not covered (reactive behaviour)."""
        if not d.wants(d.scene):
            return []
        n, k = self.size(d)
        return [Plan(d.scene, d.t_s, d.t_s, n, k)]

    def reacts(self, d: Decision) -> bool:
        """Whether this decision point tells the vehicle it is in a scene (entry, departure, alarm)."""
        return d.reason in ("depart", "scene", "detect")

    def decide(self, decision: Decision) -> Sequence[Plan]:  # pragma: no cover - overridden
        raise NotImplementedError


class NeverPolicy(_Policy):
    """Never requests a refinement."""

    kind: ClassVar[str] = "never"
    asks: ClassVar[bool] = False
    """Never asks: vehicles skip the decision points (and the detector's predictions) altogether."""

    def decide(self, decision: Decision) -> Sequence[Plan]:
        """Return no plan."""
        return []


class OraclePolicy(NeverPolicy):
    """The scene's own estimator is always on board (the vehicle swaps on every scene entry); no jobs."""

    kind: ClassVar[str] = "oracle"
    oracle: ClassVar[bool] = True


class ReactivePolicy(_Policy):
    """Request the scene the vehicle is in when its estimators do not cover it and none is pending."""

    kind: ClassVar[str] = "reactive"

    def decide(self, decision: Decision) -> Sequence[Plan]:
        """Return a request for the current scene on entering it or on an alarm."""
        return self.now(decision) if self.reacts(decision) else []


class PeriodicPolicy(_Policy):
    """Every ``period_s``, request the scene the vehicle is in when not covered."""

    kind: ClassVar[str] = "periodic"

    def __init__(self, spec: RefinePolicySpec) -> None:
        super().__init__(spec)
        self.tick_s = float(spec.period_s)

    def decide(self, decision: Decision) -> Sequence[Plan]:
        """Return a request for the current scene at a tick."""
        return self.now(decision) if decision.reason == "tick" else []


class ProactivePolicy(_Policy):
    """Request each uncovered scene ahead at predicted arrival - estimated budget - ``margin_s``."""

    kind: ClassVar[str] = "proactive"

    def budget_s(self, d: Decision, samples: int, steps: int) -> float:
        """The budget the start time allows for: the cloud's estimate."""
        return d.budget(samples=samples, steps=steps)["total_s"]

    def job(self, d: Decision, b: Boundary) -> Plan:
        """The plan for boundary ``b``."""
        n, k = self.size(d)
        start = b.predicted_t_s - self.budget_s(d, n, k) - self.spec.margin_s
        return Plan(b.target_scene, max(d.t_s, start), b.predicted_t_s, n, k)

    def decide(self, decision: Decision) -> Sequence[Plan]:
        """Plan one job per predicted boundary into an uncovered scene; reactive where already inside one."""
        plans = self.now(decision) if self.reacts(decision) else []
        return plans + [self.job(decision, b) for b in decision.upcoming()]


class AdaptivePolicy(ProactivePolicy):
    """Proactive with the budget learnt online: a high quantile of the finished jobs' total times."""

    kind: ClassVar[str] = "adaptive"

    def budget_s(self, d: Decision, samples: int, steps: int) -> float:
        """The ``quantile`` of the last ``window`` finished jobs' ``total_s`` once enough finished, else the estimate."""
        seen = d.sim.cloud.finished_totals[-self.spec.window :]
        estimate = super().budget_s(d, samples, steps)
        if len(seen) < self.spec.min_observed:
            return estimate
        return float(np.quantile(seen, self.spec.quantile))

    def job(self, d: Decision, b: Boundary) -> Plan:
        """The proactive plan, with K cut to fit the time left when ``fit_steps`` and it would start late."""
        plan = super().job(d, b)
        if not self.spec.fit_steps or plan.start_t_s > d.t_s:
            return plan
        parts = d.budget(samples=plan.samples, steps=plan.steps)
        per_step = parts.get("finetune_per_step_s", 0.0)
        if per_step <= 0:
            return plan
        left = b.predicted_t_s - d.t_s - self.spec.margin_s - (parts["total_s"] - parts["finetune_s"])
        fixed = parts["finetune_s"] - per_step * plan.steps
        k = int(min(plan.steps, max(self.spec.min_steps, math.floor((left - fixed) / per_step))))
        return Plan(plan.target_scene, d.t_s, plan.deadline_t_s, plan.samples, k)


class CachedPolicy(_Policy):
    """Fetch adapters the cloud already holds, ahead of the boundary; optionally reactive otherwise."""

    kind: ClassVar[str] = "cached"

    def decide(self, decision: Decision) -> Sequence[Plan]:
        """Plan downloads of cached adapters for the scenes ahead (and the one it is in)."""
        d = decision
        n, k = self.size(d)
        cloud = d.sim.cloud
        plans = []
        here = self.reacts(d) and d.scene not in d.covered and d.scene not in d.pending
        if here and (self.spec.fallback == "reactive" or cloud.has_adapter(d.vehicle, d.scene, samples=n, steps=k)):
            plans += self.now(d)
        for b in d.boundaries:
            if b.target_scene in d.covered or b.target_scene in d.pending or b.target_scene in d._taken:
                continue
            if cloud.has_adapter(d.vehicle, b.target_scene, samples=n, steps=k):
                d.wants(b.target_scene)
                est = d.budget(samples=n, steps=k)
                lead = est["upload_s"] + est["download_s"] + self.spec.margin_s
                plans.append(Plan(b.target_scene, max(d.t_s, b.predicted_t_s - lead), b.predicted_t_s, n, k))
        return plans


KINDS: dict[str, type] = {
    "never": NeverPolicy,
    "reactive": ReactivePolicy,
    "proactive": ProactivePolicy,
    "adaptive": AdaptivePolicy,
    "cached": CachedPolicy,
    "periodic": PeriodicPolicy,
    "oracle": OraclePolicy,
}
"""Built-in refinement policies by ``refinement.policy.kind``."""

POLICIES = KINDS
"""Alias of :data:`KINDS`."""


def make_policy(spec: RefinePolicySpec) -> RefinePolicy:
    """Build the policy of ``refinement.policy`` (a key of :data:`KINDS` or ``module:Class``).

    Raises
    ------
    ScenarioError
        Unknown kind, or a ``module:Class`` that cannot be imported or does not follow
        :class:`RefinePolicy`.
    """
    cls = resolve_kind(spec.kind, KINDS, what="refinement.policy.kind", error=ScenarioError)
    policy = cls(spec)
    if not isinstance(policy, RefinePolicy):
        msg = f"refinement.policy.kind {spec.kind!r}: {cls.__name__} lacks kind, tick_s or decide(decision)"
        raise ScenarioError(msg)
    return policy
