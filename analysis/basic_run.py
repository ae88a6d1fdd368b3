"""Load one ivsim run and look at it with plain pandas + matplotlib.

Usage:  python analysis/basic_run.py [RUN_DIR]      (default: the newest folder in ./runs)
Copy this file and edit it; it uses only the DataFrame, no ivsim plotting helpers.
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write files, open no windows (fine in a script; a library must not do this)
import matplotlib.pyplot as plt

import ivsim

# 1. Which run? The command-line argument, else the most recently changed folder in ./runs.
if len(sys.argv) > 1:
    run = Path(sys.argv[1])
else:
    runs = [p for p in Path("runs").glob("*") if p.is_dir()]
    if not runs:
        sys.exit("no run folder given and none in ./runs (make one: ivsim run scenarios/nyc_brooklyn_bridge.yaml)")
    run = max(runs, key=lambda p: p.stat().st_mtime)

# 2. The event log: one row per event, one column per field (see ivsim/sim/eventlog.py for the columns).
df = ivsim.load_run(run)
print(f"run {run}: {len(df)} events")
print(df["event"].value_counts().to_string(), end="\n\n")

# 3. Transmissions ("tx" rows): frames and delivered share per radio scene.
tx = df[df["event"] == "tx"]
per_scene = tx.groupby("scene", observed=True).agg(
    frames=("frame", "size"), delivered=("delivered", "mean"), snr_db=("snr_db", "mean")
)
print(per_scene.round(3).to_string(), end="\n\n")

# 4. One vehicle: the one that sent the most frames.
vehicle = tx["vehicle"].value_counts().idxmax()
mine = tx[tx["vehicle"] == vehicle].sort_values("t_s")
lost = mine[~mine["delivered"].fillna(False).astype(bool)]

# 5. Two panels sharing the time axis: SNR (dropped frames in red) and the serving base station.
fig, (ax_snr, ax_bs) = plt.subplots(2, 1, sharex=True, figsize=(10, 6), height_ratios=[2, 1])
ax_snr.plot(mine["t_s"], mine["snr_db"], lw=0.8, label="SNR")
ax_snr.plot(lost["t_s"], lost["snr_db"], "rx", label="dropped frame")
ax_snr.set_ylabel("SNR (dB)")
ax_snr.legend(loc="upper right")
ax_bs.step(mine["t_s"], mine["bs"].astype(str), where="post")  # string values -> categorical y axis
ax_bs.set_ylabel("serving BS")
ax_bs.set_xlabel("simulated time (s)")
fig.suptitle(f"{run.name}: vehicle {vehicle}")
fig.tight_layout()

out = run / "figures" / "basic_snr.png"
out.parent.mkdir(parents=True, exist_ok=True)
fig.savefig(out, dpi=120)
print(f"wrote {out}")
