"""Channel sampling: shapes, power, determinism, delay spread, Doppler, covariances."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest
import torch

from ivsim.config.schema import LinkLevelProfile, PathLossRef, SystemLevelProfile
from ivsim.phy import ChannelSampler, GridSpec, covariances, paths_to_grid
from ivsim.phy._sionna import sionna_rng, sp

from .conftest import ALL_PROFILES, cdl, gen, tdl

CARRIER_HZ = 3.5e9


def tolerance(n: int) -> float:
    return max(0.15, 2 / math.sqrt(n))


@pytest.mark.parametrize("name", list(ALL_PROFILES))
@pytest.mark.parametrize("direction", ["downlink", "uplink"])
def test_every_profile_kind_samples_the_right_shape(name: str, direction: str) -> None:
    grid = GridSpec(num_rx_ant=2)
    sampler = ChannelSampler(ALL_PROFILES[name], grid, carrier_hz=CARRIER_HZ, direction=direction)
    h = sampler.sample(3, speed_mps=torch.tensor([0.0, 10.0, 30.0]), generator=gen(0))
    assert h.shape == (3, 2, 14, 72)
    assert h.dtype == torch.complex64
    assert bool(torch.isfinite(h.real).all() and torch.isfinite(h.imag).all())
    assert float((h.abs() ** 2).mean()) > 0


@pytest.mark.parametrize("name", list(ALL_PROFILES))
def test_average_energy_per_resource_element_is_one(name: str, grid: GridSpec) -> None:
    n = 512
    sampler = ChannelSampler(ALL_PROFILES[name], grid, carrier_hz=CARRIER_HZ)
    h = sampler.sample(n, speed_mps=(0.0, 30.0), generator=gen(1))
    energy = (h.abs() ** 2).mean().item()
    assert energy == pytest.approx(1.0, rel=tolerance(n))


def test_realization_normalisation_gives_every_realization_unit_energy(grid: GridSpec) -> None:
    for profile in (SystemLevelProfile(model="uma", los=False), tdl("A"), cdl("D")):
        sampler = ChannelSampler(profile, GridSpec(num_rx_ant=2), carrier_hz=CARRIER_HZ, normalize="realization")
        h = sampler.sample(8, speed_mps=10.0, generator=gen(2))
        torch.testing.assert_close((h.abs() ** 2).mean(dim=(1, 2, 3)), torch.ones(8), rtol=1e-4, atol=1e-4)


def test_process_normalisation_keeps_slot_fading(grid: GridSpec) -> None:
    """A 30 ns TDL-A is nearly flat over 2.16 MHz: its per-slot energy must fade (Rayleigh), not be 1."""
    sampler = ChannelSampler(tdl("A", 30e-9), grid, carrier_hz=CARRIER_HZ)
    per_slot = (sampler.sample(256, speed_mps=3.0, generator=gen(3)).abs() ** 2).mean(dim=(1, 2, 3))
    assert per_slot.std().item() > 0.5
    assert per_slot.min().item() < 0.1


@pytest.mark.parametrize("name", ["umi_nlos", "rma_los", "tdl_c", "cdl_a"])
def test_same_seed_same_channels_and_no_global_state_touched(name: str, grid: GridSpec) -> None:
    sampler = ChannelSampler(ALL_PROFILES[name], grid, carrier_hz=CARRIER_HZ)
    torch_state = torch.random.get_rng_state()
    sionna_state = sp.config.torch_rng("cpu").get_state()
    a = sampler.sample(4, speed_mps=(5.0, 20.0), generator=gen(7))
    b = sampler.sample(4, speed_mps=(5.0, 20.0), generator=gen(7))
    c = sampler.sample(4, speed_mps=(5.0, 20.0), generator=gen(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # a fresh sampler of the same profile gives the same channels too
    again = ChannelSampler(ALL_PROFILES[name], grid, carrier_hz=CARRIER_HZ)
    assert torch.equal(again.sample(4, speed_mps=(5.0, 20.0), generator=gen(7)), a)
    # the caller's generator advances: two draws from one generator differ
    g = gen(7)
    first = sampler.sample(4, speed_mps=(5.0, 20.0), generator=g)
    assert torch.equal(first, a)
    assert not torch.allclose(sampler.sample(4, speed_mps=(5.0, 20.0), generator=g), a)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert torch.equal(sp.config.torch_rng("cpu").get_state(), sionna_state)


def test_sampling_does_not_depend_on_the_global_seed(grid: GridSpec) -> None:
    sampler = ChannelSampler(tdl("B"), grid, carrier_hz=CARRIER_HZ)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        a = sampler.sample(2, speed_mps=3.0, generator=gen(5))
        torch.manual_seed(2)
        b = sampler.sample(2, speed_mps=3.0, generator=gen(5))
    assert torch.equal(a, b)


def test_sionna_rng_restores_state_after_an_error() -> None:
    before = sp.config.torch_rng("cpu").get_state()
    g = gen(0)
    with pytest.raises(RuntimeError, match="boom"), sionna_rng(g):
        torch.rand(3, generator=sp.config.torch_rng("cpu"))
        raise RuntimeError("boom")
    assert torch.equal(sp.config.torch_rng("cpu").get_state(), before)
    assert not torch.equal(g.get_state(), gen(0).get_state())  # the caller's generator advanced


def test_delay_spread_lowers_frequency_correlation(grid: GridSpec) -> None:
    """|R(12 subcarriers = 360 kHz)| of TDL-A: ~1.00 at 30 ns, ~0.69 at 1000 ns (Sionna's closed form)."""
    from sionna.phy.ofdm import tdl_freq_cov_mat

    corr = {}
    for ds in (30e-9, 1000e-9):
        sampler = ChannelSampler(tdl("A", ds), grid, carrier_hz=CARRIER_HZ)
        cov = covariances(sampler, 256, speed_mps=10.0, generator=gen(4))
        corr[ds] = cov.correlation(12, axis="freq")
        exact = abs(tdl_freq_cov_mat("A", 30e3, 72, ds, precision="single", device="cpu")[0, 12].item())
        assert corr[ds] == pytest.approx(exact, abs=0.1)
    assert corr[1000e-9] < corr[30e-9] - 0.2
    assert corr[30e-9] > 0.95


@pytest.mark.parametrize("name", ["umi_los", "uma_nlos", "tdl_d", "cdl_a"])
def test_speed_is_per_realization(name: str, grid: GridSpec) -> None:
    sampler = ChannelSampler(ALL_PROFILES[name], grid, carrier_hz=CARRIER_HZ)
    speeds = torch.tensor([0.0] * 8 + [150.0] * 8)
    h = sampler.sample(16, speed_mps=speeds, generator=gen(6))
    change = (h[:, :, -1] - h[:, :, 0]).abs().pow(2).mean(dim=(1, 2))
    assert change[:8].max().item() < 1e-8  # parked: the slot is static
    assert change[8:].mean().item() > 0.2  # 150 m/s (1.75 kHz Doppler): it is not


def test_tdl_matches_sionnas_analytic_covariances(grid: GridSpec) -> None:
    """Our empirical E[h h^H] (conjugation convention included) against Sionna's closed forms."""
    from sionna.phy.ofdm import tdl_freq_cov_mat, tdl_time_cov_mat

    speed = 60.0
    sampler = ChannelSampler(tdl("C", 300e-9), grid, carrier_hz=CARRIER_HZ)
    cov = covariances(sampler, 1024, speed_mps=speed, generator=gen(9))
    ref_f = tdl_freq_cov_mat("C", 30e3, 72, 300e-9, precision="single", device="cpu")
    ref_t = tdl_time_cov_mat("C", speed, CARRIER_HZ, grid.ofdm_symbol_duration_s, 14, precision="single", device="cpu")
    torch.testing.assert_close(cov.freq, ref_f, atol=0.08, rtol=0)
    torch.testing.assert_close(cov.time, ref_t, atol=0.08, rtol=0)


def test_covariances_shapes_and_hermitian() -> None:
    grid = GridSpec(fft_size=24, num_rx_ant=2)
    cov = covariances(
        ChannelSampler(cdl("B"), grid, carrier_hz=CARRIER_HZ), 96, speed_mps=(0.0, 20.0), generator=gen(10)
    )
    assert cov.freq.shape == (24, 24) and cov.time.shape == (14, 14) and cov.space.shape == (2, 2)
    assert cov.full.shape == (14 * 24, 14 * 24) and cov.num_samples == 96
    for r in (cov.freq, cov.time, cov.space, cov.full):
        assert r.dtype == torch.complex64
        torch.testing.assert_close(r, r.mH)
    assert cov.power == pytest.approx(torch.diagonal(cov.freq).real.mean().item(), rel=1e-4)
    assert cov.power == pytest.approx(torch.diagonal(cov.time).real.mean().item(), rel=1e-4)


def test_k_factor_sets_the_los_share() -> None:
    """A strong LOS (K = 20 dB) barely fades; a weak one (K = -10 dB) fades like Rayleigh."""
    grid = GridSpec(fft_size=12)
    for make in (tdl, cdl):
        spread = {}
        for k_db in (-10.0, 20.0):
            sampler = ChannelSampler(make("D", 30e-9, k_factor_db=k_db), grid, carrier_hz=CARRIER_HZ)
            per_slot = (sampler.sample(256, speed_mps=3.0, generator=gen(11)).abs() ** 2).mean(dim=(1, 2, 3))
            assert per_slot.mean().item() == pytest.approx(1.0, rel=tolerance(256))
            spread[k_db] = per_slot.std().item()
        assert spread[20.0] < 0.25
        assert spread[-10.0] > 0.6


def test_speed_range_and_bad_speeds(grid: GridSpec) -> None:
    sampler = ChannelSampler(tdl("A"), grid, carrier_hz=CARRIER_HZ)
    with pytest.raises(ValueError, match="speed_mps"):
        sampler.sample(3, speed_mps=torch.tensor([1.0, 2.0]), generator=gen(0))
    with pytest.raises(ValueError, match="speed_mps"):
        sampler.sample(2, speed_mps=(5.0, 1.0), generator=gen(0))
    with pytest.raises(ValueError, match="speed_mps"):
        sampler.sample(2, speed_mps=-1.0, generator=gen(0))
    with pytest.raises(ValueError, match="batch_size"):
        sampler.sample(0, speed_mps=1.0, generator=gen(0))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"direction": "sideways"}, "direction"),
        ({"normalize": "none"}, "normalize"),
        ({"distance_m": (0.0, 10.0)}, "distance_m"),
        ({"carrier_hz": -1.0}, "carrier_hz"),
    ],
)
def test_bad_sampler_arguments(kwargs: dict, words: str, grid: GridSpec) -> None:
    args = {"carrier_hz": CARRIER_HZ, **kwargs}
    with pytest.raises(ValueError, match=words):
        ChannelSampler(tdl("A"), grid, **args)


