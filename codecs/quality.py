"""Every compression quality metric rawgate reports, as plain functions over ndarrays.

Conventions shared by all functions:

* ``reference`` is the original (uncompressed) data, ``test`` the decoded data; both must have
  the same shape (the dtypes may differ). Everything is computed in float64, so integer inputs
  (``uint16`` camera frames) never wrap around or overflow.
* Image metrics (:func:`ssim`, :func:`ms_ssim`) treat the **last two axes** as the image plane
  and report the mean over all leading planes for stacks. Pixel-wise metrics (:func:`psnr`,
  :func:`pearson`, :func:`mean_error` and the σ-based ones) pool all pixels of the whole array.
* ``data_range`` (the ``L`` of PSNR/SSIM) defaults to the full range of the integer dtype of
  ``reference`` (``2**16 - 1 = 65535`` for ``uint16``). A 12-bit camera stored in ``uint16``
  should pass ``bit_depth=12`` (``L = 4095``) or an explicit ``data_range``; floating-point
  input has no implied range and requires one of them.
* The σ-based metrics compare the coding error with the camera's own temporal noise σ [ADU]
  (see :func:`sigma_from_model_adu`): they say how much noise the codec adds *relative to the
  noise already in the data*, which is the yardstick rawgate's ε-gate uses.

Nothing here does I/O or imports other rawgate modules.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

__all__ = [
    "MS_SSIM_WEIGHTS",
    "QualityReport",
    "added_noise_sigma",
    "bias_in_sigma",
    "compression_ratio",
    "mean_error",
    "ms_ssim",
    "pearson",
    "psnr",
    "quality_report",
    "sigma_from_model_adu",
    "snr_cost_db",
    "space_saving",
    "ssim",
]

#: Per-scale exponents of Wang, Simoncelli & Bovik (2003), finest scale first.
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

# SSIM constants of Wang et al. (2004) / Wang, Simoncelli & Bovik (2003).
_K1 = 0.01
_K2 = 0.03
# MS-SSIM Gaussian window: σ = 1.5 px, truncated at 3.5 σ -> radius int(3.5·1.5 + 0.5) = 5,
# i.e. the 11×11 window of the reference MATLAB code (fspecial('gaussian', 11, 1.5)).
_MS_SIGMA = 1.5
_MS_TRUNCATE = 3.5
_MS_RADIUS = int(_MS_TRUNCATE * _MS_SIGMA + 0.5)
_MS_WIN = 2 * _MS_RADIUS + 1
# Largest uniform SSIM window used by `ssim` (scikit-image's default).
_SSIM_MAX_WIN = 7


# --------------------------------------------------------------------------------------------
# helpers


def _pair(reference: Any, test: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as real numeric arrays of one non-empty shape, else ValueError."""
    ref = np.asarray(reference)
    tst = np.asarray(test)
    if ref.shape != tst.shape:
        raise ValueError(f"reference has shape {ref.shape} but test has shape {tst.shape}")
    if ref.size == 0:
        raise ValueError("reference and test are empty")
    for name, a in (("reference", ref), ("test", tst)):
        if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)
                or a.dtype == np.bool_):
            raise ValueError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    return ref, tst


def _blocks(shape: tuple[int, ...]) -> Iterator[tuple[Any, ...]]:
    """Indices that cut an array into 2-D planes (or the whole array when ndim <= 2).

    Pixel-wise sums go plane by plane so that a long uint16 stack is never converted to
    float64 all at once.
    """
    if len(shape) <= 2:
        yield (Ellipsis,)
    else:
        yield from np.ndindex(*shape[:-2])


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _resolve_data_range(reference: np.ndarray, data_range: float | None,
                        bit_depth: int | None) -> float:
    """The dynamic range ``L`` used by PSNR and (MS-)SSIM, in the data's units."""
    if data_range is not None and bit_depth is not None:
        raise ValueError("pass either data_range or bit_depth, not both")
    if bit_depth is not None:
        if isinstance(bit_depth, bool) or not isinstance(bit_depth, (int, np.integer)):
            raise ValueError(f"bit_depth must be an integer, got {bit_depth!r}")
        if not 1 <= int(bit_depth) <= 64:
            raise ValueError(f"bit_depth must be between 1 and 64, got {bit_depth}")
        return float(2 ** int(bit_depth) - 1)
    if data_range is not None:
        L = float(data_range)
        if not (math.isfinite(L) and L > 0):
            raise ValueError(f"data_range must be a positive finite number, got {data_range!r}")
        return L
    if np.issubdtype(reference.dtype, np.integer):
        info = np.iinfo(reference.dtype)
        return float(int(info.max) - int(info.min))
    raise ValueError(
        f"reference has dtype {reference.dtype}, which has no implied range: "
        "pass data_range= or bit_depth="
    )


