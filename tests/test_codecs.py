"""The codec family: registry and spec strings, round trips, error bounds, ratio searches, and
refusal of corrupted, truncated, foreign or mismatched streams.

Every expectation comes from the codec's definition or from the input (lossless ⇒ bit-exact,
``lerc:max_error=e`` ⇒ |error| ≤ e, ``jpegls:near=n`` ⇒ |error| ≤ n, 8-bit conversion ⇒ half a
bin, a CRC-framed stream ⇒ any change is refused, …), never from a previous run.
The noise-calibrated codec's statistics live in ``test_noisecal.py``; its per-pixel bound is
checked here too (round-trip matrix and a Hypothesis property).
"""

from __future__ import annotations

import dataclasses
import json
import struct
import subprocess
import sys
import textwrap
import zlib

import numcodecs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from rawgate.calibration.instruments._protocol import CameraIdentity
from rawgate.calibration.model import ModelError, ModelMismatchError, NoiseModel
from rawgate.calibration.simulation import make_sensor_truth
from rawgate.codecs import (
    CodecError,
    CorruptStreamError,
    ModelNotFoundError,
    NoiseCal,
    codec_classes,
    codec_of,
    decode_any,
    get_codec,
    parse_spec,
    store_model,
)
from rawgate.codecs._stream import MAGIC, pack, peek_header, unpack

#: every error a bad stream may legitimately raise (all ValueError subclasses)
STREAM_ERRORS = (CorruptStreamError, CodecError, ModelError)

# ------------------------------------------------------------------------------------ helpers
EXPECTED_IDS = {"zstd", "blosc2", "deflate", "jpegxl", "jpegls", "lerc", "eightbit", "jpeg",
                "jpeg2k", "jpegxr", "noisecal", "learned"}
# need no noise model and no trained weights (learned: tests/test_learned.py trains its own)
PLAIN_IDS = [cid for cid in codec_classes() if cid not in ("noisecal", "learned")]

LOSSLESS_VARIANTS = ["zstd:level=19", "zstd:level=-3", "blosc2:compressor=lz4,shuffle=bitshuffle",
                     "blosc2:level=0", "deflate:level=12", "jpegxl:effort=3", "jpegls:near=0",
                     "lerc:zstd=3", "lerc:max_error=0"]
LOSSY_VARIANTS = ["eightbit:range=fixed", "jpeg:quality=95", "jpeg:ratio=5", "jpeg2k:ratio=5",
                  "jpegxr:quality=0.5", "jpegxr:ratio=5", "jpegxl:distance=1", "jpegxl:ratio=5",
                  "lerc:max_error=3", "lerc:max_error=0.5", "lerc:ratio=5", "jpegls:near=2",
                  "jpegls:near=7"]
ALL_SPECS = PLAIN_IDS + LOSSLESS_VARIANTS + LOSSY_VARIANTS
LOSSLESS_SPECS = [s for s in ALL_SPECS if get_codec(s).lossless]

#: name → (numpy dtype, largest value): 12-bit camera data is stored in uint16
DTYPES = {"uint8": (np.uint8, 255), "uint16": (np.uint16, 65535), "uint12": (np.uint16, 4095)}
SHAPES = [(37, 53), (1, 1), (1, 7), (7, 1), (3, 37, 53), (2, 2, 9, 8)]
CONTENTS = ["random", "scene", "zero", "saturated"]


def make_input(dtype_name: str, shape: tuple[int, ...], content: str) -> np.ndarray:
    dt, vmax = DTYPES[dtype_name]
    if content == "zero":
        return np.zeros(shape, dt)
    if content == "saturated":  # every pixel at the dtype's (or the 12-bit range's) maximum
        return np.full(shape, vmax, dt)
    rng = np.random.default_rng(zlib.crc32(repr((dtype_name, shape, content)).encode()))
    if content == "random":
        return rng.integers(0, vmax + 1, shape).astype(dt)
    # "scene": smooth structure plus Poisson-like noise, spanning most of the range
    h, w = shape[-2:]
    yy, xx = np.mgrid[0:h, 0:w]
    base = 0.5 + 0.4 * np.sin(xx / 5.0 + yy / 7.0)
    base = np.broadcast_to(base, shape)
    x = base * vmax + rng.normal(0, 0.02 * vmax, shape)
    return np.clip(np.rint(x), 0, vmax).astype(dt)


def sim_model(shape: tuple[int, int], *, seed: int = 0, bit_depth: int = 16) -> NoiseModel:
    """A noise model holding the simulator's true maps (so σ below is the true noise)."""
    t = make_sensor_truth(shape, seed=seed, bit_depth=bit_depth)
    h, w = shape
    sat = min(t.adc_max, float(np.median(t.offset_adu) + t.full_well_e / np.median(t.gain_e_per_adu)))
    return NoiseModel(
        identity=CameraIdentity("sim", f"S{seed}", bit_depth, 1, (0, 0, w, h)),
        offset_adu=t.offset_adu, gain_e_per_adu=t.gain_e_per_adu, read_noise_e=t.read_noise_e,
        dark_current_e_per_s=None, bad_pixels=(t.defects > 0).astype(np.uint8),
        emva={"saturation_adu": sat},
    )


def sigma_adu(model: NoiseModel, x: np.ndarray) -> np.ndarray:
    """Noise σ per pixel [ADU]: sqrt(max((x − offset)·gain, 0) + read_noise² + gain²/12) / gain."""
    g = model.gain_e_per_adu.astype(np.float64)
    o = model.offset_adu.astype(np.float64)
    rn = model.read_noise_e.astype(np.float64)
    return np.sqrt(np.maximum((x - o) * g, 0.0) + rn**2 + g**2 / 12.0) / g


