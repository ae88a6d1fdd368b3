"""Reading finished (or killed) runs back for analysis.

``load_run`` turns a run directory into one pandas DataFrame with the dtypes of the
declared event-log schema (:data:`ivsim.sim.eventlog.COLUMNS`); ``event_counts``,
``summarize_run``, ``scene_time``, ``quality_by_scene``, ``quality_by_estimator_match`` and
``refinements`` summarise such a frame; ``plot_map`` and ``plot_timeline`` draw it, and ``write_report``
writes a run's standard PNGs and tables (``ivsim report``). To compare refinement timing
policies over several runs (``ivsim compare``): ``load_runs``, ``policy_summary``,
``mismatch_by_vehicle_scene``, ``compare_runs``, the figures ``plot_refine_timeline``,
``plot_slack_cdf``, ``plot_quality_vs_cost``, and ``write_comparison``. Figures are built on
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
    "COMPARE_CSV",
    "COMPARE_MD",
    "MAP_MAX_TRACKS",
    "OSM_ATTRIBUTION",
    "OUTCOME_COLORS",
    "POLICY_ORDER",
    "POLICY_SUMMARY_COLUMNS",
    "QUALITY_FILE",
    "REPORT_DPI",
    "compare_runs",
    "detector_errors",
    "event_counts",
    "load_run",
    "load_runs",
    "markdown_table",
    "mismatch_by_vehicle_scene",
    "plot_map",
    "plot_quality_vs_cost",
    "plot_refine_timeline",
    "plot_slack_cdf",
    "plot_timeline",
    "policy_summary",
    "quality_by_estimator_match",
    "quality_by_scene",
    "refinements",
    "run_info",
    "scene_colors",
    "scene_time",
    "summarize_run",
    "sweep_runs",
    "sweep_summary",
    "write_comparison",
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
        backhaul_down_s, air_down_s``), ``gpu_s``, ``upload_bytes``, ``download_bytes``, and the
        timing (``policy``, ``deadline_t_s``, ``arrival_t_s``, ``slack_s``); empty (same columns)
        for a run without refinements.
    """
    head = ["t_s", "job_id", "vehicle", "target_scene", "outcome", "reason", "cached", "adapter_id"]
    timing = ["policy", "deadline_t_s", "arrival_t_s", "slack_s"]
    columns = [*head, *REFINE_BUDGET_COLUMNS, "upload_bytes", "download_bytes", *timing]
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
    _draw_scene_bands(ax_scene, iv, colors, span, legend_y=1.15)

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



def _draw_scene_bands(ax: Axes, iv: pd.DataFrame, colors: dict, span: float, *, legend_y: float) -> None:
    """Scene intervals (:func:`_scene_intervals`) as coloured bands, named where wide enough, with a legend."""
    from matplotlib.patches import Patch

    for row in iv.itertuples(index=False):
        ax.axvspan(row.start_s, row.end_s, color=colors.get(row.scene, _OTHER_COLOR), lw=0)
        if row.end_s - row.start_s > 0.09 * span:
            ax.text((row.start_s + row.end_s) / 2, 0.5, row.scene, ha="center", va="center", fontsize=8.5,
                          color="white", fontweight="bold")  # fmt: skip
    ax.set_yticks([])
    ax.set_ylim(0, 1)
    ax.set_ylabel("scene", rotation=0, ha="right", va="center")
    used = list(dict.fromkeys(iv["scene"])) if len(iv) else []
    if used:
        ax.legend(handles=[Patch(color=colors.get(s, _OTHER_COLOR), label=s) for s in used],
                        loc="upper left", bbox_to_anchor=(1.005, legend_y), fontsize=8, frameon=False)  # fmt: skip

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


# ---------------------------------------------------------------------- comparing refinement policies

#: Order of refinement policies in :func:`compare_runs` tables and the comparison figures;
#: other policy kinds follow, by name.
POLICY_ORDER = ("oracle", "proactive", "adaptive", "cached", "reactive", "periodic", "never")

#: Columns of :func:`policy_summary` and :func:`compare_runs`, in order.
POLICY_SUMMARY_COLUMNS = [
    "run_id", "policy", "detector", "seed", "frames", "psnr_mean", "psnr_p5", "ssim_mean", "ssim_p5",
    "nmse_mean_db", "mismatched_share", "mismatched_s", "jobs", "met", "late", "cancelled", "failed", "deadline_hit_rate",
    "slack_mean_s", "gpu_s", "refine_air_bytes", "refine_backhaul_bytes",
]  # fmt: skip
_SUMMARY_INT = ("frames", "jobs", "met", "late", "cancelled", "failed", "refine_air_bytes", "refine_backhaul_bytes")
_SUMMARY_FLOAT = ("psnr_mean", "psnr_p5", "ssim_mean", "ssim_p5", "nmse_mean_db", "mismatched_share", "mismatched_s",
                  "deadline_hit_rate", "slack_mean_s", "gpu_s")  # fmt: skip

#: File names :func:`write_comparison` writes (besides one ``timeline_<label>.png`` per run).
COMPARE_CSV, COMPARE_MD = "compare.csv", "compare.md"

#: Colours of refinement-job outcomes (``done`` is the single outcome of logs older than met/late).
OUTCOME_COLORS = {
    "met": "#2e7d32", "late": "#ef6c00", "cancelled": "#9e9e9e", "failed": "#c62828", "done": "#1565c0",
    "in flight": "#cfd8dc",
}  # fmt: skip
_DEPLOY_COLOR = "#37474f"


def run_info(run_dir: str | Path) -> dict[str, str | int | None]:
    """The refinement policy, scene-change detector and seed a run was made with.

    Read from the run's ``scenario.resolved.yaml`` as plain YAML (``refinement.policy.kind``,
    ``refinement.detector.kind``, ``seed``), so a file written by an older or newer schema
    still answers what it holds.

    Parameters
    ----------
    run_dir
        A run directory.

    Returns
    -------
    dict
        ``{"policy": str | None, "detector": str | None, "seed": int | None}``; ``None`` for
        what the file does not say (or when the run has no readable resolved scenario, which
        is logged as a warning, not raised).
    """
    import yaml

    path = Path(run_dir) / RESOLVED_SCENARIO_FILE
    doc = None
    if path.is_file():
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            logger.warning("%s: cannot read the resolved scenario (%s)", path, exc)
    doc = doc if isinstance(doc, dict) else {}
    refinement = doc.get("refinement") if isinstance(doc.get("refinement"), dict) else {}
    seed = doc.get("seed")
    return {
        "policy": _kind_of(refinement.get("policy")),
        "detector": _kind_of(refinement.get("detector")),
        "seed": seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
    }


def _kind_of(spec: object) -> str | None:
    """``spec["kind"]`` of a YAML mapping (or the string itself); None if neither."""
    if isinstance(spec, dict):
        spec = spec.get("kind")
    return spec if isinstance(spec, str) and spec else None


