"""Semantic codecs: whole images to complex channel symbols and back.

A codec follows the :class:`SemanticCodec` protocol:

``encode(images [B, 3, H, W] in 0..1) -> symbols [B, k] complex64``
    ``k = symbols_for(H, W)`` channel uses (complex symbols) per image, with
    unit average power per image (``mean |s|^2 = 1`` over the image's ``k``
    symbols).
``decode(symbols [B, k] complex64, snr_db [B], *, size=(H, W)) -> images [B, 3, H, W]``
    From received (equalised) symbols and the SNR the receiver knows.

**Bandwidth ratio** ``rho = k / (3 H W)``: complex channel uses per source
pixel component (the DeepJSCC convention). All shipped codecs work on 32x32
patches at ``rho = 1/6`` (512 symbols per patch); a frame is cut into whole
patches (the last row/column padded by reflection, see
:func:`~ivsim.ai.images.tile`), so a 320x180 frame costs ``10 x 6`` patches, i.e.
``k = 30720`` channel uses (``rho = 0.178`` of the unpadded frame). The digital
baseline is given exactly the same ``k`` (:func:`symbols_for_patches`), so every
comparison is at equal channel uses.

Kinds (:data:`CODECS`, and :func:`make_codec` builds one):

``ctcd``
    :class:`CTCDCodec`, the CNN-Transformer joint source-channel codec: two
    stride-2 convolution stages, dilated convolutions (1, 2, 4), one transformer
    encoder layer over the 8x8 spatial tokens of a patch, a 1x1 projection to
    ``2k`` reals paired into ``k`` complex symbols and power normalisation; the
    decoder mirrors it (transformer layer, dilated convolutions, transposed-conv
    up-sampling) and is **SNR-conditioned**: an embedding of ``snr_db`` modulates
    its features (FiLM, ``x * (1 + gamma(snr)) + beta(snr)``) after the
    transformer, every dilated convolution and the first up-sampling, so one
    model serves all SNRs. The encoder does not see the SNR (no feedback to
    the transmitter is assumed).
``deepjscc``
    :class:`DeepJSCCCodec`, the convolutional deep JSCC baseline of
    Bourtsoulatze, Kurka and Gunduz (2019): five 5x5 convolutions with PReLU
    (two of stride 2), power normalisation; five transposed convolutions and a
    sigmoid. Like the original it is **not SNR-aware**: trained over the same SNR
    range, its decoder ignores ``snr_db``.
``digital``
    :class:`DigitalCodec`, the conventional chain: JPEG (Pillow) at the
    highest quality whose bytes fit the budget, CRC24B + 5G LDPC (Sionna,
    rate 1/2 by default) per code block, 16-QAM (Sionna ``Mapper``); the
    receiver demaps LLRs at the given noise variance, LDPC-decodes and checks
    the CRCs. A frame with a failed code block (or undecodable JPEG) is
    **lost**: it decodes to mid-grey and ``last_lost`` flags it. Hence its cliff.

Plugins: ``make_codec("my_pkg.my_module:MyCodec", **params)`` imports the class
and builds it with ``params``; anything with the protocol's members works. A
worked example, a ``linear`` analog codec in ``my_codecs.py``::

    import torch
    import torch.nn.functional as F

    class AveragePoolCodec:
        '''Sends 2x2-average pixels, uncoded, two per complex symbol (rho = 1/8).'''
        name = "avgpool"
        bandwidth_ratio = 1 / 8

        def symbols_for(self, height, width):
            return 3 * (height // 2) * (width // 2) // 2

        def encode(self, images):                      # [B, 3, H, W]
            x = F.avg_pool2d(images, 2).flatten(1) - 0.5
            s = torch.complex(*x.reshape(x.shape[0], -1, 2).unbind(-1))
            return s / s.abs().pow(2).mean(1, keepdim=True).sqrt()

        def decode(self, symbols, snr_db, *, size):
            h, w = size
            x = torch.view_as_real(symbols).reshape(symbols.shape[0], 3, h // 2, w // 2)
            x = x * 0.25 + 0.5                         # rough de-normalisation
            return F.interpolate(x, size=(h, w), mode="bilinear").clamp(0, 1)

    # in a scenario: link.codec.kind: "my_codecs:AveragePoolCodec"
    codec = make_codec("my_codecs:AveragePoolCodec")

Quality: :func:`eval_awgn` transmits whole frames over AWGN with perfect CSI
and returns PSNR/SSIM per codec and SNR; ``python -m ivsim.ai.codecs`` prints
the table of the model cards.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from ivsim.ai import zoo
from ivsim.ai.images import DEFAULT_IMAGES, ImageFolder, psnr, ssim, tile, tile_grid, to_pil, untile
from ivsim.errors import ModelError
from ivsim.registry import resolve_kind

__all__ = [
    "CODECS",
    "CTCDCodec",
    "DeepJSCCCodec",
    "DigitalCodec",
    "SemanticCodec",
    "awgn",
    "eval_awgn",
    "format_table",
    "make_codec",
    "normalize_power",
    "symbols_for_patches",
]

log = logging.getLogger(__name__)

DEFAULT_PATCH = 32
DEFAULT_BANDWIDTH_RATIO = 1 / 6
DEFAULT_IMAGE_SIZE = (180, 320)
_DECODE_CHUNK = 1024  # patches per network call


@runtime_checkable
class SemanticCodec(Protocol):
    """What the link layer needs from a codec (see the module docstring for shapes).

    Optional extras: ``decode_with_status(symbols, snr_db, *, size)`` returning
    ``(images, lost [B] bool)``, used by :func:`eval_awgn` when present.
    """

    name: str
    bandwidth_ratio: float

    def symbols_for(self, height: int, width: int) -> int:
        """Return ``k``, the complex channel uses for one ``height x width`` image."""
        ...

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in ``0..1`` to ``[B, k]`` complex64, unit average power per image."""
        ...

    def decode(self, symbols: torch.Tensor, snr_db: torch.Tensor, *, size: tuple[int, int]) -> torch.Tensor:
        """``[B, k]`` complex64 and ``[B]`` SNR in dB to ``[B, 3, H, W]`` in ``0..1``."""
        ...


