"""Refinement of a diffusion channel estimator for a new scene: LoRA fine-tuning and adapters.

The cloud refines a vehicle's estimator for a target scene in two real
computations: the large model (:class:`ivsim.ai.large_model.LargeModel`) generates
``N`` channels of the scene, and :func:`lora_finetune` trains a LoRA adapter
(peft ``LoraConfig`` injected into the estimator's UNet) on them for ``K`` steps
with the estimator's own denoising loss (:func:`ivsim.ai.estimator_train.ddpm_loss`).
The :class:`Adapter` is what travels back to the vehicle: a safetensors blob of the
LoRA matrices in float16 whose real size in bytes is the download;
:func:`apply_adapter` merges it into a copy of the base estimator.

An adapter names the base weights it was trained on (:func:`weights_id`, a hash of
the weight file) and refuses to load onto other weights.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ivsim.errors import ModelError

__all__ = [
    "LORA_TARGETS",
    "Adapter",
    "adapter_id_for",
    "apply_adapter",
    "lora_finetune",
    "weights_id",
]

LORA_TARGETS = (
    "conv_in",
    "conv1",
    "conv2",
    "conv_shortcut",
    "conv",
    "conv_out",
    "time_emb_proj",
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
)
"""UNet modules that get LoRA matrices: every convolution and linear map."""
_ARCH = "adapter/lora_diffusion"


def weights_id(path: str | Path) -> str:
    """A short id of a weight file: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def adapter_id_for(base_id: str, target_profile_hash: str, samples: int, steps: int, rank: int, seed: int) -> str:
    """The cache key of a refinement: what it was made from, as 12 hex digits."""
    key = json.dumps([base_id, target_profile_hash, int(samples), int(steps), int(rank), int(seed)])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass
