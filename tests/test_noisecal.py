"""The noise-calibrated codec's statistical guarantees, measured on simulated camera data.

Flat fields of known mean are rendered through the simulated sCMOS camera (Poisson photons, read
noise, per-pixel offset and gain, ADC rounding) at ten signal levels from dark to 80 % of full
well, coded with ``noisecal`` built from a noise model holding the simulator's true maps, and the
decoded frames compared with the raw ones. Every expectation is the codec's design rule:

* subtractive dither ⇒ the error in the stabilised domain is uniform on [−step/2, step/2],
  independent of the signal; the inverse's curvature correction ⇒ no bias (mean error ≤ 0.01 σ);
* added noise = step/√12 in units of the noise σ (plus the final rounding to integer ADU, whose
  variance is 1/12 ADU²), so the SNR cost is 10·log10(1 + step²/12) dB;
* the dither is uniform on [−½, ½), differs between seeds, and decoding is deterministic.

Sample sizes are chosen so that sampling noise is well below each tolerance (stated per test).
"""

from __future__ import annotations

import numpy as np
import pytest
from rawgate.calibration.instruments._protocol import CameraIdentity
from rawgate.calibration.model import NoiseModel
from rawgate.calibration.simulation import make_sensor_truth, render_frames
from rawgate.codecs import NoiseCal, decode_any, get_codec
from rawgate.codecs import _vst_kernels as K
from rawgate.codecs._stream import peek_header, unpack
from scipy import stats

H = W = 256
N_FRAMES = 4  # 256² × 4 = 262 144 pixels per level
EXPOSURE_MS = 10.0
STEPS = (1.0, 2.0, 3.0)
#: mean signal [e-] of the flat fields: dark, the low-signal range around the read noise, and up
#: to 80 % of the simulated full well (30 000 e-; the last level is computed from the truth)
LEVELS_E = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0, 400.0, 1500.0, 6000.0, None)


def model_of(truth, *, bad_pixels=None) -> NoiseModel:
    h, w = truth.shape
    sat = min(truth.adc_max,
              float(np.median(truth.offset_adu) + truth.full_well_e / np.median(truth.gain_e_per_adu)))
    return NoiseModel(
        identity=CameraIdentity("sim", truth.serial, truth.bit_depth, 1, (0, 0, w, h)),
        offset_adu=truth.offset_adu, gain_e_per_adu=truth.gain_e_per_adu,
        read_noise_e=truth.read_noise_e, dark_current_e_per_s=None,
        bad_pixels=(truth.defects > 0).astype(np.uint8) if bad_pixels is None else bad_pixels,
        emva={"saturation_adu": sat},
    )


def sigma_adu(model: NoiseModel, x: np.ndarray) -> np.ndarray:
    """Noise σ [ADU] at raw value x: sqrt(max((x − offset)·gain, 0) + read_noise² + gain²/12)/gain."""
    g = model.gain_e_per_adu.astype(np.float64)
    o = model.offset_adu.astype(np.float64)
    rn = model.read_noise_e.astype(np.float64)
    return np.sqrt(np.maximum((x - o) * g, 0.0) + rn**2 + g**2 / 12.0) / g


@pytest.fixture(scope="module")
def camera():
    truth = make_sensor_truth((H, W), seed=2024)
    model = model_of(truth)
    t_s = EXPOSURE_MS / 1000.0
    levels = [0.8 * truth.full_well_e if e is None else e for e in LEVELS_E]
    flats = []
    for i, e in enumerate(levels):
        photons_per_ms = e / (truth.quantum_efficiency * EXPOSURE_MS)
        rng = np.random.default_rng(1000 + i)
        x = render_frames(truth, photons_per_ms, EXPOSURE_MS, N_FRAMES, rng)
        # the truth per pixel: expected electrons, expected ADU and the true temporal noise σ
        ee = truth.quantum_efficiency * truth.relative_qe * photons_per_ms * EXPOSURE_MS \
            + truth.dark_current_e_per_s * t_s
        ex = truth.offset_adu + ee / truth.gain_e_per_adu
        sig_t = np.sqrt(ee + truth.read_noise_e**2 + truth.gain_e_per_adu**2 / 12) / truth.gain_e_per_adu
        flats.append({"e": e, "x": x, "ex": ex, "sig_t": sig_t})
    return truth, model, flats