def load_runs(run_dirs: Sequence[str | Path]) -> list[pd.DataFrame]:
    """Load runs to compare: :func:`load_run` of each, with what it was run with.

    Parameters
    ----------
    run_dirs
        Run directories.

    Returns
    -------
    list of pandas.DataFrame
        One frame per run, in the given order; ``df.attrs["run_info"]`` holds
        :func:`run_info` of the run plus ``"run_dir"``, which :func:`policy_summary` reads.

    Raises
    ------
    OutputError
        If no folder is given, or one is missing, holds no event log, or its log has no events.
    """
    if not run_dirs:
        msg = "no run folder given"
        raise OutputError(msg)
    frames = []
    for run_dir in map(Path, run_dirs):
        if not run_dir.is_dir():
            msg = f"{run_dir}: {'not a folder' if run_dir.exists() else 'no such run folder'}"
            raise OutputError(msg)
        df = load_run(run_dir)
        if df.empty:
            msg = f"{run_dir}: the event log holds no events"
            raise OutputError(msg)
        df.attrs["run_info"] = {**run_info(run_dir), "run_dir": str(run_dir)}
        frames.append(df)
    return frames


def policy_summary(df: pd.DataFrame, *, scene: str | None = None, after_t_s: float | None = None) -> pd.DataFrame:
    """What a refinement timing policy bought (image quality, estimator mismatch) and what it cost.

    Parameters
    ----------
    df
        Events of one run (:func:`load_run`, or a frame of the same columns) or of several
        (concatenated; rows are grouped by ``run_id``). Columns a log lacks count as empty.
    scene
        Restrict the frame and mismatch metrics (``frames`` to ``mismatched_s``) to this
        scene; the job and cost columns always cover the whole run.
    after_t_s
        Restrict the same metrics to frames (and time) from this simulated time on
        (``t_s >= after_t_s``), e.g. to leave out a warm-up.

    Returns
    -------
    pandas.DataFrame
        One row per run, in order of first row, with the columns of
        :data:`POLICY_SUMMARY_COLUMNS`:

        ``run_id``, ``policy``, ``detector``, ``seed``
            The run and what it was run with: from ``df.attrs["run_info"]`` (set by
            :func:`load_runs`) for a frame of one run; else the policy is the most common
            ``policy`` of the ``refine_request`` rows, then of the ``deploy`` rows, then
            ``"oracle"`` if an ``estimator_switch`` row has ``source`` oracle, else
            ``"never"``; the detector the most common ``detector`` of the
            ``refine_request``, then ``detect`` rows, else None; the seed the manifest's.
        ``frames`` (``int64``)
            ``tx`` rows.
        ``psnr_mean``, ``psnr_p5``, ``ssim_mean``, ``ssim_p5``
            Mean and 5th percentile (linear interpolation) of the reconstruction PSNR (dB)
            and SSIM of the frames that have one (outage frames and analytic runs have none:
            NaN when no frame does).
        ``nmse_mean_db``
            The channel estimates' NMSE of those frames, averaged in linear scale, in dB.
        ``mismatched_share``
            Share of the frames decoded with an estimator not made or refined for the frame's
            scene: the ``mismatched`` column, else ``estimator_scene != scene``; frames with
            neither are left out (NaN when no frame says).
        ``mismatched_s``
            Seconds, summed over vehicles, spent in a scene the vehicle's estimator was not
            made or refined for (see :func:`mismatch_by_vehicle_scene`).
        ``jobs`` (``int64``)
            Refinement jobs requested (distinct ``job_id`` of ``refine_request`` and
            ``refine_done`` rows); jobs still running at the end count here only.
        ``met``, ``late``, ``cancelled``, ``failed`` (``int64``)
            ``refine_done`` rows per ``outcome`` (a legacy ``done`` outcome counts in none).
        ``deadline_hit_rate``
            ``met / (met + late)``; NaN when neither.
        ``slack_mean_s``
            Mean ``slack_s`` of the finished jobs (arrival at the target scene minus the
            adapter's delivery; > 0: in time); NaN when none has one.
        ``gpu_s``
            GPU-seconds of all ``refine_done`` rows.
        ``refine_air_bytes``, ``refine_backhaul_bytes`` (``int64``)
            ``upload_bytes + download_bytes`` of the ``refine_done`` rows: every byte crosses
            the radio link and the backhaul, so the two are equal; both are kept so tables
            that weigh the links differently need not know that.

        No rows (the columns only) for a frame without rows.

    Examples
    --------
    >>> policy_summary(load_run("runs/reactive"), scene="river_bridge")  # doctest: +SKIP
    """
    runs = list(_split_runs(df))
    rows = [_summary_row(run, run_id, info, scene=scene, after_t_s=after_t_s) for run_id, run, info in runs]
    return _summary_frame(rows)


def mismatch_by_vehicle_scene(df: pd.DataFrame) -> pd.DataFrame:
    """Frames and time each vehicle spent with a mismatched channel estimator, per scene.

    A frame is mismatched by its ``mismatched`` column, else when its ``estimator_scene``
    differs from its ``scene``. Time is taken from the scene stays (``scene_enter`` to the next
    ``scene_enter`` or ``vehicle_arrive``, the last one to the end of the run) split at every
    change of the estimator in use: a ``deploy`` row put in use at once (``active`` not false)
    switches it to its ``target_scene``, an ``estimator_switch`` row to its
    ``estimator_scene``, and a ``tx`` row's ``estimator_scene`` (when logged) says which one is
    in use; before the first of them a vehicle uses the estimator of the scene it departed
    in. The time is thus exact between events, whatever the frame rate, and needs no
    ``tx`` rows.

    Parameters
    ----------
    df
        Events of one run or several (:func:`load_run`).

    Returns
    -------
    pandas.DataFrame
        Columns ``run_id``, ``vehicle``, ``scene``, ``frames``, ``frames_mismatched``
        (``int64``), ``time_s``, ``time_mismatched_s`` (s); one row per run, vehicle and scene
        it entered or sent a frame in, sorted by run (first row), vehicle (natural order) and
        first time in the scene.
    """
    columns = ["run_id", "vehicle", "scene", "frames", "frames_mismatched", "time_s", "time_mismatched_s"]
    parts = []
    for run_id, run, _ in _split_runs(df):
        tx = _tx_rows(run)
        frames = pd.DataFrame({"vehicle": _object_column(tx, "vehicle"), "scene": _object_column(tx, "scene"),
                               "flag": _mismatch_flags(tx), "t_s": tx["t_s"].to_numpy(dtype="float64")})  # fmt: skip
        frames = frames.dropna(subset=["vehicle", "scene"])
        g = frames.groupby(["vehicle", "scene"], sort=False)
        by_frame = pd.DataFrame(
            {"frames": g.size(), "frames_mismatched": g["flag"].sum(), "first_tx_s": g["t_s"].min()}
        )
        iv = _estimator_intervals(run)
        iv["time_s"] = iv["end_s"] - iv["start_s"]
        iv["time_mismatched_s"] = iv["time_s"].where(iv["mismatched"], 0.0)
        g = iv.groupby(["vehicle", "scene"], sort=False)
        by_time = pd.DataFrame({"time_s": g["time_s"].sum(), "time_mismatched_s": g["time_mismatched_s"].sum(),
                                "first_s": g["start_s"].min()})  # fmt: skip
        both = by_frame.join(by_time, how="outer")
        if both.empty:
            continue
        both["first_s"] = both[["first_s", "first_tx_s"]].min(axis=1)
        both = both.reset_index()
        both["_order"] = [_natural_key(v) for v in both["vehicle"]]
        both = both.sort_values(["_order", "first_s"], kind="stable")
        both.insert(0, "run_id", run_id)
        parts.append(both)
    if not parts:
        return pd.DataFrame({c: pd.Series([], dtype="int64" if c.startswith("frames") else
                                              "float64" if c.startswith("time") else "object")
                             for c in columns})  # fmt: skip
    out = pd.concat(parts, ignore_index=True)
    for c in ("frames", "frames_mismatched"):
        out[c] = out[c].fillna(0).astype("int64")
    for c in ("time_s", "time_mismatched_s"):
        out[c] = out[c].fillna(0.0).astype("float64")
    return out[columns]


