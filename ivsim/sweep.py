"""Parameter sweeps: one base scenario, a grid of ``--set`` overrides and seeds, run on a Dask cluster.

A sweep file is YAML::

    name: bridge_policies                # optional; default the file's stem (names the output folder)
    base: ../nyc_brooklyn_bridge.yaml    # the base scenario, relative to this file's folder
    set:                                 # optional: overrides applied to every run
      link.fidelity: analytic
    runs:                                # optional: override sets that are not a grid; each one
      - {refinement.policy: {kind: never}}                   # is combined with the whole grid
      - {refinement.policy: {kind: proactive, margin_s: 10}}
    grid:                                # optional: override path -> list of values; every combination runs
      traffic.fps: [0.5, 1]
      link.direction: [downlink, uplink]
    seeds: [1, 2]                        # optional: default [the base scenario's seed]

(2 runs x 4 grid points x 2 seeds = 16 runs.) Keys of ``set``, ``grid`` and ``runs`` are the
dotted paths of ``ivsim run --set PATH=VALUE`` (``vehicles.0.speed_factor``); values are YAML
values (numbers, strings, mappings such as ``{kind: reactive}``), passed to the loader as
``--set`` strings. The runs of a sweep are ``runs x grid x seeds``; overrides apply in the
order ``set``, the run, the grid, and a path (or a path inside it) is swept in ``runs`` or in
``grid``, not both. The seed is set by ``seeds`` only. Every combination is validated against
the scenario schema before any run starts (:func:`load_sweep_file`).

Output, under ``OUT`` (``ivsim sweep -o OUT``, default ``runs/<sweep name>``)::

    OUT/<run name>/                  one run folder per run (events.parquet, manifest.json, ...),
                                     named from the swept values and the seed: kind=never,seed=1
    OUT/dataset/refinement__policy__kind=never/seed=1/part.parquet
                                     every run's events, hive-partitioned: one level per swept path
                                     (its dots written as __), then seed
    OUT/sweep.json                   the sweep's runs: overrides, seed, status, wall time, event counts
    OUT/failed.json                  the runs that failed and their one-line errors (only if any did)

:func:`load_sweep` reads the dataset back as one pandas (or dask) DataFrame with the partition
columns. Running a sweep again skips the runs already complete (same resolved scenario, a
``complete`` manifest and a partition); ``OUT`` belongs to one sweep file, and partitions of
runs no longer in it are removed from the dataset (their run folders are kept). Runs execute on a Dask ``distributed`` cluster (a
``LocalCluster`` by default, see :func:`sweep_client`) or, with ``client=None``, one after the
other in this process. Each run is one task (load the scenario with its overrides and seed,
:func:`ivsim.run_scenario` into its folder, write its partition) that returns a small summary;
a run that raises is recorded as failed and the others go on. Local workers are processes with
one thread each (``OMP_NUM_THREADS=1``, torch 1 thread, and :data:`LOCAL_CLUSTER_CONFIG`: no stack
sampler, a slow event-loop tick, glibc's own malloc trimming); a task whose worker dies is retried once
(``retries=1``, ``allowed-failures=1``), then recorded as failed. On a remote cluster
(``--scheduler tcp://HOST:PORT``) the workers need ivsim installed, ``OUT`` and the scenario
must be on a file system that every worker sees at the same path, and the cluster's own
``distributed.scheduler.allowed-failures`` applies.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote, unquote

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, ValidationError

from ivsim.errors import IvsimError, OutputError, ScenarioError

if TYPE_CHECKING:
    import pandas as pd

    from ivsim.config.schema import Scenario

__all__ = [
    "DATASET_DIR",
    "Sweep",
    "SweepResult",
    "SweepRun",
    "SweepSpec",
    "default_out_dir",
    "load_sweep",
    "load_sweep_file",
    "partition_column",
    "pending_runs",
    "run_sweep",
    "sweep_client",
]

logger = logging.getLogger(__name__)

DATASET_DIR = "dataset"
PART_FILE = "part.parquet"
SWEEP_FILE = "sweep.json"
FAILED_FILE = "failed.json"
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"  # how hive writes a null partition value

_PATH_RE = re.compile(r"[^.=\s]+(\.[^.=\s]+)*")
_SAFE_RE = re.compile(r"[A-Za-z0-9._+-]+")
_INT_RE = re.compile(r"[+-]?\d+")
_MAX_NAME = 180  # characters of a run folder name (file systems allow 255 bytes)
_MAX_LINES = 10  # problems shown of combinations that fail


# --------------------------------------------------------------------------- the sweep file


def _check_path(path: str) -> str:
    if not _PATH_RE.fullmatch(path):
        msg = f"override path {path!r}: expected dotted field names like refinement.policy.kind"
        raise ValueError(msg)
    if path == "seed":
        msg = "the seed is not an override: list it in `seeds: [...]`"
        raise ValueError(msg)
    return path


OverridePath = Annotated[str, AfterValidator(_check_path)]


class SweepSpec(BaseModel):
    """The contents of a sweep file (see the module docstring).

    Parameters
    ----------
    name
        Names the default output folder ``runs/<name>``; default the sweep file's stem.
    base
        The base scenario file, relative to the sweep file's folder.
    grid
        Override path -> values; the sweep runs their cartesian product.
    runs
        Override sets that are not a grid; each is combined with the whole grid.
    seeds
        Seeds of every combination; default the base scenario's ``seed``.
    set
        Overrides applied to every run (before ``runs`` and ``grid``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    base: str = Field(min_length=1)
    grid: dict[OverridePath, Annotated[list[Any], Field(min_length=1)]] = Field(default_factory=dict)
    runs: list[dict[OverridePath, Any]] = Field(default_factory=list)
    seeds: Annotated[list[StrictInt], Field(min_length=1)] | None = None
    set: dict[OverridePath, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep.

    Attributes
    ----------
    name
        Its run folder's name: the swept values and the seed, e.g. ``kind=never,seed=1``.
    overrides
        The ``PATH=VALUE`` strings that make it (``set``, then the run's, then the grid's).
    seed
        Its seed.
    values
        ``(swept path, partition value)`` for every swept path, in partition order: the value
        the run sets, or the base scenario's for a path this run does not set.
    scenario_hash
        :meth:`~ivsim.config.schema.Scenario.scenario_hash` of its resolved scenario.
    """

    name: str
    overrides: tuple[str, ...]
    seed: int
    values: tuple[tuple[str, str], ...]
    scenario_hash: str

    @property
    def partition(self) -> Path:
        """The run's partition folder, relative to the dataset folder."""
        parts = [f"{partition_column(p)}={quote(v, safe='')}" for p, v in self.values]
        return Path(*parts, f"seed={self.seed}")


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file, expanded into its runs.

    Attributes
    ----------
    file
        The sweep file.
    name
        The sweep's name.
    base
        The base scenario file (absolute).
    swept
        The swept override paths (``runs`` keys in order of appearance, then ``grid`` keys).
    runs
        Every run: ``runs x grid x seeds``, in that nesting order.
    spec
        The file's contents.
    """

    file: Path
    name: str
    base: Path
    swept: tuple[str, ...]
    runs: tuple[SweepRun, ...]
    spec: SweepSpec


def partition_column(path: str) -> str:
    """The dataset column of a swept override path: its dots written as ``__``."""
    return path.replace(".", "__")


def load_sweep_file(path: str | Path) -> Sweep:
    """Read a sweep file, expand its runs and validate every one against the scenario schema.

    Parameters
    ----------
    path
        The sweep YAML file.

    Returns
    -------
    Sweep
        The sweep and its runs; no run has started.

    Raises
    ------
    ScenarioError
        If the file cannot be read, has an unknown or invalid field, its base scenario is missing
        or invalid, or an override (or a combination of them) is not valid for the scenario; one
        line per problem, each naming the sweep file, where in it, the field path and what is allowed.
    """
    name = str(path)
    file = Path(path).expanduser()
    text = _read(file, name, what="sweep file")
    data, lines = _parse_yaml(text, name)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        problems = [_spec_problem(err, name, lines) for err in exc.errors(include_url=False)]
        raise _error(problems) from None

    base_display = os.path.normpath(file.parent / Path(spec.base).expanduser())
    base = (file.parent / Path(spec.base).expanduser()).resolve()
    where = f"{name}:{lines.get(('base',), 1)}: base"
    if not base.exists():
        raise _error([f"{where}: {base_display}: no such file (relative paths start at the sweep file's folder)"])
    base_text = _read(base, f"{where}: {base_display}", what="scenario file")
    runs_keys: list[str] = list(dict.fromkeys(k for run in spec.runs for k in run))
    for i, run in enumerate(spec.runs):
        for key in run:
            other = next((g for g in spec.grid if _overlap(key, g)), None)
            if other is not None:
                line = lines.get(("runs", i, key), 1)
                also = "is also swept in grid" if other == key else f"overlaps grid path {other}"
                msg = f"{name}:{line}: runs.{i}: {key}: {also} (a path goes in runs or in grid, not both)"
                raise _error([msg])
    for a, b in itertools.combinations(spec.grid, 2):
        if _overlap(a, b):
            msg = f"{name}:{lines.get(('grid', b), 1)}: grid: {b}: overlaps grid path {a} (sweep one of them)"
            raise _error([msg])
    swept = tuple(runs_keys + list(spec.grid))
    _check_columns(swept, name, lines)
    checker = _Checker(name, lines, base_text, base_display, base)

    # Each override alone first: a bad path or value is one line, whatever else it is combined with.
    set_ovs = [_override(k, v) for k, v in spec.set.items()]
    checker.check(set_ovs, {ov: ("set", k) for ov, k in zip(set_ovs, spec.set, strict=True)}, ("set",))
    checker.raise_if_any()
    for key, values in spec.grid.items():
        for i, value in enumerate(values):
            ov = _override(key, value)
            checker.check([*set_ovs, ov], {ov: ("grid", key, i)}, ("grid", key))
    for i, run in enumerate(spec.runs):
        ovs = [_override(k, v) for k, v in run.items()]
        checker.check([*set_ovs, *ovs], {ov: ("runs", i, k) for ov, k in zip(ovs, run, strict=True)}, ("runs", i))
    for i, seed in enumerate(spec.seeds or ()):
        checker.check(set_ovs, {}, ("seeds", i), seed=seed)
    checker.raise_if_any()

    # Then every combination (seeds change nothing but the seed: one load per combination).
    combos = _combinations(spec)
    labels = _labels(swept)
    runs: list[SweepRun] = []
    problems: list[str] = []
    for combo in combos:
        overrides = [*set_ovs, *(_override(k, v) for k, v in combo.items())]
        try:
            scenario = checker.load(overrides)
        except ScenarioError as exc:
            shown = ", ".join(f"{k}={_value_text(v)}" for k, v in combo.items()) or "the base scenario"
            stripped = [checker.strip(p, overrides)[1] for p in exc.problems]
            problems += [f"{name}: the run {shown}: {p}" for p in stripped]
            continue
        seeds = spec.seeds if spec.seeds is not None else [scenario.seed]
        dumped = scenario.model_dump(mode="json")
        values = tuple((p, _partition_value(combo[p]) if p in combo else _effective(dumped, p)) for p in swept)
        for seed in seeds:
            seeded = scenario.model_copy(update={"seed": seed})
            runs.append(
                SweepRun(
                    name=_run_name(values, labels, seed),
                    overrides=tuple(overrides),
                    seed=seed,
                    values=values,
                    scenario_hash=seeded.scenario_hash(),
                )
            )
    if problems:
        problems = list(dict.fromkeys(problems))
        if len(problems) > _MAX_LINES:
            more = len(problems) - _MAX_LINES
            problems = [*problems[:_MAX_LINES], f"{name}: ... and {more} more problems of other runs"]
        raise _error(problems)
    seen: dict[str, SweepRun] = {}
    for run in runs:
        if run.name in seen:
            msg = f"{name}: the run {run.name} is listed twice (its overrides: {', '.join(run.overrides) or 'none'})"
            raise _error([msg])
        seen[run.name] = run
    sweep_name = spec.name or _safe_name(file.stem)
    return Sweep(file=file, name=sweep_name, base=base, swept=swept, runs=tuple(runs), spec=spec)


def _overlap(a: str, b: str) -> bool:
    """Whether one dotted path is the other or lies inside it."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _error(problems: Sequence[str]) -> ScenarioError:
    problems = list(dict.fromkeys(_one_line(p) for p in problems))
    return ScenarioError("\n".join(problems), problems=problems)


def _one_line(text: str) -> str:
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _read(file: Path, name: str, *, what: str) -> str:
    try:
        if file.is_dir():
            msg = f"{name}: is a directory, not a {what}"
            raise _error([msg])
        if not file.exists():
            raise _error([f"{name}: no such file"])
        return file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _error([f"{name}: not a UTF-8 text file (byte {exc.start}: {exc.reason})"]) from None
    except OSError as exc:
        raise _error([f"{name}: cannot read the file: {exc.strerror or exc}"]) from None


def _parse_yaml(text: str, name: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Parse YAML (safe_load semantics); return the data and the line of every key path."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        at = f":{mark.line + 1}" if mark is not None else ""
        raise _error([f"{name}{at}: YAML syntax error: {problem}"]) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise _error([f"{name}: YAML syntax error: {exc}"]) from None
    finally:
        loader.dispose()
    fields = ", ".join(SweepSpec.model_fields)
    if node is None:
        raise _error([f"{name}: the file is empty (expected a mapping of fields: {fields})"])
    if not isinstance(data, dict):
        raise _error([f"{name}:{node.start_mark.line + 1}: the top level must be a mapping of fields ({fields})"])
    lines: dict[tuple[Any, ...], int] = {}

    def walk(n: yaml.Node, path: tuple[Any, ...], depth: int) -> None:
        if depth > 50:
            return
        if isinstance(n, yaml.MappingNode):
            for key_node, value_node in n.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                lines[(*path, key)] = key_node.start_mark.line + 1
                walk(value_node, (*path, key), depth + 1)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                lines[(*path, i)] = item.start_mark.line + 1
                walk(item, (*path, i), depth + 1)

    walk(node, (), 0)
    return data, lines


def _line_of(lines: Mapping[tuple[Any, ...], int], path: Sequence[Any]) -> int:
    for end in range(len(path), 0, -1):
        line = lines.get(tuple(path[:end]))
        if line is not None:
            return line
    return 1


def _spec_problem(err: Mapping[str, Any], name: str, lines: Mapping[tuple[Any, ...], int]) -> str:
    loc = [p for p in err.get("loc", ()) if p != "[key]"]
    kind = err.get("type", "")
    where = ".".join(str(p) for p in loc)
    line = _line_of(lines, loc)
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else ""
        allowed = list(SweepSpec.model_fields)
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f", did you mean {close[0]!r}?" if close else ""
        return f"{name}:{line}: unknown key {key!r}{hint} (allowed: {', '.join(allowed)})"
    if kind == "missing":
        return f"{name}:{line}: {where}: required field missing (the base scenario file)"
    message = re.sub(r"^Value error, ", "", str(err.get("msg", "")))
    value = err.get("input")
    if kind not in ("value_error",) and (value is None or isinstance(value, str | int | float | bool)):
        message += f" (got {value!r})"
    return f"{name}:{line}: {where}: {message}"


def _check_columns(swept: Sequence[str], name: str, lines: Mapping[tuple[Any, ...], int]) -> None:
    from ivsim.sim.eventlog import COLUMNS

    columns = [partition_column(p) for p in swept]
    for path, column in zip(swept, columns, strict=True):
        if column in COLUMNS or column == "seed" or columns.count(column) > 1:
            line = lines.get(("grid", path)) or _line_of(lines, ("runs",))
            msg = (
                f"{name}:{line}: {path}: its dataset column {column!r} would clash with "
                "an event-log column, the seed or another swept path"
            )
            raise _error([msg])


class _Checker:
    """Loads the base scenario with overrides and turns the loader's problems into sweep-file lines."""

    def __init__(self, name: str, lines: Mapping[tuple[Any, ...], int], text: str, display: str, base: Path) -> None:
        self.name = name
        self.lines = lines
        self.text = text
        self.display = display
        self.base = base
        self.problems: list[str] = []

    def load(self, overrides: Sequence[str], *, seed: int | None = None) -> Scenario:
        from ivsim.config.loader import load_scenario_text

        return load_scenario_text(
            self.text, name=self.display, base_dir=self.base.parent, overrides=overrides, seed=seed
        )

    def strip(self, problem: str, overrides: Sequence[str], *, seed: int | None = None) -> tuple[str | None, str]:
        """Split a loader problem into (the override it names or None, the rest)."""
        for ov in overrides:
            prefix = f"{self.display}: --set {ov}: "
            if problem.startswith(prefix):
                return ov, problem[len(prefix) :]
        if seed is not None:
            prefix = f"{self.display}: seed={seed!r}: "
            if problem.startswith(prefix):
                return None, problem[len(prefix) :]
        return None, problem

    def check(
        self,
        overrides: Sequence[str],
        where: Mapping[str, tuple[Any, ...]],
        default: tuple[Any, ...],
        *,
        seed: int | None = None,
    ) -> None:
        try:
            self.load(overrides, seed=seed)
        except ScenarioError as exc:
            for problem in exc.problems:
                ov, rest = self.strip(problem, overrides, seed=seed)
                loc = where.get(ov, default) if ov is not None else default
                line = _line_of(self.lines, loc)
                label = "grid" if default[0] == "grid" else ".".join(str(p) for p in default)
                if ov is not None:
                    path = ov.split("=", 1)[0]
                    segments = path.split(".")
                    named = rest.split(": ", 1)[0]
                    prefixes = {".".join(segments[:k]) for k in range(1, len(segments) + 1)}
                    if named not in prefixes and not named.startswith(path + "."):
                        rest = f"{path}: {rest}"  # the loader's line does not name the path
                self.problems.append(f"{self.name}:{line}: {label}: {rest}")

    def raise_if_any(self) -> None:
        if self.problems:
            raise _error(self.problems)


def _combinations(spec: SweepSpec) -> list[dict[str, Any]]:
    grid_keys = list(spec.grid)
    grid = [dict(zip(grid_keys, values, strict=True)) for values in itertools.product(*spec.grid.values())]
    return [{**run, **point} for run in (spec.runs or [{}]) for point in grid]


def _value_text(value: Any) -> str:
    """A YAML value as the text of ``--set PATH=VALUE`` (parsed back with ``yaml.safe_load``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, allow_unicode=True).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")].strip()
    elif text == "...":
        text = ""
    return text


def _override(path: str, value: Any) -> str:
    return f"{path}={_value_text(value)}"


def _partition_value(value: Any) -> str:
    if value is None:
        return NULL_PARTITION
    if isinstance(value, str):
        return value
    return _value_text(value)


def _effective(dumped: Mapping[str, Any], path: str) -> str:
    """The resolved scenario's value at a dotted path, as a partition value."""
    data: Any = dumped
    for segment in path.split("."):
        if isinstance(data, list) and _INT_RE.fullmatch(segment):
            index = int(segment)
            data = data[index] if -len(data) <= index < len(data) else None
        elif isinstance(data, Mapping):
            data = data.get(segment)
        else:
            data = None
        if data is None:
            return NULL_PARTITION
    return _partition_value(data)


def _labels(swept: Sequence[str]) -> dict[str, str]:
    """The shortest dotted suffix of each swept path that no other swept path ends with."""
    labels = {}
    for path in swept:
        segments = path.split(".")
        for k in range(1, len(segments) + 1):
            label = ".".join(segments[-k:])
            clash = any(other != path and (other == label or other.endswith("." + label)) for other in swept)
            if not clash and label != "seed":
                break
        labels[path] = label
    return labels


def _short_hash(text: str, n: int = 6) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _safe_name(value: str) -> str:
    if _SAFE_RE.fullmatch(value) and value not in (".", ".."):
        return value
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "-", value).strip("-.")[:40]
    return f"{cleaned}~{_short_hash(value)}" if cleaned else f"~{_short_hash(value)}"


def _run_name(values: Sequence[tuple[str, str]], labels: Mapping[str, str], seed: int) -> str:
    parts = [f"{labels[p]}={_safe_name(v)}" for p, v in values]
    name = ",".join([*parts, f"seed={seed}"])
    if len(name) > _MAX_NAME:
        name = f"{name[: _MAX_NAME - 12]}~{_short_hash(name, 10)}"
    return name


# --------------------------------------------------------------------------- running


@dataclass
class SweepResult:
    """What a sweep did.

    Attributes
    ----------
    out_dir
        The sweep's output folder.
    records
        One dict per run, in sweep order: ``name, seed, overrides, values, status``
        (``complete``, ``failed`` or ``not run``), ``skipped`` (already complete before),
        ``error`` (one line, failed runs), ``wall_s`` (of the task: loading, map, run; 0 when
        skipped), ``run_wall_s`` (of the simulation, from its manifest), ``sim_time_s``,
        ``counts`` (event rows per kind), ``run_dir``, ``partition``.
    wall_s
        Wall-clock seconds of the whole sweep.
    """

    out_dir: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The records of the runs that failed."""
        return [r for r in self.records if r["status"] == "failed"]

    @property
    def skipped(self) -> list[dict[str, Any]]:
        """The records of the runs skipped because they were already complete."""
        return [r for r in self.records if r.get("skipped")]

    @property
    def ok(self) -> bool:
        """Whether every run is complete."""
        return all(r["status"] == "complete" for r in self.records)


def default_out_dir(sweep: Sweep) -> Path:
    """``runs/<sweep name>``."""
    return Path("runs") / sweep.name


def run_sweep(
    sweep: Sweep | str | Path,
    *,
    out_dir: str | Path | None = None,
    client: Any = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> SweepResult:
    """Run every run of a sweep that is not already complete; write the dataset.

    Parameters
    ----------
    sweep
        A sweep from :func:`load_sweep_file`, or the path of a sweep file.
    out_dir
        The output folder; default ``runs/<sweep name>``.
    client
        A ``distributed.Client`` (see :func:`sweep_client`): each run is a task, submitted with
        ``retries=1``. ``None`` runs them one after the other in this process.
    progress
        Called with each run's record as it finishes (skipped runs first).

    Returns
    -------
    SweepResult
        One record per run. A run that raises is recorded as ``failed`` with its error (also in
        ``OUT/failed.json``) and does not stop the others.

    Raises
    ------
    ScenarioError
        If ``sweep`` is a path and the file is invalid (nothing has run).
    OutputError
        If the output folder cannot be written.
    """
    if not isinstance(sweep, Sweep):
        sweep = load_sweep_file(sweep)
    out = Path(out_dir) if out_dir is not None else default_out_dir(sweep)
    out = out.expanduser().absolute()
    dataset = out / DATASET_DIR
    try:
        out.mkdir(parents=True, exist_ok=True)
        _prune_dataset(dataset, {run.partition for run in sweep.runs})
    except OSError as exc:
        msg = f"{out}: cannot write the sweep folder ({exc.strerror or exc})"
        raise OutputError(msg) from None

    started = time.perf_counter()
    result = SweepResult(out_dir=out)
    records = {run.name: _record(run, out) for run in sweep.runs}
    result.records = list(records.values())
    todo: list[SweepRun] = []
    for run in sweep.runs:
        done = _finished(run, out)
        if done is not None:
            records[run.name].update(done, status="complete", skipped=True)
            if progress is not None:
                progress(records[run.name])
        else:
            (dataset / run.partition / PART_FILE).unlink(missing_ok=True)
            todo.append(run)
    logger.info("sweep %s: %d runs, %d already complete", sweep.name, len(sweep.runs), len(sweep.runs) - len(todo))

    def finish(run: SweepRun, outcome: Mapping[str, Any]) -> None:
        records[run.name].update(outcome)
        if progress is not None:
            progress(records[run.name])

    try:
        if client is None:
            for run in todo:
                finish(run, _execute(**_task_args(sweep, run, out)))
        else:
            _run_on(client, sweep, todo, out, finish)
    finally:
        result.wall_s = time.perf_counter() - started
        _write_summary(sweep, result)
    return result


def pending_runs(sweep: Sweep, out_dir: str | Path | None = None) -> list[SweepRun]:
    """The runs of a sweep that :func:`run_sweep` would run (those not already complete in ``out_dir``)."""
    out = Path(out_dir) if out_dir is not None else default_out_dir(sweep)
    out = out.expanduser().absolute()
    return [run for run in sweep.runs if _finished(run, out) is None]


def _record(run: SweepRun, out: Path) -> dict[str, Any]:
    return {
        "name": run.name,
        "seed": run.seed,
        "overrides": list(run.overrides),
        "values": dict(run.values),
        "status": "not run",
        "skipped": False,
        "error": None,
        "wall_s": None,
        "run_wall_s": None,
        "sim_time_s": None,
        "counts": {},
        "run_dir": str(out / run.name),
        "partition": str(Path(DATASET_DIR) / run.partition / PART_FILE),
    }


def _finished(run: SweepRun, out: Path) -> dict[str, Any] | None:
    """The summary of a run already complete with the same scenario and partition, else None."""
    if not (out / DATASET_DIR / run.partition / PART_FILE).is_file():
        return None
    try:
        manifest = json.loads((out / run.name / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("status") != "complete":
        return None
    if manifest.get("scenario_hash") != run.scenario_hash:
        return None
    return {
        "wall_s": 0.0,
        "run_wall_s": manifest.get("wall_s"),
        "sim_time_s": manifest.get("sim_time_s"),
        "counts": manifest.get("event_counts", {}),
    }


def _prune_dataset(dataset: Path, keep: set[Path]) -> None:
    """Remove partition files of runs that are not in this sweep (a changed sweep file) and empty folders."""
    if not dataset.is_dir():
        return
    for part in dataset.rglob(PART_FILE):
        if part.parent.relative_to(dataset) not in keep:
            logger.info("removing %s: not a run of this sweep", part)
            part.unlink()
    for folder in sorted((p for p in dataset.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty


def _task_args(sweep: Sweep, run: SweepRun, out: Path) -> dict[str, Any]:
    return {
        "base": str(sweep.base),
        "overrides": list(run.overrides),
        "seed": run.seed,
        "run_dir": str(out / run.name),
        "part": str(out / DATASET_DIR / run.partition / PART_FILE),
    }


def _execute(
    *, base: str, overrides: Sequence[str], seed: int, run_dir: str, part: str, threads: int | None = None
) -> dict[str, Any]:
    """Run one sweep run (in a worker, or in this process) and write its partition; never raises.

    ``threads`` sets torch's CPU threads (process-wide: given in Dask workers, not in the caller's process).
    """
    started = time.perf_counter()
    try:
        from ivsim import api
        from ivsim.config.loader import load_scenario

        scenario = load_scenario(base, overrides=overrides, seed=seed)
        if threads is not None and (scenario.link.fidelity == "full" or "torch" in sys.modules):
            import torch

            torch.set_num_threads(threads)  # one run per core
        summary = api.run_scenario(scenario, run_dir=run_dir, force=True)
        _write_partition(Path(run_dir), Path(part))
    except Exception as exc:
        logger.debug("run %s failed", run_dir, exc_info=True)
        wall_s = round(time.perf_counter() - started, 3)
        return {"status": "failed", "error": _one_line(_error_text(exc)), "wall_s": wall_s}
    return {
        "status": "complete" if summary.status == "complete" else str(summary.status),
        "error": None,
        "wall_s": round(time.perf_counter() - started, 3),
        "run_wall_s": round(summary.wall_s, 3),
        "sim_time_s": summary.sim_time_s,
        "counts": dict(summary.counts),
    }


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", "; ")
    if isinstance(exc, IvsimError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _write_partition(run_dir: Path, part: Path) -> None:
    import pyarrow.parquet as pq

    from ivsim.sim.eventlog import EVENTS_FILE, log_files, read_table

    files = log_files(run_dir)
    if not files:
        msg = f"{run_dir}: the run wrote no event log"
        raise OutputError(msg)
    part.parent.mkdir(parents=True, exist_ok=True)
    tmp = part.with_name(part.name + ".tmp")
    if files == [run_dir / EVENTS_FILE]:  # a closed log is already one file of the schema: copy its bytes
        shutil.copyfile(files[0], tmp)
    else:
        pq.write_table(read_table(files), tmp)
    os.replace(tmp, part)


def _run_on(
    client: Any,
    sweep: Sweep,
    todo: Sequence[SweepRun],
    out: Path,
    finish: Callable[[SweepRun, Mapping[str, Any]], None],
) -> None:
    from distributed import as_completed

    futures = {}
    for run in todo:
        future = client.submit(_execute, **_task_args(sweep, run, out), threads=1, retries=1, pure=False)
        futures[future] = run
    try:
        for future in as_completed(futures, loop=client.loop):
            run = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # noqa: BLE001 - a killed worker (KilledWorker), a lost connection
                if type(exc).__name__ == "KilledWorker":
                    error = "its worker died while running it, and again on the retry (KilledWorker)"
                else:
                    error = f"the task failed: {_error_text(exc)}"
                outcome = {"status": "failed", "error": _one_line(error)}
            finish(run, outcome)
    except BaseException:
        client.cancel(list(futures))
        raise


def _write_summary(sweep: Sweep, result: SweepResult) -> None:
    out = result.out_dir
    summary = {
        "name": sweep.name,
        "sweep_file": str(sweep.file),
        "base": str(sweep.base),
        "swept": list(sweep.swept),
        "columns": [partition_column(p) for p in sweep.swept] + ["seed"],
        "wall_s": round(result.wall_s, 3),
        "runs": result.records,
    }
    _atomic_write(out / SWEEP_FILE, json.dumps(summary, indent=2, default=str) + "\n")
    failed = [
        {k: r[k] for k in ("name", "seed", "overrides", "error", "run_dir")}
        for r in result.records
        if r["status"] == "failed"
    ]
    if failed:
        _atomic_write(out / FAILED_FILE, json.dumps(failed, indent=2) + "\n")
    else:
        (out / FAILED_FILE).unlink(missing_ok=True)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


LOCAL_CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.scheduler.allowed-failures": 1,
    # Dask's worker defaults suit many short tasks; a sweep's task is one simulation of a minute or more, run in a
    # worker thread beside the worker's event loop, and every wake-up of that loop takes the GIL from the run.
    # Measured on one run of `bench sweep`'s kind (20 simulated minutes) on a 1-worker cluster: with the defaults
    # it switched out ~3,100 times and ran 15-25% slower than in a plain process; with these, ~650 times.
    "distributed.worker.profile.enabled": False,  # a 10 ms stack sampler feeding the dashboard, which is off
    "distributed.admin.tick.interval": "1s",  # the event loop's health tick, every 20 ms by default
    # Dask sets MALLOC_TRIM_THRESHOLD_=65536 in its workers: numpy's large temporaries are then unmapped and
    # faulted in again (2.5x the page faults of the same run outside Dask); None keeps glibc's own threshold
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}
"""The Dask configuration of :func:`sweep_client`'s ``LocalCluster`` (a remote cluster keeps its own)."""


@contextlib.contextmanager
def sweep_client(*, workers: int = 2, scheduler: str | None = None, connect_timeout_s: float = 5.0) -> Iterator[Any]:
    """A ``distributed.Client`` for :func:`run_sweep`, closed on exit.

    Parameters
    ----------
    workers
        Worker processes of a new ``LocalCluster`` on this machine (one thread each,
        ``OMP_NUM_THREADS=1``, :data:`LOCAL_CLUSTER_CONFIG`; a task whose worker dies is
        retried once, then fails).
    scheduler
        The address of an existing cluster's scheduler (``tcp://HOST:PORT``) to connect to
        instead; its workers need ivsim installed and the same file system paths.
    connect_timeout_s
        How long to try to reach ``scheduler``.

    Raises
    ------
    IvsimError
        If ``workers`` is below 1 or the scheduler cannot be reached.
    """
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        from distributed.comm import registry
        from distributed.comm.addressing import parse_address, parse_host_port

        try:
            scheme, location = parse_address(scheduler)
            registry.get_backend(scheme)
            if scheme in ("tcp", "tls"):
                parse_host_port(location)
        except (ValueError, TypeError) as exc:
            msg = f"--scheduler {scheduler}: not a scheduler address ({exc}; expected tcp://HOST:PORT)"
            raise IvsimError(_one_line(msg)) from None
        try:
            client = Client(scheduler, timeout=connect_timeout_s, set_as_default=False)
        except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, ValueError for a bad address
            detail = _error_text(exc)
            msg = f"--scheduler {scheduler}: cannot connect within {connect_timeout_s:g} s ({detail})"
            raise IvsimError(_one_line(msg)) from None
        try:
            yield client
        finally:
            client.close()
        return
    if workers < 1:
        msg = f"--workers must be >= 1, got {workers}"
        raise IvsimError(msg)
    single = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    with dask.config.set(LOCAL_CLUSTER_CONFIG):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # its HTTP server: any free port, not 8787
            silence_logs=logging.ERROR,
            env=single,
        )
    try:
        client = Client(cluster, set_as_default=False)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