@pytest.fixture(scope="module")
def coded(camera):
    """Decoded flats per step (computed once per step, shared by the tests)."""
    _truth, model, flats = camera
    cache: dict[float, list[dict]] = {}

    def get(step: float) -> list[dict]:
        if step not in cache:
            out = []
            for i, f in enumerate(flats):
                c = NoiseCal(step=step, seed=77 + i, noise_model=model)
                s = c.encode(f["x"])
                y = c.decode(s)
                h = peek_header(s)
                x = f["x"].astype(np.float64)
                err = y.astype(np.float64) - x
                # normal pixels that cannot reach the exact-pixel threshold (selected from the
                # truth, not from the noisy data): not bad, expected value + 6 σ below saturation
                ok = (model.bad_pixels == 0) & (f["ex"] + 6 * f["sig_t"] < h["saturation_adu"])
                m = np.broadcast_to(ok, x.shape)
                out.append({"e": f["e"], "x": x, "y": y, "err": err, "mask": m, "header": h,
                            "sig": sigma_adu(model, x), "ex": f["ex"], "sig_t": f["sig_t"],
                            "g": model.gain_e_per_adu.astype(np.float64),
                            "bad": model.bad_pixels > 0})
            cache[step] = out
        return cache[step]

    return get


def test_levels_span_dark_to_80_percent_of_full_well(camera):
    truth, _model, flats = camera
    assert flats[0]["e"] == 0 and flats[-1]["e"] == pytest.approx(0.8 * truth.full_well_e)
    assert len(flats) >= 10
    for f in flats:  # the rendering has the mean it should (sanity of the fixture itself)
        n = f["x"].size
        assert f["x"].mean() == pytest.approx(f["ex"].mean(), abs=5 * f["sig_t"].max() / np.sqrt(n) + 0.05)


# ---------------------------------------------------------------------------------- bias
@pytest.mark.parametrize("step", STEPS)
def test_mean_error_is_below_a_hundredth_of_sigma_at_every_level(step, coded):
    """Mean of (decoded − raw)/σ over the frame ≤ 0.01 at every level. 262 144 pixels give a
    standard error of step/√12/512 ≤ 0.0017 σ (step ≤ 3), far below the 0.01 σ tolerance."""
    for lv in coded(step):
        z = (lv["err"] / lv["sig"])[lv["mask"]]
        se = z.std() / np.sqrt(z.size)
        assert se < 0.01 / 5, (lv["e"], se)  # the test can resolve 0.01 σ
        assert abs(z.mean()) <= 0.01, f"{lv['e']} e-: mean error {z.mean():+.4f} σ (± {se:.4f})"
        # the whole frame too (bad and saturated pixels are exact and add zero error)
        zall = lv["err"] / lv["sig"]
        assert abs(zall.mean()) <= 0.01, (lv["e"], zall.mean())


@pytest.mark.parametrize("step", STEPS)
def test_error_is_uncorrelated_with_the_raw_value(step, coded):
    """Pearson r of the error with the raw value within each flat field: under independence
    r ~ N(0, 1/N); |r| ≤ 5/√N is missed by an uncorrelated error with probability < 1e-6.
    Across levels the mean error does not follow the signal either (checked above per level)."""
    for lv in coded(step):
        m = lv["mask"]
        e, x = lv["err"][m], lv["x"][m]
        r = np.corrcoef(e, x)[0, 1]
        assert abs(r) <= 5 / np.sqrt(e.size), f"{lv['e']} e-: corr(error, raw) = {r:+.4f}"
    # pooled over all levels (the signal varies by 4 orders of magnitude)
    e = np.concatenate([lv["err"][lv["mask"]] / lv["sig"][lv["mask"]] for lv in coded(step)])
    s = np.concatenate([lv["x"][lv["mask"]] for lv in coded(step)])
    r = np.corrcoef(e, s)[0, 1]
    assert abs(r) <= 5 / np.sqrt(e.size), f"pooled corr(error/σ, raw) = {r:+.4f}"


