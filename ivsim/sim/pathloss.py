"""TR 38.901 large-scale propagation in numpy: path loss and shadow fading.

Formulas from 3GPP TR 38.901 V17/V19, Table 7.4.1-1 (path loss, shadow-fading
standard deviation) and Table 7.5-6 part 1 (shadow-fading decorrelation
distance). Distances in metres, carrier in Hz; every function is vectorised over
its distance arguments. Validity ranges of the formulas (10 m to 5 km for UMi/UMa,
10 m to 10 km for RMa) are enforced at the near end (distances below 10 m are
clamped to 10 m) and extrapolated at the far end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PATHLOSS_MODELS", "ShadowParams", "pathloss_db", "shadow_params"]

C_MPS = 299_792_458.0
_H_E_M = 1.0  # effective environment height for UMi/UMa breakpoints (TR 38.901 note 1)
_RMA_BUILDING_M = 5.0  # RMa average building height h (Table 7.4.1-1 default)
_RMA_STREET_M = 20.0  # RMa average street width W (Table 7.4.1-1 default)

PATHLOSS_MODELS = ("umi", "uma", "rma")


@dataclass(frozen=True)
class ShadowParams:
    """Log-normal shadow fading of a propagation condition."""

    sigma_db: float
    decorrelation_m: float


# (model, los) -> (sigma_SF dB, Table 7.4.1-1; decorrelation distance m, Table 7.5-6 part 1).
# RMa LOS has sigma 4 dB before and 6 dB after the breakpoint; 4 dB is used (urban-edge ranges).
_SHADOW = {
    ("umi", True): ShadowParams(4.0, 10.0),
    ("umi", False): ShadowParams(7.82, 13.0),
    ("uma", True): ShadowParams(4.0, 37.0),
    ("uma", False): ShadowParams(6.0, 50.0),
    ("rma", True): ShadowParams(4.0, 37.0),
    ("rma", False): ShadowParams(8.0, 120.0),
}


def shadow_params(model: str, los: bool) -> ShadowParams:
    """Return TR 38.901's shadow-fading std and decorrelation distance for a model and condition."""
    return _SHADOW[(model, bool(los))]


# Each formula takes the 2D and 3D distances and lg = log10(d3d), computed once per call.


def _umi_los(d2d, d3d, lg, fc_hz, h_bs, h_ut):  # noqa: ANN001, ANN202
    lf = np.log10(fc_hz / 1e9)
    d_bp = 4 * (h_bs - _H_E_M) * (h_ut - _H_E_M) * fc_hz / C_MPS
    pl1 = 32.4 + 21 * lg + 20 * lf
    pl2 = 32.4 + 40 * lg + 20 * lf - 9.5 * np.log10(d_bp**2 + (h_bs - h_ut) ** 2)
    return np.where(d2d <= d_bp, pl1, pl2)


def _umi_nlos(d2d, d3d, lg, fc_hz, h_bs, h_ut):  # noqa: ANN001, ANN202
    nlos = 35.3 * lg + 22.4 + 21.3 * np.log10(fc_hz / 1e9) - 0.3 * (h_ut - 1.5)
    return np.maximum(_umi_los(d2d, d3d, lg, fc_hz, h_bs, h_ut), nlos)


def _uma_los(d2d, d3d, lg, fc_hz, h_bs, h_ut):  # noqa: ANN001, ANN202
    lf = np.log10(fc_hz / 1e9)
    d_bp = 4 * (h_bs - _H_E_M) * (h_ut - _H_E_M) * fc_hz / C_MPS
    pl1 = 28.0 + 22 * lg + 20 * lf
    pl2 = 28.0 + 40 * lg + 20 * lf - 9 * np.log10(d_bp**2 + (h_bs - h_ut) ** 2)
    return np.where(d2d <= d_bp, pl1, pl2)


def _uma_nlos(d2d, d3d, lg, fc_hz, h_bs, h_ut):  # noqa: ANN001, ANN202
    nlos = 13.54 + 39.08 * lg + 20 * np.log10(fc_hz / 1e9) - 0.6 * (h_ut - 1.5)
    return np.maximum(_uma_los(d2d, d3d, lg, fc_hz, h_bs, h_ut), nlos)


def _rma_pl1(d3d, lg, fc_hz):  # noqa: ANN001, ANN202
    h = _RMA_BUILDING_M
    return (
        20 * (np.log10(40 * np.pi / 3) + lg + np.log10(fc_hz / 1e9))
        + min(0.03 * h**1.72, 10) * lg
        - min(0.044 * h**1.72, 14.77)
        + 0.002 * np.log10(h) * d3d
    )


def _rma_los(d2d, d3d, lg, fc_hz, h_bs, h_ut):  # noqa: ANN001, ANN202
    d_bp = 2 * np.pi * h_bs * h_ut * fc_hz / C_MPS
    pl1 = _rma_pl1(d3d, lg, fc_hz)
    pl2 = _rma_pl1(d_bp, np.log10(d_bp), fc_hz) + 40 * (lg - np.log10(d_bp))
    return np.where(d2d <= d_bp, pl1, pl2)


def _rma_nlos(d2d, d3d, lg, fc_hz, h_bs, h_ut):  # noqa: ANN001, ANN202
    h, w = _RMA_BUILDING_M, _RMA_STREET_M
    nlos = (
        161.04
        - 7.1 * np.log10(w)
        + 7.5 * np.log10(h)
        - (24.37 - 3.7 * (h / h_bs) ** 2) * np.log10(h_bs)
        + (43.42 - 3.1 * np.log10(h_bs)) * (lg - 3)
        + 20 * np.log10(fc_hz / 1e9)
        - (3.2 * np.log10(11.75 * h_ut) ** 2 - 4.97)
    )
    return np.maximum(_rma_los(d2d, d3d, lg, fc_hz, h_bs, h_ut), nlos)


_PATHLOSS = {
    ("umi", True): _umi_los,
    ("umi", False): _umi_nlos,
    ("uma", True): _uma_los,
    ("uma", False): _uma_nlos,
    ("rma", True): _rma_los,
    ("rma", False): _rma_nlos,
}


def pathloss_db(
    model: str,
    los: bool,
    distance_2d_m: np.ndarray,
    *,
    carrier_hz: float | np.ndarray,
    bs_height_m: float | np.ndarray,
    ue_height_m: float,
) -> np.ndarray:
    """Return the TR 38.901 path loss in dB (no shadowing).

    Parameters
    ----------
    model
        ``"umi"`` (street canyon), ``"uma"`` or ``"rma"``.
    los
        Line of sight (LOS formula) or not (NLOS formula, never below LOS).
    distance_2d_m
        Ground distances between BS and UE, any shape.
    carrier_hz, bs_height_m, ue_height_m
        Carrier frequency and antenna heights; carrier and BS height may be
        arrays that broadcast against the distances (e.g. one per column).

    Returns
    -------
    numpy.ndarray
        Path loss in dB, same shape as ``distance_2d_m``.
    """
    d2d = np.maximum(np.asarray(distance_2d_m, dtype=float), 10.0)
    fc = np.asarray(carrier_hz, dtype=float)
    h_bs = np.asarray(bs_height_m, dtype=float)
    d3d = np.sqrt(d2d**2 + (h_bs - ue_height_m) ** 2)
    return _PATHLOSS[(model, bool(los))](d2d, d3d, np.log10(d3d), fc, h_bs, ue_height_m)
