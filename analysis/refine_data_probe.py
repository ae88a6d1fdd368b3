"""What in the large model's channels costs a LoRA refinement? Refine on real channels altered one way at a time.

Usage:  python analysis/refine_data_probe.py [--from street_canyon] [--to river_bridge] [--samples 1024]
                                             [--steps 400[,1600]] [--rank 16] [--lr 1e-3[,1e-2]]
                                             [--data real,...] [--threads 1] [--device cpu|cuda]

Refines the `--from` scene's shipped diffusion estimator for the `--to` scene with the same LoRA recipe
(`ivsim.ai.refine.lora_finetune`, seed 0) on N channels of one kind each, and prints the NMSE of the refined
estimator on 128 (`--n-test`) held-out real channels of the target scene at 0 and 10 dB (the unrefined estimator first):

- `real`: Sionna channels of the target scene (what a perfect generator would give);
- `real_static`: the same channels with every symbol replaced by the slot's mean (no change over the slot);
- `real_faster`: Sionna channels of the target scene at `--speed-factor` times its speeds (more change over the
  slot: a factor of 4/3 is about the excess change the large model draws, 2.5 dB);
- `real_incoherent`: the same channels with every delay tap's phase drawn at random per realization and tap
  (each tap keeps its magnitude and its change over the slot, so the power-delay profile and the time correlation
  are kept, but the taps no longer move together: what a diagonal Gaussian per tap draws; a path between two taps
  of the grid leaks into both with related phases, which is what keeps a short-delay channel smooth in frequency);
- `real_tap_shuffled`: every delay tap (over the whole slot) taken from another, randomly chosen realization: each
  tap keeps its distribution and its change over the slot, but the taps of one channel are independent, which is
  what any generator that draws the taps independently (a diagonal Gaussian per token) makes at best;
- `real_paths`: Sionna's paths (clusters) of the same channels as path tokens (`ivsim.ai.large_model.
  paths_to_tokens`: delay, power, Doppler) rendered back with random phases: what a perfect path generator gives;
- `real_path_shuffled`: the same with every path (by delay rank) taken from another realization: paths drawn
  independently of each other;
- `generated`: the large model's channels of the target scene (`ivsim refine`'s `after`; `--large-model PATH` for
  other weights than the shipped ones).

A kind that costs as much as `generated` points at what the generator gets wrong. `--steps` and `--lr` take comma
lists (every combination is run). Each LoRA run takes about six minutes at K = 400 on one CPU thread, 25 s on a
GPU (`--device cuda`: fine-tuning there, channels and evaluation on the CPU). Copy and edit.
"""

import argparse
import time

import torch

from ivsim.ai.estimator_train import received_qpsk
from ivsim.ai.large_model import LargeModel, paths_to_tokens, tokens_to_paths
from ivsim.ai.neural_link import grid_from_spec
from ivsim.ai.refine import apply_adapter, lora_finetune
from ivsim.ai.refine_eval import _base_estimator, _scene
from ivsim.config import load_scenario
from ivsim.phy import ChannelSampler, OfdmMapper
from ivsim.phy.ofdm import nmse_db

KINDS = ("real", "real_static", "real_faster", "real_incoherent", "real_tap_shuffled", "real_paths", "real_path_shuffled", "generated")

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--scenario", default="scenarios/nyc_brooklyn_bridge.yaml")
parser.add_argument("--from", dest="from_scene", default="street_canyon")
parser.add_argument("--to", dest="to_scene", default="river_bridge")
parser.add_argument("--samples", type=int, default=1024)
parser.add_argument("--steps", default="400", help="K, a comma list")
parser.add_argument("--rank", type=int, default=16)
parser.add_argument("--lr", default="3e-3", help="peak learning rate, a comma list (default 3e-3, the recipe)")
parser.add_argument("--data", default=",".join(KINDS), help=f"comma list of {', '.join(KINDS)}")
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--n-test", type=int, default=128, help="held-out target-scene channels")
parser.add_argument("--speed-factor", type=float, default=4 / 3, help="real_faster: speeds times this")
parser.add_argument("--device", default="cpu", help="where LoRA fine-tunes (cpu or cuda)")
parser.add_argument("--large-model", default=None, metavar="PATH", help="generated: these weights (default the shipped)")
args = parser.parse_args()
kinds = [k for k in args.data.split(",") if k]
if bad := [k for k in kinds if k not in KINDS]:
    parser.error(f"--data: unknown {bad} (allowed: {', '.join(KINDS)})")