def compare_runs(
    runs: Sequence[str | Path | pd.DataFrame],
    *,
    scene: str | None = None,
    after_t_s: float | None = None,
) -> pd.DataFrame:
    """One :func:`policy_summary` row per run, runs ordered by policy.

    Parameters
    ----------
    runs
        Run directories (loaded with :func:`load_runs`) or frames already loaded with it.
    scene, after_t_s
        As in :func:`policy_summary`.

    Returns
    -------
    pandas.DataFrame
        The columns of :data:`POLICY_SUMMARY_COLUMNS`; rows sorted by policy in the order
        of :data:`POLICY_ORDER` (other kinds after it, by name), then seed, then run id.

    Raises
    ------
    OutputError
        If a run folder is missing, holds no event log or no events.

    Examples
    --------
    >>> compare_runs(["runs/oracle", "runs/reactive", "runs/never"], scene="river_bridge")  # doctest: +SKIP
    """
    table, _ = _compare(_as_frames(runs), scene=scene, after_t_s=after_t_s)
    return table


#: Metrics of :func:`policy_summary` that :func:`sweep_summary` averages over seeds.
SWEEP_METRICS = ("psnr_mean", "psnr_p5", "ssim_mean", "nmse_mean_db", "mismatched_share", "mismatched_s",
                 "deadline_hit_rate", "slack_mean_s", "gpu_s", "refine_air_bytes")  # fmt: skip


def sweep_runs(sweep_dir: str | Path, *, scene: str | None = None) -> pd.DataFrame:
    """One :func:`policy_summary` row per finished run of an ``ivsim sweep`` folder, with its swept values.

    Parameters
    ----------
    sweep_dir
        A folder written by ``ivsim sweep`` (it holds ``sweep.json``).
    scene
        As in :func:`policy_summary`.

    Returns
    -------
    pandas.DataFrame
        The swept paths (one column each, named as in the sweep file) and ``seed``, then the
        :data:`POLICY_SUMMARY_COLUMNS`.

    Raises
    ------
    OutputError
        No ``sweep.json`` or no finished run in it.
    """
    import json

    folder = Path(sweep_dir)
    try:
        info = json.loads((folder / "sweep.json").read_text())
    except (OSError, ValueError) as exc:
        msg = f"{folder}: not a sweep folder (no readable sweep.json: {exc})"
        raise OutputError(msg) from None
    rows = []
    for run in info.get("runs", []):
        if run.get("status") != "complete":
            continue
        run_dir = Path(run["run_dir"])
        if not run_dir.is_absolute():
            run_dir = folder / run_dir
        (frame,) = load_runs([run_dir])
        row = policy_summary(frame, scene=scene).iloc[0].to_dict()
        values = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in run.get("values", {}).items()}
        rows.append({**values, "seed": run.get("seed"), **{k: v for k, v in row.items() if k != "seed"}})
    if not rows:
        msg = f"{folder}: the sweep has no finished run yet"
        raise OutputError(msg)
    return pd.DataFrame(rows)


