"""PHY abstraction (link.fidelity: fast): calibration tables, sampling, common random numbers, bad tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ivsim.cli import main
from ivsim.config.loader import load_scenario
from ivsim.errors import IvsimError, ModelError
from ivsim.phy.abstraction import (
    METRICS,
    CalibratedLinkEvaluator,
    CalibratedRefiner,
    CalibrationTable,
    EstimatorState,
    calibrate,
    default_table_path,
    parse_refined,
    parse_snr_bins,
)
from ivsim.refine.service import RefineRequest, make_refiner
from ivsim.sim.engine import Simulation
from ivsim.sim.eventlog import Labels
from ivsim.sim.links import NEURAL_EXTRA_COLUMNS, TxBatch
from ivsim.world.maps import load_map

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "scenarios" / "nyc_brooklyn_bridge.yaml"
SHIPPED = default_table_path("nyc_brooklyn_bridge")
TINY = ["link.image_size=[32, 64]", "link.estimator.kind=lmmse"]
"""A cheap link to calibrate in a test: 2 OFDM grids per frame, LMMSE estimators."""


@pytest.fixture(scope="module")
def nyc_map():
    return load_map(load_scenario(DEFAULT).map)


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real calibration of the tiny link: 3 scenes x 3 held estimators x 3 SNR bins x 2 speed bins x 8 frames."""
    import torch

    torch.set_num_threads(1)
    scenario = load_scenario(DEFAULT, overrides=TINY)
    table = calibrate(scenario, frames=8, snr_db=(0.0, 10.0, 20.0), speed_edges=(0.0, 15.0, 30.0), refined=[])
    return table.write(tmp_path_factory.mktemp("calibration") / "tiny.parquet")


def synthetic(frames: int = 16, n_images: int = 8) -> CalibrationTable:
    """A table whose values encode their cell: psnr = 100 state + 10 scene + snr bin + sample / 100."""
    states = [EstimatorState(EstimatorState.base_key(s), s, s, estimator="lmmse", estimator_scene=s) for s in "ab"]
    states.append(
        EstimatorState(EstimatorState.refined_key("a", "b", 64, 10, 4, 0), "b", "a", refined=True, samples=64,
                       steps=10, rank=4, adapter_id="full0001", adapter_bytes=1234, request_seed=7,
                       estimator="diffusion", estimator_scene="b")
    )  # fmt: skip
    snr = [0.0, 10.0, 20.0]
    edges = [0.0, 10.0, 30.0]
    shape = (len(states), 2, len(snr), len(edges) - 1, frames, len(METRICS))
    e, c, s, v, k = np.meshgrid(*(np.arange(n) for n in shape[:-1]), indexing="ij")
    values = np.zeros(shape, dtype=np.float32)
    values[..., 0] = 100 * e + 10 * c + s + k / 100 + 0 * v
    values[..., 1] = k % n_images  # ssim column: the sample's image
    values[..., 3] = v  # pilot residual column: the speed bin
    meta = {"states": [s.__dict__ for s in states], "scene_order": ["a", "b"], "snr_db": snr, "speed_edges": edges,
            "frames": frames, "n_images": n_images}  # fmt: skip
    return CalibrationTable(meta, values)


def tx_batch(
    n: int, *, scene: int = 0, held: int = 0, sinr_db: float | np.ndarray = 10.0, adapter: str = ""
) -> TxBatch:
    return TxBatch(
        vehicle=np.arange(n) % 5, bs=np.zeros(n, dtype=int), scene=np.full(n, scene), uplink=np.zeros(n, dtype=bool),
        size_bits=np.full(n, 49152), bandwidth_hz=np.full(n, 20e6) / np.arange(1, n + 1), queue_s=np.zeros(n),
        sinr_db=np.broadcast_to(np.asarray(sinr_db, dtype=float), (n,)).copy(), snr_db=np.full(n, 10.0),
        speed_mps=np.linspace(2, 25, n), carrier_hz=np.full(n, 3.5e9), deadline_s=np.full(n, 0.01285),
        frame=np.arange(n) // 5, estimator_scene=np.full(n, held), adapter_id=np.full(n, adapter, dtype=object),
        estimator_version=np.zeros(n, dtype=np.int32),
    )  # fmt: skip


