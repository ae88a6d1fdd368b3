"""Does the fast PHY mode reproduce the full neural link? Per-policy mean PSNR and NMSE, full vs fast.

Usage:  python analysis/fast_vs_full.py [-o DIR] [--case bridge|fleet] [--policies never,reactive,proactive,oracle]
                                        [--reuse-full DIR]

Runs the default scenario (`--case bridge`: one car) or the default scenario with four more cars from the
Financial District to Downtown Brooklyn (`--case fleet`) once per policy with `link.fidelity: full` (the neural link
and the real refinements; adapters cached in DIR/adapters) and once with `link.fidelity: fast` (sampling
models/abstraction/nyc_brooklyn_bridge.parquet), all with the scenario's seed, and prints, per policy, the mean PSNR
of all frames, of the frames on the bridge and of those in Brooklyn (full / fast and the difference), the NMSE, and
whether the policy rankings agree: exactly, and pair by pair with paired per-frame differences (a pair is
ordered when its mean PSNR difference is more than two standard errors from 0, else tied; "reversed" lists the
pairs that one mode orders one way and the other the other way). `--reuse-full DIR` takes the full runs from DIR/full_<policy> when they exist
(a full run takes minutes on a CPU). Copy and edit.
"""

import argparse
import itertools
from pathlib import Path

import numpy as np

import ivsim
from ivsim.results import compare_runs, load_runs

FLEET = (
    "fleets=[{id: fleet, count: 4, departures: {kind: at_start, t_s: 0, spread_s: 60}, min_trip_m: 1500, "
    "origins: {kind: polygon, polygon: [[-74.0150, 40.7030], [-74.0150, 40.7110], [-74.0040, 40.7110], "
    "[-74.0040, 40.7030]]}, destinations: {kind: polygon, polygon: [[-73.9950, 40.6900], [-73.9950, 40.6990], "
    "[-73.9800, 40.6990], [-73.9800, 40.6900]]}}]"
)
SCENES = {"all frames": None, "bridge": "river_bridge", "Brooklyn": "brooklyn_urban"}

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("-o", "--out", default="runs/fast_vs_full")
parser.add_argument("--case", choices=["bridge", "fleet"], default="bridge")
parser.add_argument("--policies", default="never,reactive,proactive,oracle")
parser.add_argument("--reuse-full", default=None, help="folder with full_<policy> run folders to reuse")
args = parser.parse_args()

out = Path(args.out) / args.case
case = [FLEET] if args.case == "fleet" else []
dirs: dict[str, list[Path]] = {"full": [], "fast": []}
for policy in args.policies.split(","):
    for mode in ("full", "fast"):
        run_dir = out / f"{mode}_{policy}"
        if (
            mode == "full"
            and args.reuse_full
            and (Path(args.reuse_full) / f"full_{policy}" / "events.parquet").is_file()
        ):
            run_dir = Path(args.reuse_full) / f"full_{policy}"
        elif not (run_dir / "events.parquet").is_file():
            sets = [*case, f"link.fidelity={mode}", f"refinement.policy={{kind: {policy}}}"]
            if mode == "full":
                sets.append(f"refinement.cache_dir={out.parent / 'adapters'}")
            ivsim.run_scenario("scenarios/nyc_brooklyn_bridge.yaml", run_dir=run_dir, force=True, overrides=sets)
        dirs[mode].append(run_dir)

frames = {mode: load_runs(d) for mode, d in dirs.items()}
tables = {
    label: {mode: compare_runs(frames[mode], scene=scene).set_index("policy") for mode in dirs}
    for label, scene in SCENES.items()
}


def paired_order(runs: list, scene: str | None) -> dict[tuple[str, str], str]:
    """For each pair of policies: '>' / '<' if the mean of their per-frame PSNR differences is more than twice
    its standard error from 0 (frames paired by vehicle and frame: the runs share channels, noise and draws),
    else '~' (the link cannot tell them apart on these frames)."""
    psnr = {}
    for df in runs:
        tx = df[(df.event == "tx") & df.psnr_db.notna()]
        if scene is not None:
            tx = tx[tx.scene == scene]
        psnr[str(df.attrs["run_info"]["policy"])] = tx.set_index(["vehicle", "frame"]).psnr_db
    order = {}
    for a, b in itertools.combinations(psnr, 2):
        d = (psnr[a] - psnr[b]).dropna()
        se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.inf
        order[(a, b)] = ">" if d.mean() > 2 * se else "<" if d.mean() < -2 * se else "~"
    return order


print(f"case {args.case}: mean PSNR (dB) full / fast (fast - full); NMSE (dB) full / fast\n")
print("| policy | " + " | ".join(f"PSNR {k}" for k in SCENES) + " | NMSE all frames |")
print("|---|" + "---|" * (len(SCENES) + 1))
for policy in tables["all frames"]["full"].index:
    cells = []
    for label in SCENES:
        a, b = (tables[label][m].loc[policy, "psnr_mean"] for m in ("full", "fast"))
        cells.append(f"{a:.3f} / {b:.3f} ({b - a:+.3f})")
    a, b = (tables["all frames"][m].loc[policy, "nmse_mean_db"] for m in ("full", "fast"))
    print(f"| {policy} | " + " | ".join(cells) + f" | {a:.2f} / {b:.2f} |")
print()
for label, scene in SCENES.items():
    ranks = {m: " > ".join(t.psnr_mean.sort_values(ascending=False).index) for m, t in tables[label].items()}
    print(f"{label}: PSNR ranking full {ranks['full']}; fast {ranks['fast']}; same: {ranks['full'] == ranks['fast']}")
    full, fast = paired_order(frames["full"], scene), paired_order(frames["fast"], scene)
    pairs = [f"{a} {full[a, b]}/{fast[a, b]} {b}" for a, b in full]
    reversed_ = [p for p, (x, y) in zip(pairs, ((full[k], fast[k]) for k in full), strict=True) if {x, y} == {"<", ">"}]
    print(f"  paired (full/fast): {'; '.join(pairs)}; reversed: {', '.join(reversed_) or 'none'}")
