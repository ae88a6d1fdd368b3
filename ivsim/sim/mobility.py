"""Exact vehicle positions at any instant, for all vehicles at once.

Each vehicle drives its route edge by edge at constant speed per edge, so its
distance along the route is ``s = s0 + speed * (t - t0)`` (clamped to the edge
end) and its position is the route polyline at ``s``. To evaluate many vehicles
in one call, every started trip's polyline is appended to one
:class:`PolylineStore` at an increasing offset; a vehicle's store coordinate is
``base + s`` and one interpolation along the store gives all positions (``np.interp``'s,
in the compiled loop :func:`ivsim.sim.kernels.interp_positions`). The store keeps only the trips
under way: when it has doubled since it was last made, it is made again from the routes of
the vehicles on the road (memory stays flat and the interpolation's search stays short
however long the run).
"""

from __future__ import annotations

import numpy as np

from ivsim.sim.kernels import interp_positions
from ivsim.world.routes import Route

__all__ = ["PolylineStore", "VehicleTable"]

_GAP_M = 1.0  # separates consecutive routes in the store
_COMPACT_MIN_POINTS = 1 << 16  # a store smaller than this is never made again


class PolylineStore:
    """Append-only store of route polylines on one increasing coordinate.

    Parameters
    ----------
    capacity
        Initial number of points; grows by doubling.
    """

    def __init__(self, *, capacity: int = 1 << 14) -> None:
        self._g = np.empty(capacity)
        self._z = np.empty(capacity, dtype=complex)  # x + 1j y: one interpolation gives both
        self._n = 0
        self._end = 0.0

    def add(self, route: Route) -> float:
        """Append a route's polyline; return its base coordinate."""
        n = len(route.cum_m)
        if self._n + n > len(self._g):
            size = max(2 * len(self._g), self._n + n)
            for name in ("_g", "_z"):
                grown = np.empty(size, dtype=getattr(self, name).dtype)
                grown[: self._n] = getattr(self, name)[: self._n]
                setattr(self, name, grown)
        base = self._end + _GAP_M
        sl = slice(self._n, self._n + n)
        self._g[sl] = base + route.cum_m
        self._z[sl] = route.xy[:, 0] + 1j * route.xy[:, 1]
        self._n += n
        self._end = base + route.length_m
        return base

    def positions(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(x_m, y_m)`` at store coordinates ``g``."""
        g = np.asarray(g, dtype=float)
        if g.ndim == 1 and len(g) > 64:  # in increasing order the search moves forward from the last hit
            order = np.argsort(g)
            z = np.empty(len(g), dtype=complex)
            z[order] = np.interp(g[order], self._g[: self._n], self._z[: self._n])
        else:
            z = np.interp(g, self._g[: self._n], self._z[: self._n])
        return z.real, z.imag

    @property
    def g(self) -> np.ndarray:
        """Store coordinates of the points (the first ``len(self)`` entries are in use)."""
        return self._g

    @property
    def z(self) -> np.ndarray:
        """Points as ``x + 1j y`` (the first ``len(self)`` entries are in use)."""
        return self._z

    def __len__(self) -> int:
        return self._n


class VehicleTable:
    """Kinematic and radio state of every vehicle, as arrays indexed by vehicle number.

    Vehicles write their own row when they enter an edge; the radio network and
    base stations read all rows at once.

    Parameters
    ----------
    n
        Number of vehicles.
    n_bs
        Number of base stations (for the shadowing and RSRP matrices).
    """

    def __init__(self, n: int, n_bs: int) -> None:
        self.n = n
        self.active = np.zeros(n, dtype=bool)
        self.base_m = np.zeros(n)  # store coordinate of the current route's start
        self.s0_m = np.zeros(n)  # distance along the route at t0_s
        self.t0_s = np.zeros(n)
        self.speed_mps = np.zeros(n)
        self.edge_end_m = np.zeros(n)  # distance along the route where the current edge ends
        self.route_m = np.zeros(n)  # length of the current route
        self.scene = np.zeros(n, dtype=np.int16)
        self.serving = np.full(n, -1, dtype=np.int32)  # serving base station, -1 = none
        self.frames_sent = np.zeros(n, dtype=np.int64)
        self.estimator_scene = np.full(n, -1, dtype=np.int16)  # scene of the channel estimator held, -1 = none yet
        self.base_scene = np.full(n, -1, dtype=np.int16)  # scene of the base weights under any adapter, -1 = none
        self.estimator_version = np.zeros(n, dtype=np.int32)  # 0 = the base weights, +1 per deployed refinement
        self.adapter_id = np.full(n, "", dtype=object)  # refinement adapter deployed, "" = none
        self.adapter_labels: list[str] = [""]  # every adapter id used so far (append-only), for the log's Labels
        self.adapter_code = np.zeros(n, dtype=np.int64)  # adapter_id as a position in adapter_labels
        self._adapter_codes = {"": 0}
        self.store = PolylineStore()
        self._routes: list[Route | None] = [None] * n  # each vehicle's current route (to rebuild the store)
        self._compact_at = _COMPACT_MIN_POINTS
        # positions of the current instant, shared by every reader at that instant (a vehicle's position is
        # continuous, so entering a stretch or departing again from its arrival node does not change it)
        self._pos_t = np.nan
        self._pos_x = np.zeros(n)
        self._pos_y = np.zeros(n)
        self._pos_ok = np.zeros(n, dtype=bool)
        self._seg = np.full(n, -1, dtype=np.intp)  # store index where each vehicle's last position search ended

    def start_trip(self, i: int, route: Route) -> None:
        """Put vehicle ``i`` at the start of ``route``."""
        if len(self.store) + len(route.cum_m) > self._compact_at:
            self._compact()
        self._seg[i] = len(self.store)
        self.base_m[i] = self.store.add(route)
        self._routes[i] = route
        self._pos_ok[i] = False
        self.route_m[i] = route.length_m
        self.s0_m[i] = 0.0
        self.speed_mps[i] = 0.0
        self.edge_end_m[i] = 0.0
        self.active[i] = True

    def _compact(self) -> None:
        """Make the store again from the routes of the vehicles on the road (finished trips are dropped).

        Positions are the same polylines at new offsets (equal to rounding); a vehicle not on the
        road has no position (NaN) until its next trip.
        """
        store = PolylineStore(capacity=max(len(self.store) // 2, 1 << 14))
        self.base_m[:] = np.nan
        self._seg[:] = -1
        for i in np.flatnonzero(self.active).tolist():
            route = self._routes[i]
            assert route is not None
            self._seg[i] = len(store)
            self.base_m[i] = store.add(route)
        self.store = store  # positions cached at this instant stay: every reader of it sees the same ones
        self._compact_at = max(2 * len(store), _COMPACT_MIN_POINTS)

    def set_adapter(self, i: int, adapter_id: str) -> None:
        """Vehicle ``i`` now uses the estimator adapter ``adapter_id`` (``""``: the base weights)."""
        code = self._adapter_codes.get(adapter_id)
        if code is None:
            code = self._adapter_codes[adapter_id] = len(self.adapter_labels)
            self.adapter_labels.append(adapter_id)
        self.adapter_id[i] = adapter_id
        self.adapter_code[i] = code

    def enter_edge(self, i: int, t_s: float, start_m: float, end_m: float, speed_mps: float, scene: int) -> None:
        """Record that vehicle ``i`` enters the route stretch ``[start_m, end_m]`` at ``t_s``."""
        self.s0_m[i] = start_m
        self.t0_s[i] = t_s
        self.edge_end_m[i] = end_m
        self.speed_mps[i] = speed_mps
        self.scene[i] = scene

    def distance_m(self, idx: np.ndarray, t_s: float) -> np.ndarray:
        """Distance along the current route of vehicles ``idx`` at ``t_s``."""
        s = self.s0_m[idx] + self.speed_mps[idx] * (t_s - self.t0_s[idx])
        return np.minimum(s, self.edge_end_m[idx])

    def distance_of(self, i: int, t_s: float) -> float:
        """:meth:`distance_m` of one vehicle ``i``, as a float (the same arithmetic, without arrays)."""
        return float(min(self.s0_m[i] + self.speed_mps[i] * (t_s - self.t0_s[i]), self.edge_end_m[i]))

    def positions(self, idx: np.ndarray, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``(x_m, y_m)`` of vehicles ``idx`` at ``t_s`` (computed once per vehicle and instant)."""
        if t_s != self._pos_t:
            self._pos_t = t_s
            self._pos_ok[:] = False
        store = self.store
        interp_positions(
            np.asarray(idx, dtype=np.intp), float(t_s), self.base_m, self.s0_m, self.speed_mps, self.t0_s,
            self.edge_end_m, store.g, store.z, len(store), self._seg, self._pos_ok, self._pos_x, self._pos_y,
        )  # fmt: skip
        return self._pos_x[idx], self._pos_y[idx]
