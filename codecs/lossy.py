"""Classical lossy codecs: the baselines of Pomarico et al. and Zhou et al.

* ``eightbit`` — 16 → 8-bit conversion, decoded back to the original dtype (what a lab does when it
  "saves as 8-bit"); two mappings: ImageJ's (``range=auto``: the data's min–max, ImageJ's
  ``TypeConverter``: ``v8 = min(255, int((x − min)·256/(max − min + 1) + 0.5))``) and a fixed one
  (``range=fixed``: ``low``–``high``, default the full range of ``bits``; 16 bits ⇒ ``x >> 8``).
  Decoding maps each 8-bit value back to the middle of its input bin: of the integers in
  ``[low, high]`` that the mapping sends to that code (:func:`eightbit_decode_table`). The stream
  records the mapping, ``low``, ``high`` and ``bits`` used, and decoding reads them from there.
* ``jpeg`` — baseline JPEG (libjpeg-turbo); uint8 as 8-bit, uint16 as 12-bit JPEG (values above
  4095 are first mapped linearly from the data's min–max onto 0–4095, recorded in the stream).
* ``jpeg2k`` — JPEG 2000 lossy (OpenJPEG), ``quality`` 1–100 (imagecodecs' level).
* ``jpegxr`` — JPEG-XR, ``quality`` 0–1.
* ``jpegxl`` with ``distance``/``ratio`` and ``lerc`` with ``max_error``/``ratio`` live in
  :mod:`.lossless` next to their lossless settings.

Every codec defined by a ratio ("JPEG 10:1") takes ``ratio=``: the highest quality whose ratio is
still ≥ the target is searched on the array being compressed, and the setting used is recorded in
the stream header.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar

import imagecodecs
import numpy as np

from ._stream import CorruptStreamError
from .base import Codec, CodecError, register_codec
from .lossless import _PlaneCodec

__all__ = ["EightBit", "Jpeg", "Jpeg2000", "JpegXR", "imagej_to_8bit", "fixed_to_8bit",
           "eightbit_decode_table"]


def imagej_to_8bit(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """ImageJ's 16 → 8-bit conversion with display range ``[low, high]`` (``ShortProcessor``)."""
    scale = 256.0 / (high - low + 1.0)
    v = np.floor((x.astype(np.float64) - low).clip(0, None) * scale + 0.5)
    return v.clip(0, 255).astype(np.uint8)