def noisecal_bound(model: NoiseModel, x: np.ndarray, step: float) -> np.ndarray:
    """Largest |decoded − raw| [ADU] per pixel allowed by noisecal's construction.

    Derivation. With electrons e = (x − o)·g and σ_d² = read_noise² + g²/12, the stabilised value
    (in noise σ) is V = 2·sqrt(e + σ_d²) for e ≥ 0 and its tangent 2σ_d + e/σ_d below. The
    subtractive dither leaves |V̂ − V| ≤ step/2 (in step units |ŵ − w| ≤ ½). The inverse
    x = o + (V²/4 − σ_d²)/g is convex with slope dx/dV = max(V, 2σ_d)/(2g); at V itself that is
    exactly σ(x) [ADU] (the formula of :func:`sigma_adu`), and over [V − step/2, V + step/2] it is at
    most σ(x) + step/(4g). So the inverse moves by at most (step/2)·(σ(x) + step/(4g)). The
    curvature correction subtracts E[(s+n)₊²] − s₊² ∈ [0, 1/12] in step² units, i.e. at most
    (1/12)·step²/(4g) = step²/(48g) ADU. Rounding to an integer ADU (plus float32 arithmetic in
    the kernels) adds < 1 ADU. Clipping to the ADC range only moves the estimate toward x.
    """
    g = model.gain_e_per_adu.astype(np.float64)
    return (step / 2) * (sigma_adu(model, x) + step / (4 * g)) + step**2 / (48 * g) + 1.0


def check_noisecal(codec: NoiseCal, model: NoiseModel, x: np.ndarray, stream: bytes, y: np.ndarray):
    """Per-pixel bound; exact bad pixels and exact pixels at/above the saturation threshold."""
    assert y.dtype == x.dtype and y.shape == x.shape
    h = peek_header(stream)
    xf = x.astype(np.float64)
    err = np.abs(y.astype(np.float64) - xf)
    bound = noisecal_bound(model, xf, float(h["codec"]["step"]))
    worst = np.unravel_index(np.argmax(err - bound), x.shape)
    assert (err <= bound).all(), (
        f"pixel {worst}: raw {x[worst]}, decoded {y[worst]}, |error| {err[worst]:.2f} > bound "
        f"{bound[worst]:.2f} ADU"
    )
    exact = (xf >= float(h["saturation_adu"])) | (np.broadcast_to(model.bad_pixels, x.shape) > 0)
    np.testing.assert_array_equal(y[exact], x[exact])


@pytest.fixture(scope="module")
def models():
    """Noise models by (H, W, bit depth), built on demand and kept for the module."""
    cache: dict[tuple[int, int, int], NoiseModel] = {}

    def get(h: int, w: int, bits: int = 16) -> NoiseModel:
        key = (h, w, bits)
        if key not in cache:
            cache[key] = sim_model((h, w), seed=h * 1000 + w, bit_depth=bits)
        return cache[key]

    return get


# ------------------------------------------------------------------------------------ registry
def test_registry_lists_every_codec_and_its_family():
    classes = codec_classes()
    assert EXPECTED_IDS <= set(classes)
    assert list(classes) == sorted(classes)
    for cid, cls in classes.items():
        assert cls.codec_id == cid
        assert cls.family in ("lossless", "lossy", "noise-calibrated")
        assert cls.summary
    # the family says whether the default setting is lossless; settings can make them lossy
    for cid in ("zstd", "blosc2", "deflate", "jpegxl", "jpegls", "lerc"):
        assert get_codec(cid).lossless, cid
    for spec in ("eightbit", "jpeg", "jpeg2k", "jpegxr", "jpegxl:distance=1", "jpegxl:ratio=4",
                 "lerc:max_error=1", "lerc:ratio=4", "jpegls:near=1", "noisecal"):
        assert not get_codec(spec).lossless, spec


@pytest.mark.parametrize("cid", sorted(EXPECTED_IDS))
def test_default_codec_config_round_trips(cid, models):
    kw = {"noise_model": models(8, 8)} if cid == "noisecal" else {}
    c = get_codec(cid, **kw)
    cfg = c.get_config()
    assert cfg["id"] == f"rawgate.{cid}"  # numcodecs' name (bare ids like "zstd" are numcodecs' own)
    assert json.loads(json.dumps(cfg)) == cfg  # the config is plain JSON
    assert type(c).from_config(cfg) == c
    assert get_codec(cfg) == c
    assert get_codec(c.spec, **kw) == c
    assert get_codec(c) is c
    # numcodecs' registry knows the codec as rawgate.<id>
    rebuilt = numcodecs.get_codec({**cfg, "id": f"rawgate.{cid}"})
    assert type(rebuilt) is type(c) and rebuilt == c


def test_numcodecs_get_codec_of_get_config_is_the_same_codec():
    """numcodecs' contract (zarr v2 stores ``get_config()`` and reads it back with
    ``numcodecs.get_codec``): the config's id must be the id the codec is registered under."""
    wrong = {}
    for cid in PLAIN_IDS:
        c = get_codec(cid)
        try:
            back = numcodecs.get_codec(c.get_config())
        except Exception as e:  # noqa: BLE001 - report every codec, then fail once
            wrong[cid] = f"{type(e).__name__}: {e}"
            continue
        if type(back) is not type(c) or back != c:
            wrong[cid] = f"got {type(back).__module__}.{type(back).__name__}"
    assert not wrong, f"numcodecs.get_codec(codec.get_config()) does not rebuild: {wrong}"


