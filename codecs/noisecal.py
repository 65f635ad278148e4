"""``noisecal``: the noise-calibrated codec — no bits spent on the camera's own noise, no bias.

Per pixel, with the calibrated offset ``o`` [ADU], gain ``g`` [e-/ADU] and dark noise
``σ_d² = read_noise² + g²/12`` [e-²] (read noise plus the ADC's quantisation noise):

1. **Variance stabilisation** (generalised Anscombe, as B3D): electrons ``e = (x − o)·g`` and
   ``T(e) = 2·sqrt(e + σ_d²)`` for ``e ≥ 0``, continued below by its tangent
   ``T = 2σ_d + e/σ_d`` (dark pixels whose noise dipped below the offset). The noise of ``T`` is
   ≈ 1 at every signal level.
2. **Quantisation with subtractive dither**: step ``Δ = step`` (in noise σ), index
   ``k = round(T/Δ + u)`` with ``u`` uniform on [−½, ½) from a seed stored in the stream; the
   decoder uses ``T̂ = (k − u)·Δ``. The error is uniform on [−Δ/2, Δ/2], independent of the signal
   and unbiased; it adds ``Δ²/12`` of variance, i.e. ``10·log10(1 + Δ²/12)`` dB of SNR (1.25 dB at
   Δ = 2).
3. **Unbiased inverse**: ``T⁻¹`` is quadratic above the offset, so plugging the dithered ``T̂``
   into it would overshoot by the quadratic's response to the dither variance. The decoder uses,
   instead of the square, a piecewise-linear function whose average over the dither equals the
   square exactly (see :func:`._vst_kernels.inverse`): the mean error is zero at every signal
   level, across the knee at the offset too (≤ 0.01 σ measured from dark to near saturation).
4. **Exact pixels**: pixels at or above ``saturation_adu`` (default 85 % of the way from offset to
   the EMVA saturation level, or the ADC maximum) and codes outside the code range are stored
   exactly (flagged by a marker code). The model's bad pixels past column 0 take their left
   neighbour's code (no spike for the entropy stage, and a code the decoder knows, so
   ``predictive`` spends nothing on it) and carry their exact value as a residual from an
   estimate made from their left/right neighbours' codes, so they too decode bit-exactly.
5. **Entropy stage** over the code image (tiles coded in parallel): ``preset=small`` (best ratio:
   the dither-aware predictive coder of :mod:`._predictive`) or ``preset=fast`` (``pack2``,
   written by the forward kernel; highest throughput), or any stage of
   :data:`.entropy.ALL_STAGES`. Side sections (exact values, bad-pixel residuals): pcodec, or
   zstd-1 for ``pack2``.

The stream names the model by SHA-256 and (``embed_model=true``, default) carries it once, so
it decodes with nothing but itself; containers store the maps once per dataset instead.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, ClassVar

import imagecodecs
import numpy as np

from rawgate.calibration.model import ModelError, ModelMismatchError, NoiseModel

from . import _stream
from . import _vst_kernels as K
from ._stream import CorruptStreamError
from .base import Codec, CodecError, register_codec
from .entropy import ALL_STAGES, decode_codes, encode_codes, pack2_from_rows
from .lossless import planes_of
from .models import (ModelNotFoundError, find_model, find_model_in_memory, model_sha256, register_hash_cache,
                     register_model)

__all__ = ["NoiseCal", "PRESETS", "CodecMaps", "VSTParams", "codec_maps", "register_maps", "vst_params"]

#: entropy stage per preset (chosen from bench/bench_codecs.py; see README)
PRESETS: dict[str, str] = {"small": "predictive", "fast": "pack2"}
SATURATION_MARGIN = 0.85


#: quantisation of the maps the codec codes with (what travels with the data)
OFFSET_STEP_ADU = 0.5
LOG_GAIN_STEP = 0.02  # 2 % in gain
LOG_VAR_STEP = 0.10  # 10 % in dark variance, 5 % in dark noise σ
_MAPS_FORMAT = "rawgate.noisecal.maps"


@dataclasses.dataclass(frozen=True)
class CodecMaps:
    """The per-pixel maps ``noisecal`` codes with: the model's maps, quantised.

    Encoder and decoder only have to agree on the transform, not to know the camera exactly: the
    round trip is unbiased for any parameters both sides share, and parameters within a few per
    cent of the truth keep the noise of the stabilised value within a few per cent of 1. So the
    maps are quantised (offset to 1/2 ADU, gain to 2 %, dark variance to 10 %) and travel with the
    data at ≈ 1.3 B/px instead of the calibration's 13 B/px. Gain is rounded up and dark variance
    down, so the σ the codec quantises with never exceeds the model's (the per-pixel error bound
    ``step·σ/2`` holds against the model itself); the stabilised noise is then 1 to 1.035.
    """

    model_sha256: str
    shape: tuple[int, int]
    adc_max: int
    saturation_adu: float
    offset_ref: float
    gain_ref: float
    var_ref: float
    offset_q: np.ndarray  # int16, (offset − offset_ref)/OFFSET_STEP_ADU
    gain_q: np.ndarray  # int16, log(gain/gain_ref)/LOG_GAIN_STEP
    var_q: np.ndarray  # int16, log(var_d/var_ref)/LOG_VAR_STEP
    bad_flat: np.ndarray  # int64 flat indices of the model's bad pixels

    @classmethod
    def from_model(cls, model: NoiseModel) -> "CodecMaps":
        g = model.gain_e_per_adu.astype(np.float64)
        o = model.offset_adu.astype(np.float64)
        var_d = np.maximum(model.read_noise_e.astype(np.float64) ** 2 + g**2 / 12.0, 0.01)
        o_ref = float(np.round(np.median(o) / OFFSET_STEP_ADU) * OFFSET_STEP_ADU)
        g_ref = float(np.median(g))
        v_ref = float(np.median(var_d))

        def q(v, rounding=np.round):
            return np.clip(rounding(v), -32768, 32767).astype(np.int16)

        return cls(
            model_sha256=model_sha256(model), shape=model.shape, adc_max=model.adc_max,
            saturation_adu=default_saturation_adu(model),
            offset_ref=o_ref, gain_ref=g_ref, var_ref=v_ref,
            offset_q=q((o - o_ref) / OFFSET_STEP_ADU),
            gain_q=q(np.log(g / g_ref) / LOG_GAIN_STEP - 1e-9, np.ceil),
            var_q=q(np.log(var_d / v_ref) / LOG_VAR_STEP + 1e-9, np.floor),
            bad_flat=np.flatnonzero(model.bad_pixels).astype(np.int64),
        )

    @functools.cached_property
    def bad_mask(self) -> np.ndarray:
        m = np.zeros(self.shape[0] * self.shape[1], np.uint8)
        m[self.bad_flat] = 1
        return m.reshape(self.shape)

    @functools.cached_property
    def implied_codes(self) -> np.ndarray:
        """Pixels whose code is their left neighbour's by construction: bad pixels past column 0."""
        m = self.bad_mask.copy()
        m[:, 0] = 0
        return m

    @functools.cached_property
    def bad_cols(self) -> np.ndarray:
        """Column of each bad pixel, in raster order (int64)."""
        return (self.bad_flat % self.shape[1]).astype(np.int64)

    @functools.cached_property
    def bad_row_start(self) -> np.ndarray:
        """Index of each row's first bad pixel in raster order, ``(H + 1,)``."""
        counts = np.bincount(self.bad_flat // self.shape[1], minlength=self.shape[0])
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def maps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offset [ADU], gain [e-/ADU], dark variance [e-²]) as float64 ``(H, W)``."""
        o = self.offset_ref + self.offset_q.astype(np.float64) * OFFSET_STEP_ADU
        g = self.gain_ref * np.exp(self.gain_q.astype(np.float64) * LOG_GAIN_STEP)
        v = self.var_ref * np.exp(self.var_q.astype(np.float64) * LOG_VAR_STEP)
        return o, g, v

    def to_bytes(self) -> bytes:
        meta = {
            "format": _MAPS_FORMAT, "version": 1, "model_sha256": self.model_sha256,
            "shape": list(self.shape), "adc_max": self.adc_max,
            "saturation_adu": self.saturation_adu, "offset_ref": self.offset_ref,
            "gain_ref": self.gain_ref, "var_ref": self.var_ref, "n_bad": int(self.bad_flat.size),
        }
        planes = [
            imagecodecs.jpegls_encode((m.astype(np.int32) + 32768).astype(np.uint16))
            for m in (self.offset_q, self.gain_q, self.var_q)
        ]
        bad = imagecodecs.zstd_encode(np.diff(self.bad_flat, prepend=0).astype(np.uint32), level=9)
        return _stream.pack({"codec": {"id": "noisecal.maps"}, **meta}, [*planes, bad])

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> "CodecMaps":
        header, secs = _stream.unpack(data)
        if header.get("format") != _MAPS_FORMAT or len(secs) != 4:
            raise CorruptStreamError("noisecal: embedded maps are not a rawgate noisecal map set")
        shape = tuple(header["shape"])
        qs = []
        for sec in secs[:3]:
            m = np.asarray(imagecodecs.jpegls_decode(sec)).astype(np.int32) - 32768
            if m.shape != shape:
                raise CorruptStreamError("noisecal: embedded map has the wrong shape")
            qs.append(m.astype(np.int16))
        bad = np.cumsum(np.frombuffer(imagecodecs.zstd_decode(secs[3]), np.uint32), dtype=np.int64)
        if bad.size != header["n_bad"]:
            raise CorruptStreamError("noisecal: embedded bad-pixel list has the wrong length")
        return cls(
            model_sha256=header["model_sha256"], shape=shape, adc_max=int(header["adc_max"]),
            saturation_adu=float(header["saturation_adu"]), offset_ref=float(header["offset_ref"]),
            gain_ref=float(header["gain_ref"]), var_ref=float(header["var_ref"]),
            offset_q=qs[0], gain_q=qs[1], var_q=qs[2], bad_flat=bad,
        )


@dataclasses.dataclass(frozen=True)
class VSTParams:
    """Per-pixel transform parameters of one map set at one step (float32, ``(H, W)``)."""

    alpha: np.ndarray
    beta: np.ndarray
    offset: np.ndarray
    v0: np.ndarray  # sqrt(alpha·offset + beta): the stabilised value at the offset
    half_inv_v0: np.ndarray  # 1/(2·v0): the knee's slope term
    kbase: int
    code_dtype: np.dtype
    marker: int
    saturation_adu: float
    xmax: float


_MAPS: dict[str, CodecMaps] = register_hash_cache({})
_PARAM_CACHE: dict[tuple[str, float, float | None], VSTParams] = {}


def default_saturation_adu(model: NoiseModel) -> float:
    """Exact-pixel threshold: 85 % of the way from the median offset to the EMVA saturation."""
    sat = model.emva.get("saturation_adu") if model.emva else None
    if not sat or not np.isfinite(sat):
        return float(model.adc_max)
    o = float(np.median(model.offset_adu))
    return float(min(model.adc_max, o + SATURATION_MARGIN * (float(sat) - o)))


def codec_maps(model: NoiseModel) -> CodecMaps:
    """The quantised maps of a model (cached by model hash)."""
    sha = model_sha256(model)
    if sha not in _MAPS:
        _MAPS[sha] = CodecMaps.from_model(model)
    return _MAPS[sha]


def register_maps(maps: CodecMaps) -> None:
    """Make embedded maps findable by their model's hash in this process."""
    _MAPS.setdefault(maps.model_sha256, maps)


