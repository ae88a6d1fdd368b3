"""Channel estimators: ls, lmmse, diffusion; registry, weights, training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ivsim.ai import zoo
from ivsim.ai.estimator_train import received_qpsk, train_estimator
from ivsim.ai.estimators import (
    ESTIMATORS,
    ChannelEstimator,
    CovarianceCache,
    DiffusionChannelEstimator,
    DiffusionConfig,
    LMMSEChannelEstimator,
    LSChannelEstimator,
    estimator_weights_path,
    make_estimator,
)
from ivsim.config.schema import SystemLevelProfile
from ivsim.errors import ModelError
from ivsim.phy import ChannelSampler, GridSpec, OfdmMapper, nmse_db

UMA_NLOS = SystemLevelProfile(model="uma", los=False)
TINY = {"block_out_channels": (8, 16, 16), "norm_num_groups": 4}



@pytest.fixture(scope="module")
def grid() -> GridSpec:
    return GridSpec()


@pytest.fixture(scope="module")
def channels(grid: GridSpec) -> torch.Tensor:
    """64 UMa NLOS channels ``[64, 1, 14, 72]`` at 3-15 m/s."""
    s = ChannelSampler(UMA_NLOS, grid, carrier_hz=3.5e9)
    return s.sample(64, speed_mps=(3.0, 15.0), generator=torch.Generator().manual_seed(7))


def received(h: torch.Tensor, snr_db: float, grid: GridSpec, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    return received_qpsk(h, snr_db, OfdmMapper(grid), torch.Generator().manual_seed(seed))


def tiny(grid: GridSpec, **kw: object) -> DiffusionChannelEstimator:
    return DiffusionChannelEstimator(grid, weights=False, config=DiffusionConfig.for_grid(grid, **TINY), **kw)


def test_registry_kinds() -> None:
    assert set(ESTIMATORS) == {"ls", "lmmse", "diffusion"}
    with pytest.raises(ModelError, match="unknown estimator kind 'nope'"):
        make_estimator("nope")
    with pytest.raises(ModelError, match="cannot import"):
        make_estimator("no_such_module_xyz:Thing")


def test_shapes(grid: GridSpec, channels: torch.Tensor) -> None:
    y, no = received(channels[:8], 10.0, grid)
    for est in (LSChannelEstimator(grid), tiny(grid, num_inference_steps=2)):
        assert isinstance(est, ChannelEstimator)
        h_hat, err = est.estimate(y, no)
        assert h_hat.shape == y.shape and h_hat.dtype == torch.complex64
        assert err.shape == y.shape and err.dtype == torch.float32


def test_simo_shapes() -> None:
    g = GridSpec(num_rx_ant=2)
    h = ChannelSampler(UMA_NLOS, g, carrier_hz=3.5e9).sample(4, speed_mps=5.0, generator=torch.Generator())
    y, no = received(h, 5.0, g)
    h_hat, err = tiny(g, num_inference_steps=2).estimate(y, no)
    assert h_hat.shape == err.shape == (4, 2, 14, 72)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_ls_nmse_at_pilots_is_minus_snr(grid: GridSpec, channels: torch.Tensor, snr_db: float) -> None:
    y, no = received(channels, snr_db, grid)
    h_hat, _ = make_estimator("ls", grid=grid).estimate(y, no)
    got = float(nmse_db(h_hat, channels, mask=grid.pilot_mask()))
    assert abs(got + snr_db) < 0.5


def test_lmmse_no_worse_than_ls(grid: GridSpec, channels: torch.Tensor) -> None:
    cache = CovarianceCache(n=512, seed=3)
    est = make_estimator("lmmse", grid=grid, profile=UMA_NLOS, scene="street_canyon", cache=cache)
    assert est.scene == "street_canyon" and len(cache) == 1
    LMMSEChannelEstimator(grid, profile=UMA_NLOS, cache=cache)
    assert len(cache) == 1  # cached per (profile hash, grid, ...)
    for snr in (0.0, 10.0):
        y, no = received(channels, snr, grid)
        ls = float(nmse_db(LSChannelEstimator(grid).estimate(y, no)[0], channels))
        lm = float(nmse_db(est.estimate(y, no)[0], channels))
        assert lm <= ls + 0.1


def test_diffusion_sampling_is_deterministic(grid: GridSpec, channels: torch.Tensor) -> None:
    est = tiny(grid, num_inference_steps=3)
    y, no = received(channels[:6], 5.0, grid)
    a, _ = est.estimate(y, no, generator=torch.Generator().manual_seed(11))
    b, _ = est.estimate(y, no, generator=torch.Generator().manual_seed(11))
    c, _ = est.estimate(y, no, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # the same seed gives the same initialisation; the global RNG is not touched
    state = torch.random.get_rng_state()
    other = tiny(grid, num_inference_steps=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(other.estimate(y, no, generator=torch.Generator().manual_seed(11))[0], a)


def test_ls_start_sampling(grid: GridSpec, channels: torch.Tensor) -> None:
    est = tiny(grid, num_inference_steps=10, start="ls", start_t=300)
    y, no = received(channels[:4], 10.0, grid)
    h_hat, _ = est.estimate(y, no, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(torch.view_as_real(h_hat)).all()


def test_tiny_model_trains_and_roundtrips(grid: GridSpec, tmp_path: Path) -> None:
    r = train_estimator(
        UMA_NLOS,
        "tiny",
        grid=grid,
        steps=24,
        batch_size=8,
        pool_size=64,
        pool_refresh_steps=10,
        pool_refresh_size=16,
        checkpoint_every=12,
        config=DiffusionConfig.for_grid(grid, **TINY),
        out_dir=tmp_path,
        progress=False,
        eval_n=4,
        log_every=4,
    )
    curve = r["loss_curve"]
    assert len(curve) == 6
    assert curve[-1] < 0.7 * curve[0]
    assert (tmp_path / "checkpoints" / "estimator_tiny.ckpt.safetensors").is_file()
    # resume continues from the checkpoint at step 24 (nothing left to do but save)
    r2 = train_estimator(
        UMA_NLOS,
        "tiny",
        grid=grid,
        steps=28,
        batch_size=8,
        pool_size=64,
        config=DiffusionConfig.for_grid(grid, **TINY),
        out_dir=tmp_path,
        progress=False,
        eval_n=4,
        log_every=4,
        resume=True,
    )
    assert r2["steps"] == 28 and len(r2["loss_curve"]) == 7
    est = make_estimator("diffusion", grid=grid, weights=r2["path"], num_inference_steps=2)
    assert est.scene == "tiny"
    meta = zoo.read_metadata(r2["path"])
    assert meta["ivsim.scene"] == "tiny" and len(meta["ivsim.profile_hash"]) == 12

    # weights for another grid, or with another architecture, are refused naming the file
    with pytest.raises(ModelError, match="estimator_tiny.safetensors.*14 x 72"):
        DiffusionChannelEstimator(GridSpec(fft_size=48), weights=r2["path"])
    with pytest.raises(ModelError, match="estimator_tiny.safetensors"):
        DiffusionChannelEstimator(GridSpec(num_rx_ant=2), weights=r2["path"])


def test_weight_problems(grid: GridSpec, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        DiffusionChannelEstimator(grid, weights=tmp_path / "missing.safetensors")
    bad = tmp_path / "estimator_x.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ModelError, match="estimator_x.safetensors"):
        DiffusionChannelEstimator(grid, weights=bad)
    # a file whose tensors do not fit the stored architecture
    est = tiny(grid)
    cfg = DiffusionConfig.for_grid(grid).to_json()  # claims the default (bigger) UNet
    wrong = zoo.save_weights(
        est.net.state_dict(), tmp_path / "estimator_w.safetensors", architecture="estimator/diffusion", config=cfg
    )
    with pytest.raises(ModelError, match="estimator_w.safetensors.*do not fit"):
        DiffusionChannelEstimator(grid, weights=wrong)
    with pytest.raises(ModelError, match="needs weights= or scene="):
        DiffusionChannelEstimator(grid)


class Plugin:
    """A researcher's own estimator: the true-channel-free 'all ones' guess."""

    def __init__(self, grid: GridSpec | None = None, *, scene: str | None = None, gain: float = 1.0) -> None:
        self.name = f"{__name__}:Plugin"
        self.scene = scene
        self.gain = gain

    def estimate(self, y: torch.Tensor, no: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full_like(y, self.gain), torch.ones(y.shape, dtype=torch.float32)


class NotAnEstimator:
    def __init__(self, **_: object) -> None:
        pass


def test_module_class_plugin(grid: GridSpec, channels: torch.Tensor) -> None:
    est = make_estimator(f"{__name__}:Plugin", grid=grid, scene="mine", gain=2.0)
    assert isinstance(est, Plugin) and est.scene == "mine"
    y, no = received(channels[:2], 10.0, grid)
    assert torch.equal(est.estimate(y, no)[0], torch.full_like(y, 2.0))
    with pytest.raises(ModelError, match="does not follow"):
        make_estimator(f"{__name__}:NotAnEstimator")
    assert make_estimator("ivsim.ai.estimators:LSChannelEstimator").name == "ls"


SHIPPED = estimator_weights_path("street_canyon")


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped street_canyon estimator")
def test_shipped_street_canyon_beats_ls(grid: GridSpec, channels: torch.Tensor) -> None:
    est = make_estimator("diffusion", grid=grid, scene="street_canyon", profile=UMA_NLOS)
    assert est.scene == "street_canyon"
    y, no = received(channels, 10.0, grid, seed=5)
    ls = float(nmse_db(LSChannelEstimator(grid).estimate(y, no)[0], channels))
    h_hat, err = est.estimate(y, no, generator=torch.Generator().manual_seed(0))
    dm = float(nmse_db(h_hat, channels))
    assert dm < ls - 2.0, (dm, ls)  # the bar is 3 dB on big test sets; 64 channels, so some slack
    assert 0 < float(err.mean()) < 1


def test_step_log_windows_checkpoints_and_time_budget() -> None:
    import time

    from ivsim.ai.estimator_train import StepLog

    saved: list[int] = []
    state = {"step": 0, "elapsed_s": 0.0, "losses": []}
    book = StepLog(state, lambda st: saved.append(st["step"]), steps=5, t0=time.perf_counter(), log_every=2,
                   checkpoint_every=2, time_budget_s=None)  # fmt: skip
    assert [book.after(k, float(k)) for k in range(1, 6)] == [False] * 5
    assert state["losses"] == [1.5, 3.5, 5.0] and saved == [2, 4, 5] and state["step"] == 5
    state = {"step": 0, "elapsed_s": 0.0, "losses": []}
    saved.clear()
    out = StepLog(state, lambda st: saved.append(st["step"]), steps=100, t0=time.perf_counter() - 10.0, log_every=50,
                  checkpoint_every=50, time_budget_s=1.0).after(3, 0.25)  # fmt: skip
    assert out and saved == [3] and state["losses"] == [0.25] and state["elapsed_s"] >= 10.0