# ----------------------------------------------------------------------------------------------- helpers


def symbols_per_patch(patch: int, bandwidth_ratio: float) -> int:
    """Return ``3 * patch**2 * bandwidth_ratio``, checking it is a whole number of symbols."""
    k = 3 * patch * patch * bandwidth_ratio
    if patch <= 0 or k < 1 or abs(k - round(k)) > 1e-6:
        msg = f"bandwidth ratio {bandwidth_ratio} gives {k:g} symbols per {patch}x{patch} patch: not a whole number"
        raise ModelError(msg)
    return round(k)


def symbols_for_patches(height: int, width: int, *, patch: int, bandwidth_ratio: float) -> int:
    """Channel uses of a ``height x width`` image cut into whole ``patch x patch`` patches.

    Parameters
    ----------
    height, width
        Image size in pixels.
    patch
        Patch side; partial patches at the edges count whole.
    bandwidth_ratio
        Complex symbols per pixel component of one patch.

    Returns
    -------
    int
        ``ceil(H/p) * ceil(W/p) * 3 p^2 rho``; 30720 for 320x180, ``p=32``, ``rho=1/6``.
    """
    rows, cols = tile_grid(height, width, patch)
    return rows * cols * symbols_per_patch(patch, bandwidth_ratio)


def normalize_power(symbols: torch.Tensor) -> torch.Tensor:
    """Scale each row of ``[N, k]`` complex symbols to unit average power ``mean |s|^2 = 1``."""
    power = symbols.real.pow(2).add(symbols.imag.pow(2)).mean(dim=-1, keepdim=True)
    return symbols * torch.rsqrt(power.clamp_min(1e-12))


def awgn(symbols: torch.Tensor, snr_db: torch.Tensor | float, *, generator: torch.Generator) -> torch.Tensor:
    """Add complex white Gaussian noise for unit-power symbols at ``snr_db``.

    The complex noise has total variance ``N0 = 10**(-snr_db/10)``, i.e.
    ``N0/2`` per real component, so ``SNR = E|s|^2 / N0`` for unit-power ``s``.

    Parameters
    ----------
    symbols
        ``[B, k]`` complex.
    snr_db
        Scalar or ``[B]`` (one SNR per row).
    generator
        The noise source (same device as ``symbols``).

    Returns
    -------
    torch.Tensor
        ``[B, k]`` complex, ``symbols + n``.
    """
    snr = torch.as_tensor(snr_db, dtype=torch.float32, device=symbols.device)
    n0 = torch.pow(10.0, -snr / 10.0).reshape(-1, *([1] * (symbols.dim() - 1)))
    std = torch.sqrt(n0 / 2.0)
    shape = (*symbols.shape, 2)
    noise = torch.randn(shape, generator=generator, device=symbols.device, dtype=torch.float32)
    return symbols + torch.view_as_complex(noise) * std


def _snr_vector(snr_db: torch.Tensor | float | Sequence[float], batch: int, device: torch.device) -> torch.Tensor:
    snr = torch.as_tensor(snr_db, dtype=torch.float32, device=device).reshape(-1)
    if snr.numel() == 1:
        snr = snr.expand(batch)
    if snr.numel() != batch:
        msg = f"snr_db has {snr.numel()} values for a batch of {batch} images"
        raise ModelError(msg)
    return snr


