"""ivsim: a discrete-event simulator of vehicular semantic-communication networks.

Public API::

    import ivsim
    scenario = ivsim.load_scenario("scenarios/nyc_brooklyn_bridge.yaml", overrides=["seed=3"])
    summary = ivsim.run_scenario(scenario, run_dir="runs/demo")
    df = ivsim.load_run("runs/demo")

Heavy modules (maps, SimPy world) load on first use, so ``import ivsim`` is quick.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Simulation", "__version__", "load_run", "load_scenario", "run_scenario"]

_LAZY = {
    "load_scenario": "ivsim.config.loader",
    "Simulation": "ivsim.sim.engine",
    "run_scenario": "ivsim.api",
    "load_run": "ivsim.results",
}

if TYPE_CHECKING:
    from ivsim.api import run_scenario
    from ivsim.config.loader import load_scenario
    from ivsim.results import load_run
    from ivsim.sim.engine import Simulation


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    msg = f"module 'ivsim' has no attribute {name!r}"
    raise AttributeError(msg)
