"""Model cards of the diffusion estimators are written from the weights and from measurements."""

from __future__ import annotations

import pandas as pd

from ivsim.ai.cards import estimator_card
from ivsim.ai.estimators import CovarianceCache



def test_card_has_metadata_measurements_and_matrix_row(tmp_path) -> None:
    link = tmp_path / "link.csv"
    rows = [
        {"codec": "none", "estimator": "diffusion", "train_scene": a, "test_scene": b, "snr_db": 10.0,
         "nmse_db": v, "part": "matrix"}
        for a, b, v in [("street_canyon", "street_canyon", -18.0), ("street_canyon", "river_bridge", -19.5),
                        ("river_bridge", "river_bridge", -22.0)]
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(link, index=False)
    cache = tmp_path / "cache"
    card = estimator_card("street_canyon", link, n=4, cache=CovarianceCache(n=64), rows_cache=cache)
    assert "ivsim train estimator --scenario scenarios/nyc_brooklyn_bridge.yaml --scene street_canyon" in card
    assert "898,914" in card and "b4a28001329c" in card
    assert "| river_bridge | -19.50 | 2.50 |" in card  # tested on the bridge: 2.5 dB behind the bridge's own
    assert "| street_canyon (matched) | -18.00 | 0.00 |" in card
    assert (cache / "nmse_street_canyon_4.json").is_file()
    # the kept measurement is reused: same card without measuring again
    assert estimator_card("street_canyon", link, n=4, rows_cache=cache) == card
