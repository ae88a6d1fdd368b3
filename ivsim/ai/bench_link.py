"""``ivsim bench link``: the neural link chain batched vs one frame at a time, and inside the simulator.

Three figures, measured side by side in one process on whatever device the run uses
(``--device``; the same command runs unchanged on a GPU):

1. **batching**: frames/s of :class:`~ivsim.ai.neural_link.NeuralLinkEvaluator`
   given ``N`` frames in one call vs the same frames one call each
   (``batch_speedup``; the issue's target is >= 10), and the same with the LMMSE
   estimator (``batch_speedup_with_lmmse``: the chain without the diffusion model);
2. **in the simulator**: frames/s of a simulation with ``N`` vehicles transmitting at
   the same instants (the fleet scenario, ``link.fidelity: full``) vs the standalone
   batched chain (``sim_vs_chain``; target >= 0.7);
3. **full rate**: what the default scenario would cost at 5 fps with whole 320 x 180
   frames, one vehicle (wall seconds per simulated second).

``--write-profile FILE`` also measures a latency profile (:mod:`ivsim.ai.latency`)
of every shipped codec and estimator on this device, one frame at a time.
"""

from __future__ import annotations

import datetime as dt
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ivsim.ai.link import PERFECT, LinkChain
from ivsim.ai.neural_link import NeuralLinkEvaluator, resolve_device
from ivsim.bench import REPO_SCENARIOS, machine
from ivsim.config import load_scenario
from ivsim.sim.links import TxBatch

__all__ = ["bench_link", "measure_latency_profile"]

log = logging.getLogger(__name__)

DEFAULT_SCENARIO = REPO_SCENARIOS / "nyc_brooklyn_bridge.yaml"
FLEET_SCENARIO = REPO_SCENARIOS / "nyc_fleet.yaml"


def _requests(n: int, n_scenes: int, *, seed: int = 0, start_frame: int = 0) -> TxBatch:
    """``n`` frames spread over the scenes (matched estimators), SINR 0..20 dB, 3..15 m/s."""
    rng = np.random.default_rng(seed)
    scene = np.arange(n) % n_scenes
    sinr = rng.uniform(0.0, 20.0, n)
    return TxBatch(
        vehicle=np.arange(n), bs=np.zeros(n, dtype=np.int64), scene=scene, uplink=np.zeros(n, dtype=bool),
        size_bits=np.full(n, 1, dtype=np.int64), bandwidth_hz=np.full(n, 20e6), queue_s=np.zeros(n),
        sinr_db=sinr, snr_db=sinr, speed_mps=rng.uniform(3.0, 15.0, n), carrier_hz=np.full(n, 3.5e9),
        deadline_s=np.full(n, 0.1), frame=np.full(n, start_frame, dtype=np.int64), estimator_scene=scene,
    )  # fmt: skip


def _link_overrides(codec: str, estimator: str, image_size: tuple[int, int], device: str) -> list[str]:
    return [
        "link.fidelity=full",
        f"link.codec.kind={codec}",
        f"link.estimator.kind={estimator}",
        f"link.image_size=[{image_size[0]}, {image_size[1]}]",
        "link.latency=measured",
        f"device={device}",
    ]


def _warm(ev: NeuralLinkEvaluator) -> None:
    """Build every scene's estimator and run one small call (first-use costs out of the timings)."""
    for i in range(len(ev.scene_names)):
        ev.estimator_for(i)
    ev.evaluate(_requests(min(2, len(ev.scene_names)), len(ev.scene_names), seed=99))


def _chain_rates(ev: NeuralLinkEvaluator, frames: int, single: int) -> tuple[float, float]:
    n_scenes = len(ev.scene_names)
    t0 = time.perf_counter()
    ev.evaluate(_requests(frames, n_scenes, seed=1))
    batched = frames / (time.perf_counter() - t0)
    reqs = _requests(single, n_scenes, seed=2)
    t0 = time.perf_counter()
    for i in range(single):
        ev.evaluate(reqs.take(slice(i, i + 1)))
    one = single / (time.perf_counter() - t0)
    return batched, one


