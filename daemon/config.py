"""rawgate's one YAML configuration, validated by pydantic models.

Every section forbids unknown keys, so a typo is an error with its field path rather than a
silently ignored setting. Environment variables override the file:
``RAWGATE_CALIBRATION__SWEEP__DARK_FRAMES=50`` sets ``calibration.sweep.dark_frames``
(``__`` separates levels; values are parsed as YAML scalars).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .alerts import AlertsConfig
from .completeness import CompletenessConfig
from .metrics import MetricsConfig

__all__ = [
    "RawgateConfig",
    "ConfigError",
    "load_config",
    "format_validation_error",
]

ENV_PREFIX = "RAWGATE_"


class _Strict(BaseModel):
    # hide_input_in_errors: a refused secret (alerts) must not be echoed in an error message
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class LightConfig(_Strict):
    """How the sweep's light level maps onto hardware (device-specific, never hard-coded)."""

    device: str | None = Field(None, description="Device label whose property sets the light")
    property: str | None = Field(
        None, description="Property of `device` (e.g. an LED's intensity); null: exposure-only sweep"
    )
    dark_value: float = Field(0.0, description="Property value for 'dark' (light level 0)")
    max_value: float = Field(100.0, description="Property value for full light (level 1)")
    shutter: str | None = Field(None, description="Shutter closed for dark frames, open for light")

    @model_validator(mode="after")
    def _consistent(self) -> "LightConfig":
        if (self.device is None) != (self.property is None):
            raise ValueError("set both `device` and `property`, or neither (exposure-only sweep)")
        if self.property is None and self.shutter is None:
            raise ValueError("an exposure-only sweep needs a `shutter` to make dark frames")
        if self.max_value <= self.dark_value and self.property is not None:
            raise ValueError("max_value must be above dark_value")
        return self


class SimulatedConfig(_Strict):
    """rawgate's simulated sCMOS camera and LED (Python devices in UniMMCore)."""

    seed: int = 0
    shape: tuple[Annotated[int, Field(ge=8, le=8192)], Annotated[int, Field(ge=8, le=8192)]] = (
        256,
        256,
    )
    bit_depth: Literal[12, 16] = 16
    max_photons_per_ms: float = Field(5000.0, gt=0, description="Flux at 100 % LED [photons/px/ms]")
    fail_after_frames: int | None = Field(
        None, ge=0, description="Fault drill: the camera fails after this many frames"
    )


class InstrumentConfig(_Strict):
    """Which camera to calibrate and how to reach it."""

    kind: Literal["simulated", "mmcore", "pycromanager"] = "simulated"
    config_file: Path | None = Field(
        None, description="Micro-Manager hardware .cfg (mmcore); null: the DemoCamera demo config"
    )
    camera: str | None = Field(None, description="Camera device label; null: the core's camera")
    port: int = Field(4827, description="pycromanager: port of the running Micro-Manager")
    properties: dict[str, dict[str, str | float | int]] = Field(
        default_factory=dict,
        description="Device properties set before the sweep, {device: {property: value}}",
    )
    binning: int = Field(1, ge=1, le=16)
    roi: tuple[int, int, int, int] | None = Field(None, description="[x, y, width, height] px")
    light: LightConfig | None = None
    simulated: SimulatedConfig = SimulatedConfig()

    @model_validator(mode="after")
    def _light_for_hardware(self) -> "InstrumentConfig":
        if self.kind != "simulated" and self.light is None:
            raise ValueError(
                f"instrument kind {self.kind!r} needs a `light` section (which device and "
                "property set the light level)"
            )
        if self.config_file is not None and not self.config_file.is_file():
            raise ValueError(f"Micro-Manager config file not found: {self.config_file}")
        return self


class SweepConfig(_Strict):
    """Photon-transfer sweep plan (see :class:`rawgate.calibration.sweep.SweepPlan`)."""

    dark_exposures_ms: list[Annotated[float, Field(ge=0)]] = [10.0, 100.0, 500.0]
    dark_frames: int = Field(100, ge=2)
    light_exposure_ms: float = Field(10.0, gt=0)
    light_levels: int = Field(24, ge=1, le=1000)
    frames_per_level: int = Field(100, ge=2)
    exposure_only: bool = False
    auto_exposure: bool = False
    max_exposure_ms: float = Field(10_000.0, gt=0)


class FitConfig(_Strict):
    """Fit options (see :class:`rawgate.calibration.fit.FitOptions`)."""

    fit_fraction: float = Field(0.7, gt=0, le=1)
    bad_pixel_sigma: float = Field(5.0, gt=0)
    min_levels: int = Field(3, ge=2)


