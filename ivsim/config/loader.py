"""Load a scenario YAML file into a :class:`~ivsim.config.schema.Scenario`.

Every problem of a file is reported at once, one line each, in a single
:class:`~ivsim.errors.ScenarioError`::

    scenarios/demo.yaml:12: vehicles.0.speed_factor: Input should be greater than 0 (got -1)
    scenarios/demo.yaml:3: unknown key 'duraton_s', did you mean 'duration_s'? (allowed: name, seed, ...)
    scenarios/demo.yaml: --set link.direction=sideways: link.direction: unknown value 'sideways' (allowed: ...)

The line is the one of the deepest node of the YAML file on the problem's
field path (for a missing field, its parent mapping; for an unknown key, the
key itself). A problem on a path set with ``--set`` names the override instead
of a line.
"""

from __future__ import annotations

import copy
import difflib
import logging
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core.core_schema import ErrorType

from ivsim.config.schema import Scenario
from ivsim.errors import ScenarioError

__all__ = ["apply_overrides", "load_scenario", "load_scenario_text", "scenario_to_yaml"]

logger = logging.getLogger(__name__)

_Path = tuple[Any, ...]
_AFTER_FILE = 1 << 62  # sort key of problems that name an override instead of a line

# --------------------------------------------------------------------------- public API


def load_scenario(
    path: str | Path,
    *,
    overrides: Sequence[str] = (),
    seed: int | None = None,
) -> Scenario:
    """Read, override and validate a scenario file.

    Parameters
    ----------
    path
        The scenario YAML file. Relative paths inside it (the map, the output
        root) are resolved against its folder.
    overrides
        ``dotted.path=value`` strings applied before validation, in order (see
        :func:`apply_overrides`).
    seed
        If given, replaces the file's ``seed`` (after the overrides).

    Returns
    -------
    Scenario
        The validated, frozen scenario.

    Raises
    ------
    ScenarioError
        If the file cannot be read or parsed, or if anything in it or in the
        overrides is invalid; every problem is one line of the message, in
        the form ``FILE:LINE: field.path: what is wrong (allowed: ...)``.
    """
    name = str(path)
    file = Path(path).expanduser()
    text = _read_text(file, name)
    return load_scenario_text(text, name=name, base_dir=file.absolute().parent, overrides=overrides, seed=seed)


def load_scenario_text(
    text: str,
    *,
    name: str = "<string>",
    base_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    seed: int | None = None,
) -> Scenario:
    """Validate a scenario given as YAML text (same rules as :func:`load_scenario`).

    Parameters
    ----------
    text
        The YAML text.
    name
        What to call the text in messages (in place of a file name).
    base_dir
        Folder relative paths are resolved against; ``None`` leaves them as written.
    overrides
        ``dotted.path=value`` strings applied before validation (see :func:`apply_overrides`).
    seed
        If given, replaces the text's ``seed`` (after the overrides).

    Returns
    -------
    Scenario
        The validated, frozen scenario.

    Raises
    ------
    ScenarioError
        If the text is not YAML, not a mapping, or anything in it is invalid.
    """
    data, lines = _parse(text, name)
    # (line, order, text); problems of overrides sort after those of the file.
    rows = [
        (line, 0, f"{name}:{line}: {path}: duplicate key (first at line {first})")
        for path, line, first in lines.duplicates
    ]

    data, override_problems, applied = _apply(data, overrides, source="--set")
    rows += [(_AFTER_FILE, 0, f"{name}: {problem}") for problem in override_problems]
    if seed is not None:
        data["seed"] = seed
        applied.append((("seed",), f"seed={seed!r}"))

    context = {"base_dir": None if base_dir is None else Path(base_dir)}
    try:
        scenario = Scenario.model_validate(data, context=context)
    except ValidationError as exc:
        rows += _report(exc, data, lines, applied, name)
    else:
        if not rows:
            return scenario
    problems = list(dict.fromkeys(_one_line(row[2]) for row in sorted(rows)))
    raise ScenarioError("\n".join(problems), problems=problems)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], *, source: str = "--set") -> dict[str, Any]:
    """Return a copy of ``data`` with ``dotted.path=value`` overrides applied.

    Parameters
    ----------
    data
        Raw scenario data (as loaded from YAML); not modified.
    overrides
        Strings ``PATH=VALUE``. ``PATH`` is dot-separated: integers index
        lists (``vehicles.0.speed_factor``), other segments are keys of
        mappings (``profiles.uma_nlos.los``); missing keys are created.
        ``VALUE`` is parsed as YAML, so ``no`` is ``false`` and ``"no"`` a
        string.
    source
        How to name an override in messages (``--set PATH=VALUE: ...``).

    Returns
    -------
    dict
        A new dict with the overrides applied in order.

    Raises
    ------
    ScenarioError
        One line per bad override: no ``=``, an empty path segment, a list
        index out of range, a path through a scalar, or a value that is not YAML.
    """
    result, problems, _ = _apply(data, overrides, source=source)
    problems = [_one_line(problem) for problem in problems]
    if problems:
        raise ScenarioError("\n".join(problems), problems=problems)
    return result


