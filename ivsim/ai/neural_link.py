"""``link.fidelity: full``: every frame of the simulation through the neural link, batched.

:class:`NeuralLinkEvaluator` follows the simulation's
:class:`~ivsim.sim.links.LinkEvaluator` protocol. The link batcher hands it every
frame requested within one batching window (``link.batch_window_s``, default the
same simulated instant) and it runs them through one :class:`~ivsim.ai.link.LinkChain`
call:

* **image**: frame ``f`` of vehicle ``v`` shows image ``(13 v + f) mod N`` of the
  image folder (``link.images``; default the repo's held-out test frames), resized to
  ``link.image_size``;
* **channel**: drawn by Sionna for the scene the vehicle is in, at its speed and the
  serving cell's carrier, ``link.channel_realizations`` draws per frame; the noise
  variance is ``1 / SINR`` (interference is treated as noise);
* **random numbers** (common random numbers across runs): each :meth:`~NeuralLinkEvaluator.evaluate`
  call seeds its own generators from the run seed and the batch's sent ``(vehicle,
  frame)`` pairs (:func:`~ivsim.ai.link.stable_seed`, one stream each for channels,
  noise and estimator sampling), and sends the frames in ``(vehicle, frame)`` order.
  A batch of the same frames therefore sees the same channels and noise whatever
  came before it, whatever order its frames came in, and whichever estimators decode
  them; an estimator group's sampling noise depends only on the batch and the group's
  frames. Runs that differ only in their refinement policy see the same draws for
  the frames they batch alike;
* **estimator**: the receiver's. In the downlink the vehicle receives and uses the
  estimator it holds, by default the one of the scene it departed in, so a vehicle
  that crosses into another scene is mismatched; in the uplink the base station
  receives and holds one for every scene. ``link.estimator.kind``: ``diffusion``
  (weights ``models/estimator_<scene>.safetensors`` when their stored profile hash
  matches the scene's profile; otherwise that scene falls back to ``lmmse``, and the
  run log says so in a ``note`` row), ``lmmse`` (the held scene's statistics),
  ``ls``, ``perfect`` (genie CSI) or ``package.module:Class``;
* **timing**: airtime = the frame's resource grids over its bandwidth share;
  compute latency ``compute_s`` from a :mod:`~ivsim.ai.latency` profile (default,
  deterministic) or the measured wall time of the batched call
  (``link.latency: measured``); delay = queue + airtime + compute.

Per-frame columns of ``extra``: ``codec``, ``estimator``, ``estimator_scene``,
``symbols``, ``compute_s`` and ``pilot_resid_db`` (the receiver-side pilot residual
of :class:`~ivsim.ai.link.ChainOutput`, dB; NaN in outage).

A frame below ``link.min_sinr_db`` is an outage (not sent, no quality); a frame the
codec declares lost (digital: failed code blocks) is dropped with reason ``decode``;
a frame later than its deadline with reason ``deadline`` (its quality is still
logged).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ivsim.ai import zoo
from ivsim.ai.codecs import make_codec
from ivsim.ai.estimators import (
    DIFFUSION_ARCHITECTURE,
    ESTIMATORS,
    CovarianceCache,
    DiffusionChannelEstimator,
    LMMSEChannelEstimator,
    LSChannelEstimator,
    estimator_weights_path,
    make_estimator,
)
from ivsim.ai.images import DEFAULT_IMAGES, ImageFolder
from ivsim.ai.latency import LatencyProfile, default_profile_name, load_latency_profile
from ivsim.ai.link import PERFECT, ChannelBank, LinkChain, stable_seed
from ivsim.config.schema import GridModel, Scenario, profile_hash
from ivsim.errors import ModelError, ScenarioError
from ivsim.phy import GridSpec
from ivsim.registry import resolve_kind
from ivsim.sim.links import TxBatch, TxResult, neural_tx_result

__all__ = ["NeuralLinkEvaluator", "grid_from_spec", "resolve_device"]

log = logging.getLogger(__name__)


def resolve_device(requested: str, *, notes: list[str] | None = None) -> torch.device:
    """``auto`` -> CUDA when available, else CPU (noted); ``cuda`` without a GPU is an error.

    Raises
    ------
    ScenarioError
        ``device: cuda`` and ``torch.cuda.is_available()`` is false.
    """
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if requested == "cuda":
        msg = "device: cuda, but torch sees no CUDA GPU (allowed here: auto, cpu)"
        raise ScenarioError(msg)
    if notes is not None:
        notes.append("device auto: no CUDA GPU, running the neural link on the CPU")
    return torch.device("cpu")


def grid_from_spec(spec: GridModel) -> GridSpec:
    """The :class:`~ivsim.phy.GridSpec` of a scenario's ``link.grid``."""
    return GridSpec(
        num_ofdm_symbols=spec.num_ofdm_symbols,
        fft_size=spec.fft_size,
        subcarrier_spacing_hz=spec.subcarrier_spacing_hz,
        pilot_ofdm_symbol_indices=spec.pilot_ofdm_symbol_indices,
        num_rx_ant=spec.num_rx_ant,
    )


