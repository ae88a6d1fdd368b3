"""TR 38.901 path loss and shadow fading (Table 7.4.1-1, Table 7.5-6 part 1) at 3.5 GHz.

Reference values are computed here from the table's formulas with plain :mod:`math`
(scalar, one distance at a time), independently of :mod:`ivsim.sim.pathloss`; a few of
them are also pinned as literal numbers so that the references themselves are checked.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ivsim.sim.pathloss import PATHLOSS_MODELS, pathloss_db, shadow_params

C = 299_792_458.0
FC_HZ = 3.5e9
FC_GHZ = 3.5
H_UT = 1.5
H_BS = {"umi": 10.0, "uma": 25.0, "rma": 35.0}  # the table's nominal heights
RMA_H = 5.0  # average building height
RMA_W = 20.0  # average street width

# ---------------------------------------------------------------------- hand-written references


def ref_umi(d2d: float, los: bool, h_bs: float = H_BS["umi"], h_ut: float = H_UT) -> float:
    """UMi street canyon, Table 7.4.1-1."""
    d2d = max(d2d, 10.0)
    d3d = math.sqrt(d2d**2 + (h_bs - h_ut) ** 2)
    d_bp = 4 * (h_bs - 1.0) * (h_ut - 1.0) * FC_HZ / C
    if d2d <= d_bp:
        pl_los = 32.4 + 21 * math.log10(d3d) + 20 * math.log10(FC_GHZ)
    else:
        pl_los = 32.4 + 40 * math.log10(d3d) + 20 * math.log10(FC_GHZ) - 9.5 * math.log10(d_bp**2 + (h_bs - h_ut) ** 2)
    if los:
        return pl_los
    pl_nlos = 35.3 * math.log10(d3d) + 22.4 + 21.3 * math.log10(FC_GHZ) - 0.3 * (h_ut - 1.5)
    return max(pl_los, pl_nlos)


def ref_uma(d2d: float, los: bool, h_bs: float = H_BS["uma"], h_ut: float = H_UT) -> float:
    """UMa, Table 7.4.1-1 (h_E = 1 m: h_UT < 13 m)."""
    d2d = max(d2d, 10.0)
    d3d = math.sqrt(d2d**2 + (h_bs - h_ut) ** 2)
    d_bp = 4 * (h_bs - 1.0) * (h_ut - 1.0) * FC_HZ / C
    if d2d <= d_bp:
        pl_los = 28.0 + 22 * math.log10(d3d) + 20 * math.log10(FC_GHZ)
    else:
        pl_los = 28.0 + 40 * math.log10(d3d) + 20 * math.log10(FC_GHZ) - 9 * math.log10(d_bp**2 + (h_bs - h_ut) ** 2)
    if los:
        return pl_los
    pl_nlos = 13.54 + 39.08 * math.log10(d3d) + 20 * math.log10(FC_GHZ) - 0.6 * (h_ut - 1.5)
    return max(pl_los, pl_nlos)


def _rma_pl1(d: float) -> float:
    h = RMA_H
    return (
        20 * math.log10(40 * math.pi * d * FC_GHZ / 3)
        + min(0.03 * h**1.72, 10) * math.log10(d)
        - min(0.044 * h**1.72, 14.77)
        + 0.002 * math.log10(h) * d
    )


def ref_rma(d2d: float, los: bool, h_bs: float = H_BS["rma"], h_ut: float = H_UT) -> float:
    """RMa, Table 7.4.1-1 (PL2 = PL1(d_BP) + 40 log10(d3D / d_BP), as the table writes it)."""
    d2d = max(d2d, 10.0)
    d3d = math.sqrt(d2d**2 + (h_bs - h_ut) ** 2)
    d_bp = 2 * math.pi * h_bs * h_ut * FC_HZ / C
    pl_los = _rma_pl1(d3d) if d2d <= d_bp else _rma_pl1(d_bp) + 40 * math.log10(d3d / d_bp)
    if los:
        return pl_los
    h, w = RMA_H, RMA_W
    pl_nlos = (
        161.04
        - 7.1 * math.log10(w)
        + 7.5 * math.log10(h)
        - (24.37 - 3.7 * (h / h_bs) ** 2) * math.log10(h_bs)
        + (43.42 - 3.1 * math.log10(h_bs)) * (math.log10(d3d) - 3)
        + 20 * math.log10(FC_GHZ)
        - (3.2 * (math.log10(11.75 * h_ut)) ** 2 - 4.97)
    )
    return max(pl_los, pl_nlos)


REF = {"umi": ref_umi, "uma": ref_uma, "rma": ref_rma}

# distances on both sides of each breakpoint (UMi 210 m, UMa 560 m, RMa 3851 m)
DISTANCES = {
    "umi": [10.0, 50.0, 100.0, 500.0, 1000.0],
    "uma": [10.0, 50.0, 300.0, 1000.0, 3000.0],
    "rma": [10.0, 100.0, 1000.0, 5000.0, 8000.0],
}

# Literal values of the references above (rounded to 1e-4 dB), to check the references themselves.
LITERAL = [
    ("umi", True, 100.0, 85.3142),
    ("umi", False, 100.0, 104.6438),
    ("umi", True, 500.0, 107.1080),
    ("umi", False, 1000.0, 139.8892),
    ("uma", True, 300.0, 93.4073),
    ("uma", False, 300.0, 121.2792),
    ("uma", True, 1000.0, 109.4065),
    ("uma", False, 3000.0, 160.3078),
    ("rma", True, 1000.0, 105.4596),
    ("rma", False, 1000.0, 130.4243),
    ("rma", True, 5000.0, 125.9669),
    ("rma", False, 8000.0, 165.3045),
]


def pl(model: str, los: bool, d, h_bs: float | None = None) -> np.ndarray:
    return pathloss_db(
        model, los, d, carrier_hz=FC_HZ, bs_height_m=H_BS[model] if h_bs is None else h_bs, ue_height_m=H_UT
    )


# ---------------------------------------------------------------------- values


@pytest.mark.parametrize(("model", "los", "d2d", "value"), LITERAL)
def test_reference_formulas_match_literal_values(model: str, los: bool, d2d: float, value: float) -> None:
    assert REF[model](d2d, los) == pytest.approx(value, abs=1e-4)


@pytest.mark.parametrize(("model", "los", "d2d", "value"), LITERAL)
def test_pathloss_matches_literal_values(model: str, los: bool, d2d: float, value: float) -> None:
    assert float(pl(model, los, d2d)) == pytest.approx(value, abs=1e-4)


@pytest.mark.parametrize("los", [True, False], ids=["los", "nlos"])
@pytest.mark.parametrize("model", PATHLOSS_MODELS)
def test_pathloss_matches_table_formulas(model: str, los: bool) -> None:
    d = np.array(DISTANCES[model])
    got = pl(model, los, d)
    want = np.array([REF[model](float(x), los) for x in d])
    assert got.shape == d.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


@pytest.mark.parametrize("h_bs", [15.0, 30.0])
@pytest.mark.parametrize("los", [True, False], ids=["los", "nlos"])
@pytest.mark.parametrize("model", PATHLOSS_MODELS)
def test_pathloss_uses_the_given_heights(model: str, los: bool, h_bs: float) -> None:
    d = np.array([20.0, 150.0, 700.0, 2500.0])
    want = np.array([REF[model](float(x), los, h_bs=h_bs) for x in d])
    np.testing.assert_allclose(pl(model, los, d, h_bs=h_bs), want, rtol=0, atol=1e-9)


def test_carrier_enters_as_20_log10_fc_for_uma_los() -> None:
    d = np.array([50.0, 200.0])  # below the breakpoint at both carriers
    at_35 = pathloss_db("uma", True, d, carrier_hz=3.5e9, bs_height_m=25.0, ue_height_m=1.5)
    at_7 = pathloss_db("uma", True, d, carrier_hz=7.0e9, bs_height_m=25.0, ue_height_m=1.5)
    np.testing.assert_allclose(at_7 - at_35, 20 * math.log10(2.0), atol=1e-9)


def test_shape_is_kept() -> None:
    d = np.linspace(5.0, 3000.0, 12).reshape(3, 4)
    for model in PATHLOSS_MODELS:
        for los in (True, False):
            assert pl(model, los, d).shape == (3, 4)


# ---------------------------------------------------------------------- properties


@pytest.mark.parametrize("model", PATHLOSS_MODELS)
def test_nlos_never_below_los(model: str) -> None:
    d = np.geomspace(1.0, 10_000.0, 400)
    assert np.all(pl(model, False, d) >= pl(model, True, d))
    # and strictly above somewhere (NLOS is not just LOS)
    assert np.any(pl(model, False, d) > pl(model, True, d) + 1.0)


@pytest.mark.parametrize("los", [True, False], ids=["los", "nlos"])
@pytest.mark.parametrize("model", PATHLOSS_MODELS)
def test_monotone_in_distance(model: str, los: bool) -> None:
    d = np.geomspace(10.0, 10_000.0, 2000)
    assert np.all(np.diff(pl(model, los, d)) > 0)


@pytest.mark.parametrize("los", [True, False], ids=["los", "nlos"])
@pytest.mark.parametrize("model", PATHLOSS_MODELS)
def test_clamped_below_10_m(model: str, los: bool) -> None:
    at_10 = float(pl(model, los, 10.0))
    near = pl(model, los, np.array([0.0, 0.5, 3.0, 9.999]))
    np.testing.assert_array_equal(near, np.full(4, at_10))
    assert float(pl(model, los, 10.5)) > at_10


@pytest.mark.parametrize(("model", "slope1", "slope2"), [("umi", 21, 9.5), ("uma", 22, 9.0)])
def test_breakpoint_continuity(model: str, slope1: float, slope2: float) -> None:
    """PL1 and PL2 agree at d'_BP (the 2D breakpoint) within 0.1 dB."""
    h_bs = H_BS[model]
    d_bp = 4 * (h_bs - 1.0) * (H_UT - 1.0) * FC_HZ / C
    const = 32.4 if model == "umi" else 28.0
    d3d = math.sqrt(d_bp**2 + (h_bs - H_UT) ** 2)
    pl1 = const + slope1 * math.log10(d3d) + 20 * math.log10(FC_GHZ)
    pl2 = const + 40 * math.log10(d3d) + 20 * math.log10(FC_GHZ) - slope2 * math.log10(d_bp**2 + (h_bs - H_UT) ** 2)
    assert abs(pl1 - pl2) < 0.1
    # and the implementation has no jump there
    eps = 1e-6
    below, at, above = pl(model, True, np.array([d_bp - eps, d_bp, d_bp + eps]))
    assert abs(at - pl1) < 1e-6
    assert abs(above - below) < 0.1
    assert abs(above - pl2) < 1e-3


