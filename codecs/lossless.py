"""Lossless codecs (bit-exact): zstd, Blosc2, deflate, JPEG-XL, JPEG-LS, LERC.

Byte codecs (zstd, Blosc2, deflate) take any numeric array; image codecs (JPEG-XL, JPEG-LS, LERC)
take uint8/uint16 images and stacks, coded plane by plane (axes before the last two are planes).
JPEG-XL, JPEG-LS and LERC also have lossy settings (``distance``/``near``/``max_error``); with those
they are lossy and reported as such (:attr:`Codec.lossless`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import imagecodecs
import numpy as np

from .base import Codec, CodecError, register_codec, search_for_ratio

__all__ = ["Zstd", "Blosc2", "Deflate", "JpegXL", "JpegLS", "Lerc", "RatioNotReachedWarning",
           "planes_of", "n_workers"]


def n_workers() -> int:
    """Threads a codec may use: ``$RAWGATE_THREADS`` (the daemon gives each worker process its
    share of the cores) or the CPUs this process may run on, at most 8."""
    env = os.environ.get("RAWGATE_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2))


def planes_of(a: np.ndarray) -> np.ndarray:
    """View an image or stack ``(..., H, W)`` as ``(planes, H, W)``."""
    return a.reshape((-1,) + a.shape[-2:])


def _map_planes(fn, planes) -> list:
    if len(planes) == 1:
        return [fn(planes[0])]
    with ThreadPoolExecutor(n_workers()) as pool:  # imagecodecs releases the GIL
        return list(pool.map(fn, planes))


# ---------------------------------------------------------------------- byte codecs
@dataclasses.dataclass(frozen=True)
class _ByteCodec(Codec):
    family: ClassVar[str] = "lossless"
    dtypes: ClassVar[tuple[str, ...] | None] = None
    min_ndim: ClassVar[int] = 0

    def _compress(self, data: bytes, itemsize: int) -> bytes:
        raise NotImplementedError

    def _decompress(self, data: memoryview) -> bytes:
        raise NotImplementedError

    def _encode(self, a):
        return {}, [bytes(self._compress(a.tobytes(), a.dtype.itemsize))]

    def _decode(self, header, sections, dtype, shape):
        raw = self._decompress(sections[0])
        expected = int(np.prod(shape)) * dtype.itemsize
        if len(raw) != expected:
            raise CodecError(f"{self.codec_id}: payload has {len(raw)} bytes, expected {expected}")
        return np.frombuffer(raw, dtype).reshape(shape).copy()


@register_codec
@dataclasses.dataclass(frozen=True)
class Zstd(_ByteCodec):
    codec_id: ClassVar[str] = "zstd"
    summary: ClassVar[str] = "Zstandard on the raw bytes"
    option_help: ClassVar[dict[str, str]] = {"level": "compression level 1–22 (negative: faster)"}
    level: int = 3

    def __post_init__(self):
        if not -7 <= self.level <= 22:
            raise CodecError(f"zstd: level must be in -7..22, got {self.level}")

    def _compress(self, data, itemsize):
        return imagecodecs.zstd_encode(data, level=self.level)

    def _decompress(self, data):
        return imagecodecs.zstd_decode(data)


@register_codec
@dataclasses.dataclass(frozen=True)
class Blosc2(_ByteCodec):
    codec_id: ClassVar[str] = "blosc2"
    summary: ClassVar[str] = "Blosc2 (shuffle + zstd/lz4), multi-threaded"
    option_help: ClassVar[dict[str, str]] = {
        "level": "0–9",
        "compressor": "zstd, lz4, lz4hc, blosclz, zlib",
        "shuffle": "shuffle, bitshuffle, noshuffle",
    }
    level: int = 5
    compressor: str = "zstd"
    shuffle: str = "shuffle"

    def __post_init__(self):
        if not 0 <= self.level <= 9:
            raise CodecError(f"blosc2: level must be in 0..9, got {self.level}")
        if self.compressor not in ("zstd", "lz4", "lz4hc", "blosclz", "zlib"):
            raise CodecError(f"blosc2: unknown compressor {self.compressor!r}")
        if self.shuffle not in ("shuffle", "bitshuffle", "noshuffle"):
            raise CodecError(f"blosc2: unknown shuffle {self.shuffle!r}")

    def _encode(self, a):
        data = imagecodecs.blosc2_encode(
            a.tobytes(), level=self.level, compressor=self.compressor, shuffle=self.shuffle,
            typesize=a.dtype.itemsize, numthreads=n_workers(),
        )
        # Blosc2 writes a constant buffer as a header-only "special value" chunk, which
        # imagecodecs 2026.3 cannot decode ("Invalid value in header"); store constants ourselves.
        if len(data) <= 64 and a.size and (a == a.flat[0]).all():
            return {"constant": a.flat[0].item()}, [b""]
        return {}, [bytes(data)]

    def _decode(self, header, sections, dtype, shape):
        if "constant" in header:
            return np.full(shape, header["constant"], dtype)
        return super()._decode(header, sections, dtype, shape)

    def _decompress(self, data):
        return imagecodecs.blosc2_decode(data, numthreads=n_workers())


@register_codec
@dataclasses.dataclass(frozen=True)
class Deflate(_ByteCodec):
    codec_id: ClassVar[str] = "deflate"
    summary: ClassVar[str] = "deflate (libdeflate), as in ZIP/PNG/TIFF"
    option_help: ClassVar[dict[str, str]] = {"level": "1–12"}
    level: int = 6

    def __post_init__(self):
        if not 0 <= self.level <= 12:
            raise CodecError(f"deflate: level must be in 0..12, got {self.level}")

    def _compress(self, data, itemsize):
        return imagecodecs.deflate_encode(data, level=self.level)

    def _decompress(self, data):
        return imagecodecs.deflate_decode(data)


# ---------------------------------------------------------------------- image codecs
class RatioNotReachedWarning(UserWarning):
    """A ``ratio=`` target was out of reach: the array was coded at the lowest quality."""


def _warn_ratio_not_reached(codec_id: str, target: float, achieved: float, setting: float) -> None:
    """Say that ``ratio=target`` could not be reached (ratios are raw size / payload size)."""
    warnings.warn(
        f"{codec_id}: ratio {target:g} is out of reach on this array; coded at the lowest "
        f"quality (setting {setting:g}), ratio {achieved:.4g} (recorded in the stream header as "
        f"achieved_ratio, ratio_reached=false)",
        RatioNotReachedWarning,
        stacklevel=_stacklevel_outside_package(),
    )


def _stacklevel_outside_package() -> int:
    """``warnings.warn``'s stacklevel that names the first caller outside this package."""
    here = os.path.dirname(os.path.abspath(__file__))
    level, frame = 2, sys._getframe(2)  # 1: the function calling warn; 2: its caller
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here + os.sep):
        level, frame = level + 1, frame.f_back
    return level