def sweep_summary(sweep_dir: str | Path, *, scene: str | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """Means over seeds with confidence intervals, per combination of swept values.

    Parameters
    ----------
    sweep_dir
        A folder written by ``ivsim sweep``.
    scene
        As in :func:`policy_summary`.
    confidence
        Level of the two-sided Student-t interval of each mean.

    Returns
    -------
    pandas.DataFrame
        The swept columns, ``runs`` (seeds averaged), then for each of :data:`SWEEP_METRICS`
        ``<metric>`` (the mean over seeds) and ``<metric>_ci`` (the interval's half-width;
        NaN with one seed).
    """
    from scipy import stats

    runs = sweep_runs(sweep_dir, scene=scene)
    swept = [c for c in runs.columns[: list(runs.columns).index("seed")]]
    rows = []
    groups = runs.groupby(swept, sort=False, dropna=False) if swept else [((), runs)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, object] = dict(zip(swept, key, strict=True))
        row["runs"] = len(g)
        for m in SWEEP_METRICS:
            x = pd.to_numeric(g[m], errors="coerce").dropna().to_numpy(dtype="float64")
            row[m] = float(x.mean()) if len(x) else np.nan
            if len(x) > 1:
                half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
                row[f"{m}_ci"] = float(half)
            else:
                row[f"{m}_ci"] = np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def detector_errors(df: pd.DataFrame) -> pd.DataFrame:
    """How well a run's scene-change detector did, against the truth logged beside each prediction.

    A true scene change is a ``scene_enter`` row with a previous scene. Boundary predictions
    (``detect`` rows with ``detection == "boundary"``) are matched to the change they aim at by
    vehicle, target scene and ``arrival_t_s``; alarms (``detection == "alarm"``) to the latest
    change before them.

    Parameters
    ----------
    df
        One run's (or several runs') event log.

    Returns
    -------
    pandas.DataFrame
        One row per run: ``run_id, detector, changes`` (true scene changes), and for
        predictions ``predicted`` (changes predicted before they happened), ``missed``,
        ``false_predictions`` (predicted boundaries the vehicle never reached),
        ``error_first_s`` / ``error_last_s`` (mean signed error of the first and of the latest
        prediction of each predicted change; > 0: predicted later than it happened),
        ``abs_error_last_s``; for alarms ``alarms``, ``false_alarms``, ``detected`` (changes
        followed by an alarm before the next change), ``delay_mean_s``, ``delay_median_s``.
        Counts are 0 and means NaN where a detector does not produce that kind of output.
    """
    rows = []
    for run_id, run in df.groupby("run_id", observed=True, sort=False):
        ev = run.event.astype(str)
        enters = run.loc[(ev == "scene_enter") & run.prev_scene.notna(), ["t_s", "vehicle", "scene"]]
        changes = enters.assign(vehicle=enters.vehicle.astype(str), scene=enters.scene.astype(str))
        det = run.loc[ev == "detect"]
        kind = _object_column(det, "detection") if len(det) else np.array([], dtype=object)
        pred = det.loc[kind == "boundary"]
        alarm = det.loc[kind == "alarm"]
        row: dict[str, object] = {
            "run_id": run_id, "detector": _most_common(det, "detector") if len(det) else None,
            "changes": len(changes),
        }  # fmt: skip
        first = last = np.array([])
        predicted = 0
        if len(pred):
            p = pd.DataFrame({
                "vehicle": _object_column(pred, "vehicle").astype(str), "target": _object_column(pred, "target_scene"),
                "t_s": pred.t_s.to_numpy(), "arrival": _float_column(pred, "arrival_t_s"),
                "error": _float_column(pred, "error_s"),
            })  # fmt: skip
            p = p[p.t_s <= p.arrival.fillna(np.inf)]
            hit = p[p.arrival.notna()].sort_values("t_s")
            groups = hit.groupby(["vehicle", "target", "arrival"], sort=False)
            first, last = groups.error.first().to_numpy(), groups.error.last().to_numpy()
            keys = set(groups.groups)
            predicted = sum((v, sc, t) in keys for t, v, sc in changes.itertuples(index=False, name=None))
            row["false_predictions"] = int(p.groupby(["vehicle", "target"]).arrival.apply(lambda a: a.isna().all()).sum())
        else:
            row["false_predictions"] = 0
        row |= {
            "predicted": predicted, "missed": len(changes) - predicted if len(pred) else 0,
            "error_first_s": float(np.mean(first)) if len(first) else np.nan,
            "error_last_s": float(np.mean(last)) if len(last) else np.nan,
            "abs_error_last_s": float(np.mean(np.abs(last))) if len(last) else np.nan,
        }  # fmt: skip
        delays = _float_column(alarm, "delay_s") if len(alarm) else np.array([])
        false = alarm.false_alarm.fillna(False).astype(bool).to_numpy() if "false_alarm" in alarm else np.array([])
        detected = 0
        for v, vc in changes.groupby("vehicle", sort=False):
            at = np.sort(alarm.t_s[_object_column(alarm, "vehicle").astype(str) == v].to_numpy()) if len(alarm) else []
            t = np.sort(vc.t_s.to_numpy())
            ends = np.append(t[1:], np.inf)
            detected += sum(bool(np.any((at >= a) & (at < b))) for a, b in zip(t, ends, strict=True))
        row |= {
            "alarms": len(alarm), "false_alarms": int(false.sum()), "detected": detected,
            "delay_mean_s": float(np.nanmean(delays)) if np.isfinite(delays).any() else np.nan,
            "delay_median_s": float(np.nanmedian(delays)) if np.isfinite(delays).any() else np.nan,
        }  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def write_comparison(
    runs: Sequence[str | Path | pd.DataFrame],
    out_dir: str | Path,
    *,
    scene: str | None = None,
) -> list[Path]:
    """Write the comparison of refinement policies over several runs: tables and figures.

    Writes ``compare.csv`` and ``compare.md`` (the :func:`compare_runs` table), ``detectors.csv``
    (:func:`detector_errors` per run, labelled), ``slack_cdf.png``
    (:func:`plot_slack_cdf`), ``quality_vs_cost.png`` (:func:`plot_quality_vs_cost`) and, per
    run, ``timeline_<label>.png`` (:func:`plot_refine_timeline` of the vehicle with the most
    refinement jobs, ties broken by most frames). A run's label is its policy, with its seed
    (then its run id) added where several runs share a policy.

    Parameters
    ----------
    runs
        Run directories or frames loaded with :func:`load_runs`.
    out_dir
        Output folder (created if needed).
    scene
        Restrict the table's frame and mismatch metrics to this scene (:func:`policy_summary`).

    Returns
    -------
    list of pathlib.Path
        The files written, in the order above (a run without vehicles gets no timeline).

    Raises
    ------
    OutputError
        If a run cannot be loaded or the output folder cannot be written.
    """
    frames = _as_frames(runs)
    table, order = _compare(frames, scene=scene)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"{out}: cannot create the output folder ({exc.strerror or exc})"
        raise OutputError(msg) from None
    written = [_write_text(out / COMPARE_CSV, table.to_csv(index=False, float_format="%.6g"))]
    where = f" (frame and mismatch metrics in scene {scene})" if scene else ""
    labels = _run_labels(table)
    ordered = [frames[i] for i in order]
    errors = pd.concat([detector_errors(f) for f in ordered], ignore_index=True)
    errors.insert(1, "policy", labels)
    md = (
        f"# Refinement policies compared{where}\n\n{markdown_table(table)}\n\n"
        f"## Scene-change detectors against the truth\n\n{markdown_table(errors)}\n"
    )
    written.append(_write_text(out / COMPARE_MD, md))
    written.append(_write_text(out / "detectors.csv", errors.to_csv(index=False, float_format="%.6g")))
    written.append(plot_slack_cdf(dict(zip(labels, ordered, strict=True)), out / "slack_cdf.png"))
    written.append(plot_quality_vs_cost(table, out / "quality_vs_cost.png"))
    for label, frame in zip(labels, ordered, strict=True):
        vehicle = _busiest_refiner(frame)
        if vehicle is not None:
            written.append(plot_refine_timeline(frame, vehicle, out / f"timeline_{_safe_name(label)}.png"))
    return written


def markdown_table(table: pd.DataFrame) -> str:
    """A table as a Markdown pipe table (no index; 4 significant digits; empty cells for missing).

    Parameters
    ----------
    table
        E.g. a :func:`compare_runs` table.

    Returns
    -------
    str
        The table, one line per row, numeric columns right-aligned; no optional dependency.
    """
    header = [str(c) for c in table.columns]
    cells = [[_md_cell(v) for v in row] for row in table.itertuples(index=False, name=None)]
    numeric = [pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
               for c in table.columns]  # fmt: skip
    widths = [max([len(h), 3, *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]

    def line(values: list[str]) -> str:
        padded = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "|".join("-" * (w + 1) + ":" if num else "-" * (w + 2) for w, num in zip(widths, numeric, strict=True))
    rule = f"|{rule}|"
    return "\n".join([line(header), rule, *(line(r) for r in cells)])


def _md_cell(value: object) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return str(value).replace("|", "\\|")


def _write_text(path: Path, text: str) -> Path:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        msg = f"{path}: cannot write ({exc.strerror or exc})"
        raise OutputError(msg) from None
    logger.info("wrote %s", path)
    return path


def _as_frames(runs: Sequence[str | Path | pd.DataFrame]) -> list[pd.DataFrame]:
    """Frames as given, folders through :func:`load_runs` (in the given order)."""
    dirs = [r for r in runs if not isinstance(r, pd.DataFrame)]
    loaded = iter(load_runs(dirs)) if dirs else iter(())
    frames = [r if isinstance(r, pd.DataFrame) else next(loaded) for r in runs]
    if not frames:
        msg = "no run given"
        raise OutputError(msg)
    return frames


def _compare(frames: list[pd.DataFrame], **filters: object) -> tuple[pd.DataFrame, list[int]]:
    """The comparison table (policy order) and, per row, the index of its frame in ``frames``."""
    rows, owner = [], []
    for i, frame in enumerate(frames):
        for run_id, run, info in _split_runs(frame):
            rows.append(_summary_row(run, run_id, info, **filters))
            owner.append(i)

    def key(k: int) -> tuple:
        row = rows[k]
        policy = str(row["policy"])
        rank = POLICY_ORDER.index(policy) if policy in POLICY_ORDER else len(POLICY_ORDER)
        seed = row["seed"]
        return (rank, policy, seed is None, seed if seed is not None else 0, str(row["run_id"]))

    order = sorted(range(len(rows)), key=key)
    return _summary_frame([rows[k] for k in order]), [owner[k] for k in order]


def _run_labels(table: pd.DataFrame) -> list[str]:
    """Policy names, made unique with the detector, then the seed, then the run id (where they differ), then a counter."""
    labels = [str(p) for p in table["policy"]]
    for extra in ("detector", "seed", "run_id"):
        values = list(table[extra])
        groups: dict[str, set] = {}
        for label, value in zip(labels, values, strict=True):
            groups.setdefault(label, set()).add(None if pd.isna(value) else str(value))
        words = {"detector": "{} + {}", "seed": "{} seed {}", "run_id": "{} {}"}[extra]
        labels = [
            words.format(label, value) if len(groups[label]) > 1 and not pd.isna(value) else label
            for label, value in zip(labels, values, strict=True)
        ]
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return out


def _split_runs(df: pd.DataFrame):  # noqa: ANN202
    """Yield ``(run_id, events, info)`` per run of a frame; ``info`` from attrs for a one-run frame."""
    ids = _object_column(df, "run_id")
    known = pd.notna(ids)
    distinct = list(dict.fromkeys(ids[known]))
    attrs_info = df.attrs.get("run_info") if isinstance(df.attrs.get("run_info"), dict) else {}
    if len(distinct) <= 1:
        run_id = str(distinct[0]) if distinct else _run_id_from_attrs(df)
        if len(df):
            yield run_id, df, attrs_info
        return
    for run_id in distinct:
        run = df.loc[ids == run_id]
        run.attrs = {}  # the attrs (manifest, run_info) of a concatenated frame describe no single run
        yield str(run_id), run, {}


def _run_id_from_attrs(df: pd.DataFrame) -> str:
    manifest = df.attrs.get("manifest")
    if isinstance(manifest, dict) and manifest.get("run_id"):
        return str(manifest["run_id"])
    return "run"


def _summary_row(
    run: pd.DataFrame,
    run_id: str,
    info: dict,
    *,
    scene: str | None = None,
    after_t_s: float | None = None,
) -> dict[str, object]:
    """One :func:`policy_summary` row (a dict) of one run's events."""
    event = _object_column(run, "event")
    requests, done = (run.loc[event == e] for e in ("refine_request", "refine_done"))

    tx = _tx_rows(run)
    if scene is not None:
        tx = tx.loc[_object_column(tx, "scene") == scene]
    if after_t_s is not None:
        tx = tx.loc[tx["t_s"].to_numpy(dtype="float64") >= after_t_s]
    psnr, ssim, nmse = (_finite(_float_column(tx, c)) for c in ("psnr_db", "ssim", "nmse_db"))
    flags = _finite(_mismatch_flags(tx))

    iv = _estimator_intervals(run)
    if scene is not None:
        iv = iv.loc[iv["scene"] == scene]
    start = iv["start_s"].to_numpy(dtype="float64")
    if after_t_s is not None:
        start = np.maximum(start, after_t_s)
    length = np.clip(iv["end_s"].to_numpy(dtype="float64") - start, 0.0, None)
    mismatched_s = float(length[iv["mismatched"].to_numpy(dtype=bool)].sum())

    outcome = _object_column(done, "outcome")
    counts = {k: int((outcome == k).sum()) for k in ("met", "late", "cancelled", "failed")}
    decided = counts["met"] + counts["late"]
    slack = _finite(_float_column(done, "slack_s"))
    ids = set(_object_column(requests, "job_id")) | set(_object_column(done, "job_id"))
    ids.discard(None)
    jobs = max(len(ids), len(requests), len(done))
    moved = int(np.nansum(_float_column(done, "upload_bytes")) + np.nansum(_float_column(done, "download_bytes")))

    policy, detector, seed = _run_kinds(run, info)
    return {
        "run_id": run_id,
        "policy": policy,
        "detector": detector,
        "seed": seed,
        "frames": len(tx),
        "psnr_mean": _mean(psnr),
        "psnr_p5": _p5(psnr),
        "ssim_mean": _mean(ssim),
        "ssim_p5": _p5(ssim),
        "nmse_mean_db": float(10 * np.log10(np.mean(10 ** (nmse / 10)))) if len(nmse) else np.nan,
        "mismatched_share": _mean(flags),
        "mismatched_s": mismatched_s,
        "jobs": jobs,
        **counts,
        "deadline_hit_rate": counts["met"] / decided if decided else np.nan,
        "slack_mean_s": _mean(slack),
        "gpu_s": float(np.nansum(_float_column(done, "gpu_s"))),
        "refine_air_bytes": moved,
        "refine_backhaul_bytes": moved,
    }


def _run_kinds(run: pd.DataFrame, info: dict) -> tuple[str, str | None, int | None]:
    """``(policy, detector, seed)`` of one run's events: ``info`` first, then the rows, then the manifest."""
    event = _object_column(run, "event")
    oracle = "oracle" if "oracle" in set(_object_column(run.loc[event == "estimator_switch"], "source")) else None
    policy = (info.get("policy") or _most_common(run.loc[event == "refine_request"], "policy")
              or _most_common(run.loc[event == "deploy"], "policy") or oracle or "never")  # fmt: skip
    detector = (info.get("detector") or _most_common(run.loc[event == "refine_request"], "detector")
                or _most_common(run.loc[event == "detect"], "detector"))  # fmt: skip
    seed = info.get("seed")
    if seed is None and isinstance(run.attrs.get("manifest"), dict):
        seed = run.attrs["manifest"].get("seed")
    seed = int(seed) if isinstance(seed, int | np.integer) and not isinstance(seed, bool) else None
    return str(policy), detector, seed


def _summary_frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=POLICY_SUMMARY_COLUMNS)
    for c in ("run_id", "policy", "detector"):  # plain objects, None for missing (not NaN, not pandas strings)
        out[c] = pd.Series([row[c] for row in rows], index=out.index, dtype="object")
    out["seed"] = out["seed"].astype("Int64")
    for c in _SUMMARY_INT:
        out[c] = out[c].astype("int64")
    for c in _SUMMARY_FLOAT:
        out[c] = out[c].astype("float64")
    return out


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else np.nan


def _p5(values: np.ndarray) -> float:
    return float(np.percentile(values, 5)) if len(values) else np.nan


def _most_common(rows: pd.DataFrame, column: str) -> str | None:
    """The most frequent non-null value of a column (first seen wins a tie); None if none."""
    values = [str(v) for v in _object_column(rows, column) if v is not None and str(v)]
    if not values:
        return None
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return max(counts, key=counts.__getitem__)


def _tx_rows(run: pd.DataFrame) -> pd.DataFrame:
    return run.loc[_object_column(run, "event") == "tx"]


def _mismatch_flags(tx: pd.DataFrame) -> np.ndarray:
    """Per ``tx`` row 1.0 (mismatched estimator), 0.0 (matched) or NaN (unknown).

    The ``mismatched`` column where it has a value, else ``estimator_scene != scene``.
    """
    flags = np.full(len(tx), np.nan)
    if "mismatched" in tx.columns:
        col = tx["mismatched"].astype("object")
        known = col.notna().to_numpy()
        flags[known] = [float(bool(v)) for v in col.to_numpy()[known]]
    est, scene = _object_column(tx, "estimator_scene"), _object_column(tx, "scene")
    fill = np.isnan(flags) & pd.notna(est) & pd.notna(scene)
    flags[fill] = (est[fill].astype(str) != scene[fill].astype(str)).astype("float64")
    return flags


def _estimator_changes(run: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per vehicle, the times its estimator's scene changed and the new scene (sorted by time).

    Sources: ``deploy`` rows put in use at once (``active`` not false; ``target_scene``, else
    ``estimator_scene``), ``estimator_switch`` rows and ``tx`` rows (``estimator_scene``); rows
    at the same time are taken in ``seq`` (else row) order.
    """
    event = _object_column(run, "event")
    order = run["seq"].to_numpy(dtype="float64", na_value=np.nan) if "seq" in run else np.arange(len(run), dtype=float)
    target = _object_column(run, "target_scene")
    est = _object_column(run, "estimator_scene")
    deploy = event == "deploy"
    scene = np.where(deploy & pd.notna(target), target, est)
    stored = np.array([v is not None and not bool(v) for v in _object_column(run, "active")], dtype=bool)
    use = ((deploy & ~stored) | (event == "estimator_switch") | (event == "tx")) & pd.notna(scene)
    work = pd.DataFrame({"vehicle": _object_column(run, "vehicle")[use],
                         "t_s": run["t_s"].to_numpy(dtype="float64")[use], "order": order[use],
                         "scene": scene[use].astype(str)})  # fmt: skip
    work = work.dropna(subset=["vehicle"]).sort_values(["vehicle", "t_s", "order"], kind="stable")
    same = (work["vehicle"] == work["vehicle"].shift()) & (work["scene"] == work["scene"].shift())
    work = work.loc[~same]
    return {str(v): (sub["t_s"].to_numpy(), sub["scene"].to_numpy(dtype=object))
            for v, sub in work.groupby("vehicle", sort=False)}  # fmt: skip


def _estimator_intervals(run: pd.DataFrame) -> pd.DataFrame:
    """Scene stays split where the estimator changes: ``vehicle, scene, start_s, end_s, estimator_scene,
    mismatched``."""
    columns = ["vehicle", "scene", "start_s", "end_s", "estimator_scene", "mismatched"]
    if "seq" not in run.columns:
        run = run.assign(seq=np.arange(len(run)))
    if not {"event", "vehicle", "scene", "t_s"} <= set(run.columns):
        return pd.DataFrame({c: pd.Series([], dtype="bool" if c == "mismatched" else None) for c in columns})
    stays = _scene_intervals(run)
    changes = _estimator_changes(run)
    out: list[tuple[str, str, float, float, str, bool]] = []
    for vehicle, sub in stays.groupby("vehicle", sort=False):
        times, scenes = changes.get(str(vehicle), (np.array([]), np.array([], dtype=object)))
        departed_in = str(sub["scene"].iloc[0])
        for scene, a, b in zip(sub["scene"], sub["start_s"], sub["end_s"], strict=True):
            i0 = int(np.searchsorted(times, a, side="right")) - 1
            i1 = int(np.searchsorted(times, b, side="left"))
            held, start = (scenes[i0] if i0 >= 0 else departed_in), a
            for j in range(i0 + 1, i1):
                if times[j] > start:
                    out.append((vehicle, scene, start, float(times[j]), held, held != scene))
                held, start = scenes[j], float(times[j])
            if b > start:
                out.append((vehicle, scene, start, b, held, held != scene))
    frame = pd.DataFrame(out, columns=columns)
    frame["mismatched"] = frame["mismatched"].astype(bool)
    return frame


def _busiest_refiner(df: pd.DataFrame) -> str | None:
    """The vehicle with the most refinement jobs (ties: most ``tx`` rows, then natural id order)."""
    event = _object_column(df, "event")
    vehicles = _object_column(df, "vehicle")
    jobs = pd.Series(vehicles[(event == "refine_request") & pd.notna(vehicles)]).value_counts()
    frames = pd.Series(vehicles[(event == "tx") & pd.notna(vehicles)]).value_counts()
    ids = set(jobs.index) | set(frames.index)
    if not ids:
        return None
    return str(min(ids, key=lambda v: (-int(jobs.get(v, 0)), -int(frames.get(v, 0)), _natural_key(v))))


def _policy_colors(labels: Sequence[str]) -> dict[str, tuple[float, float, float, float]]:
    """A fixed colour per policy kind (by :data:`POLICY_ORDER`), a label taking its policy's colour."""
    from matplotlib import colormaps

    tab10 = colormaps["tab10"]
    known = {p: tab10(i) for i, p in enumerate(POLICY_ORDER)}
    others = iter(tab10(i) for i in (7, 8, 9, 0, 1, 2, 3, 4, 5, 6))
    out = {}
    for label in labels:
        policy = str(label).split(" ")[0]
        if policy not in known:
            known[policy] = next(others, (0.4, 0.4, 0.4, 1.0))
        out[label] = known[policy]
    return out


def plot_refine_timeline(
    df: pd.DataFrame,
    vehicle: str,
    path: str | Path,
    *,
    scenes: Sequence[str] | None = None,
) -> Path:
    """Draw one vehicle's refinement jobs against its scenes and image quality, and save it.

    Three panels share the time axis: the vehicle's scene as coloured bands (``scene_enter``
    rows); one horizontal bar per refinement job, from its ``refine_request`` to its
    ``deploy`` (else its ``refine_done``; a job still running at the end reaches the end),
    coloured by outcome (:data:`OUTCOME_COLORS`), with the time the policy aimed for
    (``deadline_t_s``, a triangle) and the actual arrival at the target scene (``arrival_t_s``,
    a bar); and each frame's PSNR (``tx``; hollow markers: decoded with a mismatched
    estimator, red crosses: outage). An analytic run, which logs no PSNR, shows per frame
    whether the estimator matched instead. Dotted vertical lines mark the deploys on every
    panel.

    Parameters
    ----------
    df
        Events of one run (:func:`load_run`).
    vehicle
        The vehicle id.
    path
        PNG file to write.
    scenes
        Scene names in the order that fixes their colours (:func:`scene_colors`); default
        the log's scene categories.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    OutputError
        If ``vehicle`` is not in the log or the file cannot be written.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    _check_vehicles(df, [vehicle])
    if "seq" not in df.columns:
        df = df.assign(seq=np.arange(len(df)))
    mine = df.loc[_object_column(df, "vehicle") == vehicle]
    event = _object_column(mine, "event")
    tx = mine.loc[event == "tx"].sort_values(["t_s", "seq"], kind="stable")
    if scenes is None:
        cat = df["scene"].dtype
        scenes = list(cat.categories) if isinstance(cat, pd.CategoricalDtype) else sorted(_present(df, "scene"))
    colors = scene_colors([*scenes, *_present(df, "scene")])
    iv = _scene_intervals(mine)
    jobs = _job_bars(mine, end_s=_run_end_s(df))
    deploy_t = mine.loc[event == "deploy", "t_s"].to_numpy(dtype="float64")

    fig = new_figure(figsize=(11.5, 8.0))
    ax_scene, ax_jobs, ax_q = fig.subplots(3, 1, sharex=True, height_ratios=[0.5, 1.6, 2.4])
    times = [mine["t_s"].to_numpy(dtype="float64"), iv["end_s"].to_numpy(dtype="float64"),
             jobs["end_s"].to_numpy(dtype="float64")]  # fmt: skip
    everything = np.concatenate(times) if len(mine) else np.array([0.0, 1.0])
    t0, t1 = float(np.nanmin(everything)), float(np.nanmax(everything))
    span = max(t1 - t0, 1e-9)

    # 1) scene bands
    _draw_scene_bands(ax_scene, iv, colors, span, legend_y=1.3)

    # 2) one bar per refinement job
    for y, job in enumerate(jobs.itertuples(index=False)):
        ax_jobs.barh(y, max(job.end_s - job.start_s, span * 0.002), left=job.start_s, height=0.6, zorder=3,
                     color=OUTCOME_COLORS.get(job.outcome, _OTHER_COLOR), edgecolor="0.25", lw=0.5)  # fmt: skip
        if np.isfinite(job.deadline_t_s):
            ax_jobs.plot(job.deadline_t_s, y + 0.42, marker="v", ms=6, color="black", ls="none", zorder=4)
        if np.isfinite(job.arrival_t_s):
            ax_jobs.plot(job.arrival_t_s, y, marker="|", ms=14, mew=2.0, color="black", ls="none", zorder=4)
    for row in iv.itertuples(index=False):
        ax_jobs.axvspan(row.start_s, row.end_s, color=colors.get(row.scene, _OTHER_COLOR), alpha=0.12, lw=0, zorder=0)
    if len(jobs) <= 14:
        ax_jobs.set_yticks(range(len(jobs)), [f"-> {s}" for s in jobs["target_scene"]], fontsize=8)
    else:
        ax_jobs.set_yticks([])
    ax_jobs.set_ylim(len(jobs) - 0.4 if len(jobs) else 0.6, -0.6)
    ax_jobs.set_ylabel("refinement jobs")
    if jobs.empty:
        ax_jobs.text(0.5, 0.5, "no refinement job for this vehicle", transform=ax_jobs.transAxes, ha="center",
                     va="center", color="0.4")  # fmt: skip
    shown = list(dict.fromkeys(jobs["outcome"]))
    handles = [Patch(facecolor=OUTCOME_COLORS.get(o, _OTHER_COLOR), edgecolor="0.25", label=o) for o in shown]
    if np.isfinite(jobs["deadline_t_s"].to_numpy(dtype="float64")).any():
        handles.append(Line2D([], [], marker="v", color="black", ls="none", label="aimed arrival\n(deadline_t_s)"))
    if np.isfinite(jobs["arrival_t_s"].to_numpy(dtype="float64")).any():
        handles.append(Line2D([], [], marker="|", ms=10, mew=2.0, color="black", ls="none",
                              label="arrival at the\ntarget scene"))  # fmt: skip
    handles.append(Line2D([], [], color=_DEPLOY_COLOR, ls=":", lw=1.4, label=f"deploy ({len(deploy_t)})"))
    ax_jobs.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)

    # 3) image quality per frame, mismatched estimator hollow
    t = tx["t_s"].to_numpy(dtype="float64")
    psnr = _float_column(tx, "psnr_db")
    mism = _mismatch_flags(tx) == 1.0
    for row in iv.itertuples(index=False):
        ax_q.axvspan(row.start_s, row.end_s, color=colors.get(row.scene, _OTHER_COLOR), alpha=0.12, lw=0, zorder=0)
    ms = 2.6 if len(t) > 400 else 4.2
    if np.isfinite(psnr).any():
        tp, yp = _break_gaps(t, psnr)
        ax_q.plot(tp, yp, color=_PSNR_COLOR, lw=0.6, alpha=0.5, zorder=3)
        ax_q.plot(t[~mism], psnr[~mism], ls="none", marker="o", ms=ms, color=_PSNR_COLOR, zorder=4)
        ax_q.plot(t[mism], psnr[mism], ls="none", marker="o", ms=ms, mfc="white", mec=_PSNR_COLOR, mew=1.0, zorder=4)
        outage = np.isnan(psnr)
        if outage.any():
            ax_q.scatter(t[outage], np.full(outage.sum(), 0.04), transform=ax_q.get_xaxis_transform(), marker="x",
                         s=30, c="red", linewidths=1.3, zorder=5, clip_on=False)  # fmt: skip
        ax_q.set_ylabel("PSNR (dB)")
        q_handles = [Line2D([], [], color=_PSNR_COLOR, marker="o", ms=4.2, lw=0.6, label="PSNR per frame"),
                     Line2D([], [], color=_PSNR_COLOR, marker="o", ms=4.2, mfc="white", mew=1.0, ls="none",
                            label=f"estimator mismatched\n({int(mism.sum())} of {len(t)} frames)")]  # fmt: skip
    else:
        ax_q.plot(t, np.where(mism, 0.0, 1.0), ls="none", marker="|", ms=10, color=_PSNR_COLOR)
        ax_q.set_yticks([0, 1], ["mismatched", "matched"])
        ax_q.set_ylim(-0.6, 1.6)
        ax_q.set_ylabel("estimator")
        note = f"frame ({int(mism.sum())} of {len(t)}\nmismatched;\nno PSNR in this log)"
        q_handles = [Line2D([], [], color=_PSNR_COLOR, marker="|", ms=8, ls="none", label=note)]
    ax_q.grid(True, lw=0.4, color="0.88")
    ax_q.legend(handles=q_handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)

    for a in (ax_scene, ax_jobs, ax_q):
        for td in deploy_t:
            a.axvline(td, color=_DEPLOY_COLOR, lw=1.2, ls=":", zorder=2)
        a.set_xlim(t0, t1 if t1 > t0 else t0 + 1.0)
    ax_q.set_xlabel("simulated time t (s)")
    tally = ", ".join(f"{int((jobs['outcome'] == o).sum())} {o}" for o in shown) or "no jobs"
    info = df.attrs.get("run_info") if isinstance(df.attrs.get("run_info"), dict) else {}
    policy = _run_kinds(df, info)[0]
    fig.suptitle(f"{_run_name(df)} ({policy} policy): vehicle {vehicle} - refinement jobs ({tally}), "
                 f"{len(deploy_t)} deploys", fontsize=11)  # fmt: skip
    return _save(fig, Path(path))


def _job_bars(rows: pd.DataFrame, *, end_s: float) -> pd.DataFrame:
    """One row per refinement job of these rows: ``job_id, target_scene, start_s, end_s, outcome,
    deadline_t_s, arrival_t_s`` (in order of request)."""
    columns = ["job_id", "target_scene", "start_s", "end_s", "outcome", "deadline_t_s", "arrival_t_s"]
    event = _object_column(rows, "event")
    ids = _object_column(rows, "job_id")
    found: dict[str, dict[str, object]] = {}
    for e in ("refine_request", "refine_done", "deploy"):
        sub = rows.loc[(event == e) & pd.notna(ids)]
        for job_id, t_s, target, outcome, deadline, arrival, total in zip(
            _object_column(sub, "job_id"), sub["t_s"].to_numpy(dtype="float64"), _object_column(sub, "target_scene"),
            _object_column(sub, "outcome"), _float_column(sub, "deadline_t_s"), _float_column(sub, "arrival_t_s"),
            _float_column(sub, "total_s"), strict=True,
        ):  # fmt: skip
            job = found.setdefault(str(job_id), {"job_id": str(job_id), "target_scene": None, "start_s": np.nan,
                                                 "end_s": np.nan, "outcome": "in flight", "deadline_t_s": np.nan,
                                                 "arrival_t_s": np.nan})  # fmt: skip
            job["target_scene"] = job["target_scene"] or target
            if e == "refine_request":
                job["start_s"] = t_s
            elif e == "refine_done":
                job["outcome"] = str(outcome) if outcome is not None else "done"
                if np.isnan(job["end_s"]):
                    job["end_s"] = t_s
                if np.isnan(job["start_s"]) and np.isfinite(total):
                    job["start_s"] = t_s - total
            else:
                job["end_s"] = t_s
            if np.isfinite(deadline):
                job["deadline_t_s"] = deadline
            if np.isfinite(arrival):
                job["arrival_t_s"] = arrival
    out = pd.DataFrame(list(found.values()), columns=columns)
    out["start_s"] = out["start_s"].fillna(out["end_s"]).astype("float64")
    out["end_s"] = out["end_s"].fillna(end_s).astype("float64")
    out["target_scene"] = out["target_scene"].fillna("?")
    out = out.dropna(subset=["start_s"]).sort_values("start_s", kind="stable")
    return out.reset_index(drop=True)


def _slack_values(df: pd.DataFrame) -> np.ndarray:
    """Finite ``slack_s`` of the ``refine_done`` rows of an event log, or of any frame with ``slack_s``."""
    if "event" in df.columns:
        df = df.loc[_object_column(df, "event") == "refine_done"]
    return _finite(_float_column(df, "slack_s"))


def plot_slack_cdf(runs: dict[str, pd.DataFrame], path: str | Path) -> Path:
    """Draw the empirical CDF of the refinement slack per policy, and save it.

    Slack is ``slack_s`` of the finished jobs: the vehicle's arrival at the target scene minus
    the adapter's delivery (> 0: the adapter was there first). A vertical line marks 0; each
    curve's label gives its number of jobs and the share in time.

    Parameters
    ----------
    runs
        ``label -> frame``: an event log (its ``refine_done`` rows are used) or any frame with
        a ``slack_s`` column (e.g. several runs' ``refine_done`` rows of one policy).
    path
        PNG file to write.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    OutputError
        If the file cannot be written.
    """
    fig = new_figure(figsize=(8.5, 5.0))
    ax = fig.add_subplot()
    colors = _policy_colors(list(runs))
    styles: dict[tuple, int] = {}  # runs of one policy share its colour; they differ in line style
    drawn = 0
    for label, frame in runs.items():
        slack = np.sort(_slack_values(frame))
        if not len(slack):
            continue
        y = np.arange(1, len(slack) + 1) / len(slack)
        k = styles[colors[label]] = styles.get(colors[label], -1) + 1
        ax.step(np.concatenate([[slack[0]], slack]), np.concatenate([[0.0], y]), where="post", lw=1.8,
                ls=("-", "--", ":", "-.")[k % 4], color=colors[label],
                label=f"{label} (n={len(slack)}, {np.mean(slack >= 0):.0%} in time)")  # fmt: skip
        drawn += 1
    ax.axvline(0.0, color="black", lw=1.0, zorder=1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("slack (s): arrival at the target scene - adapter delivered (> 0: in time)")
    ax.set_ylabel("share of finished jobs")
    ax.grid(True, lw=0.4, color="0.88")
    if drawn:
        ax.legend(loc="upper left", fontsize=8.5, frameon=False)
    else:
        ax.text(0.5, 0.5, "no finished refinement job with a slack", transform=ax.transAxes, ha="center",
                va="center", color="0.4")  # fmt: skip
    ax.set_title("refinement slack per policy (empirical CDF)", fontsize=11)
    return _save(fig, Path(path))


def plot_quality_vs_cost(table: pd.DataFrame, path: str | Path) -> Path:
    """Draw image quality against GPU cost, one labelled point per policy, and save it.

    Each policy's point is the mean over its runs of ``psnr_mean`` (y) and ``gpu_s`` (x);
    with several runs of a policy, the runs are drawn as small faint points around it. A table
    without PSNR (analytic runs) plots ``mismatched_share`` instead (lower is better).

    Parameters
    ----------
    table
        A :func:`compare_runs` table.
    path
        PNG file to write.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    OutputError
        If the file cannot be written.
    """
    fig = new_figure(figsize=(7.5, 5.5))
    ax = fig.add_subplot()
    has_psnr = bool(np.isfinite(table["psnr_mean"].to_numpy(dtype="float64")).any()) if len(table) else False
    y_col = "psnr_mean" if has_psnr else "mismatched_share"
    policies = list(dict.fromkeys(str(p) for p in table["policy"]))
    colors = _policy_colors(policies)
    points: list[tuple[float, float, str]] = []
    for policy in policies:
        runs = table.loc[table["policy"].astype(str) == policy]
        x, y = runs["gpu_s"].to_numpy(dtype="float64"), runs[y_col].to_numpy(dtype="float64")
        if len(runs) > 1:
            ax.plot(x, y, ls="none", marker="o", ms=4, alpha=0.35, color=colors[policy])
        if not np.isfinite(y).any():
            continue
        mx, my = float(np.nanmean(x)), float(np.nanmean(y))
        ax.plot(mx, my, ls="none", marker="o", ms=9, color=colors[policy], mec="black", mew=0.8, zorder=3)
        note = f"{policy} ({len(runs)} runs)" if len(runs) > 1 else policy
        points.append((mx, my, note))
    if points:  # labels of points that (nearly) coincide on the axes are stacked, not overprinted
        xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
        span_x, span_y = np.ptp(xs) or 1.0, np.ptp(ys) or 1.0
        for k, (mx, my, note) in enumerate(points):
            near = np.abs(xs[:k] - mx) < 0.04 * span_x
            stacked = int((near & (np.abs(ys[:k] - my) < 0.04 * span_y)).sum())
            ax.annotate(note, (mx, my), xytext=(7, 5 - 13 * stacked), textcoords="offset points", fontsize=9)
    ax.set_xlabel("GPU time of refinement (s, per run)")
    ax.set_ylabel("mean PSNR (dB)" if has_psnr else "share of frames with a mismatched estimator (lower is better)")
    ax.grid(True, lw=0.4, color="0.88")
    ax.margins(x=0.15, y=0.15)
    what = "image quality" if has_psnr else "estimator mismatch (no PSNR in these logs)"
    ax.set_title(f"{what} vs refinement cost per policy", fontsize=11)
    return _save(fig, Path(path))
