"""Reading finished (or killed) runs back for analysis.

``load_run`` turns a run directory into one pandas DataFrame with the dtypes of the
declared event-log schema (:data:`ivsim.sim.eventlog.COLUMNS`); ``event_counts``,
``summarize_run``, ``scene_time``, ``quality_by_scene``, ``quality_by_estimator_match`` and
``refinements`` summarise such a frame; ``plot_map`` and ``plot_timeline`` draw it, and ``write_report``
writes a run's standard PNGs and tables (``ivsim report``). Figures are built on
``matplotlib.figure.Figure`` with an Agg canvas, so nothing here touches pyplot's global
state or the backend; matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ivsim.errors import OutputError
from ivsim.sim.eventlog import EVENTS_FILE, PARTS_DIR, log_files, read_table, table_to_frame

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from pandas.api.typing import DataFrameGroupBy

    from ivsim.config.schema import Scenario
    from ivsim.world import RoadMap, SceneMap

__all__ = [
    "MAP_MAX_TRACKS",
    "OSM_ATTRIBUTION",
    "QUALITY_FILE",
    "REPORT_DPI",
    "event_counts",
    "load_run",
    "plot_map",
    "plot_timeline",
    "quality_by_estimator_match",
    "quality_by_scene",
    "refinements",
    "scene_colors",
    "scene_time",
    "summarize_run",
    "write_report",
]

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
RESOLVED_SCENARIO_FILE = "scenario.resolved.yaml"

#: The table of :func:`quality_by_scene` that :func:`write_report` writes for a full-link run.
QUALITY_FILE = "quality_by_scene.csv"


# ---------------------------------------------------------------------- loading


def load_run(run_dir: str | Path) -> pd.DataFrame:
    """Load a run's event log.

    Parameters
    ----------
    run_dir
        A run directory. Its ``events.parquet`` is read if present, else every
        ``parts/part-*.parquet`` in order (a run still going, or killed).

    Returns
    -------
    pandas.DataFrame
        One row per event, sorted by ``seq``, every declared column in schema order:
        float columns ``float64`` (NaN for null), integer columns ``Int64``, ``delivered``
        ``boolean``, the columns of :data:`ivsim.sim.eventlog.CATEGORICAL` ``category``,
        other strings (``message``, ``job_id``) pandas strings. ``df.attrs["manifest"]``
        holds ``manifest.json`` as a dict when the run has one.

    Raises
    ------
    OutputError
        If the folder holds no event log or a file in it cannot be read.

    Examples
    --------
    >>> df = load_run("runs/demo")  # doctest: +SKIP
    >>> df.loc[df.event == "tx", ["t_s", "vehicle", "delay_s"]]  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    files = log_files(run_dir)
    if files is None:
        msg = f"{run_dir}: no event log here (neither {EVENTS_FILE} nor {PARTS_DIR}/part-*.parquet)"
        raise OutputError(msg)
    df = table_to_frame(read_table(files))
    manifest = run_dir / MANIFEST_FILE
    if manifest.is_file():
        try:
            df.attrs["manifest"] = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            msg = f"{manifest}: cannot read the run manifest ({exc})"
            raise OutputError(msg) from None
    return df


# ---------------------------------------------------------------------- summaries


def event_counts(df: pd.DataFrame) -> pd.Series:
    """Count rows per event kind.

    Parameters
    ----------
    df
        A frame from :func:`load_run` (or any frame with an ``event`` column).

    Returns
    -------
    pandas.Series
        ``int64`` row counts named ``rows``, indexed by event kind (sorted by name);
        event kinds with no rows are left out.
    """
    counts = df["event"].value_counts(sort=False, dropna=True)
    counts = counts[counts > 0]
    index = pd.Index([str(e) for e in counts.index], name="event")
    out = pd.Series(counts.to_numpy(dtype="int64"), index=index, name="rows")
    return out.sort_index()


def summarize_run(df: pd.DataFrame) -> pd.DataFrame:
    """Summarise the transmissions (``tx`` rows) of a run per scene.

    Parameters
    ----------
    df
        A frame from :func:`load_run`.

    Returns
    -------
    pandas.DataFrame
        One row per scene that has ``tx`` rows, indexed by ``scene`` in order of the first
        frame sent in it, with columns

        ``frames`` (``int64``)
            ``tx`` rows in the scene; the column sums to the run's ``tx`` rows (rows without a
            scene are left out).
        ``vehicles`` (``int64``)
            distinct vehicles that sent a frame in the scene.
        ``delivered`` (``int64``), ``delivered_share`` (0..1)
            frames delivered (``delivered`` true) and their share of ``frames``.
        ``snr_db_mean``, ``snr_db_p5``, ``sinr_db_mean``, ``sinr_db_p5``
            mean and 5th percentile of the SNR and SINR over all frames, in dB.
        ``delay_s_mean``, ``delay_s_p95``
            mean and 95th percentile end-to-end delay of the *delivered* frames, in s (NaN when
            none was delivered).
        ``psnr_db_mean``
            mean reconstruction PSNR in dB of the frames that have one (``link.fidelity: full``;
            NaN for an analytic run, whose log carries no image quality). See
            :func:`quality_by_scene` for the rest of the image and channel-estimation quality.

    Examples
    --------
    >>> summarize_run(load_run("runs/demo")).round(2)  # doctest: +SKIP
    """
    tx = df.loc[(df["event"] == "tx") & df["scene"].notna()]
    if tx.empty:
        return pd.DataFrame(columns=_SUMMARY_COLUMNS, index=pd.Index([], name="scene", dtype="object"))
    delivered = tx["delivered"].fillna(False).astype(bool).to_numpy()
    work = pd.DataFrame(
        {
            "scene": tx["scene"].astype(str).to_numpy(),
            "vehicle": tx["vehicle"].astype("object").to_numpy(),
            "delivered": delivered,
            "snr_db": tx["snr_db"].to_numpy(dtype="float64"),
            "sinr_db": tx["sinr_db"].to_numpy(dtype="float64"),
            "delay_s": np.where(delivered, tx["delay_s"].to_numpy(dtype="float64", na_value=np.nan), np.nan),
            "psnr_db": _float_column(tx, "psnr_db"),
        }
    )
    g = work.groupby("scene", sort=False)
    out = pd.DataFrame(
        {
            "frames": g.size().astype("int64"),
            "vehicles": g["vehicle"].nunique().astype("int64"),
            "delivered": g["delivered"].sum().astype("int64"),
        }
    )
    out["delivered_share"] = out["delivered"] / out["frames"]
    out["snr_db_mean"] = g["snr_db"].mean()
    out["snr_db_p5"] = g["snr_db"].quantile(0.05)
    out["sinr_db_mean"] = g["sinr_db"].mean()
    out["sinr_db_p5"] = g["sinr_db"].quantile(0.05)
    out["delay_s_mean"] = g["delay_s"].mean()
    out["delay_s_p95"] = g["delay_s"].quantile(0.95)
    out["psnr_db_mean"] = g["psnr_db"].mean()
    out.index = pd.Index([str(s) for s in out.index], name="scene", dtype="object")
    return out[_SUMMARY_COLUMNS]


