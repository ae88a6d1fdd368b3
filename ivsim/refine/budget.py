"""What a refinement job costs: GPU seconds of its two stages and the bytes it moves.

The costs come from the scenario's ``refinement.assumed`` timings when it states
them, else from the ``refine`` section of the latency profile
``refinement.latency_profile`` (:mod:`ivsim.ai.latency`). Both have the shape of
:class:`~ivsim.config.schema.RefineCost`: large-model inference
``fixed_s + per_item_s * samples``, LoRA fine-tuning ``fixed_s + per_item_s *
steps``, adapter ``fixed_bytes + per_rank_bytes * rank``.

The upload is the request's context (``refinement.request_bytes``) plus
``refinement.upload_pilots`` LS pilot observations, each one resource grid's
pilots as complex64 (:func:`pilot_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ivsim.config.schema import GridModel, RefineCost, RefinementSpec, Scenario

__all__ = ["RefineTimingModel", "load_refine_timing", "pilot_bytes", "standalone_budget"]

_COMPLEX64_BYTES = 8


def pilot_bytes(grid: GridModel) -> int:
    """Bytes of one LS pilot observation: ``num_rx_ant * pilot symbols * fft_size`` complex64 values."""
    return grid.num_rx_ant * len(grid.pilot_ofdm_symbol_indices) * grid.fft_size * _COMPLEX64_BYTES


@dataclass(frozen=True)
class RefineTimingModel:
    """Seconds and bytes of a refinement job, from one :class:`~ivsim.config.schema.RefineCost`.

    Attributes
    ----------
    cost
        The stage costs and adapter size.
    source
        Where they come from (``"assumed: <label>"`` or ``"profile <name>"``), for notes.
    """

    cost: RefineCost
    source: str

    def lm_infer_s(self, samples: int) -> float:
        """GPU seconds of large-model inference generating ``samples`` channels."""
        return self.cost.lm_infer_s(samples)

    def finetune_s(self, steps: int) -> float:
        """GPU seconds of ``steps`` LoRA fine-tuning steps."""
        return self.cost.finetune_s(steps)

    def adapter_bytes(self, rank: int) -> int:
        """Bytes of an adapter of LoRA rank ``rank``."""
        return self.cost.adapter_bytes(rank)

    @staticmethod
    def upload_bytes(request_bytes: int, pilots: int, grid: GridModel) -> int:
        """Bytes of a request: its context plus ``pilots`` LS pilot observations."""
        return int(request_bytes + pilots * pilot_bytes(grid))

    @staticmethod
    def upload_bits(request_bytes: int, pilots: int, grid: GridModel) -> int:
        """:meth:`upload_bytes` in bits."""
        return 8 * RefineTimingModel.upload_bytes(request_bytes, pilots, grid)


def load_refine_timing(spec: RefinementSpec, *, required: bool = True) -> RefineTimingModel | None:
    """Return the timing model of a scenario's ``refinement`` section.

    Parameters
    ----------
    spec
        The ``refinement`` section: ``assumed`` if given, else the ``refine`` section
        of ``latency_profile``.
    required
        Raise when the profile has no ``refine`` section; else return ``None``
        (``latency: measured`` needs no timings for the GPU stages).

    Raises
    ------
    ModelError
        The profile cannot be read, or (``required``) has no ``refine`` section.
    """
    if spec.assumed is not None:
        return RefineTimingModel(spec.assumed, f"assumed: {spec.assumed.label}")
    from ivsim.ai.latency import load_latency_profile  # torch-free

    profile = load_latency_profile(spec.latency_profile)
    if profile.refine is None and not required:
        return None
    return RefineTimingModel(profile.refine_cost(), f"profile {profile.name}")


def standalone_budget(
    scenario: Scenario,
    *,
    samples: int,
    steps: int,
    rank: int,
    pilots: int,
    adapter_bytes: int | None = None,
    sinr_db: float = 10.0,
    measured_s: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """The budget of one refinement job alone (no queue), priced as the simulation's cloud prices it.

    The vehicle is at ``sinr_db`` on both links of the scenario's first base station
    (whole carrier, the link's Shannon gap and cap); the backhaul is that station's
    (or the cloud's); the GPU stages come from the scenario's refinement timing, or
    from ``measured_s = (lm_infer_s, finetune_s)`` with ``refinement.latency:
    measured``; the adapter's bytes from ``adapter_bytes`` (a real adapter's size)
    or the timing model.

    Returns
    -------
    dict
        ``upload_s, queue_s, lm_infer_s, finetune_s, download_s, total_s,
        upload_bytes, download_bytes, gpu_s`` (the ``ivsim refine --json`` budget), plus
        ``air_up_s, backhaul_up_s, backhaul_down_s, air_down_s`` and ``timing`` (where
        the GPU-stage times come from).
    """
    from ivsim.sim.links import shannon_rate_bps

    spec = scenario.refinement
    link = scenario.link
    bs = scenario.base_stations[0]
    backhaul = bs.backhaul or scenario.cloud.backhaul
    timing = load_refine_timing(spec, required=measured_s is None or spec.latency != "measured")
    if spec.latency == "measured" and measured_s is not None:
        lm_s, ft_s = (float(v) for v in measured_s)
        source = "measured wall time here"
    else:
        assert timing is not None
        lm_s, ft_s = timing.lm_infer_s(samples), timing.finetune_s(steps)
        source = timing.source
    up_bytes = RefineTimingModel.upload_bytes(spec.request_bytes, pilots, link.grid)
    if adapter_bytes is None:
        assert timing is not None
        adapter_bytes = timing.adapter_bytes(rank)
    rate = float(
        shannon_rate_bps(sinr_db, bs.bandwidth_hz, gap_db=link.gap_db, max_spectral_efficiency=link.max_spectral_efficiency)
    )
    air_up = 8 * up_bytes / rate
    bh_up = 8 * up_bytes / backhaul.rate_bps + backhaul.latency_s
    bh_down = 8 * adapter_bytes / backhaul.rate_bps + backhaul.latency_s
    air_down = 8 * adapter_bytes / rate
    out = {
        "upload_s": air_up + bh_up,
        "queue_s": 0.0,
        "lm_infer_s": lm_s,
        "finetune_s": ft_s,
        "download_s": bh_down + air_down,
        "upload_bytes": int(up_bytes),
        "download_bytes": int(adapter_bytes),
        "gpu_s": lm_s + ft_s,
    }
    out["total_s"] = out["upload_s"] + out["queue_s"] + lm_s + ft_s + out["download_s"]
    out.update(air_up_s=air_up, backhaul_up_s=bh_up, backhaul_down_s=bh_down, air_down_s=air_down, timing=source)
    order = ["upload_s", "queue_s", "lm_infer_s", "finetune_s", "download_s", "total_s", "upload_bytes",
             "download_bytes", "gpu_s"]  # fmt: skip
    return {k: out[k] for k in order} | {k: v for k, v in out.items() if k not in order}