def maps_registered(model_sha256: str) -> bool:
    """Whether this process already holds the maps (or the model) of this hash in memory."""
    return model_sha256 in _MAPS or find_model_in_memory(model_sha256) is not None


def vst_params(maps: CodecMaps, step: float, saturation_adu: float | None = None) -> VSTParams:
    """Transform parameters (cached per map set and step)."""
    key = (maps.model_sha256, float(step), saturation_adu)
    if key in _PARAM_CACHE:
        return _PARAM_CACHE[key]
    o, g, var_d = maps.maps()
    alpha = 4.0 * g / step**2
    beta = 4.0 * (var_d - g * o) / step**2
    v0 = np.sqrt(alpha * o + beta)
    xmax = float(maps.adc_max)
    x_low = np.maximum(o - 6.0 * np.sqrt(var_d) / g, 0.0)
    w_low = v0 + alpha * (x_low - o) / (2 * v0)
    w_high = np.sqrt(alpha * max(xmax, float(o.max())) + beta)
    kbase = int(np.floor(w_low.min())) - 1
    span = int(np.ceil(w_high.max())) + 2 - kbase
    if span < 255:
        dtype, marker = np.dtype(np.uint8), 255
    elif span < 65535:
        dtype, marker = np.dtype(np.uint16), 65535
    else:
        raise CodecError(f"noisecal: step {step} is too fine for 16-bit codes")
    sat = maps.saturation_adu if saturation_adu is None else float(saturation_adu)
    p = VSTParams(
        alpha=np.ascontiguousarray(alpha, np.float32),
        beta=np.ascontiguousarray(beta, np.float32),
        offset=np.ascontiguousarray(o, np.float32),
        v0=np.ascontiguousarray(v0, np.float32),
        half_inv_v0=np.ascontiguousarray(0.5 / v0, np.float32),
        kbase=kbase, code_dtype=dtype, marker=marker, saturation_adu=sat, xmax=xmax,
    )
    if len(_PARAM_CACHE) > 8:
        _PARAM_CACHE.clear()
    _PARAM_CACHE[key] = p
    return p


