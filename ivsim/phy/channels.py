"""Per-scene 3GPP channels on an OFDM grid (Sionna TR 38.901 models), batched and seeded.

:class:`ChannelSampler` turns a scene's channel profile into frequency responses
``h [B, n_rx, n_sym, n_sc]`` (complex64) on a :class:`~ivsim.phy.ofdm.GridSpec`:

* :class:`~ivsim.config.schema.SystemLevelProfile` (``umi`` / ``uma`` / ``rma``):
  Sionna's TR 38.901 system-level model with LOS or NLOS forced per the profile,
  no path loss and no shadow fading (those belong to the link budget), on a
  single-BS / single-UT topology drawn per realization: BS at the origin at the
  scenario's TR 38.901 height (UMi 10 m, UMa 25 m, RMa 35 m), outdoor UT at 1.5 m
  at a 2D distance uniform in ``distance_m`` (30-300 m) and a uniform azimuth,
  driving horizontally at ``speed_mps`` in a uniform random direction, its array
  facing the direction of travel, the BS facing the UT.
* :class:`~ivsim.config.schema.LinkLevelProfile` (``tdl`` / ``cdl``): Sionna's
  TDL or CDL of the profile's variant scaled to ``delay_spread_s``, Doppler from
  ``speed_mps`` (per realization). CDL places the UT velocity horizontally in a
  random direction. ``k_factor_db`` (variants D and E) sets the ratio of the LOS
  power to the total NLOS power, the total power kept at one.

Antennas: vertically polarised isotropic ("omni", 0 dBi) elements; the receiver
has ``grid.num_rx_ant`` of them in a half-wavelength uniform linear array (the
UT in the downlink, the BS in the uplink), the transmitter one. TDL has no
geometry: its receive antennas fade independently.

Normalisation (``normalize``):

``"process"`` (default)
    A fixed, path-loss-free normalisation: the models' cluster/tap powers sum to
    one and the antennas have unit gain, so the *average over the random process*
    of the energy per resource element is one, while each realization keeps its
    own fading (a flat-fading realization can be 10 dB down). Tested:
    ``mean |h|^2 = 1`` within ``max(0.15, 2 / sqrt(n))`` for every profile kind.
``"realization"``
    Sionna's ``normalize_channel=True``: every realization is scaled to unit
    energy per resource element averaged over its grid and antennas (what
    ``shared/notes/channel_mismatch.py`` used). This removes the slot-level fading,
    so it suits estimator training, not link-level error rates.

Randomness: every draw, ivsim's own (speeds, topology) and Sionna's, comes from the
``torch.Generator`` passed to :meth:`ChannelSampler.sample`; Sionna's global
generator is swapped for the caller's during the call and restored afterwards
(:func:`ivsim.phy._sionna.sionna_rng`). Same generator state, same channels; the
global torch RNG and Sionna's config are left as they were.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from ivsim.config.schema import LinkLevelProfile, SystemLevelProfile
from ivsim.phy._sionna import device_key, sionna_rng
from ivsim.phy.ofdm import ChannelCovariance, GridSpec

from sionna.phy.channel import GenerateOFDMChannel, cir_to_ofdm_channel, subcarrier_frequencies  # isort: skip
from sionna.phy.channel.tr38901 import CDL, RMa, TDL, UMa, UMi, PanelArray  # isort: skip

__all__ = [
    "BS_HEIGHT_M",
    "UT_HEIGHT_M",
    "ChannelSampler",
    "SpeedSpec",
    "covariances",
    "paths_to_grid",
]

BS_HEIGHT_M = {"umi": 10.0, "uma": 25.0, "rma": 35.0}
"""BS antenna heights of TR 38.901 Table 7.2-1 (UMi street canyon, UMa, RMa default)."""
UT_HEIGHT_M = 1.5
"""UT (vehicle roof) antenna height."""

SpeedSpec = float | tuple[float, float] | torch.Tensor
"""A speed in m/s: one for every realization, ``(min, max)`` drawn uniformly per realization, or ``[B]``."""


def _speeds(speed_mps: SpeedSpec, batch_size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Return ``[B]`` float32 speeds in m/s (drawing from ``generator`` for a range)."""
    if isinstance(speed_mps, tuple):
        lo, hi = (float(v) for v in speed_mps)
        if not 0.0 <= lo <= hi:
            msg = f"speed_mps range must be (min, max) with 0 <= min <= max, got {speed_mps}"
            raise ValueError(msg)
        u = torch.rand(batch_size, generator=generator, device=device, dtype=torch.float32)
        return lo + (hi - lo) * u
    v = torch.as_tensor(speed_mps, dtype=torch.float32, device=device)
    if v.dim() == 0:
        v = v.expand(batch_size)
    if v.shape != (batch_size,):
        msg = f"speed_mps must be a float, a (min, max) tuple or [B={batch_size}], got shape {list(v.shape)}"
        raise ValueError(msg)
    if bool((v < 0).any()):
        msg = "speed_mps must be >= 0"
        raise ValueError(msg)
    return v.contiguous()


