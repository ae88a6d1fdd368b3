"""The OFDM chain: grid, mapping, power normalisation, noise, estimators, equalizer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ivsim.phy import (
    ChannelSampler,
    FullGridLMMSEEstimator,
    GridSpec,
    LMMSEEstimator,
    LSEstimator,
    OfdmMapper,
    apply_channel,
    covariances,
    lmmse_equalize,
    nmse_db,
    noise_variance,
)

from .conftest import gen, qpsk, tdl


def tolerance(n: int) -> float:
    """The architecture's statistical tolerance, relative."""
    return max(0.15, 2 / math.sqrt(n))


# --------------------------------------------------------------------------- grid


def test_default_grid_sizes(grid: GridSpec) -> None:
    rg = grid.resource_grid()
    assert grid.num_data_symbols == 12 * 72 == rg.num_data_symbols
    assert grid.num_pilot_symbols == 2 * 72 == rg.num_pilot_symbols
    assert grid.num_resource_elements == 14 * 72
    assert grid.bandwidth_hz == pytest.approx(2.16e6)
    assert grid.ofdm_symbol_duration_s == pytest.approx((1 + 6 / 72) / 30e3)
    mask = grid.pilot_mask()
    assert mask.shape == (14, 72) and mask.sum() == 144 and mask[[2, 11]].all()


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"pilot_ofdm_symbol_indices": ()}, "at least one OFDM symbol"),
        ({"pilot_ofdm_symbol_indices": (2, 14)}, "distinct symbols"),
        ({"pilot_ofdm_symbol_indices": (3, 3)}, "distinct symbols"),
        ({"num_tx_ant": 2}, "num_tx_ant must be 1"),
        ({"num_rx_ant": 0}, "num_rx_ant"),
        ({"pilot_pattern": "block"}, "unknown pilot_pattern"),
    ],
)
def test_bad_grid_is_one_clear_error(kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        GridSpec(**kwargs)


def test_pilots_are_deterministic_unit_modulus_qpsk(grid: GridSpec) -> None:
    p = grid.pilots()
    assert p.dtype == torch.complex64 and p.shape == (144,)
    assert torch.equal(p, grid.pilots())
    torch.testing.assert_close(p.abs(), torch.ones(144))
    assert torch.equal(grid.resource_grid().pilot_pattern.pilots.reshape(-1), p)


def test_grid_spec_is_frozen_and_hashable(grid: GridSpec) -> None:
    assert GridSpec(pilot_ofdm_symbol_indices=[2, 11]) == grid  # lists become tuples
    assert hash(grid) == hash(GridSpec())
    with pytest.raises(AttributeError):
        grid.fft_size = 64  # type: ignore[misc]


# --------------------------------------------------------------------------- mapping and power


def test_map_places_data_and_pilots_and_demap_inverts(grid: GridSpec, mapper: OfdmMapper) -> None:
    x = torch.arange(2 * grid.num_data_symbols, dtype=torch.float32).reshape(2, -1).to(torch.complex64)
    tx = mapper.map(x)
    assert tx.shape == (2, 14, 72) and tx.dtype == torch.complex64
    assert torch.equal(mapper.demap(tx), x)
    assert torch.equal(mapper.pilot_values(tx), mapper.pilots.expand(2, -1))
    # row-major (symbol, subcarrier) order of the data REs
    assert torch.equal(tx[0, 0, :3], x[0, :3]) and torch.equal(tx[0, 3, 0], x[0, 2 * 72])


def test_mapped_grid_has_unit_average_energy(grid: GridSpec, mapper: OfdmMapper) -> None:
    x = qpsk(16, grid.num_data_symbols, gen(0))
    tx = mapper.map(x)
    data_energy = (mapper.demap(tx).abs() ** 2).mean().item()
    pilot_energy = (mapper.pilot_values(tx).abs() ** 2).mean().item()
    assert data_energy == pytest.approx(1.0, abs=1e-5)
    assert pilot_energy == pytest.approx(1.0, abs=1e-5)
    assert (tx.abs() ** 2).mean().item() == pytest.approx(1.0, abs=1e-5)


def test_map_rejects_wrong_length(mapper: OfdmMapper) -> None:
    with pytest.raises(ValueError, match="864"):
        mapper.map(torch.zeros(2, 10, dtype=torch.complex64))


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 20.0])
def test_noise_is_complex_with_total_variance_one_over_snr(snr_db: float) -> None:
    """The classic 3 dB bug: no = 10^(-snr/10) is the *total* complex variance, no/2 per component."""
    b, n_rx = 4, 2
    h = torch.zeros(b, n_rx, 14, 72, dtype=torch.complex64)
    x = torch.zeros(b, 14, 72, dtype=torch.complex64)
    y, no = apply_channel(x, h, snr_db, generator=gen(1))
    n = y.numel()
    expected = 10 ** (-snr_db / 10)
    assert no.shape == (b,) and no.dtype == torch.float32
    torch.testing.assert_close(no, torch.full((b,), expected, dtype=torch.float32))
    tol = tolerance(n)
    assert (y.abs() ** 2).mean().item() == pytest.approx(expected, rel=tol)
    assert y.real.var().item() == pytest.approx(expected / 2, rel=tol)
    assert y.imag.var().item() == pytest.approx(expected / 2, rel=tol)
    assert abs((y.real * y.imag).mean().item()) < 0.05 * expected  # circular


