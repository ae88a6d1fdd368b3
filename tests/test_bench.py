"""``ivsim bench core`` and ``ivsim bench scale``: the figures they print, at toy sizes (timings are not asserted)."""

from __future__ import annotations

import json

import pytest

from ivsim.bench import _PairedBare
from ivsim.cli import main


def test_bench_core_and_scale_report_their_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "core", "--vehicles", "10", "--duration", "30", "--json"]) == 0
    core = json.loads(capsys.readouterr().out)
    keys = {"wall_s", "rows_per_s", "bare_simpy_per_s", "ratio_to_bare_simpy", "realtime_factor", "peak_rss_mb"}
    assert keys <= set(core) and core["vehicles"] == 10 and core["rows"] > 0
    assert core["ratio_to_bare_simpy"] == pytest.approx(core["rows_per_s"] / core["bare_simpy_per_s"], abs=6e-4)
    slowest, fastest = core["bare_simpy_paired_min_max"]
    assert slowest <= core["bare_simpy_per_s"] <= fastest  # over all stops: between the slowest and fastest stop
    ends = max(core["bare_simpy_before_after"])
    assert core["ratio_to_bare_simpy_before_after"] == pytest.approx(core["rows_per_s"] / ends, abs=6e-4)

    args = ["bench", "scale", "--fidelity", "analytic", "--vehicles", "10", "--duration", "30", "--scaling", "5,10"]
    assert main([*args, "--json"]) == 0
    scale = json.loads(capsys.readouterr().out)
    assert keys <= set(scale) and (scale["fidelity"], scale["policy"]) == ("analytic", "proactive")
    assert [s["vehicles"] for s in scale["scaling"]] == [5, 10]
    assert scale["scaling"][1]["wall_s"] == scale["wall_s"]  # the main run is reused for its size
    assert main(["bench", "scale", "--scaling", "10,x"]) == 2
    assert main(["bench", "scale", "--scaling", "0"]) == 2


def test_paired_loops_run_as_many_timeouts_as_rows_logged_since_the_last_stop() -> None:
    rows = iter([5000, 5000, 7500])
    paired = _PairedBare(lambda: next(rows))
    paired.stop()
    assert (paired.timeouts, len(paired.rates)) == (5000, 1)
    paired.stop()  # nothing logged since: no loop
    assert (paired.timeouts, len(paired.rates)) == (5000, 1)
    paired.stop()  # 2,500 rows: 1,000 loops of 2 timeouts
    assert (paired.timeouts, len(paired.rates)) == (7000, 2)
    assert 0 < paired.seconds <= paired.paused_s
    assert paired.rate == pytest.approx(7000 / paired.seconds)
