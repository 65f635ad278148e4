"""Dither-aware predictive entropy coding of ``noisecal`` code images (numba).

Why hand-written: a library coder (JPEG-LS, JPEG-XL, pcodec…) sees the code image ``k`` only.
But ``k = floor(w + u + ½)`` with a subtractive dither ``u`` that the decoder regenerates, so the
best guess of ``k`` is made in the *dither-free* domain: predict the stabilised value ``ŵ`` from
the neighbours' ``k − u``, add the pixel's own ``u`` and round. Conditioning on the dither this way
removes most of the ≈ 0.15 bit/px that dither costs a coder blind to it, and averaging several
neighbours (22 causal neighbours, least-squares weights fitted per tile and per local-activity
class) beats the one-neighbour predictors of image coders on noise-dominated data. No library offers a coder with this side information, so the
predictor, the context model and a small static rANS coder (after F. Giesen's ``rans_byte``, with
16-bit words) are written here. Every step is integer arithmetic, so decoding is bit-exact on any
machine.

Residuals are coded in contexts of (local activity × where the prediction falls inside its
quantisation bin). Layout of one coded stack: magic, tile count, a zstd block of tables (per-
context frequencies, the predictor weights per activity class, escape and word counts per
tile), the escaped codes, and each tile's rANS words (see :func:`encode` / :func:`decode`).
"""

from __future__ import annotations

import struct

import imagecodecs
import numpy as np
from numba import njit, prange

from ._vst_kernels import _ufx, plane_key

__all__ = ["encode", "decode", "PredictiveError"]

FRAC = 24  # fixed-point bits of the dither-free values z = k·2^24 − u_fx
WBITS = 12  # fixed-point bits of the predictor weights
PROB_BITS = 12
PROB_SCALE = 1 << PROB_BITS
RANS_L = 1 << 16
MAX_RES = 15  # residuals in [−15, 15] are symbols; larger ones escape
NSYM = 2 * MAX_RES + 2
ESC = NSYM - 1
SKIP = 255  # marks a pixel with an implied code (no symbol)
N_FRAC_BINS = 4
#: edges of the local-activity classes, |W−NW| + |N−NW| + |N−NE| [codes] (4 → 7 edges gained
#: 0.1–0.3 % on the simulated scenes; rescaling them ±50 % moved the rate < 0.3 %)
ACT_EDGES = tuple(int(v * (1 << FRAC)) for v in (0.5, 1, 1.5, 2, 3, 4.5, 7))
N_ACT_BINS = len(ACT_EDGES) + 1
BORDER_CTX = N_FRAC_BINS * N_ACT_BINS
N_CTX = BORDER_CTX + 1
_MAGIC = b"RGP2"


class PredictiveError(ValueError):
    """A predictive payload that does not decode (corrupt or not ours)."""


#: causal neighbourhood (row offset, column offset); the first is W, the reference. On the
#: simulated scenes each ring of neighbours added lowered the rate (6 → 10 → 14 → 22 neighbours:
#: medium scene 1.61 → 1.55 → 1.54 → 1.51 bit/px); two more rows (30) gave < 1 % for 30 % time.
_OFFS = np.array([(0, -1), (-1, 0), (-1, -1), (-1, 1), (0, -2), (-2, 0),
                  (-1, -2), (-1, 2), (-2, -1), (-2, 1), (0, -3), (-2, -2), (-2, 2), (-1, 3),
                  (-1, -3), (-2, 3), (-2, -3), (0, -4), (-1, 4), (-1, -4), (-2, 4), (-2, -4)],
                 np.int64)
#: rows of the ring buffer: the deepest neighbour row + the current one
RING = int(1 - _OFFS[:, 0].min())
N_W = len(_OFFS)
#: columns of padding on each side of a ring row (edge values repeated): no clamping per pixel
PAD = int(np.abs(_OFFS[:, 1]).max())
_COLS = _OFFS[:, 1] + PAD


