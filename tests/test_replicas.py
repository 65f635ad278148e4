"""Replicas follow the model: per-pixel mean and variance over many replicas (statistically)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from rawgate.calibration.model import ModelMismatchError
from rawgate.calibration.replicas import replicas
from rawgate.calibration.simulation import flat_field


def _scene(model, rng):
    """Dark background, mid-level and bright structures, and a few saturated pixels."""
    h, w = model.shape
    e = 5.0 + 3000.0 * flat_field((h, w), 0.5) * (rng.random((h, w)) > 0.5)
    raw = model.offset_adu + e / model.gain_e_per_adu
    raw = np.clip(np.rint(raw), 0, 65535).astype(np.uint16)
    raw[:2, :2] = 65535
    return raw


def test_mean_and_variance_match_the_model(default_model):
    rng = np.random.default_rng(0)
    m = default_model
    raw = _scene(m, rng)
    n = 400
    r = replicas(raw, m, n=n, seed=1).astype(np.float64)
    assert r.shape == (n, *raw.shape)
    lam = np.maximum((raw - m.offset_adu.astype(np.float64)) * m.gain_e_per_adu, 0)
    var_pred = (lam + m.read_noise_e.astype(np.float64) ** 2) / m.gain_e_per_adu.astype(np.float64) ** 2 + 1 / 12
    sat = raw == 65535
    assert (r[:, sat] == 65535).all()
    ok = ~sat
    # mean: z-scores of the replica means against the raw value are standard normal
    z = (r.mean(0) - raw)[ok] / np.sqrt(var_pred[ok] / n)
    assert abs(z.mean()) < 0.05 and z.std() == pytest.approx(1.0, abs=0.05)
    # variance: (n-1)·s²/σ² is chi² with n-1 dof; its mean matches and a KS test does not reject
    ratio = r.var(0, ddof=1)[ok] / var_pred[ok]
    assert ratio.mean() == pytest.approx(1.0, abs=0.01)
    ks = stats.kstest((n - 1) * ratio[:2000], stats.chi2(n - 1).cdf)
    assert ks.pvalue > 1e-3


def test_seeded_and_3d(default_model):
    raw = np.full((3, *default_model.shape), 400, np.uint16)
    a = replicas(raw, default_model, n=4, seed=7)
    b = replicas(raw, default_model, n=4, seed=7)
    c = replicas(raw, default_model, n=4, seed=8)
    assert a.shape == (4, 3, *default_model.shape) and a.dtype == np.uint16
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[0, 0], a[0, 1])  # planes get independent noise


def test_mismatch_is_refused(default_model):
    with pytest.raises(ModelMismatchError):
        replicas(np.zeros((10, 10), np.uint16), default_model, n=2)


@pytest.mark.parametrize("scale", [0.02, 1.0])  # ≈ 16 and 800 photo-electrons of signal
def test_replicas_around_the_estimate_are_one_camera_noise_from_the_truth(scale):
    """The paper's replicas (around raw) scatter around the true mean by twice the camera
    variance; around the denoised estimate they come close to a second acquisition's one, and
    stay unbiased (truth: the mean of 64 repeated acquisitions of the same scene)."""
    from rawgate.calibration import scenes
    from rawgate.calibration.replicas import estimate_mean
    from rawgate.calibration.simulation import make_sensor_truth, render_frames, truth_noise_model

    truth = make_sensor_truth((128, 128), seed=2)
    model = truth_noise_model(truth)
    sc = scenes.microspheres((128, 128), seed=1)
    frames = render_frames(truth, sc.flux * scale, sc.exposure_ms, 65, np.random.default_rng(0)).astype(np.float64)
    mean, var = frames[1:].mean(0), frames[1:].var(0, ddof=1).mean()
    raw = frames[0].astype(np.uint16)
    spread = {}
    for mode in ("raw", "estimate"):
        r = replicas(raw, model, n=10, seed=1, around=mode).astype(np.float64)
        spread[mode] = ((r - mean) ** 2).mean() / var
        assert abs((r.mean(0) - mean).mean()) < 0.05 * np.sqrt(var), mode
    assert 1.85 < spread["raw"] < 2.15, spread
    assert spread["estimate"] < 1.45 and spread["estimate"] < spread["raw"] - 0.5, spread
    est = estimate_mean(raw, model)
    assert est.shape == raw.shape and ((est - mean) ** 2).mean() < 0.45 * var
    with pytest.raises(ValueError, match="around"):
        replicas(raw, model, n=3, around="truth")
