"""ivsim.results on real runs: summaries, scene times, image quality, figures, write_report, CLI, basic_run.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import osmnx  # noqa: F401  (its urllib3 probes IPv6 with a socket on import: do it at collection, not under the guard)
import pandas as pd
import pytest
from matplotlib.image import imread

from ivsim.cli import main
from ivsim.config.loader import load_scenario
from ivsim.errors import OutputError
from ivsim.results import (
    QUALITY_FILE,
    load_run,
    plot_timeline,
    quality_by_estimator_match,
    quality_by_scene,
    scene_time,
    summarize_run,
    write_report,
)
from ivsim.sim.engine import Simulation

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DURATION_S = 120.0
#: A short full-link run (every frame through the neural link): 10 small frames, LMMSE estimation.
FULL = ["duration_s=20", "link.fidelity=full", "link.image_size=[32, 64]", "link.estimator.kind=lmmse"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default scenario cut to two minutes, run once for the whole module."""
    overrides = [f"duration_s={DURATION_S:g}", "link.fidelity=analytic", "traffic.fps=5"]
    sc = load_scenario(REPO / "scenarios" / "nyc_brooklyn_bridge.yaml", overrides=overrides)
    run_dir = tmp_path_factory.mktemp("report") / "run"
    Simulation(sc, run_dir=run_dir).run()
    return run_dir


@pytest.fixture(scope="module")
def df(run_dir: Path) -> pd.DataFrame:
    return load_run(run_dir)