def scenario_to_yaml(scenario: Scenario) -> str:
    """Return the resolved scenario (every default filled in) as YAML.

    Parameters
    ----------
    scenario
        A validated scenario.

    Returns
    -------
    str
        YAML that :func:`load_scenario` reads back to an equal scenario (paths
        in it are already resolved, so absolute).
    """
    return yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------- reading and parsing


def _one_line(text: str) -> str:
    """Escape line breaks and other control characters so that a problem stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _fail(message: str) -> ScenarioError:
    message = _one_line(message)
    return ScenarioError(message, problems=[message])


def _field_list(model: type[BaseModel], *, limit: int | None = None) -> str:
    names = list(model.model_fields)
    if limit is not None and len(names) > limit:
        return ", ".join(names[:limit]) + ", ..."
    return ", ".join(names)


def _read_text(file: Path, name: str) -> str:
    try:
        if file.is_dir():
            raise _fail(f"{name}: is a directory, not a scenario file")
        if not file.exists():
            raise _fail(f"{name}: no such file")
        return file.read_text(encoding="utf-8-sig")
    except PermissionError:
        raise _fail(f"{name}: cannot read the file: permission denied") from None
    except UnicodeDecodeError as exc:
        raise _fail(f"{name}: not a UTF-8 text file (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise _fail(f"{name}: cannot read the file: {exc.strerror or exc}") from None


@dataclass
class _Lines:
    """Where each field path of the YAML document is (1-based lines)."""

    root: int = 1
    at: dict[_Path, int] = field(default_factory=dict)
    duplicates: list[tuple[str, int, int]] = field(default_factory=list)

    def line(self, path: Sequence[Any]) -> int:
        """Return the line of the deepest node of the document on ``path``."""
        for end in range(len(path), 0, -1):
            line = self.at.get(_key_path(path[:end]))
            if line is not None:
                return line
        return self.root


def _key_path(path: Sequence[Any]) -> _Path:
    # True == 1 and hash alike; tag the type so a boolean key never stands for an index.
    return tuple((type(p).__name__, p) if isinstance(p, bool) else p for p in path)


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__}"


def _parse(text: str, name: str) -> tuple[dict[str, Any], _Lines]:
    """Parse YAML text (``yaml.safe_load`` semantics) and map field paths to lines."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines = _Lines()
        if node is not None:
            _find_duplicates(node, (), lines, set())
            data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is None:
            raise _fail(f"{name}: YAML syntax error: {problem}") from None
        where = f"column {mark.column + 1}"
        if exc.context and exc.problem and exc.context_mark is not None:
            where += f", {exc.context} at line {exc.context_mark.line + 1}"
        raise _fail(f"{name}:{mark.line + 1}: YAML syntax error: {problem} ({where})") from None
    except yaml.YAMLError as exc:
        raise _fail(f"{name}: YAML syntax error: {exc}") from None
    except RecursionError:
        raise _fail(f"{name}: YAML syntax error: nested too deeply") from None
    finally:
        loader.dispose()

    if node is None:
        raise _fail(f"{name}: the file is empty (expected a mapping of fields: {_field_list(Scenario, limit=3)})")
    lines.root = node.start_mark.line + 1
    if not isinstance(data, dict):
        raise _fail(
            f"{name}:{lines.root}: the top level must be a mapping of fields ({_field_list(Scenario, limit=3)}), "
            f"got {_kind_of(data)}"
        )
    # After construction merge keys (<<) are flattened into their mappings, with their own lines.
    try:
        _map_lines(node, (), lines, set())
    except RecursionError:  # absurdly deep: lines fall back to the nearest mapped parent
        pass
    return data, lines