class NeuralLinkEvaluator:
    """The full neural link behind the simulation's link protocol (see the module docstring).

    Parameters
    ----------
    scenario
        The scenario (its ``link``, ``scenes``, ``profiles``, ``base_stations``, ``device``).
    seed
        Seeds channels, noise and diffusion sampling, together with each batch's
        ``(vehicle, frame)`` pairs (same seed and batch, same results on a device).
    notes
        Lines for the run's log (estimator fall-backs, device fall-back) are appended here.

    Raises
    ------
    ModelError
        Unknown codec or estimator kind; weights missing, corrupt or for another
        architecture or grid; image folder empty; a latency profile without the
        codec's or estimator's entry.
    ScenarioError
        ``device: cuda`` without a GPU.
    """

    name = "full"
    scores_images = True

    def __init__(self, scenario: Scenario, *, seed: int, notes: list[str] | None = None) -> None:
        spec = scenario.link
        self.notes = notes if notes is not None else []
        self.device = resolve_device(scenario.device, notes=self.notes)
        self.grid = grid_from_spec(spec.grid)
        self.scene_names = tuple(scenario.scenes)
        self.scene_profiles = [scenario.profiles[s.profile] for s in scenario.scenes.values()]
        self.scene_speeds = [tuple(s.speed_mps) for s in scenario.scenes.values()]
        self.carrier_hz = float(scenario.base_stations[0].carrier_hz)
        self.min_sinr_db = spec.min_sinr_db
        self.spec = spec

        codec_params: dict[str, Any] = {"image_size": tuple(spec.image_size), "device": self.device}
        if spec.codec.weights is not None:
            codec_params["weights"] = spec.codec.weights
        self.codec = make_codec(spec.codec.kind, **codec_params)
        self.codec_name = str(getattr(self.codec, "name", spec.codec.kind))
        self.chain = LinkChain(
            self.codec,
            grid=self.grid,
            image_size=tuple(spec.image_size),
            realizations=spec.channel_realizations,
            device=self.device,
        )
        self.frame_bits = 24 * spec.image_size[0] * spec.image_size[1]
        folder = spec.images if spec.images is not None else DEFAULT_IMAGES
        split = "test" if spec.images is None else None
        self.images = ImageFolder(folder, split=split, size=tuple(spec.image_size)).frames().to(self.device)

        self.channels = ChannelBank(self.grid, direction=spec.direction, device=self.device)
        self._cache = CovarianceCache()
        self._estimators: dict[int, tuple[Any, str, str | None]] = {}
        self._refined: dict[str, tuple[Any, str, str | None]] = {}
        self._plan_estimators()

        self.latency: LatencyProfile | None = None
        if spec.latency == "profile":
            self.latency = load_latency_profile(spec.latency_profile or default_profile_name(self.device.type))
        self._frame_latency: dict[str, float] = {}
        self.seed = int(seed) % 2**64
        self.calls = 0
        self.wall_s = 0.0

    # ------------------------------------------------------------------ estimators

    def _plan_estimators(self) -> None:
        """Decide per scene what its holder uses; check weights now (errors before the run starts)."""
        kind = self.spec.estimator.kind
        if kind not in (PERFECT, *ESTIMATORS):
            resolve_kind(kind, ESTIMATORS, what="estimator", error=ModelError)  # imports the plug-in or says why
        unknown = sorted(set(self.spec.estimator.weights) - set(self.scene_names))
        if unknown:
            msg = f"link.estimator.weights: unknown scene(s) {unknown} (allowed: {', '.join(self.scene_names)})"
            raise ScenarioError(msg)
        self._plan: dict[int, tuple[str, Any]] = {}
        for i, scene in enumerate(self.scene_names):
            if kind != "diffusion":
                self._plan[i] = (kind, None)
                continue
            explicit = self.spec.estimator.weights.get(scene)
            path = explicit if explicit is not None else estimator_weights_path(scene)
            if explicit is None and not path.is_file():
                self._fallback(i, f"no diffusion weights for scene {scene!r} ({path.name} not in models/)")
                continue
            path = zoo.resolve(path)
            meta = zoo.read_metadata(path)
            zoo.read_config(path, architecture=DIFFUSION_ARCHITECTURE)  # architecture check, one clear line
            want = profile_hash(self.scene_profiles[i])
            have = meta.get("ivsim.profile_hash")
            if explicit is None and have != want:
                self._fallback(
                    i, f"diffusion weights {path.name} were trained for profile {have}, scene {scene!r} has {want}"
                )
                continue
            self._plan[i] = ("diffusion", path)
            self.estimator_for(i)  # load now: a wrong grid or corrupt file fails before the run starts

    def _fallback(self, scene: int, why: str) -> None:
        note = f"estimator fallback: {why}; scene {self.scene_names[scene]!r} uses lmmse"
        log.warning(note)
        self.notes.append(note)
        self._plan[scene] = ("lmmse", None)

    def estimator_for(self, scene: int) -> tuple[Any, str, str | None]:
        """``(estimator or PERFECT, estimator name, scene its statistics/weights come from)`` held for ``scene``."""
        if scene not in self._estimators:
            kind, path = self._plan[scene]
            name = self.scene_names[scene]
            common = {"grid": self.grid, "device": self.device}
            if kind == PERFECT:
                est, label = PERFECT, None
            elif kind == "ls":
                est, label = LSChannelEstimator(**common), None
            elif kind == "lmmse":
                est = LMMSEChannelEstimator(
                    **common, profile=self.scene_profiles[scene], scene=name, carrier_hz=self.carrier_hz,
                    speed_range_mps=self.scene_speeds[scene], cache=self._cache,
                )  # fmt: skip
                label = name
            elif kind == "diffusion":
                est = DiffusionChannelEstimator(
                    **common, weights=path, profile=self.scene_profiles[scene],
                    num_inference_steps=self.spec.estimator.num_inference_steps, start=self.spec.estimator.start,
                )  # fmt: skip
                label = name
            else:
                est = make_estimator(
                    kind, **common, scene=name, profile=self.scene_profiles[scene], carrier_hz=self.carrier_hz,
                    speed_range_mps=self.scene_speeds[scene], cache=self._cache,
                )  # fmt: skip
                label = getattr(est, "scene", name)
            est_name = PERFECT if est == PERFECT else str(getattr(est, "name", kind))
            self._estimators[scene] = (est, est_name, label)
        return self._estimators[scene]

    def add_refined(self, adapter_id: str, estimator: Any) -> None:
        """Register a refined estimator; frames whose receiver holds ``adapter_id`` are decoded by it."""
        self._refined[adapter_id] = (estimator, str(getattr(estimator, "name", "diffusion")), estimator.scene)

    def _holder(self, scene: int, adapter_id: str) -> tuple[Any, str, str | None]:
        if adapter_id:
            if adapter_id not in self._refined:
                msg = f"no refined estimator {adapter_id!r} was registered with the link evaluator"
                raise ModelError(msg)
            return self._refined[adapter_id]
        return self.estimator_for(scene)

    # ------------------------------------------------------------------ evaluation

    def _profile_latency(self, est_name: str) -> float:
        if est_name not in self._frame_latency:
            assert self.latency is not None
            self._frame_latency[est_name] = self.latency.frame_s(
                self.codec_name, est_name, symbols=self.chain.symbols, realizations=self.chain.realizations,
                grids=self.chain.n_grids,
            )  # fmt: skip
        return self._frame_latency[est_name]

    def generators(self, vehicle: np.ndarray, frame: np.ndarray) -> tuple[torch.Generator, torch.Generator, int]:
        """The random streams of one batch: channel generator, noise generator, estimator sampling seed.

        Parameters
        ----------
        vehicle, frame
            The sent frames' vehicle and frame numbers, in the order they are sent.

        Returns
        -------
        channel : torch.Generator
            Draws the channels (topologies, fading).
        noise : torch.Generator
            Draws the AWGN.
        sampling_seed : int
            The ``sampling_seed`` of :meth:`~ivsim.ai.link.LinkChain.transmit`.
        """
        key = stable_seed(self.seed, vehicle, frame)
        channel = torch.Generator(device=self.device).manual_seed(stable_seed(key, 0))
        noise = torch.Generator(device=self.device).manual_seed(stable_seed(key, 1))
        return channel, noise, stable_seed(key, 2)

    def evaluate(self, batch: TxBatch) -> TxResult:
        """Send every frame of ``batch`` through the neural link in one batched chain call."""
        import time

        n = len(batch)
        nan = np.full(n, np.nan)
        psnr, ssim, nmse, compute = nan.copy(), nan.copy(), nan.copy(), nan.copy()
        resid = nan.copy()
        lost = np.zeros(n, dtype=bool)
        est_names = np.full(n, None, dtype=object)
        est_scenes = np.full(n, None, dtype=object)
        outage = batch.sinr_db < self.min_sinr_db
        frame = np.zeros(n, dtype=np.int64) if batch.frame is None else batch.frame.astype(np.int64)
        vehicle = batch.vehicle.astype(np.int64)
        sent = np.flatnonzero(~outage)
        sent = sent[np.lexsort((frame[sent], vehicle[sent]))]  # (vehicle, frame) order: draws independent of order
        held = batch.estimator_scene if batch.estimator_scene is not None else batch.scene
        held = np.where(held < 0, batch.scene, held)
        adapters = getattr(batch, "adapter_id", None)
        adapters = np.full(n, "", dtype=object) if adapters is None else np.where(adapters == None, "", adapters)  # noqa: E711
        keys = [(int(s), str(a)) for s, a in zip(held, adapters, strict=True)]
        holders = {k: self._holder(*k) for k in set(keys)}
        for i, k in enumerate(keys):
            _, est_names[i], est_scenes[i] = holders[k]
        if len(sent):
            t0 = time.perf_counter()
            channel_gen, noise_gen, sampling_seed = self.generators(vehicle[sent], frame[sent])
            image_idx = (13 * vehicle[sent] + frame[sent]) % len(self.images)
            images = self.images[torch.as_tensor(image_idx, device=self.device)]
            h = self.channels.draw(
                [self.scene_profiles[s] for s in batch.scene[sent]],
                batch.carrier_hz[sent],
                batch.speed_mps[sent],
                realizations=self.chain.realizations,
                generator=channel_gen,
            )
            members: dict[tuple[int, str], list[int]] = {}
            for j, i in enumerate(sent):
                members.setdefault(keys[i], []).append(j)
            groups = [(holders[k][0], torch.as_tensor(m)) for k, m in sorted(members.items())]
            sinr = torch.as_tensor(batch.sinr_db[sent], dtype=torch.float32)
            out = self.chain.transmit(images, h, sinr, groups, generator=noise_gen, sampling_seed=sampling_seed)
            psnr[sent], ssim[sent], lost[sent] = out.psnr_db, out.ssim, out.lost
            nmse[sent] = np.where(np.isfinite(out.nmse_db), out.nmse_db, np.nan)
            resid[sent] = out.pilot_resid_db
            measured = sum(out.seconds.values())
            if self.latency is None:
                compute[sent] = measured
            else:
                compute[sent] = [self._profile_latency(e) for e in est_names[sent]]
            self.calls += 1
            self.wall_s += time.perf_counter() - t0

        airtime = np.where(outage, np.nan, self.chain.airtime_s(batch.bandwidth_hz))
        return neural_tx_result(
            batch, outage=outage, lost=lost, airtime_s=airtime, compute_s=compute, psnr_db=psnr, ssim=ssim,
            nmse_db=nmse, pilot_resid_db=resid, codec=self.codec_name, estimator=est_names,
            estimator_scene=est_scenes, symbols=self.chain.symbols,
        )  # fmt: skip
