"""Shared fixtures: real simulated sweeps through UniMMCore, built once per session."""

from __future__ import annotations

import pytest

from rawgate.calibration.fit import fit_sweep
from rawgate.calibration.instruments import SimulatedInstrument
from rawgate.calibration.model import NoiseModel
from rawgate.calibration.sweep import SweepPlan, run_sweep


@pytest.fixture(scope="session")
def default_sweep(tmp_path_factory):
    """The default sweep plan on a 128² simulated sensor (per-pixel statistics do not depend
    on sensor size; 128² keeps the suite fast)."""
    inst = SimulatedInstrument(seed=11, shape=(128, 128))
    path = tmp_path_factory.mktemp("sweep") / "default.rgsweep"
    sweep = run_sweep(inst, SweepPlan(), path)
    return inst, sweep, path


@pytest.fixture(scope="session")
def default_fit(default_sweep):
    inst, sweep, _ = default_sweep
    return fit_sweep(sweep)


@pytest.fixture(scope="session")
def default_model(default_sweep, default_fit):
    _, sweep, _ = default_sweep
    return NoiseModel.from_fit(default_fit, sweep.identity)


@pytest.fixture(scope="session")
def small_plan():
    return SweepPlan(dark_exposures_ms=(10.0, 100.0, 300.0), dark_frames=12, light_levels=10, frames_per_level=12)
