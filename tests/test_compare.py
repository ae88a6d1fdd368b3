"""Comparing refinement timing policies: exact summaries of hand-built logs, figures, ``ivsim compare``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ivsim.cli import main
from ivsim.results import (
    POLICY_SUMMARY_COLUMNS,
    compare_runs,
    load_runs,
    markdown_table,
    mismatch_by_vehicle_scene,
    plot_quality_vs_cost,
    plot_refine_timeline,
    plot_slack_cdf,
    policy_summary,
    run_info,
    write_comparison,
)

# ---------------------------------------------------------------------- hand-built logs


def frame(run_id: str, rows: list[tuple[str, float, dict]]) -> pd.DataFrame:
    """An event log: the shared prefix, then the fields of each row (missing ones NaN)."""
    records = [
        {"run_id": run_id, "seq": i, "t_s": t_s, "event": event,
         "entity_id": fields.get("job_id") or fields.get("vehicle"), **fields}
        for i, (event, t_s, fields) in enumerate(sorted(rows, key=lambda r: r[1]))
    ]  # fmt: skip
    return pd.DataFrame.from_records(records)


def drive(scenes: list[tuple[float, str]], end_s: float) -> list[tuple[str, float, dict]]:
    """v0's scene_enter rows (scene from each time on) and its vehicle_arrive at ``end_s``."""
    rows, prev = [], None
    for t_s, scene in scenes:
        rows.append(("scene_enter", t_s, {"vehicle": "v0", "trip": 0, "scene": scene, "prev_scene": prev}))
        prev = scene
    rows.append(("vehicle_arrive", end_s, {"vehicle": "v0", "scene": prev}))
    return rows


