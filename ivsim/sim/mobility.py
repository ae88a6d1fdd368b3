"""Exact vehicle positions at any instant, for all vehicles at once.

Each vehicle drives its route edge by edge at constant speed per edge, so its
distance along the route is ``s = s0 + speed * (t - t0)`` (clamped to the edge
end) and its position is the route polyline at ``s``. To evaluate many vehicles
in one numpy call, every started trip's polyline is appended to one
:class:`PolylineStore` at an increasing offset; a vehicle's store coordinate is
``base + s`` and one ``np.interp`` gives all positions.
"""

from __future__ import annotations

import numpy as np

from ivsim.world.routes import Route

__all__ = ["PolylineStore", "VehicleTable"]

_GAP_M = 1.0  # separates consecutive routes in the store


class PolylineStore:
    """Append-only store of route polylines on one increasing coordinate.

    Parameters
    ----------
    capacity
        Initial number of points; grows by doubling.
    """

    def __init__(self, *, capacity: int = 1 << 14) -> None:
        self._g = np.empty(capacity)
        self._x = np.empty(capacity)
        self._y = np.empty(capacity)
        self._n = 0
        self._end = 0.0

    def add(self, route: Route) -> float:
        """Append a route's polyline; return its base coordinate."""
        n = len(route.cum_m)
        if self._n + n > len(self._g):
            size = max(2 * len(self._g), self._n + n)
            for name in ("_g", "_x", "_y"):
                grown = np.empty(size)
                grown[: self._n] = getattr(self, name)[: self._n]
                setattr(self, name, grown)
        base = self._end + _GAP_M
        sl = slice(self._n, self._n + n)
        self._g[sl] = base + route.cum_m
        self._x[sl] = route.xy[:, 0]
        self._y[sl] = route.xy[:, 1]
        self._n += n
        self._end = base + route.length_m
        return base

    def positions(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(x_m, y_m)`` at store coordinates ``g``."""
        gp = self._g[: self._n]
        return np.interp(g, gp, self._x[: self._n]), np.interp(g, gp, self._y[: self._n])

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
        self.store = PolylineStore()

    def start_trip(self, i: int, route: Route) -> None:
        """Put vehicle ``i`` at the start of ``route``."""
        self.base_m[i] = self.store.add(route)
        self.route_m[i] = route.length_m
        self.s0_m[i] = 0.0
        self.speed_mps[i] = 0.0
        self.edge_end_m[i] = 0.0
        self.active[i] = True

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

    def positions(self, idx: np.ndarray, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``(x_m, y_m)`` of vehicles ``idx`` at ``t_s``."""
        return self.store.positions(self.base_m[idx] + self.distance_m(idx, t_s))
