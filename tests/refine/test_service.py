"""The refinement service and budget, without a simulation: refiners, the factory, timings, profiles, policies."""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ivsim.ai import latency
from ivsim.config import schema
from ivsim.config.schema import GridModel, RefinementSpec, RefineTiming
from ivsim.errors import ModelError
from ivsim.refine.budget import RefineTimingModel, load_refine_timing, pilot_bytes
from ivsim.refine.service import (
    FULL_REFINER,
    AnalyticRefiner,
    Refiner,
    RefineRequest,
    RefineWork,
    adapter_key,
    make_refiner,
)

TIMING = {
    "label": "assumed for the test",
    "lm_infer": {"fixed_s": 0.5, "per_item_s": 0.01},
    "finetune": {"fixed_s": 0.25, "per_item_s": 0.125},
    "adapter": {"fixed_bytes": 4096, "per_rank_bytes": 1000},
}


@pytest.fixture
def timing() -> RefineTimingModel:
    return RefineTimingModel(RefineTiming.model_validate(TIMING), "test")


def make_request(**changes: Any) -> RefineRequest:
    base = RefineRequest(
        job_id="j", vehicle="car1", base_scene="street", target_scene="bridge", samples=256, steps=100, rank=8,
        pilots=0, speed_mps=10.0, distance_m=120.0, seed=42,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


def scenario(fidelity: str = "analytic") -> SimpleNamespace:
    return SimpleNamespace(link=SimpleNamespace(fidelity=fidelity), refinement=RefinementSpec())


# ---------------------------------------------------------------------- analytic refiner


def test_analytic_refiner_id_is_a_stable_hash_of_the_inputs(timing: RefineTimingModel) -> None:
    refiner = AnalyticRefiner(timing)
    assert isinstance(refiner, Refiner) and refiner.name == "analytic"
    req = make_request()
    aid = refiner.adapter_id(req)
    assert len(aid) == 12 and int(aid, 16) >= 0 and aid == adapter_key(req)
    # job id, vehicle, pilots and kinematics do not change the adapter; each cache-key field does
    assert refiner.adapter_id(make_request(job_id="k", vehicle="car2", pilots=3, speed_mps=1.0, distance_m=9.0)) == aid
    for change in ({"base_scene": "x"}, {"target_scene": "x"}, {"samples": 1}, {"steps": 1}, {"rank": 1}, {"seed": 1}):
        assert refiner.adapter_id(make_request(**change)) != aid


def test_analytic_refiner_sizes_the_adapter_and_measures_nothing(timing: RefineTimingModel) -> None:
    work = AnalyticRefiner(timing).refine(make_request(rank=16))
    assert work == RefineWork(adapter_id=adapter_key(make_request(rank=16)), adapter_bytes=4096 + 1000 * 16)
    assert work.lm_infer_wall_s is None and work.finetune_wall_s is None


# ---------------------------------------------------------------------- factory


def test_make_refiner_analytic(timing: RefineTimingModel) -> None:
    notes: list[str] = []
    refiner = make_refiner(scenario(), evaluator=object(), timing=timing, seed=1, notes=notes)
    assert isinstance(refiner, AnalyticRefiner) and refiner.timing is timing and notes == []


def test_make_refiner_full_imports_the_full_refiner_by_name(monkeypatch: pytest.MonkeyPatch, timing: Any) -> None:
    module = types.ModuleType("fake_refine_job")

    class FakeRefiner:
        name = "fake"

        def __init__(self, scenario: Any, *, evaluator: Any, timing: Any, seed: int, notes: list[str] | None) -> None:
            self.args = (scenario, evaluator, timing, seed, notes)

    module.FakeRefiner = FakeRefiner
    monkeypatch.setitem(sys.modules, "fake_refine_job", module)
    monkeypatch.setattr("ivsim.refine.service.FULL_REFINER", "fake_refine_job:FakeRefiner")
    sc, ev, notes = scenario("full"), object(), []
    refiner = make_refiner(sc, evaluator=ev, timing=timing, seed=7, notes=notes)
    assert isinstance(refiner, FakeRefiner) and refiner.args == (sc, ev, timing, 7, notes)


def test_make_refiner_full_falls_back_when_the_module_is_missing(monkeypatch: pytest.MonkeyPatch, timing: Any) -> None:
    monkeypatch.setattr("ivsim.refine.service.FULL_REFINER", "ivsim_no_such_module:NeuralRefiner")
    notes: list[str] = []
    refiner = make_refiner(scenario("full"), evaluator=object(), timing=timing, seed=7, notes=notes)
    assert isinstance(refiner, AnalyticRefiner)
    (note,) = notes
    assert "ivsim_no_such_module:NeuralRefiner unavailable" in note and "analytic refiner" in note


def test_full_refiner_name() -> None:
    assert FULL_REFINER == "ivsim.ai.refine_job:NeuralRefiner"


def test_make_refiner_without_timings_is_an_error() -> None:
    with pytest.raises(ModelError, match="state refinement.assumed"):
        make_refiner(scenario(), evaluator=object(), timing=None, seed=1)


# ---------------------------------------------------------------------- budget


def test_timing_model_stage_costs_and_bytes(timing: RefineTimingModel) -> None:
    assert timing.lm_infer_s(256) == pytest.approx(0.5 + 0.01 * 256)
    assert timing.finetune_s(100) == 0.25 + 0.125 * 100
    assert timing.adapter_bytes(8) == 4096 + 8000
    grid = GridModel(fft_size=48, pilot_ofdm_symbol_indices=(2, 7, 11), num_rx_ant=2)
    assert pilot_bytes(grid) == 2 * 3 * 48 * 8
    assert timing.upload_bytes(512, 4, grid) == 512 + 4 * 2304
    assert timing.upload_bits(512, 4, grid) == 8 * (512 + 4 * 2304)
    assert timing.upload_bytes(512, 0, GridModel()) == 512


def test_assumed_timings_win_over_the_profile() -> None:
    spec = RefinementSpec(assumed=TIMING, latency_profile="/no/such/profile.yaml")
    model = load_refine_timing(spec)
    assert model.source == "assumed: assumed for the test" and model.finetune_s(2) == 0.5


def write_profile(path: Path, refine: str | None) -> Path:
    text = "name: mine\ndevice: cpu\nsource: test\ncodec: {}\nestimator: {}\n"
    path.write_text(text + (f"refine: {refine}\n" if refine else ""))
    return path


def test_profile_refine_section(tmp_path: Path) -> None:
    path = write_profile(
        tmp_path / "p.yaml",
        "{lm_infer: {fixed_s: 1.0, per_item_s: 0.5}, finetune: {per_item_s: 0.25}, adapter: {per_rank_bytes: 3}}",
    )
    profile = latency.load_latency_profile(path)
    cost = profile.refine_cost()
    assert (cost.lm_infer_s(2), cost.finetune_s(4), cost.adapter_bytes(5)) == (2.0, 1.0, 15)
    model = load_refine_timing(RefinementSpec(latency_profile=str(path)))
    assert model.source == "profile mine" and model.cost == cost


def test_profile_without_refine_section(tmp_path: Path) -> None:
    path = write_profile(tmp_path / "p.yaml", None)
    profile = latency.load_latency_profile(path)
    assert profile.refine is None
    with pytest.raises(ModelError) as info:
        profile.refine_cost()
    assert str(info.value) == (
        "latency profile 'mine' has no refine timings; run `ivsim bench refine --write-profile FILE` on that device "
        "or state refinement.assumed in the scenario"
    )
    spec = RefinementSpec(latency_profile=str(path))
    with pytest.raises(ModelError, match="no refine timings"):
        load_refine_timing(spec)
    assert load_refine_timing(spec, required=False) is None


def test_bad_refine_section_names_the_field(tmp_path: Path) -> None:
    path = write_profile(tmp_path / "p.yaml", "{lm_infer: {fixed_s: -1}, finetune: {}, adapter: {}}")
    with pytest.raises(ModelError, match=r"refine\.lm_infer\.fixed_s"):
        latency.load_latency_profile(path)


def test_one_stage_cost_model_shared_by_schema_and_profiles() -> None:
    assert latency.StageCost is schema.StageCost and latency.RefineCost is schema.RefineCost
    assert issubclass(RefineTiming, schema.RefineCost)
