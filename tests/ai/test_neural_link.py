"""The full neural link in the simulation (link.fidelity: full), the chain under it, and its bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cli_checks import one_line_error as _one_line

from ivsim.ai.latency import load_latency_profile
from ivsim.ai.link import PERFECT, ChannelBank, LinkChain
from ivsim.ai.neural_link import NeuralLinkEvaluator
from ivsim.cli import main
from ivsim.config import load_scenario
from ivsim.config.loader import load_scenario_text
from ivsim.errors import ModelError, ScenarioError
from ivsim.sim.engine import Simulation
from ivsim.sim.links import TxBatch
from ivsim.world.maps import load_map

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "scenarios" / "nyc_brooklyn_bridge.yaml"
SMALL = ["link.image_size=[32, 64]"]  # 2 patches, 1,024 symbols, 2 OFDM grids per frame
FAST = ["duration_s=30", "traffic.fps=1", *SMALL]


@pytest.fixture(scope="module")
def nyc_map():  # noqa: ANN201
    return load_map(load_scenario(DEFAULT).map)


def run(nyc_map, *overrides: str, seed: int | None = None):  # noqa: ANN001, ANN201
    sim = Simulation(load_scenario(DEFAULT, overrides=[*FAST, *overrides], seed=seed), roadmap=nyc_map)
    assert sim.run().status == "complete"
    df = sim.log.to_pandas()
    return sim, df, df[df.event == "tx"].reset_index(drop=True)


def batch(n: int, *, scene: int = 0, held: int = 0, sinr_db: float = 15.0) -> TxBatch:
    return TxBatch(
        vehicle=np.arange(n), bs=np.zeros(n, dtype=int), scene=np.full(n, scene), uplink=np.zeros(n, dtype=bool),
        size_bits=np.full(n, 49152), bandwidth_hz=np.full(n, 20e6), queue_s=np.zeros(n),
        sinr_db=np.full(n, sinr_db), snr_db=np.full(n, sinr_db), speed_mps=np.full(n, 10.0),
        carrier_hz=np.full(n, 3.5e9), deadline_s=np.full(n, 0.1), frame=np.arange(n), estimator_scene=np.full(n, held),
    )  # fmt: skip


def evaluator(*overrides: str, seed: int = 0) -> NeuralLinkEvaluator:
    return NeuralLinkEvaluator(load_scenario(DEFAULT, overrides=[*SMALL, *overrides]), seed=seed)


# ---------------------------------------------------------------------- in the simulation


def test_full_run_logs_quality_of_every_frame(nyc_map) -> None:
    sim, df, tx = run(nyc_map, "link.estimator.kind=lmmse")
    assert sim.links.evaluator.name == "full" and len(tx) == 30
    assert (tx.codec == "ctcd").all() and (tx.estimator == "lmmse").all()
    assert (tx.estimator_scene == "street_canyon").all()
    outage = tx.drop_reason == "outage"  # the start of the route has a few frames below -6 dB SINR
    assert (tx.sinr_db[outage] < -6).all() and outage.sum() < 5
    assert tx.psnr_db[outage].isna().all() and (tx.symbols[outage] == 0).all()
    sent = tx[~outage]
    assert (sent.symbols == 1024).all()
    assert sent.psnr_db.between(10, 50).all() and sent.ssim.between(0, 1).all()
    assert (sent.nmse_db < -5).all()
    profile = load_latency_profile("gpu_rtx4090_reported")
    expected = profile.frame_s("ctcd", "lmmse", symbols=1024, realizations=1, grids=2)
    np.testing.assert_allclose(sent.compute_s, expected)
    np.testing.assert_allclose(sent.delay_s, sent.queue_s + sent.airtime_s + sent.compute_s)
    assert tx.size_bits.eq(24 * 32 * 64).all()
    assert "device auto: no CUDA GPU" in " ".join(df.loc[df.event == "note", "message"]) or torch.cuda.is_available()


def test_same_seed_same_frames(nyc_map) -> None:
    cols = ["psnr_db", "ssim", "nmse_db", "sinr_db"]
    a = run(nyc_map, "link.estimator.kind=ls", seed=3)[2][cols]
    b = run(nyc_map, "link.estimator.kind=ls", seed=3)[2][cols]
    c = run(nyc_map, "link.estimator.kind=ls", seed=4)[2][cols]
    assert a.equals(b)
    assert not a.psnr_db.equals(c.psnr_db)


@pytest.mark.parametrize(("direction", "held_is_current"), [("downlink", False), ("uplink", True)])
def test_who_holds_which_estimator(nyc_map, direction, held_is_current) -> None:
    """Downlink: the car keeps its departure scene's estimator over the bridge; uplink: the BS matches every scene."""
    _, _, tx = run(
        nyc_map, "duration_s=400", "traffic.fps=0.05", "link.estimator.kind=lmmse", f"link.direction={direction}"
    )
    assert {"street_canyon", "river_bridge"} <= set(tx.scene)
    expected = tx.scene.astype(str) if held_is_current else "street_canyon"
    assert (tx.estimator_scene.astype(str) == expected).all()