def tx(t_s: float, scene: str, est: str, psnr: float, ssim: float, *, flag: bool = True) -> tuple[str, float, dict]:
    fields = {"vehicle": "v0", "scene": scene, "frame": int(t_s // 2), "delivered": not math.isnan(psnr),
              "psnr_db": psnr, "ssim": ssim, "estimator_scene": est}  # fmt: skip
    if flag:
        fields["mismatched"] = est != scene
    return ("tx", t_s + 0.001, fields)


def job(kind: str, t_s: float, job_id: str, target: str, **fields: object) -> tuple[str, float, dict]:
    return (kind, t_s, {"vehicle": "v0", "job_id": job_id, "target_scene": target, **fields})


NAN = float("nan")


def oracle_run() -> pd.DataFrame:
    """Oracle: the bridge's own estimator the moment v0 enters; one outage frame (no PSNR)."""
    psnr = [31, 33, NAN, 31, 33, 32, 32, 32, 32, 32]
    rows = drive([(0.0, "canyon"), (10.0, "bridge")], 20.0)
    rows.append(("estimator_switch", 10.0, {"vehicle": "v0", "source": "oracle", "estimator_scene": "bridge"}))
    for k, t_s in enumerate(range(0, 20, 2)):
        scene = "canyon" if t_s < 10 else "bridge"
        rows.append(tx(t_s, scene, scene, psnr[k], NAN if k == 2 else 0.9))
    return frame("oracle-1", rows)


def reactive_run() -> pd.DataFrame:
    """Reactive: asks on entering the bridge (t=10), adapter at t=13: 3 s late, frames at 10 and 12 mismatched."""
    rows = drive([(0.0, "canyon"), (10.0, "bridge")], 20.0)
    rows += [
        job("refine_request", 10.0, "j1", "bridge", policy="reactive", detector="route", upload_bytes=500),
        job("refine_done", 13.0, "j1", "bridge", policy="reactive", outcome="late", gpu_s=2.0, upload_bytes=500,
            download_bytes=1000, deadline_t_s=10.0, arrival_t_s=10.0, slack_s=-3.0),
        job("deploy", 13.0, "j1", "bridge", policy="reactive", estimator_scene="bridge", active=True),
    ]  # fmt: skip
    for t_s in range(0, 10, 2):
        rows.append(tx(t_s, "canyon", "canyon", 30.0, 0.9))
    rows += [tx(10, "bridge", "canyon", 18.0, 0.5), tx(12, "bridge", "canyon", 22.0, 0.7)]
    for t_s in (14, 16, 18):
        rows.append(tx(t_s, "bridge", "bridge", 30.0, 0.9))
    return frame("reactive-1", rows)


def proactive_run() -> pd.DataFrame:
    """Proactive, an older log (no ``mismatched`` column): 1 met, 1 late, 1 cancelled, 1 failed, 1 running.

    The bridge adapter arrives at t=7 but is kept until v0 enters the bridge (t=10); the
    urban one arrives 1 s after v0 entered urban (t=21), so the frame at t=20 is mismatched.
    """
    rows = drive([(0.0, "canyon"), (10.0, "bridge"), (20.0, "urban")], 30.0)
    done = {"policy": "proactive", "upload_bytes": 500}
    rows += [
        job("refine_request", 4.0, "j1", "bridge", policy="proactive", deadline_t_s=10.0),
        job("refine_done", 7.0, "j1", "bridge", **done, outcome="met", gpu_s=2.0, download_bytes=1000,
            deadline_t_s=10.0, arrival_t_s=10.0, slack_s=3.0),
        job("deploy", 7.0, "j1", "bridge", policy="proactive", estimator_scene="bridge", active=False),
        ("estimator_switch", 10.0, {"vehicle": "v0", "source": "onboard", "estimator_scene": "bridge"}),
        job("refine_request", 14.0, "j2", "urban", policy="proactive", deadline_t_s=20.0),
        job("refine_done", 21.0, "j2", "urban", **done, outcome="late", gpu_s=2.0, download_bytes=1000,
            deadline_t_s=20.0, arrival_t_s=20.0, slack_s=-1.0),
        job("deploy", 21.0, "j2", "urban", policy="proactive", estimator_scene="urban", active=True),
        job("refine_request", 22.0, "j3", "canyon", policy="proactive"),
        job("refine_done", 23.0, "j3", "canyon", **done, outcome="cancelled", reason="vehicle_gone", gpu_s=0.5,
            download_bytes=0),
        job("refine_request", 24.0, "j4", "bridge", policy="proactive"),
        job("refine_done", 25.0, "j4", "bridge", **done, outcome="failed", reason="outage", download_bytes=0),
        job("refine_request", 28.0, "j5", "canyon", policy="proactive"),
    ]  # fmt: skip
    for t_s in range(0, 30, 2):
        scene = "canyon" if t_s < 10 else "bridge" if t_s < 20 else "urban"
        est = "canyon" if t_s < 10 else "bridge" if t_s <= 20 else "urban"
        rows.append(tx(t_s, scene, est, 15.0 if t_s == 20 else 30.0, 0.5 if t_s == 20 else 0.8, flag=False))
    return frame("proactive-2", rows)


#: Hand-computed policy_summary rows (p5: linear interpolation at 0.05 * (n - 1)).
EXPECTED = {
    "oracle-1": {"frames": 10, "psnr_mean": 32.0, "psnr_p5": 31.0, "ssim_mean": 0.9, "ssim_p5": 0.9,
                 "mismatched_share": 0.0, "mismatched_s": 0.0, "jobs": 0, "met": 0, "late": 0, "cancelled": 0,
                 "failed": 0, "deadline_hit_rate": NAN, "slack_mean_s": NAN, "gpu_s": 0.0, "refine_air_bytes": 0,
                 "refine_backhaul_bytes": 0},
    "reactive-1": {"frames": 10, "psnr_mean": 28.0, "psnr_p5": 19.8, "ssim_mean": 0.84, "ssim_p5": 0.59,
                   "mismatched_share": 0.2, "mismatched_s": 3.0, "jobs": 1, "met": 0, "late": 1, "cancelled": 0,
                   "failed": 0, "deadline_hit_rate": 0.0, "slack_mean_s": -3.0, "gpu_s": 2.0,
                   "refine_air_bytes": 1500, "refine_backhaul_bytes": 1500},
    "proactive-2": {"frames": 15, "psnr_mean": 29.0, "psnr_p5": 25.5, "ssim_mean": 0.78, "ssim_p5": 0.71,
                    "mismatched_share": 1 / 15, "mismatched_s": 1.0, "jobs": 5, "met": 1, "late": 1, "cancelled": 1,
                    "failed": 1, "deadline_hit_rate": 0.5, "slack_mean_s": 1.0, "gpu_s": 4.5,
                    "refine_air_bytes": 4000, "refine_backhaul_bytes": 4000},
}  # fmt: skip


def check_row(row: pd.Series, expected: dict[str, float]) -> None:
    for column, value in expected.items():
        got = row[column]
        if isinstance(value, float) and math.isnan(value):
            assert pd.isna(got), (column, got)
        else:
            assert got == pytest.approx(value, abs=1e-12), (row["run_id"], column, got, value)


# ---------------------------------------------------------------------- summaries


@pytest.mark.parametrize("make", [oracle_run, reactive_run, proactive_run])
def test_policy_summary_exact(make) -> None:
    df = make()
    table = policy_summary(df)
    assert list(table.columns) == POLICY_SUMMARY_COLUMNS
    assert len(table) == 1
    row = table.iloc[0]
    check_row(row, EXPECTED[row["run_id"]])
    assert row["policy"] == row["run_id"].split("-")[0]  # from the rows: requests, else the oracle's switches
    assert table["frames"].dtype == np.int64 and table["gpu_s"].dtype == np.float64
    assert table["seed"].dtype == pd.Int64Dtype() and pd.isna(row["seed"])  # no manifest, no run_info


def test_policy_summary_of_several_runs_and_info_from_attrs() -> None:
    df = pd.concat([reactive_run(), oracle_run(), proactive_run()], ignore_index=True)
    table = policy_summary(df)
    assert table["run_id"].tolist() == ["reactive-1", "oracle-1", "proactive-2"]  # order of first row
    for _, row in table.iterrows():
        check_row(row, EXPECTED[row["run_id"]])
    assert table["detector"].tolist() == ["route", None, None]

    one = reactive_run()
    one.attrs["run_info"] = {"policy": "my.module:Policy", "detector": "cusum", "seed": 7}
    row = policy_summary(one).iloc[0]
    assert (row["policy"], row["detector"], row["seed"]) == ("my.module:Policy", "cusum", 7)
    one.attrs = {"manifest": {"seed": 3}}
    assert policy_summary(one).iloc[0]["seed"] == 3


def test_policy_summary_scene_and_after_filters() -> None:
    df = reactive_run()
    bridge = policy_summary(df, scene="bridge").iloc[0]
    check_row(bridge, {"frames": 5, "psnr_mean": 26.0, "mismatched_share": 0.4, "mismatched_s": 3.0, "jobs": 1,
                       "gpu_s": 2.0})  # fmt: skip
    canyon = policy_summary(df, scene="canyon").iloc[0]
    check_row(canyon, {"frames": 5, "psnr_mean": 30.0, "mismatched_share": 0.0, "mismatched_s": 0.0, "late": 1})
    late = policy_summary(df, after_t_s=12.0).iloc[0]  # frames at 12.001 ... 18.001, time from 12 s on
    check_row(late, {"frames": 4, "psnr_mean": 28.0, "mismatched_share": 0.25, "mismatched_s": 1.0, "jobs": 1})
    assert policy_summary(df, scene="moon").iloc[0]["frames"] == 0


def test_analytic_and_older_logs_do_not_crash() -> None:
    # analytic link: no image quality, no estimator_scene; the mismatched flag and the deploys still tell
    df = reactive_run().drop(columns=["psnr_db", "ssim", "estimator_scene"])
    row = policy_summary(df).iloc[0]
    check_row(row, {"frames": 10, "psnr_mean": NAN, "ssim_p5": NAN, "mismatched_share": 0.2, "mismatched_s": 3.0})
    # a bare log: only the prefix and a few columns
    bare = frame("bare", [("tx", 1.0, {"vehicle": "v0"}), ("tx", 2.0, {"vehicle": "v0"}), ("note", 3.0, {})])
    row = policy_summary(bare).iloc[0]
    check_row(row, {"frames": 2, "psnr_mean": NAN, "mismatched_share": NAN, "mismatched_s": 0.0, "jobs": 0,
                    "deadline_hit_rate": NAN, "refine_air_bytes": 0})  # fmt: skip
    assert row["policy"] == "never"
    empty = policy_summary(bare.iloc[:0])
    assert empty.empty and list(empty.columns) == POLICY_SUMMARY_COLUMNS
    assert mismatch_by_vehicle_scene(bare).empty


def test_mismatch_by_vehicle_scene() -> None:
    table = mismatch_by_vehicle_scene(pd.concat([reactive_run(), proactive_run()], ignore_index=True))
    got = {(r.run_id, r.scene): (r.frames, r.frames_mismatched, r.time_s, r.time_mismatched_s)
           for r in table.itertuples()}  # fmt: skip
    assert got == {
        ("reactive-1", "canyon"): (5, 0, 10.0, 0.0),
        ("reactive-1", "bridge"): (5, 2, 10.0, 3.0),
        ("proactive-2", "canyon"): (5, 0, 10.0, 0.0),  # the bridge adapter is on board from t=7, not in use
        ("proactive-2", "bridge"): (5, 0, 10.0, 0.0),
        ("proactive-2", "urban"): (5, 1, 10.0, 1.0),
    }
    assert table["scene"].tolist()[:2] == ["canyon", "bridge"]  # by first time in the scene
    assert table["frames"].dtype == np.int64


# ---------------------------------------------------------------------- run folders, compare_runs, figures


def write_run(root: Path, df: pd.DataFrame, *, policy: str | None, detector: str | None = None,
              seed: int | None = None) -> Path:  # fmt: skip
    """A run folder as the simulator leaves it: events.parquet, manifest.json, scenario.resolved.yaml."""
    run_dir = root / str(df["run_id"].iloc[0])
    run_dir.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), run_dir / "events.parquet")
    manifest = {"run_id": df["run_id"].iloc[0], "status": "complete", "sim_time_s": float(df["t_s"].max())}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    if policy is not None:
        refinement = f"refinement:\n  policy:\n    kind: {policy}\n"
        if detector is not None:
            refinement += f"  detector:\n    kind: {detector}\n    horizon_s: 30\n"
        (run_dir / "scenario.resolved.yaml").write_text(f"name: toy\nseed: {seed}\nduration_s: 30.0\n{refinement}")
    return run_dir


