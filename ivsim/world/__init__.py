"""The world: road maps, routes over them, and the radio scene of every road edge."""

from ivsim.world.maps import MAP_SUFFIXES, SCENE_TAGS, SPLIT_AT_TAGS, RoadMap, load_map
from ivsim.world.routes import Route, Router, candidate_nodes, nodes_in_polygon
from ivsim.world.scenes import SceneMap, match_rule

__all__ = [
    "MAP_SUFFIXES",
    "SCENE_TAGS",
    "SPLIT_AT_TAGS",
    "RoadMap",
    "Route",
    "Router",
    "SceneMap",
    "candidate_nodes",
    "load_map",
    "match_rule",
    "nodes_in_polygon",
]