_SUMMARY_COLUMNS = [
    "frames",
    "vehicles",
    "delivered",
    "delivered_share",
    "snr_db_mean",
    "snr_db_p5",
    "sinr_db_mean",
    "sinr_db_p5",
    "delay_s_mean",
    "delay_s_p95",
    "psnr_db_mean",
]


def quality_by_scene(df: pd.DataFrame) -> pd.DataFrame:
    """Image and channel-estimation quality of a full-link run per scene.

    Only runs with ``link.fidelity: full`` log quality (``codec``, ``estimator``,
    ``estimator_scene``, ``psnr_db``, ``ssim``, ``nmse_db`` on ``tx`` rows); an analytic
    run's table is empty.

    Parameters
    ----------
    df
        A frame from :func:`load_run`.

    Returns
    -------
    pandas.DataFrame
        One row per scene that has ``tx`` rows, indexed by ``scene`` in order of the first
        frame sent in it (as :func:`summarize_run`), with columns

        ``frames`` (``int64``), ``delivered_share`` (0..1)
            ``tx`` rows in the scene and the share of them delivered.
        ``quality_frames`` (``int64``)
            frames with a PSNR; outage frames carry no image quality and are left out of
            the means below.
        ``psnr_db_mean``, ``psnr_db_median``, ``ssim_mean``
            reconstruction PSNR (dB) and SSIM (0..1) of those frames.
        ``nmse_db_mean``
            arithmetic mean of the channel-estimation NMSE in dB (NaN with perfect CSI).
        ``estimator``
            the estimator kind(s) used, in order of first use, comma-separated.
        ``estimator_scene``
            the scene(s) the receivers' estimators were trained for, in order of first use,
            each followed by `` (mismatched)`` when it is not this scene, e.g.
            ``"street_canyon (mismatched)"`` on the bridge.
        ``mismatched_share``
            share of the frames decoded with an estimator of another scene (0..1).

        No rows (the columns only) when no ``tx`` row carries quality.

    See Also
    --------
    quality_by_estimator_match : the same means for matched vs mismatched estimators.

    Examples
    --------
    >>> quality_by_scene(load_run("runs/demo")).round(2)  # doctest: +SKIP
    """
    work = _quality_rows(df)
    if work.empty:
        return pd.DataFrame(columns=_QUALITY_COLUMNS, index=pd.Index([], name="scene", dtype="object"))
    g = work.groupby("scene", sort=False)
    out = _quality_means(g)
    out["estimator"] = g["estimator"].agg(_joined)
    out["estimator_scene"] = [
        _joined(sub["estimator_scene"], mismatched_from=str(scene)) for scene, sub in g
    ]
    out["mismatched_share"] = g["mismatched"].mean().astype("float64")
    out.index = pd.Index([str(s) for s in out.index], name="scene", dtype="object")
    return out[_QUALITY_COLUMNS]


def quality_by_estimator_match(df: pd.DataFrame) -> pd.DataFrame:
    """Image and channel-estimation quality of a full-link run, matched vs mismatched estimator.

    A frame is *mismatched* when the receiver's channel estimator was trained for another
    scene than the one the frame is sent in (``estimator_scene != scene``): a vehicle keeps
    the estimator of the scene it departed in.

    Parameters
    ----------
    df
        A frame from :func:`load_run`.

    Returns
    -------
    pandas.DataFrame
        Rows ``matched`` and ``mismatched`` (those that occur, in that order), indexed by
        ``estimator_match``, with columns ``frames``, ``delivered_share``, ``quality_frames``,
        ``psnr_db_mean``, ``psnr_db_median``, ``ssim_mean``, ``nmse_db_mean`` as in
        :func:`quality_by_scene`, and ``scenes`` (the scenes of those frames, in order of
        first frame, comma-separated). Frames without an ``estimator_scene`` are left out;
        no rows when no ``tx`` row carries quality.
    """
    columns = [*_QUALITY_MEAN_COLUMNS, "scenes"]
    work = _quality_rows(df)
    work = work.loc[work["estimator_scene"].notna()]
    if work.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="estimator_match", dtype="object"))
    work = work.assign(estimator_match=np.where(work["mismatched"].to_numpy(dtype=bool), "mismatched", "matched"))
    g = work.groupby("estimator_match", sort=False)
    out = _quality_means(g)
    out["scenes"] = g["scene"].agg(_joined)
    order = [m for m in ("matched", "mismatched") if m in out.index]
    out = out.loc[order]
    out.index = pd.Index(order, name="estimator_match", dtype="object")
    return out[columns]


