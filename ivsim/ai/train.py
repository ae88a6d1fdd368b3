"""Training recipes that rebuild the shipped weights.

:func:`train_codec` trains a neural codec (``ctcd`` or ``deepjscc``) end to end
over an AWGN channel, the recipe behind ``models/codec_<kind>.safetensors``::

    ivsim train codec --kind ctcd            # = train_codec("ctcd", steps=1500, batch_size=32, crop=32, seed=0)

Recipe: random ``crop x crop`` patches (random frame, position and horizontal
flip) of the training split of the image folder; per patch an SNR drawn
uniformly from ``snr_range_db``; unit-power symbols plus complex Gaussian noise
of total variance ``10**(-snr/10)`` (:func:`~ivsim.ai.codecs.awgn`); MSE loss;
Adam with a cosine learning-rate decay to a tenth. Every random draw comes from
``torch.Generator`` streams derived from ``seed`` (:class:`ivsim.rng.RngStreams`):
``init`` (weights), ``data`` (crops) and ``noise`` (SNRs and noise), so the same
seed gives the same weights on the same hardware and torch build.

Checkpoints (weights, Adam moments, generator states, as safetensors, plus a
small JSON state) are written every ``checkpoint_every`` steps to
``checkpoint_dir`` (default ``runs/train/codec_<kind>/``); ``resume=True``
continues from there, giving the same weights as an uninterrupted run.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from ivsim.ai import zoo
from ivsim.ai.codecs import CODECS, DEFAULT_BANDWIDTH_RATIO, awgn
from ivsim.ai.images import DEFAULT_IMAGES, ImageFolder, psnr
from ivsim.errors import ModelError
from ivsim.rng import RngStreams

__all__ = ["TRAINABLE_CODECS", "train_codec"]

log = logging.getLogger(__name__)

TRAINABLE_CODECS = ("ctcd", "deepjscc")
FP16_SNRS_DB = (0.0, 10.0, 20.0)
_STATE_KEYS = ("kind", "batch_size", "crop", "seed", "snr_range_db", "lr", "bandwidth_ratio")


def train_codec(
    kind: str,
    *,
    steps: int = 1500,
    batch_size: int = 32,
    crop: int = 32,
    snr_range_db: tuple[float, float] = (-5.0, 20.0),
    seed: int = 0,
    out_dir: str | Path = zoo.MODELS_DIR,
    resume: bool = False,
    progress: bool = True,
    lr: float = 1e-3,
    bandwidth_ratio: float = DEFAULT_BANDWIDTH_RATIO,
    images: str | Path = DEFAULT_IMAGES,
    checkpoint_every: int = 100,
    checkpoint_dir: str | Path | None = None,
    fp16_tolerance_db: float = 0.1,
    device: str | torch.device = "cpu",
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train a neural codec over AWGN and save ``<out_dir>/codec_<kind>.safetensors``.

    Parameters
    ----------
    kind
        ``"ctcd"`` or ``"deepjscc"``.
    steps
        Optimiser steps in total (a resumed run counts the steps already done).
    batch_size
        Patches per step.
    crop
        Training patch side; it becomes the codec's ``patch``.
    snr_range_db
        ``(low, high)``: each patch's SNR is uniform in it.
    seed
        Root seed of the ``init``, ``data`` and ``noise`` generators.
    out_dir
        Where the weights go.
    resume
        Continue from the checkpoint in ``checkpoint_dir`` (start afresh, with a
        log line, if there is none).
    progress
        Show a rich progress bar.
    lr
        Adam's initial learning rate (cosine decay to ``lr/10``).
    bandwidth_ratio
        Channel uses per pixel component (1/6: 512 symbols per 32x32 patch).
    images
        Image folder; its ``MANIFEST.csv`` ``train`` split trains and ``test``
        split measures (the whole folder for both if it has no split).
    checkpoint_every
        Steps between checkpoints.
    checkpoint_dir
        Default ``runs/train/codec_<kind>``.
    fp16_tolerance_db
        Weights are stored in float16 when that changes the test PSNR at 0, 10
        and 20 dB by less than this; else float32.
    device
        Training device.
    on_step
        Called as ``on_step(step, loss)`` after each step (tests, custom logs).

    Returns
    -------
    dict
        ``kind, steps, batch_size, crop, seed, params, train_wall_s, loss,
        psnr_db`` (``{snr: dB}`` on the test frames, float32 weights),
        ``fp16_delta_db`` (largest PSNR change from float16 storage), ``dtype``,
        ``path``, ``size_bytes``.

    Raises
    ------
    ModelError
        Unknown or untrainable kind, bad sizes, image folder problems, or a
        checkpoint from a different recipe.
    """
    if kind not in TRAINABLE_CODECS:
        msg = f"cannot train codec kind {kind!r} (trainable: {', '.join(TRAINABLE_CODECS)})"
        raise ModelError(msg)
    if steps < 1 or batch_size < 1 or checkpoint_every < 1:
        msg = f"steps ({steps}), batch size ({batch_size}) and checkpoint_every ({checkpoint_every}) must be >= 1"
        raise ModelError(msg)
    lo, hi = (float(v) for v in snr_range_db)
    device = torch.device(device)
    train_set, test_set = _datasets(Path(images))
    streams = RngStreams(seed)
    g_init = torch.Generator().manual_seed(streams.int_seed(f"train/codec/{kind}/init"))
    g_data = torch.Generator().manual_seed(streams.int_seed(f"train/codec/{kind}/data"))
    g_noise = torch.Generator(device=device).manual_seed(streams.int_seed(f"train/codec/{kind}/noise"))
    codec = CODECS[kind](weights=None, patch=crop, bandwidth_ratio=bandwidth_ratio, generator=g_init, device=device)
    net = codec.net.train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)

    recipe = {
        "kind": kind, "batch_size": batch_size, "crop": crop, "seed": seed, "snr_range_db": [lo, hi], "lr": lr,
        "bandwidth_ratio": bandwidth_ratio, "steps": steps, "images": _shown(Path(images)),
    }  # fmt: skip
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else Path("runs") / "train" / f"codec_{kind}"
    start, wall_s, loss_ema = 0, 0.0, float("nan")
    if resume:
        restored = _load_checkpoint(ckpt_dir, kind, recipe, net, opt, g_data, g_noise)
        if restored is None:
            log.warning("no checkpoint in %s: training codec %s from scratch", ckpt_dir, kind)
        else:
            start, wall_s, loss_ema = restored
            log.info("resuming codec %s at step %d of %d", kind, start, steps)

    bar_cm = _progress_bar(progress)
    with bar_cm as bar:
        task = bar.add_task(f"train {kind}", total=steps, completed=start, loss=loss_ema) if bar else None
        t0 = time.perf_counter()
        for step in range(start, steps):
            for group in opt.param_groups:
                group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * step / steps)))
            x = train_set.random_crops(batch_size, crop, generator=g_data).to(device)
            snr = lo + (hi - lo) * torch.rand(batch_size, generator=g_noise, device=device)
            y = awgn(net.encode(x), snr, generator=g_noise)
            loss = torch.nn.functional.mse_loss(net.decode(y, snr), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = loss.detach().item()
            loss_ema = value if math.isnan(loss_ema) else 0.98 * loss_ema + 0.02 * value
            if bar:
                bar.update(task, advance=1, loss=loss_ema)
            if on_step is not None:
                on_step(step, value)
            done = step + 1
            if done % checkpoint_every == 0 or done == steps:
                now = time.perf_counter()
                wall_s, t0 = wall_s + now - t0, now
                _save_checkpoint(ckpt_dir, kind, recipe, done, wall_s, loss_ema, net, opt, g_data, g_noise)
    net.eval()

    frames = test_set.frames()
    psnr32 = _eval_psnr(codec, frames, seed=seed)
    half = copy.deepcopy(codec)
    with torch.no_grad():
        for p in half.net.parameters():
            p.copy_(p.half().float())
    psnr16 = _eval_psnr(half, frames, seed=seed)
    delta = max(abs(psnr16[s] - psnr32[s]) for s in psnr32)
    dtype = torch.float16 if delta < fp16_tolerance_db else torch.float32
    out_path = Path(out_dir) / f"codec_{kind}.safetensors"
    meta = {
        "ivsim.recipe": json.dumps(recipe, sort_keys=True),
        "ivsim.command": _command(kind, steps, batch_size, crop, seed),
        "ivsim.train_wall_s": f"{wall_s:.1f}",
        "ivsim.fp16_delta_db": f"{delta:.4f}",
    }
    codec.save(out_path, dtype=dtype, metadata=meta)
    result = {
        "kind": kind,
        "steps": steps,
        "batch_size": batch_size,
        "crop": crop,
        "seed": seed,
        "params": codec.num_parameters,
        "train_wall_s": round(wall_s, 1),
        "loss": loss_ema,
        "psnr_db": psnr32,
        "fp16_delta_db": delta,
        "dtype": str(dtype).removeprefix("torch."),
        "path": str(out_path),
        "size_bytes": out_path.stat().st_size,
    }
    log.info("trained codec %s: %s", kind, result)
    return result


def _shown(path: Path) -> str:
    """A path as recorded in weight files: relative to the repository when inside it."""
    repo = zoo.MODELS_DIR.parent
    try:
        return path.resolve().relative_to(repo).as_posix()
    except ValueError:
        return str(path)


def _command(kind: str, steps: int, batch: int, crop: int, seed: int) -> str:
    return f"ivsim train codec --kind {kind} --steps {steps} --batch {batch} --crop {crop} --seed {seed}"


def _datasets(root: Path) -> tuple[ImageFolder, ImageFolder]:
    try:
        return ImageFolder(root, split="train"), ImageFolder(root, split="test")
    except ModelError as exc:
        if "MANIFEST" not in str(exc) and "split" not in str(exc):
            raise
        log.info("%s: no train/test split; training and measuring on every image", root)
        folder = ImageFolder(root)
        return folder, folder


def _eval_psnr(codec: Any, frames: torch.Tensor, *, seed: int) -> dict[float, float]:
    h, w = frames.shape[-2:]
    out = {}
    for i, snr in enumerate(FP16_SNRS_DB):
        gen = torch.Generator().manual_seed(seed * 1009 + i)
        rx = awgn(codec.encode(frames).cpu(), snr, generator=gen)
        out[snr] = float(psnr(codec.decode(rx, snr, size=(h, w)).cpu(), frames).mean())
    return out


def _progress_bar(enabled: bool):  # noqa: ANN202
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.5f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


def _ckpt_paths(ckpt_dir: Path, kind: str) -> tuple[Path, Path]:
    return ckpt_dir / f"codec_{kind}.ckpt.safetensors", ckpt_dir / f"codec_{kind}.ckpt.json"


def _save_checkpoint(
    ckpt_dir: Path, kind: str, recipe: dict[str, Any], step: int, wall_s: float, loss_ema: float,
    net: torch.nn.Module, opt: torch.optim.Optimizer, g_data: torch.Generator, g_noise: torch.Generator,
) -> None:  # fmt: skip
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    for idx, st in opt.state_dict()["state"].items():
        for name, value in st.items():
            tensors[f"opt.{idx}.{name}"] = torch.as_tensor(value).float()
    tensors["rng.data"] = g_data.get_state()
    tensors["rng.noise"] = g_noise.get_state().cpu()
    weights, state = _ckpt_paths(ckpt_dir, kind)
    zoo.save_weights(tensors, weights, architecture=f"checkpoint/codec/{kind}", config=recipe)
    body = {**recipe, "step": step, "wall_s": wall_s, "loss_ema": loss_ema}
    tmp = state.with_name(f".{state.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True))
    tmp.replace(state)


def _load_checkpoint(
    ckpt_dir: Path, kind: str, recipe: dict[str, Any], net: torch.nn.Module, opt: torch.optim.Optimizer,
    g_data: torch.Generator, g_noise: torch.Generator,
) -> tuple[int, float, float] | None:  # fmt: skip
    weights, state = _ckpt_paths(ckpt_dir, kind)
    if not state.is_file() or not weights.is_file():
        return None
    try:
        body = json.loads(state.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        msg = f"{state}: unreadable checkpoint state ({exc})"
        raise ModelError(msg) from None
    diff = [f"{k}={body.get(k)!r} (now {recipe[k]!r})" for k in _STATE_KEYS if body.get(k) != recipe[k]]
    if diff:
        msg = f"{state}: checkpoint is from another recipe: {', '.join(diff)}; drop --resume or the checkpoint"
        raise ModelError(msg)
    if body.get("steps") != recipe["steps"]:
        log.warning("%s: checkpoint planned %s steps, now %s (the LR schedule changes)", state, body.get("steps"),
                    recipe["steps"])  # fmt: skip
    tensors, _ = zoo.load_weights(weights, architecture=f"checkpoint/codec/{kind}")
    net_state = {k.removeprefix("net."): v for k, v in tensors.items() if k.startswith("net.")}
    try:
        net.load_state_dict(net_state, strict=True)
    except RuntimeError as exc:
        msg = f"{weights}: checkpoint does not fit codec {kind!r} ({str(exc).splitlines()[0]})"
        raise ModelError(msg) from None
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = value
    full = opt.state_dict()
    full["state"] = opt_state
    opt.load_state_dict(full)
    g_data.set_state(tensors["rng.data"])
    g_noise.set_state(tensors["rng.noise"])
    return int(body["step"]), float(body.get("wall_s", 0.0)), float(body.get("loss_ema", float("nan")))
