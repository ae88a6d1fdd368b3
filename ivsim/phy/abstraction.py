"""PHY abstraction: ``link.fidelity: fast`` samples each frame's quality from calibration tables of the full link.

``ivsim calibrate SCENARIO`` (:func:`calibrate`) runs the scenario's own full neural
link (:class:`~ivsim.ai.neural_link.NeuralLinkEvaluator`: its codec, grid, image size,
images, channel realizations and estimators, fall-backs included) over a grid of
cells and writes a :class:`CalibrationTable` (Parquet). A scenario with
``link.fidelity: fast`` is served by :class:`CalibratedLinkEvaluator`, which draws
each frame's ``(psnr_db, ssim, nmse_db, pilot_resid_db, lost)`` from the table and
computes everything else (airtime, delay, deadline, drops, compute latency) exactly
as the full link does (:func:`ivsim.sim.links.neural_tx_result`). It imports no torch
(the tables are numpy/pandas).

Estimator states
----------------
A frame's outcome depends on the channel scene it crosses and on the estimator its
receiver holds. A **state** is one such estimator:

* ``base/<scene>``: the base weights made for ``<scene>`` (the receiver's
  ``estimator_scene``, ``adapter_id == ""``). Every scene of the scenario has one, so the
  table holds the whole held-scene x channel-scene matrix (matched on the diagonal,
  mismatched off it). A scene whose diffusion weights fell back to LMMSE in the full
  link is calibrated with LMMSE too (the table records the estimator name it logged).
* ``refined/<base>><target>/n<N>/k<K>/r<rank>/p<pilots>``: the base weights of ``<base>``
  with the LoRA adapter the cloud makes for ``<target>`` from ``N`` generated channels in
  ``K`` steps. Calibration makes it with the real refiner
  (:class:`~ivsim.ai.refine_job.NeuralRefiner`), with the request seed a run of the same
  scenario and seed uses, so its adapter id is the full run's (``--adapters DIR`` or
  ``refinement.cache_dir`` reuses adapters a full run already computed). Default pairs:
  the ``scene_rules.default`` scene refined for every other scene (the default
  scenario: street_canyon -> river_bridge and street_canyon -> brooklyn_urban), with the
  scenario's N, K and rank; ``--refined BASE:TARGET,...`` chooses others.

Every state is calibrated on every channel scene.

Cells
-----
``(state, channel scene, SNR bin, speed bin)`` with ``frames`` calibration frames each
(default 8). Sample ``k`` of a cell shows image ``k mod n_images`` of the link's images,
so with ``frames`` a multiple of the image count every image is in every cell equally
often. SNR bins are centres (default ``-6:20:2,24:40:4,50:70:10``, 22 bins: the codec
saturates above about 20 dB, the channel NMSE and the pilot residual keep changing up
to the 70 dB a car sees on the bridge); speed bins are intervals (default edges
``0, 7, 14, 30`` m/s; a calibration frame's speed is drawn uniformly in its bin). The
SINR of a calibration frame is the bin centre.

**Paired (common random numbers).** Every state of a channel scene sees the very same
calibration frames: the same images, channels, noise and diffusion sampling noise
(the same :class:`~ivsim.sim.links.TxBatch` is sent once per state, and the full link
seeds each batch from its ``(vehicle, frame)`` pairs). Sample ``k`` of two states is
therefore one frame decoded by two estimators, and the difference of the two samples
is the estimators' difference on that frame.

Sampling (the fast link)
------------------------
Each sent frame gets two uniforms that are a hash of the run's link seed and the frame's
own ``(vehicle, frame)`` pair (:func:`frame_uniforms`, counter-based: the full link's
discipline of drawing from the frames sent and nothing else, taken down to the single
frame, and vectorised):

1. ``u_snr`` picks between the two SNR bins around the frame's SINR, the upper one
   with probability equal to the SINR's fractional position between them (linear
   interpolation of every statistic); SINRs outside the bins use the nearest end bin;
2. ``u_pick`` picks one of the cell's samples that show the frame's own image
   (``(13 v + f) mod n_images``, the full link's image), uniformly; a table with fewer
   frames per cell than images picks among all.

The speed bin is the frame's speed's. The picked sample gives all its columns together
(their correlation is kept). The uniforms do not depend on the estimator states, so
runs that differ only in their refinement policy draw the same numbers for the same
frames, a frame decoded by the same state gets the same outcome in both, and a frame
decoded by different states gets the paired calibration samples of one calibration
frame.

Refined states at run time
--------------------------
``make_refiner`` gives a fast run a :class:`CalibratedRefiner`: an
:class:`~ivsim.refine.service.AnalyticRefiner` (the scenario's timings) that tells the
fast link which refined state each adapter id stands for. A request whose (base,
target, N, K, rank, pilots, seed) equals a calibrated state's gets that state's
adapter id and real size (so the run's log matches a full run's); other (N, K, rank,
pilots) of a calibrated (base, target) pair use the nearest calibrated state (in
log N, log K, log rank; a logged warning, once per pair); a pair the table does not
have makes the job fail (``refine_done`` outcome ``failed`` with the reason, the run
goes on, the vehicle keeps its estimator). A table without any refined state refuses
a policy that asks for refinements when the run is built.

Table
-----
One Parquet file, one row per sample: ``state, channel_scene, snr_bin, snr_db,
speed_bin, sample, image, speed_mps`` and the outcome ``psnr_db, ssim, nmse_db,
pilot_resid_db, lost, compute_s`` (``compute_s``: the measured wall time of the batched
call per frame, used by ``link.latency: measured``; ``profile`` computes latency from
the profile as the full link does). The schema metadata ``ivsim.calibration`` (JSON)
holds the codec (kind, name, weights file and hash), grid, symbols, image size, images,
channel realizations, direction, estimator settings, each scene's profile hash and
estimator weights hash, the states (with adapter ids and sizes), the bins, the seed,
device and threads, the calibration's wall time and the command that made it.

At load (:meth:`CalibrationTable.check`) a table that does not fit the scenario (codec,
codec weights, grid, image size, images, channel realizations, direction, estimator
kind or settings, a scene missing or with another profile hash, estimator weights that
changed, a missing cell) is refused with one line (:class:`~ivsim.errors.ModelError`;
``ivsim run`` exits 2). ``link.calibration`` names the table; the default is
``models/abstraction/<scenario name>.parquet``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit

from ivsim.config.schema import profile_hash
from ivsim.errors import IvsimError, ModelError, OutputError
from ivsim.refine.service import AnalyticRefiner, RefineWork, adapter_key
from ivsim.sim.eventlog import Labels
from ivsim.sim.links import neural_tx_result

if TYPE_CHECKING:
    import pandas as pd

    from ivsim.config.schema import Scenario
    from ivsim.refine.budget import RefineTimingModel
    from ivsim.refine.service import RefineRequest
    from ivsim.sim.links import TxBatch, TxResult

__all__ = [
    "DEFAULT_FRAMES",
    "DEFAULT_SNR_BINS",
    "DEFAULT_SPEED_EDGES",
    "METRICS",
    "CalibratedLinkEvaluator",
    "CalibratedRefiner",
    "CalibrationTable",
    "EstimatorState",
    "calibrate",
    "default_refined_pairs",
    "default_table_path",
    "parse_refined",
    "parse_snr_bins",
]

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / "models"
TABLE_DIR = MODELS_DIR / "abstraction"
"""Where the shipped tables live (``<scenario name>.parquet``)."""

FORMAT = "ivsim.calibration"
VERSION = 1
META_KEY = b"ivsim.calibration"
METRICS = ("psnr_db", "ssim", "nmse_db", "pilot_resid_db", "lost", "compute_s")
"""Outcome columns of a sample, in the order of the last axis of :attr:`CalibrationTable.values`."""
DEFAULT_SNR_BINS = "-6:20:2,24:40:4,50:70:10"
DEFAULT_SPEED_EDGES = (0.0, 7.0, 14.0, 30.0)
DEFAULT_FRAMES = 8
IMAGE_STRIDE = 13
"""Frame ``f`` of vehicle ``v`` shows image ``(13 v + f) mod N`` (as :class:`~ivsim.ai.neural_link.NeuralLinkEvaluator`)."""

_COLUMNS = ("state", "channel_scene", "snr_bin", "snr_db", "speed_bin", "sample", "image", "speed_mps", *METRICS)


# --------------------------------------------------------------------------- small helpers


def default_table_path(scenario_name: str) -> Path:
    """``models/abstraction/<scenario name>.parquet``: where ``link.fidelity: fast`` looks by default."""
    return TABLE_DIR / f"{scenario_name}.parquet"


def _sha16(path: str | Path) -> str:
    """First 16 hex digits of a file's SHA-256 (the :func:`ivsim.ai.refine.weights_id` convention)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _rel(path: str | Path | None) -> str | None:
    """A path relative to the repository when inside it (tables stay valid in another checkout)."""
    if path is None:
        return None
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(p)