# --------------------------------------------------------------------------- reading the dataset


def _partitions(dataset: Path) -> list[tuple[Path, list[tuple[str, str]]]]:
    """Every partition file under ``dataset`` and its ``(column, value)`` pairs, in sorted order."""
    found = []
    for part in sorted(dataset.rglob("*.parquet")):
        pairs = []
        for segment in part.parent.relative_to(dataset).parts:
            key, sep, value = segment.partition("=")
            if not sep:
                msg = f"{part}: {segment!r} is not a hive partition folder (COLUMN=VALUE)"
                raise OutputError(msg)
            pairs.append((key, unquote(value)))
        found.append((part, pairs))
    keys = {tuple(k for k, _ in pairs) for _, pairs in found}
    if len(keys) > 1:
        msg = f"{dataset}: partitions have different columns ({' / '.join(', '.join(k) for k in sorted(keys))})"
        raise OutputError(msg)
    return found


def _column_type(values: Sequence[str]) -> str:
    present = [v for v in values if v != NULL_PARTITION]
    if present and all(_INT_RE.fullmatch(v) for v in present):
        return "int"
    if present and all(_is_float(v) for v in present):
        return "float"
    return "str"


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity")


def _typed(values: Sequence[str], kind: str) -> Any:
    import pandas as pd

    if kind == "int":
        if any(v == NULL_PARTITION for v in values):
            return pd.array([None if v == NULL_PARTITION else int(v) for v in values], dtype="Int64")
        return pd.array([int(v) for v in values], dtype="int64")
    if kind == "float":
        return pd.array([float("nan") if v == NULL_PARTITION else float(v) for v in values], dtype="float64")
    return pd.array([None if v == NULL_PARTITION else v for v in values], dtype="str")


