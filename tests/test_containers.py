"""rawgate streams inside OME-TIFF and OME-Zarr v3: round trips, fresh processes, corruption,
the noise model stored once, and clear errors when it is missing."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tifffile
import zarr
from rawgate.calibration.instruments import CameraIdentity
from rawgate.calibration.model import ModelError, NoiseModel
from rawgate.calibration.simulation import make_sensor_truth, render_frames
from rawgate.codecs import (
    CodecError,
    CorruptStreamError,
    ModelNotFoundError,
    fresh_model_lookup,
    get_codec,
    store_model,
)
from rawgate.codecs import containers as C
from rawgate.codecs._stream import peek_header
from rawgate.codecs.noisecal import CodecMaps, codec_maps
from rawgate.codecs.containers import (
    MODEL_ARRAY,
    TIFF_COMPRESSION,
    TIFF_TAG_INFO,
    TIFF_TAG_MODEL,
    ContainerError,
    read_ome_tiff,
    read_ome_zarr,
    write_ome_tiff,
    write_ome_zarr,
)

H, W = 40, 56  # not square: catches transposed planes


@pytest.fixture(scope="module")
def sensor():
    t = make_sensor_truth((H, W), seed=5)
    model = NoiseModel(
        identity=CameraIdentity("sim", "S1", 16, 1, (0, 0, W, H)),
        offset_adu=t.offset_adu, gain_e_per_adu=t.gain_e_per_adu, read_noise_e=t.read_noise_e,
        dark_current_e_per_s=None, bad_pixels=(t.defects > 0).astype(np.uint8),
    )
    frames = render_frames(t, 40.0, 10.0, 4, np.random.default_rng(1))
    return model, frames


def _image(dtype, ndim, seed=0):
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    shape = (3, H, W)[-ndim:]
    ramp = np.linspace(0, top // 2, H * W).reshape(H, W)
    a = ramp + rng.integers(0, top // 4, size=shape)
    a.flat[:5] = [0, top, top, 1, 0]  # extremes survive
    return a.astype(dtype)


def _write(kind, path, data, codec, **kw):
    if kind == "tiff":
        return write_ome_tiff(path / "img.ome.tif", data, codec, **kw)
    return write_ome_zarr(path / "img.zarr", data, codec, **kw)


def _read(kind, p):
    return read_ome_tiff(p) if kind == "tiff" else read_ome_zarr(p)


def _fresh(code: str, tmp_path, **env) -> dict:
    """Run ``code`` in a new interpreter (no models registered, empty model store); it prints
    one JSON object as its last line."""
    full_env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg"), "RAWGATE_MODEL_PATH": "",
                **env}
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, cwd=tmp_path, check=False, env=full_env, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def _flip_byte(path, offset):
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0x5A]))


def _per_plane(codec, data):
    """What the codec itself gives for each (Y, X) plane — the container must give the same."""
    planes = data.reshape(-1, *data.shape[-2:])
    return np.stack([codec.decode(codec.encode(p)) for p in planes]).reshape(data.shape)


# ---------------------------------------------------------------------- lossless round trips
@pytest.mark.parametrize("kind", ["tiff", "zarr"])
@pytest.mark.parametrize("spec", ["zstd", "blosc2", "jpegls", "jpegxl"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("ndim", [2, 3])
def test_lossless_bit_exact(tmp_path, kind, spec, dtype, ndim):
    data = _image(dtype, ndim)
    p = _write(kind, tmp_path, data, spec)
    out, meta = _read(kind, p)
    assert out.dtype == data.dtype and out.shape == data.shape
    np.testing.assert_array_equal(out, data)
    assert meta["axes"] == ("YX" if ndim == 2 else "TYX")
    assert meta["codec"] == spec and meta["model_sha256"] is None


def test_tiff_layout_one_stream_per_plane(tmp_path):
    data = _image(np.uint16, 3)
    p = write_ome_tiff(tmp_path / "a.ome.tif", data, "zstd:level=5", axes="ZYX")
    with tifffile.TiffFile(p) as tif:
        assert tif.is_ome and len(tif.pages) == 3
        for i, page in enumerate(tif.pages):
            assert page.compression == TIFF_COMPRESSION
            assert len(page.dataoffsets) == 1  # the whole plane is one strip
            tif.filehandle.seek(page.dataoffsets[0])
            header = peek_header(tif.filehandle.read(page.databytecounts[0]))
            assert get_codec(header["codec"]) == get_codec("zstd:level=5")  # (id bare or prefixed)
            assert header["shape"] == [H, W]
            assert (TIFF_TAG_INFO in page.tags) == (i == 0)
        assert tif.series[0].axes == "ZYX"
    # plain tifffile (this process imported rawgate.codecs) reads it too
    np.testing.assert_array_equal(tifffile.imread(p), data)
    np.testing.assert_array_equal(tifffile.imread(p, key=2), data[2])


# ---------------------------------------------------------------------- noisecal
@pytest.mark.parametrize("kind", ["tiff", "zarr"])
def test_noisecal_round_trip_deterministic_model_once(tmp_path, sensor, kind):
    model, frames = sensor
    codec = get_codec("noisecal:step=2,seed=1234", noise_model=model)
    p = _write(kind, tmp_path, frames, codec)
    out, meta = _read(kind, p)
    assert out.dtype == frames.dtype and out.shape == frames.shape
    np.testing.assert_array_equal(out, _per_plane(codec, frames))
    assert not np.array_equal(out, frames)  # it is lossy …
    assert abs((out.astype(float) - frames).mean()) < 2  # … and unbiased (noise σ ≈ 40 ADU)
    assert meta["model_sha256"] == model.sha256
    assert meta["codec_config"]["embed_model"] is False

    model_bytes = model.to_bytes()
    if kind == "tiff":
        with tifffile.TiffFile(p) as tif:
            stored = tif.pages[0].tags[TIFF_TAG_MODEL].value
            assert stored == codec_maps(model).to_bytes()  # the codec's maps, not the model
            assert CodecMaps.from_bytes(stored).model_sha256 == model.sha256
            for page in tif.pages:
                assert page.compression == TIFF_COMPRESSION
                tif.filehandle.seek(page.dataoffsets[0])
                hdr = peek_header(tif.filehandle.read(page.databytecounts[0]))
                assert hdr["sections"][0] == 0  # no model inside the stream
                if page.index:
                    assert TIFF_TAG_MODEL not in page.tags
        assert p.stat().st_size < len(model_bytes) + frames.nbytes
    else:
        cfg = json.loads((p / "0" / "zarr.json").read_text())["codecs"][0]
        assert cfg["name"] == "rawgate"
        assert cfg["configuration"]["codec"]["model_sha256"] == model.sha256
        assert len(cfg["configuration"]["model"]) < C.CONFIG_MODEL_LIMIT  # small: in the config
        assert base64.b64decode(cfg["configuration"]["model"]) == codec_maps(model).to_bytes()
        assert not (p / MODEL_ARRAY).exists()
        chunks = sorted((p / "0" / "c").rglob("*"))
        chunk_files = [c for c in chunks if c.is_file()]
        assert len(chunk_files) == frames.shape[0]
        for c in chunk_files:
            assert peek_header(c.read_bytes())["sections"][0] == 0


def test_noisecal_zarr_multi_plane_chunks(tmp_path, sensor):
    model, frames = sensor
    codec = get_codec("noisecal:step=1.5,seed=9,preset=fast", noise_model=model)
    data = frames.reshape(2, 2, H, W)
    p = write_ome_zarr(tmp_path / "c.zarr", data, codec, axes="TZYX", chunks=(1, 2, H, W))
    out, meta = read_ome_zarr(p)
    expected = np.stack([codec.decode(codec.encode(data[t])) for t in range(2)])
    np.testing.assert_array_equal(out, expected)
    assert meta["axes"] == "TZYX"


def test_large_model_is_stored_once_as_a_group_array(tmp_path, sensor, monkeypatch):
    model, frames = sensor
    monkeypatch.setattr(C, "CONFIG_MODEL_LIMIT", 1000)  # as a 2048² model would be
    codec = get_codec("noisecal:seed=3", noise_model=model)
    p = write_ome_zarr(tmp_path / "big.zarr", frames, codec)
    cfg = json.loads((p / "0" / "zarr.json").read_text())["codecs"][0]["configuration"]
    assert "model" not in cfg and cfg["model_array"] == f"../{MODEL_ARRAY}"
    stored = zarr.open_array(str(p / MODEL_ARRAY), mode="r")[...]
    assert stored.tobytes() == codec_maps(model).to_bytes()
    assert CodecMaps.from_bytes(stored.tobytes()).model_sha256 == model.sha256
    out, _ = read_ome_zarr(p)
    np.testing.assert_array_equal(out, _per_plane(codec, frames))
    # and the other way round: forced into the config whatever its size
    p2 = write_ome_zarr(tmp_path / "cfg.zarr", frames, codec, model_in_config=True)
    assert "model" in json.loads((p2 / "0" / "zarr.json").read_text())["codecs"][0]["configuration"]


# ---------------------------------------------------------------------- what is stored of the model
N = 256  # a size where the maps are a small part of the calibration


def _sim_model(n: int, seed: int, serial: str = "S2") -> tuple[NoiseModel, np.ndarray]:
    t = make_sensor_truth((n, n), seed=seed)
    model = NoiseModel(
        identity=CameraIdentity("sim", serial, 16, 1, (0, 0, n, n)),
        offset_adu=t.offset_adu, gain_e_per_adu=t.gain_e_per_adu, read_noise_e=t.read_noise_e,
        dark_current_e_per_s=np.full((n, n), 0.2, np.float32),
        bad_pixels=(t.defects > 0).astype(np.uint8),
    )
    return model, render_frames(t, 40.0, 10.0, 2, np.random.default_rng(seed))


@pytest.fixture(scope="module")
def sensor256():
    return _sim_model(N, 11)


def test_stored_payload_is_the_codec_maps_and_decodes_without_the_model(tmp_path, sensor256):
    model, frames = sensor256
    codec = get_codec("noisecal:seed=21", noise_model=model)
    maps_bytes = codec_maps(model).to_bytes()
    model_bytes = model.to_bytes()
    assert len(maps_bytes) * 4 < len(model_bytes)  # 256²: ≈ 0.1 MB of maps, 0.9 MB of model
    write_ome_tiff(tmp_path / "n.ome.tif", frames, codec)
    write_ome_zarr(tmp_path / "i.zarr", frames, codec)  # maps in the codec configuration
    write_ome_zarr(tmp_path / "g.zarr", frames, codec, model_in_config=False)  # group array
    np.save(tmp_path / "expected.npy", _per_plane(codec, frames))

    with tifffile.TiffFile(tmp_path / "n.ome.tif") as tif:
        assert tif.pages[0].tags[TIFF_TAG_MODEL].value == maps_bytes
        info = json.loads(tif.pages[0].tags[TIFF_TAG_INFO].value)
    assert info["model_sha256"] == model.sha256 and info["version"] == C.FORMAT_VERSION
    cfg = json.loads((tmp_path / "i.zarr" / "0" / "zarr.json").read_text())["codecs"][0]
    assert base64.b64decode(cfg["configuration"]["model"]) == maps_bytes
    assert cfg["configuration"]["codec"]["model_sha256"] == model.sha256
    stored = zarr.open_array(str(tmp_path / "g.zarr" / MODEL_ARRAY), mode="r")[...]
    assert stored.tobytes() == maps_bytes
    for z in ("i.zarr", "g.zarr"):
        attrs = json.loads((tmp_path / z / "zarr.json").read_text())["attributes"]["rawgate"]
        assert attrs["model_sha256"] == model.sha256
    size = (tmp_path / "n.ome.tif").stat().st_size
    assert size < len(maps_bytes) + frames.nbytes < len(model_bytes)

    (tmp_path / "empty_store").mkdir()
    (tmp_path / "empty_xdg").mkdir()
    res = _fresh(f"""
        import json, numpy as np, tifffile, zarr
        from rawgate.codecs import ModelNotFoundError, find_model
        from rawgate.codecs.containers import read_ome_tiff, read_ome_zarr
        expected = np.load("expected.npy")
        r = {{}}
        try:
            tifffile.imread("n.ome.tif")
            r["missing"] = "decoded without the maps"
        except ModelNotFoundError as e:
            r["missing"] = str(e)
        r["zarr_bare"] = bool(np.array_equal(zarr.open("i.zarr", mode="r")["0"][...], expected))
        r["tiff"] = bool(np.array_equal(read_ome_tiff("n.ome.tif")[0], expected))
        r["imread_after"] = bool(np.array_equal(tifffile.imread("n.ome.tif"), expected))
        r["zarr_group"] = bool(np.array_equal(read_ome_zarr("g.zarr")[0], expected))
        r["model_found"] = find_model("{model.sha256}") is not None
        print(json.dumps(r))
    """, tmp_path, RAWGATE_MODEL_PATH=str(tmp_path / "empty_store"),
        XDG_DATA_HOME=str(tmp_path / "empty_xdg"))
    assert model.sha256 in res.pop("missing")
    assert res == {"zarr_bare": True, "tiff": True, "imread_after": True, "zarr_group": True,
                   "model_found": False}  # decoded from the stored maps alone
    assert not list((tmp_path / "empty_store").iterdir())
    assert not (tmp_path / "empty_xdg" / "rawgate").exists()  # (other packages write there)


def test_version_1_files_with_the_whole_model_are_still_read(tmp_path, sensor, monkeypatch):
    model, frames = sensor
    codec = get_codec("noisecal:seed=8", noise_model=model)
    with monkeypatch.context() as m:  # what format version 1 wrote: NoiseModel.to_bytes()
        m.setattr(C, "FORMAT_VERSION", 1)
        m.setattr(C, "_model_payload", lambda model: model.to_bytes())
        write_ome_tiff(tmp_path / "n.ome.tif", frames, codec)
        write_ome_zarr(tmp_path / "i.zarr", frames, codec)
        write_ome_zarr(tmp_path / "g.zarr", frames, codec, model_in_config=False)
    with tifffile.TiffFile(tmp_path / "n.ome.tif") as tif:
        assert NoiseModel.from_bytes(tif.pages[0].tags[TIFF_TAG_MODEL].value).sha256 == model.sha256
    np.save(tmp_path / "expected.npy", _per_plane(codec, frames))
    res = _fresh(f"""
        import json, numpy as np, tifffile, zarr
        from rawgate.codecs import find_model
        from rawgate.codecs.containers import read_ome_tiff, read_ome_zarr
        expected = np.load("expected.npy")
        r = {{"zarr_bare": bool(np.array_equal(zarr.open("i.zarr/0", mode="r")[...], expected))}}
        r["tiff"] = bool(np.array_equal(read_ome_tiff("n.ome.tif")[0], expected))
        r["zarr_group"] = bool(np.array_equal(read_ome_zarr("g.zarr")[0], expected))
        r["model_found"] = find_model("{model.sha256}") is not None
        print(json.dumps(r))
    """, tmp_path)
    assert res == {"zarr_bare": True, "tiff": True, "zarr_group": True, "model_found": True}


@pytest.mark.parametrize("where", ["tiff", "config", "array"])
def test_stored_maps_of_another_model_are_refused(tmp_path, sensor, monkeypatch, where):
    model, frames = sensor
    other, _ = _sim_model(8, 3, serial="OTHER")
    codec = get_codec("noisecal", noise_model=model)
    if where == "config":  # (the writer itself refuses: its chunks are coded through the config)
        p = write_ome_zarr(tmp_path / "x.zarr", frames, codec)
        meta_path = p / "0" / "zarr.json"
        meta = json.loads(meta_path.read_text())
        meta["codecs"][0]["configuration"]["model"] = base64.b64encode(
            codec_maps(other).to_bytes()).decode("ascii")
        meta_path.write_text(json.dumps(meta))
    else:
        with monkeypatch.context() as m:
            m.setattr(C, "_model_payload", lambda model: codec_maps(other).to_bytes())
            if where == "tiff":
                p = write_ome_tiff(tmp_path / "x.ome.tif", frames, codec)
            else:
                p = write_ome_zarr(tmp_path / "x.zarr", frames, codec, model_in_config=False)
    with pytest.raises(ModelError, match="maps are of noise model"):
        read_ome_tiff(p) if where == "tiff" else read_ome_zarr(p)


# ---------------------------------------------------------------------- metadata
MM = {
    "Summary": {"Prefix": "run_1", "PixelSize_um": 0.108, "Channels": 2, "ChNames": ["DAPI", "GFP"],
                "Comment": "µ-manager ✓"},
    "Camera": "HamamatsuHam_DCAM", "Exposure-ms": np.float64(12.5), "Binning": np.int64(1),
}


@pytest.mark.parametrize("kind", ["tiff", "zarr"])
def test_metadata_axes_dtype_physical_sizes(tmp_path, kind):
    data = (np.arange(2 * 2 * 3 * H * W) % 4096).astype(np.uint16).reshape(2, 2, 3, H, W)
    sizes = {"X": 0.108, "Y": 0.108, "Z": 0.5, "T": 2.0}
    p = _write(kind, tmp_path, data, "zstd", axes="TCZYX", metadata=MM, physical_sizes=sizes)
    out, meta = _read(kind, p)
    np.testing.assert_array_equal(out, data)
    assert meta["axes"] == "TCZYX"
    assert meta["physical_sizes"] == pytest.approx(sizes)
    assert meta["micromanager"] == json.loads(json.dumps(MM, default=lambda o: o.item()))
    assert meta["micromanager"]["Summary"]["Comment"] == "µ-manager ✓"
    if kind == "tiff":
        with tifffile.TiffFile(p) as tif:  # what any OME reader sees
            assert tif.series[0].axes == "TCZYX" and tif.series[0].shape == data.shape
            pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
            assert pixels["PhysicalSizeZ"] == pytest.approx(0.5)
            assert pixels["TimeIncrement"] == pytest.approx(2.0)
    else:
        attrs = json.loads((p / "zarr.json").read_text())["attributes"]
        ms = attrs["ome"]["multiscales"][0]
        assert attrs["ome"]["version"] == "0.5"
        assert [a["type"] for a in ms["axes"]] == ["time", "channel", "space", "space", "space"]
        assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.0, 1.0, 0.5, 0.108, 0.108]
        arr = zarr.open_array(str(p / "0"), mode="r")
        assert arr.metadata.dimension_names == ("t", "c", "z", "y", "x")
        yaozarrs = pytest.importorskip("yaozarrs")
        yaozarrs.validate_zarr_store(str(p))  # metadata and structure of OME-Zarr 0.5


def test_other_dtypes_and_3d_ome_tiff_axes(tmp_path):
    data = np.random.default_rng(3).normal(size=(2, H, W)).astype(np.float32)
    p = write_ome_tiff(tmp_path / "f.ome.tif", data, "zstd", axes="CYX")
    out, meta = read_ome_tiff(p)
    np.testing.assert_array_equal(out, data)
    assert out.dtype == np.float32 and meta["axes"] == "CYX"
    p = write_ome_zarr(tmp_path / "f.zarr", data, "blosc2", axes="ZYX")
    np.testing.assert_array_equal(read_ome_zarr(p)[0], data)


# ---------------------------------------------------------------------- fresh processes
def test_fresh_process_tifffile_imread(tmp_path, sensor):
    model, frames = sensor
    lossless = _image(np.uint16, 3)
    np.save(tmp_path / "lossless.npy", lossless)
    write_ome_tiff(tmp_path / "l.ome.tif", lossless, "jpegls")
    codec = get_codec("noisecal:seed=77", noise_model=model)
    write_ome_tiff(tmp_path / "n.ome.tif", frames, codec)
    np.save(tmp_path / "noisecal.npy", _per_plane(codec, frames))
    res = _fresh("""
        import json, numpy as np, tifffile
        import rawgate.codecs  # registers the TIFF decoder
        from rawgate.codecs import ModelNotFoundError
        from rawgate.codecs.containers import read_ome_tiff
        r = {"lossless": bool(np.array_equal(tifffile.imread("l.ome.tif"), np.load("lossless.npy")))}
        try:
            tifffile.imread("n.ome.tif")
            r["missing"] = "decoded without the model"
        except ModelNotFoundError as e:
            r["missing"] = str(e)
        a, meta = read_ome_tiff("n.ome.tif")  # registers the model stored in the file
        r["read_ome_tiff"] = bool(np.array_equal(a, np.load("noisecal.npy")))
        r["imread_after"] = bool(np.array_equal(tifffile.imread("n.ome.tif"), a))
        print(json.dumps(r))
    """, tmp_path)
    assert res["lossless"] and res["read_ome_tiff"] and res["imread_after"]
    assert model.sha256 in res["missing"] and "read_ome_tiff" in res["missing"]


def test_fresh_process_zarr_open_without_importing_rawgate(tmp_path, sensor):
    model, frames = sensor
    lossless = _image(np.uint8, 3)
    np.save(tmp_path / "lossless.npy", lossless)
    write_ome_zarr(tmp_path / "l.zarr", lossless, "jpegxl", axes="ZYX")
    codec = get_codec("noisecal:seed=5", noise_model=model)
    write_ome_zarr(tmp_path / "n.zarr", frames, codec)  # 40×56 model: carried in the config
    np.save(tmp_path / "noisecal.npy", _per_plane(codec, frames))
    res = _fresh("""
        import json, sys, numpy as np, zarr
        before = any(m.startswith("rawgate") for m in sys.modules)
        r = {"before": before}
        r["lossless"] = bool(np.array_equal(zarr.open("l.zarr/0", mode="r")[...], np.load("lossless.npy")))
        r["noisecal"] = bool(np.array_equal(zarr.open("n.zarr", mode="r")["0"][...], np.load("noisecal.npy")))
        r["loaded_by_zarr"] = "rawgate.codecs.containers" in sys.modules
        print(json.dumps(r))
    """, tmp_path)
    assert res == {"before": False, "lossless": True, "noisecal": True, "loaded_by_zarr": True}


def test_fresh_process_zarr_model_in_group_array(tmp_path, sensor):
    model, frames = sensor
    codec = get_codec("noisecal:seed=5", noise_model=model)
    write_ome_zarr(tmp_path / "n.zarr", frames, codec, model_in_config=False)
    np.save(tmp_path / "noisecal.npy", _per_plane(codec, frames))
    store_model(model, tmp_path / "store")
    res = _fresh("""
        import json, os, numpy as np, zarr
        r = {}
        try:
            zarr.open("n.zarr/0", mode="r")[...]
            r["missing"] = "decoded without the model"
        except Exception as e:
            r["missing"] = type(e).__name__ + ": " + str(e)
        os.environ["RAWGATE_MODEL_PATH"] = "store"  # a model store makes bare zarr work
        r["store"] = bool(np.array_equal(zarr.open("n.zarr/0", mode="r")[...], np.load("noisecal.npy")))
        print(json.dumps(r))
    """, tmp_path)
    assert res["missing"].startswith("ModelNotFoundError")
    assert model.sha256 in res["missing"] and MODEL_ARRAY in res["missing"]
    assert "read_ome_zarr" in res["missing"]
    assert res["store"]
    res = _fresh("""
        import json, numpy as np
        from rawgate.codecs.containers import read_ome_zarr
        a, meta = read_ome_zarr("n.zarr")
        print(json.dumps({"ok": bool(np.array_equal(a, np.load("noisecal.npy")))}))
    """, tmp_path)
    assert res["ok"]


# ---------------------------------------------------------------------- corruption
@pytest.mark.parametrize("spec", ["zstd", "noisecal"])
def test_corrupted_tiff_segment_is_refused(tmp_path, sensor, spec):
    model, frames = sensor
    p = write_ome_tiff(tmp_path / "c.ome.tif", frames, spec, noise_model=model)
    with tifffile.TiffFile(p) as tif:
        page = tif.pages[1]
        offset = page.dataoffsets[0] + page.databytecounts[0] // 2
    _flip_byte(p, offset)
    with pytest.raises(CorruptStreamError, match="CRC"):
        tifffile.imread(p)
    with pytest.raises(CorruptStreamError, match="CRC"):
        read_ome_tiff(p)
    assert tifffile.imread(p, key=0).shape == (H, W)  # the other planes still decode


def test_corrupted_tiff_model_is_refused(tmp_path, sensor):
    model, frames = sensor
    p = write_ome_tiff(tmp_path / "m.ome.tif", frames, "noisecal", noise_model=model)
    with tifffile.TiffFile(p) as tif:
        tag = tif.pages[0].tags[TIFF_TAG_MODEL]
        offset = tag.valueoffset + tag.count // 2
    _flip_byte(p, offset)
    with pytest.raises(ModelError):
        read_ome_tiff(p)


@pytest.mark.parametrize("spec", ["jpegls", "noisecal"])
def test_corrupted_zarr_chunk_is_refused(tmp_path, sensor, spec):
    model, frames = sensor
    p = write_ome_zarr(tmp_path / "c.zarr", frames, spec, noise_model=model)
    chunk = p / "0" / "c" / "2" / "0" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x5A
    chunk.write_bytes(bytes(raw))
    with pytest.raises(CorruptStreamError, match="CRC"):
        read_ome_zarr(p)
    arr = zarr.open_array(str(p / "0"), mode="r")
    with pytest.raises(CorruptStreamError):
        arr[2]
    assert arr[1].shape == (H, W)  # the other chunks are intact
    chunk.write_bytes(bytes(raw[:-7]))  # truncated
    with pytest.raises(CorruptStreamError, match="truncated"):
        arr[2]


# ---------------------------------------------------------------------- refusals
def test_bad_arguments_are_refused(tmp_path, sensor):
    model, frames = sensor
    with pytest.raises(ModelNotFoundError, match="noise_model"):
        write_ome_tiff(tmp_path / "a.tif", frames, "noisecal")
    with pytest.raises(ContainerError, match="chunks must span"):
        write_ome_zarr(tmp_path / "a.zarr", frames, "noisecal", noise_model=model,
                       chunks=(1, H // 2, W))
    with pytest.raises(ContainerError, match="noise model describes"):
        write_ome_tiff(tmp_path / "a.tif", frames[:, :, :-8], "noisecal", noise_model=model)
    with pytest.raises(ContainerError, match="end in 'YX'"):
        write_ome_tiff(tmp_path / "a.tif", frames, "zstd", axes="XYT")
    with pytest.raises(ContainerError, match="dimensions"):
        write_ome_tiff(tmp_path / "a.tif", frames, "zstd", axes="YX")
    with pytest.raises(ContainerError, match="OME-NGFF"):
        write_ome_zarr(tmp_path / "a.zarr", frames.reshape(2, 2, H, W), "zstd", axes="ZTYX")
    with pytest.raises(ContainerError, match="lack Z"):
        write_ome_zarr(tmp_path / "a.zarr", frames, "zstd", physical_sizes={"Z": 1.0})
    with pytest.raises(ContainerError, match="JSON"):
        write_ome_tiff(tmp_path / "a.tif", frames, "zstd", metadata={"x": object()})
    assert not list(tmp_path.glob("a.tif*"))


def test_failed_tiff_write_leaves_no_file(tmp_path):
    data = np.zeros((2, H, W), np.float32)  # JPEG-LS takes integers only: fails while writing
    with pytest.raises(CodecError):
        write_ome_tiff(tmp_path / "x.ome.tif", data, "jpegls")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------- the model stored once per archive
def test_model_stored_once_beside_many_files(tmp_path, sensor):
    """``embed_model=False``: files name the model by SHA-256 and a fresh process finds its maps in
    the archive's ``data/models/`` (one file for all copies); the copies shrink by the maps."""
    model, frames = sensor
    bag = tmp_path / "archive"
    models = bag / "data" / "models"
    mfile = C.write_model_file(model, models)
    assert mfile.name == f"{model.sha256}{C.MODEL_FILE_SUFFIX}"
    mtime = mfile.stat().st_mtime_ns
    assert C.write_model_file(model, models) == mfile and mfile.stat().st_mtime_ns == mtime  # kept
    spec = "noisecal:step=2,seed=7"
    (bag / "data" / "scope" / "day1").mkdir(parents=True)
    (bag / ".rawgate-staging").mkdir()
    embedded = write_ome_tiff(tmp_path / "embedded.ome.tif", frames, spec, noise_model=model)
    copies = [write_ome_tiff(bag / "data" / "scope" / "day1" / f"{k}.ome.tif", frames, spec, noise_model=model,
                             embed_model=False) for k in range(2)]
    staged = write_ome_tiff(bag / ".rawgate-staging" / "9.ome.tif", frames, spec, noise_model=model,
                            embed_model=False)
    with tifffile.TiffFile(copies[0]) as tif:
        assert TIFF_TAG_MODEL not in tif.pages[0].tags
    saved = embedded.stat().st_size - copies[0].stat().st_size
    assert abs(saved - mfile.stat().st_size) < 64, (saved, mfile.stat().st_size)
    got = _fresh(f"""
        import json, numpy as np
        from rawgate.codecs import read_ome_tiff
        ref = read_ome_tiff({str(embedded)!r})[0]
        out = {{p: bool(np.array_equal(read_ome_tiff(p)[0], ref)) for p in {[str(p) for p in (*copies, staged)]!r}}}
        print(json.dumps(out))
    """, tmp_path)
    assert got == {str(p): True for p in (*copies, staged)}

    # no model file: the error names what is missing, in a fresh process and with tifffile alone
    mfile.rename(tmp_path / "aside.rgmaps")
    got = _fresh(f"""
        import json, tifffile
        from rawgate.codecs import read_ome_tiff
        out = {{}}
        for name, fn in (("rawgate", read_ome_tiff), ("tifffile", tifffile.imread)):
            try:
                fn({str(copies[0])!r}); out[name] = "read"
            except Exception as e:
                out[name] = type(e).__name__ + ": " + str(e)
        print(json.dumps(out))
    """, tmp_path)
    assert got["rawgate"].startswith("ModelNotFoundError") and f"models/{mfile.name}" in got["rawgate"], got
    assert "ModelNotFoundError" in got["tifffile"] and C.MODEL_FILE_SUFFIX in got["tifffile"], got

    # a damaged model file is refused (CRC), and write_model_file replaces it with the right bytes
    (tmp_path / "aside.rgmaps").rename(mfile)
    good = mfile.read_bytes()
    _flip_byte(mfile, len(good) // 2)
    with fresh_model_lookup(), pytest.raises(ModelError, match="corrupted"):
        read_ome_tiff(copies[0])
    assert C.write_model_file(model, models) == mfile and mfile.read_bytes() == good
    with fresh_model_lookup():
        assert np.array_equal(read_ome_tiff(copies[0])[0], read_ome_tiff(embedded)[0])
