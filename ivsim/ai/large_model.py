"""The cloud's large model: a GPT-2 channel generator over continuous channel tokens.

:class:`ChannelGPT` is a GPT-2 backbone (transformers ``GPT2Config`` / ``GPT2Model``,
randomly initialised and trained by :func:`train_large_model`; nothing is
downloaded) that generates channel realizations of a scene it is asked for.

Tokens
------
With ``tokens="path"`` (the shipped weights) a token is one propagation path, as the
TR 38.901 models draw them (:meth:`~ivsim.phy.ChannelSampler.sample_paths`: the
clusters of UMi/UMa/RMa, the taps of TDL/CDL), in order of delay: its delay step from
the path before, its power over the slot and its phase advance per OFDM symbol (its
Doppler shift), three numbers divided by a per-coordinate scale measured on the training
data (:func:`paths_to_tokens`; up to ``max_paths`` = 24 paths, absent ones padded on a
power floor). A path's phase is not modelled: in the TR 38.901 models it is uniform and
independent of everything else, so :func:`tokens_to_paths` draws it, and the paths are
rendered onto the grid by Sionna's ``cir_to_ofdm_channel``. A channel's taps on the
463 ns grid are then related as they are in real channels (a path between two taps leaks
into both with related values, and every tap of a path moves with its Doppler), which a
generator of independent taps cannot give: ``docs/refine/data_probe.md`` measures what
that costs a refinement. One receive antenna.

``tokens="symbol"`` (the weights shipped before the path tokens) takes the channel to the
delay domain (an orthonormal inverse DFT over the subcarriers, per OFDM symbol): token
``t`` is OFDM symbol ``t``, its ``n_sc`` delay taps on every receive antenna, real and
imaginary parts (a 14 x 72 SISO grid is 14 tokens of 144 numbers), each predicted as a
change from the symbol before. ``tokens="dct"`` makes token ``k`` the ``k``-th
coefficient of an orthonormal DCT of every tap over the slot. ``cov_rank > 0`` gives
each token a low-rank-plus-diagonal Gaussian (``torch.distributions.
LowRankMultivariateNormal``); the shipped weights use rank 2, a full covariance of a
path's three numbers.

Sequence
--------
``[condition, pilots_1 .. pilots_P, tok_0, ..., tok_{T-2}]``: the output at each
position predicts the next token as a Gaussian (a mean and a log-variance, plus a
low-rank factor when ``cov_rank > 0``; trained with the Gaussian negative
log-likelihood); generation samples token after token with the key/value cache. The
first token is drawn from the prefix alone, the others from the tokens before them.
Inputs are perturbed with a little noise in training so that generation, which feeds
the model its own samples, does not drift. The prefix carries the scene profile
(family, LOS, CDL/TDL variant, nominal delay spread, K-factor, carrier), the vehicle's
speed and distance to its base station, and optionally LS pilot observations the
vehicle uploads.

Weights: ``models/large_model.safetensors`` (``ivsim.architecture =
"large_model/channel_gpt"``), rebuilt by ``ivsim train large-model``; the model
card ``models/large_model.md`` is generated from the file's metadata and
:func:`generation_report`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ivsim.config.schema import LinkLevelProfile, PathLossRef, SystemLevelProfile, profile_hash
from ivsim.errors import ModelError
from ivsim.phy import ChannelSampler, GridSpec, paths_to_grid

__all__ = [
    "LARGE_MODEL_ARCHITECTURE",
    "ChannelGPT",
    "LargeModel",
    "LargeModelConfig",
    "condition_vector",
    "from_tokens",
    "generation_report",
    "large_model_weights_path",
    "nominal_delay_spread_s",
    "paths_to_tokens",
    "power_delay_profile_db",
    "to_tokens",
    "tokens_to_paths",
    "train_large_model",
    "training_profiles",
]

logger = logging.getLogger(__name__)

Profile = SystemLevelProfile | LinkLevelProfile
LARGE_MODEL_ARCHITECTURE = "large_model/channel_gpt"
_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"

# Median delay spreads at 3.5 GHz of the TR 38.901 V19.2 tables (see ../shared/notes/channel-mismatch.md).
_MEDIAN_DS_S = {
    ("umi", True): 40e-9,
    ("umi", False): 97e-9,
    ("uma", True): 78e-9,
    ("uma", False): 286e-9,
    ("rma", True): 32e-9,
    ("rma", False): 37e-9,
}
_FAMILIES = ("umi", "uma", "rma", "tdl", "cdl")
_VARIANTS = ("A", "B", "C", "D", "E")
COND_DIM = len(_FAMILIES) + 1 + len(_VARIANTS) + 5
"""Length of :func:`condition_vector`."""


def large_model_weights_path(*, models_dir: str | Path | None = None) -> Path:
    """``<models_dir>/large_model.safetensors`` (default the repository's ``models/``)."""
    return Path(models_dir if models_dir is not None else _MODELS_DIR) / "large_model.safetensors"


def nominal_delay_spread_s(profile: Profile) -> float:
    """The profile's delay spread: stated for CDL/TDL, the TR 38.901 median at 3.5 GHz for UMi/UMa/RMa."""
    if isinstance(profile, LinkLevelProfile):
        return float(profile.delay_spread_s)
    return _MEDIAN_DS_S[(profile.model, bool(profile.los))]


def condition_vector(
    profile: Profile, *, carrier_hz: float, speed_mps: torch.Tensor, distance_m: torch.Tensor
) -> torch.Tensor:
    """Conditioning features ``[B, COND_DIM]`` of a scene profile and per-item speed / distance.

    Features: one-hot family (umi, uma, rma, tdl, cdl); line of sight (LOS variants D/E
    count); one-hot CDL/TDL variant; ``log10(delay spread / 100 ns)``; K-factor / 20 dB;
    ``log10(carrier / 3.5 GHz)``; speed / 20 m/s; distance / 300 m.
    """
    speed = torch.as_tensor(speed_mps, dtype=torch.float32).reshape(-1)
    dist = torch.as_tensor(distance_m, dtype=torch.float32).reshape(-1).to(speed.device)
    if dist.numel() == 1:
        dist = dist.expand(speed.numel())
    head = [0.0] * (len(_FAMILIES) + 1 + len(_VARIANTS))
    head[_FAMILIES.index(profile.model)] = 1.0
    if isinstance(profile, SystemLevelProfile):
        los = bool(profile.los)
        k_db = 0.0
    else:
        los = profile.variant in ("D", "E")
        head[len(_FAMILIES) + 1 + _VARIANTS.index(profile.variant)] = 1.0
        k_db = float(profile.k_factor_db) if profile.k_factor_db is not None else (13.3 if los else 0.0)
    head[len(_FAMILIES)] = 1.0 if los else 0.0
    head += [
        math.log10(nominal_delay_spread_s(profile) / 100e-9),
        k_db / 20.0,
        math.log10(carrier_hz / 3.5e9),
    ]
    fixed = torch.tensor(head, dtype=torch.float32, device=speed.device).expand(speed.numel(), -1)
    return torch.cat([fixed, (speed / 20.0)[:, None], (dist / 300.0)[:, None]], dim=1)


# --------------------------------------------------------------------------- tokens


TOKEN_KINDS = ("dct", "path", "symbol")
"""What a token is: one DCT coefficient over the slot of every delay tap (``dct``), one propagation path
(``path``: its delay step, power and Doppler, :func:`paths_to_tokens`) or one OFDM symbol's taps (``symbol``)."""


def dct_matrix(n: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``[n, n]`` (row ``k`` is the ``k``-th cosine over ``n`` samples)."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    t = torch.arange(n, dtype=torch.float64)[None, :]
    c = torch.cos(math.pi * (t + 0.5) * k / n) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c.to(torch.float32).to(device)


def to_tokens(h: torch.Tensor, kind: str = "symbol") -> torch.Tensor:
    """Channels ``[B, n_rx, n_sym, n_sc]`` complex -> tokens ``[B, n_sym, 2 n_rx n_sc]`` of delay taps (unscaled).

    ``kind="symbol"``: token ``t`` is OFDM symbol ``t``. ``kind="dct"``: token ``k`` is
    the ``k``-th coefficient of an orthonormal DCT of every tap over the slot (token 0
    is the slot's mean channel; a channel that changes slowly has little in the rest).
    """
    d = torch.fft.ifft(h, dim=-1, norm="ortho").permute(0, 2, 1, 3)  # [B, n_sym, n_rx, delay]
    b, t = d.shape[:2]
    x = torch.cat([d.real.reshape(b, t, -1), d.imag.reshape(b, t, -1)], dim=-1).to(torch.float32)
    if kind == "dct":
        x = torch.einsum("kt,btf->bkf", dct_matrix(t, device=x.device), x)
    return x


def from_tokens(x: torch.Tensor, n_rx: int, n_sc: int, kind: str = "symbol") -> torch.Tensor:
    """Inverse of :func:`to_tokens`: ``[B, n_sym, 2 n_rx n_sc]`` -> ``[B, n_rx, n_sym, n_sc]`` complex64."""
    b, t, f = x.shape
    if kind == "dct":
        x = torch.einsum("kt,bkf->btf", dct_matrix(t, device=x.device), x)
    half = f // 2
    d = torch.complex(x[..., :half], x[..., half:]).reshape(b, t, n_rx, n_sc).permute(0, 2, 1, 3)
    return torch.fft.fft(d, dim=-1, norm="ortho").to(torch.complex64)


PATH_DELAY_UNIT_S = 10e-9
"""Delay unit of a path token: its first number is ``log(1 + delay step / 10 ns)``."""
PATH_POWER_FLOOR_DB = -60.0
"""Path powers are clipped here (absent paths, zero in Sionna's output, sit on the floor)."""


def paths_to_tokens(a: torch.Tensor, tau: torch.Tensor, *, max_paths: int) -> torch.Tensor:
    """Paths ``a [B, 1, P, n_sym]`` complex, ``tau [B, P]`` s -> tokens ``[B, max_paths, 3]`` (unscaled).

    One token per path in order of delay (:meth:`~ivsim.phy.ChannelSampler.sample_paths`'s
    clusters or taps): ``log(1 + (tau_p - tau_{p-1}) / 10 ns)`` (the first path's step
    from 0), the path's power over the slot in dB / 10 (floored at -60 dB), and its
    phase advance per OFDM symbol in radians (its Doppler shift). Its phase is left out:
    every path's phase is uniform and independent of the rest in the TR 38.901 models, so
    :func:`tokens_to_paths` draws it. Fewer than ``max_paths`` paths are padded with
    absent ones (zero step, the power floor); more are cut to the strongest.
    """
    if a.shape[1] != 1:
        msg = f"path tokens are for one receive antenna, got {a.shape[1]}"
        raise ValueError(msg)
    a = a[:, 0]  # [B, P, T]
    power = a.abs().pow(2).mean(dim=-1)

    def take(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return a.gather(1, idx[..., None].expand(-1, -1, a.shape[-1])), tau.gather(1, idx), power.gather(1, idx)

    if a.shape[1] > max_paths:
        a, tau, power = take(power.topk(max_paths, dim=1).indices)
    a, tau, power = take(tau.argsort(dim=1))
    step = torch.diff(tau, dim=1, prepend=torch.zeros_like(tau[:, :1])).clamp_min(0.0)
    x_delay = torch.log1p(step / PATH_DELAY_UNIT_S)
    x_power = (10.0 * torch.log10(power.clamp_min(1e-30))).clamp_min(PATH_POWER_FLOOR_DB) / 10.0
    x_rate = torch.angle((a[..., 1:] * a[..., :-1].conj()).sum(dim=-1))
    x = torch.stack([x_delay, x_power, x_rate], dim=-1).to(torch.float32)
    if x.shape[1] < max_paths:
        pad = torch.zeros(x.shape[0], max_paths - x.shape[1], 3, dtype=x.dtype, device=x.device)
        pad[..., 1] = PATH_POWER_FLOOR_DB / 10.0
        x = torch.cat([x, pad], dim=1)
    return x


def tokens_to_paths(x: torch.Tensor, *, n_sym: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`paths_to_tokens` with a uniform phase per path: ``(a [B, 1, P, n_sym], tau [B, P])``.

    Path ``p`` is ``10^(power/20) exp(j (phi_p + rate_p (t - (n_sym - 1) / 2)))`` at OFDM
    symbol ``t``, ``phi_p`` drawn from ``generator``; its delay is the running sum of the steps.
    """
    step = PATH_DELAY_UNIT_S * torch.expm1(x[..., 0].clamp(0.0, 12.0))
    tau = torch.cumsum(step, dim=1)
    amp = torch.pow(10.0, x[..., 1].clamp(max=1.0) / 2.0)  # dB / 10 -> amplitude; powers above 10 dB are cut
    amp = torch.where(x[..., 1] <= PATH_POWER_FLOOR_DB / 10.0, torch.zeros_like(amp), amp)
    phi = 2.0 * math.pi * torch.rand(amp.shape, generator=generator, device=x.device)
    t = torch.arange(n_sym, dtype=x.dtype, device=x.device) - (n_sym - 1) / 2.0
    phase = phi[..., None] + x[..., 2:3] * t
    a = torch.polar(amp[..., None].expand_as(phase).contiguous(), phase)
    return a[:, None].to(torch.complex64), tau.to(torch.float32)


def power_delay_profile_db(h: torch.Tensor) -> torch.Tensor:
    """Mean power per delay tap ``[n_sc]`` in dB (relative to the total) of channels ``[B, n_rx, n_sym, n_sc]``."""
    dd = torch.fft.ifft(h, dim=-1, norm="ortho")
    p = dd.abs().pow(2).mean(dim=(0, 1, 2))
    return 10.0 * torch.log10(p / p.sum()).clamp_min(-60.0)


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class LargeModelConfig:
    """Architecture of :class:`ChannelGPT` (what shapes its tensors).

    Attributes
    ----------
    num_ofdm_symbols, fft_size, num_rx_ant
        The grid of the generated channels.
    pilot_ofdm_symbol_indices
        Where the uploaded pilot observations sit.
    n_embd, n_layer, n_head
        GPT-2 width, depth and heads.
    pilot_tokens
        Prefix tokens that carry the pilot observations.
    tokens
        ``"path"`` (the shipped weights: a token per propagation path, rendered onto the
        grid, :func:`paths_to_tokens`; one receive antenna), ``"symbol"`` (a token per
        OFDM symbol, each predicted as a change from the one before) or ``"dct"`` (a
        token per DCT coefficient over the slot): see :func:`to_tokens`.
    max_paths
        Path tokens per channel (``tokens="path"``).
    subcarrier_spacing_hz
        Of the grid the paths are rendered onto (``tokens="path"``).
    cov_rank
        Rank of the low-rank part of each token's Gaussian (covariance ``L L^T + diag``);
        0 is a diagonal Gaussian; the shipped weights' 2 with path tokens is a full one.
    """

    num_ofdm_symbols: int = 14
    fft_size: int = 72
    num_rx_ant: int = 1
    pilot_ofdm_symbol_indices: tuple[int, ...] = (2, 11)
    n_embd: int = 192
    n_layer: int = 4
    n_head: int = 4
    pilot_tokens: int = 2
    tokens: str = "path"
    cov_rank: int = 2
    max_paths: int = 24
    subcarrier_spacing_hz: float = 30e3

    def __post_init__(self) -> None:
        if self.tokens not in TOKEN_KINDS:
            msg = f"tokens must be one of {TOKEN_KINDS}, got {self.tokens!r}"
            raise ValueError(msg)
        if not 0 <= int(self.cov_rank) <= 64:
            msg = f"cov_rank must be 0..64, got {self.cov_rank}"
            raise ValueError(msg)
        if self.tokens == "path" and (self.num_rx_ant != 1 or not 1 <= int(self.max_paths) <= 256):
            msg = f"path tokens need one receive antenna and 1..256 paths, got {self.num_rx_ant} and {self.max_paths}"
            raise ValueError(msg)

    @classmethod
    def for_grid(cls, grid: GridSpec, **kw: Any) -> LargeModelConfig:
        """The default architecture for ``grid``."""
        return cls(
            num_ofdm_symbols=grid.num_ofdm_symbols,
            fft_size=grid.fft_size,
            num_rx_ant=grid.num_rx_ant,
            pilot_ofdm_symbol_indices=tuple(grid.pilot_ofdm_symbol_indices),
            subcarrier_spacing_hz=grid.subcarrier_spacing_hz,
            **kw,
        )

    @property
    def token_dim(self) -> int:
        """Numbers per token."""
        return 3 if self.tokens == "path" else 2 * self.num_rx_ant * self.fft_size

    @property
    def n_tokens(self) -> int:
        """Tokens per channel."""
        return int(self.max_paths) if self.tokens == "path" else self.num_ofdm_symbols

    @property
    def pilot_dim(self) -> int:
        """Numbers of one pilot observation."""
        return 2 * self.num_rx_ant * len(self.pilot_ofdm_symbol_indices) * self.fft_size

    @property
    def prefix_len(self) -> int:
        """Condition token plus pilot tokens."""
        return 1 + self.pilot_tokens

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict (stored in the weights)."""
        d = dict(self.__dict__)
        d["pilot_ofdm_symbol_indices"] = list(self.pilot_ofdm_symbol_indices)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LargeModelConfig:
        """Inverse of :meth:`to_json`."""
        d = dict(d)
        d["pilot_ofdm_symbol_indices"] = tuple(d["pilot_ofdm_symbol_indices"])
        d.setdefault("tokens", "symbol")  # weights made before these options (symbol tokens, diagonal)
        d.setdefault("cov_rank", 0)
        d.setdefault("max_paths", 24)
        d.setdefault("subcarrier_spacing_hz", 30e3)
        return cls(**d)


_LOGVAR_RANGE = (-14.0, 6.0)


class ChannelGPT(torch.nn.Module):
    """GPT-2 over delay-tap tokens with a conditioning prefix and a Gaussian regression head.

    Parameters
    ----------
    config
        The architecture.
    """

    def __init__(self, config: LargeModelConfig) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        self.config = config
        d = config.n_embd
        self.cond_in = torch.nn.Sequential(
            torch.nn.Linear(COND_DIM, d), torch.nn.GELU(), torch.nn.Linear(d, d)
        )
        self.pilot_in = torch.nn.Linear(config.pilot_dim, config.pilot_tokens * d)
        self.no_pilots = torch.nn.Parameter(torch.zeros(config.pilot_tokens, d))
        self.tok_in = torch.nn.Linear(config.token_dim, d)
        gpt_cfg = GPT2Config(
            vocab_size=1,
            bos_token_id=0,
            eos_token_id=0,
            n_positions=config.prefix_len + config.n_tokens,
            n_embd=d,
            n_layer=config.n_layer,
            n_head=config.n_head,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
        self.gpt = GPT2Model(gpt_cfg)
        self.head = torch.nn.Linear(d, (2 + int(config.cov_rank)) * config.token_dim)
        # Per-coordinate scale of the tokens, measured on the training data (set by train_large_model).
        self.register_buffer("token_scale", torch.ones(config.n_tokens, config.token_dim))

    def num_parameters(self) -> int:
        """Trainable parameters."""
        return sum(p.numel() for p in self.parameters())

    def prefix(self, cond: torch.Tensor, pilots: torch.Tensor | None, has_pilots: torch.Tensor | None = None) -> torch.Tensor:
        """Prefix embeddings ``[B, prefix_len, d]`` from ``cond [B, COND_DIM]`` and ``pilots [B, pilot_dim]``.

        ``has_pilots [B]`` (bool) picks, per item, the pilot tokens or the learned
        "no pilots" embedding; ``pilots=None`` means none for every item.
        """
        b = cond.shape[0]
        c = self.cond_in(cond)[:, None]
        none = self.no_pilots[None].expand(b, -1, -1)
        if pilots is None:
            p = none
        else:
            p = self.pilot_in(pilots).view(b, self.config.pilot_tokens, -1)
            if has_pilots is not None:
                p = torch.where(has_pilots.view(b, 1, 1), p, none)
        return torch.cat([c, p], dim=1)

    def _gaussian(self, out: torch.Tensor, prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Head outputs -> ``(mean, logvar, factor)``; ``factor [..., token_dim, cov_rank]`` or ``None`` (diagonal)."""
        c = self.config
        dim, r = c.token_dim, int(c.cov_rank)
        y = self.head(out)
        mean, logvar = y[..., :dim], y[..., dim : 2 * dim].clamp(*_LOGVAR_RANGE)
        if c.tokens == "symbol":
            mean = prev + mean
        factor = y[..., 2 * dim :].unflatten(-1, (dim, r)) / math.sqrt(r) if r > 0 else None
        return mean, logvar, factor

    def nll(self, prefix: torch.Tensor, tokens: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Negative log-likelihood per number of each token ``[B, n_tok]`` (teacher forcing).

        ``inputs`` are the tokens fed to the model (``tokens`` plus training noise);
        default ``tokens``.
        """
        mean, logvar, factor = self(prefix, tokens if inputs is None else inputs)
        if factor is None:
            return 0.5 * (logvar + (tokens - mean).pow(2) * torch.exp(-logvar)).mean(dim=-1)
        dist = torch.distributions.LowRankMultivariateNormal(mean, factor, torch.exp(logvar))
        return -dist.log_prob(tokens) / tokens.shape[-1] - 0.5 * math.log(2.0 * math.pi)

    def forward(
        self, prefix: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Teacher-forced prediction of every token.

        Parameters
        ----------
        prefix
            ``[B, prefix_len, d]``.
        tokens
            ``[B, n_sym, token_dim]`` scaled tokens (the inputs; noise may have been added).

        Returns
        -------
        mean, logvar, factor
            The Gaussian of token ``t`` given the prefix and tokens ``< t``: ``mean`` and
            ``logvar`` ``[B, n_tok, token_dim]``, ``factor [B, n_tok, token_dim, cov_rank]``
            (``None`` for a diagonal model); covariance ``factor factor^T + diag(exp(logvar))``.
        """
        emb = torch.cat([prefix, self.tok_in(tokens[:, :-1]) + prefix[:, :1]], dim=1)
        out = self.gpt(inputs_embeds=emb).last_hidden_state[:, self.config.prefix_len - 1 :]
        prev = torch.cat([torch.zeros_like(tokens[:, :1]), tokens[:, :-1]], dim=1)
        return self._gaussian(out, prev)

    @torch.no_grad()
    def generate(self, prefix: torch.Tensor, *, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
        """Sample scaled tokens ``[B, n_tokens, token_dim]`` one after another (key/value cache)."""
        with _quiet_transformers():
            return self._generate(prefix, generator=generator, temperature=temperature)

    def _generate(self, prefix: torch.Tensor, *, generator: torch.Generator, temperature: float) -> torch.Tensor:
        past = None
        x = prefix
        cond = prefix[:, :1]
        taps = []
        prev = torch.zeros(prefix.shape[0], self.config.token_dim, device=prefix.device)
        for _ in range(self.config.n_tokens):
            out = self.gpt(inputs_embeds=x, cache=past, use_cache=True)
            past = out.past_key_values
            mean, logvar, factor = self._gaussian(out.last_hidden_state[:, -1], prev)
            std = torch.exp(0.5 * logvar) * temperature
            tok = mean + std * torch.randn(mean.shape, generator=generator, device=mean.device)
            if factor is not None:
                z = torch.randn((*mean.shape[:-1], factor.shape[-1], 1), generator=generator, device=mean.device)
                tok = tok + temperature * (factor @ z).squeeze(-1)
            taps.append(tok)
            prev = tok
            x = self.tok_in(tok)[:, None] + cond
        return torch.stack(taps, dim=1)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' deprecation chatter about its own cache argument names while generating."""
    hf = logging.getLogger("transformers")
    level = hf.level
    hf.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf.setLevel(level)


def _build(config: LargeModelConfig, seed: int) -> ChannelGPT:
    """A :class:`ChannelGPT` initialised from ``torch.Generator(seed)``, the global RNG left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return ChannelGPT(config)


# --------------------------------------------------------------------------- inference wrapper


class LargeModel:
    """The trained channel generator, loaded from safetensors.

    Parameters
    ----------
    weights
        Path or bare name (default ``models/large_model.safetensors``).
    device
        Device of the model.

    Examples
    --------
    >>> lm = LargeModel()                                                     # doctest: +SKIP
    >>> h = lm.generate(profile, 64, carrier_hz=3.5e9, speed_mps=12.0,
    ...                 distance_m=150.0, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
    """

    def __init__(self, weights: str | Path | None = None, *, device: str | torch.device = "cpu") -> None:
        from ivsim.ai import zoo

        path = zoo.resolve(weights) if weights is not None else large_model_weights_path()
        cfg = zoo.read_config(path, architecture=LARGE_MODEL_ARCHITECTURE)
        try:
            self.config = LargeModelConfig.from_json(cfg)
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"{path}: large model config unreadable ({exc})"
            raise ModelError(msg) from None
        self.net = _build(self.config, 0)
        zoo.load_into(self.net, path, architecture=LARGE_MODEL_ARCHITECTURE)
        self.metadata = zoo.read_metadata(path)
        self.path = path
        self.device = torch.device(device)
        self.net.to(self.device).eval()
        c = self.config
        self._grid = GridSpec(
            num_ofdm_symbols=c.num_ofdm_symbols, fft_size=c.fft_size, subcarrier_spacing_hz=c.subcarrier_spacing_hz,
            pilot_ofdm_symbol_indices=c.pilot_ofdm_symbol_indices,
        )  # fmt: skip

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """``(n_rx, n_sym, n_sc)`` of the generated channels."""
        c = self.config
        return (c.num_rx_ant, c.num_ofdm_symbols, c.fft_size)

    def check_grid(self, grid: GridSpec) -> None:
        """Raise :class:`ModelError` unless ``grid`` is the one the model generates."""
        want = (grid.num_rx_ant, grid.num_ofdm_symbols, grid.fft_size)
        if self.config.tokens == "path" and grid.subcarrier_spacing_hz != self.config.subcarrier_spacing_hz:
            msg = (
                f"{self.path}: the large model renders its paths at {self.config.subcarrier_spacing_hz / 1e3:g} kHz "
                f"subcarrier spacing, not {grid.subcarrier_spacing_hz / 1e3:g} kHz"
            )
            raise ModelError(msg)
        if want != self.grid_shape:
            msg = (
                f"{self.path}: the large model generates {self.grid_shape[1]} x {self.grid_shape[2]} grids with "
                f"{self.grid_shape[0]} rx antenna(s), not {want[1]} x {want[2]} with {want[0]}"
            )
            raise ModelError(msg)

    @torch.no_grad()
    def generate(
        self,
        profile: Profile,
        n: int,
        *,
        carrier_hz: float,
        speed_mps: float | tuple[float, float],
        distance_m: float | tuple[float, float] = (30.0, 300.0),
        pilots: torch.Tensor | None = None,
        generator: torch.Generator,
        batch_size: int = 256,
        normalize: bool = True,
    ) -> torch.Tensor:
        """Generate ``n`` channels of a scene.

        Parameters
        ----------
        profile
            The target scene's channel profile.
        n
            Realizations.
        carrier_hz
            Carrier.
        speed_mps, distance_m
            The vehicle's speed and distance to its base station: one value, or a
            ``(min, max)`` range drawn uniformly per realization.
        pilots
            ``[K, n_rx, n_pilot_sym, n_sc]`` complex LS observations at the pilots
            uploaded by the vehicle; realization ``i`` is conditioned on observation
            ``i mod K``. ``None``: generate from the condition alone.
        generator
            Draws speeds, distances and the samples (on the model's device).
        batch_size
            Realizations per generation pass.
        normalize
            Rescale the ``n`` channels to unit mean power per resource element, the
            normalisation of the training channels (sampled paths can be too strong or
            too weak: ``models/large_model.md`` reports the raw power). The shape of
            the power-delay profile is left as generated.

        Returns
        -------
        torch.Tensor
            ``[n, n_rx, n_sym, n_sc]`` complex64.
        """
        c = self.config
        dev = self.device

        def draw(v: float | tuple[float, float]) -> torch.Tensor:
            if isinstance(v, tuple):
                lo, hi = float(v[0]), float(v[1])
                return lo + (hi - lo) * torch.rand(n, generator=generator, device=dev)
            return torch.full((n,), float(v), device=dev)

        speed, dist = draw(speed_mps), draw(distance_m)
        cond = condition_vector(profile, carrier_hz=carrier_hz, speed_mps=speed, distance_m=dist).to(dev)
        p_flat = None
        if pilots is not None:
            p = pilots.to(dev)
            k = p.shape[0]
            p_flat = _pilot_features(p)[torch.arange(n, device=dev) % k]
        outs = []
        for s in range(0, n, batch_size):
            pf = p_flat[s : s + batch_size] if p_flat is not None else None
            prefix = self.net.prefix(cond[s : s + batch_size], pf)
            tok = self.net.generate(prefix, generator=generator) * self.net.token_scale
            if c.tokens == "path":
                a, tau = tokens_to_paths(tok, n_sym=c.num_ofdm_symbols, generator=generator)
                outs.append(paths_to_grid(a, tau, self._grid))
            else:
                outs.append(from_tokens(tok, c.num_rx_ant, c.fft_size, c.tokens))
        h = torch.cat(outs)
        if normalize:
            h = h / h.abs().pow(2).mean().sqrt().clamp_min(1e-12)
        return h


def _pilot_features(pilots: torch.Tensor) -> torch.Tensor:
    """``[K, n_rx, n_pilot_sym, n_sc]`` complex -> ``[K, pilot_dim]`` real (scaled by sqrt(2))."""
    k = pilots.shape[0]
    return torch.cat([pilots.real.reshape(k, -1), pilots.imag.reshape(k, -1)], dim=1).to(torch.float32) * math.sqrt(2)


def pilot_observations(
    h: torch.Tensor, pilot_indices: Sequence[int], snr_db: float | torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """LS observations at the pilot symbols: ``h[..., pilots, :]`` plus complex noise of variance 1/SNR."""
    hp = h[:, :, list(pilot_indices), :]
    snr = torch.as_tensor(snr_db, dtype=torch.float32, device=h.device).reshape(-1, 1, 1, 1)
    std = torch.pow(10.0, -snr / 20.0) / math.sqrt(2.0)
    noise = torch.complex(
        torch.randn(hp.shape, generator=generator, device=h.device),
        torch.randn(hp.shape, generator=generator, device=h.device),
    )
    return (hp + std * noise).to(torch.complex64)


# --------------------------------------------------------------------------- training data


def _variation(name: str, model: str, variant: str, ds_ns: float, k_db: float | None = None) -> tuple[str, Profile]:
    pl = PathLossRef(model="umi", los=variant in ("D", "E"))
    return name, LinkLevelProfile(
        model=model, variant=variant, delay_spread_s=ds_ns * 1e-9, k_factor_db=k_db, pathloss=pl, note="variation"
    )


_RECIPE_SCENARIOS = ("helsinki", "nyc_brooklyn_bridge", "nyc_fleet")
"""Scenarios whose profiles the shipped large model was trained on (later scenarios' profiles are new to it)."""


def training_profiles(scenario_files: Sequence[str | Path] | None = None) -> tuple[dict[str, Profile], dict[str, Profile]]:
    """``(train, held_out)`` profiles by name.

    ``train``: every profile of the scenarios the shipped weights were trained on
    (:data:`_RECIPE_SCENARIOS`, or ``scenario_files``), keyed ``<scenario>/<profile>``, plus variations: the
    UMi/UMa/RMa LOS/NLOS combinations they lack and TDL/CDL profiles scaled to
    30-1000 ns. ``held_out``: profiles never trained on (TDL-C 600 ns, TDL-A 200 ns,
    CDL-B 150 ns, TDL-D 300 ns), to measure how the generator extrapolates.
    """
    from ivsim.config.loader import load_scenario

    if scenario_files is None:  # the recipe of the shipped weights: the scenarios shipped when they were trained
        folder = Path(__file__).resolve().parents[2] / "scenarios"
        scenario_files = [folder / f"{name}.yaml" for name in _RECIPE_SCENARIOS]
    train: dict[str, Profile] = {}
    seen: set[str] = set()
    for f in scenario_files:
        sc = load_scenario(f)
        for name, prof in sc.profiles.items():
            h = profile_hash(prof)
            if h not in seen:
                seen.add(h)
                train[f"{sc.name}/{name}"] = prof
    for model in ("umi", "uma", "rma"):
        for los in (True, False):
            p = SystemLevelProfile(model=model, los=los, note="variation")
            if profile_hash(p) not in seen and not any(
                isinstance(q, SystemLevelProfile) and q.model == model and q.los == los for q in train.values()
            ):
                train[f"variation/{model}_{'los' if los else 'nlos'}"] = p
    for name, p in (
        _variation("variation/tdl_a_30ns", "tdl", "A", 30),
        _variation("variation/tdl_a_100ns", "tdl", "A", 100),
        _variation("variation/tdl_a_300ns", "tdl", "A", 300),
        _variation("variation/tdl_c_100ns", "tdl", "C", 100),
        _variation("variation/tdl_c_300ns", "tdl", "C", 300),
        _variation("variation/tdl_c_1000ns", "tdl", "C", 1000),
        _variation("variation/tdl_d_30ns", "tdl", "D", 30, 9.0),
        _variation("variation/tdl_d_100ns", "tdl", "D", 100, 13.3),
        _variation("variation/cdl_c_300ns", "cdl", "C", 300),
    ):
        train[name] = p
    held = dict(
        [
            _variation("held_out/tdl_c_600ns", "tdl", "C", 600),
            _variation("held_out/tdl_a_200ns", "tdl", "A", 200),
            _variation("held_out/cdl_b_150ns", "cdl", "B", 150),
            _variation("held_out/tdl_d_300ns", "tdl", "D", 300, 6.0),
        ]
    )
    return train, held


def _draw(
    sampler: ChannelSampler, n: int, *, speed_range_mps: tuple[float, float], gen: torch.Generator, max_paths: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """``n`` channels, their path tokens (``max_paths > 0``), speeds and distances (one distance band per call)."""
    lo, hi = speed_range_mps
    speed = lo + (hi - lo) * torch.rand(n, generator=gen, device=gen.device)
    d = 30.0 + 270.0 * float(torch.rand((), generator=gen, device=gen.device))
    sampler.distance_m = (d, d)
    a, tau = sampler.sample_paths(n, speed_mps=speed, generator=gen)  # the draws of sampler.sample
    tok = paths_to_tokens(a, tau, max_paths=max_paths) if max_paths > 0 else None
    return sampler.render_paths(a, tau), tok, speed, torch.full((n,), d, device=gen.device)


def train_large_model(
    *,
    grid: GridSpec | None = None,
    carrier_hz: float = 3.5e9,
    profiles: Mapping[str, Profile] | None = None,
    steps: int = 3000,
    batch_size: int = 128,
    speed_range_mps: tuple[float, float] = (0.0, 35.0),
    pilot_snr_range_db: tuple[float, float] = (0.0, 25.0),
    pilot_prob: float = 0.5,
    input_noise: float = 0.02,
    first_weight: float | None = None,
    per_profile: int = 1024,
    refresh_every: int = 25,
    refresh_size: int = 128,
    seed: int = 0,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    lr: float = 1e-3,
    config: LargeModelConfig | None = None,
    checkpoint_every: int = 100,
    time_budget_s: float | None = None,
    num_threads: int | None = 1,
    log_every: int = 50,
    fp16: bool = True,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Train the channel generator and save ``large_model.safetensors``.

    Parameters
    ----------
    grid
        The resource grid of the generated channels.
    carrier_hz
        Carrier of the training channels.
    profiles
        Training profiles by name; default ``training_profiles()[0]``.
    steps
        Optimizer steps.
    batch_size
        Channels per step (drawn from one profile's pool per item, profiles uniform).
    speed_range_mps
        Speeds drawn uniformly per channel.
    pilot_snr_range_db
        SNRs of the pilot observations shown with probability ``pilot_prob``.
    input_noise
        Standard deviation of the noise added to the (scaled) input tokens.
    first_weight
        Weight of the first token's negative log-likelihood against 1 for each other
        (default 13 for symbol and DCT tokens: the first carries the power-delay profile,
        the others how it moves over the slot; 1 for path tokens).
    per_profile
        Channels per profile in the pool; ``refresh_size`` of one profile's are redrawn
        every ``refresh_every`` steps (round robin).
    seed
        Seed of everything (initialisation, channels, batches).
    out_dir
        Folder of the weights and ``checkpoints/``; default ``models/``.
    resume
        Continue from the checkpoint in ``out_dir``.
    progress
        Show a rich progress bar.
    lr
        Peak AdamW learning rate (100 warm-up steps, cosine to 5 %).
    config
        Architecture (default :meth:`LargeModelConfig.for_grid`).
    checkpoint_every
        Steps between checkpoints.
    time_budget_s
        Stop (after a checkpoint) once this much wall time is spent (resumed time counts).
    num_threads
        torch threads during training (restored after).
    log_every
        Steps per ``loss_curve`` entry.
    fp16
        Store the weights in float16.
    device
        Where to train (``"cuda"`` on a GPU); every draw comes from one generator there.

    Returns
    -------
    dict
        ``path``, ``steps``, ``train_time_s``, ``num_parameters``, ``weight_bytes``,
        ``final_loss``, ``loss_curve``, ``profiles``.
    """
    from ivsim.ai import zoo
    from ivsim.ai.estimator_train import (
        StepLog,
        load_checkpoint,
        save_checkpoint,
        training_progress,
        warmup_cosine_lr,
    )

    grid = grid if grid is not None else GridSpec()
    profiles = dict(profiles) if profiles is not None else training_profiles()[0]
    out = Path(out_dir) if out_dir is not None else large_model_weights_path().parent
    threads_before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    try:
        cfg = config if config is not None else LargeModelConfig.for_grid(grid)
        dev = torch.device(device)
        net = _build(cfg, seed).to(dev)
        net.train()
        gen = torch.Generator(device=dev).manual_seed(seed)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)

        state: dict[str, Any] = {"step": 0, "elapsed_s": 0.0, "losses": []}
        if resume:
            loaded = load_checkpoint(out, "large_model", net, opt, gen)
            if loaded is not None:
                state = loaded
                logger.info("resuming the large model from step %d", state["step"])
        names = list(profiles)
        samplers = [ChannelSampler(profiles[k], grid, carrier_hz=carrier_hz, device=dev) for k in names]
        n_paths = int(cfg.max_paths) if cfg.tokens == "path" else 0
        conds, pools, tok_pools, t_pool = [], [], [], time.perf_counter()
        for k, s in zip(names, samplers, strict=True):
            hs, ts, sp, ds = [], [], [], []
            for i in range(0, per_profile, 256):
                h, tk, v, d = _draw(
                    s, min(256, per_profile - i), speed_range_mps=speed_range_mps, gen=gen, max_paths=n_paths
                )
                hs.append(h)
                ts.append(tk)
                sp.append(v)
                ds.append(d)
            pools.append(torch.cat(hs))
            tok_pools.append(torch.cat(ts) if n_paths else None)
            conds.append((torch.cat(sp), torch.cat(ds)))
            logger.info("pool of %s drawn", k)
        logger.info("channel pools of %d profiles drawn in %.1f s", len(names), time.perf_counter() - t_pool)
        if int(state["step"]) == 0:
            tok = torch.cat(tok_pools if n_paths else [to_tokens(p, cfg.tokens) for p in pools])
            net.token_scale.copy_(tok.pow(2).mean(0).sqrt().clamp_min(1e-3))
        scale = net.token_scale
        w0 = float(first_weight if first_weight is not None else (1.0 if n_paths else 13.0))
        n_prof, oldest, refresh_prof = len(names), [0] * len(names), 0
        pilot_idx = list(cfg.pilot_ofdm_symbol_indices)
        t0 = time.perf_counter() - float(state["elapsed_s"])
        bar = task = None
        if progress:
            bar, task = training_progress("large model", steps=steps, done=state["step"], metric="nll", fmt=".3f")

        def save(st: dict[str, Any]) -> None:
            st.update(seed=seed, steps_target=steps)
            save_checkpoint(out, "large_model", net, opt, gen, st)

        book = StepLog(
            state, save, steps=steps, t0=t0, log_every=log_every, checkpoint_every=checkpoint_every,
            time_budget_s=time_budget_s, bar=bar, task=task, log_format="step %d nll %.4f (%.0f s)",
        )  # fmt: skip
        step = int(state["step"])
        try:
            while step < steps:
                if step > 0 and step % refresh_every == 0:
                    j = refresh_prof
                    h, tk, v, d = _draw(
                        samplers[j], refresh_size, speed_range_mps=speed_range_mps, gen=gen, max_paths=n_paths
                    )
                    idx = (torch.arange(refresh_size, device=dev) + oldest[j]) % per_profile
                    pools[j][idx] = h
                    if n_paths:
                        tok_pools[j][idx] = tk
                    conds[j][0][idx] = v
                    conds[j][1][idx] = d
                    oldest[j] = (oldest[j] + refresh_size) % per_profile
                    refresh_prof = (refresh_prof + 1) % n_prof
                which = torch.randint(0, n_prof, (batch_size,), generator=gen, device=dev).tolist()
                item = torch.randint(0, per_profile, (batch_size,), generator=gen, device=dev).tolist()
                h = torch.stack([pools[int(w)][int(i)] for w, i in zip(which, item, strict=True)])
                cond = torch.cat(
                    [
                        condition_vector(
                            profiles[names[int(w)]],
                            carrier_hz=carrier_hz,
                            speed_mps=conds[int(w)][0][int(i)].reshape(1),
                            distance_m=conds[int(w)][1][int(i)].reshape(1),
                        )
                        for w, i in zip(which, item, strict=True)
                    ]
                )
                lo, hi = pilot_snr_range_db
                snr = lo + (hi - lo) * torch.rand(batch_size, generator=gen, device=dev)
                pil = _pilot_features(pilot_observations(h, pilot_idx, snr, gen))
                has = torch.rand(batch_size, generator=gen, device=dev) < pilot_prob
                if n_paths:
                    x = torch.stack([tok_pools[int(w)][int(i)] for w, i in zip(which, item, strict=True)]) / scale
                else:
                    x = to_tokens(h, cfg.tokens) / scale
                for g in opt.param_groups:
                    g["lr"] = warmup_cosine_lr(step, lr=lr, steps=steps, warm=100)
                x_in = x + input_noise * torch.randn(x.shape, generator=gen, device=dev)
                nll = net.nll(net.prefix(cond, pil, has), x, x_in).mean(dim=0)
                loss = (w0 * nll[0] + nll[1:].sum()) / (w0 + len(nll) - 1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                step += 1
                if book.after(step, float(loss.detach())):
                    break
        finally:
            if bar is not None:
                bar.stop()
        train_time = time.perf_counter() - t0
        meta = {
            "ivsim.carrier_hz": str(carrier_hz),
            "ivsim.profiles": json.dumps(names),
            "ivsim.speed_range_mps": json.dumps(list(speed_range_mps)),
            "ivsim.train_steps": str(step),
            "ivsim.batch_size": str(batch_size),
            "ivsim.seed": str(seed),
            "ivsim.train_time_s": f"{train_time:.0f}",
            "ivsim.final_nll": f"{state['losses'][-1]:.4f}" if state["losses"] else "nan",
            "ivsim.threads": str(torch.get_num_threads()),
        }
        path = zoo.save_weights(
            net.state_dict(),
            out / "large_model.safetensors",
            architecture=LARGE_MODEL_ARCHITECTURE,
            config=cfg.to_json(),
            dtype=torch.float16 if fp16 else None,
            metadata=meta,
        )
        return {
            "path": str(path),
            "steps": step,
            "train_time_s": train_time,
            "num_parameters": net.num_parameters(),
            "weight_bytes": path.stat().st_size,
            "final_loss": state["losses"][-1] if state["losses"] else float("nan"),
            "loss_curve": list(state["losses"]),
            "profiles": names,
        }
    finally:
        torch.set_num_threads(threads_before)


# --------------------------------------------------------------------------- how close is generated to real


@torch.no_grad()
def generation_report(
    model: LargeModel,
    profiles: Mapping[str, Profile],
    *,
    grid: GridSpec | None = None,
    carrier_hz: float = 3.5e9,
    speed_range_mps: tuple[float, float] = (3.0, 20.0),
    n: int = 512,
    seed: int = 7,
) -> list[dict[str, Any]]:
    """Compare generated and real channels of each profile.

    Returns one row per profile: ``profile``, ``pdp_rmse_db`` (RMS difference of the
    power-delay profiles over taps within 30 dB of the strongest, real vs generated),
    ``rms_delay_real_ns`` / ``rms_delay_gen_ns`` (RMS delay spread of the grid's
    power-delay profile), ``freq_corr_real`` / ``freq_corr_gen`` (mean correlation of
    adjacent-but-three subcarriers, |E[h_k h*_{k+3}]| / E|h|^2) and ``power_gen``
    (mean |h|^2 of the generated channels before the normalisation of
    :meth:`LargeModel.generate`; real channels have 1).
    """
    grid = grid if grid is not None else GridSpec()
    rows = []
    tap_s = 1.0 / (grid.fft_size * grid.subcarrier_spacing_hz)
    for k, (name, prof) in enumerate(profiles.items()):
        gen = torch.Generator().manual_seed(seed + k)
        real = ChannelSampler(prof, grid, carrier_hz=carrier_hz).sample(n, speed_mps=speed_range_mps, generator=gen)
        fake = model.generate(
            prof, n, carrier_hz=carrier_hz, speed_mps=speed_range_mps, generator=gen, normalize=False
        )
        pr, pf = power_delay_profile_db(real), power_delay_profile_db(fake)
        keep = pr > pr.max() - 30.0
        taps = torch.arange(grid.fft_size, dtype=torch.float32)
        taps = torch.where(taps < grid.fft_size / 2, taps, taps - grid.fft_size)  # cyclic: negative delays

        def rms_ns(p_db: torch.Tensor) -> float:
            p = torch.pow(10.0, p_db / 10.0)
            m = (p * taps).sum() / p.sum()
            return float(((p * (taps - m) ** 2).sum() / p.sum()).sqrt() * tap_s * 1e9)

        def corr(h: torch.Tensor) -> float:
            c = (h[..., :-3] * h[..., 3:].conj()).mean()
            return float(c.abs() / h.abs().pow(2).mean())

        def slot_change_db(h: torch.Tensor) -> float:
            return float(10.0 * torch.log10((h[:, :, -1] - h[:, :, 0]).abs().pow(2).mean() / h.abs().pow(2).mean()))

        rows.append(
            {
                "profile": name,
                "pdp_rmse_db": float((pr - pf)[keep].pow(2).mean().sqrt()),
                "rms_delay_real_ns": rms_ns(pr),
                "rms_delay_gen_ns": rms_ns(pf),
                "freq_corr_real": corr(real),
                "freq_corr_gen": corr(fake),
                "power_gen": float(fake.abs().pow(2).mean()),
                "slot_change_real_db": slot_change_db(real),
                "slot_change_gen_db": slot_change_db(fake),
            }
        )
    return rows
