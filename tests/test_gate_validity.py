"""A small, seeded version of ``bench/gate_validity.py``: the verdict on benchmark scenes.

Each trial renders a fresh raw frame of a scene through the simulated camera, prepares the
reference (raw + 10 replicas, segmented by a forest trained on sparse labels of another scene)
and judges decoded copies. Seeds are fixed, so the outcome is deterministic; the bench runs the
same thing over 200 trials and prints the rates.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from rawgate.calibration import scenes
from rawgate.calibration.replicas import replicas
from rawgate.calibration.simulation import make_sensor_truth, truth_noise_model
from rawgate.codecs import get_codec
from rawgate.codecs.lossless import RatioNotReachedWarning
from rawgate.codecs.lossy import eightbit_decode_table, imagej_to_8bit
from rawgate.gate.check import GateConfig, prepare_reference
from rawgate.gate.segmenter import train_pixel_classifier

SHAPE = (192, 192)
TRIALS = 4


def _eightbit_jpeg(raw: np.ndarray, ratio: float) -> np.ndarray:
    """The paper's JPEG: ImageJ 8-bit (Auto contrast), JPEG at ``ratio``:1 of the 16-bit raw, mapped back."""
    low, high, _ = get_codec("eightbit:saturated=0.35")._limits(raw)
    jpeg = get_codec(f"jpeg:ratio={ratio / 2:g}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RatioNotReachedWarning)
        data = jpeg.encode(imagej_to_8bit(raw, low, high))
    return eightbit_decode_table("auto", low, high, raw.dtype)[jpeg.decode(data)]


@pytest.fixture(scope="module")
def dense_world():
    """Dense fluorescent cells with cell-to-cell brightness heterogeneity (log-normal, sd 1)."""
    truth = make_sensor_truth(SHAPE, seed=11)
    model = truth_noise_model(truth)
    train = scenes.dense_cells(SHAPE, seed=1, radius_px=30.0, brightness_log_sd=1.0)
    test = scenes.dense_cells(SHAPE, seed=2, radius_px=30.0, brightness_log_sd=1.0)
    img = scenes.render_scene(train, truth, np.random.default_rng(0))[0]
    seg = train_pixel_classifier(img, scenes.sparse_labels(train.labels, seed=0), min_object_px=5)
    refs = []
    for t in range(TRIALS):  # one reference per trial, shared by every condition
        raw = scenes.render_scene(test, truth, np.random.default_rng([t, 77]))[0]
        refs.append(prepare_reference(raw, model, seg, GateConfig(n_replicas=10, seed=t)))
    return model, refs


def _verdicts(world, decode) -> list[bool]:
    model, refs = world
    return [ref.check(decode(ref.raw, model, t)).verdict.passed for t, ref in enumerate(refs)]


def test_replica_and_noisecal_pass_on_dense_cells(dense_world):
    assert _verdicts(dense_world, lambda raw, m, t: replicas(raw, m, 1, seed=10_000 + t)[0]) == [True] * TRIALS
    noisecal = lambda raw, m, t: (c := get_codec("noisecal:step=2", noise_model=m)).decode(c.encode(raw))  # noqa: E731
    assert _verdicts(dense_world, noisecal) == [True] * TRIALS


def test_eightbit_and_the_papers_jpeg_fail_on_dense_cells(dense_world):
    eightbit = get_codec("eightbit")
    assert _verdicts(dense_world, lambda raw, m, t: eightbit.decode(eightbit.encode(raw))) == [False] * TRIALS
    assert _verdicts(dense_world, lambda raw, m, t: _eightbit_jpeg(raw, 10)) == [False] * TRIALS
    assert _verdicts(dense_world, lambda raw, m, t: _eightbit_jpeg(raw, 100)) == [False] * TRIALS
