"""The dither-aware predictive entropy stage of noisecal (daemon/codecs/_predictive.py)."""

from __future__ import annotations

import numpy as np
import pytest

from rawgate.daemon.codecs import _predictive as PR
from rawgate.daemon.codecs import _vst_kernels as K
from rawgate.daemon.codecs.entropy import encode_tiles


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
