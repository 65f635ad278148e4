"""Noise model estimated from image data, for archives and images that come without a calibration.

Two estimators of the global Poisson–Gaussian variance law of a camera,

    var_adu(μ) = a · μ + b            (μ: expected raw value [ADU], var in ADU²),

where ``a`` [ADU per e-] is the inverse conversion gain and ``b`` [ADU²] the intercept at
μ = 0 ADU (usually negative: the law is anchored at the dark level, not at zero):

* :func:`estimate_from_frames` — temporal: frames of the same scene (a time series). Half the
  variance of the difference of consecutive frames, binned by intensity (level sets), measures
  the temporal noise at that intensity; the scene, fixed-pattern noise (per-pixel offset and
  gain non-uniformity) and slow drift cancel. This is the accurate method.
* :func:`estimate_from_image` — one image (or each plane of a z stack), after Foi et al. 2008,
  "Practical Poissonian-Gaussian noise modeling and fitting for single-image raw-data"
  (IEEE TIP 17(10)): a finest-scale wavelet (Haar) detail measures the local noise, a local
  mean the expectation; only smooth regions count; level sets of the expectation give (μ, σ²)
  points from robust (MAD-type) deviations, fitted by the same law. A single image cannot tell
  temporal noise from fixed-pattern noise: per-pixel offset spread (DSNU) adds to ``b`` and
  per-pixel gain spread (PRNU) adds a term ∝ μ² that inflates ``a`` on bright scenes.

Both group samples into level sets by an intensity computed *without* the sample's own pixels
(:func:`_bin_points` says why) and fit ``a`` and ``b`` with the same robust, heteroscedastic
IRLS (:func:`_fit_variance_law`).

What the data determine, and what they do not
---------------------------------------------
Only ``a`` and ``b`` are identifiable. Offset and read noise enter the variance law only as
``b = read_noise_e² / gain² − a · offset`` (plus the 1/12 ADU² of the ADC's rounding, which is
counted into the read noise here), so one of them must be chosen. The offset is chosen as a
robust estimate of the data's dark level (mean value of the 1 % darkest places, chosen by their
surroundings) unless the caller gives ``offset_adu``; then::

    gain_e_per_adu = 1 / a
    read_noise_e   = gain_e_per_adu · sqrt(max(b + a · offset_adu, tiny))

so that ``var = a (μ − offset_adu) + read_noise_e² / gain_e_per_adu²`` reproduces the fitted law
exactly. When the data hold no dark region (nothing at the camera's offset) the estimated offset
is too high and the read noise absorbs the shot noise of the darkest level; give the offset then.

Pure numpy/scipy; nothing here reads files or talks to cameras.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import ndimage, special

from .instruments._protocol import CameraIdentity
from .model import NoiseModel

__all__ = [
    "EstimateError",
    "EstimateResult",
    "estimate_from_frames",
    "estimate_from_image",
    "estimate_noise_model",
    "datasheet_noise_model",
]

#: Floor of ``b + a·offset`` [ADU²] when computing the read noise (keeps it finite and ≥ 0).
TINY_VAR_ADU2 = 1e-6
#: Floor of a modelled variance [ADU²] where the law is used to standardise or to bin
#: (integer data carry at least the ADC's rounding variance, 1/12 ADU²).
_VAR_FLOOR = 1.0 / 12.0


def _phi(x: float) -> float:
    """Standard normal density."""
    return float(np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi))


_MAD_NORMAL = float(special.ndtri(0.75))  # median |Z| of a standard normal, 0.67449
#: Relative finite-sample bias of the sample median of |Z| (order-statistic expansion):
#: E[med] ≈ 0.67449 (1 + _MED_BIAS / (n + 2)).
_MED_BIAS = 1.0 / (32.0 * _phi(_MAD_NORMAL) ** 2)
#: Asymptotic variance of σ̂ = med|Z| / 0.67449, in units of σ²/n (efficiency ≈ 37 %).
_MAD_VAR = 0.25 / (4.0 * _phi(_MAD_NORMAL) ** 2 * _MAD_NORMAL**2)


class EstimateError(ValueError):
    """The data cannot support a noise estimate; the message says why."""


# ============================================================================ result
@dataclass(frozen=True)
class EstimateResult:
    """A global Poisson–Gaussian noise law estimated from image data.

    Attributes
    ----------
    a_adu
        Slope of the variance law, ``d var / d μ`` [ADU² per ADU]; equals the system gain
        K = 1 / ``gain_e_per_adu`` [ADU per e-].
    b_adu2
        Intercept of the variance law at μ = 0 ADU [ADU²] (negative when the offset is large).
    offset_adu
        Dark level [ADU] chosen as described in the module docstring.
    offset_source
        ``"given"`` or how it was estimated.
    bin_means
        Mean expected intensity of each level-set bin [ADU].
    bin_variances
        Robust noise variance of each bin [ADU²].
    bin_counts
        Samples (pixel pairs or wavelet coefficients) per bin.
    bin_weights
        Robust weight of each bin in the final fit, in ``[0, 1]`` (small: outlying bin).
    method
        ``"frame-pairs"`` or ``"single-image"``.
    bit_depth
        Bit depth of the data [bits] (given, or the width of the data's integer type).
    frame_shape
        ``(H, W)`` of one frame/plane.
    data_sha256
        SHA-256 of the data (dtype, shape and bytes), hex.
    a_stderr, b_stderr
        Standard errors of ``a_adu`` and ``b_adu2`` from the fit (scaled by its dispersion).
    dispersion
        Robust scale of the standardised bin residuals (≈ 1 when the bins scatter as their
        sampling noise predicts; larger for texture, correlated samples, mixed pixels).
    n_samples
        Samples that entered the bins.
    notes
        Caveats a user should read (fixed-pattern noise, offset choice …).
    """

    a_adu: float
    b_adu2: float
    offset_adu: float
    offset_source: str
    bin_means: np.ndarray
    bin_variances: np.ndarray
    bin_counts: np.ndarray
    bin_weights: np.ndarray
    method: Literal["frame-pairs", "single-image"]
    bit_depth: int
    frame_shape: tuple[int, int]
    data_sha256: str
    a_stderr: float
    b_stderr: float
    dispersion: float
    n_samples: int
    notes: tuple[str, ...] = field(default=())

    # ------------------------------------------------------------------ derived figures
    @property
    def gain_e_per_adu(self) -> float:
        """Conversion gain [e-/ADU] = 1 / ``a_adu``."""
        return 1.0 / self.a_adu

    @property
    def dark_variance_adu2(self) -> float:
        """Fitted variance at the chosen offset, ``b + a·offset`` [ADU²] (may be ≤ 0)."""
        return self.b_adu2 + self.a_adu * self.offset_adu

    @property
    def read_noise_e(self) -> float:
        """Read noise [e- rms] = gain · sqrt(max(b + a·offset, tiny)) (includes ADC rounding)."""
        return self.gain_e_per_adu * float(np.sqrt(max(self.dark_variance_adu2, TINY_VAR_ADU2)))

    @property
    def n_bins(self) -> int:
        return int(self.bin_means.size)

    def variance(self, mean_adu: np.ndarray | float) -> np.ndarray:
        """The fitted law ``a·μ + b`` [ADU²] at expected raw values ``mean_adu`` [ADU]."""
        return self.a_adu * np.asarray(mean_adu, np.float64) + self.b_adu2

    def summary(self) -> dict[str, Any]:
        """Scalar figures (JSON-serialisable) for reports, the CLI and the model's fit_quality."""
        return {
            "estimated": True,
            "method": self.method,
            "a_adu": self.a_adu,
            "a_stderr": self.a_stderr,
            "b_adu2": self.b_adu2,
            "b_stderr": self.b_stderr,
            "gain_e_per_adu": self.gain_e_per_adu,
            "offset_adu": self.offset_adu,
            "offset_source": self.offset_source,
            "read_noise_e": self.read_noise_e,
            "n_bins": self.n_bins,
            "n_samples": self.n_samples,
            "dispersion": self.dispersion,
            "bit_depth": self.bit_depth,
            "data_sha256": self.data_sha256,
            "notes": list(self.notes),
        }

    # ------------------------------------------------------------------ model
    def default_identity(self, shape: tuple[int, int] | None = None) -> CameraIdentity:
        """``CameraIdentity`` for data of unknown origin: named "unknown (estimated)", serial
        ``estimated-<first 12 hex of the data's SHA-256>``, binning 1, ROI ``(0, 0, W, H)``."""
        h, w = shape or self.frame_shape
        return CameraIdentity(
            name="unknown (estimated)",
            serial="estimated-" + self.data_sha256[:12],
            bit_depth=self.bit_depth,
            binning=1,
            roi=(0, 0, int(w), int(h)),
        )

    def to_noise_model(
        self, shape: tuple[int, int] | None = None, *, identity: CameraIdentity | None = None
    ) -> NoiseModel:
        """A :class:`NoiseModel` with uniform maps, flagged ``estimated=True``.

        Parameters
        ----------
        shape
            ``(H, W)`` of the maps [pixels]; default: the frame shape of the data.
        identity
            Camera the model is for; default :meth:`default_identity`. Its ROI must match
            ``shape`` (the model checks).

        Returns
        -------
        NoiseModel
            Uniform offset [ADU], gain [e-/ADU] and read noise [e-]; dark current not measured
            (None); no bad pixels; ``source`` starts with ``"estimated: <method>"``.
        """
        shape = tuple(int(v) for v in (shape or self.frame_shape))
        if len(shape) != 2 or min(shape) < 1:
            raise EstimateError(f"shape must be (H, W) with positive sizes, got {shape}")
        identity = identity or self.default_identity(shape)  # type: ignore[arg-type]
        full = lambda v: np.full(shape, v, np.float32)
        return NoiseModel(
            identity=identity,
            offset_adu=full(self.offset_adu),
            gain_e_per_adu=full(self.gain_e_per_adu),
            read_noise_e=full(self.read_noise_e),
            dark_current_e_per_s=None,
            bad_pixels=np.zeros(shape, np.uint8),
            estimated=True,
            fit_quality=self.summary(),
            source=(
                f"estimated: {self.method} fit var = a·μ + b with a = {self.a_adu:.5g} ADU/e-, "
                f"b = {self.b_adu2:.5g} ADU² over {self.n_bins} bins; offset "
                f"{self.offset_adu:.5g} ADU ({self.offset_source}); data sha256 "
                f"{self.data_sha256[:12]}"
            ),
        )


# ============================================================================ input checks
def _check_data(data: Any, ndims: tuple[int, ...], what: str, bit_depth: int | None):
    """Integer ADU array of an allowed ndim → (array, bit_depth, adc_max, sha256)."""
    arr = np.asarray(data)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise EstimateError(
            f"{what} must be raw integer camera counts (ADU); got dtype {arr.dtype}. A float or "
            "boolean image has been processed or rescaled and its noise no longer follows the "
            "camera's law"
        )
    if arr.ndim not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise EstimateError(f"{what} must be {want}, got a {arr.ndim}-D array of shape {arr.shape}")
    if arr.size == 0:
        raise EstimateError(f"{what} is empty (shape {arr.shape})")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise EstimateError(f"{what} has negative values (min {lo}); raw ADU are non-negative")
    if bit_depth is None:
        bits = arr.dtype.itemsize * 8
        if bits > 16:  # wide containers: the smallest usual depth that holds the data
            bits = next((b for b in (16, 20, 24, 32) if hi <= 2**b - 1), 64)
        bit_depth = bits
    bit_depth = int(bit_depth)
    if not 1 <= bit_depth <= 32:
        raise EstimateError(f"bit_depth must be in 1…32 bits, got {bit_depth} (values up to {hi})")
    adc_max = 2**bit_depth - 1
    if hi > adc_max:
        raise EstimateError(f"{what} has values up to {hi}, above the {bit_depth}-bit range")
    h = hashlib.sha256()
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return arr, bit_depth, adc_max, h.hexdigest()


# ============================================================================ robust statistics
def _clipped_variance(x: np.ndarray, model: np.ndarray | None, clip: float, iters: int = 20) -> float:
    """Mean variance of samples ``x`` [units²] by iterated ``clip``-σ clipping around their
    mean, corrected for the truncation of a Gaussian at ±clip σ (unbiased on Gaussian data,
    efficiency ≈ 1, rejects gross outliers).

    ``model`` (optional, ≥ 0): relative variance of each sample. Each sample then gets its own
    threshold ``clip·sqrt(r·model)`` (r: the iterated variance ratio), so a bin mixing noise
    widths is not clipped towards its narrow members; the result is still the plain mean of the
    kept squares, i.e. the bin's mean variance. Integer data need no lattice correction: the
    mean of squares counts the rounding variance, which the camera's law contains too.
    """
    x = np.asarray(x, np.float64)
    rel = np.ones_like(x) if model is None else np.asarray(model, np.float64)
    k = clip
    corr = 1.0 - 2.0 * k * _phi(k) / (2.0 * float(special.ndtr(k)) - 1.0)
    centre = float(np.median(x))
    u = (x - centre) / np.sqrt(rel)
    r = (1.4826 * float(np.median(np.abs(u)))) ** 2
    if not r > 0:
        r = float(np.mean(u * u))
    if not r > 0:
        return 0.0
    keep = np.abs(x - centre) <= k * np.sqrt(r * rel)
    for _ in range(iters):
        if keep.sum() < 3:
            break
        xk, rk = x[keep], rel[keep]
        centre = float(xk.mean())
        r = float(np.mean((xk - centre) ** 2 / rk)) / corr
        new = np.abs(x - centre) <= k * np.sqrt(r * rel)
        if np.array_equal(new, keep):
            break
        keep = new
    xk = x[keep]
    return float(np.mean((xk - xk.mean()) ** 2)) / corr if xk.size >= 3 else r * float(rel.mean())


def _lattice_step(x: np.ndarray) -> float:
    """Spacing h of the lattice hℤ that integer-derived coefficients live on (0: none found)."""
    for h in (1.0, 0.5, 0.25):
        if np.all(np.abs(x / h - np.round(x / h)) < 1e-6):
            return h
    return 0.0


def _mad_variance(d: np.ndarray, model: np.ndarray | None = None) -> float:
    """Robust variance [units²] of zero-mean Gaussian samples ``d`` from the median of ``|d|``
    (the MAD-type estimator of Foi et al.), corrected for its finite-sample bias on Gaussian
    noise (order-statistic expansion: E σ̂ ≈ σ (1 + 0.309/(n+2)) and Var σ̂ ≈ 1.36 σ²/n, so
    E σ̂² ≈ σ² ((1 + 0.309/(n+2))² + 1.36/n)).

    ``model`` (optional): relative variance of each sample; the samples are standardised by it
    (a median of mixed widths is not their mean width) and the ratio is scaled back by the
    harmonic mean of ``model``, which is unbiased when ``model`` scatters independently of the
    true variances (a noisy local mean). Continuous data: a lattice (integer pixels) must be
    dithered first, see :func:`estimate_from_image`.
    """
    n = d.size
    u = d if model is None else d / np.sqrt(model)
    sigma = float(np.median(np.abs(u))) / _MAD_NORMAL
    r = sigma**2 / ((1.0 + _MED_BIAS / (n + 2)) ** 2 + _MAD_VAR / n)
    return r if model is None else r / float(np.mean(1.0 / model))


def _fit_variance_law(
    mu: np.ndarray, var: np.ndarray, n_eff: np.ndarray, huber_c: float = 1.345, max_iter: int = 100
) -> tuple[float, float, np.ndarray, float, np.ndarray]:
    """Robust weighted fit of ``var = a·mu + b`` → (a, b, covariance 2×2, dispersion, weights).

    IRLS with Huber weights on residuals standardised by the *model's* own sampling error: a
    variance estimated from n_eff Gaussian samples scatters by ``var·sqrt(2/n_eff)``, so the
    weights must follow the fitted law and be recomputed every iteration. That heteroscedastic,
    fit-dependent weighting is why this is a small IRLS and not sklearn's ``HuberRegressor``,
    which assumes one residual scale and fixed sample weights. The dispersion (robust scale of
    the standardised residuals, at least 1) absorbs correlated samples and mild texture, and
    scales the Huber threshold and the covariance.
    """
    X = np.column_stack([mu, np.ones_like(mu)])
    floor = max(1e-9, 1e-3 * float(np.median(np.abs(var))))

    def wls(w: np.ndarray) -> np.ndarray:
        A = X.T @ (w[:, None] * X)
        return np.linalg.solve(A, X.T @ (w * var))

    beta = wls(n_eff / np.maximum(var, floor) ** 2)
    h = np.ones_like(mu)
    s = 1.0
    for _ in range(max_iter):
        model = np.maximum(X @ beta, floor)
        sd = model * np.sqrt(2.0 / n_eff)
        r = (var - X @ beta) / sd
        s = max(1.0, 1.4826 * float(np.median(np.abs(r))))
        h = np.minimum(1.0, huber_c * s / np.maximum(np.abs(r), 1e-12))
        new = wls(h / sd**2)
        done = np.allclose(new, beta, rtol=1e-10, atol=1e-12 * max(1.0, abs(float(beta[1]))))
        beta = new
        if done:
            break
    model = np.maximum(X @ beta, floor)
    w = h / (model * np.sqrt(2.0 / n_eff)) ** 2
    cov = s**2 * np.linalg.inv(X.T @ (w[:, None] * X))
    return float(beta[0]), float(beta[1]), cov, s, h


#: A fitted law as the next pass uses it: (a [ADU/e-], b [ADU²], floor [ADU²]).
_Law = tuple[float, float, float]


def _law(a: float, b: float, bv: np.ndarray) -> _Law:
    """The law of a fit, floored at half the smallest measured bin variance (where a poor
    early fit dips towards zero it must not hand a near-zero variance to standardisation)."""
    pos = bv[bv > 0]
    return a, b, max(_VAR_FLOOR, 0.5 * float(pos.min()) if pos.size else _VAR_FLOOR)


def _model_var(law: _Law, mu: np.ndarray) -> np.ndarray:
    a, b, floor = law
    return np.maximum(a * mu + b, floor)


def _level_sets(sel: np.ndarray, n_bins: int, min_count: int) -> tuple[np.ndarray, int]:
    """Bin index (−1: outside) of each sample, between the 0.1 % and 99.9 % quantiles of
    ``sel``: the union of ``n_bins`` equal-count and ``n_bins`` equal-width intervals (dense
    intensities such as a background get narrow bins, sparse bright ones are still covered),
    neighbours then merged until each bin holds ``min_count`` samples."""
    lo, hi = np.quantile(sel, [0.001, 0.999])
    if not hi > lo:
        raise EstimateError(
            f"no intensity range: the expected values all lie at {lo:.6g} ADU, so signal-"
            "dependent and constant noise cannot be told apart (a flat or blank image?)"
        )
    edges = np.union1d(
        np.quantile(sel, np.linspace(0.001, 0.999, n_bins + 1)), np.linspace(lo, hi, n_bins + 1)
    )
    edges = np.unique(edges)
    nb = edges.size - 1
    idx = np.clip(np.searchsorted(edges, sel, side="right") - 1, 0, nb - 1)
    idx[(sel < lo) | (sel > hi)] = -1
    counts = np.bincount(idx[idx >= 0], minlength=nb)
    group = np.empty(nb, np.int64)
    g, acc = 0, 0
    for i, c in enumerate(counts):
        group[i] = g
        acc += c
        if acc >= min_count:
            g, acc = g + 1, 0
    n_groups = g
    if acc > 0:  # the last, short group joins the previous one
        n_groups = max(n_groups, 1)
        group[group == g] = n_groups - 1
    return np.where(idx >= 0, group[np.maximum(idx, 0)], -1), n_groups


def _split(idx: np.ndarray, n_groups: int, *arrays: np.ndarray):
    """Per-group slices of ``arrays`` (samples with idx = −1 dropped)."""
    sel = idx >= 0
    order = np.argsort(idx[sel], kind="stable")
    bounds = np.searchsorted(idx[sel][order], np.arange(n_groups + 1))
    sorted_arrays = [a[sel][order] for a in arrays]
    for g in range(n_groups):
        yield [a[bounds[g] : bounds[g + 1]] for a in sorted_arrays]


def _bin_points(
    sel: np.ndarray,
    mu: np.ndarray,
    x: np.ndarray,
    *,
    law: _Law | None,
    n_bins: int,
    min_count: int,
    var_of,
    adc_max: int,
    model_at: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(μ, σ², n) per level set from samples ``x`` of variance σ²(``mu``) each.

    ``sel`` assigns samples to level sets; it must be computed *without* the pixels that ``mu``
    and ``x`` come from (a ring of neighbours). Then selection is independent of the samples'
    noise and of their pixels' offsets, so the bin mean of ``mu`` is an unbiased estimate of the
    bin's expected intensity and, the law being linear, the bin's variance sits exactly on it.
    Binning by the noisy ``mu`` itself would not: near a dense intensity (a dark background)
    bins slightly above it collect background pixels whose noise pushed them up
    (errors-in-variables), and their variance lies far below the law at their mean.

    With a law, ``var_of(x, model)`` gets each sample's modelled variance (at ``model_at``, a
    low-noise intensity of the sample; default ``mu``), so that the robust estimator is not
    fooled by a mixture of noise widths across the bin (which biases clipping and medians
    low); without one it gets ``model=None``.
    Bins whose ±4σ reach 0 or the ADC maximum (clipping) are dropped.
    """
    idx, ng = _level_sets(sel, n_bins, min_count)
    if law is None:
        model = np.ones_like(mu)
    else:
        model = _model_var(law, mu if model_at is None else model_at)
    bm, bv, bc = [], [], []
    for mg, xg, vg in _split(idx, ng, mu, x, model):
        if mg.size < max(3, min_count // 2):
            continue
        v = var_of(xg, None if law is None else vg)
        m = float(mg.mean(dtype=np.float64))
        sd = float(np.sqrt(max(v, 0.0)))
        if m - 4 * sd <= 0.5 or m + 4 * sd >= adc_max - 0.5:
            continue
        bm.append(m)
        bv.append(v)
        bc.append(mg.size)
    order = np.argsort(bm)
    return np.array(bm)[order], np.array(bv)[order], np.array(bc, np.int64)[order]


def _ring_mean(img: np.ndarray, inner: int, outer: int) -> np.ndarray:
    """Mean over an ``outer``×``outer`` window minus its central ``inner``×``inner`` block
    (both odd, or both even: then the centre is between pixels, as for 2×2 Haar blocks)."""
    big = ndimage.uniform_filter(img, size=outer, mode="reflect") * outer**2
    small = ndimage.uniform_filter(img, size=inner, mode="reflect") * inner**2
    return (big - small) / (outer**2 - inner**2)


def _fit_bins(
    bm: np.ndarray, bv: np.ndarray, n_eff: np.ndarray, min_bins: int
) -> tuple[float, float, np.ndarray, float, np.ndarray]:
    """Refusal checks + robust fit over the usable bins; raises EstimateError with the reason."""
    if bm.size < min_bins:
        raise EstimateError(
            f"too few usable intensity bins ({bm.size}, need {min_bins}): the data span too "
            "small an intensity range or hold too few usable samples"
        )
    spread = float(bm.max() - bm.min())
    typical_sd = float(np.sqrt(max(np.median(bv), _VAR_FLOOR)))
    if spread < 3.0 * typical_sd:
        raise EstimateError(
            f"no intensity range: the usable bins span {spread:.3g} ADU, less than 3 noise "
            f"standard deviations ({typical_sd:.3g} ADU); shot noise and read noise cannot be "
            "separated (a flat or nearly blank image?)"
        )
    a, b, cov, s, w = _fit_variance_law(bm, bv, n_eff)
    if not a > 0:
        raise EstimateError(
            f"non-positive slope of the variance law (a = {a:.4g} ADU/e-): noise does not grow "
            "with intensity in these data (processed or non-raw data, or no signal)"
        )
    a_se = float(np.sqrt(cov[0, 0]))
    if a_se > 0.2 * a:
        raise EstimateError(
            f"slope of the variance law undetermined (a = {a:.4g} ± {a_se:.2g} ADU/e-): the "
            "intensity range is too small for the noise in the data"
        )
    return a, b, cov, s, w


def _dark_level(sel: np.ndarray, mu: np.ndarray, pct: float) -> float:
    """Robust dark level [ADU]: the mean expected value ``mu`` of the samples whose surroundings
    ``sel`` are the darkest ``pct`` %. Choosing by the surroundings and averaging the samples'
    own values keeps the noise of the choice out of the level (a plain low percentile of a
    noisy image lies below its dark level by ~2σ)."""
    sel, mu = np.ravel(sel), np.ravel(mu)
    return float(mu[sel <= np.percentile(sel, pct)].mean())


_OFFSET_NOTE = (
    "offset and read noise are not separately identifiable from image data; the offset is the "
    "data's dark level (the mean of its darkest places), so the read noise is right only when "
    "the data contain a region at the camera's dark level (else give the offset)"
)


def _offset(
    offset_adu: float | None, estimate: Callable[[], float], pct: float
) -> tuple[float, str, list[str]]:
    """(offset [ADU], where it came from, notes): the given one wins over the estimate."""
    if offset_adu is not None:
        if not np.isfinite(offset_adu):
            raise EstimateError(f"offset_adu must be finite, got {offset_adu}")
        return float(offset_adu), "given", []
    return estimate(), f"estimated: dark level of the darkest {pct:g} %", [_OFFSET_NOTE]


def _dark_notes(a: float, b: float, off: float) -> list[str]:
    if b + a * off > 0:
        return []
    msg = (
        f"the fitted law reaches zero variance at {-b / a:.4g} ADU, at or above the offset "
        f"{off:.4g} ADU: read noise set to ~0; the offset is probably too low"
    )
    return [msg]


# ============================================================================ frame pairs
def estimate_from_frames(
    frames: np.ndarray,
    *,
    bit_depth: int | None = None,
    offset_adu: float | None = None,
    n_bins: int = 48,
    min_count: int | None = None,
    min_bins: int = 5,
    clip_sigma: float = 4.0,
    reject_pixels: bool = True,
    max_samples: int = 1 << 23,
    offset_percentile: float = 1.0,
) -> EstimateResult:
    """Global noise law from temporal frame pairs of one camera.

    For consecutive frames ``x_t, x_{t+1}`` and each pixel, ``d = x_{t+1} − x_t`` has variance
    ``2 σ²(μ)`` whatever the scene (fixed-pattern noise cancels too), and the pair mean
    ``m = (x_t + x_{t+1}) / 2`` is an unbiased, uncorrelated estimate of μ. Samples are grouped
    into level sets by the pair mean of the pixel's 8 *neighbours* (independent of the pixel's
    own noise and offset, see :func:`_bin_points`); each bin gives the mean of ``m`` and
    ``var(d) / 2`` by iterated ``clip_sigma``-σ clipping (Gaussian-truncation corrected, around
    the bin's mean so a uniform change between frames cancels as well). Bins whose ±4σ reach 0
    or the ADC maximum (clipping) are dropped, and ``var = a·μ + b`` is fitted by the robust
    IRLS of :func:`_fit_variance_law`; a second pass clips each sample against that law. With
    ≥ 3 pairs per pixel, pixels whose own temporal variance contradicts the law at p < 1e-4 on
    either side (noisy/RTS or dead pixels, moving content) are dropped and the fit repeated.

    Parameters
    ----------
    frames
        ``(T, H, W)`` integer raw frames [ADU], T ≥ 2, H, W ≥ 3, same camera settings and
        scene (slow change is tolerated; moving content becomes outliers).
    bit_depth
        ADC bit depth [bits]; default the data type's width (16 for uint16). Values at 0 or
        ``2**bit_depth − 1`` are treated as clipped.
    offset_adu
        Camera offset [ADU] when known; default the dark level of the mean image (see the
        module docstring for why it must be chosen).
    n_bins, min_count, min_bins
        Level sets: number of equal-count and of equal-width intervals united; the fewest
        samples per bin (neighbours merged; default max(200, samples / (4·n_bins))); the fewest
        usable bins to fit.
    clip_sigma
        Clipping threshold [σ] of the per-bin variance.
    reject_pixels
        Drop pixels with implausible temporal variance (needs ≥ 3 pairs).
    max_samples
        Bound on the (pixel, pair) samples held in memory: up to all consecutive pairs (at least
        8 when T allows, evenly spaced in time), and, where still too many, every k-th band of
        32 rows.
    offset_percentile
        Share [%] of the darkest pixels (by their neighbours' mean) whose mean value is the
        estimated dark level.

    Returns
    -------
    EstimateResult
        ``method="frame-pairs"``.

    Raises
    ------
    EstimateError
        Not integer, not 3-D, T < 2, frames smaller than 3×3, too few usable samples or bins,
        no intensity range, non-positive or undetermined slope.
    """
    x, bits, adc_max, sha = _check_data(frames, (3,), "frames", bit_depth)
    T, H, W = x.shape
    if T < 2:
        raise EstimateError(f"frames must hold at least 2 frames along axis 0, got {T}")
    if min(H, W) < 3:
        raise EstimateError(f"frames must be at least 3×3 px, got {H}×{W}")
    n_pairs = int(min(T - 1, max(8, max_samples // (H * W))))
    starts = np.unique(np.linspace(0, T - 2, n_pairs).round().astype(int))
    n_pairs = starts.size
    overlapping = n_pairs > 1 and bool(np.all(np.diff(starts) == 1))
    band = 32
    k = int(np.ceil(n_pairs * H * W / max_samples))
    rows = np.flatnonzero((np.arange(H) // band) % k == 0) if k > 1 else np.arange(H)
    interior = (rows > 0) & (rows < H - 1)  # a border pixel's ring would include its reflection

    h = rows.size
    D = np.empty((n_pairs, h, W), np.float32)  # difference
    M = np.empty((n_pairs, h, W), np.float32)  # pair mean
    S = np.empty((n_pairs, h, W), np.float32)  # pair mean of the 8 neighbours (level-set selector)
    V = np.empty((n_pairs, h, W), bool)  # usable: neither value clipped, not on the border
    for i, t in enumerate(starts):
        f0, f1 = x[t].astype(np.float32), x[t + 1].astype(np.float32)
        m = 0.5 * (f0 + f1)
        D[i] = (f1 - f0)[rows]
        M[i] = m[rows]
        S[i] = _ring_mean(m, 1, 3)[rows]
        V[i] = ((f0 > 0) & (f0 < adc_max) & (f1 > 0) & (f1 < adc_max))[rows]
    V[:, ~interior, :] = False
    V[:, :, [0, -1]] = False
    # per-pixel mean over the pairs: a low-noise intensity of each sample's own pixel for the
    # clipping thresholds (uncorrelated with every d = x₁ − x₀, which enters it as x₀ + x₁)
    mean_img = M.mean(axis=0, dtype=np.float64)
    notes: list[str] = []
    if k > 1:
        notes.append(f"memory bound: {n_pairs} pairs on every {k}th band of {band} rows were used")
    off, off_src, off_notes = _offset(
        offset_adu,
        lambda: _dark_level(
            _ring_mean(mean_img, 1, 5)[1:-1, 1:-1], mean_img[1:-1, 1:-1], offset_percentile
        ),
        offset_percentile,
    )
    notes += off_notes
    Mbar = np.broadcast_to(mean_img.astype(np.float32), M.shape)

    # consecutive overlapping differences correlate (−½): fewer effective samples
    corr_factor = 1.5 if overlapping else 1.0

    def fit(keep_px: np.ndarray | None, law: _Law | None):
        valid = V if keep_px is None else V & keep_px[None]
        m = M[valid].astype(np.float64)
        sel = S[valid].astype(np.float64)
        xs = D[valid].astype(np.float64) * np.sqrt(0.5)  # variance σ²(μ)
        if m.size < min_bins * 10:
            raise EstimateError(
                f"too few usable samples ({m.size}) after removing clipped values (0 or "
                f"{adc_max}) and outlying pixels"
            )
        mc = min_count or max(200, m.size // (4 * n_bins))
        bm, bv, bc = _bin_points(
            sel, m, xs, law=law, n_bins=n_bins, min_count=mc, adc_max=adc_max,
            var_of=lambda v, mdl: _clipped_variance(v, mdl, clip_sigma),
            model_at=Mbar[valid].astype(np.float64),
        )
        return (bm, bv, bc, int(m.size)), _fit_bins(bm, bv, bc / corr_factor, min_bins)

    pts, (a, b, cov, s, w) = fit(None, None)
    pts, (a, b, cov, s, w) = fit(None, _law(a, b, pts[1]))
    if reject_pixels and n_pairs >= 3:
        # each pixel's temporal variance against the fit: Σ d²/2 over its pairs has mean Σσ²
        # and variance (2 n + (n − 1)[overlapping]) σ⁴ → a scaled χ² with matched moments
        Vf = V.astype(np.float64)
        s_p = (0.5 * D.astype(np.float64) ** 2 * Vf).sum(axis=0)
        e_p = (_model_var(_law(a, b, pts[1]), M.astype(np.float64)) * Vf).sum(axis=0)
        n_p = Vf.sum(axis=0)
        ratio = s_p / np.maximum(e_p, 1e-12)
        n1 = np.maximum(n_p, 1.0)
        rel_var = (2.0 * n1 + (n1 - 1.0) * (corr_factor > 1)) / n1**2
        dof = 2.0 / rel_var
        keep = (n_p >= 3) & (ratio <= special.chdtri(dof, 1e-4) / dof) & (
            ratio >= special.chdtri(dof, 1.0 - 1e-4) / dof
        )
        n_bad = int(((n_p >= 3) & ~keep).sum())
        if n_bad:
            notes.append(
                f"{n_bad} pixels ({n_bad / n_p.size:.2%}) with implausible temporal variance "
                "(noisy, dead, or moving content) were left out"
            )
            pts, (a, b, cov, s, w) = fit(keep, _law(a, b, pts[1]))
            pts, (a, b, cov, s, w) = fit(keep, _law(a, b, pts[1]))
    bm, bv, bc, n = pts
    notes += _dark_notes(a, b, off)
    return EstimateResult(
        a_adu=a, b_adu2=b, offset_adu=off, offset_source=off_src,
        bin_means=bm, bin_variances=bv, bin_counts=bc, bin_weights=w,
        method="frame-pairs", bit_depth=bits, frame_shape=(H, W), data_sha256=sha,
        a_stderr=float(np.sqrt(cov[0, 0])), b_stderr=float(np.sqrt(cov[1, 1])),
        dispersion=s, n_samples=n, notes=tuple(notes),
    )


# ============================================================================ single image
def _ring_kernels(box: int):
    """Correlation kernels (``box``×``box``, even, centred between pixels like a 2×2 block) of a
    least-squares quadratic surface fitted to the window *without* its central 2×2 block:
    the ring mask, an orthonormal basis of the fit (for its residual) and the estimator of the
    mixed derivative ∂²/∂x∂y at the centre."""
    c = np.arange(box) - (box - 1) / 2.0
    yy, xx = np.meshgrid(c, c, indexing="ij")
    ring = ~((np.abs(xx) < 1) & (np.abs(yy) < 1))
    A = np.stack([np.ones_like(xx), xx, yy, xx * xx, xx * yy, yy * yy], -1)[ring]
    q, _ = np.linalg.qr(A)

    def as_kernel(v: np.ndarray) -> np.ndarray:
        k = np.zeros((box, box))
        k[ring] = v
        return k

    basis = [as_kernel(q[:, j]) for j in range(A.shape[1])]
    return ring.astype(np.float64), basis, as_kernel(np.linalg.pinv(A)[4]), int(ring.sum()) - A.shape[1]


@dataclass
class _Plane:
    z: np.ndarray  # the plane [ADU], float
    d: np.ndarray  # HH detail at 2×2 block centres, (H−1, W−1), unit-norm
    mu: np.ndarray  # block mean (Haar LL): the block's expected value, orthogonal to d
    sel: np.ndarray  # mean of the box around the block without the block (level sets)
    ok: np.ndarray  # not clipped, not at the border
    med8: np.ndarray  # median of each pixel's 8 neighbours
    px_mu: np.ndarray  # local mean at each pixel


def _plane(z: np.ndarray, adc_max: int, box: int) -> _Plane:
    z = z.astype(np.float64)
    f32 = lambda a: a.astype(np.float32)  # storage; exact for 16-bit pixels
    # Haar HH (diagonal) detail with unit ℓ2 norm: cancels constants and linear gradients;
    # its variance is the mean of the four pixels' variances.
    d = 0.5 * (z[:-1, :-1] - z[:-1, 1:] - z[1:, :-1] + z[1:, 1:])
    # The block's mean (Haar LL) is orthogonal to its HH detail; the level sets are chosen by
    # the surroundings (even box centred on the block, without the block), which are
    # independent of the block's noise — see _bin_points.
    mu = 0.25 * (z[:-1, :-1] + z[:-1, 1:] + z[1:, :-1] + z[1:, 1:])
    sel = _ring_mean(z, 2, box)[1:, 1:]
    clipped = (z <= 0) | (z >= adc_max)
    cc = clipped[:-1, :-1] | clipped[:-1, 1:] | clipped[1:, :-1] | clipped[1:, 1:]
    if cc.any():  # keep the whole window clear of clipped pixels
        cc = ndimage.binary_dilation(cc, np.ones((box + 1, box + 1), bool))
    m = box // 2
    ok = ~cc
    ok[:m, :] = ok[-m:, :] = False
    ok[:, :m] = ok[:, -m:] = False
    ring8 = np.ones((3, 3), bool)
    ring8[1, 1] = False
    med8 = ndimage.median_filter(z, footprint=ring8, mode="reflect")
    px_mu = ndimage.uniform_filter(z, size=5, mode="reflect")
    return _Plane(z=f32(z), d=f32(d), mu=f32(mu), sel=f32(sel), ok=ok, med8=f32(med8), px_mu=f32(px_mu))


def _plane_samples(
    p: _Plane, law: _Law | None, box: int, curv_max: float, misfit_max: float, impulse_sigma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sel, mu, d) of the coefficients kept in one plane.

    Without a law: every unclipped coefficient off the border. With one (σ from the law):

    * impulse pixels — farther than ``impulse_sigma`` σ from the median of their 8
      neighbours (hot, noisy, dead pixels; single spots) — drop every coefficient touching
      them and are replaced by that median for the tests below;
    * a quadratic surface is fitted to the ``box``×``box`` window around each block *without
      the block*; the block is kept only where the window is smooth: the fit's residual
      variance is below ``misfit_max`` σ² (no edge, spot or texture inside) and the detail's
      predicted contamination by the scene, |∂²f/∂x∂y| / 2, is below ``curv_max`` σ. Neither
      test sees the block's own pixels, so neither selects on the noise being measured.
    """
    keep = p.ok.copy()
    f64 = lambda a: a[keep].astype(np.float64)
    if law is None:
        return f64(p.sel), f64(p.mu), f64(p.d)
    z, med8 = p.z.astype(np.float64), p.med8.astype(np.float64)
    imp = np.abs(z - med8) > impulse_sigma * np.sqrt(_model_var(law, p.px_mu.astype(np.float64)))
    keep &= ~(imp[:-1, :-1] | imp[:-1, 1:] | imp[1:, :-1] | imp[1:, 1:])
    zc = np.where(imp, med8, z)
    ring, basis, kxy, dof = _ring_kernels(box)
    zc = zc - np.median(zc)  # smaller squares: RSS = Σz² − Σ(projections)² keeps its digits
    corr = lambda img, k: ndimage.correlate(img, k, mode="reflect")[1:, 1:]
    rss = corr(zc * zc, ring)
    for k in basis:
        rss -= corr(zc, k) ** 2
    var = _model_var(law, p.sel.astype(np.float64))
    misfit = rss / dof > misfit_max * var
    curved = 0.5 * np.abs(corr(zc, kxy)) > curv_max * np.sqrt(var)
    keep &= ~misfit & ~curved
    return f64(p.sel), f64(p.mu), f64(p.d)


def estimate_from_image(
    image: np.ndarray,
    *,
    bit_depth: int | None = None,
    offset_adu: float | None = None,
    n_bins: int = 40,
    min_count: int = 300,
    min_bins: int = 5,
    box: int = 6,
    curvature_max: float = 0.15,
    misfit_max: float = 2.0,
    impulse_sigma: float = 4.5,
    passes: int = 3,
    max_pixels: int = 1 << 23,
    offset_percentile: float = 1.0,
) -> EstimateResult:
    """Global noise law from one raw image (or each plane of a z stack), after Foi et al. 2008.

    Per plane:

    1. **Local noise**: the finest-scale Haar diagonal (HH) detail ``(z₀₀ − z₀₁ − z₁₀ + z₁₁)/2``
       of every 2×2 block (undecimated). It has unit ℓ2 norm and cancels constants and linear
       gradients; its variance is the block's mean noise variance.
    2. **Local expectation**: the block's mean (Haar LL, orthogonal to its HH) gives μ; the
       level set a block belongs to is chosen by the mean of the ``box``×``box`` window around
       it *without* the block, which is independent of the block's noise (binning by a noisy
       expectation would bias the points next to a dense background, see :func:`_bin_points`).
    3. **Smooth regions only** (from the second pass, with σ from the previous fit): a
       quadratic surface is least-squares fitted to the same window without the block; the
       block is kept where the fit's residual variance is below ``misfit_max``·σ² (no edge,
       spot or texture in the window) and the detail's predicted contamination by the scene,
       |∂²f/∂x∂y|/2, is below ``curvature_max``·σ. Pixels farther than ``impulse_sigma``·σ
       from the median of their 8 neighbours (hot, noisy, dead pixels, single bright spots)
       are removed with every block touching them. The first pass keeps every block and relies
       on the robust statistics.
    4. **Level sets**: the kept blocks of all planes are pooled and binned (union of equal-count
       and equal-width intervals, merged to ≥ ``min_count``); each bin's variance is the
       median of |detail| (MAD-type: standardised by the previous law, corrected for the
       integer lattice by a one-step dither and for the estimator's finite-sample bias on
       Gaussian noise, see :func:`_mad_variance`).
    5. **Fit** of ``var = a·μ + b`` by the robust heteroscedastic IRLS
       (:func:`_fit_variance_law`); steps 3–5 repeat ``passes`` times.

    A single image cannot tell temporal noise from fixed-pattern noise: per-pixel offset spread
    raises ``b`` (and the read noise); per-pixel gain spread (PRNU) adds PRNU²·μ² to the
    variance and raises ``a`` on bright scenes (by ~PRNU²·μ_max/a). Noisy (RTS) pixels that are
    not outlying enough to be removed raise the mid-range variance. Prefer
    :func:`estimate_from_frames` when a time series of the same scene exists.

    Parameters
    ----------
    image
        ``(H, W)`` or ``(Z, H, W)`` integer raw image [ADU]; for a stack each plane is one
        image and the bins are pooled (all planes from the same camera settings).
    bit_depth
        ADC bit depth [bits]; default the data type's width. Values at 0 or the ADC maximum
        count as clipped: blocks whose window touches them are left out.
    offset_adu
        Camera offset [ADU] when known; default the image's dark level (see the module
        docstring for why it must be chosen).
    n_bins, min_count, min_bins
        Level sets: number of equal-count and of equal-width intervals united; the fewest
        blocks per bin; the fewest usable bins to fit.
    box
        Even size of the window around each block [px] (level sets, smoothness tests).
    curvature_max
        Largest predicted contamination of the detail by the scene [σ].
    misfit_max
        Largest residual variance of the window's quadratic fit [σ²].
    impulse_sigma
        Outlier-pixel threshold [σ].
    passes
        Fit / reject iterations (≥ 1).
    max_pixels
        At most this many pixels are analysed (z planes evenly spaced).
    offset_percentile
        Share [%] of the darkest blocks (by the mean of their surroundings) whose mean value is
        the estimated dark level.

    Returns
    -------
    EstimateResult
        ``method="single-image"``.

    Raises
    ------
    EstimateError
        Not integer, not 2-D/3-D, planes smaller than 16×16, too few usable blocks or bins
        (e.g. nothing smooth), no intensity range (flat image), non-positive or undetermined
        slope.
    """
    x, bits, adc_max, sha = _check_data(image, (2, 3), "image", bit_depth)
    stack = x[None] if x.ndim == 2 else x
    Z, H, W = stack.shape
    if box < 2 or box % 2:
        raise EstimateError(f"box must be an even size ≥ 2, got {box}")
    margin = box // 2
    if min(H, W) < max(16, 4 * margin):
        raise EstimateError(
            f"image planes must be at least {max(16, 4 * margin)} px a side, got {H}×{W}"
        )
    n_planes = int(min(Z, max(1, max_pixels // (H * W))))
    planes_idx = np.unique(np.linspace(0, Z - 1, n_planes).round().astype(int))
    planes = [_plane(stack[z], adc_max, box) for z in planes_idx]

    notes: list[str] = [
        (
            "single-image estimate: fixed-pattern noise (offset and gain non-uniformity) counts "
            "as noise; from a time series of the same scene, frame pairs are more accurate"
        )
    ]
    off, off_src, off_notes = _offset(
        offset_adu,
        lambda: _dark_level(
            np.concatenate([p.sel[p.ok] for p in planes]),
            np.concatenate([p.mu[p.ok] for p in planes]),
            offset_percentile,
        ),
        offset_percentile,
    )
    notes += off_notes

    law: _Law | None = None
    rng = np.random.default_rng(0)  # the dither below: reproducible
    for _ in range(max(1, passes)):
        parts = [
            _plane_samples(p, law, box, curvature_max, misfit_max, impulse_sigma) for p in planes
        ]
        sel = np.concatenate([q[0] for q in parts])
        mu = np.concatenate([q[1] for q in parts])
        d = np.concatenate([q[2] for q in parts])
        if mu.size < min_bins * min_count:
            raise EstimateError(
                f"too few usable samples ({mu.size} smooth, unclipped detail coefficients; need "
                f"{min_bins * min_count}): the image is too small, too textured or clipped"
            )
        # Integer pixels put the detail on a lattice hℤ (h = ½), where a median is quantised
        # (errors of ~10 % in σ at a few ADU). A uniform dither of one lattice step makes it
        # continuous; its known variance h²/12 is subtracted from each bin.
        h = _lattice_step(d)
        if h > 0:
            d = d + rng.uniform(-h / 2, h / 2, d.size)
        bm, bv, bc = _bin_points(
            sel, mu, d, law=law, n_bins=n_bins, min_count=min_count, adc_max=adc_max,
            var_of=_mad_variance, model_at=sel,
        )
        bv = bv - h * h / 12.0
        # MAD efficiency ≈ 37 %: n_eff = n / (2·1.36); shared pixels of undecimated
        # coefficients are absorbed by the fit's dispersion
        a, b, cov, s, w = _fit_bins(bm, bv, bc / (2.0 * _MAD_VAR), min_bins)
        law = _law(a, b, bv)
    n = int(mu.size)
    notes += _dark_notes(a, b, off)
    return EstimateResult(
        a_adu=a, b_adu2=b, offset_adu=off, offset_source=off_src,
        bin_means=bm, bin_variances=bv, bin_counts=bc, bin_weights=w,
        method="single-image", bit_depth=bits, frame_shape=(H, W), data_sha256=sha,
        a_stderr=float(np.sqrt(cov[0, 0])), b_stderr=float(np.sqrt(cov[1, 1])),
        dispersion=s, n_samples=n, notes=tuple(notes),
    )


# ============================================================================ convenience
def estimate_noise_model(
    data: np.ndarray,
    *,
    time_series: bool = False,
    bit_depth: int | None = None,
    offset_adu: float | None = None,
    identity: CameraIdentity | None = None,
    **options: Any,
) -> NoiseModel:
    """Estimate and wrap in an ``estimated=True`` :class:`NoiseModel` in one call.

    Parameters
    ----------
    data
        ``(T, H, W)`` frames when ``time_series`` (→ :func:`estimate_from_frames`), else a
        ``(H, W)`` image or ``(Z, H, W)`` stack (→ :func:`estimate_from_image`); integer ADU.
    time_series
        Treat axis 0 as time.
    bit_depth, offset_adu
        As in the estimators [bits, ADU].
    identity
        Camera identity; default an "unknown (estimated)" identity named by the data's hash.
    **options
        Further keyword arguments of the chosen estimator.
    """
    fn = estimate_from_frames if time_series else estimate_from_image
    res = fn(data, bit_depth=bit_depth, offset_adu=offset_adu, **options)
    return res.to_noise_model(identity=identity)


def datasheet_noise_model(
    shape: tuple[int, int],
    *,
    gain_e_per_adu: float,
    read_noise_e: float,
    offset_adu: float,
    bit_depth: int,
    offset_source: str = "given",
    data_sha256: str = "",
) -> NoiseModel:
    """A global noise model from the camera's published figures, when there is no calibration
    and the data cannot determine one (a narrow intensity range, a dim 8-bit-like image).

    Uniform maps of the given gain [e⁻/ADU], read noise [e⁻ rms] and offset [ADU]; no bad
    pixels, no dark current; flagged ``estimated=True`` with a ``source`` that names the values
    and where they came from, so every report marks it.

    Raises
    ------
    EstimateError
        A value that is not a positive finite number (offset: finite, ≥ 0), or a bad shape.
    """
    h, w = (int(v) for v in shape)
    if min(h, w) < 1:
        raise EstimateError(f"shape must be (H, W) with positive sizes, got {shape}")
    for name, v, lo in (("gain", gain_e_per_adu, 0.0), ("read noise", read_noise_e, 0.0)):
        if not np.isfinite(v) or v <= lo:
            raise EstimateError(f"{name} must be a positive number, got {v}")
    if not np.isfinite(offset_adu) or offset_adu < 0:
        raise EstimateError(f"offset must be ≥ 0 ADU, got {offset_adu}")
    if not 1 <= int(bit_depth) <= 16:
        raise EstimateError(f"bit depth must be 1–16, got {bit_depth}")
    full = lambda v: np.full((h, w), v, np.float32)  # noqa: E731
    return NoiseModel(
        identity=CameraIdentity(name="unknown (datasheet values)", serial="datasheet-" + (data_sha256[:12] or "0"),
                                bit_depth=int(bit_depth), binning=1, roi=(0, 0, w, h)),
        offset_adu=full(offset_adu), gain_e_per_adu=full(gain_e_per_adu), read_noise_e=full(read_noise_e),
        dark_current_e_per_s=None, bad_pixels=np.zeros((h, w), np.uint8), estimated=True,
        source=(f"datasheet: gain {gain_e_per_adu:.5g} e-/ADU, read noise {read_noise_e:.5g} e- rms, offset "
                f"{offset_adu:.5g} ADU ({offset_source}), {int(bit_depth)}-bit; not measured on this camera"),
    )
