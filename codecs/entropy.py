"""Entropy stages for integer code images (the quantised indices of ``noisecal``).

A stage turns a ``(H, W)`` uint8/uint16 code image into bytes and back, losslessly. Images are cut
into horizontal tiles coded independently in a thread pool (imagecodecs releases the GIL), so both
cores work even for coders that are single-threaded (JPEG-LS, pcodec, zstd).

``predictive`` (:mod:`._predictive`) is the one stage that also knows the dither seed: it predicts
each code in the dither-free domain and rANS-codes the residual, ≈ 15–18 % smaller than JPEG-LS
on the same codes (bench/bench_codecs.py); its tiles run on numba threads.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import imagecodecs
import numpy as np

from . import _predictive
from . import _vst_kernels as _vst

__all__ = ["STAGES", "DITHER_STAGES", "ALL_STAGES", "encode_codes", "decode_codes",
           "encode_tiles", "decode_tiles", "EntropyError"]


class EntropyError(ValueError):
    """An entropy stage that does not exist or a payload it cannot decode."""


def _jxl(effort: int):
    def enc(t: np.ndarray) -> bytes:
        return imagecodecs.jpegxl_encode(t, lossless=True, effort=effort, numthreads=1)

    return enc


def _dec_image(fn: Callable[[bytes], np.ndarray]):
    def dec(b: memoryview, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        return np.asarray(fn(b)).astype(dtype, copy=False).reshape(shape)

    return dec


def _dec_bytes(fn: Callable[[bytes], bytes]):
    def dec(b: memoryview, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        return np.frombuffer(fn(b), dtype).reshape(shape)

    return dec


def _pcodec_dec(b, shape, dtype):
    return imagecodecs.pcodec_decode(b, shape=shape, dtype=dtype)


#: name → (encode(tile) -> bytes, decode(bytes, shape, dtype) -> tile)
STAGES: dict[str, tuple[Callable, Callable]] = {
    "jpegls": (lambda t: imagecodecs.jpegls_encode(t), _dec_image(imagecodecs.jpegls_decode)),
    "jpegxl1": (_jxl(1), _dec_image(lambda b: imagecodecs.jpegxl_decode(b, numthreads=1))),
    "jpegxl2": (_jxl(2), _dec_image(lambda b: imagecodecs.jpegxl_decode(b, numthreads=1))),
    "jpegxl3": (_jxl(3), _dec_image(lambda b: imagecodecs.jpegxl_decode(b, numthreads=1))),
    "htj2k": (
        lambda t: imagecodecs.htj2k_encode(t, reversible=True),
        _dec_image(imagecodecs.htj2k_decode),
    ),
    "pcodec": (lambda t: imagecodecs.pcodec_encode(t), _pcodec_dec),
    "zstd": (lambda t: imagecodecs.zstd_encode(t, level=3), _dec_bytes(imagecodecs.zstd_decode)),
    "zstd1": (lambda t: imagecodecs.zstd_encode(t, level=1), _dec_bytes(imagecodecs.zstd_decode)),
    "lz4-bitshuffle": (
        lambda t: imagecodecs.blosc2_encode(
            t, level=5, compressor="lz4", shuffle="bitshuffle", typesize=t.itemsize, numthreads=1
        ),
        _dec_bytes(lambda b: imagecodecs.blosc2_decode(b, numthreads=1)),
    ),
    "zstd-bitshuffle": (
        lambda t: imagecodecs.blosc2_encode(
            t, level=1, compressor="zstd", shuffle="bitshuffle", typesize=t.itemsize, numthreads=1
        ),
        _dec_bytes(lambda b: imagecodecs.blosc2_decode(b, numthreads=1)),
    ),
}

def pack2_from_rows(codes: np.ndarray, packed: np.ndarray, nesc: np.ndarray,
                    escrows: np.ndarray) -> bytes:
    """Assemble the ``pack2`` payload from rows packed by :func:`._vst_kernels.forward`.

    Layout: escape count per row (uint16), the escaped codes (code dtype), the 2-bit symbols
    (4 per byte, row by row). Hand-written because the symbols are predicted in the
    dither-free domain inside the forward kernel, while the row is in cache: this is the
    ``fast`` preset, whose budget is the camera's data rate.
    """
    P, H, W = codes.shape
    counts = nesc.reshape(-1).astype(np.int64)
    esc_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    esc = np.empty(int(esc_start[-1]), codes.dtype)
    _vst.gather_escapes(escrows, nesc, esc_start, esc)
    return b"".join([b"RGK2", counts.astype("<u2").tobytes(), esc.tobytes(), packed.tobytes()])


def _pack2_encode(codes: np.ndarray, seed: int, tile_rows: int, skip=None) -> bytes:
    P, H, W = codes.shape
    packed = np.empty((P, H, (W + 3) // 4), np.uint8)
    nesc = np.empty((P, H), np.int32)
    escrows = np.empty_like(codes)
    _vst.pack_codes(codes, np.uint64(seed), 0, packed, nesc, escrows)
    return pack2_from_rows(codes, packed, nesc, escrows)


def _pack2_decode(data, shape, dtype, seed, tile_rows, marker, skip=None) -> np.ndarray:
    P, H, W = shape
    buf = memoryview(data).cast("B")
    n_rows, n_bytes = P * H, P * H * ((W + 3) // 4)
    if len(buf) < 4 + 2 * n_rows or bytes(buf[:4]) != b"RGK2":
        raise EntropyError("pack2: not a pack2 payload or truncated")
    counts = np.frombuffer(buf, "<u2", n_rows, 4).astype(np.int64)
    n_esc = int(counts.sum())
    if len(buf) != 4 + 2 * n_rows + n_esc * dtype.itemsize + n_bytes:
        raise EntropyError("pack2: payload length does not match its escape counts")
    esc = np.frombuffer(buf, dtype, n_esc, 4 + 2 * n_rows)
    packed = np.frombuffer(buf, np.uint8, n_bytes, 4 + 2 * n_rows + n_esc * dtype.itemsize)
    out = np.empty(shape, dtype)
    esc_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    bad = _vst.unpack_rows(packed.reshape(P, H, -1), esc, esc_start, np.uint64(seed), 0,
                           int(marker), out)
    if bad:
        raise EntropyError(f"pack2: {bad} rows do not decode consistently")
    return out


#: stages that also see the dither seed (they predict in the dither-free domain)
DITHER_STAGES: dict[str, tuple[Callable, Callable]] = {
    "predictive": (_predictive.encode, _predictive.decode),
    "pack2": (_pack2_encode, _pack2_decode),
}
ALL_STAGES: tuple[str, ...] = (*DITHER_STAGES, *STAGES)

_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        from .lossless import n_workers

        _POOL = ThreadPoolExecutor(n_workers(), thread_name_prefix="rawgate-entropy")
    return _POOL


def _bounds(h: int, tile_rows: int) -> list[tuple[int, int]]:
    return [(r, min(h, r + tile_rows)) for r in range(0, h, tile_rows)]


def encode_tiles(codes: np.ndarray, stage: str, tile_rows: int) -> bytes:
    """Code a ``(P, H, W)`` stack tile by tile; returns a table of lengths + the tiles."""
    if stage not in STAGES:
        raise EntropyError(f"unknown entropy stage {stage!r}; known: {', '.join(STAGES)}")
    enc = STAGES[stage][0]
    P, H, W = codes.shape
    jobs = [codes[p, r0:r1] for p in range(P) for r0, r1 in _bounds(H, tile_rows)]
    parts = list(_pool().map(lambda t: bytes(enc(np.ascontiguousarray(t))), jobs))
    table = struct.pack(f"<I{len(parts)}I", len(parts), *(len(b) for b in parts))
    return table + b"".join(parts)


def decode_tiles(data: memoryview, stage: str, shape: tuple[int, int, int], dtype: np.dtype,
                 tile_rows: int) -> np.ndarray:
    """Inverse of :func:`encode_tiles`."""
    if stage not in STAGES:
        raise EntropyError(f"unknown entropy stage {stage!r}; known: {', '.join(STAGES)}")
    dec = STAGES[stage][1]
    P, H, W = shape
    bounds = _bounds(H, tile_rows)
    n = P * len(bounds)
    if len(data) < 4 or struct.unpack_from("<I", data, 0)[0] != n:
        raise EntropyError(f"tile table does not match {n} tiles")
    lengths = struct.unpack_from(f"<{n}I", data, 4)
    pos = 4 + 4 * n
    if pos + sum(lengths) != len(data):
        raise EntropyError("tile table does not match the payload length")
    jobs = []
    for i, ln in enumerate(lengths):
        p, (r0, r1) = divmod(i, len(bounds))[0], bounds[i % len(bounds)]
        jobs.append((p, r0, r1, data[pos : pos + ln]))
        pos += ln
    out = np.empty(shape, dtype)

    def run(job):
        p, r0, r1, b = job
        out[p, r0:r1] = dec(b, (r1 - r0, W), dtype)

    list(_pool().map(run, jobs))
    return out


def encode_codes(codes: np.ndarray, stage: str, tile_rows: int, seed: int,
                 skip: np.ndarray | None = None) -> bytes:
    """Code a ``(P, H, W)`` code stack with any stage.

    ``seed``: the codes' dither seed; ``skip`` ``(H, W)``: pixels whose code is their left
    neighbour's by construction, which a stage may leave out (``predictive`` does).
    """
    if stage in DITHER_STAGES:
        return DITHER_STAGES[stage][0](codes, seed, tile_rows, skip)
    return encode_tiles(codes, stage, tile_rows)


def decode_codes(data: memoryview, stage: str, shape: tuple[int, int, int], dtype: np.dtype,
                 tile_rows: int, seed: int, marker: int,
                 skip: np.ndarray | None = None) -> np.ndarray:
    """Inverse of :func:`encode_codes` (same ``skip``); codes above ``marker`` are refused."""
    if stage in DITHER_STAGES:
        try:
            return DITHER_STAGES[stage][1](data, shape, dtype, seed, tile_rows, marker, skip)
        except _predictive.PredictiveError as e:
            raise EntropyError(f"{stage}: {e}") from e
    return decode_tiles(data, stage, shape, dtype, tile_rows)