def test_profiles_are_the_schema_models() -> None:
    assert all(isinstance(p, SystemLevelProfile | LinkLevelProfile) for p in ALL_PROFILES.values())


@pytest.mark.slow
def test_batching_pays_for_system_level_channels(grid: GridSpec) -> None:
    """Realizations per second at batch 64 vs batch 1 (a benchmark, not timing-critical in CI)."""
    sampler = ChannelSampler(SystemLevelProfile(model="umi", los=False), grid, carrier_hz=CARRIER_HZ)
    g = gen(12)
    rates = {}
    for b in (1, 64):
        sampler.sample(b, speed_mps=10.0, generator=g)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 2.0:
            sampler.sample(b, speed_mps=10.0, generator=g)
            n += b
        rates[b] = n / (time.perf_counter() - t0)
    assert rates[64] > 5 * rates[1]


@pytest.mark.slow
def test_importing_ivsim_phy_leaves_the_global_torch_rng_alone() -> None:
    """A bare ``import sionna.phy`` re-seeds torch's global generator; ivsim's import must not."""
    code = (
        "import torch; torch.manual_seed(0); s = torch.random.get_rng_state(); import ivsim.phy; "
        "assert torch.equal(s, torch.random.get_rng_state())"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize(
    "profile",
    [
        SystemLevelProfile(model="uma", los=False),
        LinkLevelProfile(model="tdl", variant="A", delay_spread_s=100e-9, pathloss=PathLossRef(model="umi", los=False)),
    ],
    ids=["uma", "tdl"],
)
def test_paths_render_to_the_sampled_channels(profile) -> None:
    sampler = ChannelSampler(profile, GridSpec(num_rx_ant=2), carrier_hz=3.5e9)
    h = sampler.sample(6, speed_mps=(3.0, 20.0), generator=torch.Generator().manual_seed(4))
    a, tau = sampler.sample_paths(6, speed_mps=(3.0, 20.0), generator=torch.Generator().manual_seed(4))
    assert a.shape[:2] == (6, 2) and a.shape[-1] == 14 and tau.shape == (6, a.shape[2])
    assert bool((tau >= 0).all()) and float(tau.max()) < 1e-4
    assert torch.equal(sampler.render_paths(a, tau), h)  # the same draws, the same channels
    one = paths_to_grid(a[:1, :1, :1], torch.zeros(1, 1), GridSpec())  # one path at zero delay: flat in frequency
    torch.testing.assert_close(one[0, 0, :, :1].expand(-1, 72), one[0, 0])
