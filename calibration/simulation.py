"""Physics of rawgate's simulated sCMOS camera: the ground truth the calibration must recover.

Pure numpy; no Micro-Manager here. :mod:`rawgate.calibration.instruments.simulated` wraps
this in pymmcore-plus Python devices so the simulated path goes through the real MMCore API.

The image formation per pixel (all maps per physical pixel, shape ``(H, W)``):

    electrons = Poisson(qe · photons · relative_qe + dark_current_e_per_s · t) ∧ full_well_e
    adu       = round(offset_adu + (electrons + N(0, read_noise_e)) / gain_e_per_adu)
    adu       = clip(adu, 0, 2**bit_depth − 1)

Binning (digital, as sCMOS cameras do it) sums ``b × b`` blocks of ADU above offset and adds
back one offset, then clips to the ADC range.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SensorTruth", "make_sensor_truth", "render_frames", "flat_field", "truth_noise_model"]

# Defect classes planted in the truth; the calibration must find them.
DEFECT_NONE = 0
DEFECT_NOISY = 1  # read noise far above the median (RTS-like)
DEFECT_HOT = 2  # dark current far above the median


@dataclass(frozen=True)
class SensorTruth:
    """Per-pixel ground truth of a simulated sCMOS sensor.

    Attributes
    ----------
    offset_adu, gain_e_per_adu, read_noise_e, dark_current_e_per_s, relative_qe
        Per-pixel maps, shape ``(H, W)``, float64.
    defects
        Per-pixel planted defect class (``DEFECT_*``), uint8.
    quantum_efficiency
        Mean quantum efficiency (electrons per photon).
    full_well_e
        Full-well capacity in electrons.
    bit_depth
        ADC bit depth (12 or 16); output is uint16 either way.
    seed
        Seed the maps were drawn from.
    """

    offset_adu: np.ndarray
    gain_e_per_adu: np.ndarray
    read_noise_e: np.ndarray
    dark_current_e_per_s: np.ndarray
    relative_qe: np.ndarray
    defects: np.ndarray
    quantum_efficiency: float = 0.8
    full_well_e: float = 30000.0
    bit_depth: int = 16
    seed: int = 0
    serial: str = field(default="SIM-0000")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.offset_adu.shape)  # type: ignore[return-value]

    @property
    def adc_max(self) -> int:
        return 2**self.bit_depth - 1

    def binned(self, binning: int) -> "SensorTruth":
        """Effective per-pixel truth of the digitally binned sensor (for comparisons).

        Offsets do not add (one offset is added back); electrons add, read noise adds in
        quadrature; the effective gain is the one that maps the summed variance correctly.
        """
        if binning == 1:
            return self

        def block(a: np.ndarray, how: str) -> np.ndarray:
            h, w = a.shape[0] // binning, a.shape[1] // binning
            v = a[: h * binning, : w * binning].reshape(h, binning, w, binning)
            return getattr(v, how)(axis=(1, 3))

        inv_g = block(1.0 / self.gain_e_per_adu, "mean")
        return SensorTruth(
            offset_adu=block(self.offset_adu, "mean"),
            gain_e_per_adu=1.0 / inv_g,
            read_noise_e=np.sqrt(block(self.read_noise_e**2, "sum")),
            dark_current_e_per_s=block(self.dark_current_e_per_s, "sum"),
            relative_qe=block(self.relative_qe, "mean"),
            defects=block(self.defects, "max").astype(np.uint8),
            quantum_efficiency=self.quantum_efficiency,
            full_well_e=self.full_well_e * binning**2,
            bit_depth=self.bit_depth,
            seed=self.seed,
            serial=self.serial,
        )


def make_sensor_truth(
    shape: tuple[int, int] = (256, 256),
    *,
    seed: int = 0,
    bit_depth: int = 16,
    offset_adu: float = 100.0,
    offset_spread_adu: float = 1.5,
    gain_e_per_adu: float = 0.47,
    gain_spread: float = 0.03,
    read_noise_e: float = 1.6,
    read_noise_log_spread: float = 0.15,
    dark_current_e_per_s: float = 0.5,
    noisy_fraction: float = 0.02,
    hot_fraction: float = 0.01,
    quantum_efficiency: float = 0.8,
    prnu: float = 0.005,
    full_well_e: float = 30000.0,
) -> SensorTruth:
    """Draw a realistic, seeded sCMOS sensor (ORCA-Flash4.0-like defaults).

    Parameters
    ----------
    shape
        Sensor size ``(H, W)`` in pixels.
    seed
        Seed for every map; the same seed gives the same sensor.
    bit_depth
        ADC bit depth, 12 or 16.
    offset_adu, offset_spread_adu
        Median offset and its per-pixel standard deviation [ADU].
    gain_e_per_adu, gain_spread
        Median conversion gain [e-/ADU] and its relative per-pixel spread.
    read_noise_e, read_noise_log_spread
        Median read noise [e-] and the std of its logarithm for normal pixels.
    dark_current_e_per_s
        Median dark current [e-/s] of normal pixels.
    noisy_fraction, hot_fraction
        Fractions of planted noisy (read noise 4–25 e-) and hot (dark current
        200–5000 e-/s) pixels.
    quantum_efficiency
        Mean QE [e-/photon]; ``prnu`` is the relative per-pixel QE spread.
    full_well_e
        Full-well capacity [e-].
    """
    if bit_depth not in (12, 16):
        raise ValueError(f"bit_depth must be 12 or 16, got {bit_depth}")
    rng = np.random.default_rng(seed)
    h, w = shape
    offset = offset_adu + offset_spread_adu * rng.standard_normal(shape)
    gain = gain_e_per_adu * (1.0 + gain_spread * rng.standard_normal(shape))
    rn = read_noise_e * np.exp(read_noise_log_spread * rng.standard_normal(shape))
    dc = dark_current_e_per_s * np.exp(0.3 * rng.standard_normal(shape))
    rel_qe = 1.0 + prnu * rng.standard_normal(shape)
    defects = np.zeros(shape, np.uint8)
    n = h * w
    idx = rng.permutation(n)
    n_noisy, n_hot = int(round(noisy_fraction * n)), int(round(hot_fraction * n))
    noisy, hot = idx[:n_noisy], idx[n_noisy : n_noisy + n_hot]
    rn.flat[noisy] = rng.uniform(4.0, 25.0, n_noisy)
    defects.flat[noisy] = DEFECT_NOISY
    dc.flat[hot] = np.exp(rng.uniform(np.log(200.0), np.log(5000.0), n_hot))
    defects.flat[hot] = DEFECT_HOT
    return SensorTruth(
        offset_adu=offset,
        gain_e_per_adu=gain,
        read_noise_e=rn,
        dark_current_e_per_s=dc,
        relative_qe=rel_qe,
        defects=defects,
        quantum_efficiency=quantum_efficiency,
        full_well_e=full_well_e,
        bit_depth=bit_depth,
        seed=seed,
        serial=f"SIM-{seed:04d}",
    )


def flat_field(shape: tuple[int, int], vignetting: float = 0.1) -> np.ndarray:
    """Relative illumination of a flat field with gentle radial fall-off (1 at the centre)."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    r2 = ((y - (shape[0] - 1) / 2) / max(shape[0], 1)) ** 2 + (
        (x - (shape[1] - 1) / 2) / max(shape[1], 1)
    ) ** 2
    return 1.0 - vignetting * r2 / 0.5


