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

__all__ = [
    "RawgateConfig",
    "ConfigError",
    "load_config",
    "format_validation_error",
]

ENV_PREFIX = "RAWGATE_"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


def _check_codec_spec(spec: str) -> str:
    from .codecs import CodecError, get_codec

    try:
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
        from .codecs import get_codec

        _check_codec_spec(v)
        if not get_codec(v).lossless:
            raise ValueError(f"{v!r} is lossy; the fallback codec must be lossless")
        return v


class RawgateConfig(_Strict):
    """The whole configuration file."""

    version: Literal[1] = 1
    calibration: CalibrationConfig = CalibrationConfig()
    compression: CompressionConfig = CompressionConfig()


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
        node[path[-1]] = yaml.safe_load(raw)
    return data


def load_config(path: str | Path | None, environ: dict[str, str] | None = None) -> RawgateConfig:
    """Read, apply ``RAWGATE_…`` environment overrides, and validate.

    Relative paths in the file are resolved against the file's folder.

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
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
            raise ConfigError(source, [(where, f"not valid YAML: {getattr(e, 'problem', e)}")]) from e
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(source, [("(top level)", "must be a mapping of sections")])
        data = _resolve_paths(loaded, p.parent)
    data = _env_overrides(data, environ)
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
    return data
