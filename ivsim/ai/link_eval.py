"""Link evaluation: PSNR, SSIM and channel NMSE vs SNR of codecs x estimators x scenes (``ivsim eval link``).

:func:`eval_link` sends the held-out test frames through :class:`~ivsim.ai.link.LinkChain`
for every codec, matched estimator, scene and SNR, then measures the train-scene x
test-scene NMSE matrix of the estimators at 10 dB; :func:`write_link_eval` writes
``link.csv``, the figures and ``tables.md`` (with the checks of issue 3, computed by
:func:`link_checks` on the numbers produced).

Rows of the table (``link.csv``)
--------------------------------
``codec, estimator, train_scene, test_scene, snr_db, psnr_db, ssim, nmse_db`` then
``part, frames, channels, symbols, realizations, lost``:

``part == "link"``
    One codec, one estimator, one scene, one SNR: ``psnr_db`` and ``ssim`` are means
    over the frames, ``nmse_db`` is pooled over them (``10 log10(sum |h_hat - h|^2 /
    sum |h|^2)`` over every resource element of every frame, the
    :func:`ivsim.phy.nmse_db` convention; ``-inf`` for perfect CSI), ``lost`` the
    fraction of frames the codec declared lost (digital). The estimator is matched:
    ``train_scene == test_scene`` (LS and perfect CSI need no training; their
    ``train_scene`` is the test scene by convention).
``part == "matrix"``
    NMSE only (``codec == "none"``, no PSNR/SSIM) at :data:`MATRIX_SNR_DB` on
    ``channels`` fresh channels of ``test_scene`` (one 14 x 72 grid each, random QPSK
    data), estimated by the estimator made for ``train_scene``: the diffusion
    weights of every scene that has them, LMMSE with every scene's statistics, and
    LS (no training) as the reference. The diagonal is the matched estimator.

Fairness and reproducibility
----------------------------
Every codec is compared at equal channel uses (the same ``k`` complex symbols per
frame, checked). The channels of a scene are drawn once (from a seed derived from
``seed`` and the scene's name, so adding or removing scenes changes nothing else) and
reused for every codec, estimator and SNR; the noise of a scene is drawn from a
generator re-seeded for every transmission, so every SNR, estimator and codec sees the
same normalised noise (and the diffusion estimator the same sampling noise). The same
``seed`` gives the same table on the same device and thread count.

Cost
----
The diffusion estimator costs ~0.1 s per channel realization on one CPU core. Its
estimates depend only on the pilots, the noise and its sampling generator, which are
the same for every codec at equal channel uses, so they are computed once per scene and
SNR and shared between codecs (:class:`_SharedEstimates`). The default run (three
codecs, four estimators, seven scenes, six SNRs, eight 72 x 128 frames, a 64-channel
matrix) takes about 10-15 minutes on two cores, most of it in LDPC decoding of the
digital baseline and in the matrix's diffusion estimates.
"""

from __future__ import annotations

import hashlib
import logging
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ivsim.errors import IvsimError, ModelError

__all__ = [
    "COLUMNS",
    "DEFAULT_CODECS",
    "DEFAULT_ESTIMATORS",
    "DEFAULT_SCENARIOS",
    "DEFAULT_SNR_DB",
    "ESTIMATOR_KINDS",
    "EXTRA_COLUMNS",
    "MATRIX_SNR_DB",
    "LinkScene",
    "eval_link",
    "format_tables",
    "link_checks",
    "load_link_scenes",
    "parse_image_size",
    "parse_snr_db",
    "write_link_eval",
]

logger = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[2]
DEFAULT_SCENARIOS = (
    _REPO / "scenarios" / "nyc_brooklyn_bridge.yaml",
    _REPO / "scenarios" / "nyc_fleet.yaml",
    _REPO / "scenarios" / "helsinki.yaml",
)
"""The shipped scenarios; their scenes (union, first definition wins) are evaluated by default."""

DEFAULT_CODECS = ("ctcd", "deepjscc", "digital")
ESTIMATOR_KINDS = ("perfect", "ls", "lmmse", "diffusion")
"""Estimators :func:`eval_link` knows (``perfect`` is the genie, :data:`ivsim.ai.link.PERFECT`)."""
DEFAULT_ESTIMATORS = ESTIMATOR_KINDS
DEFAULT_SNR_DB = (-5.0, 0.0, 5.0, 10.0, 15.0, 20.0)
DEFAULT_IMAGE_SIZE = (72, 128)
"""The default simulation frame (``link.image_size``)."""
MATRIX_SNR_DB = 10.0
"""SNR of the train-scene x test-scene NMSE matrix."""
NO_CODEC = "none"
"""``codec`` of the NMSE-only matrix rows."""

COLUMNS = ("codec", "estimator", "train_scene", "test_scene", "snr_db", "psnr_db", "ssim", "nmse_db")
"""The columns every consumer of ``link.csv`` relies on, in this order."""
EXTRA_COLUMNS = ("part", "frames", "channels", "symbols", "realizations", "lost")
"""Columns after :data:`COLUMNS` (see the module docstring)."""

TABLE_SNR_DB = (-5.0, 0.0, 10.0, 20.0)
"""SNRs of the NMSE table (those of them that were evaluated)."""
LMMSE_TOL_DB = 0.1
"""LMMSE may be this much above LS before the check fails (estimated covariances, finite samples)."""
UPPER_BOUND_TOL_DB = 0.5
"""An estimator's mean PSNR may exceed perfect CSI's by this much ("within noise") before the check fails."""
CLIFF_DB_PER_DB = 1.0
"""Steepest PSNR fall (dB of PSNR per dB of SNR between adjacent SNRs) that separates graceful from a cliff."""
DIFFUSION_GAIN_DB = 3.0
"""The matched diffusion estimator must beat LS by this much NMSE at 10 dB."""