def render_frames(
    truth: SensorTruth,
    photons_per_ms: np.ndarray | float,
    exposure_ms: float,
    n: int,
    rng: np.random.Generator,
    *,
    binning: int = 1,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Render ``n`` frames through the sensor model.

    Parameters
    ----------
    truth
        The sensor.
    photons_per_ms
        Photon flux per physical pixel [photons/ms], scalar or ``(H, W)``.
    exposure_ms
        Exposure time [ms].
    n
        Number of frames.
    rng
        Random generator (the caller owns the stream, so sequences are reproducible).
    binning
        Digital binning factor.
    out
        Optional ``(n, H/b, W/b)`` uint16 array to fill.

    Returns
    -------
    ndarray
        ``(n, H/b, W/b)`` uint16 frames in ADU.
    """
    t_s = exposure_ms / 1000.0
    expected_e = (
        truth.quantum_efficiency * truth.relative_qe * np.asarray(photons_per_ms) * exposure_ms
        + truth.dark_current_e_per_s * t_s
    )
    expected_e = np.broadcast_to(expected_e, truth.shape)
    h, w = truth.shape[0] // binning, truth.shape[1] // binning
    if out is None:
        out = np.empty((n, h, w), np.uint16)
    inv_gain = 1.0 / truth.gain_e_per_adu
    for i in range(n):
        e = rng.poisson(expected_e).astype(np.float64)
        np.minimum(e, truth.full_well_e, out=e)
        e += truth.read_noise_e * rng.standard_normal(truth.shape)
        e *= inv_gain  # now ADU above offset
        if binning > 1:
            e = e[: h * binning, : w * binning].reshape(h, binning, w, binning).sum(axis=(1, 3))
            adu = e + truth.offset_adu[: h * binning, : w * binning].reshape(
                h, binning, w, binning
            ).mean(axis=(1, 3))
        else:
            adu = e + truth.offset_adu
        np.rint(adu, out=adu)
        np.clip(adu, 0, truth.adc_max, out=adu)
        out[i] = adu
    return out


def compare_to_truth(
    truth: SensorTruth,
    offset_adu: np.ndarray,
    gain_e_per_adu: np.ndarray,
    read_noise_e: np.ndarray,
    bad_pixels: np.ndarray,
    system_gain_adu_per_e: float,
) -> dict[str, float]:
    """How well fitted maps recover the simulated sensor (over pixels without planted defects).

    ``true_system_gain_adu_per_e`` is what a flat field measures globally on this sensor:
    mean(1/g²)/mean(1/g) (variance over mean, averaged over pixels).
    """
    good = truth.defects == 0
    planted = ~good
    flagged = bad_pixels != 0
    k_true = float(np.mean(1 / truth.gain_e_per_adu**2) / np.mean(1 / truth.gain_e_per_adu))
    off_err = np.abs(offset_adu - truth.offset_adu)[good]
    return {
        "true_system_gain_adu_per_e": k_true,
        "system_gain_rel_error": float(system_gain_adu_per_e / k_true - 1.0),
        "gain_median_abs_rel_error": float(
            np.median(np.abs(gain_e_per_adu / truth.gain_e_per_adu - 1.0)[good])
        ),
        "read_noise_median_abs_rel_error": float(
            np.median(np.abs(read_noise_e / truth.read_noise_e - 1.0)[good])
        ),
        "offset_median_abs_error_adu": float(np.median(off_err)),
        "offset_p95_abs_error_adu": float(np.percentile(off_err, 95)),
        "planted_defects": int(planted.sum()),
        "planted_defects_flagged_fraction": float((flagged & planted).sum() / max(planted.sum(), 1)),
        "false_flag_fraction": float((flagged & good).sum() / max(good.sum(), 1)),
    }


def truth_noise_model(truth: SensorTruth, *, name: str = "sim"):
    """The :class:`~rawgate.calibration.model.NoiseModel` a perfect calibration of ``truth`` gives.

    Offset, gain and read noise are the planted maps; the planted noisy and hot pixels carry
    the calibration's bad-pixel reason bits. For tests and benchmarks that need the exact model
    without running a sweep.
    """
    from .fit import BAD_HOT, BAD_NOISY
    from .instruments._protocol import CameraIdentity
    from .model import NoiseModel

    h, w = truth.shape
    sat = float(np.median(truth.offset_adu) + truth.full_well_e / np.median(truth.gain_e_per_adu))
    return NoiseModel(
        identity=CameraIdentity(name, truth.serial, truth.bit_depth, 1, (0, 0, w, h)),
        offset_adu=truth.offset_adu,
        gain_e_per_adu=truth.gain_e_per_adu,
        read_noise_e=truth.read_noise_e,
        dark_current_e_per_s=None,
        bad_pixels=np.where(truth.defects == DEFECT_NOISY, BAD_NOISY, 0).astype(np.uint8)
        | np.where(truth.defects == DEFECT_HOT, BAD_HOT, 0).astype(np.uint8),
        emva={"saturation_adu": sat},
        source="simulation truth maps",
    )