def _planes(a: np.ndarray) -> np.ndarray:
    """View an (..., H, W) array as (N, H, W)."""
    return a.reshape((-1, *a.shape[-2:]))


def _require_image(ref: np.ndarray, what: str) -> None:
    if ref.ndim < 2:
        raise ValueError(f"{what} needs images with at least 2 dimensions, got shape {ref.shape}")


def _sigma_view(sigma_adu: Any, shape: tuple[int, ...]) -> np.ndarray:
    """σ broadcast (as a view) to the data shape; ValueError unless positive and finite."""
    s = np.asarray(sigma_adu, dtype=np.float64)
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError("sigma_adu must be positive and finite everywhere")
    try:
        return np.broadcast_to(s, shape)
    except ValueError:
        raise ValueError(
            f"sigma_adu with shape {s.shape} does not broadcast to the data shape {shape}"
        ) from None


def _sigma_sums(reference: Any, test: Any, sigma_adu: Any) -> tuple[int, float, float, float]:
    """``n``, ``Σ(test − reference)``, ``Σσ`` and ``Σ((test − reference)/σ)²`` over all pixels."""
    ref, tst = _pair(reference, test)
    sig = _sigma_view(sigma_adu, ref.shape)
    s_d, s_s, s_z2 = [], [], []
    for idx in _blocks(ref.shape):
        d = _f64(tst[idx]) - _f64(ref[idx])
        s = sig[idx]
        s_d.append(float(d.sum()))
        s_s.append(float(s.sum()))
        s_z2.append(float(np.square(d / s).sum()))
    return ref.size, math.fsum(s_d), math.fsum(s_s), math.fsum(s_z2)


# --------------------------------------------------------------------------------------------
# sizes


def _check_nbytes(original_nbytes: float, compressed_nbytes: float) -> tuple[float, float]:
    vals = []
    for name, v in (("original_nbytes", original_nbytes), ("compressed_nbytes", compressed_nbytes)):
        if isinstance(v, bool):
            raise ValueError(f"{name} must be a number of bytes, got {v!r}")
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number of bytes, got {v!r}") from None
        if not (math.isfinite(f) and f > 0):
            raise ValueError(f"{name} must be a positive finite size in bytes, got {v!r}")
        vals.append(f)
    return vals[0], vals[1]


def compression_ratio(original_nbytes: float, compressed_nbytes: float) -> float:
    """Compression ratio: uncompressed size over compressed size.

    ``ratio = original_nbytes / compressed_nbytes`` (dimensionless; 4.0 means "4:1"), the
    definition used e.g. by Zhou, Sollmann & Chen, *Deep-learning-based image compression for
    microscopy images: an empirical study*, Biological Imaging 4, e16 (2024).

    Parameters
    ----------
    original_nbytes : int or float
        Size of the uncompressed data [bytes], > 0.
    compressed_nbytes : int or float
        Size of the compressed data [bytes], > 0.

    Returns
    -------
    float
        The ratio; < 1 when the "compressed" data is larger than the original.

    Raises
    ------
    ValueError
        If either size is not a positive finite number.
    """
    o, c = _check_nbytes(original_nbytes, compressed_nbytes)
    return o / c


