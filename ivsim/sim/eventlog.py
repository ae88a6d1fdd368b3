"""The run's event log: flat typed rows, buffered column-wise, written as Parquet.

Every row has the same declared schema, :data:`COLUMNS`. The log fills the shared
prefix (``run_id``, ``seq``, ``t_s``, ``event``, ``entity_id``); a caller fills only
the columns its event needs, the rest are null. Rows are buffered in memory per
(event, set of fields) shape as one Python list per column (single rows,
:meth:`EventLog.log`) or as whole numpy blocks (:meth:`EventLog.log_many`). A flush
merges the buffers in ``seq`` order and writes one closed Parquet file
``run_dir/parts/part-NNNNN.parquet`` (tmp file + ``os.replace``), so a killed run
leaves only complete parts. With a background writer (the default; ``output.combine:
background``) an automatic flush converts its buffers to Arrow column by column and hands
them to a writer thread (Arrow and Parquet work releases the GIL), which joins them into one
table in ``seq`` order, writes the part and appends the table to
``run_dir/events.parquet.tmp``; :meth:`EventLog.close` waits for it, moves that file to
``run_dir/events.parquet`` and removes the parts (if the file could not be written, it
streams the parts into one instead). An explicit :meth:`EventLog.flush` writes at once.
:func:`ivsim.results.load_run` reads either layout.

Two things the log does for its callers, so that the simulation's hot paths make no
Python objects per row: given a projection (``lonlat``), it fills ``lon`` and ``lat`` from
``x_m`` and ``y_m`` when it writes a part (one vectorised call per part); and a string
column of :meth:`EventLog.log_many` may come as :class:`Labels` (integer codes into a fixed
list of labels, such as the run's vehicle ids), which Arrow decodes.

To add a column, add one entry to :data:`COLUMNS` (a string column becomes
categorical on load unless it is also listed in ``_FREE_TEXT``) and one line to the
table below. Files written before the column existed still load: it reads as null.

The event names in the last column are the typical emitters; the simulation owns
the event vocabulary.

=====================  =========  ===============================================  ====================================
column                 unit       meaning                                          filled by (typical events)
=====================  =========  ===============================================  ====================================
``run_id``             --         run identifier, the same on every row            all (by the log)
``seq``                --         row number 0, 1, 2, ... in logging order         all (by the log)
``t_s``                s          simulated time of the event                      all
``event``              --         event kind, snake_case                           all
``entity_id``          --         the entity the row is about (vehicle, BS, job)   all
``vehicle``            --         vehicle id                                       vehicle_*, scene_enter, handover,
                                                                                   tx, job_*
``trip``               --         trip number of the vehicle, from 0               vehicle_*, scene_enter
``bs``                 --         (serving) base station id                        vehicle_depart, handover, tx,
                                                                                   job_queued
``scene``              --         propagation scene name                           vehicle_*, scene_enter, handover, tx
``prev_scene``         --         scene before the change (null on departure)      scene_enter
``x_m``                m          position east of the map origin                  vehicle_*, scene_enter, handover, tx
``y_m``                m          position north of the map origin                 vehicle_*, scene_enter, handover, tx
``lon``                deg        WGS84 longitude                                  vehicle_*, scene_enter, handover, tx
``lat``                deg        WGS84 latitude                                   vehicle_*, scene_enter, handover, tx
``speed_mps``          m/s        vehicle speed                                    vehicle_depart, scene_enter, tx
``route_m``            m          length of the vehicle's route                    vehicle_depart, vehicle_arrive
``from_bs``            --         source cell of a handover                        handover
``to_bs``              --         target cell of a handover                        handover
``rsrp_dbm``           dBm        reference-signal received power (of the target)  handover
``direction``          --         ``downlink`` or ``uplink``                       tx
``frame``              --         frame number of the vehicle, from 0              tx
``sinr_db``            dB         signal to interference plus noise ratio          tx
``snr_db``             dB         signal to noise ratio                            tx
``size_bits``          bit        payload size (full link: the raw frame, 24 bit   tx
                                  per pixel)
``bandwidth_hz``       Hz         bandwidth granted to the transmission            tx
``rate_bps``           bit/s      achieved link rate                               tx
``queue_s``            s          time waiting for radio resources (refinement:    tx, refine_start, refine_done
                                  for a cloud GPU)
``airtime_s``          s          time on air                                      tx
``delay_s``            s          end-to-end delay (generation to delivery/drop;   tx, job_done, detect
                                  job: submission to completion; alarm: after the
                                  true scene change)
``delivered``          --         the frame arrived, decoded, within its deadline  tx
``drop_reason``        --         why it was not delivered (null if delivered)     tx
``codec``              --         semantic codec name                              tx
``estimator``          --         channel estimator name                           tx, refinement events
``estimator_scene``    --         scene the estimator was trained/refined for      tx, refinement events
``psnr_db``            dB         reconstruction PSNR                              tx
``ssim``               --         reconstruction SSIM, 0..1                        tx
``nmse_db``            dB         channel-estimation NMSE (null for perfect CSI)   tx, refinement events
``symbols``            --         complex channel symbols of the frame (codec)     tx (full link)
``compute_s``          s          encode + estimate + equalize + decode latency    tx (full link)
``job_id``             --         cloud job id (free text, not categorical)        job_*
``job_kind``           --         kind of cloud job                                job_*
``wait_s``             s          time the job waited in the cloud queue           job_start, job_done
``service_s``          s          GPU service time of the job                      job_done
``upload_bits``        bit        bits sent to the cloud for the job               job_queued
``download_bits``      bit        bits returned from the cloud                     job_done
``queue_len``          --         jobs waiting in the cloud queue at that moment   job_queued, job_start, refine_start
``estimator_version``  --         estimator version held (0 = base weights, +1     tx, refine_request, deploy
                                  per deployed refinement)
``adapter_id``         --         refinement adapter ('' on tx: base weights)      tx, refine_done, deploy
``target_scene``       --         scene a refinement job refines for               refine_*, deploy
``samples``            --         channel samples N the large model generates      refine_request
``steps``              --         LoRA fine-tuning steps K                         refine_request
``policy``             --         refinement policy kind that asked for the job    refine_*, deploy
``upload_bytes``       byte       request + pilots sent vehicle -> cloud           refine_request, refine_done
``download_bytes``     byte       adapter sent cloud -> vehicle (0 unless done)    refine_done
``air_up_s``           s          request on the uplink air (bits / uplink rate)   refine_done
``backhaul_up_s``      s          request over the backhaul BS -> cloud            refine_done
``upload_s``           s          air_up_s + backhaul_up_s                         refine_done
``lm_infer_s``         s          large-model inference on the GPU (N samples)     refine_done
``finetune_s``         s          LoRA fine-tuning on the GPU (K steps)            refine_done
``gpu_s``              s          GPU time used: lm_infer_s + finetune_s           refine_done
``backhaul_down_s``    s          adapter over the backhaul cloud -> BS            refine_done
``air_down_s``         s          adapter on the downlink air (bits / rate)        refine_done
``download_s``         s          backhaul_down_s + air_down_s                     refine_done
``total_s``            s          request to the adapter at the vehicle (or the    refine_done
                                  end of the job) = upload_s + queue_s +
                                  lm_infer_s + finetune_s + download_s
``cached``             --         adapter served from the cloud's cache (no GPU)   refine_done
``outcome``            --         met, late, failed or cancelled                   refine_done
``reason``             --         why not done: outage, vehicle_gone, admission    refine_done
                                  or the refiner's error message
``mismatched``         --         the receiver's estimator was not made or         tx
                                  refined for the frame's scene
``pilot_resid_db``     dB         pilot residual of the receiver's estimate over   tx (full link)
                                  the noise power
``detector``           --         scene-change detector kind                       refine_request, detect
``detection``          --         ``boundary`` (a prediction) or ``alarm``         detect
``deadline_t_s``       s          when the policy wanted the estimator on board    refine_request, refine_done
                                  (the predicted boundary arrival)
``arrival_t_s``        s          when the vehicle entered (or will enter) the     refine_done, detect
                                  target scene: the truth; null if never
``slack_s``            s          arrival_t_s - completion (> 0: in time)          refine_done
``predicted_t_s``      s          predicted arrival at a scene boundary            detect
``error_s``            s          predicted_t_s - arrival_t_s                      detect
``distance_m``         m          how far ahead the predicted boundary is          detect
``statistic``          --         detector statistic at an alarm (CUSUM, sigmas)   detect
``false_alarm``        --         alarm with no scene change since the last one    detect
``active``             --         the deployed estimator is in use at once         deploy
``source``             --         why the estimator changed: onboard, oracle       estimator_switch
``message``            --         free text (not categorical)                      warnings, notes
=====================  =========  ===============================================  ====================================
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ivsim.errors import OutputError

__all__ = [
    "CATEGORICAL",
    "COLUMNS",
    "EVENTS_FILE",
    "PARTS_DIR",
    "SCHEMA",
    "EventLog",
    "Labels",
    "log_files",
    "read_table",
    "table_to_frame",
]

logger = logging.getLogger(__name__)

_S = pa.string()
_F = pa.float64()
_I = pa.int64()
_B = pa.bool_()

#: The declared schema, in file order. Adding a column is one line here.
COLUMNS: dict[str, pa.DataType] = {
    "run_id": _S,
    "seq": _I,
    "t_s": _F,
    "event": _S,
    "entity_id": _S,
    "vehicle": _S,
    "trip": _I,
    "bs": _S,
    "scene": _S,
    "prev_scene": _S,
    "x_m": _F,
    "y_m": _F,
    "lon": _F,
    "lat": _F,
    "speed_mps": _F,
    "route_m": _F,
    "from_bs": _S,
    "to_bs": _S,
    "rsrp_dbm": _F,
    "direction": _S,
    "frame": _I,
    "sinr_db": _F,
    "snr_db": _F,
    "size_bits": _I,
    "bandwidth_hz": _F,
    "rate_bps": _F,
    "queue_s": _F,
    "airtime_s": _F,
    "delay_s": _F,
    "delivered": _B,
    "drop_reason": _S,
    "codec": _S,
    "estimator": _S,
    "estimator_scene": _S,
    "psnr_db": _F,
    "ssim": _F,
    "nmse_db": _F,
    "symbols": _I,
    "compute_s": _F,
    "job_id": _S,
    "job_kind": _S,
    "wait_s": _F,
    "service_s": _F,
    "upload_bits": _I,
    "download_bits": _I,
    "queue_len": _I,
    "estimator_version": _I,
    "adapter_id": _S,
    "target_scene": _S,
    "samples": _I,
    "steps": _I,
    "policy": _S,
    "upload_bytes": _I,
    "download_bytes": _I,
    "air_up_s": _F,
    "backhaul_up_s": _F,
    "upload_s": _F,
    "lm_infer_s": _F,
    "finetune_s": _F,
    "gpu_s": _F,
    "backhaul_down_s": _F,
    "air_down_s": _F,
    "download_s": _F,
    "total_s": _F,
    "cached": _B,
    "outcome": _S,
    "reason": _S,
    "mismatched": _B,
    "pilot_resid_db": _F,
    "detector": _S,
    "detection": _S,
    "deadline_t_s": _F,
    "arrival_t_s": _F,
    "slack_s": _F,
    "predicted_t_s": _F,
    "error_s": _F,
    "distance_m": _F,
    "statistic": _F,
    "false_alarm": _B,
    "active": _B,
    "source": _S,
    "message": _S,
}

# String columns with (nearly) unique values: kept as strings, not categoricals.
_FREE_TEXT = frozenset({"message", "job_id"})

#: String columns that :func:`ivsim.results.load_run` returns as pandas categoricals.
CATEGORICAL: frozenset[str] = frozenset(c for c, t in COLUMNS.items() if t == _S) - _FREE_TEXT

#: :data:`COLUMNS` as a pyarrow schema.
SCHEMA: pa.Schema = pa.schema([pa.field(c, t) for c, t in COLUMNS.items()])
_COLUMN_INDEX = {c: i for i, c in enumerate(COLUMNS)}

#: File name of the combined log in a run directory.
EVENTS_FILE = "events.parquet"
#: Folder of the part files of a run still being written (or killed).
PARTS_DIR = "parts"

_RESERVED = frozenset(("run_id", "seq"))
_ROW_GROUP_ROWS = 1 << 17  # rows per Parquet row group in events.parquet
# events.parquet: zstd over plain pages (on a 1,000-vehicle run's log a fifth smaller than delta / byte-split
# encodings, and about as cheap to write), dictionary pages for strings, min/max statistics only for the columns
# a reader filters on (statistics of every column made the writing slower by about a tenth).
_WRITE_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "use_dictionary": [c for c, t in COLUMNS.items() if t == _S],
    "write_statistics": ["seq", "t_s", "event", "entity_id", "vehicle"],
}
# Parts are transient (combined into events.parquet at close): written uncompressed, without statistics,
# which makes both their writing and their reading at close cheaper.
_PART_WRITE_OPTIONS: dict[str, Any] = {
    "compression": "none",
    "use_dictionary": [c for c, t in COLUMNS.items() if t == _S],
    "write_statistics": False,
}
_CLOCK_EVERY = 1024  # single-row log() calls between two checks of the flush conditions
_PART_RE = re.compile(r"^part-(\d+)\.parquet$")

# Python scalar types accepted per column type (checked on the first row of each shape and on
# log_many scalars), numpy dtype kinds accepted per column type (checked on log_many arrays),
# and the inferred Arrow types a buffered list may have before it is cast at flush time.
_SCALAR_TYPES: dict[pa.DataType, tuple[type, ...]] = {
    _F: (int, float, np.integer, np.floating),
    _I: (int, np.integer),
    _B: (bool, np.bool_),
    _S: (str,),
}
_DTYPE_KINDS: dict[pa.DataType, str] = {_F: "fiuO", _I: "iuO", _B: "bO", _S: "UO"}
_CASTABLE: dict[pa.DataType, tuple[pa.DataType, ...]] = {
    _F: (_F, _I, pa.null()),
    _I: (_I, pa.null()),
    _B: (_B, pa.null()),
    _S: (_S, pa.null()),
}


class _Check(NamedTuple):
    """What a column accepts, looked up by column name (a ``pa.DataType`` is slow to hash)."""

    typ: pa.DataType
    kinds: str
    """Numpy dtype kinds of arrays."""
    scalars: tuple[type, ...]
    """Python scalar types."""
    is_bool: bool
    is_str: bool


_CHECKS: dict[str, _Check] = {
    name: _Check(typ, _DTYPE_KINDS[typ], _SCALAR_TYPES[typ], typ == _B, typ == _S)
    for name, typ in COLUMNS.items()
    if name not in _RESERVED
}


class Labels(NamedTuple):
    """A string column of :meth:`EventLog.log_many` given as integer ``codes`` into ``labels`` (``-1``: null).

    ``labels[codes]`` without making the strings in Python: Arrow makes them when the rows
    are written (on the writer thread for automatic flushes). ``labels`` is a sequence of
    str, typically a long-lived array such as the run's vehicle ids; blocks that share the
    same ``labels`` object are converted together.
    """

    codes: np.ndarray
    labels: Sequence[str]

    def take(self, sl: slice | np.ndarray) -> Labels:
        """The entries ``sl`` (a slice or an index array) with the same ``labels``."""
        return Labels(np.asarray(self.codes)[sl], self.labels)

    def to_numpy(self) -> np.ndarray:
        """``labels[codes]`` as an object array, None for ``-1``."""
        labels = np.asarray([*self.labels, None], dtype=object)
        return labels[np.where(np.asarray(self.codes) < 0, len(labels) - 1, self.codes)]


def _labels_to_arrow(codes: np.ndarray, labels: Sequence[str], event: str, column: str) -> pa.Array:
    """``labels[codes]`` as a dictionary-encoded Arrow array (decoded when the part is joined)."""
    try:
        dictionary = pa.array(labels, type=_S)
        return pa.DictionaryArray.from_arrays(pa.array(codes, mask=codes < 0), dictionary, safe=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, IndexError) as exc:
        msg = f"event {event!r}: column {column!r}: labels do not fit their codes ({exc})"
        raise TypeError(msg) from None


def _scalar_ok(value: Any, check: _Check) -> bool:
    if value is None:
        return True
    if isinstance(value, (bool, np.bool_)) and not check.is_bool:
        return False
    return isinstance(value, check.scalars)


def _type_error(event: str, column: str, value: Any, typ: pa.DataType) -> TypeError:
    msg = f"event {event!r}: column {column!r} expects {typ}, got {type(value).__name__} {value!r}"
    return TypeError(msg)


def _list_to_arrow(values: list[Any], typ: pa.DataType, event: str, column: str) -> pa.Array:
    """Convert a buffered Python list to an Arrow array of ``typ``, strictly (no silent truncation)."""
    if typ == _S:  # strings and None only: no type inference needed (anything else raises, then is explained below)
        try:
            return pa.array(values, type=_S)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    try:
        arr = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        msg = f"event {event!r}: column {column!r} expects {typ}, got mixed values ({exc})"
        raise TypeError(msg) from None
    if arr.type == typ:
        return arr
    if arr.type not in _CASTABLE[typ]:
        msg = f"event {event!r}: column {column!r} expects {typ}, got values of type {arr.type}"
        raise TypeError(msg)
    return arr.cast(typ)


def _block_to_arrow(value: Any, n: int, typ: pa.DataType, event: str, column: str) -> pa.Array:
    """Convert one log_many column (ndarray, list, :class:`Labels` or scalar) to an Arrow array of length ``n``."""
    if isinstance(value, Labels):
        return _labels_to_arrow(value.codes, value.labels, event, column)
    if isinstance(value, np.ndarray) and value.dtype.kind != "O":
        try:
            return pa.array(value, type=typ)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            msg = f"event {event!r}: column {column!r} expects {typ} ({exc})"
            raise TypeError(msg) from None
    if isinstance(value, (list, np.ndarray)):
        return _list_to_arrow(value, typ, event, column)
    if value is None:
        return pa.nulls(n, typ)
    if isinstance(value, np.generic):
        value = value.item()
    return pa.repeat(pa.scalar(value, type=typ), n)


def _blocks_to_arrow(values: list[Any], sizes: np.ndarray, typ: pa.DataType, event: str, column: str) -> pa.Array:
    """One column of several log_many blocks (sizes ``sizes``) as one Arrow array, converted once where it can be."""
    if len(values) == 1:
        return _block_to_arrow(values[0], int(sizes[0]), typ, event, column)
    if any(isinstance(v, Labels) for v in values):
        first = values[0]
        if all(isinstance(v, Labels) and v.labels is first.labels for v in values):
            return _labels_to_arrow(np.concatenate([v.codes for v in values]), first.labels, event, column)
        values = [v.to_numpy() if isinstance(v, Labels) else v for v in values]
    if all(isinstance(v, np.ndarray) and v.dtype.kind != "O" for v in values):
        return _block_to_arrow(np.concatenate(values), int(sizes.sum()), typ, event, column)
    if all(isinstance(v, np.ndarray) for v in values):  # object arrays (and numeric ones among them)
        return _list_to_arrow(np.concatenate([v.astype(object, copy=False) for v in values]), typ, event, column)
    if all(isinstance(v, (np.ndarray, list)) for v in values):  # lists: one strict conversion
        return _list_to_arrow([x for v in values for x in v], typ, event, column)
    first = values[0]
    if not isinstance(first, (np.ndarray, list)) and all(
        not isinstance(v, (np.ndarray, list)) and type(v) is type(first) and v == first for v in values
    ):
        return _block_to_arrow(first, int(sizes.sum()), typ, event, column)  # the same scalar in every block
    return pa.concat_arrays(
        [_block_to_arrow(v, int(k), typ, event, column) for v, k in zip(values, sizes, strict=True)]
    )


def _as_block_column(event: str, name: str, value: Any, check: _Check) -> Any:
    """Check one log_many argument: return a 1-d ndarray copy, a list copy, checked :class:`Labels`, or a checked scalar."""
    if isinstance(value, Labels):
        codes = np.asarray(value.codes)
        if not check.is_str or codes.ndim != 1 or codes.dtype.kind not in "iu":
            msg = f"event {event!r}: column {name!r}: Labels need a string column and 1-d integer codes"
            raise TypeError(msg)
        return Labels(codes.astype(np.int64), value.labels)
    if not isinstance(value, np.ndarray):
        if isinstance(value, (list, tuple)):
            return list(value)
        if value is None or isinstance(value, (str, bytes, int, float, np.generic)):
            if not _scalar_ok(value, check):
                raise _type_error(event, name, value, check.typ)
            return value.item() if isinstance(value, np.generic) else value
        if hasattr(value, "__array__"):
            value = np.asarray(value)
        elif hasattr(value, "__len__"):
            return list(value)
        else:
            raise _type_error(event, name, value, check.typ)
    if value.ndim == 0:
        return _as_block_column(event, name, value.item(), check)
    if value.ndim != 1:
        msg = f"event {event!r}: column {name!r} must be 1-d, got shape {value.shape}"
        raise ValueError(msg)
    if value.dtype.kind not in check.kinds:
        msg = f"event {event!r}: column {name!r} expects {check.typ}, got an array of dtype {value.dtype}"
        raise TypeError(msg)
    return value.copy()


def _write_part(table: pa.Table, path: Path) -> None:
    """Write one closed part file (tmp file + ``os.replace``); :class:`OutputError` if it cannot be written."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        pq.write_table(table, tmp, row_group_size=_ROW_GROUP_ROWS, **_PART_WRITE_OPTIONS)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        msg = f"cannot write {path}: {exc.strerror or exc}"
        raise OutputError(msg) from None


