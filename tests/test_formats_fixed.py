"""Files written by an earlier rawgate still read back the same (``tests/data/formats``).

The fixtures were written by ``tests/data/formats/make_fixtures.py`` while the codecs lived at
``rawgate.codecs``: a bare ``noisecal`` stream that embeds its model, a ``zstd`` stream, a
3-plane OME-TIFF coded with ``noisecal`` and two OME-Zarr images (``zstd``, and ``noisecal`` with
the model in the codec configuration). Codec ids, stream layouts and container fields must not
change when code moves; this test is what says they did not. Each decode runs as a fresh process
would (no model registered in memory, no model store), so it uses only what the file carries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from rawgate.calibration.model import NoiseModel
from rawgate.codecs import codec_of, decode_any, get_codec
from rawgate.codecs.containers import read_ome_tiff, read_ome_tiff_planes, read_ome_zarr
from rawgate.codecs.models import fresh_model_lookup

DATA = Path(__file__).parent / "data" / "formats"
MODEL_SHA = "814f28ddad4a643f141c52ebea9e4afedb8859df2ac43d9520eb1a2799426460"


@pytest.fixture
def raw() -> np.ndarray:
    return np.load(DATA / "raw.npy")


@pytest.fixture(autouse=True)
def _no_model_store(tmp_path, monkeypatch):
    monkeypatch.setenv("RAWGATE_MODEL_PATH", str(tmp_path / "none"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    with fresh_model_lookup():
        yield


def test_the_fixture_model_is_the_one_the_files_name():
    assert NoiseModel.load(DATA / "model.rgnoise").sha256 == MODEL_SHA


def test_a_noisecal_stream_decodes_with_its_embedded_model(raw):
    stream = (DATA / "frame.noisecal").read_bytes()
    codec = codec_of(stream)
    assert codec.codec_id == "noisecal" and codec.get_config()["step"] == 2
    decoded = np.asarray(decode_any(stream))
    assert decoded.dtype == np.uint16 and decoded.shape == raw.shape[1:]
    assert np.array_equal(decoded, np.load(DATA / "frame.noisecal.decoded.npy"))
    err = decoded.astype(float) - raw[0]
    assert np.abs(err).max() > 0 and abs(err.mean()) < 3  # lossy, without bias


def test_a_zstd_stream_decodes_bit_exact(raw):
    stream = (DATA / "frame.zstd").read_bytes()
    assert codec_of(stream).codec_id == "zstd"
    assert np.array_equal(np.asarray(get_codec("zstd").decode(stream)), raw[0])


def test_a_noisecal_ome_tiff_reads_back(raw):
    a, meta = read_ome_tiff(DATA / "stack.noisecal.ome.tif")
    assert a.shape == raw.shape and a.dtype == np.uint16
    assert np.array_equal(a, np.load(DATA / "stack.noisecal.ome.tif.decoded.npy"))
    assert meta["axes"] == "TYX" and meta["model_sha256"] == MODEL_SHA
    assert meta["physical_sizes"] == {"X": 0.65, "Y": 0.65}
    assert meta["micromanager"] == {"Summary": {"Camera": "fixture"}}
    assert meta["codec"].startswith("noisecal")
    with read_ome_tiff_planes(DATA / "stack.noisecal.ome.tif") as planes:
        assert planes.n_planes == 3
        assert all(np.array_equal(planes.plane(i), a[i]) for i in range(3))
    assert np.array_equal(tifffile.imread(DATA / "stack.noisecal.ome.tif"), a)  # through tifffile


@pytest.mark.parametrize("name, lossless", [("stack.zstd.ome.zarr", True), ("stack.noisecal.ome.zarr", False)])
def test_ome_zarr_images_read_back(raw, name, lossless):
    a, meta = read_ome_zarr(DATA / name)
    assert a.shape == raw.shape and a.dtype == np.uint16
    if lossless:
        assert np.array_equal(a, raw)
    else:
        assert np.array_equal(a, np.load(DATA / f"{name}.decoded.npy"))
        assert meta["model_sha256"] == MODEL_SHA


def test_bare_zarr_finds_the_codec_by_its_entry_point(raw, tmp_path):
    """A process that never imports rawgate opens the arrays with zarr alone (the
    ``zarr.codecs`` entry point named ``rawgate``)."""
    code = (
        "import json, sys, numpy as np, zarr\n"
        "out = {}\n"
        "for name in ('stack.zstd.ome.zarr', 'stack.noisecal.ome.zarr'):\n"
        "    a = zarr.open_array(sys.argv[1] + '/' + name + '/0', mode='r')[...]\n"
        "    out[name] = [list(a.shape), int(a.astype(np.int64).sum())]\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "RAWGATE_MODEL_PATH": str(tmp_path / "none"), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    r = subprocess.run([sys.executable, "-c", code, str(DATA)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["stack.zstd.ome.zarr"] == [list(raw.shape), int(raw.astype(np.int64).sum())]
    a, _ = read_ome_zarr(DATA / "stack.noisecal.ome.zarr")
    assert got["stack.noisecal.ome.zarr"] == [list(raw.shape), int(a.astype(np.int64).sum())]
