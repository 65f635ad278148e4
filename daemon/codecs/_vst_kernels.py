"""Fused per-pixel kernels of the noise-calibrated codec (numba).

Why hand-written: the forward path (affine map to electrons, generalised Anscombe square root,
dither, quantisation, narrowing cast, exception marking) and the inverse (dither removal, inverse
transform, curvature correction, rounding, clipping) are each ~10 elementwise steps. numpy makes
one pass over the frame per step with float temporaries; one fused pass is 5–10× faster, and
blocking rows × planes keeps the per-pixel parameters in cache for a whole stack. No library
offers a per-pixel variance-stabilising quantiser with subtractive dither.

Conventions (per pixel; ``w`` is the stabilised value in units of the quantisation step Δ):

* forward ``w(x) = sqrt(alpha·x + beta)`` for ``x ≥ offset`` and its tangent below,
  ``w(x) = v0 + alpha·(x − offset)/(2·v0)`` with ``v0 = sqrt(alpha·offset + beta)``
  (``alpha = 4·gain/Δ²``, ``beta = 4·(read_noise² − gain·offset)/Δ²``; see ``noisecal.py``);
* the dither ``u ∈ [−½, ½)`` of pixel ``i`` in plane ``p`` is a counter-based hash of
  ``(seed, p, i)`` (lowbias32), so encoder and decoder regenerate it without storing it;
* code ``k = floor(w + u + ½) − kbase``; the decoder's estimate is ``ŵ = k + kbase − u``, whose
  error is uniform on [−½, ½) and independent of the signal;
* code ``marker`` (the largest value of the code dtype) flags a pixel stored exactly instead
  (saturated, or outside the code range).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["forward", "inverse", "apply_residuals", "gather_marked",
           "scatter_marked", "dither", "plane_key"]

_BLOCK_ROWS = 16


@njit(inline="always", cache=True)
def _mix32(h):
    # lowbias32 (C. Wellons): a well-tested 32-bit integer hash with 32-bit multiplies only,
    # so the loop vectorises.
    h = np.uint32(h)
    h ^= h >> np.uint32(16)
    h = np.uint32(h * np.uint32(0x7FEB352D))
    h ^= h >> np.uint32(15)
    h = np.uint32(h * np.uint32(0x846CA68B))
    h ^= h >> np.uint32(16)
    return h


@njit(inline="always", cache=True)
def _u(key, i):
    h = _mix32(np.uint32(np.uint32(i) * np.uint32(0x9E3779B1)) ^ key)
    return np.float32(h >> np.uint32(8)) * np.float32(1.0 / 16777216.0) + np.float32(
        0.5 / 16777216.0 - 0.5
    )


@njit(cache=True)
def plane_key(seed, plane):
    """32-bit key of one plane, derived from the 64-bit stream seed."""
    lo = np.uint32(np.uint64(seed) & np.uint64(0xFFFFFFFF))
    hi = np.uint32(np.uint64(seed) >> np.uint64(32))
    k = _mix32(lo ^ np.uint32(0x85EBCA6B))
    k = _mix32(k ^ hi)
    return _mix32(k ^ np.uint32(np.uint32(plane) * np.uint32(0xC2B2AE35) + np.uint32(1)))


@njit(parallel=True, fastmath=True, cache=True)
def forward(x, alpha, beta, offset, seed, plane0, kbase, marker, sat_adu, out, nmarked,
            bad_mask, bad_row_start, residual, xmax):
    """Stabilise, dither and quantise a stack ``x`` ``(P, H, W)`` into codes ``out``.

    Pixels at or above ``sat_adu`` and codes outside ``[0, marker)`` get ``marker``;
    ``nmarked[p, r]`` counts them per row. At the model's bad pixels (``bad_mask``, numbered in
    raster order from ``bad_row_start[r]``) the exact residual ``x − inverse(code)`` goes into
    ``residual[p, j]`` (0 for marker pixels, which are stored exactly anyway).
    """
    P, H, W = x.shape
    nb = (H + _BLOCK_ROWS - 1) // _BLOCK_ROWS
    fmark = np.float32(marker)
    for b in prange(nb):
        r0 = b * _BLOCK_ROWS
        r1 = min(H, r0 + _BLOCK_ROWS)
        for p in range(P):
            key = plane_key(seed, plane0 + p)
            for r in range(r0, r1):
                cnt = 0
                base = r * W
                for c in range(W):
                    a = alpha[r, c]
                    bb = beta[r, c]
                    o = offset[r, c]
                    xv = np.float32(x[p, r, c])
                    v0 = np.sqrt(a * o + bb)
                    wsq = np.sqrt(max(a * xv + bb, np.float32(0.0)))
                    wlin = v0 + a * (xv - o) / (np.float32(2.0) * v0)
                    wv = wsq if xv >= o else wlin
                    kf = np.floor(wv + _u(key, base + c) + np.float32(0.5)) - np.float32(kbase)
                    bad = (kf < np.float32(0.0)) | (kf >= fmark) | (xv >= sat_adu)
                    kf = fmark if bad else kf
                    out[p, r, c] = kf
                    cnt += bad
                nmarked[p, r] = cnt
                j = bad_row_start[r]
                if j == bad_row_start[r + 1]:
                    continue
                for c in range(W):  # second, sparse pass over this row's bad pixels
                    if bad_mask[r, c] == 0:
                        continue
                    kv = out[p, r, c]
                    if kv != marker:
                        xi = _invert(
                            np.float64(kv), np.float64(kbase), np.float64(alpha[r, c]),
                            np.float64(beta[r, c]), np.float64(offset[r, c]),
                            np.float64(_u(key, base + c)), xmax,
                        )
                        residual[p, j] = np.int32(np.int64(x[p, r, c]) - np.int64(xi))
                    j += 1


@njit(inline="always", cache=True)
def _invert(kv, kbase, a, bb, o, u, xmax):
    # ŵ → x with the curvature correction (see ``inverse``).
    v0 = np.sqrt(a * o + bb)
    s = kv + kbase - u - v0
    sp = s if s > 0.0 else 0.0
    if s >= 0.5:
        quad = s * s - 1.0 / 12.0
    elif s <= -0.5:
        quad = 0.0
    else:
        t = s + 0.5
        quad = 2.0 * sp * sp - t * t * t / 3.0
    xv = np.floor(o + (2.0 * v0 * s + quad) / a + 0.5)
    return min(max(xv, 0.0), xmax)


@njit(parallel=True, cache=True)
def inverse(k, alpha, beta, offset, seed, plane0, kbase, xmax, out):
    """Invert :func:`forward` for a stack of codes, writing rounded ADU into ``out``.

    The inverse is ``x = offset + (2·v0·s + max(s, 0)²)/alpha`` with ``s = ŵ − v0``. Because
    ``ŵ = w + n``, ``n`` uniform on [−½, ½) and independent of ``w``, the quadratic part is biased
    by ``E[(s+n)₊²] − s₊²``: exactly 1/12 for ``s ≥ ½``, 0 for ``s ≤ −½`` and
    ``(s+½)³/3 − s₊²`` in between. That bias is subtracted. Marker pixels come out as garbage and
    are overwritten by the caller.
    """
    P, H, W = k.shape
    nb = (H + _BLOCK_ROWS - 1) // _BLOCK_ROWS
    for b in prange(nb):
        r0 = b * _BLOCK_ROWS
        r1 = min(H, r0 + _BLOCK_ROWS)
        for p in range(P):
            key = plane_key(seed, plane0 + p)
            for r in range(r0, r1):
                base = r * W
                for c in range(W):
                    u = np.float64(_u(key, base + c))
                    out[p, r, c] = _invert(
                        np.float64(k[p, r, c]), np.float64(kbase), np.float64(alpha[r, c]),
                        np.float64(beta[r, c]), np.float64(offset[r, c]), u, xmax,
                    )


@njit(parallel=True, cache=True)
def apply_residuals(out, k, marker, bad_flat, residual):
    """Add :func:`bad_residuals` back (decoder side)."""
    P = k.shape[0]
    W = k.shape[2]
    for p in prange(P):
        for j in range(bad_flat.size):
            f = bad_flat[j]
            r = f // W
            c = f - r * W
            if k[p, r, c] != marker:
                out[p, r, c] = out[p, r, c] + residual[p, j]


@njit(cache=True)
def gather_marked(x, k, marker, nmarked, n_total):
    """Raw values of marker pixels in raster order (encoder side)."""
    P, H, W = k.shape
    vals = np.empty(n_total, x.dtype)
    j = 0
    for p in range(P):
        for r in range(H):
            if nmarked[p, r] == 0:
                continue
            for c in range(W):
                if k[p, r, c] == marker:
                    vals[j] = x[p, r, c]
                    j += 1
    return vals


@njit(cache=True)
def scatter_marked(out, k, marker, vals):
    """Put exact values back at marker pixels (decoder side); returns how many were placed."""
    P, H, W = k.shape
    j = 0
    for p in range(P):
        for r in range(H):
            for c in range(W):
                if k[p, r, c] == marker:
                    if j < vals.size:
                        out[p, r, c] = vals[j]
                    j += 1
    return j


@njit(cache=True)
def dither(seed, plane, n):
    """The dither sequence of one plane (for tests and documentation)."""
    key = plane_key(seed, plane)
    out = np.empty(n, np.float64)
    for i in range(n):
        out[i] = _u(key, i)
    return out
