"""Channel estimators of the receiver: ``ls``, ``lmmse`` and the conditional-diffusion ``diffusion``.

Every estimator follows the :class:`ChannelEstimator` protocol::

    h_hat, err_var = estimator.estimate(y, no)

with ``y`` the received grid ``[B, n_rx, n_sym, n_sc]`` (complex, pilots included,
as made by :func:`ivsim.phy.apply_channel`) and ``no`` ``[B]`` the complex noise
variance; ``h_hat`` is ``[B, n_rx, n_sym, n_sc]`` complex64 and ``err_var`` the same
shape, float32 (the estimation error variance that :func:`ivsim.phy.lmmse_equalize`
treats as extra noise).

Kinds (:data:`ESTIMATORS`, architecture rule 6)
-----------------------------------------------
``ls``
    :class:`LSChannelEstimator`: Sionna least squares at the pilots, linear
    interpolation (:class:`ivsim.phy.LSEstimator`). Needs no statistics.
``lmmse``
    :class:`LMMSEChannelEstimator`: Sionna's separable LMMSE
    (:class:`ivsim.phy.LMMSEEstimator`) with time/frequency covariances estimated
    from the scene profile's channels, cached per ``(profile hash, grid, carrier,
    speeds)`` in a :class:`CovarianceCache` (pass one to share it between
    estimators; there is no module-level cache).
``diffusion``
    :class:`DiffusionChannelEstimator`: a conditional DDPM (diffusers
    ``UNet2DModel``; ``DDPMScheduler`` noise schedule in training, ``DDIMScheduler``
    with 10 steps in sampling) that generates the whole channel grid conditioned
    on the LS estimate and the SNR (the pilot-conditioned channel diffusion model of
    CDDM / CTCD). Weights from ``models/estimator_<scene>.safetensors``.

:func:`make_estimator` also takes ``"package.module:ClassName"``, so a researcher's
own estimator plugs in without touching ivsim (see its docstring).

The diffusion model
-------------------
Input of the UNet, ``[B, 4 n_rx + 1, H, W]`` with the grid ``n_sym x n_sc``
zero-padded at the end to ``H x W`` (multiples of 4; 16 x 72 for the default 14 x 72):

* channels ``0 .. 2 n_rx``: the noisy sample ``x_t`` (real parts of the ``n_rx``
  antennas, then imaginary parts), channels scaled by ``sqrt(2)`` to unit variance
  per real component;
* channels ``2 n_rx .. 4 n_rx``: the LS estimate (interpolated over the whole grid),
  same layout and scale;
* the last channel: the SNR as a constant plane, ``snr_db / 20`` (chosen over the
  class-embedding route because it needs no discretisation of the SNR and works for
  any SNR in between).

Output: ``[B, 2 n_rx, H, W]``, the clean channel (``prediction_type="sample"``, i.e.
x0-prediction: the network is a denoiser conditioned on the pilots; with this
target the training converges far faster on a CPU budget than epsilon-prediction,
because even the high-noise timesteps teach it to map the LS estimate to the
channel). Sampling runs DDIM with ``eta = 0`` from ``start="noise"`` (pure Gaussian
noise at ``t = T``, the textbook DDPM) or ``start="ls"`` (the LS estimate noised to
``start_t``; SDEdit-style, fewer effective steps); the initial noise is drawn from
the caller's ``torch.Generator``, so the same generator gives the same estimate.

``err_var`` of the diffusion estimator is the mean squared error per resource
element measured on held-out channels at the end of training, stored with the
weights as a table over SNR (buffers ``err_snr_db``, ``err_mse``) and interpolated
at each item's SNR.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch

from ivsim.config.schema import LinkLevelProfile, SystemLevelProfile, profile_hash
from ivsim.errors import ModelError
from ivsim.registry import resolve_kind
from ivsim.phy import ChannelCovariance, ChannelSampler, GridSpec, LMMSEEstimator, LSEstimator, covariances

__all__ = [
    "DIFFUSION_ARCHITECTURE",
    "ESTIMATORS",
    "ChannelEstimator",
    "CovarianceCache",
    "DiffusionChannelEstimator",
    "DiffusionConfig",
    "LMMSEChannelEstimator",
    "LSChannelEstimator",
    "estimator_weights_path",
    "make_estimator",
]

logger = logging.getLogger(__name__)

Profile = SystemLevelProfile | LinkLevelProfile
DIFFUSION_ARCHITECTURE = "estimator/diffusion"
"""The ``ivsim.architecture`` metadata of diffusion estimator weights."""
_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


def estimator_weights_path(scene: str, *, models_dir: str | Path | None = None) -> Path:
    """Return where the shipped diffusion weights of ``scene`` live.

    Parameters
    ----------
    scene
        Scene name, e.g. ``"street_canyon"``.
    models_dir
        Folder of the weights; default the repository's ``models/``.

    Returns
    -------
    Path
        ``<models_dir>/estimator_<scene>.safetensors`` (not checked for existence).
    """
    return Path(models_dir if models_dir is not None else _MODELS_DIR) / f"estimator_{scene}.safetensors"


# --------------------------------------------------------------------------- protocol


@runtime_checkable
class ChannelEstimator(Protocol):
    """What the receiver needs of a channel estimator.

    Attributes
    ----------
    name
        The registry kind (or ``module:Class``) it was made as.
    scene
        The scene its weights or statistics were made for, or ``None`` (LS).
    """

    name: str
    scene: str | None

    def estimate(self, y: torch.Tensor, no: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Estimate the channel.

        Parameters
        ----------
        y
            ``[B, n_rx, n_sym, n_sc]`` complex received grid.
        no
            ``[B]`` complex noise variance.

        Returns
        -------
        h_hat : torch.Tensor
            ``[B, n_rx, n_sym, n_sc]`` complex64.
        err_var : torch.Tensor
            ``[B, n_rx, n_sym, n_sc]`` float32.
        """
        ...


