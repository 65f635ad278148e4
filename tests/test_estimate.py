"""Noise models estimated from image data, checked against the simulated sensor's known truth.

The truth of the variance law is computed from the simulated sensor's maps and the known photon
flux, pixel by pixel (expected ADU and expected temporal variance, incl. ADC rounding), over the
pixels without a planted "noisy" defect (their excess read noise follows no law), and fitted by
least squares: that is the law var = a·μ + b the camera and scene produce.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import ndimage

from rawgate.calibration.estimate import (
    EstimateError,
    estimate_from_frames,
    estimate_from_image,
    estimate_noise_model,
)
from rawgate.calibration.instruments._protocol import CameraIdentity
from rawgate.calibration.model import NoiseModel
from rawgate.calibration.simulation import (
    DEFECT_NOISY,
    SensorTruth,
    make_sensor_truth,
    render_frames,
)

EXPOSURE_MS = 10.0


# ---------------------------------------------------------------------------- helpers
def blob_scene(shape, rng, peak: float, n: int = 25, blur: float = 7.0) -> np.ndarray:
    """Photon flux [photons/ms]: gaussian-blurred random blobs on a dark background."""
    img = np.zeros(shape)
    img[rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)] = rng.uniform(0.3, 1.0, n)
    img = ndimage.gaussian_filter(img, blur)
    return img / img.max() * peak


def cell_scene(shape, rng, peak: float, n: int = 25, spots: int = 150) -> np.ndarray:
    """Photon flux with sharp-edged rectangles ("cells") and single-pixel bright spots."""
    img = np.zeros(shape)
    for _ in range(n):
        y0, x0 = rng.integers(0, min(shape) - 40, 2)
        h, w = rng.integers(10, 40, 2)
        img[y0 : y0 + h, x0 : x0 + w] += rng.uniform(0.2, 1.0)
    img[rng.integers(0, shape[0], spots), rng.integers(0, shape[1], spots)] += rng.uniform(0.5, 3, spots)
    img = ndimage.gaussian_filter(img, 1.0)
    return img / img.max() * peak


def expected(truth: SensorTruth, flux: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel expected value [ADU] and expected temporal variance [ADU², incl. rounding]."""
    e = (
        truth.quantum_efficiency * truth.relative_qe * np.broadcast_to(flux, truth.shape) * EXPOSURE_MS
        + truth.dark_current_e_per_s * EXPOSURE_MS / 1000.0
    )
    g = truth.gain_e_per_adu
    return truth.offset_adu + e / g, e / g**2 + (truth.read_noise_e / g) ** 2 + 1.0 / 12.0


def true_law(truth: SensorTruth, flux: np.ndarray | float) -> tuple[float, float]:
    """(a [ADU/e-], b [ADU²]): least-squares line of expected variance against expected value
    over the pixels without a planted noisy defect."""
    mean, var = expected(truth, flux)
    ok = truth.defects != DEFECT_NOISY
    a, b = np.polyfit(mean[ok], var[ok], 1)
    return float(a), float(b)


def true_dark(truth: SensorTruth, flux: np.ndarray) -> tuple[float, float]:
    """(mean [ADU], mean variance [ADU²]) of the background (flux < 1 % of the peak), noisy
    defects excluded: the variance at the dark end (the line above is a fit over all levels)."""
    mean, var = expected(truth, flux)
    ok = (truth.defects != DEFECT_NOISY) & (flux < 0.01 * flux.max())
    return float(mean[ok].mean()), float(var[ok].mean())


def flat_field_system_gain(truth: SensorTruth) -> float:
    """K [ADU/e-] a flat field measures on this sensor (as simulation.compare_to_truth)."""
    inv = 1.0 / truth.gain_e_per_adu[truth.defects == 0]
    return float(np.mean(inv**2) / np.mean(inv))


def render(truth, flux, n, seed):
    return render_frames(truth, flux, EXPOSURE_MS, n, np.random.default_rng(seed))


