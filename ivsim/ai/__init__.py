"""The neural side of the link: semantic codecs, images, weights and training recipes.

Torch lives here and in :mod:`ivsim.phy` only (architecture rule 8). Modules:

``codecs``
    :class:`~ivsim.ai.codecs.SemanticCodec`, the registry :data:`~ivsim.ai.codecs.CODECS`
    (``ctcd``, ``deepjscc``, ``digital``), :func:`~ivsim.ai.codecs.make_codec` and
    :func:`~ivsim.ai.codecs.eval_awgn`.
``images``
    image folders, crops, :func:`~ivsim.ai.images.tile` / :func:`~ivsim.ai.images.untile`,
    PSNR and SSIM.
``zoo``
    weights by name (safetensors only) with checks.
``train``
    recipes that rebuild the shipped weights (:func:`~ivsim.ai.train.train_codec`).

Names are imported on first use, so ``import ivsim.ai`` does not load torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["CODECS", "ImageFolder", "SemanticCodec", "eval_awgn", "make_codec", "train_codec"]

_LAZY = {
    "CODECS": "ivsim.ai.codecs",
    "SemanticCodec": "ivsim.ai.codecs",
    "eval_awgn": "ivsim.ai.codecs",
    "make_codec": "ivsim.ai.codecs",
    "ImageFolder": "ivsim.ai.images",
    "train_codec": "ivsim.ai.train",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    msg = f"module 'ivsim.ai' has no attribute {name!r}"
    raise AttributeError(msg)
