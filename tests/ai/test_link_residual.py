"""The receiver-side pilot residual of the link chain (``pilot_resid_db``), the statistic of a scene-change detector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ivsim.ai.codecs import make_codec
from ivsim.ai.estimators import CovarianceCache, LMMSEChannelEstimator, LSChannelEstimator
from ivsim.ai.images import DEFAULT_IMAGES, ImageFolder
from ivsim.ai.link import PERFECT, PILOT_RESID_FLOOR_DB, ChannelBank, LinkChain
from ivsim.ai.neural_link import NeuralLinkEvaluator
from ivsim.config import load_scenario
from ivsim.sim.links import TxBatch

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "scenarios" / "nyc_brooklyn_bridge.yaml"
SMALL = ["link.image_size=[32, 64]"]
N = 16  # frames per chain call (the 8 test images twice)


@pytest.fixture(scope="module")
def setup() -> dict:
    """A small chain, 16 frames, and 16 street-canyon (UMa NLOS, ~290 ns delay spread) channels."""
    sc = load_scenario(DEFAULT)
    chain = LinkChain(make_codec("ctcd", image_size=(32, 64)), image_size=(32, 64))
    imgs = ImageFolder(DEFAULT_IMAGES, split="test", size=(32, 64)).frames().repeat(2, 1, 1, 1)[:N]
    h = ChannelBank(chain.grid).draw([sc.profiles["uma_nlos"]] * N, np.full(N, 3.5e9), np.full(N, 10.0),
                                     realizations=1, generator=torch.Generator().manual_seed(5))  # fmt: skip
    cache = CovarianceCache(n=512)
    lmmse = {}
    for scene in ("street_canyon", "river_bridge"):
        profile, speeds = sc.profiles[sc.scenes[scene].profile], tuple(sc.scenes[scene].speed_mps)
        lmmse[scene] = LMMSEChannelEstimator(
            chain.grid, profile=profile, scene=scene, speed_range_mps=speeds, cache=cache
        )
    return {"chain": chain, "imgs": imgs, "h": h, "lmmse": lmmse}


def _resid(setup: dict, est: object, snr_db: float) -> np.ndarray:
    """Residual of every frame; the same channels and noise for every estimator (paired comparison)."""
    out = setup["chain"].transmit(
        setup["imgs"], setup["h"], torch.full((N,), snr_db), [(est, torch.arange(N))],
        generator=torch.Generator().manual_seed(9),
    )  # fmt: skip
    assert out.pilot_resid_db.dtype == np.float64 and out.pilot_resid_db.shape == (N,)
    return out.pilot_resid_db


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_perfect_csi_leaves_the_noise(setup: dict, snr_db: float) -> None:
    """With the true channel the residual is the noise: |n|^2 / N0 averages to 1 (0 dB) over 144 pilots x 16 frames."""
    r = _resid(setup, PERFECT, snr_db)
    assert np.isfinite(r).all()
    assert abs(10 * np.log10(np.mean(10 ** (r / 10)))) < 0.3


def test_least_squares_fits_the_pilots_exactly(setup: dict) -> None:
    """LS interpolates between its pilot estimates: zero residual, reported as the floor."""
    for snr_db in (0.0, 20.0, 40.0):
        r = _resid(setup, LSChannelEstimator(setup["chain"].grid), snr_db)
        assert (r == PILOT_RESID_FLOOR_DB).all()


@pytest.mark.parametrize("snr_db", [10.0, 20.0])
def test_matched_lmmse_below_a_too_narrow_prior(setup: dict, snr_db: float) -> None:
    """On ~290 ns street-canyon channels, the street canyon's LMMSE leaves less than the river bridge's (~30 ns)."""
    matched = _resid(setup, setup["lmmse"]["street_canyon"], snr_db)
    mismatched = _resid(setup, setup["lmmse"]["river_bridge"], snr_db)
    assert np.isfinite(matched).all() and np.isfinite(mismatched).all()
    assert -3.0 < matched.mean() < 0.0  # fits part of the noise
    assert matched.mean() < mismatched.mean() - 0.5


# ---------------------------------------------------------------------- in the evaluator


def _batch(n: int, *, scene: int, held: int, sinr_db: float) -> TxBatch:
    return TxBatch(
        vehicle=np.arange(n), bs=np.zeros(n, dtype=int), scene=np.full(n, scene), uplink=np.zeros(n, dtype=bool),
        size_bits=np.full(n, 49152), bandwidth_hz=np.full(n, 20e6), queue_s=np.zeros(n),
        sinr_db=np.full(n, sinr_db), snr_db=np.full(n, sinr_db), speed_mps=np.full(n, 10.0),
        carrier_hz=np.full(n, 3.5e9), deadline_s=np.full(n, 0.1), frame=np.arange(n), estimator_scene=np.full(n, held),
    )  # fmt: skip


def test_evaluator_reports_the_residual_nan_in_outage() -> None:
    ev = NeuralLinkEvaluator(load_scenario(DEFAULT, overrides=[*SMALL, "link.estimator.kind=lmmse"]), seed=0)
    b = _batch(4, scene=0, held=0, sinr_db=10.0)
    b.sinr_db[1] = -20.0  # below link.min_sinr_db: not sent
    r = ev.evaluate(b).extra["pilot_resid_db"]
    assert r.dtype == np.float64 and r.shape == (4,)
    assert np.isnan(r[1]) and np.isfinite(r[[0, 2, 3]]).all()
    assert (np.abs(r[[0, 2, 3]]) < 3).all()


def test_shipped_diffusion_matched_below_mismatched() -> None:
    """The default scenario's diffusion estimators on street-canyon channels at 20 dB: the bridge's leaves more.

    Same channels and noise for both (common random numbers); measured with 64 frames: 0.4 vs 3.4 dB.
    """
    ev = NeuralLinkEvaluator(load_scenario(DEFAULT, overrides=SMALL), seed=0)
    matched = ev.evaluate(_batch(8, scene=0, held=0, sinr_db=20.0))
    mismatched = ev.evaluate(_batch(8, scene=0, held=1, sinr_db=20.0))
    assert list(matched.extra["estimator"]) == ["diffusion"] * 8
    m, mm = matched.extra["pilot_resid_db"], mismatched.extra["pilot_resid_db"]
    assert np.isfinite(m).all() and np.isfinite(mm).all()
    assert m.mean() < mm.mean() - 1.0


def test_tx_rows_carry_the_residual() -> None:
    from ivsim.sim.engine import Simulation
    from ivsim.world.maps import load_map

    sc = load_scenario(DEFAULT, overrides=["duration_s=10", "traffic.fps=1", *SMALL, "link.estimator.kind=ls"])
    sim = Simulation(sc, roadmap=load_map(sc.map))
    assert sim.run().status == "complete"
    df = sim.log.to_pandas()
    tx = df[df.event == "tx"]
    outage = tx.drop_reason == "outage"
    assert len(tx) and tx.pilot_resid_db[outage].isna().all()
    assert (tx.pilot_resid_db[~outage] == PILOT_RESID_FLOOR_DB).all()
