"""The ε gate: feature bank, segmenter (training, inference, skops files, plug-ins), ε, verdict,
spot check and the ``rawgate check`` / ``rawgate segmenter`` commands."""

from __future__ import annotations

import json

import pickle
import sys
import textwrap

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from rawgate.calibration.replicas import replicas
from rawgate.calibration.simulation import make_sensor_truth, render_frames, truth_noise_model
from rawgate.daemon.cli import app
from rawgate.codecs import get_codec
from rawgate.gate import segmenter as segmod
from rawgate.gate._filters import gaussian_filter1d
from rawgate.gate.check import GateConfig, GateError, spot_check
from rawgate.gate.epsilon import EpsilonStat, filter_epsilon, noise_epsilon, object_epsilon, whole_epsilon
from rawgate.gate.features import FeatureSpec, compute_features, feature_names, noise_power
from rawgate.gate.segmenter import (
    PixelClassifier,
    SegmenterError,
    load_segmenter,
    train_pixel_classifier,
)
from rawgate.gate.verdict import ParameterRule, VerdictPolicy, judge

# ----------------------------------------------------------------------------- fixtures
SIZE = 192


def _discs_flux(shape, seed, n=14, r=(6.0, 10.0), bg_e=40.0, fg_e=600.0):
    """Bright discs on a dim background [photons/ms at 10 ms, QE 0.8] and their truth mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, bool)
    for _ in range(n):
        cy, cx = rng.uniform(12, shape[0] - 12), rng.uniform(12, shape[1] - 12)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(*r) ** 2
    flux = np.where(mask, fg_e, bg_e) / 8.0
    return ndimage.gaussian_filter(flux, 1.2), mask


@pytest.fixture(scope="module")
def world():
    truth = make_sensor_truth((SIZE, SIZE), seed=3)
    model = truth_noise_model(truth)
    flux, mask = _discs_flux((SIZE, SIZE), seed=4)
    train_img = render_frames(truth, flux, 10.0, 1, np.random.default_rng(10))[0]
    rng = np.random.default_rng(0)
    lab = np.zeros(train_img.shape, np.uint8)
    inner = ndimage.binary_erosion(mask, iterations=2)
    outer = ~ndimage.binary_dilation(mask, iterations=2)
    for m, v in ((inner, 2), (outer, 1)):
        idx = np.flatnonzero(m.ravel())
        lab.ravel()[rng.choice(idx, 400, replace=False)] = v
    seg = train_pixel_classifier(train_img, lab, n_trees=20, features=FeatureSpec(scales=(1.0, 2.0)), seed=1)
    raw = render_frames(truth, flux, 10.0, 1, np.random.default_rng(11))[0]
    return {"truth": truth, "model": model, "mask": mask, "train": train_img, "labels": lab, "seg": seg, "raw": raw}


# ----------------------------------------------------------------------------- features
@pytest.mark.parametrize("shape,axis", [((64, 80), 0), ((64, 80), 1), ((6, 20, 24), 0), ((6, 20, 24), 1), ((6, 20, 24), 2)])
@pytest.mark.parametrize("sigma,order", [(0.7, 0), (1.6, 1), (3.5, 2), (0.3, 0)])
def test_gaussian_filter1d_matches_scipy(shape, axis, sigma, order):
    a = np.random.default_rng(1).random(shape).astype(np.float32) * 1000
    ours = gaussian_filter1d(a, sigma, axis, order)
    ref = ndimage.gaussian_filter1d(a.astype(np.float64), sigma, axis=axis, order=order, mode="reflect")
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-4 * np.abs(ref).max() + 1e-3)


def test_features_match_scipy_and_skimage():
    a = np.random.default_rng(2).random((48, 56)).astype(np.float32) * 500
    spec = FeatureSpec(scales=(1.6,))
    f = compute_features(a, spec)
    names = feature_names(spec, 2)
    assert f.shape == (len(names), 48, 56) and names[0] == "GS σ=1.6"
    get = dict(zip(names, f))
    a64 = a.astype(np.float64)
    tol = dict(rtol=0, atol=1e-3 * 500)
    np.testing.assert_allclose(get["GS σ=1.6"], ndimage.gaussian_filter(a64, 1.6), **tol)
    np.testing.assert_allclose(get["LoG σ=1.6"], ndimage.gaussian_laplace(a64, 1.6), **tol)
    np.testing.assert_allclose(get["GGM σ=1.6"], ndimage.gaussian_gradient_magnitude(a64, 1.6), **tol)
    np.testing.assert_allclose(
        get["DoG σ=1.6"], ndimage.gaussian_filter(a64, 1.6) - ndimage.gaussian_filter(a64, 0.66 * 1.6), **tol
    )
    hxx = ndimage.gaussian_filter(a64, 1.6, order=(0, 2))
    hyy = ndimage.gaussian_filter(a64, 1.6, order=(2, 0))
    hxy = ndimage.gaussian_filter(a64, 1.6, order=(1, 1))
    ev = np.linalg.eigvalsh(np.stack([np.stack([hyy, hxy], -1), np.stack([hxy, hxx], -1)], -2))
    np.testing.assert_allclose(get["HoGE0 σ=1.6"], ev[..., 1], **tol)
    np.testing.assert_allclose(get["HoGE1 σ=1.6"], ev[..., 0], **tol)
    assert np.all(get["STE0 σ=1.6"] >= get["STE1 σ=1.6"] - 1e-3) and np.all(get["STE1 σ=1.6"] >= -1e-2)


def test_3d_eigenvalues_match_numpy():
    a = np.random.default_rng(3).random((10, 18, 20)).astype(np.float32) * 100
    f = compute_features(a, FeatureSpec(scales=(1.0,), kinds=("HoGE",)))
    d = {}
    for i in range(3):
        for j in range(i, 3):
            order = [0, 0, 0]
            order[i] += 1
            order[j] += 1
            d[i, j] = ndimage.gaussian_filter(a.astype(np.float64), 1.0, order=order)
    m = np.empty(a.shape + (3, 3))
    for (i, j), v in d.items():
        m[..., i, j] = m[..., j, i] = v
    ref = np.linalg.eigvalsh(m)[..., ::-1]
    np.testing.assert_allclose(np.moveaxis(f, 0, -1), ref, atol=1e-2 * np.abs(ref).max())


def test_feature_spec_validation_and_config():
    with pytest.raises(ValueError, match="scale"):
        FeatureSpec(scales=(0.0,))
    with pytest.raises(ValueError, match="unknown feature"):
        FeatureSpec(kinds=("GS", "Sobel"))
    s = FeatureSpec(scales=(2, 1), kinds=("LoG", "GS"))
    assert s.kinds == ("GS", "LoG") and FeatureSpec.from_config(s.get_config()) == s
    with pytest.raises(ValueError, match="2-D or 3-D"):
        compute_features(np.zeros(5))


# ----------------------------------------------------------------------------- segmenter
def test_forest_inference_equals_sklearn(world):
    seg = world["seg"]
    p = seg.probability(world["raw"])
    feats = compute_features(world["raw"], seg.features).reshape(seg.features.n_features(2), -1).T
    ref = seg.forest.predict_proba(feats)[:, list(seg.forest.classes_).index(1)]
    np.testing.assert_allclose(p.ravel(), ref, atol=1e-6)


def test_segmenter_finds_the_discs(world):
    labels = world["seg"](world["raw"])
    truth_labels, n_true = ndimage.label(world["mask"])
    inter = np.logical_and(labels > 0, world["mask"]).sum()
    union = np.logical_or(labels > 0, world["mask"]).sum()
    assert inter / union > 0.8
    assert abs(int(labels.max()) - n_true) <= 2


def test_slabs_equal_whole_image(world, monkeypatch):
    seg = world["seg"]
    whole = seg.probability(world["raw"])
    monkeypatch.setattr(segmod, "SLAB_VOXELS", SIZE * 17)  # 17-row slabs with halos
    np.testing.assert_allclose(seg.probability(world["raw"]), whole, atol=1e-6)


def test_save_load_roundtrip(world, tmp_path):
    path = world["seg"].save(tmp_path / "m.skops")
    m2 = load_segmenter(path)
    assert isinstance(m2, PixelClassifier)
    np.testing.assert_array_equal(m2(world["raw"]), world["seg"](world["raw"]))
    assert m2.trained_on["labelled_px"] == {"1": 400, "2": 400}


def test_training_refuses_bad_labels(world):
    img = world["train"]
    with pytest.raises(SegmenterError, match="shape"):
        train_pixel_classifier(img, world["labels"][:-1])
    with pytest.raises(SegmenterError, match="foreground"):
        train_pixel_classifier(img, np.where(world["labels"] == 2, 0, world["labels"]))
    with pytest.raises(SegmenterError, match="integer"):
        train_pixel_classifier(img, world["labels"].astype(float))


def test_model_refuses_mismatched_frames(world):
    seg = world["seg"]
    with pytest.raises(SegmenterError, match="trained on 2-D"):
        seg(np.stack([world["raw"]] * 3))
    with pytest.raises(SegmenterError, match="outside what the segmenter"):
        seg(world["raw"].astype(np.int64) * 1000)


def test_load_refuses_wrong_or_tampered_files(world, tmp_path):
    good = world["seg"].save(tmp_path / "good.skops")
    pk = tmp_path / "model.pkl"
    pk.write_bytes(pickle.dumps(world["seg"].forest))
    with pytest.raises(SegmenterError, match="pickles are never loaded"):
        PixelClassifier.load(pk)
    with pytest.raises(SegmenterError, match="no such segmenter"):
        PixelClassifier.load(tmp_path / "missing.skops")
    # a zip of another kind (a noise model file)
    nm = world["model"].save(tmp_path / "camera.rgnoise")
    with pytest.raises(SegmenterError, match="damaged or not a skops|not a rawgate segmenter"):
        PixelClassifier.load(nm)
    # damaged bytes inside the archive
    data = bytearray(good.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(64)
    bad = tmp_path / "tampered.skops"
    bad.write_bytes(bytes(data))
    with pytest.raises(SegmenterError, match="damaged|tampered"):
        PixelClassifier.load(bad)
    # a well-formed skops file carrying a type that could run code
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    evil = tmp_path / "evil.skops"
    sio.dump({"format": "rawgate.pixel-classifier", "forest": FunctionTransformer(func=print)}, evil)
    with pytest.raises(SegmenterError, match="could run code"):
        PixelClassifier.load(evil)
    # a skops file that is not ours
    other = tmp_path / "other.skops"
    sio.dump({"format": "someone-else", "x": 1}, other)
    with pytest.raises(SegmenterError, match="not a rawgate segmenter"):
        PixelClassifier.load(other)


def test_entry_point_plugin(tmp_path, monkeypatch):
    """A plug-in registered in the ``rawgate.segmenters`` group through real package metadata."""
    (tmp_path / "labplug.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            from scipy import ndimage

            class Threshold:
                def __call__(self, image):
                    return ndimage.label(image > np.percentile(image, 90))[0]

            def wrong_shape(image):
                return np.zeros(3, int)
            """
        )
    )
    dist = tmp_path / "labplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: labplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[rawgate.segmenters]\nthreshold = labplug:Threshold\nbroken = labplug:wrong_shape\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    img = np.zeros((40, 40), np.uint16)
    img[10:20, 10:20] = 500
    seg = load_segmenter("threshold")
    assert seg(img).max() == 1 and seg(img).dtype == np.int32
    with pytest.raises(SegmenterError, match="returned shape"):
        load_segmenter("ep:broken")(img)
    with pytest.raises(SegmenterError, match="no entry point"):
        load_segmenter("nonexistent")
    monkeypatch.delitem(sys.modules, "labplug", raising=False)


