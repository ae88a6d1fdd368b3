"""Exceptions raised by ivsim.

Every error a user can cause (a bad scenario, map, weight file or flag) is an
:class:`IvsimError`. The CLI turns it into one line on stderr and exit code 2.
"""

from __future__ import annotations

__all__ = [
    "IvsimError",
    "MapError",
    "ModelError",
    "OutputError",
    "RouteError",
    "ScenarioError",
]


class IvsimError(Exception):
    """Base class of every user-facing ivsim error; its message is one line."""


class ScenarioError(IvsimError):
    """A scenario file or override is invalid.

    Parameters
    ----------
    message
        One line per problem, each ``FILE:LINE: field.path: what is wrong (allowed: ...)``.
    problems
        The same problems as a list, for programmatic use.
    """

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [message]


class MapError(IvsimError):
    """A map file is missing, unreadable or not a road network."""


class RouteError(IvsimError):
    """An origin, destination or via point is off the map or unreachable."""


class ModelError(IvsimError):
    """A weight file is missing, corrupt or does not fit its model."""


class OutputError(IvsimError):
    """A run directory cannot be written or already holds a run."""