class DriftConfig(_Strict):
    """Tolerances for `rawgate calibration compare` (see DriftTolerances)."""

    gain_rel: float = Field(0.02, ge=0)
    read_noise_rel: float = Field(0.10, ge=0)
    offset_adu: float = Field(2.0, ge=0)
    new_bad_pixel_fraction: float = Field(0.001, ge=0, le=1)


class CalibrationConfig(_Strict):
    instrument: InstrumentConfig = InstrumentConfig()
    sweep: SweepConfig = SweepConfig()
    fit: FitConfig = FitConfig()
    drift: DriftConfig = DriftConfig()
    output_dir: Path = Field(
        Path("calibrations"), description="Where sweeps, models and reports are written"
    )


def _check_codec_spec(spec: str, *, allow_auto: bool = True) -> str:
    """A spec the registry accepts; with ``allow_auto`` also one that leaves the rate to the ε
    budget (``noisecal:step=auto``), checked by the same parser ``rawgate evaluate`` uses."""
    from rawgate.codecs import CodecError, get_codec
    from rawgate.codecs.auto import AutoSpec, is_auto_spec

    try:
        if is_auto_spec(spec):
            if not allow_auto:
                raise CodecError(f"{spec!r}: `auto` is not allowed here")
            AutoSpec.parse(spec)
        else:
            get_codec(spec)
    except CodecError as e:
        raise ValueError(str(e)) from None
    return spec


class CompressionConfig(_Strict):
    """Which codecs compress the data (spec strings, see ``rawgate codecs``)."""

    codec: str = Field(
        "noisecal:step=2", description="Codec for data with a calibration, e.g. noisecal:step=2"
    )
    fallback_codec: str = Field(
        "jpegxl:effort=1", description="Lossless codec when the check fails or no calibration fits"
    )

    @field_validator("codec")
    @classmethod
    def _codec(cls, v: str) -> str:
        return _check_codec_spec(v)

    @field_validator("fallback_codec")
    @classmethod
    def _fallback(cls, v: str) -> str:
        from rawgate.codecs import get_codec

        _check_codec_spec(v, allow_auto=False)
        if not get_codec(v).lossless:
            raise ValueError(f"{v!r} is lossy; the fallback codec must be lossless")
        return v


class RuleConfig(_Strict):
    """Which codec and calibration an item gets; the first rule that matches wins."""

    match: str = Field("**", description="Glob on the item's path relative to the watched folder")
    metadata: dict[str, str | float | int] = Field(
        default_factory=dict,
        description="Micro-Manager/OME metadata that must match, {key: value} (e.g. {Camera: Andor})",
    )
    codec: str | None = Field(None, description="Codec spec; null: compression.codec")
    camera: str | None = Field(
        None, description="Camera name or serial the calibration must be of; null: any that fits the frames"
    )

    @field_validator("codec")
    @classmethod
    def _codec(cls, v: str | None) -> str | None:
        return None if v is None else _check_codec_spec(v)


class WatchConfig(_Strict):
    """One watched acquisition folder."""

    path: Path = Field(description="Acquisition folder (the root of the items)")
    name: str | None = Field(
        None, description="Sub-folder of the archive for this folder's copies; null: the folder's name"
    )
    network_mount: bool = Field(
        False, description="SMB/NFS mount: poll instead of inotify (no events arrive from other hosts)"
    )
    poll_interval_s: float = Field(5.0, gt=0, description="Polling period for network mounts [s]")
    completeness: CompletenessConfig = CompletenessConfig()
    sequence_globs: list[str] = Field(
        default_factory=list, description="Folders (globs) that hold one image sequence each"
    )
    ignore_globs: list[str] = Field(default_factory=list, description="Names never treated as items")
    rules: list[RuleConfig] = Field(default_factory=lambda: [RuleConfig()])

    @property
    def archive_name(self) -> str:
        return self.name or self.path.name

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and (not v or "/" in v or v in (".", "..") or v.startswith(".")):
            raise ValueError(f"{v!r}: a plain folder name (no '/', not hidden)")
        return v


class CalibrationUseConfig(_Strict):
    """Which noise model the daemon uses, and when it refuses one."""

    dirs: list[Path] = Field(
        default_factory=list,
        description="Folders searched (recursively) for *.rgnoise; empty: calibration.output_dir",
    )
    max_age_days: float = Field(30.0, gt=0, description="Older calibrations are stale [days]")
    on_stale: Literal["lossless", "use"] = Field(
        "lossless", description="A stale calibration: archive losslessly (and alert) or use it (and alert)"
    )
    on_drift: Literal["lossless", "use"] = Field(
        "lossless", description="Newest calibration drifted from the previous one beyond calibration.drift"
    )