def test_noise_variance_per_batch_item_and_deterministic() -> None:
    snr = torch.tensor([0.0, 10.0, 20.0])
    h = torch.ones(3, 1, 14, 72, dtype=torch.complex64)
    x = torch.zeros(3, 14, 72, dtype=torch.complex64)
    y1, no = apply_channel(x, h, snr, generator=gen(2))
    y2, _ = apply_channel(x, h, snr, generator=gen(2))
    assert torch.equal(y1, y2)
    power = (y1.abs() ** 2).mean(dim=(1, 2, 3))
    tol = tolerance(14 * 72)
    for p, target in zip(power.tolist(), [1.0, 0.1, 0.01], strict=True):
        assert p == pytest.approx(target, rel=tol)
    torch.testing.assert_close(no, noise_variance(snr, 3))


def test_apply_channel_checks_shapes() -> None:
    with pytest.raises(ValueError, match="n_rx"):
        apply_channel(torch.zeros(2, 14, 72), torch.zeros(2, 14, 72), 10.0, generator=gen(0))
    with pytest.raises(ValueError, match="snr_db"):
        apply_channel(
            torch.zeros(2, 14, 72), torch.zeros(2, 1, 14, 72), torch.tensor([1.0, 2.0, 3.0]), generator=gen(0)
        )


# --------------------------------------------------------------------------- equalization


@pytest.fixture(scope="module")
def tdl_channels(grid: GridSpec) -> torch.Tensor:
    """16 TDL-C 300 ns channels, each normalised to unit energy (so NMSE has an exact reference)."""
    sampler = ChannelSampler(tdl("C"), grid, carrier_hz=3.5e9, normalize="realization")
    return sampler.sample(16, speed_mps=(3.0, 30.0), generator=gen(3))


def test_perfect_csi_at_high_snr_recovers_the_symbols(
    grid: GridSpec, mapper: OfdmMapper, tdl_channels: torch.Tensor
) -> None:
    g = gen(4)
    x = qpsk(tdl_channels.shape[0], grid.num_data_symbols, g)
    y, no = apply_channel(mapper.map(x), tdl_channels, 50.0, generator=g)
    x_hat, no_eff = lmmse_equalize(y, tdl_channels, 0.0, no)
    x_hat, no_eff = mapper.demap(x_hat), mapper.demap(no_eff)
    assert x_hat.shape == x.shape == no_eff.shape
    decided = torch.complex(torch.sign(x_hat.real), torch.sign(x_hat.imag)) / 2**0.5
    assert (decided != x).sum().item() <= 1e-3 * x.numel()
    assert nmse_db(x_hat, x).item() < -35.0


