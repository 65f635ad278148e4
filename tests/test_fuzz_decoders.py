"""Decoders under fuzzing (bounded; ``RAWGATE_FUZZ_EXAMPLES`` raises the budget for a long run).

The stream frame's CRC-32 refuses any accidental change before a section is decoded, so a fuzzer
that only flips bytes tests the CRC. Here every mutated stream gets a *valid* CRC again, so the
mutations reach what sits behind it: the JSON header (shape, dtype, section lengths, codec
options) and each codec's section decoder. A decoder must then either raise
``CorruptStreamError`` / ``CodecError`` (``ModelError`` when a forged header no longer fits the
noise model) or return an array of exactly the header's dtype and shape
— never another exception, a hang, or a multi-gigabyte allocation from a forged shape.
"""

from __future__ import annotations

import json
import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from rawgate.calibration.model import ModelError
from rawgate.calibration.simulation import make_sensor_truth, render_frames, truth_noise_model
from rawgate.codecs import CodecError, get_codec
from rawgate.codecs._stream import CorruptStreamError

EXAMPLES = int(os.environ.get("RAWGATE_FUZZ_EXAMPLES", "60"))
SPECS = ["zstd", "blosc2", "deflate", "jpegls", "jpegxl:effort=1", "lerc", "jpeg:quality=80", "jpeg2k:ratio=5",
         "jpegxr:quality=0.8", "eightbit", "noisecal:step=2", "noisecal:step=2,preset=fast",
         "noisecal:step=2,preset=small"]
_PREFIX = struct.Struct("<4sBI")


@pytest.fixture(scope="module")
def streams():
    truth = make_sensor_truth((24, 32), seed=1)
    model = truth_noise_model(truth)
    frame = render_frames(truth, 40.0, 20.0, 2, np.random.default_rng(0))
    out = _Streams()
    for spec in SPECS:
        codec = get_codec(spec, noise_model=model) if spec.startswith("noisecal") else get_codec(spec)
        out[spec] = (codec, codec.encode(frame), frame.shape, frame.dtype)
    return out


class _Streams(dict):
    def __repr__(self) -> str:  # hypothesis prints the fixture on failure: keep it short
        return f"<{len(self)} encoded streams>"


def _reframe(header: dict, body: bytes) -> bytes:
    hb = json.dumps(header, separators=(",", ":")).encode()
    b = _PREFIX.pack(b"RGCS", 1, len(hb)) + hb + body
    return b + struct.pack("<I", zlib.crc32(b))


def _split(stream: bytes) -> tuple[dict, bytes]:
    _, _, hlen = _PREFIX.unpack_from(stream, 0)
    start = _PREFIX.size
    return json.loads(stream[start:start + hlen]), stream[start + hlen:-4]


def _decode_checked(codec, data: bytes, header: dict) -> None:
    try:
        out = codec.decode(data)
    except (CorruptStreamError, CodecError, ModelError):  # ModelError: a stream for another model
        return
    arr = np.asarray(out)
    assert arr.dtype.kind in "biuf" and not arr.dtype.hasobject, arr.dtype  # never what no encoder writes
    assert list(arr.shape) == list(header.get("shape", arr.shape)), (arr.shape, header.get("shape"))
    assert str(arr.dtype) == str(np.dtype(header.get("dtype", arr.dtype)))


_HEADER_EDITS = st.sampled_from(["shape", "dtype", "sections", "drop", "option"])