def space_saving(original_nbytes: float, compressed_nbytes: float) -> float:
    """Space saving: the size reduction relative to the uncompressed size, as a fraction.

    ``saving = 1 − compressed_nbytes / original_nbytes`` (0.75 means 75 % of the space is
    saved), the companion definition to :func:`compression_ratio` (same reference).

    Parameters
    ----------
    original_nbytes : int or float
        Size of the uncompressed data [bytes], > 0.
    compressed_nbytes : int or float
        Size of the compressed data [bytes], > 0.

    Returns
    -------
    float
        The saving as a fraction in (−∞, 1); negative when the data grew.

    Raises
    ------
    ValueError
        If either size is not a positive finite number.
    """
    o, c = _check_nbytes(original_nbytes, compressed_nbytes)
    return 1.0 - c / o


# --------------------------------------------------------------------------------------------
# fidelity


def psnr(reference: Any, test: Any, *, data_range: float | None = None,
         bit_depth: int | None = None) -> float:
    """Peak signal-to-noise ratio [dB].

    ``PSNR = 10·log10(L² / MSE)`` with ``MSE = mean((test − reference)²)`` over all pixels of
    the whole array (one global MSE for a stack, not a mean of per-plane PSNRs), computed in
    float64.

    Parameters
    ----------
    reference, test : ndarray
        Original and decoded data, same shape, any number of dimensions.
    data_range : float, optional
        ``L`` in the data's units. Default: the full range of the integer dtype of
        ``reference`` (``iinfo.max − iinfo.min``, i.e. ``2**bits − 1``: 65535 for uint16,
        255 for uint8). Required (or ``bit_depth``) for floating-point input.
    bit_depth : int, optional
        Alternative to ``data_range``: ``L = 2**bit_depth − 1`` (e.g. 12 for a 12-bit camera
        stored in uint16). Mutually exclusive with ``data_range``.

    Returns
    -------
    float
        PSNR in dB; ``inf`` when the images are identical.

    Raises
    ------
    ValueError
        Mismatched shapes, empty input, both/neither range given for float data.
    """
    ref, tst = _pair(reference, test)
    L = _resolve_data_range(ref, data_range, bit_depth)
    sse = math.fsum(float(np.square(_f64(tst[i]) - _f64(ref[i])).sum()) for i in _blocks(ref.shape))
    mse = sse / ref.size
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(L * L / mse)


def _ssim_win(h: int, w: int) -> int:
    """Largest odd window ≤ 7 that fits an h×w image; 0 when the image is smaller than 3 px."""
    side = min(h, w, _SSIM_MAX_WIN)
    win = side if side % 2 == 1 else side - 1
    return win if win >= 3 else 0


def ssim(reference: Any, test: Any, *, data_range: float | None = None,
         bit_depth: int | None = None, win_size: int | None = None) -> float:
    """Mean structural similarity index (Wang et al. 2004) via scikit-image.

    Calls :func:`skimage.metrics.structural_similarity` with its defaults: a uniform
    ``win_size × win_size`` window, sample (N − 1) covariances, ``K1 = 0.01``, ``K2 = 0.03``,
    ``C1 = (K1·L)²``, ``C2 = (K2·L)²``, and the mean of the SSIM map excluding a
    ``(win_size − 1)/2`` border. (This is *not* the 11×11 Gaussian window of Wang's reference
    code; :func:`ms_ssim` uses that one.) Inputs are converted to float64 first.

    Parameters
    ----------
    reference, test : ndarray
        Original and decoded image ``(H, W)`` or stack ``(..., H, W)``, same shape. For a
        stack the result is the mean of the per-plane SSIMs over all leading planes.
    data_range, bit_depth
        ``L``, as in :func:`psnr`.
    win_size : int, optional
        Odd window side, 3 ≤ win_size ≤ min(H, W). Default: the largest odd value ≤ 7 that fits
        (7 for images ≥ 7 px on the short side, 5 for 5–6 px, 3 for 3–4 px).

    Returns
    -------
    float
        Dimensionless SSIM in [−1, 1]; 1 for identical images. NaN (no exception) when the
        short side is < 3 px and no ``win_size`` was given, since no valid window exists.

    Raises
    ------
    ValueError
        Mismatched shapes, fewer than 2 dimensions, bad ``win_size``, missing range for
        float data.
    """
    ref, tst = _pair(reference, test)
    _require_image(ref, "ssim")
    L = _resolve_data_range(ref, data_range, bit_depth)
    h, w = ref.shape[-2:]
    if win_size is None:
        win = _ssim_win(h, w)
        if win == 0:
            return math.nan
    else:
        win = int(win_size)
        if win != win_size or win < 3 or win % 2 == 0 or win > min(h, w):
            raise ValueError(
                f"win_size must be an odd integer with 3 <= win_size <= {min(h, w)}, "
                f"got {win_size!r}"
            )
    vals = [
        float(structural_similarity(_f64(r), _f64(t), win_size=win, data_range=L))
        for r, t in zip(_planes(ref), _planes(tst), strict=True)
    ]
    return float(np.mean(vals))


