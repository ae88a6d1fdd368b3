"""Weights by name: safetensors only, and a clear ModelError naming the file for every bad one."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ivsim.ai import zoo
from ivsim.ai.codecs import CTCDCodec, DeepJSCCCodec, make_codec
from ivsim.errors import ModelError


def _fresh_ctcd(**kw) -> CTCDCodec:  # noqa: ANN003
    return CTCDCodec(weights=None, generator=torch.Generator().manual_seed(2), **kw)


def test_resolve_names_and_paths(tmp_path: Path) -> None:
    assert zoo.resolve("codec_ctcd") == zoo.MODELS_DIR / "codec_ctcd.safetensors"
    assert zoo.resolve("x", models_dir=tmp_path) == tmp_path / "x.safetensors"
    assert zoo.resolve(tmp_path / "w.safetensors") == tmp_path / "w.safetensors"


@pytest.mark.parametrize("kind", ["ctcd", "deepjscc"])
def test_shipped_weights_exist_with_metadata(kind: str) -> None:
    path = zoo.resolve(f"codec_{kind}")
    assert path.is_file()
    meta = zoo.read_metadata(path)
    assert meta["ivsim.architecture"] == f"codec/{kind}"
    assert meta["ivsim.command"].startswith(f"ivsim train codec --kind {kind}")
    assert path.with_suffix(".md").is_file(), "every shipped weight file has a model card"
    assert path.stat().st_size < 2_000_000


def test_save_load_round_trip_fp16(tmp_path: Path) -> None:
    codec = _fresh_ctcd()
    path = codec.save(tmp_path / "c.safetensors", dtype=torch.float16, metadata={"note": "x"})
    assert zoo.read_metadata(path)["ivsim.dtype"] == "float16"
    assert zoo.read_metadata(path)["note"] == "x"
    loaded = CTCDCodec(weights=path)
    for (name, a), b in zip(codec.net.state_dict().items(), loaded.net.state_dict().values(), strict=True):
        assert b.dtype == torch.float32
        assert torch.equal(a.half().float(), b), name
    assert loaded.config == codec.config


def test_missing_file() -> None:
    with pytest.raises(ModelError, match=r"codec_nope\.safetensors: weights file not found"):
        make_codec("ctcd", weights="codec_nope")


def test_garbage_bytes(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(ModelError, match=r"garbage\.safetensors: not a valid safetensors file"):
        make_codec("ctcd", weights=bad)


def test_truncated_file(tmp_path: Path) -> None:
    good = _fresh_ctcd().save(tmp_path / "good.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelError, match=r"cut\.safetensors: (not a valid|corrupt) safetensors"):
        CTCDCodec(weights=cut)


def test_pickles_are_refused_unopened(tmp_path: Path) -> None:
    pt = tmp_path / "weights.pt"
    torch.save(_fresh_ctcd().net.state_dict(), pt)
    with pytest.raises(ModelError, match=r"weights\.pt: not a safetensors file .*pickle"):
        make_codec("ctcd", weights=pt)
    disguised = tmp_path / "disguised.safetensors"
    disguised.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelError, match=r"disguised\.safetensors: not a valid safetensors file"):
        make_codec("ctcd", weights=disguised)


def test_weights_for_another_architecture(tmp_path: Path) -> None:
    other = DeepJSCCCodec(weights=None).save(tmp_path / "deep.safetensors")
    with pytest.raises(ModelError, match=r"deep\.safetensors: weights are for architecture 'codec/deepjscc', not 'codec/ctcd'"):
        CTCDCodec(weights=other)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(plain))
    with pytest.raises(ModelError, match=r"plain\.safetensors: no 'ivsim.architecture' metadata"):
        CTCDCodec(weights=plain)


def test_weights_with_other_shapes(tmp_path: Path) -> None:
    narrow = _fresh_ctcd(bandwidth_ratio=1 / 12).save(tmp_path / "narrow.safetensors")
    assert CTCDCodec(weights=narrow).symbols_for(32, 32) == 256  # config comes from the file
    with pytest.raises(ModelError, match=r"narrow\.safetensors: weights were trained with bandwidth_ratio"):
        CTCDCodec(weights=narrow, bandwidth_ratio=1 / 6)
    # right tag, wrong tensors: caught by the name/shape check
    state = _fresh_ctcd(channels=48).net.state_dict()
    forged = zoo.save_weights(state, tmp_path / "forged.safetensors", architecture="codec/ctcd",
                              config={"patch": 32, "bandwidth_ratio": 1 / 6})  # fmt: skip
    with pytest.raises(ModelError, match=r"forged\.safetensors: weights do not fit 'codec/ctcd': shape mismatch"):
        CTCDCodec(weights=forged)
    missing = zoo.save_weights({"x": torch.zeros(1)}, tmp_path / "few.safetensors", architecture="codec/ctcd",
                               config={})  # fmt: skip
    with pytest.raises(ModelError, match=r"few\.safetensors: weights do not fit .*missing"):
        CTCDCodec(weights=missing)


def test_unwritable_destination(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ModelError, match="cannot write weights"):
        zoo.save_weights({"w": torch.zeros(1)}, blocker / "sub" / "w.safetensors", architecture="a", config={})
