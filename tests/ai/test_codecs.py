"""Codecs, images and training: shapes, power, registry and plugins, shipped quality, the digital cliff."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ivsim.ai import codecs as C
from ivsim.ai.images import DEFAULT_IMAGES, ImageFolder, load_image, psnr, ssim, tile, untile
from ivsim.ai.train import train_codec
from ivsim.cli import main
from ivsim.errors import ModelError

SNRS = (-5.0, 0.0, 5.0, 10.0, 15.0, 20.0)


class TinyCodec:
    """A plugin codec for the ``module:Class`` path: 4x4-average pixels, sent uncoded."""

    name = "tiny"

    def __init__(self, *, gain: float = 1.0) -> None:
        self.gain = gain
        self.bandwidth_ratio = 1 / 32

    def symbols_for(self, height: int, width: int) -> int:
        return 3 * (height // 4) * (width // 4) // 2

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.avg_pool2d(images, 4).flatten(1) - 0.5
        return C.normalize_power(torch.view_as_complex(x.reshape(x.shape[0], -1, 2).contiguous()))

    def decode(self, symbols: torch.Tensor, snr_db: torch.Tensor, *, size: tuple[int, int]) -> torch.Tensor:
        h, w = size
        x = torch.view_as_real(symbols).reshape(symbols.shape[0], 3, h // 4, w // 4) * 0.2 + 0.5
        return torch.nn.functional.interpolate(x, size=(h, w)).clamp(0, 1)



@pytest.fixture(scope="module")
def test_frames() -> torch.Tensor:
    return ImageFolder(DEFAULT_IMAGES, split="test").frames()


@pytest.fixture(scope="module")
def shipped() -> dict[str, C.SemanticCodec]:
    return {kind: C.make_codec(kind) for kind in ("ctcd", "deepjscc")}


def _fresh(kind: str) -> C.SemanticCodec:
    return C.make_codec(kind, weights=None, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------ images


def test_shipped_images_and_splits() -> None:
    everything = ImageFolder(DEFAULT_IMAGES)
    assert len(everything) == 48
    assert len(ImageFolder(DEFAULT_IMAGES, split="train")) == 40
    frames = ImageFolder(DEFAULT_IMAGES, split="test").frames()
    assert frames.shape == (8, 3, 180, 320)
    assert frames.dtype == torch.float32 and 0.0 <= frames.min() and frames.max() <= 1.0


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        ImageFolder(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match=r"empty: no readable images"):
        ImageFolder(empty)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not a png at all")
    with pytest.raises(ModelError, match=r"bad: no readable images"):
        ImageFolder(bad)
    with pytest.raises(ModelError, match=r"x\.png: not a readable image"):
        load_image(bad / "x.png")
    plain = tmp_path / "plain"
    plain.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(plain / "a.png")
    with pytest.raises(ModelError, match="no MANIFEST.csv"):
        ImageFolder(plain, split="train")


def test_image_folder_resizes_and_crops_deterministically(tmp_path: Path) -> None:
    for i, size in enumerate([(40, 60), (50, 50)]):
        Image.fromarray(np.full((*size, 3), 40 * i, np.uint8)).save(tmp_path / f"im{i}.jpg")
    folder = ImageFolder(tmp_path, size=(32, 48))
    assert folder.frames().shape == (2, 3, 32, 48)
    with pytest.raises(ModelError, match="differ in size"):
        ImageFolder(tmp_path).frames()
    a = folder.random_crops(5, 16, generator=torch.Generator().manual_seed(3))
    b = folder.random_crops(5, 16, generator=torch.Generator().manual_seed(3))
    assert a.shape == (5, 3, 16, 16) and torch.equal(a, b)
    with pytest.raises(ModelError, match="larger than"):
        folder.random_crops(1, 64, generator=torch.Generator())


@pytest.mark.parametrize(("h", "w"), [(180, 320), (64, 96), (33, 31)])
def test_tile_untile_round_trip(h: int, w: int) -> None:
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    patches = tile(x, 32)
    assert patches.shape == (2 * math.ceil(h / 32) * math.ceil(w / 32), 3, 32, 32)
    assert torch.equal(untile(patches, h, w), x)
    if h >= 64 and w >= 64:  # image-major, row-major: patch 1 is image 0's second patch of the first row
        assert torch.equal(patches[1], x[0, :, :32, 32:64])


def test_psnr_ssim_known_values() -> None:
    x = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0)) * 0.8
    assert torch.isinf(psnr(x, x)).all()
    assert torch.allclose(ssim(x, x), torch.ones(2))
    # a constant error of 0.1 on a data range of 1: PSNR = 10 log10(1 / 0.01) = 20 dB exactly
    assert torch.allclose(psnr(x + 0.1, x), torch.full((2,), 20.0), atol=1e-4)
    assert (ssim(x + 0.1, x) < 1).all()


# ------------------------------------------------------------------ channel


def test_awgn_power_is_total_complex_variance() -> None:
    s = torch.ones(4, 200_000, dtype=torch.complex64)
    snr = torch.tensor([0.0, 3.0, 10.0, 20.0])
    noise = C.awgn(s, snr, generator=torch.Generator().manual_seed(0)) - s
    n0 = 10 ** (-snr / 10)
    assert torch.allclose(noise.abs().pow(2).mean(1), n0, rtol=0.02)
    assert torch.allclose(noise.real.pow(2).mean(1), n0 / 2, rtol=0.02)
    a = C.awgn(s[:1, :10], 5.0, generator=torch.Generator().manual_seed(9))
    b = C.awgn(s[:1, :10], 5.0, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


# ------------------------------------------------------------------ neural codecs


@pytest.mark.parametrize("kind", ["ctcd", "deepjscc"])
def test_neural_encode_decode_shapes_and_power(kind: str) -> None:
    codec = _fresh(kind)
    images = torch.rand(3, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    k = codec.symbols_for(64, 96)
    assert k == 2 * 3 * 512
    s = codec.encode(images)
    assert s.shape == (3, k) and s.dtype == torch.complex64
    assert torch.allclose(s.abs().pow(2).mean(1), torch.ones(3), atol=1e-4)
    out = codec.decode(s, torch.tensor([0.0, 10.0, 20.0]), size=(64, 96))
    assert out.shape == (3, 3, 64, 96) and 0 <= out.min() and out.max() <= 1
    assert codec.decode(s[:1], 7.0, size=(64, 96)).shape == (1, 3, 64, 96)
    with pytest.raises(ModelError, match=r"expected \[B, 3072\]"):
        codec.decode(s[:, :100], 7.0, size=(64, 96))
    with pytest.raises(ModelError, match="images must be"):
        codec.encode(torch.rand(3, 64, 96))


@pytest.mark.parametrize("kind", ["ctcd", "deepjscc"])
def test_neural_param_count_and_determinism(kind: str) -> None:
    a, b = _fresh(kind), _fresh(kind)
    assert 300_000 <= a.num_parameters <= 600_000
    for pa, pb in zip(a.net.parameters(), b.net.parameters(), strict=True):
        assert torch.equal(pa, pb)
    state = torch.get_rng_state()
    _fresh(kind)
    assert torch.equal(state, torch.get_rng_state()), "building a codec must not touch the global RNG"


def test_equal_channel_uses_for_whole_frames() -> None:
    codecs = [_fresh("ctcd"), _fresh("deepjscc"), C.DigitalCodec()]
    assert {c.symbols_for(180, 320) for c in codecs} == {60 * 512}
    assert {c.bandwidth_ratio for c in codecs} == {1 / 6}


def test_shipped_weights_quality_grows_with_snr_without_cliff(shipped, test_frames) -> None:  # noqa: ANN001
    rows = C.eval_awgn(list(shipped.values()), images=test_frames[:4], snrs_db=(0.0, 5.0, 20.0), seed=0)
    by = {(r["codec"], r["snr_db"]): r for r in rows}
    for kind in shipped:
        p0, p5, p20 = (by[kind, s]["psnr_db"] for s in (0.0, 5.0, 20.0))
        assert p20 > 24.0, (kind, p20)
        assert p0 <= p5 + 0.05 <= p20 + 0.1, (kind, p0, p5, p20)
        assert p5 - p0 < 3.0, (kind, p0, p5)  # graceful: no cliff
        assert by[kind, 20.0]["ssim"] > 0.7
        assert by[kind, 20.0]["symbols"] == 30720
    # the SNR-conditioned CTCD beats the blind DeepJSCC baseline at high SNR
    assert by["ctcd", 20.0]["psnr_db"] > by["deepjscc", 20.0]["psnr_db"]


def test_shipped_codec_is_deterministic(shipped, test_frames) -> None:  # noqa: ANN001
    codec = shipped["ctcd"]
    s1, s2 = codec.encode(test_frames[:1]), codec.encode(test_frames[:1])
    assert torch.equal(s1, s2)
    r1 = C.awgn(s1, 5.0, generator=torch.Generator().manual_seed(4))
    r2 = C.awgn(s2, 5.0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(codec.decode(r1, 5.0), codec.decode(r2, 5.0))


# ------------------------------------------------------------------ digital


@pytest.fixture(scope="module")
def small_frames(test_frames) -> torch.Tensor:  # noqa: ANN001
    return torch.nn.functional.interpolate(test_frames[[0, 5]], size=(90, 160), mode="area")


def test_digital_cliff(small_frames) -> None:  # noqa: ANN001
    codec = C.make_codec("digital")
    k = codec.symbols_for(90, 160)
    assert k == 15 * 512
    s = codec.encode(small_frames)
    assert s.shape == (2, k) and s.dtype == torch.complex64
    assert torch.allclose(s.abs().pow(2).mean(1), torch.ones(2), atol=0.1)
    assert all(q > 10 for q in codec.last_quality)
    jpeg_only = codec.source_only(small_frames)
    gen = torch.Generator().manual_seed(0)
    # high SNR: every code block decodes, the frame is exactly the JPEG
    out, lost = codec.decode_with_status(C.awgn(s, 20.0, generator=gen), torch.full((2,), 20.0), size=(90, 160))
    assert not lost.any()
    assert torch.equal(out, jpeg_only)
    assert (psnr(out, small_frames) > 25).all()
    # low SNR: below the code's threshold, frames are lost (mid-grey), the cliff
    out = codec.decode(C.awgn(s, -5.0, generator=gen), -5.0, size=(90, 160))
    assert codec.last_lost.all()
    assert torch.equal(out, torch.full_like(out, 0.5))
    assert (psnr(out, small_frames) < 15).all()


def test_digital_bad_parameters() -> None:
    with pytest.raises(ModelError, match="code_rate"):
        C.make_codec("digital", code_rate=0.1)
    with pytest.raises(ModelError, match="bits_per_symbol"):
        C.make_codec("digital", bits_per_symbol=3)


# ------------------------------------------------------------------ registry and plugins


def test_registry_and_module_class_plugin() -> None:
    assert set(C.CODECS) == {"ctcd", "deepjscc", "digital"}
    codec = C.make_codec(f"{__name__}:TinyCodec", gain=2.0)
    assert isinstance(codec, TinyCodec) and isinstance(codec, C.SemanticCodec)
    assert codec.gain == 2.0
    images = torch.rand(2, 3, 32, 64, generator=torch.Generator().manual_seed(0))
    rows = C.eval_awgn([codec], images=images, snrs_db=(10.0,))
    assert rows[0]["codec"] == "tiny" and rows[0]["symbols"] == 192 and rows[0]["lost"] == 0.0


@pytest.mark.parametrize(
    ("kind", "params", "match"),
    [
        ("jpeg2000", {}, r"unknown codec kind 'jpeg2000' \(allowed: ctcd, deepjscc, digital"),
        ("no_such_module_xyz:Foo", {}, "cannot import module 'no_such_module_xyz'"),
        ("ivsim.ai.codecs:Nope", {}, "has no attribute 'Nope'"),
        ("builtins:dict", {}, "is not a SemanticCodec"),
        (f"{__name__}:TinyCodec", {"colour": 1}, "bad parameters"),
        ("ctcd", {"weights": None, "colour": 1}, r"unknown parameter\(s\) \['colour'\]"),
        ("ctcd", {"weights": None, "bandwidth_ratio": 0.1}, "not a whole number"),
    ],
)
def test_make_codec_bad_input(kind: str, params: dict, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        C.make_codec(kind, **params)


def test_eval_refuses_unequal_channel_uses() -> None:
    images = torch.rand(1, 3, 32, 64)
    with pytest.raises(ModelError, match="equal k"):
        C.eval_awgn([_fresh("ctcd"), TinyCodec()], images=images, snrs_db=(10.0,))


# ------------------------------------------------------------------ training


@pytest.fixture
def tiny_images(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)).save(folder / f"f{i}.png")
    return folder


class _Stop(Exception):
    pass


def _train(tmp_path: Path, images: Path, *, resume: bool = False, out: str = "out", stop_after: int = 0) -> dict:
    def on_step(step: int, loss: float) -> None:
        assert math.isfinite(loss)
        if step + 1 == stop_after:
            raise _Stop

    return train_codec(
        "deepjscc", steps=4, batch_size=2, crop=16, seed=5, out_dir=tmp_path / out, resume=resume,
        progress=False, images=images, checkpoint_every=2, checkpoint_dir=tmp_path / f"ck_{out}", on_step=on_step,
    )  # fmt: skip


def test_train_codec_is_seeded_and_resumable(tmp_path: Path, tiny_images: Path) -> None:
    straight = _train(tmp_path, tiny_images, out="a")
    assert straight["steps"] == 4 and straight["dtype"] in ("float16", "float32")
    assert Path(straight["path"]).name == "codec_deepjscc.safetensors"
    with pytest.raises(_Stop):  # interrupted after step 3; the checkpoint holds step 2
        _train(tmp_path, tiny_images, out="c", stop_after=3)
    resumed = _train(tmp_path, tiny_images, out="c", resume=True)
    # two runs from the same seed, one of them interrupted and resumed: bit-identical weights
    weights = [C.DeepJSCCCodec(weights=r["path"]).net.state_dict() for r in (straight, resumed)]
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    with pytest.raises(ModelError, match="another recipe"):
        train_codec("deepjscc", steps=4, batch_size=3, crop=16, seed=5, out_dir=tmp_path / "d", resume=True,
                    progress=False, images=tiny_images, checkpoint_dir=tmp_path / "ck_c")  # fmt: skip


def test_train_codec_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ModelError, match="cannot train codec kind 'digital'"):
        train_codec("digital", steps=1)
    code = main(["train", "codec", "--kind", "ctcd", "--steps", "0", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "must be >= 1" in err[0]
