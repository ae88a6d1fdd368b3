"""ivsim.results: load_run and event_counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ivsim.errors import OutputError
from ivsim.results import event_counts, load_run
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
