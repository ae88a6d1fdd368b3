"""Image quality and channel-estimation NMSE around the bridge, for a full-link run (link.fidelity: full).

Usage:  python analysis/bridge_quality.py [RUN_DIR]      (default: the newest folder in ./runs)

Prints, per scene, the frames, mean PSNR / SSIM / NMSE and which estimator the receiver held; then matched vs
mismatched frames; then, because PSNR depends as much on which image was sent as on the channel, the same per-scene
means within SINR bands (so a mismatch is compared at equal SINR). Copy and edit.
"""

import sys
from pathlib import Path

import pandas as pd

import ivsim
from ivsim.results import quality_by_estimator_match, quality_by_scene

if len(sys.argv) > 1:
    run = Path(sys.argv[1])
else:
    runs = [p for p in Path("runs").glob("*") if p.is_dir()]
    if not runs:
        sys.exit("no run folder given and none in ./runs (make one: ivsim run scenarios/nyc_brooklyn_bridge.yaml)")
    run = max(runs, key=lambda p: p.stat().st_mtime)

df = ivsim.load_run(run)
tx = df[(df.event == "tx") & df.psnr_db.notna()].copy()
if tx.empty:
    sys.exit(f"{run}: no image quality in this log (an analytic-link run? use link.fidelity: full)")

pd.set_option("display.width", 160)
print(f"run {run}: {len(tx)} frames with image quality\n")
print(quality_by_scene(df).round(3).to_string(), end="\n\n")
print(quality_by_estimator_match(df).round(3).to_string(), end="\n\n")

tx["sinr_band_db"] = pd.cut(tx.sinr_db, [-10, 5, 15, 25, 100])
tx["mismatched"] = tx.estimator_scene.astype(str) != tx.scene.astype(str)
table = tx.groupby(["sinr_band_db", "mismatched"], observed=True)[["psnr_db", "nmse_db"]].agg(["mean", "count"])
print("by SINR band (dB) and estimator match:")
print(table.round(2).to_string())
