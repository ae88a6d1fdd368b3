"""Training recipe and evaluation of the diffusion channel estimator.

:func:`train_estimator` rebuilds ``models/estimator_<scene>.safetensors`` from
Sionna channels of the scene's profile; :func:`eval_estimators` measures NMSE vs
SNR of ``ls``, ``lmmse`` and ``diffusion`` on a scene's test channels (and on
mismatched scenes), the numbers of the model cards.

Data: a pool of ``pool_size`` channel realizations ``[pool, n_rx, n_sym, n_sc]``
drawn by :class:`ivsim.phy.ChannelSampler` at uniform speeds in
``speed_range_mps``; every ``pool_refresh_steps`` steps the oldest
``pool_refresh_size`` are replaced by fresh ones (Sionna system-level sampling is
~800 realizations/s, far cheaper than drawing a batch per step would be
per-sample useful). Each step draws a batch from the pool, random QPSK data, a
uniform SNR in ``snr_range_db`` per item, passes the grid through
:func:`ivsim.phy.apply_channel`, estimates LS with :class:`ivsim.phy.LSEstimator`,
and minimises the DDPM loss (x0-prediction MSE over the real grid, padding
excluded) at uniform timesteps, with Adam and a cosine learning rate.

Checkpoints (``<out_dir>/checkpoints/estimator_<scene>.ckpt.safetensors`` with
model, optimizer moments and generator state, plus a ``.json`` with step and
settings) are written every ``checkpoint_every`` steps; ``resume=True`` continues
from one (the channel pool is redrawn from the restored generator, so a resumed
run is statistically, not bitwise, the same as an uninterrupted one).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ivsim.ai import zoo
from ivsim.ai.estimators import (
    DIFFUSION_ARCHITECTURE,
    CovarianceCache,
    DiffusionChannelEstimator,
    DiffusionConfig,
    LMMSEChannelEstimator,
    LSChannelEstimator,
    Profile,
    condition,
    estimator_weights_path,
    to_planes,
)
from ivsim.config.schema import profile_hash
from ivsim.errors import ModelError
from ivsim.phy import ChannelSampler, GridSpec, LSEstimator, OfdmMapper, apply_channel, nmse_db

__all__ = [
    "StepLog",
    "ddpm_loss",
    "eval_estimators",
    "load_checkpoint",
    "received_qpsk",
    "save_checkpoint",
    "train_estimator",
    "training_progress",
    "warmup_cosine_lr",
]

logger = logging.getLogger(__name__)

ERR_SNR_DB = tuple(float(s) for s in range(-10, 35, 5))
"""SNRs of the stored error-variance table."""


def _qpsk(batch: int, n: int, generator: torch.Generator) -> torch.Tensor:
    bits = torch.randint(0, 2, (2, batch, n), generator=generator, device=generator.device).to(torch.float32)
    return torch.complex(1 - 2 * bits[0], 1 - 2 * bits[1]) / math.sqrt(2.0)


def received_qpsk(
    h: torch.Tensor, snr_db: torch.Tensor | float, mapper: OfdmMapper, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, no)`` of random QPSK data through ``h [B, n_rx, n_sym, n_sc]`` at ``snr_db``."""
    x = mapper.map(_qpsk(h.shape[0], mapper.grid.num_data_symbols, generator))
    return apply_channel(x, h, snr_db, generator=generator)


