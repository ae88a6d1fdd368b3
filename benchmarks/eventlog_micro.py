"""Micro-benchmark of :class:`ivsim.sim.eventlog.EventLog`.

Prints the cost of one ``log`` call (6 fields), one 1,000-row ``log_many`` call
(15 columns), and of flushing/closing, in memory and to a temporary folder.

Run: ``python benchmarks/eventlog_micro.py [--rows 1000000]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from ivsim.sim.eventlog import EventLog


def bench_log(rows: int) -> float:
    """Return seconds per ``log`` call with 6 fields (flushes excluded: flush_rows > rows)."""
    log = EventLog(None, "bench", flush_rows=rows + 1, flush_interval_s=1e9)
    t0 = time.perf_counter()
    for i in range(rows):
        log.log("position", i * 1e-3, "v0", vehicle="v0", trip=1, x_m=1.0, y_m=2.0, speed_mps=13.9, scene="umi")
    return (time.perf_counter() - t0) / rows


def bench_log_many(calls: int, n: int = 1000) -> float:
    """Return seconds per ``log_many`` call of ``n`` rows with 15 columns (entity_id + 14)."""
    rng = np.random.default_rng(0)
    entity = np.array([f"v{i}" for i in range(n)])
    floats = {c: rng.normal(size=n) for c in ("x_m", "y_m", "lon", "lat", "speed_mps", "route_m", "sinr_db", "snr_db")}
    ints = {"trip": np.arange(n), "frame": np.arange(n), "size_bits": np.full(n, 200_000)}
    scalars = {"scene": "umi", "bs": "bs0", "direction": "downlink"}
    log = EventLog(None, "bench", flush_rows=calls * n + 1, flush_interval_s=1e9)
    t0 = time.perf_counter()
    for i in range(calls):
        log.log_many("position", float(i), entity, **floats, **ints, **scalars)
    return (time.perf_counter() - t0) / calls


def bench_files(rows: int) -> tuple[float, float, float]:
    """Return (s per log call incl. auto flushes, s for close, MB of events.parquet) writing to disk."""
    with tempfile.TemporaryDirectory() as tmp:
        log = EventLog(Path(tmp) / "run", "bench", flush_rows=200_000)
        t0 = time.perf_counter()
        for i in range(rows):
            log.log("position", i * 1e-3, f"v{i % 50}", vehicle=f"v{i % 50}", trip=1, x_m=float(i), y_m=2.0,
                    speed_mps=13.9, scene="umi")
        t1 = time.perf_counter()
        path = log.close()
        t2 = time.perf_counter()
        assert path is not None
        return (t1 - t0) / rows, t2 - t1, path.stat().st_size / 1e6


def main() -> None:
    """Run the benchmarks and print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="single rows to log")
    parser.add_argument("--calls", type=int, default=2_000, help="log_many calls of 1,000 rows")
    args = parser.parse_args()
    per_log = min(bench_log(args.rows) for _ in range(3))
    print(f"log, 6 fields, in memory:            {per_log * 1e6:7.2f} us/call")
    per_many = min(bench_log_many(args.calls) for _ in range(3))
    print(f"log_many, 1,000 rows x 15 columns:   {per_many * 1e6:7.2f} us/call")
    per_row, close_s, size_mb = bench_files(args.rows)
    print(f"log to disk incl. flushes:           {per_row * 1e6:7.2f} us/call ({args.rows:,} rows)")
    print(f"close (combine parts):               {close_s * 1e3:7.1f} ms, events.parquet {size_mb:.1f} MB")


if __name__ == "__main__":
    main()
