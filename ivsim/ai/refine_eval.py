"""One refinement outside the simulation, its N x K trade-off, and its compute timings.

* :func:`refine_once` (``ivsim refine --from A --to B``): refine scene A's diffusion
  estimator for scene B with the large model and LoRA, and measure NMSE / PSNR /
  SSIM on B's channels for three estimators: ``before`` (A's estimator),
  ``after`` (refined) and ``oracle`` (an estimator trained on real B channels: B's
  shipped weights when they match B's profile, otherwise A's estimator fine-tuned
  with the same recipe on N real B channels). The budget is priced with the same
  rules the simulation's cloud uses (:mod:`ivsim.refine.service`), for one job alone
  (no queue) at a stated SINR.
* :func:`eval_refine` (``ivsim eval refine``): sweep N and K over scene pairs, with
  ``real`` (the same LoRA recipe on N real channels: how much the generated data
  costs) beside ``after``.
* :func:`bench_refine` (``ivsim bench refine``): time large-model generation per
  sample and fine-tuning per step on this machine; ``--write-profile`` stores them as
  the ``refine`` section of a latency profile.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ivsim.ai.estimator_train import received_qpsk
from ivsim.ai.estimators import DiffusionChannelEstimator, estimator_weights_path
from ivsim.ai.large_model import LargeModel, large_model_weights_path, pilot_observations
from ivsim.ai.refine import Adapter, adapter_id_for, apply_adapter, lora_finetune, weights_id
from ivsim.config.schema import Scenario, profile_hash
from ivsim.errors import IvsimError, ModelError
from ivsim.phy import ChannelSampler, GridSpec, OfdmMapper, nmse_db

__all__ = ["bench_refine", "eval_refine", "refine_once", "refine_quality"]

logger = logging.getLogger(__name__)

QUALITY_SNR_DB = (0.0, 10.0, 20.0)


def _scene(scenario: Scenario, name: str, what: str) -> tuple[Any, tuple[float, float]]:
    if name not in scenario.scenes:
        msg = f"{what}: unknown scene {name!r} (allowed: {', '.join(scenario.scenes)})"
        raise IvsimError(msg)
    sc = scenario.scenes[name]
    return scenario.profiles[sc.profile], (float(sc.speed_mps[0]), float(sc.speed_mps[1]))


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    if not lo <= int(value) <= hi:
        msg = f"{name} must be {lo}..{hi}, got {value}"
        raise IvsimError(msg)


def _base_estimator(scene: str, profile: Any, grid: GridSpec, device: torch.device) -> DiffusionChannelEstimator:
    path = estimator_weights_path(scene)
    if not path.is_file():
        msg = f"{path}: no diffusion estimator for scene {scene!r} (train it: ivsim train estimator --scene {scene})"
        raise ModelError(msg)
    return DiffusionChannelEstimator(grid, weights=path, profile=profile, device=device)


def _oracle(
    scene: str, profile: Any, grid: GridSpec, device: torch.device
) -> DiffusionChannelEstimator | None:
    """B's shipped estimator if it was trained on B's profile."""
    path = estimator_weights_path(scene)
    if not path.is_file():
        return None
    est = DiffusionChannelEstimator(grid, weights=path, profile=profile, device=device)
    return est if est.metadata.get("ivsim.profile_hash") == profile_hash(profile) else None


@torch.no_grad()
def refine_quality(
    estimators: dict[str, Any],
    profile: Any,
    speed_range_mps: tuple[float, float],
    *,
    grid: GridSpec,
    carrier_hz: float,
    snr_db: Sequence[float] = QUALITY_SNR_DB,
    n_test: int = 128,
    frames: int = 8,
    codec: str = "ctcd",
    image_size: tuple[int, int] = (72, 128),
    seed: int = 12345,
    device: torch.device | str = "cpu",
) -> list[dict[str, Any]]:
    """NMSE (``n_test`` channels) and PSNR / SSIM (``frames`` test images through the link) per estimator and SNR.

    Every estimator sees the same channels, data and noise.
    """
    from ivsim.ai.codecs import make_codec
    from ivsim.ai.images import DEFAULT_IMAGES, ImageFolder
    from ivsim.ai.link import ChannelBank, LinkChain

    dev = torch.device(device)
    sampler = ChannelSampler(profile, grid, carrier_hz=carrier_hz, device=dev)
    h = sampler.sample(n_test, speed_mps=speed_range_mps, generator=torch.Generator(device=dev).manual_seed(seed))
    mapper = OfdmMapper(grid, device=dev)
    folder = ImageFolder(DEFAULT_IMAGES, split="test", size=tuple(image_size))
    n_img = min(int(frames), len(folder))
    images = folder.frames(range(n_img)).to(dev)
    chain = LinkChain(make_codec(codec, image_size=tuple(image_size), device=dev), grid=grid,
                      image_size=tuple(image_size), realizations=1, device=dev)  # fmt: skip
    speeds = np.random.default_rng(seed).uniform(*speed_range_mps, size=n_img)
    hf = ChannelBank(grid, device=dev).draw(
        [profile] * n_img, np.full(n_img, carrier_hz), speeds, realizations=1,
        generator=torch.Generator(device=dev).manual_seed(seed + 1),
    )  # fmt: skip
    idx = torch.arange(n_img)
    rows = []
    for snr in snr_db:
        for name, est in estimators.items():
            g = torch.Generator(device=dev).manual_seed(seed + 2)
            y, no = received_qpsk(h, float(snr), mapper, g)
            h_hat, _ = est.estimate(y, no, generator=torch.Generator(device=dev).manual_seed(seed + 3))
            out = chain.transmit(images, hf, torch.full((n_img,), float(snr)), [(est, idx)],
                                 generator=torch.Generator(device=dev).manual_seed(seed + 4))  # fmt: skip
            rows.append({
                "estimator": name, "snr_db": float(snr), "nmse_db": float(nmse_db(h_hat, h)),
                "psnr_db": float(np.mean(out.psnr_db)), "ssim": float(np.mean(out.ssim)),
            })  # fmt: skip
    return rows


def _refine(
    base: DiffusionChannelEstimator,
    lm: LargeModel | None,
    profile: Any,
    speed_range_mps: tuple[float, float],
    *,
    target: str,
    samples: int,
    steps: int,
    rank: int,
    pilots: int,
    carrier_hz: float,
    seed: int,
    real: bool = False,
) -> tuple[Adapter, float, float]:
    """An adapter of ``base`` for ``profile``: trained on N generated (or, ``real``, Sionna) channels."""
    gen = torch.Generator().manual_seed(seed)
    grid = base.grid
    t0 = time.perf_counter()
    if real:
        h = ChannelSampler(profile, grid, carrier_hz=carrier_hz).sample(samples, speed_mps=speed_range_mps, generator=gen)
    else:
        assert lm is not None
        obs = None
        if pilots > 0:
            h_obs = ChannelSampler(profile, grid, carrier_hz=carrier_hz).sample(
                pilots, speed_mps=speed_range_mps, generator=gen
            )
            obs = pilot_observations(h_obs, grid.pilot_ofdm_symbol_indices, 10.0, gen)
        h = lm.generate(profile, samples, carrier_hz=carrier_hz, speed_mps=speed_range_mps, pilots=obs, generator=gen)
    lm_s = time.perf_counter() - t0
    made_from = f"{weights_id(base.path)}+{weights_id(lm.path) if lm is not None else 'real'}+p{pilots}"
    aid = adapter_id_for(made_from, profile_hash(profile), samples, steps, rank, seed)
    t0 = time.perf_counter()
    adapter = lora_finetune(
        base, h, steps=steps, rank=rank, generator=gen,
        metadata={"ivsim.adapter_id": aid, "ivsim.target_scene": target, "ivsim.data": "real" if real else "generated",
                  "ivsim.target_profile_hash": profile_hash(profile)},
    )  # fmt: skip
    return adapter, lm_s, time.perf_counter() - t0


def refine_once(
    scenario: Scenario,
    from_scene: str,
    to_scene: str,
    *,
    samples: int | None = None,
    steps: int | None = None,
    rank: int | None = None,
    pilots: int | None = None,
    sinr_db: float = 10.0,
    snr_db: Sequence[float] = QUALITY_SNR_DB,
    n_test: int = 128,
    frames: int = 8,
    seed: int = 0,
    large_model: str | Path | None = None,
    adapter_out: str | Path | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Refine ``from_scene``'s estimator for ``to_scene`` once; return ``{"budget", "quality", "info"}``.

    ``samples``, ``steps``, ``rank``, ``pilots`` default to the scenario's
    ``refinement`` values. The budget prices this one job with the scenario's
    rates and timing (no queue), the vehicle at ``sinr_db`` up and down.

    Raises
    ------
    IvsimError
        Unknown scene, N or K out of range, missing weights.
    """
    from ivsim.refine.budget import standalone_budget

    spec = scenario.refinement
    samples = spec.samples if samples is None else int(samples)
    steps = spec.steps if steps is None else int(steps)
    rank = spec.lora_rank if rank is None else int(rank)
    pilots = spec.upload_pilots if pilots is None else int(pilots)
    _check_range("--samples (N)", samples, 1, 4096)
    _check_range("--steps (K)", steps, 1, 5000)
    _check_range("--rank", rank, 1, 64)
    _check_range("--pilots", pilots, 0, 64)
    prof_a, _ = _scene(scenario, from_scene, "--from")
    prof_b, speeds_b = _scene(scenario, to_scene, "--to")
    from ivsim.ai.neural_link import grid_from_spec, resolve_device

    dev = resolve_device(device)
    grid = grid_from_spec(scenario.link.grid)
    carrier = float(scenario.base_stations[0].carrier_hz)
    lm = LargeModel(large_model if large_model is not None else large_model_weights_path())
    lm.check_grid(grid)
    base = _base_estimator(from_scene, prof_a, grid, dev)
    adapter, lm_s, ft_s = _refine(
        base, lm, prof_b, speeds_b, target=to_scene, samples=samples, steps=steps, rank=rank, pilots=pilots,
        carrier_hz=carrier, seed=seed,
    )  # fmt: skip
    if adapter_out is not None:
        adapter.save(adapter_out)
    after = apply_adapter(base, adapter)
    oracle = _oracle(to_scene, prof_b, grid, dev)
    oracle_kind = "shipped"
    if oracle is None:
        real, _, _ = _refine(base, None, prof_b, speeds_b, target=to_scene, samples=samples, steps=steps, rank=rank,
                             pilots=0, carrier_hz=carrier, seed=seed, real=True)  # fmt: skip
        oracle, oracle_kind = apply_adapter(base, real), "lora_on_real"
    quality = refine_quality(
        {"before": base, "after": after, "oracle": oracle}, prof_b, speeds_b, grid=grid, carrier_hz=carrier,
        snr_db=snr_db, n_test=n_test, frames=frames, codec=scenario.link.codec.kind,
        image_size=tuple(scenario.link.image_size), device=dev,
    )  # fmt: skip
    budget = standalone_budget(
        scenario, samples=samples, steps=steps, rank=rank, pilots=pilots, adapter_bytes=adapter.num_bytes,
        sinr_db=sinr_db, measured_s=(lm_s, ft_s),
    )  # fmt: skip
    info = {
        "from": from_scene, "to": to_scene, "samples": samples, "steps": steps, "rank": rank, "pilots": pilots,
        "sinr_db": sinr_db, "adapter_id": adapter.adapter_id, "adapter_bytes": adapter.num_bytes,
        "oracle": oracle_kind, "wall_lm_infer_s": lm_s, "wall_finetune_s": ft_s, "n_test": n_test,
        "frames": frames, "seed": seed,
    }  # fmt: skip
    return {"budget": budget, "quality": quality, "info": info}


