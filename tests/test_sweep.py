"""ivsim.sweep and `ivsim sweep`: grid expansion, run folders, the hive dataset, reruns, failures, bad input.

Most sweeps run in this process (``run_sweep(..., client=None)``) on the bridge scenario with the
analytic link and 60 simulated seconds; one test runs a real 2-worker LocalCluster through the CLI.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cli_checks import one_line_error as _one_line_error
from pytest_socket import enable_socket

import ivsim.api
from ivsim.cli import main
from ivsim.errors import OutputError, ScenarioError
from ivsim.results import load_run
from ivsim.sweep import load_sweep, load_sweep_file, pending_runs, run_sweep

REPO = Path(__file__).resolve().parents[1]
BRIDGE = REPO / "scenarios" / "nyc_brooklyn_bridge.yaml"
FAST = {"link.fidelity": "analytic", "duration_s": 60}
POLICY = "refinement.policy.kind"
COLUMN = "refinement__policy__kind"


def _write_sweep(folder: Path, *, name: str = "sweep.yaml", **fields: object) -> Path:
    """A sweep file in ``folder`` whose base is the bridge scenario, given relative to ``folder``."""
    data = {"base": os.path.relpath(BRIDGE, folder), "set": dict(FAST), **fields}
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def bridge_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    """The smallest sweep (never / proactive x seeds 1, 2), run once in this process."""
    folder = tmp_path_factory.mktemp("bridge_sweep")
    path = _write_sweep(folder, grid={POLICY: ["never", "proactive"]}, seeds=[1, 2])
    out = folder / "out"
    result = run_sweep(path, out_dir=out, client=None)
    return path, out, result


# --------------------------------------------------------------------------- expansion


def test_grid_expands_to_runs_and_run_dirs(bridge_sweep) -> None:
    _, out, result = bridge_sweep
    names = ["kind=never,seed=1", "kind=never,seed=2", "kind=proactive,seed=1", "kind=proactive,seed=2"]
    assert [r["name"] for r in result.records] == names
    assert result.ok and not result.failed and not result.skipped
    for record in result.records:
        assert record["status"] == "complete" and record["counts"]["tx"] > 0
        run_dir = out / record["name"]
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["status"] == "complete" and manifest["seed"] == record["seed"]
        assert manifest["duration_s"] == 60
        resolved = yaml.safe_load((run_dir / "scenario.resolved.yaml").read_text())
        assert resolved["link"]["fidelity"] == "analytic"
        assert resolved["refinement"]["policy"]["kind"] == record["values"][POLICY]
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["columns"] == [COLUMN, "seed"] and len(summary["runs"]) == 4
    assert not (out / "failed.json").exists()


def test_runs_combine_with_grid_and_values_become_set_strings(tmp_path) -> None:
    path = _write_sweep(
        tmp_path,
        runs=[
            {"refinement.policy": {"kind": "reactive"}},
            {"refinement.policy": {"kind": "proactive", "margin_s": 10}},
        ],
        grid={"traffic.fps": [0.5, 1], "link.direction": ["downlink", "uplink"]},
        seeds=[3, 4],
        name="combo",
    )
    sweep = load_sweep_file(path)
    assert sweep.name == "combo" and sweep.base == BRIDGE.resolve()
    assert sweep.swept == ("refinement.policy", "traffic.fps", "link.direction")
    assert len(sweep.runs) == 2 * 2 * 2 * 2
    first = sweep.runs[0]
    assert first.overrides == (
        "link.fidelity=analytic",
        "duration_s=60",
        "refinement.policy={kind: reactive}",
        "traffic.fps=0.5",
        "link.direction=downlink",
    )
    assert first.seed == 3 and first.values[0] == ("refinement.policy", "{kind: reactive}")
    assert first.name.startswith("policy=kind-reactive~") and first.name.endswith(",fps=0.5,direction=downlink,seed=3")
    assert str(first.partition).startswith("refinement__policy=%7Bkind%3A%20reactive%7D/traffic__fps=0.5/")
    assert len({r.name for r in sweep.runs}) == len(sweep.runs)
    assert len({r.scenario_hash for r in sweep.runs}) == len(sweep.runs)
    # the loader reads each override as --set would
    scenario = ivsim.load_scenario(BRIDGE, overrides=sweep.runs[-1].overrides, seed=sweep.runs[-1].seed)
    assert scenario.refinement.policy.kind == "proactive" and scenario.refinement.policy.margin_s == 10
    assert scenario.traffic.fps == 1 and scenario.link.direction == "uplink" and scenario.seed == 4
    assert scenario.scenario_hash() == sweep.runs[-1].scenario_hash


def test_unswept_path_of_a_run_gets_the_base_value_and_default_seed(tmp_path) -> None:
    path = _write_sweep(tmp_path, runs=[{"traffic.fps": 2}, {"refinement.samples": 64}])
    sweep = load_sweep_file(path)
    base = ivsim.load_scenario(BRIDGE)
    assert [r.seed for r in sweep.runs] == [base.seed, base.seed]
    assert dict(sweep.runs[0].values) == {"traffic.fps": "2", "refinement.samples": str(base.refinement.samples)}
    assert dict(sweep.runs[1].values) == {"traffic.fps": str(base.traffic.fps), "refinement.samples": "64"}


@pytest.mark.parametrize("value", ["no", "yes", "1", "a: b", 0.5, 1e-3, 7, True, None, {"kind": "reactive"}, [1, 2]])
def test_values_round_trip_through_set_strings(value) -> None:
    from ivsim.sweep import _value_text

    assert yaml.safe_load(_value_text(value)) == value


# --------------------------------------------------------------------------- the dataset


def test_dataset_is_hive_partitioned_and_load_sweep_reads_every_row(bridge_sweep) -> None:
    _, out, result = bridge_sweep
    parts = sorted(str(p.relative_to(out / "dataset")) for p in (out / "dataset").rglob("*.parquet"))
    assert parts == [f"{COLUMN}={kind}/seed={seed}/part.parquet" for kind in ("never", "proactive") for seed in (1, 2)]
    df = load_sweep(out)
    assert list(df.columns[-2:]) == [COLUMN, "seed"]
    assert df["seed"].dtype == "int64" and pd.api.types.is_string_dtype(df[COLUMN])
    runs = {r["name"]: load_run(out / r["name"]) for r in result.records}
    assert len(df) == sum(len(r) for r in runs.values())
    for record in result.records:
        rows = df[df.run_id == record["name"]]
        assert (rows[COLUMN] == record["values"][POLICY]).all() and (rows["seed"] == record["seed"]).all()
        expected = runs[record["name"]]
        assert rows["seq"].tolist() == expected["seq"].tolist()
        assert rows["t_s"].tolist() == expected["t_s"].tolist()
    sizes = df.groupby([COLUMN, "seed"], observed=True).size()
    assert len(sizes) == 4 and (sizes > 0).all()
    assert isinstance(df["event"].dtype, pd.CategoricalDtype) and df["seq"].dtype == "Int64"


def test_load_sweep_dask(bridge_sweep) -> None:
    _, out, _ = bridge_sweep
    ddf = load_sweep(out, dask=True)
    assert ddf.npartitions == 4
    assert list(ddf.columns[-2:]) == [COLUMN, "seed"]
    df = ddf.compute()
    pdf = load_sweep(out)
    assert len(df) == len(pdf)
    assert sorted(df[COLUMN].unique()) == ["never", "proactive"] and df["seed"].dtype == "int64"
    per_seed = ddf.groupby("seed").size().compute().sort_index()
    assert per_seed.tolist() == pdf.groupby("seed").size().sort_index().tolist()


def test_load_sweep_types_partition_values(bridge_sweep, tmp_path) -> None:
    _, out, _ = bridge_sweep
    part = next((out / "dataset").rglob("part.parquet"))
    for fps, mode, count in (("0.5", "a", "1"), ("2", "b%20c", "2"), ("1e-1", "7", "3")):
        folder = tmp_path / "dataset" / f"traffic__fps={fps}" / f"x__mode={mode}" / f"n={count}" / "seed=1"
        folder.mkdir(parents=True)
        shutil.copy(part, folder / "part.parquet")
    df = load_sweep(tmp_path)
    assert df["traffic__fps"].dtype == "float64" and sorted(df["traffic__fps"].unique()) == [0.1, 0.5, 2.0]
    assert pd.api.types.is_string_dtype(df["x__mode"]) and sorted(df["x__mode"].unique()) == ["7", "a", "b c"]
    assert df["n"].dtype == "int64" and df["seed"].dtype == "int64"
    with pytest.raises(OutputError, match="no sweep dataset"):
        load_sweep(tmp_path / "nothing")


# --------------------------------------------------------------------------- reruns and failures


def test_rerun_skips_finished_runs(bridge_sweep, tmp_path, monkeypatch) -> None:
    path, out, _ = bridge_sweep
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    redo = copy / "dataset" / f"{COLUMN}=never" / "seed=2" / "part.parquet"
    redo.unlink()  # this run's partition is gone: it runs again
    stamps = {p: p.stat().st_mtime_ns for p in copy.rglob("*.parquet")}
    calls = []
    real = ivsim.api.run_scenario

    def counting(*args, **kwargs):
        calls.append(Path(kwargs["run_dir"]).name)
        return real(*args, **kwargs)

    monkeypatch.setattr(ivsim.api, "run_scenario", counting)
    assert [r.name for r in pending_runs(load_sweep_file(path), copy)] == ["kind=never,seed=2"]
    result = run_sweep(path, out_dir=copy, client=None)
    assert calls == ["kind=never,seed=2"]
    assert result.ok and [r["name"] for r in result.skipped] == [
        "kind=never,seed=1",
        "kind=proactive,seed=1",
        "kind=proactive,seed=2",
    ]
    assert redo.is_file()
    for p, stamp in stamps.items():
        if "kind=never,seed=2" not in str(p):
            assert p.stat().st_mtime_ns == stamp, p
    again = run_sweep(path, out_dir=copy, client=None)
    assert calls == ["kind=never,seed=2"] and len(again.skipped) == 4
    assert len(load_sweep(copy)) == len(load_sweep(out))


def test_failing_run_is_recorded_and_the_others_finish(tmp_path, monkeypatch, capsys) -> None:
    path = _write_sweep(tmp_path, grid={POLICY: ["never", "proactive"]}, seeds=[1])
    real = ivsim.api.run_scenario

    def failing(scenario, **kwargs):
        if scenario.refinement.policy.kind == "never":
            msg = "boom\nsecond line"
            raise RuntimeError(msg)
        return real(scenario, **kwargs)

    monkeypatch.setattr(ivsim.api, "run_scenario", failing)
    monkeypatch.setattr("ivsim.sweep.sweep_client", lambda **kw: contextlib.nullcontext())  # in this process
    out = tmp_path / "out"
    code = main(["sweep", str(path), "-o", str(out), "-q"])
    captured = capsys.readouterr()
    assert code == 1
    assert "failed: kind=never,seed=1: RuntimeError: boom; second line" in captured.err
    assert "1 / 2 runs complete" in captured.out and "1 failed" in captured.out
    failed = json.loads((out / "failed.json").read_text())
    assert [f["name"] for f in failed] == ["kind=never,seed=1"] and "boom" in failed[0]["error"]
    summary = json.loads((out / "sweep.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["failed", "complete"]
    df = load_sweep(out)
    assert set(df[COLUMN]) == {"proactive"} and len(df) > 0

    # fixed: the rerun runs only the failed run, and failed.json goes away
    monkeypatch.setattr(ivsim.api, "run_scenario", real)
    assert main(["sweep", str(path), "-o", str(out), "-q"]) == 0
    assert "2 / 2 runs complete (1 already were), 0 failed" in capsys.readouterr().out
    assert not (out / "failed.json").exists()
    assert set(load_sweep(out)[COLUMN]) == {"never", "proactive"}


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"gird": {POLICY: ["never"]}}, ["unknown key 'gird'", "did you mean 'grid'", "allowed: name, base, grid"]),
        ({"grid": {"refinement.policy.kindd": ["never"]}}, ["grid", "kindd", "parameters: "]),
        ({"grid": {"link.fidelty": ["full"]}}, ["grid", "link.fidelty", "allowed: "]),
        ({"grid": {POLICY: ["never", "nevr"]}}, ["grid", POLICY, "'nevr'", "allowed: adaptive"]),
        ({"set": {"link.direction": "sideways"}}, ["set", "link.direction", "allowed: downlink, uplink"]),
        ({"runs": [{"vehicles.3.speed_factor": 2}]}, ["runs.0", "vehicles.3.speed_factor", "out of range"]),
        ({"grid": {"seed": [1, 2]}}, ["grid.seed", "seeds: [...]"]),
        ({"grid": {POLICY: "never"}}, [f"grid.{POLICY}", "valid list"]),
        ({"seeds": [1, -1]}, ["seeds.1", "greater than or equal to 0"]),
        ({"base": "nowhere.yaml"}, ["base", "nowhere.yaml", "no such file"]),
        ({"grid": {POLICY: ["never"]}, "runs": [{POLICY: "proactive"}]}, ["runs.0", "also swept in grid"]),
        (
            {"grid": {POLICY: ["never"]}, "runs": [{"refinement.policy": {"kind": "reactive"}}]},
            ["runs.0", f"overlaps grid path {POLICY}"],
        ),
    ],
)
def test_bad_sweep_file_is_one_line_and_exit_2(tmp_path, capsys, fields, expected) -> None:
    path = _write_sweep(tmp_path, **fields)
    line = _one_line_error(capsys, main(["sweep", str(path), "-o", str(tmp_path / "out")]))
    assert line.startswith(f"{path}:"), line
    for text in expected:
        assert text in line, line
    assert not (tmp_path / "out").exists()  # nothing started


def test_combination_checked_before_any_run(tmp_path, capsys) -> None:
    # each value is valid alone; measured latency with the analytic link is not
    path = _write_sweep(
        tmp_path,
        set={"duration_s": 60},
        grid={"link.fidelity": ["full", "analytic"], "refinement.latency": ["measured"]},
    )
    line = _one_line_error(capsys, main(["sweep", str(path), "-o", str(tmp_path / "out")]))
    assert line.startswith(f"{path}: the run link.fidelity=analytic, refinement.latency=measured:"), line
    assert "needs link.fidelity: full" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", "the file is empty"), ("base: [unclosed\n", "YAML syntax error"), ("- a\n", "must be a mapping")],
)
def test_unreadable_sweep_file(tmp_path, capsys, text, expected) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    line = _one_line_error(capsys, main(["sweep", str(path)]))
    assert line.startswith(str(path)) and expected in line
    line = _one_line_error(capsys, main(["sweep", str(tmp_path / "missing.yaml")]))
    assert "missing.yaml: no such file" in line
    with pytest.raises(ScenarioError):
        load_sweep_file(path)


def test_unreachable_scheduler(tmp_path, capsys) -> None:
    enable_socket()  # a real (refused) connection attempt
    path = _write_sweep(tmp_path, grid={POLICY: ["never"]})
    line = _one_line_error(capsys, main(["sweep", str(path), "--scheduler", "tcp://127.0.0.1:1", "-o", str(tmp_path)]))
    assert line.startswith("--scheduler tcp://127.0.0.1:1: cannot connect within 5 s")
    line = _one_line_error(capsys, main(["sweep", str(path), "--scheduler", "nonsense", "-o", str(tmp_path)]))
    assert "not a scheduler address" in line and "tcp://HOST:PORT" in line


def test_workers_and_scheduler_are_exclusive(tmp_path, capsys) -> None:
    path = _write_sweep(tmp_path, grid={POLICY: ["never"]})
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(path), "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_docstring_example_is_a_valid_sweep(tmp_path) -> None:
    import ivsim.sweep

    doc = ivsim.sweep.__doc__
    block = doc[doc.index("A sweep file is YAML::") :].split("::", 1)[1].split("\n\n")[1]
    data = yaml.safe_load(block)
    data["base"] = str(BRIDGE)
    path = tmp_path / "doc.yaml"
    path.write_text(yaml.safe_dump(data))
    sweep = load_sweep_file(path)
    assert sweep.name == "bridge_policies" and len(sweep.runs) == 16


def test_example_sweep_file_validates() -> None:
    sweep = load_sweep_file(REPO / "scenarios" / "sweeps" / "bridge_policies.yaml")
    assert sweep.name == "bridge_policies" and len(sweep.runs) == 4
    assert all("link.fidelity=analytic" in r.overrides for r in sweep.runs)


# --------------------------------------------------------------------------- a real Dask cluster


def test_local_cluster_through_the_cli(tmp_path, capsys) -> None:
    enable_socket()  # the scheduler and workers talk over localhost TCP
    path = _write_sweep(tmp_path, grid={POLICY: ["never", "proactive"]}, seeds=[5])
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--workers", "2", "-o", str(out), "-q"]) == 0
    assert "2 / 2 runs complete (0 already were), 0 failed" in capsys.readouterr().out
    df = load_sweep(out)
    assert set(df[COLUMN]) == {"never", "proactive"} and set(df["seed"]) == {5}
    assert main(["sweep", str(path), "-o", str(out), "-q"]) == 0  # all done: no cluster needed
    assert "(2 already were)" in capsys.readouterr().out


def _worker_settings() -> dict:  # runs in a worker
    import dask

    return {
        "profile": dask.config.get("distributed.worker.profile.enabled"),
        "tick": dask.config.get("distributed.admin.tick.interval"),
        "malloc_trim": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
        "omp": os.environ.get("OMP_NUM_THREADS"),
    }


def test_local_workers_run_long_tasks_without_dask_s_short_task_defaults(monkeypatch) -> None:
    import dask

    from ivsim.sweep import sweep_client

    enable_socket()
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)  # the nanny copies its variables into this process
    before = dask.config.get("distributed.worker.profile")
    with sweep_client(workers=1) as client:
        (settings,) = client.run(_worker_settings).values()
    assert settings == {"profile": False, "tick": "1s", "malloc_trim": None, "omp": "1"}
    assert dask.config.get("distributed.worker.profile") == before  # the caller's own config is left as it was


def _dying(**kwargs):  # runs in a worker: the never runs kill it
    if "kind=never" in kwargs["run_dir"]:
        os._exit(3)
    return importlib.import_module("ivsim.sweep")._execute(**kwargs)


@pytest.mark.slow
def test_worker_death_is_retried_once_then_recorded(tmp_path, monkeypatch) -> None:
    import cloudpickle

    from ivsim.sweep import sweep_client

    enable_socket()
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    try:
        monkeypatch.setattr("ivsim.sweep._execute", _dying)
        path = _write_sweep(tmp_path, grid={POLICY: ["never", "proactive"]}, seeds=[1])
        with sweep_client(workers=2) as client:
            result = run_sweep(path, out_dir=tmp_path / "out", client=client)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert [r["status"] for r in result.records] == ["failed", "complete"]
    assert "worker died" in result.records[0]["error"] and "retry" in result.records[0]["error"]
    assert json.loads((tmp_path / "out" / "failed.json").read_text())[0]["name"] == "kind=never,seed=1"


@pytest.mark.slow  # starts a LocalCluster and runs the sweep twice (~40 s)
def test_bench_sweep_cli_reports_the_speedup(capsys: pytest.CaptureFixture[str]) -> None:
    enable_socket()  # the scheduler and workers talk over localhost TCP
    assert main(["bench", "sweep", "--runs", "2", "--vehicles", "5", "--duration", "30", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["runs"] == 2 and result["failed"] == 0 and result["workers"] == 2
    assert result["speedup"] == pytest.approx(result["serial_s"] / result["parallel_s"], rel=0.02)
    assert main(["bench", "sweep", "--runs", "0"]) == 2