def bench_link(
    *,
    vehicles: int = 32,
    single_frames: int = 16,
    codec: str = "ctcd",
    estimator: str = "diffusion",
    image_size: tuple[int, int] = (72, 128),
    sim_duration_s: float = 4.0,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Run the three measurements (see the module docstring) and return their figures.

    Parameters
    ----------
    vehicles
        Frames per batched call, and vehicles transmitting in the simulator run.
    single_frames
        Frames sent one call each (the unbatched rate).
    codec, estimator, image_size
        The link settings measured (the default scenario's).
    sim_duration_s
        Simulated seconds of the simulator run (one frame per vehicle per second).
    device
        ``auto``, ``cpu`` or ``cuda``.
    progress
        Print what is being measured (to stderr, through logging at INFO).

    Returns
    -------
    dict
        Rates, ratios, targets and the conditions (machine, device, threads).
    """
    from ivsim.sim.engine import Simulation

    say = log.warning if progress else log.info
    dev = resolve_device(device)
    link = _link_overrides(codec, estimator, image_size, device)
    ev = NeuralLinkEvaluator(load_scenario(FLEET_SCENARIO, overrides=link), seed=0)
    say("bench link: warming up (models, covariances)")
    _warm(ev)
    say("bench link: %d frames batched vs %d one at a time", vehicles, single_frames)
    batched, one = _chain_rates(ev, vehicles, single_frames)

    lmmse = NeuralLinkEvaluator(
        load_scenario(FLEET_SCENARIO, overrides=_link_overrides(codec, "lmmse", image_size, device)), seed=0
    )
    _warm(lmmse)
    batched_lmmse, one_lmmse = _chain_rates(lmmse, vehicles, single_frames)

    say("bench link: simulator with %d vehicles transmitting, %g simulated s", vehicles, sim_duration_s)
    fleet = [
        *link,
        f"duration_s={sim_duration_s:g}",
        "traffic.fps=1",
        f"fleets.0.count={vehicles}",
        "fleets.0.departures={kind: at_start, t_s: 0, spread_s: 0}",
        "fleets.0.respawn=true",
    ]
    sim = Simulation(load_scenario(FLEET_SCENARIO, overrides=fleet))
    _warm(sim.links.evaluator)
    t0 = time.perf_counter()
    sim.run()
    sim_wall = time.perf_counter() - t0
    tx = sim.log.counts.get("tx", 0)  # every frame handled (an outage costs no compute but counts)
    sim_rate = tx / sim_wall

    say("bench link: full rate of the default scenario (5 fps, 320 x 180)")
    full = NeuralLinkEvaluator(
        load_scenario(DEFAULT_SCENARIO, overrides=_link_overrides(codec, estimator, (180, 320), device)), seed=0
    )
    _warm(full)
    reqs = _requests(3, 1, seed=3)
    t0 = time.perf_counter()
    for i in range(3):
        full.evaluate(reqs.take(slice(i, i + 1)))
    full_frame_s = (time.perf_counter() - t0) / 3

    return {
        "machine": machine(),
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "codec": codec,
        "estimator": estimator,
        "image_size": list(image_size),
        "symbols_per_frame": ev.chain.symbols,
        "grids_per_frame": ev.chain.n_grids,
        "batch_frames": vehicles,
        "batched_frames_per_s": round(batched, 2),
        "single_frames_per_s": round(one, 2),
        "batch_speedup": round(batched / one, 2),
        "batch_speedup_target": 10.0,
        "batch_speedup_with_lmmse": round(batched_lmmse / one_lmmse, 2),
        "sim_vehicles": vehicles,
        "sim_frames": int(tx),
        "sim_wall_s": round(sim_wall, 2),
        "sim_frames_per_s": round(sim_rate, 2),
        "sim_vs_chain": round(sim_rate / batched, 3),
        "sim_vs_chain_target": 0.7,
        "full_rate_frame_s": round(full_frame_s, 3),
        "full_rate_symbols_per_frame": full.chain.symbols,
        "full_rate_wall_per_sim_s": round(5 * full_frame_s, 2),
    }


def _median_stage(chain: LinkChain, est: Any, stage: str, *, repeats: int, generator: torch.Generator) -> float:
    imgs = torch.rand(1, 3, *chain.image_size, generator=torch.Generator().manual_seed(0)).to(chain.device)
    h = torch.ones(1, chain.realizations, chain.grid.num_rx_ant, chain.grid.num_ofdm_symbols, chain.grid.fft_size,
                   dtype=torch.complex64, device=chain.device)  # fmt: skip
    snr = torch.full((1,), 10.0, device=chain.device)
    idx = torch.zeros(1, dtype=torch.long)
    chain.transmit(imgs, h, snr, [(est, idx)], generator=generator)  # warm
    times = [
        chain.transmit(imgs, h, snr, [(est, idx)], generator=generator).seconds[stage] for _ in range(repeats)
    ]
    return statistics.median(times)


def _fit(x0: float, t0: float, x1: float, t1: float) -> dict[str, float]:
    """``fixed_s + per_item_s * x`` through two points (clipped at zero)."""
    per = max(0.0, (t1 - t0) / (x1 - x0))
    return {"fixed_s": round(max(0.0, t0 - per * x0), 6), "per_item_s": round(per, 6)}


def measure_latency_profile(path: str | Path, *, device: str = "auto", repeats: int = 5) -> dict[str, Any]:
    """Measure a latency profile of every shipped codec and estimator, one frame at a time, and write it.

    Codec costs are fitted over two frame sizes (32 x 64 and 72 x 128), estimator
    costs over 1 and 4 channel realizations per frame, equalization over 2 and 8
    grids. Each point is the median of ``repeats`` runs.
    """
    from ivsim.ai.codecs import make_codec
    from ivsim.ai.estimators import make_estimator

    dev = resolve_device(device)
    sc = load_scenario(DEFAULT_SCENARIO)
    profile_street = sc.profiles[sc.scenes["street_canyon"].profile]
    gen = torch.Generator(device=dev).manual_seed(0)
    small, large = (72, 128), (144, 256)  # the digital codec needs room for a JPEG
    codecs: dict[str, Any] = {}
    for kind in ("ctcd", "deepjscc", "digital"):
        chains = [LinkChain(make_codec(kind, image_size=s, device=dev), image_size=s, device=dev) for s in (small, large)]
        entry = {}
        for stage in ("encode", "decode"):
            t = [_median_stage(c, PERFECT, stage, repeats=repeats, generator=gen) for c in chains]
            entry[stage] = _fit(chains[0].symbols / 1000, t[0], chains[1].symbols / 1000, t[1])
        codecs[kind] = entry
    codec = make_codec("deepjscc", image_size=large, device=dev)
    estimators: dict[str, Any] = {}
    grid = LinkChain(codec, image_size=large, device=dev).grid
    kinds = {
        "ls": make_estimator("ls", grid=grid, device=dev),
        "lmmse": make_estimator("lmmse", grid=grid, profile=profile_street, device=dev),
        "diffusion": make_estimator("diffusion", grid=grid, scene="street_canyon", device=dev),
    }
    for name, est in kinds.items():
        t = [
            _median_stage(LinkChain(codec, image_size=large, realizations=r, device=dev), est, "estimate",
                          repeats=repeats, generator=gen)
            for r in (1, 4)
        ]  # fmt: skip
        estimators[name] = _fit(1, t[0], 4, t[1])
    estimators["perfect"] = {"fixed_s": 0.0, "per_item_s": 0.0}
    eq = [
        _median_stage(LinkChain(codec, image_size=s, device=dev), PERFECT, "equalize", repeats=repeats, generator=gen)
        for s in (small, large)
    ]
    chains = [LinkChain(codec, image_size=s, device=dev) for s in (small, large)]
    profile = {
        "name": Path(path).stem.removeprefix("latency_"),
        "device": dev.type,
        "source": (
            f"measured by `ivsim bench link --write-profile` on {machine()}, {dev.type}, torch "
            f"{torch.__version__} with {torch.get_num_threads()} thread(s), {dt.date.today().isoformat()}; "
            f"one frame at a time, median of {repeats}"
        ),
        "codec": codecs,
        "estimator": estimators,
        "equalize": _fit(chains[0].n_grids, eq[0], chains[1].n_grids, eq[1]),
    }
    header = "# Compute-latency profile (format: ivsim/ai/latency.py). Rebuild: ivsim bench link --write-profile FILE\n"
    Path(path).write_text(header + yaml.safe_dump(profile, sort_keys=False, default_flow_style=None, width=120))
    return profile
