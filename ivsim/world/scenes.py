"""Scene map: which radio scene (street canyon, bridge, tunnel, ...) each road edge belongs to.

Rules are tried in order and the first that matches an edge gives its scene; an edge no rule
matches gets the default scene. A rule matches when all its tag conditions hold and, if it has a
polygon, the edge's midpoint lies inside it.

Tag conditions (values compared as case-sensitive strings; a list-valued tag of a merged edge
matches when any of its values does):

* ``"yes"`` -- the tag has this value;
* ``["yes", "viaduct"]`` -- the tag has any of these values;
* ``true`` -- the tag is present (any value, e.g. ``tunnel=building_passage`` too);
* ``false`` -- the tag is absent.

Beware YAML 1.1: an unquoted ``yes`` / ``no`` is read as ``true`` / ``false``. Quote OSM values.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

if TYPE_CHECKING:
    from ivsim.config.schema import SceneRule, SceneRules
    from ivsim.world.maps import RoadMap
    from ivsim.world.routes import Route

__all__ = ["SceneMap", "match_rule"]

logger = logging.getLogger(__name__)


class SceneMap:
    """The scene of every edge of a road map.

    Parameters
    ----------
    roadmap
        The map whose edges are classified.
    scene_rules
        Ordered rules and the default scene.
    scene_names
        The scenario's scene names, in order; :attr:`edge_scene` indexes into them.

    Attributes
    ----------
    names : tuple of str
        The scene names.
    edge_scene : numpy.ndarray
        ``(E,)`` int16 index into :attr:`names` for each edge of the edge table.

    Raises
    ------
    ValueError
        The default or a rule names a scene not in ``scene_names``.
    """

    def __init__(self, roadmap: RoadMap, scene_rules: SceneRules, scene_names: Sequence[str]) -> None:
        self.roadmap = roadmap
        self.names: tuple[str, ...] = tuple(scene_names)
        if len(set(self.names)) != len(self.names):
            msg = f"duplicate scene names in {list(self.names)}"
            raise ValueError(msg)
        index = {name: i for i, name in enumerate(self.names)}
        allowed = ", ".join(self.names)
        if scene_rules.default not in index:
            msg = f"scene_rules.default: unknown scene {scene_rules.default!r} (allowed: {allowed})"
            raise ValueError(msg)
        for i, rule in enumerate(scene_rules.rules):
            if rule.scene not in index:
                msg = f"scene_rules.rules[{i}].scene: unknown scene {rule.scene!r} (allowed: {allowed})"
                raise ValueError(msg)

        scene = np.full(roadmap.n_edges, index[scene_rules.default], dtype=np.int16)
        free = np.ones(roadmap.n_edges, dtype=bool)
        for i, rule in enumerate(scene_rules.rules):
            hit = match_rule(roadmap, rule, candidates=free)
            scene[hit] = index[rule.scene]
            free &= ~hit
            logger.debug("scene rule %d (%s) matched %d edges", i, rule.scene, int(hit.sum()))
        scene.setflags(write=False)
        self.edge_scene: np.ndarray = scene

    def scene_of(self, edge_i: int) -> str:
        """Return the scene name of edge-table row ``edge_i``."""
        return self.names[int(self.edge_scene[edge_i])]

    def scene_index(self, name: str) -> int:
        """Return the index of a scene name in :attr:`names` (``ValueError`` if unknown)."""
        try:
            return self.names.index(name)
        except ValueError:
            msg = f"unknown scene {name!r} (allowed: {', '.join(self.names)})"
            raise ValueError(msg) from None

    def route_scenes(self, route: Route) -> np.ndarray:
        """Return the scene index of each edge of a route (``(E,)`` int16)."""
        return self.edge_scene[route.edges]

    def edge_counts(self) -> dict[str, int]:
        """Return the number of edges in each scene (every scene listed, zeros included)."""
        counts = np.bincount(self.edge_scene, minlength=len(self.names))
        return {name: int(counts[i]) for i, name in enumerate(self.names)}

    def length_by_scene_m(self) -> dict[str, float]:
        """Return the total polyline length of the edges of each scene, in metres."""
        total = np.bincount(self.edge_scene, weights=self.roadmap.polyline_m, minlength=len(self.names))
        return {name: float(total[i]) for i, name in enumerate(self.names)}

    def __repr__(self) -> str:
        return f"SceneMap({self.edge_counts()})"


def match_rule(roadmap: RoadMap, rule: SceneRule, *, candidates: np.ndarray | None = None) -> np.ndarray:
    """Return which edges a rule matches.

    Parameters
    ----------
    roadmap
        The map.
    rule
        The rule (its ``scene`` is not used).
    candidates
        Boolean ``(E,)`` mask of the edges to test; others are reported as not matching.

    Returns
    -------
    numpy.ndarray
        Boolean ``(E,)`` mask.
    """
    hit = np.ones(roadmap.n_edges, dtype=bool) if candidates is None else np.array(candidates, dtype=bool)
    if rule.polygon is not None and hit.any():
        polygon = shapely.Polygon([tuple(map(float, p)) for p in rule.polygon])
        mid = roadmap.edge_mid_lonlat
        hit &= shapely.contains_xy(polygon, mid[:, 0], mid[:, 1])
    tags = roadmap.edge_tags
    for key, wanted in rule.tags.items():
        rows = np.flatnonzero(hit)
        if len(rows) == 0:
            break
        ok = np.fromiter((_tag_matches(tags[i].get(key), wanted) for i in rows), dtype=bool, count=len(rows))
        hit[rows[~ok]] = False
    return hit


def _tag_matches(value: Any, wanted: str | bool | list[str]) -> bool:
    """Whether an edge's tag value (``None`` if absent, a ``str`` or a ``list[str]``) meets a condition."""
    if isinstance(wanted, bool):
        return (value is not None) is wanted
    if value is None:
        return False
    have = value if isinstance(value, list) else [value]
    if isinstance(wanted, str):
        return wanted in have
    return any(w in have for w in wanted)