# MS-SSIM is written out by hand: scikit-image has no multi-scale SSIM, and the common
# implementations (pytorch_msssim, torchmetrics, piq, tf.image.ssim_multiscale) need torch or
# tensorflow. This follows Wang's reference MATLAB code (msssim.m / ssim_index_new.m).


def _gauss(a: np.ndarray) -> np.ndarray:
    return gaussian_filter(a, sigma=_MS_SIGMA, truncate=_MS_TRUNCATE, mode="reflect")


def _cs_and_ssim(x: np.ndarray, y: np.ndarray, C1: float, C2: float,
                 with_luminance: bool) -> tuple[float, float]:
    """Mean contrast-structure term and (optionally) mean SSIM over the 'valid' region.

    Filtering with mode='reflect' and then cropping the window radius is exactly a 'valid'
    convolution: only pixels whose whole 11×11 window lies inside the image are averaged.
    Population (biased) moments, as in Wang et al.
    """
    mx, my = _gauss(x), _gauss(y)
    vx = _gauss(x * x) - mx * mx
    vy = _gauss(y * y) - my * my
    vxy = _gauss(x * y) - mx * my
    r = _MS_RADIUS
    crop = (slice(r, -r), slice(r, -r))
    cs = ((2.0 * vxy + C2) / (vx + vy + C2))[crop]
    mean_cs = float(cs.mean())
    if not with_luminance:
        return mean_cs, math.nan
    lum = ((2.0 * mx * my + C1) / (mx * mx + my * my + C1))[crop]
    return mean_cs, float((lum * cs).mean())


def _downsample2(a: np.ndarray) -> np.ndarray:
    """2×2 block average with stride 2; an odd last row/column is averaged with itself.

    Same as the reference code's ``imfilter(im, ones(2)/4, 'symmetric')`` followed by
    ``im(1:2:end, 1:2:end)``; output size ``ceil(H/2) × ceil(W/2)``.
    """
    if a.shape[0] % 2:
        a = np.concatenate([a, a[-1:, :]], axis=0)
    if a.shape[1] % 2:
        a = np.concatenate([a, a[:, -1:]], axis=1)
    return 0.25 * (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2])


def _n_scales(h: int, w: int, max_scales: int) -> int:
    """How many scales (finest first) still hold a whole 11×11 window."""
    n = 0
    while n < max_scales and min(h, w) >= _MS_WIN:
        n += 1
        h, w = (h + 1) // 2, (w + 1) // 2
    return n