def _check_images(images: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        msg = f"images must be [B, 3, H, W], got {list(images.shape)}"
        raise ModelError(msg)


def _to_complex(z: torch.Tensor) -> torch.Tensor:
    """``[N, C, s, s]`` reals to ``[N, C*s*s/2]`` complex64 (consecutive reals pair up)."""
    flat = z.reshape(z.shape[0], -1, 2).float().contiguous()
    return torch.view_as_complex(flat)


def _from_complex(symbols: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    return torch.view_as_real(symbols.to(torch.complex64)).reshape(symbols.shape[0], *shape)


def init_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """(Re-)initialise every parameter of ``module`` from ``generator`` only.

    Convolutions and linear layers get Kaiming-uniform weights (PyTorch's
    default rule) and zero biases, attention in-projections Xavier-uniform,
    norms ones/zeros, PReLU slopes 0.25, positional embeddings N(0, 0.02);
    FiLM generators start at zero (identity modulation).

    Raises
    ------
    RuntimeError
        A parameter no rule covers (a programming error).
    """
    done: set[int] = set()
    with torch.no_grad():
        for mod in module.modules():
            own = dict(mod.named_parameters(recurse=False))
            if isinstance(mod, _FiLM):
                for p in mod.parameters():
                    p.zero_()
                    done.add(id(p))
                continue
            if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                if id(mod.weight) not in done:
                    nn.init.kaiming_uniform_(mod.weight, a=math.sqrt(5), generator=generator)
                    done.add(id(mod.weight))
                if mod.bias is not None and id(mod.bias) not in done:
                    mod.bias.zero_()
                    done.add(id(mod.bias))
            elif isinstance(mod, nn.MultiheadAttention):
                nn.init.xavier_uniform_(mod.in_proj_weight, generator=generator)
                mod.in_proj_bias.zero_()
                done.update({id(mod.in_proj_weight), id(mod.in_proj_bias)})
            elif isinstance(mod, nn.LayerNorm):
                mod.weight.fill_(1.0)
                mod.bias.zero_()
                done.update({id(mod.weight), id(mod.bias)})
            elif isinstance(mod, nn.PReLU):
                mod.weight.fill_(0.25)
                done.add(id(mod.weight))
            for name, p in own.items():
                if name.startswith("pos") and id(p) not in done:
                    nn.init.trunc_normal_(p, std=0.02, generator=generator)
                    done.add(id(p))
    left = [n for n, p in module.named_parameters() if id(p) not in done]
    if left:
        msg = f"no initialisation rule for {left}"
        raise RuntimeError(msg)


# ----------------------------------------------------------------------------------------------- networks


class _FiLM(nn.Module):
    """Feature-wise modulation from an SNR embedding: ``x * (1 + gamma) + beta``."""

    def __init__(self, embed: int, channels: int) -> None:
        super().__init__()
        self.lin = nn.Linear(embed, 2 * channels)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.lin(emb).chunk(2, dim=-1)
        return x * (1.0 + gamma[..., None, None]) + beta[..., None, None]


class _SNREmbed(nn.Module):
    def __init__(self, embed: int) -> None:
        super().__init__()
        self.l1 = nn.Linear(1, embed)
        self.l2 = nn.Linear(embed, embed)
        self.act = nn.GELU()

    def forward(self, snr_db: torch.Tensor) -> torch.Tensor:
        x = (snr_db.float().reshape(-1, 1) - 7.5) / 7.5
        return self.act(self.l2(self.act(self.l1(x))))


class _Tokens(nn.Module):
    """A transformer encoder layer over the ``s x s`` spatial tokens of a patch."""

    def __init__(self, channels: int, tokens: int, heads: int) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.empty(1, tokens, channels))
        self.layer = nn.TransformerEncoderLayer(
            channels, heads, dim_feedforward=2 * channels, dropout=0.0, activation="gelu",
            batch_first=True, norm_first=True,
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2) + self.pos
        return self.layer(t).transpose(1, 2).reshape(n, c, h, w)


class CTCDNet(nn.Module):
    """The CTCD encoder/decoder pair for ``patch x patch`` inputs (see the module docstring).

    Parameters
    ----------
    patch
        Input side, a multiple of 4.
    out_channels
        Reals per token of the channel representation: ``2k / (patch/4)^2``.
    channels
        Width at the token resolution (``patch/4``).
    mid_channels
        Width at ``patch/2``.
    heads
        Attention heads.
    embed
        SNR embedding width.
    """

    def __init__(
        self, *, patch: int, out_channels: int, channels: int = 64, mid_channels: int = 32, heads: int = 4,
        embed: int = 32,
    ) -> None:  # fmt: skip
        super().__init__()
        s = patch // 4
        self.latent_shape = (out_channels, s, s)
        c, m = channels, mid_channels
        dil = (1, 2, 4)
        # encoder
        self.e_down1 = nn.Conv2d(3, m, 5, stride=2, padding=2)
        self.e_act1 = nn.PReLU(m)
        self.e_down2 = nn.Conv2d(m, c, 3, stride=2, padding=1)
        self.e_act2 = nn.PReLU(c)
        self.e_dil = nn.ModuleList(nn.Conv2d(c, c, 3, padding=d, dilation=d) for d in dil)
        self.e_dil_act = nn.ModuleList(nn.PReLU(c) for _ in dil)
        self.e_tokens = _Tokens(c, s * s, heads)
        self.e_proj = nn.Conv2d(c, out_channels, 1)
        # decoder
        self.d_snr = _SNREmbed(embed)
        self.d_in = nn.Conv2d(out_channels, c, 1)
        self.d_in_act = nn.PReLU(c)
        self.d_tokens = _Tokens(c, s * s, heads)
        self.d_film0 = _FiLM(embed, c)
        self.d_dil = nn.ModuleList(nn.Conv2d(c, c, 3, padding=d, dilation=d) for d in reversed(dil))
        self.d_dil_act = nn.ModuleList(nn.PReLU(c) for _ in dil)
        self.d_film = nn.ModuleList(_FiLM(embed, c) for _ in dil)
        self.d_up1 = nn.ConvTranspose2d(c, m, 4, stride=2, padding=1)
        self.d_up1_act = nn.PReLU(m)
        self.d_film_up = _FiLM(embed, m)
        self.d_up2 = nn.ConvTranspose2d(m, m // 2, 4, stride=2, padding=1)
        self.d_up2_act = nn.PReLU(m // 2)
        self.d_out = nn.Conv2d(m // 2, 3, 3, padding=1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, p, p]`` in ``0..1`` to ``[N, k]`` complex64 of unit power per row."""
        h = self.e_act1(self.e_down1(x - 0.5))
        h = self.e_act2(self.e_down2(h))
        for conv, act in zip(self.e_dil, self.e_dil_act, strict=True):
            h = h + act(conv(h))
        h = self.e_tokens(h)
        return normalize_power(_to_complex(self.e_proj(h)))

    def decode(self, symbols: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        """``[N, k]`` complex and ``[N]`` SNR (dB) to ``[N, 3, p, p]`` in ``0..1``."""
        emb = self.d_snr(snr_db)
        h = self.d_in_act(self.d_in(_from_complex(symbols, self.latent_shape)))
        h = self.d_film0(self.d_tokens(h), emb)
        for conv, act, film in zip(self.d_dil, self.d_dil_act, self.d_film, strict=True):
            h = film(h + act(conv(h)), emb)
        h = self.d_film_up(self.d_up1_act(self.d_up1(h)), emb)
        h = self.d_up2_act(self.d_up2(h))
        return torch.sigmoid(self.d_out(h))


class DeepJSCCNet(nn.Module):
    """The Bourtsoulatze et al. deep JSCC encoder/decoder for ``patch x patch`` inputs.

    Parameters
    ----------
    patch
        Input side, a multiple of 4.
    out_channels
        Reals per position of the ``patch/4`` latent grid: ``2k / (patch/4)^2``.
    channels
        Width of the inner layers (the paper uses 32; 48 matches CTCD's size).
    first_channels
        Width of the first layer (paper: 16).
    """

    def __init__(self, *, patch: int, out_channels: int, channels: int = 48, first_channels: int = 32) -> None:
        super().__init__()
        s = patch // 4
        self.latent_shape = (out_channels, s, s)
        c, f = channels, first_channels
        self.enc = nn.Sequential(
            nn.Conv2d(3, f, 5, stride=2, padding=2), nn.PReLU(f),
            nn.Conv2d(f, c, 5, stride=2, padding=2), nn.PReLU(c),
            nn.Conv2d(c, c, 5, padding=2), nn.PReLU(c),
            nn.Conv2d(c, c, 5, padding=2), nn.PReLU(c),
            nn.Conv2d(c, out_channels, 5, padding=2),
        )  # fmt: skip
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(out_channels, c, 5, padding=2), nn.PReLU(c),
            nn.ConvTranspose2d(c, c, 5, padding=2), nn.PReLU(c),
            nn.ConvTranspose2d(c, c, 5, padding=2), nn.PReLU(c),
            nn.ConvTranspose2d(c, f, 5, stride=2, padding=2, output_padding=1), nn.PReLU(f),
            nn.ConvTranspose2d(f, 3, 5, stride=2, padding=2, output_padding=1),
        )  # fmt: skip

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, p, p]`` in ``0..1`` to ``[N, k]`` complex64 of unit power per row."""
        return normalize_power(_to_complex(self.enc(x - 0.5)))

    def decode(self, symbols: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:  # noqa: ARG002
        """``[N, k]`` complex to ``[N, 3, p, p]``; ``snr_db`` is ignored (not SNR-aware)."""
        return torch.sigmoid(self.dec(_from_complex(symbols, self.latent_shape)))


# ----------------------------------------------------------------------------------------------- neural codecs

_UNSET: Any = object()


class _NeuralCodec:
    """Patch-based neural codec around a network with ``encode``/``decode`` (see subclasses)."""

    name: ClassVar[str]
    net_class: ClassVar[type[nn.Module]]
    arch_defaults: ClassVar[dict[str, Any]]

    def __init__(
        self,
        *,
        weights: str | Path | None = _UNSET,
        patch: int = _UNSET,
        bandwidth_ratio: float = _UNSET,
        image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
        device: str | torch.device = "cpu",
        generator: torch.Generator | None = None,
        models_dir: str | Path | None = None,
        **arch: Any,
    ) -> None:
        explicit = {"patch": patch, "bandwidth_ratio": bandwidth_ratio, **arch}
        explicit = {k: v for k, v in explicit.items() if v is not _UNSET}
        unknown = sorted(set(explicit) - set(self.arch_defaults))
        if unknown:
            msg = f"codec {self.name!r}: unknown parameter(s) {unknown} (allowed: {sorted(self.arch_defaults)})"
            raise ModelError(msg)
        if weights is _UNSET:
            weights = f"codec_{self.name}"
        config = dict(self.arch_defaults)
        self.weights_path: Path | None = None
        if weights is not None:
            self.weights_path = zoo.resolve(weights, models_dir=models_dir)
            stored = zoo.read_config(self.weights_path, architecture=self.architecture())
            for key, value in explicit.items():
                if key in stored and stored[key] != value:
                    msg = f"{self.weights_path}: weights were trained with {key}={stored[key]!r}, not {value!r}"
                    raise ModelError(msg)
            config.update({k: v for k, v in stored.items() if k in config})
        config.update(explicit)
        self.config = config
        self.patch = int(config["patch"])
        self.bandwidth_ratio = float(config["bandwidth_ratio"])
        if self.patch % 4:
            msg = f"codec {self.name!r}: patch {self.patch} is not a multiple of 4"
            raise ModelError(msg)
        self.symbols_per_patch = symbols_per_patch(self.patch, self.bandwidth_ratio)
        out_channels = 2 * self.symbols_per_patch / (self.patch // 4) ** 2
        if out_channels != int(out_channels):
            msg = f"codec {self.name!r}: bandwidth ratio {self.bandwidth_ratio} needs a multiple of 1/96"
            raise ModelError(msg)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.device = torch.device(device)
        net_args = {k: v for k, v in config.items() if k not in ("patch", "bandwidth_ratio")}
        with torch.device("meta"):
            net = self.net_class(patch=self.patch, out_channels=int(out_channels), **net_args)
        net = net.to_empty(device="cpu")  # initialised with a CPU generator on any device, then moved
        init_parameters(net, generator if generator is not None else torch.Generator().manual_seed(0))
        if self.weights_path is not None:
            zoo.load_into(net, self.weights_path, architecture=self.architecture())
        self.net = net.to(self.device).eval()

    @classmethod
    def architecture(cls) -> str:
        """The ``ivsim.architecture`` tag of this codec's weight files."""
        return f"codec/{cls.name}"

    @property
    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.net.parameters())

    def symbols_for(self, height: int, width: int) -> int:
        """Channel uses of one ``height x width`` image (whole patches, see the module docstring)."""
        return symbols_for_patches(height, width, patch=self.patch, bandwidth_ratio=self.bandwidth_ratio)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Encode whole images.

        Parameters
        ----------
        images
            ``[B, 3, H, W]`` in ``0..1``.

        Returns
        -------
        torch.Tensor
            ``[B, k]`` complex64 with ``k = symbols_for(H, W)``; every patch, so
            every image, has unit average power.
        """
        _check_images(images)
        b = images.shape[0]
        with torch.inference_mode():
            patches = tile(images.to(self.device, torch.float32), self.patch)
            z = torch.cat([self.net.encode(c) for c in patches.split(_DECODE_CHUNK)])
        return z.reshape(b, -1)

    def decode(
        self, symbols: torch.Tensor, snr_db: torch.Tensor | float, *, size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Decode received symbols into whole images.

        Parameters
        ----------
        symbols
            ``[B, k]`` complex (equalised), ``k = symbols_for(*size)``.
        snr_db
            ``[B]`` or a scalar: the SNR in dB each image was received at.
        size
            ``(H, W)``; default :attr:`image_size` (180, 320).

        Returns
        -------
        torch.Tensor
            ``[B, 3, H, W]`` in ``0..1``.
        """
        h, w = size if size is not None else self.image_size
        k = self.symbols_for(h, w)
        if symbols.dim() != 2 or symbols.shape[1] != k:
            msg = f"codec {self.name!r}: expected [B, {k}] symbols for {h}x{w} images, got {list(symbols.shape)}"
            raise ModelError(msg)
        b = symbols.shape[0]
        per_image = k // self.symbols_per_patch
        snr = _snr_vector(snr_db, b, self.device).repeat_interleave(per_image)
        with torch.inference_mode():
            y = symbols.to(self.device, torch.complex64).reshape(b * per_image, self.symbols_per_patch)
            out = torch.cat(
                [self.net.decode(c, s) for c, s in zip(y.split(_DECODE_CHUNK), snr.split(_DECODE_CHUNK), strict=True)]
            )
        return untile(out, h, w)

    def decode_with_status(
        self, symbols: torch.Tensor, snr_db: torch.Tensor | float, *, size: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`decode` plus a ``[B]`` bool ``lost`` flag (never set for a neural codec)."""
        images = self.decode(symbols, snr_db, size=size)
        return images, torch.zeros(images.shape[0], dtype=torch.bool)

    def save(self, path: str | Path, *, dtype: torch.dtype | None = None, metadata: dict[str, str] | None = None) -> Path:
        """Write this codec's weights (and config) to a safetensors file; see :func:`ivsim.ai.zoo.save_weights`."""
        return zoo.save_weights(
            self.net.state_dict(), path, architecture=self.architecture(), config=self.config, dtype=dtype,
            metadata=metadata,
        )  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(patch={self.patch}, bandwidth_ratio={self.bandwidth_ratio:.4g}, "
            f"params={self.num_parameters:,}, weights={str(self.weights_path) if self.weights_path else None})"
        )


class CTCDCodec(_NeuralCodec):
    """The CNN-Transformer JSCC codec (``kind: ctcd``), SNR-conditioned decoder.

    Parameters
    ----------
    weights
        A weight name in ``models/`` or a path; default ``"codec_ctcd"`` (the
        shipped weights); ``None`` for a fresh, untrained network (training).
    patch, bandwidth_ratio, channels, mid_channels, heads, embed
        Architecture; taken from the weight file when one is given (passing a
        different value is an error). Defaults 32, 1/6, 64, 32, 4, 32.
    image_size
        ``(H, W)`` that :meth:`decode` assumes when not told; default (180, 320).
    device
        Torch device of the network.
    generator
        Initialises a fresh network (default: seed 0); unused with weights.
    models_dir
        Where weight names are looked up; default the repository's ``models/``.

    Raises
    ------
    ModelError
        Unknown parameter, weight file missing/corrupt/for another architecture.
    """

    name = "ctcd"
    net_class = CTCDNet
    arch_defaults: ClassVar[dict[str, Any]] = {
        "patch": DEFAULT_PATCH, "bandwidth_ratio": DEFAULT_BANDWIDTH_RATIO, "channels": 64, "mid_channels": 32,
        "heads": 4, "embed": 32,
    }  # fmt: skip


class DeepJSCCCodec(_NeuralCodec):
    """The convolutional deep JSCC baseline (``kind: deepjscc``), not SNR-aware.

    Parameters
    ----------
    weights
        A weight name in ``models/`` or a path; default ``"codec_deepjscc"``;
        ``None`` for a fresh network.
    patch, bandwidth_ratio, channels, first_channels
        Architecture (defaults 32, 1/6, 48, 32); from the weight file when given.
    image_size, device, generator, models_dir
        As for :class:`CTCDCodec`.
    """

    name = "deepjscc"
    net_class = DeepJSCCNet
    arch_defaults: ClassVar[dict[str, Any]] = {
        "patch": DEFAULT_PATCH, "bandwidth_ratio": DEFAULT_BANDWIDTH_RATIO, "channels": 48, "first_channels": 32,
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------- digital


class _Plan:
    """LDPC/QAM blocks for a budget of ``k`` symbols (built once per ``k``)."""

    def __init__(self, k: int, *, code_rate: float, bits_per_symbol: int, block_bits: int, num_iter: int,
                 device: str) -> None:  # fmt: skip
        from ivsim.phy._sionna import sp  # noqa: F401  (Sionna imported through ivsim's door)
        from sionna.phy.fec.crc import CRCDecoder, CRCEncoder
        from sionna.phy.fec.ldpc import LDPC5GDecoder, LDPC5GEncoder
        from sionna.phy.mapping import Constellation, Demapper, Mapper

        total = k * bits_per_symbol
        n_cb = min(block_bits - block_bits % bits_per_symbol, total - total % bits_per_symbol)
        self.k_info = int(round(n_cb * code_rate))
        if self.k_info - 24 < 16 or self.k_info > 8448:
            msg = f"digital codec: {k} symbols give code blocks of {n_cb} bits at rate {code_rate}: unsupported"
            raise ModelError(msg)
        self.n_cb = n_cb
        self.blocks = total // n_cb
        self.payload_bits = self.blocks * (self.k_info - 24)
        self.coded_symbols = self.blocks * n_cb // bits_per_symbol
        self.k = k
        self.crc = CRCEncoder("CRC24B", device=device)
        self.crc_dec = CRCDecoder(self.crc, device=device)
        self.ldpc = LDPC5GEncoder(self.k_info, n_cb, num_bits_per_symbol=bits_per_symbol, device=device)
        self.ldpc_dec = LDPC5GDecoder(self.ldpc, hard_out=True, num_iter=num_iter, device=device)
        const = Constellation("qam", bits_per_symbol, device=device)
        self.mapper = Mapper(constellation=const, device=device)
        self.demapper = Demapper("app", constellation=const, device=device)


class DigitalCodec:
    """JPEG + 5G LDPC + QAM, the separation baseline (``kind: digital``).

    Parameters
    ----------
    bandwidth_ratio, patch
        Set the budget exactly as for the neural codecs
        (:func:`symbols_for_patches`), so all are compared at equal channel uses.
        Defaults 1/6 and 32.
    code_rate
        LDPC code rate (5G rate matching); default 1/2.
    bits_per_symbol
        QAM order ``2**bits_per_symbol``; default 4 (16-QAM).
    block_bits
        Coded bits per LDPC code block (each carries a CRC24B); default 3840.
    num_iter
        Belief-propagation iterations; default 20.
    max_quality
        Highest JPEG quality tried; default 95.
    image_size
        ``(H, W)`` that :meth:`decode` assumes when not told; default (180, 320).
    device
        Device of the Sionna blocks.

    Notes
    -----
    The bytes sent are a 4-byte length header and the JPEG file (Pillow,
    ``optimize=True``, 4:2:0), split over the code blocks; the QAM symbols are
    padded to ``k`` by repeating themselves (so the power stays that of the
    constellation, ``mean |s|^2 ~ 1``); the receiver ignores the padding. After
    :meth:`encode`, :attr:`last_quality` holds the JPEG quality chosen per image
    (0 where not even quality 1 fits: that frame is lost); after :meth:`decode`,
    :attr:`last_lost` is the ``[B]`` bool tensor of lost frames.
    """

    name = "digital"

    def __init__(
        self,
        *,
        bandwidth_ratio: float = DEFAULT_BANDWIDTH_RATIO,
        patch: int = DEFAULT_PATCH,
        code_rate: float = 0.5,
        bits_per_symbol: int = 4,
        block_bits: int = 3840,
        num_iter: int = 20,
        max_quality: int = 95,
        image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
        device: str | torch.device = "cpu",
    ) -> None:
        if not 0.2 <= code_rate <= 0.92:
            msg = f"digital codec: code_rate {code_rate} outside 5G LDPC's 0.2..0.92"
            raise ModelError(msg)
        if bits_per_symbol not in (2, 4, 6, 8):
            msg = f"digital codec: bits_per_symbol {bits_per_symbol} not a square QAM (allowed: 2, 4, 6, 8)"
            raise ModelError(msg)
        self.bandwidth_ratio = float(bandwidth_ratio)
        self.patch = int(patch)
        symbols_per_patch(self.patch, self.bandwidth_ratio)
        self.code_rate = float(code_rate)
        self.bits_per_symbol = int(bits_per_symbol)
        self.block_bits = int(block_bits)
        self.num_iter = int(num_iter)
        self.max_quality = int(max_quality)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.device = torch.device(device)
        self._plans: dict[int, _Plan] = {}
        self.last_quality: list[int] = []
        self.last_lost = torch.zeros(0, dtype=torch.bool)

    def symbols_for(self, height: int, width: int) -> int:
        """Channel uses of one image: the same budget as the neural codecs at this ratio and patch."""
        return symbols_for_patches(height, width, patch=self.patch, bandwidth_ratio=self.bandwidth_ratio)

    def _plan(self, k: int) -> _Plan:
        if k not in self._plans:
            dev = "cpu" if self.device.type == "cpu" else f"cuda:{self.device.index or 0}"
            self._plans[k] = _Plan(
                k, code_rate=self.code_rate, bits_per_symbol=self.bits_per_symbol, block_bits=self.block_bits,
                num_iter=self.num_iter, device=dev,
            )  # fmt: skip
        return self._plans[k]

    def payload_bytes(self, height: int, width: int) -> int:
        """JPEG bytes that fit the budget of one ``height x width`` image (after the 4-byte header)."""
        return self._plan(self.symbols_for(height, width)).payload_bits // 8 - 4

    def jpeg(self, image: torch.Tensor, max_bytes: int) -> tuple[bytes, int]:
        """Return ``(jpeg_bytes, quality)`` at the highest quality within ``max_bytes`` (``(b"", 0)`` if none)."""
        pil = to_pil(image)

        def encode(q: int) -> bytes:
            buf = io.BytesIO()
            pil.save(buf, format="JPEG", quality=q, optimize=True)
            return buf.getvalue()

        lo, hi, best = 1, self.max_quality, (b"", 0)
        while lo <= hi:
            q = (lo + hi) // 2
            data = encode(q)
            if len(data) <= max_bytes:
                best, lo = (data, q), q + 1
            else:
                hi = q - 1
        return best

    def source_only(self, images: torch.Tensor) -> torch.Tensor:
        """The images after JPEG alone (what an error-free channel delivers), ``[B, 3, H, W]``."""
        _check_images(images)
        h, w = images.shape[-2:]
        cap = self.payload_bytes(h, w)
        out = torch.full_like(images, 0.5, dtype=torch.float32)
        for i, img in enumerate(images):
            data, q = self.jpeg(img, cap)
            if q:
                out[i] = _jpeg_decode(data, (h, w))
        return out

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """JPEG, CRC, LDPC and QAM: ``[B, 3, H, W]`` to ``[B, k]`` complex64 (see the class notes)."""
        _check_images(images)
        b, _, h, w = images.shape
        k = self.symbols_for(h, w)
        plan = self._plan(k)
        cap = plan.payload_bits // 8 - 4
        bits = np.zeros((b, plan.payload_bits), dtype=np.float32)
        self.last_quality = []
        for i, img in enumerate(images.detach().cpu()):
            data, q = self.jpeg(img, cap)
            self.last_quality.append(q)
            if not q:
                log.warning("digital codec: no JPEG of a %dx%d image fits %d bytes: frame lost", h, w, cap)
                continue
            raw = np.frombuffer(len(data).to_bytes(4, "big") + data, dtype=np.uint8)
            bits[i, : raw.size * 8] = np.unpackbits(raw)
        u = torch.from_numpy(bits).to(self.device).reshape(b * plan.blocks, plan.k_info - 24)
        with torch.inference_mode():
            c = plan.ldpc(plan.crc(u)).reshape(b, plan.blocks * plan.n_cb)
            x = plan.mapper(c).to(torch.complex64)
        if x.shape[1] < k:  # pad by repetition: same power, ignored by the receiver
            reps = math.ceil(k / x.shape[1])
            x = x.repeat(1, reps)[:, :k]
        return x

    def decode(
        self,
        symbols: torch.Tensor,
        snr_db: torch.Tensor | float,
        *,
        size: tuple[int, int] | None = None,
        noise_var: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """Demap, LDPC-decode, check CRCs, JPEG-decode; lost frames come back mid-grey.

        Parameters
        ----------
        symbols
            ``[B, k]`` complex (equalised).
        snr_db
            ``[B]`` or scalar; sets the demapper's noise variance ``10**(-snr/10)``.
        size
            ``(H, W)``; default :attr:`image_size`.
        noise_var
            Overrides the noise variance: scalar, ``[B]`` or ``[B, k]`` (e.g.
            post-equalisation noise per symbol).

        Returns
        -------
        torch.Tensor
            ``[B, 3, H, W]``; :attr:`last_lost` flags the lost frames.
        """
        return self.decode_with_status(symbols, snr_db, size=size, noise_var=noise_var)[0]

    def decode_with_status(
        self,
        symbols: torch.Tensor,
        snr_db: torch.Tensor | float,
        *,
        size: tuple[int, int] | None = None,
        noise_var: torch.Tensor | float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`decode` returning ``(images [B, 3, H, W], lost [B] bool)``."""
        h, w = size if size is not None else self.image_size
        k = self.symbols_for(h, w)
        if symbols.dim() != 2 or symbols.shape[1] != k:
            msg = f"codec 'digital': expected [B, {k}] symbols for {h}x{w} images, got {list(symbols.shape)}"
            raise ModelError(msg)
        b = symbols.shape[0]
        plan = self._plan(k)
        y = symbols.to(self.device, torch.complex64)[:, : plan.coded_symbols]
        if noise_var is None:
            no = torch.pow(10.0, -_snr_vector(snr_db, b, self.device) / 10.0)[:, None]
        else:
            no = torch.as_tensor(noise_var, dtype=torch.float32, device=self.device)
            no = no[:, : plan.coded_symbols] if no.dim() == 2 else no.reshape(-1, 1).expand(b, 1)
        no = no.expand(b, plan.coded_symbols).contiguous()
        with torch.inference_mode():
            llr = plan.demapper(y, no).reshape(b * plan.blocks, plan.n_cb)
            cw = plan.ldpc_dec(llr)
            u, ok = plan.crc_dec(cw)
        u = u.reshape(b, -1).round().to(torch.uint8).cpu().numpy()
        ok = ok.reshape(b, plan.blocks).cpu().numpy()
        out = torch.full((b, 3, h, w), 0.5)
        lost = torch.ones(b, dtype=torch.bool)
        per_block = plan.k_info - 24
        for i in range(b):
            if not ok[i, 0]:
                continue
            raw = np.packbits(u[i]).tobytes()
            n = int.from_bytes(raw[:4], "big")
            need = math.ceil((4 + n) * 8 / per_block)
            if n == 0 or 4 + n > len(raw) or not ok[i, :need].all():
                continue
            try:
                out[i] = _jpeg_decode(raw[4 : 4 + n], (h, w))
            except ModelError:
                continue
            lost[i] = False
        self.last_lost = lost
        return out, lost

    def __repr__(self) -> str:
        return (
            f"DigitalCodec(jpeg+ldpc r={self.code_rate:g}+{2**self.bits_per_symbol}-QAM, patch={self.patch}, "
            f"bandwidth_ratio={self.bandwidth_ratio:.4g})"
        )


def _jpeg_decode(data: bytes, size: tuple[int, int]) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if (im.height, im.width) != tuple(size):
                msg = f"JPEG is {im.height}x{im.width}, expected {size}"
                raise ModelError(msg)
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError) as exc:
        msg = f"undecodable JPEG ({exc})"
        raise ModelError(msg) from None
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


# ----------------------------------------------------------------------------------------------- registry

CODECS: dict[str, type] = {"ctcd": CTCDCodec, "deepjscc": DeepJSCCCodec, "digital": DigitalCodec}
"""Codec classes by ``kind``; :func:`make_codec` also accepts ``"module:Class"``."""


def make_codec(kind: str, **params: Any) -> SemanticCodec:
    """Build a codec from its kind or a ``module:Class`` path.

    Parameters
    ----------
    kind
        A key of :data:`CODECS` (``ctcd``, ``deepjscc``, ``digital``) or
        ``"package.module:ClassName"`` of an importable class (see the module
        docstring's worked example).
    **params
        Keyword arguments of the class, e.g. ``weights=None``, ``device="cuda"``.

    Returns
    -------
    SemanticCodec
        The codec; neural kinds load their shipped weights unless told otherwise.

    Raises
    ------
    ModelError
        Unknown kind, unimportable module or class, a class that is not a codec,
        bad parameters, or a weight problem.
    """
    cls = resolve_kind(kind, CODECS, what="codec", error=ModelError)
    try:
        codec = cls(**params)
    except TypeError as exc:
        msg = f"codec {kind!r}: bad parameters ({exc})"
        raise ModelError(msg) from None
    if not isinstance(codec, SemanticCodec):
        missing = [m for m in ("name", "bandwidth_ratio", "symbols_for", "encode", "decode") if not hasattr(codec, m)]
        msg = f"codec {kind!r}: {cls.__name__} is not a SemanticCodec (missing {', '.join(missing)})"
        raise ModelError(msg)
    return codec


# ----------------------------------------------------------------------------------------------- evaluation

EVAL_SNRS_DB = (-5.0, 0.0, 5.0, 10.0, 15.0, 20.0)


def eval_awgn(
    codecs: Sequence[str | SemanticCodec] = ("ctcd", "deepjscc", "digital"),
    *,
    images: torch.Tensor | ImageFolder | str | Path | None = None,
    snrs_db: Sequence[float] = EVAL_SNRS_DB,
    seed: int = 0,
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """Send whole frames through each codec over AWGN with perfect CSI; score PSNR/SSIM.

    Parameters
    ----------
    codecs
        Kinds (built with :func:`make_codec` and their shipped weights) or codecs.
        All must use the same ``k`` for the frame size (equal channel uses).
    images
        ``[N, 3, H, W]`` frames, an :class:`~ivsim.ai.images.ImageFolder` or a
        folder path; default the shipped test split (8 frames of 320x180).
    snrs_db
        SNRs to test.
    seed
        Seeds the noise; codec ``c`` at SNR index ``i`` sees the same noise
        draws for a given seed whatever else is evaluated.
    batch_size
        Frames per codec call.

    Returns
    -------
    list of dict
        One row per codec and SNR: ``codec, snr_db, psnr_db, ssim, lost``
        (fraction of frames lost), ``symbols`` (``k`` per frame),
        ``bandwidth_ratio`` (``k / 3HW`` of the frame) and ``frames``.

    Raises
    ------
    ModelError
        Codecs with different ``k``, or image/weight problems.
    """
    if images is None:
        images = ImageFolder(DEFAULT_IMAGES, split="test")
    if isinstance(images, (str, Path)):
        images = ImageFolder(images)
    frames = images.frames() if isinstance(images, ImageFolder) else images
    _check_images(frames)
    n, _, h, w = frames.shape
    built = [make_codec(c) if isinstance(c, str) else c for c in codecs]
    ks = {c.name: c.symbols_for(h, w) for c in built}
    if len(set(ks.values())) > 1:
        msg = f"codecs use different channel uses for {h}x{w} frames: {ks}; compare at equal k"
        raise ModelError(msg)
    rows = []
    for codec in built:
        k = ks[codec.name]
        for i, snr in enumerate(snrs_db):
            gen = torch.Generator().manual_seed(seed * 1009 + i)
            p_all, s_all, lost_all = [], [], []
            for start in range(0, n, batch_size):
                x = frames[start : start + batch_size]
                tx = codec.encode(x)
                rx = awgn(tx.cpu(), snr, generator=gen)
                if hasattr(codec, "decode_with_status"):
                    out, lost = codec.decode_with_status(rx, torch.full((x.shape[0],), float(snr)), size=(h, w))
                else:
                    out = codec.decode(rx, torch.full((x.shape[0],), float(snr)), size=(h, w))
                    lost = torch.zeros(x.shape[0], dtype=torch.bool)
                out = out.cpu()
                p_all.append(psnr(out, x))
                s_all.append(ssim(out, x))
                lost_all.append(lost.cpu())
            rows.append(
                {
                    "codec": codec.name,
                    "snr_db": float(snr),
                    "psnr_db": float(torch.cat(p_all).mean()),
                    "ssim": float(torch.cat(s_all).mean()),
                    "lost": float(torch.cat(lost_all).float().mean()),
                    "symbols": int(k),
                    "bandwidth_ratio": k / (3 * h * w),
                    "frames": int(n),
                }
            )
            log.info("%s at %g dB: PSNR %.2f dB, SSIM %.3f", codec.name, snr, rows[-1]["psnr_db"], rows[-1]["ssim"])
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Return :func:`eval_awgn` rows as a Markdown table (PSNR dB / SSIM per SNR, codecs as rows)."""
    snrs = sorted({r["snr_db"] for r in rows})
    codecs = list(dict.fromkeys(r["codec"] for r in rows))
    first = rows[0]
    head = (
        f"AWGN, perfect CSI, {first['frames']} whole frames, k = {first['symbols']} channel uses per frame "
        f"(rho = {first['bandwidth_ratio']:.4f}) for every codec; cells: PSNR dB / SSIM"
    )
    lines = [head, "", "| codec | " + " | ".join(f"{s:g} dB" for s in snrs) + " |"]
    lines.append("|---|" + "---|" * len(snrs))
    for c in codecs:
        cells = []
        for s in snrs:
            r = next(r for r in rows if r["codec"] == c and r["snr_db"] == s)
            lost = f" ({r['lost']:.0%} lost)" if r["lost"] > 0 else ""
            cells.append(f"{r['psnr_db']:.2f} / {r['ssim']:.3f}{lost}")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ivsim.ai.codecs", description="PSNR/SSIM table over AWGN.")
    parser.add_argument("--codecs", default="ctcd,deepjscc,digital", help="comma list of kinds")
    parser.add_argument("--snr", default=",".join(f"{s:g}" for s in EVAL_SNRS_DB), help="comma list of SNRs (dB)")
    parser.add_argument("--images", default=None, help="image folder (default: the shipped test split)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))  # process-wide, owned by this script
    rows = eval_awgn(
        args.codecs.split(","), images=args.images, snrs_db=[float(s) for s in args.snr.split(",")], seed=args.seed
    )
    print(format_table(rows))  # noqa: T201  (script entry point)
    return 0


if __name__ == "__main__":
    import sys

    try:
        sys.exit(_main())
    except ModelError as exc:
        print(exc, file=sys.stderr)  # noqa: T201
        sys.exit(2)
