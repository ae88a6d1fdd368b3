"""Physical layer: per-scene 3GPP channels and OFDM links on Sionna (PyTorch), batched.

Tensors carry a leading batch dimension; shapes are documented per function.
Nothing here seeds a global generator: randomness comes from ``torch.Generator``
arguments (see :mod:`ivsim.phy._sionna` for how Sionna's draws are routed).

The names below are imported on first use (PEP 562), so that a submodule that needs
neither torch nor Sionna (:mod:`ivsim.phy.abstraction`, the fast link's tables) does not
import them: importing torch and Sionna takes seconds and hundreds of MB.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ivsim.phy.channels import ChannelSampler, SpeedSpec, covariances, paths_to_grid
    from ivsim.phy.ofdm import (
        ChannelCovariance,
        ChannelEstimator,
        FullGridLMMSEEstimator,
        GridSpec,
        LMMSEEstimator,
        LSEstimator,
        OfdmMapper,
        apply_channel,
        lmmse_equalize,
        nmse_db,
        noise_variance,
    )

__all__ = [
    "ChannelCovariance",
    "ChannelEstimator",
    "ChannelSampler",
    "FullGridLMMSEEstimator",
    "GridSpec",
    "LMMSEEstimator",
    "LSEstimator",
    "OfdmMapper",
    "SpeedSpec",
    "apply_channel",
    "covariances",
    "lmmse_equalize",
    "nmse_db",
    "noise_variance",
    "paths_to_grid",
]

_CHANNELS = ("ChannelSampler", "SpeedSpec", "covariances", "paths_to_grid")
_HOME = {name: "ivsim.phy.channels" if name in _CHANNELS else "ivsim.phy.ofdm" for name in __all__}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        msg = f"module 'ivsim.phy' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