# ---------------------------------------------------------------------------- frame pairs
@pytest.mark.parametrize("seed", [1, 2])
def test_frame_pairs_recover_gain_and_variance_law(seed):
    # the default simulated sCMOS: 3 % gain spread, offset spread, 2 % noisy + 1 % hot pixels
    truth = make_sensor_truth((128, 128), seed=seed)
    flux = blob_scene(truth.shape, np.random.default_rng(seed), peak=500.0)
    frames = render(truth, flux, 16, seed + 100)
    res = estimate_from_frames(frames)

    a_true, b_true = true_law(truth, flux)
    assert res.method == "frame-pairs"
    assert res.a_adu == pytest.approx(a_true, rel=0.03)
    assert res.gain_e_per_adu == pytest.approx(1.0 / flat_field_system_gain(truth), rel=0.03)
    # the variance law: at the dark background, and up to near the brightest level
    dark_mu, dark_var = true_dark(truth, flux)
    assert res.variance(dark_mu) == pytest.approx(dark_var, rel=0.05)
    mu = np.array([dark_mu + 200, dark_mu + 2000, np.percentile(frames, 99.9)])
    np.testing.assert_allclose(res.variance(mu), a_true * mu + b_true, rtol=0.04)
    # honest uncertainty: the truth lies within a few standard errors
    assert abs(res.a_adu - a_true) < 5 * res.a_stderr + 0.005 * a_true
    # the bins are there for plotting and lie on the law
    assert res.n_bins >= 10
    assert res.bin_means.shape == res.bin_variances.shape == res.bin_counts.shape == res.bin_weights.shape
    assert np.all(np.diff(res.bin_means) > 0)
    good = (res.bin_weights > 0.9) & (res.bin_means > dark_mu + 100)
    assert good.sum() >= 5
    np.testing.assert_allclose(
        res.bin_variances[good], a_true * res.bin_means[good] + b_true, rtol=0.15, atol=1.0
    )
    # planted noisy pixels are the ones left out
    assert any("implausible temporal variance" in n for n in res.notes)


def test_frame_pairs_read_noise_with_the_true_offset():
    truth = make_sensor_truth((128, 128), seed=5)
    flux = blob_scene(truth.shape, np.random.default_rng(5), peak=300.0)
    frames = render(truth, flux, 16, 6)
    offset = float(np.median(truth.offset_adu))
    res = estimate_from_frames(frames, offset_adu=offset)
    assert res.offset_adu == offset and res.offset_source == "given"
    good = truth.defects == 0
    # temporal dark noise of a typical pixel, incl. ADC rounding, in electrons
    rn_true = float(np.sqrt(np.mean((truth.read_noise_e / truth.gain_e_per_adu)[good] ** 2) + 1 / 12)) * float(
        np.mean(truth.gain_e_per_adu[good])
    )
    assert res.read_noise_e == pytest.approx(rn_true, rel=0.08)
    # the documented identity: offset and read noise reproduce the fitted law exactly
    assert res.read_noise_e == pytest.approx(res.gain_e_per_adu * np.sqrt(res.b_adu2 + res.a_adu * offset))
    # without an offset, the dark level of the data is used (the scene has a dark background,
    # with a little stray light: the estimate may lie slightly above the camera's offset)
    est = estimate_from_frames(frames)
    assert offset - 0.5 < est.offset_adu < offset + 2.0
    assert est.offset_source.startswith("estimated")


def test_frame_pairs_survive_clipping_at_the_adc_maximum():
    truth = make_sensor_truth((96, 96), seed=8, bit_depth=12)
    flux = blob_scene(truth.shape, np.random.default_rng(8), peak=400.0)  # peaks clip at 4095
    frames = render(truth, flux, 12, 9)
    assert (frames == 4095).mean() > 0.01
    res = estimate_from_frames(frames, bit_depth=12)
    a_true, _ = true_law(truth, flux)  # the law of the unclipped sensor
    assert res.a_adu == pytest.approx(a_true, rel=0.04)
    assert res.bin_means.max() + 4 * np.sqrt(res.variance(res.bin_means.max())) < 4095
    assert res.bit_depth == 12


def test_frame_pairs_memory_bound_still_accurate():
    truth = make_sensor_truth((128, 128), seed=3)
    flux = blob_scene(truth.shape, np.random.default_rng(3), peak=500.0)
    frames = render(truth, flux, 10, 4)
    res = estimate_from_frames(frames, max_samples=40_000)
    assert any("memory bound" in n for n in res.notes)
    assert res.n_samples < 40_000
    assert res.a_adu == pytest.approx(true_law(truth, flux)[0], rel=0.05)


def test_single_image_is_fooled_by_fixed_pattern_noise_frame_pairs_are_not():
    """The default sensor's 3 % per-pixel gain spread is spatial noise ∝ μ in one image."""
    truth = make_sensor_truth((128, 128), seed=4)
    flux = blob_scene(truth.shape, np.random.default_rng(4), peak=800.0)
    frames = render(truth, flux, 8, 5)
    a_true, _ = true_law(truth, flux)
    assert estimate_from_frames(frames).a_adu == pytest.approx(a_true, rel=0.03)
    single = estimate_from_image(frames[0])
    assert single.a_adu > 1.1 * a_true
    assert any("fixed-pattern" in n for n in single.notes)