# ----------------------------------------------------------------------------- ε and verdict
def test_epsilon_formula_and_null():
    """ε = (χ_raw − χ_c)/σ_raw with σ from the replicas; the null holds each replica out."""
    from rawgate.gate.measure import Measurements

    def m(n, a):
        return Measurements(whole={"N": n, "A_tot": a}, objects={}, centres=np.zeros((0, 2)),
                            label_ids=np.zeros(0, int), ndim=2)

    reps = [m(10, a) for a in (100, 104, 96, 102, 98)]
    s = {x.name: x for x in whole_epsilon(m(10, 100), reps, m(10, 90))}
    sd = np.std([100, 104, 96, 102, 98], ddof=1)
    assert s["A_tot"].value == pytest.approx(10 / sd)
    assert s["A_tot"].null[1] == pytest.approx(-4 / np.std([100, 96, 102, 98], ddof=1))
    # all replicas agree on N: σ floored at half a count, no division by zero
    assert s["N"].value == 0 and np.all(s["N"].null == 0)
    s2 = {x.name: x for x in whole_epsilon(m(10, 100), reps, m(11, 100))}
    assert s2["N"].value == pytest.approx(-2.0)


def test_filter_epsilon_rms_of_a_replica_is_about_one():
    rng = np.random.default_rng(5)
    raw = rng.normal(size=(2, 20000))
    reps = raw[None] + rng.normal(size=(10, 2, 20000))
    fresh = raw + rng.normal(size=(2, 20000))
    st = {s.name: s for s in filter_epsilon(raw, reps, fresh, ["a", "b"])}
    assert 0.95 < st["rms ε a"].value < 1.4 and abs(st["mean ε a"].value) < 0.05
    assert np.all((st["rms ε a"].null > 1.0) & (st["rms ε a"].null < 1.5))
    half = filter_epsilon(raw, reps, raw + 0.5 * rng.normal(size=(2, 20000)), ["a", "b"])
    assert {s.name: s for s in half}["rms ε a"].value < 0.7