@njit(inline="always", cache=True)
def _ring_rows(rl, nrow, W):
    # flat offset in the ring buffer of each neighbour of tile-local row ``rl`` (column 0)
    for i in range(N_W):
        nrow[i] = ((rl + RING + _OFFS[i, 0]) % RING) * (W + 2 * PAD) + _COLS[i]


@njit(inline="always", cache=True)
def _pad_row(z0, W):
    # repeat the edge values into the padding (what clamped column indices would read)
    for q in range(PAD):
        z0[q] = z0[PAD]
        z0[PAD + W + q] = z0[PAD + W - 1]


@njit(inline="always", cache=True)
def _act_bin(a, b, d, e):
    # local activity class from the W, N, NW, NE neighbours' gradients
    act = abs(a - d) + abs(b - d) + abs(b - e)
    ab = 0
    for t in range(len(ACT_EDGES)):
        if act >= ACT_EDGES[t]:
            ab = t + 1
    return ab


@njit(inline="always", cache=True)
def _predict(zr, nrow, rl, c, w):
    """(prediction z, context) for tile-local pixel (rl, c); ring columns are offset by PAD."""
    if rl < RING - 1 or c == 0:
        if c > 0:
            return zr[rl % RING, PAD + c - 1], BORDER_CTX
        if rl > 0:
            return zr[(rl - 1) % RING, PAD + c], BORDER_CTX
        return np.int64(0), BORDER_CTX
    zf = zr.reshape(-1)  # flat view: one add per neighbour (nrow holds flat row offsets)
    a = zf[nrow[0] + c]
    b = zf[nrow[1] + c]
    d = zf[nrow[2] + c]
    e = zf[nrow[3] + c]
    ab = _act_bin(a, b, d, e)
    wa = w[ab]
    acc = np.int64(0)
    for i in range(N_W):
        acc += wa[i] * zf[nrow[i] + c]
    return acc >> WBITS, ab * N_FRAC_BINS


@njit(inline="always", cache=True)
def _residual_ctx(zp, ctx, u):
    """(k_pred, sign, context) — sign folds the residual so all fractions share one shape."""
    v = zp + u + (np.int64(1) << (FRAC - 1))
    kp = v >> FRAC
    g = (v & ((np.int64(1) << FRAC) - 1)) - (np.int64(1) << (FRAC - 1))  # position in the bin
    if ctx == BORDER_CTX:
        return kp, 1, ctx
    ag = abs(g)
    fb = (ag * (2 * N_FRAC_BINS)) >> FRAC
    if fb >= N_FRAC_BINS:
        fb = N_FRAC_BINS - 1
    return kp, (1 if g >= 0 else -1), ctx + fb


@njit(parallel=True, cache=True)
def _normal_equations(codes, seed, plane0, tiles, A_all, b_all, cnt_all):
    """Least-squares normal equations of each tile's predictor, per activity class (sampled).

    The predictor is fitted as ``z − z_W`` on ``z_i − z_W`` so its weights sum to one exactly
    after rounding (see :func:`_solve_weights`).
    """
    P, H, W = codes.shape
    nt = len(tiles)
    for t in prange(nt):
        p = tiles[t, 0]
        r0 = tiles[t, 1]
        r1 = tiles[t, 2]
        key = plane_key(seed, plane0 + p)
        A = A_all[t]
        bvec = b_all[t]
        cnt = cnt_all[t]
        zr = np.zeros((RING, W + 2 * PAD), np.int64)
        nrow = np.zeros(N_W, np.int64)
        x = np.zeros(N_W - 1)
        sc = 1.0 / (1 << FRAC)
        for r in range(r0, r1):
            rl = r - r0
            z0 = zr[rl % RING]
            for c in range(W):
                z0[PAD + c] = (np.int64(codes[p, r, c]) << FRAC) - _ufx(key, r * W + c)
            _pad_row(z0, W)
            if rl < RING - 1 or rl % 6:
                continue  # every 6th row, every 3rd column: ≥ 20 k samples per tile for 21 unknowns
            _ring_rows(rl, nrow, W)
            for c in range(1, W, 3):
                zf = zr.reshape(-1)
                a = zf[nrow[0] + c]
                y = (z0[PAD + c] - a) * sc
                if abs(y) > 8.0:
                    continue  # markers and jumps would dominate a squared loss
                ab = _act_bin(a, zf[nrow[1] + c], zf[nrow[2] + c], zf[nrow[3] + c])
                for i in range(N_W - 1):
                    x[i] = (zf[nrow[i + 1] + c] - a) * sc
                cnt[ab] += 1
                for i in range(N_W - 1):
                    bvec[ab, i] += x[i] * y
                    for j in range(i, N_W - 1):
                        A[ab, i, j] += x[i] * x[j]


