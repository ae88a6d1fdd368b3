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

The latency of one frame is the sum over the four stages of
``fixed_s + per_item_s * items``: the time its receiver (and, for encoding, its
transmitter) needs to process that frame alone. It is deterministic, unlike the
``measured`` mode (:class:`~ivsim.ai.neural_link.NeuralLinkEvaluator` with
``link.latency: measured``), which logs the wall time of the actual batched call.

``ivsim bench link --write-profile FILE`` measures a CPU profile on the machine it
runs on (the shipped ``cpu`` one came from that command). The shipped
``gpu_rtx4090_reported`` profile holds runtimes reported for an RTX 4090 in the
channel-knowledge-map paper, not measured by ivsim; its ``source`` says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ivsim.config.schema import LATENCY_PROFILES
from ivsim.errors import ModelError

__all__ = ["LatencyProfile", "StageCost", "default_profile_name", "load_latency_profile", "profile_path"]

_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


class StageCost(BaseModel):
    """``fixed_s + per_item_s * items`` seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    fixed_s: float = Field(0.0, ge=0)
    per_item_s: float = Field(0.0, ge=0)

    def seconds(self, items: Any) -> Any:
        """Cost of ``items`` (a number or a numpy array)."""
        return self.fixed_s + self.per_item_s * items


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
    """The shipped profile of a device type: ``cpu`` or, for CUDA, ``gpu_rtx4090_reported``."""
    return "gpu_rtx4090_reported" if str(device).startswith("cuda") else "cpu"


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
