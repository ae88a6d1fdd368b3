"""OFDM resource grid, channel application, channel estimation and equalization.

All functions are batched over a leading batch dimension ``B`` and work on
``torch.complex64`` tensors. Shapes use these names:

``n_sym``
    OFDM symbols per grid (:attr:`GridSpec.num_ofdm_symbols`).
``n_sc``
    Subcarriers per symbol (:attr:`GridSpec.fft_size`; no guard bands, no DC null).
``n_rx``
    Receive antennas (:attr:`GridSpec.num_rx_ant`). One transmit antenna, one stream.
``n_data``
    Data resource elements per grid (:attr:`GridSpec.num_data_symbols`), in row-major
    ``(symbol, subcarrier)`` order, the order of Sionna's ``ResourceGridMapper``.
``n_pilot``
    Pilot resource elements per grid (:attr:`GridSpec.num_pilot_symbols`), same order.

Power convention (unit average symbol energy): data symbols and pilots have unit
average energy per resource element, channels unit average energy per resource
element (see :mod:`ivsim.phy.channels`), and the noise added by
:func:`apply_channel` is circularly-symmetric complex Gaussian with *total*
variance ``no = 10 ** (-snr_db / 10)`` per resource element and receive antenna
(``no / 2`` per real component). ``snr_db`` is therefore the average SNR per
resource element and antenna.

Receivers
---------
:class:`LSEstimator`
    Sionna ``LSChannelEstimator``: least squares at the pilots, then linear
    interpolation (``"lin"``: across subcarriers, then across OFDM symbols,
    extrapolating linearly beyond the first and last pilot symbols) or
    ``"lin_time_avg"`` (pilot symbols averaged in time) or ``"nn"``.
:class:`LMMSEEstimator`
    Sionna ``LMMSEChannelEstimator``: LMMSE filtering across frequency then time
    (``order="f-t"``) with the frequency and time covariance matrices of a scene
    (:class:`ChannelCovariance`, estimated by :func:`ivsim.phy.channels.covariances`).
    Sionna builds its filters per batch item (~20 ms of one core per item and
    antenna at 14 x 72); noise levels that repeat are served from a cached linear
    operator instead. On a busy 2-core CPU these kernels run 20-30x slower with
    two torch threads than with one: run them with ``torch.set_num_threads(1)``.
:class:`FullGridLMMSEEstimator`
    Genie reference: LMMSE from all pilots to the whole grid with the scene's full
    ``(n_sym * n_sc)``-square covariance (no separability assumption).
:func:`lmmse_equalize`
    Per resource element LMMSE equalization of a SISO/SIMO link that treats the
    channel estimation error variance as extra noise (the closed form of Sionna's
    ``LMMSEEqualizer`` for one stream).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch

from ivsim.phy._sionna import device_key  # first: imports Sionna without touching the global RNG

from sionna.phy.ofdm import (  # isort: skip
    LMMSEChannelEstimator,
    LSChannelEstimator,
    PilotPattern,
    ResourceGrid,
    ResourceGridMapper,
)

__all__ = [
    "ChannelCovariance",
    "ChannelEstimator",
    "FullGridLMMSEEstimator",
    "GridSpec",
    "LMMSEEstimator",
    "LSEstimator",
    "OfdmMapper",
    "apply_channel",
    "lmmse_equalize",
    "nmse_db",
    "noise_variance",
]

PILOT_SEED = 20240603
"""Seed of the QPSK pilot sequence: pilots depend on the grid only, identical on every device."""


# --------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class GridSpec:
    """An OFDM resource grid with Kronecker pilots (one transmit stream).

    Parameters
    ----------
    num_ofdm_symbols
        OFDM symbols per grid (a slot of 14 by default).
    fft_size
        Subcarriers per symbol; all are used (no guard carriers, no DC null).
    subcarrier_spacing_hz
        Subcarrier spacing.
    pilot_ofdm_symbol_indices
        OFDM symbols that carry pilots. With the Kronecker pattern and one stream,
        every subcarrier of these symbols is a pilot.
    pilot_pattern
        Only ``"kronecker"``.
    num_rx_ant
        Receive antennas (1 = SISO, N = SIMO 1xN).
    num_tx_ant
        Transmit antennas; only 1 is supported.
    cyclic_prefix_length
        Cyclic prefix in samples; sets the OFDM symbol duration
        ``(1 + cp / fft_size) / subcarrier_spacing`` at which channels are sampled.

    Examples
    --------
    >>> g = GridSpec()
    >>> g.num_data_symbols, g.num_pilot_symbols
    (864, 144)
    """

    num_ofdm_symbols: int = 14
    fft_size: int = 72
    subcarrier_spacing_hz: float = 30e3
    pilot_ofdm_symbol_indices: tuple[int, ...] = (2, 11)
    pilot_pattern: Literal["kronecker"] = "kronecker"
    num_rx_ant: int = 1
    num_tx_ant: int = 1
    cyclic_prefix_length: int = 6

    def __post_init__(self) -> None:
        object.__setattr__(self, "pilot_ofdm_symbol_indices", tuple(int(i) for i in self.pilot_ofdm_symbol_indices))
        idx = self.pilot_ofdm_symbol_indices
        problems = []
        if self.num_ofdm_symbols < 1 or self.fft_size < 1:
            problems.append("num_ofdm_symbols and fft_size must be positive")
        if self.subcarrier_spacing_hz <= 0:
            problems.append("subcarrier_spacing_hz must be positive")
        if not idx:
            problems.append("pilot_ofdm_symbol_indices must name at least one OFDM symbol (estimators need pilots)")
        if len(set(idx)) != len(idx) or any(i < 0 or i >= self.num_ofdm_symbols for i in idx):
            problems.append(f"pilot_ofdm_symbol_indices must be distinct symbols in [0, {self.num_ofdm_symbols})")
        if len(idx) >= self.num_ofdm_symbols:
            problems.append("at least one OFDM symbol must carry data")
        if self.pilot_pattern != "kronecker":
            problems.append(f"unknown pilot_pattern {self.pilot_pattern!r} (allowed: kronecker)")
        if self.num_rx_ant < 1:
            problems.append("num_rx_ant must be >= 1")
        if self.num_tx_ant != 1:
            problems.append("num_tx_ant must be 1 (SISO and SIMO links only)")
        if self.cyclic_prefix_length < 0:
            problems.append("cyclic_prefix_length must be >= 0")
        if problems:
            msg = "invalid OFDM grid: " + "; ".join(problems)
            raise ValueError(msg)

    # ---------------------------------------------------------------- sizes

    @property
    def num_resource_elements(self) -> int:
        """Resource elements per grid, ``n_sym * n_sc``."""
        return self.num_ofdm_symbols * self.fft_size

    @property
    def num_pilot_symbols(self) -> int:
        """Pilot resource elements per grid."""
        return len(self.pilot_ofdm_symbol_indices) * self.fft_size

    @property
    def num_data_symbols(self) -> int:
        """Data resource elements per grid (complex channel uses per grid)."""
        return self.num_resource_elements - self.num_pilot_symbols

    @property
    def ofdm_symbol_duration_s(self) -> float:
        """Duration of one OFDM symbol including its cyclic prefix."""
        return (1.0 + self.cyclic_prefix_length / self.fft_size) / self.subcarrier_spacing_hz

    @property
    def bandwidth_hz(self) -> float:
        """Occupied bandwidth, ``n_sc * subcarrier_spacing_hz``."""
        return self.fft_size * self.subcarrier_spacing_hz

    # ---------------------------------------------------------------- pilots

    def pilot_mask(self, *, device: str | torch.device = "cpu") -> torch.Tensor:
        """Return the pilot positions.

        Returns
        -------
        torch.Tensor
            ``[n_sym, n_sc]`` bool, true where a pilot is sent.
        """
        mask = torch.zeros(self.num_ofdm_symbols, self.fft_size, dtype=torch.bool, device=device)
        mask[list(self.pilot_ofdm_symbol_indices), :] = True
        return mask

    def pilots(self, *, device: str | torch.device = "cpu") -> torch.Tensor:
        """Return the pilot symbols: unit-modulus QPSK drawn once from :data:`PILOT_SEED`.

        Returns
        -------
        torch.Tensor
            ``[n_pilot]`` complex64, in row-major order of :meth:`pilot_mask`.
        """
        rng = np.random.default_rng(PILOT_SEED)
        bits = rng.integers(0, 2, size=(self.num_pilot_symbols, 2))
        p = ((1 - 2 * bits[:, 0]) + 1j * (1 - 2 * bits[:, 1])) / math.sqrt(2)
        return torch.as_tensor(p.astype(np.complex64), device=device)

    def resource_grid(self, *, device: str | torch.device = "cpu") -> ResourceGrid:
        """Build the Sionna ``ResourceGrid`` of this grid (deterministic pilots, single precision).

        Parameters
        ----------
        device
            Device of the Sionna objects.

        Returns
        -------
        sionna.phy.ofdm.ResourceGrid
            One transmitter, one stream, with a :class:`~sionna.phy.ofdm.PilotPattern`
            whose mask is the Kronecker layout and whose pilots are :meth:`pilots`.
        """
        dev = device_key(device)
        mask = self.pilot_mask().numpy()[None, None]
        pilots = self.pilots().numpy()[None, None]
        pattern = PilotPattern(mask, pilots, normalize=False, precision="single", device=dev)
        return ResourceGrid(
            num_ofdm_symbols=self.num_ofdm_symbols,
            fft_size=self.fft_size,
            subcarrier_spacing=self.subcarrier_spacing_hz,
            num_tx=1,
            num_streams_per_tx=1,
            cyclic_prefix_length=self.cyclic_prefix_length,
            pilot_pattern=pattern,
            precision="single",
            device=dev,
        )


# --------------------------------------------------------------------------- mapping


class OfdmMapper:
    """Map data symbols onto the grid with pilots, and extract them again.

    Parameters
    ----------
    grid
        The resource grid.
    device
        Device of the tensors.
    """

    def __init__(self, grid: GridSpec, *, device: str | torch.device = "cpu") -> None:
        self.grid = grid
        self.device = torch.device(device_key(device))
        self.resource_grid = grid.resource_grid(device=self.device)
        self._mapper = ResourceGridMapper(self.resource_grid, precision="single", device=device_key(self.device))
        self.pilot_mask = grid.pilot_mask(device=self.device)
        """``[n_sym, n_sc]`` bool: pilot positions."""
        self.data_mask = ~self.pilot_mask
        """``[n_sym, n_sc]`` bool: data positions."""
        self.pilots = grid.pilots(device=self.device)
        """``[n_pilot]`` complex64: the pilot symbols."""

    def map(self, x: torch.Tensor) -> torch.Tensor:
        """Place data symbols and pilots on the grid (Sionna ``ResourceGridMapper``).

        Parameters
        ----------
        x
            ``[B, n_data]`` complex data symbols (unit average energy expected).

        Returns
        -------
        torch.Tensor
            ``[B, n_sym, n_sc]`` complex64 transmitted grid.
        """
        if x.dim() != 2 or x.shape[-1] != self.grid.num_data_symbols:
            msg = f"x must be [B, {self.grid.num_data_symbols}], got {list(x.shape)}"
            raise ValueError(msg)
        out = self._mapper(x.to(device=self.device, dtype=torch.complex64)[:, None, None, :])
        return out[:, 0, 0]

    def demap(self, grid: torch.Tensor) -> torch.Tensor:
        """Extract the data resource elements.

        Parameters
        ----------
        grid
            ``[..., n_sym, n_sc]``, e.g. an equalized grid ``[B, n_sym, n_sc]``.

        Returns
        -------
        torch.Tensor
            ``[..., n_data]`` in the order :meth:`map` used.
        """
        return grid[..., self.data_mask]

    def pilot_values(self, grid: torch.Tensor) -> torch.Tensor:
        """Extract the pilot resource elements.

        Parameters
        ----------
        grid
            ``[..., n_sym, n_sc]``.

        Returns
        -------
        torch.Tensor
            ``[..., n_pilot]`` in the order of :attr:`pilots`.
        """
        return grid[..., self.pilot_mask]


# --------------------------------------------------------------------------- channel and noise


def noise_variance(
    snr_db: torch.Tensor | float, batch_size: int, *, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Return the complex noise variance ``no = 10 ** (-snr_db / 10)`` per batch item.

    Parameters
    ----------
    snr_db
        A float (all items) or ``[B]``: average SNR per resource element and antenna.
    batch_size
        ``B``.
    device
        Device of the result.

    Returns
    -------
    torch.Tensor
        ``[B]`` float32, the total (real + imaginary) noise variance.
    """
    snr = torch.as_tensor(snr_db, dtype=torch.float64, device=device)
    if snr.dim() == 0:
        snr = snr.expand(batch_size)
    if snr.shape != (batch_size,):
        msg = f"snr_db must be a float or [B={batch_size}], got shape {list(snr.shape)}"
        raise ValueError(msg)
    return torch.pow(10.0, -snr / 10.0).to(torch.float32)