@pytest.fixture
def run_dirs(tmp_path: Path) -> list[Path]:
    root = tmp_path / "runs"
    return [
        write_run(root, reactive_run(), policy="reactive", detector="route", seed=1),
        write_run(root, proactive_run(), policy="proactive", detector="cusum", seed=2),
        write_run(root, oracle_run(), policy=None),  # no resolved scenario: the policy from the rows
    ]


def test_run_info_reads_yaml_defensively(run_dirs: list[Path], tmp_path: Path) -> None:
    assert run_info(run_dirs[1]) == {"policy": "proactive", "detector": "cusum", "seed": 2}
    assert run_info(run_dirs[2]) == {"policy": None, "detector": None, "seed": None}
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "scenario.resolved.yaml").write_text("seed: one\nrefinement:\n  policy: periodic\n  detector: [1]\n")
    assert run_info(odd) == {"policy": "periodic", "detector": None, "seed": None}
    (odd / "scenario.resolved.yaml").write_text("refinement: [unclosed\n")
    assert run_info(odd) == {"policy": None, "detector": None, "seed": None}


def test_compare_runs_from_folders(run_dirs: list[Path]) -> None:
    table = compare_runs(run_dirs)
    assert table["policy"].tolist() == ["oracle", "proactive", "reactive"]  # POLICY_ORDER
    assert table["detector"].tolist() == [None, "cusum", "route"]
    assert table["seed"].tolist() == [pd.NA, 2, 1]
    for _, row in table.iterrows():  # the categorical columns of load_run give the same numbers
        check_row(row, EXPECTED[row["run_id"]])
    bridge = compare_runs(run_dirs, scene="bridge")
    assert bridge["frames"].tolist() == [5, 5, 5]
    assert bridge["mismatched_s"].tolist() == [0.0, 0.0, 3.0]

    md = markdown_table(table).splitlines()
    assert md[0].startswith("| run_id") and md[1].startswith("|---")
    assert len(md) == 5 and "| oracle " in md[2]