# ---------------------------------------------------------------------- parsing


def test_parse_snr_bins_and_refined_pairs() -> None:
    assert parse_snr_bins("-6:20:2,24:40:4,50:70:10")[:3] == (-6.0, -4.0, -2.0)
    assert len(parse_snr_bins("-6:20:2,24:40:4,50:70:10")) == 22
    assert parse_snr_bins("10,0,10") == (0.0, 10.0)
    for bad in ("a", "5:0:1", "0:10", ""):
        with pytest.raises(ValueError, match="SNR|range|number"):
            parse_snr_bins(bad)
    scenes = ("street_canyon", "river_bridge")
    assert parse_refined("street_canyon:river_bridge", scenes) == [("street_canyon", "river_bridge")]
    assert parse_refined("none", scenes) == []
    with pytest.raises(ValueError, match="unknown scene 'x'"):
        parse_refined("street_canyon:x", scenes)


# ---------------------------------------------------------------------- sampling


def test_sampling_reproduces_cell_means() -> None:
    table = synthetic(frames=16)
    rng = np.random.default_rng(0)
    n = 8000
    image = np.arange(n) % 8
    for state, scene, s, speed in ((0, 0, 0, 5.0), (2, 1, 1, 20.0), (1, 0, 2, 99.0)):
        out = table.sample(np.full(n, state), np.full(n, scene), np.full(n, table.snr_db[s]), np.full(n, speed),
                           image, rng.random((n, 2)))  # fmt: skip
        cell = table.values[state, scene, s, table.speed_bin(np.array([speed]))[0]]
        np.testing.assert_allclose(out[:, 0].mean(), cell[:, 0].mean(), atol=0.01)
        assert (out[:, 1] == image).all()  # every draw shows the frame's own image
    # between two bins: the upper one with probability = the fractional position (linear interpolation)
    out = table.sample(np.zeros(n, int), np.zeros(n, int), np.full(n, 2.5), np.full(n, 5.0), image, rng.random((n, 2)))
    assert np.floor(out[:, 0]).min() == 0 and np.floor(out[:, 0]).max() == 1
    np.testing.assert_allclose((np.floor(out[:, 0]) == 1).mean(), 0.25, atol=0.02)
    # beyond the ends: the end bins; speed bins by the edges
    out = table.sample(np.zeros(3, int), np.zeros(3, int), np.array([-50.0, 20.0, 90.0]), np.array([0.0, 10.0, 80.0]),
                       np.zeros(3, int), rng.random((3, 2)))  # fmt: skip
    assert np.floor(out[:, 0]).tolist() == [0, 2, 2] and out[:, 3].tolist() == [0, 1, 1]


def test_fewer_frames_than_images_pick_from_the_whole_cell() -> None:
    table = synthetic(frames=4, n_images=8)
    n = 4000
    out = table.sample(np.zeros(n, int), np.zeros(n, int), np.zeros(n), np.zeros(n), np.full(n, 7),
                       np.random.default_rng(1).random((n, 2)))  # fmt: skip
    assert set(np.round((out[:, 0] % 1) * 100).astype(int)) == {0, 1, 2, 3}


def test_real_table_roundtrip_and_cell_means(tiny_table: Path) -> None:
    table = CalibrationTable.read(tiny_table)
    meta = table.meta
    assert meta["codec"]["kind"] == "ctcd" and meta["symbols"] == 1024 and meta["n_images"] == 8
    assert meta["calibration_s"] > 0 and meta["command"] and len(meta["scenes"]) == 3
    assert [s.key for s in table.states] == ["base/street_canyon", "base/river_bridge", "base/brooklyn_urban"]
    assert not np.isnan(table.values[..., 0]).any()
    df = table.to_frame()
    assert list(df.columns[:8]) == ["state", "channel_scene", "snr_bin", "snr_db", "speed_bin", "sample", "image",
                                    "speed_mps"]  # fmt: skip
    assert df.psnr_db.between(5, 60).all() and df.ssim.between(0, 1).all()
    # quality rises with SNR; a frame's own image is drawn from its cell
    by_snr = df.groupby("snr_db").psnr_db.mean()
    assert by_snr.is_monotonic_increasing
    n = 800
    ev_state = table.base_state("street_canyon")
    out = table.sample(np.full(n, ev_state), np.zeros(n, int), np.full(n, 10.0), np.full(n, 5.0), np.arange(n) % 8,
                       np.random.default_rng(0).random((n, 2)))  # fmt: skip
    cell = table.cell("base/street_canyon", "street_canyon", 10.0, 0)
    np.testing.assert_allclose(out[:, 0].mean(), cell.psnr_db.mean(), rtol=1e-5)