_QUALITY_MEAN_COLUMNS = [
    "frames",
    "delivered_share",
    "quality_frames",
    "psnr_db_mean",
    "psnr_db_median",
    "ssim_mean",
    "nmse_db_mean",
]
_QUALITY_COLUMNS = [*_QUALITY_MEAN_COLUMNS, "estimator", "estimator_scene", "mismatched_share"]
_QUALITY_FIELDS = ("codec", "estimator", "estimator_scene", "psnr_db", "ssim", "nmse_db")


REFINE_BUDGET_COLUMNS = (
    "upload_s", "queue_s", "lm_infer_s", "finetune_s", "download_s", "total_s",
    "air_up_s", "backhaul_up_s", "backhaul_down_s", "air_down_s", "gpu_s",
)  # fmt: skip


def refinements(df: pd.DataFrame) -> pd.DataFrame:
    """One row per finished refinement job (its ``refine_done`` row), with its time and byte budget.

    Parameters
    ----------
    df
        A run's events (:func:`load_run`).

    Returns
    -------
    pandas.DataFrame
        Columns ``t_s, job_id, vehicle, target_scene, outcome, reason, cached, adapter_id``,
        the budget (``upload_s, queue_s, lm_infer_s, finetune_s, download_s, total_s``; the
        five stages add up to ``total_s``), the hops (``air_up_s, backhaul_up_s,
        backhaul_down_s, air_down_s``), ``gpu_s``, ``upload_bytes``, ``download_bytes``;
        empty (same columns) for a run without refinements.
    """
    head = ["t_s", "job_id", "vehicle", "target_scene", "outcome", "reason", "cached", "adapter_id"]
    columns = [*head, *REFINE_BUDGET_COLUMNS, "upload_bytes", "download_bytes"]
    done = df.loc[df["event"] == "refine_done"] if "event" in df else df.iloc[0:0]
    out = pd.DataFrame({c: done[c] if c in done else pd.Series(np.nan, index=done.index) for c in columns})
    return out.reset_index(drop=True)