class _Columns:
    """A flush's rows as Arrow chunks per column; :meth:`table` joins them in ``seq`` order (once).

    Joining is Arrow (C++) work that releases the GIL: the writer thread does it for
    automatic flushes.
    """

    def __init__(
        self,
        chunks: dict[str, list[pa.Array]],
        filled: dict[str, int],
        order: np.ndarray | None,
        n: int,
        run_id: str,
        lonlat: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        self.chunks, self.filled, self.order, self.n, self.run_id = chunks, filled, order, n, run_id
        self.lonlat = lonlat
        self._table: pa.Table | None = None

    def table(self) -> pa.Table:
        """The rows as one table of :data:`SCHEMA`."""
        if self._table is None:
            n, order = self.n, self.order
            arrays = []
            for column, typ in COLUMNS.items():
                chunks = self.chunks[column]
                if column == "run_id":
                    arrays.append(pa.repeat(pa.scalar(self.run_id, _S), n))
                elif not chunks:
                    arrays.append(pa.nulls(n, typ))
                else:
                    if self.filled[column] < n:
                        chunks = [*chunks, pa.nulls(n - self.filled[column], typ)]
                    chunks = [c.dictionary_decode() if isinstance(c, pa.DictionaryArray) else c for c in chunks]
                    arr = pa.chunked_array(chunks, typ).combine_chunks()
                    arrays.append(arr if order is None else arr.take(order))
            if self.lonlat is not None:
                self._fill_lonlat(arrays)
            self._table = pa.Table.from_arrays(arrays, schema=SCHEMA)
            self.chunks = {}
        return self._table

    def _fill_lonlat(self, arrays: list[pa.Array]) -> None:
        """Give ``lon`` and ``lat`` to the rows with finite ``x_m`` and ``y_m`` but no ``lon`` (in place)."""
        ix, iy, ilon, ilat = (_COLUMN_INDEX[c] for c in ("x_m", "y_m", "lon", "lat"))
        finite = pc.fill_null(pc.and_(pc.is_finite(arrays[ix]), pc.is_finite(arrays[iy])), False)
        need = pc.and_(finite, pc.is_null(arrays[ilon]))
        if not pc.any(need).as_py():
            return
        x = arrays[ix].filter(need).to_numpy()
        y = arrays[iy].filter(need).to_numpy()
        lon, lat = self.lonlat(x, y)
        arrays[ilon] = pc.replace_with_mask(arrays[ilon], need, pa.array(np.asarray(lon, dtype=np.float64)))
        arrays[ilat] = pc.replace_with_mask(arrays[ilat], need, pa.array(np.asarray(lat, dtype=np.float64)))


class _Background:
    """The log's writer thread: part files of automatic flushes, and ``events.parquet`` as the run goes.

    Parquet encoding releases the GIL, so on a machine with a spare core writing costs the
    simulation little: an automatic flush hands its table to this thread, which writes the
    part and appends the table to ``events.parquet.tmp`` (row groups of ``_ROW_GROUP_ROWS``
    rows), in order; :meth:`EventLog.close` waits for it and renames the file (no second
    pass over the parts). A part that cannot be written disables the combined file (close
    then streams the parts) and is written again by the log's next flush.
    """

    def __init__(self, path: Path) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ivsim-log")
        self._writer: pq.ParquetWriter | None = None
        self._pending = _RowGroups()
        self.error: BaseException | None = None

    def write_part(self, rows: _Columns, path: Path) -> Future:
        """Join ``rows``, write them as part ``path``, then append them to the combined file (returns the task)."""
        return self._pool.submit(self._write_part, rows, path)

    def append(self, table: pa.Table) -> None:
        """Append an already written part's ``table`` to the combined file."""
        if self.error is None:
            self._pool.submit(self._append, table)

    def _write_part(self, rows: _Columns, path: Path) -> None:
        try:
            table = rows.table()
            _write_part(table, path)
        except BaseException as exc:
            self.error = exc  # the combined file would miss these rows
            raise
        self._append(table)

    def _append(self, table: pa.Table) -> None:
        if self.error is not None:
            return
        try:
            if self._writer is None:
                self._writer = pq.ParquetWriter(self.tmp, SCHEMA, **_WRITE_OPTIONS)
            self._pending.add(self._writer, table)
        except BaseException as exc:  # noqa: BLE001 - recorded; close falls back to the parts
            self.error = exc

    def finish(self) -> Path | None:
        """Wait for every task, close the file and move it into place; ``None`` if anything failed."""
        self._pool.submit(self._close)
        self._pool.shutdown(wait=True)
        if self.error is not None:
            logger.warning(
                "event log: writing %s as the run went failed (%s); combining the parts", self.path, self.error
            )
            with contextlib.suppress(OSError):
                self.tmp.unlink(missing_ok=True)
            return None
        os.replace(self.tmp, self.path)
        return self.path

    def _close(self) -> None:
        try:
            if self.error is None:
                if self._writer is None:
                    self._writer = pq.ParquetWriter(self.tmp, SCHEMA, **_WRITE_OPTIONS)
                self._pending.finish(self._writer)
        except BaseException as exc:  # noqa: BLE001
            self.error = exc
        finally:
            if self._writer is not None:
                with contextlib.suppress(Exception):
                    self._writer.close()


class _RowGroups:
    """Cuts a stream of tables into row groups of ``_ROW_GROUP_ROWS`` rows for one writer."""

    def __init__(self) -> None:
        self._pending: list[pa.Table] = []
        self._n = 0

    def add(self, writer: pq.ParquetWriter, table: pa.Table) -> None:
        self._pending.append(table)
        self._n += table.num_rows
        if self._n >= _ROW_GROUP_ROWS:
            whole = pa.concat_tables(self._pending)
            full = (self._n // _ROW_GROUP_ROWS) * _ROW_GROUP_ROWS
            for start in range(0, full, _ROW_GROUP_ROWS):
                writer.write_table(whole.slice(start, _ROW_GROUP_ROWS).combine_chunks(), row_group_size=_ROW_GROUP_ROWS)
            self._pending = [whole.slice(full).combine_chunks()]
            self._n -= full

    def finish(self, writer: pq.ParquetWriter) -> None:
        if self._n:
            writer.write_table(pa.concat_tables(self._pending).combine_chunks(), row_group_size=_ROW_GROUP_ROWS)
        self._pending, self._n = [], 0


class EventLog:
    """Buffered, append-only event log of one run.

    Parameters
    ----------
    run_dir
        Run directory: parts go to ``run_dir/parts/``, the combined log to
        ``run_dir/events.parquet``. ``None`` keeps everything in memory (tests, library use).
    run_id
        Written on every row.
    flush_rows
        Write a part once this many rows are buffered.
    flush_interval_s
        ... or once this many seconds of ``clock`` have passed since the last flush
        (checked every 1,024 single rows and on every :meth:`log_many`).
    clock
        Wall clock used only to decide when to flush; never written to a row.
    background
        Append each flushed part to ``events.parquet`` on a background thread as the run
        goes (``output.combine: background``); ``False``: combine the parts when closing.
    lonlat
        Projection from ``(x_m, y_m)`` arrays to ``(lon, lat)`` arrays: rows that give finite ``x_m``
        and ``y_m`` but no ``lon`` get ``lon`` and ``lat`` from it when their part is written
        (one vectorised call per part, on the writer thread for automatic flushes).

    Raises
    ------
    OutputError
        If ``run_dir`` cannot be created or already holds an event log.

    Examples
    --------
    >>> log = EventLog(None, "demo")
    >>> log.log("position", 0.0, "v0", vehicle="v0", x_m=1.0, y_m=2.0)
    >>> log.log_many("position", 1.0, ["v0", "v1"], x_m=[1.5, 3.0], y_m=0.0)
    >>> log.rows, log.counts
    (3, {'position': 3})
    """

    def __init__(
        self,
        run_dir: Path | None,
        run_id: str,
        *,
        flush_rows: int = 200_000,
        flush_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
        lonlat: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        if flush_rows < 1:
            msg = f"flush_rows must be >= 1, got {flush_rows}"
            raise ValueError(msg)
        self.run_id = str(run_id)
        self._lonlat = lonlat
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.flush_rows = int(flush_rows)
        self.flush_interval_s = float(flush_interval_s)
        self._clock = clock
        self._last_t = -np.inf
        self._seq = 0  # next seq; also the total number of rows logged
        self._flushed_seq = 0  # rows before this seq are no longer buffered
        self._countdown = min(_CLOCK_EVERY, self.flush_rows)
        # (event, *field names) -> [seq.append, t_s.append, entity_id.append, (field.append, ...),
        #                           [seq list, t_s list, entity_id list, *field lists]]
        self._shapes: dict[tuple[str, ...], list[Any]] = {}
        # (event, first seq, n rows, t_s, entity_id, {column: ndarray | list | scalar})
        self._blocks: list[tuple[str, int, int, float, Any, dict[str, Any]]] = []
        self._flushed_counts: dict[str, int] = {}
        self._tables: list[pa.Table] = []  # in-memory mode: flushed rows
        self._parts: list[Path] = []
        self._closed = False
        self._events_path: Path | None = None
        self._background: _Background | None = None
        self._in_flight: list[tuple[Path, _Columns, Future]] = []  # parts being written in the background
        if self.run_dir is not None:
            self._parts_dir = self.run_dir / PARTS_DIR
            if (self.run_dir / EVENTS_FILE).exists() or any(_part_files(self._parts_dir)):
                msg = f"{self.run_dir} already holds an event log"
                raise OutputError(msg)
            try:
                self._parts_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                msg = f"cannot create {self._parts_dir}: {exc.strerror or exc}"
                raise OutputError(msg) from None
            self._background = _Background(self.run_dir / EVENTS_FILE) if background else None
        self._last_flush = clock()

    # ------------------------------------------------------------------ logging

    def log(self, event: str, t_s: float, entity_id: str, **fields: Any) -> None:
        """Append one row.

        Parameters
        ----------
        event
            Event kind, snake_case.
        t_s
            Simulated time in seconds; never smaller than in the previous call.
        entity_id
            The entity the row is about.
        **fields
            Values of other declared columns (``None`` = null); the rest are null.

        Raises
        ------
        KeyError
            If a field is not a declared column (or is ``run_id`` / ``seq``).
        TypeError
            If the first row of a new (event, fields) shape has a value of the wrong type
            (later rows are checked when flushed).
        ValueError
            If ``t_s`` is smaller than in the previous call, or NaN.
        """
        if not t_s >= self._last_t:  # also NaN, and every call once closed (_last_t = inf)
            self._time_went_back(t_s)
        key = (event, *fields)
        buf = self._shapes.get(key)
        if buf is None:
            buf = self._new_shape(key, entity_id, fields)
        self._last_t = t_s
        buf[0](self._seq)
        buf[1](t_s)
        buf[2](entity_id)
        for append, value in zip(buf[3], fields.values()):
            append(value)
        self._seq += 1
        self._countdown -= 1
        if self._countdown <= 0:
            self._maybe_flush()

    def log_many(self, event: str, t_s: float, entity_id: Any, **columns: Any) -> None:
        """Append n rows at the same simulated time, stored as one block.

        Parameters
        ----------
        event
            Event kind of every row.
        t_s
            Simulated time of every row; never smaller than in the previous call.
        entity_id
            Array / sequence of length n, :class:`Labels`, or one value for every row.
        **columns
            Declared columns, each an array / sequence of length n, :class:`Labels` (string
            columns), or a scalar broadcast to n rows. Arrays are copied. At least one argument must be a sequence.

        Raises
        ------
        KeyError
            If a column is not declared (or is ``run_id`` / ``seq``).
        TypeError
            If an array's dtype or a scalar's type does not fit its column (lists are
            checked when flushed).
        ValueError
            If lengths differ, no argument is a sequence, or ``t_s`` goes back.
        """
        if not t_s >= self._last_t:  # also NaN, and every call once closed (_last_t = inf)
            self._time_went_back(t_s)
        n = -1
        stored: dict[str, Any] = {}
        entity: Any = None
        for name, value in (("entity_id", entity_id), *columns.items()):
            check = _CHECKS.get(name)
            if check is None:
                self._unknown(name)
            value = _as_block_column(event, name, value, check)
            if isinstance(value, (np.ndarray, list, Labels)):
                rows = len(value.codes) if isinstance(value, Labels) else len(value)
                if n < 0:
                    n = rows
                elif rows != n:
                    msg = f"event {event!r}: column {name!r} has {rows} rows, expected {n}"
                    raise ValueError(msg)
            if name == "entity_id":
                entity = value
            else:
                stored[name] = value
        if not isinstance(event, str):
            msg = f"event must be a str, got {type(event).__name__} {event!r}"
            raise TypeError(msg)
        if n < 0:
            msg = f"event {event!r}: log_many needs at least one sequence column; use log() for one row"
            raise ValueError(msg)
        self._last_t = t_s
        if n == 0:
            return
        self._blocks.append((event, self._seq, n, t_s, entity, stored))
        self._seq += n
        self._maybe_flush()

    # ------------------------------------------------------------------ counters

    @property
    def rows(self) -> int:
        """Total rows logged so far (flushed or buffered)."""
        return self._seq

    @property
    def counts(self) -> dict[str, int]:
        """Rows logged so far per event kind (a fresh dict; flushed and buffered rows)."""
        counts = dict(self._flushed_counts)
        for event, n in self._buffered_counts():
            counts[event] = counts.get(event, 0) + n
        return counts

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` or :meth:`abort` has run."""
        return self._closed

    # ------------------------------------------------------------------ flushing

    def flush(self) -> Path | None:
        """Write the buffered rows as the next part file, now (and wait for parts being written in the background).

        Returns
        -------
        Path or None
            The part written; ``None`` if nothing was buffered or the log is in memory
            (the rows then move to a compact in-memory table).

        Raises
        ------
        TypeError
            If a buffered value does not fit its column; the buffer is kept.
        OutputError
            If the part (or an earlier one written in the background) cannot be written; the rows are kept.
        """
        return self._flush(wait=True)

    def _flush(self, *, wait: bool) -> Path | None:
        """Flush; ``wait=False`` (automatic flushes) hands the part to the background writer when there is one."""
        self._last_flush = self._clock()
        self._settle(wait=wait)
        if self._seq == self._flushed_seq:
            self._reset_countdown()
            return None
        rows = self._buffer_columns()
        path = None
        if self.run_dir is None:
            self._tables.append(rows.table())
        else:
            path = self._parts_dir / f"part-{len(self._parts):05d}.parquet"
            if wait or self._background is None:
                _write_part(rows.table(), path)
                if self._background is not None:
                    self._background.append(rows.table())
            else:
                self._in_flight.append((path, rows, self._background.write_part(rows, path)))
            self._parts.append(path)
        for event, n in self._buffered_counts():
            self._flushed_counts[event] = self._flushed_counts.get(event, 0) + n
        self._shapes.clear()
        self._blocks.clear()
        self._flushed_seq = self._seq
        self._reset_countdown()
        logger.debug("event log %s: flushed %d rows", self.run_id, rows.n)
        return path

    def sync(self) -> None:
        """Wait until every flushed part is on disk (parts of automatic flushes are written in the background).

        Raises
        ------
        OutputError
            A part cannot be written (its rows are kept for the next try).
        """
        self._settle(wait=True)

    def _settle(self, *, wait: bool) -> None:
        """Collect the background part writes that are done (all, if ``wait``); write a failed one again here.

        Raises
        ------
        OutputError
            A part that failed in the background cannot be written now either (it stays pending).
        """
        while self._in_flight:
            path, rows, task = self._in_flight[0]
            if not wait and not task.done():
                return
            if task.exception() is not None:
                _write_part(rows.table(), path)  # raises: the part stays first in line for the next try
            self._in_flight.pop(0)

    def close(self) -> Path | None:
        """Flush, combine the parts into ``events.parquet`` and delete them. Idempotent.

        Returns
        -------
        Path or None
            ``run_dir/events.parquet``, or ``None`` for an in-memory log.
        """
        if self._closed:
            return self._events_path
        self.flush()
        if self.run_dir is not None:
            self._events_path = self._finish_combined()
            self._remove_parts()
        self._mark_closed()
        return self._events_path

    def abort(self) -> Path | None:
        """Close an interrupted run as far as possible, logging (not raising) failures.

        Returns
        -------
        Path or None
            ``run_dir/events.parquet`` if it could be written, else ``None`` (the parts
            written so far are then left for :func:`ivsim.results.load_run`).
        """
        if self._closed:
            return self._events_path
        self._mark_closed()
        try:
            self.flush()
        except Exception:
            lost = self._seq - self._flushed_seq
            logger.exception("event log %s: flush failed while aborting; %d buffered rows lost", self.run_id, lost)
            self._shapes.clear()
            self._blocks.clear()
            self._flushed_seq = self._seq
        if self.run_dir is None:
            return None
        try:
            self._events_path = self._finish_combined()
        except Exception:
            logger.exception("event log %s: could not combine the parts; kept in %s", self.run_id, self._parts_dir)
            return None
        try:
            self._remove_parts()
        except Exception:
            logger.exception("event log %s: could not remove %s", self.run_id, self._parts_dir)
        return self._events_path

    def to_pandas(self) -> pd.DataFrame:
        """Return every row logged so far, with the dtypes of :func:`ivsim.results.load_run`."""
        if self._events_path is not None:
            tables = [read_table([self._events_path])]
        elif self.run_dir is not None:
            self._settle(wait=True)
            tables = [read_table(self._parts)]
        else:
            tables = list(self._tables)
        if self._seq > self._flushed_seq:
            tables.append(self._buffer_table())
        return table_to_frame(_concat(tables))

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        where = "memory" if self.run_dir is None else str(self.run_dir)
        return f"EventLog({self.run_id!r}, {where}, rows={self.rows}, buffered={self._seq - self._flushed_seq})"

    # ------------------------------------------------------------------ internals

    def _new_shape(self, key: tuple[str, ...], entity_id: Any, fields: dict[str, Any]) -> list[Any]:
        event = key[0]
        if not isinstance(event, str):
            msg = f"event must be a str, got {type(event).__name__} {event!r}"
            raise TypeError(msg)
        for name, value in fields.items():
            check = _CHECKS.get(name)
            if check is None:
                self._unknown(name)
            if not _scalar_ok(value, check):
                raise _type_error(event, name, value, check.typ)
        if not _scalar_ok(entity_id, _CHECKS["entity_id"]):
            raise _type_error(event, "entity_id", entity_id, _S)
        lists: list[list[Any]] = [[] for _ in range(3 + len(fields))]
        buf = [
            lists[0].append,
            lists[1].append,
            lists[2].append,
            tuple(lst.append for lst in lists[3:]),
            lists,
        ]
        self._shapes[key] = buf
        return buf

    def _maybe_flush(self) -> None:
        buffered = self._seq - self._flushed_seq
        if buffered >= self.flush_rows or self._clock() - self._last_flush >= self.flush_interval_s:
            self._flush(wait=False)
        else:
            self._reset_countdown()

    def _reset_countdown(self) -> None:
        self._countdown = max(1, min(_CLOCK_EVERY, self.flush_rows - (self._seq - self._flushed_seq)))

    def _buffered_counts(self) -> list[tuple[str, int]]:
        out = [(key[0], len(buf[4][0])) for key, buf in self._shapes.items()]
        out += [(event, n) for event, _, n, _, _, _ in self._blocks]
        return out

    def _buffer_table(self) -> pa.Table:
        """The buffered rows as one table of :data:`SCHEMA`, in ``seq`` order (buffers untouched)."""
        return self._buffer_columns().table()

    def _buffer_columns(self) -> _Columns:
        """The buffered rows converted to Arrow, column by column (buffers untouched); :meth:`_Columns.table` joins them.

        The conversions from Python objects run here (they hold the GIL); joining the chunks and
        restoring ``seq`` order is Arrow work that an automatic flush leaves to the writer thread.
        """
        first, n = self._flushed_seq, self._seq - self._flushed_seq
        pieces: list[tuple[int, dict[str, pa.Array]]] = []
        for key, buf in self._shapes.items():
            event, names = key[0], key[1:]
            lists = buf[4]
            m = len(lists[0])
            cols = {
                "seq": pa.array(lists[0], _I),
                "t_s": _list_to_arrow(lists[1], _F, event, "t_s"),
                "event": pa.repeat(pa.scalar(event, _S), m),
                "entity_id": _list_to_arrow(lists[2], _S, event, "entity_id"),
            }
            for name, values in zip(names, lists[3:], strict=True):
                cols[name] = _list_to_arrow(values, COLUMNS[name], event, name)
            pieces.append((m, cols))
        # blocks of one event with the same columns become one piece (converted once per column; the
        # permutation below restores the seq order)
        groups: dict[tuple[str, ...], list[tuple[str, int, int, float, Any, dict[str, Any]]]] = {}
        for block in self._blocks:
            groups.setdefault((block[0], *block[5]), []).append(block)
        for (event, *names), blocks in groups.items():
            sizes = np.array([b[2] for b in blocks], dtype=np.int64)
            m = int(sizes.sum())
            cols = {
                "seq": pa.array(np.concatenate([np.arange(b[1], b[1] + b[2], dtype=np.int64) for b in blocks])),
                "t_s": pa.array(np.repeat(np.array([b[3] for b in blocks], dtype=np.float64), sizes)),
                "event": pa.repeat(pa.scalar(event, _S), m),
                "entity_id": _blocks_to_arrow([b[4] for b in blocks], sizes, _S, event, "entity_id"),
            }
            for name in names:
                cols[name] = _blocks_to_arrow([b[5][name] for b in blocks], sizes, COLUMNS[name], event, name)
            pieces.append((m, cols))
        # each column: its pieces' arrays, with one null run for every stretch of pieces without it
        chunks: dict[str, list[pa.Array]] = {c: [] for c in COLUMNS}
        filled = dict.fromkeys(COLUMNS, 0)
        at = 0
        for m, cols in pieces:
            for name, arr in cols.items():
                if filled[name] < at:
                    chunks[name].append(pa.nulls(at - filled[name], COLUMNS[name]))
                chunks[name].append(arr)
                filled[name] = at + m
            at += m
        # seq values of the buffer are exactly first .. first + n - 1: the permutation that sorts them
        seq = np.concatenate([c.to_numpy() for c in chunks["seq"]])
        order = None
        if n > 1 and not (seq[1:] > seq[:-1]).all():
            order = np.empty(n, dtype=np.int64)
            order[seq - first] = np.arange(n, dtype=np.int64)
        return _Columns(chunks, filled, order, n, self.run_id, self._lonlat)

    def _finish_combined(self) -> Path:
        """``events.parquet``: the one written as the run went, else the parts streamed into one now."""
        background, self._background = self._background, None
        if background is not None:
            path = background.finish()
            if path is not None:
                return path
        return self._combine()

    def _combine(self) -> Path:
        """Stream the parts into ``events.parquet`` in fixed-size row groups; return its path."""
        assert self.run_dir is not None
        path = self.run_dir / EVENTS_FILE
        tmp = path.with_name(path.name + ".tmp")
        try:
            with pq.ParquetWriter(tmp, SCHEMA, **_WRITE_OPTIONS) as writer:
                groups = _RowGroups()
                for part in self._parts:
                    groups.add(writer, pq.ParquetFile(part).read())
                groups.finish(writer)
            os.replace(tmp, path)
        except OSError as exc:
            msg = f"cannot write {path}: {exc.strerror or exc}"
            raise OutputError(msg) from None
        return path

    def _remove_parts(self) -> None:
        for part in self._parts:
            part.unlink(missing_ok=True)
        for stale in self._parts_dir.glob("part-*.parquet.tmp"):
            stale.unlink(missing_ok=True)
        try:
            self._parts_dir.rmdir()
        except OSError:
            logger.warning("event log %s: %s is not empty, left in place", self.run_id, self._parts_dir)

    def _mark_closed(self) -> None:
        self._closed = True
        self._last_t = np.inf

    def _time_went_back(self, t_s: float) -> None:
        if self._closed:
            msg = f"event log {self.run_id!r} is closed"
            raise RuntimeError(msg)
        msg = f"t_s must never decrease: got {t_s!r} after {self._last_t!r}"
        raise ValueError(msg)

    @staticmethod
    def _unknown(name: str) -> None:
        if name in _RESERVED:
            msg = f"column {name!r} is filled by the EventLog itself"
        else:
            msg = f"unknown event-log column {name!r}"
        raise KeyError(msg)


# ---------------------------------------------------------------------- reading


def _part_number(path: Path) -> int:
    match = _PART_RE.match(path.name)
    return int(match.group(1)) if match else -1


def _part_files(parts_dir: Path) -> list[Path]:
    if not parts_dir.is_dir():
        return []
    parts = [p for p in parts_dir.iterdir() if _PART_RE.match(p.name)]
    return sorted(parts, key=_part_number)


def log_files(run_dir: Path) -> list[Path] | None:
    """Return the Parquet files holding a run's event log, in order.

    Parameters
    ----------
    run_dir
        A run directory.

    Returns
    -------
    list of Path or None
        ``[run_dir/events.parquet]`` for a closed run; the part files in order for a run
        still open or killed (possibly empty); ``None`` if the folder has no event log.
    """
    run_dir = Path(run_dir)
    events = run_dir / EVENTS_FILE
    if events.is_file():
        return [events]
    parts_dir = run_dir / PARTS_DIR
    if parts_dir.is_dir():
        return _part_files(parts_dir)
    return None


def _conform(table: pa.Table) -> pa.Table:
    """Give a table read from disk every declared column in order (missing ones null), extras last."""
    n = table.num_rows
    names = set(table.column_names)
    arrays, fields = [], []
    for column, typ in COLUMNS.items():
        dict_type = pa.dictionary(pa.int32(), typ) if column in CATEGORICAL else typ
        if column in names:
            arr = table.column(column)
            if arr.type != dict_type:
                arr = arr.cast(typ)
                if column in CATEGORICAL:
                    arr = arr.dictionary_encode()
                    arr = arr.cast(dict_type) if arr.type != dict_type else arr
        else:
            arr = pa.nulls(n, typ)
            if column in CATEGORICAL:
                arr = pa.DictionaryArray.from_arrays(pa.nulls(n, pa.int32()), pa.array([], typ))
        arrays.append(arr)
        fields.append(pa.field(column, dict_type))
    for column in table.column_names:
        if column not in COLUMNS:
            arrays.append(table.column(column))
            fields.append(table.schema.field(column))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def read_table(paths: Sequence[Path]) -> pa.Table:
    """Read event-log Parquet files into one table (categorical columns dictionary-encoded).

    Parameters
    ----------
    paths
        Files written by :class:`EventLog` (``events.parquet`` or parts), in order.

    Returns
    -------
    pyarrow.Table
        The rows of all files, every declared column present (missing ones null, extra
        ones kept at the end); an empty table of the schema if ``paths`` is empty.

    Raises
    ------
    OutputError
        If a file cannot be read.
    """
    tables = []
    for path in paths:
        try:
            metadata = pq.read_metadata(path)
            names = set(metadata.schema.names)
            read_dictionary = [c for c in sorted(CATEGORICAL) if c in names]
            pfile = pq.ParquetFile(path, metadata=metadata, read_dictionary=read_dictionary)
            tables.append(_conform(pfile.read()))
        except (OSError, pa.ArrowException) as exc:
            msg = f"cannot read event log {path}: {exc}"
            raise OutputError(msg) from None
    return _concat(tables)


def _concat(tables: list[pa.Table]) -> pa.Table:
    if not tables:
        return _conform(SCHEMA.empty_table())
    tables = [_conform(t) for t in tables]
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="default")


def _pandas_type(typ: pa.DataType) -> Any:
    if typ == _I:
        return pd.Int64Dtype()
    if typ == _B:
        return pd.BooleanDtype()
    return None


def table_to_frame(table: pa.Table) -> pd.DataFrame:
    """Convert an event-log table to pandas with the dtypes of :func:`ivsim.results.load_run`.

    Parameters
    ----------
    table
        Rows of :data:`SCHEMA` (string or dictionary-encoded string columns).

    Returns
    -------
    pandas.DataFrame
        float64 columns as ``float64`` (NaN for null), int64 as ``Int64``, bool as
        ``boolean``, :data:`CATEGORICAL` columns as ``category`` (sorted categories),
        other strings as pandas strings; sorted by ``seq`` with a fresh RangeIndex.
    """
    table = _conform(table)
    df = table.to_pandas(types_mapper=_pandas_type)
    for column in CATEGORICAL:
        cats = df[column].cat.categories
        if len(cats) > 1 and not cats.is_monotonic_increasing:
            df[column] = df[column].cat.reorder_categories(sorted(cats))
    if not df["seq"].is_monotonic_increasing:
        df = df.sort_values("seq", kind="stable", ignore_index=True)
    return df