# ---------------------------------------------------------------------- the fast link


def test_same_seed_and_batch_same_draws(tiny_table: Path) -> None:
    scenario = load_scenario(DEFAULT, overrides=[*TINY, "link.fidelity=fast", f"link.calibration={tiny_table}"])
    a = CalibratedLinkEvaluator(scenario, seed=3)
    b = CalibratedLinkEvaluator(scenario, seed=3)
    batch = tx_batch(20, scene=1, sinr_db=np.linspace(-2, 25, 20))
    ra, rb = a.evaluate(batch), b.evaluate(batch)
    for name in ("psnr_db", "ssim", "nmse_db"):
        np.testing.assert_array_equal(getattr(ra, name), getattr(rb, name))
    np.testing.assert_array_equal(ra.extra["pilot_resid_db"], rb.extra["pilot_resid_db"])
    # the same frames in another order: the same outcome per frame
    perm = np.random.default_rng(0).permutation(20)
    rp = a.evaluate(batch.take(perm))
    np.testing.assert_array_equal(rp.psnr_db, ra.psnr_db[perm])
    # another run seed, other draws; the held estimator changes the state, not the draws' positions
    rc = CalibratedLinkEvaluator(scenario, seed=4).evaluate(batch)
    assert not np.array_equal(rc.psnr_db, ra.psnr_db)
    held = tx_batch(20, scene=1, held=2, sinr_db=np.linspace(-2, 25, 20))
    rh = a.evaluate(held)
    assert (rh.extra["estimator_scene"].to_numpy() == "brooklyn_urban").all() and not np.array_equal(rh.psnr_db, ra.psnr_db)


def test_frames_grouped_by_adapter_codes_as_by_adapter_ids(tiny_table: Path) -> None:
    scenario = load_scenario(DEFAULT, overrides=[*TINY, "link.fidelity=fast", f"link.calibration={tiny_table}"])
    ev = CalibratedLinkEvaluator(scenario, seed=3)
    ev.register_adapter("ad1", ev.table.base_state("brooklyn_urban"))
    ev.register_adapter("ad2", ev.table.base_state("river_bridge"))
    labels = ["", "ad1", "ad2", "unused"]
    code = np.array([0, 1, 2, 1, 0, 2, -1, 1] * 3)
    by_id = tx_batch(len(code), scene=1, sinr_db=np.linspace(0, 25, len(code)))
    by_id.adapter_id = np.array([labels[c] if c >= 0 else None for c in code], dtype=object)
    by_code = by_id.take(slice(None))
    by_code.adapter_code = Labels(code, labels)
    by_code.adapter_id = None  # the codes alone decide
    plain = ev.evaluate(tx_batch(len(code), scene=1, sinr_db=np.linspace(0, 25, len(code))))
    a, b = ev.evaluate(by_id), ev.evaluate(by_code)
    np.testing.assert_array_equal(a.psnr_db, b.psnr_db)
    np.testing.assert_array_equal(a.extra["estimator"].codes, b.extra["estimator"].codes)
    refined = code > 0
    assert not np.array_equal(a.psnr_db[refined], plain.psnr_db[refined])  # the adapters' states were used
    np.testing.assert_array_equal(a.psnr_db[~refined], plain.psnr_db[~refined])
    both = TxBatch.concat([by_code, by_code.take(slice(0, 5))])
    assert both.adapter_code is not None and both.adapter_code.codes.tolist() == [*code.tolist(), *code[:5].tolist()]