def _quality_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The ``tx`` rows with a scene as plain columns; no rows unless some row carries quality."""
    tx = df.loc[(df["event"] == "tx") & df["scene"].notna()]
    fields = [c for c in _QUALITY_FIELDS if c in tx.columns]
    if tx.empty or not fields or not tx[fields].notna().to_numpy().any():
        return pd.DataFrame(columns=["scene", "delivered", "psnr_db", "ssim", "nmse_db", "estimator",
                                     "estimator_scene", "mismatched"])  # fmt: skip
    scene = tx["scene"].astype(str).to_numpy(dtype=object)
    est_scene = _object_column(tx, "estimator_scene")
    known = pd.notna(est_scene)
    return pd.DataFrame(
        {
            "scene": scene,
            "delivered": tx["delivered"].fillna(False).astype(bool).to_numpy(),
            "psnr_db": _float_column(tx, "psnr_db"),
            "ssim": _float_column(tx, "ssim"),
            "nmse_db": _float_column(tx, "nmse_db"),
            "estimator": _object_column(tx, "estimator"),
            "estimator_scene": est_scene,
            "mismatched": known & (est_scene.astype(str) != scene),
        }
    )


def _quality_means(g: DataFrameGroupBy) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "frames": g.size().astype("int64"),
            "delivered_share": g["delivered"].mean().astype("float64"),
            "quality_frames": g["psnr_db"].count().astype("int64"),
        }
    )
    out["psnr_db_mean"] = g["psnr_db"].mean()
    out["psnr_db_median"] = g["psnr_db"].median()
    out["ssim_mean"] = g["ssim"].mean()
    out["nmse_db_mean"] = g["nmse_db"].mean()
    return out


def _joined(values: pd.Series, *, mismatched_from: str | None = None) -> str | None:
    """Distinct non-null values in order of first occurrence, comma-separated (None if none).

    With ``mismatched_from``, every value other than it gets a `` (mismatched)`` suffix.
    """
    names = [str(v) for v in dict.fromkeys(values.dropna())]
    if mismatched_from is not None:
        names = [n if n == mismatched_from else f"{n} (mismatched)" for n in names]
    return ", ".join(names) if names else None


def _float_column(df: pd.DataFrame, column: str) -> np.ndarray:
    """A column as ``float64`` with NaN for null; all NaN when the frame lacks it."""
    if column not in df.columns:
        return np.full(len(df), np.nan)
    return df[column].to_numpy(dtype="float64", na_value=np.nan)


def _object_column(df: pd.DataFrame, column: str) -> np.ndarray:
    """A column as Python objects with None for null; all None when the frame lacks it."""
    if column not in df.columns:
        return np.full(len(df), None, dtype=object)
    col = df[column].astype("object")
    return col.where(col.notna(), None).to_numpy(dtype=object)


def scene_time(df: pd.DataFrame) -> pd.DataFrame:
    """Time each vehicle spent in each scene.

    A vehicle is in a scene from its ``scene_enter`` row until its next ``scene_enter`` or
    ``vehicle_arrive`` row; a vehicle still driving when the run ended counts until the end
    (the manifest's ``sim_time_s``, else the last event's time).

    Parameters
    ----------
    df
        A frame from :func:`load_run`.

    Returns
    -------
    pandas.DataFrame
        Columns ``vehicle``, ``scene``, ``visits`` (``int64``, times the vehicle entered the
        scene, over all its trips), ``time_s`` (total seconds in the scene) and ``share``
        (of the vehicle's time on the road, 0..1; NaN for a vehicle with none); one row per
        vehicle and scene it entered, sorted by vehicle then by first entry.
    """
    iv = _scene_intervals(df)
    if iv.empty:
        empty = {"vehicle": [], "scene": [], "visits": pd.Series([], dtype="int64"), "time_s": [], "share": []}
        return pd.DataFrame(empty)
    iv["time_s"] = iv["end_s"] - iv["start_s"]
    g = iv.groupby(["vehicle", "scene"], sort=False)
    out = g.agg(visits=("time_s", "size"), time_s=("time_s", "sum"), first_s=("start_s", "min")).reset_index()
    out["visits"] = out["visits"].astype("int64")
    total = out.groupby("vehicle", sort=False)["time_s"].transform("sum")
    out["share"] = (out["time_s"] / total.where(total > 0)).astype("float64")
    order = {v: i for i, v in enumerate(sorted(out["vehicle"].unique(), key=_natural_key))}
    out["_order"] = out["vehicle"].map(order)
    out = out.sort_values(["_order", "first_s"], kind="stable").drop(columns=["first_s", "_order"])
    return out.reset_index(drop=True)


def _natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders ``taxi-2`` before ``taxi-10``."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", str(text)) if part)


def _run_end_s(df: pd.DataFrame) -> float:
    """The simulated end time of a run: the manifest's ``sim_time_s``, else the last event."""
    end = df.attrs.get("manifest", {}).get("sim_time_s") if isinstance(df.attrs.get("manifest"), dict) else None
    last = float(df["t_s"].max()) if len(df) else 0.0
    try:
        return max(float(end), last) if end is not None else last
    except (TypeError, ValueError):
        return last


def _scene_intervals(df: pd.DataFrame) -> pd.DataFrame:
    """One row per stay in a scene: ``vehicle``, ``scene``, ``start_s``, ``end_s``."""
    rows = df.loc[df["event"].isin(["scene_enter", "vehicle_arrive"]) & df["vehicle"].notna()]
    rows = rows.sort_values(["t_s", "seq"], kind="stable")
    end_s = _run_end_s(df)
    out: list[tuple[str, str, float, float]] = []
    for vehicle, sub in rows.groupby(rows["vehicle"].astype(str), sort=True):
        events = sub["event"].astype(str).to_numpy()
        times = sub["t_s"].to_numpy(dtype="float64")
        scenes = sub["scene"].astype("object").to_numpy()
        for i, event in enumerate(events):
            if event != "scene_enter" or pd.isna(scenes[i]):
                continue
            stop = times[i + 1] if i + 1 < len(events) else max(end_s, times[i])
            out.append((vehicle, str(scenes[i]), float(times[i]), float(stop)))
    return pd.DataFrame(out, columns=["vehicle", "scene", "start_s", "end_s"])


# ---------------------------------------------------------------------- figures

#: Attribution that every figure drawn over OpenStreetMap data must carry (ODbL 1.0).
OSM_ATTRIBUTION = "Map data (c) OpenStreetMap contributors, ODbL"

#: At most this many vehicles' tracks are drawn on a map (those with the most tx rows).
MAP_MAX_TRACKS = 20

#: Resolution of the PNGs :func:`write_report` writes.
REPORT_DPI = 120

_OTHER_COLOR = "#9e9e9e"


def scene_colors(scenes: Sequence[str]) -> dict[str, tuple[float, float, float, float]]:
    """Fixed qualitative colours for scene names, by position.

    Parameters
    ----------
    scenes
        Scene names in a fixed order (the scenario's ``scenes`` order gives every figure
        of a run the same colours).

    Returns
    -------
    dict
        ``scene -> RGBA`` from ``tab10`` without its red and grey (red marks handovers and
        drops, grey reads as "no scene"), then ``tab20``'s light shades; cycling past 16.
    """
    from matplotlib import colormaps

    tab10, tab20 = colormaps["tab10"], colormaps["tab20"]
    palette = [tab10(i) for i in (0, 1, 2, 4, 5, 6, 8, 9)] + [tab20(i) for i in (1, 3, 5, 9, 11, 13, 17, 19)]
    names = list(dict.fromkeys(str(s) for s in scenes))
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def plot_map(
    df: pd.DataFrame,
    roadmap: RoadMap,
    scene_map: SceneMap,
    scenario: Scenario,
    *,
    ax: Axes | None = None,
) -> Figure:
    """Draw a run on its road map.

    Every road edge is drawn thin in the colour of its scene; over it, the tracks of up to
    :data:`MAP_MAX_TRACKS` vehicles (those with the most ``tx`` rows) from their ``tx`` rows'
    positions, thick and coloured by the scene of each frame, with a dot where each track
    starts; the base stations as black triangles with their ids; the handovers of the drawn
    vehicles as red crosses. Axes are the map's projected CRS in km, equal aspect; the
    OpenStreetMap attribution sits in the lower right corner.

    Parameters
    ----------
    df
        A frame from :func:`load_run`.
    roadmap
        The run's road map (:func:`ivsim.world.load_map` of ``scenario.map``).
    scene_map
        The scenes of ``roadmap``'s edges, built with ``list(scenario.scenes)`` as names.
    scenario
        The run's scenario (its name, scenes and base stations are drawn).
    ax
        Axes to draw into; default a new figure (no pyplot state involved).

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the map.
    """
    from matplotlib import patheffects
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D
    from matplotlib.ticker import ScalarFormatter

    fig, ax = _figure_axes(ax, figsize=(10.5, 8.5))
    colors = scene_colors([*scene_map.names, *_present(df, "scene")])

    # road edges, one collection per scene
    edge_scene = np.asarray(scene_map.edge_scene)
    for si, name in enumerate(scene_map.names):
        idx = np.flatnonzero(edge_scene == si)
        if len(idx):
            segs = [np.asarray(roadmap.edge_xy[i]) / 1000.0 for i in idx]
            ax.add_collection(LineCollection(segs, colors=[colors[name]], linewidths=0.7, alpha=0.55, zorder=1))

    # vehicle tracks from tx positions, coloured by the frame's scene
    tx = df.loc[(df["event"] == "tx") & df["x_m"].notna() & df["y_m"].notna()]
    tracked = _busiest_vehicles(tx, MAP_MAX_TRACKS)
    n_vehicles = len(_present(df, "vehicle"))
    outline = [patheffects.Stroke(linewidth=4.6, foreground="black"), patheffects.Normal()]
    for vehicle in tracked:
        sub = tx.loc[tx["vehicle"] == vehicle].sort_values(["t_s", "seq"], kind="stable")
        xy = np.column_stack([sub["x_m"].to_numpy(dtype="float64"), sub["y_m"].to_numpy(dtype="float64")]) / 1000.0
        if len(xy) < 2:
            continue
        t = sub["t_s"].to_numpy(dtype="float64")
        step_km = np.hypot(*np.diff(xy, axis=0).T)
        keep = step_km <= (0.06 * np.diff(t) + 0.1)  # break the line at jumps (> 60 m/s + 100 m)
        segs = np.stack([xy[:-1], xy[1:]], axis=1)[keep]
        seg_colors = [colors.get(str(s), _OTHER_COLOR) for s in sub["scene"].astype("object").to_numpy()[:-1][keep]]
        lc = LineCollection(segs, colors=seg_colors, linewidths=2.8, zorder=3, capstyle="round")
        lc.set_path_effects(outline)
        ax.add_collection(lc)
        ax.plot(xy[0, 0], xy[0, 1], "o", ms=5.5, mfc="white", mec="black", mew=1.2, zorder=4)

    # handovers of the tracked vehicles
    ho = df.loc[(df["event"] == "handover") & df["x_m"].notna() & df["vehicle"].isin(tracked)]
    if len(ho):
        few = len(ho) <= 60
        ax.scatter(ho["x_m"] / 1000.0, ho["y_m"] / 1000.0, marker="x", s=34 if few else 20, c="red",
                   linewidths=1.5 if few else 1.1, zorder=5)  # fmt: skip

    # base stations
    halo = [patheffects.withStroke(linewidth=2.5, foreground="white")]
    bs_xy = _bs_positions_km(roadmap, scenario)
    for bs_id, (bx, by) in bs_xy.items():
        ax.plot(bx, by, marker="^", ms=9, color="black", mec="white", mew=0.8, ls="none", zorder=6)
        ax.annotate(bs_id, (bx, by), xytext=(5, 5), textcoords="offset points", fontsize=8, zorder=7,
                    path_effects=halo)  # fmt: skip

    # extent: the whole road network and every base station, a small margin around
    pts = [np.asarray(roadmap.nodes_xy) / 1000.0]
    if bs_xy:
        pts.append(np.array(list(bs_xy.values())))
    allpts = np.vstack(pts)
    lo, hi = allpts.min(axis=0), allpts.max(axis=0)
    pad = 0.03 * float(max(hi - lo)) + 0.05
    ax.set_xlim(lo[0] - pad, hi[0] + pad)
    ax.set_ylim(lo[1] - pad, hi[1] + pad)
    ax.set_aspect("equal")
    for axis in (ax.xaxis, ax.yaxis):
        fmt = ScalarFormatter(useOffset=False)
        fmt.set_scientific(False)
        axis.set_major_formatter(fmt)
    crs = getattr(roadmap.crs, "name", "projected CRS")
    ax.set_xlabel(f"easting (km, {crs})")
    ax.set_ylabel("northing (km)")
    ax.grid(True, lw=0.4, color="0.85", zorder=0)
    ax.set_axisbelow(True)

    if n_vehicles > len(tracked):
        tracks_note = f"tracks of the {len(tracked)} of {n_vehicles} vehicles with the most frames"
    else:
        tracks_note = f"{len(tracked)} vehicle track{'s' if len(tracked) != 1 else ''}"
    ax.set_title(f"{scenario.name}: road scenes, {tracks_note}, {len(ho)} handovers", fontsize=11)
    box = {"boxstyle": "square,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8}
    ax.text(0.995, 0.005, OSM_ATTRIBUTION, transform=ax.transAxes, ha="right", va="bottom", fontsize=7,
            color="0.25", zorder=8, bbox=box)  # fmt: skip

    handles = [Line2D([], [], color=colors[n], lw=3, label=n) for n in scene_map.names]
    handles += [
        Line2D([], [], color="0.5", lw=2.8, path_effects=outline, label="vehicle track\n(colour: scene)"),
        Line2D([], [], marker="o", ms=5.5, mfc="white", mec="black", mew=1.2, ls="none", label="track start"),
        Line2D([], [], marker="^", ms=9, color="black", ls="none", label="base station"),
        Line2D([], [], marker="x", ms=7, mew=1.5, color="red", ls="none", label="handover"),
    ]
    ax.legend(handles=handles, title="road scene", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5,
              title_fontsize=9, frameon=False, alignment="left")  # fmt: skip
    return fig


def plot_timeline(
    df: pd.DataFrame,
    vehicle: str,
    *,
    ax: Sequence[Axes] | None = None,
    scenes: Sequence[str] | None = None,
) -> Figure:
    """Draw one vehicle's scene, serving base station, SNR/SINR and image quality over time.

    Panels share the time axis: the scene as coloured bands (from ``scene_enter`` rows),
    the serving base station as a step line (from ``tx`` rows' ``bs``; base stations listed
    in order of first use), and the SNR and SINR of each frame in dB with dropped frames
    marked. When the vehicle's ``tx`` rows carry image quality (``link.fidelity: full``), a
    fourth panel shows each frame's reconstruction PSNR (left axis, dB) and channel-estimation
    NMSE (right axis, dB) over faint scene bands; frames decoded with an estimator trained
    for another scene (``estimator_scene != scene``) have hollow markers, outage frames (no
    image) a red cross at the bottom. Dashed vertical lines mark the vehicle's handovers.

    Parameters
    ----------
    df
        A frame from :func:`load_run`.
    vehicle
        The vehicle id.
    ax
        Axes to draw into, top to bottom (they should share x); default a new figure with
        three panels, or four when the vehicle's frames carry a PSNR. Pass three axes for the
        scene, base-station and SNR panels only (the quality panel is then left out), or four
        to add the quality panel (it says so when the log has no image quality); the
        quality panel's NMSE axis is created on the fourth with ``twinx``, so the figure
        then holds one more Axes.
    scenes
        Scene names in the order that fixes their colours (see :func:`scene_colors`);
        default the log's scene categories, so all timelines of a run agree. Pass
        ``list(scenario.scenes)`` to match :func:`plot_map`.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the panels.

    Raises
    ------
    OutputError
        If ``vehicle`` does not occur in the log.
    ValueError
        If ``ax`` holds neither three nor four axes.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    _check_vehicles(df, [vehicle])
    mine = df.loc[df["vehicle"].astype("object") == vehicle]
    tx = mine.loc[mine["event"] == "tx"].sort_values(["t_s", "seq"], kind="stable")
    has_quality = bool(len(tx)) and bool(np.isfinite(_float_column(tx, "psnr_db")).any())
    if ax is None:
        n_panels = 4 if has_quality else 3
        fig = new_figure(figsize=(11.5, 10.0) if has_quality else (11.5, 7.5))
        axes = list(fig.subplots(n_panels, 1, sharex=True, height_ratios=[0.55, 1.4, 2.4, 2.4][:n_panels]))
    else:
        axes = list(ax)
        if len(axes) not in (3, 4):
            msg = f"plot_timeline needs three or four axes, got {len(axes)}"
            raise ValueError(msg)
        fig = axes[0].figure
    ax_scene, ax_bs, ax_snr = axes[:3]
    ax_quality = axes[3] if len(axes) == 4 else None
    if scenes is None:
        cat = df["scene"].dtype
        scenes = list(cat.categories) if isinstance(cat, pd.CategoricalDtype) else sorted(_present(df, "scene"))
    colors = scene_colors([*scenes, *_present(df, "scene")])

    ho_t = mine.loc[mine["event"] == "handover", "t_s"].to_numpy(dtype="float64")
    t0 = float(mine["t_s"].min()) if len(mine) else 0.0
    t1 = float(mine["t_s"].max()) if len(mine) else 1.0

    # 1) scene bands
    iv = _scene_intervals(mine)
    if len(iv):
        t1 = max(t1, float(iv["end_s"].max()))
    span = max(t1 - t0, 1e-9)
    for row in iv.itertuples(index=False):
        ax_scene.axvspan(row.start_s, row.end_s, color=colors.get(row.scene, _OTHER_COLOR), lw=0)
        if row.end_s - row.start_s > 0.09 * span:
            ax_scene.text((row.start_s + row.end_s) / 2, 0.5, row.scene, ha="center", va="center", fontsize=8.5,
                          color="white", fontweight="bold")  # fmt: skip
    ax_scene.set_yticks([])
    ax_scene.set_ylim(0, 1)
    ax_scene.set_ylabel("scene", rotation=0, ha="right", va="center")
    used = list(dict.fromkeys(iv["scene"])) if len(iv) else []
    if used:
        ax_scene.legend(handles=[Patch(color=colors.get(s, _OTHER_COLOR), label=s) for s in used],
                        loc="upper left", bbox_to_anchor=(1.005, 1.15), fontsize=8, frameon=False)  # fmt: skip

    # 2) serving base station
    if len(tx):
        bs = tx["bs"].astype("object").to_numpy()
        order = list(dict.fromkeys(str(b) for b in bs if not pd.isna(b)))
        code = np.array([order.index(str(b)) if not pd.isna(b) else np.nan for b in bs], dtype="float64")
        t = tx["t_s"].to_numpy(dtype="float64")
        t_plot, code_plot = _break_gaps(t, code)
        ax_bs.step(t_plot, code_plot, where="post", color="0.15", lw=1.6)
        ax_bs.set_yticks(range(len(order)), order, fontsize=8.5)
        ax_bs.set_ylim(-0.6, len(order) - 0.4)
    else:
        ax_bs.set_yticks([])
        ax_bs.text(0.5, 0.5, "no tx rows", transform=ax_bs.transAxes, ha="center", va="center", color="0.4")
    ax_bs.set_ylabel("serving BS")
    ax_bs.grid(True, axis="y", lw=0.4, color="0.88")
    ax_bs.legend(handles=[Line2D([], [], color="0.15", lw=1.6, label="serving BS"),
                          Line2D([], [], color="0.35", lw=0.9, ls="--", label=f"handover ({len(ho_t)})")],
                 loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)  # fmt: skip

    # 3) SNR and SINR
    if len(tx):
        t = tx["t_s"].to_numpy(dtype="float64")
        many = len(t) > 400
        for column, label, color, lw in (("snr_db", "SNR", "0.6", 1.6), ("sinr_db", "SINR", "tab:blue", 0.9)):
            tp, yp = _break_gaps(t, tx[column].to_numpy(dtype="float64"))
            ax_snr.plot(tp, yp, color=color, lw=lw if many else lw + 0.2, label=label,
                        marker=None if many else ".", ms=3)  # fmt: skip
        dropped = ~tx["delivered"].fillna(False).astype(bool).to_numpy()
        if dropped.any():
            reasons = tx.loc[dropped, "drop_reason"].astype("object").fillna("unknown").value_counts()
            why = ", ".join(f"{n} {r}" for r, n in reasons.items())
            y = tx["sinr_db"].to_numpy(dtype="float64")[dropped]
            y = np.where(np.isnan(y), np.nanmin(tx["sinr_db"].to_numpy(dtype="float64"), initial=0.0), y)
            ax_snr.scatter(t[dropped], y, marker="x", s=36, c="red", linewidths=1.4, zorder=4,
                           label=f"dropped frame\n({why})")  # fmt: skip
        ax_snr.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
    ax_snr.axhline(0.0, color="0.5", lw=0.6, zorder=0)
    ax_snr.set_ylabel("SNR, SINR (dB)" if ax_quality is not None else "dB")
    ax_snr.grid(True, lw=0.4, color="0.88")

    # 4) image quality: PSNR and channel NMSE
    if ax_quality is not None:
        _draw_quality(ax_quality, tx if has_quality else tx.iloc[:0], iv, colors)

    for a in axes:
        for th in ho_t:
            a.axvline(th, color="0.35", lw=0.9, ls="--", alpha=0.7, zorder=1)
    axes[-1].set_xlabel("simulated time t (s)")
    for a in axes:
        a.set_xlim(t0, t1 if t1 > t0 else t0 + 1.0)

    name = _run_name(df)
    n_ok = int(tx["delivered"].fillna(False).astype(bool).sum()) if len(tx) else 0
    what = "scene, serving base station, SNR/SINR"
    counts = f"{n_ok}/{len(tx)} frames delivered, {len(ho_t)} handovers"
    if ax_quality is not None and has_quality:
        what += ", image quality"
        counts += f", mean PSNR {np.nanmean(_float_column(tx, 'psnr_db')):.1f} dB"
    fig.suptitle(f"{name}: vehicle {vehicle} - {what} ({counts})", fontsize=11)
    return fig


#: Colours of the quality panel: PSNR (left axis) and channel NMSE (right axis).
_PSNR_COLOR = "#1a1a1a"
_NMSE_COLOR = "#ad1457"


def _draw_quality(ax: Axes, tx: pd.DataFrame, iv: pd.DataFrame, colors: dict[str, tuple]) -> None:
    """The fourth timeline panel: PSNR per frame on ``ax``, channel NMSE on a twin right axis."""
    from matplotlib.lines import Line2D
    from matplotlib.transforms import offset_copy

    for row in iv.itertuples(index=False):
        ax.axvspan(row.start_s, row.end_s, color=colors.get(row.scene, _OTHER_COLOR), alpha=0.13, lw=0, zorder=0)
    ax.set_ylabel("PSNR (dB)", color=_PSNR_COLOR)
    ax.grid(True, lw=0.4, color="0.88")
    ax_nmse = ax.twinx()
    ax_nmse.set_ylabel("channel NMSE (dB)", color=_NMSE_COLOR)
    ax_nmse.tick_params(axis="y", colors=_NMSE_COLOR)
    ax_nmse.spines["right"].set_color(_NMSE_COLOR)
    if tx.empty:
        ax.set_yticks([])
        ax_nmse.set_yticks([])
        ax.text(0.5, 0.5, "no image quality in this log (analytic link)", transform=ax.transAxes, ha="center",
                va="center", color="0.4")  # fmt: skip
        return

    t = tx["t_s"].to_numpy(dtype="float64")
    psnr = _float_column(tx, "psnr_db")
    nmse = _float_column(tx, "nmse_db")
    scene = _object_column(tx, "scene")
    est_scene = _object_column(tx, "estimator_scene")
    mism = pd.notna(est_scene) & pd.notna(scene) & (est_scene.astype(str) != scene.astype(str))
    many = len(t) > 400
    ms = 2.6 if many else 4.2
    for a, y, color, marker, zorder in ((ax, psnr, _PSNR_COLOR, "o", 4), (ax_nmse, nmse, _NMSE_COLOR, "s", 3)):
        tp, yp = _break_gaps(t, y)
        a.plot(tp, yp, color=color, lw=0.6, alpha=0.55, zorder=zorder)
        a.plot(t[~mism], y[~mism], ls="none", marker=marker, ms=ms, color=color, zorder=zorder)
        a.plot(t[mism], y[mism], ls="none", marker=marker, ms=ms, mfc="white", mec=color, mew=1.0, zorder=zorder)
    if not np.isfinite(nmse).any():
        ax_nmse.set_yticks([])
        ax_nmse.set_ylabel("channel NMSE (perfect CSI: none)", color=_NMSE_COLOR)
    outage = np.isnan(psnr)
    if outage.any():
        ax.scatter(t[outage], np.full(outage.sum(), 0.04), transform=ax.get_xaxis_transform(), marker="x", s=30,
                   c="red", linewidths=1.3, zorder=5, clip_on=False)  # fmt: skip

    codecs, estimators, trained = (
        _joined(pd.Series(_object_column(tx, c))) for c in ("codec", "estimator", "estimator_scene")
    )
    about = ", ".join(p for p in (f"codec {codecs}" if codecs else "", f"estimator {estimators}" if estimators else "",
                                  f"trained for {trained}" if trained else "") if p)  # fmt: skip
    ax.set_title("reconstructed image PSNR and channel-estimation NMSE per frame" + (f" ({about})" if about else ""),
                 fontsize=9.5, loc="left")  # fmt: skip
    handles = [
        Line2D([], [], color=_PSNR_COLOR, marker="o", ms=4.2, lw=0.6, label="PSNR (left axis)"),
        Line2D([], [], color=_NMSE_COLOR, marker="s", ms=4.2, lw=0.6, label="channel NMSE\n(right axis)"),
        Line2D([], [], color="0.3", marker="o", ms=4.2, mfc="white", mew=1.0, ls="none",
               label=f"estimator mismatched\n({int(mism.sum())} of {len(t)} frames)"),
    ]  # fmt: skip
    if outage.any():
        handles.append(Line2D([], [], marker="x", ms=6, mew=1.3, color="red", ls="none",
                              label=f"outage, no image ({int(outage.sum())})"))  # fmt: skip
    beside = offset_copy(ax.transAxes, fig=ax.figure, x=52, units="points")  # clear of the NMSE tick labels
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), bbox_transform=beside, fontsize=8,
              frameon=False)  # fmt: skip


def write_report(
    run_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    vehicles: Sequence[str] | None = None,
) -> list[Path]:
    """Draw a run's standard figures as PNG files, and its quality table as CSV.

    Writes ``map.png`` (:func:`plot_map`), one ``timeline_<vehicle>.png``
    (:func:`plot_timeline`, with its image-quality panel for a full-link run) per vehicle,
    and, when the log carries image quality (``link.fidelity: full``),
    ``quality_by_scene.csv`` (:data:`QUALITY_FILE`: the table of :func:`quality_by_scene`,
    scenes as the first column).

    Parameters
    ----------
    run_dir
        A run directory (with its event log and ``scenario.resolved.yaml``).
    out_dir
        Where the files go (created if needed); default ``run_dir/figures``.
    vehicles
        Vehicles to draw timelines for; default up to 4 with the most ``tx`` rows.

    Returns
    -------
    list of pathlib.Path
        The files written: the map, the timelines, then ``quality_by_scene.csv`` if written.

    Raises
    ------
    OutputError
        The folder holds no event log or no ``scenario.resolved.yaml``, a vehicle is not in
        the log, or the output folder cannot be written.
    """
    from ivsim.config.loader import load_scenario
    from ivsim.world import SceneMap, load_map

    run_dir = Path(run_dir)
    df = load_run(run_dir)
    if vehicles:
        vehicles = [str(v) for v in dict.fromkeys(vehicles)]
        _check_vehicles(df, vehicles, where=str(run_dir))
    else:
        vehicles = _busiest_vehicles(df.loc[df["event"] == "tx"], 4)
        vehicles = vehicles or sorted(_present(df, "vehicle"), key=_natural_key)[:4]
    resolved = run_dir / RESOLVED_SCENARIO_FILE
    if not resolved.is_file():
        msg = f"{run_dir}: no {RESOLVED_SCENARIO_FILE} here, cannot draw the map"
        raise OutputError(msg)
    scenario = load_scenario(resolved)
    roadmap = load_map(scenario.map)
    scene_map = SceneMap(roadmap, scenario.scene_rules, list(scenario.scenes))

    out = Path(out_dir) if out_dir is not None else run_dir / "figures"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"{out}: cannot create the figure folder ({exc.strerror or exc})"
        raise OutputError(msg) from None
    written = [_save(plot_map(df, roadmap, scene_map, scenario), out / "map.png")]
    for vehicle in vehicles:
        fig = plot_timeline(df, vehicle, scenes=list(scenario.scenes))
        written.append(_save(fig, out / f"timeline_{_safe_name(vehicle)}.png"))
    quality = quality_by_scene(df)
    if not quality.empty:
        written.append(_save_csv(quality, out / QUALITY_FILE))
    return written


def new_figure(*, figsize: tuple[float, float], dpi: int = REPORT_DPI) -> Figure:
    """A figure with an Agg canvas and constrained layout, outside pyplot's state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _figure_axes(ax: Axes | None, *, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = new_figure(figsize=figsize)
    return fig, fig.add_subplot()


def _save(fig: Figure, path: Path) -> Path:
    try:
        fig.savefig(path, dpi=REPORT_DPI)
    except OSError as exc:
        msg = f"{path}: cannot write the figure ({exc.strerror or exc})"
        raise OutputError(msg) from None
    logger.info("wrote %s", path)
    return path


def _save_csv(table: pd.DataFrame, path: Path) -> Path:
    try:
        table.to_csv(path, float_format="%.6g")
    except OSError as exc:
        msg = f"{path}: cannot write the table ({exc.strerror or exc})"
        raise OutputError(msg) from None
    logger.info("wrote %s", path)
    return path


def _present(df: pd.DataFrame, column: str) -> list[str]:
    """Distinct non-null values of a column that occur in the frame, as strings."""
    values = df[column].dropna()
    return [str(v) for v in pd.unique(values.astype("object"))]


def _busiest_vehicles(tx: pd.DataFrame, n: int) -> list[str]:
    """Up to ``n`` vehicles with the most rows in ``tx`` (ties by natural id order)."""
    counts = tx["vehicle"].dropna().astype("object").value_counts()
    ids = sorted(counts.index, key=lambda v: (-int(counts[v]), _natural_key(v)))
    return [str(v) for v in ids[:n]]


def _check_vehicles(df: pd.DataFrame, vehicles: Sequence[str], *, where: str | None = None) -> None:
    known = set(_present(df, "vehicle"))
    for v in vehicles:
        if v not in known:
            ids = sorted(known, key=_natural_key)
            few = ", ".join(ids[:6]) + (", ..." if len(ids) > 6 else "")
            prefix = f"{where}: " if where else ""
            msg = f"{prefix}unknown vehicle {v!r} (this run has {len(ids)}: {few or 'none'})"
            raise OutputError(msg)


def _break_gaps(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insert NaN where consecutive samples are more than 3 typical steps apart."""
    if len(t) < 3:
        return t, y
    dt = np.diff(t)
    step = float(np.median(dt[dt > 0])) if (dt > 0).any() else 0.0
    gaps = np.flatnonzero(dt > max(3.0 * step, 1e-9)) if step > 0 else np.array([], dtype=int)
    if not len(gaps):
        return t, y
    t_out = np.insert(t, gaps + 1, t[gaps] + step)
    y_out = np.insert(y.astype("float64"), gaps + 1, np.nan)
    return t_out, y_out


def _bs_positions_km(roadmap: RoadMap, scenario: Scenario) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for bs in scenario.base_stations:
        pos = bs.position
        if hasattr(pos, "lon"):
            x, y = roadmap.to_xy(pos.lon, pos.lat)
        else:
            x, y = pos.x_m, pos.y_m
        out[bs.id] = (float(x) / 1000.0, float(y) / 1000.0)
    return out


def _run_name(df: pd.DataFrame) -> str:
    manifest = df.attrs.get("manifest")
    if isinstance(manifest, dict) and manifest.get("scenario"):
        return str(manifest["scenario"])
    ids = _present(df, "run_id")
    return ids[0] if ids else "run"


def _safe_name(text: str) -> str:
    """A file-name-safe version of an id."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip(".") or "vehicle"
