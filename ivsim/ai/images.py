"""Image folders, crops, tiling and whole-frame quality metrics.

Images are ``float32`` tensors in ``0..1``, channels first:

* one image ``[3, H, W]``, a batch ``[B, 3, H, W]``;
* :func:`tile` cuts a batch into ``T`` patches per image, ``[B*T, 3, p, p]``
  (image-major: the patches of image 0 come first, row by row), padding the
  bottom and right edges by reflection when ``H`` or ``W`` is not a multiple of
  ``p``; :func:`untile` puts them back and crops the padding off, so codecs that
  work on patches still transmit and are scored on whole frames.

PSNR and SSIM come from :mod:`torchmetrics` (``data_range=1``, SSIM with an
11x11 Gaussian window of sigma 1.5), one value per image.

The repository ships a small folder of real road frames in ``data/images``
(MIT, (c) Udacity, Inc.; see its README); :data:`DEFAULT_IMAGES` points there.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ivsim.errors import ModelError

__all__ = [
    "DEFAULT_IMAGES",
    "IMAGE_SUFFIXES",
    "ImageFolder",
    "load_image",
    "psnr",
    "ssim",
    "tile",
    "tile_grid",
    "to_pil",
    "untile",
]

log = logging.getLogger(__name__)

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "data" / "images"
"""The shipped frames (48 frames of 320x180 from two dash-cam clips)."""

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
"""File suffixes (lower case) that :class:`ImageFolder` reads."""


def load_image(path: str | Path, *, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Read one PNG or JPEG file as an RGB tensor.

    Parameters
    ----------
    path
        The image file.
    size
        ``(height, width)`` to resize to (centre-cropped to that aspect ratio
        first, then bicubic); ``None`` keeps the file's size.

    Returns
    -------
    torch.Tensor
        ``[3, H, W]`` float32 in ``0..1``.

    Raises
    ------
    ModelError
        The file is missing or is not an image Pillow can read.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None and (im.height, im.width) != tuple(size):
                im = _fit(im, size)
            arr = np.asarray(im, dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        msg = f"{path}: not a readable image ({exc.__class__.__name__}: {exc})"
        raise ModelError(msg) from None
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


def _fit(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    h, w = size
    scale = max(h / im.height, w / im.width)
    ch, cw = round(h / scale), round(w / scale)
    top, left = (im.height - ch) // 2, (im.width - cw) // 2
    return im.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.BICUBIC)


def to_pil(image: torch.Tensor) -> Image.Image:
    """Return a ``[3, H, W]`` tensor in ``0..1`` as an 8-bit RGB Pillow image."""
    arr = (image.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, mode="RGB")


class ImageFolder:
    """The images of one folder, as whole frames or random training crops.

    Parameters
    ----------
    root
        A folder of PNG/JPEG files (not searched recursively). If it holds a
        ``MANIFEST.csv`` with ``file`` and ``split`` columns, ``split`` selects
        rows by that column.
    split
        ``"train"``, ``"test"`` or ``None`` (every image).
    size
        ``(height, width)`` every image is resized to (see :func:`load_image`);
        ``None`` keeps file sizes, and :meth:`frames` then needs them equal.

    Raises
    ------
    ModelError
        The folder is missing, holds no readable image, or a manifest split is
        asked for that the folder does not have.

    Examples
    --------
    >>> from ivsim.ai.images import DEFAULT_IMAGES, ImageFolder
    >>> test = ImageFolder(DEFAULT_IMAGES, split="test")
    >>> test.frames().shape
    torch.Size([8, 3, 180, 320])
    """

    def __init__(
        self, root: str | Path, *, split: str | None = None, size: tuple[int, int] | None = None
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.size = tuple(size) if size is not None else None
        if not self.root.is_dir():
            msg = f"{self.root}: image folder not found"
            raise ModelError(msg)
        files = sorted(p for p in self.root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if split is not None:
            files = self._select_split(files, split)
        names, images, bad = [], [], []
        for p in files:
            try:
                images.append(load_image(p, size=self.size))
                names.append(p.name)
            except ModelError:
                bad.append(p.name)
        if bad:
            log.warning("%s: skipped %d unreadable image(s): %s", self.root, len(bad), ", ".join(bad[:5]))
        if not images:
            what = f" in split {split!r}" if split is not None else ""
            msg = f"{self.root}: no readable images{what} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
            raise ModelError(msg)
        self.names = names
        self._images = images

    def _select_split(self, files: list[Path], split: str) -> list[Path]:
        manifest = self.root / "MANIFEST.csv"
        if not manifest.is_file():
            msg = f"{self.root}: split {split!r} asked for but the folder has no MANIFEST.csv"
            raise ModelError(msg)
        with manifest.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or "split" not in rows[0] or "file" not in rows[0]:
            msg = f"{manifest}: needs 'file' and 'split' columns to select split {split!r}"
            raise ModelError(msg)
        wanted = {r["file"] for r in rows if r["split"] == split}
        return [p for p in files if p.name in wanted]

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> torch.Tensor:
        """Return image ``index`` as ``[3, H, W]``."""
        return self._images[index]

    def frames(self, indices: Sequence[int] | None = None) -> torch.Tensor:
        """Return whole frames stacked as ``[N, 3, H, W]``.

        Raises
        ------
        ModelError
            The selected images differ in size (pass ``size=`` to the folder).
        """
        chosen = [self._images[i] for i in (range(len(self)) if indices is None else indices)]
        shapes = {tuple(t.shape) for t in chosen}
        if len(shapes) > 1:
            msg = f"{self.root}: images differ in size {sorted(shapes)[:3]}; give the folder a size=(height, width)"
            raise ModelError(msg)
        return torch.stack(chosen)

    def random_crops(self, n: int, crop: int, *, generator: torch.Generator) -> torch.Tensor:
        """Draw ``n`` random ``crop x crop`` patches (random image, position and horizontal flip).

        Parameters
        ----------
        n
            Number of patches.
        crop
            Patch side in pixels; at most the smallest image side.
        generator
            The only source of randomness: the same generator state gives the
            same patches.

        Returns
        -------
        torch.Tensor
            ``[n, 3, crop, crop]``.
        """
        min_side = min(min(t.shape[1:]) for t in self._images)
        if crop > min_side:
            msg = f"{self.root}: crop {crop} is larger than the smallest image side {min_side}"
            raise ModelError(msg)
        idx = torch.randint(len(self), (n,), generator=generator)
        u = torch.rand((n, 3), generator=generator)
        out = torch.empty((n, 3, crop, crop))
        for j in range(n):
            img = self._images[int(idx[j])]
            top = int(u[j, 0] * (img.shape[1] - crop + 1))
            left = int(u[j, 1] * (img.shape[2] - crop + 1))
            patch = img[:, top : top + crop, left : left + crop]
            out[j] = patch.flip(-1) if u[j, 2] < 0.5 else patch
        return out


def tile_grid(height: int, width: int, patch: int) -> tuple[int, int]:
    """Return the number of patch rows and columns that cover a ``height x width`` image."""
    return math.ceil(height / patch), math.ceil(width / patch)


def tile(images: torch.Tensor, patch: int) -> torch.Tensor:
    """Cut images into square patches, padding the bottom/right edges by reflection.

    Parameters
    ----------
    images
        ``[B, 3, H, W]``.
    patch
        Patch side ``p``.

    Returns
    -------
    torch.Tensor
        ``[B*T, 3, p, p]`` with ``T = ceil(H/p) * ceil(W/p)``, image-major and
        row-major inside an image.
    """
    b, c, h, w = images.shape
    rows, cols = tile_grid(h, w, patch)
    pad_h, pad_w = rows * patch - h, cols * patch - w
    if pad_h or pad_w:
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        images = torch.nn.functional.pad(images, (0, pad_w, 0, pad_h), mode=mode)
    x = images.reshape(b, c, rows, patch, cols, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b * rows * cols, c, patch, patch)


def untile(patches: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`tile`: ``[B*T, 3, p, p]`` back to ``[B, 3, height, width]``."""
    n, c, p, _ = patches.shape
    rows, cols = tile_grid(height, width, p)
    if n % (rows * cols):
        msg = f"{n} patches of {p}x{p} do not make whole {height}x{width} images ({rows * cols} per image)"
        raise ModelError(msg)
    b = n // (rows * cols)
    x = patches.reshape(b, rows, cols, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, rows * p, cols * p)
    return x[:, :, :height, :width]


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB (data range 1).

    Parameters
    ----------
    pred, target
        ``[B, 3, H, W]`` in ``0..1``; ``pred`` is clamped to ``0..1``.

    Returns
    -------
    torch.Tensor
        ``[B]`` float32; ``inf`` for identical images.
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio

    pred = pred.detach().float().clamp(0, 1)
    return peak_signal_noise_ratio(pred, target.float(), data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity per image (Gaussian window 11, sigma 1.5, data range 1).

    Parameters
    ----------
    pred, target
        ``[B, 3, H, W]`` in ``0..1``; ``pred`` is clamped to ``0..1``.

    Returns
    -------
    torch.Tensor
        ``[B]`` float32, 1 for identical images.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    pred = pred.detach().float().clamp(0, 1)
    return structural_similarity_index_measure(pred, target.float(), data_range=1.0, reduction="none")
