"""Codec base class, registry and the short spec strings (``noisecal:step=2``, ``jpeg:ratio=10``).

Every codec is a small frozen dataclass: its fields are its options (typed, with defaults), so
``get_config`` / ``from_config`` / the spec parser / ``rawgate codecs`` all come from one place.
``encode(array) -> bytes`` writes a self-describing stream (see :mod:`._stream`) that carries the
configuration, the original dtype and shape; ``decode(bytes) -> ndarray`` returns exactly that
dtype and shape or raises.

Codecs are registered with numcodecs under ``rawgate.<id>`` (a bare ``zstd`` would take over
numcodecs' own Zstd), and ``get_config()["id"]`` is that same name, so
``numcodecs.get_codec(codec.get_config())`` rebuilds the codec (zarr v2's contract). Everything
that reads a config or a spec here (``get_codec``, ``from_config``, ``parse_spec``, ``decode``)
accepts the bare id too, as streams written before the prefix store it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar

import numcodecs
import numpy as np
from numcodecs.abc import Codec as _NumcodecsCodec

from rawgate.calibration.model import ModelError

from ._stream import CorruptStreamError, pack, peek_header, unpack

__all__ = [
    "Codec",
    "CodecError",
    "CorruptStreamError",
    "register_codec",
    "codec_classes",
    "get_codec",
    "parse_spec",
    "decode_any",
    "codec_of",
    "search_for_ratio",
    "bare_id",
    "NUMCODECS_PREFIX",
]


class CodecError(ValueError):
    """Unknown codec, bad option, or input a codec cannot take (with the reason)."""


_REGISTRY: dict[str, type["Codec"]] = {}

#: prefix of rawgate's codec ids in numcodecs' registry and in ``get_config()["id"]``
NUMCODECS_PREFIX = "rawgate."


def bare_id(cid: Any) -> str:
    """A codec id without the numcodecs prefix (``"rawgate.zstd"`` and ``"zstd"`` ⇒ ``"zstd"``)."""
    return str(cid).strip().removeprefix(NUMCODECS_PREFIX)


def register_codec(cls: type["Codec"]) -> type["Codec"]:
    """Class decorator: add a codec to rawgate's registry (and numcodecs' as ``rawgate.<id>``)."""
    if cls.codec_id in _REGISTRY and _REGISTRY[cls.codec_id] is not cls:
        raise CodecError(f"codec id {cls.codec_id!r} registered twice")
    _REGISTRY[cls.codec_id] = cls
    numcodecs.register_codec(cls, codec_id=cls.numcodecs_id())
    return cls


def codec_classes() -> dict[str, type["Codec"]]:
    """All registered codecs by id."""
    return dict(sorted(_REGISTRY.items()))


@dataclasses.dataclass(frozen=True)
class Codec(_NumcodecsCodec):
    """A rawgate codec. Subclasses are frozen dataclasses whose fields are the options.

    Subclasses implement ``_encode(array) -> (header_extra, sections)`` and
    ``_decode(header, sections, dtype, shape) -> ndarray``; the base class validates the input,
    frames the stream and checks it on the way back.
    """

    codec_id: ClassVar[str] = ""
    family: ClassVar[str] = ""  # "lossless", "lossy" or "noise-calibrated"
    summary: ClassVar[str] = ""
    #: dtypes ``encode`` accepts (None: any integer or float dtype).
    dtypes: ClassVar[tuple[str, ...] | None] = ("uint8", "uint16")
    #: smallest number of dimensions (2: an image or a stack of images).
    min_ndim: ClassVar[int] = 2
    #: per-option help for ``rawgate codecs``.
    option_help: ClassVar[dict[str, str]] = {}
    #: the codec codes with the camera's noise model (``noise_model=``; containers store the
    #: model's maps once per file or once per archive)
    needs_noise_model: ClassVar[bool] = False

    # ------------------------------------------------------------------ identity
    @property
    def lossless(self) -> bool:
        return self.family == "lossless"

    @classmethod
    def numcodecs_id(cls) -> str:
        """The id in numcodecs' registry and in :meth:`get_config`: ``rawgate.<codec_id>``."""
        return NUMCODECS_PREFIX + cls.codec_id

    def get_config(self) -> dict[str, Any]:
        """The options as plain JSON, with ``id`` = :meth:`numcodecs_id` (numcodecs' contract)."""
        cfg = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"id": self.numcodecs_id(), **cfg}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Codec":
        """The codec of a config whose ``id`` is ``<codec_id>``, ``rawgate.<codec_id>`` or absent."""
        cfg = dict(config)
        cid = cfg.pop("id", cls.codec_id)
        if bare_id(cid) != cls.codec_id:
            raise CodecError(f"config is for codec {cid!r}, not {cls.codec_id!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(cfg) - names
        if unknown:
            raise CodecError(
                f"{cls.codec_id}: unknown option(s) {', '.join(sorted(unknown))}; "
                f"valid: {', '.join(sorted(names)) or 'none'}"
            )
        return cls(**cfg)

    @property
    def spec(self) -> str:
        """The short spec string that rebuilds this codec (non-default options only)."""
        opts = [
            f"{f.name}={getattr(self, f.name)}"
            for f in dataclasses.fields(self)
            if f.init and f.metadata.get("spec", True) and getattr(self, f.name) != f.default
        ]
        return self.codec_id + (":" + ",".join(opts) if opts else "")

    # ------------------------------------------------------------------ encode / decode
    def _check_input(self, a: Any) -> np.ndarray:
        if not isinstance(a, np.ndarray):
            a = np.asarray(a)
        if a.dtype.kind not in "uif":
            raise CodecError(f"{self.codec_id}: cannot compress dtype {a.dtype} (numbers only)")
        if self.dtypes is not None and a.dtype.name not in self.dtypes:
            raise CodecError(
                f"{self.codec_id}: dtype {a.dtype} not supported (takes {', '.join(self.dtypes)})"
            )
        if a.ndim < self.min_ndim:
            raise CodecError(
                f"{self.codec_id}: needs an image of ≥ {self.min_ndim} dimensions, got shape {a.shape}"
            )
        if self.min_ndim >= 2 and a.size == 0:
            raise CodecError(f"{self.codec_id}: empty image (shape {a.shape})")
        # ascontiguousarray returns at least 1-D: keep a 0-D array 0-D (its shape is recorded)
        return np.ascontiguousarray(a).reshape(a.shape)

    def encode(self, buf: Any) -> bytes:
        """Compress an array into a self-describing rawgate stream."""
        a = self._check_input(buf)
        extra, sections = self._encode(a)
        header = {
            "codec": self.get_config(),
            "dtype": a.dtype.str,
            "shape": list(a.shape),
            **extra,
        }
        return pack(header, sections)

    def decode(self, buf: Any, out: Any = None) -> np.ndarray:
        """Decompress a stream written by this codec (same id) into the original array."""
        header, sections = unpack(_as_bytes(buf))
        config = header["codec"]
        cid = bare_id(config.get("id")) if isinstance(config, dict) else None
        if cid != self.codec_id:
            raise CodecError(f"stream was written by codec {cid!r}, not {self.codec_id!r}")
        try:
            dtype = np.dtype(header["dtype"])
            shape = tuple(int(s) for s in header["shape"])
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptStreamError(f"corrupted stream header: {e}") from e
        # a forged header must not make a decoder produce what no encoder writes (found by
        # tests/test_fuzz_decoders.py: object arrays from jpegls and lerc)
        if dtype.kind not in "biuf" or dtype.hasobject or (self.dtypes is not None and dtype.name not in self.dtypes):
            raise CorruptStreamError(f"corrupted stream header: {self.codec_id} does not write {dtype} data")
        if len(shape) > 32 or any(n < 0 for n in shape):
            raise CorruptStreamError(f"corrupted stream header: shape {shape}")
        try:
            a = self._decode(header, sections, dtype, shape)
        except (CodecError, CorruptStreamError, ModelError):
            raise
        except Exception as e:  # the payload's own decoder failed: corrupt, never silent
            raise CorruptStreamError(f"{self.codec_id}: payload does not decode: {e}") from e
        if a.dtype != dtype or a.shape != shape:
            raise CorruptStreamError(
                f"{self.codec_id}: payload decoded to {a.dtype}{a.shape}, header says {dtype}{shape}"
            )
        if out is not None:
            np.copyto(np.asarray(out).reshape(shape), a)
            return out
        return a

    # subclasses ----------------------------------------------------------
    def _encode(self, a: np.ndarray) -> tuple[dict[str, Any], list[bytes]]:
        raise NotImplementedError

    def _decode(self, header: dict, sections: list[memoryview], dtype: np.dtype,
                shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError


def _as_bytes(buf: Any) -> bytes | memoryview:
    if isinstance(buf, (bytes, bytearray, memoryview)):
        return buf
    if isinstance(buf, np.ndarray):
        return memoryview(np.ascontiguousarray(buf).view(np.uint8).reshape(-1))
    raise CodecError(f"cannot decode an object of type {type(buf).__name__}")


# ---------------------------------------------------------------------- spec strings
def _convert(value: str, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [t for t in typing.get_args(tp) if t is not type(None)]
        if value.lower() in ("none", "null", "") and len(args) < len(typing.get_args(tp)):
            return None
        errors = []
        for t in args:
            try:
                return _convert(value, t, where)
            except CodecError as e:
                errors.append(str(e))
        raise CodecError(errors[0] if errors else f"{where}: bad value {value!r}")
    try:
        if tp is bool:
            v = value.lower()
            if v in ("1", "true", "yes", "on"):
                return True
            if v in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return value
    except ValueError:
        pass
    name = getattr(tp, "__name__", str(tp))
    raise CodecError(f"{where}: {value!r} is not a valid {name}")


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"name:key=value,key=value"`` into the name and typed options.

    Raises
    ------
    CodecError
        Unknown codec (listing the known ones), unknown option (listing the valid ones), or a
        value of the wrong type.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise CodecError("empty codec spec")
    name, _, rest = spec.strip().partition(":")
    name = bare_id(name.strip().lower())
    cls = _REGISTRY.get(name)
    if cls is None:
        raise CodecError(f"unknown codec {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    opts: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise CodecError(f"{spec!r}: option {item!r} must be key=value")
        if key not in fields:
            raise CodecError(
                f"{name}: unknown option {key!r}; valid: {', '.join(fields) or 'none'}"
            )
        opts[key] = _convert(value.strip(), hints[key], f"{name}:{key}")
    return name, opts


def get_codec(spec: str | dict[str, Any] | "Codec", **overrides: Any) -> "Codec":
    """A codec from a spec string (``"noisecal:step=2"``), a config dict, or a codec.

    A config's ``id`` (or a spec's name) may be the bare id or numcodecs' ``rawgate.<id>``.
    """
    if isinstance(spec, Codec):
        return dataclasses.replace(spec, **overrides) if overrides else spec
    if isinstance(spec, dict):
        cid = bare_id(spec.get("id", ""))
        cls = _REGISTRY.get(cid)
        if cls is None:
            raise CodecError(f"unknown codec {cid!r}; known: {', '.join(sorted(_REGISTRY))}")
        return cls.from_config({**spec, **overrides})
    name, opts = parse_spec(spec)
    return _REGISTRY[name](**{**opts, **overrides})


def codec_of(buf: bytes | memoryview, **overrides: Any) -> "Codec":
    """The codec that wrote a stream, rebuilt from its header."""
    header = peek_header(buf)
    return get_codec(header["codec"], **overrides)


def decode_any(buf: bytes | memoryview, **overrides: Any) -> np.ndarray:
    """Decode any rawgate stream: the codec is read from the stream itself."""
    return codec_of(buf, **overrides).decode(buf)


# ---------------------------------------------------------------------- ratio targets
def search_for_ratio(
    encode_at: Callable[[float], bytes],
    nbytes: int,
    target: float,
    lo: float,
    hi: float,
    *,
    integer: bool,
    quality_increases_size: bool = True,
    iterations: int = 14,
) -> tuple[float, bytes]:
    """Find the setting whose compression ratio is closest to ``target`` from above.

    "JPEG 10:1" means: the highest quality whose ratio is still ≥ 10. The lowest-quality end of
    ``[lo, hi]`` is tried first: when even it cannot reach the ratio, it is returned (the caller
    compares the ratio achieved with the target and reports the shortfall). Otherwise bisection
    over the setting, assuming size is monotonic in it, between a setting that reaches the
    target and one that does not.

    Parameters
    ----------
    encode_at
        Encodes the array at a setting, returning the payload.
    nbytes
        Size of the raw array [bytes].
    target
        Compression ratio wanted (raw size / payload size, dimensionless, > 1).
    lo, hi
        The setting's range (codec units: quality, distance, max_error [ADU], …).
    integer
        The setting takes integer values only (searched exactly, to adjacent integers).
    quality_increases_size
        True when a larger setting means higher quality (JPEG quality), False when it means
        lower quality (JPEG-XL distance, LERC max_error).
    iterations
        Bisection steps for a real-valued setting.

    Returns
    -------
    (setting, encoded bytes)
    """
    memo: dict[float, bytes] = {}

    def reaches(setting: float) -> bool:
        if setting not in memo:
            memo[setting] = encode_at(setting)
        return nbytes / max(len(memo[setting]), 1) >= target

    lowest, highest = (float(lo), float(hi)) if quality_increases_size else (float(hi), float(lo))
    if not reaches(lowest):
        return lowest, memo[lowest]
    good, bad = lowest, highest  # `good` reaches the target; `bad` does not (or is untried)
    if integer:
        while abs(bad - good) > 1:
            mid = float(np.floor((good + bad) / 2))  # strictly between two integers ≥ 2 apart
            good, bad = (mid, bad) if reaches(mid) else (good, mid)
        if bad not in memo and reaches(bad):  # the highest quality itself, never tried yet
            good = bad
    else:
        for _ in range(iterations):
            mid = (good + bad) / 2
            good, bad = (mid, bad) if reaches(mid) else (good, mid)
    return good, memo[good]