def _as_no(no: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
    no = torch.as_tensor(no, dtype=torch.float32, device=device).reshape(-1)
    if no.numel() == 1:
        no = no.expand(batch)
    if no.shape[0] != batch:
        msg = f"no must be [B={batch}], got {list(no.shape)}"
        raise ValueError(msg)
    return no.contiguous()


# --------------------------------------------------------------------------- ls


class LSChannelEstimator:
    """Least squares at the pilots with linear interpolation (wraps :class:`ivsim.phy.LSEstimator`).

    Parameters
    ----------
    grid
        The resource grid.
    interpolation
        ``"lin"``, ``"lin_time_avg"`` or ``"nn"`` (see :class:`ivsim.phy.LSEstimator`).
    scene
        Ignored for the estimate (LS needs no statistics); kept as ``None``.
    device
        Device of the computation.
    """

    def __init__(
        self,
        grid: GridSpec | None = None,
        *,
        interpolation: Literal["lin", "lin_time_avg", "nn"] = "lin",
        scene: str | None = None,  # noqa: ARG002  (uniform constructor of the registry)
        device: str | torch.device = "cpu",
        **_: Any,
    ) -> None:
        self.grid = grid if grid is not None else GridSpec()
        self.name = "ls"
        self.scene: str | None = None
        self._ls = LSEstimator(self.grid, interpolation=interpolation, device=device)

    def estimate(self, y: torch.Tensor, no: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`ChannelEstimator.estimate`."""
        return self._ls(y, no)


# --------------------------------------------------------------------------- lmmse


class CovarianceCache:
    """Scene covariances estimated once per ``(profile hash, grid, carrier, speeds, n, seed)``.

    Parameters
    ----------
    n
        Channel realizations per estimate.
    seed
        Seed of the generator that draws them (statistics are deterministic).

    Examples
    --------
    >>> cache = CovarianceCache(n=256)
    >>> len(cache)
    0
    """

    def __init__(self, *, n: int = 2048, seed: int = 0) -> None:
        self.n = int(n)
        self.seed = int(seed)
        self._store: dict[tuple[Any, ...], ChannelCovariance] = {}

    def __len__(self) -> int:
        return len(self._store)

    def get(
        self,
        profile: Profile,
        grid: GridSpec,
        *,
        carrier_hz: float,
        speed_range_mps: tuple[float, float],
        device: str | torch.device = "cpu",
    ) -> ChannelCovariance:
        """Return (estimating on first use) the covariances of ``profile`` on ``grid``."""
        key = (profile_hash(profile), grid, float(carrier_hz), tuple(map(float, speed_range_mps)), self.n, self.seed)
        if key not in self._store:
            sampler = ChannelSampler(profile, grid, carrier_hz=carrier_hz, device=device)
            gen = torch.Generator(device=sampler.device).manual_seed(self.seed)
            logger.info("estimating covariances of profile %s from %d channels", key[0], self.n)
            self._store[key] = covariances(sampler, self.n, speed_mps=tuple(speed_range_mps), generator=gen)
        return self._store[key]


class LMMSEChannelEstimator:
    """Sionna's separable LMMSE with a scene's covariances (wraps :class:`ivsim.phy.LMMSEEstimator`).

    Parameters
    ----------
    grid
        The resource grid.
    profile
        The scene's channel profile; its covariances are estimated (or taken from ``cache``).
    scene
        The scene's name (reported as :attr:`scene`).
    carrier_hz
        Carrier of the statistics.
    speed_range_mps
        Speeds the statistics are drawn at.
    covariance
        Ready covariances; skips the estimation (``profile`` may then be ``None``).
    cache
        Where covariances are kept between estimators; a private one if ``None``.
    order
        Sionna filtering order.
    device
        Device of the computation.
    """

    def __init__(
        self,
        grid: GridSpec | None = None,
        *,
        profile: Profile | None = None,
        scene: str | None = None,
        carrier_hz: float = 3.5e9,
        speed_range_mps: tuple[float, float] = (3.0, 15.0),
        covariance: ChannelCovariance | None = None,
        cache: CovarianceCache | None = None,
        order: str = "f-t",
        device: str | torch.device = "cpu",
        **_: Any,
    ) -> None:
        self.grid = grid if grid is not None else GridSpec()
        self.name = "lmmse"
        self.scene = scene
        if covariance is None:
            if profile is None:
                msg = "the lmmse estimator needs a scene profile (or covariance=)"
                raise ValueError(msg)
            cache = cache if cache is not None else CovarianceCache()
            covariance = cache.get(
                profile, self.grid, carrier_hz=carrier_hz, speed_range_mps=speed_range_mps, device=device
            )
        self.covariance = covariance
        self._lmmse = LMMSEEstimator(self.grid, covariance, order=order, device=device)

    def estimate(self, y: torch.Tensor, no: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`ChannelEstimator.estimate`."""
        return self._lmmse(y, no)


# --------------------------------------------------------------------------- diffusion


@dataclass(frozen=True)
class DiffusionConfig:
    """Architecture of the diffusion estimator (what shapes its tensors).

    Attributes
    ----------
    num_ofdm_symbols, fft_size, num_rx_ant
        The grid the model is made for.
    block_out_channels
        UNet channels per resolution (three levels: the padded grid is divided by 4).
    layers_per_block
        ResNet blocks per level.
    norm_num_groups
        GroupNorm groups.
    num_train_timesteps
        DDPM timesteps.
    beta_schedule
        diffusers beta schedule.
    prediction_type
        ``"sample"`` (x0, default) or ``"epsilon"``.
    """

    num_ofdm_symbols: int = 14
    fft_size: int = 72
    num_rx_ant: int = 1
    block_out_channels: tuple[int, ...] = (32, 48, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: Literal["sample", "epsilon"] = "sample"

    @classmethod
    def for_grid(cls, grid: GridSpec, **kw: Any) -> DiffusionConfig:
        """The default architecture for ``grid``."""
        return cls(num_ofdm_symbols=grid.num_ofdm_symbols, fft_size=grid.fft_size, num_rx_ant=grid.num_rx_ant, **kw)

    @property
    def padded_shape(self) -> tuple[int, int]:
        """``(H, W)``: the grid rounded up to multiples of ``2 ** (levels - 1)``."""
        m = 2 ** (len(self.block_out_channels) - 1)
        return (math.ceil(self.num_ofdm_symbols / m) * m, math.ceil(self.fft_size / m) * m)

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict (stored in the weights)."""
        d = dict(self.__dict__)
        d["block_out_channels"] = list(self.block_out_channels)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DiffusionConfig:
        """Inverse of :meth:`to_json`."""
        d = dict(d)
        d["block_out_channels"] = tuple(d["block_out_channels"])
        return cls(**d)


class DiffusionNet(torch.nn.Module):
    """The UNet plus the error-variance table (one ``state_dict`` for the weight file).

    Parameters
    ----------
    config
        The architecture.
    """

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        self.config = config
        levels = len(config.block_out_channels)
        n_rx = config.num_rx_ant
        self.unet = UNet2DModel(
            sample_size=config.padded_shape,
            in_channels=4 * n_rx + 1,
            out_channels=2 * n_rx,
            layers_per_block=config.layers_per_block,
            block_out_channels=config.block_out_channels,
            down_block_types=("DownBlock2D",) * levels,
            up_block_types=("UpBlock2D",) * levels,
            norm_num_groups=config.norm_num_groups,
        )
        # MSE per resource element vs SNR, filled at the end of training (default: a rough LS-like guess).
        snr = torch.arange(-10.0, 31.0, 5.0)
        self.register_buffer("err_snr_db", snr)
        self.register_buffer("err_mse", torch.pow(10.0, -snr / 10.0))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predict from ``x_t [B, 2 n_rx, H, W]``, timesteps ``t [B]``, ``cond [B, 2 n_rx + 1, H, W]``."""
        return self.unet(torch.cat([x_t, cond], dim=1), t).sample

    def num_parameters(self) -> int:
        """Trainable parameters."""
        return sum(p.numel() for p in self.parameters())


def _build(config: DiffusionConfig, seed: int) -> DiffusionNet:
    """Build a :class:`DiffusionNet` initialised from its own generator, leaving the global RNG untouched.

    torch modules draw their default initialisation from the global RNG; the net is
    built inside ``fork_rng`` (the global state is restored afterwards) and every
    convolution / linear layer is then re-drawn from ``torch.Generator(seed)`` with
    torch's default rule (uniform in ``+-1/sqrt(fan_in)``), so the same seed gives
    the same model whatever ran before.
    """
    with torch.random.fork_rng(devices=[]):
        net = DiffusionNet(config)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
                fan_in = m.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 2 * bound - bound)
                if m.bias is not None:
                    m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 2 * bound - bound)
    return net


SCALE = math.sqrt(2.0)
"""Channels have unit energy per resource element: real/imag parts are scaled by sqrt(2) to unit variance."""


def to_planes(h: torch.Tensor, padded: tuple[int, int]) -> torch.Tensor:
    """Complex ``[B, n_rx, n_sym, n_sc]`` -> real ``[B, 2 n_rx, H, W]`` (scaled, zero-padded)."""
    x = torch.cat([h.real, h.imag], dim=1).to(torch.float32) * SCALE
    return torch.nn.functional.pad(x, (0, padded[1] - h.shape[-1], 0, padded[0] - h.shape[-2]))


def from_planes(x: torch.Tensor, n_rx: int, shape: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`to_planes`: real ``[B, 2 n_rx, H, W]`` -> complex ``[B, n_rx, n_sym, n_sc]``."""
    x = x[..., : shape[0], : shape[1]] / SCALE
    return torch.complex(x[:, :n_rx].contiguous(), x[:, n_rx:].contiguous())


def condition(h_ls: torch.Tensor, no: torch.Tensor, padded: tuple[int, int]) -> torch.Tensor:
    """Conditioning planes ``[B, 2 n_rx + 1, H, W]``: LS estimate and ``snr_db / 20``."""
    c = to_planes(h_ls, padded)
    snr_db = -10.0 * torch.log10(no.clamp_min(1e-12)).to(torch.float32)
    snr = (snr_db / 20.0).view(-1, 1, 1, 1).expand(-1, 1, *padded)
    return torch.cat([c, snr], dim=1)


class DiffusionChannelEstimator:
    """Conditional DDPM channel estimator (CDDM / CTCD style), sampled with DDIM.

    Parameters
    ----------
    grid
        The resource grid; must match the weights'.
    weights
        A ``.safetensors`` path (or a bare name under ``models/``), or ``None`` for
        the shipped weights of ``scene`` (``models/estimator_<scene>.safetensors``),
        or ``False`` for a randomly initialised model (training, tests).
    scene
        The scene whose shipped weights to load (when ``weights`` is ``None``).
    profile
        If given, the profile hash is compared with the weights'; a difference is
        logged (a mismatched estimator is allowed: that is what refinement studies).
    config
        Architecture of a fresh model (``weights=False``); default
        :meth:`DiffusionConfig.for_grid`.
    num_inference_steps
        DDIM steps (10).
    start
        ``"noise"`` (DDIM from pure noise at ``t = T``) or ``"ls"`` (from the LS
        estimate noised to ``start_t``).
    start_t
        Starting timestep of ``start="ls"``.
    eta
        DDIM ``eta`` (0 = deterministic given the initial noise).
    batch_size
        Items per UNet call.
    init_seed
        Seed of the random initialisation when ``weights=False``.
    device
        Device of the model.

    Notes
    -----
    ``estimate(y, no, *, generator=None)``: ``generator`` draws the initial noise;
    without one a generator seeded with 0 is used (deterministic).
    """

    def __init__(
        self,
        grid: GridSpec | None = None,
        *,
        weights: str | Path | Literal[False] | None = None,
        scene: str | None = None,
        profile: Profile | None = None,
        config: DiffusionConfig | None = None,
        num_inference_steps: int = 10,
        start: Literal["noise", "ls"] = "noise",
        start_t: int = 400,
        eta: float = 0.0,
        batch_size: int = 256,
        init_seed: int = 0,
        device: str | torch.device = "cpu",
        **_: Any,
    ) -> None:
        from diffusers import DDIMScheduler

        from ivsim.ai import zoo

        self.grid = grid if grid is not None else GridSpec()
        self.name = "diffusion"
        self.device = torch.device(device)
        self.num_inference_steps = int(num_inference_steps)
        if start not in ("noise", "ls"):
            msg = f"start must be 'noise' or 'ls', got {start!r}"
            raise ValueError(msg)
        self.start = start
        self.start_t = int(start_t)
        self.eta = float(eta)
        self.batch_size = int(batch_size)
        self.metadata: dict[str, str] = {}
        if weights is False:
            self.config = config if config is not None else DiffusionConfig.for_grid(self.grid)
            self._check_grid(self.config, None)
            self.net = _build(self.config, init_seed)
            self.scene = scene
            self.path: Path | None = None
        else:
            if weights is None:
                if scene is None:
                    msg = "the diffusion estimator needs weights= or scene="
                    raise ModelError(msg)
                weights = estimator_weights_path(scene)
            path = zoo.resolve(weights)
            cfg = zoo.read_config(path, architecture=DIFFUSION_ARCHITECTURE)
            try:
                self.config = DiffusionConfig.from_json(cfg)
            except (KeyError, TypeError, ValueError) as exc:
                msg = f"{path}: diffusion estimator config unreadable ({exc})"
                raise ModelError(msg) from None
            self._check_grid(self.config, path)
            self.net = _build(self.config, init_seed)
            zoo.load_into(self.net, path, architecture=DIFFUSION_ARCHITECTURE)
            self.metadata = zoo.read_metadata(path)
            self.scene = self.metadata.get("ivsim.scene", scene)
            self.path = path
            if profile is not None and self.metadata.get("ivsim.profile_hash") not in (None, profile_hash(profile)):
                logger.info(
                    "diffusion estimator %s was trained for profile %s, used on %s (mismatched)",
                    path.name,
                    self.metadata.get("ivsim.profile_hash"),
                    profile_hash(profile),
                )
        self.net.to(self.device).eval()
        self._ls = LSEstimator(self.grid, device=self.device)
        self.scheduler = DDIMScheduler(
            num_train_timesteps=self.config.num_train_timesteps,
            beta_schedule=self.config.beta_schedule,
            prediction_type=self.config.prediction_type,
            clip_sample=False,
            set_alpha_to_one=True,
        )

    def _check_grid(self, cfg: DiffusionConfig, path: Path | None) -> None:
        g = self.grid
        want = (g.num_ofdm_symbols, g.fft_size, g.num_rx_ant)
        have = (cfg.num_ofdm_symbols, cfg.fft_size, cfg.num_rx_ant)
        if want != have:
            where = f"{path}: " if path is not None else ""
            msg = (
                f"{where}diffusion estimator weights are for a {have[0]} x {have[1]} grid with {have[2]} rx "
                f"antenna(s), not {want[0]} x {want[1]} with {want[2]}"
            )
            raise ModelError(msg)

    def num_parameters(self) -> int:
        """Parameters of the UNet."""
        return self.net.num_parameters()

    def err_var_for(self, no: torch.Tensor) -> torch.Tensor:
        """Interpolate the stored MSE table at the SNRs of ``no [B]``; returns ``[B]``."""
        snr_db = (-10.0 * torch.log10(no.clamp_min(1e-12))).to(torch.float32).cpu()
        xs, ys = self.net.err_snr_db.float().cpu(), torch.log(self.net.err_mse.float().cpu().clamp_min(1e-12))
        s = snr_db.clamp(float(xs[0]), float(xs[-1]))
        i = torch.searchsorted(xs, s).clamp(1, len(xs) - 1)
        w = (s - xs[i - 1]) / (xs[i] - xs[i - 1])
        return torch.exp(ys[i - 1] + w * (ys[i] - ys[i - 1])).to(no.device)

    @torch.no_grad()
    def sample(
        self, h_ls: torch.Tensor, no: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Generate channels given LS estimates.

        Parameters
        ----------
        h_ls
            ``[B, n_rx, n_sym, n_sc]`` complex LS estimate over the whole grid.
        no
            ``[B]`` complex noise variance.
        generator
            Draws the initial (and, with ``eta > 0``, intermediate) noise.

        Returns
        -------
        torch.Tensor
            ``[B, n_rx, n_sym, n_sc]`` complex64.
        """
        gen = generator if generator is not None else torch.Generator(device=self.device).manual_seed(0)
        cfg = self.config
        padded = cfg.padded_shape
        shape = (cfg.num_ofdm_symbols, cfg.fft_size)
        h_ls = h_ls.to(self.device)
        no = no.to(self.device)
        sched = self.scheduler
        sched.set_timesteps(self.num_inference_steps, device=self.device)
        timesteps = sched.timesteps
        outs = []
        for s0 in range(0, h_ls.shape[0], self.batch_size):
            hl, nb = h_ls[s0 : s0 + self.batch_size], no[s0 : s0 + self.batch_size]
            cond = condition(hl, nb, padded)
            noise = torch.randn(
                (hl.shape[0], 2 * cfg.num_rx_ant, *padded), generator=gen, device=self.device, dtype=torch.float32
            )
            if self.start == "ls":
                ts = timesteps[timesteps <= self.start_t]
                if len(ts) == 0:
                    ts = timesteps[-1:]
                x = sched.add_noise(cond[:, : 2 * cfg.num_rx_ant], noise, ts[:1].expand(hl.shape[0]))
            else:
                ts = timesteps
                x = noise
            for t in ts:
                tb = t.expand(hl.shape[0]).to(self.device)
                out = self.net(x, tb, cond)
                x = sched.step(out, t, x, eta=self.eta, generator=gen).prev_sample
            outs.append(from_planes(x, cfg.num_rx_ant, shape))
        return torch.cat(outs).to(torch.complex64)

    def estimate(
        self, y: torch.Tensor, no: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`ChannelEstimator.estimate`; ``generator`` seeds the sampling."""
        no = _as_no(no, y.shape[0], self.device)
        h_ls, _ = self._ls(y, no)
        h_hat = self.sample(h_ls, no, generator=generator)
        ev = self.err_var_for(no).view(-1, 1, 1, 1).expand(h_hat.shape).contiguous()
        return h_hat, ev


# --------------------------------------------------------------------------- registry

ESTIMATORS: Mapping[str, type] = {
    "ls": LSChannelEstimator,
    "lmmse": LMMSEChannelEstimator,
    "diffusion": DiffusionChannelEstimator,
}
"""Estimator classes by YAML ``kind``."""


def make_estimator(kind: str, **params: Any) -> ChannelEstimator:
    """Build an estimator by registry kind or ``"package.module:ClassName"``.

    Parameters
    ----------
    kind
        A key of :data:`ESTIMATORS` or ``"module:Class"``. The class is called with
        ``**params`` and must follow :class:`ChannelEstimator` (``name``, ``scene``,
        ``estimate``).
    **params
        Constructor arguments (``grid``, ``scene``, ``profile``, ``weights``, ...).

    Returns
    -------
    ChannelEstimator

    Raises
    ------
    ModelError
        Unknown kind, a module or class that cannot be imported, or a class that
        does not follow the protocol.

    Examples
    --------
    A researcher's own estimator in ``my_lab/est.py``::

        import torch

        class Genie:
            '''Knows nothing but is cheap: scales the received pilots' mean power.'''

            def __init__(self, grid=None, *, scene=None, **_):
                self.name, self.scene = "my_lab.est:Genie", scene

            def estimate(self, y, no):
                h = torch.ones_like(y)
                return h, torch.ones(y.shape, dtype=torch.float32)

    is used as ``link.estimator.kind: my_lab.est:Genie`` in a scenario, or

    >>> from ivsim.ai.estimators import make_estimator
    >>> est = make_estimator("ivsim.ai.estimators:LSChannelEstimator")
    >>> est.name, est.scene
    ('ls', None)
    """
    cls = resolve_kind(kind, ESTIMATORS, what="estimator", error=ModelError)
    est = cls(**params)
    if not isinstance(est, ChannelEstimator):
        msg = f"estimator {kind!r} does not follow the ChannelEstimator protocol (name, scene, estimate)"
        raise ModelError(msg)
    return est