@pytest.fixture(scope="module")
def full_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default scenario with the full neural link, cut to 20 s, small images, one torch thread."""
    import torch

    sc = load_scenario(REPO / "scenarios" / "nyc_brooklyn_bridge.yaml", overrides=FULL)
    run_dir = tmp_path_factory.mktemp("report_full") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Simulation(sc, run_dir=run_dir).run()
    finally:
        torch.set_num_threads(before)
    return run_dir


@pytest.fixture(scope="module")
def report(run_dir: Path) -> list[Path]:
    return write_report(run_dir)


def check_png(path: Path, *, min_w: int = 600, min_h: int = 400) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 10_000, path
    img = imread(path)
    assert img.ndim == 3 and img.shape[1] >= min_w and img.shape[0] >= min_h, (path, img.shape)
    assert float(np.asarray(img[..., :3]).std()) > 0.01, f"{path} is blank"


# ---------------------------------------------------------------------- tables


def test_summarize_run_consistent_with_log(df: pd.DataFrame) -> None:
    tx = df[df["event"] == "tx"]
    summary = summarize_run(df)
    assert summary.index.name == "scene"
    assert int(summary["frames"].sum()) == len(tx)
    assert int(summary["delivered"].sum()) == int(tx["delivered"].fillna(False).sum())
    assert set(summary.index) == {str(s) for s in tx["scene"].dropna().unique()}
    for scene, row in summary.iterrows():
        sub = tx[tx["scene"] == scene]
        assert row["frames"] == len(sub)
        assert row["delivered_share"] == pytest.approx(sub["delivered"].fillna(False).mean())
        assert row["snr_db_mean"] == pytest.approx(sub["snr_db"].mean())
        assert row["sinr_db_p5"] == pytest.approx(np.percentile(sub["sinr_db"], 5))
        assert row["snr_db_p5"] <= row["snr_db_mean"]
        ok = sub[sub["delivered"].fillna(False).astype(bool)]
        assert row["delay_s_mean"] == pytest.approx(ok["delay_s"].mean())
    # the first scene listed is the one the first frame was sent in
    assert summary.index[0] == str(tx.sort_values("t_s")["scene"].iloc[0])


def test_summarize_run_without_tx_rows(df: pd.DataFrame) -> None:
    empty = summarize_run(df[df["event"] != "tx"])
    assert empty.empty and "delivered_share" in empty.columns


def test_analytic_run_has_no_quality(df: pd.DataFrame) -> None:
    assert quality_by_scene(df).empty
    assert quality_by_estimator_match(df).empty
    assert summarize_run(df)["psnr_db_mean"].isna().all()


def test_scene_time_consistent_with_log(df: pd.DataFrame) -> None:
    st = scene_time(df)
    assert list(st.columns) == ["vehicle", "scene", "visits", "time_s", "share"]
    enters = df[df["event"] == "scene_enter"]
    assert int(st["visits"].sum()) == len(enters)
    assert (st["time_s"] >= 0).all()
    for vehicle, sub in st.groupby("vehicle"):
        mine = df[df["vehicle"] == vehicle]
        start = float(mine.loc[mine["event"] == "vehicle_depart", "t_s"].min())
        arrive = mine.loc[mine["event"] == "vehicle_arrive", "t_s"]
        end = float(arrive.max()) if len(arrive) else DURATION_S  # still driving: counts until the run ends
        assert sub["time_s"].sum() == pytest.approx(end - start)
        assert sub["share"].sum() == pytest.approx(1.0)
        assert set(sub["scene"]) == {str(s) for s in enters.loc[enters["vehicle"] == vehicle, "scene"]}


# ---------------------------------------------------------------------- figures


def test_write_report_writes_pngs(run_dir: Path, report: list[Path], df: pd.DataFrame) -> None:
    vehicles = sorted(str(v) for v in df.loc[df["event"] == "tx", "vehicle"].dropna().unique())
    assert [p.name for p in report] == ["map.png", *[f"timeline_{v}.png" for v in vehicles[:4]]]
    for path in report:
        assert path.parent == run_dir / "figures"
        check_png(path, min_w=1000, min_h=700)


def test_write_report_chosen_vehicle_and_folder(run_dir: Path, tmp_path: Path, df: pd.DataFrame) -> None:
    vehicle = str(df["vehicle"].dropna().iloc[0])
    paths = write_report(run_dir, out_dir=tmp_path / "figs", vehicles=[vehicle])
    assert paths == [tmp_path / "figs" / "map.png", tmp_path / "figs" / f"timeline_{vehicle}.png"]
    for path in paths:
        check_png(path)


def test_unknown_vehicle_is_an_output_error(run_dir: Path, tmp_path: Path, df: pd.DataFrame) -> None:
    with pytest.raises(OutputError, match=r"unknown vehicle 'no_such_car'.*car1") as info:
        write_report(run_dir, out_dir=tmp_path / "figs", vehicles=["no_such_car"])
    assert "\n" not in str(info.value)
    assert not (tmp_path / "figs").exists()
    with pytest.raises(OutputError, match="unknown vehicle"):
        plot_timeline(df, "no_such_car")


def test_report_of_a_folder_without_a_log(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="no event log"):
        write_report(tmp_path)


def test_plot_timeline_has_three_panels(df: pd.DataFrame) -> None:
    fig = plot_timeline(df, "car1")
    assert len(fig.axes) == 3
    labels = {t.get_text() for t in fig.axes[1].get_yticklabels()}
    assert labels == {str(b) for b in df.loc[df["event"] == "tx", "bs"].dropna().unique()}


def test_write_report_full_link_quality(full_run_dir: Path) -> None:
    df = load_run(full_run_dir)
    tx = df[df["event"] == "tx"]
    assert tx["psnr_db"].notna().any()
    quality = quality_by_scene(df)
    assert int(quality["frames"].sum()) == len(tx)
    assert (quality["estimator"] == "lmmse").all()
    assert summarize_run(df)["psnr_db_mean"].tolist() == pytest.approx(quality["psnr_db_mean"].tolist())

    paths = write_report(full_run_dir)
    assert [p.name for p in paths] == ["map.png", "timeline_car1.png", QUALITY_FILE]
    check_png(paths[1], min_w=1000, min_h=1000)  # four panels: taller than the analytic timeline
    table = pd.read_csv(paths[2], index_col="scene")
    assert table.index.tolist() == quality.index.tolist()
    assert table.columns.tolist() == quality.columns.tolist()
    assert table["frames"].tolist() == quality["frames"].tolist()
    assert table["psnr_db_mean"].to_numpy() == pytest.approx(quality["psnr_db_mean"].to_numpy(), rel=1e-5)
    assert table["estimator_scene"].tolist() == quality["estimator_scene"].tolist()

    fig = plot_timeline(df, "car1")
    assert len({a.get_subplotspec().rowspan.start for a in fig.axes}) == 4  # the quality panel (with a twin axis)
    assert fig.axes[3].get_ylabel() == "PSNR (dB)"


def test_cli_report(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["report", str(run_dir), "-o", str(out), "--vehicle", "car1"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "map.png"), str(out / "timeline_car1.png")]
    assert main(["report", str(run_dir), "-o", str(out), "--vehicle", "nope"]) == 2


# ---------------------------------------------------------------------- analysis script


def test_basic_run_script(run_dir: Path, report: list[Path]) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "analysis" / "basic_run.py"), str(run_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "tx" in proc.stdout and "street_canyon" in proc.stdout
    check_png(run_dir / "figures" / "basic_snr.png")
