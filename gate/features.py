"""ilastik's pixel features: Gaussian-derivative filter responses at several scales.

The same filter bank feeds the random-forest segmenter and the model-free ε (Pomarico et al.
2022, Fig. 4f,g), so both see the image the same way. Definitions (``σ`` a scale in pixels,
``G_σ`` the Gaussian of standard deviation ``σ``; derivatives are Gaussian derivatives):

====== ============================================ ===========================
kind   response                                     channels (2-D / 3-D)
====== ============================================ ===========================
GS     Gaussian smoothing ``G_σ * I``               1 / 1
LoG    Laplacian of Gaussian ``Σ_i ∂²_i (G_σ * I)``  1 / 1
GGM    Gaussian gradient magnitude ``‖∇(G_σ * I)‖``  1 / 1
DoG    ``G_σ * I − G_{0.66σ} * I``                   1 / 1
STE    structure-tensor eigenvalues: gradient at     2 / 3
       inner scale ``σ``, tensor smoothed at outer
       scale ``0.5σ``; descending
HoGE   Hessian-of-Gaussian eigenvalues at ``σ``;     2 / 3
       descending
====== ============================================ ===========================

These follow ilastik's pixel-classification feature set (vigra's filters) in kind and scale;
values are not scale-normalised, as in vigra. The 2-D/3-D choice is the image's number of
dimensions. Everything is float32 and pure numpy/scipy; the Gaussian derivatives are built
separably, one 1-D pass per axis and derivative order, so every derivative up to order 2 at one
scale costs ``ndim·(ndim+3)/2 + …`` 1-D passes instead of a full 2-D filter each (scipy has no
"all derivatives at once" filter, hence the small hand-written combinator below).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._filters import gaussian_filter1d

__all__ = ["KINDS", "FILTER_KINDS", "FeatureSpec", "compute_features", "feature_names", "noise_power"]

#: Feature kinds, in the order their channels appear.
KINDS: tuple[str, ...] = ("GS", "LoG", "GGM", "DoG", "STE", "HoGE")
#: The scalar filter responses the model-free ε is computed on (Pomarico et al. Fig. 4f,g).
FILTER_KINDS: tuple[str, ...] = ("GS", "LoG", "GGM", "DoG")
#: Ratio of the inner Gaussian of the difference of Gaussians to ``σ`` (ilastik's 0.66).
DOG_RATIO = 0.66
#: Outer (tensor-smoothing) scale of the structure tensor relative to ``σ`` (ilastik's 0.5).
ST_OUTER_RATIO = 0.5
#: Gaussian kernels are truncated at this many standard deviations (scipy's default).
TRUNCATE = 4.0


def _channels(kind: str, ndim: int) -> int:
    return ndim if kind in ("STE", "HoGE") else 1


@dataclass(frozen=True)
class FeatureSpec:
    """Which features at which scales.

    Parameters
    ----------
    scales
        Gaussian scales σ [pixels], each > 0 (ilastik offers 0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0).
    kinds
        Subset of :data:`KINDS`, computed at every scale.
    """

    scales: tuple[float, ...] = (0.7, 1.6, 3.5)
    kinds: tuple[str, ...] = KINDS

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        object.__setattr__(self, "kinds", tuple(str(k) for k in self.kinds))
        if not self.scales:
            raise ValueError("FeatureSpec needs at least one scale")
        if any(not np.isfinite(s) or s <= 0 for s in self.scales):
            raise ValueError(f"scales must be finite and > 0 pixels, got {self.scales}")
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"unknown feature kinds {unknown}; known: {list(KINDS)}")
        # canonical order, so two specs with the same content name the same channels
        object.__setattr__(self, "kinds", tuple(k for k in KINDS if k in self.kinds))

    def n_features(self, ndim: int) -> int:
        """Number of channels for an image of ``ndim`` dimensions."""
        return len(self.scales) * sum(_channels(k, ndim) for k in self.kinds)

    def get_config(self) -> dict[str, Any]:
        return {"scales": list(self.scales), "kinds": list(self.kinds)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "FeatureSpec":
        return cls(scales=tuple(config["scales"]), kinds=tuple(config["kinds"]))


def feature_names(spec: FeatureSpec, ndim: int) -> list[str]:
    """Channel names in the order :func:`compute_features` returns them, e.g. ``LoG σ=1.6``."""
    names = []
    for s in spec.scales:
        for k in spec.kinds:
            n = _channels(k, ndim)
            names += [f"{k} σ={s:g}"] if n == 1 else [f"{k}{i} σ={s:g}" for i in range(n)]
    return names


def _derivatives(image: np.ndarray, sigma: float, max_order: int) -> dict[tuple[int, ...], np.ndarray]:
    """All Gaussian derivatives of total order ≤ ``max_order`` at ``sigma``, built separably.

    Returns a dict keyed by the per-axis derivative orders, e.g. ``(1, 0)`` = ∂/∂row.
    """
    level: dict[tuple[int, ...], np.ndarray] = {(): image}
    for _axis in range(image.ndim):
        nxt: dict[tuple[int, ...], np.ndarray] = {}
        for key, arr in level.items():
            used = sum(key)
            for order in range(max_order - used + 1):
                nxt[key + (order,)] = gaussian_filter1d(arr, sigma, _axis, order, TRUNCATE)
        level = nxt
    return level


def _gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along every axis (scipy's ``gaussian_filter``, mode ``reflect``)."""
    out = image
    for axis in range(image.ndim):
        out = gaussian_filter1d(out, sigma, axis, 0, TRUNCATE)
    return out