def _abs(path: str) -> Path:
    """Inverse of :func:`_rel`; bare weight names (``codec_ctcd``) are looked up in ``models/``."""
    p = Path(path)
    if not p.suffix and len(p.parts) == 1:
        return MODELS_DIR / f"{p.name}.safetensors"
    return p if p.is_absolute() else REPO / p


def parse_snr_bins(text: str) -> tuple[float, ...]:
    """SNR bin centres from comma-separated pieces, each a number or an inclusive ``start:stop:step``.

    Returns
    -------
    tuple of float
        Sorted, without duplicates; at least one.

    Raises
    ------
    ValueError
        A piece is not a number or a range.

    Examples
    --------
    >>> parse_snr_bins("-6:0:2,10,20:40:10")
    (-6.0, -4.0, -2.0, 0.0, 10.0, 20.0, 30.0, 40.0)
    """
    values: list[float] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if ":" in piece:
            parts = piece.split(":")
            try:
                start, stop, step = (float(x) for x in parts)
            except ValueError:
                msg = f"{piece!r}: a range is start:stop:step in dB, e.g. -6:20:2"
                raise ValueError(msg) from None
            if len(parts) != 3 or step <= 0 or start > stop or not all(map(math.isfinite, (start, stop, step))):
                msg = f"{piece!r}: a range needs start <= stop and step > 0, e.g. -6:20:2"
                raise ValueError(msg)
            n = math.floor((stop - start) / step + 1e-9) + 1
            values += [round(start + i * step, 9) for i in range(n)]
        else:
            try:
                values.append(float(piece))
            except ValueError:
                msg = f"{piece!r}: expected a number in dB or a range start:stop:step"
                raise ValueError(msg) from None
    if not values or not all(map(math.isfinite, values)):
        msg = "expected at least one finite SNR in dB, e.g. -6:20:2,24:40:4"
        raise ValueError(msg)
    if len(set(values)) > 1000:
        msg = "at most 1000 SNR bins"
        raise ValueError(msg)
    return tuple(sorted({float(v) + 0.0 for v in values}))


