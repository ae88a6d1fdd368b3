"""VehicleTable and PolylineStore: positions of many vehicles in one call, and the store kept small."""

from __future__ import annotations

import numpy as np

from ivsim.sim import mobility
from ivsim.sim.mobility import PolylineStore, VehicleTable
from ivsim.world import RoadMap
from ivsim.world.routes import Router


def test_store_positions_in_any_query_order(grid_roadmap: RoadMap) -> None:
    """Many queries are answered in sorted order internally; the answer is the same as one at a time."""
    router = Router(grid_roadmap)
    store = PolylineStore()
    routes = [router.route(a, b) for a, b in [(0, 15), (3, 12), (5, 10), (12, 3)]]
    bases = [store.add(r) for r in routes]
    rng = np.random.default_rng(0)
    k = rng.integers(len(routes), size=300)
    s = rng.uniform(0, 1, size=300) * np.array([routes[j].length_m for j in k])
    x, y = store.positions(np.array(bases)[k] + s)
    for q in range(0, 300, 7):
        want = routes[k[q]].position(s[q])
        np.testing.assert_allclose((x[q], y[q]), want, atol=1e-6)
        one = store.positions(np.array([bases[k[q]] + s[q]]))
        assert (one[0][0], one[1][0]) == (x[q], y[q])


def test_store_is_rebuilt_from_the_trips_under_way(grid_roadmap: RoadMap, monkeypatch) -> None:  # noqa: ANN001
    """Finished trips leave the store once it has doubled; vehicles on the road keep their positions."""
    monkeypatch.setattr(mobility, "_COMPACT_MIN_POINTS", 40)
    router = Router(grid_roadmap)
    routes = [router.route(a, b) for a, b in [(0, 15), (15, 0), (3, 12), (12, 3), (1, 14), (14, 1)]]
    table = VehicleTable(3, 1)
    table._compact_at = 40
    sizes = []
    for trip in range(40):
        i = trip % 3
        table.active[i] = False  # the trip before ends
        table.start_trip(i, routes[trip % len(routes)])
        table.enter_edge(i, float(trip), 0.0, routes[trip % len(routes)].length_m, 10.0, 0)
        sizes.append(len(table.store))
        idx = np.flatnonzero(table.active)
        x, y = table.positions(idx, float(trip) + 0.5)
        for k, v in enumerate(idx):
            route = table._routes[v]
            want = route.position(10.0 * (float(trip) + 0.5 - table.t0_s[v]))
            np.testing.assert_allclose((x[k], y[k]), want, atol=1e-6)
    live = sum(len(r.cum_m) for r in routes)
    assert max(sizes) <= 2 * max(40, live) + max(len(r.cum_m) for r in routes)
    assert sizes[-1] < sum(len(routes[t % len(routes)].cum_m) for t in range(40))  # something was dropped
    gone = 0
    table.active[gone] = False
    table._compact()
    assert np.isnan(table.positions(np.array([gone]), 99.0)[0]).all()  # not on the road: no position
