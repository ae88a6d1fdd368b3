"""The semantic link chain, batched: image -> codec -> OFDM -> 3GPP channel -> estimate -> equalize -> decode.

:class:`LinkChain` runs one batched transmission of whole frames::

    images [B, 3, H, W] --encode--> symbols [B, k] --map--> n_grids OFDM grids per frame
        --channel h + AWGN--> received grids --estimate (one per channel realization)--> h_hat
        --LMMSE equalize--> symbols [B, k] --decode--> images [B, 3, H, W]  (PSNR, SSIM, NMSE)

Frames and grids
----------------
A frame of ``k`` complex symbols fills ``n_grids = ceil(k / D)`` resource grids
(``D`` data resource elements per grid, 864 for the default 14 x 72 grid with two
pilot symbols; the last grid is zero-padded). The frame sees ``realizations``
independent channel draws (default 1, block fading over the frame, the usual
OFDM-JSCC setting): its grids are cut into that many consecutive blocks, every grid
of a block sees the block's channel with its own noise, and the receiver estimates
the block's channel once, from the pilots of the block's first grid, and equalizes
the whole block with that estimate. ``realizations = n_grids`` gives every grid its
own channel draw and estimate (the cost of estimation grows with it).

Power: data and pilot symbols have unit average energy, the channel has unit
average energy per resource element (Sionna process normalisation, see
:mod:`ivsim.phy.channels`) and the complex noise has variance ``1 / SNR``
(:func:`ivsim.phy.apply_channel`).

Pilot residual
--------------
Besides quality and NMSE (which need the true channel), the chain reports what the
receiver itself can observe: the pilot residual of each frame::

    pilot_resid_db = 10 log10( mean_{g, r, p} |y[g, r, p] - h_hat[g, r, p] x[p]|^2 / N0 )

over the pilot resource elements ``p`` of the grids the estimator saw (the first
grid of each of the ``G`` blocks), the ``R`` receive antennas, with ``h_hat`` the
estimate used to equalise (the true channel for :data:`PERFECT`), in dB
(``pilot_resid_db``). Residual noise alone gives 0 dB (perfect CSI); an estimator
that partly fits the pilots' noise gives somewhat less (a matched LMMSE: about -0.5 dB
at 10 dB SNR). An estimator whose prior is too narrow for the channel (statistics of
a 30 ns delay spread on a 300 ns channel) smooths away real channel structure and
gives more; one whose prior is too broad fits more of the noise and gives *less*
than a matched one, so a change detector on this statistic should be two-sided.
Least squares fits the pilots exactly (zero residual: rounding below ``1e-10`` of
the received pilot power counts as zero) and reports :data:`PILOT_RESID_FLOOR_DB`,
the floor of every value. The pilots of a block's later grids are not used, so the
statistic means the same for any number of grids per block.

Random numbers
--------------
``transmit(..., generator=)`` draws the AWGN of the whole batch in one call, before
any estimator runs, so the noise does not depend on how the frames are grouped by
estimator. The estimators' sampling noise (diffusion) comes from ``generator`` after
it, or, with ``sampling_seed=``, from one generator per estimator group seeded by
``(sampling_seed, the group's frame indices)`` (:func:`stable_seed`), so a group's
estimate does not depend on the other groups either.

Estimators: anything with the :class:`~ivsim.ai.estimators.ChannelEstimator`
protocol, or :data:`PERFECT` (the genie: ``h_hat = h``, no error; the upper bound).
Each frame names its estimator; frames that share one are estimated in one call.

Equalization and decoding: per resource element LMMSE with the estimator's error
variance counted as noise (:func:`ivsim.phy.lmmse_equalize`). For neural codecs the
MMSE (biased, shrunk) symbols are decoded by default (``equalizer="mmse"``): the
unbiased estimate of a SISO link is ``y / h_hat``, which amplifies the noise without
bound at the channel's spectral nulls, so that a slightly smoothed estimate could beat
perfect CSI and a small estimation error could wreck a frame. The decoder is told the
frame's average SNR (what the receiver measures). The digital codec always gets the
unbiased symbols with their per-symbol post-equalisation noise variance as its LLR
scaling.

:class:`ChannelBank` keeps one :class:`ivsim.phy.ChannelSampler` per (profile,
carrier) and draws mixed batches; :class:`ivsim.ai.neural_link.NeuralLinkEvaluator`
puts the chain behind the simulation's link protocol.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ivsim.ai.images import psnr, ssim
from ivsim.config.schema import LinkLevelProfile, SystemLevelProfile, profile_hash
from ivsim.phy import ChannelSampler, GridSpec, OfdmMapper, apply_channel, lmmse_equalize

__all__ = ["PERFECT", "PILOT_RESID_FLOOR_DB", "ChainOutput", "ChannelBank", "LinkChain", "Stopwatch", "stable_seed"]

Profile = SystemLevelProfile | LinkLevelProfile

PERFECT = "perfect"
"""Estimator name of perfect CSI (the receiver knows ``h``)."""

PILOT_RESID_FLOOR_DB = -100.0
"""Floor of ``pilot_resid_db``: an exact fit of the pilots (least squares) has zero residual power."""

_EXACT_FIT = 1e-10
"""Pilot residual power, relative to the received pilot power, below which the pilots are fitted exactly."""

STAGES = ("encode", "estimate", "equalize", "decode")
"""Receiver-side compute stages timed by :class:`LinkChain` (channel drawing is the world, not compute)."""


def stable_seed(*parts: int | np.ndarray | Sequence[int]) -> int:
    """A 63-bit seed from integers and integer arrays, the same in every process and on every platform.

    Each part is hashed with its length (so ``([1, 2], [3])`` and ``([1], [2, 3])``
    differ) by :class:`numpy.random.SeedSequence`; Python's salted ``hash`` is not used.

    Parameters
    ----------
    *parts
        Integers: scalars or arrays (flattened; negative values are taken modulo ``2**64``).

    Returns
    -------
    int
        A seed in ``[0, 2**63)`` for ``torch.Generator.manual_seed``.

    Examples
    --------
    >>> stable_seed(1, [3, 4]) == stable_seed(1, np.array([3, 4]))
    True
    >>> stable_seed(1, [3, 4]) == stable_seed(1, [4, 3])
    False
    """
    entropy: list[int] = []
    for part in parts:
        arr = np.atleast_1d(np.asarray(part)).astype(np.int64, copy=False).ravel()
        entropy.append(len(arr))
        entropy.extend(int(v) % 2**64 for v in arr)
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]) >> 1


class Stopwatch:
    """Wall-clock seconds per named stage, synchronising CUDA around each.

    Parameters
    ----------
    device
        The device whose work is timed.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds: dict[str, float] = {}

    def time(self, stage: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` and add its wall time to ``stage``."""
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0
        return out


@dataclass
class ChainOutput:
    """What one batched :meth:`LinkChain.transmit` gives back (arrays of length ``B``).

    Attributes
    ----------
    images
        ``[B, 3, H, W]`` reconstructed frames.
    psnr_db, ssim
        Whole-frame quality against the sent frame.
    nmse_db
        Channel-estimation NMSE of the frame, pooled over its realizations and all
        resource elements (``-inf`` for perfect CSI).
    pilot_resid_db
        Pilot residual of the frame, ``mean |y_p - h_hat_p x_p|^2 / N0`` over the pilots
        the estimator saw (see the module docstring); about 0 dB for perfect CSI,
        :data:`PILOT_RESID_FLOOR_DB` for least squares.
    lost
        The codec declared the frame lost (digital: a failed code block).
    seconds
        Wall time per stage of :data:`STAGES` for the whole batch.
    """

    images: torch.Tensor
    psnr_db: np.ndarray
    ssim: np.ndarray
    nmse_db: np.ndarray
    pilot_resid_db: np.ndarray
    lost: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)


class LinkChain:
    """A batched semantic transmission over OFDM with a per-frame channel estimator.

    Parameters
    ----------
    codec
        A :class:`~ivsim.ai.codecs.SemanticCodec`.
    grid
        The resource grid (default 14 x 72, 30 kHz, pilots on symbols 2 and 11).
    image_size
        ``(height, width)`` of every frame.
    realizations
        Independent channel draws per frame (1 to ``n_grids``, clipped).
    equalizer
        ``"mmse"`` (default) or ``"unbiased"`` symbols for neural codecs (see the module docstring).
    device
        Where the chain runs.

    Examples
    --------
    >>> import torch
    >>> from ivsim.ai.codecs import make_codec
    >>> chain = LinkChain(make_codec("ctcd"), image_size=(64, 96))
    >>> chain.symbols, chain.n_grids
    (3072, 4)
    """

    def __init__(
        self,
        codec: Any,
        *,
        grid: GridSpec | None = None,
        image_size: tuple[int, int] = (72, 128),
        realizations: int = 1,
        equalizer: str = "mmse",
        device: str | torch.device = "cpu",
    ) -> None:
        if equalizer not in ("mmse", "unbiased"):
            msg = f"equalizer must be 'mmse' or 'unbiased', got {equalizer!r}"
            raise ValueError(msg)
        self.codec = codec
        self.grid = grid if grid is not None else GridSpec()
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.device = torch.device(device)
        self.symbols = int(codec.symbols_for(*self.image_size))
        self.data_per_grid = self.grid.num_data_symbols
        self.n_grids = math.ceil(self.symbols / self.data_per_grid)
        self.realizations = max(1, min(int(realizations), self.n_grids))
        g = self.realizations
        self.block_of_grid = torch.arange(self.n_grids) * g // self.n_grids
        self.first_grid = torch.tensor([int((self.block_of_grid == b).nonzero()[0]) for b in range(g)])
        self.mapper = OfdmMapper(self.grid, device=self.device)
        self._digital = getattr(codec, "name", "") == "digital"
        self.unbiased = self._digital or equalizer == "unbiased"

    @property
    def resource_elements(self) -> int:
        """Resource elements one frame occupies (pilots and padding included)."""
        return self.n_grids * self.grid.num_resource_elements

    def airtime_s(self, bandwidth_hz: np.ndarray) -> np.ndarray:
        """Time on air of one frame in a bandwidth share (its grids side by side in frequency, then in time)."""
        grid_s = self.grid.num_ofdm_symbols * self.grid.ofdm_symbol_duration_s
        return self.n_grids * self.grid.bandwidth_hz * grid_s / np.asarray(bandwidth_hz, dtype=float)

    def transmit(
        self,
        images: torch.Tensor,
        h: torch.Tensor,
        snr_db: torch.Tensor,
        estimators: Sequence[tuple[Any, torch.Tensor]],
        *,
        generator: torch.Generator,
        sampling_seed: int | None = None,
    ) -> ChainOutput:
        """Send ``B`` frames through the chain.

        Parameters
        ----------
        images
            ``[B, 3, H, W]`` in ``0..1`` with ``(H, W) = image_size``.
        h
            ``[B, realizations, n_rx, n_sym, n_sc]`` channel of each block.
        snr_db
            ``[B]`` average SNR (or SINR) per resource element.
        estimators
            ``(estimator, frame indices)`` pairs covering every frame once; the
            estimator is a ``ChannelEstimator`` or :data:`PERFECT`.
        generator
            Draws the noise of the whole batch (first, in one call) and, without
            ``sampling_seed``, then any sampling noise of the estimators (on ``device``).
        sampling_seed
            If given, each estimator group samples from its own generator seeded with
            ``stable_seed(sampling_seed, its frame indices)``, independent of
            ``generator`` and of the other groups.

        Returns
        -------
        ChainOutput
        """
        b = images.shape[0]
        g, ng = self.realizations, self.n_grids
        if h.shape[:2] != (b, g):
            msg = f"h must be [B={b}, realizations={g}, n_rx, n_sym, n_sc], got {list(h.shape)}"
            raise ValueError(msg)
        clock = Stopwatch(self.device)
        images = images.to(self.device, torch.float32)
        snr_db = snr_db.to(self.device, torch.float32)
        z = clock.time("encode", lambda: self.codec.encode(images))
        pad = ng * self.data_per_grid - self.symbols
        z = torch.nn.functional.pad(z, (0, pad)).reshape(b * ng, self.data_per_grid)
        x = self.mapper.map(z)  # [B*ng, S, F]
        h = h.to(self.device, torch.complex64)
        hg = h[:, self.block_of_grid.to(self.device)].reshape(b * ng, *h.shape[2:])
        y, no = apply_channel(x, hg, snr_db.repeat_interleave(ng), generator=generator)
        y = y.reshape(b, ng, *y.shape[1:])
        no = no.reshape(b, ng)

        def estimate() -> tuple[torch.Tensor, torch.Tensor]:
            h_hat = torch.empty_like(h)
            err = torch.zeros(h.shape, dtype=torch.float32, device=self.device)
            y0 = y[:, self.first_grid.to(self.device)]  # [B, G, R, S, F]
            no0 = no[:, self.first_grid.to(self.device)]
            for est, idx in estimators:
                idx = idx.to(self.device)
                if len(idx) == 0:
                    continue
                if est == PERFECT:
                    h_hat[idx] = h[idx]
                    continue
                yy = y0[idx].reshape(-1, *y0.shape[2:])
                nn_ = no0[idx].reshape(-1)
                if _takes_generator(est):
                    gen = generator
                    if sampling_seed is not None:
                        seed = stable_seed(sampling_seed, idx.cpu().numpy())
                        gen = torch.Generator(device=self.device).manual_seed(seed)
                    hh, ev = est.estimate(yy, nn_, generator=gen)
                else:
                    hh, ev = est.estimate(yy, nn_)
                h_hat[idx] = hh.reshape(len(idx), g, *hh.shape[1:]).to(h_hat.dtype)
                err[idx] = torch.as_tensor(ev, dtype=torch.float32, device=self.device).expand(hh.shape).reshape(
                    len(idx), g, *hh.shape[1:]
                )
            return h_hat, err

        with torch.inference_mode():
            h_hat, err = clock.time("estimate", estimate)
            blocks = self.block_of_grid.to(self.device)

            def equalize() -> tuple[torch.Tensor, torch.Tensor]:
                hh = h_hat[:, blocks].reshape(b * ng, *h.shape[2:])
                ee = err[:, blocks].reshape(b * ng, *h.shape[2:])
                x_hat, no_eff = lmmse_equalize(
                    y.reshape(b * ng, *y.shape[2:]), hh, ee, no.reshape(-1), unbiased=self.unbiased
                )
                sym = self.mapper.demap(x_hat).reshape(b, ng * self.data_per_grid)[:, : self.symbols]
                nv = self.mapper.demap(no_eff).reshape(b, ng * self.data_per_grid)[:, : self.symbols]
                return sym, nv

            sym, noise_var = clock.time("equalize", equalize)
            resid_db = self._pilot_residual_db(x, y, no, h_hat)
        if self._digital:
            out, lost = clock.time(
                "decode",
                lambda: self.codec.decode_with_status(sym, snr_db, size=self.image_size, noise_var=noise_var),
            )
        elif hasattr(self.codec, "decode_with_status"):
            out, lost = clock.time("decode", lambda: self.codec.decode_with_status(sym, snr_db, size=self.image_size))
        else:
            out = clock.time("decode", lambda: self.codec.decode(sym, snr_db, size=self.image_size))
            lost = torch.zeros(b, dtype=torch.bool)
        out = out.to(self.device)
        err_pow = (h_hat - h).abs().pow(2).flatten(1).sum(1)
        sig_pow = h.abs().pow(2).flatten(1).sum(1).clamp_min(torch.finfo(torch.float32).tiny)
        with np.errstate(divide="ignore"):
            nmse = 10.0 * np.log10((err_pow / sig_pow).double().cpu().numpy())
        return ChainOutput(
            images=out,
            psnr_db=psnr(out, images).double().cpu().numpy(),
            ssim=ssim(out, images).double().cpu().numpy(),
            nmse_db=nmse,
            pilot_resid_db=resid_db,
            lost=lost.cpu().numpy().astype(bool),
            seconds=clock.seconds,
        )

    def _pilot_residual_db(self, x: torch.Tensor, y: torch.Tensor, no: torch.Tensor, h_hat: torch.Tensor) -> np.ndarray:
        """Per-frame pilot residual in dB (see the module docstring).

        Parameters
        ----------
        x
            ``[B * n_grids, n_sym, n_sc]`` sent grids.
        y
            ``[B, n_grids, n_rx, n_sym, n_sc]`` received grids.
        no
            ``[B, n_grids]`` noise variance.
        h_hat
            ``[B, realizations, n_rx, n_sym, n_sc]`` the estimates used to equalise.

        Returns
        -------
        np.ndarray
            ``[B]`` float64, floored at :data:`PILOT_RESID_FLOOR_DB`.
        """
        b = y.shape[0]
        first = self.first_grid.to(self.device)
        xp = self.mapper.pilot_values(x.reshape(b, self.n_grids, *x.shape[1:])[:, first])  # [B, G, P]
        yp = self.mapper.pilot_values(y[:, first])  # [B, G, R, P]
        hp = self.mapper.pilot_values(h_hat)  # [B, G, R, P]
        no0 = no[:, first].to(torch.float64).clamp_min(torch.finfo(torch.float32).tiny)  # [B, G]
        power = (yp - hp * xp[:, :, None]).abs().to(torch.float64).pow(2).mean(dim=(2, 3))  # [B, G]
        received = yp.abs().to(torch.float64).pow(2).mean(dim=(2, 3))  # [B, G]
        ratio = (power / no0).mean(dim=1)
        # an exact fit leaves only complex64 rounding (~1e-14 of the received power, ~-140 dB - SNR): call it zero
        ratio = torch.where((power <= _EXACT_FIT * received).all(dim=1), torch.zeros_like(ratio), ratio)
        floor = 10.0 ** (PILOT_RESID_FLOOR_DB / 10.0)
        return 10.0 * np.log10(np.maximum(ratio.cpu().numpy(), floor))


def _takes_generator(estimator: Any) -> bool:
    """Whether ``estimator.estimate`` accepts ``generator=`` (the diffusion estimator's sampling noise)."""
    try:
        return "generator" in inspect.signature(estimator.estimate).parameters
    except (TypeError, ValueError):
        return False


class ChannelBank:
    """One :class:`~ivsim.phy.ChannelSampler` per (profile, carrier), built on first use.

    Parameters
    ----------
    grid
        The resource grid.
    direction
        ``"downlink"`` or ``"uplink"`` (which end has the receive antennas).
    device
        Device of the samplers.
    """

    def __init__(self, grid: GridSpec, *, direction: str = "downlink", device: str | torch.device = "cpu") -> None:
        self.grid = grid
        self.direction = direction
        self.device = torch.device(device)
        self._samplers: dict[tuple[str, float], ChannelSampler] = {}

    def sampler(self, profile: Profile, carrier_hz: float) -> ChannelSampler:
        """Return the sampler of ``profile`` at ``carrier_hz``."""
        key = (profile_hash(profile), float(carrier_hz))
        if key not in self._samplers:
            self._samplers[key] = ChannelSampler(
                profile, self.grid, carrier_hz=float(carrier_hz), direction=self.direction, device=self.device
            )
        return self._samplers[key]

    def draw(
        self,
        profiles: Sequence[Profile],
        carrier_hz: np.ndarray,
        speed_mps: np.ndarray,
        *,
        realizations: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Draw ``realizations`` independent channels per frame, one Sionna call per (profile, carrier) group.

        Parameters
        ----------
        profiles
            ``B`` profiles (the frame's scene).
        carrier_hz, speed_mps
            ``[B]`` carrier and speed of each frame.
        realizations
            Channels per frame.
        generator
            Draws topologies and fading.

        Returns
        -------
        torch.Tensor
            ``[B, realizations, n_rx, n_sym, n_sc]`` complex64.
        """
        b = len(profiles)
        g = realizations
        out = torch.empty(
            (b, g, self.grid.num_rx_ant, self.grid.num_ofdm_symbols, self.grid.fft_size),
            dtype=torch.complex64,
            device=self.device,
        )
        groups: dict[tuple[str, float], list[int]] = {}
        by_key: dict[tuple[str, float], Profile] = {}
        for i, (p, c) in enumerate(zip(profiles, carrier_hz, strict=True)):
            key = (profile_hash(p), float(c))
            groups.setdefault(key, []).append(i)
            by_key[key] = p
        for key, members in groups.items():
            idx = torch.as_tensor(members, device=self.device)
            speeds = torch.as_tensor(np.repeat(np.asarray(speed_mps, dtype=np.float32)[members], g), device=self.device)
            h = self.sampler(by_key[key], key[1]).sample(len(members) * g, speed_mps=speeds, generator=generator)
            out[idx] = h.reshape(len(members), g, *h.shape[1:])
        return out