LABELS = {"perfect": "perfect CSI", "ls": "LS", "lmmse": "LMMSE", "diffusion": "diffusion"}
_STYLE = {"perfect": ("k", "-"), "ls": ("tab:orange", "--"), "lmmse": ("tab:blue", "-."), "diffusion": ("tab:red", "-")}


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class LinkScene:
    """A scene as the link evaluation needs it.

    Attributes
    ----------
    name
        Scene name.
    profile
        Its channel profile object.
    speed_range_mps
        ``(min, max)`` speeds its channels are drawn at.
    carrier_hz
        Carrier of the first base station of the scenario that defines it.
    scenario
        The scenario file it comes from.
    """

    name: str
    profile: Any
    speed_range_mps: tuple[float, float]
    carrier_hz: float
    scenario: str


def load_link_scenes(scenarios: Sequence[str | Path] | None = None) -> dict[str, LinkScene]:
    """Read the scenes of scenario files (union in file order; the first definition of a name wins).

    Parameters
    ----------
    scenarios
        Scenario YAML files; default :data:`DEFAULT_SCENARIOS`.

    Returns
    -------
    dict
        :class:`LinkScene` by scene name.

    Raises
    ------
    ScenarioError
        A scenario file is missing or invalid.
    """
    from ivsim.config.loader import load_scenario

    out: dict[str, LinkScene] = {}
    for path in scenarios if scenarios else DEFAULT_SCENARIOS:
        sc = load_scenario(path)
        carrier = float(sc.base_stations[0].carrier_hz)
        for name, spec in sc.scenes.items():
            if name in out:
                continue
            speeds = (float(spec.speed_mps[0]), float(spec.speed_mps[1]))
            out[name] = LinkScene(name, sc.profile_of(name), speeds, carrier, str(path))
    return out


def parse_snr_db(text: str) -> tuple[float, ...]:
    """Parse an SNR list: inclusive ``start:stop:step`` or a comma list (``-5:20:5``, ``0,10,20``, ``10``).

    Parameters
    ----------
    text
        The flag's value.

    Returns
    -------
    tuple of float
        The SNRs in dB, in the given order, without duplicates.

    Raises
    ------
    ValueError
        Not a range with ``step > 0`` and ``start <= stop``, or not numbers.

    Examples
    --------
    >>> parse_snr_db("-5:20:5")
    (-5.0, 0.0, 5.0, 10.0, 15.0, 20.0)
    >>> parse_snr_db("0,10,20")
    (0.0, 10.0, 20.0)
    """
    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            msg = "a range is start:stop:step (inclusive), e.g. -5:20:5"
            raise ValueError(msg)
        try:
            start, stop, step = (float(p) for p in parts)
        except ValueError:
            msg = "start, stop and step must be numbers, e.g. -5:20:5"
            raise ValueError(msg) from None
        if not all(map(math.isfinite, (start, stop, step))) or step <= 0 or start > stop:
            msg = "a range needs start <= stop and step > 0, e.g. -5:20:5"
            raise ValueError(msg)
        n = math.floor((stop - start) / step + 1e-9) + 1
        if n > 1000:
            msg = f"the range has {n} values (at most 1000)"
            raise ValueError(msg)
        values = [round(start + i * step, 9) for i in range(n)]
    else:
        try:
            values = [float(p) for p in text.split(",") if p.strip()]
        except ValueError:
            msg = "expected numbers in dB, a comma list (0,10,20) or a range start:stop:step (-5:20:5)"
            raise ValueError(msg) from None
        if not values or not all(map(math.isfinite, values)):
            msg = "expected at least one finite SNR in dB, e.g. 0,10,20 or -5:20:5"
            raise ValueError(msg)
    return tuple(dict.fromkeys(float(v) + 0.0 for v in values))


def parse_image_size(text: str) -> tuple[int, int]:
    """Parse ``HxW`` (height x width in pixels, each at least 16).

    Raises
    ------
    ValueError
        Not two integers >= 16 joined by ``x``.

    Examples
    --------
    >>> parse_image_size("72x128")
    (72, 128)
    """
    parts = text.lower().split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        msg = "expected HEIGHTxWIDTH in pixels, e.g. 72x128"
        raise ValueError(msg) from None
    if h < 16 or w < 16 or h > 4096 or w > 4096:
        msg = "height and width must be 16..4096 pixels"
        raise ValueError(msg)
    return h, w


def _derive(seed: int, *parts: str) -> int:
    """A 63-bit seed from ``seed`` and names (stable across runs and scene selections)."""
    tag = zlib.crc32("|".join(parts).encode())
    return (int(seed) * 1_000_003 + tag) % (2**63 - 1)


# --------------------------------------------------------------------------- estimators


