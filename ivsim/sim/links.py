"""Link layer: batched transmission requests, evaluators and the batching window.

A base station builds a :class:`TxBatch` (one entry per frame, struct of numpy
arrays), submits it to the :class:`LinkBatcher`, and receives a :class:`TxResult`.
Every batch submitted within the same batching window (by default the same
simulated instant) goes to the :class:`LinkEvaluator` in one call, so a neural
evaluator can run one batched inference for all vehicles.

The evaluator is a small protocol; the analytic one here computes rate from the
SINR with Shannon's formula less an implementation gap, capped at the highest
MCS spectral efficiency; airtime; and end-to-end delay. It reports no image
quality (the quality columns stay empty).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from ivsim.errors import ScenarioError
from ivsim.registry import resolve_kind
from ivsim.sim.eventlog import Labels

if TYPE_CHECKING:
    import simpy

    from ivsim.config.schema import LinkSpec, Scenario

__all__ = [
    "FAST_EVALUATOR",
    "FULL_EVALUATOR",
    "NEURAL_EXTRA_COLUMNS",
    "AnalyticLinkEvaluator",
    "LinkBatcher",
    "LinkEvaluator",
    "TxBatch",
    "TxResult",
    "make_link_evaluator",
    "neural_tx_result",
    "shannon_rate_bps",
]


def shannon_rate_bps(sinr_db: Any, bandwidth_hz: Any, *, gap_db: float, max_spectral_efficiency: float) -> Any:
    """Shannon rate less an implementation gap, capped at the highest spectral efficiency.

    ``bandwidth_hz * min(log2(1 + sinr / gap), max_spectral_efficiency)``, with
    ``sinr`` and ``gap`` linear; numbers or numpy arrays (broadcast).
    """
    sinr_lin = np.power(10.0, np.asarray(sinr_db, dtype=float) / 10.0)
    se = np.minimum(np.log2(1.0 + sinr_lin / 10.0 ** (gap_db / 10.0)), max_spectral_efficiency)
    return bandwidth_hz * se


@dataclass
class TxBatch:
    """Transmission requests, one entry per frame (arrays of length ``n``).

    Attributes
    ----------
    vehicle, bs, scene
        Vehicle number, base-station number and scene number of each frame.
    uplink
        True where the vehicle transmits (the base station receives).
    size_bits
        Payload.
    bandwidth_hz
        Bandwidth share granted by the scheduler.
    queue_s
        Wait before the transmission can start.
    sinr_db, snr_db
        Large-scale SINR and SNR of the link.
    speed_mps, carrier_hz
        Vehicle speed and the serving carrier (for channel models).
    deadline_s
        Latest acceptable end-to-end delay.
    frame
        Frame number of each vehicle (which image it carries, for evaluators that send images).
    estimator_scene
        Scene whose channel estimator the receiver holds (-1: none).
    adapter_id
        Refinement adapter deployed on that estimator (object array of str, ``""`` =
        the base weights); ``None`` when the caller does not track adapters.
    estimator_version
        Version of that estimator (0 = the base weights, +1 per deployed refinement).
    adapter_code
        ``adapter_id`` as :class:`~ivsim.sim.eventlog.Labels` (codes into a list of ids), when the
        caller has it so: an evaluator groups frames by adapter faster on the codes.
    """

    vehicle: np.ndarray
    bs: np.ndarray
    scene: np.ndarray
    uplink: np.ndarray
    size_bits: np.ndarray
    bandwidth_hz: np.ndarray
    queue_s: np.ndarray
    sinr_db: np.ndarray
    snr_db: np.ndarray
    speed_mps: np.ndarray
    carrier_hz: np.ndarray
    deadline_s: np.ndarray
    frame: np.ndarray | None = None
    estimator_scene: np.ndarray | None = None
    adapter_id: np.ndarray | None = None
    estimator_version: np.ndarray | None = None
    adapter_code: Labels | None = None

    def __len__(self) -> int:
        return len(self.vehicle)

    def take(self, sl: slice) -> TxBatch:
        """Return the entries ``sl`` as a new batch."""
        return TxBatch(**{k: _take(v, sl) for k, v in self.__dict__.items()})

    @staticmethod
    def concat(batches: list[TxBatch]) -> TxBatch:
        """Concatenate batches entry-wise."""
        if len(batches) == 1:
            return batches[0]
        keys = batches[0].__dict__.keys()
        return TxBatch(**{k: _concat([b.__dict__[k] for b in batches]) for k in keys})


def _take(value: np.ndarray | Labels | None, sl: slice) -> np.ndarray | Labels | None:
    if value is None:
        return None
    return value.take(sl) if isinstance(value, Labels) else value[sl]


def _concat(values: list[np.ndarray | Labels | None]) -> np.ndarray | Labels | None:
    """A field of several batches joined; ``None`` if a batch lacks it (or their labels differ)."""
    if any(v is None for v in values):
        return None
    if any(isinstance(v, Labels) for v in values):
        first = values[0]
        if all(isinstance(v, Labels) and v.labels is first.labels for v in values):
            return Labels(np.concatenate([v.codes for v in values]), first.labels)
        return None
    return np.concatenate(values)


@dataclass
class TxResult:
    """Per-frame outcome of a :class:`TxBatch` (arrays of the batch's length).

    ``delay_s`` = queue + airtime + processing; ``drop_reason`` is ``None`` for a
    delivered frame. Quality columns are NaN when the evaluator does not score
    images.
    """

    rate_bps: np.ndarray
    airtime_s: np.ndarray
    delay_s: np.ndarray
    delivered: np.ndarray
    drop_reason: np.ndarray
    psnr_db: np.ndarray
    ssim: np.ndarray
    nmse_db: np.ndarray
    extra: dict[str, np.ndarray | Labels] = field(default_factory=dict)
    """More ``tx`` columns: arrays, or :class:`~ivsim.sim.eventlog.Labels` for strings."""

    def take(self, sl: slice) -> TxResult:
        """Return the entries ``sl`` as a new result."""
        base = {k: v[sl] for k, v in self.__dict__.items() if k != "extra"}
        return TxResult(**base, extra={k: _take(v, sl) for k, v in self.extra.items()})


@runtime_checkable
class LinkEvaluator(Protocol):
    """Turns a batch of transmission requests into per-frame results."""

    name: str

    def evaluate(self, batch: TxBatch) -> TxResult:
        """Evaluate every request of ``batch`` (one call per batching window)."""
        ...


class AnalyticLinkEvaluator:
    """Shannon rate with an implementation gap, capped spectral efficiency, outage below a SINR.

    Parameters
    ----------
    spec
        The scenario's ``link`` section (``gap_db``, ``max_spectral_efficiency``,
        ``min_sinr_db``, ``processing_s``).
    """

    name = "analytic"

    def __init__(self, spec: LinkSpec) -> None:
        self.gap_db = spec.gap_db
        self.se_max = spec.max_spectral_efficiency
        self.min_sinr_db = spec.min_sinr_db
        self.processing_s = spec.processing_s

    def evaluate(self, batch: TxBatch) -> TxResult:
        """Return rate, airtime, delay and delivery of each frame."""
        n = len(batch)
        rate = shannon_rate_bps(
            batch.sinr_db, batch.bandwidth_hz, gap_db=self.gap_db, max_spectral_efficiency=self.se_max
        )
        outage = batch.sinr_db < self.min_sinr_db
        with np.errstate(divide="ignore"):
            airtime = np.where(outage, np.nan, batch.size_bits / rate)
        delay = batch.queue_s + airtime + self.processing_s
        late = ~outage & (delay > batch.deadline_s)
        reason = np.full(n, None, dtype=object)
        reason[late] = "deadline"
        reason[outage] = "outage"
        nan = np.full(n, np.nan)
        return TxResult(
            rate_bps=np.where(outage, 0.0, rate),
            airtime_s=airtime,
            delay_s=np.where(outage, np.nan, delay),
            delivered=~outage & ~late,
            drop_reason=reason,
            psnr_db=nan,
            ssim=nan.copy(),
            nmse_db=nan.copy(),
        )


NEURAL_EXTRA_COLUMNS = ("codec", "estimator", "estimator_scene", "symbols", "compute_s", "pilot_resid_db")
"""The ``extra`` columns of a link that scores images (``link.fidelity: full`` and ``fast``), in this order."""


@functools.lru_cache(maxsize=64)
def _one_label(value: str) -> np.ndarray:
    """``[value]`` as an object array, the same array for the same value (the log converts such labels once)."""
    return np.array([value], dtype=object)


def neural_tx_result(
    batch: TxBatch,
    *,
    outage: np.ndarray,
    lost: np.ndarray,
    airtime_s: np.ndarray,
    compute_s: np.ndarray,
    psnr_db: np.ndarray,
    ssim: np.ndarray,
    nmse_db: np.ndarray,
    pilot_resid_db: np.ndarray,
    codec: str,
    estimator: np.ndarray | Labels,
    estimator_scene: np.ndarray | Labels,
    symbols: int,
) -> TxResult:
    """The :class:`TxResult` of a link that scores images, from its per-frame outcome.

    Delay = queue + airtime + compute; a frame below the minimum SINR (``outage``) is
    not sent (reason ``outage``), a frame the codec lost is ``decode``, a sent frame
    later than its deadline is ``deadline`` (its quality is still reported); rate =
    payload / airtime. ``extra`` holds :data:`NEURAL_EXTRA_COLUMNS`. Shared by
    ``link.fidelity: fast`` (:mod:`ivsim.phy.abstraction`) and ``full``
    (:class:`~ivsim.ai.neural_link.NeuralLinkEvaluator`).

    Parameters
    ----------
    batch
        The requests.
    outage, lost
        Boolean per frame: below the minimum SINR; declared lost by the codec.
    airtime_s
        Time on air (NaN in outage).
    compute_s, psnr_db, ssim, nmse_db, pilot_resid_db
        Per frame (NaN in outage).
    codec
        The codec's name.
    estimator, estimator_scene
        Object arrays or :class:`~ivsim.sim.eventlog.Labels`: the receiver's estimator name and
        the scene it was made for.
    symbols
        Complex channel symbols of a sent frame.
    """
    n = len(batch)
    delay = batch.queue_s + airtime_s + compute_s
    late = ~outage & ~lost & (delay > batch.deadline_s)
    reason = np.full(n, None, dtype=object)
    reason[late] = "deadline"
    reason[lost] = "decode"
    reason[outage] = "outage"
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(outage, 0.0, batch.size_bits / airtime_s)
    extra = {
        "codec": Labels(np.zeros(n, dtype=np.int64), _one_label(codec)),
        "estimator": estimator,
        "estimator_scene": estimator_scene,
        "symbols": np.where(outage, 0, symbols).astype(np.int64),
        "compute_s": compute_s,
        "pilot_resid_db": pilot_resid_db,
    }
    return TxResult(
        rate_bps=rate,
        airtime_s=airtime_s,
        delay_s=np.where(outage, np.nan, delay),
        delivered=~outage & ~lost & ~late,
        drop_reason=reason,
        psnr_db=psnr_db,
        ssim=ssim,
        nmse_db=nmse_db,
        extra=extra,
    )


FULL_EVALUATOR = "ivsim.ai.neural_link:NeuralLinkEvaluator"
"""The evaluator of ``link.fidelity: full`` (it follows :class:`LinkEvaluator`)."""
FAST_EVALUATOR = "ivsim.phy.abstraction:CalibratedLinkEvaluator"
"""The evaluator of ``link.fidelity: fast``: quality sampled from calibration tables of the full link."""


def make_link_evaluator(scenario: Scenario, *, seed: int, notes: list[str] | None = None) -> LinkEvaluator:
    """Return the evaluator for ``link.fidelity``.

    ``analytic`` is :class:`AnalyticLinkEvaluator`; ``full`` is
    :data:`FULL_EVALUATOR` and ``fast`` :data:`FAST_EVALUATOR`, imported by name on
    demand (the registry pattern), so that the simulation itself never imports torch
    or the neural side. ``seed`` seeds
    its channels and noise; lines it wants in the run's log are appended to ``notes``.
    """
    spec = scenario.link
    if spec.fidelity == "analytic":
        return AnalyticLinkEvaluator(spec)
    if spec.fidelity in ("full", "fast"):
        name = FULL_EVALUATOR if spec.fidelity == "full" else FAST_EVALUATOR
        cls = resolve_kind(name, {}, what="link evaluator", error=ScenarioError)
        return cls(scenario, seed=seed, notes=notes)
    msg = f"unknown link fidelity {spec.fidelity!r} (allowed: analytic, full, fast)"
    raise ValueError(msg)


class LinkBatcher:
    """Collects the batches submitted within one window and evaluates them in one call.

    Parameters
    ----------
    env
        The simulation's environment.
    evaluator
        The link evaluator.
    window_s
        Batching window; 0 collects everything submitted at the same simulated instant.
    """

    def __init__(self, env: simpy.Environment, evaluator: LinkEvaluator, *, window_s: float = 0.0) -> None:
        self.env = env
        self.evaluator = evaluator
        self.window_s = window_s
        self._pending: list[tuple[TxBatch, simpy.Event]] = []
        self.calls = 0
        self.requests = 0

    def submit(self, batch: TxBatch) -> simpy.Event:
        """Queue ``batch``; the returned event succeeds with its :class:`TxResult`."""
        done = self.env.event()
        if not self._pending:
            self.env.process(self._flush_after_window())
        self._pending.append((batch, done))
        return done

    def _flush_after_window(self):
        yield self.env.timeout(self.window_s)
        pending, self._pending = self._pending, []
        merged = TxBatch.concat([b for b, _ in pending])
        result = self.evaluator.evaluate(merged)
        self.calls += 1
        self.requests += len(merged)
        start = 0
        for batch, done in pending:
            end = start + len(batch)
            done.succeed(result if len(pending) == 1 else result.take(slice(start, end)))
            start = end