def ms_ssim(reference: Any, test: Any, *, data_range: float | None = None,
            bit_depth: int | None = None,
            weights: Sequence[float] = MS_SSIM_WEIGHTS) -> float:
    """Multi-scale SSIM of Wang, Simoncelli & Bovik (2003).

    Definition, for ``M`` scales ``j = 1 … M`` (``j = 1`` the full-resolution image)::

        MS-SSIM = [ SSIM_M ]^{w_M} · Π_{j<M} [ CS_j ]^{w_j}

    where, with Gaussian-weighted local means μ, population variances σ² and covariance σ_xy
    (window σ = 1.5 px truncated at 3.5 σ, i.e. 11×11), ``C1 = (0.01·L)²``, ``C2 = (0.03·L)²``:

    * ``CS_j`` = mean over the valid region (pixels whose whole window is inside the image) of
      ``(2σ_xy + C2) / (σ_x² + σ_y² + C2)`` — the contrast–structure term at scale j;
    * ``SSIM_M`` = mean of ``(2μ_xμ_y + C1)/(μ_x² + μ_y² + C1) · (2σ_xy + C2)/(σ_x² + σ_y² + C2)``
      at the coarsest scale — luminance enters only there;
    * scale ``j + 1`` is scale ``j`` averaged over 2×2 blocks (stride 2; an odd last row or
      column is averaged with itself).

    Negative ``CS_j`` / ``SSIM_M`` values (possible for anti-correlated content) are clipped to 0
    before the power, as pytorch_msssim and similar implementations do, so the result is real
    and lies in [0, 1].

    **Small images.** Each scale needs a short side ≥ 11 px. When the image is too small for
    ``len(weights)`` scales (≥ 176 px for the default 5), only the first ``M`` scales that fit
    are used and their weights are renormalised to sum to 1 (``w_j / Σ_{k≤M} w_k``); with all
    scales available the weights are used as given (the default ones sum to 1.0001, as in the
    paper). ``M = 1`` therefore reduces to single-scale SSIM with the 11×11 Gaussian window
    (equal to ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``). Images with a short side < 11 px give NaN.

    Parameters
    ----------
    reference, test : ndarray
        Original and decoded image ``(H, W)`` or stack ``(..., H, W)``, same shape. For a stack
        the result is the mean over all leading planes.
    data_range, bit_depth
        ``L``, as in :func:`psnr`.
    weights : sequence of float
        Exponents ``w_j``, finest scale first; their number is the maximum number of scales.
        Default: Wang et al.'s ``(0.0448, 0.2856, 0.3001, 0.2363, 0.1333)``.

    Returns
    -------
    float
        Dimensionless MS-SSIM in [0, 1]; 1 for identical images; NaN for images < 11 px.

    Raises
    ------
    ValueError
        Mismatched shapes, fewer than 2 dimensions, invalid weights, missing range for
        float data.
    """
    ref, tst = _pair(reference, test)
    _require_image(ref, "ms_ssim")
    L = _resolve_data_range(ref, data_range, bit_depth)
    wts = np.asarray(weights, dtype=np.float64)
    if wts.ndim != 1 or wts.size == 0 or not np.all(np.isfinite(wts)) or np.any(wts < 0):
        raise ValueError(
            f"weights must be a non-empty sequence of finite values >= 0, got {weights!r}"
        )
    h, w = ref.shape[-2:]
    M = _n_scales(h, w, wts.size)
    if M == 0:
        return math.nan
    if M < wts.size:
        total = wts[:M].sum()
        if total <= 0:
            raise ValueError(f"the weights of the {M} usable scales sum to 0")
        wts = wts[:M] / total
    C1 = (_K1 * L) ** 2
    C2 = (_K2 * L) ** 2
    vals = []
    for r, t in zip(_planes(ref), _planes(tst), strict=True):
        x, y = _f64(r), _f64(t)
        value = 1.0
        for j in range(M):
            last = j == M - 1
            cs, s = _cs_and_ssim(x, y, C1, C2, with_luminance=last)
            term = s if last else cs
            value *= max(term, 0.0) ** wts[j]
            if not last:
                x, y = _downsample2(x), _downsample2(y)
        vals.append(value)
    return float(np.mean(vals))