class _SharedEstimates:
    """Reuse a pilot-based estimator's estimates between codecs (same pilots, noise and generator state).

    The key is the received pilots, the noise variances and the generator's state;
    on a hit the generator is moved to the state the real call left it in, so the
    chain behaves exactly as if the estimator had run again.

    Parameters
    ----------
    estimator
        An estimator whose output depends on ``y`` at the pilots only (LS-conditioned
        diffusion, LS, LMMSE).
    grid
        The resource grid (pilot positions).
    """

    def __init__(self, estimator: Any, grid: Any) -> None:
        self.estimator = estimator
        self.name = estimator.name
        self.scene = estimator.scene
        self._mask = grid.pilot_mask()
        self._store: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}

    def clear(self) -> None:
        """Forget the stored estimates."""
        self._store.clear()

    def _key(self, y: torch.Tensor, no: torch.Tensor, generator: torch.Generator | None) -> str:
        digest = hashlib.sha256()
        pilots = y[..., self._mask.to(y.device)].detach().cpu().contiguous()
        digest.update(str(tuple(y.shape)).encode())
        digest.update(torch.view_as_real(pilots).numpy().tobytes())
        digest.update(torch.as_tensor(no).detach().cpu().to(torch.float32).numpy().tobytes())
        if generator is not None:
            digest.update(generator.get_state().numpy().tobytes())
        return digest.hexdigest()

    def estimate(
        self, y: torch.Tensor, no: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`ivsim.ai.estimators.ChannelEstimator.estimate`."""
        key = self._key(y, no, generator)
        hit = self._store.get(key)
        if hit is None:
            h_hat, err = self.estimator.estimate(y, no, generator=generator)
            self._store[key] = (h_hat, err, generator.get_state() if generator is not None else None)
            return h_hat, err
        h_hat, err, state = hit
        if generator is not None and state is not None:
            generator.set_state(state)
        return h_hat.clone(), err.clone()


def _pooled_nmse_db(nmse_db: np.ndarray, signal: np.ndarray) -> float:
    """Pool per-frame NMSE (dB) into ``10 log10(sum err / sum |h|^2)`` given each frame's ``sum |h|^2``."""
    err = np.power(10.0, np.asarray(nmse_db, dtype=float) / 10.0) * signal
    with np.errstate(divide="ignore"):
        return float(10.0 * np.log10(err.sum() / signal.sum()))


# --------------------------------------------------------------------------- evaluation


def eval_link(
    codecs: Sequence[str] = DEFAULT_CODECS,
    estimators: Sequence[str] = DEFAULT_ESTIMATORS,
    *,
    snr_db: Sequence[float] = DEFAULT_SNR_DB,
    scenarios: Sequence[str | Path] | None = None,
    scenes: Sequence[str] | None = None,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    frames: int | None = None,
    realizations: int = 1,
    matrix_channels: int = 64,
    seed: int = 12345,
    device: str | torch.device = "cpu",
    models_dir: str | Path | None = None,
    cache: Any | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Evaluate codecs x estimators x scenes over SNR, and the estimators' 10 dB mismatch matrix.

    Parameters
    ----------
    codecs
        Codec kinds (:data:`ivsim.ai.codecs.CODECS` or ``module:Class``), all at the
        same channel uses for ``image_size``.
    estimators
        Any of :data:`ESTIMATOR_KINDS`.
    snr_db
        SNRs of the curves (average SNR per resource element).
    scenarios
        Scenario files whose scenes are evaluated; default :data:`DEFAULT_SCENARIOS`.
    scenes
        Only these scenes (default: all of the scenarios').
    image_size
        ``(height, width)`` the test frames are resized to.
    frames
        The first ``frames`` test frames (default all 8 of the shipped test split).
    realizations
        Independent channel draws per frame (block fading; see :class:`~ivsim.ai.link.LinkChain`).
    matrix_channels
        Channels per test scene of the mismatch matrix (0: no matrix).
    seed
        Seed of every channel, noise and sampling draw.
    device
        ``cpu``, ``cuda`` or ``auto``.
    models_dir
        Where ``estimator_<scene>.safetensors`` are looked for (default the repo's ``models/``).
        Scenes without weights are skipped for the diffusion estimator, with a logged note.
    cache
        A :class:`~ivsim.ai.estimators.CovarianceCache` for the LMMSE statistics (default a new one).
    progress
        Show a tqdm progress bar (on stderr).

    Returns
    -------
    pandas.DataFrame
        :data:`COLUMNS` then :data:`EXTRA_COLUMNS` (see the module docstring);
        ``attrs`` holds the settings and ``notes`` (e.g. scenes skipped for lack of weights).

    Raises
    ------
    IvsimError
        Unknown codec, estimator or scene, bad sizes, codecs at different channel uses,
        unreadable weights or images, ``cuda`` without a GPU.
    """
    from tqdm import tqdm

    from ivsim.ai.codecs import CODECS, make_codec
    from ivsim.ai.estimators import CovarianceCache, estimator_weights_path, make_estimator
    from ivsim.ai.images import DEFAULT_IMAGES, ImageFolder
    from ivsim.ai.estimator_train import received_qpsk
    from ivsim.ai.link import PERFECT, ChannelBank, LinkChain
    from ivsim.ai.neural_link import resolve_device
    from ivsim.phy import GridSpec, OfdmMapper, nmse_db

    codecs = list(dict.fromkeys(codecs))
    estimators = list(dict.fromkeys(estimators))
    snrs = [float(s) for s in dict.fromkeys(snr_db)]
    if not codecs or not estimators or not snrs:
        msg = "eval_link needs at least one codec, one estimator and one SNR"
        raise IvsimError(msg)
    for c in codecs:
        if c not in CODECS and ":" not in c:
            msg = f"unknown codec kind {c!r} (allowed: {', '.join(CODECS)}, or 'module:Class')"
            raise ModelError(msg)
    for e in estimators:
        if e not in ESTIMATOR_KINDS:
            msg = f"unknown estimator kind {e!r} (allowed: {', '.join(ESTIMATOR_KINDS)})"
            raise ModelError(msg)
    if realizations < 1 or matrix_channels < 0:
        msg = f"realizations must be >= 1 and matrix_channels >= 0, got {realizations} and {matrix_channels}"
        raise IvsimError(msg)
    dev = resolve_device(str(device))
    all_scenes = load_link_scenes(scenarios)
    if scenes:
        unknown = [s for s in scenes if s not in all_scenes]
        if unknown:
            msg = f"unknown scene(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(all_scenes)})"
            raise IvsimError(msg)
        chosen = {s: all_scenes[s] for s in dict.fromkeys(scenes)}
    else:
        chosen = all_scenes

    folder = ImageFolder(DEFAULT_IMAGES, split="test", size=tuple(image_size))
    n_avail = len(folder)
    n = n_avail if frames is None else int(frames)
    if not 1 <= n <= n_avail:
        msg = f"frames must be 1..{n_avail} (the frames of the test split), got {frames}"
        raise IvsimError(msg)
    images = folder.frames(range(n)).to(dev)

    grid = GridSpec()
    built = {c: make_codec(c, image_size=tuple(image_size), device=dev) for c in codecs}
    chains = {c: LinkChain(codec, grid=grid, image_size=image_size, realizations=realizations, device=dev)
              for c, codec in built.items()}  # fmt: skip
    ks = {c: ch.symbols for c, ch in chains.items()}
    if len(set(ks.values())) > 1:
        msg = f"codecs use different channel uses for {image_size[0]}x{image_size[1]} frames: {ks}; compare at equal k"
        raise ModelError(msg)
    first = next(iter(chains.values()))
    k, g = first.symbols, first.realizations

    # Estimators per scene (built once, used by the curves and the matrix).
    notes: list[str] = []
    cache = cache if cache is not None else CovarianceCache()
    lmmse: dict[str, Any] = {}
    diffusion: dict[str, _SharedEstimates] = {}
    ls = make_estimator("ls", grid=grid, device=dev) if ("ls" in estimators or matrix_channels) else None
    if "lmmse" in estimators:
        for name, sc in chosen.items():
            lmmse[name] = make_estimator(
                "lmmse", grid=grid, profile=sc.profile, scene=name, carrier_hz=sc.carrier_hz,
                speed_range_mps=sc.speed_range_mps, cache=cache, device=dev,
            )  # fmt: skip
    if "diffusion" in estimators:
        missing = []
        for name, sc in chosen.items():
            path = estimator_weights_path(name, models_dir=models_dir)
            if not path.is_file():
                missing.append(name)
                continue
            est = make_estimator("diffusion", grid=grid, weights=path, scene=name, profile=sc.profile, device=dev)
            diffusion[name] = _SharedEstimates(est, grid)
        if missing:
            where = Path(models_dir) if models_dir is not None else estimator_weights_path("x").parent
            note = (
                f"diffusion estimator: no weights for scene(s) {', '.join(missing)} in {where} "
                "(estimator_<scene>.safetensors); skipped for those scenes"
            )
            logger.warning("%s", note)
            notes.append(note)

    def scene_estimators(name: str) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        for e in estimators:
            if e == "perfect":
                out.append((e, PERFECT))
            elif e == "ls":
                out.append((e, ls))
            elif e == "lmmse":
                out.append((e, lmmse[name]))
            elif name in diffusion:
                out.append((e, diffusion[name]))
        return out

    matrix_est = [e for e in ("ls", "lmmse", "diffusion") if e in estimators]
    do_matrix = matrix_channels > 0 and any(e in ("lmmse", "diffusion") for e in matrix_est)
    total = sum(len(scene_estimators(s)) for s in chosen) * len(snrs) * len(codecs)
    if do_matrix:
        per_test = ("ls" in matrix_est) + len(lmmse) + len(diffusion)
        total += per_test * len(chosen)
    bar = tqdm(total=total, desc="eval link", unit="run", disable=not progress, dynamic_ncols=True)
    rows: list[dict[str, Any]] = []
    bank = ChannelBank(grid, device=dev)
    frame_idx = torch.arange(n)
    try:
        # ---- the curves: codec x matched estimator x scene x SNR on the frames' own channels
        for name, sc in chosen.items():
            speeds = np.random.default_rng(_derive(seed, "speeds", name)).uniform(*sc.speed_range_mps, size=n)
            gen = torch.Generator(device=dev).manual_seed(_derive(seed, "channels", name))
            h = bank.draw([sc.profile] * n, np.full(n, sc.carrier_hz), speeds, realizations=g, generator=gen)
            signal = h.abs().pow(2).flatten(1).sum(1).double().cpu().numpy()
            noise_seed = _derive(seed, "noise", name)
            ests = scene_estimators(name)
            for c, chain in chains.items():
                codec_name = getattr(built[c], "name", c) if ":" in c else c
                for snr in snrs:
                    for ename, est in ests:
                        bar.set_postfix_str(f"{codec_name} {ename} {name} {snr:g} dB", refresh=False)
                        noise = torch.Generator(device=dev).manual_seed(noise_seed)
                        out = chain.transmit(
                            images, h, torch.full((n,), snr), [(est, frame_idx)], generator=noise
                        )
                        rows.append(
                            {
                                "codec": codec_name,
                                "estimator": ename,
                                "train_scene": name,
                                "test_scene": name,
                                "snr_db": snr,
                                "psnr_db": float(np.mean(out.psnr_db)),
                                "ssim": float(np.mean(out.ssim)),
                                "nmse_db": _pooled_nmse_db(out.nmse_db, signal),
                                "part": "link",
                                "frames": n,
                                "channels": n * g,
                                "symbols": k,
                                "realizations": g,
                                "lost": float(np.mean(out.lost)),
                            }
                        )
                        bar.update()
            for d in diffusion.values():
                d.clear()

        # ---- the matrix: estimators made for every train scene, on every test scene, at 10 dB
        if do_matrix:
            mapper = OfdmMapper(grid, device=dev)
            m = int(matrix_channels)
            for tname, sc in chosen.items():
                gen = torch.Generator(device=dev).manual_seed(_derive(seed, "matrix", tname))
                speeds = np.random.default_rng(_derive(seed, "matrix-speeds", tname)).uniform(
                    *sc.speed_range_mps, size=m
                )
                h = bank.draw([sc.profile] * m, np.full(m, sc.carrier_hz), speeds, realizations=1, generator=gen)
                h = h[:, 0]
                y, no = received_qpsk(h, MATRIX_SNR_DB, mapper, gen)
                runs: list[tuple[str, str, Any]] = []
                if "ls" in matrix_est:
                    runs.append(("ls", tname, ls))
                runs += [("lmmse", train, est) for train, est in lmmse.items()]
                runs += [("diffusion", train, est.estimator) for train, est in diffusion.items()]
                for ename, train, est in runs:
                    bar.set_postfix_str(f"matrix {ename} {train} -> {tname}", refresh=False)
                    with torch.inference_mode():
                        if ename == "diffusion":
                            sampling = torch.Generator(device=dev).manual_seed(_derive(seed, "sampling", tname))
                            h_hat, _ = est.estimate(y, no, generator=sampling)
                        else:
                            h_hat, _ = est.estimate(y, no)
                    rows.append(
                        {
                            "codec": NO_CODEC,
                            "estimator": ename,
                            "train_scene": train,
                            "test_scene": tname,
                            "snr_db": MATRIX_SNR_DB,
                            "psnr_db": float("nan"),
                            "ssim": float("nan"),
                            "nmse_db": float(nmse_db(h_hat, h)),
                            "part": "matrix",
                            "frames": 0,
                            "channels": m,
                            "symbols": 0,
                            "realizations": 1,
                            "lost": float("nan"),
                        }
                    )
                    bar.update()
    finally:
        bar.close()
    df = pd.DataFrame(rows, columns=[*COLUMNS, *EXTRA_COLUMNS])
    df.attrs.update(
        {
            "seed": int(seed),
            "image_size": [int(image_size[0]), int(image_size[1])],
            "frames": n,
            "symbols": k,
            "grids_per_frame": first.n_grids,
            "grid": f"{grid.num_ofdm_symbols} x {grid.fft_size}",
            "realizations": g,
            "snr_db": snrs,
            "scenes": list(chosen),
            "diffusion_scenes": list(diffusion),
            "matrix_channels": int(matrix_channels) if do_matrix else 0,
            "device": str(dev),
            "notes": notes,
        }
    )
    return df


# --------------------------------------------------------------------------- checks


def _link(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["part"] == "link"] if "part" in df else df[df["codec"] != NO_CODEC]


def _matrix(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["part"] == "matrix"] if "part" in df else df[df["codec"] == NO_CODEC]


def _nmse_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Matched NMSE per (estimator, scene, SNR), mean over codecs (identical at equal channel uses)."""
    link = _link(df)
    link = link[link["estimator"] != "perfect"]
    return link.groupby(["estimator", "test_scene", "snr_db"], sort=False)["nmse_db"].mean().reset_index()


def _common_scenes(df: pd.DataFrame) -> list[str]:
    """Scenes where every estimator of the link rows ran (all scenes if none has them all)."""
    link = _link(df)
    scenes = list(dict.fromkeys(link["test_scene"]))
    ests = set(link["estimator"])
    common = [s for s in scenes if set(link.loc[link["test_scene"] == s, "estimator"]) == ests]
    return common or scenes


def _steepest_fall(curve: pd.Series) -> tuple[float, float, float]:
    """Largest PSNR fall per dB of SNR between adjacent SNRs: ``(slope, snr_low, snr_high)``."""
    curve = curve.sort_index()
    s, p = curve.index.to_numpy(float), curve.to_numpy(float)
    slopes = (p[1:] - p[:-1]) / (s[1:] - s[:-1])
    i = int(np.argmax(slopes))
    return float(slopes[i]), float(s[i]), float(s[i + 1])


def link_checks(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Evaluate the checks of issue 3 on the numbers of :func:`eval_link`.

    Parameters
    ----------
    df
        The table (or ``link.csv`` read back).

    Returns
    -------
    list of dict
        ``check`` (the statement), ``passed`` (``True``, ``False``, or ``None`` when the
        numbers needed are missing or the item is reported rather than checked) and
        ``detail`` (the numbers behind it).
    """
    out: list[dict[str, Any]] = []
    link = _link(df)
    nmse = _nmse_curves(df)
    matrix = _matrix(df)

    # LMMSE no worse than LS (matched curves and the matrix diagonal).
    stmt = f"LMMSE no worse than LS: NMSE(LMMSE) <= NMSE(LS) + {LMMSE_TOL_DB:g} dB at every scene and SNR"
    piv = nmse.pivot_table(index=["test_scene", "snr_db"], columns="estimator", values="nmse_db")
    diffs = []
    if {"ls", "lmmse"} <= set(piv.columns):
        d = (piv["lmmse"] - piv["ls"]).dropna()
        diffs += [(float(v), sc, snr, "curves") for (sc, snr), v in d.items()]
    diag = matrix[matrix["train_scene"] == matrix["test_scene"]]
    dp = diag.pivot_table(index="test_scene", columns="estimator", values="nmse_db")
    if {"ls", "lmmse"} <= set(dp.columns):
        snr_m = float(diag["snr_db"].iloc[0])
        diffs += [(float(v), sc, snr_m, "matrix") for sc, v in (dp["lmmse"] - dp["ls"]).dropna().items()]
    if diffs:
        worst = max(diffs)
        out.append(
            {
                "check": stmt,
                "passed": worst[0] <= LMMSE_TOL_DB,
                "detail": f"{len(diffs)} comparisons; worst LMMSE - LS = {worst[0]:+.2f} dB "
                f"({worst[1]}, {worst[2]:g} dB, {worst[3]})",
            }
        )
    else:
        out.append({"check": stmt, "passed": None, "detail": "not evaluated (needs ls and lmmse)"})

    # Perfect CSI is an upper bound of PSNR.
    stmt = f"PSNR with perfect CSI is an upper bound: PSNR(estimator) <= PSNR(perfect) + {UPPER_BOUND_TOL_DB:g} dB"
    piv = link.pivot_table(index=["codec", "test_scene", "snr_db"], columns="estimator", values="psnr_db")
    if "perfect" in piv.columns and len(piv.columns) > 1:
        excess = piv.drop(columns="perfect").sub(piv["perfect"], axis=0).stack().dropna()
        (codec, scene, snr, est), worst = excess.idxmax(), float(excess.max())
        over = excess[excess > UPPER_BOUND_TOL_DB]
        listed = "; ".join(f"{c} {e} {s} {x:g} dB {v:+.2f}" for (c, s, x, e), v in over.items())
        out.append(
            {
                "check": stmt,
                "passed": worst <= UPPER_BOUND_TOL_DB,
                "detail": f"{len(over)} of {len(excess)} comparisons exceed; largest PSNR(estimator) - PSNR(perfect) "
                f"= {worst:+.2f} dB ({codec}, {est}, {scene}, {snr:g} dB)"
                + (f" [over: {listed}]" if len(over) else ""),
            }
        )
    else:
        out.append({"check": stmt, "passed": None, "detail": "not evaluated (needs perfect and another estimator)"})

    # Graceful degradation of the neural codecs, cliff of the digital baseline (perfect CSI, mean over scenes).
    perfect = link[link["estimator"] == "perfect"]
    n_snr = perfect["snr_db"].nunique()
    for codec in dict.fromkeys(link["codec"]):
        digital = codec == "digital"
        stmt = (
            f"{codec}: shows the cliff effect (steepest PSNR fall >= {CLIFF_DB_PER_DB:g} dB per dB of SNR, perfect CSI)"
            if digital
            else f"{codec}: degrades gracefully, no cliff (steepest PSNR fall < {CLIFF_DB_PER_DB:g} dB per dB "
            "of SNR, perfect CSI)"
        )
        rows = perfect[perfect["codec"] == codec]
        if rows.empty or n_snr < 2:
            out.append({"check": stmt, "passed": None, "detail": "not evaluated (needs perfect CSI at >= 2 SNRs)"})
            continue
        curve = rows.groupby("snr_db")["psnr_db"].mean()
        lost = rows.groupby("snr_db")["lost"].mean()
        slope = _steepest_fall(curve)
        fall = max(0.0, slope[0])
        detail = (
            f"steepest fall {fall:.2f} dB/dB between {slope[1]:g} and {slope[2]:g} dB; PSNR "
            f"{curve.iloc[0]:.2f} dB at {curve.index[0]:g} dB .. {curve.iloc[-1]:.2f} dB at {curve.index[-1]:g} dB"
        )
        if digital:
            detail += f"; frames lost {lost.iloc[0]:.0%} at {lost.index[0]:g} dB .. {lost.iloc[-1]:.0%} at " \
                      f"{lost.index[-1]:g} dB"  # fmt: skip
        passed = fall >= CLIFF_DB_PER_DB if digital else fall < CLIFF_DB_PER_DB
        out.append({"check": stmt, "passed": bool(passed), "detail": detail + " (mean over scenes)"})

    # Matched diffusion vs LS (>= 3 dB) and vs LMMSE (reported) at 10 dB.
    at = MATRIX_SNR_DB
    if not dp.empty:
        ref, src = dp, f"matrix diagonal, {int(diag['channels'].iloc[0])} channels per scene"
    else:
        ref = nmse[nmse["snr_db"] == at].pivot_table(index="test_scene", columns="estimator", values="nmse_db")
        src = "curves"
    stmt = f"matched diffusion beats LS by >= {DIFFUSION_GAIN_DB:g} dB NMSE at {at:g} dB in every scene with weights"
    if {"diffusion", "ls"} <= set(ref.columns) and ref["diffusion"].notna().any():
        gain = (ref["ls"] - ref["diffusion"]).dropna()
        out.append(
            {
                "check": stmt,
                "passed": bool((gain >= DIFFUSION_GAIN_DB).all()),
                "detail": "; ".join(f"{s} {v:.2f} dB" for s, v in gain.items()) + f" ({src})",
            }
        )
        if "lmmse" in ref.columns:
            gap = (ref["lmmse"] - ref["diffusion"]).dropna()
            out.append(
                {
                    "check": f"matched diffusion vs LMMSE at {at:g} dB (reported; beating LMMSE is a stretch goal)",
                    "passed": None,
                    "detail": "; ".join(f"{s} {v:+.2f} dB ({'beats' if v > 0 else 'behind'})" for s, v in gap.items())
                    + f" (NMSE(LMMSE) - NMSE(diffusion), {src})",
                }
            )
    else:
        out.append({"check": stmt, "passed": None, "detail": f"not evaluated (needs diffusion and ls at {at:g} dB)"})

    # Mismatch loss (reported).
    for est in ("diffusion", "lmmse"):
        loss = _mismatch_loss(matrix, est)
        if loss is None:
            continue
        off = loss.stack().dropna()
        off = off[[a != b for a, b in off.index]]
        if off.empty:
            continue
        (a, b), worst = off.idxmax(), float(off.max())
        out.append(
            {
                "check": f"mismatched {est} estimator's loss at {at:g} dB (reported)",
                "passed": None,
                "detail": f"mean {off.mean():+.2f} dB over {len(off)} mismatched pairs; worst {worst:+.2f} dB "
                f"({a} -> {b})",
            }
        )
    return out


def _mismatch_nmse(matrix: pd.DataFrame, est: str) -> pd.DataFrame | None:
    """``train x test`` NMSE (dB) of one estimator, or ``None``."""
    sub = matrix[matrix["estimator"] == est]
    if sub.empty:
        return None
    rows = list(dict.fromkeys(sub["train_scene"]))
    cols = list(dict.fromkeys(matrix["test_scene"]))
    table = sub.pivot_table(index="train_scene", columns="test_scene", values="nmse_db")
    return table.reindex(index=rows, columns=cols)


def _mismatch_loss(matrix: pd.DataFrame, est: str) -> pd.DataFrame | None:
    """``NMSE(train, test) - NMSE(test, test)`` in dB (NaN where the test scene has no matched estimator)."""
    m = _mismatch_nmse(matrix, est)
    if m is None:
        return None
    diag = pd.Series({t: m.loc[t, t] if t in m.index else np.nan for t in m.columns})
    return m.sub(diag, axis=1)


# --------------------------------------------------------------------------- tables


def _fmt(v: float, spec: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if math.isinf(v):
        return "-inf" if v < 0 else "inf"
    return format(v, spec)


def _md(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _settings(df: pd.DataFrame) -> dict[str, Any]:
    link = _link(df)
    matrix = _matrix(df)
    first = link.iloc[0] if not link.empty else None
    return {
        "frames": int(first["frames"]) if first is not None else 0,
        "symbols": int(first["symbols"]) if first is not None else 0,
        "realizations": int(first["realizations"]) if first is not None else 1,
        "channels": int(first["channels"]) if first is not None else 0,
        "matrix_channels": int(matrix["channels"].iloc[0]) if not matrix.empty else 0,
        "snrs": sorted(set(link["snr_db"])),
    }


def format_tables(df: pd.DataFrame) -> str:
    """Return ``tables.md``: NMSE, PSNR/SSIM, the 10 dB mismatch matrix and the checks, as Markdown.

    Parameters
    ----------
    df
        The :func:`eval_link` table (``attrs`` are used when present, not required).

    Returns
    -------
    str
        The Markdown text.
    """
    st = _settings(df)
    attrs = df.attrs or {}
    link = _link(df)
    matrix = _matrix(df)
    k = st["symbols"]
    size = attrs.get("image_size")
    size_txt = f" of {size[0]} x {size[1]} pixels" if size else ""
    grids = attrs.get("grids_per_frame")
    grid_txt = f" in {grids} OFDM grids of {attrs.get('grid', '14 x 72')}" if grids else ""
    uses = f"k = {k} channel uses (complex symbols) per frame{grid_txt} for every codec"
    lines = ["# Link evaluation", ""]
    settings = [
        f"{st['frames']} test frames{size_txt}, {uses}",
        f"{st['realizations']} channel realization(s) per frame (block fading), "
        "the same channels and noise at every SNR, for every codec and estimator",
    ]
    if "seed" in attrs:
        settings.append(f"seed {attrs['seed']}, device {attrs.get('device', 'cpu')}")
    lines += [f"- {s}" for s in settings]
    for note in attrs.get("notes", []):
        lines.append(f"- note: {note}")
    lines.append("")

    # NMSE
    nm = _nmse_curves(df)
    snrs = [s for s in TABLE_SNR_DB if s in st["snrs"]] or st["snrs"]
    if not nm.empty:
        lines += [
            "## Channel-estimation NMSE (dB), matched estimators",
            "",
            f"NMSE pooled over the {st['channels']} channel realizations of each scene ({st['frames']} frames x "
            f"{st['realizations']}), the frames' own channels; {uses} (NMSE does not depend on the codec).",
            "",
        ]
        rows = []
        for est in dict.fromkeys(nm["estimator"]):
            for scene in dict.fromkeys(nm["test_scene"]):
                sel = nm[(nm["estimator"] == est) & (nm["test_scene"] == scene)].set_index("snr_db")["nmse_db"]
                if sel.empty:
                    continue
                rows.append([LABELS.get(est, est), scene, *(_fmt(sel.get(s, np.nan)) for s in snrs)])
        lines += _md(["estimator", "scene", *(f"{s:g} dB" for s in snrs)], rows)
        lines.append("")

    # PSNR / SSIM
    if not link.empty:
        common = _common_scenes(df)
        all_snrs = st["snrs"]
        sub = link[link["test_scene"].isin(common)]
        mean = sub.groupby(["codec", "estimator", "snr_db"], sort=False)[["psnr_db", "ssim", "lost"]].mean()
        lines += [
            "## PSNR (dB) / SSIM per codec and estimator",
            "",
            f"Mean over the {st['frames']} frames and the scenes {', '.join(common)} (those where every estimator "
            f"ran); {uses}. Cells: PSNR / SSIM, with the share of frames lost where any were.",
            "",
        ]

        def cell(r: pd.Series) -> str:
            lost = f" ({r['lost']:.0%} lost)" if r["lost"] > 0 else ""
            return f"{r['psnr_db']:.2f} / {r['ssim']:.3f}{lost}"

        rows = []
        for (codec, est), grp in mean.groupby(level=[0, 1], sort=False):
            g = grp.droplevel([0, 1])
            rows.append([codec, LABELS.get(est, est), *(cell(g.loc[s]) if s in g.index else "n/a" for s in all_snrs)])
        lines += _md(["codec", "estimator", *(f"{s:g} dB" for s in all_snrs)], rows)
        lines += ["", "### Per scene", "", f"Mean over the {st['frames']} frames; {uses}.", ""]
        rows = []
        per = link.set_index(["codec", "estimator", "test_scene", "snr_db"])
        for (codec, est, scene), grp in per.groupby(level=[0, 1, 2], sort=False):
            g = grp.droplevel([0, 1, 2])
            rows.append([codec, LABELS.get(est, est), scene,
                         *(cell(g.loc[s]) if s in g.index else "n/a" for s in all_snrs)])  # fmt: skip
        lines += _md(["codec", "estimator", "scene", *(f"{s:g} dB" for s in all_snrs)], rows)
        lines.append("")

    # Mismatch matrix
    if not matrix.empty:
        snr_m = float(matrix["snr_db"].iloc[0])
        lines += [
            f"## Mismatch at {snr_m:g} dB: train scene (rows) x test scene (columns)",
            "",
            f"NMSE (dB) pooled over {st['matrix_channels']} channels per test scene "
            f"(one {attrs.get('grid', '14 x 72')} grid each, random QPSK data, drawn at the test scene's speeds "
            "and carrier); NMSE only, no codec "
            f"(the curves above use {uses}). LS needs no training (one row, the same estimator everywhere). "
            "Loss = NMSE(train, test) - NMSE(test, test); n/a where the test scene has no matched estimator.",
            "",
        ]
        ls_row = matrix[matrix["estimator"] == "ls"].set_index("test_scene")["nmse_db"]
        cols = list(dict.fromkeys(matrix["test_scene"]))
        lm = _mismatch_nmse(matrix, "lmmse")
        lmmse_diag = None if lm is None else pd.Series({c: lm.loc[c, c] if c in lm.index else np.nan for c in cols})
        for est in ("diffusion", "lmmse"):
            m = _mismatch_nmse(matrix, est)
            if m is None:
                continue
            loss = _mismatch_loss(matrix, est)
            lines += [f"### {LABELS[est]}: NMSE (dB)", ""]
            rows = [[f"{LABELS[est]} {t}", *(_fmt(m.loc[t, c]) for c in cols)] for t in m.index]
            if est == "diffusion" and lmmse_diag is not None:
                rows.append(["LMMSE matched (reference)", *(_fmt(lmmse_diag.get(c, np.nan)) for c in cols)])
            if not ls_row.empty:
                rows.append(["LS (reference)", *(_fmt(ls_row.get(c, np.nan)) for c in cols)])
            lines += _md(["train \\ test", *cols], rows)
            lines += ["", f"### {LABELS[est]}: loss vs matched (dB)", ""]
            rows = [[f"{LABELS[est]} {t}", *(_fmt(loss.loc[t, c], "+.2f") for c in cols)] for t in loss.index]
            lines += _md(["train \\ test", *cols], rows)
            lines.append("")

    # Checks
    lines += ["## Checks", "", "Computed on the numbers above.", ""]
    for c in link_checks(df):
        verdict = {True: "PASS", False: "FAIL", None: "REPORTED" if "reported" in c["check"] else "NOT EVALUATED"}
        lines.append(f"- **{verdict[c['passed']]}** {c['check']}: {c['detail']}")
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- figures


def _new_figure(figsize: tuple[float, float]) -> Any:
    from ivsim.results import new_figure

    return new_figure(figsize=figsize, dpi=120)


def _quality_figure(df: pd.DataFrame, metric: str, path: Path) -> Path:
    link = _link(df)
    common = _common_scenes(df)
    sub = link[link["test_scene"].isin(common)]
    codecs = list(dict.fromkeys(sub["codec"]))
    st = _settings(df)
    fig = _new_figure((4.2 * len(codecs), 3.6))
    axes = fig.subplots(1, len(codecs), squeeze=False, sharey=True)[0]
    for ax, codec in zip(axes, codecs, strict=True):
        for est in dict.fromkeys(sub["estimator"]):
            curve = sub[(sub["codec"] == codec) & (sub["estimator"] == est)].groupby("snr_db")[metric].mean()
            color, ls = _STYLE.get(est, (None, "-"))
            ax.plot(curve.index, curve.to_numpy(), ls, color=color, marker="o", ms=3, label=LABELS.get(est, est))
        ax.set_title(codec)
        ax.set_xlabel("SNR (dB)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("PSNR (dB)" if metric == "psnr_db" else "SSIM")
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"{'PSNR' if metric == 'psnr_db' else 'SSIM'} vs SNR, k = {st['symbols']} channel uses per frame; "
        f"mean over {st['frames']} frames x "
        + (f"scene(s) {', '.join(common)}" if len(common) <= 3 else f"{len(common)} scenes"),
        fontsize=10,
    )
    fig.savefig(path)
    return path


def _nmse_figure(df: pd.DataFrame, path: Path) -> Path:
    nm = _nmse_curves(df)
    scenes = list(dict.fromkeys(nm["test_scene"]))
    cols = min(4, len(scenes))
    nrows = math.ceil(len(scenes) / cols)
    fig = _new_figure((3.4 * cols, 3.0 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False, sharex=True, sharey=True).ravel()
    for ax, scene in zip(axes, scenes, strict=False):
        for est in dict.fromkeys(nm["estimator"]):
            curve = nm[(nm["estimator"] == est) & (nm["test_scene"] == scene)].set_index("snr_db")["nmse_db"]
            if curve.empty:
                continue
            color, ls = _STYLE.get(est, (None, "-"))
            ax.plot(curve.index, curve.to_numpy(), ls, color=color, marker="o", ms=3, label=LABELS.get(est, est))
        ax.set_title(scene, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[len(scenes) :]:
        ax.set_visible(False)
    for ax in axes[::cols]:
        ax.set_ylabel("NMSE (dB)")
    for ax in axes[-cols:]:
        ax.set_xlabel("SNR (dB)")
    axes[0].legend(fontsize=7)
    st = _settings(df)
    fig.suptitle(f"Channel-estimation NMSE vs SNR, matched ({st['channels']} channels per scene)", fontsize=10)
    fig.savefig(path)
    return path


def _matrix_figure(df: pd.DataFrame, path: Path) -> Path | None:
    matrix = _matrix(df)
    panels = [(e, _mismatch_nmse(matrix, e), _mismatch_loss(matrix, e)) for e in ("diffusion", "lmmse")]
    panels = [p for p in panels if p[1] is not None]
    if not panels:
        return None
    cols = list(dict.fromkeys(matrix["test_scene"]))
    width = max(4.5, 0.9 * len(cols) + 2.0)
    heights = [max(1.6, 0.55 * len(p[1]) + 1.4) for p in panels]
    fig = _new_figure((2 * width, sum(heights)))
    axes = fig.subplots(len(panels), 2, squeeze=False, gridspec_kw={"height_ratios": heights})
    snr_m = float(matrix["snr_db"].iloc[0])
    for row, (est, m, loss) in enumerate(panels):
        for col, (data, title, cmap, spec) in enumerate(
            [(m, "NMSE (dB)", "viridis_r", ".1f"), (loss, "loss vs matched (dB)", "Reds", "+.1f")]
        ):
            ax = axes[row][col]
            arr = data.to_numpy(float)
            finite = arr[np.isfinite(arr)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            if cmap == "Reds":  # losses: white at zero
                lo, hi = min(0.0, lo), max(1.0, hi)
            im = ax.imshow(np.ma.masked_invalid(arr), cmap=cmap, aspect="auto", vmin=lo, vmax=hi)
            fig.colorbar(im, ax=ax, shrink=0.8)
            ax.set_xticks(range(len(data.columns)), data.columns, rotation=35, ha="right", fontsize=7)
            ax.set_yticks(range(len(data.index)), data.index, fontsize=7)
            ax.set_xlabel("test scene", fontsize=8)
            ax.set_ylabel("train scene", fontsize=8)
            ax.set_title(f"{LABELS[est]}: {title}", fontsize=9)
            mid = (lo + hi) / 2
            for i in range(arr.shape[0]):
                for j in range(arr.shape[1]):
                    v = arr[i, j]
                    text = "n/a" if not np.isfinite(v) else format(v, spec)
                    dark = bool(np.isfinite(v) and v > mid)  # both colour maps are dark at the top
                    ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    fig.suptitle(f"Train-scene x test-scene NMSE at {snr_m:g} dB SNR", fontsize=10)
    fig.savefig(path)
    return path


def write_link_eval(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write ``link.csv``, the figures and ``tables.md`` of an :func:`eval_link` table.

    Parameters
    ----------
    df
        The table.
    out_dir
        Output folder (created).

    Returns
    -------
    list of Path
        The files written: ``link.csv``, ``psnr_vs_snr.png``, ``ssim_vs_snr.png``,
        ``nmse_vs_snr.png``, ``nmse_matrix_10db.png`` (when the table has a matrix),
        ``tables.md``.

    Raises
    ------
    OutputError
        The folder cannot be written.
    """
    from ivsim.errors import OutputError

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "link.csv"]
        df.to_csv(paths[0], index=False)
    except OSError as exc:
        msg = f"{out}: cannot write the link evaluation ({exc.strerror or exc})"
        raise OutputError(msg) from None
    link = _link(df)
    if not link.empty:
        paths.append(_quality_figure(df, "psnr_db", out / "psnr_vs_snr.png"))
        paths.append(_quality_figure(df, "ssim", out / "ssim_vs_snr.png"))
    if not _nmse_curves(df).empty:
        paths.append(_nmse_figure(df, out / "nmse_vs_snr.png"))
    snr_m = _matrix(df)["snr_db"]
    if not snr_m.empty:
        p = _matrix_figure(df, out / f"nmse_matrix_{float(snr_m.iloc[0]):g}db.png")
        if p is not None:
            paths.append(p)
    tables = out / "tables.md"
    tables.write_text(format_tables(df))
    paths.append(tables)
    logger.info("link evaluation written to %s", out)
    return paths
