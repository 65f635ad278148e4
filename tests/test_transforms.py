"""ε through a processing pipeline (issue 31, slice 3): the paper's OPT case. Projections of
scikit-image's Shepp–Logan phantom go through the simulated camera; replicas are drawn on the raw
projections; raw, replicas and decoded copies are reconstructed by filtered back-projection
before the segmenter runs. noisecal passes after reconstruction, 8-bit (fixed range) fails."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from rawgate.calibration.simulation import make_sensor_truth, render_frames, truth_noise_model
from rawgate.daemon.cli import app
from rawgate.gate.check import GateConfig, prepare_reference
from rawgate.gate.evaluate import score_codec
from rawgate.gate.segmenter import train_pixel_classifier
from rawgate.gate.transforms import FilteredBackProjection, TransformError, load_transform


@pytest.fixture(scope="module")
def opt():
    from skimage.data import shepp_logan_phantom
    from skimage.transform import radon, resize

    phantom = resize(shepp_logan_phantom(), (128, 128), anti_aliasing=True)
    theta = np.linspace(0.0, 180.0, 120, endpoint=False)
    sinogram = radon(phantom, theta=theta, circle=True).T  # one projection per row
    truth = make_sensor_truth(sinogram.shape, seed=4)
    model = truth_noise_model(truth)
    frames = render_frames(truth, sinogram / sinogram.max() * 60.0, 10.0, 2, np.random.default_rng(0))
    fbp = FilteredBackProjection()
    mask = phantom > 0.25  # the phantom's ellipses: the objects the lab measures
    labels = np.zeros(mask.shape, np.uint8)
    rng = np.random.default_rng(0)
    for m, v in ((ndimage.binary_erosion(mask, iterations=2), 2), (~ndimage.binary_dilation(mask, iterations=2), 1)):
        idx = np.flatnonzero(m.ravel())
        labels.ravel()[rng.choice(idx, min(400, idx.size), replace=False)] = v
    seg = train_pixel_classifier(fbp(frames[1]), labels, n_trees=10, min_object_px=5)
    return {"raw": frames[0], "model": model, "seg": seg, "fbp": fbp, "phantom": phantom}


def test_fbp_reconstructs_the_phantom(opt):
    rec = opt["fbp"](opt["raw"].astype(np.float64) - opt["model"].offset_adu)
    assert rec.shape == (128, 128) and rec.dtype == np.float32
    inside = opt["phantom"] > 0
    assert np.corrcoef(rec[inside], opt["phantom"][inside])[0, 1] > 0.9
    stack = opt["fbp"](np.stack([opt["raw"], opt["raw"]]))
    assert stack.shape == (2, 128, 128)
    with pytest.raises(TransformError, match="sinogram"):
        opt["fbp"](np.zeros(5))


def test_noisecal_passes_and_eight_bit_fails_after_reconstruction(opt):
    ref = prepare_reference(opt["raw"], opt["model"], opt["seg"], GateConfig(n_replicas=10, transform=opt["fbp"]))
    assert sum(m.n_objects for m in ref.measurements["raw"]) >= 3  # measured on the reconstruction
    ok = score_codec(ref, "noisecal:step=2", name="opt")
    bad = score_codec(ref, "eightbit:range=fixed", name="opt")
    assert ok.passed and ok.compression_ratio > 4, (ok.failing, ok.compression_ratio)
    assert not bad.passed and bad.failing, bad.failing
    assert ok.seg_f1 is not None  # the downstream checks segment reconstructions too
    with pytest.raises(ValueError, match="whole frames"):
        GateConfig(transform=opt["fbp"], tiles=2)


def test_transforms_by_name_and_the_cli(opt, tmp_path):
    t = load_transform("fbp:filter_name=hann,span_deg=180")
    assert isinstance(t, FilteredBackProjection) and t.filter_name == "hann"
    with pytest.raises(TransformError, match="unknown transform"):
        load_transform("no-such-transform")
    with pytest.raises(TransformError, match="unknown option"):
        load_transform("fbp:angles=3")
    np.save(tmp_path / "sino.npy", opt["raw"])
    cal = opt["model"].save(tmp_path / "cam.rgnoise")
    seg = opt["seg"].save(tmp_path / "seg.skops")
    base = ["check", str(tmp_path / "sino.npy"), "--calibration", str(cal), "--segmenter", str(seg),
            "--transform", "fbp"]
    r = CliRunner().invoke(app, [*base, "--codec", "noisecal:step=2", "--report", str(tmp_path / "ok")])
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "ok" / "epsilon.json").read_text())["meta"]
    assert meta["transform_spec"] == "fbp" and "FilteredBackProjection" in meta["transform"]
    r = CliRunner().invoke(app, [*base, "--codec", "eightbit:range=fixed", "--report", str(tmp_path / "bad")])
    assert r.exit_code == 1, r.output
