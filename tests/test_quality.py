"""Known-answer tests of the compression quality metrics.

Expected values come from the definitions (closed forms, hand-computed cases, an independent
re-implementation, or the statistics of simulated noise), never from a previous run.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.signal import correlate2d
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from rawgate.codecs import quality as q

W = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def smooth_image(shape, lo=500.0, hi=3500.0, seed=0, blur=3.0):
    """A smooth random 'specimen' spanning [lo, hi], float64."""
    rng = np.random.default_rng(seed)
    f = gaussian_filter(rng.normal(size=shape), blur)
    f = (f - f.min()) / (f.max() - f.min())
    return lo + (hi - lo) * f


# ---------------------------------------------------------------------------------- sizes


def test_ratio_and_space_saving_definitions():
    assert q.compression_ratio(1000, 250) == 4.0
    assert q.space_saving(1000, 250) == 0.75
    # expansion: ratio < 1, negative saving
    assert q.compression_ratio(100, 200) == 0.5
    assert q.space_saving(100, 200) == -1.0
    # saving = 1 - 1/ratio
    for o, c in [(8_388_608, 1_234_567), (3, 7), (10.5, 2.25)]:
        assert q.space_saving(o, c) == pytest.approx(1 - 1 / q.compression_ratio(o, c), rel=1e-15)


@pytest.mark.parametrize("o, c", [(0, 10), (10, 0), (-5, 10), (10, -1), (math.nan, 1),
                                  (1, math.inf), (True, 1), ("abc", 1), (None, 1)])
def test_sizes_must_be_positive(o, c):
    with pytest.raises(ValueError):
        q.compression_ratio(o, c)
    with pytest.raises(ValueError):
        q.space_saving(o, c)


# ---------------------------------------------------------------------------------- PSNR


def test_psnr_of_known_mse():
    ref = np.round(smooth_image((64, 80))).astype(np.uint16)
    d = 10
    sign = np.where((np.indices(ref.shape).sum(axis=0) % 2) == 0, 1, -1)
    test = (ref.astype(np.int64) + d * sign).astype(np.uint16)  # MSE = d² exactly
    assert q.psnr(ref, test) == pytest.approx(10 * math.log10(65535**2 / d**2), rel=1e-12)
    assert q.psnr(ref, test, bit_depth=12) == pytest.approx(20 * math.log10(4095 / d), rel=1e-12)
    assert q.psnr(ref, test, data_range=1000) == pytest.approx(40.0, rel=1e-12)
    # cross-check with scikit-image's PSNR (same definition)
    assert q.psnr(ref, test, bit_depth=12) == pytest.approx(
        peak_signal_noise_ratio(ref, test, data_range=4095), rel=1e-12)


def test_psnr_default_range_follows_integer_dtype():
    ref = np.zeros((4, 4), np.uint8)
    test = ref + np.uint8(1)  # MSE = 1
    assert q.psnr(ref, test) == pytest.approx(20 * math.log10(255))
    ref16 = np.zeros((4, 4), np.int16)
    assert q.psnr(ref16, ref16 + np.int16(1)) == pytest.approx(20 * math.log10(65535))


def test_psnr_identical_is_inf():
    ref = np.arange(12, dtype=np.uint16).reshape(3, 4)
    assert q.psnr(ref, ref.copy()) == math.inf


def test_psnr_range_arguments():
    ref = np.ones((4, 4))
    with pytest.raises(ValueError, match="data_range"):
        q.psnr(ref, ref * 2)  # float: no implied range
    with pytest.raises(ValueError):
        q.psnr(ref, ref * 2, data_range=1.0, bit_depth=8)
    for bad in (0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError):
            q.psnr(ref, ref * 2, data_range=bad)
    for bad in (0, 65, 12.5, True):
        with pytest.raises(ValueError):
            q.psnr(ref, ref * 2, bit_depth=bad)


def test_uint16_extremes_do_not_wrap():
    ref = np.array([[0, 65535], [65535, 0]], np.uint16)
    test = np.array([[65535, 0], [65535, 0]], np.uint16)
    # errors are +65535, -65535, 0, 0 (uint16 subtraction would wrap -65535 to 1)
    assert q.mean_error(ref, test) == 0.0
    assert q.psnr(ref, test) == pytest.approx(10 * math.log10(65535**2 / (2 * 65535**2 / 4)))
    full = np.full((3, 3), 65535, np.uint16)
    zero = np.zeros((3, 3), np.uint16)
    assert q.psnr(full, zero) == pytest.approx(0.0, abs=1e-12)
    assert q.mean_error(full, zero) == -65535.0
    assert q.mean_error(zero, full) == 65535.0


def test_mean_error_by_hand():
    ref = np.array([[5, 60000]], np.uint16)
    test = np.array([[3, 60010]], np.uint16)
    assert q.mean_error(ref, test) == 4.0  # (-2 + 10) / 2
    # stacks pool all pixels
    ref3 = np.zeros((3, 2, 2), np.uint16)
    test3 = np.stack([np.full((2, 2), k, np.uint16) for k in (1, 2, 6)])
    assert q.mean_error(ref3, test3) == 3.0


# ---------------------------------------------------------------------------------- SSIM


def test_ssim_identical_and_decreasing_with_noise():
    rng = np.random.default_rng(1)
    ref = np.round(smooth_image((96, 96))).astype(np.uint16)
    assert q.ssim(ref, ref.copy(), bit_depth=12) == pytest.approx(1.0, abs=1e-12)
    assert q.ms_ssim(ref, ref.copy(), bit_depth=12) == pytest.approx(1.0, abs=1e-12)
    noise = rng.normal(size=ref.shape)
    s, m = [], []
    for sd in (2, 10, 50, 250):
        test = np.clip(np.round(ref + sd * noise), 0, 65535).astype(np.uint16)
        s.append(q.ssim(ref, test, bit_depth=12))
        m.append(q.ms_ssim(ref, test, bit_depth=12))
    assert all(a > b for a, b in itertools.pairwise(s)), s
    assert all(a > b for a, b in itertools.pairwise(m)), m
    assert s[0] < 1 and m[0] < 1 and s[-1] > -1 and m[-1] >= 0


def luminance(a, b, L):
    C1 = (0.01 * L) ** 2
    return (2 * a * b + C1) / (a * a + b * b + C1)


def test_ssim_of_constant_images_is_the_luminance_term():
    # σ_x = σ_y = σ_xy = 0 -> contrast-structure = C2/C2 = 1, SSIM = l(a, b)
    a, b, L = 1000.0, 1100.0, 4095.0
    ref, test = np.full((20, 30), a), np.full((20, 30), b)
    assert q.ssim(ref, test, data_range=L) == pytest.approx(luminance(a, b, L), rel=1e-9)


@pytest.mark.parametrize(
    "side, n_scales", [(176, 5), (175, 5), (170, 5), (160, 4), (32, 2), (11, 1)]
)
def test_ms_ssim_of_constant_images(side, n_scales):
    # cs = 1 at every scale, luminance only at the coarsest: MS-SSIM = l(a, b) ** w_M, with the
    # weights renormalised over the usable scales when fewer than 5 fit (a scale needs ≥ 11 px;
    # sizes go ceil(n/2): 175 -> 88 -> 44 -> 22 -> 11, 160 -> 80 -> 40 -> 20 -> 10).
    a, b, L = 1000.0, 1100.0, 4095.0
    ref, test = np.full((side, side + 3), a), np.full((side, side + 3), b)
    w_last = W[n_scales - 1] if n_scales == 5 else W[n_scales - 1] / sum(W[:n_scales])
    expected = luminance(a, b, L) ** w_last
    assert q.ms_ssim(ref, test, data_range=L) == pytest.approx(expected, rel=1e-9)


def gaussian_kernel_11():
    x = np.arange(-5, 6, dtype=float)
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    return g / g.sum()


def naive_ms_ssim(x, y, L, weights):
    """Independent MS-SSIM: explicit 11×11 kernel, 'valid' correlation, loop-free 2×2 means
    via edge padding, and the product of per-scale terms written out from the paper."""
    k = gaussian_kernel_11()
    C1, C2 = (0.01 * L) ** 2, (0.03 * L) ** 2

    def filt(a):
        return correlate2d(a, k, mode="valid")

    terms = []
    for j in range(len(weights)):
        mx, my = filt(x), filt(y)
        sx = filt(x * x) - mx**2
        sy = filt(y * y) - my**2
        sxy = filt(x * y) - mx * my
        cs = (2 * sxy + C2) / (sx + sy + C2)
        if j == len(weights) - 1:
            terms.append(np.mean((2 * mx * my + C1) / (mx**2 + my**2 + C1) * cs))
        else:
            terms.append(np.mean(cs))
            x = np.pad(x, ((0, x.shape[0] % 2), (0, x.shape[1] % 2)), mode="edge")
            y = np.pad(y, ((0, y.shape[0] % 2), (0, y.shape[1] % 2)), mode="edge")
            h, w = x.shape
            x = x.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
            y = y.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    return float(np.prod([max(t, 0.0) ** wt for t, wt in zip(terms, weights, strict=True)]))


def test_ms_ssim_matches_independent_computation():
    rng = np.random.default_rng(2)
    ref = smooth_image((200, 190), blur=2.0)  # 200->100->50->25->13, 190->95->48->24->12: odd sizes
    test = ref + rng.normal(0, 60, ref.shape) + 40 * np.sin(np.arange(190) / 7.0)
    expected = naive_ms_ssim(ref, test, 4095.0, W)
    assert 0.3 < expected < 0.99  # a non-trivial case
    assert q.ms_ssim(ref, test, data_range=4095) == pytest.approx(expected, rel=1e-10)


def test_ms_ssim_single_scale_is_gaussian_ssim():
    rng = np.random.default_rng(3)
    ref = smooth_image((64, 48))
    test = ref + rng.normal(0, 80, ref.shape)
    sk = structural_similarity(ref, test, data_range=4095, gaussian_weights=True, sigma=1.5,
                               use_sample_covariance=False)
    assert q.ms_ssim(ref, test, data_range=4095, weights=(1.0,)) == pytest.approx(sk, rel=1e-10)
    # 12..21 px: only one scale fits, so the default weights reduce to this as well
    small_ref, small_test = ref[:21, :12], test[:21, :12]
    sk_small = structural_similarity(small_ref, small_test, data_range=4095, gaussian_weights=True,
                                     sigma=1.5, use_sample_covariance=False)
    assert q.ms_ssim(small_ref, small_test, data_range=4095) == pytest.approx(sk_small, rel=1e-10)


def test_ms_ssim_clips_negative_cs_to_zero():
    rng = np.random.default_rng(4)
    x = 0.5 + 0.2 * rng.normal(size=(64, 64))
    # test = 1 - x: σ_xy = -σ_x², so cs ≈ -1 at the finest scale, clipped to 0 -> product 0
    assert q.ms_ssim(x, 1.0 - x, data_range=1.0) == 0.0


def test_ms_ssim_weights_validation():
    x = smooth_image((32, 32))
    for bad in ((), (0.5, -0.1), (math.nan,), [[1.0]]):
        with pytest.raises(ValueError):
            q.ms_ssim(x, x, data_range=4095, weights=bad)


def test_stacks_are_mean_over_planes():
    rng = np.random.default_rng(5)
    ref = np.stack([smooth_image((40, 36), seed=s) for s in range(3)])
    test = ref + rng.normal(0, [[[20]], [[80]], [[200]]], ref.shape)
    per_plane = [
        structural_similarity(r, t, win_size=7, data_range=4095)
        for r, t in zip(ref, test, strict=True)
    ]
    assert q.ssim(ref, test, data_range=4095) == pytest.approx(np.mean(per_plane), rel=1e-12)
    ms_planes = [q.ms_ssim(r, t, data_range=4095) for r, t in zip(ref, test, strict=True)]
    assert q.ms_ssim(ref, test, data_range=4095) == pytest.approx(np.mean(ms_planes), rel=1e-12)
    # 4-D: all leading axes are planes
    ref4, test4 = ref.reshape(3, 1, 40, 36), test.reshape(3, 1, 40, 36)
    assert q.ssim(ref4, test4, data_range=4095) == pytest.approx(np.mean(per_plane), rel=1e-12)


@pytest.mark.parametrize("shape, win", [((3, 3), 3), ((4, 9), 3), ((6, 6), 5), ((5, 40), 5),
                                        ((7, 7), 7), ((30, 8), 7)])
def test_ssim_window_shrinks_for_small_images(shape, win):
    rng = np.random.default_rng(6)
    ref = rng.uniform(0, 1000, shape)
    test = ref + rng.normal(0, 50, shape)
    expected = structural_similarity(ref, test, win_size=win, data_range=4095)
    assert q.ssim(ref, test, data_range=4095) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (2, 50), (50, 1), (3, 1, 2)])
def test_tiny_images_do_not_crash(shape):
    ref = np.arange(math.prod(shape), dtype=np.uint16).reshape(shape)
    test = ref + np.uint16(1)
    assert math.isnan(q.ssim(ref, test))
    assert math.isnan(q.ms_ssim(ref, test))
    assert q.psnr(ref, test) == pytest.approx(20 * math.log10(65535))
    assert q.mean_error(ref, test) == 1.0
    r = q.quality_report(ref, test, original_nbytes=ref.nbytes, compressed_nbytes=1, sigma_adu=2.0)
    assert math.isnan(r.ssim) and math.isnan(r.ms_ssim)
    assert r.added_noise_sigma == pytest.approx(0.5)


def test_ms_ssim_nan_below_one_scale():
    x = smooth_image((10, 40))
    assert math.isnan(q.ms_ssim(x, x, data_range=4095))


def test_ssim_explicit_win_size():
    x = smooth_image((20, 20))
    y = x + 10
    assert q.ssim(x, y, data_range=4095, win_size=11) == pytest.approx(
        structural_similarity(x, y, win_size=11, data_range=4095), rel=1e-12)
    for bad in (4, 1, 21, 7.5):
        with pytest.raises(ValueError):
            q.ssim(x, y, data_range=4095, win_size=bad)


def test_ssim_needs_2d():
    with pytest.raises(ValueError):
        q.ssim(np.arange(10), np.arange(10), data_range=10)
    with pytest.raises(ValueError):
        q.ms_ssim(np.arange(10), np.arange(10), data_range=10)


# ---------------------------------------------------------------------------------- Pearson


def test_pearson_known_values():
    assert q.pearson(np.array([1, 2, 3]), np.array([1, 3, 2])) == pytest.approx(0.5, rel=1e-15)
    x = smooth_image((30, 40))
    assert q.pearson(x, 3.7 * x - 120.0) == pytest.approx(1.0, abs=1e-12)
    assert q.pearson(x, -0.5 * x + 9.0) == pytest.approx(-1.0, abs=1e-12)
    u = np.round(x).astype(np.uint16)
    v = (2 * u.astype(np.int64) + 7).astype(np.uint16)
    assert q.pearson(u, v) == pytest.approx(1.0, abs=1e-12)


def test_pearson_of_independent_noise_is_near_zero():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(2, 500, 400))
    # sd of r for independent samples is 1/sqrt(n) = 0.0022
    assert abs(q.pearson(a, b)) < 5 / math.sqrt(a.size)


def test_pearson_constant_is_nan():
    c = np.full((5, 5), 7, np.uint16)
    x = np.arange(25, dtype=np.uint16).reshape(5, 5)
    assert math.isnan(q.pearson(c, x))
    assert math.isnan(q.pearson(x, c))
    assert math.isnan(q.pearson(np.full(3, 0.1), np.array([0.3, 0.1, 0.2])))
    assert math.isnan(q.pearson(np.array([[4]]), np.array([[5]])))


# ---------------------------------------------------------------------------------- noise model


def test_sigma_from_model_by_hand():
    x = np.array([[150.0, 90.0, 100.0, 1100.0]])
    s = q.sigma_from_model_adu(x, offset_adu=100.0, gain_e_per_adu=2.0, read_noise_e=3.0)
    # 150: (50·2 = 100 e⁻ + 9) ; 90 and 100: no signal, read noise only ; 1100: 2000 e⁻
    np.testing.assert_allclose(s, [[math.sqrt(109) / 2, 1.5, 1.5, math.sqrt(2009) / 2]], rtol=1e-15)
    assert s.dtype == np.float64


def test_sigma_from_model_broadcasts_maps_over_stacks():
    offset = np.array([[100.0, 200.0]])
    gain = np.array([[1.0, 4.0]])
    rn = np.array([[0.0, 2.0]])
    stack = np.array([[[104.0, 201.0]], [[116.0, 200.0]]], dtype=np.uint16)  # (2, 1, 2)
    s = q.sigma_from_model_adu(stack, offset, gain, rn)
    np.testing.assert_allclose(s, [[[2.0, math.sqrt(8) / 4]], [[4.0, 0.5]]], rtol=1e-15)
    with pytest.raises(ValueError):
        q.sigma_from_model_adu(stack[0, 0], offset, gain, rn)  # maps bigger than the data
    with pytest.raises(ValueError):
        q.sigma_from_model_adu(stack, offset, np.array([[1.0, 0.0]]), rn)
    with pytest.raises(ValueError):
        q.sigma_from_model_adu(stack, offset, gain, -1.0)


def test_sigma_from_model_matches_simulated_camera():
    # Poisson–Gaussian camera: adu = offset + (Poisson(μ) + N(0, rn)) / g
    rng = np.random.default_rng(8)
    n_frames, offset, g, rn = 4000, 100.0, 0.5, 6.0
    mu_e = np.array([0.0, 10.0, 400.0, 5000.0])
    frames = offset + (rng.poisson(mu_e, (n_frames, 4)) + rng.normal(0, rn, (n_frames, 4))) / g
    empirical = frames.std(axis=0, ddof=1)
    model = q.sigma_from_model_adu(offset + mu_e / g, offset, g, rn)
    # relative sd of a sample std is 1/sqrt(2(n-1)) = 1.1 %
    np.testing.assert_allclose(empirical, model, rtol=5 / math.sqrt(2 * (n_frames - 1)))


def test_bias_in_sigma_of_added_constant():
    ref = np.round(smooth_image((40, 50))).astype(np.uint16)
    sigma = np.linspace(2.0, 10.0, 50)[None, :]  # broadcasts over rows
    c = 3
    up = ref + np.uint16(c)
    down = ref - np.uint16(c)
    mean_sigma = 6.0  # mean of the linspace
    assert q.bias_in_sigma(ref, up, sigma) == pytest.approx(c / mean_sigma, rel=1e-12)
    assert q.bias_in_sigma(ref, down, sigma) == pytest.approx(-c / mean_sigma, rel=1e-12)
    expected_rms = math.sqrt(np.mean((c / np.broadcast_to(sigma, ref.shape)) ** 2))
    assert q.added_noise_sigma(ref, down, sigma) == pytest.approx(expected_rms, rel=1e-12)
    # error = exactly 1 σ everywhere -> SNR halves -> 10·log10(2) dB
    cost = q.snr_cost_db(ref, ref + np.uint16(4), 4.0)
    assert cost == pytest.approx(10 * math.log10(2), rel=1e-12)
    assert q.bias_in_sigma(ref, ref, sigma) == 0.0
    assert q.added_noise_sigma(ref, ref, sigma) == 0.0
    assert q.snr_cost_db(ref, ref, sigma) == 0.0


def test_uniform_quantisation_with_step_two_sigma():
    # Quantising with step Δ = 2σ adds uniform error on [-σ, σ]: variance Δ²/12 = σ²/3, so
    # added_noise_sigma = 2/sqrt(12) and snr_cost = 10·log10(4/3) ≈ 1.249 dB, bias 0.
    rng = np.random.default_rng(9)
    shape = (1000, 1000)
    sigma = rng.uniform(2.0, 20.0, shape)  # per-pixel σ
    mean = rng.uniform(0.0, 1000.0, shape)  # signal spread over many steps
    ref = mean + sigma * rng.normal(size=shape)
    step = 2 * sigma
    test = step * np.round(ref / step)
    n = ref.size
    # sampling sd: z² with z ~ U(-1, 1) has var 4/45, so mean(z²) has sd sqrt(4/45/n) = 3e-4
    assert q.added_noise_sigma(ref, test, sigma) == pytest.approx(2 / math.sqrt(12), abs=2e-3)
    assert q.snr_cost_db(ref, test, sigma) == pytest.approx(10 * math.log10(4 / 3), abs=0.01)
    assert abs(q.mean_error(ref, test) / sigma.mean()) < 5 * math.sqrt(1 / 3 / n) * 2
    assert abs(q.bias_in_sigma(ref, test, sigma)) < 0.005


def test_sigma_metrics_on_stacks_with_plane_sigma():
    ref = np.zeros((4, 3, 5), np.uint16)
    test = ref + np.arange(1, 5, dtype=np.uint16)[:, None, None]  # errors 1..4 per plane
    sigma = np.full((3, 5), 2.0)
    assert q.bias_in_sigma(ref, test, sigma) == pytest.approx(2.5 / 2.0)
    rms = math.sqrt((1 + 4 + 9 + 16) / 4) / 2
    assert q.added_noise_sigma(ref, test, sigma) == pytest.approx(rms)


@pytest.mark.parametrize("fn", [q.bias_in_sigma, q.added_noise_sigma, q.snr_cost_db])
def test_sigma_validation(fn):
    x = np.ones((4, 4))
    for bad in (0.0, -1.0, math.nan, math.inf, np.array([[1.0, 0.0, 1.0, 1.0]])):
        with pytest.raises(ValueError):
            fn(x, x, bad)
    with pytest.raises(ValueError):
        fn(x, x, np.ones((3, 4)))  # does not broadcast
    with pytest.raises(ValueError):
        fn(x, x, np.ones((2, 4, 4)))  # more planes than the data


# ---------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("fn", [
    lambda a, b: q.psnr(a, b, data_range=1.0),
    lambda a, b: q.ssim(a, b, data_range=1.0),
    lambda a, b: q.ms_ssim(a, b, data_range=1.0),
    q.pearson,
    q.mean_error,
    lambda a, b: q.bias_in_sigma(a, b, 1.0),
    lambda a, b: q.added_noise_sigma(a, b, 1.0),
    lambda a, b: q.snr_cost_db(a, b, 1.0),
    lambda a, b: q.quality_report(a, b, original_nbytes=10, compressed_nbytes=5, data_range=1.0),
])
def test_mismatched_shapes_raise(fn):
    with pytest.raises(ValueError, match="shape"):
        fn(np.zeros((20, 20)), np.zeros((20, 21)))
    with pytest.raises(ValueError):
        fn(np.zeros((2, 20, 20)), np.zeros((20, 20)))
    with pytest.raises(ValueError):
        fn(np.zeros((0, 20)), np.zeros((0, 20)))


# ---------------------------------------------------------------------------------- report


def test_quality_report_fills_every_field():
    rng = np.random.default_rng(10)
    ref = np.round(smooth_image((64, 64))).astype(np.uint16)
    test = np.clip(np.round(ref + rng.normal(0, 8, ref.shape)), 0, 4095).astype(np.uint16)
    sigma = q.sigma_from_model_adu(ref, 100.0, 2.0, 3.0)
    r = q.quality_report(ref, test, original_nbytes=ref.nbytes, compressed_nbytes=2048,
                         sigma_adu=sigma, bit_depth=12)
    assert r.compression_ratio == ref.nbytes / 2048
    assert r.space_saving == 1 - 2048 / ref.nbytes
    assert r.data_range == 4095.0
    assert r.psnr_db == q.psnr(ref, test, bit_depth=12)
    assert r.ssim == q.ssim(ref, test, bit_depth=12)
    assert r.ms_ssim == q.ms_ssim(ref, test, bit_depth=12)
    assert r.pearson == q.pearson(ref, test)
    assert r.mean_error == q.mean_error(ref, test)
    assert r.bias_in_sigma == pytest.approx(q.bias_in_sigma(ref, test, sigma), rel=1e-15)
    assert r.added_noise_sigma == pytest.approx(q.added_noise_sigma(ref, test, sigma), rel=1e-15)
    assert r.snr_cost_db == pytest.approx(q.snr_cost_db(ref, test, sigma), rel=1e-15)
    d = r.to_dict()
    assert set(d) == {
        "original_nbytes", "compressed_nbytes", "compression_ratio", "space_saving", "data_range",
        "psnr_db", "ssim", "ms_ssim", "pearson", "mean_error", "bias_in_sigma",
        "added_noise_sigma", "snr_cost_db",
    }
    assert all(type(v) in (int, float) for v in d.values()), {k: type(v) for k, v in d.items()}
    json.dumps(d)


def test_quality_report_without_sigma_and_lossless():
    ref = np.round(smooth_image((32, 32))).astype(np.uint16)
    r = q.quality_report(ref, ref.copy(), original_nbytes=2048, compressed_nbytes=1024)
    assert r.bias_in_sigma is None and r.added_noise_sigma is None and r.snr_cost_db is None
    assert r.data_range == 65535.0
    assert r.psnr_db == math.inf
    assert r.ssim == pytest.approx(1.0, abs=1e-12) and r.ms_ssim == pytest.approx(1.0, abs=1e-12)
    assert r.pearson == pytest.approx(1.0, abs=1e-12) and r.mean_error == 0.0
    assert r.to_dict()["snr_cost_db"] is None
    with pytest.raises(ValueError):
        q.quality_report(ref, ref, original_nbytes=0, compressed_nbytes=10)
    with pytest.raises(ValueError):
        q.quality_report(ref, ref, original_nbytes=10.5, compressed_nbytes=10)
    with pytest.raises(ValueError):
        q.quality_report(ref.astype(float), ref, original_nbytes=10, compressed_nbytes=10)