def _read_part(part: Path, pairs: Sequence[tuple[str, str]], kinds: Mapping[str, str]) -> pd.DataFrame:
    from ivsim.sim.eventlog import read_table, table_to_frame

    df = table_to_frame(read_table([part]))
    for key, value in pairs:
        df[key] = _typed([value] * len(df), kinds[key])
    return df


def _read_part_dask(part: Path, pairs: Sequence[tuple[str, str]], kinds: Mapping[str, str]) -> pd.DataFrame:
    """:func:`_read_part` with every category index of one dtype (partitions must concatenate)."""
    return _str_categories(_read_part(part, pairs, kinds))


def _str_categories(df: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    from ivsim.sim.eventlog import CATEGORICAL

    for column in CATEGORICAL:
        if column in df.columns:
            categories = df[column].cat.categories
            if categories.dtype != "str":
                df[column] = df[column].cat.set_categories(pd.Index(categories, dtype="str"))
    return df


def load_sweep(out_dir: str | Path, *, dask: bool = False) -> Any:
    """Read a sweep's events as one DataFrame with its partition columns.

    Parameters
    ----------
    out_dir
        The sweep's output folder (holding ``dataset/``).
    dask
        Return a lazy ``dask.dataframe.DataFrame`` (one partition per run) instead of pandas.

    Returns
    -------
    pandas.DataFrame or dask.dataframe.DataFrame
        Every run's events (the columns and dtypes of :func:`ivsim.results.load_run`; each run's
        rows in order, runs in partition order), then one column per swept path (dots written as
        ``__``) and ``seed``: integers where every value is one, floats where every value is a
        number, strings otherwise.

    Raises
    ------
    OutputError
        If the folder has no dataset or a file in it cannot be read.
    """
    import pandas as pd

    from ivsim.sim.eventlog import CATEGORICAL, read_table, table_to_frame

    out = Path(out_dir)
    dataset = out / DATASET_DIR
    if not dataset.is_dir():
        msg = f"{out}: no sweep dataset here ({DATASET_DIR}/ is missing; run `ivsim sweep` first)"
        raise OutputError(msg)
    parts = _partitions(dataset)
    columns = [k for k, _ in parts[0][1]] if parts else _summary_columns(out)
    kinds = {k: _column_type([dict(pairs)[k] for _, pairs in parts]) for k in columns}
    empty = table_to_frame(read_table([]))
    for key in columns:
        empty[key] = _typed([], kinds[key])

    if dask:
        import dask.dataframe as dd
        from dask.dataframe.utils import clear_known_categories

        if not parts:
            return dd.from_pandas(empty, npartitions=1)
        meta = clear_known_categories(_str_categories(empty), cols=[c for c in CATEGORICAL if c in empty.columns])
        return dd.from_map(
            _read_part_dask,
            [p for p, _ in parts],
            [pairs for _, pairs in parts],
            kinds=kinds,
            meta=meta,
            label="ivsim-sweep",
        )

    if not parts:
        return empty
    frames = [_read_part(part, pairs, kinds) for part, pairs in parts]
    for column in CATEGORICAL:
        if column in empty.columns:
            categories = sorted(set().union(*(f[column].cat.categories for f in frames)))
            dtype = pd.CategoricalDtype(categories)
            for f in frames:
                f[column] = f[column].astype(dtype)
    return pd.concat(frames, ignore_index=True)


def _summary_columns(out: Path) -> list[str]:
    try:
        summary = json.loads((out / SWEEP_FILE).read_text(encoding="utf-8"))
        return list(summary["columns"])
    except (OSError, ValueError, KeyError, TypeError):
        return []
