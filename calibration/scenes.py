"""Simulated fluorescence scenes: photon-flux maps for the simulated sCMOS camera.

Each function returns the expected photon flux per pixel [photons/ms], shape ``(H, W)``,
float64, to pass to :func:`rawgate.calibration.simulation.render_frames` (which applies the
quantum efficiency, shot noise, dark current, read noise, gain and offset of the sensor). The
same arguments and seed give the same map, whatever the platform.

:data:`SIGNAL_LEVELS` holds three presets (low / medium / high light) chosen so that, with the
default sensor (QE 0.8) at :data:`DEFAULT_EXPOSURE_MS`, the background and the brightest cell
structures produce round numbers of photo-electrons (see the table there).

Pure numpy/scipy; nothing here renders noise or talks to cameras.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["DEFAULT_EXPOSURE_MS", "SIGNAL_LEVELS", "fluorescent_cells", "smooth_background"]

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
