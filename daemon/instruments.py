"""Open the instrument a configuration names (the only place config meets instruments)."""

from __future__ import annotations

from rawgate.calibration.instruments import (
    Instrument,
    InstrumentError,
    LightControl,
    MMCoreInstrument,
    PycromanagerInstrument,
    SimulatedInstrument,
)

from .config import InstrumentConfig

__all__ = ["open_instrument"]


def _light(cfg: InstrumentConfig) -> LightControl:
    assert cfg.light is not None
    lc = cfg.light
    return LightControl(
        device=lc.device,
        property_name=lc.property,
        dark_value=lc.dark_value,
        max_value=lc.max_value,
        shutter=lc.shutter,
    )


def _apply(set_property, set_roi, cfg: InstrumentConfig, camera: str) -> None:
    """Set the configured properties, binning and ROI through the adapter's core."""
    settings = [(dev, prop, value) for dev, props in cfg.properties.items() for prop, value in props.items()]
    if cfg.binning != 1:
        settings.append((camera, "Binning", cfg.binning))
    try:
        for dev, prop, value in settings:
            set_property(dev, prop, value)
        if cfg.roi is not None:
            set_roi(*cfg.roi)
    except Exception as e:
        raise InstrumentError(f"Micro-Manager refused a configured setting: {e}") from e


def open_instrument(cfg: InstrumentConfig) -> Instrument:
    """Build the configured instrument, with its properties, binning and ROI applied.

    Raises
    ------
    InstrumentError
        When the camera or Micro-Manager cannot be reached or a setting is refused.
    """
    if cfg.kind == "simulated":
        s = cfg.simulated
        sim = SimulatedInstrument(
            seed=s.seed,
            shape=tuple(s.shape),
            bit_depth=s.bit_depth,
            max_photons_per_ms=s.max_photons_per_ms,
            binning=cfg.binning,
            roi=cfg.roi,
        )
        sim.scope.fail_after_frames = s.fail_after_frames
        return sim
    light = _light(cfg)
    if cfg.kind == "mmcore":
        inst = MMCoreInstrument.from_config_file(cfg.config_file, light, cfg.camera)
        _apply(inst.core.setProperty, inst.core.setROI, cfg, inst.camera)
        return inst
    pinst = PycromanagerInstrument.connect(light, camera=cfg.camera, port=cfg.port)
    _apply(pinst.core.set_property, pinst.core.set_roi, cfg, pinst.camera)
    return pinst
