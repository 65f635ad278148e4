"""Fused per-pixel kernels of the noise-calibrated codec (numba).

Why hand-written: the forward path (affine map to electrons, generalised Anscombe square root,
dither, quantisation, narrowing cast, exception marking, bad-pixel codes and residuals, and for
the ``fast`` preset the packed symbols) and the inverse (dither removal, unbiased inverse
transform, rounding, clipping) are each ~10 elementwise steps. numpy makes
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
  (saturated, or outside the code range);
* float arithmetic whose result the decoder must reproduce to the bit (bad-pixel bases, the
  inverse) is strict IEEE (no fast-math); the forward quantiser may use fast-math because only
  its output codes matter.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["forward", "inverse", "bad_base", "apply_bad_residuals", "pack_codes",
           "gather_escapes", "unpack_rows", "gather_marked", "scatter_marked", "dither",
           "plane_key"]

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


@njit(cache=True)
def plane_key(seed, plane):
    """32-bit key of one plane, derived from the 64-bit stream seed."""
    lo = np.uint32(np.uint64(seed) & np.uint64(0xFFFFFFFF))
    hi = np.uint32(np.uint64(seed) >> np.uint64(32))
    k = _mix32(lo ^ np.uint32(0x85EBCA6B))
    k = _mix32(k ^ hi)
    return _mix32(k ^ np.uint32(np.uint32(plane) * np.uint32(0xC2B2AE35) + np.uint32(1)))


_U_SCALE = 1.0 / 16777216.0
_U_OFFSET = 0.5 / 16777216.0 - 0.5


@njit(inline="always", cache=True)
def _ufx(key, i):
    # the dither's 24 random bits as an integer, in [0, 2^24)
    return np.int32(_mix32(np.uint32(np.uint32(i) * np.uint32(0x9E3779B1)) ^ key) >> np.uint32(8))


@njit(inline="always", cache=True)
def _u_of(ufx):
    # the dither value of 24 random bits: odd multiples of 2^-25 in (−½, ½), exact in float32
    # (via int32: signed int → float converts in SIMD, unsigned does not)
    return np.float32(ufx) * np.float32(_U_SCALE) + np.float32(_U_OFFSET)


@njit(inline="always", cache=True)
def _u(key, i):
    return _u_of(_ufx(key, i))


@njit(cache=True)
def bad_base(kl, ul, ok_l, kr, ur, ok_r, kbase, a, v0, o, a1, v01, o1, xmax):
    """Estimate of a bad pixel's value [ADU] from its left/right neighbours' codes.

    The mean dither-free stabilised value ``k − u`` of the usable neighbours (good, not stored
    exactly; ``ok_*``), inverted with the parameters of the first of them (``a1, v01, o1``) and
    carried over to the bad pixel's own offset ``o`` and gain (``a`` ∝ gain); its offset when
    neither is usable. Codes and dither only, in strict IEEE arithmetic (not inlined into the
    fastmath forward kernel), so encoder and decoder agree to the bit on any machine.
    """
    acc = 0.0
    n = 0
    if ok_l:
        acc += np.float64(kl) - np.float64(_u_of(ul))
        n += 1
    if ok_r:
        acc += np.float64(kr) - np.float64(_u_of(ur))
        n += 1
    if n == 0:
        return np.floor(o + 0.5)
    x1 = _invert(acc / n, np.float64(kbase), a1, v01, o1, 0.0, xmax)
    return np.floor(o + (x1 - o1) * a1 / a + 0.5)


@njit(inline="always", cache=True)
def _bad_row(kr, key, bad_r, cols, r, W, marker, kbase, alpha, v0, offset, xmax, xr, res, j,
             encode, out_r):
    # bad pixels of one row (columns ``cols``, residuals from index ``j``): encoder → ``res``;
    # decoder → ``out_r``
    for c in cols:
        if kr[c] != marker:
            ok_l = c > 0 and bad_r[c - 1] == 0 and kr[c - 1] != marker
            ok_r = c + 1 < W and bad_r[c + 1] == 0 and kr[c + 1] != marker
            c1 = c - 1 if ok_l else c + 1
            c1 = min(max(c1, 0), W - 1)
            base = bad_base(
                np.int64(kr[max(c - 1, 0)]), _ufx(key, np.uint32(r * W + max(c - 1, 0))), ok_l,
                np.int64(kr[min(c + 1, W - 1)]), _ufx(key, np.uint32(r * W + min(c + 1, W - 1))),
                ok_r, kbase,
                np.float64(alpha[r, c]), np.float64(v0[r, c]), np.float64(offset[r, c]),
                np.float64(alpha[r, c1]), np.float64(v0[r, c1]), np.float64(offset[r, c1]), xmax,
            )
            if encode:
                res[j] = np.int32(np.int64(xr[c]) - np.int64(base))
            else:
                out_r[c] = np.int64(base) + res[j]
        elif encode:
            res[j] = 0
        j += 1


@njit(parallel=True, fastmath=True, cache=True)
def forward(x, alpha, beta, offset, v0, half_inv_v0, seed, plane0, kbase, marker, sat_adu, xmax,
            out, nmarked, bad_mask, bad_cols, bad_row_start, residual, pack, packed, nesc,
            escrows):
    """Stabilise, dither and quantise a stack ``x`` ``(P, H, W)`` into codes ``out``.

    * Pixels at or above ``sat_adu`` and codes outside ``[0, marker)`` get ``marker``;
      ``nmarked[p, r]`` counts them per row.
    * The model's bad pixels (``bad_mask``; columns ``bad_cols``, numbered in raster order from
      ``bad_row_start[r]``) past column 0 repeat their left neighbour's code (no spike for the
      entropy stage, and a code the decoder knows) and their exact value goes into
      ``residual[p, j]`` as the difference from :func:`bad_base` (0 for pixels stored exactly
      anyway).
    * ``pack``: also write the ``fast`` entropy stage (:func:`pack_codes`'s format) into
      ``packed`` ``(P, H, ceil(W/4))`` with escape counts ``nesc[p, r]`` and each row's escaped
      codes at the start of ``escrows[p, r]``, while the row is in cache.

    ``half_inv_v0 = 1/(2·v0)`` with ``v0 = sqrt(alpha·offset + beta)`` (precomputed: one square
    root and one division less per pixel and frame). This kernel is fast-math; the bad-pixel bases
    come from :func:`bad_base`, compiled without it (LLVM keeps per-instruction flags when it
    inlines), so they match the decoder's to the bit.
    """
    P, H, W = x.shape
    nb = (H + _BLOCK_ROWS - 1) // _BLOCK_ROWS
    fmark = np.float32(marker)
    for b in prange(nb):
        r0 = b * _BLOCK_ROWS
        r1 = min(H, r0 + _BLOCK_ROWS)
        ubuf = np.empty(W if pack else 1, np.int32)
        sbuf = np.empty(4 * ((W + 3) // 4) if pack else 4, np.int32)
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
                    o = orow[c]
                    xv = np.float32(xr[c])
                    d = a * xv + br[c]  # w² on the square-root branch
                    # below the offset the tangent at the knee: v0 + (d − v0²)/(2·v0)
                    wv = np.sqrt(d) if xv >= o else (d + a * o + br[c]) * hr[c]
                    u = _u(key, base + np.uint32(c))
                    kf = np.floor(wv + u + np.float32(0.5)) - np.float32(kbase)
                    bad = (kf < np.float32(0.0)) | (kf >= fmark) | (xv >= sat_adu)
                    kr[c] = np.int32(fmark if bad else kf)
                    cnt += bad
                nmarked[p, r] = cnt
                j0 = bad_row_start[r]
                j1 = bad_row_start[r + 1]
                if j0 != j1:
                    cols = bad_cols[j0:j1]
                    # A bad pixel's code carries nothing (its exact value travels as a residual,
                    # or in the exact list if the code is the marker), so past column 0 it is its
                    # left neighbour's code: no spike for a predictor, and a code the decoder
                    # knows without being told (the predictive stage skips it).
                    for c in cols:
                        if c > 0:
                            was = kr[c] == marker
                            kr[c] = kr[c - 1]
                            cnt += (kr[c] == marker) - was
                    nmarked[p, r] = cnt
                    _bad_row(kr, key, bad_mask[r], cols, r, W, marker, kbase, alpha, v0, offset,
                             xmax, xr, residual[p], j0, True, xr)
                if pack:
                    nesc[p, r] = _pack_row(kr, key, r, W, packed[p, r], ubuf, sbuf, escrows[p, r])


@njit(inline="always", cache=True)
def _pack_row(kr, key, r, W, dst, ubuf, sbuf, escrow):
    # fast stage, one row: symbol per pixel (0: k = k̂, 1: k̂ + 1, 2: k̂ − 1, 3: escape) with
    # k̂ the left neighbour's dither-free value plus this pixel's dither, rounded:
    # k̂ = k_W + floor((ufx − ufx_W + 2^23) / 2^24). Column 0 always escapes.
    # Branch-free passes: dither, symbols, escaped codes compacted into ``escrow`` (a store per
    # pixel, kept only where it escapes), packing; all but the compaction vectorise.
    base = np.uint32(r * W)
    for c in range(W):
        ubuf[c] = _ufx(key, base + np.uint32(c))
    sbuf[0] = 3
    for c in range(1, W):
        dk = (np.int32(kr[c]) - np.int32(kr[c - 1])) - ((ubuf[c] - ubuf[c - 1] + np.int32(8388608)) >> 24)
        sbuf[c] = (dk == 1) * 1 + (dk == -1) * 2 + ((dk > 1) | (dk < -1)) * 3
    ne = 0
    for c in range(W):
        escrow[ne] = kr[c]
        ne += sbuf[c] == 3
    for c in range(W, sbuf.size):
        sbuf[c] = 0
    for q in range(dst.size):
        dst[q] = np.uint8(sbuf[4 * q] | (sbuf[4 * q + 1] << 2) | (sbuf[4 * q + 2] << 4) | (sbuf[4 * q + 3] << 6))
    return ne


@njit(parallel=True, cache=True)
def pack_codes(codes, seed, plane0, packed, nesc, escrows):
    """The ``fast`` stage from a finished code stack (what :func:`forward` does inline)."""
    P, H, W = codes.shape
    for i in prange(P * H):
        p = i // H
        r = i - p * H
        key = plane_key(seed, plane0 + p)
        ubuf = np.empty(W, np.int32)
        sbuf = np.empty(4 * ((W + 3) // 4), np.int32)
        nesc[p, r] = _pack_row(codes[p, r], key, r, W, packed[p, r], ubuf, sbuf, escrows[p, r])


@njit(parallel=True, cache=True)
def gather_escapes(escrows, nesc, esc_start, esc):
    """Concatenate the escaped codes each row left at the start of its ``escrows`` row."""
    P, H, W = escrows.shape
    for i in prange(P * H):
        p = i // H
        r = i - p * H
        j = esc_start[i]
        for q in range(nesc[p, r]):
            esc[j + q] = escrows[p, r, q]


@njit(parallel=True, cache=True)
def unpack_rows(packed, esc, esc_start, seed, plane0, marker, out):
    """Decode the ``fast`` stage into codes ``out`` ``(P, H, W)``; returns the number of rows
    whose escape count or codes do not check out (0 for a sound payload)."""
    P, H, W = out.shape
    bad_rows = 0
    for i in prange(P * H):
        p = i // H
        r = i - p * H
        key = plane_key(seed, plane0 + p)
        base = np.uint32(r * W)
        j = esc_start[i]
        jend = esc_start[i + 1]
        ok = 1
        kprev = np.int64(0)
        uprev = np.int64(0)
        for c in range(W):
            u = np.int64(_ufx(key, base + np.uint32(c)))
            sym = (packed[p, r, c >> 2] >> ((c & 3) * 2)) & 3
            if sym == 3:
                if j < jend:
                    k = np.int64(esc[j])
                    j += 1
                else:
                    ok = 0
                    k = np.int64(0)
            else:
                k = kprev + ((u - uprev + 8388608) >> 24) + (1 if sym == 1 else (-1 if sym == 2 else 0))
            if k < 0 or k > marker:
                ok = 0
                k = np.int64(0)
            out[p, r, c] = k
            kprev = k
            uprev = u
        if j != jend:
            ok = 0
        bad_rows += 1 - ok
    return bad_rows


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


@njit(parallel=True, cache=True)
def apply_bad_residuals(out, codes, alpha, v0, offset, seed, plane0, kbase, marker, xmax,
                        bad_mask, bad_cols, bad_row_start, residual):
    """Decoder side of the bad-pixel residuals written by :func:`forward`."""
    P, H, W = codes.shape
    for i in prange(P * H):
        p = i // H
        r = i - p * H
        j0 = bad_row_start[r]
        if j0 == bad_row_start[r + 1]:
            continue
        key = plane_key(seed, plane0 + p)
        _bad_row(codes[p, r], key, bad_mask[r], bad_cols[j0:bad_row_start[r + 1]], r, W, marker,
                 kbase, alpha, v0, offset, xmax, out[p, r], residual[p], j0, False, out[p, r])


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
