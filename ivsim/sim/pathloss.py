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
from typing import ClassVar

import numpy as np

__all__ = [
    "PATHLOSS_MODELS",
    "PathlossCoefficients",
    "ShadowParams",
    "evaluate_pathloss",
    "pathloss_db",
    "shadow_params",
]

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


@dataclass(frozen=True)
class PathlossCoefficients:
    """Table 7.4.1-1 of one model and condition, reduced to coefficients per base station.

    Every formula of the table is affine in ``lg = log10(d3d)`` (RMa's PL1 also in ``d3d``):

    - LOS: ``a1 + b1 lg + c d3d`` up to the breakpoint (2D distance ``<= d_bp``), ``a2 + b2 lg`` beyond;
    - NLOS: the larger of LOS and ``a3 + b3 lg`` (``a3 = -inf`` for LOS).

    The fields are arrays (one entry per base station, or any shape that broadcasts against
    the distances); :meth:`of` computes them, calling the object evaluates them. The radio
    network stacks them per scene so that one set of array operations serves every vehicle.
    """

    d_bp: np.ndarray
    a1: np.ndarray
    b1: np.ndarray
    c: np.ndarray
    a2: np.ndarray
    b2: np.ndarray
    a3: np.ndarray
    b3: np.ndarray
    dh2: np.ndarray
    """Squared height difference ``(h_bs - h_ut)^2``."""

    FIELDS: ClassVar[tuple[str, ...]] = ("d_bp", "a1", "b1", "c", "a2", "b2", "a3", "b3", "dh2")

    @classmethod
    def of(
        cls,
        model: str,
        los: bool,
        *,
        carrier_hz: float | np.ndarray,
        bs_height_m: float | np.ndarray,
        ue_height_m: float,
    ) -> PathlossCoefficients:
        """The coefficients of ``model`` (``umi``, ``uma``, ``rma``) and condition ``los``."""
        fc = np.asarray(carrier_hz, dtype=float)
        h_bs = np.asarray(bs_height_m, dtype=float)
        h_ut = float(ue_height_m)
        shape = np.broadcast(fc, h_bs).shape
        lf = np.log10(fc / 1e9)
        zero = np.zeros(shape)
        if model in ("umi", "uma"):
            d_bp = 4 * (h_bs - _H_E_M) * (h_ut - _H_E_M) * fc / C_MPS
            bp = np.log10(d_bp**2 + (h_bs - h_ut) ** 2)
            if model == "umi":
                a1, b1, a2 = 32.4 + 20 * lf, 21.0, 32.4 + 20 * lf - 9.5 * bp
                a3, b3 = 22.4 + 21.3 * lf - 0.3 * (h_ut - 1.5), 35.3
            else:
                a1, b1, a2 = 28.0 + 20 * lf, 22.0, 28.0 + 20 * lf - 9 * bp
                a3, b3 = 13.54 + 20 * lf - 0.6 * (h_ut - 1.5), 39.08
            c = zero
        elif model == "rma":
            h, w = _RMA_BUILDING_M, _RMA_STREET_M
            d_bp = 2 * np.pi * h_bs * h_ut * fc / C_MPS
            a1 = 20 * (np.log10(40 * np.pi / 3) + lf) - min(0.044 * h**1.72, 14.77)
            b1 = 20 + min(0.03 * h**1.72, 10)
            c = np.full(shape, 0.002 * np.log10(h))
            lg_bp = np.log10(d_bp)
            a2 = a1 + b1 * lg_bp + c * d_bp - 40 * lg_bp  # PL2 = PL1(d_bp) + 40 log10(d3d / d_bp)
            b3 = 43.42 - 3.1 * np.log10(h_bs)
            a3 = (
                161.04
                - 7.1 * np.log10(w)
                + 7.5 * np.log10(h)
                - (24.37 - 3.7 * (h / h_bs) ** 2) * np.log10(h_bs)
                - 3 * b3
                + 20 * lf
                - (3.2 * np.log10(11.75 * h_ut) ** 2 - 4.97)
            )
        else:
            msg = f"unknown path-loss model {model!r} (allowed: {', '.join(PATHLOSS_MODELS)})"
            raise ValueError(msg)
        if los:
            a3 = np.full(shape, -np.inf)
        values = (d_bp, a1, b1, c, a2, 40.0, a3, b3, (h_bs - h_ut) ** 2)
        return cls(*(np.broadcast_to(np.asarray(v, dtype=float), shape).copy() for v in values))

    def as_array(self) -> np.ndarray:
        """The fields stacked in :attr:`FIELDS` order: ``[field, ...]`` (stack these per scene and gather per row)."""
        return np.stack([getattr(self, f) for f in self.FIELDS])

    def __call__(self, distance_2d_m: np.ndarray) -> np.ndarray:
        """Path loss in dB at 2D distances that broadcast against the coefficients."""
        return evaluate_pathloss(np.asarray(distance_2d_m, dtype=float), *self.as_array())


def evaluate_pathloss(
    d2d: np.ndarray,
    d_bp: np.ndarray,
    a1: np.ndarray,
    b1: np.ndarray,
    c: np.ndarray,
    a2: np.ndarray,
    b2: np.ndarray,
    a3: np.ndarray,
    b3: np.ndarray,
    dh2: np.ndarray,
) -> np.ndarray:
    """Evaluate :class:`PathlossCoefficients` fields (any broadcastable arrays) at 2D distances ``d2d``."""
    d2d = np.maximum(d2d, 10.0)
    d3d = np.sqrt(d2d * d2d + dh2)
    lg = np.log10(d3d)
    los = np.where(d2d <= d_bp, a1 + b1 * lg + c * d3d, a2 + b2 * lg)
    return np.maximum(los, a3 + b3 * lg)


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
    coefficients = PathlossCoefficients.of(
        model, los, carrier_hz=carrier_hz, bs_height_m=bs_height_m, ue_height_m=ue_height_m
    )
    return coefficients(distance_2d_m)
