"""Benchmarks that print ratios measured side by side in one process.

``ivsim bench core``: the fleet scenario with N vehicles always on the road
(a vehicle that arrives departs on a new trip), analytic link, for a simulated
hour; compared with a bare SimPy loop that runs as many timeouts as the
simulation logged rows, in the same process.

The bare loop is measured two ways, both reported:

- **Paired** (``bare_simpy_per_s``, ``ratio_to_bare_simpy``): the run stops
  :data:`PAIRS` times at equal steps of simulated time; at each stop a bare loop
  runs as many timeouts as the simulation logged rows since the last stop, and
  its time is taken off the run's wall time. The loop and the stretch of the run
  it is compared with are measured seconds apart, with the process in the same
  state. This host's speed drifts by tens of percent within seconds (a bare loop
  has run 2.25x faster just before a run than just after it): pairing makes the
  drift hit both sides alike.
- **Before and after** (``bare_simpy_before_after``,
  ``ratio_to_bare_simpy_before_after``): one bare loop just before the run and one
  just after it; the faster of the two is the reference. Drift can only lower
  this ratio: it is a lower bound.

``ivsim bench scale``: the core benchmark on the default scenario's map with a
fleet, the calibrated fast link (``link.fidelity: fast``) and the proactive
refinement policy, plus how wall time grows from 100 to 1,000 to 3,000 vehicles.

``ivsim bench sweep``: the same 8-run sweep (the fleet scenario, analytic link,
8 seeds) run serially in this process and on a 2-worker Dask ``LocalCluster``,
one after the other; the speedup is the ratio of the two wall times.
"""

from __future__ import annotations

import contextlib
import itertools
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import simpy

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["PAIRS", "bare_simpy_rate", "bench_core", "bench_scale", "bench_sweep", "machine"]

REPO_SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


