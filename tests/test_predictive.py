"""The dither-aware predictive entropy stage of noisecal (codecs/_predictive.py)."""

from __future__ import annotations

import numpy as np
import pytest

from rawgate.codecs import _predictive as PR
from rawgate.codecs import _vst_kernels as K
from rawgate.codecs.entropy import encode_tiles


def _dithered_codes(shape, seed, step=2.0, dtype=np.uint8, rng=None):
    """Codes of a smooth scene + Gaussian noise, quantised with the codec's own dither."""
    rng = rng or np.random.default_rng(0)
    P, H, W = shape
    yy, xx = np.mgrid[0:H, 0:W]
    w = 20 + 10 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + 30 * np.exp(-((xx - W / 2) ** 2 + (yy - H / 2) ** 2) / 200)
    codes = np.empty(shape, dtype)
    for p in range(P):
        u = np.asarray(K.dither(np.uint64(seed), p, H * W)).reshape(H, W)
        noisy = w + rng.normal(0, 1 / step, (H, W))
        codes[p] = np.clip(np.floor(noisy + u + 0.5), 0, np.iinfo(dtype).max - 1)
    return codes


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 1, 9), (1, 9, 1), (2, 37, 53), (3, 64, 64), (1, 300, 17)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_round_trip_is_exact(shape, dtype):
    codes = _dithered_codes(shape, seed=5, dtype=dtype)
    b = PR.encode(codes, 5, 16)
    out = PR.decode(b, shape, np.dtype(dtype), 5, 16, np.iinfo(dtype).max)
    np.testing.assert_array_equal(out, codes)


def test_large_residuals_escape_and_round_trip():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 255, (2, 40, 40)).astype(np.uint8)  # white noise: mostly escapes
    codes[0, 5, 5] = 255
    b = PR.encode(codes, 3, 8)
    np.testing.assert_array_equal(PR.decode(b, codes.shape, np.dtype(np.uint8), 3, 8, 255), codes)


def test_smaller_than_jpegls_on_dithered_noise_limited_codes():
    codes = _dithered_codes((2, 256, 256), seed=11)
    ours = len(PR.encode(codes, 11, 64))
    jls = len(encode_tiles(codes, "jpegls", 64))
    assert ours < 0.92 * jls, (ours, jls)


def test_truncated_padded_or_misshapen_payloads_are_refused():
    """(Bit flips are the stream CRC's job, one layer up.)"""
    codes = _dithered_codes((1, 64, 64), seed=2)
    b = PR.encode(codes, 2, 32)
    for cut in (len(b) - 2, 20, 3):
        with pytest.raises(PR.PredictiveError):
            PR.decode(b[:cut], codes.shape, np.dtype(np.uint8), 2, 32, 255)
    with pytest.raises(PR.PredictiveError):
        PR.decode(b + b"\0\0", codes.shape, np.dtype(np.uint8), 2, 32, 255)
    with pytest.raises(PR.PredictiveError):
        PR.decode(b, (1, 64, 65), np.dtype(np.uint8), 2, 32, 255)
    with pytest.raises(PR.PredictiveError):
        PR.decode(b, (1, 96, 64), np.dtype(np.uint8), 2, 32, 255)  # tile count differs


# ------------------------------------------------------------------------------ pack2 (fast)
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 3, 5), (2, 37, 53), (1, 16, 4096)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_pack2_round_trip_is_exact(shape, dtype):
    from rawgate.codecs.entropy import decode_codes, encode_codes

    codes = _dithered_codes(shape, seed=4, dtype=dtype)
    codes.flat[::7] = np.iinfo(dtype).max - 1  # many escapes
    b = encode_codes(codes, "pack2", 16, 4)
    out = decode_codes(b, "pack2", shape, np.dtype(dtype), 16, 4, np.iinfo(dtype).max)
    np.testing.assert_array_equal(out, codes)