def test_equalizer_matches_sionna_lmmse_equalizer(grid: GridSpec, mapper: OfdmMapper) -> None:
    from sionna.phy.mimo import StreamManagement
    from sionna.phy.ofdm import LMMSEEqualizer

    g = gen(5)
    b, n_rx = 3, 2
    h = torch.complex(torch.randn(b, n_rx, 14, 72, generator=g), torch.randn(b, n_rx, 14, 72, generator=g)) / 2**0.5
    err_var = 0.1 * torch.rand(b, n_rx, 14, 72, generator=g)
    x = qpsk(b, grid.num_data_symbols, g)
    y, no = apply_channel(mapper.map(x), h, torch.tensor([0.0, 10.0, 20.0]), generator=g)
    ours, ours_no = lmmse_equalize(y, h, err_var, no)
    eq = LMMSEEqualizer(grid.resource_grid(), StreamManagement(np.ones([1, 1]), 1), precision="single", device="cpu")
    ref, ref_no = eq(y[:, None], h[:, None, :, None, None], err_var[:, None, :, None, None], no)
    torch.testing.assert_close(mapper.demap(ours), ref[:, 0, 0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mapper.demap(ours_no), ref_no[:, 0, 0], rtol=1e-4, atol=1e-4)


def test_biased_equalizer_shrinks_toward_zero(mapper: OfdmMapper, tdl_channels: torch.Tensor) -> None:
    y = tdl_channels.clone()  # x = 1 everywhere, no noise
    no = torch.full((y.shape[0],), 1.0)
    unbiased, _ = lmmse_equalize(y, tdl_channels, 0.0, no)
    biased, mse = lmmse_equalize(y, tdl_channels, 0.0, no, unbiased=False)
    torch.testing.assert_close(unbiased, torch.ones_like(unbiased))
    assert bool((biased.abs() < 1).all()) and bool((mse < 1).all())


# --------------------------------------------------------------------------- estimators


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_ls_nmse_at_pilots_is_minus_snr(
    snr_db: float, grid: GridSpec, mapper: OfdmMapper, tdl_channels: torch.Tensor
) -> None:
    g = gen(6)
    x = qpsk(tdl_channels.shape[0], grid.num_data_symbols, g)
    y, no = apply_channel(mapper.map(x), tdl_channels, snr_db, generator=g)
    h_hat, err_var = LSEstimator(grid)(y, no)
    assert h_hat.shape == tdl_channels.shape and err_var.shape == tdl_channels.shape
    at_pilots = nmse_db(h_hat, tdl_channels, mask=mapper.pilot_mask).item()
    assert at_pilots == pytest.approx(-snr_db, abs=0.5)
    torch.testing.assert_close(err_var[..., mapper.pilot_mask], no.view(-1, 1, 1).expand(-1, 1, 144))


def test_ls_linear_interpolation_is_exact_for_a_channel_linear_in_time(grid: GridSpec, mapper: OfdmMapper) -> None:
    t = torch.arange(14.0)
    h = (1 + 0.1 * t).view(1, 1, 14, 1).expand(1, 1, 14, 72).to(torch.complex64)
    y = h * mapper.map(torch.ones(1, grid.num_data_symbols, dtype=torch.complex64))[:, None]
    h_hat, _ = LSEstimator(grid)(y, torch.tensor([1e-6]))
    torch.testing.assert_close(h_hat, h)  # including the extrapolated symbols 0, 1, 12, 13


@pytest.fixture(scope="module")
def tdl_scene(grid: GridSpec) -> tuple[ChannelSampler, object]:
    sampler = ChannelSampler(tdl("C", 300e-9), grid, carrier_hz=3.5e9)
    cov = covariances(sampler, 512, speed_mps=(3.0, 30.0), generator=gen(7), batch_size=256)
    return sampler, cov


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_lmmse_no_worse_than_ls_on_a_tdl_scene(
    snr_db: float, grid: GridSpec, mapper: OfdmMapper, tdl_scene: tuple
) -> None:
    sampler, cov = tdl_scene
    g = gen(8)
    h = sampler.sample(12, speed_mps=(3.0, 30.0), generator=g)
    y, no = apply_channel(mapper.map(qpsk(12, grid.num_data_symbols, g)), h, snr_db, generator=g)
    ls = nmse_db(LSEstimator(grid)(y, no)[0], h).item()
    lmmse = nmse_db(LMMSEEstimator(grid, cov, operator_min_count=0)(y, no)[0], h).item()
    full = nmse_db(FullGridLMMSEEstimator(grid, cov)(y, no)[0], h).item()
    assert lmmse <= ls
    assert full <= ls
    if snr_db <= 10:
        assert lmmse <= ls - 3.0  # statistics are worth several dB at low and medium SNR


def test_lmmse_operator_cache_matches_direct_sionna_call() -> None:
    small = GridSpec(fft_size=12, num_rx_ant=2)
    sampler = ChannelSampler(tdl("A", 100e-9), small, carrier_hz=3.5e9)
    cov = covariances(sampler, 256, speed_mps=10.0, generator=gen(9))
    g = gen(10)
    h = sampler.sample(6, speed_mps=10.0, generator=g)
    x = OfdmMapper(small).map(qpsk(6, small.num_data_symbols, g))
    y, no = apply_channel(x, h, torch.tensor([5.0, 5.0, 5.0, 5.0, 15.0, 15.0]), generator=g)
    direct = LMMSEEstimator(small, cov, operator_min_count=0)
    cached = LMMSEEstimator(small, cov, operator_min_count=3, chunk_size=5)
    h_d, e_d = direct(y, no)
    h_c, e_c = cached(y, no)  # 5 dB through the operator, 15 dB directly
    assert list(cached._operators) == [pytest.approx(10**-0.5)]
    torch.testing.assert_close(h_c, h_d, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(e_c, e_d, rtol=1e-4, atol=1e-5)
    h_again, _ = cached(y[:1], no[:1])  # a cached level is used even for one item
    torch.testing.assert_close(h_again, h_d[:1], rtol=1e-4, atol=1e-5)


def test_full_grid_lmmse_is_the_closed_form() -> None:
    small = GridSpec(num_ofdm_symbols=4, fft_size=6, pilot_ofdm_symbol_indices=(1,))
    sampler = ChannelSampler(tdl("B", 200e-9), small, carrier_hz=3.5e9)
    cov = covariances(sampler, 256, speed_mps=(0.0, 30.0), generator=gen(11))
    g = gen(12)
    h = sampler.sample(3, speed_mps=5.0, generator=g)
    x = OfdmMapper(small).map(qpsk(3, small.num_data_symbols, g))
    y, no = apply_channel(x, h, torch.tensor([0.0, 10.0, 20.0]), generator=g)
    h_hat, err_var = FullGridLMMSEEstimator(small, cov)(y, no)

    r = cov.full.to(torch.complex128)
    r = 0.5 * (r + r.mH)
    pil = small.pilot_mask().reshape(-1)
    p = small.pilots().to(torch.complex128)
    for i in range(3):
        w = r[:, pil] @ torch.linalg.inv(r[pil][:, pil] + no[i].double() * torch.eye(int(pil.sum())))
        y_p = y[i, 0].reshape(-1)[pil].to(torch.complex128) / p
        ref = (w @ y_p).reshape(4, 6)
        torch.testing.assert_close(h_hat[i, 0].to(torch.complex128), ref, rtol=1e-3, atol=1e-4)
        ref_err = torch.diagonal(r - w @ r[pil, :]).real.reshape(4, 6)
        torch.testing.assert_close(err_var[i, 0].double(), ref_err.clamp_min(0), rtol=1e-3, atol=1e-4)


def test_full_grid_lmmse_rejects_a_covariance_of_another_grid(grid: GridSpec, tdl_scene: tuple) -> None:
    _, cov = tdl_scene
    with pytest.raises(ValueError, match="covariance.full"):
        FullGridLMMSEEstimator(GridSpec(fft_size=36), cov)


def test_estimators_check_the_grid_shape(grid: GridSpec) -> None:
    with pytest.raises(ValueError, match="n_rx"):
        LSEstimator(grid)(torch.zeros(2, 1, 14, 36, dtype=torch.complex64), torch.ones(2))


# --------------------------------------------------------------------------- metric


def test_nmse_db() -> None:
    h = torch.ones(2, 1, 14, 72, dtype=torch.complex64)
    assert nmse_db(torch.zeros_like(h), h).item() == pytest.approx(0.0)
    assert nmse_db(h * 1.1, h).item() == pytest.approx(-20.0, abs=1e-4)
    per = nmse_db(torch.stack([h[0] * 1.1, h[1] * 1.01]), h, per_example=True)
    torch.testing.assert_close(per, torch.tensor([-20.0, -40.0]), atol=1e-3, rtol=0)
    mask = torch.zeros(14, 72, dtype=torch.bool)
    mask[0] = True
    bad = h.clone()
    bad[..., 1:, :] = 0
    assert nmse_db(bad, h, mask=mask).item() < -100
