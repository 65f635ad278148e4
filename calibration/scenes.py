"""Simulated fluorescence scenes: photon-flux maps for the simulated sCMOS camera.

Each function returns the expected photon flux per pixel [photons/ms], shape ``(H, W)``,
float64, to pass to :func:`rawgate.calibration.simulation.render_frames` (which applies the
quantum efficiency, shot noise, dark current, read noise, gain and offset of the sensor). The
same arguments and seed give the same map, whatever the platform.

:data:`SIGNAL_LEVELS` holds three presets (low / medium / high light) chosen so that, with the
default sensor (QE 0.8) at :data:`DEFAULT_EXPOSURE_MS`, the background and the brightest cell
structures produce round numbers of photo-electrons (see the table there).

Benchmark scenes for the ε gate (``method.md``: the paper's microspheres in phase contrast, MPK
cells and light-sheet 3D nuclei) come with instance ground truth as a :class:`GroundTruthScene`:
:func:`microspheres`, :func:`dense_cells` and :func:`nuclei_3d`. :func:`sparse_labels` draws
the sparse brush-stroke annotations a person would paint in ilastik / napari / Fiji to train a
pixel classifier, and :func:`render_scene` turns a scene into raw frames through the sensor model.

Pure numpy/scipy; nothing here talks to cameras (only :func:`render_scene` renders noise, with
the caller's generator).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from math import erf, sqrt

import numpy as np
from scipy import ndimage

from .simulation import SensorTruth, render_frames

__all__ = [
    "DEFAULT_EXPOSURE_MS",
    "SIGNAL_LEVELS",
    "fluorescent_cells",
    "smooth_background",
    "GroundTruthScene",
    "microspheres",
    "dense_cells",
    "nuclei_3d",
    "dim_spots",
    "sparse_labels",
    "render_scene",
    "UNLABELLED",
    "BACKGROUND",
    "FOREGROUND",
]

#: Exposure the :data:`SIGNAL_LEVELS` presets are defined for [ms].
DEFAULT_EXPOSURE_MS = 10.0
#: Quantum efficiency the presets assume [e-/photon] (the simulated sensor's default).
_QE = 0.8


def _flux(electrons: float) -> float:
    """Photon flux [photons/ms] that yields ``electrons`` [e-] at the default exposure and QE."""
    return electrons / (_QE * DEFAULT_EXPOSURE_MS)


#: Light-level presets for :func:`fluorescent_cells`: keyword arguments ``background`` and
#: ``peak``, both photon fluxes [photons/ms per pixel]. At :data:`DEFAULT_EXPOSURE_MS` (10 ms)
#: and QE 0.8 they give, in photo-electrons per pixel per frame:
#:
#: ======== ============ ==============
#: level    background   brightest cell
#: ======== ============ ==============
#: low      3 e-         100 e-
#: medium   20 e-        1 500 e-
#: high     200 e-       15 000 e-
#: ======== ============ ==============
#:
#: (low: a live-cell experiment at minimal light dose, read noise comparable to the background;
#: high: half the full well of an ORCA-like sensor, 30 000 e-.)
SIGNAL_LEVELS: dict[str, dict[str, float]] = {
    "low": {"background": _flux(3.0), "peak": _flux(100.0)},
    "medium": {"background": _flux(20.0), "peak": _flux(1500.0)},
    "high": {"background": _flux(200.0), "peak": _flux(15000.0)},
}


def smooth_background(
    shape: tuple[int, int], *, seed: int, level: float, variation: float = 0.3, scale_px: float = 256.0
) -> np.ndarray:
    """A dim, smoothly varying background (out-of-focus light, autofluorescence, medium).

    Parameters
    ----------
    shape
        ``(H, W)`` [pixels].
    seed
        Seed of the random field.
    level
        Mean flux [photons/ms per pixel], ≥ 0.
    variation
        Peak-to-mean relative variation of the field (0.3: ±30 %), in [0, 1).
    scale_px
        Typical size of the variations [pixels].

    Returns
    -------
    ndarray
        ``(H, W)`` float64 flux [photons/ms per pixel], mean ≈ ``level``, everywhere ≥
        ``level · (1 − variation)``.
    """
    h, w = shape
    if level < 0:
        raise ValueError(f"level must be ≥ 0, got {level}")
    if not 0 <= variation < 1:
        raise ValueError(f"variation must be in [0, 1), got {variation}")
    rng = np.random.default_rng([seed, 0xB6])
    gh, gw = max(2, int(np.ceil(h / scale_px)) + 2), max(2, int(np.ceil(w / scale_px)) + 2)
    coarse = rng.standard_normal((gh, gw))
    field = ndimage.zoom(coarse, (h / gh * 1.0001, w / gw * 1.0001), order=3, mode="nearest")
    field = field[:h, :w]
    if field.shape != (h, w):  # zoom rounding: pad with edge values
        field = np.pad(field, ((0, h - field.shape[0]), (0, w - field.shape[1])), mode="edge")
    span = np.max(np.abs(field - field.mean())) or 1.0
    return level * (1.0 + variation * (field - field.mean()) / span)


def _soft_ellipse(yy, xx, cy, cx, ry, rx, angle, edge_px):
    """Inside (1) / outside (0) of a rotated ellipse with a soft edge of ~``edge_px`` pixels."""
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u = (c * dx + s * dy) / rx
    v = (-s * dx + c * dy) / ry
    r = np.sqrt(u * u + v * v)  # 1 on the boundary
    return 1.0 / (1.0 + np.exp((r - 1.0) * min(rx, ry) / max(edge_px, 1e-6)))


def fluorescent_cells(
    shape: tuple[int, int],
    *,
    seed: int,
    background: float,
    peak: float,
    n_cells: int | None = None,
    radius_px: float = 24.0,
    coverage: float = 0.3,
    psf_sigma_px: float = 1.5,
) -> np.ndarray:
    """Cells in a fluorescence micrograph: blurred ellipses with textured cytoplasm and bright
    nuclei on a dim, smooth background.

    Each cell is a rotated ellipse (semi-axes ``radius_px`` × 0.7–1.3, aspect up to 1.6) with a
    soft edge; its cytoplasm has a random brightness of 20–45 % of the cell's nucleus and a
    multiplicative granular texture (±25 %, ~2 px grains: vesicles, mitochondria); the nucleus
    is a smaller ellipse (40–55 % of the cell's axes, off-centre) of 70–100 % of ``peak`` with a
    faint chromatin texture and 0–2 brighter nucleoli. Overlapping cells take the brighter
    value. The whole cell layer is blurred by a Gaussian PSF and scaled so that its maximum is
    ``peak − background``; the background is :func:`smooth_background` (±30 %).

    Parameters
    ----------
    shape
        ``(H, W)`` [pixels].
    seed
        Seed; the same arguments and seed give the same map.
    background
        Mean background flux [photons/ms per pixel], ≥ 0.
    peak
        Flux at the brightest point of the scene [photons/ms per pixel], > ``background``.
    n_cells
        Number of cells; default: enough to cover ``coverage`` of the field.
    radius_px
        Mean cell semi-axis [pixels].
    coverage
        Fraction of the field covered by cells when ``n_cells`` is None.
    psf_sigma_px
        Standard deviation of the Gaussian point-spread function [pixels] (0: no blur).

    Returns
    -------
    ndarray
        ``(H, W)`` float64 photon flux [photons/ms per pixel], ≥ 0.

    Examples
    --------
    >>> from rawgate.calibration.scenes import SIGNAL_LEVELS, fluorescent_cells
    >>> flux = fluorescent_cells((256, 256), seed=1, **SIGNAL_LEVELS["medium"])
    >>> flux.shape
    (256, 256)
    """
    h, w = (int(v) for v in shape)
    if h < 1 or w < 1:
        raise ValueError(f"shape must be positive, got {shape}")
    if background < 0:
        raise ValueError(f"background must be ≥ 0, got {background}")
    if peak <= background:
        raise ValueError(f"peak ({peak}) must exceed background ({background})")
    if radius_px <= 1:
        raise ValueError(f"radius_px must be > 1, got {radius_px}")
    rng = np.random.default_rng([seed, 0xCE11])
    if n_cells is None:
        n_cells = max(1, round(coverage * h * w / (np.pi * radius_px**2)))

    # granular texture shared by all cells (cheaper than one per cell, statistically the same)
    grain = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), 2.0)
    grain *= 0.25 / max(float(grain.std()), 1e-12)
    chrom = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), 4.0)
    chrom *= 0.08 / max(float(chrom.std()), 1e-12)

    cells = np.zeros((h, w), np.float32)
    for _ in range(n_cells):
        r = radius_px * rng.uniform(0.7, 1.3)
        aspect = rng.uniform(1.0, 1.6)
        ry, rx = r / np.sqrt(aspect), r * np.sqrt(aspect)
        angle = rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        nuc = rng.uniform(0.7, 1.0)
        cyto = nuc * rng.uniform(0.20, 0.45)
        ext = int(np.ceil(max(rx, ry) + 4))
        y0, y1 = max(0, int(cy) - ext), min(h, int(cy) + ext + 1)
        x0, x1 = max(0, int(cx) - ext), min(w, int(cx) + ext + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        body = _soft_ellipse(yy, xx, cy, cx, ry, rx, angle, 1.5)
        ns = rng.uniform(0.40, 0.55)
        ncy = cy + rng.uniform(-0.2, 0.2) * ry
        ncx = cx + rng.uniform(-0.2, 0.2) * rx
        nucleus = _soft_ellipse(yy, xx, ncy, ncx, ry * ns, rx * ns, angle + rng.uniform(-0.3, 0.3), 1.0)
        value = body * cyto * (1.0 + grain[y0:y1, x0:x1])
        value = value * (1.0 - nucleus) + nucleus * nuc * (1.0 + chrom[y0:y1, x0:x1])
        for _n in range(int(rng.integers(0, 3))):  # nucleoli
            a = rng.uniform(0, 2 * np.pi)
            d = rng.uniform(0, 0.5)
            py = ncy + d * ry * ns * np.sin(a)
            px = ncx + d * rx * ns * np.cos(a)
            pr = max(1.5, 0.12 * r)
            value += nucleus * 0.25 * nuc * _soft_ellipse(yy, xx, py, px, pr, pr, 0.0, 0.7)
        np.maximum(cells[y0:y1, x0:x1], value, out=cells[y0:y1, x0:x1])

    np.maximum(cells, 0.0, out=cells)
    if psf_sigma_px > 0:
        cells = ndimage.gaussian_filter(cells, psf_sigma_px)
    top = float(cells.max())
    bg = smooth_background((h, w), seed=seed, level=background)
    if top <= 0:
        return bg
    return bg + cells.astype(np.float64) * ((peak - background) / top)


# ---------------------------------------------------------------------------------------------
# Benchmark scenes with instance ground truth (for the ε gate's segmentation models)
# ---------------------------------------------------------------------------------------------

#: Values of :func:`sparse_labels` annotations.
UNLABELLED, BACKGROUND, FOREGROUND = 0, 1, 2


@dataclass(frozen=True, eq=False)
class GroundTruthScene:
    """A simulated sample with its instance ground truth.

    Attributes
    ----------
    flux
        Expected photon flux [photons/ms per pixel], float64, ``(H, W)`` or ``(Z, H, W)``
        (3-D: one plane per z-slice, each imaged by the same 2-D sensor).
    labels
        Ground-truth instance labels, int32, same shape as ``flux``: 0 = background, 1..N the
        objects (consecutive).
    exposure_ms
        Exposure the scene's light levels are defined for [ms] (:data:`DEFAULT_EXPOSURE_MS`);
        ``flux · exposure_ms · QE`` is the expected photo-electrons per pixel per frame.
    name
        Short name (``"microspheres"``, ``"dense cells"``, ``"nuclei 3d"``).
    description
        One line on what was drawn and with which parameters.
    """

    flux: np.ndarray
    labels: np.ndarray
    exposure_ms: float
    name: str
    description: str

    @property
    def ndim(self) -> int:
        """2 for an image, 3 for a stack."""
        return self.flux.ndim

    @property
    def n_objects(self) -> int:
        """Number of ground-truth objects."""
        return int(self.labels.max(initial=0))

    @property
    def coverage(self) -> float:
        """Fraction of pixels (voxels) inside an object."""
        return float(np.count_nonzero(self.labels)) / max(self.labels.size, 1)

    def electrons(self, quantum_efficiency: float = _QE) -> np.ndarray:
        """Expected photo-electrons per pixel per frame [e-] at :attr:`exposure_ms`."""
        return self.flux * (quantum_efficiency * self.exposure_ms)


def _check_shape(shape, ndim: int) -> tuple[int, ...]:
    shape = tuple(int(v) for v in shape)
    if len(shape) != ndim or min(shape) < 1:
        raise ValueError(f"shape must be {ndim} positive sizes, got {shape}")
    return shape


def _check_range(name: str, value, lo: float = 0.0) -> tuple[float, float]:
    a, b = (float(v) for v in np.broadcast_to(np.asarray(value, float), (2,)))
    if not lo <= a <= b:
        raise ValueError(f"{name} must be an increasing pair ≥ {lo}, got {value}")
    return a, b


def _random_sequential(rng, n_target, lo, hi, draw, gap, r_max, max_attempts):
    """Random sequential addition of non-overlapping balls (grid hashing, no full-frame work).

    ``draw()`` returns ``(bounding_radius, params)``; centres are uniform in ``[lo, hi]`` (per
    axis, physical units). Two accepted balls are at least ``r1 + r2 + gap`` apart. Returns the
    accepted centres ``(n, d)``, bounding radii ``(n,)`` and the list of params.
    """
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    d = lo.size
    cell = 2.0 * r_max + gap
    grid: dict[tuple[int, ...], list[int]] = {}
    offsets = list(product((-1, 0, 1), repeat=d))
    centres: list[np.ndarray] = []
    radii: list[float] = []
    params: list = []
    attempts = 0
    while len(centres) < n_target and attempts < max_attempts:
        attempts += 1
        r, p = draw()
        c = lo + rng.random(d) * (hi - lo)
        key = tuple(int(k) for k in np.floor(c / cell))
        ok = True
        for off in offsets:
            for j in grid.get(tuple(k + o for k, o in zip(key, off)), ()):
                if np.sum((c - centres[j]) ** 2) < (r + radii[j] + gap) ** 2:
                    ok = False
                    break
            if not ok:
                break
        if ok:
            grid.setdefault(key, []).append(len(centres))
            centres.append(c)
            radii.append(r)
            params.append(p)
    return np.reshape(np.asarray(centres, float), (-1, d)), np.asarray(radii, float), params


def _discs_for_coverage(coverage: float, area_px: int, r_lo: float, r_hi: float) -> int:
    """How many discs of radius uniform in ``[r_lo, r_hi]`` cover ``coverage`` of ``area_px``
    on average (E[r²] of the uniform radius), at least one."""
    mean_r2 = (r_hi**3 - r_lo**3) / (3 * (r_hi - r_lo)) if r_hi > r_lo else r_lo**2
    return max(1, round(coverage * area_px / (np.pi * mean_r2)))


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + erf(x / sqrt(2.0)))


def microspheres(
    shape: tuple[int, int],
    *,
    seed: int,
    n_spheres: int | None = None,
    radius_px: tuple[float, float] = (5.0, 9.0),
    background_e: float = 800.0,
    contrast: tuple[float, float] = (0.45, 0.60),
    halo: tuple[float, float] = (1.30, 1.50),
    halo_width_px: float = 2.0,
    coverage: float = 0.065,
    min_gap_px: float = 4.0,
    psf_sigma_px: float = 1.0,
    background_variation: float = 0.05,
) -> GroundTruthScene:
    """Sparse microspheres in phase contrast (transmitted light): dark discs with bright halos.

    The background is bright and nearly uniform (:func:`smooth_background`, ±5 %). Each
    sphere, radius uniform in ``radius_px``, is a dark disc whose interior is a fraction
    (uniform in ``contrast``) of the local background, surrounded by the phase-contrast halo:
    a bright ring ``halo_width_px`` wide. Sphere edges are anti-aliased (pixel-area coverage),
    then the pattern is blurred by a Gaussian PSF. The ring's pre-blur level is raised so that
    after the blur its peak is ≈ the value drawn from ``halo`` (relative to background). Sphere
    centres are placed by random sequential addition: no two spheres closer than
    ``r1 + r2 + min_gap_px``, and every sphere (with its halo) lies wholly inside the field.

    Parameters
    ----------
    shape
        ``(H, W)`` [pixels].
    seed
        Seed; the same arguments and seed give the same scene.
    n_spheres
        Number of spheres; default: enough to cover ``coverage`` of the field with dark discs
        (fewer if the field cannot hold them).
    radius_px
        Range of sphere radii [pixels] (uniform).
    background_e
        Mean background level [photo-electrons per pixel per frame] at
        :data:`DEFAULT_EXPOSURE_MS` and QE 0.8.
    contrast
        Range of the interior level relative to the background (uniform per sphere).
    halo
        Range of the halo's peak level (after the PSF) relative to the background.
    halo_width_px
        Width of the halo ring [pixels].
    coverage
        Target fraction of the field inside spheres when ``n_spheres`` is None.
    min_gap_px
        Minimum free distance between two spheres' edges [pixels].
    psf_sigma_px
        Standard deviation of the Gaussian PSF [pixels] (0: no blur).
    background_variation
        Peak-to-mean relative variation of the illumination, in [0, 1).

    Returns
    -------
    GroundTruthScene
        ``flux`` ``(H, W)`` [photons/ms per pixel]; ``labels``: pixels whose centre lies inside
        a sphere's radius (the dark disc), one label per sphere.

    Examples
    --------
    >>> s = microspheres((256, 256), seed=1)
    >>> s.flux.shape, s.labels.dtype.name
    ((256, 256), 'int32')
    """
    h, w = _check_shape(shape, 2)
    r_lo, r_hi = _check_range("radius_px", radius_px, 0.5)
    c_lo, c_hi = _check_range("contrast", contrast)
    h_lo, h_hi = _check_range("halo", halo)
    if background_e <= 0:
        raise ValueError(f"background_e must be > 0, got {background_e}")
    if halo_width_px < 0 or min_gap_px < 0 or psf_sigma_px < 0:
        raise ValueError("halo_width_px, min_gap_px and psf_sigma_px must be ≥ 0")
    rng = np.random.default_rng([seed, 0x5FE8E])
    if n_spheres is None:
        n_spheres = _discs_for_coverage(coverage, h * w, r_lo, r_hi)
    margin = r_hi + halo_width_px + 1.0
    lo, hi = np.array([margin, margin]), np.array([h - 1 - margin, w - 1 - margin])
    if np.any(hi < lo):
        raise ValueError(f"shape {shape} too small for spheres of radius {r_hi}")

    def draw():
        r = rng.uniform(r_lo, r_hi)
        return r + halo_width_px, (r, rng.uniform(c_lo, c_hi), rng.uniform(h_lo, h_hi))

    centres, _, params = _random_sequential(
        rng, int(n_spheres), lo, hi, draw, max(min_gap_px - 2 * halo_width_px, 0.0),
        r_hi + halo_width_px, 100 * int(n_spheres) + 1000,
    )

    # Pre-blur ring excess so that the blurred ring's peak (1-D profile across the ring
    # centre: ring box ± w/2, dark interior beyond) reaches the drawn halo level.
    if psf_sigma_px > 0 and halo_width_px > 0:
        half = halo_width_px / 2 / psf_sigma_px
        ring_gain = 2 * _norm_cdf(half) - 1
        interior_leak = _norm_cdf(-half)
    else:
        ring_gain, interior_leak = 1.0, 0.0

    pattern = np.ones((h, w), np.float64)  # transmitted light relative to background
    labels = np.zeros((h, w), np.int32)
    for i, ((cy, cx), (r, c, hl)) in enumerate(zip(centres, params), start=1):
        ring = 1.0 + (hl - 1.0 - (c - 1.0) * interior_leak) / ring_gain if halo_width_px > 0 else 1.0
        ext = int(np.ceil(r + halo_width_px + 1))
        y0, y1 = max(0, int(cy) - ext), min(h, int(cy) + ext + 2)
        x0, x1 = max(0, int(cx) - ext), min(w, int(cx) + ext + 2)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        inner = np.clip(r - d + 0.5, 0.0, 1.0)  # ≈ pixel area inside the sphere
        outer = np.clip(r + halo_width_px - d + 0.5, 0.0, 1.0)
        pattern[y0:y1, x0:x1] += (c - 1.0) * inner + (ring - 1.0) * (outer - inner)
        labels[y0:y1, x0:x1][d < r] = i
    if psf_sigma_px > 0:
        pattern = ndimage.gaussian_filter(pattern, psf_sigma_px, mode="nearest")
    bg = smooth_background((h, w), seed=seed, level=_flux(background_e),
                           variation=background_variation, scale_px=512.0)
    flux = np.maximum(bg * pattern, 0.0)
    n = len(centres)
    return GroundTruthScene(
        flux=flux,
        labels=labels,
        exposure_ms=DEFAULT_EXPOSURE_MS,
        name="microspheres",
        description=(
            f"{n} phase-contrast microspheres, r {r_lo:g}–{r_hi:g} px, interior "
            f"{c_lo:.0%}–{c_hi:.0%} and halo {h_lo:.0%}–{h_hi:.0%} of a {background_e:g} e- "
            f"background, PSF σ {psf_sigma_px:g} px, seed {seed}"
        ),
    )


def _smooth_noise(rng, shape, scale_px: float, down: int | None = None) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (float32) with correlation length ~``scale_px``,
    drawn on a coarse grid and zoomed (cheap for large scales)."""
    down = max(1, int(scale_px // 3)) if down is None else down
    small = tuple(max(4, -(-s // down) + 2) for s in shape)
    f = rng.standard_normal(small, dtype=np.float32)
    f = ndimage.gaussian_filter(f, scale_px / down, mode="wrap")
    if down > 1:
        f = ndimage.zoom(f, down, order=1, mode="nearest", grid_mode=False)
    f = f[tuple(slice(0, s) for s in shape)].astype(np.float32)
    f -= f.mean()
    f /= max(float(f.std()), 1e-12)
    return f


def dense_cells(
    shape: tuple[int, int],
    *,
    seed: int,
    radius_px: float = 40.0,
    background_e: float = 20.0,
    cell_e: float = 800.0,
    brightness_spread: float = 0.3,
    brightness_log_sd: float = 0.0,
    gap_px: tuple[float, float] = (2.0, 4.0),
    drop_fraction: float = 0.12,
    jitter: float = 0.3,
    wobble_px: float = 2.5,
    texture: float = 0.15,
    psf_sigma_px: float = 1.0,
) -> GroundTruthScene:
    """A dense monolayer of large fluorescent cells (MPK-like), separated by thin dark gaps.

    Cells are the Voronoi cells of a jittered hexagonal lattice of seeds (mean cell area
    ``π·radius_px²``), with boundaries made wavy by a smooth random displacement field
    (rms ``wobble_px``, ~25 px correlation length). Each cell is eroded from its boundaries by
    half of its gap (uniform in ``gap_px / 2``), so neighbours are separated by 2–4 px of dark
    background by default; a fraction ``drop_fraction`` of the cells is removed (holes: exactly
    that fraction of the cells seeded inside the field), as are fragments smaller than 10 % of
    the mean area. Cells cut by the field's edge stay. With the defaults the cells cover
    ~81 % of the field (75–85 % on a 384² field and up).

    A cell's cytoplasm (the stained compartment) has a brightness uniform in
    ``cell_e · (1 ± brightness_spread)``, times ``exp(z)``, ``z ~ N(0, brightness_log_sd²)``
    (cell-to-cell expression heterogeneity: at 1.0 the brightest of a few dozen cells is
    ~10× the median and the dimmest a tenth of it, as in transfected or reporter lines), dims by up to 40 % within ~3 px of its edge (thinner
    cytoplasm), is 30 % dimmer over an off-centre elliptical nucleus, and carries a
    multiplicative texture (std ``texture``, 2 px and 8 px grains). The cell layer is blurred
    by a Gaussian PSF and added to a smooth background (±30 %).

    Parameters
    ----------
    shape
        ``(H, W)`` [pixels].
    seed
        Seed; the same arguments and seed give the same scene.
    radius_px
        Radius of a disc with the mean cell area [pixels].
    background_e
        Mean background level [photo-electrons per pixel per frame] (at
        :data:`DEFAULT_EXPOSURE_MS`, QE 0.8).
    cell_e
        Mean cell brightness [photo-electrons per pixel per frame], before texture and PSF.
    brightness_spread
        Relative half-range of the per-cell brightness, in [0, 1).
    brightness_log_sd
        Standard deviation of the log of a log-normal brightness factor per cell, ≥ 0
        (0: none; drawn from a separate stream, so the scene is otherwise unchanged).
    gap_px
        Range of the dark gap between two neighbouring cells [pixels].
    drop_fraction
        Fraction of the cells removed, leaving background holes, in [0, 1).
    jitter
        Seed jitter as a fraction of the lattice spacing (0: a perfect honeycomb), in [0, 0.5).
    wobble_px
        RMS displacement that makes the boundaries wavy [pixels] (0: straight polygons).
    texture
        Standard deviation of the multiplicative cytoplasm texture, in [0, 0.5].
    psf_sigma_px
        Standard deviation of the Gaussian PSF [pixels] (0: no blur).

    Returns
    -------
    GroundTruthScene
        ``flux`` ``(H, W)`` [photons/ms per pixel]; ``labels``: the eroded cell masks, one
        label per 8-connected cell.
    """
    h, w = _check_shape(shape, 2)
    if radius_px <= 2:
        raise ValueError(f"radius_px must be > 2, got {radius_px}")
    g_lo, g_hi = _check_range("gap_px", gap_px)
    if not 0 <= brightness_spread < 1 or not 0 <= drop_fraction < 1 or not 0 <= jitter < 0.5:
        raise ValueError("brightness_spread and drop_fraction must be in [0, 1), jitter in [0, 0.5)")
    if not 0 <= texture <= 0.5 or background_e < 0 or cell_e <= 0:
        raise ValueError("texture must be in [0, 0.5], background_e ≥ 0 and cell_e > 0")
    if not 0 <= brightness_log_sd <= 3:
        raise ValueError(f"brightness_log_sd must be in [0, 3], got {brightness_log_sd}")
    rng = np.random.default_rng([seed, 0xCE115])

    # Voronoi cells of a jittered honeycomb on a padded canvas (border cells are whole cells
    # cut by the field, not Voronoi artefacts of the frame)
    a = radius_px * np.sqrt(2 * np.pi / np.sqrt(3))  # lattice spacing for area π r²
    pad = int(np.ceil(a + 4 * wobble_px + 2))
    hc, wc = h + 2 * pad, w + 2 * pad
    dy_row = a * np.sqrt(3) / 2
    rows = np.arange(int(np.ceil(hc / dy_row)) + 1)
    cols = np.arange(int(np.ceil(wc / a)) + 2)
    sy = np.repeat(rows * dy_row, cols.size)
    sx = (cols[None, :] * a + 0.5 * a * (rows[:, None] % 2) - 0.5 * a).ravel()
    sy = sy + rng.uniform(-jitter, jitter, sy.size) * a
    sx = sx + rng.uniform(-jitter, jitter, sx.size) * a
    keep = (sy >= 0) & (sy <= hc - 1) & (sx >= 0) & (sx <= wc - 1)
    sy, sx = sy[keep], sx[keep]
    n = sy.size
    seeds = np.zeros((hc, wc), np.int32)
    seeds[np.rint(sy).astype(int), np.rint(sx).astype(int)] = np.arange(1, n + 1, dtype=np.int32)
    iy, ix = ndimage.distance_transform_edt(seeds == 0, return_distances=False, return_indices=True)
    voronoi = seeds[iy, ix]
    del iy, ix

    # wavy boundaries: sample the Voronoi map at smoothly displaced coordinates
    yy = np.arange(h, dtype=np.float32)[:, None] + pad
    xx = np.arange(w, dtype=np.float32)[None, :] + pad
    if wobble_px > 0:
        yy = yy + wobble_px * _smooth_noise(rng, (h, w), 25.0)
        xx = xx + wobble_px * _smooth_noise(rng, (h, w), 25.0)
    yy, xx = np.broadcast_arrays(yy, xx)
    cell = voronoi[np.clip(np.rint(yy), 0, hc - 1).astype(np.intp),
                   np.clip(np.rint(xx), 0, wc - 1).astype(np.intp)]
    del voronoi

    # per-cell properties (index = Voronoi label; 0 unused)
    f32 = np.float32
    level = _flux(cell_e) * rng.uniform(1 - brightness_spread, 1 + brightness_spread, n + 1)
    if brightness_log_sd > 0:
        level = level * np.exp(np.random.default_rng([seed, 0xB417]).normal(0.0, brightness_log_sd, n + 1))
    level = level.astype(f32)
    half_gap = rng.uniform(g_lo / 2, g_hi / 2, n + 1).astype(f32)
    # drop exactly round(drop_fraction · n) of the cells seeded inside the field (low variance
    # of the coverage on small fields); cells seeded in the margin drop at random
    alive = rng.random(n + 1) >= drop_fraction
    in_field = np.flatnonzero((sy >= pad) & (sy < pad + h) & (sx >= pad) & (sx < pad + w)) + 1
    alive[in_field] = True
    alive[rng.choice(in_field, round(drop_fraction * in_field.size), replace=False)] = False
    nuc_r = (radius_px * rng.uniform(0.30, 0.40, n + 1)).astype(f32)
    nuc_aspect = np.sqrt(rng.uniform(1.0, 1.6, n + 1)).astype(f32)
    nuc_angle = rng.uniform(0, np.pi, n + 1)
    nuc_dy = rng.uniform(-0.15, 0.15, n + 1) * radius_px
    nuc_dx = rng.uniform(-0.15, 0.15, n + 1) * radius_px
    sy0 = (np.concatenate([[0.0], sy]) + nuc_dy).astype(f32)
    sx0 = (np.concatenate([[0.0], sx]) + nuc_dx).astype(f32)
    nuc_cos, nuc_sin = np.cos(nuc_angle).astype(f32), np.sin(nuc_angle).astype(f32)
    nuc_ia, nuc_ib = 1 / (nuc_r * nuc_aspect), nuc_aspect / nuc_r
    nuc_edge = nuc_r / f32(1.5)

    # distance to the cell boundaries; erode every cell by its half gap
    band = np.zeros((h, w), bool)
    d0 = cell[1:, :] != cell[:-1, :]
    band[1:, :] |= d0
    band[:-1, :] |= d0
    d1 = cell[:, 1:] != cell[:, :-1]
    band[:, 1:] |= d1
    band[:, :-1] |= d1
    depth = ndimage.distance_transform_edt(~band).astype(np.float32) + 0.5 - half_gap[cell]
    inside = (depth > 0) & alive[cell]
    labels, n_comp = ndimage.label(inside, structure=np.ones((3, 3), bool))
    area = np.bincount(labels.ravel(), minlength=n_comp + 1)
    ok = area >= 0.1 * np.pi * radius_px**2
    ok[0] = False
    relabel = np.zeros(n_comp + 1, np.int32)
    relabel[ok] = np.arange(1, int(ok.sum()) + 1, dtype=np.int32)
    labels = relabel[labels]

    # cytoplasm: level × edge dimming × nucleus × texture
    value = level[cell]
    value *= 1 - f32(0.4) * np.exp(np.maximum(depth, 0) / f32(-3.0))
    cy, cx = yy - sy0[cell], xx - sx0[cell]
    ca, sa = nuc_cos[cell], nuc_sin[cell]
    u = (ca * cx + sa * cy) * nuc_ia[cell]
    v = (ca * cy - sa * cx) * nuc_ib[cell]
    rho = np.sqrt(u * u + v * v)
    arg = np.clip((rho - 1) * nuc_edge[cell], -50, 50)
    value *= 1 - f32(0.3) / (1 + np.exp(arg))
    del cy, cx, ca, sa, u, v, rho, arg, depth
    grain = _smooth_noise(rng, (h, w), 2.0, down=1)
    grain += _smooth_noise(rng, (h, w), 8.0)
    value *= 1 + f32(texture / np.sqrt(2.0)) * grain
    value[labels == 0] = 0.0
    np.maximum(value, 0.0, out=value)
    if psf_sigma_px > 0:
        value = ndimage.gaussian_filter(value, psf_sigma_px)
    flux = smooth_background((h, w), seed=seed, level=_flux(background_e)) + value.astype(np.float64)
    return GroundTruthScene(
        flux=flux,
        labels=labels,
        exposure_ms=DEFAULT_EXPOSURE_MS,
        name="dense cells",
        description=(
            f"{int(ok.sum())} dense fluorescent cells (MPK-like), r {radius_px:g} px, gaps "
            f"{g_lo:g}–{g_hi:g} px, {drop_fraction:.0%} dropped, {cell_e:g} e- "
            f"±{brightness_spread:.0%}" + (f" × log-normal (sd {brightness_log_sd:g})" if brightness_log_sd else "") + f" on {background_e:g} e-, PSF σ {psf_sigma_px:g} px, seed {seed}"
        ),
    )


def nuclei_3d(
    shape: tuple[int, int, int] = (32, 512, 512),
    *,
    seed: int,
    radius_px: tuple[float, float] = (5.0, 8.0),
    z_anisotropy: float = 2.0,
    density: float = 0.1,
    n_nuclei: int | None = None,
    background_e: float = 30.0,
    peak_e: float = 800.0,
    min_gap_px: float = 2.0,
    texture: float = 0.15,
    psf_sigma_px: tuple[float, float] = (1.5, 1.0),
) -> GroundTruthScene:
    """A light-sheet-like stack of cell nuclei: textured, non-overlapping ellipsoids.

    Each nucleus has an in-plane radius ``r`` uniform in ``radius_px`` (physical size, in
    x-y pixels), an in-plane aspect up to 1.3 at a random angle and a z semi-axis of
    ``r · U(0.85, 1.1)``; in voxels the z semi-axis is divided by ``z_anisotropy`` (the z
    step over the pixel size). Centres are anywhere in the stack (nuclei may be cut by its
    faces); bounding spheres (physical units) keep ``min_gap_px`` apart. Brightness per
    nucleus is uniform in 50–100 % with a multiplicative chromatin texture (std ``texture``);
    edges are anti-aliased. The stack is blurred by an anisotropic Gaussian PSF, scaled so
    that its brightest voxel is ``peak_e`` with the background, and added to a smooth
    background (±30 % in x-y, ±10 % along z).

    Parameters
    ----------
    shape
        ``(Z, H, W)`` [voxels]; ``(H, W)`` must match the sensor it is rendered through.
    seed
        Seed; the same arguments and seed give the same stack.
    radius_px
        Range of nuclear radii [x-y pixels].
    z_anisotropy
        z step / pixel size (≥ 1 for a light-sheet stack).
    density
        Target fraction of the volume inside nuclei when ``n_nuclei`` is None.
    n_nuclei
        Number of nuclei (fewer if they do not fit).
    background_e, peak_e
        Mean background and brightest voxel [photo-electrons per voxel per frame] at
        :data:`DEFAULT_EXPOSURE_MS`, QE 0.8.
    min_gap_px
        Minimum free distance between bounding spheres [x-y pixels].
    texture
        Std of the multiplicative chromatin texture, in [0, 0.5].
    psf_sigma_px
        ``(σ_z, σ_xy)`` of the Gaussian PSF [voxels]; light-sheet: σ_z > σ_xy.

    Returns
    -------
    GroundTruthScene
        ``flux`` ``(Z, H, W)`` [photons/ms per voxel]; ``labels``: voxels whose centre lies
        inside an ellipsoid.
    """
    zd, h, w = _check_shape(shape, 3)
    r_lo, r_hi = _check_range("radius_px", radius_px, 0.5)
    if z_anisotropy <= 0 or not 0 < density < 0.5:
        raise ValueError("z_anisotropy must be > 0 and density in (0, 0.5)")
    if not 0 <= background_e < peak_e:
        raise ValueError(f"need 0 ≤ background_e < peak_e, got {background_e}, {peak_e}")
    if not 0 <= texture <= 0.5:
        raise ValueError(f"texture must be in [0, 0.5], got {texture}")
    rng = np.random.default_rng([seed, 0x3D])
    if n_nuclei is None:
        mean_r3 = (r_hi**4 - r_lo**4) / (4 * (r_hi - r_lo)) if r_hi > r_lo else r_lo**3
        mean_vol = 4 / 3 * np.pi * mean_r3 * 0.975 / z_anisotropy  # E[U(0.85, 1.1)] = 0.975
        n_nuclei = max(1, round(density * zd * h * w / mean_vol))

    def draw():
        r = rng.uniform(r_lo, r_hi)
        asp = np.sqrt(rng.uniform(1.0, 1.3))
        a, b, c = r * asp, r / asp, r * rng.uniform(0.85, 1.1)
        return max(a, b, c), (a, b, c / z_anisotropy, rng.uniform(0, np.pi), rng.uniform(0.5, 1.0))

    lo = np.zeros(3)
    hi = np.array([(zd - 1) * z_anisotropy, h - 1, w - 1], float)
    centres, _, params = _random_sequential(
        rng, int(n_nuclei), lo, hi, draw, min_gap_px, r_hi * np.sqrt(1.3), 100 * int(n_nuclei) + 1000
    )
    chrom = np.ones((zd, h, w), np.float32)
    if texture > 0:
        noise = rng.standard_normal((zd, h, w), dtype=np.float32)
        noise = ndimage.gaussian_filter(noise, (1.5 / z_anisotropy, 1.5, 1.5))
        chrom += noise * (texture / max(float(noise.std()), 1e-12))
        del noise
    vol = np.zeros((zd, h, w), np.float32)
    labels = np.zeros((zd, h, w), np.int32)
    i = 0
    for (pz, cy, cx), (a, b, c, ang, bright) in zip(centres, params):
        cz = pz / z_anisotropy
        ez, exy = int(np.ceil(c)) + 1, int(np.ceil(max(a, b))) + 1
        z0, z1 = max(0, int(cz) - ez), min(zd, int(cz) + ez + 2)
        y0, y1 = max(0, int(cy) - exy), min(h, int(cy) + exy + 2)
        x0, x1 = max(0, int(cx) - exy), min(w, int(cx) + exy + 2)
        zz, yy, xx = np.ogrid[z0:z1, y0:y1, x0:x1]
        dy, dx = yy - cy, xx - cx
        u = (np.cos(ang) * dx + np.sin(ang) * dy) / a
        v = (-np.sin(ang) * dx + np.cos(ang) * dy) / b
        rho = np.sqrt(((zz - cz) / c) ** 2 + u * u + v * v)
        inside = rho < 1.0
        if not inside.any():
            continue
        i += 1
        cover = np.clip((1.0 - rho) * (a * b * c) ** (1 / 3) + 0.5, 0.0, 1.0)
        box = (slice(z0, z1), slice(y0, y1), slice(x0, x1))
        np.maximum(vol[box], (bright * cover) * chrom[box], out=vol[box])
        labels[box][inside] = i
    del chrom
    np.maximum(vol, 0.0, out=vol)
    if any(s > 0 for s in psf_sigma_px):
        vol = ndimage.gaussian_filter(vol, (psf_sigma_px[0], psf_sigma_px[1], psf_sigma_px[1]))
    bg_xy = smooth_background((h, w), seed=seed, level=_flux(background_e))
    zf = 1.0 + 0.1 * np.cos(2 * np.pi * np.arange(zd) / max(2 * zd, 1) + rng.uniform(0, 2 * np.pi))
    bg = bg_xy[None, :, :] * (zf / zf.mean())[:, None, None]
    top = float(vol.max())
    scale = (_flux(peak_e) - _flux(background_e)) / top if top > 0 else 0.0
    flux = bg + vol.astype(np.float64) * scale
    return GroundTruthScene(
        flux=flux,
        labels=labels,
        exposure_ms=DEFAULT_EXPOSURE_MS,
        name="nuclei 3d",
        description=(
            f"{i} nuclei in a {zd}×{h}×{w} light-sheet stack, r {r_lo:g}–{r_hi:g} px, z "
            f"anisotropy {z_anisotropy:g}, {background_e:g}–{peak_e:g} e-, PSF σ "
            f"{tuple(psf_sigma_px)} voxels, seed {seed}"
        ),
    )


def dim_spots(
    shape: tuple[int, int],
    *,
    seed: int,
    radius_px: tuple[float, float] = (3.0, 6.0),
    signal_e: tuple[float, float] = (10.0, 50.0),
    background_e: float = 5.0,
    coverage: float = 0.04,
    min_gap_px: float = 4.0,
    psf_sigma_px: float = 1.0,
) -> GroundTruthScene:
    """Sparse, small, dim fluorescent objects: the low-signal end of live-cell imaging.

    Discs of radius uniform in ``radius_px`` (anti-aliased edges), each ``signal_e`` electrons
    (uniform in the range, per object) above a ``background_e`` background (±30 %, smooth),
    blurred by a Gaussian PSF; at 10–50 e⁻ of signal the shot and read noise are a large share
    of it, so a segmenter sees noisy edges and a replica's extra noise matters. Centres by
    random sequential addition (no two closer than ``r1 + r2 + min_gap_px``, all inside the
    field) until ``coverage`` of the field is covered.

    Parameters
    ----------
    shape
        ``(H, W)`` [pixels].
    seed
        Seed; the same arguments and seed give the same scene.
    radius_px, signal_e
        Ranges of the disc radius [px] and of each object's signal above background [e⁻].
    background_e
        Mean background [e⁻ per pixel per frame], ≥ 0.
    coverage
        Target fraction of the field inside an object.
    min_gap_px, psf_sigma_px
        Smallest gap between objects [px]; PSF σ [px].
    """
    h, w = _check_shape(shape, 2)
    r_lo, r_hi = _check_range("radius_px", radius_px, 0.5)
    s_lo, s_hi = _check_range("signal_e", signal_e)
    if background_e < 0 or min_gap_px < 0 or psf_sigma_px < 0:
        raise ValueError("background_e, min_gap_px and psf_sigma_px must be ≥ 0")
    rng = np.random.default_rng([seed, 0xD1A5])
    n_target = _discs_for_coverage(coverage, h * w, r_lo, r_hi)
    margin = r_hi + 1.0
    lo, hi = np.array([margin, margin]), np.array([h - 1 - margin, w - 1 - margin])
    if np.any(hi < lo):
        raise ValueError(f"shape {shape} too small for objects of radius {r_hi}")

    def draw():
        r = rng.uniform(r_lo, r_hi)
        return r, (r, rng.uniform(s_lo, s_hi))

    centres, _, params = _random_sequential(rng, n_target, lo, hi, draw, min_gap_px, r_hi, 100 * n_target + 1000)
    signal = np.zeros((h, w), np.float64)  # electrons above background
    labels = np.zeros((h, w), np.int32)
    for i, ((cy, cx), (r, e)) in enumerate(zip(centres, params), start=1):
        ext = int(np.ceil(r + 1))
        y0, y1 = max(0, int(cy) - ext), min(h, int(cy) + ext + 2)
        x0, x1 = max(0, int(cx) - ext), min(w, int(cx) + ext + 2)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        signal[y0:y1, x0:x1] += e * np.clip(r - d + 0.5, 0.0, 1.0)
        labels[y0:y1, x0:x1][d < r] = i
    if psf_sigma_px > 0:
        signal = ndimage.gaussian_filter(signal, psf_sigma_px, mode="constant")
    bg = smooth_background((h, w), seed=seed, level=_flux(background_e), variation=0.3)
    return GroundTruthScene(
        flux=bg + signal / (_QE * DEFAULT_EXPOSURE_MS),
        labels=labels,
        exposure_ms=DEFAULT_EXPOSURE_MS,
        name="dim spots",
        description=(f"{len(centres)} dim spots, r {r_lo:g}–{r_hi:g} px, {s_lo:g}–{s_hi:g} e- above a "
                     f"{background_e:g} e- background, PSF σ {psf_sigma_px:g} px, seed {seed}"),
    )


def _stroke(rng, core: np.ndarray, allowed: np.ndarray, p0, radius: float, length: float) -> np.ndarray:
    """A straight brush stroke through ``p0`` (2-D window coordinates): centre line kept in
    ``core`` (at most ``length`` long, random direction), painted ``radius`` wide, clipped to
    ``allowed``."""
    line = np.zeros(core.shape, bool)
    p0 = np.asarray(p0, float)
    line[tuple(p0.astype(int))] = True
    theta = rng.uniform(0, 2 * np.pi)
    step = np.array([np.sin(theta), np.cos(theta)])
    for sign in (1.0, -1.0):
        for t in np.arange(0.5, length / 2 + 1e-9, 0.5):
            q = np.rint(p0 + sign * t * step).astype(int)
            if np.any(q < 0) or np.any(q >= core.shape) or not core[q[0], q[1]]:
                break
            line[q[0], q[1]] = True
    return (ndimage.distance_transform_edt(~line) <= radius) & allowed


def _window(center, half: int, shape) -> tuple[slice, slice]:
    return tuple(slice(max(0, int(c) - half), min(s, int(c) + half + 1)) for c, s in zip(center, shape))


def sparse_labels(
    truth_labels: np.ndarray,
    *,
    seed: int,
    n_objects: int = 20,
    n_background: int = 20,
    stroke_px: int = 3,
    stroke_length_px: float | None = None,
    inset_px: float = 2.0,
    ring_px: tuple[float, float] = (2.0, 4.0),
    far_px: float = 8.0,
    near_fraction: float = 0.5,
    z_planes: int = 3,
    max_fraction: float = 0.015,
) -> np.ndarray:
    """Sparse training annotations, as a person paints them in ilastik / napari / Fiji.

    Foreground: one short straight brush stroke (``stroke_px`` wide, up to
    ``stroke_length_px`` long) inside each of ``n_objects`` randomly chosen objects, every
    painted pixel more than ``inset_px`` from the object's outside (in-plane Euclidean
    distance to the nearest non-object pixel; in 3-D the pixel is also inside the object on
    the planes above and below). Objects too small to hold a stroke are passed over.
    Background: ``n_background`` strokes, a fraction ``near_fraction`` of them "hard" — a
    short arc of the ring ``ring_px`` (distance to the nearest object pixel, inclusive) just
    outside an object, e.g. across the phase-contrast halo — and the rest "easy", straight
    strokes everywhere farther than ``far_px`` from every object.
    Both counts are scaled down together (at least one stroke each) where they would paint
    more than ``max_fraction`` of the image.

    In 3-D, all strokes lie on ``z_planes`` annotation planes spread over the stack (an
    annotator labels a few slices); distances of background strokes to objects are 3-D, in
    voxel units (conservative for z steps larger than the pixel).

    Parameters
    ----------
    truth_labels
        Instance labels ``(H, W)`` or ``(Z, H, W)``, 0 = background.
    seed
        Seed; the same labels and seed give the same annotation.
    n_objects
        Number of objects to annotate (fewer if fewer can hold a stroke).
    n_background
        Number of background strokes (fewer if the background has no room).
    stroke_px
        Brush width [pixels].
    stroke_length_px
        Maximum length of a stroke's centre line [pixels]; default ``4 · stroke_px``.
    inset_px
        Minimum distance of foreground strokes from the object's outside [pixels].
    ring_px
        ``(min, max)`` distance of "hard" background strokes to the nearest object [pixels].
    far_px
        Minimum distance of "easy" background strokes to every object [pixels].
    near_fraction
        Fraction of background strokes that are "hard", in [0, 1].
    z_planes
        Number of annotated planes of a 3-D stack (ignored in 2-D).
    max_fraction
        Cap on the painted fraction of the image (of the annotated planes in 3-D): the stroke
        counts shrink where ~45 pixels per stroke (default brush) would exceed it.

    Returns
    -------
    ndarray
        uint8, same shape as ``truth_labels``: :data:`UNLABELLED` (0), :data:`BACKGROUND` (1),
        :data:`FOREGROUND` (2). With the defaults a stroke paints ~20–50 pixels: ~0.03 % of a
        2048² image; ≤ ~1.5 % of a small one (the cap).
    """
    lab = np.asarray(truth_labels)
    if lab.ndim not in (2, 3) or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"truth_labels must be a 2-D or 3-D integer array, got {lab.dtype} {lab.shape}")
    if lab.min(initial=0) < 0:
        raise ValueError("truth_labels must be ≥ 0")
    ring_lo, ring_hi = _check_range("ring_px", ring_px)
    if stroke_px < 1 or inset_px < 0 or far_px < 0 or not 0 <= near_fraction <= 1 or z_planes < 1:
        raise ValueError(
            "need stroke_px ≥ 1, inset_px ≥ 0, far_px ≥ 0, near_fraction in [0, 1], z_planes ≥ 1"
        )
    if not 0 < max_fraction <= 1:
        raise ValueError(f"max_fraction must be in (0, 1], got {max_fraction}")
    vol = lab[None] if lab.ndim == 2 else lab
    zd, h, w = vol.shape
    rng = np.random.default_rng([seed, 0xA11])
    radius = stroke_px / 2.0
    length = 4.0 * stroke_px if stroke_length_px is None else float(stroke_length_px)
    out = np.zeros(vol.shape, np.uint8)

    # keep the painted fraction below max_fraction (of the annotated planes)
    per_stroke = stroke_px * (length + stroke_px)  # ≈ pixels painted by one stroke
    budget = max_fraction * h * w * (1 if zd == 1 else min(int(z_planes), zd)) / per_stroke
    if n_objects + n_background > budget:
        f = budget / (n_objects + n_background)
        n_objects = min(n_objects, max(1, int(n_objects * f)))
        n_background = min(n_background, max(1, int(n_background * f)))

    # annotation planes: spread over the stack, jittered
    if zd == 1:
        planes = [0]
    else:
        k = min(int(z_planes), zd)
        spacing = zd / k
        pos = (np.arange(k) + 0.5) * spacing + rng.uniform(-0.25, 0.25, k) * spacing
        planes = sorted({int(np.clip(p, 0, zd - 1)) for p in pos})
    plane_set = set(planes)

    # per annotation plane: 3-D distance [voxels] of each pixel to the nearest object, from the
    # in-plane distance maps of the planes within reach (exact up to the reach)
    reach = int(np.ceil(max(far_px + radius, ring_hi))) + 1
    d2: dict[int, np.ndarray] = {}

    def plane_dist(z: int) -> np.ndarray:
        if z not in d2:
            bg = vol[z] == 0
            d2[z] = np.full((h, w), np.inf) if bg.all() else ndimage.distance_transform_edt(bg)
        return d2[z]

    dist = {}
    for z in planes:
        sq = plane_dist(z) ** 2
        for dz in range(1, reach + 1):
            for zz in (z - dz, z + dz):
                if 0 <= zz < zd:
                    np.minimum(sq, plane_dist(zz) ** 2 + dz * dz, out=sq)
        dist[z] = np.sqrt(sq)

    boxes = ndimage.find_objects(vol)
    ids = [
        i + 1
        for i, b in enumerate(boxes)
        if b is not None and plane_set & set(range(b[0].start, b[0].stop))
    ]
    order = [ids[j] for j in rng.permutation(len(ids))]

    # foreground strokes inside objects
    done = 0
    for obj in order:
        if done >= n_objects:
            break
        bz, by, bx = boxes[obj - 1]
        box = (slice(max(0, bz.start - 1), min(zd, bz.stop + 1)),
               slice(max(0, by.start - 1), min(h, by.stop + 1)),
               slice(max(0, bx.start - 1), min(w, bx.stop + 1)))
        mask = vol[box] == obj
        zs = [z for z in planes if box[0].start <= z < box[0].stop]
        for z in (zs[j] for j in rng.permutation(len(zs))):
            k = z - box[0].start
            if not mask[k].any():
                continue
            depth = ndimage.distance_transform_edt(mask[k])
            if zd > 1:  # in 3-D: also inside the object on the planes above and below
                depth[~mask[max(k - 1, 0)] | ~mask[min(k + 1, mask.shape[0] - 1)]] = 0.0
            core = depth > inset_px + radius
            if not core.any():
                continue
            pts = np.argwhere(core)
            p0 = pts[rng.integers(len(pts))]
            paint = _stroke(rng, core, depth > inset_px, p0, radius, length)
            out[z, box[1], box[2]][paint] = FOREGROUND
            done += 1
            break

    # hard background: arcs of the ring just outside objects
    n_near = round(n_background * near_fraction)
    n_far = n_background - n_near
    done = 0
    for obj in (order[j] for j in rng.permutation(len(order))):
        if done >= n_near:
            break
        _, by, bx = boxes[obj - 1]
        pad = int(np.ceil(ring_hi)) + 2
        win = (slice(max(0, by.start - pad), min(h, by.stop + pad)),
               slice(max(0, bx.start - pad), min(w, bx.stop + pad)))
        zs = [z for z in planes if boxes[obj - 1][0].start <= z < boxes[obj - 1][0].stop]
        for z in (zs[j] for j in rng.permutation(len(zs))):
            mine = vol[z][win] == obj
            if not mine.any():
                continue
            d = dist[z][win]
            near_me = ndimage.distance_transform_edt(~mine) <= ring_hi
            cand = (d >= ring_lo) & (d <= ring_hi) & near_me & (out[z][win] == UNLABELLED)
            if not cand.any():
                continue
            pts = np.argwhere(cand)
            p0 = pts[rng.integers(len(pts))]
            yy, xx = np.ogrid[: cand.shape[0], : cand.shape[1]]
            arc = cand & ((yy - p0[0]) ** 2 + (xx - p0[1]) ** 2 <= (length / 2) ** 2)
            out[z][win][arc] = BACKGROUND
            done += 1
            break

    # easy background: strokes far from every object
    half = int(np.ceil(length / 2 + radius)) + 2
    far_cand: dict[int, np.ndarray] = {}
    for z in (planes[j] for j in rng.integers(0, len(planes), n_far)):
        if z not in far_cand:
            far_cand[z] = np.flatnonzero(dist[z] > far_px + radius)
        cand = far_cand[z]
        if cand.size == 0:
            continue
        p0 = np.unravel_index(cand[rng.integers(cand.size)], (h, w))
        win = _window(p0, half, (h, w))
        d = dist[z][win]
        local = (p0[0] - win[0].start, p0[1] - win[1].start)
        paint = _stroke(rng, d > far_px + radius, d > far_px, local, radius, length)
        out[z][win][paint & (out[z][win] == UNLABELLED)] = BACKGROUND

    return out[0] if lab.ndim == 2 else out


def render_scene(
    scene: GroundTruthScene, truth: SensorTruth, rng: np.random.Generator, n: int = 1
) -> np.ndarray:
    """Raw frames of a scene through the simulated sensor (:func:`render_frames`).

    Parameters
    ----------
    scene
        A 2-D or 3-D scene; its ``(H, W)`` must equal the sensor's shape.
    truth
        The sensor.
    rng
        Random generator (the caller owns the stream).
    n
        Number of acquisitions (time points) of the scene.

    Returns
    -------
    ndarray
        uint16 ADU at ``scene.exposure_ms``, always with a leading acquisition axis: 2-D scene
        ``(n, H, W)``; 3-D scene ``(n, Z, H, W)``, each z-plane a frame of the same sensor
        (rendered plane by plane, all ``n`` acquisitions of a plane at once).
    """
    flux = scene.flux
    if flux.shape[-2:] != tuple(truth.shape):
        raise ValueError(f"scene (H, W) {flux.shape[-2:]} does not match the sensor {truth.shape}")
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    if flux.ndim == 2:
        return render_frames(truth, flux, scene.exposure_ms, n, rng)
    out = np.empty((n, *flux.shape), np.uint16)
    for z in range(flux.shape[0]):
        render_frames(truth, flux[z], scene.exposure_ms, n, rng, out=out[:, z])
    return out
