"""The simulated camera's known maps are recovered by the default sweep (issue targets)."""

from __future__ import annotations

import numpy as np
import pytest

from rawgate.calibration.fit import BAD_HOT, BAD_NOISY, fit_sweep
from rawgate.calibration.instruments import SimulatedInstrument
from rawgate.calibration.simulation import DEFECT_HOT, DEFECT_NOISY, compare_to_truth
from rawgate.calibration.sweep import SweepPlan, run_sweep


def _cmp(inst, fit, binning=1):
    m = fit.maps
    return compare_to_truth(
        inst.truth.binned(binning), m.offset_adu, m.gain_e_per_adu, m.read_noise_e, m.bad_pixels,
        fit.emva.system_gain_adu_per_e,
    )


def test_default_sweep_recovers_known_maps(default_sweep, default_fit):
    inst, _, _ = default_sweep
    c = _cmp(inst, default_fit)
    assert abs(c["system_gain_rel_error"]) <= 0.01
    assert c["gain_median_abs_rel_error"] <= 0.05
    assert c["read_noise_median_abs_rel_error"] <= 0.05
    assert c["offset_median_abs_error_adu"] <= 0.5
    assert c["planted_defects_flagged_fraction"] >= 0.95
    assert c["false_flag_fraction"] <= 0.001


def test_bad_pixel_reasons_match_planted_kind(default_sweep, default_fit):
    inst, _, _ = default_sweep
    bad = default_fit.maps.bad_pixels
    hot = inst.truth.defects == DEFECT_HOT
    noisy = inst.truth.defects == DEFECT_NOISY
    assert ((bad[hot] & BAD_HOT) > 0).mean() >= 0.95
    assert ((bad[noisy] & BAD_NOISY) > 0).mean() >= 0.95


def test_emva_global_figures_match_truth(default_sweep, default_fit):
    inst, _, _ = default_sweep
    e, t = default_fit.emva, inst.truth
    good = t.defects == 0
    # temporal dark noise at the light exposure: read noise plus dark shot noise (hot pixels
    # included, as EMVA defines it over the whole sensor)
    t_s = 0.010
    var_e = np.mean(t.read_noise_e**2 / t.gain_e_per_adu**2 + t.dark_current_e_per_s * t_s / t.gain_e_per_adu**2)
    k_true = np.mean(1 / t.gain_e_per_adu**2) / np.mean(1 / t.gain_e_per_adu)
    assert e.temporal_dark_noise_e == pytest.approx(np.sqrt(var_e) / k_true, rel=0.03)
    assert e.saturation_reached
    # full well 30 000 e-, saturation is declared at the level of maximal variance (EMVA)
    assert 0.6 * t.full_well_e < e.saturation_capacity_e <= 1.02 * t.full_well_e
    assert e.linearity_error_percent < 0.5
    dc_true = float(np.mean(t.dark_current_e_per_s))
    assert e.dark_current_e_per_s == pytest.approx(dc_true, rel=0.1)
    assert np.median(default_fit.maps.dark_current_e_per_s[good]) == pytest.approx(
        np.median(t.dark_current_e_per_s[good]), abs=0.3
    )


def test_binned_roi_12bit_camera(tmp_path, small_plan):
    inst = SimulatedInstrument(seed=5, shape=(192, 192), bit_depth=12, max_photons_per_ms=80.0,
                               binning=2, roi=(8, 16, 64, 48))
    ident = inst.identity()
    assert (ident.binning, ident.roi, ident.bit_depth) == (2, (8, 16, 64, 48), 12)
    sweep = run_sweep(inst, small_plan, tmp_path / "b.rgsweep")
    assert sweep.shape == (48, 64)
    fit = fit_sweep(sweep)
    # 12-bit ADC saturates before the full well; K of the binned sum ≈ 1/mean gain
    k_true = float(np.mean(1 / inst.truth.gain_e_per_adu))
    assert fit.emva.system_gain_adu_per_e == pytest.approx(k_true, rel=0.03)
    assert fit.emva.saturation_adu <= 4095


def test_exposure_only_sweep(tmp_path):
    inst = SimulatedInstrument(seed=6, shape=(64, 64), max_photons_per_ms=500.0)
    plan = SweepPlan(dark_exposures_ms=(5.0, 50.0, 100.0), dark_frames=12, light_exposure_ms=100.0,
                     light_levels=10, frames_per_level=12, exposure_only=True)
    sweep = run_sweep(inst, plan, tmp_path / "e.rgsweep")
    assert {lv.light_level for lv in sweep.lights} == {1.0}
    assert len({lv.exposure_ms for lv in sweep.lights}) == 10
    fit = fit_sweep(sweep)
    k_true = np.mean(1 / inst.truth.gain_e_per_adu**2) / np.mean(1 / inst.truth.gain_e_per_adu)
    assert fit.emva.system_gain_adu_per_e == pytest.approx(k_true, rel=0.02)


def test_auto_exposure_reaches_saturation(tmp_path):
    inst = SimulatedInstrument(seed=8, shape=(64, 64), max_photons_per_ms=50.0)
    plan = SweepPlan(dark_exposures_ms=(10.0, 50.0, 100.0), dark_frames=8, light_levels=12,
                     frames_per_level=8, auto_exposure=True)
    sweep = run_sweep(inst, plan, tmp_path / "a.rgsweep")
    used = sweep.plan["light_exposure_ms_used"]
    assert used > 100  # 50 photons/ms · 0.8 QE · 10 ms would stay far below the full well
    fit = fit_sweep(sweep)
    assert fit.emva.saturation_reached


def test_shutter_only_light_on_the_simulated_core(tmp_path):
    """Exposure-only sweep with a light that is only a shutter (a fixed source), through
    MMCore: level 0 closes the LED's shutter, any level > 0 opens it."""
    from rawgate.calibration.instruments import LightControl, MMCoreInstrument

    sim = SimulatedInstrument(seed=9, shape=(48, 48), max_photons_per_ms=500.0)
    sim.core.setProperty("LED", "Intensity", 100.0)
    inst = MMCoreInstrument(sim.core, LightControl(shutter="LED"), camera="Camera")
    inst.set_light(0.0)
    assert not sim.core.getShutterOpen("LED")
    plan = SweepPlan(dark_exposures_ms=(5.0, 50.0, 100.0), dark_frames=10, light_exposure_ms=100.0,
                     light_levels=10, frames_per_level=10, exposure_only=True)
    fit = fit_sweep(run_sweep(inst, plan, tmp_path / "s.rgsweep"))
    k_true = np.mean(1 / sim.truth.gain_e_per_adu**2) / np.mean(1 / sim.truth.gain_e_per_adu)
    assert fit.emva.system_gain_adu_per_e == pytest.approx(k_true, rel=0.02)


def test_sample_slot_is_an_mmcore_property():
    inst = SimulatedInstrument(seed=1, shape=(16, 16))
    core = inst.core
    assert core.getProperty("Camera", "Sample") == "flat field"
    assert "flat field" in core.getAllowedPropertyValues("Camera", "Sample")
    with pytest.raises(Exception):
        core.setProperty("Camera", "Sample", "no such sample")