def test_measured_latency_is_the_batched_call(nyc_map) -> None:
    _, _, tx = run(nyc_map, "link.estimator.kind=ls", "link.latency=measured", "duration_s=5")
    sent = tx[tx.drop_reason != "outage"]
    assert len(sent) and (sent.compute_s > 0).all() and sent.compute_s.lt(30).all()


# ---------------------------------------------------------------------- the evaluator


def test_perfect_csi_bounds_ls_and_nmse_is_null_for_it() -> None:
    b = batch(12, sinr_db=3.0)
    perfect = evaluator("link.estimator.kind=perfect").evaluate(b)
    ls = evaluator("link.estimator.kind=ls").evaluate(b)
    assert np.isnan(perfect.nmse_db).all() and np.isfinite(ls.nmse_db).all()
    assert perfect.psnr_db.mean() > ls.psnr_db.mean() + 0.5
    assert list(perfect.extra["estimator"]) == [PERFECT] * 12


def test_held_estimator_is_used_in_another_scene() -> None:
    ev = evaluator("link.estimator.kind=lmmse")
    res = ev.evaluate(batch(2, scene=1, held=0))
    assert list(res.extra["estimator_scene"]) == ["street_canyon"] * 2
    res = ev.evaluate(batch(2, scene=1, held=1))
    assert list(res.extra["estimator_scene"]) == ["river_bridge"] * 2


def test_outage_and_lost_frames() -> None:
    b = batch(4, sinr_db=-3.0)
    b.sinr_db[0] = -20.0  # below link.min_sinr_db: not sent
    digital = ("link.estimator.kind=perfect", "link.codec.kind=digital", "link.image_size=[72, 128]")
    res = evaluator(*digital).evaluate(b)
    assert list(res.drop_reason) == ["outage", "decode", "decode", "decode"]
    assert not res.delivered.any()
    assert np.isnan(res.psnr_db[0]) and res.extra["symbols"][0] == 0
    clear = batch(2, sinr_db=25.0)
    clear.deadline_s[:] = 1.0  # LDPC decoding of 6,144 symbols takes ~0.2 s in the latency profile
    good = evaluator(*digital).evaluate(clear)
    assert good.delivered.all() and (good.psnr_db > 25).all()


def test_late_frames_are_scored_but_not_delivered() -> None:
    b = batch(2)
    b.deadline_s[:] = 1e-4
    res = evaluator("link.estimator.kind=ls", "link.latency_profile=cpu").evaluate(b)
    assert list(res.drop_reason) == ["deadline", "deadline"] and np.isfinite(res.psnr_db).all()


def test_diffusion_weights_for_another_profile_fall_back_to_lmmse() -> None:
    text = DEFAULT.read_text().replace("street_canyon: {profile: uma_nlos", "street_canyon: {profile: umi_nlos")
    sc = load_scenario_text(text, name="changed.yaml", base_dir=DEFAULT.parent, overrides=SMALL)
    notes: list[str] = []
    ev = NeuralLinkEvaluator(sc, seed=0, notes=notes)
    assert any("street_canyon" in n and "trained for profile" in n and "lmmse" in n for n in notes)
    assert ev.estimator_for(0)[1] == "lmmse"


def test_diffusion_estimator_in_the_link() -> None:
    res = evaluator().evaluate(batch(2, sinr_db=10.0))
    assert list(res.extra["estimator"]) == ["diffusion"] * 2
    assert (res.nmse_db < -10).all()  # LS alone gives about -8.5 dB over the whole grid at 10 dB


# ---------------------------------------------------------------------- common random numbers


def _same(a, b, frames) -> None:
    """Bit-identical channel estimates, residuals and images of ``frames``."""
    for col in ("psnr_db", "nmse_db"):
        np.testing.assert_array_equal(getattr(a, col)[frames], getattr(b, col)[frames], err_msg=col)
    np.testing.assert_array_equal(a.extra["pilot_resid_db"][frames], b.extra["pilot_resid_db"][frames])
    # torchmetrics' SSIM convolves the whole batch: the other frames move its float32 rounding
    np.testing.assert_allclose(a.ssim[frames], b.ssim[frames], rtol=1e-5)


def _spy_channels(ev: NeuralLinkEvaluator) -> list[torch.Tensor]:
    """Record every channel tensor ``ev`` draws."""
    drawn: list[torch.Tensor] = []
    draw = ev.channels.draw

    def recorded(*args, **kwargs):
        drawn.append(draw(*args, **kwargs).clone())
        return drawn[-1]

    ev.channels.draw = recorded
    return drawn


