"""EventLog: buffering, ordering, flushing to Parquet parts, combining, and round trips."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivsim.errors import OutputError
from ivsim.results import load_run
from ivsim.sim import eventlog
from ivsim.sim.eventlog import CATEGORICAL, COLUMNS, EventLog

# ---------------------------------------------------------------------- helpers


def normalise(value: Any) -> Any:
    """pandas/numpy scalar -> plain Python, null-likes -> None."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def frame_rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of a frame as dicts of plain Python values, null columns left out."""
    rows = []
    for rec in df.astype(object).to_dict("records"):
        rows.append({k: v for k, v in ((k, normalise(v)) for k, v in rec.items()) if v is not None})
    return rows


def expected_row(run_id: str, seq: int, event: str, t_s: float, entity_id: Any, **fields: Any) -> dict[str, Any]:
    row = {"run_id": run_id, "seq": seq, "t_s": float(t_s), "event": event, "entity_id": entity_id, **fields}
    return {k: normalise(v) for k, v in row.items() if normalise(v) is not None}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def part_files(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "parts").glob("part-*.parquet"))


# ---------------------------------------------------------------------- schema


def test_schema_prefix_and_order() -> None:
    assert list(COLUMNS)[:5] == ["run_id", "seq", "t_s", "event", "entity_id"]
    assert list(COLUMNS)[-1] == "message"
    assert eventlog.SCHEMA.names == list(COLUMNS)
    assert CATEGORICAL == {c for c, t in COLUMNS.items() if t == pa.string()} - {"message", "job_id"}


def test_every_column_documented() -> None:
    doc = eventlog.__doc__
    assert doc is not None
    missing = [c for c in COLUMNS if f"``{c}``" not in doc]
    assert not missing


# ---------------------------------------------------------------------- round trips


