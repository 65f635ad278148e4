"""Benchmark scenes for the ε gate: ground truth consistent with the flux, sparse annotations,
rendering through the sensor model, and the simulated microscope's sample slot."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.segmentation import expand_labels

from rawgate.calibration.instruments.simulated import SCENES, SimulatedInstrument
from rawgate.calibration.scenes import (
    BACKGROUND,
    DEFAULT_EXPOSURE_MS,
    FOREGROUND,
    GroundTruthScene,
    dense_cells,
    microspheres,
    nuclei_3d,
    dim_spots,
    render_scene,
    sparse_labels,
)
from rawgate.calibration.simulation import make_sensor_truth

SHAPE2 = (384, 384)
SHAPE3 = (12, 128, 128)


@pytest.fixture(scope="module")
def spheres() -> GroundTruthScene:
    return microspheres(SHAPE2, seed=3)


@pytest.fixture(scope="module")
def cells() -> GroundTruthScene:
    return dense_cells(SHAPE2, seed=3)


@pytest.fixture(scope="module")
def nuclei() -> GroundTruthScene:
    return nuclei_3d(SHAPE3, seed=3)


def _touching_pairs(labels: np.ndarray) -> int:
    """Number of 8-adjacent (2-D) pixel pairs that belong to two different objects."""
    n = 0
    for sl_a, sl_b in [
        ((slice(1, None), slice(None)), (slice(None, -1), slice(None))),
        ((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
        ((slice(1, None), slice(1, None)), (slice(None, -1), slice(None, -1))),
        ((slice(1, None), slice(None, -1)), (slice(None, -1), slice(1, None))),
    ]:
        a, b = labels[sl_a], labels[sl_b]
        n += int(np.count_nonzero((a > 0) & (b > 0) & (a != b)))
    return n


# --- determinism, shapes, dtypes ------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: microspheres((160, 192), seed=seed),
        lambda seed: dense_cells((160, 192), seed=seed, radius_px=20.0),
        lambda seed: nuclei_3d((6, 64, 80), seed=seed),
        lambda seed: dim_spots((160, 192), seed=seed),
    ],
    ids=["microspheres", "dense cells", "nuclei 3d", "dim spots"],
)
def test_scenes_are_seeded_and_well_typed(make):
    a, b, c = make(7), make(7), make(8)
    np.testing.assert_array_equal(a.flux, b.flux)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.flux, c.flux)
    assert not np.array_equal(a.labels, c.labels)
    assert a.flux.dtype == np.float64 and a.labels.dtype == np.int32
    assert a.flux.shape == a.labels.shape and a.flux.ndim in (2, 3)
    assert a.exposure_ms == DEFAULT_EXPOSURE_MS
    assert np.all(np.isfinite(a.flux)) and a.flux.min() >= 0
    assert a.name and a.description
    # labels are consecutive 1..N
    np.testing.assert_array_equal(np.unique(a.labels), np.arange(a.n_objects + 1))
    assert a.n_objects > 3


# --- microspheres --------------------------------------------------------------------------


def test_microspheres_dark_disc_bright_halo(spheres):
    e, lab = spheres.electrons(), spheres.labels
    out = ndimage.distance_transform_edt(lab == 0)
    far = out > 8
    halo = (out >= 1) & (out <= 2.5)
    bg = e[far].mean()
    assert 760 < np.median(e[far]) < 840  # ~800 e- background
    assert e[lab > 0].mean() < 0.75 * bg  # dark discs (45–60 % inside, blurred edge)
    assert np.median(e[ndimage.binary_erosion(lab > 0, iterations=3)]) < 0.65 * bg
    assert e[halo].mean() > 1.15 * bg  # the phase-contrast halo
    assert 1.25 * bg < np.percentile(e[halo], 99) < 1.6 * bg


def test_microspheres_disjoint_whole_and_sparse(spheres):
    lab = spheres.labels
    n = spheres.n_objects
    # non-overlap with a gap: growing every sphere by 1.4 px merges none
    grown = expand_labels(lab, 1.4)
    assert ndimage.label(grown > 0, structure=np.ones((3, 3)))[1] == n
    assert _touching_pairs(lab) == 0
    # whole discs inside the field, radii 5–9 px
    assert not (lab[0].any() or lab[-1].any() or lab[:, 0].any() or lab[:, -1].any())
    r_eq = np.sqrt(np.bincount(lab.ravel())[1:] / np.pi)
    assert r_eq.min() > 4.5 and r_eq.max() < 9.5
    assert 0.05 < spheres.coverage < 0.08


def test_microspheres_respect_n_and_gap():
    s = microspheres((256, 256), seed=1, n_spheres=12)
    assert s.n_objects == 12
    com = np.array(ndimage.center_of_mass(s.labels > 0, s.labels, range(1, 13)))
    r = np.sqrt(np.bincount(s.labels.ravel())[1:] / np.pi)
    d = np.sqrt(((com[:, None] - com[None]) ** 2).sum(-1))
    need = r[:, None] + r[None] + 4.0 - 1.0  # 1 px slack for the discrete radius estimate
    np.fill_diagonal(d, np.inf)
    assert np.all(d >= need)


# --- dense cells ---------------------------------------------------------------------------


def test_dense_cells_cover_and_separate(cells):
    lab = cells.labels
    assert 0.75 <= cells.coverage <= 0.87
    assert _touching_pairs(lab) == 0  # every neighbour pair is split by a gap ≥ 2 px
    area = np.bincount(lab.ravel())[1:]
    assert np.median(area) > 0.6 * np.pi * 40**2
    # holes: some background farther than 10 px from every cell
    assert (ndimage.distance_transform_edt(lab == 0) > 10).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dense_cells_coverage_over_seeds(seed):
    s = dense_cells((320, 320), seed=seed, radius_px=30.0)
    assert 0.72 <= s.coverage <= 0.9


def test_dense_cells_brighter_than_background(cells):
    e, lab = cells.electrons(), cells.labels
    holes = ndimage.distance_transform_edt(lab == 0) > 6
    assert 12 < np.median(e[holes]) < 30  # ~20 e- background
    inside = e[lab > 0]
    assert 300 < np.median(inside) < 1500
    assert inside.mean() > 10 * e[holes].mean()
    # per-cell brightness varies (±30 %)
    per_cell = ndimage.mean(e, lab, range(1, cells.n_objects + 1))
    assert per_cell.max() / per_cell.min() > 1.3
    # the gaps are darker than the cells they separate
    gap = (lab == 0) & (ndimage.distance_transform_edt(lab == 0) <= 1.5) & ~holes
    assert e[gap].mean() < 0.5 * np.median(inside)


def test_dense_cells_lognormal_brightness_only_changes_brightness():
    hetero = dense_cells((384, 384), seed=0, brightness_log_sd=1.0)
    assert np.array_equal(hetero.labels, dense_cells((384, 384), seed=0).labels)
    lab = hetero.labels
    per_cell = ndimage.mean(hetero.electrons(), lab, range(1, hetero.n_objects + 1))
    plain = ndimage.mean(dense_cells((384, 384), seed=0).electrons(), lab, range(1, hetero.n_objects + 1))
    # expression heterogeneity: an order of magnitude between the dimmest and brightest cell
    assert per_cell.max() / per_cell.min() > 10 > plain.max() / plain.min()
    assert "log-normal" in hetero.description
    with pytest.raises(ValueError, match="brightness_log_sd"):
        dense_cells((64, 64), seed=0, brightness_log_sd=-0.5)


# --- 3-D nuclei ----------------------------------------------------------------------------


def test_nuclei_3d(nuclei):
    e, lab = nuclei.electrons(), nuclei.labels
    assert nuclei.flux.shape == SHAPE3 and nuclei.ndim == 3
    assert 0.04 < nuclei.coverage < 0.15
    far = ndimage.distance_transform_edt(lab == 0) > 5
    assert 20 < np.median(e[far]) < 45  # ~30 e- background
    assert e[lab > 0].mean() > 5 * e[far].mean()
    assert 700 < e.max() < 900  # peak ~800 e-
    # disjoint: growing each nucleus by 0.9 voxel merges none
    assert ndimage.label(expand_labels(lab, 0.9) > 0)[1] == nuclei.n_objects
    # anisotropy: nuclei are flatter in z (voxels) than in x-y
    sl = ndimage.find_objects(lab)
    dz = np.median([s[0].stop - s[0].start for s in sl])
    dy = np.median([s[1].stop - s[1].start for s in sl])
    assert dz < 0.75 * dy


def test_dim_spots_are_dim_small_sparse_and_disjoint():
    """The low-signal scene: 10–50 e⁻ of signal per object on ~5 e⁻, small discs, sparse."""
    sc = dim_spots((256, 256), seed=3)
    e, lab = sc.electrons(), sc.labels
    assert 0.02 < sc.coverage < 0.06 and sc.n_objects >= 20
    far = ndimage.distance_transform_edt(lab == 0) > 5
    assert 3 < np.median(e[far]) < 7
    peaks = ndimage.maximum(e, lab, np.arange(1, sc.n_objects + 1)) - np.median(e[far])
    assert 5 < peaks.min() and peaks.max() < 55
    areas = np.bincount(lab.ravel())[1:]
    assert areas.max() <= np.pi * 6.5**2
    assert ndimage.label(lab > 0)[1] == sc.n_objects  # no two touch


# --- sparse annotations ---------------------------------------------------------------------


@pytest.mark.parametrize("which", ["spheres", "cells", "nuclei"])
def test_sparse_labels_are_honest(which, request):
    scene = request.getfixturevalue(which)
    lab = scene.labels
    ann = sparse_labels(lab, seed=5)
    assert ann.dtype == np.uint8 and ann.shape == lab.shape
    assert set(np.unique(ann)) == {0, BACKGROUND, FOREGROUND}
    fg, bg = ann == FOREGROUND, ann == BACKGROUND
    assert np.all(lab[fg] > 0) and np.all(lab[bg] == 0)
    assert np.count_nonzero(ann) / ann.size < 0.02
    if lab.ndim == 2:
        depth = ndimage.distance_transform_edt(lab > 0)
        assert depth[fg].min() > 2.0  # inside the eroded objects
        dist = ndimage.distance_transform_edt(lab == 0)
    else:
        planes = np.unique(np.nonzero(ann)[0])
        assert 1 <= planes.size <= 3
        dist = ndimage.distance_transform_edt(lab == 0)  # 3-D, voxel units
    assert dist[bg].min() >= 2.0
    assert np.count_nonzero(bg & (dist <= 4.0)) > 0  # hard pixels next to objects
    assert np.count_nonzero(bg & (dist > 8.0)) > 0  # easy pixels far from them
    assert len(np.unique(lab[fg])) >= 5  # several objects annotated
    np.testing.assert_array_equal(ann, sparse_labels(lab, seed=5))
    assert not np.array_equal(ann, sparse_labels(lab, seed=6))


def test_sparse_labels_small_image_stays_sparse():
    s = microspheres((128, 128), seed=2)
    ann = sparse_labels(s.labels, seed=0)
    assert 0 < np.count_nonzero(ann) / ann.size < 0.02
    assert (ann == FOREGROUND).any() and (ann == BACKGROUND).any()


# --- rendering -----------------------------------------------------------------------------


def test_render_scene_2d_matches_sensor_model():
    truth = make_sensor_truth((128, 128), seed=4)
    scene = microspheres((128, 128), seed=4)
    frames = render_scene(scene, truth, np.random.default_rng(0), n=4)
    assert frames.dtype == np.uint16 and frames.shape == (4, 128, 128)
    far = (ndimage.distance_transform_edt(scene.labels == 0) > 8) & (truth.defects == 0)
    e = truth.quantum_efficiency * truth.relative_qe * scene.flux * scene.exposure_ms
    expected = truth.offset_adu + e / truth.gain_e_per_adu
    got = frames.mean(axis=0)
    assert got[far].mean() == pytest.approx(expected[far].mean(), rel=0.005)
    assert 1700 < got[far].mean() < 1900  # ≈ 800 e- / 0.47 e-/ADU + 100 ADU
    inside = (scene.labels > 0) & (truth.defects == 0)
    assert got[inside].mean() < got[far].mean()


def test_render_scene_3d_and_shape_check():
    truth = make_sensor_truth((64, 64), seed=1)
    scene = nuclei_3d((5, 64, 64), seed=1)
    a = render_scene(scene, truth, np.random.default_rng(2), n=2)
    assert a.shape == (2, 5, 64, 64) and a.dtype == np.uint16
    b = render_scene(scene, truth, np.random.default_rng(2), n=2)
    np.testing.assert_array_equal(a, b)
    assert render_scene(scene, truth, np.random.default_rng(2)).shape == (1, 5, 64, 64)
    bg = (scene.labels == 0) & (truth.defects == 0)
    exp_bg = (truth.offset_adu + scene.electrons() / truth.gain_e_per_adu)[bg].mean()
    assert a.mean(axis=0)[bg].mean() == pytest.approx(exp_bg, rel=0.02)
    with pytest.raises(ValueError):
        render_scene(nuclei_3d((3, 32, 48), seed=1), truth, np.random.default_rng(0))


# --- the simulated microscope's sample slot --------------------------------------------------


def test_scenes_registered_as_relative_flux():
    for name in ("microspheres", "dense cells"):
        rel = SCENES[name]((96, 128))
        assert rel.shape == (96, 128)
        assert rel.min() >= 0 and rel.max() == pytest.approx(1.0)
    inst = SimulatedInstrument(seed=1, shape=(64, 64))
    core = inst.core
    assert {"microspheres", "dense cells"} <= set(core.getAllowedPropertyValues("Camera", "Sample"))
    core.setProperty("Camera", "Sample", "microspheres")
    assert core.getProperty("Camera", "Sample") == "microspheres"
