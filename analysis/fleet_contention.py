"""Many vehicles contending for the cloud: refinement policies x queue discipline x cloud size.

Usage:  python analysis/fleet_contention.py [-o DIR] [--vehicles N] [--gpus 1 8] [--fidelity analytic|fast|full]
                                            [--runs proactive,never,...] [--set PATH=VALUE ...]

Runs scenarios/nyc_fleet.yaml (300 taxis on random trips for 10 minutes, route look-ahead re-predicted every 10 s
at the observed speed) once per (policy, queue, GPUs), all with the same seed, so every run sees the same traffic
(common random numbers). The cloud's GPUs are priced with the CPU timings measured by `ivsim bench refine`
(models/latency_cpu.yaml: about 67 s per job of N = 1024, K = 100): a deliberately slow cloud, where queueing
matters. Prints one row per run: jobs asked, finished in time (met) or late, turned away (cancelled: admission
control), deadline hit rate, mean slack, share of frames decoded with a mismatched estimator, GPU-seconds, the
longest wait in the cloud's queue, the share of finished jobs the cache served.

Analytic link by default (no PSNR: what differs between these runs is timing). With --fidelity fast the frames'
quality is sampled from models/abstraction/nyc_fleet.parquet (refined states: street_canyon's estimator refined for
each other scene; a job for another pair fails, counted under "failed"). With --fidelity full, a few vehicles
and a low frame rate the frames go through the neural link and the refinements run for real (LoRA on the CPU);
--set adds overrides for every run (e.g. refinement.cache_dir, so that later runs reuse the adapters). Copy and edit.
"""

import argparse
from pathlib import Path

import pandas as pd

import ivsim
from ivsim.results import compare_runs, markdown_table, refinements

RUNS = [  # (label, --set overrides)
    ("never", ["refinement.policy={kind: never}"]),
    ("reactive", ["refinement.policy={kind: reactive}"]),
    ("proactive", ["refinement.policy={kind: proactive, margin_s: 5}"]),
    ("proactive+edf", ["refinement.policy={kind: proactive, margin_s: 5}", "cloud.queue=edf"]),
    ("adaptive", ["refinement.policy={kind: adaptive, margin_s: 5}"]),
    ("adaptive+edf", ["refinement.policy={kind: adaptive, margin_s: 5}", "cloud.queue=edf"]),
    ("proactive+edf+admission", ["refinement.policy={kind: proactive, margin_s: 5}", "cloud.queue=edf",
                                 "cloud.admission=deadline"]),
    ("adaptive+edf+admission", ["refinement.policy={kind: adaptive, margin_s: 5}", "cloud.queue=edf",
                                "cloud.admission=deadline"]),
    ("oracle", ["refinement.policy={kind: oracle}"]),
]

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("-o", "--out", default="runs/fleet_contention", help="folder for the runs and the table")
parser.add_argument("--vehicles", type=int, default=300)
parser.add_argument("--gpus", type=int, nargs="+", default=[1, 8])
parser.add_argument("--fidelity", choices=["analytic", "fast", "full"], default="analytic")
parser.add_argument("--runs", default=",".join(label for label, _ in RUNS), help="which rows of RUNS to run")
parser.add_argument("--set", action="append", default=[], help="more --set overrides for every run")
args = parser.parse_args()
wanted = args.runs.split(",")

common = [
    f"fleets.0.count={args.vehicles}", f"link.fidelity={args.fidelity}",
    "refinement.assumed=null", "refinement.latency_profile=cpu",
    "refinement.detector={kind: route_lookahead, spacing_m: 100, speed: observed, update_s: 10}",
    *args.set,
]  # fmt: skip
out = Path(args.out)
rows = []
for gpus in args.gpus:
    for label, sets in RUNS:
        if label not in wanted:
            continue
        run_dir = out / f"gpus{gpus}_{label.replace('+', '_')}"
        summary = ivsim.run_scenario("scenarios/nyc_fleet.yaml", run_dir=run_dir, force=True,
                                     overrides=[*common, f"cloud.gpus={gpus}", *sets])  # fmt: skip
        df = ivsim.load_run(run_dir)
        row = compare_runs([df]).iloc[0]
        jobs = refinements(df)
        rows.append({
            "gpus": gpus, "run": label, "jobs": row.jobs, "met": row.met, "late": row.late, "cancelled": row.cancelled,
            "failed": row.failed,
            "hit_rate": row.deadline_hit_rate, "slack_mean_s": row.slack_mean_s,
            "mismatched_share": row.mismatched_share, "gpu_s": row.gpu_s,
            "queue_max_s": jobs.queue_s.max() if len(jobs) else 0.0,
            "cached_share": jobs.cached.mean() if len(jobs) else float("nan"),
            "psnr_mean": row.psnr_mean, "nmse_mean_db": row.nmse_mean_db, "wall_s": round(summary.wall_s, 1),
        })  # fmt: skip
        print(f"{run_dir}: {summary.wall_s:.0f} s", flush=True)

table = pd.DataFrame(rows)
print(markdown_table(table))
(out / "fleet_contention.md").write_text(markdown_table(table) + "\n")
table.to_csv(out / "fleet_contention.csv", index=False, float_format="%.6g")