class Adapter:
    """LoRA matrices for one base estimator and one target scene.

    Attributes
    ----------
    tensors
        peft state dict (``...lora_A.weight`` / ``...lora_B.weight``), float32.
    metadata
        ``ivsim.base_id``, ``ivsim.target_scene``, ``ivsim.target_profile_hash``,
        ``ivsim.samples``, ``ivsim.steps``, ``ivsim.rank``, ``ivsim.alpha``,
        ``ivsim.adapter_id``, ``ivsim.data`` (``generated`` or ``real``).
    """

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def adapter_id(self) -> str:
        """The cache key (see :func:`adapter_id_for`)."""
        return self.metadata.get("ivsim.adapter_id", "")

    @property
    def rank(self) -> int:
        """LoRA rank."""
        return int(self.metadata["ivsim.rank"])

    def to_bytes(self) -> bytes:
        """The safetensors blob sent to the vehicle (float16 matrices plus metadata)."""
        from safetensors.torch import save

        half = {k: v.detach().to(torch.float16).contiguous() for k, v in self.tensors.items()}
        return save(half, metadata={"ivsim.architecture": _ARCH, **self.metadata})

    @property
    def num_bytes(self) -> int:
        """Size of :meth:`to_bytes`."""
        return len(self.to_bytes())

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_bytes` to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Adapter:
        """Read an adapter file; a file that is not one raises :class:`ModelError` naming it."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            msg = f"{path}: adapter file not found"
            raise ModelError(msg)
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                tensors = {k: f.get_tensor(k).to(torch.float32) for k in f.keys()}  # noqa: SIM118
        except Exception as exc:  # noqa: BLE001
            msg = f"{path}: not a safetensors adapter ({exc.__class__.__name__})"
            raise ModelError(msg) from None
        if meta.pop("ivsim.architecture", None) != _ARCH:
            msg = f"{path}: not a LoRA adapter of a diffusion estimator (ivsim.architecture is not {_ARCH})"
            raise ModelError(msg)
        return cls(tensors=tensors, metadata=meta)


def _lora_config(rank: int, alpha: float) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=int(rank), lora_alpha=float(alpha), lora_dropout=0.0, target_modules=list(LORA_TARGETS))


def _merge(model: torch.nn.Module) -> None:
    from peft.tuners.lora import LoraLayer

    for m in model.modules():
        if isinstance(m, LoraLayer):
            m.merge()


def lora_finetune(
    estimator: Any,
    channels: torch.Tensor,
    *,
    steps: int,
    rank: int = 8,
    alpha: float | None = None,
    lr: float = 3e-3,
    batch_size: int = 32,
    snr_range_db: tuple[float, float] = (-5.0, 25.0),
    generator: torch.Generator,
    metadata: Mapping[str, str] | None = None,
    device: str | torch.device = "cpu",
) -> Adapter:
    """Train a LoRA adapter of a diffusion estimator on ``channels``.

    Parameters
    ----------
    estimator
        A :class:`~ivsim.ai.estimators.DiffusionChannelEstimator`; left unchanged
        (the adapter is trained on a copy of its network).
    channels
        ``[N, n_rx, n_sym, n_sc]`` complex training channels (generated or real).
    steps
        Optimizer steps ``K``.
    rank, alpha
        LoRA rank and scaling (``alpha`` defaults to ``rank``).
    lr
        Peak Adam learning rate (10 warm-up steps, then a cosine decay to 10 %; 3e-3: on the
        shipped large model's channels 1e-3 gains less and 1e-2 wrecks the estimator by K = 1,000,
        ``docs/refine/data_probe.md``).
    batch_size
        Channels per step (drawn with replacement from ``channels``).
    snr_range_db
        SNRs of the training items.
    generator
        Draws batches, data, noise, SNRs and timesteps (CPU generator).
    metadata
        Extra metadata of the adapter (target scene, ids ...).
    device
        Where to train. On the CPU every draw comes from ``generator``; on another
        device from a generator there, seeded by one draw of ``generator``.

    Returns
    -------
    Adapter
    """
    from diffusers import DDPMScheduler
    from peft import get_peft_model_state_dict, inject_adapter_in_model

    from ivsim.ai.estimator_train import ddpm_loss
    from ivsim.phy import LSEstimator, OfdmMapper

    if steps < 1:
        msg = f"steps must be >= 1, got {steps}"
        raise ValueError(msg)
    alpha = float(alpha) if alpha is not None else float(rank)
    dev = torch.device(device)
    net = copy.deepcopy(estimator.net).to("cpu").train()
    for p in net.parameters():
        p.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):  # the adapter is initialised on the CPU on any device
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        inject_adapter_in_model(_lora_config(rank, alpha), net.unet)
    net = net.to(dev)
    params = [p for n, p in net.named_parameters() if "lora_" in n]
    gen = generator
    if dev.type != "cpu":
        gen = torch.Generator(device=dev).manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
    opt = torch.optim.Adam(params, lr=lr)
    cfg = net.config
    sched = DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
        clip_sample=False,
    )
    grid = estimator.grid
    mapper, ls = OfdmMapper(grid, device=dev), LSEstimator(grid, device=dev)
    h_all = channels.to(dev)
    n = h_all.shape[0]
    for step in range(int(steps)):
        warm = min(1.0, (step + 1) / 10)
        decay = 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * step / max(1, int(steps))))
        for g in opt.param_groups:
            g["lr"] = lr * warm * decay
        h = h_all[torch.randint(0, n, (batch_size,), generator=gen, device=dev)]
        loss = ddpm_loss(net, sched, h, snr_range_db, mapper, ls, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    state = {k: v.detach().to("cpu").clone() for k, v in get_peft_model_state_dict(net.unet).items()}
    meta = {
        "ivsim.base_id": weights_id(estimator.path) if estimator.path is not None else "untrained",
        "ivsim.steps": str(int(steps)),
        "ivsim.samples": str(int(n)),
        "ivsim.rank": str(int(rank)),
        "ivsim.alpha": str(alpha),
        "ivsim.final_loss": f"{float(loss.detach()):.5f}",
        **(dict(metadata) if metadata else {}),
    }
    return Adapter(tensors=state, metadata=meta)


def apply_adapter(estimator: Any, adapter: Adapter, *, check_base: bool = True) -> Any:
    """A copy of ``estimator`` with ``adapter`` merged into its weights.

    Raises
    ------
    ModelError
        The adapter was trained on other base weights, or its tensors do not fit.
    """
    from peft import inject_adapter_in_model, set_peft_model_state_dict

    base = weights_id(estimator.path) if estimator.path is not None else "untrained"
    want = adapter.metadata.get("ivsim.base_id")
    if check_base and want != base:
        msg = (
            f"adapter {adapter.adapter_id or '?'} was trained on base weights {want}, "
            f"not on {estimator.path} ({base})"
        )
        raise ModelError(msg)
    out = copy.copy(estimator)
    net = copy.deepcopy(estimator.net).to("cpu")
    alpha = float(adapter.metadata.get("ivsim.alpha", adapter.rank))
    inject_adapter_in_model(_lora_config(adapter.rank, alpha), net.unet)
    try:
        res = set_peft_model_state_dict(net.unet, adapter.tensors)
    except RuntimeError as exc:
        msg = f"adapter {adapter.adapter_id or '?'} does not fit the estimator's network ({str(exc)[:200]})"
        raise ModelError(msg) from None
    unexpected = list(getattr(res, "unexpected_keys", []) or [])
    if unexpected:
        msg = f"adapter {adapter.adapter_id or '?'} has tensors the estimator lacks: {unexpected[:3]}"
        raise ModelError(msg)
    _merge(net.unet)
    out.net = net.to(estimator.device).eval()
    out.scene = adapter.metadata.get("ivsim.target_scene", estimator.scene)
    out.adapter = adapter
    return out
