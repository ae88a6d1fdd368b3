"""Refinement policies: when a vehicle asks the cloud to refine its channel estimator.

A policy is consulted by the vehicle (:mod:`ivsim.sim.vehicle`) when it departs
and each time it enters a new scene, and returns the scenes (numbers in
``sim.scene_names``) to request a refinement for now; the vehicle then starts one
job per scene with :meth:`ivsim.sim.cloud.CloudNode.request_refinement`. Adding a
policy is one class following :class:`RefinePolicy` and one entry in
:data:`POLICIES` (its key is the ``refinement.policy.kind`` of the scenario); a kind
``package.module:Class`` imports a researcher's own class instead
(:func:`ivsim.registry.resolve_kind`). A policy is built once per run from its
:class:`~ivsim.config.schema.RefinePolicySpec`.

Built-in kinds:

``never``
    never requests (the default: a scenario without a ``refinement`` section runs
    as before).
``reactive``
    on entering a scene its estimator was not made or refined for, and when no job
    for that scene is already in flight for the vehicle, requests that scene.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from ivsim.errors import ScenarioError
from ivsim.registry import resolve_kind

if TYPE_CHECKING:
    from ivsim.config.schema import RefinePolicySpec
    from ivsim.sim.engine import Simulation

__all__ = ["POLICIES", "NeverPolicy", "ReactivePolicy", "RefinePolicy", "make_policy"]


@runtime_checkable
class RefinePolicy(Protocol):
    """Decides, at a vehicle's departure and scene changes, which refinements it requests."""

    kind: str

    def on_scene(self, sim: Simulation, vehicle: int, scene: int, *, departing: bool) -> tuple[int, ...]:
        """Return the target scenes to request a refinement for now (empty: none).

        Parameters
        ----------
        sim
            The running simulation (its ``vehicles`` table holds ``estimator_scene``,
            ``estimator_version``; ``sim.cloud.refinements_in_flight(vehicle)`` the
            target scenes of the vehicle's unfinished jobs).
        vehicle
            Row of the vehicle in ``sim.vehicles``.
        scene
            The scene it is entering (number in ``sim.scene_names``).
        departing
            True at the start of a trip (the first scene of the route).
        """
        ...


class NeverPolicy:
    """Never requests a refinement."""

    kind: ClassVar[str] = "never"

    def __init__(self, spec: RefinePolicySpec) -> None:
        self.spec = spec

    def on_scene(self, sim: Simulation, vehicle: int, scene: int, *, departing: bool) -> tuple[int, ...]:
        """Return no scene."""
        return ()


class ReactivePolicy:
    """Request the scene being entered if the estimator is not made for it and no job for it is in flight."""

    kind: ClassVar[str] = "reactive"

    def __init__(self, spec: RefinePolicySpec) -> None:
        self.spec = spec

    def on_scene(self, sim: Simulation, vehicle: int, scene: int, *, departing: bool) -> tuple[int, ...]:
        """Return ``(scene,)`` when the held estimator is for another scene and no job for ``scene`` is in flight."""
        held = int(sim.vehicles.estimator_scene[vehicle])
        if held < 0 or held == scene or scene in sim.cloud.refinements_in_flight(vehicle):
            return ()
        return (scene,)


POLICIES: dict[str, type] = {"never": NeverPolicy, "reactive": ReactivePolicy}
"""Built-in refinement policies by ``refinement.policy.kind``."""


def make_policy(spec: RefinePolicySpec) -> RefinePolicy:
    """Build the policy of ``refinement.policy`` (a key of :data:`POLICIES` or ``module:Class``).

    Raises
    ------
    ScenarioError
        Unknown kind, or a ``module:Class`` that cannot be imported or does not
        follow :class:`RefinePolicy`.
    """
    cls = resolve_kind(spec.kind, POLICIES, what="refinement.policy.kind", error=ScenarioError)
    policy = cls(spec)
    if not isinstance(policy, RefinePolicy):
        msg = f"refinement.policy.kind {spec.kind!r}: {cls.__name__} has no on_scene(sim, vehicle, scene, *, departing)"
        raise ScenarioError(msg)
    return policy