@dataclasses.dataclass(frozen=True)
class _PlaneCodec(Codec):
    """Codes each ``(H, W)`` plane on its own; planes in parallel threads."""

    def _encode_plane(self, p: np.ndarray, setting: float | None) -> bytes:
        raise NotImplementedError

    def _decode_plane(self, data: memoryview, dtype: np.dtype, hw: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError

    #: the setting a ``ratio=`` search varies: (lo, hi, integer, quality_increases_size)
    ratio_setting: ClassVar[tuple[float, float, bool, bool] | None] = None

    def __post_init__(self):
        ratio = getattr(self, "ratio", None)
        if ratio is not None and ratio <= 1:
            raise CodecError(f"{self.codec_id}: ratio must be > 1, got {ratio}")
        self._validate()

    def _validate(self) -> None:
        """Check the codec's own options (raise CodecError naming the option)."""

    def _ratio_search(self) -> tuple[float, float, float, bool, bool] | None:
        """(target, lo, hi, integer, quality_increases_size), or None without ``ratio=``."""
        ratio = getattr(self, "ratio", None)
        if ratio is None or self.ratio_setting is None:
            return None
        return (ratio, *self.ratio_setting)

    def _fixed_setting(self) -> float | None:
        return None

    def _encode(self, a):
        planes = planes_of(a)
        search = self._ratio_search()
        extra: dict[str, Any] = {}
        if search is None:
            setting = self._fixed_setting()
            sections = _map_planes(lambda p: bytes(self._encode_plane(p, setting)), planes)
        else:
            target, lo, hi, integer, inc = search

            def encode_at(s: float) -> list[bytes]:
                return _map_planes(lambda p: bytes(self._encode_plane(p, s)), planes)

            cache: dict[float, list[bytes]] = {}

            def joined(s: float) -> bytes:
                cache[s] = encode_at(s)
                return b"".join(cache[s])

            setting, _ = search_for_ratio(joined, a.nbytes, target, lo, hi, integer=integer,
                                          quality_increases_size=inc)
            sections = cache[setting]
            achieved = a.nbytes / max(1, sum(len(s) for s in sections))
            extra["setting"] = setting
            extra["achieved_ratio"] = achieved
            extra["ratio_reached"] = achieved >= target
            if achieved < target:
                _warn_ratio_not_reached(self.codec_id, target, achieved, setting)
        return extra, sections

    def _decode(self, header, sections, dtype, shape):
        hw = (shape[-2], shape[-1])
        n = int(np.prod(shape[:-2], dtype=np.int64)) if len(shape) > 2 else 1
        if len(sections) != n:
            raise CodecError(f"{self.codec_id}: {len(sections)} planes in stream, expected {n}")
        planes = _map_planes(lambda s: self._decode_plane(s, dtype, hw), sections)
        out = np.empty((n,) + hw, dtype)
        for i, p in enumerate(planes):
            if p.shape != hw:
                raise CodecError(f"{self.codec_id}: plane {i} decoded to {p.shape}, expected {hw}")
            out[i] = p
        return out.reshape(shape)


@register_codec
@dataclasses.dataclass(frozen=True)
class JpegXL(_PlaneCodec):
    codec_id: ClassVar[str] = "jpegxl"
    family: ClassVar[str] = "lossless"
    summary: ClassVar[str] = "JPEG-XL; lossless by default, lossy with distance= or ratio="
    ratio_setting: ClassVar[tuple[float, float, bool, bool] | None] = (0.01, 25.0, False, False)
    option_help: ClassVar[dict[str, str]] = {
        "effort": "1 (fastest) – 9 (smallest)",
        "distance": "0 = lossless; > 0 = lossy (Butteraugli distance, 1 ≈ visually lossless)",
        "ratio": "lossy: search the distance that reaches this compression ratio",
    }
    effort: int = 1
    distance: float = 0.0
    ratio: float | None = None

    def _validate(self) -> None:
        if not 1 <= self.effort <= 10:
            raise CodecError(f"jpegxl: effort must be in 1..10, got {self.effort}")
        if not 0 <= self.distance <= 25:
            raise CodecError(f"jpegxl: distance must be in 0..25, got {self.distance}")

    @property
    def lossless(self) -> bool:
        return self.distance == 0 and self.ratio is None

    def _fixed_setting(self):
        return self.distance

    def _encode_plane(self, p, setting):
        threads = 1 if p.size < 1 << 20 else n_workers()
        if not setting:
            return imagecodecs.jpegxl_encode(p, lossless=True, effort=self.effort, numthreads=threads)
        return imagecodecs.jpegxl_encode(p, distance=float(setting), effort=self.effort,
                                         numthreads=threads)

    def _decode_plane(self, data, dtype, hw):
        return imagecodecs.jpegxl_decode(data, numthreads=n_workers()).astype(dtype, copy=False)


@register_codec
@dataclasses.dataclass(frozen=True)
class JpegLS(_PlaneCodec):
    codec_id: ClassVar[str] = "jpegls"
    family: ClassVar[str] = "lossless"
    summary: ClassVar[str] = "JPEG-LS (CharLS); lossless, near-lossless with near="
    option_help: ClassVar[dict[str, str]] = {"near": "0 = lossless; n > 0: max error n ADU"}
    near: int = 0

    def _validate(self) -> None:
        if not 0 <= self.near <= 255:
            raise CodecError(f"jpegls: near must be in 0..255, got {self.near}")

    @property
    def lossless(self) -> bool:
        return self.near == 0

    def _fixed_setting(self):
        return self.near

    def _encode_plane(self, p, setting):
        return imagecodecs.jpegls_encode(p, level=int(setting) if setting else None)

    def _decode_plane(self, data, dtype, hw):
        return imagecodecs.jpegls_decode(data).astype(dtype, copy=False)


@register_codec
@dataclasses.dataclass(frozen=True)
class Lerc(_PlaneCodec):
    codec_id: ClassVar[str] = "lerc"
    family: ClassVar[str] = "lossless"
    summary: ClassVar[str] = "LERC; lossless with max_error=0, else max abs error per pixel"
    ratio_setting: ClassVar[tuple[float, float, bool, bool] | None] = (0.0, 4096.0, False, False)
    dtypes: ClassVar[tuple[str, ...] | None] = ("uint8", "uint16", "int16", "float32")
    option_help: ClassVar[dict[str, str]] = {
        "max_error": "largest allowed absolute error per pixel [ADU]; 0 = lossless",
        "ratio": "lossy: search the max_error that reaches this compression ratio",
        "zstd": "zstd on top of LERC (level 0 = off)",
    }
    max_error: float = 0.0
    ratio: float | None = None
    zstd: int = 0

    def _validate(self) -> None:
        if self.max_error < 0:
            raise CodecError(f"lerc: max_error must be ≥ 0, got {self.max_error}")

    @property
    def lossless(self) -> bool:
        return self.max_error == 0 and self.ratio is None

    def _fixed_setting(self):
        return self.max_error

    def _encode_plane(self, p, setting):
        # LERC guarantees |error| ≤ level; integer input is lossless at 0.5 (we pass 0 → 0.5).
        level = max(float(setting or 0.0), 0.5 if p.dtype.kind in "ui" else 0.0)
        kw: dict[str, Any] = {}
        if self.zstd:
            kw = {"compression": "zstd", "compressionargs": {"level": self.zstd}}
        return imagecodecs.lerc_encode(p, level=level, **kw)

    def _decode_plane(self, data, dtype, hw):
        return np.asarray(imagecodecs.lerc_decode(data)).astype(dtype, copy=False)