def test_channels_and_noise_do_not_depend_on_the_estimator_assignment() -> None:
    """Two runs that hand half the frames to another estimator: the same channels, the other half decodes alike."""
    from ivsim.ai.estimators import LMMSEChannelEstimator

    b1, b2 = batch(6), batch(6)
    b2.adapter_id = np.array(["", "", "", "lmmse", "lmmse", "lmmse"], dtype=object)
    ev1, ev2 = evaluator("link.estimator.kind=ls"), evaluator("link.estimator.kind=ls")
    sc = load_scenario(DEFAULT)
    ev2.add_refined("lmmse", LMMSEChannelEstimator(ev2.grid, profile=sc.profiles["rma_los"], scene="river_bridge"))
    h1, h2 = _spy_channels(ev1), _spy_channels(ev2)
    r1, r2 = ev1.evaluate(b1), ev2.evaluate(b2)
    assert len(h1) == len(h2) == 1 and torch.equal(h1[0], h2[0])
    assert list(r2.extra["estimator"]) == ["ls"] * 3 + ["lmmse"] * 3
    _same(r1, r2, slice(0, 3))  # LS frames: the same channels and noise give the same estimates, bit for bit
    assert (r1.nmse_db[3:] != r2.nmse_db[3:]).all()  # the same channels, another estimate


def test_a_batch_does_not_depend_on_earlier_batches_or_its_order() -> None:
    """Same (vehicle, frame) pairs, same draws: after another batch or first, in any order (diffusion sampling too)."""
    first = batch(3)
    other = batch(3)
    other.frame += 10
    ev = evaluator()
    ev.evaluate(other)
    after = ev.evaluate(first)
    alone = evaluator().evaluate(first)
    _same(after, alone, slice(None))
    perm = np.array([2, 0, 1])
    shuffled = evaluator().evaluate(first.take(perm))
    _same(shuffled, alone.take(perm), slice(None))
    reseeded = evaluator(seed=1).evaluate(first)
    assert (reseeded.nmse_db != alone.nmse_db).all()


def test_an_estimator_group_samples_independently_of_the_other_groups() -> None:
    """The river-bridge diffusion group draws the same sampling noise whether the group before it sampled or not."""
    from ivsim.ai.estimators import LSChannelEstimator

    b1 = batch(4)
    b1.estimator_scene[2:] = 1
    b1.adapter_id = np.array(["", "", "", ""], dtype=object)
    b2 = b1.take(slice(None))
    b2.adapter_id = np.array(["ls", "ls", "", ""], dtype=object)  # sorted before (1, ""): runs first, draws nothing
    ev1, ev2 = evaluator(), evaluator()
    ev2.add_refined("ls", LSChannelEstimator(ev2.grid))
    r1, r2 = ev1.evaluate(b1), ev2.evaluate(b2)
    assert list(r1.extra["estimator"]) == ["diffusion"] * 4 and list(r2.extra["estimator"][:2]) == ["ls"] * 2
    _same(r1, r2, slice(2, 4))


def test_device_cuda_without_gpu_is_an_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ScenarioError, match="device: cuda"):
        evaluator("device=cuda")


def test_plugin_codec_needs_a_latency_entry() -> None:
    with pytest.raises(ModelError, match="latency profile .* has no codec"):
        ev = evaluator("link.codec.kind=ivsim.ai.codecs:DeepJSCCCodec", "link.estimator.kind=ls")
        ev.latency.frame_s("my_codec", "ls", symbols=1, realizations=1, grids=1)


# ---------------------------------------------------------------------- the chain


def test_chain_geometry_and_airtime() -> None:
    from ivsim.ai.codecs import make_codec

    chain = LinkChain(make_codec("ctcd"), image_size=(72, 128), realizations=3)
    assert (chain.symbols, chain.n_grids, chain.realizations) == (6144, 8, 3)
    assert chain.block_of_grid.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    # 8 grids of 72 subcarriers x 30 kHz for 14 symbols of 1/30 kHz (+ CP) in 2.16 MHz: 8 slots
    slot_s = 14 * (1 + 6 / 72) / 30e3
    np.testing.assert_allclose(chain.airtime_s(np.array([2.16e6, 17.28e6])), [8 * slot_s, slot_s])