def eval_refine(
    scenario: Scenario,
    pairs: Sequence[tuple[str, str]],
    *,
    samples_grid: Sequence[int] = (256,),
    steps_grid: Sequence[int] = (25, 100),
    rank: int | None = None,
    snr_db: float = 10.0,
    n_test: int = 128,
    seed: int = 0,
    with_real: bool = True,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """NMSE at ``snr_db`` on the target scene for every pair x N x K.

    Rows: ``from, to, samples, steps, data`` (``generated`` / ``real``), ``nmse_db``,
    ``before_nmse_db``, ``oracle_nmse_db``, ``gain_db`` (before - this), ``lm_infer_s``,
    ``finetune_s`` (priced by the scenario's timing), ``gpu_s``, ``total_s`` (the
    standalone budget), ``adapter_bytes``, wall times.
    """
    from tqdm import tqdm

    from ivsim.ai.neural_link import grid_from_spec
    from ivsim.refine.budget import standalone_budget

    spec = scenario.refinement
    rank = spec.lora_rank if rank is None else int(rank)
    grid = grid_from_spec(scenario.link.grid)
    carrier = float(scenario.base_stations[0].carrier_hz)
    lm = LargeModel(large_model_weights_path())
    lm.check_grid(grid)
    dev = torch.device("cpu")
    total = len(pairs) * len(samples_grid) * len(steps_grid) * (2 if with_real else 1)
    bar = tqdm(total=total, desc="eval refine", unit="job", disable=not progress, dynamic_ncols=True)
    rows: list[dict[str, Any]] = []
    mapper = OfdmMapper(grid)
    try:
        for a, b in pairs:
            prof_a, _ = _scene(scenario, a, "pair")
            prof_b, speeds_b = _scene(scenario, b, "pair")
            base = _base_estimator(a, prof_a, grid, dev)
            oracle = _oracle(b, prof_b, grid, dev)
            h = ChannelSampler(prof_b, grid, carrier_hz=carrier).sample(
                n_test, speed_mps=speeds_b, generator=torch.Generator().manual_seed(12345)
            )
            y, no = received_qpsk(h, snr_db, mapper, torch.Generator().manual_seed(12347))

            def nm(est: Any, _y: torch.Tensor = y, _no: torch.Tensor = no, _h: torch.Tensor = h) -> float:
                return float(nmse_db(est.estimate(_y, _no, generator=torch.Generator().manual_seed(12348))[0], _h))

            before = nm(base)
            orc = nm(oracle) if oracle is not None else float("nan")
            for n_s in samples_grid:
                for k in steps_grid:
                    for data in ("generated", "real") if with_real else ("generated",):
                        bar.set_postfix_str(f"{a}->{b} N={n_s} K={k} {data}", refresh=False)
                        ad, lm_s, ft_s = _refine(
                            base, lm, prof_b, speeds_b, target=b, samples=n_s, steps=k, rank=rank, pilots=0,
                            carrier_hz=carrier, seed=seed, real=data == "real",
                        )  # fmt: skip
                        v = nm(apply_adapter(base, ad))
                        bud = standalone_budget(scenario, samples=n_s, steps=k, rank=rank, pilots=0,
                                                adapter_bytes=ad.num_bytes, sinr_db=10.0)  # fmt: skip
                        lm_priced = bud["lm_infer_s"] if data == "generated" else 0.0  # real data: nothing generated
                        rows.append({
                            "from": a, "to": b, "samples": n_s, "steps": k, "data": data, "snr_db": snr_db,
                            "nmse_db": v, "before_nmse_db": before, "oracle_nmse_db": orc, "gain_db": before - v,
                            "lm_infer_s": lm_priced, "finetune_s": bud["finetune_s"],
                            "gpu_s": bud["gpu_s"] - bud["lm_infer_s"] + lm_priced,
                            "total_s": bud["total_s"] - bud["lm_infer_s"] + lm_priced,
                            "adapter_bytes": ad.num_bytes, "wall_lm_infer_s": lm_s, "wall_finetune_s": ft_s,
                        })  # fmt: skip
                        bar.update()
    finally:
        bar.close()
    return rows


def bench_refine(
    *,
    samples: int = 256,
    steps: int = 20,
    rank: int = 8,
    repeats: int = 3,
    scene: str = "street_canyon",
    device: str = "cpu",
    threads: int = 1,
    large_model: str | Path | None = None,
) -> dict[str, Any]:
    """Time generation per sample and fine-tuning per step; returns the ``refine`` section of a latency profile.

    Generation is timed at ``samples`` and ``samples // 4`` (a line through the two
    medians gives fixed and per-sample costs); fine-tuning at ``steps`` and
    ``2 * steps`` likewise. The adapter's size is measured at ``rank`` and ``2 rank``.
    """
    from ivsim.ai.neural_link import resolve_device
    from ivsim.config.schema import SystemLevelProfile

    torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    grid = GridSpec()
    lm = LargeModel(large_model if large_model is not None else large_model_weights_path(), device=dev)
    prof = SystemLevelProfile(model="rma", los=True)
    base = DiffusionChannelEstimator(grid, scene=scene, device=dev)

    def med(fn: Any) -> float:
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts))

    g = torch.Generator(device=dev).manual_seed(0)
    n1, n2 = max(1, samples // 4), samples
    t_n1 = med(lambda: lm.generate(prof, n1, carrier_hz=3.5e9, speed_mps=10.0, generator=g))
    t_n2 = med(lambda: lm.generate(prof, n2, carrier_hz=3.5e9, speed_mps=10.0, generator=g))
    h = lm.generate(prof, 64, carrier_hz=3.5e9, speed_mps=10.0, generator=g).cpu()
    gc = torch.Generator().manual_seed(0)
    k1, k2 = steps, 2 * steps
    t_k1 = med(lambda: lora_finetune(base, h, steps=k1, rank=rank, generator=gc, device=dev))
    t_k2 = med(lambda: lora_finetune(base, h, steps=k2, rank=rank, generator=gc, device=dev))
    b1 = lora_finetune(base, h, steps=1, rank=rank, generator=gc).num_bytes
    b2 = lora_finetune(base, h, steps=1, rank=2 * rank, generator=gc).num_bytes
    per_sample = max(0.0, (t_n2 - t_n1) / (n2 - n1))
    per_step = max(0.0, (t_k2 - t_k1) / (k2 - k1))
    per_rank = max(0, (b2 - b1) // rank)
    return {
        "lm_infer": {"fixed_s": round(max(0.0, t_n1 - per_sample * n1), 6), "per_item_s": round(per_sample, 6)},
        "finetune": {"fixed_s": round(max(0.0, t_k1 - per_step * k1), 6), "per_item_s": round(per_step, 6)},
        "adapter": {"fixed_bytes": int(b1 - per_rank * rank), "per_rank_bytes": int(per_rank)},
        "measured": {
            "device": str(dev), "threads": int(threads), "platform": platform.platform(),
            "torch": torch.__version__, "generate_s": {str(n1): t_n1, str(n2): t_n2},
            "finetune_s": {str(k1): t_k1, str(k2): t_k2}, "adapter_bytes": {str(rank): b1, str(2 * rank): b2},
            "large_model_parameters": lm.net.num_parameters(), "estimator_parameters": base.num_parameters(),
        },
    }


def write_refine_section(path: str | Path, bench: dict[str, Any]) -> Path:
    """Write ``bench``'s timings (from :func:`bench_refine`) as the ``refine`` section of latency profile ``path``.

    An existing profile keeps its other sections; a new file gets a minimal header
    (a profile with only a ``refine`` section is valid for the cloud, not for the link).
    """
    import yaml

    from ivsim.ai.latency import profile_path

    path = profile_path(path)
    data: dict[str, Any] = {}
    if path.is_file():
        data = yaml.safe_load(path.read_text()) or {}
    m = bench["measured"]
    data.setdefault("name", path.stem.removeprefix("latency_"))
    data.setdefault("device", m["device"])
    data.setdefault("source", "")
    data.setdefault("codec", {})
    data.setdefault("estimator", {})
    data["refine"] = {k: bench[k] for k in ("lm_infer", "finetune", "adapter")}
    data["refine"]["source"] = (
        f"measured by `ivsim bench refine --write-profile` on {platform.processor() or platform.machine()}, "
        f"{m['device']}, torch {m['torch']} with {m['threads']} thread(s), {time.strftime('%Y-%m-%d')}; "
        f"large model {m['large_model_parameters']:,} parameters, estimator {m['estimator_parameters']:,}"
    )
    header = [ln for ln in path.read_text().splitlines() if ln.startswith("#")] if path.is_file() else []
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump(data, sort_keys=False, width=120, default_flow_style=None)
    path.write_text("\n".join(header) + ("\n" if header else "") + body)
    return path


def refine_tables(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: the N x K trade-off per pair (generated data; real-data column when present)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    lines = [
        "# Refinement trade-off (`ivsim eval refine`)",
        "",
        f"NMSE in dB on the target scene at {df['snr_db'].iloc[0]:g} dB SNR; `gain` = before - after (positive: the "
        "refined estimator is better); latency and GPU-seconds priced by the scenario's refinement timing "
        "(one job alone, vehicle at 10 dB SINR); `real` = the same LoRA recipe on N real (Sionna) channels of the "
        "target scene instead of generated ones.",
        "",
    ]
    gen = df[df["data"] == "generated"]
    real = df[df["data"] == "real"].set_index(["from", "to", "samples", "steps"]) if (df["data"] == "real").any() else None
    for (a, b), g in gen.groupby(["from", "to"], sort=False):
        r0 = g.iloc[0]
        lines += [
            f"## {a} -> {b}",
            "",
            f"before (the {a} estimator): {r0['before_nmse_db']:.2f} dB; oracle (the shipped {b} estimator): "
            f"{r0['oracle_nmse_db']:.2f} dB",
            "",
            "| N | K | after dB | gain dB | real-data dB | total s | GPU s | adapter bytes |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for _, r in g.iterrows():
            rv = real.loc[(a, b, r["samples"], r["steps"]), "nmse_db"] if real is not None else float("nan")
            lines.append(
                f"| {r['samples']} | {r['steps']} | {r['nmse_db']:.2f} | {r['gain_db']:+.2f} | {rv:.2f} | "
                f"{r['total_s']:.2f} | {r['gpu_s']:.2f} | {r['adapter_bytes']:,} |"
            )
        lines.append("")
    return "\n".join(lines)


def write_refine_eval(rows: Sequence[dict[str, Any]], out_dir: str | Path, *, scenario: Scenario) -> list[Path]:
    """Write ``refine.csv``, ``tables.md`` and ``refine_tradeoff.png`` (gain vs GPU-seconds per pair)."""
    import pandas as pd

    from ivsim.results import new_figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    paths = [out / "refine.csv", out / "tables.md", out / "refine_tradeoff.png"]
    df.to_csv(paths[0], index=False)
    paths[1].write_text(refine_tables(rows) + "\n")
    fig = new_figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    gen = df[df["data"] == "generated"]
    for (a, b), g in gen.groupby(["from", "to"], sort=False):
        g = g.sort_values("gpu_s")
        ax.plot(g["gpu_s"], g["gain_db"], "o-", label=f"{a} -> {b}")
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(f"cloud GPU-seconds per refinement ({scenario.name} timing)")
    ax.set_ylabel("NMSE gained at the target scene (dB)")
    ax.legend(fontsize=7)
    fig.savefig(paths[2])
    return paths


_STYLE = {"before": ("C3", "s--", "before (mismatched)"), "after": ("C0", "o-", "after (refined)"),
          "oracle": ("C2", "^:", "oracle (trained on real)")}  # fmt: skip


def plot_refine_quality(quality: Sequence[dict[str, Any]], path: str | Path, *, title: str = "") -> Path:
    """PSNR and SSIM vs SNR of ``before`` / ``after`` / ``oracle`` (the rows of :func:`refine_quality`)."""
    import pandas as pd

    from ivsim.results import new_figure

    df = pd.DataFrame(quality)
    fig = new_figure(figsize=(9.0, 3.4))
    axes = fig.subplots(1, 3)
    for est, g in df.groupby("estimator", sort=False):
        color, style, label = _STYLE.get(str(est), ("C7", "x-", str(est)))
        g = g.sort_values("snr_db")
        for ax, col in zip(axes, ("psnr_db", "ssim", "nmse_db"), strict=True):
            ax.plot(g["snr_db"], g[col], style, color=color, label=label)
    for ax, lab in zip(axes, ("PSNR (dB)", "SSIM", "channel NMSE (dB)"), strict=True):
        ax.set_xlabel("SNR (dB)")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
