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

__all__ = ["forward", "inverse", "bad_residuals", "apply_bad_residuals", "gather_marked",
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
    # via int32 (h >> 8 < 2^24): signed int → float converts in SIMD, unsigned does not
    return np.float32(np.int32(h >> np.uint32(8))) * np.float32(1.0 / 16777216.0) + np.float32(
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
def forward(x, alpha, beta, offset, half_inv_v0, seed, plane0, kbase, marker, sat_adu, out,
            nmarked, bad_mask, bad_row_start):
    """Stabilise, dither and quantise a stack ``x`` ``(P, H, W)`` into codes ``out``.

    ``half_inv_v0 = 1/(2·sqrt(alpha·offset + beta))`` per pixel (precomputed: one square root and
    one division less per pixel and frame).

    Pixels at or above ``sat_adu`` and codes outside ``[0, marker)`` get ``marker``;
    ``nmarked[p, r]`` counts them per row. The model's bad pixels (``bad_mask``; rows without
    any are skipped via ``bad_row_start``) get their left neighbour's code.
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
                base = np.uint32(r * W)
                # row views: plain 1-D unit-stride loops, which LLVM vectorises
                ar, br, orow, hr = alpha[r], beta[r], offset[r], half_inv_v0[r]
                xr, kr = x[p, r], out[p, r]
                for c in range(W):
                    a = ar[c]
                    bb = br[c]
                    o = orow[c]
                    xv = np.float32(xr[c])
                    d = a * xv + bb  # w² on the square-root branch
                    # below the offset the tangent at the knee: v0 + (d − v0²)/(2·v0)
                    wv = np.sqrt(d) if xv >= o else (d + a * o + bb) * hr[c]
                    kf = np.floor(wv + _u(key, base + np.uint32(c)) + np.float32(0.5)) - np.float32(kbase)
                    bad = (kf < np.float32(0.0)) | (kf >= fmark) | (xv >= sat_adu)
                    kr[c] = np.int32(fmark if bad else kf)
                    cnt += bad
                nmarked[p, r] = cnt
                if bad_row_start[r] == bad_row_start[r + 1]:
                    continue
                for c in range(1, W):  # second, sparse pass over this row's bad pixels
                    # A bad pixel's code carries nothing (its exact value travels as a residual,
                    # see ``bad_residuals``), so it repeats its left neighbour's code: no spike
                    # in the code image for the entropy stage's predictor to trip over.
                    if bad_mask[r, c] != 0 and out[p, r, c] != marker and out[p, r, c - 1] != marker:
                        out[p, r, c] = out[p, r, c - 1]


@njit(inline="always", cache=True)
def _invert(kv, kbase, a, v0, o, u, xmax):
    # ŵ → x, unbiased for every true value (see ``inverse``); ``v0 = sqrt(a·o + beta)`` comes
    # from a precomputed map, so encoder (bad-pixel residuals) and decoder agree to the bit.
    s = kv + kbase - u - v0
    quad = 0.0
    if s > 0.5:
        m = np.floor(s + 0.5)
        quad = m * (2.0 * s - m)  # tangent of s² at the nearest integer
    xv = np.floor(o + (2.0 * v0 * s + quad) / a + 0.5)
    return min(max(xv, 0.0), xmax)


@njit(parallel=True, cache=True)
def inverse(k, alpha, v0, offset, seed, plane0, kbase, xmax, out):
    """Invert :func:`forward` for a stack of codes, writing rounded ADU into ``out``.

    With ``s = w − v0`` the exact inverse is ``x = offset + (2·v0·s + max(s, 0)²)/alpha`` (linear
    continuation below the offset). The decoder sees ``ŝ = s + n``, ``n`` uniform on [−½, ½) and
    independent of ``s``. The linear part is then unbiased as it is; the quadratic part is
    replaced by the function ``Q`` whose average over any unit window equals ``max(s, 0)²``
    *exactly*, for every ``s``: ``Q(ŝ) = 0`` for ``ŝ ≤ ½`` and ``m·(2ŝ − m)`` with
    ``m = round(ŝ)`` above (the tangent of ``ŝ²`` at the nearest integer; solve
    ``Q(t+1) − Q(t) = 2·max(t + ½, 0)`` from ``Q = 0`` on the dark side). So ``E[x̂ | x] = x`` at
    every signal level, across the knee at the offset too, before the final rounding to ADU.
    Marker pixels come out as garbage and are overwritten by the caller.
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
                        np.float64(v0[r, c]), np.float64(offset[r, c]), u, xmax,
                    )


@njit(inline="always", cache=True)
def _bad_base(codes, p, r, c, key, kbase, marker, alpha, v0, offset, bad_mask, xmax):
    # Estimate of bad pixel (r, c)'s value [ADU] from the codes alone, so encoder and decoder
    # compute it identically: the mean dither-free stabilised value ``k − u`` of its good,
    # not-exact 4-neighbours, inverted with the parameters of the first of them and carried
    # over to the bad pixel's own offset and gain (``alpha`` ∝ gain); its offset when it has no
    # such neighbour. One inverse per bad pixel instead of one per neighbour.
    H = codes.shape[1]
    W = codes.shape[2]
    acc = 0.0
    n = 0
    r1 = -1
    c1 = -1
    for d in range(4):
        rr = r + (-1 if d == 0 else (1 if d == 1 else 0))
        cc = c + (-1 if d == 2 else (1 if d == 3 else 0))
        if rr < 0 or rr >= H or cc < 0 or cc >= W or bad_mask[rr, cc] != 0:
            continue
        kv = codes[p, rr, cc]
        if kv == marker:
            continue
        acc += np.float64(kv) - np.float64(_u(key, rr * W + cc))
        if n == 0:
            r1 = rr
            c1 = cc
        n += 1
    o = np.float64(offset[r, c])
    if n == 0:
        return np.floor(o + 0.5)
    o1 = np.float64(offset[r1, c1])
    a1 = np.float64(alpha[r1, c1])
    x1 = _invert(acc / n, np.float64(kbase), a1, np.float64(v0[r1, c1]), o1, 0.0, xmax)
    return np.floor(o + (x1 - o1) * a1 / np.float64(alpha[r, c]) + 0.5)


@njit(parallel=True, cache=True)
def bad_residuals(x, codes, alpha, v0, offset, seed, plane0, kbase, marker, xmax, bad_flat,
                  bad_mask, residual):
    """Exact residuals of the model's bad pixels (encoder side) into ``residual`` ``(P, n_bad)``.

    ``residual = x − base`` with ``base`` estimated from the neighbours' codes (``_bad_base``), so
    it holds the pixel's own deviation (its noise, its dark signal) rather than the scene. Pixels
    stored exactly (marker code) get 0.
    """
    P, H, W = codes.shape
    for p in prange(P):
        key = plane_key(seed, plane0 + p)
        for j in range(bad_flat.size):
            f = bad_flat[j]
            r = f // W
            c = f - r * W
            if codes[p, r, c] == marker:
                residual[p, j] = 0
                continue
            base = _bad_base(codes, p, r, c, key, kbase, marker, alpha, v0, offset, bad_mask, xmax)
            residual[p, j] = np.int32(np.int64(x[p, r, c]) - np.int64(base))


@njit(parallel=True, cache=True)
def apply_bad_residuals(out, codes, alpha, v0, offset, seed, plane0, kbase, marker, xmax,
                        bad_flat, bad_mask, residual):
    """Decoder side of :func:`bad_residuals`."""
    P, H, W = codes.shape
    for p in prange(P):
        key = plane_key(seed, plane0 + p)
        for j in range(bad_flat.size):
            f = bad_flat[j]
            r = f // W
            c = f - r * W
            if codes[p, r, c] == marker:
                continue
            base = _bad_base(codes, p, r, c, key, kbase, marker, alpha, v0, offset, bad_mask, xmax)
            out[p, r, c] = np.int64(base) + residual[p, j]


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
