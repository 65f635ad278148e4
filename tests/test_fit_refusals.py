"""Sweeps that cannot support a fit are refused with the reason."""

from __future__ import annotations

import dataclasses

import pytest

from rawgate.calibration.fit import FitError, fit_sweep
from rawgate.calibration.instruments import SimulatedInstrument
from rawgate.calibration.sweep import SweepPlan, run_sweep


def test_no_dark_frames(tmp_path):
    inst = SimulatedInstrument(seed=2, shape=(32, 32))
    sweep = run_sweep(inst, SweepPlan(dark_exposures_ms=(), light_levels=6, frames_per_level=4), tmp_path / "s")
    with pytest.raises(FitError, match="no dark frames"):
        fit_sweep(sweep)


def test_dark_only(default_sweep):
    _, sweep, _ = default_sweep
    dark_only = dataclasses.replace(sweep, levels=sweep.darks)
    with pytest.raises(FitError, match="no light frames"):
        fit_sweep(dark_only)


def test_everything_saturated(tmp_path):
    inst = SimulatedInstrument(seed=2, shape=(32, 32), max_photons_per_ms=1e6)
    plan = SweepPlan(dark_exposures_ms=(10.0,), dark_frames=4, light_levels=6, frames_per_level=4)
    sweep = run_sweep(inst, plan, tmp_path / "s")
    with pytest.raises(FitError, match="saturated"):
        fit_sweep(sweep)


def test_too_few_levels(tmp_path):
    inst = SimulatedInstrument(seed=2, shape=(32, 32))
    plan = SweepPlan(dark_exposures_ms=(10.0,), dark_frames=4, light_levels=2, frames_per_level=4)
    sweep = run_sweep(inst, plan, tmp_path / "s")
    with pytest.raises(FitError, match="too few light levels"):
        fit_sweep(sweep)


def test_no_light_reaching_the_camera(tmp_path):
    inst = SimulatedInstrument(seed=2, shape=(32, 32), max_photons_per_ms=1e-9)
    plan = SweepPlan(dark_exposures_ms=(10.0,), dark_frames=4, light_levels=6, frames_per_level=4)
    sweep = run_sweep(inst, plan, tmp_path / "s")
    with pytest.raises(FitError, match="no light reaches"):
        fit_sweep(sweep)
