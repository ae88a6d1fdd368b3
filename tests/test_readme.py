"""The README's quick start is what CI runs, and its scenarios exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _quick_start_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    commands = _quick_start_commands()
    assert len(commands) == 2
    setup_run, setup_test = (c.strip() for c in commands)
    assert "\n" not in setup_run and "\n" not in setup_test
    assert setup_run.index("torch==2.13.0") < setup_run.index("-e .")
    assert "ivsim run scenarios/nyc_brooklyn_bridge.yaml" in setup_run
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert setup_test in ci


def test_named_scenarios_exist() -> None:
    for name in ("nyc_brooklyn_bridge", "nyc_fleet", "helsinki"):
        assert (REPO / "scenarios" / f"{name}.yaml").is_file()
    assert (REPO / "scenarios" / "maps" / "README.md").read_text().count("ODbL") >= 1