def test_count_change_of_one_passes_when_replicas_agree():
    """All replicas agree on N (σ floored at ½): one object more is the count's resolution."""
    from rawgate.gate.measure import Measurements

    def m(n):
        return Measurements(whole={"N": n, "A_tot": 100}, objects={}, centres=np.zeros((0, 2)),
                            label_ids=np.zeros(0, int), ndim=2)

    reps = [m(10)] * 10
    one = {x.name: x for x in whole_epsilon(m(10), reps, m(11))}
    assert one["N"].value == pytest.approx(-2.0) and one["N"].resolution == pytest.approx(2.0)
    assert judge([one["N"]]).passed
    three = {x.name: x for x in whole_epsilon(m(10), reps, m(13))}
    assert not judge([three["N"]]).passed


def _objects(values, name="Area"):
    from rawgate.gate.measure import Measurements

    n = len(values)
    centres = np.stack([np.arange(n) * 20.0, np.zeros(n)], axis=1)
    return Measurements(whole={"N": n, "A_tot": float(np.sum(values))}, objects={name: np.asarray(values, float)},
                        centres=centres, label_ids=np.arange(1, n + 1), ndim=2)


def test_object_epsilon_is_robust_to_one_quantised_object():
    """An object whose value agrees in all ten replicas must not decide the verdict alone."""
    rng = np.random.default_rng(3)
    n_obj, n_rep = 30, 10
    truth = rng.uniform(50, 80, n_obj)
    raw = truth + rng.normal(0, 1, n_obj)
    reps = raw[None] + rng.normal(0, 1, (n_rep, n_obj))
    reps[:, 0] = raw[0]  # object 0: quantised, the same value in every replica (σ̂ = 0) ...
    fresh = raw + rng.normal(0, 1, n_obj)
    fresh[0] = raw[0] + 1.0  # ... and the held-out replica lands one step away
    stats, matching, per_object = object_epsilon(_objects(raw), [_objects(r) for r in reps], _objects(fresh))
    st = {s.name: s for s in stats}
    assert matching.n_objects_scored == n_obj
    # shrinkage towards the pooled σ: ε = −1/√(3/12) = −2 (the floor alone would give −10)
    assert per_object["Area"][0] == pytest.approx(-2.0, rel=0.2)
    assert abs(st["mean ε Area"].value) < 0.6 and st["spread ε Area"].value < 1.6
    # the null of the mean and spread is the pooled per-object ε of all ten held-out replicas
    assert st["mean ε Area"].detail["null_pooled_values"] == n_rep * n_obj
    assert st["mean ε Area"].null_se == pytest.approx(st["spread ε Area"].null_center / np.sqrt(n_obj), rel=0.01)
    assert judge(stats).passed
    # a real bias of two σ on every object fails the median
    biased = raw + 2.0 + rng.normal(0, 1, n_obj)
    stats_b, _, _ = object_epsilon(_objects(raw), [_objects(r) for r in reps], _objects(biased))
    v = judge(stats_b)
    assert not v.passed and v.failed[0].name == "mean ε Area"
    assert {s.name: s for s in stats_b}["mean ε Area"].value < -1


