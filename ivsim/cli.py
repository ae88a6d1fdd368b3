"""The ``ivsim`` command line.

``ivsim run / validate / sweep / schema / report / compare / bench / train / eval``. Every user error
(:class:`~ivsim.errors.IvsimError`, a bad flag) prints one line per problem on
stderr and exits with code 2; Ctrl-C exits 130 after closing the log.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from ivsim.errors import IvsimError

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ivsim", description="Discrete-event simulator of vehicular semantic-communication networks.")
    p.add_argument("--version", action="version", version=f"ivsim {_version()}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    run = sub.add_parser("run", help="run a scenario and write its event log")
    run.add_argument("scenario", help="scenario YAML file")
    run.add_argument("-o", "--output", metavar="RUN_DIR", help="run folder (default runs/<name>-<timestamp>)")
    run.add_argument("--seed", type=int, help="override the scenario's seed")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a field, e.g. vehicles.0.speed_factor=1.2 (VALUE is YAML: quote strings like '\"no\"')",
    )
    run.add_argument("--force", action="store_true", help="overwrite a non-empty run folder")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary table")
    run.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads of the neural link (default 1: on a shared 2-core box more threads run slower)",
    )  # fmt: skip

    val = sub.add_parser("validate", help="check a scenario (and its map and routes) without running it")
    val.add_argument("scenario")
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE")
    val.add_argument("--no-map", action="store_true", help="check the file only, do not load the map")

    sw = sub.add_parser(
        "sweep",
        help="run a sweep file (base scenario x grid of --set overrides x seeds) on a Dask cluster; "
        "writes one run folder per run and a hive-partitioned Parquet dataset of all events",
    )
    sw.add_argument("sweep", metavar="SWEEP", help="sweep YAML file (format: see `pydoc ivsim.sweep`)")
    where = sw.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, default=None, help="worker processes of a local Dask cluster (default 2, 1 thread each)"
    )
    where.add_argument(
        "--scheduler", metavar="tcp://HOST:PORT", help="run on an existing Dask cluster (same file system paths)"
    )
    sw.add_argument("-o", "--output", metavar="DIR", help="output folder (default runs/<sweep name>)")
    sw.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    sub.add_parser("schema", help="print the scenario JSON Schema (for editor completion)")

    rep = sub.add_parser("report", help="draw a run's figures (map, per-vehicle timelines)")
    rep.add_argument("run_dir")
    rep.add_argument(
        "-o", "--output", metavar="DIR",
        help="where the figures (and quality_by_scene.csv of a full-link run) go (default RUN_DIR/figures)",
    )  # fmt: skip
    rep.add_argument("--vehicle", action="append", default=[], help="vehicle(s) for timelines (default: up to 4)")

    cmp_ = sub.add_parser(
        "compare", help="compare refinement timing policies over runs: quality, estimator mismatch, deadlines, cost"
    )
    cmp_.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders (one per policy, seed, ...)")
    cmp_.add_argument("--scene", help="frame and mismatch metrics in this scene only (jobs and costs: whole run)")
    cmp_.add_argument(
        "-o", "--output", metavar="OUT_DIR",
        help="also write compare.csv, compare.md, slack_cdf.png, quality_vs_cost.png, timeline_<policy>.png here",
    )  # fmt: skip
    cmp_.add_argument("--csv", metavar="FILE", help="also write the table as CSV to FILE")

    bench = sub.add_parser("bench", help="performance benchmarks (ratios measured side by side)")
    bench_sub = bench.add_subparsers(dest="bench", required=True, parser_class=_Parser, metavar="BENCH")
    core = bench_sub.add_parser("core", help="1,000 vehicles on the road for a simulated hour, analytic link")
    core.add_argument("--json", action="store_true", help="print one JSON object")
    core.add_argument("--vehicles", type=int, default=1000)
    core.add_argument("--duration", type=float, default=3600.0, help="simulated seconds")
    core.add_argument("--fps", type=float, default=1.0, help="frames per second per vehicle")
    bsc = bench_sub.add_parser(
        "scale", help="1,000 vehicles for a simulated hour, fast link, proactive policy; scaling 100 -> 3,000"
    )
    bsc.add_argument("--json", action="store_true", help="print one JSON object")
    bsc.add_argument("--vehicles", type=int, default=1000)
    bsc.add_argument("--duration", type=float, default=3600.0, help="simulated seconds")
    bsc.add_argument("--fps", type=float, default=1.0, help="frames per second per vehicle")
    bsc.add_argument("--scaling", default="100,1000,3000", help="vehicle counts of the scaling curve")
    bsc.add_argument("--fidelity", choices=["fast", "analytic"], default="fast", help="link (default fast)")
    bsw = bench_sub.add_parser(
        "sweep", help="an 8-run sweep serially and on a 2-worker Dask LocalCluster: the speedup"
    )
    bsw.add_argument("--json", action="store_true", help="print one JSON object")
    bsw.add_argument("--runs", type=int, default=8, help="runs (seeds) in the sweep (default 8)")
    bsw.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    bsw.add_argument("--vehicles", type=int, default=1000, help="vehicles per run (default 1000)")
    bsw.add_argument("--duration", type=float, default=7200.0, help="simulated seconds per run (default 7200)")
    bl = bench_sub.add_parser(
        "link", help="neural link: batched vs one frame at a time, inside the simulator, and the full-rate cost"
    )
    bl.add_argument("--json", action="store_true", help="print one JSON object")
    bl.add_argument("--vehicles", type=int, default=32, help="frames per batch and vehicles in the simulator run")
    bl.add_argument("--single", type=int, default=16, help="frames sent one call each")
    bl.add_argument("--codec", default="ctcd")
    bl.add_argument("--estimator", default="diffusion")
    bl.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    bl.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    bl.add_argument("--write-profile", metavar="FILE", help="also measure a latency profile and write it to FILE")

    br = bench_sub.add_parser(
        "refine", help="refinement compute: large-model generation per sample, LoRA fine-tuning per step, adapter bytes"
    )
    br.add_argument("--json", action="store_true", help="print one JSON object")
    br.add_argument("--samples", type=int, default=256, help="generated samples timed (and a quarter of it)")
    br.add_argument("--steps", type=int, default=20, help="fine-tuning steps timed (and twice as many)")
    br.add_argument("--rank", type=int, default=8, help="LoRA rank (adapter bytes at rank and 2 x rank)")
    br.add_argument("--repeats", type=int, default=3, help="median of this many timings")
    br.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    br.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    br.add_argument("--large-model", metavar="FILE", help="large-model weights (default models/large_model.safetensors)")
    br.add_argument(
        "--write-profile", metavar="FILE",
        help="write the timings as the `refine` section of latency profile FILE (other sections are kept)",
    )  # fmt: skip

    rf = sub.add_parser(
        "refine",
        help="one refinement outside the simulation: budget, and NMSE/PSNR/SSIM before, after and oracle",
    )
    rf.add_argument("--from", dest="from_scene", required=True, metavar="SCENE_A", help="scene of the base estimator")
    rf.add_argument("--to", dest="to_scene", required=True, metavar="SCENE_B", help="target scene")
    rf.add_argument(
        "--scenario", default=None, help="scenario YAML that defines the scenes (default the shipped default scenario)"
    )
    rf.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE")
    rf.add_argument("--samples", type=int, default=None, help="N generated channels (default refinement.samples)")
    rf.add_argument("--steps", type=int, default=None, help="K fine-tuning steps (default refinement.steps)")
    rf.add_argument("--rank", type=int, default=None, help="LoRA rank (default refinement.lora_rank)")
    rf.add_argument("--pilots", type=int, default=None, help="LS pilot observations uploaded (default 0)")
    rf.add_argument("--sinr-db", type=float, default=10.0, help="the vehicle's link SINR for air times (default 10)")
    rf.add_argument("--snr", default="0,10,20", help="SNRs of the quality table (comma list or START:STOP:STEP)")
    rf.add_argument("--n-test", type=int, default=128, help="test channels of the NMSE (default 128)")
    rf.add_argument("--frames", type=int, default=8, help="test frames of PSNR/SSIM (default 8)")
    rf.add_argument("--seed", type=int, default=0)
    rf.add_argument("--adapter-out", metavar="FILE", help="also save the adapter (safetensors)")
    rf.add_argument("--large-model", metavar="FILE", help="large-model weights (default models/large_model.safetensors)")
    rf.add_argument("--plot", metavar="PNG", help="also draw PSNR / SSIM / NMSE vs SNR before, after and oracle")
    rf.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    rf.add_argument("--json", action="store_true", help="print one JSON object {budget, quality}")

    train = sub.add_parser("train", help="rebuild shipped weights (codecs, estimators) from the repo's own recipes")
    train_sub = train.add_subparsers(dest="train", required=True, parser_class=_Parser, metavar="WHAT")
    tc = train_sub.add_parser("codec", help="train a neural codec over AWGN; writes OUT/codec_<kind>.safetensors")
    tc.add_argument("--kind", required=True, choices=["ctcd", "deepjscc"])
    tc.add_argument("--steps", type=int, default=1500, help="optimiser steps (default 1500)")
    tc.add_argument("--batch", type=int, default=32, help="patches per step (default 32)")
    tc.add_argument("--crop", type=int, default=32, help="training patch side = codec patch (default 32)")
    tc.add_argument("--seed", type=int, default=0)
    tc.add_argument("--out", default=None, metavar="DIR", help="output folder (default: the repo's models/)")
    tc.add_argument("--resume", action="store_true", help="continue from runs/train/codec_<kind>/ checkpoints")
    tc.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: robust on shared cores, reproducible)"
    )
    tc.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    te = train_sub.add_parser(
        "estimator", help="train a scene's diffusion channel estimator; writes OUT/estimator_<scene>.safetensors"
    )
    te.add_argument("--scenario", required=True, help="scenario YAML that defines the scene and its profile")
    te.add_argument("--scene", required=True, help="scene name in the scenario's `scenes`")
    te.add_argument("--steps", type=int, default=1000, help="optimiser steps (default 1000, the shipped recipe)")
    te.add_argument("--batch", type=int, default=32, help="channels per step (default 32)")
    te.add_argument("--seed", type=int, default=0)
    te.add_argument("--out", default=None, metavar="DIR", help="output folder (default: the repo's models/)")
    te.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/")
    te.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    _add_train_device(te)
    te.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    tl = train_sub.add_parser(
        "large-model", help="train the cloud's GPT-2 channel generator; writes OUT/large_model.safetensors"
    )
    tl.add_argument("--steps", type=int, default=3000, help="optimiser steps (default 3000, the shipped recipe)")
    tl.add_argument("--batch", type=int, default=128, help="channels per step (default 128)")
    tl.add_argument("--seed", type=int, default=0)
    tl.add_argument("--out", default=None, metavar="DIR", help="output folder (default: the repo's models/)")
    tl.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/")
    tl.add_argument("--time-budget", type=float, default=None, metavar="S", help="stop after S wall seconds")
    tl.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    tl.add_argument("--tokens", choices=("path", "symbol", "dct"), default="path",
                    help="a token per propagation path (default, the shipped weights), per OFDM symbol, or per DCT "
                         "coefficient over the slot")  # fmt: skip
    tl.add_argument("--cov-rank", type=int, default=2,
                    help="rank of each token's low-rank-plus-diagonal Gaussian (default 2, the shipped weights: a full "
                         "covariance of a path's 3 numbers; 0 = diagonal)")  # fmt: skip
    _add_train_device(tl)
    tl.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    ev = sub.add_parser("eval", help="evaluations of the neural link (codecs x channel estimators x scenes)")
    ev_sub = ev.add_subparsers(dest="eval", required=True, parser_class=_Parser, metavar="WHAT")
    el = ev_sub.add_parser(
        "link",
        help="PSNR/SSIM/NMSE vs SNR per codec, estimator and scene, and the 10 dB mismatch matrix; "
        "writes DIR/link.csv, figures and tables.md",
    )
    el.add_argument("--codecs", default="ctcd,deepjscc,digital", help="comma list (default ctcd,deepjscc,digital)")
    el.add_argument(
        "--estimators", default="perfect,ls,lmmse,diffusion", help="comma list (default perfect,ls,lmmse,diffusion)"
    )
    el.add_argument(
        "--snr", default="-5:20:5", help="SNRs in dB: inclusive START:STOP:STEP or a comma list (write --snr=-5:20:5)"
    )
    el.add_argument(
        "--scenario",
        dest="scenarios",
        action="extend",
        nargs="+",
        default=None,
        metavar="FILE",
        help="scenario YAML(s) whose scenes are evaluated (default: the three shipped ones)",
    )
    el.add_argument("--scenes", default=None, help="comma list of scenes (default: every scene of the scenarios)")
    el.add_argument("--image-size", default="72x128", metavar="HxW", help="frame size (default 72x128)")
    el.add_argument("--frames", type=int, default=None, help="test frames (default all 8)")
    el.add_argument("--realizations", type=int, default=1, help="channel realizations per frame (default 1)")
    el.add_argument(
        "--matrix-channels", type=int, default=64, help="channels per test scene of the mismatch matrix (0: none)"
    )
    el.add_argument("--seed", type=int, default=12345)
    el.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="default cpu")
    el.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    el.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    el.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    er = ev_sub.add_parser(
        "refine",
        help="refinement trade-off: NMSE gained vs N samples x K steps (latency, GPU-seconds) per scene pair; "
        "writes DIR/refine.csv, tables.md and figures",
    )
    er.add_argument("--scenario", default=None, help="scenario YAML (default the shipped default scenario)")
    er.add_argument(
        "--pairs", default=None,
        help="comma list FROM:TO (default: every ordered pair of the scenario's scenes)",
    )  # fmt: skip
    er.add_argument("--samples", default=None, help="N grid, comma list (default 256; --full 16,64,256,1024)")
    er.add_argument("--steps", default=None, help="K grid, comma list (default 25,100; --full 10,25,100,400)")
    er.add_argument("--full", action="store_true", help="the full N x K grid")
    er.add_argument("--no-real", action="store_true", help="skip the same recipe on real channels")
    er.add_argument("--n-test", type=int, default=128, help="test channels per pair (default 128)")
    er.add_argument("--seed", type=int, default=0)
    er.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    er.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    er.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")

    cal = sub.add_parser(
        "calibrate",
        help="run the scenario's full link over (estimator state, scene, SNR, speed) cells; writes the table "
        "link.fidelity fast samples from",
    )
    cal.add_argument("scenario", help="scenario YAML file")
    cal.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE")
    cal.add_argument("--frames", type=int, default=8, help="calibration frames per cell (default 8: one per image)")
    cal.add_argument(
        "--snr", default=None,
        help="SNR bin centres, comma list of values and START:STOP:STEP ranges (default -6:20:2,24:40:4,50:70:10)",
    )  # fmt: skip
    cal.add_argument("--speed-edges", default=None, help="speed bin edges in m/s, comma list (default 0,7,14,30)")
    cal.add_argument(
        "--refined", default=None,
        help="refined states BASE:TARGET,... or none (default: the scene_rules default scene to every other scene)",
    )  # fmt: skip
    cal.add_argument("--adapters", metavar="DIR", help="cached adapters to reuse (default refinement.cache_dir)")
    cal.add_argument("--reuse", metavar="TABLE",
                     help="an earlier table of this calibration: copy its unchanged states, run only the others")  # fmt: skip
    cal.add_argument("--seed", type=int, default=None, help="seed of the calibration draws (default the scenario's)")
    cal.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    cal.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    cal.add_argument(
        "-o", "--output", metavar="FILE", help="table to write (default models/abstraction/<scenario name>.parquet)"
    )
    return p


def _version() -> str:
    from ivsim import __version__

    return __version__


def _fail(message: str) -> int:
    for line in str(message).splitlines() or [""]:
        print(line, file=sys.stderr)
    return EXIT_USAGE


def _add_train_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", choices=("cpu", "auto", "cuda"), default="cpu",
        help="where to train (default cpu, as the shipped weights were; auto or cuda: on a GPU, "
        "reproducible but not bitwise equal to a CPU run)",
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ivsim`` console script; returns the exit code."""
    args = _build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _COMMANDS[args.command](args)
    except IvsimError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _cmd_schema(args: argparse.Namespace) -> int:
    from ivsim.config.schema import Scenario

    print(json.dumps(Scenario.model_json_schema(), indent=2))
    return 0