@pytest.mark.parametrize("step", [2.0, 3.0])
def test_no_conditional_bias_near_the_offset(step):
    """E[decoded | raw] = raw for every raw value, including the dark values around the offset
    where the transform changes from its linear continuation to the square root: the inverse
    subtracts the curvature bias exactly (noisecal's design rule 3). Frames of one raw value
    (4 × 256² pixels, each with its own dither) average the error over the dither; tolerance
    0.01 σ plus 4 standard errors."""
    g, o, rn = 0.47, 100.0, 1.6  # the simulator's median camera, the same at every pixel
    shape = (256, 256)
    model = NoiseModel(
        identity=CameraIdentity("flat", "F1", 16, 1, (0, 0, shape[1], shape[0])),
        offset_adu=np.full(shape, o), gain_e_per_adu=np.full(shape, g),
        read_noise_e=np.full(shape, rn), dark_current_e_per_s=None,
        bad_pixels=np.zeros(shape, np.uint8), emva={"saturation_adu": 60000.0},
    )
    sd = np.sqrt(rn**2 + g**2 / 12) / g  # dark noise σ [ADU]
    c = NoiseCal(step=step, seed=9, noise_model=model)
    worst = []
    for x0 in range(int(o - 4 * sd), int(o + 4 * sd) + 1):
        x = np.full((4,) + shape, x0, np.uint16)
        err = c.decode(c.encode(x)).astype(np.float64) - x0
        sig = float(np.sqrt(max((x0 - o) * g, 0) + rn**2 + g**2 / 12) / g)
        bias = err.mean() / sig
        se = err.std() / sig / np.sqrt(err.size)
        worst.append((abs(bias) - (0.01 + 4 * se), x0, bias, se))
    excess, x0, bias, se = max(worst)
    assert excess <= 0, (
        f"step {step}: raw {x0} ADU (offset {o}): mean error {bias:+.4f} σ ± {se:.4f} "
        f"exceeds 0.01 σ"
    )


# ---------------------------------------------------------------------------------- noise
def _predicted_rms(step: float, sig: np.ndarray) -> float:
    # quantisation in σ units: step²/12; the decoder's rounding to integer ADU adds 1/12 ADU²
    # (dithered, so uniform and independent), i.e. 1/(12 σ²) in σ units
    return float(np.sqrt(step**2 / 12 + np.mean(1.0 / (12 * sig**2))))


@pytest.mark.parametrize("step", STEPS)
def test_added_noise_is_step_over_sqrt12_sigma(step, coded):
    """RMS of (decoded − raw)/σ = step/√12 (with the ½-ADU rounding term) within ±5 %."""
    for lv in coded(step):
        m = lv["mask"]
        z = (lv["err"] / lv["sig"])[m]
        rms = float(np.sqrt(np.mean(z**2)))
        pred = _predicted_rms(step, lv["sig"][m])
        assert rms == pytest.approx(pred, rel=0.05), f"{lv['e']} e-: {rms:.4f} vs {pred:.4f}"
        assert rms == pytest.approx(step / np.sqrt(12), rel=0.05), f"{lv['e']} e-: {rms:.4f}"


def test_step_scales_the_added_noise_as_predicted(coded):
    """Step 3 adds three times the noise of step 1 (in σ units), at every level."""
    for l1, l3 in zip(coded(1.0), coded(3.0)):
        m = l1["mask"] & l3["mask"]
        r1 = np.sqrt(np.mean((l1["err"] / l1["sig"])[m] ** 2))
        r3 = np.sqrt(np.mean((l3["err"] / l3["sig"])[m] ** 2))
        pred = _predicted_rms(3.0, l3["sig"][m]) / _predicted_rms(1.0, l1["sig"][m])
        assert r3 / r1 == pytest.approx(pred, rel=0.05), (l1["e"], r3 / r1, pred)
        assert pred == pytest.approx(3.0, rel=0.05)