def test_round_trip_mixed_rows_several_parts(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    log = EventLog(run_dir, "r1", flush_rows=3)
    expected = []
    seq = 0

    def single(event: str, t: float, ent: str, **f: Any) -> None:
        nonlocal seq
        log.log(event, t, ent, **f)
        expected.append(expected_row("r1", seq, event, t, ent, **f))
        seq += 1

    single("vehicle_depart", 0.0, "v0", vehicle="v0", trip=0, x_m=1.0, y_m=2.0, scene="street")
    single("handover", 0.5, "v0", vehicle="v0", from_bs="bs0", to_bs="bs1", rsrp_dbm=-80.5)
    ids = np.array(["v0", "v1", "v2", "v3"], dtype=object)
    delay = np.array([0.01, 0.02, 0.5, 0.03])
    delivered = np.array([True, True, False, True])
    frame = np.arange(4)
    log.log_many("tx", 1.0, ids, vehicle=ids, delay_s=delay, delivered=delivered, frame=frame, bs="bs1",
                 drop_reason=[None, None, "deadline", None])  # fmt: skip
    for i in range(4):
        reason = "deadline" if i == 2 else None
        expected.append(expected_row("r1", seq, "tx", 1.0, ids[i], vehicle=ids[i], delay_s=delay[i],
                                     delivered=delivered[i], frame=frame[i], bs="bs1", drop_reason=reason))  # fmt: skip
        seq += 1
    single("vehicle_depart", 1.0, "v1", vehicle="v1", trip=3, x_m=-4.0, y_m=0.0, scene="tunnel")
    single("job_queued", 2, "job-1", job_id="job-1", job_kind="refine", upload_bits=10**12, queue_len=0)
    single("note", 2.5, "sim", message="héllo, wörld")

    assert log.rows == 9
    assert log.counts == {"vehicle_depart": 2, "handover": 1, "tx": 4, "job_queued": 1, "note": 1}
    log.sync()
    assert len(part_files(run_dir)) >= 2
    path = log.close()
    assert path == run_dir / "events.parquet"
    assert path.is_file()
    assert not (run_dir / "parts").exists()
    df = load_run(run_dir)
    assert frame_rows(df) == expected
    assert frame_rows(log.to_pandas()) == expected


def test_in_memory_round_trip_with_flushes() -> None:
    log = EventLog(None, "mem", flush_rows=2)
    for i in range(7):
        log.log("position", float(i), f"v{i % 3}", x_m=float(i), trip=i)
    df = log.to_pandas()
    assert df["seq"].tolist() == list(range(7))
    assert df["trip"].tolist() == list(range(7))
    assert log.flush() is None
    assert log.close() is None
    assert frame_rows(log.to_pandas()) == frame_rows(df)


def test_part_readable_while_open(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    log = EventLog(run_dir, "r", flush_rows=1000)
    for i in range(5):
        log.log("position", float(i), "v0", x_m=float(i))
    part = log.flush()
    assert part == run_dir / "parts" / "part-00000.parquet"
    table = pq.read_table(part)
    assert table.num_rows == 5
    assert table.schema.equals(eventlog.SCHEMA)
    log.log("position", 9.0, "v0", x_m=9.0)
    assert len(load_run(run_dir)) == 5  # the buffered row is not on disk yet
    assert len(log.to_pandas()) == 6  # but the log itself sees it
    log.close()


@pytest.mark.parametrize("combine", ["background", "at_close"])
def test_events_file_keeps_statistics_of_the_filter_columns(tmp_path: Path, combine: str) -> None:
    """events.parquet has min/max of seq, t_s, event, entity_id and vehicle per row group (a reader skips row
    groups by time), none of the value columns; a filtered read gives exactly the rows asked for."""
    log = EventLog(tmp_path / "run", "r", flush_rows=50, background=combine == "background")
    for i in range(300):
        log.log("tx", float(i), f"v{i % 7}", vehicle=f"v{i % 7}", psnr_db=20.0 + i % 5)
    path = log.close()
    meta = pq.ParquetFile(path).metadata
    stats = {meta.schema.column(j).name: meta.row_group(0).column(j).is_stats_set for j in range(meta.num_columns)}
    assert {c for c, has in stats.items() if has} == set(eventlog._WRITE_OPTIONS["write_statistics"])
    late = pq.read_table(path, filters=[("t_s", ">=", 250.0)]).to_pandas()
    assert late["seq"].tolist() == list(range(250, 300))


def test_killed_run_keeps_flushed_rows(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    log = EventLog(run_dir, "killed", flush_rows=4)
    for i in range(10):
        log.log("position", float(i), "v0", x_m=float(i))
    log.log_many("tx", 10.0, ["v0", "v1", "v2"], delay_s=[0.1, 0.2, 0.3])
    log.flush()
    log.log("position", 11.0, "v0", x_m=11.0)  # buffered, lost by the "kill"
    # a write interrupted half-way leaves only a tmp file, which readers ignore
    (run_dir / "parts" / "part-00099.parquet.tmp").write_bytes(b"PAR1garbage")
    del log  # no close()
    df = load_run(run_dir)
    assert df["seq"].tolist() == list(range(13))
    assert df["event"].tolist() == ["position"] * 10 + ["tx"] * 3
    assert df.loc[df.event == "tx", "delay_s"].tolist() == [0.1, 0.2, 0.3]


def test_part_names_and_order(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    log = EventLog(run_dir, "r", flush_rows=2)
    for i in range(5):
        log.log("e", float(i), "x")
    log.flush()
    assert [p.name for p in part_files(run_dir)] == [f"part-0000{i}.parquet" for i in range(3)]
    assert not list((run_dir / "parts").glob("*.tmp"))
    log.close()


# ---------------------------------------------------------------------- ordering and time


def test_seq_increasing_across_event_kinds() -> None:
    log = EventLog(None, "r", flush_rows=10_000)
    order = []
    for i in range(20):
        kind = ["a", "b", "c"][i % 3]
        if i % 4 == 0:
            log.log_many(kind, float(i), ["x", "y"], x_m=[1.0, 2.0])
            order += [kind, kind]
        else:
            log.log(kind, float(i), "x", trip=i)
            order.append(kind)
    df = log.to_pandas()
    seq = df["seq"].to_numpy(dtype=np.int64)
    assert (np.diff(seq) == 1).all() and seq[0] == 0
    assert df["event"].astype(str).tolist() == order
    assert df["t_s"].is_monotonic_increasing


def test_time_going_back_raises() -> None:
    log = EventLog(None, "r")
    log.log("a", 1.0, "x")
    log.log("a", 1.0, "x")  # equal is fine
    with pytest.raises(ValueError, match="never decrease"):
        log.log("a", 0.5, "x")
    with pytest.raises(ValueError, match="never decrease"):
        log.log_many("a", 0.5, ["x", "y"])
    with pytest.raises(ValueError, match="never decrease"):
        log.log("a", math.nan, "x")
    log.log_many("a", 2.0, ["x", "y"])
    with pytest.raises(ValueError):
        log.log("a", 1.5, "x")
    assert log.rows == 4


# ---------------------------------------------------------------------- programming errors


def test_unknown_column_raises_key_error() -> None:
    log = EventLog(None, "r")
    with pytest.raises(KeyError, match="'spead_mps'"):
        log.log("a", 0.0, "x", spead_mps=3.0)
    with pytest.raises(KeyError, match="'bogus'"):
        log.log_many("a", 0.0, ["x"], bogus=[1.0])
    with pytest.raises(KeyError, match="filled by the EventLog"):
        log.log("a", 0.0, "x", seq=3)
    with pytest.raises(KeyError, match="filled by the EventLog"):
        log.log_many("a", 0.0, ["x"], run_id="r2")
    assert log.rows == 0
    assert log.to_pandas().empty


def test_wrong_types_raise_type_error() -> None:
    log = EventLog(None, "r")
    with pytest.raises(TypeError, match="'trip'"):
        log.log("a", 0.0, "x", trip=1.5)
    with pytest.raises(TypeError, match="'x_m'"):
        log.log("a", 0.0, "x", x_m="far")
    with pytest.raises(TypeError, match="'x_m'"):
        log.log("a", 0.0, "x", x_m=True)
    with pytest.raises(TypeError, match="'entity_id'"):
        log.log("a", 0.0, 7)
    with pytest.raises(TypeError, match="'frame'"):
        log.log_many("a", 0.0, ["x", "y"], frame=np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="'delivered'"):
        log.log_many("a", 0.0, ["x", "y"], delivered=1)
    with pytest.raises(TypeError, match="'x_m' expects double, got object"):  # neither a sequence nor a scalar
        log.log_many("a", 0.0, ["x", "y"], x_m=object())
    assert log.rows == 0
    # a later row of an established shape is checked when flushed, naming the column
    log.log("a", 0.0, "x", trip=1)
    log.log("a", 0.0, "x", trip=2.5)
    with pytest.raises(TypeError, match="'trip'"):
        log.flush()


def test_log_many_length_mismatch_and_all_scalars() -> None:
    log = EventLog(None, "r")
    with pytest.raises(ValueError, match="'x_m'"):
        log.log_many("a", 0.0, ["x", "y"], x_m=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least one sequence"):
        log.log_many("a", 0.0, "x", x_m=1.0)
    log.log_many("a", 0.0, [], x_m=np.array([]))  # zero rows is fine
    assert log.rows == 0


def test_closed_log_refuses_rows(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "run", "r")
    log.log("a", 0.0, "x")
    first = log.close()
    assert log.close() == first  # idempotent
    assert log.closed
    with pytest.raises(RuntimeError, match="closed"):
        log.log("a", 1.0, "x")
    with pytest.raises(RuntimeError, match="closed"):
        log.log_many("a", 1.0, ["x"])
    assert len(log.to_pandas()) == 1


def test_existing_log_is_not_overwritten(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    EventLog(run_dir, "r").close()
    with pytest.raises(OutputError, match="already holds"):
        EventLog(run_dir, "r2")


# ---------------------------------------------------------------------- log_many


def test_scalar_broadcast() -> None:
    log = EventLog(None, "r")
    log.log_many("tx", 3.0, "bs0", bs="bs0", direction="downlink", size_bits=200_000, delivered=None,
                 sinr_db=np.array([1.0, 2.0, 3.0]), x_m=np.float64(7.5))  # fmt: skip
    df = log.to_pandas()
    assert len(df) == 3
    assert df["entity_id"].astype(str).tolist() == ["bs0"] * 3
    assert df["direction"].astype(str).tolist() == ["downlink"] * 3
    assert df["size_bits"].tolist() == [200_000] * 3
    assert df["x_m"].tolist() == [7.5] * 3
    assert df["delivered"].isna().all()
    assert df["sinr_db"].tolist() == [1.0, 2.0, 3.0]
    assert (df["t_s"] == 3.0).all()


def test_log_many_copies_arrays_and_accepts_series() -> None:
    log = EventLog(None, "r")
    x = np.array([1.0, 2.0])
    ids = np.array(["a", "b"])  # numpy unicode
    log.log_many("p", 0.0, ids, x_m=x, trip=pd.Series([4, 5]), scene=("s", "t"))
    x[:] = -1.0
    ids[:] = "z"
    df = log.to_pandas()
    assert df["x_m"].tolist() == [1.0, 2.0]
    assert df["entity_id"].astype(str).tolist() == ["a", "b"]
    assert df["trip"].tolist() == [4, 5]
    assert df["scene"].astype(str).tolist() == ["s", "t"]


def test_int_array_into_float_column() -> None:
    log = EventLog(None, "r")
    log.log_many("p", 0.0, ["a", "b"], x_m=np.array([1, 2]), size_bits=np.array([3, 4], dtype=np.uint32))
    df = log.to_pandas()
    assert df["x_m"].dtype == np.float64
    assert df["x_m"].tolist() == [1.0, 2.0]
    assert df["size_bits"].tolist() == [3, 4]


# ---------------------------------------------------------------------- flushing


@pytest.mark.parametrize("background", [False, True])
def test_flush_on_row_count(tmp_path: Path, background: bool) -> None:
    run_dir = tmp_path / "run"
    log = EventLog(run_dir, "r", flush_rows=5, clock=FakeClock(), background=background)
    for i in range(4):
        log.log("a", float(i), "x")
    assert part_files(run_dir) == []
    log.log("a", 4.0, "x")
    log.sync()
    assert len(part_files(run_dir)) == 1
    log.log_many("a", 5.0, ["x"] * 12)
    log.sync()
    assert len(part_files(run_dir)) == 2  # a block is never split
    assert pq.read_table(part_files(run_dir)[1]).num_rows == 12
    log.close()


@pytest.mark.parametrize("background", [False, True])
def test_flush_on_wall_clock(tmp_path: Path, background: bool) -> None:
    run_dir = tmp_path / "run"
    clock = FakeClock()
    log = EventLog(run_dir, "r", flush_rows=1_000_000, flush_interval_s=5.0, clock=clock, background=background)
    for i in range(10):
        log.log("a", float(i), "x")
    clock.now = 4.9
    for i in range(2000):
        log.log("a", 10.0, "x")
    assert part_files(run_dir) == []  # not yet 5 s
    clock.now = 6.0
    for i in range(1100):  # the clock is looked at within every 1,024 rows
        log.log("a", 10.0, "x")
    log.sync()
    assert len(part_files(run_dir)) == 1
    clock.now = 12.0
    log.log_many("a", 11.0, ["x", "y"])  # every log_many looks at the clock
    log.sync()
    assert len(part_files(run_dir)) == 2
    assert pq.read_table(part_files(run_dir)[1]).num_rows < 1100
    log.close()
    assert len(load_run(run_dir)) == 3112


# ---------------------------------------------------------------------- determinism


def _scripted(log: EventLog) -> None:
    rng = np.random.default_rng(3)
    t = 0.0
    for i in range(300):
        t += float(rng.exponential(0.1))
        if i % 7 == 0:
            n = int(rng.integers(1, 20))
            log.log_many("tx", t, [f"v{j}" for j in range(n)], sinr_db=rng.normal(size=n), frame=np.arange(n),
                         delivered=rng.random(n) < 0.9, bs=f"bs{i % 3}")  # fmt: skip
        else:
            log.log("position", t, f"v{i % 5}", vehicle=f"v{i % 5}", x_m=float(rng.normal()), trip=i % 2)
        if i % 50 == 0:
            log.log("note", t, "sim", message=f"step {i}")


def test_identical_calls_identical_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eventlog, "_ROW_GROUP_ROWS", 97)  # several row groups, odd boundaries
    paths, frames = [], []
    for k, flush_rows in enumerate([50, 50, 333, 10**6]):
        log = EventLog(tmp_path / f"run{k}", "same", flush_rows=flush_rows, clock=FakeClock())
        _scripted(log)
        paths.append(log.close())
        frames.append(load_run(tmp_path / f"run{k}"))
    for p, df in zip(paths[1:], frames[1:], strict=True):
        pd.testing.assert_frame_equal(df, frames[0])
        # bytes do not even depend on where the parts were cut
        assert p.read_bytes() == paths[0].read_bytes()
    assert pq.ParquetFile(paths[0]).metadata.num_row_groups > 2
    mem = EventLog(None, "same", flush_rows=77)
    _scripted(mem)
    pd.testing.assert_frame_equal(mem.to_pandas(), frames[0])


# ---------------------------------------------------------------------- abort


def test_abort_combines_what_it_can(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    log = EventLog(run_dir, "r", flush_rows=3)
    for i in range(7):
        log.log("a", float(i), "x", trip=i)
    log.log("a", 7.0, "x", trip=1.5)  # poisons the buffer: the final flush fails
    assert log.abort() == run_dir / "events.parquet"
    assert log.abort() == run_dir / "events.parquet"
    assert load_run(run_dir)["trip"].tolist() == list(range(6))


def test_events_file_is_written_as_the_run_goes_and_the_parts_are_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background writer's file equals the parts combined; if it fails, close combines the parts."""
    from ivsim.sim import eventlog

    def run(name: str) -> pd.DataFrame:
        log = EventLog(tmp_path / name, "r", flush_rows=4)
        for i in range(10):
            log.log("a", float(i), "x", trip=i)
            log.log_many("b", float(i), np.array(["u", "v"], dtype=object), trip=np.array([i, -i]))
        log.close()
        assert not (tmp_path / name / "events.parquet.tmp").exists()
        return load_run(tmp_path / name)

    good = run("good")
    assert good["seq"].tolist() == list(range(30))

    def broken(self: Any, table: Any) -> None:
        self.error = OSError("disk full")

    monkeypatch.setattr(eventlog._Background, "_append", broken)
    pd.testing.assert_frame_equal(run("fallback"), good)


def test_a_part_the_background_writer_could_not_write_is_written_by_the_next_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Automatic flushes write in the background; a failed part is retried by the next flush; no row is lost."""
    from ivsim.sim import eventlog

    real = eventlog.pq.write_table
    calls = {"n": 0}

    def flaky(table: Any, where: Any, **kw: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(28, "No space left on device")
        real(table, where, **kw)

    monkeypatch.setattr(eventlog.pq, "write_table", flaky)
    log = EventLog(tmp_path / "run", "r", flush_rows=4)
    for i in range(10):
        log.log("a", float(i), "x", trip=i)
    log.close()
    assert calls["n"] >= 3 and load_run(tmp_path / "run")["trip"].tolist() == list(range(10))

    monkeypatch.setattr(eventlog.pq, "write_table", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "full")))
    log = EventLog(tmp_path / "run2", "r", flush_rows=4)
    for i in range(4):
        log.log("a", float(i), "x", trip=i)  # the automatic flush fails in the background
    with pytest.raises(OutputError, match="cannot write .*part-00000.parquet: full"):
        log.flush()


@pytest.mark.parametrize("where", ["memory", "parts", "background"])
def test_lonlat_filled_from_positions(tmp_path: Path, where: str) -> None:
    """Rows with x_m and y_m but no lon get lon and lat from the log's projection; the others are left as given."""
    calls = []

    def lonlat(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(x))
        return x / 1000.0, y / 1000.0 + 40.0

    run_dir = None if where == "memory" else tmp_path / "run"
    log = EventLog(run_dir, "r", flush_rows=6, background=where == "background", lonlat=lonlat)
    log.log("a", 0.0, "v0", x_m=100.0, y_m=200.0)
    log.log("b", 0.0, "v1", x_m=1.0, y_m=2.0, lon=-74.0, lat=40.7)  # given: kept
    log.log("c", 1.0, "v2", trip=3)  # no position: no lon
    log.log_many("a", 2.0, ["v0", "v1", "v3"], x_m=np.array([1000.0, 2000.0, np.nan]), y_m=0.0)
    log.log("a", 3.0, "v0", x_m=5.0, y_m=6.0)  # the next part
    log.close()
    df = log.to_pandas() if run_dir is None else load_run(run_dir)
    got = list(zip(df["lon"].round(6).tolist(), df["lat"].round(6).tolist(), strict=True))
    nan = (math.nan, math.nan)
    want = [(0.1, 40.2), (-74.0, 40.7), nan, (1.0, 40.0), (2.0, 40.0), nan, (0.005, 40.006)]
    assert [tuple(None if math.isnan(v) else v for v in g) for g in got] == [
        tuple(None if math.isnan(v) else v for v in w) for w in want
    ]
    assert calls == [3, 1]  # one vectorised call per part


def test_automatic_flush_joins_columns_on_the_writer_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Arrow join of an automatic flush runs on the log's writer thread; an explicit flush joins in place."""
    import threading

    seen = []
    real = eventlog._Columns.table

    def table(self: Any) -> pa.Table:
        seen.append(threading.current_thread().name.startswith("ivsim-log"))
        return real(self)

    monkeypatch.setattr(eventlog._Columns, "table", table)
    log = EventLog(tmp_path / "run", "r", flush_rows=3)
    for i in range(3):
        log.log("a", float(i), "x", trip=i)
    log.sync()
    log.log("a", 3.0, "x", trip=3)
    log.close()
    assert seen[0] is True and False in seen[1:]
    assert load_run(tmp_path / "run")["trip"].tolist() == [0, 1, 2, 3]


def test_labels_columns_round_trip_and_mix_with_arrays(tmp_path: Path) -> None:
    """Labels(codes, labels) log labels[codes] (-1: null), alone, mixed with object arrays, and across parts."""
    from ivsim.sim.eventlog import Labels

    ids = np.array(["v0", "v1", "v2"], dtype=object)
    scenes = ("street", "bridge")
    log = EventLog(tmp_path / "run", "r", flush_rows=7)
    log.log_many("tx", 0.0, Labels(np.array([2, 0]), ids), scene=Labels(np.array([1, -1]), scenes), trip=1)
    log.log_many("tx", 1.0, np.array(["v1"], dtype=object), scene=["street"], trip=2)  # plain arrays: same columns
    log.log_many("tx", 2.0, Labels(np.array([1, 1, 0]), ids), scene=Labels(np.array([0, 0, 1]), scenes), trip=3)
    log.log_many("tx", 3.0, Labels(np.array([0, 1]), ids), scene="bridge", trip=4)  # the next part
    log.close()
    df = load_run(tmp_path / "run")
    assert df["entity_id"].tolist() == ["v2", "v0", "v1", "v1", "v1", "v0", "v0", "v1"]
    scene = [None if pd.isna(v) else v for v in df["scene"].astype(object)]
    assert scene == ["bridge", None, "street", "street", "street", "bridge", "bridge", "bridge"]


def test_labels_are_checked() -> None:
    from ivsim.sim.eventlog import Labels

    log = EventLog(None, "r")
    with pytest.raises(TypeError, match="Labels need a string column"):
        log.log_many("tx", 0.0, ["a"], trip=Labels(np.array([0]), ("x",)))
    with pytest.raises(ValueError, match="has 2 rows, expected 1"):
        log.log_many("tx", 0.0, ["a"], scene=Labels(np.array([0, 0]), ("x",)))
    log.log_many("tx", 0.0, ["a"], scene=Labels(np.array([3]), ("x",)))  # out of range: found when flushed
    with pytest.raises(TypeError, match="column 'scene': labels do not fit their codes"):
        log.flush()


def test_context_manager_closes(tmp_path: Path) -> None:
    with EventLog(tmp_path / "run", "r") as log:
        log.log("a", 0.0, "x")
    assert (tmp_path / "run" / "events.parquet").is_file()


# ---------------------------------------------------------------------- property: round trip

STR_VALUES = st.one_of(st.none(), st.text(max_size=4))
TYPE_VALUES = {
    pa.string(): STR_VALUES,
    pa.int64(): st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
    pa.float64(): st.one_of(st.none(), st.floats(allow_nan=False)),
    pa.bool_(): st.one_of(st.none(), st.booleans()),
}
FIELDS = ["vehicle", "trip", "x_m", "delivered", "message", "frame", "scene", "job_id"]
EVENTS = st.sampled_from(["tx", "position", "job_done", "handover"])


@st.composite
def single_call(draw: st.DrawFn) -> tuple[Any, ...]:
    names = draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=5))
    fields = {n: draw(TYPE_VALUES[COLUMNS[n]]) for n in names}
    return ("log", draw(EVENTS), draw(st.sampled_from([0.0, 0.0, 0.5, 3.25])), draw(STR_VALUES), fields)


def _column(draw: st.DrawFn, typ: pa.DataType, n: int) -> tuple[Any, list[Any]]:
    """A log_many argument and the n values it stands for."""
    form = draw(st.sampled_from(["scalar", "list", "array"]))
    if form == "scalar":
        value = draw(TYPE_VALUES[typ])
        return value, [value] * n
    if form == "list":
        values = draw(st.lists(TYPE_VALUES[typ], min_size=n, max_size=n))
        return values, values
    values = draw(st.lists(TYPE_VALUES[typ].filter(lambda v: v is not None), min_size=n, max_size=n))
    dtype = {pa.string(): object, pa.int64(): np.int64, pa.float64(): np.float64, pa.bool_(): np.bool_}[typ]
    return np.array(values, dtype=dtype), values


@st.composite
def many_call(draw: st.DrawFn) -> tuple[Any, ...]:
    n = draw(st.integers(0, 6))
    names = draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=5))
    entity_arg, entity_values = _column(draw, pa.string(), n)
    columns = {name: _column(draw, COLUMNS[name], n) for name in names}
    has_sequence = not isinstance(entity_arg, (str, type(None))) or any(
        not isinstance(a, (str, int, float, bool, type(None))) for a, _ in columns.values()
    )
    if not has_sequence:
        entity_arg = list(entity_values)
    return ("many", draw(EVENTS), draw(st.sampled_from([0.0, 0.0, 1.0])), entity_arg, entity_values, columns)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=st.lists(st.one_of(single_call(), many_call()), max_size=25), flush_rows=st.integers(1, 8))
def test_random_interleavings_round_trip(calls: list[tuple[Any, ...]], flush_rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        disk = EventLog(run_dir, "prop", flush_rows=flush_rows, clock=FakeClock())
        mem = EventLog(None, "prop", flush_rows=flush_rows, clock=FakeClock())
        expected: list[dict[str, Any]] = []
        t = 0.0
        for call in calls:
            t += call[2]
            if call[0] == "log":
                _, event, _, entity, fields = call
                for log in (disk, mem):
                    log.log(event, t, entity, **fields)
                expected.append(expected_row("prop", len(expected), event, t, entity, **fields))
            else:
                _, event, _, entity_arg, entity_values, columns = call
                for log in (disk, mem):
                    log.log_many(event, t, entity_arg, **{k: a for k, (a, _) in columns.items()})
                for i, entity in enumerate(entity_values):
                    fields = {k: values[i] for k, (_, values) in columns.items()}
                    expected.append(expected_row("prop", len(expected), event, t, entity, **fields))
        assert disk.rows == len(expected)
        assert frame_rows(mem.to_pandas()) == expected
        assert frame_rows(disk.to_pandas()) == expected
        disk.close()
        df = load_run(run_dir)
        assert frame_rows(df) == expected
        counts: dict[str, int] = {}
        for row in expected:
            counts[row["event"]] = counts.get(row["event"], 0) + 1
        assert disk.counts == counts
