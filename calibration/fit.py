"""Photon-transfer fit: EMVA 1288 global figures and sCMOS per-pixel maps.

Pure numerics over :class:`~rawgate.calibration.sweep.SweepStats`. Levels are visited one at a
time (they may be memory-mapped), so the fit's memory is a handful of per-pixel maps.

Conventions: ``K`` is the overall system gain in ADU per electron (EMVA); the per-pixel maps
use its inverse, ``gain_e_per_adu``, as sCMOS practice (Huang et al. 2013) does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .sweep import LevelStats, SweepStats

__all__ = [
    "FitError",
    "FitOptions",
    "EMVAResult",
    "PixelMaps",
    "FitResult",
    "fit_sweep",
    "map_statistics",
    "MAP_NAMES",
    "BAD_PIXEL_REASONS",
]

#: The per-pixel maps, in the order reports show them.
MAP_NAMES = ("offset_adu", "gain_e_per_adu", "read_noise_e", "dark_current_e_per_s")

#: Bit flags of the bad-pixel mask and what each means.
BAD_NOISY = 1
BAD_HOT = 2
BAD_GAIN = 4
BAD_OFFSET = 8
BAD_DEAD = 16
BAD_FIT = 32
BAD_PIXEL_REASONS: dict[int, str] = {
    BAD_NOISY: "noisy: read noise far above the sensor's distribution (RTS-like)",
    BAD_HOT: "hot: dark current far above the sensor's distribution",
    BAD_GAIN: "gain outlier: conversion gain far from the sensor's distribution",
    BAD_OFFSET: "offset outlier: dark level far from the sensor's distribution",
    BAD_DEAD: "dead or weak: responds with < 50 % of the median signal",
    BAD_FIT: "no fit: too few unsaturated levels or a non-positive slope",
}

QUANTISATION_VAR_ADU2 = 1.0 / 12.0


class FitError(ValueError):
    """The sweep cannot support a fit; the message says why."""


@dataclass(frozen=True)
class FitOptions:
    """Knobs of the fit.

    Attributes
    ----------
    fit_fraction
        Upper end of the photon-transfer fit range as a fraction of saturation (EMVA: 0.7).
    linearity_range
        Range of the linearity fit as fractions of saturation (EMVA: 5 %–95 %).
    bad_pixel_sigma
        Robust z-score (median / 1.4826·MAD, on log scale for gain and read noise) beyond which a
        pixel is flagged.
    min_levels
        Fewest light levels inside the fit range.
    highpass
        Box size [px] of the high-pass that removes illumination fall-off before DSNU/PRNU.
    """

    fit_fraction: float = 0.7
    linearity_range: tuple[float, float] = (0.05, 0.95)
    bad_pixel_sigma: float = 5.0
    min_levels: int = 3
    highpass: int = 7


@dataclass
class EMVAResult:
    """EMVA 1288 global figures (units in the names) and the curves behind them."""

    system_gain_adu_per_e: float
    temporal_dark_noise_e: float
    temporal_dark_noise_adu: float
    dsnu_e: float
    prnu_percent: float
    saturation_adu: float
    saturation_capacity_e: float
    saturation_reached: bool
    snr_max: float
    snr_max_db: float
    dynamic_range: float
    dynamic_range_db: float
    linearity_error_percent: float
    dark_current_e_per_s: float | None
    dark_current_from_variance_e_per_s: float | None
    ptc_fit_r2: float
    n_levels_in_fit: int
    curves: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def gain_e_per_adu(self) -> float:
        return 1.0 / self.system_gain_adu_per_e

    def summary(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "curves"}
        d["gain_e_per_adu"] = self.gain_e_per_adu
        return d


@dataclass
class PixelMaps:
    """Per-pixel maps, shape ``(H, W)``.

    Attributes
    ----------
    offset_adu
        Dark level at zero exposure [ADU].
    gain_e_per_adu
        Conversion gain [e-/ADU].
    read_noise_e
        Read noise [e-] (quantisation noise of the ADC removed).
    dark_current_e_per_s
        Dark current [e-/s], or None with fewer than two dark exposures.
    bad_pixels
        Bit mask; see :data:`BAD_PIXEL_REASONS`.
    gain_rel_se
        Relative standard error of each pixel's gain fit.
    """

    offset_adu: np.ndarray
    gain_e_per_adu: np.ndarray
    read_noise_e: np.ndarray
    dark_current_e_per_s: np.ndarray | None
    bad_pixels: np.ndarray
    gain_rel_se: np.ndarray

    def bad_pixel_counts(self) -> dict[str, int]:
        return {
            BAD_PIXEL_REASONS[bit].split(":")[0]: int(((self.bad_pixels & bit) > 0).sum())
            for bit in BAD_PIXEL_REASONS
        }


@dataclass
class FitResult:
    emva: EMVAResult
    maps: PixelMaps
    quality: dict[str, Any]


def _robust_z(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    v = x[valid & np.isfinite(x)]
    if v.size == 0:
        return np.zeros_like(x)
    med = np.median(v)
    mad = 1.4826 * np.median(np.abs(v - med))
    if mad <= 0:
        mad = np.std(v) or 1.0
    return (x - med) / mad


class _DarkModel:
    """Dark mean and variance as linear functions of exposure, globally and per pixel.

    A dark stack at exactly the requested exposure is used as measured; otherwise the linear
    fit over the dark exposures is evaluated (constant with a single exposure)."""

    def __init__(self, darks: list[LevelStats]) -> None:
        self.darks = sorted(darks, key=lambda d: d.exposure_ms)
        self.t_s = np.array([d.exposure_ms for d in self.darks]) / 1000.0
        self.n_exposures = len(set(self.t_s.tolist()))
        # per-pixel least-squares line through (t, mean) and (t, var), accumulated streaming
        m0 = self.darks[0].mean_adu
        self.mean_a = np.zeros(m0.shape)
        self.mean_b = np.zeros(m0.shape)
        self.var_a = np.zeros(m0.shape)
        self.var_b = np.zeros(m0.shape)
        t = self.t_s
        if self.n_exposures >= 2:
            tc = t - t.mean()
            stt = float((tc**2).sum())
            for d, tci in zip(self.darks, tc):
                self.mean_b += tci * d.mean_adu
                self.var_b += tci * d.var_adu2
            self.mean_b /= stt
            self.var_b /= stt
        for d in self.darks:
            self.mean_a += d.mean_adu
            self.var_a += d.var_adu2
        self.mean_a /= len(self.darks)
        self.var_a /= len(self.darks)
        self.mean_a -= self.mean_b * t.mean()
        self.var_a -= self.var_b * t.mean()
        gm = np.array([d.global_mean for d in self.darks])
        gv = np.array([d.global_temporal_var for d in self.darks])
        if self.n_exposures >= 2:
            self.g_mean = np.polyfit(t, gm, 1)
            self.g_var = np.polyfit(t, gv, 1)
        else:
            self.g_mean = np.array([0.0, gm.mean()])
            self.g_var = np.array([0.0, gv.mean()])

    def _exact(self, exposure_ms: float) -> LevelStats | None:
        for d in self.darks:
            if abs(d.exposure_ms - exposure_ms) <= 1e-9 * max(1.0, exposure_ms):
                return d
        return None

    def pixel(self, exposure_ms: float) -> tuple[np.ndarray, np.ndarray]:
        d = self._exact(exposure_ms)
        if d is not None:
            return np.asarray(d.mean_adu, np.float64), np.asarray(d.var_adu2, np.float64)
        t = exposure_ms / 1000.0
        return self.mean_a + self.mean_b * t, np.maximum(self.var_a + self.var_b * t, 0)

    def global_(self, exposure_ms: float) -> tuple[float, float]:
        d = self._exact(exposure_ms)
        if d is not None:
            return d.global_mean, d.global_temporal_var
        t = exposure_ms / 1000.0
        return float(np.polyval(self.g_mean, t)), float(np.polyval(self.g_var, t))

    def stack(self, exposure_ms: float) -> LevelStats:
        """The measured dark stack closest in exposure (for spatial statistics)."""
        return min(self.darks, key=lambda d: abs(d.exposure_ms - exposure_ms))


def _check_sweep(sweep: SweepStats) -> None:
    if not sweep.darks:
        raise FitError(
            "the sweep has no dark frames: offset and read noise cannot be measured "
            "(add dark_exposures_ms to the sweep plan)"
        )
    if not sweep.lights:
        raise FitError("the sweep has no light frames: gain cannot be measured")


def _check_signal(
    x: np.ndarray, y: np.ndarray, lights: list[LevelStats], var_dark: np.ndarray, clipped: np.ndarray
) -> None:
    """Refuse sweeps whose light levels carry no usable photon-transfer signal.

    A level is *saturated* when its mean is clearly above dark but its temporal variance is not
    (full-well or ADC clipping flattens the noise), or most pixels sit at the ADC limit."""
    npix = lights[0].mean_adu.size
    n = np.array([lv.n_frames for lv in lights])
    var_y = y + var_dark
    se_y = np.sqrt(2.0 / ((n - 1) * npix)) * (var_y + var_dark)
    se_x = np.sqrt(np.maximum(var_dark, 1e-12) / npix)
    signal = x > 5 * se_x
    noise_rises = y > 5 * se_y
    if not signal.any():
        raise FitError(
            "no light reaches the camera: the mean never rises above dark (check the light "
            "source, its property range and the light path)"
        )
    if not (signal & noise_rises & (clipped < 0.5)).any():
        raise FitError(
            "every light level is saturated (mean above dark but no shot noise, or pixels at the "
            "ADC limit): lower the light or the exposure"
        )


def fit_sweep(sweep: SweepStats, options: FitOptions | None = None) -> FitResult:
    """Fit EMVA 1288 global figures and per-pixel maps to a sweep.

    Raises
    ------
    FitError
        With the reason, when the sweep cannot support a fit (no dark frames, too few levels
        below saturation, everything saturated).
    """
    opt = options or FitOptions()
    _check_sweep(sweep)
    dark = _DarkModel(sweep.darks)
    lights = sorted(sweep.lights, key=lambda lv: (lv.light_level * lv.exposure_ms))
    notes: list[str] = []

    # ---------------------------------------------------------------- EMVA global
    mu_y = np.array([lv.global_mean for lv in lights])
    var_y = np.array([lv.global_temporal_var for lv in lights])
    dk = np.array([dark.global_(lv.exposure_ms) for lv in lights])
    x = mu_y - dk[:, 0]
    y = var_y - dk[:, 1]
    # share of pixels clipped at the ADC in each level (one pass over the, maybe mapped, counts)
    clipped = np.array([float((np.asarray(lv.n_clipped) > 0).mean()) for lv in lights])
    _check_signal(x, y, lights, dk[:, 1], clipped)
    h_rel = np.array([lv.light_level * lv.exposure_ms for lv in lights])
    i_sat = int(np.argmax(var_y))
    saturation_reached = i_sat < len(lights) - 1 or clipped[-1] > 0.01
    if not saturation_reached:
        notes.append(
            "saturation not reached: the photon-transfer curve still rises at the top level; "
            "saturation figures are lower bounds and the fit uses every level"
        )
        in_fit = (x > 0) & (np.arange(len(x)) <= i_sat)
    else:
        in_fit = (x > 0) & (x <= opt.fit_fraction * x[i_sat])
    if in_fit.sum() < opt.min_levels:
        raise FitError(
            f"too few light levels below {opt.fit_fraction:.0%} of saturation: "
            f"{int(in_fit.sum())}, need ≥ {opt.min_levels} (add levels or lower the light)"
        )
    xf, yf = x[in_fit], y[in_fit]
    k = float((xf * yf).sum() / (xf * xf).sum())
    if not k > 0:
        raise FitError("the photon-transfer slope is not positive: the light does not change")
    ss_res = float(((yf - k * xf) ** 2).sum())
    ss_tot = float(((yf - yf.mean()) ** 2).sum()) or 1.0
    t_light = lights[0].exposure_ms
    mu_d, var_d = dark.global_(t_light)
    sigma_d_adu = float(np.sqrt(max(var_d - QUANTISATION_VAR_ADU2, 0.0)))
    sigma_d_e = sigma_d_adu / k
    dstack = dark.stack(t_light)
    s2_dark = _spatial_var(dstack, opt.highpass)
    dsnu_e = float(np.sqrt(max(s2_dark, 0.0))) / k
    i50 = int(np.argmin(np.abs(x - 0.5 * x[i_sat])))
    s2_50 = _spatial_var(lights[i50], opt.highpass)
    prnu = float(np.sqrt(max(s2_50 - s2_dark, 0.0)) / x[i50] * 100.0) if x[i50] > 0 else float("nan")
    mu_e_sat = float(x[i_sat] / k)
    snr = x / np.sqrt(np.maximum(var_y, 1e-12))
    dr = mu_e_sat / sigma_d_e if sigma_d_e > 0 else float("inf")
    # linearity: 1/Y-weighted line over 5–95 % of saturation against relative irradiation
    lo, hi = opt.linearity_range
    lin = (x >= lo * x[i_sat]) & (x <= hi * x[i_sat])
    lin_dev = np.full(len(x), np.nan)
    le = float("nan")
    if lin.sum() >= 3:
        w = 1.0 / x[lin]
        a, b = np.polyfit(h_rel[lin], x[lin], 1, w=w)
        fit_y = a * h_rel + b
        lin_dev = (x - fit_y) / fit_y * 100.0
        le = float((np.nanmax(lin_dev[lin]) - np.nanmin(lin_dev[lin])) / 2)
    else:
        notes.append("linearity not computed: fewer than 3 levels between 5 % and 95 % of saturation")
    dc_mean = dc_var = None
    if dark.n_exposures >= 2:
        dc_mean = float(dark.g_mean[0] / k)  # ADU/s / (ADU/e-) = e-/s
        dc_var = float(dark.g_var[0] / k**2)
        if dark.n_exposures < 3:
            notes.append("dark current from 2 exposures only; EMVA 1288 asks for ≥ 3")
    else:
        notes.append("dark current not measured: one dark exposure")

    emva = EMVAResult(
        system_gain_adu_per_e=k,
        temporal_dark_noise_e=sigma_d_e,
        temporal_dark_noise_adu=sigma_d_adu,
        dsnu_e=dsnu_e,
        prnu_percent=prnu,
        saturation_adu=float(mu_y[i_sat]),
        saturation_capacity_e=mu_e_sat,
        saturation_reached=bool(saturation_reached),
        snr_max=float(np.sqrt(mu_e_sat)),
        snr_max_db=float(20 * np.log10(np.sqrt(mu_e_sat))),
        dynamic_range=float(dr),
        dynamic_range_db=float(20 * np.log10(dr)) if np.isfinite(dr) else float("inf"),
        linearity_error_percent=le,
        dark_current_e_per_s=dc_mean,
        dark_current_from_variance_e_per_s=dc_var,
        ptc_fit_r2=1.0 - ss_res / ss_tot,
        n_levels_in_fit=int(in_fit.sum()),
        curves={
            "light_level": [lv.light_level for lv in lights],
            "exposure_ms": [lv.exposure_ms for lv in lights],
            "relative_irradiation": h_rel.tolist(),
            "mean_minus_dark_adu": x.tolist(),
            "var_minus_dark_adu2": y.tolist(),
            "in_fit": in_fit.tolist(),
            "snr": snr.tolist(),
            "mean_e": (x / k).tolist(),
            "linearity_deviation_percent": lin_dev.tolist(),
            "in_linearity_fit": lin.tolist(),
            "dark_exposure_ms": [d.exposure_ms for d in dark.darks],
            "dark_mean_adu": [d.global_mean for d in dark.darks],
            "dark_var_adu2": [d.global_temporal_var for d in dark.darks],
        },
        notes=notes,
    )

    maps = _fit_pixels(lights, dark, k, x[i_sat] if saturation_reached else np.inf, opt, lights[i50])
    good = maps.bad_pixels == 0
    quality = {
        "ptc_fit_r2": emva.ptc_fit_r2,
        "n_levels_in_fit": emva.n_levels_in_fit,
        "frames_per_level": int(np.median([lv.n_frames for lv in lights])),
        "dark_frames": int(np.median([d.n_frames for d in dark.darks])),
        "median_gain_rel_se": float(np.nanmedian(maps.gain_rel_se[good])) if good.any() else None,
        "bad_pixel_fraction": float(1.0 - good.mean()),
        "saturation_reached": emva.saturation_reached,
    }
    return FitResult(emva=emva, maps=maps, quality=quality)


def map_statistics(maps: Any) -> dict[str, dict[str, float | int] | None]:
    """Median and 5th/95th percentiles of each map over good, finite pixels.

    ``maps`` is anything with the map attributes and ``bad_pixels`` (:class:`PixelMaps`, a
    :class:`~rawgate.calibration.model.NoiseModel`). Returns ``{name: {"median", "p5", "p95",
    "n"}}``; ``None`` for a map not measured (one dark exposure) or without a finite good pixel.
    """
    good = np.asarray(maps.bad_pixels) == 0
    out: dict[str, dict[str, float | int] | None] = {}
    for name in MAP_NAMES:
        a = getattr(maps, name)
        if a is None:
            out[name] = None
            continue
        a = np.asarray(a, np.float64)
        v = a[good & np.isfinite(a)]
        if v.size == 0:
            out[name] = None
            continue
        p5, med, p95 = np.percentile(v, [5, 50, 95])
        out[name] = {"median": float(med), "p5": float(p5), "p95": float(p95), "n": int(v.size)}
    return out


def _spatial_var(lv: LevelStats, box: int) -> float:
    """Spatial variance of a stack's mean image after a box high-pass, with the temporal
    noise left in the mean image removed (EMVA 1288: s²_y − σ²_y / N)."""
    m = np.asarray(lv.mean_adu, np.float64)
    if box > 1 and min(m.shape) > 2 * box:
        m = m - ndimage.uniform_filter(m, box, mode="reflect")
        attenuation = 1.0 - 1.0 / box**2  # share of white-noise variance the high-pass keeps
    else:
        attenuation = 1.0
    temporal = float(np.mean(lv.var_adu2, dtype=np.float64)) / lv.n_frames
    return float(m.var() / attenuation - temporal)


def _fit_pixels(
    lights: list[LevelStats],
    dark: _DarkModel,
    k_global: float,
    x_sat: float,
    opt: FitOptions,
    response_level: LevelStats,
) -> PixelMaps:
    """Per-pixel maps; ``response_level`` (the level nearest 50 % of saturation, as for PRNU)
    gives each pixel's response for the dead/weak-pixel test."""
    shape = lights[0].mean_adu.shape
    sxy = np.zeros(shape)
    sxx = np.zeros(shape)
    n_used = np.zeros(shape, np.int32)
    for lv in lights:
        md, vd = dark.pixel(lv.exposure_ms)
        xp = np.asarray(lv.mean_adu, np.float64) - md
        yp = np.asarray(lv.var_adu2, np.float64) - vd
        gx = float(np.mean(xp))
        if gx <= 0 or (np.isfinite(x_sat) and gx > opt.fit_fraction * x_sat):
            continue
        ok = (np.asarray(lv.n_clipped) == 0) & (xp > 0)
        # weights 1/Var(var̂) from the *predicted* variance, not the noisy measured one
        # (weighting by the measurement correlates weight and value and biases the slope)
        var_pred = vd + k_global * np.maximum(xp, 0)
        w = np.where(ok, (lv.n_frames - 1) / (2.0 * np.maximum(var_pred, 1e-6) ** 2), 0.0)
        sxy += w * xp * yp
        sxx += w * xp * xp
        n_used += ok
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = sxy / sxx  # ADU/e-
        gain = 1.0 / slope
        rel_se = 1.0 / (slope * np.sqrt(sxx))
    fit_bad = (n_used < 2) | ~(slope > 0) | ~np.isfinite(gain)
    gain = np.where(fit_bad, np.nan, gain)

    # offset and dark current from the dark line. Read noise: every dark stack's variance less
    # its dark-signal shot noise (dark ADU above offset / gain), combined with inverse-variance
    # weights so that for hot pixels the short stacks, where dark shot noise is small, dominate.
    offset = dark.mean_a.copy()
    dc_adu_per_s = dark.mean_b if dark.n_exposures >= 2 else None
    g_fill = np.where(fit_bad, np.nanmedian(gain), gain)
    d0 = dark.darks[0]
    v0 = np.maximum(np.asarray(d0.var_adu2, np.float64) - np.maximum(np.asarray(d0.mean_adu) - offset, 0) / g_fill, 0.5)
    num = np.zeros(shape)
    den = np.zeros(shape)
    for d in dark.darks:
        shot = np.maximum(np.asarray(d.mean_adu, np.float64) - offset, 0.0) / g_fill
        w = (d.n_frames - 1) / (2.0 * (v0 + shot) ** 2)
        num += w * (np.asarray(d.var_adu2, np.float64) - shot)
        den += w
    var_read = num / den - QUANTISATION_VAR_ADU2
    read_noise = np.sqrt(np.maximum(var_read, 0.0)) * g_fill
    # where dark shot noise swamps it the estimate can come out ≤ 0; such pixels get the sensor's
    # median read noise (they are flagged hot below) rather than an impossible 0 e-
    unmeasured = var_read <= 0
    if unmeasured.any() and (~unmeasured).any():
        read_noise[unmeasured] = np.median(read_noise[~unmeasured & ~fit_bad])
    dc = dc_adu_per_s * g_fill if dc_adu_per_s is not None else None

    # bad pixels
    bad = np.zeros(shape, np.uint8)
    z = opt.bad_pixel_sigma
    valid = ~fit_bad
    bad[fit_bad] |= BAD_FIT
    with np.errstate(divide="ignore", invalid="ignore"):
        zr = _robust_z(np.log(np.maximum(read_noise, 1e-3)), valid)
        bad[zr > z] |= BAD_NOISY
        zg = _robust_z(np.log(g_fill), valid)
        bad[(np.abs(zg) > z) & valid] |= BAD_GAIN
    zo = _robust_z(offset, valid)
    bad[np.abs(zo) > z] |= BAD_OFFSET
    if dc is not None:
        zd = _robust_z(dc, valid)
        bad[zd > z] |= BAD_HOT
    resp = np.asarray(response_level.mean_adu, np.float64) - dark.pixel(response_level.exposure_ms)[0]
    med_resp = np.median(resp[valid]) if valid.any() else 0.0
    if med_resp > 0:
        bad[resp < 0.5 * med_resp] |= BAD_DEAD
    return PixelMaps(
        offset_adu=offset,
        gain_e_per_adu=g_fill,
        read_noise_e=read_noise,
        dark_current_e_per_s=dc,
        bad_pixels=bad,
        gain_rel_se=rel_se,
    )
