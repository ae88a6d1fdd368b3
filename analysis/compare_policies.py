"""Compare refinement timing policies: one run per policy (or several seeds each), same scenario otherwise.

Usage:  python analysis/compare_policies.py RUN_DIR [RUN_DIR ...] [--scene SCENE]

Make the runs with e.g.
    ivsim run scenarios/nyc_brooklyn_bridge.yaml -o runs/reactive --set refinement.policy.kind=reactive
(and oracle, proactive, never, ...). Prints one row per run (image quality, time and frames with a mismatched channel
estimator, deadlines met, slack, GPU-seconds, bytes) and the mismatch per scene, and writes slack_cdf.png,
quality_vs_cost.png and one refinement timeline per run into compare_policies/ beside the first run. Copy and edit.
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

from ivsim.errors import IvsimError
from ivsim.results import (
    compare_runs,
    load_runs,
    markdown_table,
    mismatch_by_vehicle_scene,
    plot_quality_vs_cost,
    plot_refine_timeline,  # fmt: skip
    plot_slack_cdf,
)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
parser.add_argument("--scene", help="frame and mismatch metrics in this scene only")
args = parser.parse_args()

try:
    runs = load_runs(args.run_dirs)  # one DataFrame per run; attrs["run_info"] holds its policy, detector and seed
except IvsimError as exc:  # a missing folder, no event log
    sys.exit(str(exc))
table = compare_runs(runs, scene=args.scene)  # sorted oracle, proactive, adaptive, cached, reactive, periodic, never
print(markdown_table(table), end="\n\n")

per_scene = pd.concat([mismatch_by_vehicle_scene(df) for df in runs])
cols = ["frames", "frames_mismatched", "time_s", "time_mismatched_s"]
print("frames and time with a mismatched estimator, per run and scene (all vehicles):")
print(per_scene.groupby(["run_id", "scene"], sort=False)[cols].sum().round(2).to_string())

out = Path(args.run_dirs[0]).parent / "compare_policies"
out.mkdir(exist_ok=True)
named = {Path(df.attrs["run_info"]["run_dir"]).name: df for df in runs}  # label each run by its folder name
plot_slack_cdf(named, out / "slack_cdf.png")
plot_quality_vs_cost(table, out / "quality_vs_cost.png")
for name, df in named.items():
    frames = df.loc[df.event == "tx", "vehicle"].astype(str).value_counts()  # draw the busiest vehicle
    if len(frames):
        plot_refine_timeline(df, frames.index[0], out / f"timeline_{name}.png")
print(f"\nfigures in {out}/")
