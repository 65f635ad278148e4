"""Known-answer tests of the object measurements and the object matching.

Expected values come from geometry worked out by hand (rectangles, an L, a pixel, a voxel cube),
from ImageJ's documented rules (traced perimeter, hull order, angle convention), or from
analytic shapes (discs, ellipses, a ball) -- never from a previous run of the code under test.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from rawgate.gate.matching import MatchResult, instance_metrics, match_objects
from rawgate.gate.measure import (
    PARAMETERS_2D,
    PARAMETERS_3D,
    WHOLE_2D,
    WHOLE_3D,
    Measurements,
    concat,
    measure,
)

CUT = 2.0 - math.sqrt(2.0)  # ImageJ's per-corner correction of the traced perimeter


def one(m: Measurements) -> dict[str, float]:
    """The parameters of the only object."""
    assert m.n_objects == 1
    return {k: float(v[0]) for k, v in m.objects.items()}


def ellipse_mask(a: float, b: float, theta_deg: float, size: int = 81) -> np.ndarray:
    """Filled ellipse with semi-axes a > b whose major axis points theta_deg counter-clockwise
    from +x *as seen on screen* (row index grows downwards)."""
    r, c = np.mgrid[0:size, 0:size]
    x = c - size // 2
    y = -(r - size // 2)  # screen "up"
    t = math.radians(theta_deg)
    u = x * math.cos(t) + y * math.sin(t)
    v = -x * math.sin(t) + y * math.cos(t)
    return ((u / a) ** 2 + (v / b) ** 2 <= 1.0).astype(np.int32)


# ------------------------------------------------------------------------------------------
# Names
# ------------------------------------------------------------------------------------------


def test_parameter_names():
    assert PARAMETERS_2D == (
        "Area", "XCM", "YCM", "Perim", "Major", "Minor", "Angle", "Circ", "Feret", "FeretX",
        "FeretY", "FeretAngle", "MinFeret", "AR", "Round", "Solidity", "FeretAR",
        "Compactness", "Extent")
    assert PARAMETERS_3D == ("Volume", "SurfaceArea")
    assert WHOLE_2D == ("N", "A_tot") and WHOLE_3D == ("N", "V_tot", "SA_tot")


# ------------------------------------------------------------------------------------------
# 2-D known answers
# ------------------------------------------------------------------------------------------


def test_single_pixel():
    img = np.zeros((9, 9), np.uint16)
    img[3, 5] = 7
    m = measure(img)
    p = one(m)
    assert m.label_ids.tolist() == [7]
    assert p["Area"] == 1
    assert (p["XCM"], p["YCM"]) == (5.5, 3.5)  # ImageJ: pixel centre = index + 0.5
    np.testing.assert_allclose(m.centres, [[3.0, 5.0]])
    # ImageJ's javadoc: "a 1x1 pixel ROI has a boundary length of 4 and 2 non-adjacent edges
    # so the perimeter is 4-2*(2-sqrt(2))"
    assert p["Perim"] == pytest.approx(4 - 2 * CUT)
    # equal-area circle: pi * M^2 / 4 = 1
    assert p["Major"] == pytest.approx(2 / math.sqrt(math.pi), rel=1e-8)
    assert p["Minor"] == pytest.approx(p["Major"])
    assert p["Circ"] == 1.0  # 4*pi/8 > 1, capped
    # hull = the unit square of its corners
    assert p["Feret"] == pytest.approx(math.sqrt(2))
    assert p["MinFeret"] == pytest.approx(1.0)
    assert p["FeretAngle"] == pytest.approx(135.0)  # top-left -> bottom-right corner
    assert (p["FeretX"], p["FeretY"]) == (5.0, 3.0)
    for k in ("AR", "Round", "Solidity", "Extent", "Compactness"):
        assert p[k] == pytest.approx(1.0, rel=1e-6), k
    assert p["FeretAR"] == pytest.approx(math.sqrt(2))
    assert all(math.isfinite(v) for v in p.values())


@pytest.mark.parametrize(("w", "h"), [(7, 4), (4, 7), (10, 10), (2, 2)])
def test_rectangle(w, h):
    top, left = 5, 3
    img = np.zeros((20, 20), np.int32)
    img[top:top + h, left:left + w] = 1
    p = one(measure(img))
    area = w * h
    assert p["Area"] == area
    assert p["XCM"] == pytest.approx(left + w / 2)
    assert p["YCM"] == pytest.approx(top + h / 2)
    # 4 corners, every side longer than 1 -> all four counted
    assert p["Perim"] == pytest.approx(2 * (w + h) - 4 * CUT)
    # second moments w^2/12, h^2/12 (1/12 per pixel included): ellipse semi-axes w/sqrt(3),
    # h/sqrt(3), rescaled to area w*h -> full axes 2w/sqrt(pi), 2h/sqrt(pi)
    assert p["Major"] == pytest.approx(2 * max(w, h) / math.sqrt(math.pi), rel=1e-6)
    assert p["Minor"] == pytest.approx(2 * min(w, h) / math.sqrt(math.pi), rel=1e-6)
    assert p["Major"] * p["Minor"] * math.pi / 4 == pytest.approx(area, rel=1e-6)
    assert p["Angle"] == pytest.approx(90.0 if h > w else 0.0, abs=1e-6)
    assert p["AR"] == pytest.approx(max(w, h) / min(w, h), rel=1e-6)
    assert p["Round"] == pytest.approx(min(w, h) / max(w, h), rel=1e-6)
    assert p["Compactness"] == pytest.approx(math.sqrt(min(w, h) / max(w, h)), rel=1e-6)
    assert p["Circ"] == pytest.approx(min(1.0, 4 * math.pi * area / p["Perim"] ** 2))
    assert p["Feret"] == pytest.approx(math.hypot(w, h))
    assert p["MinFeret"] == pytest.approx(min(w, h))
    assert p["FeretAR"] == pytest.approx(math.hypot(w, h) / min(w, h))
    # ImageJ's hull starts at the top-left corner and runs counter-clockwise on screen
    # (TL, BL, BR, TR); the first longest pair is TL-BR: start (left, top), angle
    # atan2(top - bottom, right - left) folded into [0, 180)
    assert (p["FeretX"], p["FeretY"]) == (left, top)
    assert p["FeretAngle"] == pytest.approx(180 - math.degrees(math.atan2(h, w)))
    assert p["Solidity"] == pytest.approx(1.0)
    assert p["Extent"] == pytest.approx(1.0)


def test_l_shape():
    # a 4x4 block without its top-right 2x2: outline (0,0) (0,4) (4,4) (4,2) (2,2) (2,0)
    img = np.zeros((10, 10), np.int32)
    img[1:5, 2:4] = 1  # vertical bar, rows 1-4, cols 2-3
    img[3:5, 4:6] = 1  # foot, rows 3-4, cols 4-5
    p = one(measure(img))
    assert p["Area"] == 12
    # centre: 8 px of the bar at local (x 0.5, y 1.5), 4 px of the foot at (2.5, 2.5)
    assert p["XCM"] == pytest.approx(2 + (8 * 0.5 + 4 * 2.5) / 12 + 0.5)
    assert p["YCM"] == pytest.approx(1 + (8 * 1.5 + 4 * 2.5) / 12 + 0.5)
    # sides 4, 4, 2, 2, 2, 2: six corners, none with a unit side
    assert p["Perim"] == pytest.approx(16 - 6 * CUT)
    # hull (0,0) (0,4) (4,4) (4,2) (2,0): the 4x4 square minus the corner triangle of area 2
    assert p["Solidity"] == pytest.approx(12 / 14)
    assert p["Extent"] == pytest.approx(12 / 16)
    assert p["Feret"] == pytest.approx(4 * math.sqrt(2))  # (0,0)-(4,4)
    assert p["FeretAngle"] == pytest.approx(135.0)
    assert (p["FeretX"], p["FeretY"]) == (2.0, 1.0)
    # widths: 4 across the axis-parallel sides; 6/sqrt(2) across the cut corner
    assert p["MinFeret"] == pytest.approx(4.0)
    # mirror-symmetric about the rising diagonal; longer along the falling one (its tips)
    assert p["Angle"] == pytest.approx(135.0, abs=1e-6)
    assert p["Major"] > p["Minor"]
    assert p["Major"] * p["Minor"] * math.pi / 4 == pytest.approx(12, rel=1e-6)


def test_disc():
    r = 20
    yy, xx = np.mgrid[-30:31, -30:31]
    img = (xx * xx + yy * yy <= r * r).astype(np.int32)
    p = one(measure(img))
    assert p["Area"] == pytest.approx(math.pi * r * r, rel=0.01)
    assert (p["XCM"], p["YCM"]) == (30.5, 30.5)
    assert 0.85 < p["Circ"] <= 1.0
    assert p["Perim"] == pytest.approx(2 * math.pi * r, rel=0.08)
    assert p["AR"] == pytest.approx(1.0, abs=1e-9)
    assert p["Round"] == pytest.approx(1.0, abs=1e-9)
    assert p["Major"] == pytest.approx(2 * math.sqrt(p["Area"] / math.pi), rel=1e-6)
    assert p["Feret"] == pytest.approx(2 * r + 1, rel=0.02)
    assert p["MinFeret"] == pytest.approx(2 * r + 1, rel=0.02)
    assert p["MinFeret"] <= p["Feret"]
    assert 0.9 < p["Solidity"] <= 1.0
    assert p["Extent"] == pytest.approx(p["Area"] / (2 * r + 1) ** 2)


@pytest.mark.parametrize("theta", [30.0, 60.0, 120.0, 150.0])
def test_ellipse_angle_and_axes(theta):
    p = one(measure(ellipse_mask(30, 10, theta)))
    assert p["Angle"] == pytest.approx(theta, abs=1.0)
    assert p["Major"] == pytest.approx(60, rel=0.02)
    assert p["Minor"] == pytest.approx(20, rel=0.03)
    assert p["Major"] * p["Minor"] * math.pi / 4 == pytest.approx(p["Area"], rel=1e-9)
    assert p["AR"] == pytest.approx(p["Major"] / p["Minor"])
    assert p["Round"] == pytest.approx(4 * p["Area"] / (math.pi * p["Major"] ** 2))
    assert p["Round"] == pytest.approx(1 / p["AR"], rel=1e-9)  # since Area = pi Ma Mi / 4
    assert p["Compactness"] == pytest.approx(math.sqrt(p["Round"]), rel=1e-9)
    # the longest chord follows the major axis
    assert p["Feret"] == pytest.approx(60, rel=0.03)
    assert min(abs(p["FeretAngle"] - theta), 180 - abs(p["FeretAngle"] - theta)) < 5
    assert p["MinFeret"] == pytest.approx(20, rel=0.1)


def test_translation_and_rotation_invariance():
    img = np.zeros((100, 100), np.int32)
    img[10:91, 10:91] = ellipse_mask(30, 10, 45.0)
    base = one(measure(img))
    shifted = one(measure(np.roll(img, (3, -4), axis=(0, 1))))
    for k in PARAMETERS_2D:
        expected = base[k] + {"XCM": -4, "FeretX": -4, "YCM": 3, "FeretY": 3}.get(k, 0)
        assert shifted[k] == pytest.approx(expected, abs=1e-9), k
    # 90 degrees counter-clockwise on screen: exact for everything but the start-point
    # dependent corner count of the traced perimeter (ImageJ's own caveat)
    rot = one(measure(np.rot90(img)))
    for k in ("Area", "Major", "Minor", "Feret", "MinFeret", "Solidity", "Extent", "AR"):
        assert rot[k] == pytest.approx(base[k], rel=1e-9), k
    assert rot["Angle"] == pytest.approx((base["Angle"] + 90) % 180, abs=1e-6)
    assert rot["FeretAngle"] == pytest.approx((base["FeretAngle"] + 90) % 180, abs=1e-6)
    assert abs(rot["Perim"] - base["Perim"]) <= 2 * CUT + 1e-9
    # an arbitrary rotation of the analytic shape: the digital shapes agree approximately
    turned = one(measure(ellipse_mask(30, 10, 45.0 + 37.0)))
    assert turned["Area"] == pytest.approx(base["Area"], rel=0.02)
    assert turned["Major"] == pytest.approx(base["Major"], rel=0.02)
    assert turned["Feret"] == pytest.approx(base["Feret"], rel=0.02)
    assert turned["Perim"] == pytest.approx(base["Perim"], rel=0.03)
    assert turned["Angle"] == pytest.approx(base["Angle"] + 37.0, abs=1.0)


def test_degenerate_objects_are_finite():
    img = np.zeros((30, 30), np.int32)
    img[2, 2:12] = 1  # horizontal line, 10 px
    img[5:15, 20] = 2  # vertical line
    for i in range(8):  # diagonal (8-connected) line
        img[17 + i, 3 + i] = 3
    img[28, 28] = 4
    m = measure(img)
    for k, v in m.objects.items():
        assert np.isfinite(v).all(), k
    area = m.objects["Area"]
    assert area.tolist() == [10, 10, 8, 1]
    # lines: hull = 10 x 1 rectangle
    np.testing.assert_allclose(m.objects["MinFeret"][:2], 1.0)
    np.testing.assert_allclose(m.objects["Feret"][:2], math.hypot(10, 1))
    assert m.objects["Angle"][0] == 0.0 and m.objects["Angle"][1] == 90.0
    # diagonal: corners between the lines x - y = -1 and x - y = +1 -> width 2/sqrt(2)
    assert m.objects["MinFeret"][2] == pytest.approx(math.sqrt(2))
    assert m.objects["Feret"][2] == pytest.approx(8 * math.sqrt(2))
    # falling to the right; ImageJ's fitter substitutes 1e-6 for the zero a11 - a22 of a
    # diagonal, which costs it ~1e-5 degrees
    assert m.objects["Angle"][2] == pytest.approx(135.0, abs=1e-4)


def test_non_consecutive_labels_and_dtypes():
    img = np.zeros((20, 20), np.int64)
    img[1:3, 1:4] = 1000  # 6 px
    img[10:15, 10:12] = 3  # 10 px
    img[17, 17] = 17  # 1 px
    m = measure(img)
    assert m.label_ids.tolist() == [3, 17, 1000]
    assert m.objects["Area"].tolist() == [10, 1, 6]
    assert m.whole == {"N": 3.0, "A_tot": 17.0}
    # huge, sparse ids take the relabelling path and give the same numbers
    big = np.where(img > 0, img + 2**40, 0)
    mb = measure(big)
    assert mb.label_ids.tolist() == [3 + 2**40, 17 + 2**40, 1000 + 2**40]
    for k in PARAMETERS_2D:
        np.testing.assert_array_equal(mb.objects[k], m.objects[k])
    assert measure(img.astype(np.uint16)).objects["Perim"].tolist() == \
        m.objects["Perim"].tolist()
    assert one(measure(img == 3))["Area"] == 10  # boolean mask = one object


def test_empty_images():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m2 = measure(np.zeros((16, 16), np.uint8))
        m3 = measure(np.zeros((4, 8, 8), np.int32))
    assert m2.whole == {"N": 0.0, "A_tot": 0.0}
    assert set(m2.objects) == set(PARAMETERS_2D)
    assert all(v.shape == (0,) and v.dtype == np.float64 for v in m2.objects.values())
    assert m2.centres.shape == (0, 2) and m2.label_ids.shape == (0,)
    assert m3.whole == {"N": 0.0, "V_tot": 0.0, "SA_tot": 0.0}
    assert m3.centres.shape == (0, 3)


def test_bad_input():
    with pytest.raises(ValueError):
        measure(np.zeros(5, int))
    with pytest.raises(TypeError):
        measure(np.zeros((5, 5)))
    with pytest.raises(ValueError):
        measure(-np.ones((5, 5), int))
    with pytest.raises(ValueError):
        measure(np.ones((5, 5), int), spacing=(2.0, 1.0))


# ------------------------------------------------------------------------------------------
# 3-D
# ------------------------------------------------------------------------------------------


def test_voxel_cube_volume_and_surface():
    s = 5
    vol = np.zeros((9, 10, 11), np.int32)
    vol[2:2 + s, 3:3 + s, 4:4 + s] = 9
    m = measure(vol)
    p = one(m)
    assert p["Volume"] == s ** 3
    # marching cubes at 0.5 on a binary cube: flat faces (s-1)^2 between the outer voxel
    # centres, a chamfer of width sqrt(1/2) along each of the 12 edges, and a triangle of
    # side sqrt(1/2) (area sqrt(3)/8) at each of the 8 corners
    sa = 6 * (s - 1) ** 2 + 12 * (s - 1) * math.sqrt(0.5) + 8 * math.sqrt(3) / 8
    assert p["SurfaceArea"] == pytest.approx(sa, rel=1e-6)
    np.testing.assert_allclose(m.centres, [[4.0, 5.0, 6.0]])
    assert m.whole == pytest.approx({"N": 1.0, "V_tot": 125.0, "SA_tot": sa})
    # one voxel: the octahedron of 8 such triangles
    one_voxel = np.zeros((3, 3, 3), np.int32)
    one_voxel[1, 1, 1] = 1
    assert one(measure(one_voxel))["SurfaceArea"] == pytest.approx(math.sqrt(3), rel=1e-6)
    # anisotropic voxels scale the volume
    assert one(measure(vol, spacing=(2.0, 0.5, 1.5)))["Volume"] == pytest.approx(125 * 1.5)


def test_ball():
    r = 10
    z, y, x = np.mgrid[-14:15, -14:15, -14:15]
    ball = (x * x + y * y + z * z <= r * r).astype(np.int32)
    p = one(measure(ball))
    assert p["Volume"] == pytest.approx(4 / 3 * math.pi * r ** 3, rel=0.01)
    # marching cubes on a *binary* mask follows the voxel staircase: its facets are limited
    # to a few lattice orientations, which overestimates a sphere's area by ~9 % at r = 10
    sa = 4 * math.pi * r ** 2
    assert sa < p["SurfaceArea"] < 1.12 * sa
    # the same ball with voxels twice as long along z, sampled on the stretched grid
    z2, y2, x2 = np.mgrid[-8:9, -14:15, -14:15]
    stretched = ((2 * z2) ** 2 + y2 * y2 + x2 * x2 <= r * r).astype(np.int32)
    q = one(measure(stretched, spacing=(2.0, 1.0, 1.0)))
    assert q["Volume"] == pytest.approx(4 / 3 * math.pi * r ** 3, rel=0.03)  # coarser in z
    assert sa < q["SurfaceArea"] < 1.15 * sa


def test_3d_labels_and_centres():
    vol = np.zeros((6, 12, 12), np.uint16)
    vol[1:3, 1:4, 1:3] = 40  # 12 voxels
    vol[4, 8, 8] = 5
    m = measure(vol)
    assert m.label_ids.tolist() == [5, 40]
    assert m.objects["Volume"].tolist() == [1.0, 12.0]
    np.testing.assert_allclose(m.centres, [[4, 8, 8], [1.5, 2.0, 1.5]])
    assert m.whole["N"] == 2 and m.whole["V_tot"] == 13
    assert m.whole["SA_tot"] == pytest.approx(m.objects["SurfaceArea"].sum())


# ------------------------------------------------------------------------------------------
# Tiles, subsets
# ------------------------------------------------------------------------------------------


def test_concat_of_tiles_equals_whole_image():
    img = np.zeros((64, 128), np.int32)
    img[0:64, 0:128] = 0
    img[5:30, 5:40] = ellipse_mask(12, 6, 20.0, size=81)[28:53, 23:58] * 1
    img[40:50, 70:90] = 2
    img[10:20, 100:105] = 3
    img[50:60, 20:25] = 4
    img[55, 60] = 5
    full = measure(img)
    left, right = measure(img[:, :64]), measure(img[:, 64:])
    merged = concat([left, right], [(0, 0), (0, 64)])
    same = Measurements.concat([left, right], [(0, 0), (0, 64)])
    assert merged.whole == full.whole == same.whole
    # match by label id (tiles keep their own ids; here they are unique)
    order = np.argsort(merged.label_ids)
    np.testing.assert_array_equal(merged.label_ids[order], full.label_ids)
    np.testing.assert_allclose(merged.centres[order], full.centres)
    for k in PARAMETERS_2D:
        np.testing.assert_allclose(merged.objects[k][order], full.objects[k], err_msg=k)
    # 3-D: tiles along z
    vol = np.zeros((10, 8, 8), np.int32)
    vol[1:3, 1:4, 1:4] = 1
    vol[6:9, 2:5, 3:6] = 2
    f3 = measure(vol)
    m3 = concat([measure(vol[:5]), measure(vol[5:])], [(0, 0, 0), (5, 0, 0)])
    assert m3.whole == pytest.approx(f3.whole)
    np.testing.assert_allclose(m3.centres, f3.centres)
    with pytest.raises(ValueError):
        concat([left], [(0, 0), (0, 64)])


def test_subset():
    img = np.zeros((20, 20), np.int32)
    img[1:3, 1:3] = 4
    img[10:13, 10:12] = 8
    img[15, 15] = 9
    m = measure(img)
    s = m.subset([2, 0, 0])
    assert s.label_ids.tolist() == [9, 4, 4]
    assert s.objects["Area"].tolist() == [1, 4, 4]
    np.testing.assert_allclose(s.centres, m.centres[[2, 0, 0]])
    assert s.whole == m.whole
    assert m.subset(np.array([False, True, False])).objects["Area"].tolist() == [6]


# ------------------------------------------------------------------------------------------
# Matching
# ------------------------------------------------------------------------------------------


def test_match_objects_exact_nearest_rejected():
    ref = np.array([[10.0, 10.0], [50.2, 50.0], [80.0, 80.0], [120.0, 5.0]])
    other = np.array([
        [80.0, 82.0],   # 2 px from ref 2 -> nearest
        [10.3, 9.8],    # same rounded pixel (10, 10) as ref 0 -> exact
        [50.0, 54.0],   # 4.005 px from ref 1 -> rejected
        [126.0, 5.0],   # 6 px from ref 3 -> rejected
    ])
    res = match_objects(ref, other)
    assert isinstance(res, MatchResult)
    assert res.index.tolist() == [1, -1, 0, -1]
    np.testing.assert_allclose(res.distance[[0, 2]], [math.hypot(0.3, 0.2), 2.0])
    assert np.isnan(res.distance[[1, 3]]).all()
    assert (res.n_exact, res.n_nearest, res.n_unmatched) == (1, 1, 2)
    assert res.unmatched_fraction == 0.5
    # a larger radius accepts ref 1 (4.005 px) but not ref 3 (6 px)
    res5 = match_objects(ref, other, max_distance=5.0)
    assert res5.index.tolist() == [1, 2, 0, -1]


def test_match_prefers_identical_pixel_and_is_not_one_to_one():
    # the identical-pixel object wins although another centre is nearer
    ref = np.array([[5.45, 5.0]])
    other = np.array([[5.55, 5.0], [5.0, 5.0]])  # rounds to (6, 5) / (5, 5)
    res = match_objects(ref, other)
    assert res.index.tolist() == [1] and res.n_exact == 1
    # two reference objects may share one counterpart (a merge)
    res2 = match_objects(np.array([[0.0, 0.0], [0.0, 2.0]]), np.array([[0.0, 1.0]]))
    assert res2.index.tolist() == [0, 0]
    assert (res2.n_exact, res2.n_nearest) == (0, 2)
    # 3-D centres
    res3 = match_objects(np.array([[1.0, 2.0, 3.0]]), np.array([[1.0, 2.0, 5.5]]))
    assert res3.index.tolist() == [0] and res3.distance[0] == pytest.approx(2.5)


def test_match_empty():
    none = np.zeros((0, 2))
    r = match_objects(none, np.ones((3, 2)))
    assert r.index.shape == (0,) and r.unmatched_fraction == 0.0
    r = match_objects(np.ones((3, 2)), none)
    assert r.index.tolist() == [-1, -1, -1] and r.n_unmatched == 3
    assert r.unmatched_fraction == 1.0


def test_match_measured_centres():
    img = np.zeros((40, 40), np.int32)
    img[2:8, 2:8] = 1
    img[20:26, 20:30] = 2
    moved = np.roll(img, 2, axis=1)
    res = match_objects(measure(img).centres, measure(moved).centres)
    assert res.index.tolist() == [0, 1] and res.n_nearest == 2
    np.testing.assert_allclose(res.distance, [2.0, 2.0])


# ------------------------------------------------------------------------------------------
# Instance metrics
# ------------------------------------------------------------------------------------------


def _scene(split_columns):
    """True: A (perfect), B (a 10x10 square), C (missed). Pred: A, and B cut at the columns."""
    true = np.zeros((20, 60), np.int32)
    true[2:12, 2:12] = 1  # A
    true[2:12, 20:30] = 2  # B
    true[14:18, 40:50] = 3  # C, not predicted
    pred = np.zeros_like(true)
    pred[2:12, 2:12] = 7
    edges = [20, *split_columns, 30]
    for i, (a, b) in enumerate(itertools.pairwise(edges)):
        pred[2:12, a:b] = 10 + i
    return true, pred


def test_instance_metrics_split_into_three():
    true, pred = _scene([24, 27])  # pieces of 4, 3, 3 columns: IoU 0.4, 0.3, 0.3
    r = instance_metrics(true, pred)
    assert (r["n_true"], r["n_pred"]) == (3, 4)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 3, 2)
    assert r["precision"] == pytest.approx(1 / 4)
    assert r["recall"] == pytest.approx(1 / 3)
    assert r["accuracy"] == pytest.approx(1 / 6)
    assert r["f1"] == pytest.approx(2 / 7)
    assert r["panoptic_quality"] == pytest.approx(1.0 / (1 + 3 / 2 + 2 / 2))
    assert r["mean_matched_iou"] == pytest.approx(1.0)


def test_instance_metrics_uneven_split():
    true, pred = _scene([26])  # pieces of 6 and 4 columns: IoU 0.6 (tp) and 0.4 (fp)
    r = instance_metrics(true, pred)
    assert (r["tp"], r["fp"], r["fn"]) == (2, 1, 1)
    assert r["precision"] == pytest.approx(2 / 3)
    assert r["recall"] == pytest.approx(2 / 3)
    assert r["accuracy"] == pytest.approx(2 / 4)
    assert r["f1"] == pytest.approx(4 / 6)
    assert r["panoptic_quality"] == pytest.approx((1.0 + 0.6) / (2 + 0.5 + 0.5))
    assert r["mean_matched_iou"] == pytest.approx(0.8)
    # 3-D: the same scene stacked twice along z gives the same IoUs
    r3 = instance_metrics(np.stack([true, true]), np.stack([pred, pred]))
    assert (r3["tp"], r3["fp"], r3["fn"]) == (2, 1, 1)


def test_instance_metrics_needs_optimal_assignment():
    # 1 x 20 strip: X = [0,10), Y = [10,20); P1 = [3,15), P2 = [0,3)
    # IoU(X,P1) = 7/15, IoU(Y,P1) = 5/17, IoU(X,P2) = 3/10. At threshold 0.29 greedy pairing
    # by IoU (X-P1) leaves Y alone; the optimum pairs X-P2 and Y-P1.
    true = np.zeros((1, 20), np.int32)
    true[0, :10], true[0, 10:] = 1, 2
    pred = np.zeros_like(true)
    pred[0, 3:15], pred[0, :3] = 1, 2
    r = instance_metrics(true, pred, iou_threshold=0.29)
    assert (r["tp"], r["fp"], r["fn"]) == (2, 0, 0)
    assert r["mean_matched_iou"] == pytest.approx((3 / 10 + 5 / 17) / 2)
    r = instance_metrics(true, pred, iou_threshold=0.4)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 1, 1)
    assert r["mean_matched_iou"] == pytest.approx(7 / 15)


def test_instance_metrics_empty():
    z = np.zeros((8, 8), np.int32)
    obj = z.copy()
    obj[2:4, 2:4] = 1
    r = instance_metrics(z, z)
    assert (r["n_true"], r["n_pred"], r["tp"]) == (0, 0, 0)
    assert r["f1"] == 0.0 and r["panoptic_quality"] == 0.0  # StarDist: 0/0 -> 0
    r = instance_metrics(obj, z)
    assert (r["tp"], r["fn"], r["recall"], r["precision"]) == (0, 1, 0.0, 0.0)
    r = instance_metrics(z, obj)
    assert (r["tp"], r["fp"], r["precision"]) == (0, 1, 0.0)
    r = instance_metrics(obj, obj)
    assert r["f1"] == 1.0 and r["panoptic_quality"] == 1.0
    with pytest.raises(ValueError):
        instance_metrics(z, z[:4])
