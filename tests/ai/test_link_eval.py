"""Link evaluation (``ivsim eval link``): table shape, determinism, physics sanity, files, checks, CLI errors."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ivsim.ai.estimators import CovarianceCache, estimator_weights_path
from ivsim.ai.link_eval import (
    COLUMNS,
    EXTRA_COLUMNS,
    eval_link,
    format_tables,
    link_checks,
    parse_image_size,
    parse_snr_db,
    write_link_eval,
)
from ivsim.cli import main

SMALL = {
    "codecs": ("ctcd",),
    "estimators": ("perfect", "ls", "lmmse"),
    "snr_db": (0.0, 20.0),
    "scenes": ("street_canyon", "river_bridge"),
    "image_size": (32, 64),
    "frames": 2,
    "matrix_channels": 4,
}



@pytest.fixture(scope="module")
def cache() -> CovarianceCache:
    """Small LMMSE statistics shared by the tests (256 channels per scene)."""
    return CovarianceCache(n=256)


@pytest.fixture(scope="module")
def small(cache: CovarianceCache) -> pd.DataFrame:
    return eval_link(**SMALL, cache=cache)


def _link(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["part"] == "link"]


def _matrix(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["part"] == "matrix"]


def test_columns_and_row_counts(small: pd.DataFrame) -> None:
    assert list(small.columns) == [*COLUMNS, *EXTRA_COLUMNS]
    link, matrix = _link(small), _matrix(small)
    assert len(link) == 1 * 3 * 2 * 2  # codecs x estimators x scenes x SNRs
    assert len(matrix) == 2 * (1 + 2)  # test scenes x (LS + LMMSE of each train scene)
    assert len(small) == len(link) + len(matrix)
    assert (link["train_scene"] == link["test_scene"]).all()
    assert set(link["codec"]) == {"ctcd"} and set(matrix["codec"]) == {"none"}
    assert (link["symbols"] == 1024).all() and (link["frames"] == 2).all() and (link["channels"] == 2).all()
    assert link[["psnr_db", "ssim"]].notna().all().all() and matrix[["psnr_db", "ssim"]].isna().all().all()
    assert np.isneginf(link.loc[link["estimator"] == "perfect", "nmse_db"]).all()
    assert set(matrix["snr_db"]) == {10.0} and (matrix["channels"] == 4).all()
    lm = matrix[matrix["estimator"] == "lmmse"]
    assert {(a, b) for a, b in zip(lm["train_scene"], lm["test_scene"], strict=True)} == {
        (a, b) for a in SMALL["scenes"] for b in SMALL["scenes"]
    }


def test_same_seed_same_csv(small: pd.DataFrame, cache: CovarianceCache, tmp_path: Path) -> None:
    again = eval_link(**SMALL, cache=cache)
    small.to_csv(tmp_path / "a.csv", index=False)
    again.to_csv(tmp_path / "b.csv", index=False)
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    other = eval_link(**{**SMALL, "matrix_channels": 0, "estimators": ("ls",)}, seed=7, cache=cache)
    same = _link(small)[_link(small)["estimator"] == "ls"].reset_index(drop=True)
    assert not np.allclose(other["nmse_db"].to_numpy(), same["nmse_db"].to_numpy())


def test_perfect_csi_bounds_ls_and_lmmse_beats_ls(small: pd.DataFrame) -> None:
    link = _link(small)
    psnr = link.pivot_table(index=["test_scene", "snr_db"], columns="estimator", values="psnr_db")
    high = psnr.xs(20.0, level="snr_db")
    assert (high["perfect"] >= high["ls"] - 0.05).all(), high
    assert (psnr["perfect"] >= psnr["ls"]).loc[:, 0.0].all()  # at 0 dB LS is clearly worse
    nmse = link.pivot_table(index=["test_scene", "snr_db"], columns="estimator", values="nmse_db")
    assert (nmse["lmmse"] <= nmse["ls"]).all()
    # LS NMSE falls ~1 dB per dB: the same channels and noise at every SNR.
    assert ((nmse["ls"].xs(0.0, level="snr_db") - nmse["ls"].xs(20.0, level="snr_db")).between(17, 23)).all()


def test_files_written_and_tables(small: pd.DataFrame, tmp_path: Path) -> None:
    paths = write_link_eval(small, tmp_path / "out")
    names = {p.name for p in paths}
    assert names == {"link.csv", "psnr_vs_snr.png", "ssim_vs_snr.png", "nmse_vs_snr.png", "nmse_matrix_10db.png",
                     "tables.md"}  # fmt: skip
    for p in paths:
        assert p.is_file() and p.stat().st_size > 0
    back = pd.read_csv(tmp_path / "out" / "link.csv")
    assert list(back.columns[: len(COLUMNS)]) == list(COLUMNS) and len(back) == len(small)
    text = (tmp_path / "out" / "tables.md").read_text()
    assert "k = 1024 channel uses (complex symbols) per frame" in text
    for heading in ("## Channel-estimation NMSE", "## PSNR (dB) / SSIM", "## Mismatch at 10 dB", "## Checks"):
        assert heading in text
    assert "**PASS** LMMSE no worse than LS" in text
    assert "**PASS** PSNR with perfect CSI is an upper bound" in text
    assert "## Checks" in format_tables(back)  # works on the csv read back (no attrs)


def test_missing_weights_scene_is_skipped_with_a_note(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "estimator_street_canyon.safetensors").symlink_to(estimator_weights_path("street_canyon"))
    kw = {
        "estimators": ("ls", "diffusion"),
        "snr_db": (10.0,),
        "scenes": ("street_canyon", "river_bridge"),
        "image_size": (32, 64),
        "frames": 2,
        "matrix_channels": 2,
        "models_dir": tmp_path,
    }
    with caplog.at_level(logging.WARNING, logger="ivsim.ai.link_eval"):
        df = eval_link(("ctcd", "deepjscc"), **kw)
    assert any("river_bridge" in r.getMessage() and "no weights" in r.getMessage() for r in caplog.records)
    assert any("river_bridge" in n for n in df.attrs["notes"])
    diff = _link(df)[_link(df)["estimator"] == "diffusion"]
    assert set(diff["test_scene"]) == {"street_canyon"} and len(diff) == 2  # two codecs, one SNR
    md = _matrix(df)[_matrix(df)["estimator"] == "diffusion"]
    assert set(md["train_scene"]) == {"street_canyon"} and set(md["test_scene"]) == {"street_canyon", "river_bridge"}
    # The diffusion estimates shared between codecs change nothing: deepjscc alone gives the same rows.
    assert diff["nmse_db"].nunique() == 1
    alone = eval_link(("deepjscc",), **{**kw, "matrix_channels": 0})
    a = _link(alone).set_index(["estimator", "test_scene"])[["psnr_db", "nmse_db"]]
    b = _link(df)[_link(df)["codec"] == "deepjscc"].set_index(["estimator", "test_scene"])[["psnr_db", "nmse_db"]]
    pd.testing.assert_frame_equal(a.sort_index(), b.sort_index())
    assert "diffusion" in format_tables(df)


def _synthetic(ls_20: float, digital_psnr: tuple[float, float, float], ctcd_psnr: tuple[float, float, float]):
    rows = []
    for snr, d, c in zip((0.0, 10.0, 20.0), digital_psnr, ctcd_psnr, strict=True):
        for codec, p in (("digital", d), ("ctcd", c)):
            for est, nm, dp in (("perfect", -math.inf, 0.0), ("ls", -snr if snr < 20 else ls_20, 0.3),
                                ("lmmse", -snr - 5, 0.1)):  # fmt: skip
                rows.append(
                    {"codec": codec, "estimator": est, "train_scene": "s", "test_scene": "s", "snr_db": snr,
                     "psnr_db": p - dp, "ssim": 0.5, "nmse_db": nm, "part": "link", "frames": 8, "channels": 8,
                     "symbols": 6144, "realizations": 1, "lost": float(codec == "digital" and p < 20)}  # fmt: skip
                )
    return pd.DataFrame(rows)


def test_checks_are_computed_from_the_numbers() -> None:
    good = {c["check"].split(":")[0]: c["passed"] for c in link_checks(_synthetic(-20.0, (14, 14, 30), (20, 24, 27)))}
    assert good["LMMSE no worse than LS"] is True
    assert good["PSNR with perfect CSI is an upper bound"] is True
    assert good["digital"] is True and good["ctcd"] is True
    bad = {c["check"].split(":")[0]: c["passed"] for c in link_checks(_synthetic(-30.0, (20, 24, 27), (5, 24, 27)))}
    assert bad["LMMSE no worse than LS"] is False  # LS at 20 dB better than LMMSE
    assert bad["digital"] is False and bad["ctcd"] is False  # no cliff / a cliff
    flipped = _synthetic(-20.0, (14, 14, 30), (20, 24, 27))
    flipped.loc[flipped["estimator"] == "ls", "psnr_db"] += 2.0
    assert {c["check"].split(":")[0]: c["passed"] for c in link_checks(flipped)}[
        "PSNR with perfect CSI is an upper bound"
    ] is False


def test_parse_snr_and_size() -> None:
    assert parse_snr_db("-5:20:5") == (-5.0, 0.0, 5.0, 10.0, 15.0, 20.0)
    assert parse_snr_db("0:1:0.5") == (0.0, 0.5, 1.0)
    assert parse_snr_db("0,10,20") == (0.0, 10.0, 20.0)
    assert parse_snr_db("10") == (10.0,)
    assert parse_snr_db("-0") == (0.0,)
    for bad in ("20:0:5", "0:20:0", "0:20", "a:b:c", "x", "", "nan"):
        with pytest.raises(ValueError):
            parse_snr_db(bad)
    assert parse_image_size("72x128") == (72, 128)
    for bad in ("72", "72x", "8x8", "axb"):
        with pytest.raises(ValueError):
            parse_image_size(bad)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--snr=20:0:5"], "--snr '20:0:5'"),
        (["--snr=a:b:c"], "--snr 'a:b:c'"),
        (["--snr", "ten"], "--snr 'ten'"),
        (["--codecs", "ctcd,jpeg2000"], "--codecs 'ctcd,jpeg2000': unknown 'jpeg2000' (allowed: ctcd, deepjscc"),
        (["--estimators", "ls,magic"], "--estimators 'ls,magic': unknown 'magic' (allowed: perfect, ls, lmmse, diff"),
        (["--scenes", "street_canyon,moon"], "--scenes 'street_canyon,moon': unknown 'moon' (allowed: street_canyon,"),
        (["--image-size", "72by128"], "--image-size '72by128'"),
        (["--frames", "0"], "--frames must be >= 1"),
        (["--snr", "-5:20:5"], "--snr: expected one argument"),
    ],
)
def test_cli_bad_input_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], flags, expected) -> None:
    try:
        code = main(["eval", "link", *flags, "-o", str(tmp_path / "out")])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert expected in lines[0]
    assert not (tmp_path / "out").exists()


def test_cli_small_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["eval", "link", "--codecs", "ctcd", "--estimators", "perfect,ls", "--snr=0,20",
                 "--scenes", "river_bridge", "--image-size", "32x64", "--frames", "1", "--matrix-channels", "0",
                 "-q", "-o", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out.split()
    assert str(out / "link.csv") in printed and str(out / "tables.md") in printed
    df = pd.read_csv(out / "link.csv")
    assert len(df) == 2 * 2 and set(df["test_scene"]) == {"river_bridge"}
    assert not (out / "nmse_matrix_10db.png").exists()
