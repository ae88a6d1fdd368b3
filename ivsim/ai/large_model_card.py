"""Model card of the cloud's large model, written from its weights and from measurements.

``python -m ivsim.ai.large_model_card [--refine-eval DIR] [--n 512]`` writes
``models/large_model.md``: what the weights are (safetensors metadata: profiles,
steps, seed, training time), the command that rebuilds them, how close its
generated channels are to real ones per profile (:func:`~ivsim.ai.large_model.generation_report`,
trained and held-out profiles), the downstream check (a LoRA-refined estimator
trained on generated vs on real channels, from ``DIR/refine.csv`` written by
``ivsim eval refine -o DIR``), and the CPU refinement timings of
``models/latency_cpu.yaml`` (measured by ``ivsim bench refine``). Nothing in the card
is typed by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from ivsim.ai.large_model import (
    LargeModel,
    LargeModelConfig,
    generation_report,
    large_model_weights_path,
    nominal_delay_spread_s,
    training_profiles,
)

__all__ = ["large_model_card"]


def _timing_lines() -> list[str]:
    from ivsim.ai.latency import load_latency_profile

    prof = load_latency_profile("cpu")
    r = getattr(prof, "refine", None)
    if r is None:
        return ["", "(no `refine` section in `models/latency_cpu.yaml` yet: run `ivsim bench refine --write-profile "
                "models/latency_cpu.yaml`)"]  # fmt: skip
    return [
        "",
        "## Refinement compute on the CPU (`models/latency_cpu.yaml`, `ivsim bench refine`)",
        "",
        "| stage | fixed | per item |",
        "|---|---|---|",
        f"| large-model generation (items: samples) | {r.lm_infer.fixed_s:.4f} s | {r.lm_infer.per_item_s:.5f} s |",
        f"| LoRA fine-tuning (items: steps of 32 channels) | {r.finetune.fixed_s:.4f} s | {r.finetune.per_item_s:.4f} s |",
        f"| adapter size | {r.adapter.fixed_bytes:,} bytes | {r.adapter.per_rank_bytes:,} bytes per LoRA rank |",
    ]


def _downstream_lines(refine_eval: Path | None) -> list[str]:
    csv = refine_eval / "refine.csv" if refine_eval is not None else None
    if csv is None or not csv.is_file():
        return []
    df = pd.read_csv(csv)
    if not (df["data"] == "real").any():
        return []
    piv = df.pivot_table(index=["from", "to", "samples", "steps"], columns="data", values="nmse_db").reset_index()
    lines = [
        "",
        "## Downstream check: an estimator refined on generated vs on real channels",
        f"From `{csv}` (`ivsim eval refine`): the same LoRA recipe (N samples, K steps) applied to N channels generated",
        "by this model and to N real (Sionna) channels of the target scene; NMSE in dB on real target channels at",
        f"{df['snr_db'].iloc[0]:g} dB. `cost` = generated - real (positive: the generated data is worth less).",
        "",
        "| from -> to | N | K | generated | real | cost |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in piv.iterrows():
        lines.append(
            f"| {r['from']} -> {r['to']} | {r['samples']} | {r['steps']} | {r['generated']:.2f} | {r['real']:.2f} | "
            f"{r['generated'] - r['real']:+.2f} |"
        )
    lines.append(f"\nMean cost over these rows: {(piv['generated'] - piv['real']).mean():+.2f} dB.")
    lines.append(
        "What in the generated channels costs it (real channels altered one way at a time: static over the slot,"
        "\nfaster, taps with random phases): `docs/refine/data_probe.md` (`python analysis/refine_data_probe.py`)."
    )
    return lines


def large_model_card(*, refine_eval: Path | None = None, n: int = 512, rows_cache: Path | None = None) -> str:
    """Return the markdown card of ``models/large_model.safetensors``."""
    path = large_model_weights_path()
    lm = LargeModel(path)
    meta = lm.metadata
    cfg = lm.config
    train, held = training_profiles()
    kept = rows_cache / f"large_model_report_{n}.json" if rows_cache is not None else None
    if kept is not None and kept.is_file():
        rows = json.loads(kept.read_text())
    else:
        rows = generation_report(lm, {**train, **held}, n=n)
        if kept is not None:
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.write_text(json.dumps(rows))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    steps, batch, seed = meta.get("ivsim.train_steps"), meta.get("ivsim.batch_size"), meta.get("ivsim.seed")
    lines = [
        "# large_model: the cloud's GPT-2 channel generator",
        "",
        "`large_model.safetensors` is `ivsim.ai.large_model.ChannelGPT`: a GPT-2 backbone (transformers `GPT2Model`,",
        "randomly initialised and trained by ivsim, nothing downloaded) over continuous channel tokens.",
        *_token_lines(cfg),
        "A prefix carries the scene profile (family, LOS, CDL/TDL variant, nominal delay spread, K-factor, carrier), the",
        "vehicle's speed and distance to its base station, and optionally LS pilot observations the vehicle uploads.",
        "The model is trained with the Gaussian negative log-likelihood; generation samples token after token with the",
        "key/value cache and rescales the batch to unit mean power. The cloud uses it to generate N channels of the",
        "scene a vehicle is entering, on which the vehicle's diffusion estimator is refined with LoRA.",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | {cfg.n_layer} layers, {cfg.n_embd} wide, {cfg.n_head} heads, {cfg.prefix_len} prefix + "
        f"{cfg.n_tokens} {cfg.tokens} tokens of {cfg.token_dim} numbers, "
        f"{'diagonal Gaussian' if not cfg.cov_rank else f'rank-{cfg.cov_rank}-plus-diagonal Gaussian'} |",
        f"| parameters | {lm.net.num_parameters():,} |",
        f"| weight file | {path.stat().st_size:,} bytes, float16 |",
        f"| sha256 | `{sha}` |",
        f"| training | {steps} steps, batch {batch}, seed {seed}, {meta.get('ivsim.train_time_s')} s wall on the 2-core "
        f"CPU box ({meta.get('ivsim.threads', '1')} torch thread, other jobs beside it); final NLL "
        f"{meta.get('ivsim.final_nll')} per number |",
        f"| data | fresh Sionna channels of {len(json.loads(meta.get('ivsim.profiles', '[]')))} profiles at "
        f"{float(meta.get('ivsim.carrier_hz', 0)) / 1e9:g} GHz, speeds {meta.get('ivsim.speed_range_mps')} m/s, "
        "distances 30-300 m; pilot observations at 0-25 dB shown half of the time |",
        "",
        "## Command",
        "```bash",
        f"ivsim train large-model --steps {steps} --batch {batch} --seed {seed} --tokens {cfg.tokens} "
        f"--cov-rank {cfg.cov_rank}",
        "```",
        "",
        "## Generated vs real channels",
        f"{n} channels per profile, generated (no pilots; speeds 3-20 m/s) vs drawn by Sionna. `PDP RMSE`: RMS",
        "difference in dB of the mean power per delay tap (taps within 30 dB of the strongest); `RMS delay`: delay",
        "spread of that power-delay profile as the 72-subcarrier grid resolves it (taps of 463 ns, so sub-tap",
        "spreads show as leakage); `corr(3)`: |E[h_k h*_(k+3)]| / E|h|^2, the frequency correlation 90 kHz apart",
        "that decides how much an estimator may smooth; `power`: mean |h|^2 of the generated channels before",
        "`LargeModel.generate` rescales them (real: 1); `slot change`:",
        "E|h_last symbol - h_first symbol|^2 / E|h|^2 in dB, how much the channel changes over the 14 symbols.",
        "",
        "| profile | nominal DS ns | PDP RMSE dB | RMS delay real / gen ns | corr(3) real / gen | power gen | "
        "slot change real / gen dB |",
        "|---|---|---|---|---|---|---|",
    ]
    allp = {**train, **held}
    for r in rows:
        ds = nominal_delay_spread_s(allp[r["profile"]]) * 1e9
        lines.append(
            f"| {r['profile']} | {ds:.0f} | {r['pdp_rmse_db']:.2f} | {r['rms_delay_real_ns']:.0f} / "
            f"{r['rms_delay_gen_ns']:.0f} | {r['freq_corr_real']:.3f} / {r['freq_corr_gen']:.3f} | "
            f"{r['power_gen']:.2f} | {r['slot_change_real_db']:.1f} / {r['slot_change_gen_db']:.1f} |"
        )
    lines.append("")
    lines.append("Profiles named `held_out/...` were never trained on: they show how the model extrapolates.")
    lines += _downstream_lines(refine_eval)
    lines += _timing_lines()
    return "\n".join(lines) + "\n"


def _token_lines(cfg: LargeModelConfig) -> list[str]:
    if cfg.tokens == "path":
        return [
            "Each token is one propagation path of the channel (the clusters or taps of the TR 38.901 model, in order of",
            f"delay, up to {cfg.max_paths}): its delay step from the path before, its power over the slot and its phase",
            "advance per OFDM symbol (Doppler); each path's phase is drawn uniformly, as in the TR 38.901 models, and the",
            "paths are rendered onto the 14 x 72 grid with Sionna's `cir_to_ofdm_channel`. A regression head predicts",
            "each next path as a Gaussian over its three numbers"
            + (" (full covariance)." if cfg.cov_rank >= 2 else f" (covariance rank {cfg.cov_rank} plus diagonal)."),
        ]
    return [
        f"Each {'OFDM symbol' if cfg.tokens == 'symbol' else 'DCT coefficient over the slot'} of a 14 x 72 channel grid",
        "is one token: its 72 delay taps (an inverse DFT over the subcarriers), real and imaginary; a regression head",
        "predicts each next token as a Gaussian.",
    ]


def _main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ivsim.ai.large_model_card", description=__doc__.splitlines()[0])
    p.add_argument("--refine-eval", type=Path, default=None, help="folder written by `ivsim eval refine -o DIR`")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--cache", type=Path, default=None, help="keep/reuse the generation report in this folder")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    card = large_model_card(refine_eval=args.refine_eval, n=args.n, rows_cache=args.cache)
    out = large_model_weights_path().with_suffix(".md")
    out.write_text(card)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
