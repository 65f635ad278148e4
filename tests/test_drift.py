"""Drift between calibrations of the same camera."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rawgate.calibration.drift import DriftTolerances, compare_models
from rawgate.calibration.fit import fit_sweep
from rawgate.calibration.model import ModelMismatchError, NoiseModel
from rawgate.calibration.sweep import SweepPlan, run_sweep


def test_recalibrating_the_same_camera_is_in_tolerance(tmp_path, default_sweep, default_model):
    inst, _, _ = default_sweep
    inst.scope.rng = np.random.default_rng(999)  # a later calibration: new noise, same sensor
    sweep = run_sweep(inst, SweepPlan(), tmp_path / "again.rgsweep")
    again = NoiseModel.from_fit(fit_sweep(sweep), sweep.identity)
    rep = compare_models(default_model, again)
    assert rep.in_tolerance, rep.failures
    assert abs(rep.gain_rel_change) < 0.01


def test_changes_beyond_tolerance_are_reported(default_model):
    bad = default_model.bad_pixels.copy()
    bad.flat[:100] |= 1
    drifted = dataclasses.replace(
        default_model,
        gain_e_per_adu=default_model.gain_e_per_adu * 1.05,
        read_noise_e=default_model.read_noise_e * 1.3,
        offset_adu=default_model.offset_adu + 3,
        bad_pixels=bad,
    )
    rep = compare_models(default_model, drifted, DriftTolerances())
    assert not rep.in_tolerance
    text = " ".join(rep.failures)
    for word in ("gain", "read noise", "offset", "new bad pixels"):
        assert word in text
    assert rep.gain_rel_change == pytest.approx(0.05, rel=1e-3)


def test_different_cameras_cannot_be_compared(default_model):
    other = dataclasses.replace(default_model, identity=dataclasses.replace(default_model.identity, serial="OTHER"))
    with pytest.raises(ModelMismatchError, match="serial"):
        compare_models(default_model, other)
