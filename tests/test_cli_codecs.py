"""`rawgate compress`, `decompress` and `codecs` as a user runs them (real subprocesses, files)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile

from rawgate.calibration.instruments._protocol import CameraIdentity
from rawgate.calibration.model import NoiseModel
from rawgate.calibration.simulation import make_sensor_truth, render_frames

RAWGATE = [sys.executable, "-m", "rawgate.daemon.cli"]


def run(*args, env=None, timeout=300):
    return subprocess.run([*RAWGATE, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clicodecs")
    t = make_sensor_truth((96, 80), seed=5)
    model = NoiseModel(
        identity=CameraIdentity("sim", "CLI", 16, 1, (0, 0, 80, 96)),
        offset_adu=t.offset_adu, gain_e_per_adu=t.gain_e_per_adu, read_noise_e=t.read_noise_e,
        dark_current_e_per_s=None, bad_pixels=(t.defects > 0).astype(np.uint8),
    )
    model.save(tmp / "cal.rgnoise")
    raw = render_frames(t, 30.0, 10.0, 3, np.random.default_rng(2))
    tifffile.imwrite(tmp / "raw.tif", raw, metadata={"axes": "TYX"})
    return tmp, raw, model


def test_lossless_roundtrip_through_files(data):
    tmp, raw, _ = data
    r = run("compress", tmp / "raw.tif", tmp / "z.rgc", "--codec", "zstd:level=5")
    assert r.returncode == 0, r.stderr
    assert "bit-exact" in r.stdout and "yes" in r.stdout
    r = run("decompress", tmp / "z.rgc", tmp / "z.tif")
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(tifffile.imread(tmp / "z.tif"), raw)


def test_plain_multipage_tiff_goes_into_an_ome_tiff(data):
    """A TIFF without axes metadata (tifffile calls its pages 'I'/'Q'/'S') takes the default
    axes for its dimensions instead of being refused."""
    tmp, raw, _ = data
    tifffile.imwrite(tmp / "plain.tif", raw)  # no axes metadata
    with tifffile.TiffFile(tmp / "plain.tif") as tf:
        assert not set(tf.series[0].axes) <= set("TCZYX")  # the case this test is about
    r = run("compress", tmp / "plain.tif", tmp / "plain.ome.tif", "--codec", "zstd")
    assert r.returncode == 0, r.stderr
    with tifffile.TiffFile(tmp / "plain.ome.tif") as tf:
        assert tf.series[0].axes == "TYX"
    from rawgate.codecs.containers import read_ome_tiff

    arr, _ = read_ome_tiff(tmp / "plain.ome.tif")
    np.testing.assert_array_equal(np.asarray(arr), raw)


def test_noisecal_reports_bias_and_snr_cost(data):
    tmp, raw, model = data
    r = run("compress", tmp / "raw.tif", tmp / "n.rgc", "--codec", "noisecal:step=2",
            "--calibration", tmp / "cal.rgnoise")
    assert r.returncode == 0, r.stderr
    assert "SNR cost" in r.stdout and "σ" in r.stdout
    # the stream carries its maps: decoding needs nothing else
    r = run("decompress", tmp / "n.rgc", tmp / "n.npy")
    assert r.returncode == 0, r.stderr
    dec = np.load(tmp / "n.npy")
    assert dec.dtype == raw.dtype and dec.shape == raw.shape
    sigma = np.sqrt(np.maximum((raw - model.offset_adu) * model.gain_e_per_adu, 0)
                    + model.read_noise_e**2) / model.gain_e_per_adu
    assert np.sqrt(np.mean(((dec - raw.astype(float)) / sigma) ** 2)) < 0.7  # ≈ 2/√12 = 0.577


def test_bad_inputs_exit_2_with_a_reason(data, tmp_path):
    tmp, _, _ = data
    r = run("compress", tmp / "raw.tif", tmp_path / "x.rgc", "--codec", "jpg")
    assert r.returncode == 2 and "unknown codec 'jpg'" in r.stderr
    r = run("compress", tmp / "raw.tif", tmp_path / "x.rgc", "--codec", "jpeg:quality=500")
    assert r.returncode == 2 and "quality" in r.stderr
    r = run("compress", tmp / "raw.tif", tmp_path / "x.rgc", "--codec", "noisecal")
    assert r.returncode == 2 and "noise model" in r.stderr
    r = run("compress", tmp_path / "missing.tif", tmp_path / "x.rgc", "--codec", "zstd")
    assert r.returncode == 2 and "missing.tif" in r.stderr
    assert not (tmp_path / "x.rgc").exists()
    # a corrupted stream is refused, nothing is written
    run("compress", tmp / "raw.tif", tmp_path / "ok.rgc", "--codec", "zstd")
    blob = bytearray((tmp_path / "ok.rgc").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (tmp_path / "bad.rgc").write_bytes(bytes(blob))
    r = run("decompress", tmp_path / "bad.rgc", tmp_path / "bad.tif")
    assert r.returncode == 2 and "CRC" in r.stderr
    assert not (tmp_path / "bad.tif").exists()
    (tmp_path / "short.rgc").write_bytes(bytes(blob[:100]))
    r = run("decompress", tmp_path / "short.rgc", tmp_path / "short.tif")
    assert r.returncode == 2 and "truncated" in r.stderr


def test_model_not_embedded_needs_the_calibration(data, tmp_path):
    tmp, raw, _ = data
    env = {"XDG_DATA_HOME": str(tmp_path / "store"), "PATH": "/usr/bin:/bin"}
    r = run("compress", tmp / "raw.tif", tmp_path / "n.rgc", "--codec", "noisecal:embed_model=false",
            "--calibration", tmp / "cal.rgnoise", env=env)
    assert r.returncode == 0, r.stderr
    r = run("decompress", tmp_path / "n.rgc", tmp_path / "n.npy",
            env={**env, "XDG_DATA_HOME": str(tmp_path / "elsewhere")})
    assert r.returncode == 2 and "needs noise model" in r.stderr
    r = run("decompress", tmp_path / "n.rgc", tmp_path / "n.npy", env=env)  # found in the store
    assert r.returncode == 0, r.stderr
    r = run("decompress", tmp_path / "n.rgc", tmp_path / "m.npy", "--calibration",
            tmp / "cal.rgnoise", env={**env, "XDG_DATA_HOME": str(tmp_path / "elsewhere")})
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "n.npy"), np.load(tmp_path / "m.npy"))


def test_codecs_lists_every_codec_with_options():
    r = run("codecs")
    assert r.returncode == 0, r.stderr
    for cid in ("zstd", "blosc2", "deflate", "jpegxl", "jpegls", "lerc", "eightbit", "jpeg",
                "jpeg2k", "jpegxr", "noisecal"):
        assert cid in r.stdout
    assert "step=2.0" in r.stdout and "ratio=None" in r.stdout


def test_compress_says_what_the_embedded_model_costs(data, tmp_path):
    """One small frame: the maps the stream carries outweigh the coded data; the report says how
    much, the ratio without them, the codec's own throughput, and how to avoid it."""
    import re

    tmp, raw, _ = data
    tifffile.imwrite(tmp_path / "one.tif", raw[0])
    env = {"XDG_DATA_HOME": str(tmp_path / "store"), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    r = run("compress", tmp_path / "one.tif", tmp_path / "e.rgc", "--codec", "noisecal:step=2",
            "--calibration", tmp / "cal.rgnoise", env=env)
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    m = re.search(r"compression ratio │ ([\d.]+)", out)
    w = re.search(r"noise model \(embedded\) │ [\d.]+ MB of the output: ratio ([\d.]+) without it", out)
    assert m and w, out
    assert float(w.group(1)) > 2 * float(m.group(1))
    assert "codec encode" in out and "MB/s in memory" in out and "embed_model=false" in out
    assert "preset=small" in out and "tile_rows=" in out  # every option in the label
    r = run("compress", tmp_path / "one.tif", tmp_path / "n.rgc", "--codec", "noisecal:step=2,embed_model=false",
            "--calibration", tmp / "cal.rgnoise", env=env)
    out = " ".join(r.stdout.split())
    assert r.returncode == 0 and "(not embedded)" in out and "embed_model=false`" not in out, out
    assert (tmp_path / "n.rgc").stat().st_size < (tmp_path / "e.rgc").stat().st_size / 2


def test_dash_c_means_config_everywhere(data, tmp_path):
    """`-c` is `--config` in every command; the codec is `--codec` alone (no `-c` that means a
    codec in one command and a config file in the next)."""
    tmp, _, _ = data
    for cmd in (["compress", tmp / "raw.tif", tmp_path / "x.rgc"], ["check", tmp / "raw.tif"]):
        r = run(*cmd, "-c", "zstd")
        assert r.returncode == 2 and "No such option" in r.stderr, (cmd, r.stderr)
        h = run(cmd[0], "--help", env={**__import__("os").environ, "COLUMNS": "200", "NO_COLOR": "1"})
        assert "--codec" in h.stdout and " -c " not in h.stdout, h.stdout


def test_inputs_that_used_to_end_in_a_traceback(data, tmp_path):
    """float32 through a lossy codec, --calibration with a codec that needs none, a 5-D array
    back to .tif, and an ε check that finds no objects: each gives its figures, no traceback."""
    tmp, raw, _ = data
    f32 = tmp_path / "f.tif"
    tifffile.imwrite(f32, np.random.default_rng(0).random((64, 64)).astype(np.float32) * 10)
    r = run("compress", f32, tmp_path / "f.rgc", "--codec", "lerc:max_error=2")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "PSNR" in r.stdout and "against the input's range" in r.stdout
    r = run("compress", tmp / "raw.tif", tmp_path / "z.rgc", "--codec", "zstd", "--calibration", tmp / "cal.rgnoise")
    assert r.returncode == 0 and "bit-exact" in r.stdout, r.stderr
    five = np.arange(2 * 2 * 3 * 8 * 8, dtype=np.uint16).reshape(2, 2, 3, 8, 8)
    np.save(tmp_path / "five.npy", five)
    assert run("compress", tmp_path / "five.npy", tmp_path / "five.rgc", "--codec", "zstd").returncode == 0
    r = run("decompress", tmp_path / "five.rgc", tmp_path / "five.tif")
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "five.tif"), five)
    noise = tmp_path / "noise.tif"  # no objects for a segmenter: only the filter ε, and a report
    tifffile.imwrite(noise, raw[0])
    r = run("check", noise, "--codec", "zstd", "--calibration", tmp / "cal.rgnoise", "--report", tmp_path / "rep")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert (tmp_path / "rep" / "report.html").is_file()