@pytest.mark.parametrize(
    "spec, fields",
    [
        ("zstd:level=9", {"level": 9}),
        ("blosc2:level=3,compressor=lz4,shuffle=bitshuffle",
         {"level": 3, "compressor": "lz4", "shuffle": "bitshuffle"}),
        ("deflate:level=1", {"level": 1}),
        ("jpegxl:effort=3,distance=1.5", {"effort": 3, "distance": 1.5}),
        ("jpegxl:ratio=12.5", {"ratio": 12.5}),
        ("jpegls:near=3", {"near": 3}),
        ("lerc:max_error=0.25,zstd=2", {"max_error": 0.25, "zstd": 2}),
        ("eightbit:range=fixed,low=10,high=4000,bits=12",
         {"range": "fixed", "low": 10.0, "high": 4000.0, "bits": 12}),
        ("jpeg:ratio=10", {"ratio": 10.0, "quality": 75}),
        ("jpeg2k:quality=30", {"quality": 30}),
        ("jpegxr:quality=0.5", {"quality": 0.5}),
        ("noisecal:step=1.5,preset=fast,tile_rows=64,seed=7,embed_model=false,saturation_adu=1000",
         {"step": 1.5, "preset": "fast", "tile_rows": 64, "seed": 7, "embed_model": False,
          "saturation_adu": 1000.0}),
        ("noisecal:entropy=zstd,embed_model=yes", {"entropy": "zstd", "embed_model": True}),
        ("  JPEG : quality = 50 ", {"quality": 50}),
    ],
)
def test_spec_strings_parse_typed_and_rebuild(spec, fields):
    c = get_codec(spec)
    for k, v in fields.items():
        got = getattr(c, k)
        assert got == v and type(got) is type(v), (k, got, v)
    name, opts = parse_spec(spec)
    assert name == c.codec_id
    assert dataclasses.replace(type(c)(), **opts) == c
    # the canonical spec has only the non-default options and rebuilds the same codec
    assert get_codec(c.spec) == c
    assert get_codec(c.spec).spec == c.spec
    defaults = type(c)()
    for k in fields:
        if getattr(c, k) != getattr(defaults, k):
            assert f"{k}=" in c.spec


def test_noisecal_config_names_its_model(models):
    m = models(8, 8)
    c = get_codec("noisecal:step=2,seed=1", noise_model=m)
    assert c.model_sha256 == m.sha256
    assert c.get_config()["model_sha256"] == m.sha256
    assert get_codec(c.spec, noise_model=m) == c
    again = get_codec(c.get_config())  # no model object: found by its hash in this process
    assert again == c and again.noise_model is None
    x = np.full((8, 8), 300, np.uint16)
    assert again.encode(x) == c.encode(x)  # same seed, same model ⇒ same stream


def test_unknown_codec_lists_known_ones():
    for bad in ("nosuchcodec", "nosuchcodec:level=1", {"id": "nosuchcodec"}, {"id": "rawgate.nope"}):
        with pytest.raises(CodecError) as ei:
            get_codec(bad)
        msg = str(ei.value)
        assert "unknown codec" in msg
        for cid in codec_classes():
            assert cid in msg, (bad, cid, msg)


@pytest.mark.parametrize("cid", sorted(EXPECTED_IDS))
def test_unknown_option_lists_valid_ones(cid):
    valid = [f.name for f in dataclasses.fields(codec_classes()[cid]) if f.init]
    with pytest.raises(CodecError) as ei:
        get_codec(f"{cid}:bogus_option=1")
    msg = str(ei.value)
    assert "bogus_option" in msg
    for name in valid:
        assert name in msg, (name, msg)
    with pytest.raises(CodecError) as ei:
        codec_classes()[cid].from_config({"id": cid, "bogus_option": 1})
    for name in valid:
        assert name in str(ei.value)


@pytest.mark.parametrize(
    "spec, option",
    [
        # wrong type
        ("zstd:level=abc", "level"), ("zstd:level=2.5", "level"), ("jpeg:quality=high", "quality"),
        ("jpeg:ratio=ten", "ratio"), ("jpegxl:distance=far", "distance"),
        ("lerc:max_error=?", "max_error"), ("eightbit:bits=8.5", "bits"),
        ("noisecal:step=x", "step"), ("noisecal:embed_model=maybe", "embed_model"),
        ("noisecal:seed=1.5", "seed"), ("noisecal:tile_rows=many", "tile_rows"),
        # out of range / not one of the choices
        ("zstd:level=99", "level"), ("blosc2:level=10", "level"), ("deflate:level=13", "level"),
        ("blosc2:compressor=lzma", "compressor"), ("blosc2:shuffle=maybe", "shuffle"),
        ("jpeg:quality=0", "quality"), ("jpeg:quality=101", "quality"), ("jpeg:ratio=1", "ratio"),
        ("jpeg2k:quality=0", "quality"), ("jpeg2k:ratio=0.5", "ratio"),
        ("jpegxr:quality=0", "quality"), ("jpegxr:quality=1.5", "quality"),
        ("jpegxl:effort=0", "effort"), ("jpegxl:distance=-1", "distance"),
        ("jpegxl:distance=26", "distance"), ("jpegxl:ratio=0.5", "ratio"),
        ("jpegls:near=-1", "near"), ("jpegls:near=256", "near"),
        ("lerc:max_error=-1", "max_error"), ("lerc:ratio=1", "ratio"),
        ("eightbit:range=log", "range"), ("eightbit:bits=17", "bits"), ("eightbit:bits=0", "bits"),
        ("noisecal:step=0", "step"), ("noisecal:step=100", "step"),
        ("noisecal:preset=medium", "preset"), ("noisecal:entropy=gzip", "entropy"),
        ("noisecal:tile_rows=4", "tile_rows"), ("noisecal:model=/nonexistent/x.rgnoise", "model"),
    ],
)
def test_bad_option_value_names_the_option(spec, option):
    with pytest.raises(CodecError) as ei:
        get_codec(spec)
    assert option in str(ei.value), str(ei.value)


@pytest.mark.parametrize("spec", ["", "   ", "zstd:level", "zstd:=3", ":level=3"])
def test_malformed_specs_are_refused(spec):
    with pytest.raises(CodecError):
        get_codec(spec)


def test_non_string_spec_and_foreign_config_are_refused():
    with pytest.raises(CodecError):
        parse_spec(5)  # type: ignore[arg-type]
    with pytest.raises(CodecError):
        codec_classes()["zstd"].from_config({"id": "jpeg", "level": 3})


def test_eightbit_fixed_range_must_be_increasing():
    with pytest.raises(CodecError, match="high"):
        get_codec("eightbit:range=fixed,low=100,high=50").encode(np.zeros((4, 4), np.uint16))


# ------------------------------------------------------------------------------------ round trips
def _lossy_bound(codec, header) -> float | None:
    """|error| bound a lossy setting defines, or None when it defines none."""
    if codec.codec_id == "lerc":
        # the max_error used (searched when ratio= is given); integers are lossless at 0.5
        level = float(header.get("setting", codec.max_error))
        return max(level, 0.5)
    if codec.codec_id == "jpegls":
        return float(codec.near)
    return None