def _prefixed(path: str, exc: IvsimError) -> IvsimError:
    """Name the scenario file in a world error that does not already."""
    text = str(exc)
    return type(exc)(text if text.startswith(path) else f"{path}: {text}")


def _cmd_validate(args: argparse.Namespace) -> int:
    from ivsim.config.loader import load_scenario

    scenario = load_scenario(args.scenario, overrides=args.overrides)
    if not args.no_map:
        from ivsim.sim.engine import Simulation

        try:
            sim = Simulation(scenario)
        except IvsimError as exc:
            raise _prefixed(args.scenario, exc) from None
        counts = sim.scene_map.edge_counts()
        scenes = ", ".join(f"{k} {v}" for k, v in counts.items())
        print(
            f"{args.scenario}: ok: {scenario.name!r}, {sim.vehicles.n} vehicles, "
            f"{len(scenario.base_stations)} base stations, map {sim.roadmap.graph.number_of_nodes()} nodes / "
            f"{sim.roadmap.graph.number_of_edges()} edges, edges per scene: {scenes}"
        )
    else:
        print(f"{args.scenario}: ok: {scenario.name!r} (map not loaded)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ivsim.api import default_run_dir
    from ivsim.config.loader import load_scenario
    from ivsim.sim.engine import Simulation

    scenario = load_scenario(args.scenario, overrides=args.overrides, seed=args.seed)
    if scenario.link.fidelity == "full":
        import torch

        torch.set_num_threads(args.threads)  # process-wide, owned by this command
    run_dir = Path(args.output) if args.output else default_run_dir(scenario)
    try:
        sim = Simulation(scenario, run_dir=run_dir, force=args.force)
    except IvsimError as exc:
        raise _prefixed(args.scenario, exc) from None
    try:
        summary = _run_with_progress(sim, quiet=args.quiet)
    except KeyboardInterrupt:
        print(
            f"interrupted at t={sim.env.now:.1f} s: {sim.log.rows} rows kept in {run_dir} (status: interrupted)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if not args.quiet:
        _print_summary(summary)
    else:
        print(run_dir)
    return 0


def _run_with_progress(sim, *, quiet: bool):  # noqa: ANN001, ANN202
    if quiet:
        return sim.run()
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    duration = sim.scenario.duration_s
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:>8.0f} / {task.total:.0f} sim s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(sim.scenario.name, total=duration)
        return sim.run(progress=lambda t: bar.update(task, completed=t))


def _print_summary(summary) -> None:  # noqa: ANN001
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run {summary.run_id}: {summary.status}", show_header=True)
    table.add_column("event")
    table.add_column("rows", justify="right")
    for name, n in sorted(summary.counts.items()):
        table.add_row(name, f"{n:,}")
    delivered = summary.frames_delivered / summary.frames if summary.frames else float("nan")
    table.add_section()
    table.add_row("frames delivered", f"{summary.frames_delivered:,} / {summary.frames:,} ({delivered:.1%})")
    table.add_row("vehicles / handovers", f"{summary.vehicles:,} / {summary.handovers:,}")
    table.add_row(
        "simulated / wall",
        f"{summary.sim_time_s:,.0f} s / {summary.wall_s:,.1f} s ({summary.realtime_factor:,.0f}x real time)",
    )
    table.add_row("log", str(summary.run_dir))
    Console().print(table)


def _cmd_sweep(args: argparse.Namespace) -> int:
    """Validate every run of a sweep file, run the unfinished ones on Dask; exit 1 if any failed."""
    import contextlib

    from ivsim.sweep import default_out_dir, load_sweep_file, pending_runs, run_sweep, sweep_client

    sweep = load_sweep_file(args.sweep)  # every combination checked before anything starts
    import distributed  # noqa: F401 - it sets its loggers' levels on import

    # distributed logs every worker start and stop at INFO; show them with -v, its errors always
    logging.getLogger("distributed").setLevel([logging.ERROR, logging.INFO, logging.DEBUG][min(args.verbose, 2)])
    out_dir = Path(args.output) if args.output else default_out_dir(sweep)
    if pending_runs(sweep, out_dir):
        workers = 2 if args.workers is None else args.workers
        executor = sweep_client(workers=workers, scheduler=args.scheduler)
    else:
        executor = contextlib.nullcontext()  # every run is complete already: no cluster to start
    with executor as client:
        if args.quiet:
            result = run_sweep(sweep, out_dir=out_dir, client=client)
        else:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            columns = (
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("runs"),
                TextColumn("{task.fields[failed]}"), TimeElapsedColumn(),
            )  # fmt: skip
            with Progress(*columns, transient=False) as bar:
                task = bar.add_task(sweep.name, total=len(sweep.runs), failed="")
                failed = 0

                def advance(record: dict) -> None:
                    nonlocal failed
                    failed += record["status"] != "complete"
                    bar.update(task, advance=1, failed=f"({failed} failed)" if failed else "")

                result = run_sweep(sweep, out_dir=out_dir, client=client, progress=advance)
    skipped = len(result.skipped)
    done = sum(r["status"] == "complete" for r in result.records)
    print(
        f"{sweep.name}: {done} / {len(result.records)} runs complete ({skipped} already were), "
        f"{len(result.failed)} failed, {result.wall_s:.1f} s; dataset {result.out_dir / 'dataset'}"
    )
    for record in result.failed:
        print(f"failed: {record['name']}: {record['error']}", file=sys.stderr)
    if result.failed:
        print(f"failed runs listed in {result.out_dir / 'failed.json'}", file=sys.stderr)
    return 0 if result.ok else 1


def _cmd_report(args: argparse.Namespace) -> int:
    from ivsim.results import write_report

    paths = write_report(args.run_dir, out_dir=args.output, vehicles=args.vehicle or None)
    for p in paths:
        print(p)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import pandas as pd

    from ivsim.errors import OutputError
    from ivsim.results import compare_runs, detector_errors, load_runs, markdown_table, write_comparison

    sweeps = [Path(d) for d in args.run_dirs if (Path(d) / "sweep.json").is_file()]
    if sweeps:
        return _compare_sweeps(sweeps, args)
    frames = load_runs(args.run_dirs)
    table = compare_runs(frames, scene=args.scene)
    print(markdown_table(table))
    errors = pd.concat([detector_errors(f) for f in frames], ignore_index=True)
    if (errors.changes > 0).any() and (errors.alarms + errors.predicted + errors.false_predictions > 0).any():
        print("\nscene-change detectors against the truth:")
        print(markdown_table(errors))
    if args.csv:
        try:
            table.to_csv(args.csv, index=False, float_format="%.6g")
        except OSError as exc:
            msg = f"{args.csv}: cannot write the table ({exc.strerror or exc})"
            raise OutputError(msg) from None
        print(args.csv)
    if args.output:
        for path in write_comparison(frames, args.output, scene=args.scene):
            print(path)
    return 0


def _compare_sweeps(sweeps: list[Path], args: argparse.Namespace) -> int:
    """``ivsim compare SWEEP_DIR ...``: per-run rows, then means over seeds with 95% intervals."""
    from ivsim.errors import OutputError
    from ivsim.results import markdown_table, sweep_runs, sweep_summary

    if len(sweeps) != len(args.run_dirs):
        msg = "ivsim compare: give either run folders or sweep folders, not both"
        raise OutputError(msg)
    for folder in sweeps:
        runs = sweep_runs(folder, scene=args.scene)
        summary = sweep_summary(folder, scene=args.scene)
        print(f"{folder}: {len(runs)} runs\n")
        print(markdown_table(runs.drop(columns=["run_id"])))
        print("\nmean over seeds (+- half-width of the 95% Student-t interval):\n")
        print(markdown_table(summary))
        out = Path(args.output) / folder.name if args.output and len(sweeps) > 1 else args.output
        if out:
            try:
                Path(out).mkdir(parents=True, exist_ok=True)
                runs.to_csv(Path(out) / "sweep_runs.csv", index=False, float_format="%.6g")
                summary.to_csv(Path(out) / "sweep_summary.csv", index=False, float_format="%.6g")
                (Path(out) / "sweep_summary.md").write_text(markdown_table(summary) + "\n")
            except OSError as exc:
                msg = f"{out}: cannot write the tables ({exc.strerror or exc})"
                raise OutputError(msg) from None
            for name in ("sweep_runs.csv", "sweep_summary.csv", "sweep_summary.md"):
                print(Path(out) / name)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from ivsim.bench import bench_core

    if args.bench == "refine":
        return _cmd_bench_refine(args)
    if args.bench == "core":
        result = bench_core(vehicles=args.vehicles, duration_s=args.duration, fps=args.fps, progress=not args.json)
    elif args.bench == "scale":
        from ivsim.bench import bench_scale

        try:
            scaling = tuple(int(x) for x in args.scaling.split(",") if x.strip())
        except ValueError:
            msg = f"--scaling: vehicle counts separated by commas, got {args.scaling!r}"
            raise IvsimError(msg) from None
        _positive(vehicles=args.vehicles, **{f"scaling {n}": n for n in scaling})
        result = bench_scale(
            vehicles=args.vehicles, duration_s=args.duration, fps=args.fps, scaling=scaling,
            fidelity=args.fidelity, progress=not args.json,
        )  # fmt: skip
    elif args.bench == "sweep":
        import distributed  # noqa: F401 - it sets its loggers' levels on import

        from ivsim.bench import bench_sweep

        logging.getLogger("distributed").setLevel(logging.ERROR)  # worker starts and stops are not results
        _positive(runs=args.runs, workers=args.workers, vehicles=args.vehicles)
        if not args.duration > 0:
            msg = f"--duration must be > 0, got {args.duration}"
            raise IvsimError(msg)
        result = bench_sweep(
            runs=args.runs, workers=args.workers, vehicles=args.vehicles, duration_s=args.duration,
            progress=not args.json,
        )  # fmt: skip
    else:
        import torch

        from ivsim.ai.bench_link import bench_link, measure_latency_profile

        if args.vehicles < 1 or args.single < 1 or args.threads < 1:
            msg = "--vehicles, --single and --threads must be >= 1"
            raise IvsimError(msg)
        torch.set_num_threads(args.threads)  # process-wide, owned by this command
        if args.write_profile:
            measure_latency_profile(args.write_profile, device=args.device)
        result = bench_link(
            vehicles=args.vehicles, single_frames=args.single, codec=args.codec, estimator=args.estimator,
            device=args.device, progress=not args.json,
        )  # fmt: skip
        if args.write_profile:
            result["profile_written"] = args.write_profile
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            print(f"{key:>{width}}: {value}")
    return 0


def _positive(**flags: int | None) -> None:
    for flag, value in flags.items():
        if value is not None and value < 1:
            msg = f"--{flag.replace('_', '-')} must be >= 1, got {value}"
            raise IvsimError(msg)


def _cmd_bench_refine(args: argparse.Namespace) -> int:
    import torch

    from ivsim.ai.refine_eval import bench_refine

    _positive(samples=args.samples, steps=args.steps, rank=args.rank, repeats=args.repeats, threads=args.threads)
    torch.set_num_threads(args.threads)  # process-wide, owned by this command
    result = bench_refine(
        samples=args.samples, steps=args.steps, rank=args.rank, repeats=args.repeats, device=args.device,
        threads=args.threads, large_model=args.large_model,
    )  # fmt: skip
    if args.write_profile:
        from ivsim.ai.refine_eval import write_refine_section

        write_refine_section(args.write_profile, result)
        result["profile_written"] = args.write_profile
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>16}: {value}")
    return 0


