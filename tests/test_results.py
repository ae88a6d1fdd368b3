"""ivsim.results: load_run, event_counts, and the image-quality tables and timeline panel on hand-built logs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ivsim.errors import OutputError
from ivsim.results import (
    event_counts,
    load_run,
    plot_timeline,
    quality_by_estimator_match,
    quality_by_scene,
    summarize_run,
)
from ivsim.sim.eventlog import CATEGORICAL, COLUMNS, EventLog


def expected_dtype(column: str) -> object:
    typ = COLUMNS[column]
    if typ == pa.float64():
        return np.dtype("float64")
    if typ == pa.int64():
        return pd.Int64Dtype()
    if typ == pa.bool_():
        return pd.BooleanDtype()
    return None


def check_dtypes(df: pd.DataFrame) -> None:
    assert list(df.columns) == list(COLUMNS)
    for column in COLUMNS:
        dtype = df[column].dtype
        if column in CATEGORICAL:
            assert isinstance(dtype, pd.CategoricalDtype), column
        elif COLUMNS[column] == pa.string():
            assert pd.api.types.is_string_dtype(dtype) or dtype == object, column
        else:
            assert dtype == expected_dtype(column), (column, dtype)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    log = EventLog(run_dir, "demo", flush_rows=2)
    log.log("vehicle_depart", 0.0, "v0", vehicle="v0", trip=0, x_m=1.0, scene="street")
    ids = ["v0", "v1", "v2"]
    log.log_many("tx", 0.5, ids, vehicle=ids, delivered=np.array([True, False, True]),
                 delay_s=np.array([0.01, 0.2, 0.03]), frame=np.array([0, 0, 0]),
                 drop_reason=[None, "deadline", None])  # fmt: skip
    log.log("job_queued", 1.0, "j1", job_id="j1", job_kind="refine", queue_len=2)
    log.log("note", 1.0, "sim", message="done")
    log.close()
    return run_dir


def test_load_run_dtypes(run_dir: Path) -> None:
    df = load_run(run_dir)
    check_dtypes(df)
    assert len(df) == 6
    assert df["seq"].tolist() == list(range(6))
    assert df["delivered"].tolist() == [pd.NA, True, False, True, pd.NA, pd.NA]
    assert df["trip"].isna().sum() == 5
    assert df["x_m"].isna().sum() == 5
    assert df["event"].cat.categories.tolist() == sorted(df["event"].cat.categories)
    assert str(df.loc[1, "vehicle"]) == "v0"
    assert df["message"].dropna().tolist() == ["done"]
    assert df["job_id"].dropna().tolist() == ["j1"]


def test_load_run_reads_manifest(run_dir: Path) -> None:
    assert "manifest" not in load_run(run_dir).attrs
    (run_dir / "manifest.json").write_text(json.dumps({"status": "done", "rows": 6}))
    assert load_run(run_dir).attrs["manifest"] == {"status": "done", "rows": 6}
    (run_dir / "manifest.json").write_text("{not json")
    with pytest.raises(OutputError, match="manifest.json"):
        load_run(run_dir)


def test_load_run_empty_log(tmp_path: Path) -> None:
    EventLog(tmp_path / "closed", "e").close()
    EventLog(tmp_path / "killed", "e")  # started, nothing flushed, never closed
    for name in ("closed", "killed"):
        df = load_run(tmp_path / name)
        assert df.empty
        check_dtypes(df)
    mem = EventLog(None, "e").to_pandas()
    assert mem.empty
    check_dtypes(mem)


def test_load_run_without_log_raises(tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    for folder in (tmp_path / "nothing", tmp_path / "missing"):
        with pytest.raises(OutputError) as info:
            load_run(folder)
        message = str(info.value)
        assert str(folder) in message
        assert "\n" not in message


def test_load_run_from_parts_matches_closed(tmp_path: Path) -> None:
    frames = []
    for name, close in (("a", True), ("b", False)):
        log = EventLog(tmp_path / name, "same", flush_rows=3)
        for i in range(10):
            log.log("p", float(i), f"v{i % 3}", x_m=float(i), scene=["s", "t"][i % 2])
        log.flush()
        if close:
            log.close()
        frames.append(load_run(tmp_path / name))
    pd.testing.assert_frame_equal(frames[0], frames[1])


def test_load_run_tolerates_older_and_newer_files(tmp_path: Path) -> None:
    """A file missing a declared column (older) or with an extra one (newer) still loads."""
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    table = pa.table({
        "run_id": ["old", "old"], "seq": [0, 1], "t_s": [0.0, 1.0], "event": ["p", "p"],
        "entity_id": ["v0", "v1"], "x_m": [1.0, 2.0], "future_col": [1, 2],
    })  # fmt: skip
    pq.write_table(table, run_dir / "events.parquet")
    df = load_run(run_dir)
    assert list(df.columns) == [*COLUMNS, "future_col"]
    assert df["x_m"].tolist() == [1.0, 2.0]
    assert df["scene"].isna().all() and isinstance(df["scene"].dtype, pd.CategoricalDtype)
    assert df["trip"].dtype == pd.Int64Dtype()


def test_event_counts(run_dir: Path) -> None:
    counts = event_counts(load_run(run_dir))
    assert counts.to_dict() == {"job_queued": 1, "note": 1, "tx": 3, "vehicle_depart": 1}
    assert counts.name == "rows"
    assert counts.index.name == "event"
    assert counts.dtype == np.int64
    df = load_run(run_dir)
    assert event_counts(df[df.event == "tx"]).to_dict() == {"tx": 3}  # unused categories left out
    assert event_counts(df.iloc[:0]).empty


# ---------------------------------------------------------------------- image quality (link.fidelity: full)

#: Hand-built tx rows: (t_s, vehicle, scene, delivered, psnr_db, ssim, nmse_db, estimator, estimator_scene).
#: v0 departs in the canyon and keeps its canyon estimator on the bridge (mismatched); the
#: frame at t=2 is an outage (no image quality); v1 departs on the bridge (matched).
QUALITY_TX = [
    (0.0, "v0", "canyon", True, 20.0, 0.5, -10.0, "diffusion", "canyon"),
    (1.0, "v0", "canyon", True, 30.0, 0.7, -20.0, "diffusion", "canyon"),
    (2.0, "v0", "canyon", False, None, None, None, "diffusion", "canyon"),
    (3.0, "v0", "bridge", True, 10.0, 0.2, -4.0, "diffusion", "canyon"),
    (4.0, "v0", "bridge", True, 14.0, 0.4, -6.0, "diffusion", "canyon"),
    (4.0, "v1", "bridge", True, 22.0, 0.6, -12.0, "lmmse", "bridge"),
]


def quality_log(*, with_quality: bool = True) -> pd.DataFrame:
    """The rows of QUALITY_TX as a logged frame; without quality, as an analytic run logs them."""
    log = EventLog(None, "quality")
    log.log("vehicle_depart", 0.0, "v0", vehicle="v0", scene="canyon")
    log.log("scene_enter", 0.0, "v0", vehicle="v0", scene="canyon")
    for t_s, vehicle, scene, delivered, psnr, ssim, nmse, estimator, est_scene in QUALITY_TX:
        if t_s == 3.0 and vehicle == "v0":
            log.log("scene_enter", 2.5, "v0", vehicle="v0", scene="bridge")
        if t_s == 4.0 and vehicle == "v1":
            log.log("vehicle_depart", 4.0, "v1", vehicle="v1", scene="bridge")
            log.log("scene_enter", 4.0, "v1", vehicle="v1", scene="bridge")
        fields = {"vehicle": vehicle, "scene": scene, "bs": "bs0", "delivered": delivered, "snr_db": 10.0 + t_s,
                  "sinr_db": 9.0 + t_s, "drop_reason": None if delivered else "outage"}  # fmt: skip
        if with_quality:
            fields |= {"codec": "ctcd", "estimator": estimator, "estimator_scene": est_scene, "psnr_db": psnr,
                       "ssim": ssim, "nmse_db": nmse}  # fmt: skip
        log.log("tx", t_s, vehicle, **fields)
    log.close()
    return log.to_pandas()


def test_quality_by_scene_exact() -> None:
    q = quality_by_scene(quality_log())
    assert q.index.name == "scene"
    assert q.index.tolist() == ["canyon", "bridge"]  # order of the first frame sent in the scene
    assert q["frames"].tolist() == [3, 3] and q["frames"].dtype == np.int64
    assert q["quality_frames"].tolist() == [2, 3]  # the outage frame has no PSNR
    canyon, bridge = q.loc["canyon"], q.loc["bridge"]
    assert canyon["delivered_share"] == pytest.approx(2 / 3)
    assert canyon["psnr_db_mean"] == pytest.approx(25.0)
    assert canyon["psnr_db_median"] == pytest.approx(25.0)
    assert canyon["ssim_mean"] == pytest.approx(0.6)
    assert canyon["nmse_db_mean"] == pytest.approx(-15.0)
    assert canyon["estimator"] == "diffusion"
    assert canyon["estimator_scene"] == "canyon"
    assert canyon["mismatched_share"] == 0.0
    assert bridge["delivered_share"] == 1.0
    assert bridge["psnr_db_mean"] == pytest.approx(46.0 / 3)
    assert bridge["psnr_db_median"] == pytest.approx(14.0)
    assert bridge["ssim_mean"] == pytest.approx(0.4)
    assert bridge["nmse_db_mean"] == pytest.approx(-22.0 / 3)
    assert bridge["estimator"] == "diffusion, lmmse"
    assert bridge["estimator_scene"] == "canyon (mismatched), bridge"
    assert bridge["mismatched_share"] == pytest.approx(2 / 3)


def test_quality_by_estimator_match_exact() -> None:
    m = quality_by_estimator_match(quality_log())
    assert m.index.name == "estimator_match"
    assert m.index.tolist() == ["matched", "mismatched"]
    assert m["frames"].tolist() == [4, 2]
    assert m["quality_frames"].tolist() == [3, 2]
    assert m["delivered_share"].tolist() == pytest.approx([0.75, 1.0])
    assert m["psnr_db_mean"].tolist() == pytest.approx([24.0, 12.0])
    assert m["psnr_db_median"].tolist() == pytest.approx([22.0, 12.0])
    assert m["ssim_mean"].tolist() == pytest.approx([0.6, 0.3])
    assert m["nmse_db_mean"].tolist() == pytest.approx([-14.0, -5.0])
    assert m["scenes"].tolist() == ["canyon, bridge", "bridge"]
    only_matched = quality_log()
    only_matched = only_matched[~((only_matched["vehicle"] == "v0") & (only_matched["scene"] == "bridge"))]
    assert quality_by_estimator_match(only_matched).index.tolist() == ["matched"]


def test_quality_tables_empty_without_quality(run_dir: Path) -> None:
    analytic = quality_log(with_quality=False)
    for df in (analytic, load_run(run_dir), analytic.iloc[:0]):
        q = quality_by_scene(df)
        assert q.empty and q.index.name == "scene"
        assert {"frames", "psnr_db_mean", "nmse_db_mean", "estimator_scene"} <= set(q.columns)
        m = quality_by_estimator_match(df)
        assert m.empty and "psnr_db_mean" in m.columns
    assert summarize_run(analytic)["psnr_db_mean"].isna().all()


def test_summarize_run_mean_psnr() -> None:
    summary = summarize_run(quality_log())
    assert summary["psnr_db_mean"].tolist() == pytest.approx([25.0, 46.0 / 3])


def panels(fig: object) -> int:
    """Subplot rows of a figure (a twinx axis shares its row)."""
    return len({a.get_subplotspec().rowspan.start for a in fig.axes})


def test_plot_timeline_quality_panel() -> None:
    df = quality_log()
    fig = plot_timeline(df, "v0")
    assert panels(fig) == 4
    assert len(fig.axes) == 5  # the quality panel's NMSE axis is a twin of the fourth
    ax_q, ax_nmse = fig.axes[3], fig.axes[4]
    assert ax_q.get_ylabel() == "PSNR (dB)"
    assert ax_nmse.get_ylabel() == "channel NMSE (dB)"
    assert ax_nmse.get_shared_x_axes().joined(ax_nmse, fig.axes[0])
    legend = [t.get_text() for t in ax_q.get_legend().get_texts()]
    assert any(text.startswith("estimator mismatched") for text in legend)
    assert any(text.startswith("outage") for text in legend)
    # hollow markers on exactly the frames sent on the bridge with the canyon's estimator
    hollow = [ln for ln in ax_q.get_lines() if ln.get_markerfacecolor() == "white"]
    assert len(hollow) == 1 and hollow[0].get_xdata().tolist() == [3.0, 4.0]
    assert hollow[0].get_ydata().tolist() == [10.0, 14.0]
    fig.canvas.draw()  # lays out and renders without error

    # the vehicle without mismatched frames still gets the panel; none of its markers is hollow
    fig1 = plot_timeline(df, "v1")
    assert panels(fig1) == 4
    assert not [ln for ln in fig1.axes[3].get_lines() if ln.get_markerfacecolor() == "white" and len(ln.get_xdata())]


def test_plot_timeline_three_panels_without_quality() -> None:
    fig = plot_timeline(quality_log(with_quality=False), "v0")
    assert len(fig.axes) == 3 and panels(fig) == 3
    assert fig.axes[2].get_xlabel() == "simulated time t (s)"


def test_plot_timeline_given_axes() -> None:
    from matplotlib.figure import Figure

    df, analytic = quality_log(), quality_log(with_quality=False)
    three = Figure(figsize=(8, 6)).subplots(3, 1, sharex=True)
    fig = plot_timeline(df, "v0", ax=three)  # three axes: the quality panel is left out
    assert len(fig.axes) == 3
    four = Figure(figsize=(8, 8)).subplots(4, 1, sharex=True)
    fig = plot_timeline(analytic, "v0", ax=four)  # four axes, no quality: the panel says so
    assert len(fig.axes) == 5
    assert any("no image quality" in t.get_text() for t in fig.axes[3].texts)
    with pytest.raises(ValueError, match="three or four axes"):
        plot_timeline(df, "v0", ax=four[:2])
