"""Weights by name: save and load safetensors files, with checks.

A weight file is ``models/<name>.safetensors`` (or any path). Beside the
tensors it carries string metadata written by :func:`save_weights`:

``ivsim.architecture``
    What the tensors are for, e.g. ``"codec/ctcd"``; loading into another
    architecture is refused.
``ivsim.config``
    The JSON of the constructor arguments that shape the tensors (channels,
    patch size, bandwidth ratio ...), so a model is rebuilt from its file.
``ivsim.dtype``
    ``"float16"`` or ``"float32"``: how the tensors are stored. They are cast
    to the module's dtype (float32) on load.

Only safetensors is read: pickles (``.pt``, ``.pth``, ``.bin``, ``.ckpt``)
are refused without being opened by ``torch.load``. Every problem (missing file,
garbage bytes, a pickle, a file for another architecture or shape) raises
:class:`~ivsim.errors.ModelError` naming the file.

Examples
--------
>>> import torch
>>> from ivsim.ai import zoo
>>> net = torch.nn.Linear(2, 2)
>>> path = zoo.save_weights(net.state_dict(), "/tmp/doc_linear.safetensors",
...                         architecture="demo/linear", config={"n": 2})
>>> zoo.read_config(path, architecture="demo/linear")
{'n': 2}
>>> zoo.load_into(net, path, architecture="demo/linear")
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ivsim.errors import ModelError

__all__ = [
    "MODELS_DIR",
    "load_into",
    "load_weights",
    "read_config",
    "read_metadata",
    "resolve",
    "save_weights",
]

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
"""The repository's folder of shipped weights and model cards."""

_PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle"})
_ARCH = "ivsim.architecture"
_CONFIG = "ivsim.config"
_DTYPE = "ivsim.dtype"


def resolve(name_or_path: str | Path, *, models_dir: str | Path | None = None) -> Path:
    """Turn a weight name into a path.

    Parameters
    ----------
    name_or_path
        A bare name such as ``"codec_ctcd"`` (looked up as
        ``<models_dir>/codec_ctcd.safetensors``) or a path (anything with a
        suffix or a folder part).
    models_dir
        Where bare names are looked up; default :data:`MODELS_DIR`.

    Returns
    -------
    Path
        The file path (not checked for existence).
    """
    p = Path(name_or_path)
    if p.suffix or len(p.parts) > 1:
        return p
    return Path(models_dir if models_dir is not None else MODELS_DIR) / f"{p.name}.safetensors"


def save_weights(
    state: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    architecture: str,
    config: Mapping[str, Any],
    dtype: torch.dtype | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write tensors to a safetensors file with ivsim metadata (atomically).

    Parameters
    ----------
    state
        Tensor name to tensor, e.g. ``module.state_dict()``.
    path
        Destination (a bare name is resolved with :func:`resolve`).
    architecture
        Recorded as ``ivsim.architecture`` and checked on load.
    config
        JSON-serialisable constructor arguments, recorded as ``ivsim.config``.
    dtype
        Cast floating tensors to this dtype (e.g. ``torch.float16``); ``None``
        keeps them.
    metadata
        Extra string metadata (training command, steps ...).

    Returns
    -------
    Path
        The file written.
    """
    from safetensors.torch import save_file

    path = resolve(path)
    tensors = {}
    for key, t in state.items():
        t = t.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[key] = t.contiguous()
    stored = next((t.dtype for t in tensors.values() if t.is_floating_point()), torch.float32)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta.update({_ARCH: architecture, _CONFIG: json.dumps(dict(config), sort_keys=True), _DTYPE: str(stored)[6:]})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)
    except OSError as exc:
        if tmp.is_file():
            tmp.unlink()
        msg = f"{path}: cannot write weights ({exc.strerror or exc})"
        raise ModelError(msg) from None
    return path


def _check_file(path: Path) -> None:
    if not path.is_file():
        hint = f" (shipped names: {', '.join(sorted(p.stem for p in path.parent.glob('*.safetensors')))})"
        msg = f"{path}: weights file not found" + (hint if path.parent.is_dir() else "")
        raise ModelError(msg)
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        msg = (
            f"{path}: not a safetensors file ('{path.suffix}' is a pickle format, which ivsim never loads); "
            "convert it with safetensors.torch.save_file"
        )
        raise ModelError(msg)


def read_metadata(path: str | Path) -> dict[str, str]:
    """Return a weight file's string metadata, checking it is a readable safetensors file.

    Raises
    ------
    ModelError
        Missing file, a pickle, or bytes that are not a safetensors file.
    """
    from safetensors import safe_open

    path = resolve(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # noqa: BLE001  (safetensors raises several types for bad bytes)
        msg = f"{path}: not a valid safetensors file ({exc.__class__.__name__}: {exc})"
        raise ModelError(msg) from None


def read_config(path: str | Path, *, architecture: str) -> dict[str, Any]:
    """Return the constructor config stored in a weight file made for ``architecture``.

    Raises
    ------
    ModelError
        The file is unreadable, has no ivsim metadata, or is for another architecture.
    """
    path = resolve(path)
    meta = read_metadata(path)
    found = meta.get(_ARCH)
    if found is None:
        msg = f"{path}: no '{_ARCH}' metadata: not an ivsim weight file for {architecture!r}"
        raise ModelError(msg)
    if found != architecture:
        msg = f"{path}: weights are for architecture {found!r}, not {architecture!r}"
        raise ModelError(msg)
    try:
        return json.loads(meta.get(_CONFIG, "{}"))
    except json.JSONDecodeError as exc:
        msg = f"{path}: corrupt '{_CONFIG}' metadata ({exc})"
        raise ModelError(msg) from None


def load_weights(
    path: str | Path, *, architecture: str, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read the tensors and config of a weight file made for ``architecture``.

    Returns
    -------
    tuple of dict
        ``(tensors, config)``; tensors keep their stored dtype.

    Raises
    ------
    ModelError
        See :func:`read_config`; also a file whose tensor data is truncated.
    """
    from safetensors.torch import load_file

    path = resolve(path)
    config = read_config(path, architecture=architecture)
    try:
        tensors = load_file(str(path), device=str(device))
    except Exception as exc:  # noqa: BLE001
        msg = f"{path}: corrupt safetensors data ({exc.__class__.__name__}: {exc})"
        raise ModelError(msg) from None
    return tensors, config


def load_into(module: torch.nn.Module, path: str | Path, *, architecture: str) -> None:
    """Load a weight file into ``module`` after checking names and shapes.

    Parameters
    ----------
    module
        The model; its parameters keep their dtype and device (stored fp16
        tensors are cast up).
    path
        A weight name or path.
    architecture
        What the file must have been written for.

    Raises
    ------
    ModelError
        Unreadable file, other architecture, or tensors whose names or shapes
        differ from the module's (e.g. another bandwidth ratio).
    """
    path = resolve(path)
    tensors, _ = load_weights(path, architecture=architecture)
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    bad = [
        f"{k} {tuple(tensors[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(tensors))
        if tensors[k].shape != own[k].shape
    ]
    if missing or extra or bad:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s) e.g. {missing[0]}")
        if extra:
            parts.append(f"unexpected {len(extra)} tensor(s) e.g. {extra[0]}")
        if bad:
            parts.append(f"shape mismatch {bad[0]}")
        msg = f"{path}: weights do not fit {architecture!r}: " + "; ".join(parts)
        raise ModelError(msg)
    with torch.no_grad():
        for k, t in own.items():
            t.copy_(tensors[k].to(dtype=t.dtype, device=t.device))