def parse_refined(text: str, scenes: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """``BASE:TARGET,...`` (or ``none``) into scene pairs.

    Raises
    ------
    ValueError
        Not ``A:B`` pairs of two different known scenes.
    """
    if text.strip().lower() in ("", "none"):
        return []
    pairs: list[tuple[str, str]] = []
    for piece in (p.strip() for p in text.split(",") if p.strip()):
        base, sep, target = piece.partition(":")
        if not sep or not base or not target:
            msg = f"{piece!r}: expected BASE:TARGET, e.g. street_canyon:river_bridge"
            raise ValueError(msg)
        unknown = [s for s in (base, target) if s not in scenes]
        if unknown:
            msg = f"{piece!r}: unknown scene {unknown[0]!r} (allowed: {', '.join(scenes)})"
            raise ValueError(msg)
        if base == target:
            msg = f"{piece!r}: base and target are the same scene (its base weights are already calibrated)"
            raise ValueError(msg)
        if (base, target) not in pairs:
            pairs.append((base, target))
    return pairs


def default_refined_pairs(scenario: Scenario) -> list[tuple[str, str]]:
    """The ``scene_rules.default`` scene refined for every other scene (diffusion estimators only)."""
    if scenario.link.estimator.kind != "diffusion":
        return []
    base = scenario.scene_rules.default
    return [(base, t) for t in scenario.scenes if t != base]


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class EstimatorState:
    """One estimator a receiver can hold (see the module docstring).

    Attributes
    ----------
    key
        ``base/<scene>`` or ``refined/<base>><target>/n<N>/k<K>/r<rank>/p<pilots>``.
    held_scene
        The scene it was made for (the vehicle table's ``estimator_scene``): the
        scene itself, or the refinement's target.
    base_scene
        The scene of its base weights.
    refined
        Whether an adapter is merged into the base weights.
    samples, steps, rank, pilots
        The refinement's N, K, LoRA rank and uploaded pilots (0 for base weights).
    request_seed
        The refinement request's seed (a run of the calibrated scenario and seed uses it).
    adapter_id
        The full link's adapter id (``""`` for base weights).
    adapter_bytes
        The adapter's real size (the download).
    estimator, estimator_scene
        What the full link logs in ``tx.estimator`` and ``tx.estimator_scene`` for it.
    """

    key: str
    held_scene: str
    base_scene: str
    refined: bool = False
    samples: int = 0
    steps: int = 0
    rank: int = 0
    pilots: int = 0
    request_seed: int | None = None
    adapter_id: str = ""
    adapter_bytes: int = 0
    estimator: str = ""
    estimator_scene: str | None = None

    @staticmethod
    def base_key(scene: str) -> str:
        """Key of the base weights of ``scene``."""
        return f"base/{scene}"

    @staticmethod
    def refined_key(base: str, target: str, samples: int, steps: int, rank: int, pilots: int) -> str:
        """Key of a refined state."""
        return f"refined/{base}>{target}/n{samples}/k{steps}/r{rank}/p{pilots}"


class CalibrationTable:
    """Outcome samples of the full link per (state, channel scene, SNR bin, speed bin).

    Parameters
    ----------
    meta
        The metadata (see the module docstring): at least ``states``, ``scenes``,
        ``snr_db``, ``speed_edges``, ``frames``, ``n_images``.
    values
        ``[states, scenes, snr bins, speed bins, frames, len(METRICS)]`` float32, NaN where
        not calibrated.
    speeds
        ``[scenes, snr bins, speed bins, frames]`` speed of each calibration frame (informational).
    path
        Where it was read from or written to (for messages).
    """

    def __init__(
        self, meta: dict[str, Any], values: np.ndarray, *, speeds: np.ndarray | None = None, path: Path | None = None
    ) -> None:
        self.meta = meta
        self.values = values
        self.speeds = speeds
        self.path = path
        self.states = [EstimatorState(**s) for s in meta["states"]]
        self.scenes = tuple(meta["scene_order"])  # (a JSON object's key order is not kept by every writer)
        self.snr_db = np.asarray(meta["snr_db"], dtype=float)
        self.speed_edges = np.asarray(meta["speed_edges"], dtype=float)
        self.frames = int(meta["frames"])
        self.n_images = int(meta["n_images"])
        self.index = {s.key: i for i, s in enumerate(self.states)}
        want = (
            len(self.states),
            len(self.scenes),
            len(self.snr_db),
            len(self.speed_edges) - 1,
            self.frames,
            len(METRICS),
        )
        if values.shape != want:
            msg = f"{self._where()}calibration values have shape {values.shape}, the metadata says {want}"
            raise ModelError(msg)

    def _where(self) -> str:
        return f"{self.path}: " if self.path is not None else ""

    # ---------------------------------------------------------------- lookup

    def base_state(self, scene: str) -> int | None:
        """Index of the base-weights state of ``scene`` (``None`` if absent)."""
        return self.index.get(EstimatorState.base_key(scene))

    def refined_states(self) -> list[int]:
        """Indices of the refined states."""
        return [i for i, s in enumerate(self.states) if s.refined]

    def speed_bin(self, speed_mps: np.ndarray) -> np.ndarray:
        """Speed bin of each speed (below the first edge: the first bin; above the last: the last)."""
        inner = self.speed_edges[1:-1]
        return np.searchsorted(inner, np.asarray(speed_mps, dtype=float), side="right").astype(np.int64)

    def sample(
        self,
        state: np.ndarray,
        scene: np.ndarray,
        snr_db: np.ndarray,
        speed_mps: np.ndarray,
        image: np.ndarray,
        u: np.ndarray,
    ) -> np.ndarray:
        """Draw one sample per frame (see "Sampling" in the module docstring).

        Parameters
        ----------
        state, scene
            Table indices of each frame's estimator state and channel scene.
        snr_db, speed_mps
            Each frame's SINR and speed.
        image
            Each frame's image index (``0 .. n_images - 1``).
        u
            ``[n, 2]`` uniforms in ``[0, 1)``: SNR interpolation, sample pick.

        Returns
        -------
        numpy.ndarray
            ``[n, len(METRICS)]`` float32.
        """
        u = np.asarray(u, dtype=float)
        return _sample_rows(
            self.values, self.snr_db, self.speed_edges[1:-1], self.frames, self.n_images,
            np.asarray(state, dtype=np.int64), np.asarray(scene, dtype=np.int64), np.asarray(snr_db, dtype=float),
            np.asarray(speed_mps, dtype=float), np.asarray(image, dtype=np.int64), u[:, 0].copy(), u[:, 1].copy(),
        )  # fmt: skip

    def cell(self, state: str, scene: str, snr_db: float, speed_bin: int) -> pd.DataFrame:
        """The samples of one cell as a frame (columns :data:`METRICS` and ``image``)."""
        import pandas as pd

        s = int(np.argmin(np.abs(self.snr_db - snr_db)))
        vals = self.values[self.index[state], self.scenes.index(scene), s, speed_bin]
        df = pd.DataFrame(vals.astype(float), columns=list(METRICS))
        df["image"] = np.arange(self.frames) % self.n_images
        return df

    # ---------------------------------------------------------------- checks

    def check(self, scenario: Scenario, *, notes: list[str] | None = None) -> None:
        """Refuse a table that does not fit ``scenario`` (one line naming every mismatch).

        Raises
        ------
        ModelError
            Codec (kind or weights), grid, image size, images, channel realizations,
            direction or estimator settings differ; a scene is missing, has another
            profile, or its estimator weights changed; a cell the run can need is empty.
        """
        m = self.meta
        spec = scenario.link
        problems: list[str] = []

        def differs(what: str, have: Any, table: Any) -> None:
            if have != table:
                problems.append(f"{what} {have!r} (table: {table!r})")

        differs("link.direction", spec.direction, m["direction"])
        codec = m["codec"]
        differs("codec", spec.codec.kind, codec["kind"])
        if spec.codec.kind == codec["kind"]:
            want = spec.codec.weights or codec.get("weights")
            if want is not None:
                path = _abs(want)
                if not path.is_file():
                    problems.append(f"codec weights {want} not found")
                elif codec.get("weights_sha16") != _sha16(path):
                    problems.append(
                        f"codec weights {_rel(path)} differ from the calibrated ones ({codec.get('weights_sha16')})"
                    )
        grid = spec.grid.model_dump(mode="json")
        for key in sorted(set(grid) | set(m["grid"])):
            differs(f"link.grid.{key}", grid.get(key), m["grid"].get(key))
        differs("link.image_size", list(spec.image_size), list(m["image_size"]))
        differs("link.channel_realizations", spec.channel_realizations, m["channel_realizations"])
        differs("link.images", None if spec.images is None else _rel(spec.images), m["images"])
        est = m["estimator"]
        differs("link.estimator.kind", spec.estimator.kind, est["kind"])
        if spec.estimator.kind == "diffusion" == est["kind"]:
            differs(
                "link.estimator.num_inference_steps", spec.estimator.num_inference_steps, est["num_inference_steps"]
            )
            differs("link.estimator.start", spec.estimator.start, est["start"])
        for name in scenario.scenes:
            have = m["scenes"].get(name)
            if have is None:
                problems.append(f"scene {name!r} not calibrated (table scenes: {', '.join(self.scenes)})")
                continue
            differs(f"scene {name!r} profile hash", profile_hash(scenario.profile_of(name)), have["profile_hash"])
            explicit = spec.estimator.weights.get(name)
            want = explicit or have.get("weights")
            if want is not None and spec.estimator.kind == "diffusion":
                path = _abs(want)
                if not path.is_file() or have.get("weights_sha16") != _sha16(path):
                    problems.append(f"scene {name!r} estimator weights {_rel(path)} differ from the calibrated ones")
            i = self.base_state(name)
            if i is None:
                problems.append(f"no base-weights state of scene {name!r}")
                continue
        used = [self.scenes.index(n) for n in scenario.scenes if n in self.scenes]
        for i, st in enumerate(self.states):
            if st.base_scene not in scenario.scenes or st.held_scene not in scenario.scenes:
                continue
            empty = np.isnan(self.values[i][used][..., METRICS.index("psnr_db")])
            if empty.any():
                problems.append(f"state {st.key} has {int(empty.sum())} empty samples")
        if problems:
            msg = (
                f"{self._where()}calibration table does not fit the scenario: {'; '.join(problems)} "
                f"(make one: ivsim calibrate SCENARIO -o FILE, and set link.calibration)"
            )
            raise ModelError(msg)
        if notes is not None and spec.min_sinr_db < self.snr_db[0]:
            notes.append(
                f"link fidelity fast: frames between link.min_sinr_db {spec.min_sinr_db:g} dB and the table's lowest "
                f"SNR bin {self.snr_db[0]:g} dB use that bin"
            )

    # ---------------------------------------------------------------- files

    def to_frame(self) -> pd.DataFrame:
        """One row per calibrated sample (the file's rows; ``attrs['meta']`` holds the metadata)."""
        import pandas as pd

        e, c, s, v, f, _ = self.values.shape
        grid = np.stack(np.meshgrid(*(np.arange(n) for n in (e, c, s, v, f)), indexing="ij"), -1).reshape(-1, 5)
        vals = self.values.reshape(-1, len(METRICS))
        keep = ~np.isnan(vals[:, 0])
        grid, vals = grid[keep], vals[keep]
        speeds = self.speeds
        df = pd.DataFrame(
            {
                "state": pd.Categorical.from_codes(grid[:, 0], [st.key for st in self.states]),
                "channel_scene": pd.Categorical.from_codes(grid[:, 1], list(self.scenes)),
                "snr_bin": grid[:, 2].astype(np.int16),
                "snr_db": self.snr_db[grid[:, 2]].astype(np.float32),
                "speed_bin": grid[:, 3].astype(np.int8),
                "sample": grid[:, 4].astype(np.int16),
                "image": (grid[:, 4] % self.n_images).astype(np.int16),
                "speed_mps": (
                    np.asarray(speeds, dtype=np.float32)[grid[:, 1], grid[:, 2], grid[:, 3], grid[:, 4]]
                    if speeds is not None
                    else np.full(len(grid), np.nan, dtype=np.float32)
                ),
            }
        )
        for j, name in enumerate(METRICS):
            df[name] = vals[:, j].astype(bool) if name == "lost" else vals[:, j]
        df.attrs["meta"] = self.meta
        return df

    def write(self, path: str | Path) -> Path:
        """Write the table (Parquet, zstd; metadata in the schema); returns the path.

        Raises
        ------
        OutputError
            The file cannot be written.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        table = pa.Table.from_pandas(self.to_frame(), preserve_index=False)
        table = table.replace_schema_metadata({META_KEY: json.dumps(self.meta).encode()})
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path, compression="zstd")
        except OSError as exc:
            msg = f"{path}: cannot write the calibration table ({exc.strerror or exc})"
            raise OutputError(msg) from None
        self.path = path
        return path

    @classmethod
    def read(cls, path: str | Path) -> CalibrationTable:
        """Read a table written by :meth:`write`.

        Raises
        ------
        ModelError
            Missing, unreadable, not a calibration table, or of another format version.
        """
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.is_file():
            msg = f"{path}: no calibration table (make it: ivsim calibrate SCENARIO -o {path})"
            raise ModelError(msg)
        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for a bad file
            msg = f"{path}: not a readable Parquet calibration table ({str(exc).splitlines()[0][:120]})"
            raise ModelError(msg) from None
        raw = (table.schema.metadata or {}).get(META_KEY)
        try:
            meta = json.loads(raw) if raw is not None else None
        except ValueError:
            meta = None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            msg = f"{path}: not an ivsim calibration table (no {META_KEY.decode()} metadata)"
            raise ModelError(msg)
        if meta.get("version") != VERSION:
            msg = f"{path}: calibration table format version {meta.get('version')} (this ivsim reads {VERSION})"
            raise ModelError(msg)
        missing = [c for c in _COLUMNS if c not in table.column_names]
        if missing:
            msg = f"{path}: calibration table lacks columns {missing}"
            raise ModelError(msg)
        df = table.to_pandas()
        keys = [s["key"] for s in meta["states"]]
        scenes = list(meta["scene_order"])
        shape = (len(keys), len(scenes), len(meta["snr_db"]), len(meta["speed_edges"]) - 1, int(meta["frames"]))
        values = np.full((*shape, len(METRICS)), np.nan, dtype=np.float32)
        e = _codes(df["state"], keys)
        c = _codes(df["channel_scene"], scenes)
        idx = (e, c, df["snr_bin"].to_numpy(int), df["speed_bin"].to_numpy(int), df["sample"].to_numpy(int))
        if (
            (e < 0).any()
            or (c < 0).any()
            or any((i < 0).any() or (i >= n).any() for i, n in zip(idx[2:], shape[2:], strict=True))
        ):
            msg = f"{path}: calibration table rows outside the grid its metadata declares"
            raise ModelError(msg)
        values[idx] = np.stack([df[name].to_numpy(np.float32) for name in METRICS], axis=-1)
        speeds = np.full(shape[1:], np.nan, dtype=np.float32)
        speeds[idx[1:]] = df["speed_mps"].to_numpy(np.float32)
        return cls(meta, values, speeds=speeds, path=path)

    def summary(self) -> str:
        """One line: states, scenes, bins, frames, samples."""
        e, c, s, v, f, _ = self.values.shape
        n = int((~np.isnan(self.values[..., 0])).sum())
        return f"{e} estimator states x {c} channel scenes x {s} SNR bins x {v} speed bins x {f} frames: {n:,} samples"


@njit(cache=True, nogil=True)
def _sample_rows(
    values, bins, inner_speed_edges, frames, n_images, state, scene, snr_db, speed_mps, image, u_snr, u_pick
):
    """:meth:`CalibrationTable.sample`'s draw, one frame per row (a compiled loop).

    The SNR bin: the bin at or below the clipped SNR, or the one above it with probability the
    linear weight between them (``u_snr``); the speed bin: among ``inner_speed_edges``; the sample:
    uniformly (``u_pick``) among the frames of the frame's image, or among all frames when there are
    fewer frames than images.
    """
    n = state.shape[0]
    nb = bins.shape[0]
    out = np.empty((n, values.shape[-1]), dtype=values.dtype)
    for r in range(n):
        x = min(max(snr_db[r], bins[0]), bins[nb - 1])
        s = 0
        if nb > 1:
            k = min(max(np.searchsorted(bins, x, side="right") - 1, 0), nb - 2)
            w = (x - bins[k]) / (bins[k + 1] - bins[k])
            s = k + 1 if u_snr[r] < w else k
        v = np.searchsorted(inner_speed_edges, speed_mps[r], side="right")
        if frames >= n_images:
            count = (frames - 1 - image[r]) // n_images + 1  # samples k < frames with k mod n_images == image
            pick = image[r] + n_images * min(int(u_pick[r] * count), count - 1)
        else:
            pick = min(int(u_pick[r] * frames), frames - 1)
        out[r, :] = values[state[r], scene[r], s, v, pick, :]
    return out


def _codes(column: Any, categories: list[str]) -> np.ndarray:
    """Positions of a column's strings in ``categories`` (-1 where absent)."""
    lookup = {k: i for i, k in enumerate(categories)}
    return np.array([lookup.get(str(x), -1) for x in column], dtype=np.int64)


# --------------------------------------------------------------------------- the fast link



@njit(cache=True, nogil=True)
def _mix64(z: np.uint64) -> np.uint64:
    """SplitMix64's finaliser (wrapping uint64 arithmetic): a bijective 64-bit hash."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def _frame_uniforms(seed: np.uint64, vehicle: np.ndarray, frame: np.ndarray, k: int) -> np.ndarray:
    golden = np.uint64(0x9E3779B97F4A7C15)
    one = np.uint64(1)
    out = np.empty((vehicle.shape[0], k))
    for r in range(vehicle.shape[0]):
        key = _mix64(seed + golden * (np.uint64(vehicle[r]) + one))
        key = _mix64(key ^ (golden * (np.uint64(frame[r]) + one)))
        for j in range(k):
            out[r, j] = np.float64(_mix64(key + golden * np.uint64(j + 1)) >> np.uint64(11)) * 2.0**-53
    return out


def frame_uniforms(seed: int, vehicle: np.ndarray, frame: np.ndarray, k: int = 2) -> np.ndarray:
    """``[n, k]`` uniforms in ``[0, 1)``, each row a hash of ``(seed, vehicle, frame)`` only.

    Counter-based: a frame's draws do not depend on which other frames share its batch,
    on the order they are in, or on anything drawn before (common random numbers across
    runs that differ in anything but the frames sent). SplitMix64 hashes of the key
    ``seed + G (vehicle + 1)``, mixed with ``G (frame + 1)``, then ``+ G j`` per column
    (``G`` the 64-bit golden ratio), in a compiled loop.
    """
    vehicle = np.asarray(vehicle).astype(np.int64).ravel()
    frame = np.asarray(frame).astype(np.int64).ravel()
    return _frame_uniforms(np.uint64(int(seed) % 2**64), vehicle, frame, int(k))


class CalibratedLinkEvaluator:
    """``link.fidelity: fast``: the full link's outcome sampled from a :class:`CalibrationTable`.

    Parameters
    ----------
    scenario
        The scenario (``link``, ``scenes``, ``profiles``).
    seed
        The run's link seed (the full link's): with each frame's ``(vehicle, frame)``
        pair it gives the frame's draws (:func:`frame_uniforms`).
    notes
        Lines for the run's log are appended here (which table, any clamping).
    table
        Use this table instead of reading ``link.calibration`` (or the default path).

    Raises
    ------
    ModelError
        No table, an unreadable one, one that does not fit the scenario, or a latency
        profile without the codec's or estimator's entry.
    """

    name = "fast"
    scores_images = True

    def __init__(
        self, scenario: Scenario, *, seed: int, notes: list[str] | None = None, table: CalibrationTable | None = None
    ) -> None:
        spec = scenario.link
        self.notes = notes if notes is not None else []
        if table is None:
            path = Path(spec.calibration) if spec.calibration is not None else default_table_path(scenario.name)
            if spec.calibration is None and not path.is_file():
                msg = (
                    f"link.fidelity fast: no calibration table for scenario {scenario.name!r} ({_rel(path)}); make it "
                    f"with ivsim calibrate SCENARIO -o FILE and set link.calibration=FILE"
                )
                raise ModelError(msg)
            table = CalibrationTable.read(path)
        table.check(scenario, notes=self.notes)
        self.table = table
        meta = table.meta
        self.scene_names = tuple(scenario.scenes)
        self._scene = np.array([table.scenes.index(s) for s in self.scene_names], dtype=np.int64)
        self._base = np.array([table.base_state(s) for s in self.scene_names], dtype=np.int64)
        self._adapters: dict[str, int] = {}
        self.min_sinr_db = spec.min_sinr_db
        self.codec_name = str(meta["codec"]["name"])
        self.symbols = int(meta["symbols"])
        self.n_grids = int(meta["n_grids"])
        self.realizations = int(meta["realizations"])
        self.airtime_hz_s = float(meta["airtime_hz_s"])
        self.frame_bits = 24 * spec.image_size[0] * spec.image_size[1]
        self.latency = None
        if spec.latency == "profile":
            from ivsim.ai.latency import default_profile_name, load_latency_profile

            self.latency = load_latency_profile(spec.latency_profile or default_profile_name(scenario.device))
            for st in table.states:  # every estimator the run can log: fail now, not mid-run
                if st.base_scene in scenario.scenes and st.held_scene in scenario.scenes:
                    self._frame_latency(st.estimator)
        self._state_estimator = np.array([st.estimator for st in table.states], dtype=object)
        self._state_estimator_scene = np.array([st.estimator_scene for st in table.states], dtype=object)
        self._latency_memo = np.full(len(self.table.states), np.nan)  # per table state; NaN: not looked up yet
        self.seed = int(seed) % 2**64
        self.calls = 0
        self.wall_s = 0.0
        where = _rel(table.path) if table.path is not None else "a table in memory"
        self.notes.append(
            f"link fidelity fast: image quality sampled from {where} ({table.summary()}; calibrated with "
            f"{meta.get('command', '?')})"
        )

    def _frame_latency(self, estimator: str) -> float:
        assert self.latency is not None
        return self.latency.frame_s(
            self.codec_name, estimator, symbols=self.symbols, realizations=self.realizations, grids=self.n_grids
        )

    def _state_latency(self, state: np.ndarray) -> np.ndarray:
        """The profile's frame latency of each frame's estimator state (one lookup per distinct state)."""
        memo = self._latency_memo
        out = memo[state]
        todo = np.isnan(out)
        if todo.any():
            for st in np.unique(state[todo]).tolist():
                memo[st] = self._frame_latency(self.table.states[st].estimator)
            out = memo[state]
        return out

    def register_adapter(self, adapter_id: str, state: int) -> None:
        """Frames whose receiver holds ``adapter_id`` are decoded by table state ``state``."""
        self._adapters[adapter_id] = int(state)

    def _state_of(self, held: int, adapter: str) -> int:
        if adapter:
            if adapter not in self._adapters:
                msg = f"no refined estimator {adapter!r} was registered with the link evaluator"
                raise ModelError(msg)
            return self._adapters[adapter]
        return int(self._base[held])

    def evaluate(self, batch: TxBatch) -> TxResult:
        """Sample the outcome of every frame of ``batch`` (one call per batching window)."""
        t0 = time.perf_counter()
        n = len(batch)
        nan = np.full(n, np.nan)
        outage = batch.sinr_db < self.min_sinr_db
        frame = np.zeros(n, dtype=np.int64) if batch.frame is None else batch.frame.astype(np.int64)
        vehicle = batch.vehicle.astype(np.int64)
        sent = np.flatnonzero(~outage)
        held = batch.estimator_scene if batch.estimator_scene is not None else batch.scene
        held = np.where(held < 0, batch.scene, held)
        state = self._base[held]
        codes = getattr(batch, "adapter_code", None)
        adapters = getattr(batch, "adapter_id", None)
        if codes is not None:  # the same as below, on integer codes
            code = np.asarray(codes.codes)
            for c in np.flatnonzero(np.bincount(code[code >= 0])).tolist():
                if codes.labels[c]:  # "" and None: the base weights
                    state[code == c] = self._state_of(0, str(codes.labels[c]))
        elif adapters is not None:
            refined = adapters.astype(bool)  # "" and None: the base weights
            for adapter in set(adapters[refined].tolist()):
                state[adapters == adapter] = self._state_of(0, str(adapter))
        est_names = Labels(state, self._state_estimator)
        est_scenes = Labels(state, self._state_estimator_scene)
        psnr, ssim, nmse, resid, compute = nan.copy(), nan.copy(), nan.copy(), nan.copy(), nan.copy()
        lost = np.zeros(n, dtype=bool)
        if len(sent):
            u = frame_uniforms(self.seed, vehicle[sent], frame[sent])
            image = (IMAGE_STRIDE * vehicle[sent] + frame[sent]) % self.table.n_images
            out = self.table.sample(
                state[sent], self._scene[batch.scene[sent]], batch.sinr_db[sent], batch.speed_mps[sent], image, u
            ).astype(float)
            psnr[sent], ssim[sent], nmse[sent], resid[sent] = out[:, 0], out[:, 1], out[:, 2], out[:, 3]
            lost[sent] = out[:, 4] > 0.5
            if self.latency is None:
                compute[sent] = out[:, 5]
            else:
                compute[sent] = self._state_latency(state[sent])
            self.calls += 1
        airtime = np.where(outage, np.nan, self.airtime_hz_s / np.asarray(batch.bandwidth_hz, dtype=float))
        self.wall_s += time.perf_counter() - t0
        return neural_tx_result(
            batch, outage=outage, lost=lost, airtime_s=airtime, compute_s=compute, psnr_db=psnr, ssim=ssim,
            nmse_db=nmse, pilot_resid_db=resid, codec=self.codec_name, estimator=est_names,
            estimator_scene=est_scenes, symbols=self.symbols,
        )  # fmt: skip


class CalibratedRefiner(AnalyticRefiner):
    """The refiner of ``link.fidelity: fast`` (see "Refined states at run time" in the module docstring).

    Parameters
    ----------
    scenario
        The scenario (``refinement.policy``).
    evaluator
        The run's :class:`CalibratedLinkEvaluator`.
    timing
        The refinement timing model (GPU times; adapter sizes of uncalibrated requests).
    seed, notes
        Accepted for the refiner factory's signature.

    Raises
    ------
    ModelError
        The table has no refined state and the policy asks for refinements.
    """

    name = "fast"

    def __init__(
        self,
        scenario: Scenario,
        *,
        evaluator: CalibratedLinkEvaluator,
        timing: RefineTimingModel,
        seed: int = 0,
        notes: list[str] | None = None,
    ) -> None:
        super().__init__(timing)
        self.evaluator = evaluator
        self.table = evaluator.table
        self._refined = self.table.refined_states()
        self._warned: set[tuple[str, str]] = set()
        self._matches: dict[tuple, tuple[int, bool] | str] = {}  # request key -> _match's answer or error
        if not self._refined and scenario.refinement.policy.kind not in ("never", "oracle"):
            msg = (
                f"{self.table.path}: the calibration table has no refined estimator states, and refinement.policy "
                f"{scenario.refinement.policy.kind!r} asks for refinements (calibrate with --refined BASE:TARGET)"
            )
            raise ModelError(msg)

    def _match(self, request: RefineRequest) -> tuple[int, bool]:
        """The table state a request's adapter stands for, and whether it is an exact match (one search per kind)."""
        key = (request.base_scene, request.target_scene, request.samples, request.steps, request.rank, request.pilots)
        answer = self._matches.get(key)
        if answer is None:
            try:
                answer = self._search(request)
            except ModelError as exc:
                answer = str(exc)
            self._matches[key] = answer
        if isinstance(answer, str):
            raise ModelError(answer)
        return answer

    def _search(self, request: RefineRequest) -> tuple[int, bool]:
        states = self.table.states
        pair = [
            i
            for i in self._refined
            if (states[i].base_scene, states[i].held_scene) == (request.base_scene, request.target_scene)
        ]
        if not pair:
            have = sorted({f"{states[i].base_scene}:{states[i].held_scene}" for i in self._refined})
            msg = (
                f"calibration table {self.table.path} has no refined state {request.base_scene} -> "
                f"{request.target_scene} (it has {', '.join(have)}); calibrate with --refined "
                f"{request.base_scene}:{request.target_scene}"
            )
            raise ModelError(msg)
        want = (request.samples, request.steps, request.rank, request.pilots)
        for i in pair:
            st = states[i]
            if (st.samples, st.steps, st.rank, st.pilots) == want:
                return i, True

        def distance(i: int) -> float:
            st = states[i]
            return (
                abs(math.log2(st.samples / request.samples)) + abs(math.log2(st.steps / request.steps))
                + abs(math.log2(st.rank / request.rank)) + (st.pilots != request.pilots)
            )  # fmt: skip

        best = min(pair, key=distance)
        key = (request.base_scene, request.target_scene)
        if key not in self._warned:
            self._warned.add(key)
            log.warning(
                "fast link: no calibrated state %s -> %s with N=%d K=%d rank %d pilots %d; using %s",
                *key, *want, states[best].key,
            )  # fmt: skip
        return best, False

    def adapter_id(self, request: RefineRequest) -> str:
        """The full link's adapter id for a calibrated request; :func:`~ivsim.refine.service.adapter_key` otherwise."""
        try:
            i, exact = self._match(request)
        except ModelError:
            return adapter_key(request)
        st = self.table.states[i]
        if exact and st.adapter_id and st.request_seed == request.seed:
            return st.adapter_id
        return adapter_key(request)

    def refine(self, request: RefineRequest) -> RefineWork:
        """Register the request's refined state with the fast link; nothing is computed.

        Raises
        ------
        ModelError
            The table has no refined state for the request's (base, target) pair.
        """
        i, exact = self._match(request)
        aid = self.adapter_id(request)
        self.evaluator.register_adapter(aid, i)
        st = self.table.states[i]
        size = st.adapter_bytes if exact and st.adapter_bytes else self.timing.adapter_bytes(request.rank)
        return RefineWork(adapter_id=aid, adapter_bytes=int(size))