def _key_of(node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        try:
            return yaml.SafeLoader("").construct_object(node)
        except yaml.YAMLError:
            return node.value
    return None  # a complex key: pydantic would reject the whole mapping anyway


def _dotted(path: Sequence[Any]) -> str:
    return ".".join(str(p) for p in path)


def _find_duplicates(node: yaml.Node, path: _Path, lines: _Lines, seen: set[int]) -> None:
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = _key_of(key_node)
            line = key_node.start_mark.line + 1
            try:
                if key in first:
                    lines.duplicates.append((_dotted((*path, key)), line, first[key]))
                else:
                    first[key] = line
            except TypeError:  # unhashable: the constructor reports it
                pass
            _find_duplicates(value_node, (*path, key), lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _find_duplicates(item, (*path, i), lines, seen)
    seen.discard(id(node))


def _map_lines(node: yaml.Node, path: _Path, lines: _Lines, seen: set[int]) -> None:
    if id(node) in seen:  # a recursive alias
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = (*path, _key_of(key_node))
            try:
                lines.at[_key_path(key_path)] = key_node.start_mark.line + 1
            except TypeError:
                continue
            _map_lines(value_node, key_path, lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.at[_key_path((*path, i))] = item.start_mark.line + 1
            _map_lines(item, (*path, i), lines, seen)
    seen.discard(id(node))


# --------------------------------------------------------------------------- overrides


_INDEX = re.compile(r"[+-]?\d+")


def _apply(
    data: Mapping[str, Any], overrides: Sequence[str], *, source: str
) -> tuple[dict[str, Any], list[str], list[tuple[_Path, str]]]:
    """Apply overrides to a deep copy; return it, the problems and the (path, label) of each override applied."""
    result = copy.deepcopy(dict(data))
    problems: list[str] = []
    applied: list[tuple[_Path, str]] = []
    if isinstance(overrides, str):
        overrides = [overrides]
    for text in overrides:
        label = f"{source} {text}"
        problem, path = _apply_one(result, str(text))
        if problem is not None:
            problems.append(f"{label}: {problem}")
        else:
            applied.append((path, label))
    return result, problems, applied


def _apply_one(data: dict[str, Any], text: str) -> tuple[str | None, _Path]:
    """Apply one ``PATH=VALUE`` in place; return (problem or None, the path as keys and indices)."""
    if "=" not in text:
        return "expected PATH=VALUE (e.g. vehicles.0.speed_factor=1.2)", ()
    path_text, value_text = text.split("=", 1)
    path_text = path_text.strip()
    if not path_text:
        return "empty path before '=' (expected PATH=VALUE, e.g. vehicles.0.speed_factor=1.2)", ()
    segments = path_text.split(".")
    if any(not s.strip() for s in segments):
        return f"empty segment in path {path_text!r} (segments are separated by single dots)", ()
    segments = [s.strip() for s in segments]
    try:
        value = yaml.safe_load(value_text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return f"the value is not valid YAML: {problem}", ()
    except RecursionError:
        return "the value is not valid YAML: nested too deeply", ()

    container: Any = data
    done: list[Any] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        where = _dotted(done) or "the top level"
        if isinstance(container, list):
            if not _INDEX.fullmatch(segment):
                return f"{where} is a list, so {segment!r} must be an item number (0..{len(container) - 1})", ()
            index = int(segment)
            if not 0 <= index < len(container):
                count = {0: "no items", 1: "1 item"}.get(len(container), f"{len(container)} items")
                return f"index {index} is out of range: {where} has {count}", ()
            key: Any = index
        elif isinstance(container, dict):
            key = segment
            if key not in container and _INDEX.fullmatch(segment) and int(segment) in container:
                key = int(segment)
            if not last and container.get(key) is None:
                container[key] = {}
        else:
            return (
                f"cannot go into {where} with {segment!r}: it is {_kind_of(container)} ({_show(container)}), "
                "not a mapping or a list"
            ), ()
        done.append(key)
        if last:
            container[key] = value
        else:
            container = container[key]
    return None, tuple(done)


# --------------------------------------------------------------------------- walking the schema along a loc


def _unwrap(tp: Any, discriminator: Any = None) -> tuple[Any, list[Any], Any]:
    """Strip ``Annotated`` and ``None`` from a type; return (type, metadata, discriminator)."""
    metadata: list[Any] = []
    while True:
        if get_origin(tp) is Annotated:
            tp, *meta = get_args(tp)
            metadata.extend(meta)
            for item in meta:
                if isinstance(item, FieldInfo):
                    metadata.extend(item.metadata)
                    if item.discriminator is not None:
                        discriminator = item.discriminator
            continue
        if _is_union(tp):
            members = [m for m in get_args(tp) if m is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
        return tp, metadata, discriminator


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _field_type(info: FieldInfo) -> tuple[Any, Any]:
    tp = info.annotation
    if info.metadata:
        tp = Annotated[(tp, *info.metadata)]
    return tp, info.discriminator


def _tags(member: Any, discriminator: str) -> tuple[Any, ...]:
    member = _unwrap(member)[0]
    if _is_model(member) and discriminator in member.model_fields:
        annotation = _unwrap(member.model_fields[discriminator].annotation)[0]
        if get_origin(annotation) is Literal:
            return get_args(annotation)
    return ()


def _member_by_label(members: Sequence[Any], label: Any) -> Any:
    label = str(label)
    for member in members:
        tp = _unwrap(member)[0]
        if _is_model(tp) and tp.__name__ == label:
            return member
    for member in members:
        tp = _unwrap(member)[0]
        origin = get_origin(tp)
        if (
            (origin is Literal and label.startswith("literal["))
            or (isinstance(tp, type) and label in (tp.__name__, f"constrained-{tp.__name__}"))
            or (origin is not None and getattr(origin, "__name__", "") and label.startswith(f"{origin.__name__}["))
        ):
            return member
    return None


@dataclass(frozen=True)
class _UnionPoint:
    depth: int  # len(path) where the union is
    label: str  # the member pydantic tried
    members: tuple[Any, ...]
    member: Any  # the member type, if recognised


@dataclass
class _Site:
    """A pydantic loc walked through the schema: the user's path and what the schema expects there."""

    path: list[Any]
    type: Any = None
    unions: list[_UnionPoint] = field(default_factory=list)
    is_key: bool = False


def _walk(loc: Sequence[Any]) -> _Site:
    site = _Site(path=[])
    tp: Any = Scenario
    discriminator: Any = None
    i = 0
    while i < len(loc):
        item = loc[i]
        if tp is None:
            if item != "[key]":
                site.path.append(item)
            else:
                site.is_key = True
            i += 1
            continue
        tp, _, discriminator = _unwrap(tp, discriminator)
        if _is_union(tp):
            members = tuple(m for m in get_args(tp) if m is not type(None))
            if isinstance(discriminator, str):
                tagged = [m for m in members if item in _tags(m, discriminator)]
                tp, discriminator = (tagged[0] if tagged else None), None
                if tagged:
                    i += 1
                continue
            member = _member_by_label(members, item)
            site.unions.append(_UnionPoint(len(site.path), str(item), members, member))
            tp, discriminator = member, None
            i += 1
            continue
        discriminator = None
        origin = get_origin(tp)
        args = get_args(tp)
        next_is_key = i + 1 < len(loc) and loc[i + 1] == "[key]"
        if item == "[key]":
            site.is_key = True
        else:
            site.path.append(item)
        if _is_model(tp):
            info = tp.model_fields.get(item) if isinstance(item, str) else None
            tp, discriminator = _field_type(info) if info is not None else (None, None)
        elif origin in (list, set, frozenset) and args:
            tp = args[0]
        elif origin is tuple and args:
            if len(args) == 2 and args[1] is Ellipsis:
                tp = args[0]
            else:
                tp = args[item] if isinstance(item, int) and 0 <= item < len(args) else None
        elif origin is dict and len(args) == 2:
            tp = args[0] if next_is_key else args[1]
            if next_is_key:
                site.is_key = True
                i += 1
        else:
            tp = None
        i += 1
    if tp is not None:
        tp, _, discriminator = _unwrap(tp, discriminator)
    site.type = tp
    return site


def _lookup(data: Any, path: Sequence[Any]) -> tuple[bool, Any]:
    for key in path:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, data


# --------------------------------------------------------------------------- turning pydantic errors into lines


_STRUCTURAL_TYPES = {
    "literal_error",
    "enum",
    "int_from_float",
    "none_required",
    "union_tag_invalid",
    "union_tag_not_found",
    "is_instance_of",
    "model_attributes_type",
}


_PYDANTIC_ERROR_TYPES = frozenset(get_args(ErrorType))


def _is_type_error(kind: str) -> bool:
    return kind in _STRUCTURAL_TYPES or kind.endswith(("_type", "_parsing"))


@dataclass
class _Problem:
    path: list[Any]
    kind: str
    message: str
    value: Any
    ctx: dict[str, Any]
    site: _Site
    loc: tuple[Any, ...] = ()
    has_value: bool = True


def _describe_member(member: Any) -> str:
    tp, metadata, _ = _unwrap(member)
    if _is_model(tp):
        required = [n for n, f in tp.model_fields.items() if f.is_required()] or list(tp.model_fields)
        return "{" + ", ".join(required) + "}"
    origin = get_origin(tp)
    if origin is Literal:
        return " or ".join(_show(a) for a in get_args(tp))
    if origin in (list, tuple, set, frozenset):
        return "a list"
    if origin is dict:
        return "a mapping"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    text = names.get(tp, getattr(tp, "__name__", str(tp)))
    bounds = []
    for item in metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(item, attr, None)
            if bound is not None:
                bounds.append(f"{sign} {_show(bound)}")
    return text + (f" {' and '.join(bounds)}" if bounds else "")


def _join_or(items: Sequence[str]) -> str:
    items = list(dict.fromkeys(items))
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _collapse(problems: list[_Problem], data: Any) -> list[_Problem]:
    """Resolve union errors: keep the errors of the member the input was meant for, else one summary."""
    out: list[_Problem] = []
    groups: dict[_Path, list[_Problem]] = {}
    for problem in problems:
        if not problem.site.unions:
            out.append(problem)
            continue
        point = problem.site.unions[0]
        groups.setdefault(_key_path(problem.site.path[: point.depth]), []).append(problem)
    for group in groups.values():
        point = group[0].site.unions[0]
        by_member: dict[str, list[_Problem]] = {}
        for problem in group:
            by_member.setdefault(problem.site.unions[0].label, []).append(problem)
        members = {p.site.unions[0].label: p.site.unions[0].member for p in group}
        union_path = group[0].site.path[: point.depth]
        found, value = _lookup(data, union_path)

        def structural(problem: _Problem, depth: int = point.depth) -> bool:
            here = len(problem.site.path) - (1 if problem.site.is_key else 0)
            if here == depth:
                return _is_type_error(problem.kind)
            return here == depth + 1 and problem.kind in ("missing", "extra_forbidden")

        clean = [label for label, items in by_member.items() if not any(structural(p) for p in items)]
        chosen = clean[0] if clean else None
        if chosen is None and isinstance(value, Mapping) and value:
            fits = []
            for label, member in members.items():
                tp = _unwrap(member)[0] if member is not None else None
                if _is_model(tp) and set(map(str, value)) <= set(tp.model_fields):
                    fits.append(label)
            if len(fits) == 1:
                chosen = fits[0]
        if chosen is not None:
            popped = [replace(p, site=replace(p.site, unions=p.site.unions[1:])) for p in by_member[chosen]]
            out.extend(_collapse(popped, data))
            continue
        expected = _join_or([_describe_member(m) for m in point.members])
        message = f"expected {expected}"
        if found:
            got = f"got {_show(value)}" if not isinstance(value, Mapping) else f"got keys {_show(list(value))}"
            message += f" ({got})"
        site = _Site(path=list(union_path), type=None)
        out.append(_Problem(list(union_path), "union", message, value, {}, site, tuple(union_path), has_value=False))
    return out


def _got(value: Any) -> str:
    """Say what kind of value was received, and show it."""
    return "null" if value is None else f"{_kind_of(value)} ({_show(value)})"


def _show(value: Any, *, limit: int = 60) -> str:
    """Show a value as a user wrote it in YAML, shortened."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str | int | float):
        text = repr(value)
    else:
        try:
            text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
            text = text.removesuffix("...").strip()
        except (yaml.YAMLError, RecursionError, TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _allowed(problem: _Problem) -> list[str]:
    tp = problem.site.type
    if get_origin(tp) is Literal:
        return [str(a) for a in get_args(tp)]
    expected = str(problem.ctx.get("expected", ""))
    if not expected:
        return []
    return [part.strip().strip("'\"") for part in re.split(r",|\bor\b", expected) if part.strip()]


def _common_tag(tp: Any) -> tuple[str, list[Any]] | None:
    """The field every member of a union of models fixes with a ``Literal`` (a discriminator), and its values."""
    if not _is_union(tp):
        return None
    members = [_unwrap(m)[0] for m in get_args(tp)]
    if not members or not all(_is_model(m) for m in members):
        return None
    for name in members[0].model_fields:
        tags = [t for m in members for t in _tags(m, name)]
        if all(_tags(m, name) for m in members):
            return name, tags
    return None


def _model_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    tp = _walk(loc).type
    return tp if _is_model(tp) else None


def _human(problem: _Problem) -> str:
    kind, message, value = problem.kind, problem.message, problem.value
    scalar = value is None or isinstance(value, str | int | float | bool)
    if kind == "missing":
        return "required field missing"
    if kind == "extra_forbidden":
        key = problem.path[-1] if problem.path else value
        model = _model_at(problem.loc[:-1])
        if model is None:
            return f"unknown key {_show(key)}"
        names = list(model.model_fields)
        close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
        hint = f", did you mean {close[0]!r}?" if close else ""
        return f"unknown key {_show(key)}{hint} (allowed: {', '.join(names)})"
    if kind in ("literal_error", "enum"):
        allowed = _allowed(problem)
        text = f"unknown value {_show(value)}" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
        if isinstance(value, bool) and allowed:
            text += "; YAML reads yes/no/on/off as true/false, quote the word to mean a string"
        return text
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        expected = [p.strip().strip("'\"") for p in str(problem.ctx.get("expected_tags", "")).split(",") if p.strip()]
        if not expected and _is_union(problem.site.type):
            expected = [str(t) for m in get_args(problem.site.type) for t in _tags(m, problem.path[-1])]
        allowed = f" (allowed: {', '.join(expected)})" if expected else ""
        if kind == "union_tag_invalid":
            tag = value.get(problem.path[-1]) if isinstance(value, Mapping) else problem.ctx.get("tag")
            return f"unknown value {_show(tag)}{allowed}"
        return f"required field missing{allowed}"
    if kind in ("model_type", "model_attributes_type"):
        model = problem.site.type
        if _is_model(model):
            return f"expected a mapping of fields ({_field_list(model)}), got {_got(value)}"
        tag = _common_tag(model)
        if tag is not None:
            field_name, tags = tag
            allowed = ", ".join(map(str, tags))
            return f"expected a mapping with a {field_name!r} field (allowed: {allowed}), got {_got(value)}"
        return f"expected a mapping, got {_got(value)}"
    if kind == "dict_type":
        return f"expected a mapping, got {_got(value)}"
    if kind in ("list_type", "tuple_type", "set_type"):
        return f"expected a list, got {_got(value)}"
    if kind in ("value_error", "assertion_error"):
        message = re.sub(r"^(Value error|Assertion failed), ", "", message)
        return message
    if kind not in _PYDANTIC_ERROR_TYPES:  # our own checks (PydanticCustomError): already human
        return message
    if problem.site.is_key:
        message = f"invalid key: {message}"
    if problem.has_value and scalar and kind != "recursion_loop":
        message += f" (got {_show(value)})"
    return message


def _problems_of(errors: Sequence[Mapping[str, Any]]) -> list[_Problem]:
    problems = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        site = _walk(loc)
        kind = str(err.get("type", ""))
        ctx = dict(err.get("ctx") or {})
        path = list(site.path)
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            discriminator = str(ctx.get("discriminator", "")).strip("'\"")
            if discriminator and not discriminator.startswith("function"):
                path.append(discriminator)
        site = replace(site, path=path)
        problems.append(_Problem(path, kind, str(err.get("msg", "")), err.get("input"), ctx, site, loc))
    return problems


def _misspelling_of(problem: _Problem) -> str | None:
    """The field an unknown key most likely misspells, if any."""
    model = _model_at(problem.loc[:-1])
    if model is None or not problem.path:
        return None
    close = difflib.get_close_matches(str(problem.path[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return close[0] if close else None


def _drop_misspelt_missing(problems: list[_Problem]) -> list[_Problem]:
    """Drop 'required field missing' for a field that an unknown key beside it misspells (one mistake, one line)."""
    misspelt = {
        (_key_path(p.path[:-1]), name)
        for p in problems
        if p.kind == "extra_forbidden" and (name := _misspelling_of(p)) is not None
    }
    return [
        p
        for p in problems
        if not (p.kind == "missing" and p.path and (_key_path(p.path[:-1]), p.path[-1]) in misspelt)
    ]


def _report(
    exc: ValidationError,
    data: dict[str, Any],
    lines: _Lines,
    applied: Sequence[tuple[_Path, str]],
    name: str,
) -> list[tuple[int, int, str]]:
    problems = _drop_misspelt_missing(_collapse(_problems_of(exc.errors(include_url=False)), data))
    field_paths = {_key_path(p.path) for p in problems}
    for problem in _problems_of(_cross_reference_errors(exc, data)):
        if _key_path(problem.path) not in field_paths:
            problems.append(problem)

    rows: list[tuple[int, int, str]] = []
    for order, problem in enumerate(problems, start=1):
        text = _human(problem)
        where = f"{_dotted(problem.path)}: " if problem.path else ""
        label = _override_for(problem.path, applied)
        if label is not None:
            rows.append((_AFTER_FILE, order, f"{name}: {label}: {where}{text}"))
        else:
            line = lines.line(problem.path)
            rows.append((line, order, f"{name}:{line}: {where}{text}"))
    return rows


def _override_for(path: Sequence[Any], applied: Sequence[tuple[_Path, str]]) -> str | None:
    """The label of the last override whose path contains ``path`` or lies under it."""
    if not path:
        return None
    key = _key_path(path)
    for override_path, label in reversed(applied):
        other = _key_path(override_path)
        n = min(len(key), len(other))
        if key[:n] == other[:n]:
            return label
    return None


# --------------------------------------------------------------------------- cross references despite field errors


class _Raw:
    """Attribute access to raw data shaped like ``model`` (defaults filled), for the model's own checks."""

    def __init__(self, data: Mapping[str, Any], model: type[BaseModel]) -> None:
        self._data = data
        self._model = model

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        info = self._model.model_fields.get(name)
        if name in self._data:
            return _raw(self._data[name], _field_type(info)[0] if info is not None else None)
        if info is not None and not info.is_required():
            return info.get_default(call_default_factory=True)
        raise AttributeError(name)


def _raw(value: Any, tp: Any) -> Any:
    tp = _unwrap(tp)[0] if tp is not None else None
    origin, args = get_origin(tp), get_args(tp)
    if _is_model(tp) and isinstance(value, Mapping):
        return _Raw(value, tp)
    if origin is list and args and isinstance(value, list):
        return [_raw(v, args[0]) for v in value]
    if origin is dict and len(args) == 2 and isinstance(value, Mapping):
        return {k: _raw(v, args[1]) for k, v in value.items()}
    return value


def _cross_reference_errors(exc: ValidationError, data: dict[str, Any]) -> list[Mapping[str, Any]]:
    """Run the scenario's own model checks on the raw data (they are skipped while a field is invalid).

    Best effort: a check that cannot run on the raw shapes is skipped.
    """
    if any(not err.get("loc") for err in exc.errors(include_url=False)):
        return []  # the whole scenario failed, nothing to add
    errors: list[Mapping[str, Any]] = []
    for decorator in Scenario.__pydantic_decorators__.model_validators.values():
        if decorator.info.mode != "after":
            continue
        try:
            decorator.func(_Raw(data, Scenario))
        except ValidationError as found:
            errors.extend(found.errors(include_url=False))
        except Exception as skipped:  # noqa: BLE001 - raw data may have any shape; the field errors say why
            logger.debug("skipped %s on raw data: %r", decorator.cls_var_name, skipped)
    return errors
