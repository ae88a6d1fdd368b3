"""Compute-latency profiles of the neural link: how long encode, estimate, equalize and decode take per frame.

A profile is a small YAML file (``models/latency_<name>.yaml`` for the shipped
ones, or a user's own path) that gives, per stage, a fixed cost and a cost per
item::

    name: cpu
    device: cpu
    source: how the numbers were obtained (measured by which command, or reported by whom)
    codec:        # items = thousands of channel symbols of the frame
      ctcd: {encode: {fixed_s: 0.004, per_item_s: 0.0013}, decode: {fixed_s: 0.004, per_item_s: 0.0017}}
    estimator:    # items = channel realizations estimated for the frame
      diffusion: {fixed_s: 0.0, per_item_s: 0.12}
      lmmse: {fixed_s: 0.0, per_item_s: 0.002}
    equalize: {fixed_s: 0.0, per_item_s: 0.0002}   # items = resource grids of the frame
    refine:       # optional: cloud refinement of an estimator (ivsim.refine)
      lm_infer: {fixed_s: 0.5, per_item_s: 0.01}       # items = channel samples the large model generates
      finetune: {fixed_s: 0.2, per_item_s: 0.05}       # items = LoRA fine-tuning steps
      adapter: {fixed_bytes: 4096, per_rank_bytes: 40000}   # adapter size = fixed + per_rank * rank

(The numbers above illustrate the format only.) The latency of one frame is the
sum over the four stages of ``fixed_s + per_item_s * items``: the time its
receiver (and, for encoding, its transmitter) needs to process that frame alone.
It is deterministic, unlike the ``measured`` mode (:class:`~ivsim.ai.neural_link.NeuralLinkEvaluator` with
``link.latency: measured``), which logs the wall time of the actual batched call.
The optional ``refine`` section prices the cloud's refinement jobs (:mod:`ivsim.refine`).

``ivsim bench link --write-profile FILE`` measures a profile on the machine it runs
on (the shipped ``cpu`` one came from that command on the 2-core CPU box, the shipped
``gpu_h200`` one from it with ``--device cuda`` on an NVIDIA H200, with its
``refine`` section from ``ivsim bench refine --device cuda``). The shipped
``gpu_rtx4090_reported`` profile holds runtimes reported for an RTX 4090 in the
channel-knowledge-map paper, not measured by ivsim; its ``source`` says so.
A profile without a ``refine`` section cannot price refinement jobs
(:meth:`LatencyProfile.refine_cost` says how to get one). The stage and refine
models are defined in :mod:`ivsim.config.schema` (the scenario's
``refinement.assumed`` has the same shape) and re-exported here.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ivsim.config.schema import LATENCY_PROFILES, AdapterSize, RefineCost, StageCost
from ivsim.errors import ModelError

__all__ = [
    "AdapterSize",
    "LatencyProfile",
    "RefineCost",
    "StageCost",
    "default_profile_name",
    "load_latency_profile",
    "profile_path",
]

_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


class CodecCost(BaseModel):
    """Encode and decode costs of one codec; items are thousands of channel symbols."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    encode: StageCost
    decode: StageCost


class LatencyProfile(BaseModel):
    """Per-stage compute costs on one kind of device (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    device: str
    source: str = Field(description="Where the numbers come from: a command that measured them, or a citation.")
    codec: dict[str, CodecCost]
    estimator: dict[str, StageCost]
    equalize: StageCost = StageCost()
    refine: RefineCost | None = Field(
        None, description="Cloud refinement costs (large-model inference, LoRA fine-tuning, adapter size)."
    )

    def refine_cost(self) -> RefineCost:
        """Return the profile's refinement costs.

        Raises
        ------
        ModelError
            The profile has no ``refine`` section.
        """
        if self.refine is None:
            msg = (
                f"latency profile {self.name!r} has no refine timings; run `ivsim bench refine --write-profile FILE` "
                "on that device or state refinement.assumed in the scenario"
            )
            raise ModelError(msg)
        return self.refine

    def frame_s(self, codec: str, estimator: str, *, symbols: int, realizations: int, grids: int) -> float:
        """Latency of one frame: encode + estimate + equalize + decode.

        Raises
        ------
        ModelError
            The profile has no entry for the codec or estimator kind.
        """
        if codec not in self.codec:
            msg = (
                f"latency profile {self.name!r} has no codec {codec!r} (has: {', '.join(sorted(self.codec))}); "
                "add it to the profile or use link.latency: measured"
            )
            raise ModelError(msg)
        if estimator not in self.estimator:
            msg = (
                f"latency profile {self.name!r} has no estimator {estimator!r} (has: {', '.join(sorted(self.estimator))}); "
                "add it to the profile or use link.latency: measured"
            )
            raise ModelError(msg)
        c = self.codec[codec]
        k = symbols / 1000.0
        return float(
            c.encode.seconds(k)
            + self.estimator[estimator].seconds(realizations)
            + self.equalize.seconds(grids)
            + c.decode.seconds(k)
        )


def profile_path(name_or_path: str | Path) -> Path:
    """Return the file of a shipped profile name (``models/latency_<name>.yaml``) or the path itself."""
    if str(name_or_path) in LATENCY_PROFILES:
        return _MODELS_DIR / f"latency_{name_or_path}.yaml"
    return Path(name_or_path)


def default_profile_name(device: str) -> str:
    """The shipped profile of a device type: ``cpu`` or, for CUDA, ``gpu_h200`` (measured by ivsim on an H200)."""
    return "gpu_h200" if str(device).startswith("cuda") else "cpu"


def load_latency_profile(name_or_path: str | Path) -> LatencyProfile:
    """Read and check a latency profile.

    Raises
    ------
    ModelError
        Missing or unreadable file, or a field that is not allowed (one line naming
        the file and the field).
    """
    path = profile_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        msg = f"{path}: latency profile not found (shipped: {', '.join(LATENCY_PROFILES)})"
        raise ModelError(msg) from None
    except (OSError, yaml.YAMLError) as exc:
        msg = f"{path}: latency profile unreadable ({type(exc).__name__})"
        raise ModelError(msg) from None
    try:
        return LatencyProfile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = f"{path}: {where}: {err['msg']}"
        raise ModelError(msg) from None