def test_noise_power_and_noise_epsilon():
    rng = np.random.default_rng(8)
    ramp = np.add.outer(np.arange(128.0), np.arange(128.0)) * 3  # structure with no curvature
    raw = ramp + rng.normal(0, 4, (128, 128))
    # white noise: the residual's variance is 1.25 v and median(r²) = 0.4549 × that
    assert noise_power(raw) == pytest.approx(0.4549 * 1.25 * 16, rel=0.05)
    assert noise_power(np.stack([raw, raw])) == pytest.approx(noise_power(raw))
    sample = rng.choice(raw.size, 4000, replace=False)
    p_raw = noise_power(raw, sample)
    p_reps = np.array([noise_power(raw + rng.normal(0, 4, raw.shape), sample) for _ in range(10)])
    fresh = noise_epsilon(p_raw, p_reps, noise_power(raw + rng.normal(0, 4, raw.shape), sample))
    assert 0.8 < fresh.value < 1.2 and np.all(np.abs(fresh.null - 1) < 0.2)
    assert judge([fresh]).passed and judge([noise_epsilon(p_raw, p_reps, p_raw)]).passed
    smooth = ndimage.gaussian_filter(raw, 1.5)  # a codec that removes the noise
    bad = noise_epsilon(p_raw, p_reps, noise_power(smooth, sample))
    assert bad.value < -2 and not judge([bad]).passed
    flat = noise_epsilon(p_raw, p_reps, 0.0)
    assert flat.value == -np.inf and not judge([flat]).passed
    # a flat raw frame kept exactly (lossless) is no change, not a division by zero
    assert noise_epsilon(0.0, p_reps, 0.0).value == 0.0
    with np.errstate(all="raise"):  # a flat raw frame against noisy replicas: no overflow warning
        flat_raw = noise_epsilon(0.0, p_reps, p_reps[0])
    assert np.all(np.isfinite(flat_raw.null)) and np.all(flat_raw.null > 1000)


