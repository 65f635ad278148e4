"""`rawgate calibration estimate` as a user runs it: real subprocesses and real TIFF files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage
from typer.testing import CliRunner

from rawgate.calibration.model import NoiseModel
from rawgate.daemon.cli import app
from rawgate.calibration.simulation import make_sensor_truth, render_frames

RAWGATE = [sys.executable, "-m", "rawgate.daemon.cli"]


def run(*args, timeout=120):
    return subprocess.run([*RAWGATE, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def camera():
    """A simulated sCMOS camera with data-sheet fixed-pattern noise, a blob scene, its truth."""
    truth = make_sensor_truth((128, 128), seed=21, gain_spread=0.002, prnu=0.002, noisy_fraction=0.005)
    rng = np.random.default_rng(21)
    img = np.zeros(truth.shape)
    img[rng.integers(0, 128, 15), rng.integers(0, 128, 15)] = rng.uniform(0.3, 1.0, 15)
    flux = ndimage.gaussian_filter(img, 6.0)
    flux *= 200.0 / flux.max()
    frames = render_frames(truth, flux, 10.0, 12, rng)
    k_true = float(np.mean(1 / truth.gain_e_per_adu**2) / np.mean(1 / truth.gain_e_per_adu))
    return frames, 1.0 / k_true, float(np.median(truth.offset_adu))


def write_tiff(path: Path, data: np.ndarray) -> Path:
    tifffile.imwrite(path, data, photometric="minisblack")
    return path


def test_single_image_writes_an_estimated_model_beside_it(camera, tmp_path):
    frames, gain_true, _ = camera
    image = write_tiff(tmp_path / "cells.ome.tif", frames[0])
    r = run("calibration", "estimate", image)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "cells.estimated.rgnoise"
    assert out.is_file() and str(out) in r.stdout.replace("\n", "")
    for word in ("ESTIMATED", "not calibrated", "gain", "read noise", "offset", "fitted law", "bins used"):
        assert word in r.stdout, word
    m = NoiseModel.load(out)
    assert m.estimated and m.source.startswith("estimated: single-image")
    assert m.shape == (128, 128) and m.identity.name == "unknown (estimated)"
    assert float(m.gain_e_per_adu[0, 0]) == pytest.approx(gain_true, rel=0.15)
    # `calibration show` says it is an estimate
    shown = run("calibration", "show", out)
    assert shown.returncode == 0 and "ESTIMATED" in shown.stdout


def test_time_series_with_offset_and_out(camera, tmp_path):
    frames, gain_true, offset = camera
    series = write_tiff(tmp_path / "series.tif", frames)
    out = tmp_path / "models" / "cam.rgnoise"
    out.parent.mkdir()
    r = run("calibration", "estimate", series, "--time-series", "--offset", offset, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "temporal frame pairs" in r.stdout and "(given)" in r.stdout
    m = NoiseModel.load(out)
    assert m.source.startswith("estimated: frame-pairs")
    assert float(m.gain_e_per_adu[0, 0]) == pytest.approx(gain_true, rel=0.03)
    assert float(m.offset_adu[0, 0]) == pytest.approx(offset)
    assert m.fit_quality["n_bins"] >= 5 and m.fit_quality["offset_source"] == "given"


def test_a_stack_is_pooled_unless_time_series(camera, tmp_path):
    frames, gain_true, _ = camera
    stack = write_tiff(tmp_path / "stack.tif", frames[:3])
    r = run("calibration", "estimate", stack, "--single-image", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    m = NoiseModel.load(tmp_path / "stack.estimated.rgnoise")
    assert m.source.startswith("estimated: single-image") and m.shape == (128, 128)
    assert float(m.gain_e_per_adu[0, 0]) == pytest.approx(gain_true, rel=0.15)


def test_bad_input_is_a_clear_error_and_exit_2(camera, tmp_path):
    """In-process (CliRunner) to keep the many refusals fast; the flows above use subprocesses."""
    frames, _, _ = camera
    runner = CliRunner()

    def estimate(*args):
        r = runner.invoke(app, ["calibration", "estimate", *map(str, args)])
        assert r.exit_code == 2, (r.exit_code, r.output)
        return r.stderr

    assert "no such file" in estimate(tmp_path / "missing.tif")
    assert "is not a file" in estimate(tmp_path)

    (tmp_path / "notes.tif").write_text("not an image")
    assert "not a readable TIFF" in estimate(tmp_path / "notes.tif")

    flat = write_tiff(tmp_path / "flat.tif", np.full((64, 64), 100, np.uint16))
    assert "no intensity range" in estimate(flat)
    assert not (tmp_path / "flat.estimated.rgnoise").exists()

    assert "integer" in estimate(write_tiff(tmp_path / "float.tif", frames[0].astype(np.float32)))

    single = write_tiff(tmp_path / "one.tif", frames[0])
    assert "frames × y × x" in estimate(single, "--time-series")

    five_d = write_tiff(tmp_path / "5d.tif", np.zeros((2, 2, 2, 32, 32), np.uint16))
    assert "5-D data" in estimate(five_d)

    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    assert "colour" in estimate(rgb)


def test_datasheet_values_when_the_data_cannot_tell(tmp_path):
    """A nearly blank field: the estimator refuses and points at the datasheet options;
    --gain/--read-noise/--offset then build a global model marked as datasheet values, and
    `rawgate check` runs with it."""
    rng = np.random.default_rng(3)
    img = (rng.poisson(np.full((96, 96), 30.0)) + 100).astype(np.uint16)  # a nearly blank field
    image = write_tiff(tmp_path / "nuclei.tif", img)
    r = run("calibration", "estimate", image)
    assert r.returncode == 2 and "--gain and --read-noise" in " ".join(r.stderr.split()), r.stderr
    assert not (tmp_path / "nuclei.estimated.rgnoise").exists()
    r = run("calibration", "estimate", image, "--gain", "0.5")
    assert r.returncode == 2 and "both --gain" in r.stdout + r.stderr
    r = run("calibration", "estimate", image, "--gain", "0.46", "--read-noise", "1.6", "--offset", "100",
            "--bit-depth", "12", "--out", tmp_path / "ds.rgnoise")
    assert r.returncode == 0, r.stderr
    assert "DATASHEET" in r.stdout
    m = NoiseModel.load(tmp_path / "ds.rgnoise")
    assert m.estimated and m.source.startswith("datasheet: gain 0.46 e-/ADU, read noise 1.6 e- rms, offset 100")
    assert m.identity.bit_depth == 12 and m.shape == (96, 96)
    assert float(m.gain_e_per_adu.mean()) == pytest.approx(0.46) and float(m.offset_adu.max()) == 100.0
    r = run("check", image, "--codec", "noisecal:step=2", "--calibration", tmp_path / "ds.rgnoise",
            "--report", tmp_path / "rep")
    assert r.returncode in (0, 1) and (tmp_path / "rep" / "epsilon.json").is_file(), r.stderr
