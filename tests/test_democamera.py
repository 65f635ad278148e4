"""The real DemoCamera C++ adapter (mm-test-adapters) through pymmcore-plus's CMMCorePlus.

DemoCamera "Noise" mode: offset 100, mean = flux·t/PCF, var = flux·t/PCF² + (ReadNoise/PCF)²,
so the system gain is K = 1/PCF ADU per electron and the read noise is the property value.
It has no per-pixel variation: this checks the global fit, not the maps.
"""

from __future__ import annotations

import pytest

from rawgate.calibration.fit import fit_sweep
from rawgate.calibration.instruments import InstrumentError, LightControl, MMCoreInstrument
from rawgate.calibration.sweep import SweepPlan, run_sweep

LIGHT = LightControl(device="Camera", property_name="Photon Flux", dark_value=2.0, max_value=5000.0)
PLAN = SweepPlan(dark_exposures_ms=(0.0,), dark_frames=10, light_exposure_ms=10.0, light_levels=10,
                 frames_per_level=10)


@pytest.fixture(scope="module")
def demo():
    inst = MMCoreInstrument.from_config_file(None, LIGHT)
    assert inst.core.getDeviceLibrary("Camera") == "DemoCamera"
    inst.core.setProperty("Camera", "Mode", "Noise")
    inst.core.setROI(0, 0, 128, 128)
    yield inst
    inst.close()


@pytest.mark.parametrize("pcf", [1.0, 2.5, 0.5])
def test_system_gain_is_inverse_pcf(demo, pcf, tmp_path):
    demo.core.setProperty("Camera", "Photon Conversion Factor", pcf)
    fit = fit_sweep(run_sweep(demo, PLAN, tmp_path / "s.rgsweep"))
    assert fit.emva.system_gain_adu_per_e == pytest.approx(1.0 / pcf, rel=0.02)
    read_noise = float(demo.core.getProperty("Camera", "ReadNoise (electrons)"))
    assert fit.emva.temporal_dark_noise_e == pytest.approx(read_noise, rel=0.05)


def test_read_noise_setting_is_recovered(demo, tmp_path):
    demo.core.setProperty("Camera", "Photon Conversion Factor", 1.0)
    demo.core.setProperty("Camera", "ReadNoise (electrons)", 6.0)
    try:
        fit = fit_sweep(run_sweep(demo, PLAN, tmp_path / "s.rgsweep"))
    finally:
        demo.core.setProperty("Camera", "ReadNoise (electrons)", 2.5)
    assert fit.emva.temporal_dark_noise_e == pytest.approx(6.0, rel=0.05)
    assert float(fit.maps.read_noise_e.mean()) == pytest.approx(6.0, rel=0.05)


def test_identity_comes_from_the_adapter(demo):
    ident = demo.identity()
    assert ident.name == "DemoCamera-MultiMode"
    assert ident.bit_depth == int(demo.core.getProperty("Camera", "BitDepth"))
    assert ident.roi == (0, 0, 128, 128)


def test_config_without_camera_is_refused(tmp_path):
    cfg = tmp_path / "nocam.cfg"
    cfg.write_text("Device,XY,DemoCamera,DXYStage\nProperty,Core,Initialize,1\n")
    with pytest.raises(InstrumentError, match="no camera"):
        MMCoreInstrument.from_config_file(cfg, LIGHT)


def test_missing_light_device_is_refused():
    with pytest.raises(InstrumentError, match="not loaded"):
        MMCoreInstrument.from_config_file(
            None, LightControl(device="NoSuchLED", property_name="Intensity")
        )