def test_figures_are_written(run_dirs: list[Path], tmp_path: Path) -> None:
    frames = load_runs(run_dirs)
    out = tmp_path / "fig"
    out.mkdir()
    paths = [
        plot_refine_timeline(frames[1], "v0", out / "timeline.png"),
        plot_refine_timeline(reactive_run().drop(columns=["psnr_db", "estimator_scene"]), "v0", out / "analytic.png"),
        plot_slack_cdf({"reactive": frames[0], "proactive": frames[1], "oracle": frames[2]}, out / "slack.png"),
        plot_slack_cdf({"none": oracle_run()}, out / "slack_empty.png"),
        plot_quality_vs_cost(compare_runs(frames), out / "qc.png"),
    ]
    for path in paths:
        assert path.is_file() and path.stat().st_size > 1000, path


def test_write_comparison_labels_runs_of_one_policy_by_seed(tmp_path: Path) -> None:
    a, b = reactive_run(), reactive_run()
    b["run_id"] = "reactive-2"
    a.attrs["run_info"] = {"policy": "reactive", "seed": 1}
    b.attrs["run_info"] = {"policy": "reactive", "seed": 2}
    names = sorted(p.name for p in write_comparison([b, a], tmp_path / "out"))
    assert names == ["compare.csv", "compare.md", "detectors.csv", "quality_vs_cost.png", "slack_cdf.png",
                     "timeline_reactive_seed_1.png", "timeline_reactive_seed_2.png"]  # fmt: skip
    csv = pd.read_csv(tmp_path / "out" / "compare.csv")
    assert csv["seed"].tolist() == [1, 2]