class GateUseConfig(_Strict):
    """The ε spot check on sampled frames (see ``rawgate check``)."""

    enabled: bool = True
    first_frame: bool = Field(True, description="Always check the first plane of every item")
    fraction: float = Field(0.0, ge=0, le=1, description="Seeded fraction of the other planes checked")
    max_frames: int = Field(4, ge=1, description="At most this many planes checked per item")
    seed: int = 0
    replicas: int = Field(10, ge=3)
    replicas_around: Literal["raw", "estimate"] = Field(
        "raw", description="Replicas around the raw image (the paper's) or a denoised estimate of its mean "
                           "(pixel-wise one camera noise from the truth; measured against true repeats it does not "
                           "fix dim data and shrinks dim 3-D objects: see bench/gate_truth.py)")
    tiles: int | None = Field(1, ge=1, description="Seeded tiles per plane; null: the whole plane")
    tile_size: int = Field(512, ge=16, description="Tile edge [pixels]")
    segmenter: str | None = Field(
        None, description="The lab's segmenter: a .skops model file or an entry-point name; null: model-free ε only"
    )
    false_reject_rate: float = Field(0.002, gt=0, lt=0.5)
    html_report: bool = Field(False, description="Also write each check's HTML report with plots (slower)")


class RetentionConfig(_Strict):
    """What happens to raw data once an approved, verified copy is archived."""

    keep_days: float = Field(14.0, ge=0, description="Keep raw this long after archiving [days]; 0: release at once")
    action: Literal["delete", "move", "keep"] = "delete"
    holding_dir: Path | None = Field(None, description="Where `move` puts raw data (mirroring the tree)")

    @model_validator(mode="after")
    def _holding(self) -> "RetentionConfig":
        if self.action == "move" and self.holding_dir is None:
            raise ValueError("action `move` needs a `holding_dir`")
        return self


class WorkersConfig(_Strict):
    processes: int = Field(2, ge=1, le=256, description="Worker processes")
    queue_size: int = Field(4, ge=1, description="Items handed to workers at once (backpressure)")
    step_timeout_s: float = Field(900.0, gt=0, description="A worker still on one step of one item after this "
                                  "long is hung: it is killed and the item retried, then quarantined [s]")
    behind_window_s: float = Field(30.0, gt=0, description="Alert 'falling behind' when the backlog of complete "
                                   "items grew for this long [s] ...")
    behind_floor_items: int | None = Field(None, ge=0, description="... and exceeds this many items "
                                              "(default: twice queue_size)")


class DaemonConfig(_Strict):
    """`rawgate run`: the watched folders, the archive and how items get there."""

    state_dir: Path = Field(Path("rawgate-state"), description="Ledger, lock and reports (a local disk)")
    archive_dir: Path = Field(Path("archive"), description="Archive root (a BagIt bag: data/<folder>/…)")
    watch: list[WatchConfig] = Field(default_factory=list)
    calibrations: CalibrationUseConfig = CalibrationUseConfig()
    gate: GateUseConfig = GateUseConfig()
    retention: RetentionConfig = RetentionConfig()
    workers: WorkersConfig = WorkersConfig()
    rescan_interval_s: float = Field(300.0, gt=0, description="Reconciliation scan period [s]")
    free_space_reserve_gb: float = Field(2.0, ge=0, description="Below this much free space on the archive's "
                                         "or the state folder's disk no new item is started (intake pauses "
                                         "with an alert and resumes on its own) [GB, 10⁹ B]")
    alerts: AlertsConfig = AlertsConfig()
    metrics: MetricsConfig = MetricsConfig()

    @model_validator(mode="after")
    def _distinct(self) -> "DaemonConfig":
        names = [w.archive_name for w in self.watch]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"watched folders share archive names {dup}: give each a distinct `name`")
        if "models" in names:
            raise ValueError("a watched folder's archive name is 'models', which the archive keeps for its noise-model "
                             "files (data/models/): give that folder another `name`")
        roots = [w.path.resolve() for w in self.watch]
        arch = self.archive_dir.resolve()
        for r in roots:
            if arch == r or arch.is_relative_to(r) or r.is_relative_to(arch):
                raise ValueError(f"the archive {arch} and the watched folder {r} must not contain each other")
        for a in roots:
            for b in roots:
                if a != b and a.is_relative_to(b):
                    raise ValueError(f"watched folder {a} lies inside watched folder {b}")
        # configs that validate field by field but cannot work (issue 30)
        state = self.state_dir.resolve()
        if state == arch or state.is_relative_to(arch) or arch.is_relative_to(state):
            raise ValueError(f"state_dir {state} and archive_dir {arch} must be separate folders (the ledger "
                             "and reports are not archive content)")
        for r in roots:
            if state == r or state.is_relative_to(r):
                raise ValueError(f"state_dir {state} lies inside the watched folder {r}: the daemon would "
                                 "ingest its own ledger and reports")
            hold = self.retention.holding_dir
            if self.retention.action == "move" and hold is not None and (
                    hold.resolve() == r or hold.resolve().is_relative_to(r)):
                raise ValueError(f"retention.holding_dir {hold.resolve()} lies inside the watched folder {r}: "
                                 "released raw data would come back as new items")
        return self


