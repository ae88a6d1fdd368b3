"""``link.fidelity: full``: the cloud's refinement jobs computed for real.

:class:`NeuralRefiner` follows the simulation's :class:`~ivsim.refine.service.Refiner`
protocol. When a job reaches a cloud GPU in the simulation, :meth:`NeuralRefiner.refine`

1. asks the large model (:class:`~ivsim.ai.large_model.LargeModel`,
   ``models/large_model.safetensors``) for ``N`` channels of the target scene's
   profile at the vehicle's speed and distance (conditioned, when the vehicle
   uploads ``P`` pilot observations, on ``P`` LS observations of target-scene
   channels at 10 dB);
2. fine-tunes a LoRA adapter of the vehicle's base diffusion estimator on them for
   ``K`` steps (:func:`~ivsim.ai.refine.lora_finetune`);
3. merges it into a copy of the estimator and registers it with the link evaluator
   under its adapter id, so every later frame of a vehicle holding that adapter is
   decoded by it.

The adapter's serialised size is the download. Adapters are refined from the
vehicle's *base* weights (the shipped estimator of the scene it departed in), never
stacked on an earlier adapter. With ``refinement.cache_dir`` the adapters are also
written to / read from that folder (``<adapter_id>.safetensors``), so a later run
skips the computation; a file there that does not fit the base weights makes the
job fail with a logged reason.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from ivsim.ai.estimators import DiffusionChannelEstimator
from ivsim.ai.large_model import LargeModel, large_model_weights_path, pilot_observations
from ivsim.ai.refine import Adapter, adapter_id_for, apply_adapter, lora_finetune, weights_id
from ivsim.config.schema import Scenario, profile_hash
from ivsim.errors import ModelError

__all__ = ["NeuralRefiner"]

log = logging.getLogger(__name__)

PILOT_SNR_DB = 10.0
"""SNR of the pilot observations a vehicle uploads (when ``refinement.upload_pilots > 0``)."""


class NeuralRefiner:
    """Real large-model generation and LoRA fine-tuning behind the cloud's refinement jobs.

    Parameters
    ----------
    scenario
        The scenario (``refinement``, ``scenes``, ``profiles``, ``link.grid``).
    evaluator
        The run's :class:`~ivsim.ai.neural_link.NeuralLinkEvaluator` (base estimators
        come from it; refined ones are registered with it).
    timing
        Unused here (the cloud prices the job); accepted for the protocol's constructor.
    seed
        Seed of generation and fine-tuning (combined with each request's seed).
    notes
        Lines for the run log.

    Raises
    ------
    ModelError
        The large model's weights are missing, corrupt, or for another grid.
    """

    name = "full"

    def __init__(
        self,
        scenario: Scenario,
        *,
        evaluator: Any,
        timing: Any = None,  # noqa: ARG002
        seed: int = 0,
        notes: list[str] | None = None,
    ) -> None:
        self.scenario = scenario
        self.evaluator = evaluator
        self.notes = notes if notes is not None else []
        spec = scenario.refinement
        self.spec = spec
        weights = getattr(spec, "large_model", None) or large_model_weights_path()
        if not Path(weights).is_file():
            msg = f"{weights}: large model weights not found (rebuild them: ivsim train large-model)"
            raise ModelError(msg)
        self.large_model = LargeModel(weights, device="cpu")
        self.large_model_id = weights_id(self.large_model.path)
        self.large_model.check_grid(evaluator.grid)
        self.seed = int(seed)
        self.cache_dir = Path(spec.cache_dir) if getattr(spec, "cache_dir", None) else None
        self.scene_names = tuple(scenario.scenes)
        self._base_ids: dict[str, str] = {}

    def _base(self, scene: str) -> DiffusionChannelEstimator:
        est = self.evaluator.estimator_for(self.scene_names.index(scene))[0]
        if not isinstance(est, DiffusionChannelEstimator):
            msg = (
                f"the estimator held for scene {scene!r} is {getattr(est, 'name', est)!r}: only diffusion estimators "
                "can be refined"
            )
            raise ModelError(msg)
        return est

    def _base_id(self, scene: str) -> str:
        if scene not in self._base_ids:
            est = self._base(scene)
            self._base_ids[scene] = weights_id(est.path) if est.path is not None else "untrained"
        return self._base_ids[scene]

    def adapter_id(self, request: Any) -> str:
        """The cache key of ``request``: base weights, large model, target profile, N, K, rank, pilots and seed."""
        if request.target_scene not in self.scenario.scenes:
            msg = f"unknown target scene {request.target_scene!r} (allowed: {', '.join(self.scene_names)})"
            raise ModelError(msg)
        target = self.scenario.profiles[self.scenario.scenes[request.target_scene].profile]
        made_from = f"{self._base_id(request.base_scene)}+{self.large_model_id}+p{request.pilots}"
        return adapter_id_for(
            made_from, profile_hash(target), request.samples, request.steps, request.rank, request.seed
        )

    def refine(self, request: Any) -> Any:
        """Generate, fine-tune, merge and register; returns the :class:`~ivsim.refine.service.RefineWork`."""
        from ivsim.refine.service import RefineWork

        aid = self.adapter_id(request)
        base = self._base(request.base_scene)
        scene = self.scenario.scenes[request.target_scene]
        profile = self.scenario.profiles[scene.profile]
        lm_s = ft_s = 0.0
        adapter = None
        cached_file = self.cache_dir / f"{aid}.safetensors" if self.cache_dir is not None else None
        if cached_file is not None and cached_file.is_file():
            adapter = Adapter.load(cached_file)
        if adapter is None:
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + int(request.seed)) % (2**63))
            t0 = time.perf_counter()
            pilots = None
            if request.pilots > 0:
                from ivsim.phy import ChannelSampler

                sampler = ChannelSampler(profile, self.evaluator.grid, carrier_hz=self.evaluator.carrier_hz)
                h_obs = sampler.sample(request.pilots, speed_mps=float(request.speed_mps), generator=gen)
                pilots = pilot_observations(
                    h_obs, self.evaluator.grid.pilot_ofdm_symbol_indices, PILOT_SNR_DB, generator=gen
                )
            h = self.large_model.generate(
                profile, request.samples, carrier_hz=self.evaluator.carrier_hz, speed_mps=float(request.speed_mps),
                distance_m=float(request.distance_m), pilots=pilots, generator=gen,
            )  # fmt: skip
            lm_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            adapter = lora_finetune(
                base, h, steps=request.steps, rank=request.rank, generator=gen,
                metadata={
                    "ivsim.adapter_id": aid,
                    "ivsim.target_scene": request.target_scene,
                    "ivsim.target_profile_hash": profile_hash(profile),
                    "ivsim.data": "generated",
                    "ivsim.seed": str(request.seed),
                },
            )  # fmt: skip
            ft_s = time.perf_counter() - t0
            if cached_file is not None:
                adapter.save(cached_file)
        refined = apply_adapter(base, adapter)
        self.evaluator.add_refined(aid, refined)
        log.info("refined %s -> %s (%s): %.1f s generation, %.1f s fine-tuning", request.base_scene,
                 request.target_scene, aid, lm_s, ft_s)  # fmt: skip
        return RefineWork(adapter_id=aid, adapter_bytes=adapter.num_bytes, lm_infer_wall_s=lm_s, finetune_wall_s=ft_s)