# ---------------------------------------------------------------------------- single image
def realistic_sensor(seed: int, shape=(256, 256)) -> SensorTruth:
    """An sCMOS sensor with fixed-pattern noise as data sheets give it (PRNU ≈ 0.3 %: gain and
    QE spread 0.2 % each; offset spread 0.5 ADU), 0.5 % noisy pixels and the default read
    noise, dark current and 1 % hot pixels. (The default simulated sensor's 3 % gain spread is
    far above that; see the fixed-pattern test above.)"""
    return make_sensor_truth(
        shape, seed=seed, gain_spread=0.002, prnu=0.002, offset_spread_adu=0.5, noisy_fraction=0.005
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_single_image_recovers_gain_on_a_smooth_scene(seed):
    truth = realistic_sensor(seed)
    flux = blob_scene(truth.shape, np.random.default_rng(seed), peak=150.0)
    image = render(truth, flux, 1, seed + 50)[0]
    res = estimate_from_image(image)
    a_true, b_true = true_law(truth, flux)
    assert res.method == "single-image"
    assert res.gain_e_per_adu == pytest.approx(1.0 / a_true, rel=0.10)
    assert res.gain_e_per_adu == pytest.approx(1.0 / flat_field_system_gain(truth), rel=0.10)
    mu = np.array([300.0, 1000.0, 2000.0])
    np.testing.assert_allclose(res.variance(mu), a_true * mu + b_true, rtol=0.10)
    # the dark level of the dark background, and the read noise from it
    assert res.offset_adu == pytest.approx(np.median(truth.offset_adu), abs=3.0)
    assert 0.7 < res.read_noise_e / np.median(truth.read_noise_e) < 1.3


def test_single_image_rejects_edges_and_spots():
    truth = realistic_sensor(3)
    flux = cell_scene(truth.shape, np.random.default_rng(3), peak=300.0)
    image = render(truth, flux, 1, 33)[0]
    res = estimate_from_image(image)
    a_true, _ = true_law(truth, flux)
    assert res.a_adu == pytest.approx(a_true, rel=0.10)
    # the smoothness tests removed a real share of the blocks (edges, spots, defects)
    assert res.n_samples < 0.85 * (image.shape[0] - 6) * (image.shape[1] - 6)


def test_single_image_pools_the_planes_of_a_stack():
    truth = realistic_sensor(6, shape=(128, 128))
    rng = np.random.default_rng(6)
    fluxes = [blob_scene(truth.shape, rng, peak=p) for p in (80.0, 150.0, 250.0)]
    stack = np.stack([render(truth, f, 1, 60 + i)[0] for i, f in enumerate(fluxes)])
    res = estimate_from_image(stack)
    one = estimate_from_image(stack[0])
    assert res.n_samples > 2.5 * one.n_samples
    a_true = np.mean([true_law(truth, f)[0] for f in fluxes])
    assert res.a_adu == pytest.approx(a_true, rel=0.10)
    assert res.a_stderr < one.a_stderr
    assert res.frame_shape == (128, 128)


# ---------------------------------------------------------------------------- the NoiseModel
@pytest.fixture(scope="module")
def frames_and_result():
    truth = make_sensor_truth((64, 80), seed=12)
    flux = blob_scene(truth.shape, np.random.default_rng(12), peak=400.0, blur=5.0)
    frames = render(truth, flux, 12, 13)
    return frames, estimate_from_frames(frames)


def test_noise_model_is_flagged_estimated_and_saves_and_loads(frames_and_result, tmp_path):
    frames, res = frames_and_result
    model = res.to_noise_model()
    assert isinstance(model, NoiseModel)
    assert model.estimated is True
    assert model.source.startswith("estimated: frame-pairs")
    assert model.dark_current_e_per_s is None
    assert model.shape == (64, 80) and not model.bad_pixels.any()
    np.testing.assert_allclose(model.gain_e_per_adu, res.gain_e_per_adu, rtol=1e-6)
    np.testing.assert_allclose(model.offset_adu, res.offset_adu, rtol=1e-6)
    np.testing.assert_allclose(model.read_noise_e, res.read_noise_e, rtol=1e-6)
    # the uniform maps reproduce the fitted law: a(μ − offset) + rn²/g² = aμ + b
    g, off, rn = (float(model.gain_e_per_adu[0, 0]), float(model.offset_adu[0, 0]), float(model.read_noise_e[0, 0]))
    for mu in (off + 10, off + 1000):
        assert (mu - off) / g + (rn / g) ** 2 == pytest.approx(res.variance(mu), rel=1e-4)
    ident = model.identity
    assert ident.name == "unknown (estimated)"
    assert ident.serial == "estimated-" + res.data_sha256[:12]
    assert ident.bit_depth == 16 and ident.binning == 1 and ident.roi == (0, 0, 80, 64)
    model.check_frame(frames[0])  # the data it came from match it

    path = model.save(tmp_path / "est.rgnoise")
    back = NoiseModel.load(path)
    assert back.estimated is True
    assert back.source == model.source
    assert back.identity == ident
    np.testing.assert_array_equal(back.gain_e_per_adu, model.gain_e_per_adu)
    assert back.fit_quality["method"] == "frame-pairs"
    assert back.fit_quality["a_adu"] == pytest.approx(res.a_adu)
    assert back.sha256 == model.sha256


def test_identity_names_the_data(frames_and_result):
    frames, res = frames_and_result
    again = estimate_from_frames(frames.copy())
    assert again.data_sha256 == res.data_sha256
    h = hashlib.sha256()
    h.update(f"{frames.dtype.str}{frames.shape}".encode())
    h.update(frames.tobytes())
    assert res.data_sha256 == h.hexdigest()
    other = frames.copy()
    other[0, 0, 0] += 1
    assert estimate_from_frames(other).data_sha256 != res.data_sha256


def test_to_noise_model_with_identity_and_shape(frames_and_result):
    _, res = frames_and_result
    cam = CameraIdentity(name="ORCA", serial="42", bit_depth=16, binning=1, roi=(0, 0, 80, 64))
    assert res.to_noise_model(identity=cam).identity == cam
    big = res.to_noise_model((128, 256))
    assert big.shape == (128, 256) and big.identity.roi == (0, 0, 256, 128)


def test_estimate_noise_model_convenience(frames_and_result):
    frames, res = frames_and_result
    m = estimate_noise_model(frames, time_series=True)
    assert m.estimated and m.source.startswith("estimated: frame-pairs")
    assert float(m.gain_e_per_adu[0, 0]) == pytest.approx(res.gain_e_per_adu, rel=1e-6)
    truth = realistic_sensor(9, shape=(96, 96))
    image = render(truth, blob_scene(truth.shape, np.random.default_rng(9), peak=200.0, blur=5.0), 1, 90)[0]
    m1 = estimate_noise_model(image, offset_adu=100.0)
    assert m1.source.startswith("estimated: single-image")
    assert float(m1.offset_adu[0, 0]) == 100.0


# ---------------------------------------------------------------------------- refusals
def test_refusals_say_why():
    truth = make_sensor_truth((64, 64), seed=2)
    flat = render(truth, 50.0, 6, 3)
    with pytest.raises(EstimateError, match="no intensity range"):
        estimate_from_image(flat[0])  # a flat field: one intensity only
    with pytest.raises(EstimateError, match="no intensity range"):
        estimate_from_frames(flat)
    with pytest.raises(EstimateError, match="no intensity range"):
        estimate_from_image(np.full((64, 64), 100, np.uint16))
    with pytest.raises(EstimateError, match="integer"):
        estimate_from_image(flat[0].astype(np.float32))
    with pytest.raises(EstimateError, match="integer"):
        estimate_from_frames(flat > 100)
    with pytest.raises(EstimateError, match="2-D or 3-D"):
        estimate_from_image(flat[0, 0])
    with pytest.raises(EstimateError, match="3-D"):
        estimate_from_frames(flat[0])
    with pytest.raises(EstimateError, match="at least 2 frames"):
        estimate_from_frames(flat[:1])
    with pytest.raises(EstimateError, match="negative"):
        estimate_from_image(flat[0].astype(np.int32) - 2000)
    with pytest.raises(EstimateError, match="at least 16 px"):
        estimate_from_image(flat[0, :8, :8])
    assert flat.max() > 255
    with pytest.raises(EstimateError, match="above the 8-bit range"):
        estimate_from_image(flat[0], bit_depth=8)
    assert issubclass(EstimateError, ValueError)


def test_refuses_noise_that_does_not_grow_with_intensity():
    """A processed image (here: noise shrinking towards bright) has no Poisson–Gaussian law."""
    rng = np.random.default_rng(0)
    mean = 100.0 + 20.0 * np.mgrid[0:128, 0:128][1]
    img = np.rint(mean + (30.0 - 0.009 * mean) * rng.standard_normal(mean.shape)).astype(np.uint16)
    with pytest.raises(EstimateError, match="non-positive slope"):
        estimate_from_image(img)

