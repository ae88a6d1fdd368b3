"""The large model, LoRA adapters, the neural refiner in the simulation, and ivsim refine / bench refine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ivsim.ai.estimators import DiffusionChannelEstimator
from ivsim.ai.large_model import (
    COND_DIM,
    LargeModel,
    LargeModelConfig,
    condition_vector,
    from_tokens,
    paths_to_tokens,
    power_delay_profile_db,
    to_tokens,
    tokens_to_paths,
    train_large_model,
    training_profiles,
)
from ivsim.ai.refine import Adapter, adapter_id_for, apply_adapter, lora_finetune
from ivsim.cli import main
from ivsim.config import load_scenario
from ivsim.config.schema import LinkLevelProfile, PathLossRef, SystemLevelProfile
from ivsim.errors import ModelError
from ivsim.phy import ChannelSampler, GridSpec

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "scenarios" / "nyc_brooklyn_bridge.yaml"
TINY = LargeModelConfig(n_embd=32, n_layer=1, n_head=2, pilot_tokens=1, tokens="symbol", cov_rank=0)
TINY_DCT = LargeModelConfig(n_embd=32, n_layer=1, n_head=2, pilot_tokens=1, tokens="dct", cov_rank=4)
TINY_PATH = LargeModelConfig(n_embd=32, n_layer=1, n_head=2, pilot_tokens=1, tokens="path", cov_rank=2)
RMA = SystemLevelProfile(model="rma", los=True)
TDL = LinkLevelProfile(model="tdl", variant="C", delay_spread_s=300e-9, pathloss=PathLossRef(model="umi", los=False))
ASSUMED = (
    "refinement.assumed={label: test timings, lm_infer: {fixed_s: 0.1, per_item_s: 0.001}, "
    "finetune: {fixed_s: 0.5, per_item_s: 0.02}, adapter: {fixed_bytes: 1000, per_rank_bytes: 40000}}"
)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:  # noqa: ANN001
    out = tmp_path_factory.mktemp("lm")
    train_large_model(
        config=TINY, profiles={"rma": RMA, "tdl": TDL}, steps=4, batch_size=8, per_profile=16, refresh_every=2,
        refresh_size=8, out_dir=out, progress=False, checkpoint_every=2,
    )  # fmt: skip
    return out / "large_model.safetensors"


@pytest.fixture(scope="module")
def base() -> DiffusionChannelEstimator:
    return DiffusionChannelEstimator(scene="street_canyon")


# ---------------------------------------------------------------------- large model


def test_tokens_round_trip_and_pdp() -> None:
    h = ChannelSampler(RMA, GridSpec(), carrier_hz=3.5e9).sample(4, speed_mps=10.0, generator=torch.Generator().manual_seed(0))
    tok = to_tokens(h)
    assert tok.shape == (4, 14, 144)
    torch.testing.assert_close(from_tokens(tok, 1, 72), h, atol=1e-5, rtol=1e-5)
    pdp = power_delay_profile_db(h)
    assert pdp.shape == (72,) and abs(float(torch.pow(10.0, pdp / 10).sum()) - 1.0) < 1e-3
    assert int(pdp.argmax()) in (0, 1, 71)  # a 32 ns channel is one 463 ns tap wide


def test_dct_tokens_round_trip_and_hold_a_slow_channel_in_their_first_coefficient() -> None:
    h = ChannelSampler(RMA, GridSpec(), carrier_hz=3.5e9).sample(4, speed_mps=10.0, generator=torch.Generator().manual_seed(0))
    tok = to_tokens(h, "dct")
    assert tok.shape == (4, 14, 144)  # a token per DCT coefficient over the slot: 72 taps, real and imaginary
    torch.testing.assert_close(from_tokens(tok, 1, 72, "dct"), h, atol=1e-5, rtol=1e-5)
    energy = tok.pow(2).sum(dim=(0, 2))
    assert float(energy[0] / energy.sum()) > 0.9  # 10 m/s at 3.5 GHz hardly changes a channel over a slot
    # orthonormal: the tokens keep the channel's energy
    assert float(tok.pow(2).sum()) == pytest.approx(float(h.abs().pow(2).sum()), rel=1e-4)


def test_path_tokens_keep_delays_powers_and_doppler() -> None:
    sampler = ChannelSampler(SystemLevelProfile(model="uma", los=False), GridSpec(), carrier_hz=3.5e9)
    a, tau = sampler.sample_paths(256, speed_mps=(10.0, 30.0), generator=torch.Generator().manual_seed(0))
    tok = paths_to_tokens(a, tau, max_paths=30)
    assert tok.shape == (256, 30, 3)
    assert torch.equal(tok[:, a.shape[2] :, 1], torch.full((256, 30 - a.shape[2]), -6.0))  # absent paths: the floor
    b, tau2 = tokens_to_paths(tok, n_sym=14, generator=torch.Generator().manual_seed(1))
    real_tau = tau.sort(dim=1).values
    torch.testing.assert_close(tau2[:, : a.shape[2]], real_tau, atol=1e-10, rtol=1e-4)  # delays kept
    ratio = b[:, 0, : a.shape[2]].abs().pow(2).mean(-1).sum(-1) / a.abs().pow(2).mean(-1).sum(-1).squeeze(1)
    assert float((ratio - 1).abs().max()) < 1e-3  # every channel's power kept (paths below -60 dB aside)
    h, g = sampler.render_paths(a, tau), sampler.render_paths(b, tau2)
    assert float(g.abs().pow(2).mean()) == pytest.approx(float(h.abs().pow(2).mean()), rel=0.1)  # phases random
    change = [float((x[:, :, -1] - x[:, :, 0]).abs().pow(2).mean() / x.abs().pow(2).mean()) for x in (h, g)]
    assert change[1] == pytest.approx(change[0], rel=0.2)  # each path's Doppler kept: the same change over the slot
    assert float(change[0]) > 1e-3
    # too many paths: the strongest are kept
    top = paths_to_tokens(a, tau, max_paths=4)
    assert torch.equal(top[..., 1].sort(dim=1).values, tok[..., 1].topk(4, dim=1).values.sort(dim=1).values)


def test_path_token_model_trains_and_generates_channels(tmp_path) -> None:
    with pytest.raises(ValueError, match="one receive antenna"):
        LargeModelConfig(tokens="path", num_rx_ant=2)
    train_large_model(config=TINY_PATH, profiles={"rma": RMA, "tdl": TDL}, steps=3, batch_size=8, per_profile=16,
                      refresh_every=2, refresh_size=8, out_dir=tmp_path, progress=False)  # fmt: skip
    lm = LargeModel(tmp_path / "large_model.safetensors")
    assert lm.config.tokens == "path" and lm.net.token_scale.shape == (24, 3)
    h = lm.generate(TDL, 6, carrier_hz=3.5e9, speed_mps=(8.0, 20.0), generator=torch.Generator().manual_seed(0))
    assert h.shape == (6, 1, 14, 72) and torch.isfinite(h.abs()).all()
    assert float(h.abs().pow(2).mean()) == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(ModelError, match="subcarrier spacing"):
        lm.check_grid(GridSpec(subcarrier_spacing_hz=15e3))


def test_config_of_the_first_weights_reads_as_diagonal_symbol_tokens() -> None:
    d = LargeModelConfig(tokens="dct", cov_rank=8).to_json()
    assert d["tokens"] == "dct" and d["cov_rank"] == 8
    del d["tokens"], d["cov_rank"], d["max_paths"], d["subcarrier_spacing_hz"]
    old = LargeModelConfig.from_json(d)
    assert old.tokens == "symbol" and old.cov_rank == 0 and old.max_paths == 24
    with pytest.raises(ValueError, match="tokens must be one of"):
        LargeModelConfig(tokens="frame")


def test_low_rank_nll_is_the_gaussian_log_density() -> None:
    from ivsim.ai.large_model import ChannelGPT

    net = ChannelGPT(TINY_DCT).eval().requires_grad_(False)
    prefix = net.prefix(condition_vector(RMA, carrier_hz=3.5e9, speed_mps=torch.tensor([5.0, 9.0]), distance_m=100.0), None)
    x = torch.randn(2, 14, 144)
    mean, logvar, factor = net(prefix, x)
    cov = factor[1, 3] @ factor[1, 3].T + torch.diag(torch.exp(logvar[1, 3]))
    want = -torch.distributions.MultivariateNormal(mean[1, 3].double(), cov.double()).log_prob(x[1, 3].double()) / 144
    assert float(net.nll(prefix, x)[1, 3]) == pytest.approx(float(want) - 0.5 * np.log(2 * np.pi), rel=1e-4)
    tok = net.generate(prefix, generator=torch.Generator().manual_seed(0))
    assert tok.shape == (2, 14, 144) and torch.isfinite(tok).all()


def test_condition_vector_tells_scenes_apart() -> None:
    a = condition_vector(RMA, carrier_hz=3.5e9, speed_mps=torch.tensor([5.0, 10.0]), distance_m=100.0)
    b = condition_vector(SystemLevelProfile(model="uma", los=False), carrier_hz=3.5e9, speed_mps=torch.tensor([5.0, 10.0]),
                         distance_m=100.0)  # fmt: skip
    c = condition_vector(TDL, carrier_hz=3.5e9, speed_mps=torch.tensor([5.0, 10.0]), distance_m=torch.tensor([50.0, 60.0]))
    assert a.shape == b.shape == c.shape == (2, COND_DIM)
    assert not torch.equal(a, b) and not torch.equal(a, c)
    assert a[1, -2] == 0.5 and c[1, -1] == pytest.approx(0.2)


def test_training_profiles_cover_every_shipped_scene_and_hold_some_out() -> None:
    train, held = training_profiles()
    assert {"nyc_brooklyn_bridge/uma_nlos", "nyc_brooklyn_bridge/rma_los"} <= set(train)
    assert held and not set(held) & set(train)


def test_train_resume_load_and_generate(tiny_lm, tmp_path) -> None:
    lm = LargeModel(tiny_lm)
    assert lm.metadata["ivsim.train_steps"] == "4"
    lm.check_grid(GridSpec())
    with pytest.raises(ModelError, match="generates 14 x 72"):
        lm.check_grid(GridSpec(fft_size=36))
    g = torch.Generator().manual_seed(0)
    h = lm.generate(RMA, 5, carrier_hz=3.5e9, speed_mps=(8.0, 20.0), generator=g)
    assert h.shape == (5, 1, 14, 72) and h.dtype == torch.complex64 and torch.isfinite(h.abs()).all()
    obs = torch.zeros(2, 1, 2, 72, dtype=torch.complex64)
    again = lm.generate(RMA, 5, carrier_hz=3.5e9, speed_mps=10.0, pilots=obs, generator=torch.Generator().manual_seed(0))
    assert again.shape == h.shape
    # resume: a second call with more steps continues from the checkpoint, not from scratch
    out = tiny_lm.parent
    res = train_large_model(config=TINY, profiles={"rma": RMA}, steps=6, batch_size=8, per_profile=16, out_dir=out,
                            progress=False, resume=True)  # fmt: skip
    assert res["steps"] == 6 and len(res["loss_curve"]) >= 1


def test_large_model_file_errors(tmp_path) -> None:
    with pytest.raises(ModelError, match="not found|no such"):
        LargeModel(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(ModelError):
        LargeModel(bad)
    with pytest.raises(ModelError, match="architecture"):
        LargeModel(REPO / "models" / "estimator_street_canyon.safetensors")


# ---------------------------------------------------------------------- LoRA adapters


def test_lora_adapter_round_trip_and_base_check(base, tmp_path) -> None:
    h = ChannelSampler(RMA, GridSpec(), carrier_hz=3.5e9).sample(16, speed_mps=10.0, generator=torch.Generator().manual_seed(1))
    ad = lora_finetune(base, h, steps=2, rank=2, batch_size=4, generator=torch.Generator().manual_seed(0),
                       metadata={"ivsim.adapter_id": "abc", "ivsim.target_scene": "river_bridge"})  # fmt: skip
    assert ad.rank == 2 and ad.adapter_id == "abc" and ad.tensors
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in ad.tensors.items())  # B starts at 0 and moved
    path = ad.save(tmp_path / "a.safetensors")
    assert path.stat().st_size == ad.num_bytes
    back = Adapter.load(path)
    assert back.metadata == ad.metadata and back.tensors.keys() == ad.tensors.keys()
    refined = apply_adapter(base, back)
    assert refined.scene == "river_bridge" and base.scene == "street_canyon"
    y = torch.randn(2, 1, 14, 72, dtype=torch.complex64)
    no = torch.full((2,), 0.1)
    a = base.estimate(y, no, generator=torch.Generator().manual_seed(3))[0]
    b = refined.estimate(y, no, generator=torch.Generator().manual_seed(3))[0]
    assert not torch.allclose(a, b)  # the merged adapter changes the estimate
    other = DiffusionChannelEstimator(scene="river_bridge")
    with pytest.raises(ModelError, match="trained on base weights"):
        apply_adapter(other, back)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ModelError, match="junk.safetensors"):
        Adapter.load(tmp_path / "junk.safetensors")


def test_adapter_ids_are_keys() -> None:
    a = adapter_id_for("base", "hash", 256, 100, 8, 0)
    assert a == adapter_id_for("base", "hash", 256, 100, 8, 0)
    assert len({a, adapter_id_for("base", "hash", 256, 101, 8, 0), adapter_id_for("other", "hash", 256, 100, 8, 0)}) == 3


# ---------------------------------------------------------------------- in the simulation (link.fidelity: full)


def _full_run(nyc_map, tiny_lm, tmp_path, *extra: str):  # noqa: ANN001, ANN202
    from ivsim.sim.engine import Simulation

    overrides = [
        "duration_s=160", "traffic.fps=0.1", "link.image_size=[32, 64]", "refinement.policy.kind=reactive",
        "refinement.samples=8", "refinement.steps=2", "refinement.lora_rank=2", f"refinement.large_model={tiny_lm}",
        ASSUMED, *extra,
    ]  # fmt: skip
    sim = Simulation(load_scenario(DEFAULT, overrides=overrides), roadmap=nyc_map)
    assert sim.run().status == "complete"
    return sim.log.to_pandas()


@pytest.fixture(scope="module")
def nyc_map():  # noqa: ANN201
    from ivsim.world.maps import load_map

    return load_map(load_scenario(DEFAULT).map)


def test_full_refinement_deploys_a_real_adapter(nyc_map, tiny_lm, tmp_path) -> None:
    df = _full_run(nyc_map, tiny_lm, tmp_path, f"refinement.cache_dir={tmp_path / 'cache'}")
    done = df[df.event == "refine_done"].iloc[0]
    assert done.outcome == "late" and done.target_scene == "river_bridge"
    assert done.download_bytes == (tmp_path / "cache" / f"{done.adapter_id}.safetensors").stat().st_size
    assert done.finetune_s == pytest.approx(0.5 + 0.02 * 2) and done.lm_infer_s == pytest.approx(0.1 + 0.001 * 8)
    deploy = df[df.event == "deploy"].iloc[0]
    tx = df[df.event == "tx"]
    after = tx[tx.t_s > deploy.t_s]
    assert len(after) and (after.adapter_id == done.adapter_id).all() and (after.estimator_version == 1).all()
    assert (after.estimator_scene == "river_bridge").all()
    before = tx[tx.t_s < deploy.t_s]
    assert (before.estimator_version == 0).all() and (before.estimator_scene == "street_canyon").all()


def test_cached_adapter_for_other_base_weights_fails_the_job(nyc_map, tiny_lm, tmp_path) -> None:
    cache = tmp_path / "cache"
    df = _full_run(nyc_map, tiny_lm, tmp_path, f"refinement.cache_dir={cache}")
    aid = df[df.event == "refine_done"].iloc[0].adapter_id
    ad = Adapter.load(cache / f"{aid}.safetensors")
    ad.metadata["ivsim.base_id"] = "0123456789abcdef"
    ad.save(cache / f"{aid}.safetensors")
    df = _full_run(nyc_map, tiny_lm, tmp_path, f"refinement.cache_dir={cache}")
    done = df[df.event == "refine_done"].iloc[0]
    assert done.outcome == "failed" and "base weights" in str(done.reason) + str(df.get("message", ""))
    assert (df[df.event == "tx"].estimator_version == 0).all() and not (df.event == "deploy").any()


# ---------------------------------------------------------------------- command line


def test_refine_json(tiny_lm, capsys) -> None:
    code = main(["refine", "--from", "street_canyon", "--to", "river_bridge", "--samples", "8", "--steps", "2",
                 "--rank", "2", "--n-test", "4", "--frames", "1", "--snr", "10", "--large-model", str(tiny_lm),
                 "--set", ASSUMED, "--json"])  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    b = out["budget"]
    assert set(b) == {"upload_s", "queue_s", "lm_infer_s", "finetune_s", "download_s", "total_s", "upload_bytes",
                      "download_bytes", "gpu_s"}  # fmt: skip
    parts = b["upload_s"] + b["queue_s"] + b["lm_infer_s"] + b["finetune_s"] + b["download_s"]
    assert b["total_s"] == pytest.approx(parts) and b["gpu_s"] == pytest.approx(b["lm_infer_s"] + b["finetune_s"])
    assert b["lm_infer_s"] == pytest.approx(0.108) and b["finetune_s"] == pytest.approx(0.54)
    assert b["upload_bytes"] == 512 and b["download_bytes"] > 1000
    assert {q["estimator"] for q in out["quality"]} == {"before", "after", "oracle"}
    assert all(np.isfinite([q["nmse_db"], q["psnr_db"], q["ssim"]]).all() for q in out["quality"])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--to", "nowhere"], "--to: unknown scene 'nowhere' (allowed: street_canyon, river_bridge, brooklyn_urban)"),
        (["--to", "river_bridge", "--steps", "0"], "--steps (K) must be 1..5000, got 0"),
        (["--to", "river_bridge", "--samples", "5000"], "--samples (N) must be 1..4096, got 5000"),
        (["--to", "river_bridge", "--set", "cloud.backhaul.rate_bps=0"], "cloud.backhaul.rate_bps"),
    ],
)
def test_refine_bad_input_one_line_exit_2(tiny_lm, capsys, args, expected) -> None:
    code = main(["refine", "--from", "street_canyon", "--large-model", str(tiny_lm), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and expected in err and len(err.splitlines()) == 1


def test_bench_refine_writes_a_profile_section(tiny_lm, tmp_path, capsys) -> None:
    from ivsim.ai.latency import load_latency_profile

    prof = tmp_path / "latency_here.yaml"
    prof.write_text((REPO / "models" / "latency_cpu.yaml").read_text())
    code = main(["bench", "refine", "--samples", "8", "--steps", "1", "--rank", "2", "--repeats", "1",
                 "--large-model", str(tiny_lm), "--write-profile", str(prof), "--json"])  # fmt: skip
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    loaded = load_latency_profile(prof)
    assert loaded.refine is not None and loaded.codec  # link sections kept
    assert loaded.refine.finetune.per_item_s == res["finetune"]["per_item_s"]
    assert loaded.refine.adapter.per_rank_bytes > 0


def test_generation_report_and_card(tiny_lm, tmp_path) -> None:
    from ivsim.ai.large_model import generation_report
    from ivsim.ai.large_model_card import large_model_card

    (row,) = generation_report(LargeModel(tiny_lm), {"rma": RMA}, n=16)
    assert row["profile"] == "rma" and all(np.isfinite(v) for k, v in row.items() if k != "profile")
    assert -1.0 < row["freq_corr_real"] <= 1.0 and row["slot_change_real_db"] < 0  # real channels change little
    card = large_model_card(n=8, rows_cache=tmp_path)
    assert "ivsim train large-model --steps" in card and "held_out/" in card and "| nyc_brooklyn_bridge/rma_los |" in card
    assert (tmp_path / "large_model_report_8.json").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer on a machine without a GPU")
@pytest.mark.parametrize("what", [["large-model"], ["estimator", "--scenario", str(DEFAULT), "--scene", "river_bridge"]])
def test_training_on_cuda_without_a_gpu_is_one_line(what, capsys, tmp_path) -> None:
    from cli_checks import one_line_error

    code = main(["train", *what, "--device", "cuda", "--steps", "1", "--out", str(tmp_path), "-q"])
    line = one_line_error(capsys, code)
    assert "cuda" in line and "allowed here: auto, cpu" in line


def test_refine_data_probe_prints_one_row_per_kind_and_refuses_unknown_kinds() -> None:
    import subprocess
    import sys

    script = REPO / "analysis" / "refine_data_probe.py"
    small = ["--samples", "8", "--steps", "2", "--lr", "1e-3,1e-2", "--n-test", "4"]
    out = subprocess.run([sys.executable, str(script), *small, "--data", "real_static,real_incoherent"],
                         capture_output=True, text=True, cwd=REPO, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [ln.split("|")[1:-1] for ln in out.stdout.splitlines() if ln.startswith("| ")]
    kinds = [r[0].strip() for r in rows[1:]]
    assert kinds == ["unrefined", "real_static", "real_static", "real_incoherent", "real_incoherent"]
    assert all(float(r[3]) < 0 and float(r[4]) < 0 for r in rows[1:])  # NMSE in dB at 0 and 10 dB
    bad = subprocess.run([sys.executable, str(script), "--data", "fake"], capture_output=True, text=True, cwd=REPO,
                         timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "unknown ['fake']" in bad.stderr