def apply_channel(
    x: torch.Tensor,
    h: torch.Tensor,
    snr_db: torch.Tensor | float,
    *,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pass a transmitted grid through a frequency-domain channel and add complex AWGN.

    ``y[b, r, s, k] = h[b, r, s, k] * x[b, s, k] + n[b, r, s, k]`` with
    ``n ~ CN(0, no[b])``: each real component has variance ``no[b] / 2``.

    Parameters
    ----------
    x
        ``[B, n_sym, n_sc]`` complex transmitted grid (one transmit antenna).
    h
        ``[B, n_rx, n_sym, n_sc]`` complex channel frequency response.
    snr_db
        A float or ``[B]`` average SNR per resource element and antenna.
    generator
        Draws the noise; on the device of ``h``.

    Returns
    -------
    y : torch.Tensor
        ``[B, n_rx, n_sym, n_sc]`` complex64 received grid.
    no : torch.Tensor
        ``[B]`` float32 complex noise variance.
    """
    if h.dim() != 4 or x.dim() != 3 or h.shape[0] != x.shape[0] or h.shape[2:] != x.shape[1:]:
        msg = f"need x [B, n_sym, n_sc] and h [B, n_rx, n_sym, n_sc], got {list(x.shape)} and {list(h.shape)}"
        raise ValueError(msg)
    h = h.to(torch.complex64)
    no = noise_variance(snr_db, h.shape[0], device=h.device)
    w = torch.randn((2, *h.shape), generator=generator, device=h.device, dtype=torch.float32)
    scale = torch.sqrt(no / 2.0).view(-1, 1, 1, 1)
    noise = torch.complex(w[0] * scale, w[1] * scale)
    y = h * x.to(device=h.device, dtype=torch.complex64)[:, None] + noise
    return y, no


# --------------------------------------------------------------------------- covariance


@dataclass(frozen=True)
class ChannelCovariance:
    """Second-order statistics of a scene's channel on a grid, ``R = E[h h^H]``.

    Attributes
    ----------
    freq
        ``[n_sc, n_sc]`` complex64 frequency covariance, averaged over symbols and antennas.
    time
        ``[n_sym, n_sym]`` complex64 time covariance, averaged over subcarriers and antennas.
    space
        ``[n_rx, n_rx]`` complex64 receive-antenna covariance, averaged over the grid.
    full
        ``[n_sym * n_sc, n_sym * n_sc]`` complex64 covariance of one antenna's grid
        flattened row-major ``(symbol, subcarrier)``, averaged over antennas.
    num_samples
        Channel realizations it was estimated from.
    """

    freq: torch.Tensor
    time: torch.Tensor
    space: torch.Tensor
    full: torch.Tensor
    num_samples: int

    @property
    def power(self) -> float:
        """Average channel energy per resource element, ``mean(diag(full))``."""
        return float(torch.diagonal(self.full).real.mean())

    def correlation(self, lag: int, *, axis: Literal["freq", "time"] = "freq") -> float:
        """Return ``|mean_k R[k, k + lag]| / mean_k R[k, k]`` along ``axis``.

        Parameters
        ----------
        lag
            Offset in subcarriers (``"freq"``) or OFDM symbols (``"time"``).
        axis
            Which covariance.

        Returns
        -------
        float
            The normalised magnitude of the average correlation at that lag.
        """
        r = self.freq if axis == "freq" else self.time
        return float(torch.diagonal(r, offset=lag).mean().abs() / torch.diagonal(r).real.mean())


# --------------------------------------------------------------------------- estimators


class ChannelEstimator(Protocol):
    """What every channel estimator is: received grid and noise variance in, channel estimate out."""

    def __call__(self, y: torch.Tensor, no: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Estimate the channel on the whole grid.

        Parameters
        ----------
        y
            ``[B, n_rx, n_sym, n_sc]`` complex received grid.
        no
            ``[B]`` float complex noise variance.

        Returns
        -------
        h_hat : torch.Tensor
            ``[B, n_rx, n_sym, n_sc]`` complex64 channel estimate.
        err_var : torch.Tensor
            ``[B, n_rx, n_sym, n_sc]`` float32 estimation error variance (the estimator's own model of it).
        """
        ...


def _check_y(y: torch.Tensor, grid: GridSpec) -> None:
    shape = (grid.num_ofdm_symbols, grid.fft_size)
    if y.dim() != 4 or tuple(y.shape[2:]) != shape:
        msg = f"y must be [B, n_rx, {shape[0]}, {shape[1]}], got {list(y.shape)}"
        raise ValueError(msg)


class _SionnaEstimator:
    """Adapts a Sionna OFDM channel estimator to ``[B, n_rx, n_sym, n_sc]`` tensors, in chunks of the batch."""

    def __init__(self, grid: GridSpec, device: str | torch.device, chunk_size: int) -> None:
        if chunk_size < 1:
            msg = "chunk_size must be >= 1"
            raise ValueError(msg)
        self.grid = grid
        self.device = torch.device(device_key(device))
        self.chunk_size = int(chunk_size)
        self.resource_grid = grid.resource_grid(device=self.device)
        self._block: torch.nn.Module

    def _run(self, y: torch.Tensor, no: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Call the Sionna block on ``y [B, n_rx, n_sym, n_sc]``, ``no [B]``, ``chunk_size`` items at a time."""
        h_parts, e_parts = [], []
        with torch.no_grad():
            for start in range(0, y.shape[0], self.chunk_size):
                sl = slice(start, start + self.chunk_size)
                h_hat, err_var = self._block(y[sl][:, None], no[sl])
                # [b, num_rx=1, n_rx, num_tx=1, streams=1, n_sym, n_sc] -> [b, n_rx, n_sym, n_sc]
                h_parts.append(h_hat[:, 0, :, 0, 0])
                e_parts.append(err_var[:, 0, :, 0, 0].to(torch.float32))
        return torch.cat(h_parts), torch.cat(e_parts)

    def _inputs(self, y: torch.Tensor, no: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_y(y, self.grid)
        y = y.to(device=self.device, dtype=torch.complex64)
        no = torch.as_tensor(no, dtype=torch.float32, device=self.device).reshape(-1)
        if no.numel() == 1:
            no = no.expand(y.shape[0])
        if no.shape[0] != y.shape[0]:
            msg = f"no must be [B={y.shape[0]}], got {list(no.shape)}"
            raise ValueError(msg)
        return y, no.contiguous()

    def __call__(self, y: torch.Tensor, no: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(*self._inputs(y, no))


class LSEstimator(_SionnaEstimator):
    """Least-squares estimation at the pilots, interpolated over the grid (Sionna ``LSChannelEstimator``).

    Parameters
    ----------
    grid
        The resource grid.
    interpolation
        ``"lin"`` (default): linear across subcarriers, then across OFDM symbols;
        symbols before the first / after the last pilot symbol are extrapolated
        linearly from the two nearest pilot symbols (Sionna's ``LinearInterpolator``;
        the same rule as the notes' reference LS).
        ``"lin_time_avg"``: as ``"lin"`` but the pilot symbols are first averaged in
        time (for channels static over the slot). ``"nn"``: nearest pilot.
    device
        Device of the computation.
    chunk_size
        Batch items per Sionna call.

    Notes
    -----
    Call: ``(y [B, n_rx, n_sym, n_sc], no [B]) -> (h_hat, err_var)``, both ``[B, n_rx, n_sym, n_sc]``.
    """

    def __init__(
        self,
        grid: GridSpec,
        *,
        interpolation: Literal["lin", "lin_time_avg", "nn"] = "lin",
        device: str | torch.device = "cpu",
        chunk_size: int = 1024,
    ) -> None:
        super().__init__(grid, device, chunk_size)
        self.interpolation = interpolation
        self._block = LSChannelEstimator(
            self.resource_grid, interpolation_type=interpolation, precision="single", device=device_key(self.device)
        )


class LMMSEEstimator(_SionnaEstimator):
    """LMMSE filtering across frequency and time with a scene's covariances (Sionna ``LMMSEChannelEstimator``).

    Parameters
    ----------
    grid
        The resource grid.
    covariance
        The scene's statistics; ``freq`` and ``time`` are used (and ``space`` when
        ``order`` contains ``"s"``).
    order
        Filtering order, e.g. ``"f-t"`` (default: smooth the pilot symbols across
        subcarriers, then interpolate across OFDM symbols) or ``"f-t-s"``.
    device
        Device of the computation.
    chunk_size
        Batch items per Sionna call. Sionna builds the filter matrices per batch
        item (about 6 MB and 20 ms of one CPU core per item at 14 x 72), so large
        batches are cut into chunks to bound memory.
    operator_min_count
        Sionna's estimate is linear in ``y`` for a given ``no``. When one noise
        variance occurs at least this often in a call (an SNR sweep), the estimator
        is applied once to the ``n_pilot`` unit pilot observations, and the resulting
        ``[n_pilot, n_sym * n_sc]`` operator (and the error variances) are kept
        (up to ``operator_cache`` noise levels) and applied as one matrix product:
        the same numbers as the direct call up to float rounding, far faster when
        SNRs repeat. ``0`` disables it. Not used with spatial filtering (``"s"``).
    operator_cache
        How many noise levels' operators to keep (least recently used dropped).

    Notes
    -----
    Call: ``(y [B, n_rx, n_sym, n_sc], no [B]) -> (h_hat, err_var)``, both
    ``[B, n_rx, n_sym, n_sc]``. The filter assumes a separable (time x frequency)
    covariance; :class:`FullGridLMMSEEstimator` does not.
    """

    def __init__(
        self,
        grid: GridSpec,
        covariance: ChannelCovariance,
        *,
        order: str = "f-t",
        device: str | torch.device = "cpu",
        chunk_size: int = 32,
        operator_min_count: int = 32,
        operator_cache: int = 16,
    ) -> None:
        super().__init__(grid, device, chunk_size)
        self.order = order
        spatial = "s" in order.split("-")
        space = covariance.space.to(self.device, torch.complex64) if spatial else None
        self._block = LMMSEChannelEstimator(
            self.resource_grid,
            covariance.time.to(self.device, torch.complex64),
            covariance.freq.to(self.device, torch.complex64),
            cov_mat_space=space,
            order=order,
            precision="single",
            device=device_key(self.device),
        )
        self.operator_min_count = 0 if spatial else int(operator_min_count)
        self.operator_cache = int(operator_cache)
        self._operators: OrderedDict[float, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._pilot_mask = grid.pilot_mask(device=self.device)
        self._pilots = grid.pilots(device=self.device)

    def _operator(self, no: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(F [n_pilot, n_sym * n_sc], err_var [n_sym * n_sc])`` for one noise variance."""
        if no in self._operators:
            self._operators.move_to_end(no)
            return self._operators[no]
        g = self.grid
        p = g.num_pilot_symbols
        # Impulse i: the LS estimate at pilot i is one, zero elsewhere (y_p = pilot_i there).
        imp = torch.zeros(p, 1, g.num_resource_elements, dtype=torch.complex64, device=self.device)
        pilot_pos = torch.nonzero(self._pilot_mask.reshape(-1)).squeeze(-1)
        imp[torch.arange(p, device=self.device), 0, pilot_pos] = self._pilots
        imp = imp.reshape(p, 1, g.num_ofdm_symbols, g.fft_size)
        h, e = self._run(imp, torch.full((p,), no, dtype=torch.float32, device=self.device))
        op = (h.reshape(p, -1), e[0].reshape(-1))
        self._operators[no] = op
        while len(self._operators) > self.operator_cache:
            self._operators.popitem(last=False)
        return op

    def __call__(self, y: torch.Tensor, no: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, no = self._inputs(y, no)
        if self.operator_min_count <= 0 or self.operator_cache <= 0:
            return self._run(y, no)
        b, n_rx = y.shape[:2]
        shape = (b, n_rx, self.grid.num_ofdm_symbols, self.grid.fft_size)
        h_hat = torch.empty(shape, dtype=torch.complex64, device=self.device)
        err_var = torch.empty(shape, dtype=torch.float32, device=self.device)
        levels, inverse, counts = torch.unique(no, return_inverse=True, return_counts=True)
        direct = torch.zeros(b, dtype=torch.bool, device=self.device)
        for k, (level, count) in enumerate(zip(levels.tolist(), counts.tolist(), strict=True)):
            items = inverse == k
            if level in self._operators or count >= self.operator_min_count:
                op, ev = self._operator(level)
                h_ls = y[items][..., self._pilot_mask] / self._pilots  # [b_k, n_rx, n_pilot]
                h_hat[items] = (h_ls @ op).reshape(-1, *shape[1:])
                err_var[items] = ev.reshape(1, 1, *shape[2:]).expand(int(count), n_rx, -1, -1)
            else:
                direct |= items
        if bool(direct.any()):
            h_d, e_d = self._run(y[direct], no[direct])
            h_hat[direct] = h_d
            err_var[direct] = e_d
        return h_hat, err_var


class FullGridLMMSEEstimator:
    """Genie LMMSE from all pilots to the whole grid with the scene's full covariance.

    ``h_hat = R_ap (R_pp + no I)^-1 h_ls`` per receive antenna, where ``h_ls`` is
    the LS estimate at the pilots, ``R_pp`` the pilot-pilot block and ``R_ap``
    the grid-pilot block of :attr:`ChannelCovariance.full`. ``R_pp`` is
    diagonalised once, so every batch item can have its own ``no`` at the cost of
    two matrix products.

    Parameters
    ----------
    grid
        The resource grid.
    covariance
        The scene's statistics (``full`` is used).
    device
        Device of the computation.

    Notes
    -----
    Call: ``(y [B, n_rx, n_sym, n_sc], no [B]) -> (h_hat, err_var)``, both
    ``[B, n_rx, n_sym, n_sc]``; ``err_var`` is the diagonal of the posterior error
    covariance under the assumed statistics.
    """

    def __init__(self, grid: GridSpec, covariance: ChannelCovariance, *, device: str | torch.device = "cpu") -> None:
        self.grid = grid
        self.device = torch.device(device_key(device))
        d = grid.num_resource_elements
        if covariance.full.shape != (d, d):
            msg = f"covariance.full must be [{d}, {d}] for this grid, got {list(covariance.full.shape)}"
            raise ValueError(msg)
        mask = grid.pilot_mask().reshape(-1)
        r = covariance.full.to(torch.complex128).cpu()
        r = 0.5 * (r + r.mH)
        lam, u = torch.linalg.eigh(r[mask][:, mask])
        a = r[:, mask] @ u  # [D, P]
        self._pilot_mask = grid.pilot_mask(device=self.device)
        self._pilots = grid.pilots(device=self.device)
        self._lam = lam.clamp_min(0.0).to(device=self.device, dtype=torch.float32)  # [P]
        self._u_conj = u.conj().to(device=self.device, dtype=torch.complex64)  # [P, P]
        self._a_t = a.T.contiguous().to(device=self.device, dtype=torch.complex64)  # [P, D]
        self._a2_t = (a.abs() ** 2).T.contiguous().to(device=self.device, dtype=torch.float32)  # [P, D]
        self._diag = torch.diagonal(r).real.to(device=self.device, dtype=torch.float32)  # [D]

    def __call__(self, y: torch.Tensor, no: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_y(y, self.grid)
        b, n_rx = y.shape[:2]
        no = torch.as_tensor(no, dtype=torch.float32, device=self.device).reshape(-1)
        y = y.to(device=self.device, dtype=torch.complex64)
        h_ls = y[..., self._pilot_mask] / self._pilots  # [B, n_rx, P]; |p| = 1, error variance no
        w = 1.0 / (self._lam[None, :] + no[:, None])  # [B, P]
        z = (h_ls @ self._u_conj) * w[:, None, :]
        h_hat = (z @ self._a_t).reshape(b, n_rx, self.grid.num_ofdm_symbols, self.grid.fft_size)
        err = (self._diag[None, :] - w @ self._a2_t).clamp_min(0.0)  # [B, D]
        err_var = err.reshape(b, 1, self.grid.num_ofdm_symbols, self.grid.fft_size).expand(-1, n_rx, -1, -1)
        return h_hat, err_var.contiguous()


# --------------------------------------------------------------------------- equalization and metrics


def lmmse_equalize(
    y: torch.Tensor,
    h_hat: torch.Tensor,
    err_var: torch.Tensor | float,
    no: torch.Tensor,
    *,
    unbiased: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LMMSE-equalize every resource element of a SISO/SIMO grid.

    Per resource element, with ``s_r = no + err_var_r`` (estimation error treated as
    noise, unit symbol energy) and ``a = sum_r |h_r|^2 / s_r``: the MMSE estimate is
    ``sum_r conj(h_r) y_r / s_r / (1 + a)``; the unbiased one (default, as Sionna's
    ``LMMSEEqualizer``) divides by ``a`` instead, with effective noise variance
    ``1 / a``. For the MMSE estimate the effective noise variance is ``1 / (1 + a)``
    (its mean squared error).

    Parameters
    ----------
    y
        ``[B, n_rx, n_sym, n_sc]`` complex received grid.
    h_hat
        ``[B, n_rx, n_sym, n_sc]`` complex channel estimate.
    err_var
        ``[B, n_rx, n_sym, n_sc]`` (or broadcastable, or 0.0 for perfect CSI) estimation error variance.
    no
        ``[B]`` complex noise variance.
    unbiased
        Return the unbiased estimate (default) or the MMSE one.

    Returns
    -------
    x_hat : torch.Tensor
        ``[B, n_sym, n_sc]`` complex64 equalized grid; use :meth:`OfdmMapper.demap` for ``[B, n_data]``.
    no_eff : torch.Tensor
        ``[B, n_sym, n_sc]`` float32 effective noise variance per resource element.
    """
    no = torch.as_tensor(no, dtype=torch.float32, device=y.device).reshape(-1, 1, 1, 1)
    s = no + torch.as_tensor(err_var, dtype=torch.float32, device=y.device)
    s = s.clamp_min(torch.finfo(torch.float32).tiny)
    num = (h_hat.conj() * y / s).sum(dim=1)
    a = ((h_hat.real**2 + h_hat.imag**2) / s).sum(dim=1)
    if unbiased:
        a = a.clamp_min(torch.finfo(torch.float32).tiny)
        return num / a, 1.0 / a
    return num / (1.0 + a), 1.0 / (1.0 + a)


def nmse_db(
    h_hat: torch.Tensor,
    h: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    per_example: bool = False,
) -> torch.Tensor:
    """Normalised mean squared error in dB, ``10 log10(sum |h_hat - h|^2 / sum |h|^2)``.

    Parameters
    ----------
    h_hat
        ``[B, ...]`` estimate (e.g. ``[B, n_rx, n_sym, n_sc]``).
    h
        Same shape, the true channel.
    mask
        Optional ``[n_sym, n_sc]`` bool: only these resource elements count (e.g. the pilots).
    per_example
        If true, one value per batch item ``[B]``; else one pooled value (sums over
        the whole batch, the estimator-comparison convention).

    Returns
    -------
    torch.Tensor
        ``[]`` or ``[B]`` float32.
    """
    err = (h_hat - h).abs() ** 2
    ref = h.abs() ** 2
    if mask is not None:
        err = err[..., mask]
        ref = ref[..., mask]
    if per_example:
        e = err.reshape(err.shape[0], -1).sum(-1)
        r = ref.reshape(ref.shape[0], -1).sum(-1)
    else:
        e, r = err.sum(), ref.sum()
    return (10.0 * torch.log10(e.double() / r.double())).to(torch.float32)