class ChannelSampler:
    """Draw batches of a scene's channel frequency response on a grid.

    Parameters
    ----------
    profile
        The scene's channel profile.
    grid
        The resource grid (its ``num_rx_ant`` sets the receive antennas).
    carrier_hz
        Carrier frequency of the serving BS.
    direction
        ``"downlink"`` (the vehicle receives) or ``"uplink"`` (the BS receives);
        decides which end carries the ``num_rx_ant`` receive antennas.
    normalize
        ``"process"`` (default) or ``"realization"``; see the module docstring.
    distance_m
        ``(min, max)`` BS-UT 2D distance of the system-level topologies.
    device
        Device of the Sionna models and of the output (``"cpu"``, ``"cuda"``).

    Examples
    --------
    >>> import torch
    >>> from ivsim.config.schema import SystemLevelProfile
    >>> s = ChannelSampler(SystemLevelProfile(model="umi", los=False), GridSpec(), carrier_hz=3.5e9)
    >>> h = s.sample(4, speed_mps=10.0, generator=torch.Generator().manual_seed(0))
    >>> tuple(h.shape)
    (4, 1, 14, 72)
    """

    def __init__(
        self,
        profile: SystemLevelProfile | LinkLevelProfile,
        grid: GridSpec,
        *,
        carrier_hz: float,
        direction: Literal["downlink", "uplink"] = "downlink",
        normalize: Literal["process", "realization"] = "process",
        distance_m: tuple[float, float] = (30.0, 300.0),
        device: str | torch.device = "cpu",
    ) -> None:
        if direction not in ("downlink", "uplink"):
            msg = f"direction must be 'downlink' or 'uplink', got {direction!r}"
            raise ValueError(msg)
        if normalize not in ("process", "realization"):
            msg = f"normalize must be 'process' or 'realization', got {normalize!r}"
            raise ValueError(msg)
        if not 0.0 < distance_m[0] <= distance_m[1]:
            msg = f"distance_m must be (min, max) with 0 < min <= max, got {distance_m}"
            raise ValueError(msg)
        if carrier_hz <= 0:
            msg = "carrier_hz must be positive"
            raise ValueError(msg)
        self.profile = profile
        self.grid = grid
        self.carrier_hz = float(carrier_hz)
        self.direction = direction
        self.normalize = normalize
        self.distance_m = (float(distance_m[0]), float(distance_m[1]))
        self.device = torch.device(device_key(device))
        self._dev = device_key(self.device)
        self._rg = grid.resource_grid(device=self.device)
        self.kind = profile.model
        """``"umi"``, ``"uma"``, ``"rma"``, ``"tdl"`` or ``"cdl"``."""

        n_rx = grid.num_rx_ant
        rx_array = self._array(n_rx)
        tx_array = self._array(1)
        ut_array, bs_array = (rx_array, tx_array) if direction == "downlink" else (tx_array, rx_array)
        common = {"precision": "single", "device": self._dev}
        if isinstance(profile, SystemLevelProfile):
            cls = {"umi": UMi, "uma": UMa, "rma": RMa}[profile.model]
            kwargs = {} if profile.model == "rma" else {"o2i_model": "low"}
            self._model = cls(
                carrier_frequency=self.carrier_hz,
                ut_array=ut_array,
                bs_array=bs_array,
                direction=direction,
                enable_pathloss=False,
                enable_shadow_fading=False,
                **kwargs,
                **common,
            )
        elif profile.model == "tdl":
            self._model = TDL(
                profile.variant,
                profile.delay_spread_s,
                self.carrier_hz,
                min_speed=0.0,
                max_speed=0.0,
                num_rx_ant=n_rx,
                num_tx_ant=1,
                **common,
            )
            if not all(hasattr(self._model, a) for a in ("_min_doppler", "_max_doppler", "_compute_doppler")):
                msg = "this Sionna TDL has no per-realization Doppler hook (ivsim needs sionna-no-rt 2.2's TDL)"
                raise RuntimeError(msg)
            if profile.k_factor_db is not None:
                self._set_tdl_k_factor(profile.k_factor_db)
        else:
            self._model = CDL(
                profile.variant,
                profile.delay_spread_s,
                self.carrier_hz,
                ut_array=ut_array,
                bs_array=bs_array,
                direction=direction,
                min_speed=0.0,
                max_speed=0.0,
                **common,
            )
            if not hasattr(self._model, "_ut_velocity"):
                msg = "this Sionna CDL has no per-realization velocity hook (ivsim needs sionna-no-rt 2.2's CDL)"
                raise RuntimeError(msg)
            if profile.k_factor_db is not None:
                k = 10.0 ** (profile.k_factor_db / 10.0)
                self._model._k_factor = torch.tensor(k, dtype=torch.float32, device=self.device)
        self._ofdm = GenerateOFDMChannel(
            self._model, self._rg, normalize_channel=(normalize == "realization"), **common
        )

    # ---------------------------------------------------------------- construction helpers

    def _array(self, n: int) -> PanelArray:
        return PanelArray(
            num_rows_per_panel=1,
            num_cols_per_panel=n,
            polarization="single",
            polarization_type="V",
            antenna_pattern="omni",
            carrier_frequency=self.carrier_hz,
            precision="single",
            device=self._dev,
        )

    def _set_tdl_k_factor(self, k_factor_db: float) -> None:
        """Rescale a LOS TDL so that LOS power / total NLOS power = K, total power one."""
        m = self._model
        k = 10.0 ** (k_factor_db / 10.0)
        nlos = m._mean_powers
        m._mean_powers = nlos / nlos.real.sum() / (1.0 + k)
        m._los_power = torch.tensor(k / (1.0 + k), dtype=m._mean_powers.dtype, device=self.device)

    # ---------------------------------------------------------------- sampling

    def sample(
        self,
        batch_size: int,
        *,
        speed_mps: SpeedSpec,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Draw ``batch_size`` independent channel realizations in one Sionna call.

        Parameters
        ----------
        batch_size
            ``B``.
        speed_mps
            UT speed: a float, a ``(min, max)`` range drawn uniformly per
            realization, or ``[B]`` per realization.
        generator
            Source of all randomness, on this sampler's device; advanced by the call.

        Returns
        -------
        torch.Tensor
            ``[B, n_rx, n_sym, n_sc]`` complex64 frequency response, sampled once per
            OFDM symbol (Doppler within the slot included).
        """
        a, tau = self._cir(int(batch_size), speed_mps, generator)
        with torch.no_grad():
            h = cir_to_ofdm_channel(self._ofdm._frequencies, a, tau, self.normalize == "realization")
        # [B, num_rx=1, n_rx, num_tx=1, n_tx=1, n_sym, n_sc] -> [B, n_rx, n_sym, n_sc]
        return h[:, 0, :, 0, 0].to(torch.complex64).contiguous()

    def sample_paths(
        self,
        batch_size: int,
        *,
        speed_mps: SpeedSpec,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``batch_size`` realizations as paths: what :meth:`sample` renders onto the grid.

        Same arguments and the same draws as :meth:`sample` (with the same generator
        state, ``render_paths(*sample_paths(...))`` equals ``sample(...)``).

        Returns
        -------
        a, tau
            ``a [B, n_rx, P, n_sym]`` complex64 path coefficients at every OFDM symbol
            (the models' clusters or taps; absent ones are zero) and ``tau [B, P]``
            float32 path delays in seconds.
        """
        a, tau = self._cir(int(batch_size), speed_mps, generator)
        # a [B, 1, n_rx, 1, 1, P, T], tau [B, 1, 1, P] (TDL: [B, 1, n_rx, 1, 1, P], the same delays on every antenna)
        tau = tau[:, 0, 0] if tau.dim() == 4 else tau[:, 0, 0, 0, 0]
        return a[:, 0, :, 0, 0].to(torch.complex64).contiguous(), tau.to(torch.float32).contiguous()

    def render_paths(self, a: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """Frequency response ``[B, n_rx, n_sym, n_sc]`` complex64 of paths ``a [B, n_rx, P, n_sym]``, ``tau [B, P]``.

        :func:`paths_to_grid` with this sampler's grid and normalisation.
        """
        return paths_to_grid(a, tau, self.grid, normalize=self.normalize == "realization")

    def _cir(
        self, b: int, speed_mps: SpeedSpec, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sionna's channel impulse response of ``b`` realizations (``GenerateOFDMChannel``'s own draw)."""
        if b < 1:
            msg = "batch_size must be >= 1"
            raise ValueError(msg)
        if torch.device(device_key(generator.device)) != self.device:
            msg = f"generator is on {generator.device}, the sampler on {self.device}"
            raise ValueError(msg)
        speeds = _speeds(speed_mps, b, generator, self.device)
        n_sym, fs = self.grid.num_ofdm_symbols, 1.0 / self._rg.ofdm_symbol_duration
        with torch.no_grad():
            if isinstance(self.profile, SystemLevelProfile):
                topology = self._topology(b, speeds, generator)  # drawn before Sionna borrows the generator
                with sionna_rng(generator):
                    self._model.reset_topology()
                    self._model.set_topology(*topology, los=self.profile.los)
                    return self._model(b, n_sym, fs)
            if self.kind == "tdl":
                doppler = self._model._compute_doppler(speeds).reshape(b, 1, 1, 1, 1, 1, 1, 1)
                with sionna_rng(generator):
                    self._model._min_doppler = doppler
                    self._model._max_doppler = doppler
                    return self._model(b, n_sym, fs)
            heading = 2.0 * math.pi * torch.rand(b, generator=generator, device=self.device)
            velocity = torch.stack(
                [speeds * torch.cos(heading), speeds * torch.sin(heading), torch.zeros_like(speeds)], dim=-1
            )
            with sionna_rng(generator):
                self._model._ut_velocity = velocity
                return self._model(b, n_sym, fs)

    def _topology(
        self, b: int, speeds: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``b`` single-BS / single-UT topologies (Sionna ``set_topology`` argument order)."""
        dev, f32 = self.device, torch.float32
        u = torch.rand(3, b, generator=generator, device=dev, dtype=f32)
        lo, hi = self.distance_m
        d = lo + (hi - lo) * u[0]
        azimuth = 2.0 * math.pi * u[1]  # where the UT is, seen from the BS
        heading = 2.0 * math.pi * u[2]  # where the UT drives
        zeros = torch.zeros(b, dtype=f32, device=dev)
        ut_loc = torch.stack([d * torch.cos(azimuth), d * torch.sin(azimuth), zeros + UT_HEIGHT_M], -1)[:, None]
        bs_loc = torch.stack([zeros, zeros, zeros + BS_HEIGHT_M[self.profile.model]], -1)[:, None]
        ut_orientation = torch.stack([heading, zeros, zeros], -1)[:, None]
        bs_orientation = torch.stack([azimuth, zeros, zeros], -1)[:, None]
        ut_velocity = torch.stack([speeds * torch.cos(heading), speeds * torch.sin(heading), zeros], -1)[:, None]
        indoor = torch.zeros(b, 1, dtype=torch.bool, device=dev)
        return ut_loc, bs_loc, ut_orientation, bs_orientation, ut_velocity, indoor


def paths_to_grid(a: torch.Tensor, tau: torch.Tensor, grid: GridSpec, *, normalize: bool = False) -> torch.Tensor:
    """Frequency response ``[B, n_rx, n_sym, n_sc]`` complex64 of paths ``a [B, n_rx, P, n_sym]``, ``tau [B, P]`` (s).

    Sionna's ``cir_to_ofdm_channel`` at the grid's subcarriers (``normalize``: every
    realization to unit energy per resource element, Sionna's ``normalize_channel``).
    """
    freqs = subcarrier_frequencies(grid.fft_size, grid.subcarrier_spacing_hz, precision="single", device=a.device)
    with torch.no_grad():
        h = cir_to_ofdm_channel(freqs, a[:, None, :, None, None], tau[:, None, None], normalize)
    return h[:, 0, :, 0, 0].to(torch.complex64).contiguous()


def covariances(
    sampler: ChannelSampler,
    n: int = 2048,
    *,
    speed_mps: SpeedSpec,
    generator: torch.Generator,
    batch_size: int = 256,
) -> ChannelCovariance:
    """Estimate a scene's channel covariances from ``n`` realizations.

    Parameters
    ----------
    sampler
        The scene's channel sampler.
    n
        Number of realizations.
    speed_mps
        Speeds to draw at (usually the scene's ``(min, max)`` range).
    generator
        Source of all randomness.
    batch_size
        Realizations per Sionna call.

    Returns
    -------
    ChannelCovariance
        ``freq [n_sc, n_sc]``, ``time [n_sym, n_sym]``, ``space [n_rx, n_rx]`` and
        ``full [n_sym * n_sc, n_sym * n_sc]``, all ``E[h h^H]`` (sample means, not
        centred: the channels have zero mean), complex64.
    """
    if n < 1:
        msg = "n must be >= 1"
        raise ValueError(msg)
    g = sampler.grid
    n_sym, n_sc, n_rx = g.num_ofdm_symbols, g.fft_size, g.num_rx_ant
    c128 = torch.complex128
    dev = sampler.device
    freq = torch.zeros(n_sc, n_sc, dtype=c128, device=dev)
    time = torch.zeros(n_sym, n_sym, dtype=c128, device=dev)
    space = torch.zeros(n_rx, n_rx, dtype=c128, device=dev)
    full = torch.zeros(n_sym * n_sc, n_sym * n_sc, dtype=c128, device=dev)
    done = 0
    while done < n:
        b = min(batch_size, n - done)
        if isinstance(speed_mps, torch.Tensor) and speed_mps.dim() == 1:
            speed = speed_mps[done : done + b]
        else:
            speed = speed_mps
        h = sampler.sample(b, speed_mps=speed, generator=generator)  # [b, n_rx, n_sym, n_sc]
        hf = h.reshape(-1, n_sc)
        freq += (hf.T @ hf.conj()).to(c128)
        ht = h.transpose(-1, -2).reshape(-1, n_sym)
        time += (ht.T @ ht.conj()).to(c128)
        hg = h.reshape(-1, n_sym * n_sc)
        full += (hg.T @ hg.conj()).to(c128)
        hs = h.reshape(b, n_rx, -1)
        space += torch.einsum("brd,bsd->rs", hs, hs.conj()).to(c128)
        done += b
    c64 = torch.complex64
    return ChannelCovariance(
        freq=(freq / (n * n_rx * n_sym)).to(c64),
        time=(time / (n * n_rx * n_sc)).to(c64),
        space=(space / (n * n_sym * n_sc)).to(c64),
        full=(full / (n * n_rx)).to(c64),
        num_samples=n,
    )