@pytest.mark.parametrize("content", CONTENTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("spec", ALL_SPECS)
def test_round_trip(spec, dtype_name, shape, content):
    x = make_input(dtype_name, shape, content)
    codec = get_codec(spec)
    if not codec.lossless and min(shape[-2:]) < 16:
        # a lossy block codec may refuse images smaller than its blocks — with a CodecError
        try:
            stream = codec.encode(x)
        except CodecError as e:
            assert codec.codec_id in str(e)
            return
    else:
        stream = codec.encode(x)
    assert isinstance(stream, bytes)
    h = peek_header(stream)
    assert h["codec"] == codec.get_config()
    assert np.dtype(h["dtype"]) == x.dtype and tuple(h["shape"]) == x.shape
    y = codec.decode(stream)
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(decode_any(stream), y)  # the stream alone suffices
    assert codec_of(stream) == codec
    if codec.lossless:
        np.testing.assert_array_equal(y, x)
        return
    bound = _lossy_bound(codec, h)
    if bound is not None:
        err = np.abs(y.astype(np.int64) - x.astype(np.int64))
        assert err.max() <= bound, (err.max(), bound)
    if getattr(codec, "ratio", None) is not None:
        assert "setting" in h
        assert h["achieved_ratio"] == pytest.approx(x.nbytes / sum(h["sections"]), rel=1e-12)


@pytest.mark.parametrize("content", CONTENTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_round_trip_noisecal(dtype_name, shape, content, models):
    x = make_input(dtype_name, shape, content)
    model = models(shape[-2], shape[-1], 12 if dtype_name == "uint12" else 16)
    codec = get_codec("noisecal:seed=5,tile_rows=8", noise_model=model)
    stream = codec.encode(x)
    y = codec.decode(stream)
    check_noisecal(codec, model, x, stream, y)
    np.testing.assert_array_equal(decode_any(stream), y)
    assert codec_of(stream) == codec
    if content == "saturated" and dtype_name != "uint8":
        np.testing.assert_array_equal(y, x)  # at the ADC maximum: above the threshold, exact


@pytest.mark.parametrize("spec", ["zstd", "blosc2", "deflate"])
@pytest.mark.parametrize(
    "x",
    [
        np.linspace(-1e300, 1e300, 17),  # 1-D float64
        np.arange(-50, 50, dtype=np.int32).reshape(4, 25),
        np.array(3.25),  # 0-D
        np.zeros((0,), np.uint16),  # empty
        np.zeros((3, 0, 2), np.float32),
        np.array([np.nan, np.inf, -np.inf, -0.0], np.float64),
        np.arange(60, dtype=">u2").reshape(6, 10),  # big-endian
        np.arange(5, dtype=np.int64) * -(2**40),
        np.full(1000, np.inf), np.full(1000, np.nan), np.full(1000, -0.0),
        np.tile(np.array([0.0, -0.0]), 500),  # equal as numbers, different bits
        np.zeros((5, 9), np.uint8),  # constant buffers: Blosc2 writes "special value" chunks
        np.full((37, 53), 7, np.uint16),
    ],
    ids=["f64-1d", "i32", "0d", "empty", "empty3d", "nonfinite", "bigendian", "i64", "inf",
         "nan", "negzero", "mixedzero", "zeros45", "const"],
)
def test_byte_codecs_take_any_numeric_array(spec, x):
    c = get_codec(spec)
    y = c.decode(c.encode(x))
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, x)
    assert y.tobytes() == x.tobytes()  # bit-exact, including -0.0 and NaN payloads


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_lerc_lossless_on_its_extra_dtypes(dtype):
    rng = np.random.default_rng(3)
    x = (rng.normal(0, 1000, (3, 19, 23))).astype(dtype)
    c = get_codec("lerc")
    np.testing.assert_array_equal(c.decode(c.encode(x)), x)


def test_non_contiguous_input_and_out_argument():
    x = make_input("uint16", (40, 30), "scene")
    view = x.T[::2]  # neither C- nor F-contiguous
    for spec in ("zstd", "jpegls", "jpegxl", "lerc"):
        c = get_codec(spec)
        s = c.encode(view)
        np.testing.assert_array_equal(c.decode(s), view)
        out = np.empty(view.shape, view.dtype)
        assert c.decode(s, out=out) is out
        np.testing.assert_array_equal(out, view)
        np.testing.assert_array_equal(c.decode(np.frombuffer(s, np.uint8)), view)


IMAGE_IDS = [cid for cid in codec_classes() if cid not in ("zstd", "blosc2", "deflate")]


@pytest.mark.parametrize("cid", IMAGE_IDS)
@pytest.mark.parametrize(
    "x, why",
    [
        (np.zeros(16, np.uint16), "1-D"),
        (np.array(7, np.uint16), "0-D"),
        (np.zeros((0, 8), np.uint16), "empty"),
        (np.zeros((4, 0), np.uint8), "empty"),
        (np.zeros((2, 0, 8), np.uint16), "empty stack"),
        (np.zeros((8, 8), np.float64), "float64"),
        (np.zeros((8, 8), np.int64), "int64"),
        (np.zeros((8, 8), bool), "bool"),
        (np.zeros((8, 8), np.complex64), "complex"),
        (np.array([["a", "b"]]), "str"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_image_codecs_refuse_unsupported_input(cid, x, why, models):
    kw = {"noise_model": models(8, 8)} if cid == "noisecal" else {}
    with pytest.raises(CodecError):
        get_codec(cid, **kw).encode(x)


@pytest.mark.parametrize("cid", ["zstd", "blosc2", "deflate"])
@pytest.mark.parametrize("x", [np.zeros((4, 4), bool), np.zeros(3, np.complex128),
                               np.array(["a"]), np.array([object()])], ids=["bool", "complex", "str", "object"])
def test_byte_codecs_refuse_non_numbers(cid, x):
    with pytest.raises(CodecError):
        get_codec(cid).encode(x)


def test_decode_refuses_non_buffers():
    with pytest.raises(CodecError):
        get_codec("zstd").decode("not bytes")  # type: ignore[arg-type]


def test_jpegxr_small_uint8_images_fail_with_codec_error_or_encode():
    """An input the codec accepts (uint8, 2-D) must encode, or be refused with a CodecError —
    never a library exception leaking out (JPEG-XR rejects < 2 macroblocks at low quality)."""
    x = make_input("uint8", (16, 16), "scene")
    for spec in ("jpegxr:quality=0.2", "jpegxr:ratio=4"):
        c = get_codec(spec)
        try:
            y = c.decode(c.encode(x))
        except CodecError:
            continue
        assert y.shape == x.shape and y.dtype == x.dtype


# ------------------------------------------------------------------------------------ lossy bounds
@pytest.mark.parametrize("near", [1, 2, 5, 20])
@pytest.mark.parametrize("dtype_name", ["uint8", "uint16", "uint12"])
def test_jpegls_near_bounds_the_error(near, dtype_name):
    x = make_input(dtype_name, (3, 37, 53), "random")
    c = get_codec(f"jpegls:near={near}")
    y = c.decode(c.encode(x))
    err = np.abs(y.astype(np.int64) - x)
    assert err.max() <= near
    assert err.max() > 0  # random data: near-lossless really is lossy


@pytest.mark.parametrize("max_error", [0.5, 1, 2.5, 10, 100])
@pytest.mark.parametrize("dtype_name", ["uint8", "uint16", "uint12"])
def test_lerc_max_error_bounds_the_error(max_error, dtype_name):
    x = make_input(dtype_name, (2, 37, 53), "scene")
    c = get_codec(f"lerc:max_error={max_error}")
    y = c.decode(c.encode(x))
    assert np.abs(y.astype(np.int64) - x).max() <= max_error


def _half_bin_check(x: np.ndarray, y: np.ndarray, low: float, high: float):
    # 256 bins over [low, high] (high − low + 1 integer values); the decoder returns an integer
    # near the middle of the code's bin, so |error| ≤ half a bin, plus ½ ADU for that rounding.
    half_bin = (high - low + 1) / 256 / 2
    err = np.abs(y.astype(np.int64) - x.astype(np.int64))
    i = np.unravel_index(np.argmax(err), x.shape)
    assert err.max() <= half_bin + 0.5, (
        f"raw {x[i]} decoded {y[i]}: |error| {err[i]} > half a bin ({half_bin}) + 0.5 "
        f"(range {low}..{high})"
    )


@pytest.mark.parametrize("dtype_name, bits", [("uint16", None), ("uint12", 12), ("uint8", None)])
def test_eightbit_fixed_error_within_half_a_bin(dtype_name, bits):
    vmax = DTYPES[dtype_name][1]
    x = make_input(dtype_name, (64, 64), "random")
    x.flat[:2] = (0, vmax)
    c = get_codec("eightbit:range=fixed" + (f",bits={bits}" if bits else ""))
    _half_bin_check(x, c.decode(c.encode(x)), 0.0, float(vmax))


@pytest.mark.parametrize("lo, hi", [(0, 65535), (100, 1100), (1000, 4095), (0, 255)])
def test_eightbit_auto_error_within_half_a_bin(lo, hi):
    rng = np.random.default_rng(lo + hi)
    x = rng.integers(lo, hi + 1, (64, 64)).astype(np.uint16)
    x.flat[:2] = (lo, hi)  # the data's min and max: ImageJ's display range
    c = get_codec("eightbit")
    s = c.encode(x)
    h = peek_header(s)
    assert (h["low"], h["high"]) == (lo, hi)
    # ImageJ's mapping code = int((v − lo)·256/(hi − lo + 1) + 0.5), clipped to 255: its bins are
    # not all equal (the top one is 1.5 bins wide once the range has ≥ 512 values), so the bound
    # is half of each code's own bin (the integers that map to it), plus ½ ADU of rounding.
    v = np.arange(lo, hi + 1, dtype=np.float64)
    code = np.minimum(((v - lo) * 256 / (hi - lo + 1) + 0.5).astype(np.int64), 255)
    first = np.full(256, np.inf)
    last = np.full(256, -np.inf)
    np.minimum.at(first, code, v)
    np.maximum.at(last, code, v)
    cx = code[x.astype(np.int64) - lo]
    bound = (last[cx] - first[cx]) / 2 + 0.5
    err = np.abs(c.decode(s).astype(np.int64) - x.astype(np.int64))
    assert (err <= bound).all(), (x[err > bound][:5], err[err > bound][:5], bound[err > bound][:5])
    # and the ordinary half-bin bound holds below the top code
    below = cx < 255
    assert (err[below] <= (hi - lo + 1) / 512 + 0.5).all()


@pytest.mark.parametrize(
    "spec, x",
    [
        ("eightbit", np.arange(1000, 1256, dtype=np.uint16).reshape(16, 16)),
        ("eightbit", np.arange(256, dtype=np.uint8).reshape(16, 16)),
        ("eightbit:range=fixed", np.arange(256, dtype=np.uint8).reshape(16, 16)),
        ("eightbit:range=fixed,low=1000,high=1255", np.arange(1000, 1256, dtype=np.uint16).reshape(16, 16)),
        ("eightbit:range=fixed,bits=8", np.arange(256, dtype=np.uint16).reshape(16, 16)),
    ],
    ids=["auto-u16", "auto-u8", "fixed-u8", "fixed-lowhigh", "fixed-bits8"],
)
def test_eightbit_is_exact_when_the_range_has_256_values(spec, x):
    """256 codes for 256 input values: every bin holds one integer, the middle of the bin is
    that integer, so the conversion is lossless."""
    c = get_codec(spec)
    np.testing.assert_array_equal(c.decode(c.encode(x)), x)


def test_eightbit_fixed_16bit_is_a_right_shift():
    x = make_input("uint16", (32, 32), "random")
    s = get_codec("eightbit:range=fixed").encode(x)
    _, sections = unpack(s)
    np.testing.assert_array_equal(np.frombuffer(sections[0], np.uint8).reshape(x.shape), x >> 8)


@pytest.mark.parametrize("spec", ["eightbit:range=fixed", "eightbit:range=fixed,bits=12",
                                  "eightbit:range=fixed,low=50,high=3000"])
def test_same_id_codec_with_other_options_decodes_the_stream_as_written(spec):
    """The stream carries its configuration: any codec with the same id decodes it as written
    (as ``decode_any`` does), or refuses it — never a silently different array."""
    x = make_input("uint16", (32, 32), "scene")
    for writer, reader in (("eightbit", spec), (spec, "eightbit")):
        s = get_codec(writer).encode(x)
        expected = decode_any(s)
        try:
            got = get_codec(reader).decode(s)
        except CodecError:
            continue
        np.testing.assert_array_equal(got, expected, err_msg=f"written by {writer}, read by {reader}")
    # the same holds for every other codec whose options change the stream
    for writer, reader in (("jpeg:quality=30", "jpeg:quality=90"), ("lerc:max_error=4", "lerc"),
                           ("jpegls:near=3", "jpegls"), ("jpegxl:distance=2", "jpegxl"),
                           ("zstd:level=19", "zstd"), ("blosc2:shuffle=bitshuffle", "blosc2")):
        s = get_codec(writer).encode(x)
        np.testing.assert_array_equal(get_codec(reader).decode(s), decode_any(s))


# ------------------------------------------------------------------------------------ ratio targets
@pytest.fixture(scope="module")
def noisy_scene():
    """A noisy 256² uint16 scene: Poisson noise on smooth structure (a few thousand ADU)."""
    rng = np.random.default_rng(17)
    yy, xx = np.mgrid[0:256, 0:256]
    scene = 200 + 3000 * np.exp(-((yy - 128) ** 2 + (xx - 100) ** 2) / 2000.0) + 800 * np.sin(xx / 9.0) ** 2
    return rng.poisson(scene).astype(np.uint16)


@pytest.mark.parametrize("spec, fixed", [
    ("jpeg:ratio=10", "jpeg:quality={q:.0f}"),
    ("jpeg2k:ratio=10", "jpeg2k:quality={q:.0f}"),
    ("jpegxr:ratio=10", "jpegxr:quality={q!r}"),
    ("jpegxl:ratio=10", "jpegxl:distance={q!r}"),
    ("lerc:ratio=10", "lerc:max_error={q!r}"),
])
def test_ratio_search_reaches_the_target(spec, fixed, noisy_scene):
    x = noisy_scene
    c = get_codec(spec)
    s = c.encode(x)
    h = peek_header(s)
    payload = sum(h["sections"])
    assert h["achieved_ratio"] == pytest.approx(x.nbytes / payload, rel=1e-12)
    assert h["achieved_ratio"] >= c.ratio
    y = c.decode(s)
    assert y.dtype == x.dtype and y.shape == x.shape
    # the recorded setting is the one used: coding with it fixed gives the same payload
    again = get_codec(fixed.format(q=h["setting"])).encode(x)
    assert unpack(again)[1] == unpack(s)[1]
    if c.codec_id == "lerc":
        assert np.abs(y.astype(np.int64) - x).max() <= max(h["setting"], 0.5)


@pytest.mark.parametrize("cid", ["jpeg", "jpeg2k"])
def test_ratio_search_takes_the_highest_quality_that_reaches_the_target(cid, noisy_scene):
    """Integer quality: the next quality up no longer reaches the ratio ("JPEG 10:1" = the best
    quality that is still ≥ 10:1)."""
    x = noisy_scene
    h = peek_header(get_codec(f"{cid}:ratio=10").encode(x))
    q = int(h["setting"])
    assert q < 100  # a noisy scene does not reach 10:1 at the highest quality
    nxt = peek_header(get_codec(f"{cid}:quality={q + 1}").encode(x))
    assert x.nbytes / sum(nxt["sections"]) < 10


def test_unreachable_ratio_falls_back_to_the_lowest_quality_and_says_so(noisy_scene):
    x = noisy_scene
    h_low = peek_header(get_codec("jpeg:quality=1").encode(x))
    best = x.nbytes / sum(h_low["sections"])
    target = 2 * best  # beyond what JPEG can do on this scene (quality 1 is its smallest)
    h = peek_header(get_codec(f"jpeg:ratio={target}").encode(x))
    assert h["setting"] == 1
    assert h["achieved_ratio"] < target
    assert h["achieved_ratio"] == pytest.approx(best, rel=1e-12)


# ------------------------------------------------------------------------------------ Hypothesis
_small_shapes = st.one_of(
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24),
    hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=9),
)
_HYP = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("spec", LOSSLESS_SPECS)
@_HYP
@given(data=st.data())
def test_lossless_codecs_are_exact_on_arbitrary_arrays(spec, data):
    dtype = data.draw(st.sampled_from([np.uint8, np.uint16]))
    x = data.draw(hnp.arrays(dtype, _small_shapes))
    c = get_codec(spec)
    y = c.decode(c.encode(x))
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, x)


@pytest.fixture(scope="module")
def hyp_models():
    return {16: sim_model((13, 11), seed=21, bit_depth=16), 12: sim_model((13, 11), seed=22, bit_depth=12)}


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_noisecal_error_is_bounded_per_pixel(data, hyp_models):
    bits = data.draw(st.sampled_from([16, 12]))
    model = hyp_models[bits]
    dtype = data.draw(st.sampled_from([np.uint16, np.uint8] if bits == 16 else [np.uint16]))
    vmax = min(np.iinfo(dtype).max, model.adc_max)
    o = int(np.median(model.offset_adu))
    # dark-ish values around the offset, low signal, anything in range, and the very top
    elems = st.one_of(st.integers(max(o - 40, 0), min(o + 60, vmax)), st.integers(0, vmax),
                      st.integers(max(vmax - 300, 0), vmax))
    planes = data.draw(st.sampled_from([(), (1,), (3,)]))
    x = data.draw(hnp.arrays(dtype, planes + model.shape, elements=elems))
    step = data.draw(st.sampled_from([0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0]))
    seed = data.draw(st.integers(0, 2**64 - 1))
    c = NoiseCal(step=step, seed=seed, tile_rows=8, noise_model=model)
    s = c.encode(x)
    check_noisecal(c, model, x, s, c.decode(s))


# ------------------------------------------------------------------------------------ corruption
def _streams(models):
    """A small stream of every codec (and noisecal with and without its embedded model)."""
    x16 = make_input("uint16", (2, 16, 24), "scene")
    out = {cid: (get_codec(cid), get_codec(cid).encode(x16)) for cid in PLAIN_IDS}
    m = models(16, 24)
    for spec in ("noisecal:seed=3", "noisecal:seed=3,embed_model=false"):
        c = get_codec(spec, noise_model=m)
        out[spec] = (c, c.encode(x16))
    return out


@pytest.fixture(scope="module")
def streams(models):
    return _streams(models)


def _layout(s: bytes) -> dict[str, int]:
    """Byte offsets of the parts of a stream: prefix (9), header, sections, CRC (4)."""
    hlen = struct.unpack_from("<I", s, 5)[0]
    h = json.loads(s[9 : 9 + hlen])
    ends, pos = [], 9 + hlen
    for n in h["sections"]:
        pos += n
        ends.append(pos)
    assert pos + 4 == len(s)
    return {"header_start": 9, "header_end": 9 + hlen, "section_ends": ends, "crc_start": pos}


def test_stream_layout_is_as_documented(streams):
    for _c, s in streams.values():
        assert s[:4] == MAGIC
        assert struct.unpack_from("<I", s, len(s) - 4)[0] == zlib.crc32(s[:-4])
        _layout(s)


@pytest.mark.parametrize("name", PLAIN_IDS + ["noisecal:seed=3", "noisecal:seed=3,embed_model=false"])
def test_every_truncation_is_refused(name, streams):
    c, s = streams[name]
    lay = _layout(s)
    # the named cut points: inside the prefix, inside the header, at the header's end, inside and
    # at the end of every section, the CRC missing, part of the CRC missing
    named = {
        "empty": 0, "inside magic": 2, "inside prefix": 7,
        "inside header": (lay["header_start"] + lay["header_end"]) // 2,
        "header end": lay["header_end"], "crc missing": lay["crc_start"],
        "crc partly missing": len(s) - 1,
    }
    starts = [lay["header_end"]] + lay["section_ends"][:-1]
    for i, (a, b) in enumerate(zip(starts, lay["section_ends"])):
        if b > a:
            named[f"inside section {i}"] = (a + b) // 2
    for what, cut in named.items():
        with pytest.raises(CorruptStreamError) as ei:
            c.decode(s[:cut])
        msg = str(ei.value)
        if cut >= lay["header_end"]:
            assert "truncated" in msg, (what, msg)
        with pytest.raises(CorruptStreamError):
            decode_any(s[:cut])
    for cut in range(len(s)):  # and every other cut point
        with pytest.raises(CorruptStreamError):
            c.decode(s[:cut])
        with pytest.raises(CorruptStreamError):
            decode_any(memoryview(s)[:cut])


@pytest.mark.parametrize("name", PLAIN_IDS + ["noisecal:seed=3", "noisecal:seed=3,embed_model=false"])
def test_every_flipped_byte_is_refused(name, streams):
    c, s = streams[name]
    buf = bytearray(s)
    for i in range(len(s)):
        buf[i] ^= 0xFF
        b = bytes(buf)
        with pytest.raises(CorruptStreamError):
            c.decode(b)
        with pytest.raises(CorruptStreamError):
            decode_any(b)
        buf[i] ^= 0xFF
    assert bytes(buf) == s


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_byte_change_is_refused(data, streams):
    name = data.draw(st.sampled_from(sorted(streams)))
    c, s = streams[name]
    pos = data.draw(st.integers(0, len(s) - 1))
    mask = data.draw(st.integers(1, 255))
    b = bytearray(s)
    b[pos] ^= mask
    with pytest.raises(CorruptStreamError):
        c.decode(bytes(b))
    with pytest.raises(STREAM_ERRORS):  # decode_any may refuse the rebuilt codec before the CRC
        decode_any(bytes(b))


@pytest.mark.parametrize("extra", [b"\x00", b"\xff" * 7, None], ids=["1 byte", "7 bytes", "twice"])
def test_appended_bytes_are_refused(extra, streams):
    for c, s in streams.values():
        b = s + (s if extra is None else extra)
        with pytest.raises(CorruptStreamError, match="unexpected bytes"):
            c.decode(b)
        with pytest.raises(CorruptStreamError):
            decode_any(b)


def test_wrong_magic_version_and_foreign_data_are_refused(streams):
    c, s = streams["zstd"]
    for bad in (b"RGCX" + s[4:], b"\x00" + s, s[1:]):
        with pytest.raises(CorruptStreamError, match="not rawgate"):
            c.decode(bad)
        with pytest.raises(CorruptStreamError):
            decode_any(bad)
    # a well-formed stream from a newer rawgate (valid CRC) is refused with the reason
    body = MAGIC + bytes([2]) + s[5:-4]
    newer = body + struct.pack("<I", zlib.crc32(body))
    with pytest.raises(CorruptStreamError, match="newer"):
        c.decode(newer)
    import imagecodecs

    x = make_input("uint16", (16, 16), "scene")
    for foreign in (b"", b"RGCS", imagecodecs.zstd_encode(x.tobytes()), imagecodecs.png_encode(x),
                    bytes(range(256)) * 4, x.tobytes()):
        for dec in (c.decode, decode_any):
            with pytest.raises(CorruptStreamError):
                dec(foreign)


def test_stream_of_one_codec_is_refused_by_another(streams):
    for ca, sa in streams.values():
        for cb, _sb in streams.values():
            if ca.codec_id == cb.codec_id:
                continue
            with pytest.raises(CodecError, match=f"written by codec '{ca.codec_id}'"):
                cb.decode(sa)


def _reframe(s: bytes, header_changes=None, sections=None) -> bytes:
    """Re-pack a stream with a changed header or sections and a *valid* CRC."""
    h, secs = unpack(s)
    h = {k: v for k, v in h.items() if k != "sections"}
    h.update(header_changes or {})
    return pack(h, [bytes(x) for x in (sections if sections is not None else secs)])


def test_inconsistent_but_well_framed_streams_are_refused(streams, models):
    """Streams with a valid CRC whose header disagrees with the payload: the decoders' own
    consistency checks refuse them."""
    for cid in ("zstd", "blosc2", "deflate", "eightbit"):
        c, s = streams[cid]
        with pytest.raises(STREAM_ERRORS):
            c.decode(_reframe(s, {"shape": [2, 16, 25]}))
    for cid in ("jpegls", "jpegxl", "lerc", "jpeg", "jpeg2k", "jpegxr"):
        c, s = streams[cid]
        with pytest.raises(CodecError, match="planes"):
            c.decode(_reframe(s, {"shape": [3, 16, 24]}))  # 3 planes promised, 2 stored
        with pytest.raises(STREAM_ERRORS):
            c.decode(_reframe(s, {"shape": [2, 17, 24]}))  # planes decode to another size
    c, s = streams["noisecal:seed=3"]
    h = peek_header(s)
    for change in ({"n_exact": h["n_exact"] + 1}, {"n_residual": h["n_residual"] + 1},
                   {"kbase": h["kbase"] + 1}, {"shape": [2, 16, 23]}):
        with pytest.raises(STREAM_ERRORS):
            c.decode(_reframe(s, change))
    secs = [bytes(x) for x in unpack(s)[1]]
    with pytest.raises(CodecError):
        c.decode(_reframe(s, sections=secs[:2]))
    # the embedded model of another camera (same frame size) under this stream's header
    other = get_codec("noisecal:seed=3", noise_model=sim_model((16, 24), seed=998))
    other_section = bytes(unpack(other.encode(make_input("uint16", (2, 16, 24), "scene")))[1][0])
    with pytest.raises(STREAM_ERRORS):
        c.decode(_reframe(s, sections=[other_section] + secs[1:]))


# ------------------------------------------------------------------------------------ noise models
def test_noisecal_frame_must_match_the_model(models):
    m = models(16, 24)
    c = get_codec("noisecal:seed=1", noise_model=m)
    for x in (np.zeros((24, 16), np.uint16), np.zeros((16, 25), np.uint16),
              np.zeros((3, 15, 24), np.uint16)):
        with pytest.raises(ModelMismatchError, match="shape"):
            c.encode(x)
    m12 = models(16, 24, 12)
    x = np.full((16, 24), 4096, np.uint16)  # one count above a 12-bit camera's range
    with pytest.raises(ModelMismatchError, match="bit depth"):
        get_codec("noisecal", noise_model=m12).encode(x)


def test_noisecal_without_any_model_cannot_encode():
    with pytest.raises(ModelNotFoundError):
        get_codec("noisecal").encode(np.zeros((8, 8), np.uint16))


def test_noisecal_stream_with_another_model_is_refused(streams, models):
    c, s = streams["noisecal:seed=3,embed_model=false"]
    other = sim_model((16, 24), seed=999)
    assert other.sha256 != c.model_sha256
    with pytest.raises(STREAM_ERRORS) as ei:
        NoiseCal(embed_model=False, noise_model=other).decode(s)
    assert c.model_sha256[:12] in str(ei.value)  # says which model the stream needs
    with pytest.raises(ModelMismatchError):  # the stream's own config with the wrong model
        get_codec(peek_header(s)["codec"], noise_model=other)
    with pytest.raises(ModelMismatchError):
        decode_any(s, noise_model=other)
    # with the model embedded, the stream decodes with its own model whatever is passed
    ce, se = streams["noisecal:seed=3"]
    np.testing.assert_array_equal(NoiseCal(noise_model=other).decode(se), ce.decode(se))


def test_fresh_process_needs_the_model_names_it_and_finds_it_in_a_store(streams, tmp_path):
    """In a new process no model is known: a stream without its model is refused with
    ModelNotFoundError naming the hash, until the model is put in a model store; a stream
    carrying its model decodes to the same array as in this process."""
    c_no, s_no = streams["noisecal:seed=3,embed_model=false"]
    c_em, s_em = streams["noisecal:seed=3"]
    (tmp_path / "no.bin").write_bytes(s_no)
    (tmp_path / "em.bin").write_bytes(s_em)
    np.save(tmp_path / "expected_no.npy", c_no.decode(s_no))
    np.save(tmp_path / "expected_em.npy", c_em.decode(s_em))
    store = tmp_path / "store"
    path = store_model(c_no.noise_model, store)
    assert path.name == f"{c_no.model_sha256}.rgnoise"
    code = textwrap.dedent(f"""
        import os, numpy as np
        from pathlib import Path
        from rawgate.codecs import ModelNotFoundError, decode_any, get_codec
        from rawgate.codecs._stream import peek_header
        d = Path({str(tmp_path)!r})
        s = d.joinpath("no.bin").read_bytes()
        for how, dec in (("decode_any", lambda: decode_any(s)),
                         ("from_config", lambda: get_codec(peek_header(s)["codec"]).decode(s))):
            try:
                dec()
            except ModelNotFoundError as e:
                print(how, "NOTFOUND", e)
            except Exception as e:
                print(how, "OTHER", type(e).__name__, e)
            else:
                print(how, "DECODED")
        os.environ["RAWGATE_MODEL_PATH"] = str(d / "store")
        y = decode_any(s)
        print("STORE", "SAME" if np.array_equal(y, np.load(d / "expected_no.npy")) else "DIFFERENT")
        y = decode_any(d.joinpath("em.bin").read_bytes())
        print("EMBEDDED", "SAME" if np.array_equal(y, np.load(d / "expected_em.npy")) else "DIFFERENT")
    """)
    env = {"PATH": "/usr/bin:/bin", "RAWGATE_MODEL_PATH": str(tmp_path / "empty"),
           "XDG_DATA_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for how in ("decode_any", "from_config"):
        line = next(ln for ln in lines if ln.startswith(how))
        assert line.startswith(f"{how} NOTFOUND") and c_no.model_sha256 in line, line
    assert "STORE SAME" in lines, r.stdout
    assert "EMBEDDED SAME" in lines, r.stdout