def test_fast_matches_full_columns_and_timing(tiny_table: Path) -> None:
    """Same batch through the full link and the fast one: same extra columns, identical airtime, delay and drops."""
    from ivsim.ai.neural_link import NeuralLinkEvaluator

    over = [*TINY, f"link.calibration={tiny_table}"]
    full = NeuralLinkEvaluator(load_scenario(DEFAULT, overrides=[*over, "link.fidelity=full"]), seed=0)
    fast = CalibratedLinkEvaluator(load_scenario(DEFAULT, overrides=[*over, "link.fidelity=fast"]), seed=0)
    batch = tx_batch(6, scene=1, sinr_db=np.array([-8.0, 0.0, 5.0, 10.0, 15.0, 30.0]))
    rf, rs = full.evaluate(batch), fast.evaluate(batch)
    assert list(rf.extra) == list(rs.extra) == list(NEURAL_EXTRA_COLUMNS)
    for name in ("rate_bps", "airtime_s", "delay_s"):
        np.testing.assert_array_equal(getattr(rf, name), getattr(rs, name))
    np.testing.assert_array_equal(rf.delivered, rs.delivered)
    assert rf.drop_reason.tolist() == rs.drop_reason.tolist() and rs.drop_reason[0] == "outage"
    assert "deadline" in rs.drop_reason.tolist()  # the narrow shares of the last frames are late
    for name in ("codec", "estimator", "estimator_scene", "symbols"):  # string columns may be Labels
        a, b = (v.to_numpy() if isinstance(v, Labels) else v for v in (rf.extra[name], rs.extra[name]))
        assert a.tolist() == b.tolist(), name
    np.testing.assert_array_equal(rf.extra["compute_s"], rs.extra["compute_s"])
    sent = ~np.isnan(rf.psnr_db)
    assert (sent == ~np.isnan(rs.psnr_db)).all() and (sent == ~np.isnan(rs.extra["pilot_resid_db"])).all()
    assert fast.frame_bits == full.frame_bits


def test_fast_run_logs_the_full_runs_columns(tiny_table: Path, nyc_map) -> None:
    over = [*TINY, f"link.calibration={tiny_table}", "duration_s=24", "traffic.fps=1",
            "refinement.policy={kind: never}"]  # fmt: skip
    logs = {}
    for fidelity in ("full", "fast"):
        sim = Simulation(load_scenario(DEFAULT, overrides=[*over, f"link.fidelity={fidelity}"]), roadmap=nyc_map)
        assert sim.run().status == "complete"
        df = sim.log.to_pandas()
        logs[fidelity] = df[df.event == "tx"].reset_index(drop=True)
    full, fast = logs["full"], logs["fast"]
    assert len(full) == len(fast) > 10
    assert set(full.columns[full.notna().any()]) == set(fast.columns[fast.notna().any()])
    same = ["sinr_db", "airtime_s", "delay_s", "compute_s", "delivered", "drop_reason", "codec", "estimator",
            "estimator_scene", "symbols", "mismatched"]  # fmt: skip
    assert full[same].astype(str).equals(fast[same].astype(str))
    assert sim.links.evaluator.name == "fast"


def test_policy_runs_share_the_draws_of_the_same_estimator_state(nyc_map) -> None:
    """never vs proactive on the shipped table: identical frames until the refined estimator is used, then not."""
    assert SHIPPED.is_file(), "the default scenario's calibration table is shipped in models/abstraction/"
    tx = {}
    for policy in ("never", "proactive"):
        over = ["link.fidelity=fast", "duration_s=170", f"refinement.policy={{kind: {policy}}}"]
        sim = Simulation(load_scenario(DEFAULT, overrides=over), roadmap=nyc_map)
        assert sim.run().status == "complete"
        df = sim.log.to_pandas()
        tx[policy] = df[df.event == "tx"].reset_index(drop=True)
        if policy == "proactive":
            deploys = df[df.event == "deploy"]
            assert deploys.adapter_id.tolist()[:1] == ["c885c04623a2"]  # the full run's adapter id (same seed)
    a, b = tx["never"], tx["proactive"]
    assert len(a) == len(b) and (a.frame.to_numpy() == b.frame.to_numpy()).all()
    state_a = a.estimator_scene.astype(str) + "/" + a.adapter_id.astype(str)
    state_b = b.estimator_scene.astype(str) + "/" + b.adapter_id.astype(str)
    same = (state_a == state_b).to_numpy()
    assert same.sum() > 20 and (~same).sum() >= 3  # the car reaches the bridge refined in one run only
    cols = ["psnr_db", "ssim", "nmse_db", "pilot_resid_db"]
    np.testing.assert_array_equal(a.loc[same, cols].to_numpy(float), b.loc[same, cols].to_numpy(float))
    assert not np.array_equal(a.loc[~same, "nmse_db"].to_numpy(float), b.loc[~same, "nmse_db"].to_numpy(float))
    assert (b.loc[~same, "estimator_scene"] == "river_bridge").all()