@pytest.mark.parametrize("step", STEPS)
def test_snr_cost_is_10log10_of_1_plus_step2_over_12(step, coded):
    """SNR cost = 10·log10(noise power of decoded / of raw), both against the true expected
    value and in units of the true σ. Prediction: the added variance is (step²/12)·σ(x)² + 1/12
    ADU² (σ(x) at the raw value — above the offset it grows with the sample, which matters only
    in the dark), so cost = 10·log10(1 + added/raw power); far above the dark level this is the
    headline 10·log10(1 + step²/12). Tolerance: the dB change that ±5 % in the added noise's σ
    makes."""
    headline = 10 * np.log10(1 + step**2 / 12)
    for lv in coded(step):
        m = lv["mask"]
        st = np.broadcast_to(lv["sig_t"], lv["x"].shape)[m]
        ex = np.broadcast_to(lv["ex"], lv["x"].shape)[m]
        p_raw = np.mean(((lv["x"][m] - ex) / st) ** 2)
        p_dec = np.mean(((lv["y"][m] - ex) / st) ** 2)
        cost = 10 * np.log10(p_dec / p_raw)
        added = step**2 / 12 * np.mean((lv["sig"][m] / st) ** 2) + np.mean(1 / (12 * st**2))
        a = added / p_raw
        pred = 10 * np.log10(1 + a)
        tol = 10 * np.log10(1 + 1.05**2 * a) - pred
        assert cost == pytest.approx(pred, abs=tol), f"{lv['e']} e-: {cost:.3f} dB vs {pred:.3f}"
        if lv["e"] >= 30:  # ≥ 5 σ above the offset: σ(x)² averages to σ_true²
            assert cost == pytest.approx(headline, abs=tol), f"{lv['e']} e-: {cost:.3f} vs {headline:.3f}"
    assert 10 * np.log10(1 + 4 / 12) == pytest.approx(1.249, abs=0.001)  # "1.25 dB at step 2"


@pytest.mark.parametrize("step", STEPS)
def test_error_is_uniform_in_the_stabilised_domain(step, coded):
    """Far above the dark level (σ ≫ 1 ADU, curvature negligible) the error divided by step·σ
    is the dither's quantisation error: uniform on [−½, ½]. KS distance ≤ 0.01 (sampling gives
    ≈ 1.4/√N ≈ 0.003; the last 0.007 allows for the rounding and the codec's quantised maps)."""
    for lv in coded(step):
        if lv["e"] < 6000:
            continue
        m = lv["mask"]
        q = (lv["err"] / (step * lv["sig"]))[m]
        d = stats.kstest(q, stats.uniform(loc=-0.5, scale=1.0).cdf).statistic
        assert d <= 0.01, (lv["e"], d)


@pytest.mark.parametrize("step", STEPS)
def test_error_bound_holds_on_every_pixel(step, coded):
    """|decoded − raw| ≤ (step/2)·(σ + step/(4g)) + step²/(48g) + 1 ADU on every pixel of every
    flat (2.6 million pixels per step); derivation in test_codecs.noisecal_bound. Bad pixels
    and pixels at or above the exact-pixel threshold decode exactly."""
    for lv in coded(step):
        bound = (step / 2) * (lv["sig"] + step / (4 * lv["g"])) + step**2 / (48 * lv["g"]) + 1
        excess = np.abs(lv["err"]) - bound
        i = np.unravel_index(np.argmax(excess), excess.shape)
        assert excess[i] <= 0, (
            f"{lv['e']} e-, pixel {i}: raw {lv['x'][i]:.0f}, decoded {lv['y'][i]}, "
            f"|error| {abs(lv['err'][i]):.0f} > bound {bound[i]:.2f} ADU (σ {lv['sig'][i]:.2f})"
        )
        exact = np.broadcast_to(lv["bad"], lv["x"].shape) | (lv["x"] >= lv["header"]["saturation_adu"])
        assert (lv["err"][exact] == 0).all(), lv["e"]