def ddpm_loss(
    net: torch.nn.Module,
    sched: Any,
    h: torch.Tensor,
    snr_range_db: tuple[float, float],
    mapper: OfdmMapper,
    ls: LSEstimator,
    gen: torch.Generator,
) -> torch.Tensor:
    """The denoising loss of one batch of channels ``h [B, n_rx, n_sym, n_sc]`` (see the module docstring).

    Each item gets a uniform SNR in ``snr_range_db``, random QPSK data through ``h``,
    the LS estimate as condition and a uniform DDPM timestep; the loss is the MSE of
    the prediction over the real grid (padding excluded). ``net`` is a
    :class:`~ivsim.ai.estimators.DiffusionNet` (or one wrapped by LoRA).
    """
    cfg = net.config
    padded = cfg.padded_shape
    b = h.shape[0]
    lo, hi = snr_range_db
    snr = lo + (hi - lo) * torch.rand(b, generator=gen, device=gen.device)
    y, no = received_qpsk(h, snr, mapper, gen)
    h_ls, _ = ls(y, no)
    x0 = to_planes(h, padded)
    cond = condition(h_ls, no, padded)
    noise = torch.randn(x0.shape, generator=gen, device=gen.device)
    t = torch.randint(0, cfg.num_train_timesteps, (b,), generator=gen, device=gen.device)
    x_t = sched.add_noise(x0, noise, t)
    pred = net(x_t, t, cond)
    target = x0 if cfg.prediction_type == "sample" else noise
    return (pred - target)[..., : cfg.num_ofdm_symbols, : cfg.fft_size].pow(2).mean()