# ---------------------------------------------------------------------- ivsim compare


def test_cli_compare(run_dirs: list[Path], tmp_path: Path, capsys) -> None:
    out, csv = tmp_path / "cmp", tmp_path / "table.csv"
    code = main(["compare", *map(str, run_dirs), "-o", str(out), "--csv", str(csv)])
    stdout = capsys.readouterr().out
    assert code == 0
    lines = stdout.splitlines()
    assert [cell.strip() for cell in lines[0].split("|")[1:3]] == ["run_id", "policy"]
    assert [line.split("|")[2].strip() for line in lines[2:5]] == ["oracle", "proactive", "reactive"]
    written = {p.name for p in out.iterdir()}
    assert written == {"compare.csv", "compare.md", "detectors.csv", "slack_cdf.png", "quality_vs_cost.png", "timeline_oracle.png",
                       "timeline_proactive.png", "timeline_reactive.png"}  # fmt: skip
    assert all((out / name).stat().st_size > 0 for name in written)
    table = pd.read_csv(csv)
    assert table["policy"].tolist() == ["oracle", "proactive", "reactive"]
    assert table["deadline_hit_rate"].tolist()[1:] == [0.5, 0.0]
    assert (out / "compare.md").read_text().startswith("# Refinement policies compared")


@pytest.mark.parametrize("what", ["missing", "no_log", "empty_log"])
def test_cli_compare_bad_run_dir(run_dirs: list[Path], tmp_path: Path, capsys, what: str) -> None:
    bad = tmp_path / what
    if what != "missing":
        bad.mkdir()
    if what == "empty_log":
        empty = oracle_run().iloc[:0]
        pq.write_table(pa.Table.from_pandas(empty, preserve_index=False), bad / "events.parquet")
    code = main(["compare", str(run_dirs[0]), str(bad)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith(str(bad))


# ---------------------------------------------------------------------- detectors against the truth


def test_detector_errors_of_predictions_and_alarms() -> None:
    from ivsim.results import detector_errors

    scenes = drive([(0.0, "street"), (80.0, "bridge"), (120.0, "street"), (200.0, "bridge")], 260.0)

    def boundary(t_s: float, target: str, predicted: float, arrival: float) -> tuple[str, float, dict]:
        return ("detect", t_s, {"vehicle": "v0", "detector": "route_lookahead", "detection": "boundary",
                                "target_scene": target, "predicted_t_s": predicted, "arrival_t_s": arrival,
                                "error_s": predicted - arrival})  # fmt: skip

    # the bridge at 80 predicted twice (first 6 s late, then 2 s late), the street at 120 once (1 s early),
    # a boundary into "tunnel" that never comes; the bridge at 200 is never predicted
    rows = [*scenes, boundary(0.0, "bridge", 86.0, 80.0), boundary(40.0, "bridge", 82.0, 80.0),
            boundary(80.0, "street", 119.0, 120.0), boundary(80.0, "tunnel", 150.0, math.nan)]  # fmt: skip
    (row,) = detector_errors(frame("r", rows)).to_dict("records")
    assert (row["changes"], row["predicted"], row["missed"], row["false_predictions"]) == (3, 2, 1, 1)
    assert row["error_first_s"] == pytest.approx((6.0 - 1.0) / 2)
    assert row["error_last_s"] == pytest.approx((2.0 - 1.0) / 2) and row["abs_error_last_s"] == pytest.approx(1.5)
    assert row["alarms"] == 0 and math.isnan(row["delay_mean_s"])

    def alarm(t_s: float, delay: float, false: bool) -> tuple[str, float, dict]:
        return ("detect", t_s, {"vehicle": "v0", "detector": "channel_statistics", "detection": "alarm",
                                "delay_s": delay, "false_alarm": false})  # fmt: skip

    # alarms 10 s after the bridge, a false one at 100 s, 30 s after the return to the street; none for 200 s
    rows = [*scenes, alarm(90.0, 10.0, False), alarm(100.0, math.nan, True), alarm(150.0, 30.0, False)]
    (row,) = detector_errors(frame("r", rows)).to_dict("records")
    assert (row["alarms"], row["false_alarms"], row["detected"], row["changes"]) == (3, 1, 2, 3)
    assert row["delay_mean_s"] == pytest.approx(20.0) and row["predicted"] == 0 and row["missed"] == 0


# ---------------------------------------------------------------------- sweeps: means over seeds


def test_sweep_summary_means_and_student_t_intervals(tmp_path: Path, capsys) -> None:
    from scipy import stats

    from ivsim.results import sweep_runs, sweep_summary

    root = tmp_path / "sweep"
    runs = []
    # two seeds of "reactive" (the same log renamed) and one of "oracle"
    for name, make, policy, seed in (("r1", reactive_run, "reactive", 1), ("r2", reactive_run, "reactive", 2),
                                     ("o1", oracle_run, "oracle", 1)):  # fmt: skip
        df = make().assign(run_id=name)
        if name == "r2":  # a second seed with 2 dB more on every frame
            df["psnr_db"] = df["psnr_db"] + 2.0
        run_dir = write_run(root, df, policy=policy, seed=seed)
        runs.append({"name": name, "seed": seed, "values": {"refinement.policy.kind": policy}, "status": "complete",
                     "run_dir": str(run_dir)})  # fmt: skip
    runs.append({"name": "x", "seed": 3, "values": {"refinement.policy.kind": "oracle"}, "status": "failed"})
    (root / "sweep.json").write_text(json.dumps({"name": "t", "swept": ["refinement.policy.kind"], "runs": runs}))

    table = sweep_runs(root)
    assert list(table["refinement.policy.kind"]) == ["reactive", "reactive", "oracle"]
    assert list(table.seed) == [1, 2, 1]
    summary = sweep_summary(root).set_index("refinement.policy.kind")
    assert summary.loc["reactive", "runs"] == 2 and summary.loc["oracle", "runs"] == 1
    assert summary.loc["reactive", "psnr_mean"] == pytest.approx(29.0)  # 28 and 30
    half = stats.t.ppf(0.975, 1) * np.std([28.0, 30.0], ddof=1) / np.sqrt(2)
    assert summary.loc["reactive", "psnr_mean_ci"] == pytest.approx(half)
    assert math.isnan(summary.loc["oracle", "psnr_mean_ci"])  # one seed: no interval

    assert main(["compare", str(root), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "mean over seeds" in out and (tmp_path / "out" / "sweep_summary.csv").is_file()
    assert main(["compare", str(root), str(runs[0]["run_dir"])]) == 2  # sweep and run folders mixed
