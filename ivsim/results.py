"""Reading finished (or killed) runs back for analysis.

``load_run`` turns a run directory into one pandas DataFrame with the dtypes of the
declared event-log schema (:data:`ivsim.sim.eventlog.COLUMNS`); the functions after it
summarise such a frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ivsim.errors import OutputError
from ivsim.sim.eventlog import EVENTS_FILE, PARTS_DIR, log_files, read_table, table_to_frame

__all__ = ["event_counts", "load_run"]

MANIFEST_FILE = "manifest.json"


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
