"""The command line: bad input gets one clear line and exit 2; runs, interrupts and kills leave readable logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_checks import one_line_error as _one_line_error

import ivsim
from ivsim.cli import main

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "scenarios" / "nyc_brooklyn_bridge.yaml"
FLEET = REPO / "scenarios" / "nyc_fleet.yaml"


def _scenario_with(tmp_path: Path, old: str, new: str, *, name: str = "bad.yaml") -> Path:
    text = DEFAULT.read_text()
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new))
    (tmp_path / "maps").mkdir(exist_ok=True)
    for p in (REPO / "scenarios" / "maps").glob("*.bz2"):
        target = tmp_path / "maps" / p.name
        if not target.exists():
            target.symlink_to(p)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [unclosed\n", "YAML syntax error"),
        ("", "the file is empty"),
        ("- a\n- b\n", "the top level must be a mapping"),
    ],
)
def test_file_level_errors(tmp_path, capsys, text, expected) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    line = _one_line_error(capsys, main(["validate", str(path)]))
    assert line.startswith(str(path)) and expected in line


def test_unknown_key_names_file_line_and_suggestion(tmp_path, capsys) -> None:
    path = _scenario_with(tmp_path, "duration_s: 400", "duraton_s: 400")
    code = main(["validate", str(path), "--no-map"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{path}:11: duraton_s: unknown key 'duraton_s', did you mean 'duration_s'?" in err


def test_missing_map_file(tmp_path, capsys) -> None:
    path = _scenario_with(tmp_path, "source: maps/nyc_lower_manhattan_brooklyn_drive.osm.bz2", "source: maps/nope.osm")
    line = _one_line_error(capsys, main(["validate", str(path)]))
    assert "nope.osm" in line


def test_map_not_a_road_network(tmp_path, capsys) -> None:
    junk = tmp_path / "junk.osm"
    junk.write_text("this is not xml")
    path = _scenario_with(tmp_path, "source: maps/nyc_lower_manhattan_brooklyn_drive.osm.bz2", f"source: {junk}")
    line = _one_line_error(capsys, main(["validate", str(path)]))
    assert "junk.osm" in line


def test_origin_off_the_map(tmp_path, capsys) -> None:
    path = _scenario_with(tmp_path, "origin: {lon: -74.0137, lat: 40.7050}", "origin: {lon: -73.5, lat: 40.7050}")
    line = _one_line_error(capsys, main(["validate", str(path)]))
    assert line.startswith(str(path)) and "vehicles.0" in line and "off the map" in line


def test_unknown_scene_in_rule(tmp_path, capsys) -> None:
    path = _scenario_with(tmp_path, "    - scene: brooklyn_urban\n", "    - scene: brooklyn\n")
    line = _one_line_error(capsys, main(["validate", str(path), "--no-map"]))
    assert "scene_rules.rules.2.scene: unknown scene 'brooklyn'" in line and "allowed:" in line


def test_empty_base_station_list(capsys) -> None:
    line = _one_line_error(capsys, main(["validate", str(DEFAULT), "--no-map", "--set", "base_stations=[]"]))
    assert "base_stations" in line and "at least 1" in line


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("vehicles.3.speed_factor=1.2", "index 3 is out of range"),
        ("vehicles.0.speed_factor=-1", "greater than 0"),
        ("traffic.fps=0", "greater than 0"),
        ("link.direction=sideways", "allowed: downlink, uplink"),
        ("nonsense", "expected PATH=VALUE"),
    ],
)
def test_bad_set(capsys, override, expected) -> None:
    line = _one_line_error(capsys, main(["run", str(DEFAULT), "--set", override, "-q"]))
    assert expected in line and "--set" in line


def test_bad_flag(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", str(DEFAULT), "--frobnicate"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--frobnicate" in err[0]


def test_output_not_writable(tmp_path, capsys) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    line = _one_line_error(capsys, main(["run", str(DEFAULT), "-o", str(blocker / "run"), "-q"]))
    assert "not writable" in line


def test_non_empty_run_dir_refused_then_forced(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "something").write_text("x")
    line = _one_line_error(capsys, main(["run", str(DEFAULT), "-o", str(run), "-q"]))
    assert "not empty" in line and "--force" in line
    code = main(["run", str(DEFAULT), "-o", str(run), "-q", "--force", "--set", "duration_s=30"])
    assert code == 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete"


def test_run_validate_schema_report(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["run", str(DEFAULT), "-o", str(run), "--set", "duration_s=60", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "frames delivered" in out and "tx" in out
    df = ivsim.load_run(run)
    manifest = df.attrs["manifest"]
    assert manifest["seed"] == 5 and manifest["status"] == "complete"
    assert manifest["event_counts"] == {k: int(v) for k, v in df["event"].value_counts().items() if v}
    assert (run / "scenario.resolved.yaml").is_file()
    assert main(["validate", str(DEFAULT)]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "duration_s" in schema["properties"]


def _start_run(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "ivsim.cli", "run", str(FLEET), "-o", str(run), "-q"]
    cmd += ["--set", "duration_s=3600", "--set", "output.flush_interval_s=0.2", *extra]
    # the child gets the default SIGINT disposition whatever an earlier test left in this process (an ignored SIGINT
    # is inherited, and Python then installs no KeyboardInterrupt handler)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    return proc, run


def _wait_for_parts(run: Path, proc: subprocess.Popen, timeout_s: float = 90.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            pytest.fail(f"run ended early: {proc.stderr.read()}")
        parts = list((run / "parts").glob("part-*.parquet")) if (run / "parts").is_dir() else []
        if len(parts) >= 2:
            return
        time.sleep(0.2)
    pytest.fail("no Parquet part appeared")


def test_ctrl_c_leaves_interrupted_readable_log(tmp_path) -> None:
    proc, run = _start_run(tmp_path)
    _wait_for_parts(run, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, f"{err} (SIGINT here: {signal.getsignal(signal.SIGINT)})"
    assert "Traceback" not in err and "interrupted" in err
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    df = ivsim.load_run(run)
    assert len(df) == manifest["rows"] > 0
    assert (run / "events.parquet").is_file()


def test_killed_run_leaves_readable_parts(tmp_path) -> None:
    proc, run = _start_run(tmp_path)
    _wait_for_parts(run, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    df = ivsim.load_run(run)
    assert len(df) > 0
    assert df["t_s"].is_monotonic_increasing
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"


def test_train_estimator_unknown_scene(capsys) -> None:
    line = _one_line_error(capsys, main(["train", "estimator", "--scenario", str(DEFAULT), "--scene", "moon"]))
    assert "--scene 'moon'" in line and "allowed: street_canyon, river_bridge, brooklyn_urban" in line


def test_train_estimator_passes_the_scene_profile_speeds_and_carrier(monkeypatch, tmp_path, capsys) -> None:
    import ivsim.ai.estimator_train as et

    seen = {}

    def fake_train(profile, scene, **kw):  # noqa: ANN001, ANN003, ANN202
        seen.update(profile=profile, scene=scene, **kw)
        return {"scene": scene}

    monkeypatch.setattr(et, "train_estimator", fake_train)
    code = main(["train", "estimator", "--scenario", str(DEFAULT), "--scene", "river_bridge", "--steps", "3",
                 "--out", str(tmp_path), "-q"])  # fmt: skip
    assert code == 0
    assert seen["scene"] == "river_bridge" and seen["steps"] == 3
    assert (seen["profile"].model, seen["profile"].los) == ("rma", True)
    assert seen["speed_range_mps"] == (8.0, 20.0) and seen["carrier_hz"] == 3.5e9
    assert seen["out_dir"] == str(tmp_path)
    assert '"scene": "river_bridge"' in capsys.readouterr().out
