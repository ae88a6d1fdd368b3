"""Scenario schema and loader."""

from ivsim.config.loader import apply_overrides, load_scenario, scenario_to_yaml
from ivsim.config.schema import Scenario

__all__ = ["Scenario", "apply_overrides", "load_scenario", "scenario_to_yaml"]