def warmup_cosine_lr(step: int, *, lr: float, steps: int, warm: int, floor: float = 0.05) -> float:
    """Learning rate at ``step``: linear warm-up over ``warm`` steps, then cosine decay to ``floor * lr``."""
    if step < warm:
        return lr * (step + 1) / warm
    frac = (step - warm) / max(1, steps - warm)
    return lr * (floor + (1.0 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def training_progress(label: str, *, steps: int, done: int, metric: str, fmt: str) -> tuple[Any, Any]:
    """A started rich progress bar ``label  done/steps metric value  elapsed  remaining``; returns ``(bar, task)``."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn(label),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} " + metric + " {task.fields[loss]:" + fmt + "}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    bar.start()
    return bar, bar.add_task("train", total=steps, completed=done, loss=float("nan"))


class StepLog:
    """Per-step bookkeeping of a training loop: the loss log, the progress bar, checkpoints and the time budget.

    After each optimizer step, :meth:`after` appends the loss to a window whose mean
    goes to ``state["losses"]`` (and the log) every ``log_every`` steps, advances the
    bar, calls ``save(state)`` every ``checkpoint_every`` steps (``state`` carries
    ``step`` and ``elapsed_s``), and says whether ``time_budget_s`` is spent (after a
    last log entry and checkpoint).
    """

    def __init__(
        self,
        state: dict[str, Any],
        save: Any,
        *,
        steps: int,
        t0: float,
        log_every: int,
        checkpoint_every: int,
        time_budget_s: float | None,
        bar: Any = None,
        task: Any = None,
        log_format: str = "step %d loss %.5f (%.0f s)",
    ) -> None:
        self.state, self.save, self.steps, self.t0 = state, save, steps, t0
        self.log_every, self.checkpoint_every, self.time_budget_s = log_every, checkpoint_every, time_budget_s
        self.bar, self.task, self.log_format = bar, task, log_format
        self.window: list[float] = []

    def after(self, step: int, loss: float) -> bool:
        """Book step ``step`` (1-based count of steps done) with its ``loss``; return True to stop (time budget)."""
        self.window.append(loss)
        elapsed = time.perf_counter() - self.t0
        over = self.time_budget_s is not None and elapsed >= self.time_budget_s
        if len(self.window) == self.log_every or step == self.steps or over:
            self.state["losses"].append(sum(self.window) / len(self.window))
            logger.info(self.log_format, step, self.state["losses"][-1], elapsed)
            self.window = []
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=loss)
        if step % self.checkpoint_every == 0 or step == self.steps or over:
            self.state.update(step=step, elapsed_s=time.perf_counter() - self.t0)
            self.save(self.state)
        if over:
            logger.info("time budget reached at step %d", step)
        return over


def _ckpt_paths(out_dir: Path, stem: str) -> tuple[Path, Path]:
    d = out_dir / "checkpoints"
    return d / f"{stem}.ckpt.safetensors", d / f"{stem}.ckpt.json"


def save_checkpoint(
    out_dir: Path,
    stem: str,
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    state: dict[str, Any],
) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous() for k, v in net.state_dict().items()}
    names = {id(p): n for n, p in net.named_parameters()}
    for p, st in opt.state.items():
        n = names[id(p)]
        for k, v in st.items():
            t = v if isinstance(v, torch.Tensor) else torch.tensor(v)
            tensors[f"opt.{n}.{k}"] = t.detach().reshape(t.shape).contiguous()
    tensors["rng.generator"] = gen.get_state()
    path, jpath = _ckpt_paths(out_dir, stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)
    jpath.write_text(json.dumps(state, indent=2, sort_keys=True))


def load_checkpoint(
    out_dir: Path, stem: str, net: torch.nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator
) -> dict[str, Any] | None:
    from safetensors.torch import load_file

    path, jpath = _ckpt_paths(out_dir, stem)
    if not path.is_file() or not jpath.is_file():
        return None
    try:
        tensors = load_file(str(path))
        state = json.loads(jpath.read_text())
    except Exception as exc:  # noqa: BLE001
        msg = f"{path}: unreadable checkpoint ({exc.__class__.__name__}: {exc})"
        raise ModelError(msg) from None
    own = net.state_dict()
    try:
        net.load_state_dict({k: tensors[f"model.{k}"] for k in own})
    except (KeyError, RuntimeError) as exc:
        msg = f"{path}: checkpoint does not fit this model ({exc})"
        raise ModelError(msg) from None
    params = dict(net.named_parameters())
    for n, p in params.items():
        prefix = f"opt.{n}."
        st = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix) and "." not in k[len(prefix) :]}
        if st:
            opt.state[p] = {k: (v if k != "step" else v.to(torch.float32)) for k, v in st.items()}
    gen.set_state(tensors["rng.generator"])
    return state


@torch.no_grad()
def _err_table(
    est: DiffusionChannelEstimator,
    sampler: ChannelSampler,
    mapper: OfdmMapper,
    *,
    n: int,
    speed_range_mps: tuple[float, float],
    generator: torch.Generator,
) -> tuple[torch.Tensor, dict[float, float]]:
    """MSE per resource element at :data:`ERR_SNR_DB` on fresh channels; also NMSE in dB per SNR."""
    mse, nm = [], {}
    h = sampler.sample(n, speed_mps=speed_range_mps, generator=generator)
    for snr in ERR_SNR_DB:
        y, no = received_qpsk(h, snr, mapper, generator)
        h_hat, _ = est.estimate(y, no, generator=torch.Generator(device=generator.device).manual_seed(1))
        mse.append(float((h_hat - h).abs().pow(2).mean()))
        nm[snr] = float(nmse_db(h_hat, h))
    return torch.tensor(mse, dtype=torch.float32), nm


def train_estimator(
    profile: Profile,
    scene: str,
    *,
    grid: GridSpec | None = None,
    carrier_hz: float = 3.5e9,
    steps: int = 1000,
    batch_size: int = 32,
    snr_range_db: tuple[float, float] = (-5.0, 25.0),
    speed_range_mps: tuple[float, float] = (3.0, 15.0),
    seed: int = 0,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    lr: float = 2e-3,
    config: DiffusionConfig | None = None,
    pool_size: int = 4096,
    pool_refresh_steps: int = 20,
    pool_refresh_size: int = 256,
    checkpoint_every: int = 100,
    time_budget_s: float | None = None,
    eval_n: int = 64,
    fp16: bool | None = None,
    num_threads: int | None = 1,
    log_every: int = 50,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Train the diffusion estimator of one scene and save ``estimator_<scene>.safetensors``.

    Parameters
    ----------
    profile
        The scene's channel profile.
    scene
        Scene name (file name and metadata).
    grid
        The resource grid (default :class:`ivsim.phy.GridSpec`).
    carrier_hz
        Carrier of the channels.
    steps
        Optimizer steps.
    batch_size
        Channels per step.
    snr_range_db
        SNRs drawn uniformly per item.
    speed_range_mps
        Speeds drawn uniformly per realization.
    seed
        Seed of the one ``torch.Generator`` that draws everything (channels, data,
        noise, SNRs, timesteps) and of the initialisation.
    out_dir
        Folder of the weights and ``checkpoints/``; default the repository's ``models/``.
    resume
        Continue from the checkpoint in ``out_dir`` if there is one.
    progress
        Show a rich progress bar.
    lr
        Peak Adam learning rate (50 warm-up steps, cosine decay to 5 %).
    config
        Architecture (default :meth:`DiffusionConfig.for_grid`).
    pool_size, pool_refresh_steps, pool_refresh_size
        The channel pool (see the module docstring).
    checkpoint_every
        Steps between checkpoints.
    time_budget_s
        Stop early (after a checkpoint) once this much wall time has been spent; the
        steps actually done are returned and recorded in the weights. The time of
        resumed runs counts (it is kept in the checkpoint).
    eval_n
        Held-out channels per SNR for the error-variance table and the fp16 check.
    fp16
        Store fp16 weights: ``None`` (default) decides by measurement (fp16 if the
        10 dB NMSE changes by < 0.05 dB), ``True``/``False`` forces it.
    num_threads
        torch intra-op threads during training (1 is fastest on a busy 2-core
        box); restored afterwards. ``None`` leaves the setting alone.
    log_every
        Steps per entry of ``loss_curve`` (and per log line).
    device
        Where to train (``"cuda"`` on a GPU). Every draw comes from one generator on
        that device, so a GPU run is as reproducible as a CPU one but not bitwise
        equal to it.

    Returns
    -------
    dict
        ``path``, ``steps``, ``train_time_s``, ``num_parameters``, ``weight_bytes``,
        ``dtype``, ``final_loss``, ``loss_curve`` (mean loss per ``log_every`` steps),
        ``nmse_db`` (held-out NMSE by SNR), ``fp16_delta_db``.
    """
    from diffusers import DDPMScheduler

    grid = grid if grid is not None else GridSpec()
    out = Path(out_dir) if out_dir is not None else estimator_weights_path(scene).parent
    threads_before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    try:
        cfg = config if config is not None else DiffusionConfig.for_grid(grid)
        dev = torch.device(device)
        est = DiffusionChannelEstimator(grid, weights=False, config=cfg, scene=scene, init_seed=seed, device=dev)
        net = est.net
        net.train()
        sampler = ChannelSampler(profile, grid, carrier_hz=carrier_hz, device=dev)
        mapper = OfdmMapper(grid, device=dev)
        ls = LSEstimator(grid, device=dev)
        sched = DDPMScheduler(
            num_train_timesteps=cfg.num_train_timesteps,
            beta_schedule=cfg.beta_schedule,
            prediction_type=cfg.prediction_type,
            clip_sample=False,
        )
        gen = torch.Generator(device=dev).manual_seed(seed)
        opt = torch.optim.Adam(net.parameters(), lr=lr)

        state: dict[str, Any] = {"step": 0, "elapsed_s": 0.0, "losses": []}
        if resume:
            loaded = load_checkpoint(out, f"estimator_{scene}", net, opt, gen)
            if loaded is not None:
                state = loaded
                logger.info("resuming %s from step %d", scene, state["step"])
        t_pool = time.perf_counter()
        pool = torch.cat(
            [
                sampler.sample(min(512, pool_size - i), speed_mps=speed_range_mps, generator=gen)
                for i in range(0, pool_size, 512)
            ]
        )
        logger.info("channel pool of %d drawn in %.1f s", pool_size, time.perf_counter() - t_pool)
        oldest = 0
        t0 = time.perf_counter() - float(state["elapsed_s"])
        bar = task = None
        if progress:
            bar, task = training_progress(f"estimator {scene}", steps=steps, done=state["step"], metric="loss", fmt=".4f")

        def save(st: dict[str, Any]) -> None:
            st.update(scene=scene, profile_hash=profile_hash(profile), seed=seed, steps_target=steps)
            save_checkpoint(out, f"estimator_{scene}", net, opt, gen, st)

        book = StepLog(
            state, save, steps=steps, t0=t0, log_every=log_every, checkpoint_every=checkpoint_every,
            time_budget_s=time_budget_s, bar=bar, task=task,
        )  # fmt: skip
        try:
            step = int(state["step"])
            while step < steps:
                if step > 0 and step % pool_refresh_steps == 0:
                    k = min(pool_refresh_size, pool_size)
                    idx = (torch.arange(k, device=dev) + oldest) % pool_size
                    pool[idx] = sampler.sample(k, speed_mps=speed_range_mps, generator=gen)
                    oldest = (oldest + k) % pool_size
                h = pool[torch.randint(0, pool_size, (batch_size,), generator=gen, device=dev)]
                for g in opt.param_groups:
                    g["lr"] = warmup_cosine_lr(step, lr=lr, steps=steps, warm=50)
                loss = ddpm_loss(net, sched, h, snr_range_db, mapper, ls, gen)
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
        state["step"] = step

        # Error-variance table and the fp16 decision, on held-out channels.
        net.eval()
        eval_gen = torch.Generator(device=dev).manual_seed(seed + 1_000_003)
        mse, nm = _err_table(est, sampler, mapper, n=eval_n, speed_range_mps=speed_range_mps, generator=eval_gen)
        net.err_snr_db.copy_(torch.tensor(ERR_SNR_DB))
        net.err_mse.copy_(mse)
        h = sampler.sample(eval_n, speed_mps=speed_range_mps, generator=eval_gen)
        y, no = received_qpsk(h, 10.0, mapper, eval_gen)
        ref = float(nmse_db(est.estimate(y, no, generator=torch.Generator(device=dev).manual_seed(2))[0], h))
        full = {k: v.clone() for k, v in net.state_dict().items()}
        with torch.no_grad():
            for v in net.state_dict().values():
                if v.is_floating_point():
                    v.copy_(v.half().float())
        half = float(nmse_db(est.estimate(y, no, generator=torch.Generator(device=dev).manual_seed(2))[0], h))
        net.load_state_dict(full)
        delta = half - ref
        use_half = fp16 if fp16 is not None else abs(delta) < 0.05
        meta = {
            "ivsim.scene": scene,
            "ivsim.profile_hash": profile_hash(profile),
            "ivsim.profile": json.dumps(profile.model_dump(mode="json"), sort_keys=True),
            "ivsim.carrier_hz": str(carrier_hz),
            "ivsim.speed_range_mps": json.dumps(list(speed_range_mps)),
            "ivsim.snr_range_db": json.dumps(list(snr_range_db)),
            "ivsim.train_steps": str(step),
            "ivsim.batch_size": str(batch_size),
            "ivsim.seed": str(seed),
            "ivsim.train_time_s": f"{train_time:.0f}",
        }
        path = zoo.save_weights(
            net.state_dict(),
            out / f"estimator_{scene}.safetensors",
            architecture=DIFFUSION_ARCHITECTURE,
            config=cfg.to_json(),
            dtype=torch.float16 if use_half else None,
            metadata=meta,
        )
        return {
            "path": str(path),
            "steps": step,
            "train_time_s": train_time,
            "num_parameters": est.num_parameters(),
            "weight_bytes": path.stat().st_size,
            "dtype": "float16" if use_half else "float32",
            "final_loss": state["losses"][-1] if state["losses"] else float("nan"),
            "loss_curve": list(state["losses"]),
            "nmse_db": nm,
            "fp16_delta_db": delta,
        }
    finally:
        torch.set_num_threads(threads_before)


@torch.no_grad()
def eval_estimators(
    train_scene: tuple[str, Profile, tuple[float, float]],
    *,
    test_scenes: Sequence[tuple[str, Profile, tuple[float, float]]] = (),
    weights: str | Path | None = None,
    grid: GridSpec | None = None,
    carrier_hz: float = 3.5e9,
    snr_db: Sequence[float] = (-5.0, 0.0, 10.0, 20.0),
    n: int = 256,
    seed: int = 12345,
    estimators: Sequence[str] = ("ls", "lmmse", "diffusion"),
    diffusion_params: dict[str, Any] | None = None,
    cache: CovarianceCache | None = None,
) -> list[dict[str, Any]]:
    """NMSE vs SNR of ``ls``, ``lmmse`` and ``diffusion`` on a scene's test channels.

    Parameters
    ----------
    train_scene
        ``(name, profile, speed_range_mps)`` of the scene the estimators were made for
        (LMMSE statistics, diffusion weights). Also a test scene (matched).
    test_scenes
        Further ``(name, profile, speed_range_mps)`` to test on (mismatched).
    weights
        Diffusion weights; default ``models/estimator_<train scene>.safetensors``.
    grid
        The resource grid.
    carrier_hz
        Carrier of all channels.
    snr_db
        SNRs to test.
    n
        Test channels per scene (the same channels at every SNR).
    seed
        Seed of the test channels, data and noise (distinct from training seeds).
    estimators
        Which kinds to run.
    diffusion_params
        Extra arguments of :class:`DiffusionChannelEstimator` (``start``, ``num_inference_steps`` ...).
    cache
        Covariance cache (shared across calls to save time).

    Returns
    -------
    list of dict
        Rows ``estimator, train_scene, test_scene, snr_db, nmse_db``; for a
        mismatched test scene also ``lmmse_matched`` (LMMSE with the test scene's own
        statistics) when ``"lmmse"`` is requested.
    """
    grid = grid if grid is not None else GridSpec()
    cache = cache if cache is not None else CovarianceCache()
    name, profile, speeds = train_scene
    ests: dict[str, Any] = {}
    if "ls" in estimators:
        ests["ls"] = LSChannelEstimator(grid)
    if "lmmse" in estimators:
        ests["lmmse"] = LMMSEChannelEstimator(
            grid, profile=profile, scene=name, carrier_hz=carrier_hz, speed_range_mps=speeds, cache=cache
        )
    if "diffusion" in estimators:
        ests["diffusion"] = DiffusionChannelEstimator(
            grid, weights=weights, scene=name, profile=profile, **(diffusion_params or {})
        )
    rows: list[dict[str, Any]] = []
    mapper = OfdmMapper(grid)
    for k, (tname, tprof, tspeeds) in enumerate([train_scene, *test_scenes]):
        gen = torch.Generator().manual_seed(seed + k)
        h = ChannelSampler(tprof, grid, carrier_hz=carrier_hz).sample(n, speed_mps=tspeeds, generator=gen)
        here = dict(ests)
        if k > 0 and "lmmse" in estimators:
            here["lmmse_matched"] = LMMSEChannelEstimator(
                grid, profile=tprof, scene=tname, carrier_hz=carrier_hz, speed_range_mps=tspeeds, cache=cache
            )
        for snr in snr_db:
            y, no = received_qpsk(h, float(snr), mapper, gen)
            for ename, est in here.items():
                if ename == "diffusion":
                    h_hat, _ = est.estimate(y, no, generator=torch.Generator().manual_seed(seed))
                else:
                    h_hat, _ = est.estimate(y, no)
                rows.append(
                    {
                        "estimator": ename,
                        "train_scene": tname if ename in ("ls", "lmmse_matched") else name,
                        "test_scene": tname,
                        "snr_db": float(snr),
                        "nmse_db": float(nmse_db(h_hat, h)),
                    }
                )
    return rows