def fixed_to_8bit(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Fixed linear mapping of ``[low, high]`` onto 0–255 by truncation (16-bit full range ⇒ ``x >> 8``)."""
    scale = 256.0 / (high - low + 1.0)
    v = np.floor((x.astype(np.float64) - low) * scale)
    return v.clip(0, 255).astype(np.uint8)


#: the 16 → 8-bit mapping of each ``range=`` setting
EIGHTBIT_MAPPINGS: dict[str, Callable[[np.ndarray, float, float], np.ndarray]] = {
    "auto": imagej_to_8bit,
    "fixed": fixed_to_8bit,
}


def eightbit_decode_table(mapping: str, low: float, high: float, dtype: np.dtype) -> np.ndarray:
    """The value each 8-bit code decodes to [ADU]: the middle of the code's input bin.

    The bin of a code is the set of integers in ``[low, high]`` (and in ``dtype``'s range) that the
    mapping sends to it, so the |error| of an in-range value is at most half its bin's width
    (ImageJ's rounding makes the top bin up to 1.5 bins wide, and the bottom one half a bin).
    A bin of an even number of integers has two middles; they alternate between even codes
    (lower) and odd codes (upper), so the decoded values carry no systematic ½ ADU bias. A code
    that no in-range integer maps to decodes to its nominal bin centre, clipped to
    ``[low, high]``.

    Parameters
    ----------
    mapping
        ``"auto"`` (ImageJ's rounding, :func:`imagej_to_8bit`) or ``"fixed"`` (truncation,
        :func:`fixed_to_8bit`).
    low, high
        The range mapped onto the 256 codes [ADU], ``high ≥ low``.
    dtype
        The integer dtype decoded to.

    Returns
    -------
    ndarray of ``dtype``, shape (256,)
    """
    conv = EIGHTBIT_MAPPINGS[mapping]
    info = np.iinfo(dtype)
    codes = np.arange(256)
    scale = 256.0 / (high - low + 1.0)
    centre = 0.0 if mapping == "auto" else 0.5  # ImageJ rounds; the fixed map truncates
    table = np.clip(low + (codes + centre) / scale, low, high)
    first, last = max(math.ceil(low), int(info.min)), min(math.floor(high), int(info.max))
    if last >= first:
        values = np.arange(first, last + 1, dtype=np.float64)
        mapped = conv(values, low, high)  # non-decreasing in the value
        starts = np.searchsorted(mapped, codes, side="left")
        ends = np.searchsorted(mapped, codes, side="right")
        used = ends > starts
        middle = (values[starts[used]] + values[ends[used] - 1]) / 2
        table[used] = np.where(codes[used] % 2 == 0, np.floor(middle), np.ceil(middle))
    return np.clip(np.floor(table + 0.5), info.min, info.max).astype(dtype)


def _eightbit_stream_range(header: dict[str, Any]) -> tuple[str, float, float]:
    """The mapping, low and high [ADU] a stream was written with (read from its header only).

    Streams written before the mapping was recorded beside ``low``/``high`` carry it in their
    codec configuration.
    """
    try:
        mapping = header.get("range", header["codec"].get("range", "auto"))
        low, high = float(header["low"]), float(header["high"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CorruptStreamError(f"eightbit: corrupted stream header: {e}") from e
    if mapping not in EIGHTBIT_MAPPINGS:
        raise CorruptStreamError(f"eightbit: unknown mapping {mapping!r} in the stream header")
    if not (math.isfinite(low) and math.isfinite(high)) or high < low or (
        mapping == "fixed" and high == low
    ):
        raise CorruptStreamError(f"eightbit: bad range {low}..{high} in the stream header")
    return mapping, low, high


@register_codec
@dataclasses.dataclass(frozen=True)
class EightBit(Codec):
    codec_id: ClassVar[str] = "eightbit"
    family: ClassVar[str] = "lossy"
    summary: ClassVar[str] = "16 → 8-bit conversion (ImageJ min–max or a fixed range), stored as raw 8-bit"
    option_help: ClassVar[dict[str, str]] = {
        "range": "auto (ImageJ: the data's min–max) or fixed (low–high)",
        "low": "fixed range: lowest value [ADU] (default 0)",
        "high": "fixed range: highest value [ADU] (default 2**bits − 1)",
        "bits": "fixed range: bit depth whose full range is mapped (default: the dtype's)",
        "saturated": "auto range: % of pixels saturated, half at each end (ImageJ's Auto contrast: 0.35)",
    }
    range: str = "auto"
    low: float | None = None
    high: float | None = None
    bits: int | None = None
    saturated: float = 0.0

    def __post_init__(self):
        if not 0.0 <= float(self.saturated) < 100.0:
            raise CodecError(f"eightbit: saturated must be a percentage in [0, 100), got {self.saturated}")
        if self.range not in ("auto", "fixed"):
            raise CodecError(f"eightbit: range must be auto or fixed, got {self.range!r}")
        if self.bits is not None and not 1 <= self.bits <= 16:
            raise CodecError(f"eightbit: bits must be in 1..16, got {self.bits}")

    def _limits(self, a: np.ndarray) -> tuple[float, float, int | None]:
        """(low, high) [ADU] mapped onto 0–255, and the bit depth used (fixed range only)."""
        if self.range == "auto":
            if self.saturated > 0 and a.size:
                # ImageJ's Auto button: the display range leaves saturated/2 % of pixels below and above
                lo, hi = np.percentile(a, [self.saturated / 2, 100 - self.saturated / 2])
                lo, hi = float(np.floor(lo)), float(np.ceil(hi))
                return lo, max(hi, lo + 1.0), None
            return float(a.min()), float(a.max()), None
        bits = self.bits or a.dtype.itemsize * 8
        low = 0.0 if self.low is None else float(self.low)
        high = float(2**bits - 1) if self.high is None else float(self.high)
        if high <= low:
            raise CodecError(f"eightbit: high ({high}) must exceed low ({low})")
        return low, high, bits

    def _encode(self, a):
        low, high, bits = self._limits(a)
        conv = EIGHTBIT_MAPPINGS[self.range]
        extra = {"range": self.range, "low": low, "high": high, "bits": bits}
        return extra, [conv(a, low, high).tobytes()]

    def _decode(self, header, sections, dtype, shape):
        # everything from the stream: a reader with other options decodes it as written
        mapping, low, high = _eightbit_stream_range(header)
        if dtype.name not in (self.dtypes or ()):
            raise CorruptStreamError(f"eightbit: stream header names dtype {dtype}, not uint8/uint16")
        v = np.frombuffer(sections[0], np.uint8)
        if v.size != int(np.prod(shape)):
            raise CodecError(f"eightbit: {v.size} values for shape {shape}")
        return eightbit_decode_table(mapping, low, high, dtype)[v].reshape(shape)


@register_codec
@dataclasses.dataclass(frozen=True)
class Jpeg(_PlaneCodec):
    codec_id: ClassVar[str] = "jpeg"
    family: ClassVar[str] = "lossy"
    summary: ClassVar[str] = "JPEG (8-bit for uint8, 12-bit for uint16), quality= or ratio="
    ratio_setting: ClassVar[tuple[float, float, bool, bool] | None] = (1.0, 100.0, True, True)
    option_help: ClassVar[dict[str, str]] = {
        "quality": "1–100",
        "ratio": "search the quality that reaches this compression ratio (e.g. 10, 100)",
    }
    quality: int = 75
    ratio: float | None = None

    def _validate(self) -> None:
        if not 1 <= self.quality <= 100:
            raise CodecError(f"jpeg: quality must be in 1..100, got {self.quality}")

    def _fixed_setting(self):
        return float(self.quality)

    def _encode(self, a):
        # uint16 beyond 12 bits: map the data's range onto 12 bits first (recorded for decode)
        lo, hi = (float(a.min()), float(a.max())) if a.dtype == np.uint16 else (0.0, 0.0)
        scaled = a.dtype == np.uint16 and hi > 4095
        if scaled:
            a = np.floor((a - lo) * (4095.0 / max(hi - lo, 1.0)) + 0.5).astype(np.uint16)
        extra, sections = super()._encode(a)
        extra["map12"] = [lo, hi] if scaled else None
        return extra, sections

    def _encode_plane(self, p, setting):
        bits = 8 if p.dtype == np.uint8 else 12
        return imagecodecs.jpeg8_encode(p, level=int(setting), bitspersample=bits)

    def _decode_plane(self, data, dtype, hw):
        return imagecodecs.jpeg8_decode(data).astype(dtype, copy=False)

    def _decode(self, header, sections, dtype, shape):
        a = super()._decode(header, sections, dtype, shape)
        m = header.get("map12")
        if m:
            lo, hi = m
            a = np.floor(a * ((hi - lo) / 4095.0) + lo + 0.5).clip(0, 65535).astype(dtype)
        return a


@register_codec
@dataclasses.dataclass(frozen=True)
class Jpeg2000(_PlaneCodec):
    codec_id: ClassVar[str] = "jpeg2k"
    family: ClassVar[str] = "lossy"
    summary: ClassVar[str] = "JPEG 2000 lossy (OpenJPEG), quality= or ratio="
    ratio_setting: ClassVar[tuple[float, float, bool, bool] | None] = (1.0, 100.0, True, True)
    option_help: ClassVar[dict[str, str]] = {
        "quality": "1–100 (imagecodecs' level; higher is better)",
        "ratio": "search the quality that reaches this compression ratio",
    }
    quality: int = 60
    ratio: float | None = None

    def _validate(self) -> None:
        if not 1 <= self.quality <= 100:
            raise CodecError(f"jpeg2k: quality must be in 1..100, got {self.quality}")

    def _fixed_setting(self):
        return float(self.quality)

    def _encode_plane(self, p, setting):
        return imagecodecs.jpeg2k_encode(p, level=int(setting), numthreads=1)

    def _decode_plane(self, data, dtype, hw):
        return imagecodecs.jpeg2k_decode(data).astype(dtype, copy=False)


@register_codec
@dataclasses.dataclass(frozen=True)
class JpegXR(_PlaneCodec):
    codec_id: ClassVar[str] = "jpegxr"
    family: ClassVar[str] = "lossy"
    summary: ClassVar[str] = "JPEG-XR, quality= (0–1) or ratio="
    ratio_setting: ClassVar[tuple[float, float, bool, bool] | None] = (0.01, 1.0, False, True)
    option_help: ClassVar[dict[str, str]] = {
        "quality": "0–1 (1 = lossless)",
        "ratio": "search the quality that reaches this compression ratio",
    }
    quality: float = 0.8
    ratio: float | None = None

    def _validate(self) -> None:
        if not 0 < self.quality <= 1:
            raise CodecError(f"jpegxr: quality must be in (0, 1], got {self.quality}")

    def _fixed_setting(self):
        return self.quality

    def _encode_plane(self, p, setting):
        try:
            return imagecodecs.jpegxr_encode(p, level=float(setting))
        except imagecodecs.JpegxrError as e:
            raise CodecError(
                f"jpegxr: cannot code a {p.shape[1]}×{p.shape[0]} image at quality {setting:.3g} "
                f"(libjxr: {e})"
            ) from e

    def _decode_plane(self, data, dtype, hw):
        return imagecodecs.jpegxr_decode(data).astype(dtype, copy=False)