def _load_for_refine(path: str | None, overrides: Sequence[str] = ()) -> object:
    from ivsim.config.loader import load_scenario

    default = Path(__file__).resolve().parents[1] / "scenarios" / "nyc_brooklyn_bridge.yaml"
    return load_scenario(path if path is not None else default, overrides=list(overrides))


def _cmd_refine(args: argparse.Namespace) -> int:
    """One refinement outside the simulation; budget and quality before / after / oracle."""
    from ivsim.ai.link_eval import parse_snr_db

    _positive(n_test=args.n_test, frames=args.frames, threads=args.threads)
    try:
        snrs = parse_snr_db(args.snr)
    except ValueError as exc:
        msg = f"--snr {args.snr!r}: {exc}"
        raise IvsimError(msg) from None
    scenario = _load_for_refine(args.scenario, args.overrides)
    import torch

    from ivsim.ai.refine_eval import refine_once

    torch.set_num_threads(args.threads)  # process-wide, owned by this command
    out = refine_once(
        scenario, args.from_scene, args.to_scene, samples=args.samples, steps=args.steps, rank=args.rank,
        pilots=args.pilots, sinr_db=args.sinr_db, snr_db=snrs, n_test=args.n_test, frames=args.frames,
        seed=args.seed, adapter_out=args.adapter_out, large_model=args.large_model, device=scenario.device,
    )  # fmt: skip
    info, b = out["info"], out["budget"]
    if args.plot:
        from ivsim.ai.refine_eval import plot_refine_quality

        title = (f"{scenario.name}: {info['from']} estimator on {info['to']} channels, refined with "
                 f"N={info['samples']} generated samples, K={info['steps']} LoRA steps")  # fmt: skip
        plot_refine_quality(out["quality"], args.plot, title=title)
    if args.json:
        keys = ("upload_s", "queue_s", "lm_infer_s", "finetune_s", "download_s", "total_s", "upload_bytes",
                "download_bytes", "gpu_s")  # fmt: skip
        print(json.dumps({"budget": {k: b[k] for k in keys}, "quality": out["quality"]}, indent=2))
        return 0
    print(
        f"refine {info['from']} -> {info['to']}: N={info['samples']} samples, K={info['steps']} steps, "
        f"rank {info['rank']}, {info['pilots']} pilot observations; adapter {info['adapter_id']} "
        f"({info['adapter_bytes']:,} bytes); oracle = {info['oracle']}"
    )
    print(f"budget ({b.get('timing', 'timing')}; vehicle at {info['sinr_db']:g} dB SINR, no queue):")
    for key in ("upload_s", "queue_s", "lm_infer_s", "finetune_s", "download_s", "total_s"):
        print(f"  {key:>14}: {b[key]:.4f}")
    for key in ("upload_bytes", "download_bytes"):
        print(f"  {key:>14}: {b[key]:,}")
    print(f"  {'gpu_s':>14}: {b['gpu_s']:.4f}")
    print(f"  wall time here: generation {info['wall_lm_infer_s']:.1f} s, fine-tuning {info['wall_finetune_s']:.1f} s")
    print(f"quality on {info['to']} ({info['n_test']} channels for NMSE, {info['frames']} frames for PSNR/SSIM):")
    print(f"  {'estimator':>9} {'SNR dB':>7} {'NMSE dB':>8} {'PSNR dB':>8} {'SSIM':>6}")
    for r in out["quality"]:
        print(f"  {r['estimator']:>9} {r['snr_db']:>7g} {r['nmse_db']:>8.2f} {r['psnr_db']:>8.2f} {r['ssim']:>6.3f}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    return {"codec": _cmd_train_codec, "estimator": _cmd_train_estimator, "large-model": _cmd_train_large_model}[
        args.train
    ](args)