def test_the_fleet_scenarios_shipped_table_fits_it_and_serves_its_refinements(nyc_map) -> None:
    """nyc_fleet with link.fidelity fast: the shipped table is found, fits, and street_canyon's jobs deploy its states."""
    fleet = REPO / "scenarios" / "nyc_fleet.yaml"
    over = ["link.fidelity=fast", "duration_s=120", "fleets.0.count=40", "link.latency_profile=gpu_rtx4090_reported"]
    sim = Simulation(load_scenario(fleet, overrides=over), roadmap=nyc_map)
    assert sim.links.evaluator.table.path == default_table_path("nyc_fleet")
    assert sim.run().status == "complete"
    df = sim.log.to_pandas()
    tx = df[df.event == "tx"]
    assert tx.psnr_db.notna().mean() > 0.9 and set(tx.scene.dropna()) <= set(sim.scene_names)
    states = {st.adapter_id for st in sim.links.evaluator.table.states if st.adapter_id}
    deployed = set(df[df.event == "deploy"].adapter_id.dropna())
    assert deployed and deployed <= states


def test_refiner_states_exact_nearest_and_missing() -> None:
    class Timing:
        def adapter_bytes(self, rank: int) -> int:
            return 1000 * rank

    class Evaluator:
        def __init__(self) -> None:
            self.table = synthetic()
            self.registered: dict[str, int] = {}

        def register_adapter(self, aid: str, state: int) -> None:
            self.registered[aid] = state

    scenario = load_scenario(DEFAULT)
    ev = Evaluator()
    refiner = CalibratedRefiner(scenario, evaluator=ev, timing=Timing())

    def request(base: str = "a", target: str = "b", samples: int = 64, steps: int = 10, seed: int = 7) -> RefineRequest:
        return RefineRequest("j", "v", base, target, samples, steps, 4, 0, 10.0, 100.0, seed)

    work = refiner.refine(request())
    assert (work.adapter_id, work.adapter_bytes) == ("full0001", 1234) and ev.registered["full0001"] == 2
    other = refiner.refine(request(samples=256, steps=25))  # nearest calibrated state, analytic id and size
    assert other.adapter_id != "full0001" and other.adapter_bytes == 4000 and ev.registered[other.adapter_id] == 2
    assert refiner.adapter_id(request(seed=8)) != "full0001"
    with pytest.raises(ModelError, match="no refined state b -> a"):
        refiner.refine(request(base="b", target="a"))