class RawgateConfig(_Strict):
    """The whole configuration file."""

    version: Literal[1] = 1
    calibration: CalibrationConfig = CalibrationConfig()
    compression: CompressionConfig = CompressionConfig()
    daemon: DaemonConfig = DaemonConfig()

    @model_validator(mode="after")
    def _auto_needs_gate(self) -> "RawgateConfig":
        from rawgate.codecs.auto import is_auto_spec

        # an ε-budgeted rate is found and re-checked by the spot checks: without them it could drift
        if not self.daemon.gate.enabled:
            specs = [("compression.codec", self.compression.codec)]
            specs += [(f"daemon.watch.{i}.rules.{j}.codec", r.codec) for i, w in enumerate(self.daemon.watch)
                      for j, r in enumerate(w.rules) if r.codec]
            for where, spec in specs:
                if is_auto_spec(spec):
                    raise ValueError(f"{where} is {spec!r}: an `auto` rate needs the ε spot checks "
                                     "(daemon.gate.enabled: true)")
        return self


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one
    silently: a second ``daemon:`` section would replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice (first at line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


class ConfigError(ValueError):
    """The configuration cannot be read or is invalid; ``errors`` lists (path, reason)."""

    def __init__(self, source: str, errors: list[tuple[str, str]]) -> None:
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  {loc}: {msg}" for loc, msg in errors)
        super().__init__(f"invalid configuration {source}:\n{lines}")


def format_validation_error(e: ValidationError) -> list[tuple[str, str]]:
    """``(dotted.field.path, reason)`` for every error pydantic found."""
    out = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        out.append((loc, err["msg"]))
    return out


def _env_overrides(data: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    for key, raw in sorted(environ.items()):
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        node = data
        for p in path[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = {}
                node[p] = nxt
            node = nxt
        try:
            node[path[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"environment variable {key}", [(".".join(path), f"not valid YAML: "
                                                               f"{getattr(e, 'problem', e)}")]) from e
    return data


def load_config(path: str | Path | None, environ: dict[str, str] | None = None) -> RawgateConfig:
    """Read, apply ``RAWGATE_…`` environment overrides, and validate.

    Relative paths in the file and in ``RAWGATE_…`` overrides are resolved against the file's
    folder (not the working directory, which differs between a shell and systemd).

    Raises
    ------
    ConfigError
        With every problem and its field path.
    """
    environ = dict(os.environ) if environ is None else environ
    source = str(path) if path else "(defaults)"
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(source, [("(file)", "file not found")])
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(source, [("(file)", f"not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                                                  f"{e.start}): save the file as UTF-8")]) from e
        try:
            loaded = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
            raise ConfigError(source, [(where, f"not valid YAML: {getattr(e, 'problem', e)}")]) from e
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(source, [("(top level)", "must be a mapping of sections")])
        data = loaded
    data = _env_overrides(data, environ)
    if path is not None:  # relative paths, also those of environment overrides: from the file's folder
        data = _resolve_paths(data, Path(path).parent)
    try:
        return RawgateConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(source, format_validation_error(e)) from e


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    cal = data.get("calibration")
    if isinstance(cal, dict):
        if isinstance(cal.get("output_dir"), str) and not Path(cal["output_dir"]).is_absolute():
            cal["output_dir"] = str(base / cal["output_dir"])
        inst = cal.get("instrument")
        if isinstance(inst, dict) and isinstance(inst.get("config_file"), str):
            if not Path(inst["config_file"]).is_absolute():
                inst["config_file"] = str(base / inst["config_file"])
    dmn = data.get("daemon")
    if isinstance(dmn, dict):
        def rel(d: dict, key: str) -> None:
            if isinstance(d.get(key), str) and not Path(d[key]).is_absolute():
                d[key] = str(base / d[key])

        rel(dmn, "state_dir")
        rel(dmn, "archive_dir")
        for w in dmn.get("watch") or []:
            if isinstance(w, dict):
                rel(w, "path")
        ret = dmn.get("retention")
        if isinstance(ret, dict):
            rel(ret, "holding_dir")
        cal_use = dmn.get("calibrations")
        if isinstance(cal_use, dict) and isinstance(cal_use.get("dirs"), list):
            cal_use["dirs"] = [str(base / d) if isinstance(d, str) and not Path(d).is_absolute() else d
                               for d in cal_use["dirs"]]
        gate = dmn.get("gate")
        if isinstance(gate, dict) and isinstance(gate.get("segmenter"), str):
            seg = gate["segmenter"]
            if seg.endswith(".skops") and not Path(seg).is_absolute():
                gate["segmenter"] = str(base / seg)
    return data