def _cmd_train_large_model(args: argparse.Namespace) -> int:
    _positive(steps=args.steps, batch=args.batch, threads=args.threads)
    import torch

    from ivsim.ai.large_model import LargeModelConfig, train_large_model
    from ivsim.ai.neural_link import resolve_device
    from ivsim.ai.zoo import MODELS_DIR
    from ivsim.phy import GridSpec

    torch.set_num_threads(args.threads)  # process-wide, owned by this command
    result = train_large_model(
        steps=args.steps, batch_size=args.batch, seed=args.seed,
        out_dir=args.out if args.out is not None else MODELS_DIR, resume=args.resume, progress=not args.quiet,
        time_budget_s=args.time_budget, num_threads=args.threads, device=resolve_device(args.device),
        config=LargeModelConfig.for_grid(GridSpec(), tokens=args.tokens, cov_rank=args.cov_rank),
    )  # fmt: skip
    result.pop("loss_curve", None)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _cmd_train_estimator(args: argparse.Namespace) -> int:
    """Train the diffusion estimator of one scene, at the carrier of the scenario's first base station."""
    from ivsim.config.loader import load_scenario

    scenario = load_scenario(args.scenario)
    if args.scene not in scenario.scenes:
        allowed = ", ".join(scenario.scenes)
        msg = f"{args.scenario}: --scene {args.scene!r} is not a scene of this scenario (allowed: {allowed})"
        raise IvsimError(msg)
    if args.threads < 1:
        msg = f"--threads must be >= 1, got {args.threads}"
        raise IvsimError(msg)
    import torch

    from ivsim.ai.estimator_train import train_estimator
    from ivsim.ai.neural_link import resolve_device
    from ivsim.ai.zoo import MODELS_DIR

    torch.set_num_threads(args.threads)  # process-wide, owned by this command
    scene = scenario.scenes[args.scene]
    result = train_estimator(
        scenario.profile_of(args.scene),
        args.scene,
        carrier_hz=scenario.base_stations[0].carrier_hz,
        steps=args.steps,
        batch_size=args.batch,
        speed_range_mps=tuple(scene.speed_mps),
        seed=args.seed,
        out_dir=args.out if args.out is not None else MODELS_DIR,
        resume=args.resume,
        progress=not args.quiet,
        num_threads=args.threads,
        device=resolve_device(args.device),
    )
    print(json.dumps(result, indent=2, default=str))
    return 0