# --------------------------------------------------------------------------- calibration (torch)


def _reusable(old: CalibrationTable, states: list[EstimatorState], same: dict[str, Any]) -> dict[int, int]:
    """``{new state index: old state index}`` of the states ``old`` holds unchanged.

    ``same`` maps what must agree (metadata keys, ``"codec weights"``, ``"scene 'x'"``) to its value here.
    """
    m = old.meta
    have = {
        **{k: m.get(k) for k in ("scene_order", "snr_db", "speed_edges", "frames", "seed", "grid", "image_size",
                                 "images", "direction", "estimator")},
        "codec weights": (m.get("codec") or {}).get("weights_sha16"),
        **{f"scene {n!r}": {k: (m.get("scenes") or {}).get(n, {}).get(k) for k in ("profile_hash", "weights_sha16")}
           for n in same["scene_order"]},
    }  # fmt: skip
    differ = [k for k, v in same.items() if json.dumps(have[k], sort_keys=True) != json.dumps(v, sort_keys=True)]
    if differ:
        msg = f"{old.path}: cannot reuse this calibration table: its {', '.join(differ)} differ from this calibration's"
        raise IvsimError(msg)
    by_key = {st["key"]: (j, st) for j, st in enumerate(m["states"])}
    out = {}
    for e, st in enumerate(states):
        j, old_st = by_key.get(st.key, (None, None))
        if j is not None and old_st.get("adapter_id", "") == st.adapter_id and old_st.get("estimator") == st.estimator:
            out[e] = j
    return out