#: coders of the side sections (exact values, bad-pixel residuals): pcodec reaches about their
#: order-0 entropy (zstd needs ≈ 40 % more) but costs ≈ 2 ms per 2048² frame, a third of the
#: fast preset's budget, so the fast preset takes zstd level 1
SIDE_CODERS = ("pcodec", "zstd")


def _pack_ints(v: np.ndarray, coder: str) -> bytes:
    """Integers of a side section."""
    flat = np.ascontiguousarray(v).reshape(-1)
    if flat.size == 0:
        return b""
    if coder == "pcodec":
        return bytes(imagecodecs.pcodec_encode(flat))
    return bytes(imagecodecs.zstd_encode(flat.tobytes(), level=1))


def _unpack_ints(b: memoryview, dtype: np.dtype, n: int, coder: str) -> np.ndarray:
    if n == 0:
        if len(b):
            raise CodecError("noisecal: side section present where the header says none")
        return np.empty(0, dtype)
    if coder == "pcodec":
        v = np.asarray(imagecodecs.pcodec_decode(b, shape=(n,), dtype=dtype))
    elif coder == "zstd":
        v = np.frombuffer(imagecodecs.zstd_decode(b), dtype)
    else:
        raise CodecError(f"noisecal: unknown side coder {coder!r}")
    if v.size != n:
        raise CodecError("noisecal: side section has the wrong length")
    return v