def machine() -> str:
    """One line describing this machine (CPU model, cores, Python)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


PAIRS = 20
"""How many times :func:`bench_core` stops its run for a paired bare SimPy loop."""


def _bare_simpy(n_timeouts: int, *, processes: int = 1000) -> tuple[int, float]:
    """Run a bare SimPy loop: ``processes`` loops of ``timeout(1)``, about ``n_timeouts`` in all.

    Returns the timeouts run (``processes`` times ``n_timeouts // processes``, at least one each)
    and the wall seconds they took.
    """
    env = simpy.Environment()
    per = max(1, n_timeouts // processes)

    def loop(env: simpy.Environment, n: int):
        for _ in range(n):
            yield env.timeout(1.0)

    for _ in range(processes):
        env.process(loop(env, per))
    t0 = time.perf_counter()
    env.run()
    return per * processes, time.perf_counter() - t0


def bare_simpy_rate(n_timeouts: int, *, processes: int = 1000) -> float:
    """Events per wall second of a bare SimPy loop: ``processes`` loops of ``timeout(1)``, ``n_timeouts`` in all."""
    n, seconds = _bare_simpy(n_timeouts, processes=processes)
    return n / seconds


class _PairedBare:
    """Bare SimPy loops run at the stops of a simulation, each as long as the rows logged since the last stop."""

    def __init__(self, rows: Callable[[], int]) -> None:
        self._rows = rows
        self._last = 0
        self.timeouts = 0
        self.seconds = 0.0
        self.paused_s = 0.0
        """Wall time spent at the stops (to take off the run's)."""
        self.rates: list[float] = []

    def stop(self) -> None:
        """Run the loop for the rows logged since the last stop."""
        t0 = time.perf_counter()
        rows = self._rows()
        if rows > self._last:
            n, seconds = _bare_simpy(rows - self._last)
            self._last = rows
            self.timeouts += n
            self.seconds += seconds
            self.rates.append(n / seconds)
        self.paused_s += time.perf_counter() - t0

    @property
    def rate(self) -> float:
        """Timeouts per second over all stops."""
        return self.timeouts / self.seconds


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_core(
    *,
    vehicles: int = 1000,
    duration_s: float = 3600.0,
    fps: float = 1.0,
    scenario: str | Path | None = None,
    progress: bool = True,
    overrides: tuple[str, ...] = (),
    before: tuple[str, ...] = (),
    label: str = "bench core",
) -> dict:
    """Run the core benchmark and return its figures.

    ``overrides`` (``--set`` strings) are applied after the benchmark's own (``bench scale``
    uses them for the fast link and the proactive policy), ``before`` ahead of them (e.g. to
    give a scenario without one its fleet).

    Returns
    -------
    dict
        ``wall_s`` (the run's, without its stops), ``rows_per_s``, ``bare_simpy_per_s`` (the paired
        loops' timeouts per second over all stops), ``ratio_to_bare_simpy`` (their ratio),
        ``realtime_factor, peak_rss_mb``; ``bare_simpy_paired_min_max`` (the slowest and fastest
        stop), ``bare_simpy_before_after`` (the loops just before and after the run) and
        ``ratio_to_bare_simpy_before_after`` (against the faster of those two); ``rows, setup_s,
        vehicles, duration_s, fps, machine``.
    """
    from ivsim.config.loader import load_scenario
    from ivsim.sim.engine import Simulation

    path = Path(scenario) if scenario else REPO_SCENARIOS / "nyc_fleet.yaml"
    sc = load_scenario(
        path,
        overrides=[
            *before,
            f"duration_s={duration_s}",
            f"traffic.fps={fps}",
            f"fleets.0.count={vehicles}",
            "fleets.0.respawn=true",
            "fleets.0.departures={kind: at_start, t_s: 0, spread_s: 0}",
            *overrides,
        ],
    )
    if len(sc.fleets) > 1:
        sc = sc.model_copy(update={"fleets": sc.fleets[:1], "vehicles": []})
    with tempfile.TemporaryDirectory(prefix="ivsim-bench-") as tmp:
        t0 = time.perf_counter()
        sim = Simulation(sc, run_dir=Path(tmp) / "run")
        setup_s = time.perf_counter() - t0
        # the run's row count is known only after it: before it, as many timeouts as it makes frames
        bare_before = bare_simpy_rate(max(1000, round(vehicles * duration_s * fps)))
        paired = _PairedBare(lambda: sim.log.rows)
        steps = 10 * PAIRS  # the run's chunks (the progress bar's steps); a stop after every tenth
        with contextlib.ExitStack() as stack:
            bar = task = None
            if progress:
                from rich.progress import Progress

                bar = stack.enter_context(Progress(transient=True))
                task = bar.add_task(label, total=duration_s)
            chunk = itertools.count(1)

            def on_chunk(t_s: float) -> None:
                if bar is not None:
                    bar.update(task, completed=t_s)
                if next(chunk) % (steps // PAIRS) == 0:
                    paired.stop()

            t1 = time.perf_counter()
            summary = sim.run(progress=on_chunk, steps=steps)
            wall_s = time.perf_counter() - t1 - paired.paused_s  # the run's own time: the stops taken off
        paired.stop()  # rows logged after the last stop (while the run closed its log), if any
    rows = sum(summary.counts.values())
    bare_after = bare_simpy_rate(rows)
    bare_ends = max(bare_before, bare_after)
    rows_per_s = rows / wall_s
    return {
        "wall_s": round(wall_s, 2),
        "rows_per_s": round(rows_per_s),
        "bare_simpy_per_s": round(paired.rate),
        "ratio_to_bare_simpy": round(rows_per_s / paired.rate, 3),
        "realtime_factor": round(duration_s / wall_s, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "bare_simpy_paired_min_max": [round(min(paired.rates)), round(max(paired.rates))],
        "ratio_to_bare_simpy_before_after": round(rows_per_s / bare_ends, 3),
        "bare_simpy_before_after": [round(bare_before), round(bare_after)],
        "rows": rows,
        "setup_s": round(setup_s, 2),
        "vehicles": vehicles,
        "duration_s": duration_s,
        "fps": fps,
        "machine": machine(),
    }


def bench_sweep(
    *,
    runs: int = 8,
    workers: int = 2,
    vehicles: int = 1000,
    duration_s: float = 7200.0,
    scenario: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Time one sweep serially and on a ``workers``-process Dask LocalCluster.

    The sweep: ``runs`` seeds of the fleet scenario (analytic link, ``vehicles`` taxis
    always on the road, ``duration_s`` simulated; the defaults, two simulated hours, make
    one run about a minute on a 2-core CPU, so that starting the workers does not dominate). Both
    passes write their own output folder; nothing is reused between them.

    Returns
    -------
    dict
        ``serial_s, parallel_s, speedup`` (serial / parallel), ``run_wall_s`` (mean wall
        time of one run's simulation, from the serial pass), ``runs, workers, vehicles,
        duration_s, failed, machine``.
    """
    import yaml

    from ivsim.sweep import load_sweep_file, run_sweep, sweep_client

    base = Path(scenario).resolve() if scenario else REPO_SCENARIOS / "nyc_fleet.yaml"
    spec = {
        "name": "bench_sweep",
        "base": str(base),
        "set": {
            # each run on one core in both passes (no background log writer): the speedup measures the sweep layer
            "output.combine": "at_close",
            "link.fidelity": "analytic", "duration_s": duration_s, "fleets.0.count": vehicles,
            "fleets.0.respawn": True, "fleets.0.departures": {"kind": "at_start", "t_s": 0, "spread_s": 0},
        },
        "seeds": list(range(1, runs + 1)),
    }  # fmt: skip
    times: dict[str, float] = {}
    failed = 0
    run_walls: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ivsim-bench-sweep-") as tmp:
        sweep_file = Path(tmp) / "bench_sweep.yaml"
        sweep_file.write_text(yaml.safe_dump(spec, sort_keys=False))
        sweep = load_sweep_file(sweep_file)
        for mode in ("serial", "parallel"):
            done = []

            def tick(record: dict, _done: list = done, _mode: str = mode) -> None:
                _done.append(record)
                if progress:
                    print(f"bench sweep {_mode}: {len(_done)}/{runs} runs", flush=True)

            t0 = time.perf_counter()
            if mode == "serial":
                result = run_sweep(sweep, out_dir=Path(tmp) / mode, client=None, progress=tick)
            else:
                with sweep_client(workers=workers) as client:
                    result = run_sweep(sweep, out_dir=Path(tmp) / mode, client=client, progress=tick)
            times[mode] = time.perf_counter() - t0
            failed += sum(r["status"] != "complete" for r in result.records)
            if mode == "serial":
                run_walls = [float(r.get("run_wall_s") or 0.0) for r in result.records]
    return {
        "serial_s": round(times["serial"], 1),
        "parallel_s": round(times["parallel"], 1),
        "speedup": round(times["serial"] / times["parallel"], 2),
        "run_wall_s": round(sum(run_walls) / max(len(run_walls), 1), 1),
        "runs": runs,
        "workers": workers,
        "vehicles": vehicles,
        "duration_s": duration_s,
        "failed": failed,
        "machine": machine(),
    }


SCALE_FLEET = (
    "vehicles=[]",
    "fleets=[{id: taxi, count: 1, respawn: true, min_trip_m: 800}]",
    "radio.measurement_period_s=0.5",
    "radio.handover.time_to_trigger_s=0.5",
)
"""``bench scale``'s world: the default scenario's Lower Manhattan / Brooklyn map, scenes, cells and fast-link
calibration, with its car replaced by a fleet of taxis on random trips (measured as in ``nyc_fleet.yaml``)."""


def bench_scale(
    *,
    vehicles: int = 1000,
    duration_s: float = 3600.0,
    fps: float = 1.0,
    scaling: tuple[int, ...] = (100, 1000, 3000),
    fidelity: str = "fast",
    policy: str = "proactive",
    progress: bool = True,
) -> dict:
    """The scale benchmark: :func:`bench_core` with ``link.fidelity`` and ``refinement.policy`` set, and a scaling curve.

    The world is :data:`SCALE_FLEET` (the default scenario with a fleet: the calibration table of
    the fast link is the default scenario's).

    Returns
    -------
    dict
        :func:`bench_core`'s figures for ``vehicles``, plus ``fidelity``, ``policy`` and
        ``scaling``: one ``{vehicles, wall_s, rows, rows_per_s, wall_per_vehicle_ms}`` per size
        (the main run's figures reused for its size).
    """
    extra = (f"link.fidelity={fidelity}", f"refinement.policy={{kind: {policy}}}")
    common = {"duration_s": duration_s, "fps": fps, "progress": progress, "overrides": extra,
              "scenario": REPO_SCENARIOS / "nyc_brooklyn_bridge.yaml", "before": SCALE_FLEET}  # fmt: skip
    main = bench_core(vehicles=vehicles, label=f"bench scale {vehicles}", **common)
    curve = []
    for n in scaling:
        r = main if n == vehicles else bench_core(vehicles=n, label=f"bench scale {n}", **common)
        curve.append({
            "vehicles": n, "wall_s": r["wall_s"], "rows": r["rows"], "rows_per_s": r["rows_per_s"],
            "wall_per_vehicle_ms": round(1000 * r["wall_s"] / n, 2),
        })  # fmt: skip
    return {**main, "fidelity": fidelity, "policy": policy, "scaling": curve}