def _cmd_train_codec(args: argparse.Namespace) -> int:
    import torch

    from ivsim.ai.train import train_codec
    from ivsim.ai.zoo import MODELS_DIR

    if args.threads < 1:
        msg = f"--threads must be >= 1, got {args.threads}"
        raise IvsimError(msg)
    torch.set_num_threads(args.threads)  # process-wide, owned by this command
    result = train_codec(
        args.kind,
        steps=args.steps,
        batch_size=args.batch,
        crop=args.crop,
        seed=args.seed,
        out_dir=args.out if args.out is not None else MODELS_DIR,
        resume=args.resume,
        progress=not args.quiet,
    )
    print(json.dumps(result, indent=2))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    return {"link": _cmd_eval_link, "refine": _cmd_eval_refine}[args.eval](args)


def _int_list(flag: str, text: str, lo: int, hi: int) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        vals = []
    if not vals or any(not lo <= v <= hi for v in vals):
        msg = f"{flag} {text!r}: a comma list of integers in {lo}..{hi}"
        raise IvsimError(msg)
    return vals


def _cmd_eval_refine(args: argparse.Namespace) -> int:
    """N x K trade-off of refinement per scene pair; writes refine.csv, tables.md and figures."""
    _positive(n_test=args.n_test, threads=args.threads)
    scenario = _load_for_refine(args.scenario)
    scenes = list(scenario.scenes)
    if args.pairs is None:
        pairs = [(a, b) for a in scenes for b in scenes if a != b]
    else:
        pairs = []
        for item in (t.strip() for t in args.pairs.split(",") if t.strip()):
            a, _, b = item.partition(":")
            if a not in scenes or b not in scenes or a == b:
                msg = f"--pairs {item!r}: FROM:TO with two different scenes of {scenario.name} (allowed: {', '.join(scenes)})"
                raise IvsimError(msg)
            pairs.append((a, b))
    samples = _int_list("--samples", args.samples or ("16,64,256,1024" if args.full else "256"), 1, 4096)
    steps = _int_list("--steps", args.steps or ("10,25,100,400" if args.full else "25,100"), 1, 5000)
    import torch

    from ivsim.ai.refine_eval import eval_refine, write_refine_eval

    torch.set_num_threads(args.threads)  # process-wide, owned by this command
    rows = eval_refine(
        scenario, pairs, samples_grid=samples, steps_grid=steps, n_test=args.n_test, seed=args.seed,
        with_real=not args.no_real, progress=not args.quiet,
    )  # fmt: skip
    for path in write_refine_eval(rows, args.output, scenario=scenario):
        print(path)
    return 0