@register_codec
@dataclasses.dataclass(frozen=True)
class NoiseCal(Codec):
    codec_id: ClassVar[str] = "noisecal"
    family: ClassVar[str] = "noise-calibrated"
    needs_noise_model: ClassVar[bool] = True
    summary: ClassVar[str] = (
        "per-pixel variance stabilisation from the NoiseModel, quantisation in noise σ with "
        "subtractive dither, unbiased inverse, exact saturated/bad pixels"
    )
    option_help: ClassVar[dict[str, str]] = {
        "step": "quantisation step in noise σ (2 ⇒ ≈ 1.25 dB SNR cost)",
        "preset": "small (best ratio) or fast (throughput)",
        "entropy": f"override the preset's entropy stage: {', '.join(ALL_STAGES)}",
        "tile_rows": "rows per independently coded tile (parallelism)",
        "seed": "dither seed (default: random per stream; stored in the stream)",
        "saturation_adu": "pixels at or above are stored exactly (default: from the model)",
        "embed_model": "carry the noise model inside the stream (containers store it once)",
        "model": "path of a .rgnoise calibration (or use --calibration)",
        "model_sha256": "hash of the model the stream needs (set automatically)",
    }
    step: float = 2.0
    preset: str = "small"
    entropy: str | None = None
    tile_rows: int = 256
    seed: int | None = None
    saturation_adu: float | None = None
    embed_model: bool = True
    model: str | None = None
    model_sha256: str | None = dataclasses.field(default=None, metadata={"spec": False})
    noise_model: NoiseModel | None = dataclasses.field(
        default=None, repr=False, compare=False, metadata={"spec": False}
    )

    def __post_init__(self):
        if not 0.05 <= self.step <= 64:
            raise CodecError(f"noisecal: step must be in 0.05..64 (noise σ), got {self.step}")
        if self.preset not in PRESETS:
            raise CodecError(f"noisecal: preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.entropy is not None and self.entropy not in ALL_STAGES:
            raise CodecError(
                f"noisecal: unknown entropy stage {self.entropy!r}; known: {', '.join(ALL_STAGES)}"
            )
        if self.tile_rows < 8:
            raise CodecError(f"noisecal: tile_rows must be ≥ 8, got {self.tile_rows}")
        model = self.noise_model
        if model is None and self.model is not None:
            try:
                model = NoiseModel.load(Path(self.model).expanduser())
            except ModelError as e:
                raise CodecError(f"noisecal: model={self.model}: {e}") from e
            object.__setattr__(self, "noise_model", model)
        if model is not None:
            sha = register_model(model)
            if self.model_sha256 is not None and self.model_sha256 != sha:
                raise ModelMismatchError(
                    f"noisecal: the calibration given ({sha[:12]}…) is not the one this codec "
                    f"was configured with ({self.model_sha256[:12]}…)"
                )
            object.__setattr__(self, "model_sha256", sha)

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        cfg = super().get_config()
        cfg.pop("noise_model", None)
        cfg.pop("model", None)  # a local path is not part of the stream's identity
        return cfg

    @property
    def stage(self) -> str:
        return self.entropy or PRESETS[self.preset]

    def _require_maps(self) -> CodecMaps:
        if self.noise_model is not None:
            return codec_maps(self.noise_model)
        if self.model_sha256:
            if self.model_sha256 in _MAPS:
                return _MAPS[self.model_sha256]
            m = find_model(self.model_sha256)
            if m is not None:
                object.__setattr__(self, "noise_model", m)
                return codec_maps(m)
        raise ModelNotFoundError(
            "noisecal needs the camera's noise model: pass a calibration (--calibration FILE, "
            "model=PATH, or noise_model=)"
        )

    # ------------------------------------------------------------------ encode
    def _encode(self, a):
        maps = self._require_maps()
        if self.noise_model is not None:
            self.noise_model.check_frame(a)
        elif tuple(a.shape[-2:]) != maps.shape or (a.size and int(a.max()) > maps.adc_max):
            raise ModelMismatchError(
                f"frame {a.shape} does not match the noise model ({maps.shape}, "
                f"max {maps.adc_max} ADU)"
            )
        prm = vst_params(maps, self.step, self.saturation_adu)
        x = planes_of(a)
        P, H, W = x.shape
        seed = self.seed if self.seed is not None else int.from_bytes(os.urandom(8), "little")
        seed &= (1 << 64) - 1
        codes = np.empty((P, H, W), prm.code_dtype)
        nmarked = np.zeros((P, H), np.int32)
        xmax = float(min(maps.adc_max, np.iinfo(a.dtype).max))
        residual = np.zeros((P, maps.bad_flat.size), np.int32)
        fused = self.stage == "pack2"  # the fast stage is written by the forward kernel itself
        packed = np.empty((P, H, (W + 3) // 4) if fused else (1, 1, 1), np.uint8)
        nesc = np.empty((P, H) if fused else (1, 1), np.int32)
        escrows = np.empty((P, H, W) if fused else (1, 1, 1), prm.code_dtype)
        K.forward(x, prm.alpha, prm.beta, prm.offset, prm.v0, prm.half_inv_v0, np.uint64(seed), 0,
                  prm.kbase, prm.marker, np.float32(prm.saturation_adu), xmax, codes, nmarked,
                  maps.bad_mask, maps.bad_cols, maps.bad_row_start, residual, fused, packed, nesc,
                  escrows)
        n_marked = int(nmarked.sum())
        exact = K.gather_marked(x, codes, prm.marker, nmarked, n_marked)
        payload = (pack2_from_rows(codes, packed, nesc, escrows) if fused
                   else encode_codes(codes, self.stage, self.tile_rows, seed, maps.implied_codes))
        side = "zstd" if fused else "pcodec"
        extra = {
            "model_sha256": maps.model_sha256,
            "side_codec": side,
            "seed": seed,
            "kbase": prm.kbase,
            "code_dtype": prm.code_dtype.str,
            "marker": prm.marker,
            "saturation_adu": prm.saturation_adu,
            "xmax": xmax,
            "stage": self.stage,
            "n_exact": int(exact.size),
            "n_residual": int(residual.size),
        }
        return extra, [maps.to_bytes() if self.embed_model else b"", payload,
                       _pack_ints(exact.astype(a.dtype, copy=False), side),
                       _pack_ints(residual, side)]

    # ------------------------------------------------------------------ decode
    def _resolve_maps(self, header: dict, section: memoryview) -> CodecMaps:
        sha = header.get("model_sha256")
        if len(section):
            maps = CodecMaps.from_bytes(section)
            if maps.model_sha256 != sha:
                raise CorruptStreamError("the maps embedded in the stream name another model")
            register_maps(maps)
            return maps
        if self.noise_model is not None:
            given = model_sha256(self.noise_model)
            if given != sha:
                raise ModelMismatchError(
                    f"wrong calibration: the stream was encoded with noise model {sha[:12]}…, "
                    f"the calibration given is {given[:12]}…"
                )
            return codec_maps(self.noise_model)
        if sha in _MAPS:
            return _MAPS[sha]
        model = find_model(sha)
        if model is None:
            raise ModelNotFoundError(
                f"this stream needs noise model {sha}, which is not embedded; give the calibration "
                "(--calibration FILE) or put <sha256>.rgnoise in a model store "
                "(RAWGATE_MODEL_PATH or ~/.local/share/rawgate/models)"
            )
        return codec_maps(model)

    def _decode(self, header, sections, dtype, shape):
        if len(sections) != 4:
            raise CodecError("noisecal: stream has the wrong number of sections")
        maps = self._resolve_maps(header, sections[0])
        if tuple(shape[-2:]) != maps.shape:
            raise ModelMismatchError(
                f"stream frame shape {shape[-2:]} does not match the model's {maps.shape}"
            )
        step = float(header["codec"]["step"])
        prm = vst_params(maps, step, header.get("saturation_adu"))
        if prm.kbase != header["kbase"] or prm.marker != header["marker"]:
            raise CodecError("noisecal: code range differs from the encoder's (format mismatch)")
        n = int(np.prod(shape[:-2], dtype=np.int64)) if len(shape) > 2 else 1
        H, W = shape[-2:]
        cdt = np.dtype(header["code_dtype"])
        codes = decode_codes(sections[1], header["stage"], (n, H, W), cdt,
                             int(header["codec"]["tile_rows"]), int(header["seed"]),
                             int(header["marker"]), maps.implied_codes)
        out = np.empty((n, H, W), dtype)
        seed = np.uint64(int(header["seed"]))
        xmax = float(header["xmax"])
        if not 0 < xmax <= np.iinfo(dtype).max:
            raise CodecError(f"noisecal: header xmax {xmax} outside the range of {dtype}")
        K.inverse(codes, prm.alpha, prm.v0, prm.offset, seed, 0, float(prm.kbase), xmax, out)
        side = header.get("side_codec", "pcodec")
        exact = _unpack_ints(sections[2], dtype, int(header["n_exact"]), side)
        residual = _unpack_ints(sections[3], np.dtype(np.int32), int(header["n_residual"]), side)
        if residual.size != n * maps.bad_flat.size:
            raise CodecError("noisecal: bad-pixel residual count disagrees with the model")
        if K.scatter_marked(out, codes, header["marker"], exact) != exact.size:
            raise CodecError("noisecal: marker count disagrees with the stored exact pixels")
        if residual.size:
            K.apply_bad_residuals(out, codes, prm.alpha, prm.v0, prm.offset, seed, 0, prm.kbase,
                                  header["marker"], xmax, maps.bad_mask, maps.bad_cols, maps.bad_row_start,
                                  residual.reshape(n, -1))
        return out.reshape(shape)

