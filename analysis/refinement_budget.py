"""What each refinement cost and what it bought, for a run with refinement (refinement.policy.kind != never).

Usage:  python analysis/refinement_budget.py [RUN_DIR]      (default: the newest folder in ./runs)

Prints one row per refinement job (its budget: upload, queue, large-model inference, fine-tuning, download; the
total; bytes both ways; GPU-seconds), then, for a full-link run, image quality and channel NMSE per scene and
estimator version (version 0 = the weights the car departed with; each deploy adds one). Copy and edit.
"""

import sys
from pathlib import Path

import pandas as pd

import ivsim
from ivsim.results import refinements

if len(sys.argv) > 1:
    run = Path(sys.argv[1])
else:
    runs = [p for p in Path("runs").glob("*") if p.is_dir()]
    if not runs:
        sys.exit("no run folder given and none in ./runs (make one: ivsim run scenarios/nyc_brooklyn_bridge.yaml)")
    run = max(runs, key=lambda p: p.stat().st_mtime)

df = ivsim.load_run(run)
jobs = refinements(df)
if jobs.empty:
    sys.exit(f"{run}: no refinement in this log (refinement.policy.kind is never?)")

pd.set_option("display.width", 200)
cols = ["t_s", "vehicle", "target_scene", "outcome", "cached", "upload_s", "queue_s", "lm_infer_s", "finetune_s",
        "download_s", "total_s", "upload_bytes", "download_bytes", "gpu_s"]
print(f"run {run}: {len(jobs)} refinement job(s)\n")
print(jobs[cols].round(4).to_string(index=False), end="\n\n")

tx = df[(df.event == "tx") & df.psnr_db.notna()]
if not tx.empty:
    by = tx.groupby(["scene", "estimator_version", "estimator_scene"], observed=True)
    print("image quality by scene and the estimator version that decoded it:")
    print(by[["psnr_db", "ssim", "nmse_db"]].agg(["mean", "count"]).round(3).to_string())
