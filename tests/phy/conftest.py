"""Fixtures of the phy tests: a default grid, its mapper, channel profiles."""

from __future__ import annotations

import pytest
import torch

from ivsim.config.schema import LinkLevelProfile, PathLossRef, SystemLevelProfile
from ivsim.phy import GridSpec, OfdmMapper

PATHLOSS = PathLossRef(model="umi", los=False)


def tdl(variant: str = "C", delay_spread_s: float = 300e-9, **kw: object) -> LinkLevelProfile:
    """A TDL profile."""
    return LinkLevelProfile(model="tdl", variant=variant, delay_spread_s=delay_spread_s, pathloss=PATHLOSS, **kw)


def cdl(variant: str = "C", delay_spread_s: float = 300e-9, **kw: object) -> LinkLevelProfile:
    """A CDL profile."""
    return LinkLevelProfile(model="cdl", variant=variant, delay_spread_s=delay_spread_s, pathloss=PATHLOSS, **kw)


ALL_PROFILES = {
    **{
        f"{m}_{'los' if los else 'nlos'}": SystemLevelProfile(model=m, los=los)
        for m in ("umi", "uma", "rma")
        for los in (True, False)
    },
    "tdl_c": tdl("C"),
    "tdl_d": tdl("D"),
    "cdl_a": cdl("A"),
    "cdl_e": cdl("E"),
}


@pytest.fixture(autouse=True)
def one_torch_thread() -> object:
    """Run each phy test on one intra-op thread, restoring the setting afterwards.

    The CI box has 2 shared cores; Sionna's batched small-matrix kernels (the LMMSE
    estimator's per-item Cholesky solves) run 20-30x *slower* with 2 OpenMP threads
    when the cores are busy with other work than with one.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def grid() -> GridSpec:
    return GridSpec()


@pytest.fixture(scope="session")
def mapper(grid: GridSpec) -> OfdmMapper:
    return OfdmMapper(grid)


def gen(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def qpsk(batch: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """Unit-energy QPSK symbols ``[batch, n]``."""
    bits = torch.randint(0, 2, (2, batch, n), generator=generator).to(torch.float32)
    return torch.complex(1 - 2 * bits[0], 1 - 2 * bits[1]) / 2**0.5