def pearson(reference: Any, test: Any) -> float:
    """Pearson correlation coefficient between reference and test over all pixels.

    ``r = Σ(x − x̄)(y − ȳ) / sqrt(Σ(x − x̄)² · Σ(y − ȳ)²)`` over every pixel of the whole array
    (stacks are pooled), computed in float64.

    Parameters
    ----------
    reference, test : ndarray
        Same shape, any number of dimensions.

    Returns
    -------
    float
        Dimensionless r in [−1, 1]; 1 for any increasing linear map ``test = a·reference + b``.
        NaN when either input is constant (its variance is 0 and r is undefined), which
        includes single-pixel inputs.

    Raises
    ------
    ValueError
        Mismatched shapes or empty input.
    """
    ref, tst = _pair(reference, test)
    if ref.max() == ref.min() or tst.max() == tst.min():
        return math.nan
    mx = float(np.mean(ref, dtype=np.float64))
    my = float(np.mean(tst, dtype=np.float64))
    sxy, sxx, syy = [], [], []
    for idx in _blocks(ref.shape):
        dx = _f64(ref[idx]) - mx
        dy = _f64(tst[idx]) - my
        sxy.append(float(np.vdot(dx, dy)))
        sxx.append(float(np.vdot(dx, dx)))
        syy.append(float(np.vdot(dy, dy)))
    r = math.fsum(sxy) / math.sqrt(math.fsum(sxx) * math.fsum(syy))
    return float(min(1.0, max(-1.0, r)))


def mean_error(reference: Any, test: Any) -> float:
    """Mean signed error (bias) ``mean(test − reference)`` in the data's units (ADU for raw data).

    The difference is formed in float64, so uint16 inputs neither wrap nor overflow
    (``test < reference`` gives a negative error).

    Parameters
    ----------
    reference, test : ndarray
        Same shape, any number of dimensions.

    Returns
    -------
    float
        The bias; positive when the decoded data is brighter on average.

    Raises
    ------
    ValueError
        Mismatched shapes or empty input.
    """
    ref, tst = _pair(reference, test)
    total = math.fsum(float((_f64(tst[i]) - _f64(ref[i])).sum()) for i in _blocks(ref.shape))
    return total / ref.size


# --------------------------------------------------------------------------------------------
# noise-referenced metrics


def sigma_from_model_adu(reference: Any, offset_adu: Any, gain_e_per_adu: Any,
                         read_noise_e: Any) -> np.ndarray:
    """Per-pixel temporal noise σ [ADU] of a Poisson–Gaussian camera at the observed signal.

    ``σ = sqrt(max((x − offset_adu)·gain_e_per_adu, 0) + read_noise_e²) / gain_e_per_adu``

    i.e. shot noise of the photo-electrons ``(x − offset)·gain`` [e⁻] (negative signals, from
    noise below the offset, count as 0) plus read noise [e⁻ rms], converted back to ADU.
    ``x`` is the observed (reference) value, used as the estimate of the mean signal.
    Quantisation noise of the ADC (1/12 ADU²) and dark-current shot noise beyond what is in
    ``x`` are not added.

    Parameters
    ----------
    reference : ndarray
        Observed frame ``(H, W)`` or stack ``(..., H, W)`` [ADU].
    offset_adu : float or ndarray
        Dark offset [ADU], scalar or per-pixel map broadcastable to ``reference`` (an
        ``(H, W)`` map broadcasts over the leading axes of a stack).
    gain_e_per_adu : float or ndarray
        Conversion gain [e⁻/ADU] (the inverse of EMVA 1288's K [ADU/e⁻]), > 0, same
        broadcasting.
    read_noise_e : float or ndarray
        Read noise [e⁻ rms], ≥ 0, same broadcasting.

    Returns
    -------
    ndarray
        float64 σ [ADU] with the shape of ``reference``.

    Raises
    ------
    ValueError
        Non-positive or non-finite gain, negative or non-finite read noise, or parameters that
        do not broadcast to the shape of ``reference``.
    """
    x = np.asarray(reference, dtype=np.float64)
    off = np.asarray(offset_adu, dtype=np.float64)
    g = np.asarray(gain_e_per_adu, dtype=np.float64)
    rn = np.asarray(read_noise_e, dtype=np.float64)
    if not (np.all(np.isfinite(g)) and np.all(g > 0)):
        raise ValueError("gain_e_per_adu must be positive and finite everywhere")
    if not (np.all(np.isfinite(rn)) and np.all(rn >= 0)):
        raise ValueError("read_noise_e must be non-negative and finite everywhere")
    try:
        shape = np.broadcast_shapes(x.shape, off.shape, g.shape, rn.shape)
    except ValueError:
        shape = None
    if shape != x.shape:
        raise ValueError(
            f"offset {off.shape}, gain {g.shape} and read noise {rn.shape} must broadcast "
            f"to the shape of reference {x.shape}"
        )
    electrons = np.maximum((x - off) * g, 0.0)
    return np.sqrt(electrons + rn * rn) / g


