"""One-call helpers for running scenarios from Python."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path

from ivsim.config.loader import load_scenario
from ivsim.config.schema import Scenario
from ivsim.sim.engine import RunSummary, Simulation

__all__ = ["default_run_dir", "run_scenario"]


def default_run_dir(scenario: Scenario, *, now: dt.datetime | None = None) -> Path:
    """Return ``<output.root or ./runs>/<scenario name>-<YYYYmmdd-HHMMSS>``."""
    now = now or dt.datetime.now()
    root = Path(scenario.output.root) if scenario.output.root else Path("runs")
    return root / f"{scenario.name}-{now:%Y%m%d-%H%M%S}"


def run_scenario(
    scenario: Scenario | str | Path,
    *,
    run_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    force: bool = False,
    progress: Callable[[float], None] | None = None,
) -> RunSummary:
    """Load (if given a path), build and run a scenario; return its summary.

    Parameters
    ----------
    scenario
        A scenario, or the path of a scenario YAML file.
    run_dir
        Run folder; default :func:`default_run_dir`.
    overrides, seed
        ``--set`` style overrides and a seed, applied when ``scenario`` is a path.
    force
        Overwrite a non-empty run folder.
    progress
        Called with the simulated time as the run advances.
    """
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario, overrides=overrides, seed=seed)
    elif overrides or seed is not None:
        msg = "overrides and seed apply to a scenario path; pass them to load_scenario instead"
        raise TypeError(msg)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(scenario)
    sim = Simulation(scenario, run_dir=run_dir, force=force)
    return sim.run(progress=progress)