def _stat(name, value, null, sides=2, family="whole"):
    return EpsilonStat(name, family, "epsilon" if sides == 2 else "rms", value, np.asarray(null, float), sides)


def test_judge_interval_bonferroni_and_rules():
    null = np.random.default_rng(0).normal(0.3, 1.0, 10)
    ok = judge([_stat("A", 1.0, null), _stat("B", -0.5, null)])
    assert ok.passed and ok.n_tested == 2
    bad = judge([_stat("A", 40.0, null), _stat("B", -0.5, null)])
    assert not bad.passed and [j.name for j in bad.failed] == ["A"] and bad.failed[0].excess > 10
    # the quantile grows with the number of statistics tested (Bonferroni)
    q2 = judge([_stat(f"S{i}", 0.0, null) for i in range(2)]).quantile
    q40 = judge([_stat(f"S{i}", 0.0, null) for i in range(40)]).quantile
    assert q40 > q2 > 3
    # per-parameter rules: disable, fixed limit
    pol = VerdictPolicy(rules={"A": ParameterRule(enabled=False)})
    assert judge([_stat("A", 40.0, null)], pol).n_tested == 0
    pol = VerdictPolicy(rules={"A": ParameterRule(max_abs=0.5)})
    assert not judge([_stat("A", 1.0, null)], pol).passed
    # one-sided: a small rms always passes
    assert judge([_stat("rms", 0.0, [1.1] * 9 + [1.2], sides=1)]).passed
    # a pooled null (per-object mean): a normal quantile around its centre, not the t interval
    pooled = EpsilonStat("mean ε X", "object", "mean", 1.0, np.zeros(10), 2, null_center=0.1, null_se=0.2)
    v = judge([pooled])
    j = v.judged[0]
    assert j.upper == pytest.approx(0.1 + 0.2 * 3.0902, rel=1e-3) and j.lower == pytest.approx(-0.2 * 3.0902, rel=1e-3)
    assert not v.passed and j.excess == pytest.approx((1.0 - j.upper) / 0.2)
    # an untestable statistic is reported, not judged
    s = _stat("obj", 99.0, null, family="object")
    s.testable = False
    v = judge([s, _stat("A", 0.1, null)])
    assert v.passed and v.n_tested == 1