# ---------------------------------------------------------------------------------- dither, seeds
def test_dither_is_uniform_on_minus_half_to_half():
    n = 200_000
    for seed, plane in ((0, 0), (1, 0), (2**64 - 1, 7), (123456789, 3)):
        u = np.asarray(K.dither(np.uint64(seed), plane, n))
        assert u.shape == (n,)
        assert u.min() >= -0.5 and u.max() < 0.5
        ks = stats.kstest(u, stats.uniform(loc=-0.5, scale=1.0).cdf)
        assert ks.pvalue > 1e-4, (seed, plane, ks)
        assert abs(u.mean()) <= 5 * np.sqrt(1 / 12 / n)
        # var of U² is 1/80 − 1/144 ⇒ standard error of the sample variance
        assert abs(u.var() - 1 / 12) <= 5 * np.sqrt((1 / 80 - 1 / 144) / n)
        r1 = np.corrcoef(u[:-1], u[1:])[0, 1]  # neighbouring pixels independent
        assert abs(r1) <= 5 / np.sqrt(n)


def test_dither_differs_between_seeds_and_planes():
    n = 100_000
    a = np.asarray(K.dither(np.uint64(1), 0, n))
    for other in (K.dither(np.uint64(2), 0, n), K.dither(np.uint64(1 + 2**32), 0, n),
                  K.dither(np.uint64(1), 1, n)):
        other = np.asarray(other)
        assert np.mean(a == other) < 1e-3
        assert abs(np.corrcoef(a, other)[0, 1]) <= 5 / np.sqrt(n)
    np.testing.assert_array_equal(a, K.dither(np.uint64(1), 0, n))  # a function of (seed, plane)


def test_seeds_change_the_stream_but_decoding_is_deterministic(camera):
    _truth, model, flats = camera
    x = flats[5]["x"][:2]
    s1 = NoiseCal(seed=1, noise_model=model).encode(x)
    s2 = NoiseCal(seed=2, noise_model=model).encode(x)
    assert peek_header(s1)["seed"] == 1 and peek_header(s2)["seed"] == 2
    assert unpack(s1)[1][1] != unpack(s2)[1][1]  # the code images differ
    y1 = NoiseCal(noise_model=model).decode(s1)
    y2 = decode_any(s2)
    assert not np.array_equal(y1, y2)
    # a stream decodes to the same array every time, by any route
    for y in (NoiseCal(noise_model=model).decode(s1), decode_any(s1),
              get_codec(peek_header(s1)["codec"]).decode(s1), NoiseCal(step=5.0).decode(s1)):
        np.testing.assert_array_equal(y, y1)
    # the same seed gives the same result; no seed gives a fresh random one per stream
    np.testing.assert_array_equal(decode_any(NoiseCal(seed=1, noise_model=model).encode(x)), y1)
    c = NoiseCal(noise_model=model)
    seeds = {peek_header(c.encode(x))["seed"] for _ in range(3)}
    assert len(seeds) == 3


def test_seeds_give_independent_errors(camera):
    """The errors of two seeds on the same frame are uncorrelated (they come from independent
    dithers), so re-coding does not accumulate a fixed pattern."""
    _truth, model, flats = camera
    x = flats[6]["x"]
    e = [decode_any(NoiseCal(seed=s, noise_model=model).encode(x)).astype(np.float64) - x
         for s in (11, 12)]
    ok = np.broadcast_to(model.bad_pixels == 0, x.shape)
    r = np.corrcoef(e[0][ok], e[1][ok])[0, 1]
    assert abs(r) <= 5 / np.sqrt(ok.sum())


@pytest.mark.parametrize("entropy", ["jpegxl2", "lz4-bitshuffle", "zstd", "jpegls", "pcodec"])
def test_entropy_stage_does_not_change_the_decoded_frame(entropy, camera):
    """The entropy stage is lossless over the codes: every stage decodes to the same frame."""
    truth, model, flats = camera
    x = flats[4]["x"][:2, :100, :]
    sub = NoiseModel(identity=CameraIdentity("sim", truth.serial, 16, 1, (0, 0, W, 100)),
                     offset_adu=model.offset_adu[:100], gain_e_per_adu=model.gain_e_per_adu[:100],
                     read_noise_e=model.read_noise_e[:100], dark_current_e_per_s=None,
                     bad_pixels=model.bad_pixels[:100], emva=model.emva)
    ref = decode_any(NoiseCal(seed=4, tile_rows=32, noise_model=sub).encode(x))
    got = decode_any(NoiseCal(seed=4, tile_rows=32, entropy=entropy, noise_model=sub).encode(x))
    np.testing.assert_array_equal(got, ref)