def bias_in_sigma(reference: Any, test: Any, sigma_adu: Any) -> float:
    """Mean error over mean noise σ: ``mean(test − reference) / mean(σ)`` (dimensionless).

    How large the codec's systematic offset is compared with the typical temporal noise; a
    perfect unbiased codec gives ≈ 0 (sign: positive when the decoded data is brighter).

    Parameters
    ----------
    reference, test : ndarray
        Original and decoded data [ADU], same shape.
    sigma_adu : float or ndarray
        Per-pixel noise σ [ADU] (e.g. from :func:`sigma_from_model_adu`), > 0 and finite,
        broadcastable to the data shape; ``mean(σ)`` is taken over the broadcast shape.

    Returns
    -------
    float
        The bias in units of σ.

    Raises
    ------
    ValueError
        Mismatched shapes, σ not positive/finite, σ not broadcastable.
    """
    _, s_d, s_s, _ = _sigma_sums(reference, test, sigma_adu)
    return s_d / s_s


def added_noise_sigma(reference: Any, test: Any, sigma_adu: Any) -> float:
    """RMS coding error in units of the per-pixel noise: ``sqrt(mean(((test − reference)/σ)²))``.

    Dimensionless; 0 for a lossless codec. Uniform quantisation with step ``2σ`` gives
    ``sqrt((2σ)²/12)/σ = 2/sqrt(12) ≈ 0.577``. Includes any bias (it is an RMS, not a std).

    Parameters
    ----------
    reference, test : ndarray
        Original and decoded data [ADU], same shape.
    sigma_adu : float or ndarray
        Per-pixel noise σ [ADU], > 0 and finite, broadcastable to the data shape.

    Returns
    -------
    float
        The normalised RMS error.

    Raises
    ------
    ValueError
        Mismatched shapes, σ not positive/finite, σ not broadcastable.
    """
    n, _, _, s_z2 = _sigma_sums(reference, test, sigma_adu)
    return math.sqrt(s_z2 / n)


def snr_cost_db(reference: Any, test: Any, sigma_adu: Any) -> float:
    """SNR lost to coding [dB]: ``10·log10(1 + mean(((test − reference)/σ)²))``.

    If the coding error e is independent of the camera noise n, the decoded data carries noise
    of variance ``σ² + e²`` instead of ``σ²``, so the SNR drops by ``10·log10(1 + e²/σ²)``
    (averaged per pixel in units of each pixel's σ). Anchor: uniform quantisation with step
    ``2σ`` adds ``(2σ)²/12 = σ²/3``, i.e. ``10·log10(4/3) ≈ 1.249 dB``. 0 dB for a lossless
    codec.

    Parameters
    ----------
    reference, test : ndarray
        Original and decoded data [ADU], same shape.
    sigma_adu : float or ndarray
        Per-pixel noise σ [ADU], > 0 and finite, broadcastable to the data shape.

    Returns
    -------
    float
        The SNR cost in dB (≥ 0).

    Raises
    ------
    ValueError
        Mismatched shapes, σ not positive/finite, σ not broadcastable.
    """
    n, _, _, s_z2 = _sigma_sums(reference, test, sigma_adu)
    return 10.0 * math.log10(1.0 + s_z2 / n)


# --------------------------------------------------------------------------------------------
# report


