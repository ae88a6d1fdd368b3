"""Benchmarks that print ratios measured side by side in one process.

``ivsim bench core``: the fleet scenario with N vehicles always on the road
(a vehicle that arrives departs on a new trip), analytic link, for a simulated
hour; compared with a bare SimPy loop that runs as many timeouts as the
simulation logged rows, in the same process.
"""

from __future__ import annotations

import platform
import resource
import tempfile
import time
from pathlib import Path

import simpy

__all__ = ["bare_simpy_rate", "bench_core", "machine"]

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


def bare_simpy_rate(n_timeouts: int, *, processes: int = 1000) -> float:
    """Events per wall second of a bare SimPy loop: ``processes`` loops of ``timeout(1)``, ``n_timeouts`` in all."""
    env = simpy.Environment()
    per = max(1, n_timeouts // processes)

    def loop(env: simpy.Environment, n: int):  # noqa: ANN202
        for _ in range(n):
            yield env.timeout(1.0)

    for _ in range(processes):
        env.process(loop(env, per))
    t0 = time.perf_counter()
    env.run()
    return per * processes / (time.perf_counter() - t0)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_core(
    *,
    vehicles: int = 1000,
    duration_s: float = 3600.0,
    fps: float = 1.0,
    scenario: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Run the core benchmark and return its figures.

    Returns
    -------
    dict
        ``wall_s, rows_per_s, bare_simpy_per_s, ratio_to_bare_simpy, realtime_factor, peak_rss_mb`` plus
        ``rows, setup_s, vehicles, duration_s, fps, machine``.
    """
    from ivsim.config.loader import load_scenario
    from ivsim.sim.engine import Simulation

    path = Path(scenario) if scenario else REPO_SCENARIOS / "nyc_fleet.yaml"
    sc = load_scenario(
        path,
        overrides=[
            f"duration_s={duration_s}",
            f"traffic.fps={fps}",
            f"fleets.0.count={vehicles}",
            "fleets.0.respawn=true",
            "fleets.0.departures={kind: at_start, t_s: 0, spread_s: 0}",
        ],
    )
    if len(sc.fleets) > 1:
        sc = sc.model_copy(update={"fleets": sc.fleets[:1], "vehicles": []})
    with tempfile.TemporaryDirectory(prefix="ivsim-bench-") as tmp:
        t0 = time.perf_counter()
        sim = Simulation(sc, run_dir=Path(tmp) / "run")
        setup_s = time.perf_counter() - t0
        if progress:
            from rich.progress import Progress

            with Progress(transient=True) as bar:
                task = bar.add_task("bench core", total=duration_s)
                t1 = time.perf_counter()
                summary = sim.run(progress=lambda t: bar.update(task, completed=t))
        else:
            t1 = time.perf_counter()
            summary = sim.run()
        wall_s = time.perf_counter() - t1
    rows = sum(summary.counts.values())
    bare = bare_simpy_rate(rows)
    rows_per_s = rows / wall_s
    return {
        "wall_s": round(wall_s, 2),
        "rows_per_s": round(rows_per_s),
        "bare_simpy_per_s": round(bare),
        "ratio_to_bare_simpy": round(rows_per_s / bare, 3),
        "realtime_factor": round(duration_s / wall_s, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "rows": rows,
        "setup_s": round(setup_s, 2),
        "vehicles": vehicles,
        "duration_s": duration_s,
        "fps": fps,
        "machine": machine(),
    }