# ----------------------------------------------------------------------------- spot check
def test_replica_passes_and_jpeg_100_fails(world):
    raw, model, seg = world["raw"], world["model"], world["seg"]
    rep = spot_check(raw, replicas(raw, model, 1, seed=77)[0], model, seg)
    assert rep.verdict.passed, rep.verdict.reason
    jpeg = get_codec("jpeg:ratio=100")
    bad = spot_check(raw, jpeg.decode(jpeg.encode(raw)), model, seg)
    assert not bad.verdict.passed
    assert rep.matching.n_raw_objects >= 10 and rep.matching.n_objects_scored >= 8
    d = rep.to_dict()
    assert d["verdict"]["passed"] and len(d["statistics"]) == len(rep.stats)


def test_check_without_segmenter_uses_filters_only(world):
    raw, model = world["raw"], world["model"]
    rep = spot_check(raw, raw.copy(), model, None)
    assert rep.verdict.passed and {s.family for s in rep.stats} == {"filter", "noise"}
    assert any("no segmenter" in n for n in rep.notes)


def test_empty_segmentation_gives_a_defined_verdict(world):
    raw, model = world["raw"], world["model"]
    with np.errstate(all="raise"):
        rep = spot_check(raw, raw.copy(), model, lambda im: np.zeros(im.shape, np.int32))
    assert rep.verdict.passed
    assert rep.whole["N"]["epsilon"] == 0 and rep.matching.n_raw_objects == 0
    assert any("no objects" in n for n in rep.notes)
    assert not any(j.judged for j in rep.verdict.judged if j.family == "object")


def test_tiles_and_bad_input(world):
    raw, model, seg = world["raw"], world["model"], world["seg"]
    rep = spot_check(raw, raw.copy(), model, seg, GateConfig(tiles=2, tile_size=64))
    assert rep.verdict.passed and len(rep.meta["tiles"]["origins"]) == 2
    with pytest.raises(GateError, match="decoded shape"):
        spot_check(raw, raw[:-1], model, seg)
    with pytest.raises(GateError, match="calibration"):
        spot_check(raw[:100], raw[:100], model, seg)
    with pytest.raises(GateError, match="segmenter returned shape"):
        spot_check(raw, raw, model, lambda im: np.zeros(3, int))
    with pytest.raises(ValueError, match="n_replicas"):
        GateConfig(n_replicas=2)