def test_chain_perfect_csi_flat_channel_matches_awgn() -> None:
    """A unit flat channel, perfect CSI, unbiased symbols: AWGN, so the chain's PSNR is the codec's AWGN PSNR."""
    from ivsim.ai.codecs import awgn, make_codec
    from ivsim.ai.images import DEFAULT_IMAGES, ImageFolder, psnr

    codec = make_codec("ctcd", image_size=(32, 64))
    chain = LinkChain(codec, image_size=(32, 64), equalizer="unbiased")
    imgs = ImageFolder(DEFAULT_IMAGES, split="test", size=(32, 64)).frames()
    h = torch.ones(len(imgs), 1, 1, 14, 72, dtype=torch.complex64)
    snr = torch.full((len(imgs),), 5.0)
    out = chain.transmit(imgs, h, snr, [(PERFECT, torch.arange(len(imgs)))], generator=torch.Generator().manual_seed(0))
    z = awgn(codec.encode(imgs), 5.0, generator=torch.Generator().manual_seed(1))
    ref = psnr(codec.decode(z, snr, size=(32, 64)), imgs).mean().item()
    assert abs(out.psnr_db.mean() - ref) < 0.3


def test_perfect_csi_bounds_every_estimator_frame_by_frame() -> None:
    """With MMSE symbols (the default) a channel estimate never beats knowing the channel (within noise)."""
    from ivsim.ai.codecs import make_codec
    from ivsim.ai.estimators import make_estimator
    from ivsim.ai.images import DEFAULT_IMAGES, ImageFolder

    sc = load_scenario(DEFAULT)
    chain = LinkChain(make_codec("ctcd", image_size=(32, 64)), image_size=(32, 64))
    imgs = ImageFolder(DEFAULT_IMAGES, split="test", size=(32, 64)).frames()
    n = len(imgs)
    h = ChannelBank(chain.grid).draw([sc.profiles["uma_nlos"]] * n, np.full(n, 3.5e9), np.full(n, 10.0),
                                     realizations=1, generator=torch.Generator().manual_seed(5))  # fmt: skip
    snr = torch.full((n,), 5.0)
    out = {}
    for est in (PERFECT, make_estimator("ls", grid=chain.grid)):
        gen = torch.Generator().manual_seed(9)  # the same noise for both
        out[getattr(est, "name", est)] = chain.transmit(imgs, h, snr, [(est, torch.arange(n))], generator=gen)
    assert (out["perfect"].psnr_db >= out["ls"].psnr_db - 0.5).all()
    assert out["perfect"].psnr_db.mean() > out["ls"].psnr_db.mean()


def test_channel_bank_groups_profiles() -> None:
    sc = load_scenario(DEFAULT)
    bank = ChannelBank(LinkChain(_cheap_codec(), image_size=(32, 32)).grid)
    profs = [sc.profiles["uma_nlos"], sc.profiles["rma_los"], sc.profiles["uma_nlos"]]
    h = bank.draw(profs, np.full(3, 3.5e9), np.full(3, 10.0), realizations=2, generator=torch.Generator().manual_seed(0))
    assert h.shape == (3, 2, 1, 14, 72) and len(bank._samplers) == 2
    power = h.abs().pow(2).mean().item()
    assert 0.3 < power < 3.0  # unit average energy per resource element (process normalisation)


def _cheap_codec():  # noqa: ANN202
    from ivsim.ai.codecs import make_codec

    return make_codec("deepjscc", image_size=(32, 32))


# ---------------------------------------------------------------------- bad input on the command line


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("link.codec.kind=nope", "unknown codec kind 'nope'"),
        ("link.estimator.kind=nope", "unknown estimator kind 'nope'"),
        ("link.estimator.weights={street_canyon: /nonexistent/est.safetensors}", "not found"),
        ("link.estimator.weights={street_canyon: MODELS/codec_ctcd.safetensors}", "codec/ctcd"),
        ("link.estimator.weights={moon: MODELS/codec_ctcd.safetensors}", "unknown scene"),
        ("link.estimator.weights={street_canyon: GARBAGE}", "safetensors"),
        ("link.codec.weights=MODELS/estimator_street_canyon.safetensors", "estimator/diffusion"),
        ("link.grid.fft_size=48", "grid"),
        ("link.grid.pilot_ofdm_symbol_indices=[]", "pilot_ofdm_symbol_indices"),
        ("link.grid.pilot_ofdm_symbol_indices=[2, 20]", "pilot symbols"),
        ("link.images=EMPTY", "no readable images"),
        ("link.latency_profile=/nonexistent/profile.yaml", "latency profile not found"),
        ("link.fidelity=turbo", "link.fidelity"),
    ],
)
def test_bad_link_settings_one_line_exit_2(tmp_path, capsys, override, expected) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a safetensors file" * 10)
    (tmp_path / "empty").mkdir()
    override = (
        override.replace("MODELS", str(REPO / "models")).replace("GARBAGE", str(garbage))
        .replace("EMPTY", str(tmp_path / "empty"))
    )  # fmt: skip
    line = _one_line(capsys, main(["validate", str(DEFAULT), "--set", override]))
    assert expected in line, line


def test_cuda_without_gpu_on_the_command_line(capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    line = _one_line(capsys, main(["validate", str(DEFAULT), "--set", "device=cuda"]))
    assert "device: cuda" in line and "allowed here: auto, cpu" in line
