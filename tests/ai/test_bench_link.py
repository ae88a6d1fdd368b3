"""``ivsim bench link`` runs end to end (small), and latency profiles are checked on load."""

from __future__ import annotations

import json

import pytest

from ivsim.ai.latency import load_latency_profile
from ivsim.cli import main
from ivsim.errors import ModelError



def test_bench_link_small_runs_and_reports_ratios(capsys) -> None:
    code = main(["bench", "link", "--json", "--vehicles", "3", "--single", "2", "--codec", "deepjscc",
                 "--estimator", "ls"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["sim_frames"] >= 3 * 3  # 3 vehicles, a frame per second for 4 s (some may be outages)
    for key in ("batched_frames_per_s", "single_frames_per_s", "sim_frames_per_s", "full_rate_frame_s"):
        assert result[key] > 0
    assert result["batch_speedup"] == pytest.approx(result["batched_frames_per_s"] / result["single_frames_per_s"], 0.01)
    assert result["full_rate_symbols_per_frame"] == 30720


def test_bench_link_bad_flag(capsys) -> None:
    assert main(["bench", "link", "--vehicles", "0"]) == 2
    assert "--vehicles" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["cpu", "gpu_h200", "gpu_rtx4090_reported"])
def test_shipped_profiles_cover_the_shipped_kinds(name) -> None:
    p = load_latency_profile(name)
    assert {"ctcd", "deepjscc", "digital"} <= set(p.codec)
    assert {"ls", "lmmse", "diffusion", "perfect"} <= set(p.estimator)
    assert p.frame_s("ctcd", "diffusion", symbols=6144, realizations=1, grids=8) > p.frame_s(
        "ctcd", "perfect", symbols=6144, realizations=1, grids=8
    )


def test_gpu_profile_is_the_reported_figures() -> None:
    p = load_latency_profile("gpu_rtx4090_reported")
    assert "reported" in p.source
    # JSCC 12 ms per image + diffusion 58 ms per sample
    assert p.frame_s("ctcd", "diffusion", symbols=6144, realizations=1, grids=8) == pytest.approx(0.070, abs=1e-3)


def test_h200_profile_was_measured_on_a_gpu_and_prices_refinement() -> None:
    from ivsim.ai.latency import default_profile_name

    p = load_latency_profile("gpu_h200")
    assert p.device == "cuda" and "measured by `ivsim bench link" in p.source
    assert p.refine is not None and "cuda" in p.refine.source
    assert default_profile_name("cuda") == "gpu_h200" and default_profile_name("cpu") == "cpu"
    cpu = load_latency_profile("cpu")
    # the GPU is faster than one CPU thread for a diffusion estimate and for a LoRA step
    assert p.frame_s("ctcd", "diffusion", symbols=6144, realizations=1, grids=8) < cpu.frame_s(
        "ctcd", "diffusion", symbols=6144, realizations=1, grids=8
    )
    assert p.refine.finetune.per_item_s < cpu.refine.finetune.per_item_s


def test_bad_profile_names_file_and_field(tmp_path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("name: x\ndevice: cpu\nsource: s\ncodec: {ctcd: {encode: {fixed_s: -1}, decode: {}}}\nestimator: {}\n")
    with pytest.raises(ModelError, match=r"p.yaml: codec.ctcd.encode.fixed_s"):
        load_latency_profile(bad)
    with pytest.raises(ModelError, match="latency profile not found"):
        load_latency_profile(tmp_path / "none.yaml")