def test_make_refiner_gives_fast_runs_the_calibrated_refiner(tiny_table: Path) -> None:
    from ivsim.refine.budget import load_refine_timing

    scenario = load_scenario(DEFAULT, overrides=[*TINY, "link.fidelity=fast", f"link.calibration={tiny_table}"])
    ev = CalibratedLinkEvaluator(scenario, seed=0)
    timing = load_refine_timing(scenario.refinement, required=True)
    with pytest.raises(ModelError, match="no refined estimator states.*proactive"):  # tiny table: LMMSE, no refined
        make_refiner(scenario, evaluator=ev, timing=timing, seed=0)
    never = load_scenario(DEFAULT, overrides=[*TINY, "link.fidelity=fast", "refinement.policy={kind: never}"])
    assert make_refiner(never, evaluator=ev, timing=timing, seed=0).name == "fast"


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("link.codec.kind=deepjscc", "codec 'deepjscc' (table: 'ctcd')"),
        ("link.grid.fft_size=48", "link.grid.fft_size 48 (table: 72)"),
        ("link.image_size=[64, 64]", "link.image_size [64, 64] (table: [32, 64])"),
        ("link.estimator.kind=ls", "link.estimator.kind 'ls' (table: 'lmmse')"),
        ("profiles.rma_los.los=false", "scene 'river_bridge' profile hash"),
    ],
)
def test_table_for_another_link_is_refused_in_one_line(
    tiny_table: Path, override: str, words: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["run", str(DEFAULT), "-o", str(tmp_path / "run"), "-q", "--set", "link.fidelity=fast",
            "--set", f"link.calibration={tiny_table}", *(x for o in TINY for x in ("--set", o)), "--set", override]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "calibration table does not fit the scenario" in err and words in err, err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_missing_or_foreign_table_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.parquet"
    import pandas as pd

    pd.DataFrame({"x": [1]}).to_parquet(other)
    for table, words in ((tmp_path / "none.parquet", "no calibration table"), (other, "not an ivsim calibration")):
        argv = ["run", str(DEFAULT), "-o", str(tmp_path / "r"), "-q", "--set", "link.fidelity=fast",
                "--set", f"link.calibration={table}"]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    with pytest.raises(ModelError, match="no calibration table for scenario 'renamed'"):
        CalibratedLinkEvaluator(load_scenario(DEFAULT, overrides=["name=renamed", "link.fidelity=fast"]), seed=0)


def test_calibrate_reuses_unchanged_states_of_an_earlier_table(tiny_table: Path) -> None:
    import copy

    import torch

    torch.set_num_threads(1)
    old = CalibrationTable.read(tiny_table)
    # an earlier table that lacks the brooklyn_urban base state (renamed): that state is run, the two others copied
    meta = copy.deepcopy(old.meta)
    meta["states"][2]["key"] = "base/somewhere_else"
    partial = CalibrationTable(meta, old.values.copy(), speeds=old.speeds, path=tiny_table)
    partial.values[2] = np.nan
    scenario = load_scenario(DEFAULT, overrides=TINY)
    grid = {"frames": 8, "snr_db": (0.0, 10.0, 20.0), "speed_edges": (0.0, 15.0, 30.0), "refined": []}
    again = calibrate(scenario, **grid, reuse=partial)
    assert list(again.meta["copied_states"]) == ["base/street_canyon", "base/river_bridge"]
    outcome = [METRICS.index(m) for m in METRICS if m != "compute_s"]  # compute_s: wall time, measured anew
    np.testing.assert_array_equal(again.values[:2], old.values[:2])  # copied, wall time too
    # the state run again gives what the full calibration gave: its draws do not depend on the other states
    np.testing.assert_array_equal(again.values[2][..., outcome], old.values[2][..., outcome])
    with pytest.raises(IvsimError, match="cannot reuse this calibration table: its seed differ"):
        calibrate(scenario, **grid, seed=99, reuse=old)


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--snr", "abc"], "--snr 'abc'"),
        (["--refined", "street_canyon:nowhere"], "unknown scene 'nowhere'"),
        (["--speed-edges", "0,x"], "--speed-edges"),
        (["--frames", "0"], "--frames must be >= 1"),
    ],
)
def test_calibrate_bad_flags_one_line(flags: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", str(DEFAULT), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err


def test_the_abstraction_module_imports_no_torch() -> None:
    """The run-time side is numpy/pandas only (``ivsim/phy/__init__`` itself imports torch: load the file alone)."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('abstraction_alone', {str(REPO / 'ivsim/phy/abstraction.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['abstraction_alone'] = m; spec.loader.exec_module(m)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_fast_run_never_imports_torch_or_sionna() -> None:
    """The fast link samples tables: a fast run starts in about a second, without the seconds (and hundreds of MB)
    that importing torch and Sionna costs."""
    code = (
        "import sys\n"
        "from ivsim.config.loader import load_scenario\n"
        "from ivsim.sim.engine import Simulation\n"
        f"sc = load_scenario({str(DEFAULT)!r}, overrides=['link.fidelity=fast', 'duration_s=20'])\n"
        "summary = Simulation(sc).run()\n"
        "assert summary.frames > 0, summary\n"
        "print(sorted(m for m in ('torch', 'sionna', 'diffusers', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
