"""A small valid scenario, as YAML text and as a file."""

from __future__ import annotations

from pathlib import Path

import pytest

# Line numbers matter: tests assert on them (see the comments on the right).
SCENARIO_YAML = """\
name: demo                      # 1
seed: 7                         # 2
duration_s: 60                  # 3
map:                            # 4
  source: maps/demo.osm         # 5
profiles:                       # 6
  umi_los:                      # 7
    model: umi                  # 8
    los: true                   # 9
  cdl_nlos:                     # 10
    model: cdl                  # 11
    variant: A                  # 12
    delay_spread_s: 3.0e-7      # 13
    pathloss: {model: umi, los: false}  # 14
scenes:                         # 15
  street:                       # 16
    profile: umi_los            # 17
    speed_mps: [0, 14]          # 18
  tunnel:                       # 19
    profile: cdl_nlos           # 20
    speed_mps: [5, 25]          # 21
scene_rules:                    # 22
  default: street               # 23
  rules:                        # 24
    - scene: tunnel             # 25
      tags: {tunnel: true}      # 26
    - scene: street             # 27
      tags: {highway: [primary, secondary]}  # 28
base_stations:                  # 29
  - id: bs0                     # 30
    position: {lon: 24.94, lat: 60.17}  # 31
  - id: bs1                     # 32
    position: {x_m: 100.0, y_m: -50.0}  # 33
vehicles:                       # 34
  - id: car0                    # 35
    origin: {lon: 24.93, lat: 60.16}    # 36
    destination: {node: 12345}  # 37
    speed_factor: 1.1           # 38
fleets:                         # 39
  - id: taxi                    # 40
    count: 3                    # 41
    departures: {kind: poisson, rate_per_s: 0.5}  # 42
traffic:                        # 43
  fps: 10                       # 44
  deadline_s: 0.1               # 45
link:                           # 46
  direction: uplink             # 47
"""


@pytest.fixture
def scenario_text() -> str:
    """The valid scenario as YAML text."""
    return SCENARIO_YAML


@pytest.fixture
def scenario_file(tmp_path: Path) -> Path:
    """The valid scenario written to ``tmp_path/scen/demo.yaml``."""
    folder = tmp_path / "scen"
    folder.mkdir()
    path = folder / "demo.yaml"
    path.write_text(SCENARIO_YAML, encoding="utf-8")
    return path
