"""Registries keyed by the YAML ``kind``, open to ``module:Class`` plug-ins.

Codecs, channel estimators (and later policies and detectors) are looked up by
their ``kind``; a kind of the form ``package.module:ClassName`` imports a
researcher's own class instead. :func:`resolve_kind` is the one lookup they share.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module

from ivsim.errors import IvsimError

__all__ = ["resolve_kind"]


def resolve_kind(kind: str, registry: Mapping[str, type], *, what: str, error: type[IvsimError]) -> type:
    """Return the class registered as ``kind``, or imported from ``"module:Class"``.

    Parameters
    ----------
    kind
        A registry key or ``"package.module:ClassName"``.
    registry
        The built-in kinds.
    what
        What is looked up (``"codec"``, ``"estimator"``), for messages.
    error
        The exception class raised, with a one-line message.
    """
    if ":" in kind:
        mod_name, _, cls_name = kind.partition(":")
        try:
            module = import_module(mod_name)
        except ImportError as exc:
            msg = f"{what} {kind!r}: cannot import module {mod_name!r} ({exc})"
            raise error(msg) from None
        try:
            return getattr(module, cls_name)
        except AttributeError:
            msg = f"{what} {kind!r}: module {mod_name!r} has no attribute {cls_name!r}"
            raise error(msg) from None
    if kind in registry:
        return registry[kind]
    msg = f"unknown {what} kind {kind!r} (allowed: {', '.join(sorted(registry))}, or 'module:Class')"
    raise error(msg)