def _comma_list(flag: str, text: str, allowed: Sequence[str], *, plugins: bool = False) -> list[str]:
    """Split a comma list and check each item against ``allowed`` (and ``module:Class`` if ``plugins``)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed and not (plugins and ":" in t)]
    if not items or bad:
        what = f"unknown {', '.join(map(repr, bad))}" if bad else "empty list"
        extra = ", or module:Class" if plugins else ""
        msg = f"{flag} {text!r}: {what} (allowed: {', '.join(allowed)}{extra})"
        raise IvsimError(msg)
    return items


def _cmd_eval_link(args: argparse.Namespace) -> int:
    """Evaluate codecs x estimators x scenes over SNR; write link.csv, figures and tables.md."""
    from ivsim.ai import link_eval as le
    from ivsim.ai.codecs import CODECS

    codecs = _comma_list("--codecs", args.codecs, list(CODECS), plugins=True)
    estimators = _comma_list("--estimators", args.estimators, le.ESTIMATOR_KINDS)
    try:
        snrs = le.parse_snr_db(args.snr)
    except ValueError as exc:
        msg = f"--snr {args.snr!r}: {exc}"
        raise IvsimError(msg) from None
    try:
        size = le.parse_image_size(args.image_size)
    except ValueError as exc:
        msg = f"--image-size {args.image_size!r}: {exc}"
        raise IvsimError(msg) from None
    for flag, value, low in (
        ("--frames", args.frames, 1),
        ("--realizations", args.realizations, 1),
        ("--matrix-channels", args.matrix_channels, 0),
        ("--threads", args.threads, 1),
    ):
        if value is not None and value < low:
            msg = f"{flag} must be >= {low}, got {value}"
            raise IvsimError(msg)
    known = le.load_link_scenes(args.scenarios)
    scenes = _comma_list("--scenes", args.scenes, list(known)) if args.scenes is not None else None
    import torch

    torch.set_num_threads(args.threads)  # process-wide, owned by this command
    df = le.eval_link(
        codecs,
        estimators,
        snr_db=snrs,
        scenarios=args.scenarios,
        scenes=scenes,
        image_size=size,
        frames=args.frames,
        realizations=args.realizations,
        matrix_channels=args.matrix_channels,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )
    for path in le.write_link_eval(df, args.output):
        print(path)
    if not args.quiet:
        for check in le.link_checks(df):
            verdict = {True: "PASS", False: "FAIL", None: "info"}[check["passed"]]
            print(f"{verdict:>5}  {check['check']}: {check['detail']}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    """Calibrate the scenario's full link for ``link.fidelity: fast``; write the table and print one summary line."""
    import shlex

    from ivsim.config.loader import load_scenario
    from ivsim.phy import abstraction as ab

    scenario = load_scenario(args.scenario, overrides=args.overrides)
    try:
        snrs = ab.parse_snr_bins(args.snr or ab.DEFAULT_SNR_BINS)
    except ValueError as exc:
        msg = f"--snr {args.snr!r}: {exc}"
        raise IvsimError(msg) from None
    try:
        edges = tuple(float(x) for x in args.speed_edges.split(",")) if args.speed_edges else ab.DEFAULT_SPEED_EDGES
    except ValueError:
        msg = f"--speed-edges {args.speed_edges!r}: expected a comma list of speeds in m/s, e.g. 0,7,14,30"
        raise IvsimError(msg) from None
    try:
        refined = ab.parse_refined(args.refined, tuple(scenario.scenes)) if args.refined is not None else None
    except ValueError as exc:
        msg = f"--refined: {exc}"
        raise IvsimError(msg) from None
    for flag, value in (("--frames", args.frames), ("--threads", args.threads)):
        if value < 1:
            msg = f"{flag} must be >= 1, got {value}"
            raise IvsimError(msg)
    out = Path(args.output) if args.output else ab.default_table_path(scenario.name)
    words = ["ivsim", "calibrate", args.scenario, *(f"--set={o}" for o in args.overrides)]
    for flag, value in (("--frames", args.frames), ("--snr", args.snr), ("--speed-edges", args.speed_edges),
                        ("--refined", args.refined), ("--adapters", args.adapters), ("--reuse", args.reuse),
                        ("--seed", args.seed),
                        ("--threads", args.threads), ("-o", args.output)):  # fmt: skip
        if value is not None:
            words.append(f"{flag}={value}")
    reuse = ab.CalibrationTable.read(args.reuse) if args.reuse is not None else None
    import torch

    torch.set_num_threads(args.threads)  # process-wide, owned by this command
    table = ab.calibrate(
        scenario, frames=args.frames, snr_db=snrs, speed_edges=edges, refined=refined, seed=args.seed,
        adapters_dir=args.adapters, command=shlex.join(words), progress=not args.quiet, reuse=reuse,
    )  # fmt: skip
    path = table.write(out)
    print(
        f"{path}: {table.summary()}; {table.meta['calibration_s']:.0f} s on {table.meta['threads']} thread(s) "
        f"({path.stat().st_size / 1e3:.0f} kB)"
    )
    return 0


_COMMANDS = {
    "calibrate": _cmd_calibrate,
    "run": _cmd_run,
    "validate": _cmd_validate,
    "sweep": _cmd_sweep,
    "schema": _cmd_schema,
    "report": _cmd_report,
    "compare": _cmd_compare,
    "bench": _cmd_bench,
    "train": _cmd_train,
    "eval": _cmd_eval,
    "refine": _cmd_refine,
}

if __name__ == "__main__":
    sys.exit(main())