# ---------------------------------------------------------------------- shadowing


@pytest.mark.parametrize(
    ("model", "los", "sigma_db", "decorrelation_m"),
    [
        ("umi", True, 4.0, 10.0),
        ("umi", False, 7.82, 13.0),
        ("uma", True, 4.0, 37.0),
        ("uma", False, 6.0, 50.0),
        ("rma", True, 4.0, 37.0),
        ("rma", False, 8.0, 120.0),
    ],
)
def test_shadow_params_table(model: str, los: bool, sigma_db: float, decorrelation_m: float) -> None:
    params = shadow_params(model, los)
    assert params.sigma_db == sigma_db
    assert params.decorrelation_m == decorrelation_m


def test_shadow_params_accept_numpy_bool_and_reject_unknown_models() -> None:
    assert shadow_params("uma", np.bool_(False)) == shadow_params("uma", False)
    with pytest.raises(KeyError):
        shadow_params("inh", True)


# ---------------------------------------------------------------------- coefficients, stacked as the radio does


def test_stacked_coefficients_gathered_per_row_match_pathloss_db() -> None:
    """Coefficients of several (model, condition) pairs stacked and gathered per row give each row its own model."""
    from ivsim.sim.pathloss import PathlossCoefficients, evaluate_pathloss

    carrier = np.array([3.5e9, 3.5e9, 28e9])  # one per base station
    height = np.array([10.0, 25.0, 35.0])
    conditions = [(m, los) for m in PATHLOSS_MODELS for los in (True, False)]
    per = [
        PathlossCoefficients.of(m, los, carrier_hz=carrier, bs_height_m=height, ue_height_m=H_UT)
        for m, los in conditions
    ]
    stacked = np.stack([c.as_array() for c in per])  # (condition, field, BS)
    rng = np.random.default_rng(3)
    which = rng.integers(len(conditions), size=200)
    d2d = rng.uniform(1.0, 6000.0, size=(200, 3))
    got = evaluate_pathloss(d2d, *stacked[which].transpose(1, 0, 2))
    for k, (model, los) in enumerate(conditions):
        rows = which == k
        want = pathloss_db(model, los, d2d[rows], carrier_hz=carrier, bs_height_m=height, ue_height_m=H_UT)
        np.testing.assert_allclose(got[rows], want, rtol=0, atol=1e-12)
        assert rows.any()


def test_unknown_model_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown path-loss model 'foo'"):
        pathloss_db("foo", True, 100.0, carrier_hz=FC_HZ, bs_height_m=10.0, ue_height_m=H_UT)