def calibrate(
    scenario: Scenario,
    *,
    frames: int = DEFAULT_FRAMES,
    snr_db: tuple[float, ...] | None = None,
    speed_edges: tuple[float, ...] = DEFAULT_SPEED_EDGES,
    refined: list[tuple[str, str]] | None = None,
    seed: int | None = None,
    adapters_dir: str | Path | None = None,
    batch_size: int = 96,
    command: str = "",
    progress: bool = False,
    reuse: CalibrationTable | None = None,
) -> CalibrationTable:
    """Run the scenario's full link over the calibration grid (see the module docstring).

    Parameters
    ----------
    scenario
        The scenario whose link (codec, grid, images, estimators) is calibrated.
    frames
        Calibration frames per (state, channel scene, SNR bin, speed bin) cell.
    snr_db
        SNR bin centres (default :data:`DEFAULT_SNR_BINS`).
    speed_edges
        Speed bin edges, m/s (at least two, increasing).
    refined
        ``(base, target)`` scene pairs of refined states (default :func:`default_refined_pairs`).
    seed
        Seed of the calibration's channels, noise, sampling and speeds (default the scenario's).
    adapters_dir
        Folder of cached adapters (``<adapter_id>.safetensors``) read and written; default
        ``refinement.cache_dir``.
    batch_size
        Frames per batched chain call.
    command
        The command line, recorded in the metadata.
    progress
        A progress bar on stderr.
    reuse
        An earlier table of the same calibration (scenes, weights, codec, grid, bins,
        frames and seed): its states that are unchanged (the same key and adapter id)
        are copied instead of run again (the link's draws depend on the frames, not on
        which states share a batch, so the copy is what running them would give);
        the others, new refinements for instance, are run.

    Returns
    -------
    CalibrationTable

    Raises
    ------
    IvsimError
        Bad arguments, weights that cannot be loaded, a refined state of a non-diffusion estimator.
    """
    import torch
    from tqdm import tqdm

    from ivsim import __version__
    from ivsim.ai.neural_link import NeuralLinkEvaluator
    from ivsim.ai.refine_job import NeuralRefiner
    from ivsim.refine.service import RefineRequest
    from ivsim.rng import RngStreams
    from ivsim.sim.links import TxBatch

    t_start = time.perf_counter()
    bins = tuple(float(s) for s in (snr_db if snr_db is not None else parse_snr_bins(DEFAULT_SNR_BINS)))
    edges = tuple(float(e) for e in speed_edges)
    if frames < 1 or batch_size < 1:
        msg = f"frames and batch size must be >= 1, got {frames} and {batch_size}"
        raise IvsimError(msg)
    if len(edges) < 2 or any(b <= a for a, b in itertools.pairwise(edges)) or edges[0] < 0:
        msg = f"speed edges must be at least two increasing speeds >= 0 m/s, got {list(edges)}"
        raise IvsimError(msg)
    seed = scenario.seed if seed is None else int(seed)
    pairs = default_refined_pairs(scenario) if refined is None else list(refined)
    spec = scenario.link
    ref = scenario.refinement
    # the calibration's link: every bin sent (no outage), measured compute, the adapters' folder
    link = spec.model_copy(update={"latency": "measured", "min_sinr_db": -1e9, "fidelity": "full"})
    cache = adapters_dir if adapters_dir is not None else ref.cache_dir
    cal = scenario.model_copy(
        update={"link": link, "refinement": ref.model_copy(update={"cache_dir": None if cache is None else str(cache)})}
    )
    notes: list[str] = []
    streams = RngStreams(seed)
    ev = NeuralLinkEvaluator(cal, seed=streams.int_seed("calibration/link"), notes=notes)
    names = tuple(scenario.scenes)

    # ---- states: base weights of every scene, then the refined pairs
    states: list[EstimatorState] = []
    scene_meta: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        _, est_name, label = ev.estimator_for(i)
        _kind, path = ev._plan[i]
        scene_meta[name] = {
            "profile_hash": profile_hash(scenario.profile_of(name)),
            "estimator": est_name,
            "estimator_scene": label,
            "weights": _rel(path) if path is not None else None,
            "weights_sha16": _sha16(path) if path is not None else None,
        }
        states.append(
            EstimatorState(EstimatorState.base_key(name), name, name, estimator=est_name, estimator_scene=label)
        )
    adapters_meta: dict[str, Any] = {}
    if pairs:
        run_streams = RngStreams(scenario.seed)  # the seeds a run of this scenario gives its requests
        refiner = NeuralRefiner(cal, evaluator=ev, seed=run_streams.int_seed("refine"), notes=notes)
        adapters_meta["large_model"] = _rel(refiner.large_model.path)
        adapters_meta["large_model_sha16"] = _sha16(refiner.large_model.path)
        for base, target in pairs:
            lo, hi = scenario.scenes[target].speed_mps
            request = RefineRequest(
                job_id=f"calibrate/{base}/{target}", vehicle="calibrate", base_scene=base, target_scene=target,
                samples=ref.samples, steps=ref.steps, rank=ref.lora_rank, pilots=ref.upload_pilots,
                speed_mps=(lo + hi) / 2, distance_m=200.0, seed=run_streams.int_seed(f"refine/{base}/{target}"),
            )  # fmt: skip
            t0 = time.perf_counter()
            work = refiner.refine(request)
            _est, est_name, label = ev._refined[work.adapter_id]
            computed = work.lm_infer_wall_s is not None and (work.lm_infer_wall_s + (work.finetune_wall_s or 0)) > 0
            key = EstimatorState.refined_key(base, target, ref.samples, ref.steps, ref.lora_rank, ref.upload_pilots)
            states.append(
                EstimatorState(
                    key, target, base, refined=True, samples=ref.samples, steps=ref.steps, rank=ref.lora_rank,
                    pilots=ref.upload_pilots, request_seed=request.seed, adapter_id=work.adapter_id,
                    adapter_bytes=int(work.adapter_bytes), estimator=est_name, estimator_scene=label,
                )
            )  # fmt: skip
            adapters_meta[key] = {
                "adapter_id": work.adapter_id,
                "source": "computed" if computed else "cache",
                "seconds": round(time.perf_counter() - t0, 2),
            }
            log.info(
                "calibration: refined state %s (adapter %s, %s)", key, work.adapter_id, adapters_meta[key]["source"]
            )

    # ---- copied from an earlier table: the states it holds unchanged
    copied: dict[int, int] = {}
    if reuse is not None:
        codec_path = getattr(ev.codec, "weights_path", None)
        same = {
            "scene_order": list(names), "snr_db": list(bins), "speed_edges": list(edges), "frames": int(frames),
            "seed": int(seed), "grid": spec.grid.model_dump(mode="json"), "image_size": list(spec.image_size),
            "images": None if spec.images is None else _rel(spec.images), "direction": spec.direction,
            "codec weights": _sha16(codec_path) if codec_path is not None else None,
            "estimator": {"kind": spec.estimator.kind, "num_inference_steps": spec.estimator.num_inference_steps,
                          "start": spec.estimator.start},
            **{f"scene {n!r}": {k: scene_meta[n][k] for k in ("profile_hash", "weights_sha16")} for n in names},
        }  # fmt: skip
        copied = _reusable(reuse, states, same)
        log.info("calibration: %d of %d states copied from %s", len(copied), len(states), reuse.path)

    # ---- calibration frames of one channel scene: SNR bin x speed bin x frames, images k mod n
    n_img = len(ev.images)
    s_idx, v_idx, k_idx = (a.ravel() for a in np.meshgrid(np.arange(len(bins)), np.arange(len(edges) - 1),
                                                           np.arange(frames), indexing="ij"))  # fmt: skip
    n_frames = len(s_idx)
    image = k_idx % n_img
    speed_rng = streams.numpy("calibration/speeds")
    values = np.full((len(states), len(names), len(bins), len(edges) - 1, frames, len(METRICS)), np.nan, np.float32)
    speeds = np.full((len(names), len(bins), len(edges) - 1, frames), np.nan, np.float32)
    for e, j in copied.items():
        values[e] = reuse.values[j]  # type: ignore[union-attr]
    bar = tqdm(total=len(names) * n_frames * (len(states) - len(copied)), desc="calibrate", unit="frame",
               disable=not progress)  # fmt: skip
    carrier = float(scenario.base_stations[0].carrier_hz)
    compute_s = 0.0
    for c, name in enumerate(names):
        speed = speed_rng.uniform(np.asarray(edges[:-1])[v_idx], np.asarray(edges[1:])[v_idx])
        speeds[c, s_idx, v_idx, k_idx] = speed
        vehicle = c * 1_000_000 + np.arange(n_frames)
        frame = (image - IMAGE_STRIDE * vehicle) % n_img
        for start in range(0, n_frames, batch_size):
            sl = slice(start, min(start + batch_size, n_frames))
            n = sl.stop - sl.start
            for e, st in enumerate(states):
                if e in copied:
                    continue
                batch = TxBatch(
                    vehicle=vehicle[sl], bs=np.zeros(n, dtype=np.int64), scene=np.full(n, c),
                    uplink=np.full(n, spec.direction == "uplink"), size_bits=np.full(n, ev.frame_bits),
                    bandwidth_hz=np.full(n, 20e6), queue_s=np.zeros(n), sinr_db=np.asarray(bins)[s_idx[sl]],
                    snr_db=np.asarray(bins)[s_idx[sl]], speed_mps=speed[sl], carrier_hz=np.full(n, carrier),
                    deadline_s=np.full(n, np.inf), frame=frame[sl], estimator_scene=np.full(n, names.index(st.held_scene)),
                    adapter_id=np.full(n, st.adapter_id, dtype=object), estimator_version=np.zeros(n, dtype=np.int32),
                )  # fmt: skip
                r = ev.evaluate(batch)
                wall = float(np.nanmax(r.extra["compute_s"])) if n else 0.0
                compute_s += wall
                out = np.stack(
                    [r.psnr_db, r.ssim, r.nmse_db, r.extra["pilot_resid_db"], r.drop_reason == "decode",
                     np.full(n, wall / n)], axis=-1,
                )  # fmt: skip
                values[e, c, s_idx[sl], v_idx[sl], k_idx[sl]] = out.astype(np.float32)
                bar.update(n)
    bar.close()
    if copied and not np.array_equal(speeds, reuse.speeds, equal_nan=True):  # type: ignore[union-attr]
        msg = f"{reuse.path}: cannot reuse this calibration table: its speeds were drawn differently"  # type: ignore[union-attr]
        raise IvsimError(msg)
    chain = ev.chain
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "scenario": scenario.name,
        "direction": spec.direction,
        "codec": {
            "kind": spec.codec.kind,
            "name": ev.codec_name,
            "weights": _rel(getattr(ev.codec, "weights_path", None)),
            "weights_sha16": (
                _sha16(ev.codec.weights_path) if getattr(ev.codec, "weights_path", None) is not None else None
            ),
        },
        "grid": spec.grid.model_dump(mode="json"),
        "symbols": int(chain.symbols),
        "n_grids": int(chain.n_grids),
        "realizations": int(chain.realizations),
        "airtime_hz_s": float(chain.airtime_s(np.array([1.0]))[0]),
        "image_size": list(spec.image_size),
        "images": None if spec.images is None else _rel(spec.images),
        "n_images": int(n_img),
        "channel_realizations": int(spec.channel_realizations),
        "estimator": {
            "kind": spec.estimator.kind,
            "num_inference_steps": spec.estimator.num_inference_steps,
            "start": spec.estimator.start,
        },
        "scene_order": list(names),
        "scenes": scene_meta,
        "states": [asdict(s) for s in states],
        "adapters": adapters_meta,
        "snr_db": list(bins),
        "speed_edges": list(edges),
        "frames": int(frames),
        "seed": int(seed),
        "device": str(ev.device),
        "threads": int(torch.get_num_threads()),
        "chain_compute_s": round(compute_s, 2),
        "copied_states": {states[e].key: _rel(reuse.path) if reuse is not None else None for e in copied},
        "calibration_s": round(time.perf_counter() - t_start, 1),
        "command": command or "ivsim.phy.abstraction.calibrate()",
        "notes": notes,
        "ivsim_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return CalibrationTable(meta, values, speeds=speeds)
