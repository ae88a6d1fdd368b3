"""Physical layer: per-scene 3GPP channels and OFDM links on Sionna (PyTorch), batched.

Tensors carry a leading batch dimension; shapes are documented per function.
Nothing here seeds a global generator: randomness comes from ``torch.Generator``
arguments (see :mod:`ivsim.phy._sionna` for how Sionna's draws are routed).
"""

from __future__ import annotations

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
    "paths_to_grid",
    "noise_variance",
]
