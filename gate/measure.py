"""What a segmentation is measured by: ImageJ / BioVoxxel shape parameters of every object.

:func:`measure` turns an integer label image (0 = background, any positive ids, not necessarily
consecutive) into :class:`Measurements`: whole-image values and one float64 array per per-object
parameter. The number of axes decides the kind of measurement: a 2-D array gets the 19 ImageJ
parameters of :data:`PARAMETERS_2D`, a 3-D array the volume parameters of :data:`PARAMETERS_3D`
(a 3-D array with a single plane is still measured as a volume; pass ``labels[0]`` for 2-D).

Every definition below is the one ImageJ's *Analyze Particles* (and BioVoxxel's *Extended
Particle Analyzer* for the last three) reports for an uncalibrated image, so the numbers can be
checked against Fiji; ε always compares the same definition on both sides.

2-D per-object parameters (pixel units; ``x`` = column, ``y`` = row, image ``y`` points down;
ImageJ coordinates put pixel ``(row, col)`` on the unit square ``[col, col+1] × [row, row+1]``)

=============  ==========================================================================
Area           pixel count [px²]
XCM, YCM       centre of mass of the pixel set in ImageJ coordinates, ``mean(col) + 0.5``,
               ``mean(row) + 0.5`` [px] (uniform weights: the mask's centre of mass)
Perim          ImageJ's traced perimeter [px] (``PolygonRoi.getTracedPerimeter``): the outer
               outline of the object is traced along pixel edges exactly as ImageJ's ``Wand``
               does for the particle analyzer (legacy thresholded mode, 8-connected, starting
               at the right end of the first run of the object's top row); with ``sumdx``,
               ``sumdy`` the summed side lengths of that polygon and ``nCorners`` its vertices
               counted by ImageJ's rule (a vertex counts unless the side arriving at it has
               length 1 and the previous vertex counted), ``Perim = sumdx + sumdy −
               nCorners·(2 − √2)``. Holes are not part of a wand outline: they add nothing.
               A w×h rectangle (w, h ≥ 2) gives ``2(w+h) − 4(2−√2)``; one pixel gives
               ``4 − 2(2−√2) = 2√2``; a 2×2 square ``8 − 4(2−√2)``.
Major, Minor   ImageJ's ``EllipseFitter``: central second moments of the pixel set plus 1/12
               per pixel (the pixel's own extent), the ellipse of those moments rescaled so
               that ``π·Major·Minor/4 = Area`` [px]. Objects whose bounding box is one pixel
               wide or high use ImageJ's maskless branch (``2w/√π``, ``2h/√π``), the same
               numbers up to rounding.
Angle          angle of the major axis [degrees, 0 ≤ Angle < 180], counter-clockwise from
               +x as seen on screen (a streak rising to the right has Angle < 90)
Circ           ``4π·Area/Perim²``, capped at 1
Feret          largest distance between two vertices of the convex hull of the pixel corners
               [px]; among equal distances the first pair in ImageJ's order wins (hull
               started at its top-left vertex, counter-clockwise on screen, pairs (i<j)
               scanned row-wise); for a rectangle this is the top-left → bottom-right diagonal
FeretX, FeretY start point of that diameter (its end with the smaller x; the first on a tie),
               an integer pixel-corner coordinate [px]
FeretAngle     ``atan2(y1 − y2, x2 − x1)`` of the diameter from (x1, y1) = (FeretX, FeretY) to
               its other end, in degrees folded into [0, 180)
MinFeret       minimum caliper width of the hull [px]: over all hull edges, the largest
               distance of a hull vertex from the edge's line, minimised (rotating calipers)
AR             ``Major/Minor``
Round          ``4·Area/(π·Major²)``
Solidity       ``Area / area of the convex-hull polygon`` (pixel count over polygon area)
FeretAR        ``Feret/MinFeret``
Compactness    ``sqrt(4·Area/π)/Major``
Extent         ``Area / (bounding-box width · height)`` (the pixel bounding box)
=============  ==========================================================================

2-D whole-image values: ``N`` (number of objects), ``A_tot`` (foreground pixels) [px²].

3-D per-object parameters (``spacing`` = voxel size along (z, row, col), default (1, 1, 1)):
``Volume`` = voxel count × voxel volume; ``SurfaceArea`` = area of the marching-cubes mesh
(``skimage.measure.marching_cubes`` at level 0.5 on the object's mask cropped to its bounding
box and padded by one voxel, then ``mesh_surface_area``), both in units of ``spacing``. Whole
volume: ``N``, ``V_tot`` = Σ Volume, ``SA_tot`` = Σ SurfaceArea. On a binary mask the mesh
follows the voxel staircase (a cube of s³ voxels gives 6(s−1)² + 6√2(s−1) + √3), so it
overestimates smooth surfaces: by about 9 % for a ball of radius 10 voxels.

Degenerate objects cannot produce NaN or inf: the hull is built on pixel *corners*, so it always
contains a unit square (Feret ≥ √2, MinFeret ≥ 1, hull area ≥ 1), the 1/12-per-pixel term keeps
Major, Minor > 0, and a traced outline has Perim ≥ 2√2. One pixel gives Area 1, Perim 2√2,
Major = Minor = 2/√π, Angle 0, Circ 1, Feret √2, FeretAngle 135, MinFeret 1, AR = Round =
Compactness = Solidity = Extent = 1, FeretAR √2.

A label is treated as one object even if it is not connected: Area, centre, moments, hull and
bounding box use all its pixels; the traced outline (Perim) is the one of its 8-connected part
that holds its first pixel in raster order (ImageJ would report each part as its own particle).

``centres`` (used for matching) are centres of mass in array-index coordinates, ``(row, col)``
or ``(z, row, col)``, without ImageJ's +0.5.

Nothing here does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy import ndimage
from scipy.spatial import ConvexHull
from skimage.measure import marching_cubes, mesh_surface_area

__all__ = [
    "PARAMETERS_2D",
    "PARAMETERS_3D",
    "WHOLE_2D",
    "WHOLE_3D",
    "Measurements",
    "concat",
    "measure",
]

#: The 19 ImageJ / BioVoxxel per-object parameters of a 2-D label image, in this order.
PARAMETERS_2D: tuple[str, ...] = (
    "Area", "XCM", "YCM", "Perim", "Major", "Minor", "Angle", "Circ", "Feret", "FeretX",
    "FeretY", "FeretAngle", "MinFeret", "AR", "Round", "Solidity", "FeretAR", "Compactness",
    "Extent",
)
#: Per-object parameters of a 3-D label image.
PARAMETERS_3D: tuple[str, ...] = ("Volume", "SurfaceArea")
#: Whole-image values of a 2-D label image.
WHOLE_2D: tuple[str, ...] = ("N", "A_tot")
#: Whole-volume values of a 3-D label image.
WHOLE_3D: tuple[str, ...] = ("N", "V_tot", "SA_tot")

# ImageJ's literal constants (EllipseFitter), kept so the numbers agree to the last digit.
_IJ_HALFPI = 1.5707963267949
_IJ_SQRT_PI = 1.772453851
_IJ_TWELFTH = 0.08333333
_CORNER_CUT = 2.0 - math.sqrt(2.0)
# Relabel to 1..n first when the largest id is this much larger than the number of pixels
# (find_objects and the lookup table allocate one entry per possible id).
_MAX_SPARSE_IDS = 1 << 22


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurements:
    """Measurements of one label image.

    Attributes
    ----------
    whole : dict[str, float]
        Whole-image values (:data:`WHOLE_2D` or :data:`WHOLE_3D`).
    objects : dict[str, numpy.ndarray]
        One float64 array of length ``n_objects`` per per-object parameter
        (:data:`PARAMETERS_2D` or :data:`PARAMETERS_3D`), in the order of ``label_ids``.
    centres : numpy.ndarray
        ``(n_objects, ndim)`` float64 centres of mass in array-index coordinates
        (``(row, col)`` or ``(z, row, col)``; pixel centres are integers, no +0.5).
    label_ids : numpy.ndarray
        ``(n_objects,)`` int64 label value of each object (ascending for :func:`measure`).
    ndim : int
        2 or 3.
    """

    whole: dict[str, float]
    objects: dict[str, np.ndarray]
    centres: np.ndarray
    label_ids: np.ndarray
    ndim: int

    @property
    def parameters(self) -> tuple[str, ...]:
        """Names of the per-object parameters, in order."""
        return tuple(self.objects)

    @property
    def n_objects(self) -> int:
        """Number of objects (rows of the per-object arrays)."""
        return int(self.label_ids.shape[0])

    def subset(self, idx: np.ndarray | Sequence[int]) -> Measurements:
        """The objects at positions ``idx`` (integer indices or a boolean mask).

        Per-object arrays, centres and label ids are indexed (repeats allowed, order kept);
        ``whole`` still describes the whole image and is copied unchanged.
        """
        idx = np.asarray(idx)
        if idx.dtype != bool:
            idx = idx.astype(np.intp, copy=False)
        return Measurements(
            whole=dict(self.whole),
            objects={k: v[idx] for k, v in self.objects.items()},
            centres=self.centres[idx],
            label_ids=self.label_ids[idx],
            ndim=self.ndim,
        )

    @classmethod
    def concat(cls, parts: Sequence[Measurements],
               offsets: Sequence[Sequence[float]]) -> Measurements:
        """Merge the measurements of several tiles; see :func:`concat`."""
        return concat(parts, offsets)


def concat(parts: Sequence[Measurements], offsets: Sequence[Sequence[float]]) -> Measurements:
    """Merge measurements of tiles of one image into measurements of the whole image.

    Parameters
    ----------
    parts : sequence of Measurements
        Measurements of each tile (all 2-D or all 3-D).
    offsets : sequence of sequences of float
        Origin of each tile in the full image [px], ``(row, col)`` or ``(z, row, col)``.

    Returns
    -------
    Measurements
        Whole-image values summed (``N``, ``A_tot`` / ``V_tot``, ``SA_tot``); per-object arrays
        concatenated in tile order; each tile's origin added to its ``centres`` and to the
        positional parameters ``XCM``, ``FeretX`` (+ column offset) and ``YCM``, ``FeretY``
        (+ row offset). Label ids are kept as they are in each tile (they may repeat).
        Objects cut by a tile border are measured as the tile saw them: tile so that objects
        of interest do not cross the cuts.
    """
    if len(parts) != len(offsets):
        raise ValueError(f"{len(parts)} tiles but {len(offsets)} offsets")
    if not parts:
        raise ValueError("concat needs at least one tile")
    ndim = parts[0].ndim
    if any(p.ndim != ndim for p in parts):
        raise ValueError("cannot concatenate 2-D and 3-D measurements")
    params = parts[0].parameters
    whole_keys = WHOLE_2D if ndim == 2 else WHOLE_3D
    offs = [np.asarray(o, dtype=np.float64).reshape(-1) for o in offsets]
    if any(o.shape != (ndim,) for o in offs):
        raise ValueError(f"each offset must have {ndim} values")
    whole = {k: float(sum(p.whole.get(k, 0.0) for p in parts)) for k in whole_keys}
    objects: dict[str, np.ndarray] = {}
    for name in params:
        arrays = []
        for p, o in zip(parts, offs):
            v = np.asarray(p.objects[name], dtype=np.float64)
            if name in ("XCM", "FeretX"):
                v = v + o[-1]
            elif name in ("YCM", "FeretY"):
                v = v + o[-2]
            arrays.append(v)
        objects[name] = np.concatenate(arrays)
    centres = np.concatenate([p.centres + o for p, o in zip(parts, offs)], axis=0)
    label_ids = np.concatenate([p.label_ids for p in parts]).astype(np.int64, copy=False)
    return Measurements(whole=whole, objects=objects, centres=centres, label_ids=label_ids,
                        ndim=ndim)


def _empty(ndim: int) -> Measurements:
    params = PARAMETERS_2D if ndim == 2 else PARAMETERS_3D
    whole_keys = WHOLE_2D if ndim == 2 else WHOLE_3D
    return Measurements(
        whole={k: 0.0 for k in whole_keys},
        objects={k: np.zeros(0, np.float64) for k in params},
        centres=np.zeros((0, ndim), np.float64),
        label_ids=np.zeros(0, np.int64),
        ndim=ndim,
    )


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def measure(labels: np.ndarray, *, spacing: Sequence[float] | None = None) -> Measurements:
    """Measure every object of a label image.

    Parameters
    ----------
    labels : numpy.ndarray
        2-D or 3-D integer (or boolean) label image; 0 is background, every other value one
        object (ids need not be consecutive). ``labels.ndim`` decides 2-D vs 3-D parameters.
    spacing : sequence of float, optional
        Voxel size along (z, row, col) for 3-D input [any length unit]; default (1, 1, 1).
        2-D parameters are always in pixel units (ImageJ, uncalibrated): for 2-D input only
        ``None`` or a unit spacing is accepted.

    Returns
    -------
    Measurements
        Objects in ascending label order. An image without objects gives ``N = 0``, totals 0
        and empty arrays.
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(f"labels must be 2-D or 3-D, got {labels.ndim}-D")
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be an integer label image, got dtype {labels.dtype}")
    if labels.ndim == 2:
        if spacing is not None and not np.allclose(np.asarray(spacing, float), 1.0):
            raise ValueError("2-D parameters are in pixel units; spacing must be None or 1")
        return _measure_2d(labels)
    sp = (1.0, 1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(s > 0 and math.isfinite(s) for s in sp):
        raise ValueError(f"spacing must be three positive numbers, got {spacing!r}")
    return _measure_3d(labels, sp)


def _prepare(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(lab, ids)``: an intp label image whose values index ``ids`` (original label values,
    ``ids[0]`` unused), relabelled to 1..n only when the ids are too sparse for lookup tables."""
    if labels.size == 0:
        return np.zeros(labels.shape, np.intp), np.zeros(1, np.int64)
    lo = labels.min()
    if lo < 0:
        raise ValueError("labels must be non-negative (0 = background)")
    hi = int(labels.max())
    if hi <= max(_MAX_SPARSE_IDS, 4 * labels.size):
        lab = np.ascontiguousarray(labels, dtype=np.intp)
        return lab, np.arange(hi + 1, dtype=np.int64)
    uniq, inv = np.unique(labels, return_inverse=True)
    if uniq[0] != 0:  # no background pixel at all: shift so that 0 stays background
        uniq = np.concatenate([[0], uniq])
        inv = inv + 1
    lab = np.ascontiguousarray(inv.reshape(labels.shape), dtype=np.intp)
    return lab, uniq.astype(np.int64)


def _object_table(lab: np.ndarray):
    """Bounding boxes of the present labels: ``(values, slices)``."""
    slices = ndimage.find_objects(lab)
    present = [i for i, s in enumerate(slices) if s is not None]
    values = np.asarray(present, dtype=np.intp) + 1
    return values, [slices[i] for i in present]


# --------------------------------------------------------------------------------------------
# 2-D
# --------------------------------------------------------------------------------------------


def _measure_2d(labels: np.ndarray) -> Measurements:
    lab, ids = _prepare(labels)
    values, slices = _object_table(lab)
    n = values.size
    if n == 0:
        return _empty(2)
    width = lab.shape[1]
    top = np.fromiter((s[0].start for s in slices), np.intp, n)
    bottom = np.fromiter((s[0].stop for s in slices), np.intp, n)
    left = np.fromiter((s[1].start for s in slices), np.intp, n)
    right = np.fromiter((s[1].stop for s in slices), np.intp, n)

    # Foreground pixels in raster order and the object each belongs to.
    lut = np.full(int(values[-1]) + 1, -1, np.intp)
    lut[values] = np.arange(n)
    flat = lab.ravel()
    fg = np.flatnonzero(flat)
    k = lut[flat[fg]]
    row, col = np.divmod(fg, width)
    # Moments in bounding-box coordinates, as ImageJ's EllipseFitter computes them; the sums
    # are integers, exact in float64.
    yl = row - top[k]
    xl = col - left[k]
    area = np.bincount(k, minlength=n).astype(np.float64)
    sx = np.bincount(k, xl, n)
    sy = np.bincount(k, yl, n)
    sxx = np.bincount(k, xl * xl, n)
    syy = np.bincount(k, yl * yl, n)
    sxy = np.bincount(k, xl * yl, n)
    mx = sx / area
    my = sy / area

    # Leftmost / rightmost pixel of every row of every object (local columns): the hull of the
    # pixel corners is the hull of these rows' outer corners.
    h_obj = bottom - top
    row_off = np.concatenate([[0], np.cumsum(h_obj)])
    key = row_off[k] + yl
    n_rows = int(row_off[-1])
    rmin = np.full(n_rows, np.iinfo(np.intp).max, np.intp)
    rmax = np.full(n_rows, -1, np.intp)
    np.minimum.at(rmin, key, xl)
    np.maximum.at(rmax, key, xl)

    # Traced perimeter: start at the object's first pixel in raster order (top row, leftmost).
    seed_x = rmin[row_off[:-1]] + left
    perim = _traced_perimeters(lab, values, seed_x, top, area.astype(np.int64))

    major, minor, angle = _ellipse(area, mx, my, sxx, syy, sxy, right - left, h_obj)

    feret = np.empty(n)
    feret_angle = np.empty(n)
    feret_x = np.empty(n)
    feret_y = np.empty(n)
    min_feret = np.empty(n)
    hull_area = np.empty(n)
    for i in range(n):
        a, b = row_off[i], row_off[i + 1]
        lo, hi = rmin[a:b], rmax[a:b]
        ok = hi >= 0  # rows without pixels (a label in several pieces)
        ys = np.nonzero(ok)[0]
        lo, hi = lo[ok], hi[ok] + 1
        px = np.concatenate([lo, lo, hi, hi]).astype(np.float64)
        py = np.concatenate([ys, ys + 1, ys, ys + 1]).astype(np.float64)
        hx, hy, hull_area[i] = _hull_imagej_order(px, py)
        f, fa, fx, fy = _feret(hx, hy)
        feret[i], feret_angle[i] = f, fa
        feret_x[i], feret_y[i] = fx + left[i], fy + top[i]
        min_feret[i] = _min_caliper(hx, hy)

    with np.errstate(divide="ignore", invalid="ignore"):
        circ = np.where(perim > 0, 4.0 * np.pi * area / (perim * perim), 0.0)
    circ = np.minimum(circ, 1.0)
    objects = {
        "Area": area,
        "XCM": mx + left + 0.5,
        "YCM": my + top + 0.5,
        "Perim": perim,
        "Major": major,
        "Minor": minor,
        "Angle": angle,
        "Circ": circ,
        "Feret": feret,
        "FeretX": feret_x,
        "FeretY": feret_y,
        "FeretAngle": feret_angle,
        "MinFeret": min_feret,
        "AR": major / minor,
        "Round": 4.0 * area / (np.pi * major * major),
        "Solidity": area / hull_area,
        "FeretAR": feret / min_feret,
        "Compactness": np.sqrt(4.0 * area / np.pi) / major,
        "Extent": area / ((right - left) * h_obj),
    }
    centres = np.column_stack([my + top, mx + left])
    whole = {"N": float(n), "A_tot": float(area.sum())}
    return Measurements(whole=whole, objects={p: objects[p] for p in PARAMETERS_2D},
                        centres=centres, label_ids=ids[values].astype(np.int64), ndim=2)


def _ellipse(area, mx, my, sxx, syy, sxy, bw, bh):
    """ImageJ ``EllipseFitter.getEllipseParam`` for every object: (major, minor, angle°).

    A line-by-line port (vectorised), literal constants included, so Angle matches ImageJ's
    branch choices for axis-aligned objects."""
    n = area.size
    x2 = (sxx + _IJ_TWELFTH * area) / area
    y2 = (syy + _IJ_TWELFTH * area) / area
    u20 = x2 - mx * mx
    u02 = y2 - my * my
    u11 = sxy / area - mx * my
    major = np.empty(n)
    minor = np.empty(n)
    angle = np.empty(n)
    for i in range(n):
        if bw[i] == 1 or bh[i] == 1:
            # ImageJ's particle analyzer sets no mask for 1-px-wide bounding boxes; the fitter
            # then uses the rectangle formula.
            ma = bw[i] * 2 / _IJ_SQRT_PI
            mi = bh[i] * 2 / _IJ_SQRT_PI
            ang = 0.0
            if ma < mi:
                ma, mi, ang = mi, ma, 90.0
            major[i], minor[i], angle[i] = ma, mi, ang
            continue
        m4 = 4.0 * abs(u02[i] * u20[i] - u11[i] * u11[i])
        m4 = max(m4, 0.000001)
        a11 = u02[i] / m4
        a12 = u11[i] / m4
        a22 = u20[i] / m4
        tmp = a11 - a22
        if tmp == 0.0:
            tmp = 0.000001
        theta = 0.5 * math.atan(2.0 * a12 / tmp)
        if theta < 0.0:
            theta += _IJ_HALFPI
        if a12 > 0.0:
            theta += _IJ_HALFPI
        elif a12 == 0.0:
            if a22 > a11:
                theta = 0.0
                a11, a22 = a22, a11
            elif a11 != a22:
                theta = _IJ_HALFPI
        tmp = math.sin(theta)
        if tmp == 0.0:
            tmp = 0.000001
        z = a12 * math.cos(theta) / tmp
        ma = math.sqrt(1.0 / abs(a22 + z))
        mi = math.sqrt(1.0 / abs(a11 - z))
        scale = math.sqrt(area[i] / (math.pi * ma * mi))
        ma *= scale * 2.0
        mi *= scale * 2.0
        ang = 180.0 * theta / math.pi
        if ang == 180.0:
            ang = 0.0
        if ma < mi:
            ma, mi = mi, ma
        major[i], minor[i], angle[i] = ma, mi, ang
    return major, minor, angle


def _hull_imagej_order(px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Convex hull of the points: ``(hx, hy, area)`` with the vertices in ImageJ's order
    (``FloatPolygon.getConvexHull``): starting at the vertex with the smallest y (then the
    smallest x), counter-clockwise on screen (y down), no collinear vertices."""
    hull = ConvexHull(np.column_stack([px, py]))
    v = hull.vertices[::-1]  # qhull: counter-clockwise in (x, y) = clockwise on screen
    hx, hy = px[v], py[v]
    m = v.size
    start = int(np.lexsort((hx, hy))[0])
    order = (np.arange(m) + start) % m
    return hx[order], hy[order], float(hull.volume)  # a 2-D hull's "volume" is its area


def _feret(hx: np.ndarray, hy: np.ndarray) -> tuple[float, float, float, float]:
    """ImageJ ``Roi.getFeretValues`` maximum diameter: (Feret, FeretAngle°, FeretX, FeretY)."""
    m = hx.size
    d2 = (hx[:, None] - hx[None, :]) ** 2 + (hy[:, None] - hy[None, :]) ** 2
    d2 = np.triu(d2, 1)  # only pairs i < j (distinct vertices: d² > 0), scanned like ImageJ
    p1, p2 = divmod(int(np.argmax(d2)), m)  # first maximum in row-major order
    if hx[p1] > hx[p2]:
        p1, p2 = p2, p1
    x1, y1, x2, y2 = hx[p1], hy[p1], hx[p2], hy[p2]
    ang = math.degrees(math.atan2(y1 - y2, x2 - x1))
    if ang < 0.0:
        ang += 180.0
    return math.sqrt(d2[min(p1, p2), max(p1, p2)]), ang, float(x1), float(y1)


def _min_caliper(hx: np.ndarray, hy: np.ndarray) -> float:
    """Minimum caliper width of a convex polygon (ImageJ's MinFeret): for every edge, the
    largest distance of a vertex from the edge's line; the smallest of these."""
    prev = np.arange(-1, hx.size - 1)
    ex = hx - hx[prev]
    ey = hy - hy[prev]
    norm = np.hypot(ex, ey)
    # distance of vertex j from the line through edge i (vertices i-1, i)
    dist = np.abs((hx[None, :] - hx[:, None]) * ey[:, None]
                  - (hy[None, :] - hy[:, None]) * ex[:, None]) / norm[:, None]
    return float(dist.max(axis=1).min())


# Hand-written: ImageJ's perimeter depends on the exact vertex sequence its Wand produces
# (start point, direction, 8-connected turning rule), which no library reproduces; a Python
# loop over every boundary vertex of thousands of objects would be too slow, hence numba.


@njit(cache=True)
def _inside(lab, x, y, value):
    if x < 0 or y < 0 or y >= lab.shape[0] or x >= lab.shape[1]:
        return False
    return lab[y, x] == value


@njit(cache=True)
def _inside_dir(lab, x, y, direction, value):
    d = direction & 3
    if d == 0:
        return _inside(lab, x, y, value)
    if d == 1:
        return _inside(lab, x, y - 1, value)
    if d == 2:
        return _inside(lab, x - 1, y - 1, value)
    return _inside(lab, x - 1, y, value)


@njit(cache=True)
def _wand_outline(lab, value, seed_x, seed_y, xs, ys):
    """ImageJ ``Wand.autoOutline`` (legacy thresholded mode, as the particle analyzer calls it)
    from an inside seed pixel: fills the outline's vertices (pixel corners) into xs, ys and
    returns their number."""
    x = seed_x
    y = seed_y
    x += 1
    while _inside(lab, x, y, value):
        x += 1
    # traceEdge(x, y, fourConnected=False); pixel (x, y) is outside, (x-1, y) inside
    if _inside(lab, x, y, value):
        start_dir = 1
    else:
        start_dir = 3
        y += 1
    sx = x
    sy = y
    direction = start_dir
    n = 0
    while True:
        nd = direction + 1
        while True:
            if _inside_dir(lab, x, y, nd, value):
                break
            nd -= 1
            if nd < direction:
                break
        if nd != direction:
            xs[n] = x
            ys[n] = y
            n += 1
        m = nd & 3
        if m == 0:
            x += 1
        elif m == 1:
            y -= 1
        elif m == 2:
            x -= 1
        else:
            y += 1
        direction = nd
        if x == sx and y == sy and (direction & 3) == start_dir:
            break
    if xs[0] != x:
        xs[n] = x
        ys[n] = y
        n += 1
    return n


@njit(cache=True)
def _traced_perimeter(xs, ys, n):
    """ImageJ ``PolygonRoi.getTracedPerimeter`` (uncalibrated) of an outline polygon."""
    if n < 4:
        return 0.0
    sumdx = 0
    sumdy = 0
    n_corners = 0
    dx1 = xs[0] - xs[n - 1]
    dy1 = ys[0] - ys[n - 1]
    side1 = abs(dx1) + abs(dy1)
    corner = False
    for i in range(n):
        nexti = i + 1
        if nexti == n:
            nexti = 0
        dx2 = xs[nexti] - xs[i]
        dy2 = ys[nexti] - ys[i]
        sumdx += abs(dx1)
        sumdy += abs(dy1)
        side2 = abs(dx2) + abs(dy2)
        if side1 > 1 or not corner:
            corner = True
            n_corners += 1
        else:
            corner = False
        dx1 = dx2
        dy1 = dy2
        side1 = side2
    return sumdx + sumdy - n_corners * (2.0 - math.sqrt(2.0))


@njit(cache=True)
def _traced_perimeters(lab, values, seed_x, seed_y, areas):
    n = values.shape[0]
    out = np.empty(n, np.float64)
    cap = 0
    for i in range(n):
        # an outline has at most 4 vertices per pixel (+ the closing one)
        cap = max(cap, 4 * areas[i] + 8)
    xs = np.empty(cap, np.int64)
    ys = np.empty(cap, np.int64)
    for i in range(n):
        m = _wand_outline(lab, values[i], seed_x[i], seed_y[i], xs, ys)
        out[i] = _traced_perimeter(xs, ys, m)
    return out


# --------------------------------------------------------------------------------------------
# 3-D
# --------------------------------------------------------------------------------------------


def _measure_3d(labels: np.ndarray, spacing: tuple[float, float, float]) -> Measurements:
    lab, ids = _prepare(labels)
    values, slices = _object_table(lab)
    n = values.size
    if n == 0:
        return _empty(3)
    lut = np.full(int(values[-1]) + 1, -1, np.intp)
    lut[values] = np.arange(n)
    flat = lab.ravel()
    fg = np.flatnonzero(flat)
    k = lut[flat[fg]]
    coords = np.unravel_index(fg, lab.shape)
    count = np.bincount(k, minlength=n).astype(np.float64)
    centres = np.column_stack([np.bincount(k, c, n) / count for c in coords])
    voxel = spacing[0] * spacing[1] * spacing[2]
    surface = np.empty(n)
    for i, (v, sl) in enumerate(zip(values, slices)):
        crop = np.pad(lab[sl] == v, 1).astype(np.float32)
        verts, faces, _, _ = marching_cubes(crop, level=0.5, spacing=spacing)
        surface[i] = mesh_surface_area(verts, faces)
    volume = count * voxel
    whole = {"N": float(n), "V_tot": float(volume.sum()), "SA_tot": float(surface.sum())}
    return Measurements(whole=whole, objects={"Volume": volume, "SurfaceArea": surface},
                        centres=centres, label_ids=ids[values].astype(np.int64), ndim=3)
