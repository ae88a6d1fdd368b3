"""Every scene of the shipped scenarios has diffusion weights for its profile, and they beat LS by 3 dB at 10 dB."""

from __future__ import annotations

import pytest

from ivsim.ai import zoo
from ivsim.ai.estimator_train import eval_estimators
from ivsim.ai.estimators import estimator_weights_path
from ivsim.ai.link_eval import load_link_scenes
from ivsim.config import load_scenario
from ivsim.config.schema import profile_hash

from .test_neural_link import REPO

SCENES = load_link_scenes()



def test_every_scene_of_every_shipped_scenario_has_matching_weights() -> None:
    for path in sorted((REPO / "scenarios").glob("*.yaml")):
        sc = load_scenario(path)
        for name in sc.scenes:
            weights = estimator_weights_path(name)
            assert weights.is_file(), f"{path.name}: scene {name} has no {weights.name}"
            assert weights.with_suffix(".md").is_file(), f"{weights.name} has no model card"
            meta = zoo.read_metadata(weights)
            assert meta["ivsim.profile_hash"] == profile_hash(sc.profile_of(name)), f"{path.name}: {name}"


@pytest.mark.parametrize("scene", sorted(SCENES))
def test_matched_diffusion_beats_ls_by_3_db_at_10_db(scene) -> None:
    s = SCENES[scene]
    rows = eval_estimators(
        (scene, s.profile, s.speed_range_mps), carrier_hz=s.carrier_hz, snr_db=(10.0,), n=24, seed=777,
        estimators=("ls", "diffusion"),
    )  # fmt: skip
    nmse = {r["estimator"]: r["nmse_db"] for r in rows}
    assert nmse["diffusion"] <= nmse["ls"] - 3.0, nmse