@pytest.mark.parametrize("spec", SPECS)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_streams_with_a_valid_crc_fail_cleanly(streams, spec, data):
    codec, stream, shape, dtype = streams[spec]
    header, body = _split(stream)
    # libjxr (JPEG-XR through imagecodecs) calls abort() on some forged payloads (found here at
    # ~3000 examples): the process dies, which no Python code can catch. A CRC-checked stream
    # never reaches it damaged by accident; the daemon survives it as a worker death (the item is
    # retried, then quarantined). Its payload is therefore not fuzzed in this process.
    kinds = ["header"] if spec.startswith("jpegxr") else ["body", "header", "truncate"]
    kind = data.draw(st.sampled_from(kinds), label="kind")
    if kind == "body" and body:
        b = bytearray(body)
        for _ in range(data.draw(st.integers(1, 8), label="flips")):
            i = data.draw(st.integers(0, len(b) - 1), label="at")
            b[i] = data.draw(st.integers(0, 255), label="byte")
        body = bytes(b)
    elif kind == "truncate" and body:
        cut = data.draw(st.integers(0, len(body) - 1), label="cut")
        body = body[:cut]
        secs = list(header["sections"])
        while sum(secs) > len(body) and secs:  # keep the frame consistent: shorten the last sections
            over = sum(secs) - len(body)
            secs[-1] = max(0, secs[-1] - over)
            if secs[-1] == 0 and sum(secs) > len(body):
                secs.pop()
        header = dict(header, sections=secs)
    else:
        header = dict(header)
        edit = data.draw(_HEADER_EDITS, label="edit")
        if edit == "shape":
            header["shape"] = data.draw(st.lists(st.integers(-3, 2**31), min_size=0, max_size=5), label="shape")
        elif edit == "dtype":
            header["dtype"] = data.draw(st.sampled_from(["uint8", "int16", "float64", "<U3", "object", "bogus", 7]),
                                        label="dtype")
        elif edit == "sections":
            header["sections"] = data.draw(st.lists(st.integers(0, len(body)), min_size=0, max_size=6),
                                           label="sections")
            if sum(header["sections"]) != len(body):
                return  # the frame itself refuses it (tested elsewhere)
        elif edit == "drop":
            keys = sorted(k for k in header if k not in ("codec", "sections"))
            if keys:
                header.pop(data.draw(st.sampled_from(keys), label="key"))
        else:
            cfg = header.get("codec")
            if isinstance(cfg, dict) and cfg:
                k = data.draw(st.sampled_from(sorted(cfg)), label="option")
                cfg = dict(cfg)
                cfg[k] = data.draw(st.one_of(st.none(), st.integers(-10**9, 10**9), st.text(max_size=5),
                                             st.floats(allow_nan=True)), label="value")
                header["codec"] = cfg
    _decode_checked(codec, _reframe(header, body), header)


@pytest.fixture(scope="module")
def ome_tiff(tmp_path_factory):
    from rawgate.codecs.containers import write_ome_tiff

    truth = make_sensor_truth((24, 32), seed=1)
    model = truth_noise_model(truth)
    stack = render_frames(truth, 40.0, 20.0, 3, np.random.default_rng(1))
    path = tmp_path_factory.mktemp("fuzz") / "s.ome.tif"
    write_ome_tiff(path, stack, get_codec("noisecal:step=2", noise_model=model), axes="ZYX", noise_model=model)
    return _Bytes(path.read_bytes()), stack.shape


class _Bytes(bytes):
    def __repr__(self) -> str:
        return f"<{len(self)} bytes>"


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_ome_tiff_files_fail_cleanly(ome_tiff, tmp_path_factory, data):
    """A rawgate OME-TIFF with bytes changed or cut (no checksum fixed): the reader raises
    ``ContainerError`` / ``CorruptStreamError`` / ``CodecError`` / ``ModelError`` or returns
    the stack's shape."""
    from rawgate.codecs.containers import ContainerError, read_ome_tiff

    raw, shape = ome_tiff
    b = bytearray(raw)
    if data.draw(st.booleans(), label="truncate"):
        b = b[:data.draw(st.integers(0, len(b) - 1), label="cut")]
    else:
        for _ in range(data.draw(st.integers(1, 16), label="flips")):
            b[data.draw(st.integers(0, len(b) - 1), label="at")] = data.draw(st.integers(0, 255), label="byte")
    path = tmp_path_factory.mktemp("d") / "d.ome.tif"
    path.write_bytes(bytes(b))
    try:
        arr, _ = read_ome_tiff(path)
    except (ContainerError, CorruptStreamError, CodecError, ModelError):
        return
    assert np.asarray(arr).shape == shape and np.asarray(arr).dtype == np.uint16