def _solve_weights(A: np.ndarray, b: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    """Integer weights ``(N_ACT_BINS, N_W)`` summing to 2^WBITS, from the tiles' normal equations.

    One set per stream (pooled over tiles): per-tile sets cost more header than they save on
    small images (a 31×61×57 stack) and gain < 0.5 % on 2048² frames. A class with too few
    samples takes the fit of all classes pooled.
    """
    A, b, cnt = A.sum(axis=0), b.sum(axis=0), cnt.sum(axis=0)
    A = np.triu(A) + np.triu(A, 1).transpose(0, 2, 1)  # only the upper triangle was summed
    ridge = (1e-3 + 1e-6 * np.diagonal(A, axis1=1, axis2=2))[:, :, None] * np.eye(N_W - 1)
    A = A + ridge
    pooled = np.linalg.solve(A.sum(axis=0), b.sum(axis=0))
    out = np.zeros((N_ACT_BINS, N_W), np.int64)
    for k in range(N_ACT_BINS):
        sol = np.linalg.solve(A[k], b[k]) if cnt[k] >= 20 * N_W else pooled
        w = np.round(np.clip(sol, -4.0, 4.0) * (1 << WBITS)).astype(np.int64)
        out[k, 1:] = w
        out[k, 0] = (1 << WBITS) - int(w.sum())
    return out


@njit(parallel=True, cache=True)
def _symbols(codes, seed, plane0, tiles, weights, skip, sym, ctxs, hist, n_esc):
    """Pass 1 (encoder): each pixel's symbol and context; per-tile histograms and escapes.

    Pixels with ``skip[r, c]`` (implied codes: equal to their left neighbour's) get no symbol.
    """
    P, H, W = codes.shape
    for t in prange(len(tiles)):
        p = tiles[t, 0]
        r0 = tiles[t, 1]
        r1 = tiles[t, 2]
        key = plane_key(seed, plane0 + p)
        w = weights
        zr = np.zeros((RING, W + 2 * PAD), np.int64)
        nrow = np.zeros(N_W, np.int64)
        ne = 0
        for r in range(r0, r1):
            rl = r - r0
            z0 = zr[rl % RING]
            _ring_rows(rl, nrow, W)
            for c in range(W):
                u = _ufx(key, r * W + c)
                k = np.int64(codes[p, r, c])
                if skip[r, c]:
                    sym[p, r, c] = SKIP
                    z0[PAD + c] = (k << FRAC) - u
                    continue
                zp, ctx = _predict(zr, nrow, rl, c, w)
                kp, sg, ctx = _residual_ctx(zp, ctx, u)
                res = (k - kp) * sg
                s = res + MAX_RES if -MAX_RES <= res <= MAX_RES else ESC
                ne += s == ESC
                sym[p, r, c] = s
                ctxs[p, r, c] = ctx
                hist[t, ctx, s] += 1
                z0[PAD + c] = (k << FRAC) - u
                if c == 0:
                    _pad_row(z0, W)  # left padding now; the right padding after the row
            _pad_row(z0, W)
        n_esc[t] = ne


@njit(parallel=True, cache=True)
def _rans_encode(codes, tiles, sym, ctxs, freq, cum, words, n_words, esc, esc_start):
    """Pass 2 (encoder): rANS-code each tile's symbols in reverse into ``words[t]``."""
    P, H, W = codes.shape
    cap = words.shape[1]
    for t in prange(len(tiles)):
        p = tiles[t, 0]
        r0 = tiles[t, 1]
        r1 = tiles[t, 2]
        x = np.uint64(RANS_L)
        pos = cap
        j = esc_start[t + 1]
        for r in range(r1 - 1, r0 - 1, -1):
            for c in range(W - 1, -1, -1):
                s = sym[p, r, c]
                if s == SKIP:
                    continue
                ctx = ctxs[p, r, c]
                if s == ESC:
                    j -= 1
                    esc[j] = codes[p, r, c]
                f = np.uint64(freq[ctx, s])
                x_max = np.uint64(((RANS_L >> PROB_BITS) << 16)) * f
                while x >= x_max:
                    pos -= 1
                    words[t, pos] = np.uint16(x & np.uint64(0xFFFF))
                    x >>= np.uint64(16)
                x = ((x // f) << np.uint64(PROB_BITS)) + (x % f) + np.uint64(cum[ctx, s])
        pos -= 1
        words[t, pos] = np.uint16(x >> np.uint64(16))
        pos -= 1
        words[t, pos] = np.uint16(x & np.uint64(0xFFFF))
        n_words[t] = cap - pos


@njit(parallel=True, cache=True)
def _rans_decode(out, seed, plane0, tiles, weights, skip, freq, cum, lut, words, word_start, esc,
                 esc_start, marker, status):
    P, H, W = out.shape
    for t in prange(len(tiles)):
        p = tiles[t, 0]
        r0 = tiles[t, 1]
        r1 = tiles[t, 2]
        key = plane_key(seed, plane0 + p)
        w = weights
        pos = word_start[t]
        end = word_start[t + 1]
        if end - pos < 2:
            status[t] = 1
            continue
        x = (np.uint64(words[pos + 1]) << np.uint64(16)) | np.uint64(words[pos])
        pos += 2
        j = esc_start[t]
        jend = esc_start[t + 1]
        zr = np.zeros((RING, W + 2 * PAD), np.int64)
        nrow = np.zeros(N_W, np.int64)
        bad = 0
        for r in range(r0, r1):
            rl = r - r0
            z0 = zr[rl % RING]
            _ring_rows(rl, nrow, W)
            for c in range(W):
                u = _ufx(key, r * W + c)
                if skip[r, c]:
                    k = np.int64(out[p, r, c - 1])
                    out[p, r, c] = k
                    z0[PAD + c] = (k << FRAC) - u
                    continue
                zp, ctx = _predict(zr, nrow, rl, c, w)
                kp, sg, ctx = _residual_ctx(zp, ctx, u)
                slot = x & np.uint64(PROB_SCALE - 1)
                s = lut[ctx, slot]
                x = np.uint64(freq[ctx, s]) * (x >> np.uint64(PROB_BITS)) + slot - np.uint64(cum[ctx, s])
                while x < np.uint64(RANS_L):
                    if pos >= end:
                        bad = 1
                        break
                    x = (x << np.uint64(16)) | np.uint64(words[pos])
                    pos += 1
                if s == ESC:
                    if j >= jend:
                        bad = 1
                        k = np.int64(0)
                    else:
                        k = np.int64(esc[j])
                        j += 1
                else:
                    k = kp + (np.int64(s) - MAX_RES) * sg
                if k < 0 or k > marker:
                    bad = 1
                    k = np.int64(0)
                out[p, r, c] = k
                z0[PAD + c] = (k << FRAC) - u
                if c == 0:
                    _pad_row(z0, W)
            _pad_row(z0, W)
            if bad:
                break
        if bad or j != jend or pos != end or x != np.uint64(RANS_L):
            status[t] = 1


def _tiles(P: int, H: int, tile_rows: int) -> np.ndarray:
    return np.array([(p, r, min(H, r + tile_rows)) for p in range(P) for r in range(0, H, tile_rows)],
                    np.int64).reshape(-1, 3)


def _normalise(counts: np.ndarray) -> np.ndarray:
    """Integer frequencies summing to 2^PROB_BITS per context (0 where a symbol never occurs)."""
    freq = np.zeros(counts.shape, np.int64)
    for ctx, row in enumerate(counts):
        tot = int(row.sum())
        if tot == 0:
            continue
        f = np.where(row > 0, np.maximum(1, np.floor(row * PROB_SCALE / tot + 0.5)), 0).astype(np.int64)
        # fix the sum on the most frequent symbols (they lose least from ±1)
        diff = PROB_SCALE - int(f.sum())
        order = np.argsort(-row)
        i = 0
        while diff != 0:
            s = order[i % np.count_nonzero(row)]
            if diff > 0:
                f[s] += 1
                diff -= 1
            elif f[s] > 1:
                f[s] -= 1
                diff += 1
            i += 1
        freq[ctx] = f
    return freq


def _cumulative(freq: np.ndarray) -> np.ndarray:
    """Start of each symbol's slot range per context (both sides)."""
    cum = np.zeros_like(freq)
    cum[:, 1:] = np.cumsum(freq, axis=1)[:, :-1]
    return cum


def _slot_symbols(freq: np.ndarray) -> np.ndarray:
    """Symbol of every probability slot per context (decoder side)."""
    lut = np.zeros((freq.shape[0], PROB_SCALE), np.uint8)
    for ctx in range(freq.shape[0]):
        if freq[ctx].sum():
            lut[ctx] = np.repeat(np.arange(NSYM, dtype=np.uint8), freq[ctx])
    return lut


def _skip_mask(skip: np.ndarray | None, H: int, W: int) -> np.ndarray:
    if skip is None:
        return np.zeros((H, W), np.uint8)
    skip = np.ascontiguousarray(skip, np.uint8)
    if skip.shape != (H, W) or (W and skip[:, 0].any()):
        raise PredictiveError(f"skip mask must be ({H}, {W}) and spare column 0")
    return skip


def encode(codes: np.ndarray, seed: int, tile_rows: int, skip: np.ndarray | None = None) -> bytes:
    """Code a ``(P, H, W)`` uint8/uint16 code stack whose dither comes from ``seed``.

    ``skip`` ``(H, W)``: pixels whose code is their left neighbour's by construction (noisecal's
    bad pixels past column 0); they cost nothing. The decoder must be given the same mask.
    """
    P, H, W = codes.shape
    skip = _skip_mask(skip, H, W)
    tiles = _tiles(P, H, tile_rows)
    nt = len(tiles)
    s64 = np.uint64(seed)
    A = np.zeros((nt, N_ACT_BINS, N_W - 1, N_W - 1))
    bv = np.zeros((nt, N_ACT_BINS, N_W - 1))
    cnt = np.zeros((nt, N_ACT_BINS), np.int64)
    _normal_equations(codes, s64, 0, tiles, A, bv, cnt)
    weights = _solve_weights(A, bv, cnt)
    sym = np.empty(codes.shape, np.uint8)
    ctxs = np.empty(codes.shape, np.uint8)
    hist = np.zeros((nt, N_CTX, NSYM), np.int64)
    n_esc = np.zeros(nt, np.int64)
    _symbols(codes, s64, 0, tiles, weights, skip, sym, ctxs, hist, n_esc)
    freq = _normalise(hist.sum(axis=0))
    cum = _cumulative(freq)
    esc_start = np.concatenate([[0], np.cumsum(n_esc)]).astype(np.int64)
    esc = np.empty(int(esc_start[-1]), np.uint16)
    cap = tile_rows * W + 4
    words = np.empty((nt, cap), np.uint16)
    n_words = np.zeros(nt, np.int64)
    _rans_encode(codes, tiles, sym, ctxs, freq, cum, words, n_words, esc, esc_start)
    head = imagecodecs.zstd_encode(b"".join([
        freq.astype("<u2").tobytes(), weights.astype("<i4").tobytes(),
        n_esc.astype("<u4").tobytes(), n_words.astype("<u4").tobytes()]), level=9)
    parts = [_MAGIC, struct.pack("<II", nt, len(head)), head, esc.astype("<u2").tobytes()]
    parts += [words[t, cap - n_words[t]:].astype("<u2").tobytes() for t in range(nt)]
    return b"".join(parts)


def decode(data: bytes | memoryview, shape: tuple[int, int, int], dtype: np.dtype, seed: int,
           tile_rows: int, marker: int, skip: np.ndarray | None = None) -> np.ndarray:
    """Inverse of :func:`encode`; raises :class:`PredictiveError` on anything inconsistent."""
    P, H, W = shape
    skip = _skip_mask(skip, H, W)
    tiles = _tiles(P, H, tile_rows)
    nt = len(tiles)
    buf = memoryview(data).cast("B")
    if len(buf) < 16 or bytes(buf[:4]) != _MAGIC:
        raise PredictiveError("not a rawgate predictive payload")
    n, head_len = struct.unpack_from("<II", buf, 4)
    if n != nt:
        raise PredictiveError(f"payload has {n} tiles, expected {nt}")
    if 12 + head_len > len(buf):
        raise PredictiveError("payload truncated")
    try:
        head = imagecodecs.zstd_decode(buf[12 : 12 + head_len])
    except Exception as e:  # noqa: BLE001 — any failure here is a corrupt payload
        raise PredictiveError(f"payload tables do not decode: {e}") from e
    sizes = (2 * N_CTX * NSYM, 4 * N_ACT_BINS * N_W, 4 * nt, 4 * nt)
    if len(head) != sum(sizes):
        raise PredictiveError("payload tables have the wrong size")
    o = np.cumsum((0,) + sizes)
    freq = np.frombuffer(head, "<u2", N_CTX * NSYM, o[0]).astype(np.int64).reshape(N_CTX, NSYM)
    sums = freq.sum(axis=1)
    if np.any((sums != 0) & (sums != PROB_SCALE)):
        raise PredictiveError("frequency table does not sum to the probability scale")
    weights = np.frombuffer(head, "<i4", N_ACT_BINS * N_W, o[1]).astype(np.int64).reshape(N_ACT_BINS, N_W)
    if np.any(weights.sum(axis=1) != (1 << WBITS)):
        raise PredictiveError("predictor weights do not sum to one")
    n_esc = np.frombuffer(head, "<u4", nt, o[2]).astype(np.int64)
    n_words = np.frombuffer(head, "<u4", nt, o[3]).astype(np.int64)
    pos = 12 + head_len

    def take(count: int, dt: str) -> np.ndarray:
        nonlocal pos
        size = count * np.dtype(dt).itemsize
        if pos + size > len(buf):
            raise PredictiveError("payload truncated")
        a = np.frombuffer(buf, dt, count, pos)
        pos += size
        return a

    esc = take(int(n_esc.sum()), "<u2").astype(np.uint16)
    words = take(int(n_words.sum()), "<u2").astype(np.uint16)
    if pos != len(buf):
        raise PredictiveError("payload has trailing bytes")
    cum, lut = _cumulative(freq), _slot_symbols(freq)
    out = np.empty(shape, dtype)
    status = np.zeros(nt, np.int64)
    _rans_decode(out, np.uint64(seed), 0, tiles, weights, skip, freq, cum, lut, words,
                 np.concatenate([[0], np.cumsum(n_words)]).astype(np.int64), esc,
                 np.concatenate([[0], np.cumsum(n_esc)]).astype(np.int64), int(marker), status)
    if status.any():
        raise PredictiveError(f"{int(status.sum())} of {nt} tiles do not decode consistently")
    return out