def _sym_eigvals(elements: dict[tuple[int, int], np.ndarray], ndim: int) -> list[np.ndarray]:
    """Eigenvalues (descending) of a field of symmetric matrices given by their upper elements."""
    if ndim == 2:
        a, b, c = elements[(0, 0)], elements[(0, 1)], elements[(1, 1)]
        half_tr = 0.5 * (a + c)
        disc = np.sqrt(0.25 * (a - c) ** 2 + b * b)
        return [half_tr + disc, half_tr - disc]
    # closed form for symmetric 3×3 (Smith 1961): with numpy's eigvalsh on the field of small
    # matrices the whole 3-D bank of a 16×256×256 stack took 4.3 s, with this 1.7 s; computed in float64 to keep the cancellation near repeated roots small
    a00, a11, a22 = (elements[(i, i)].astype(np.float64) for i in range(3))
    a01, a02, a12 = (elements[k].astype(np.float64) for k in ((0, 1), (0, 2), (1, 2)))
    q = (a00 + a11 + a22) / 3.0
    b00, b11, b22 = a00 - q, a11 - q, a22 - q
    p1 = a01 * a01 + a02 * a02 + a12 * a12
    p = np.sqrt((b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * p1) / 6.0)
    safe = np.where(p > 0, p, 1.0)
    det = (
        b00 * (b11 * b22 - a12 * a12) - a01 * (a01 * b22 - a12 * a02) + a02 * (a01 * a12 - b11 * a02)
    ) / (safe**3)
    phi = np.arccos(np.clip(det / 2.0, -1.0, 1.0)) / 3.0
    e1 = q + 2.0 * p * np.cos(phi)
    e3 = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    e2 = 3.0 * q - e1 - e3
    return [e.astype(np.float32) for e in (e1, e2, e3)]


def compute_features(image: np.ndarray, spec: FeatureSpec | None = None) -> np.ndarray:
    """Compute the feature stack of a 2-D or 3-D image.

    Parameters
    ----------
    image
        ``(H, W)`` or ``(Z, H, W)`` image, any real dtype (ADU for camera data).
    spec
        Features and scales; default :class:`FeatureSpec`.

    Returns
    -------
    ndarray
        ``(n_features, *image.shape)`` float32, channels in :func:`feature_names` order.
    """
    spec = spec or FeatureSpec()
    img = np.asarray(image)
    if img.ndim not in (2, 3):
        raise ValueError(f"features need a 2-D or 3-D image, got shape {img.shape}")
    if not np.issubdtype(img.dtype, np.number) or np.issubdtype(img.dtype, np.complexfloating):
        raise ValueError(f"features need a real-valued image, got dtype {img.dtype}")
    img = img.astype(np.float32, copy=False)
    nd = img.ndim
    out = np.empty((spec.n_features(nd), *img.shape), np.float32)
    ch = 0
    unit = [tuple(int(a == i) for a in range(nd)) for i in range(nd)]
    max_order = 2 if {"LoG", "HoGE"} & set(spec.kinds) else (1 if {"GGM", "STE"} & set(spec.kinds) else 0)
    for s in spec.scales:
        d = _derivatives(img, s, max_order)
        g0 = d[(0,) * nd]
        for kind in spec.kinds:
            if kind == "GS":
                out[ch] = g0
            elif kind == "LoG":
                out[ch] = sum(d[tuple(2 * u for u in e)] for e in unit)
            elif kind == "GGM":
                out[ch] = np.sqrt(sum(d[e] * d[e] for e in unit))
            elif kind == "DoG":
                out[ch] = g0 - _gaussian(img, DOG_RATIO * s)
            elif kind == "STE":
                outer = ST_OUTER_RATIO * s
                el = {
                    (i, j): _gaussian(d[unit[i]] * d[unit[j]], outer)
                    for i, j in itertools.combinations_with_replacement(range(nd), 2)
                }
                for ev in _sym_eigvals(el, nd):
                    out[ch] = ev
                    ch += 1
                continue
            elif kind == "HoGE":
                el = {
                    (i, j): d[tuple(a + b for a, b in zip(unit[i], unit[j]))]
                    for i, j in itertools.combinations_with_replacement(range(nd), 2)
                }
                for ev in _sym_eigvals(el, nd):
                    out[ch] = ev
                    ch += 1
                continue
            ch += 1
    assert ch == out.shape[0]
    return out


def noise_power(image: np.ndarray, sample: np.ndarray | None = None) -> float:
    """High-frequency power of an image: the median of the squared in-plane residual
    ``x − mean(4 neighbours)`` [ADU²], over ``sample`` (flat indices) or all pixels.

    For white noise of variance v the residual's variance is 1.25·v; structure (edges) adds to
    it, and the median keeps the estimate on the flat majority of pixels. Only ratios of this
    figure between images of the same scene are meaningful (:func:`..epsilon.noise_epsilon`).
    Boundary pixels use their nearest neighbours' values (edge padding).
    """
    x = np.asarray(image)
    if x.size == 0:
        return 0.0
    flat = np.arange(x.size) if sample is None else np.asarray(sample, np.intp)
    # only the sampled pixels and their neighbours are read: no padded float copy of a 2048² frame
    *lead, y, xx = np.unravel_index(flat, x.shape)
    h, w = x.shape[-2:]

    def at(yy: np.ndarray, xs: np.ndarray) -> np.ndarray:  # edge padding = clipped indices
        return x[(*lead, np.clip(yy, 0, h - 1), np.clip(xs, 0, w - 1))].astype(np.float64)

    r = at(y, xx) - 0.25 * (at(y - 1, xx) + at(y + 1, xx) + at(y, xx - 1) + at(y, xx + 1))
    return float(np.median(r * r)) if r.size else 0.0