# ----------------------------------------------------------------------------- CLI
def test_cli_train_and_check(world, tmp_path):
    runner = CliRunner()
    np.save(tmp_path / "train.npy", world["train"])
    np.save(tmp_path / "labels.npy", world["labels"])
    np.save(tmp_path / "raw.npy", world["raw"])
    cal = world["model"].save(tmp_path / "cam.rgnoise")
    model = tmp_path / "seg.skops"
    r = runner.invoke(app, ["segmenter", "train", "--image", str(tmp_path / "train.npy"), "--labels",
                            str(tmp_path / "labels.npy"), "--out", str(model), "--trees", "10", "--scales", "1,2"])
    assert r.exit_code == 0, r.output
    assert model.exists()
    r = runner.invoke(app, ["segmenter", "show", str(model)], terminal_width=100)
    assert r.exit_code == 0 and "10 trees" in r.output and "2-D" in r.output and "class 2:" in r.output, r.output
    r = runner.invoke(app, ["segmenter", "show", str(model), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["n_trees"] == 10
    base = ["check", str(tmp_path / "raw.npy"), "--calibration", str(cal), "--segmenter", str(model)]
    r = runner.invoke(app, base + ["--codec", "noisecal", "--report", str(tmp_path / "ok")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ok" / "report.html").exists() and (tmp_path / "ok" / "epsilon.json").exists()
    r = runner.invoke(app, base + ["--codec", "jpeg:ratio=100", "--report", str(tmp_path / "bad")])
    assert r.exit_code == 1, r.output
    assert "FAIL" in r.output
    # replicas around the denoised estimate (issue 31): noisecal still passes, JPEG 100:1 still
    # fails, and the report says how the replicas were drawn
    r = runner.invoke(app, base + ["--codec", "noisecal", "--replicas-around", "estimate", "--report", str(tmp_path / "e")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "e" / "epsilon.json").read_text())["meta"]["replicas_around"] == "estimate"
    assert "around a denoised estimate of the mean image" in (tmp_path / "e" / "report.html").read_text()
    r = runner.invoke(app, base + ["--codec", "jpeg:ratio=100", "--replicas-around", "estimate", "--report",
                                   str(tmp_path / "e2")])
    assert r.exit_code == 1, r.output
    r = runner.invoke(app, base + ["--codec", "noisecal", "--replicas-around", "truth", "--report", str(tmp_path / "x")])
    assert r.exit_code == 2 and "replicas_around" in r.output
    # bad input: a file that is not a segmenter, no calibration
    (tmp_path / "junk.skops").write_bytes(b"not a model")
    r = runner.invoke(app, ["check", str(tmp_path / "raw.npy"), "--calibration", str(cal), "--segmenter",
                            str(tmp_path / "junk.skops"), "--report", str(tmp_path / "x")])
    assert r.exit_code == 2 and "not a rawgate segmenter" in r.output
    r = runner.invoke(app, ["check", str(tmp_path / "raw.npy"), "--report", str(tmp_path / "y")])
    assert r.exit_code == 2 and "--calibration" in r.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_z_plane_of_a_stack_is_checked_as_a_frame():
    """`--plane Z` (issue 32): one Z plane of a stack for a 2-D segmenter; `--frame` the time point."""
    from rawgate.daemon.cli_gate import _select

    a = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    x, what = _select(a, "TZYX", 1, None, 2)
    assert np.array_equal(x, a[1, 2]) and what == "2-D frame (T=1, Z=2)"
    x, what = _select(a, "TZYX", 1, None)
    assert x.shape == (3, 4, 5) and what == "3-D volume (T=1)"
    with pytest.raises(ValueError, match="no Z axis"):
        _select(a[0], "TYX", 0, None, 1)
    with pytest.raises(ValueError, match="cannot go with --volume"):
        _select(a, "TZYX", 0, True, 1)