@dataclass(frozen=True)
class QualityReport:
    """All quality figures of one compressed array.

    Attributes
    ----------
    original_nbytes, compressed_nbytes : int
        Sizes [bytes].
    compression_ratio : float
        original / compressed (:func:`compression_ratio`).
    space_saving : float
        1 − compressed / original, a fraction (:func:`space_saving`).
    data_range : float
        ``L`` used for PSNR/SSIM/MS-SSIM, in the data's units.
    psnr_db : float
        :func:`psnr` [dB]; ``inf`` when lossless.
    ssim : float
        :func:`ssim` (NaN for images < 3 px).
    ms_ssim : float
        :func:`ms_ssim` (NaN for images < 11 px).
    pearson : float
        :func:`pearson` (NaN when either input is constant).
    mean_error : float
        :func:`mean_error`, in the data's units (ADU for raw frames).
    bias_in_sigma, added_noise_sigma : float or None
        :func:`bias_in_sigma`, :func:`added_noise_sigma` (dimensionless); None without σ.
    snr_cost_db : float or None
        :func:`snr_cost_db` [dB]; None without σ.
    """

    original_nbytes: int
    compressed_nbytes: int
    compression_ratio: float
    space_saving: float
    data_range: float
    psnr_db: float
    ssim: float
    ms_ssim: float
    pearson: float
    mean_error: float
    bias_in_sigma: float | None = None
    added_noise_sigma: float | None = None
    snr_cost_db: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain ``dict`` of Python ints/floats/None.

        Non-finite values are kept as ``float('inf')`` / ``float('nan')``; a strict-JSON
        writer must map them itself.
        """
        return asdict(self)


def quality_report(reference: Any, test: Any, *, original_nbytes: int, compressed_nbytes: int,
                   sigma_adu: Any = None, data_range: float | None = None,
                   bit_depth: int | None = None) -> QualityReport:
    """Compute every metric of this module for one reference/test pair.

    Parameters
    ----------
    reference, test : ndarray
        Original and decoded image ``(H, W)`` or stack ``(..., H, W)``, same shape.
    original_nbytes, compressed_nbytes : int
        Uncompressed and compressed sizes [bytes], > 0.
    sigma_adu : float or ndarray, optional
        Per-pixel noise σ [ADU] for the noise-referenced metrics (see
        :func:`sigma_from_model_adu`); when None those fields are None.
    data_range, bit_depth
        ``L`` for PSNR/SSIM/MS-SSIM, as in :func:`psnr` (at most one of them).

    Returns
    -------
    QualityReport

    Raises
    ------
    ValueError
        From any of the metrics (mismatched shapes, bad sizes, bad σ, missing range …).
    """
    ref, tst = _pair(reference, test)
    _require_image(ref, "quality_report")
    ratio = compression_ratio(original_nbytes, compressed_nbytes)  # validates the sizes
    saving = space_saving(original_nbytes, compressed_nbytes)
    for name, v in (("original_nbytes", original_nbytes), ("compressed_nbytes", compressed_nbytes)):
        if not float(v).is_integer():
            raise ValueError(f"{name} must be a whole number of bytes, got {v!r}")
    L = _resolve_data_range(ref, data_range, bit_depth)
    bias = added = cost = None
    if sigma_adu is not None:
        n, s_d, s_s, s_z2 = _sigma_sums(ref, tst, sigma_adu)
        bias = s_d / s_s
        added = math.sqrt(s_z2 / n)
        cost = 10.0 * math.log10(1.0 + s_z2 / n)
    return QualityReport(
        original_nbytes=int(original_nbytes),
        compressed_nbytes=int(compressed_nbytes),
        compression_ratio=float(ratio),
        space_saving=float(saving),
        data_range=float(L),
        psnr_db=psnr(ref, tst, data_range=L),
        ssim=ssim(ref, tst, data_range=L),
        ms_ssim=ms_ssim(ref, tst, data_range=L),
        pearson=pearson(ref, tst),
        mean_error=mean_error(ref, tst),
        bias_in_sigma=bias,
        added_noise_sigma=added,
        snr_cost_db=cost,
    )