torch.set_num_threads(args.threads)

scenario = load_scenario(args.scenario)
grid = grid_from_spec(scenario.link.grid)
carrier = float(scenario.base_stations[0].carrier_hz)
prof_a, _ = _scene(scenario, args.from_scene, "--from")
prof_b, speeds = _scene(scenario, args.to_scene, "--to")
base = _base_estimator(args.from_scene, prof_a, grid, torch.device("cpu"))
sampler = ChannelSampler(prof_b, grid, carrier_hz=carrier)
test = sampler.sample(args.n_test, speed_mps=speeds, generator=torch.Generator().manual_seed(12345))
mapper = OfdmMapper(grid)


def nmse(est, snr_db: float) -> float:
    y, no = received_qpsk(test, snr_db, mapper, torch.Generator().manual_seed(12347))
    return float(nmse_db(est.estimate(y, no, generator=torch.Generator().manual_seed(12348))[0], test))


def channels(kind: str, gen: torch.Generator) -> torch.Tensor:
    if kind == "generated":
        return LargeModel(args.large_model).generate(prof_b, args.samples, carrier_hz=carrier, speed_mps=speeds, generator=gen)
    if kind == "real_faster":
        return sampler.sample(args.samples, speed_mps=tuple(v * args.speed_factor for v in speeds), generator=gen)
    if kind in ("real_paths", "real_path_shuffled"):
        a, tau = sampler.sample_paths(args.samples, speed_mps=speeds, generator=gen)
        x = paths_to_tokens(a, tau, max_paths=a.shape[2])
        if kind == "real_path_shuffled":
            pick = torch.argsort(torch.rand((x.shape[0], x.shape[1]), generator=gen), dim=0)  # a permutation per path
            x = torch.stack([x[pick[:, k], k] for k in range(x.shape[1])], dim=1)
        return sampler.render_paths(*tokens_to_paths(x, n_sym=a.shape[-1], generator=gen))
    h = sampler.sample(args.samples, speed_mps=speeds, generator=gen)
    if kind == "real_static":
        return h.mean(dim=2, keepdim=True).expand_as(h).contiguous()
    if kind == "real_tap_shuffled":
        d = torch.fft.ifft(h, dim=-1, norm="ortho")  # [N, n_rx, n_sym, tap]
        pick = torch.argsort(torch.rand((d.shape[0], d.shape[3]), generator=gen), dim=0)  # a permutation per tap
        d = torch.stack([d[pick[:, k], ..., k] for k in range(d.shape[3])], dim=-1)
        return torch.fft.fft(d, dim=-1, norm="ortho").to(h.dtype)
    if kind == "real_incoherent":
        d = torch.fft.ifft(h, dim=-1, norm="ortho")  # [N, n_rx, n_sym, tap]
        phase = 2 * torch.pi * torch.rand((d.shape[0], d.shape[1], 1, d.shape[3]), generator=gen)
        return torch.fft.fft(d * torch.polar(torch.ones_like(phase), phase), dim=-1, norm="ortho").to(h.dtype)
    return h


print(f"{args.from_scene} -> {args.to_scene}, N = {args.samples}, rank {args.rank}, LoRA on {args.device}")
print("| data | K | lr | NMSE at 0 dB | NMSE at 10 dB | fine-tuning s |\n|---|---|---|---|---|---|")
print(f"| unrefined | - | - | {nmse(base, 0.0):.2f} | {nmse(base, 10.0):.2f} | - |", flush=True)
for kind in kinds:
    for steps in (int(k) for k in args.steps.split(",")):
        for lr in (float(v) for v in args.lr.split(",")):
            gen = torch.Generator().manual_seed(0)
            h = channels(kind, gen)
            t0 = time.perf_counter()
            adapter = lora_finetune(base, h, steps=steps, rank=args.rank, lr=lr, generator=gen, device=args.device)
            ft = time.perf_counter() - t0
            after = apply_adapter(base, adapter)
            print(f"| {kind} | {steps} | {lr:g} | {nmse(after, 0.0):.2f} | {nmse(after, 10.0):.2f} | {ft:.0f} |",
                  flush=True)  # fmt: skip