def test_pack2_written_inside_the_forward_kernel_equals_the_standalone_coder():
    """noisecal's fast preset packs rows inside its forward kernel; the payload must be the one
    the standalone stage writes for the same codes (one format, two writers)."""
    from rawgate.calibration.model import CameraIdentity, NoiseModel
    from rawgate.codecs import NoiseCal, _stream
    import imagecodecs

    from rawgate.codecs.entropy import decode_codes, encode_codes

    rng = np.random.default_rng(3)
    shape = (64, 96)
    bad = (rng.random(shape) < 0.03).astype(np.uint8)
    model = NoiseModel(
        identity=CameraIdentity("t", "T1", 16, 1, (0, 0, shape[1], shape[0])),
        offset_adu=rng.normal(100, 2, shape), gain_e_per_adu=rng.normal(0.47, 0.01, shape),
        read_noise_e=np.exp(rng.normal(0.47, 0.15, shape)), dark_current_e_per_s=None,
        bad_pixels=bad, emva={"saturation_adu": 60000.0},
    )
    x = (100 + rng.poisson(rng.uniform(0, 400, (3,) + shape)) / 0.47).astype(np.uint16)
    fused = NoiseCal(seed=8, entropy="pack2", noise_model=model, embed_model=False)
    plain = NoiseCal(seed=8, entropy="zstd", noise_model=model, embed_model=False)
    hf, sf = _stream.unpack(fused.encode(x))
    hp, sp = _stream.unpack(plain.encode(x))
    codes = decode_codes(sp[1], "zstd", (3,) + shape, np.dtype(hp["code_dtype"]), 256, 8,
                         hp["marker"])
    assert bytes(sf[1]) == encode_codes(codes, "pack2", 256, 8)
    assert hf["side_codec"] == "zstd" and hp["side_codec"] == "pcodec"
    res_f = np.frombuffer(imagecodecs.zstd_decode(bytes(sf[3])), np.int32)
    res_p = imagecodecs.pcodec_decode(bytes(sp[3]), shape=(res_f.size,), dtype=np.int32)
    np.testing.assert_array_equal(res_f, res_p)  # same bad-pixel residuals, other side coder
    np.testing.assert_array_equal(fused.decode(fused.encode(x)), plain.decode(plain.encode(x)))
    y = fused.decode(fused.encode(x))
    assert (y[:, bad > 0] == x[:, bad > 0]).all()


def test_pack2_payload_damage_is_refused():
    from rawgate.codecs.entropy import EntropyError, decode_codes, encode_codes

    codes = _dithered_codes((1, 32, 32), seed=6)
    b = encode_codes(codes, "pack2", 16, 6)
    for bad in (b[:-1], b + b"\0", b"XXXX" + b[4:]):
        with pytest.raises(EntropyError):
            decode_codes(bad, "pack2", codes.shape, np.dtype(np.uint8), 16, 6, 255)
    # an escape count moved from one row to another: the rows no longer check out
    arr = bytearray(b)
    arr[4] += 1
    arr[6] -= 1
    with pytest.raises(EntropyError):
        decode_codes(bytes(arr), "pack2", codes.shape, np.dtype(np.uint8), 16, 6, 255)


def test_implied_codes_cost_nothing_and_round_trip():
    """Pixels whose code is their left neighbour's (noisecal's bad pixels) are left out."""
    rng = np.random.default_rng(9)
    codes = _dithered_codes((2, 64, 80), seed=7)
    skip = (rng.random((64, 80)) < 0.2).astype(np.uint8)
    skip[:, 0] = 0
    for r, c in zip(*np.nonzero(skip)):  # the encoder's fill rule, left to right
        codes[:, r, c] = codes[:, r, c - 1]
    with_skip = PR.encode(codes, 7, 16, skip)
    np.testing.assert_array_equal(PR.decode(with_skip, codes.shape, np.dtype(np.uint8), 7, 16, 255, skip), codes)
    assert len(with_skip) < 0.9 * len(PR.encode(codes, 7, 16))
    bad = skip.copy()
    bad[3, 0] = 1
    with pytest.raises(PR.PredictiveError):
        PR.encode(codes, 7, 16, bad)  # column 0 has no left neighbour
    with pytest.raises(PR.PredictiveError):
        PR.decode(with_skip, codes.shape, np.dtype(np.uint8), 7, 16, 255, skip[:, :-1])
