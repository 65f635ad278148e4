"""Calibration report: a self-contained HTML page, PNG plots and a strict-JSON summary.

:func:`write_calibration_report` turns a :class:`~rawgate.calibration.fit.FitResult` into a
folder a person can open in a browser (``report.html`` with the plots as PNG files beside it)
and a machine can read (``summary.json``, strict JSON: NaN and infinities become ``null``).

Plots are drawn with matplotlib's object API (:class:`matplotlib.figure.Figure` on an Agg
canvas), so writing a report never touches pyplot's global state or the user's backend.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.scale import SymmetricalLogTransform
from matplotlib.ticker import (
    FuncFormatter,
    LogFormatterSciNotation,
    NullFormatter,
    SymmetricalLogLocator,
)

from ._files import atomic_write, to_jsonable
from .fit import BAD_PIXEL_REASONS, map_statistics, EMVAResult, FitResult, PixelMaps
from .instruments._protocol import CameraIdentity

__all__ = [
    "write_calibration_report",
    "build_summary",
    "render_html",
    "plot_photon_transfer",
    "plot_snr",
    "plot_linearity",
    "plot_maps",
    "plot_bad_pixels",
    "map_outliers",
    "bad_pixel_legend",
    "map_statistics",
    "to_jsonable",
    "REPORT_NAME",
    "SUMMARY_NAME",
    "PLOT_FILES",
    "MAX_DISPLAY_PX",
]

REPORT_NAME = "report.html"
SUMMARY_NAME = "summary.json"
#: Plot files written next to the report, in the order they appear in it.
PLOT_FILES: dict[str, str] = {
    "ptc": "ptc.png",
    "snr": "snr.png",
    "linearity": "linearity.png",
    "maps": "maps.png",
    "bad_pixels": "bad_pixels.png",
}
#: Maps larger than this on a side are shown in blocks (display only; statistics use all).
MAX_DISPLAY_PX = 1024
#: The bad-pixel map is OR-pooled down to at most this many pixels a side so that isolated
#: defects stay visible at screen resolution.
MAX_BAD_DISPLAY_PX = 512

_DPI = 110
#: Width (in decades) of the linear core of a symmetric-log histogram axis, per side.
_LINSCALE = 2.0
_FILLED = "#1f77b4"
_FIT = "#d62728"
_IDEAL = "#7f7f7f"
_SAT = "#ff7f0e"

#: (attribute, title, unit, colormap) of each per-pixel map.
_MAPS: tuple[tuple[str, str, str, str], ...] = (
    ("offset_adu", "Offset", "ADU", "viridis"),
    ("gain_e_per_adu", "Conversion gain", "e⁻/ADU", "viridis"),
    ("read_noise_e", "Read noise", "e⁻", "magma"),
    ("dark_current_e_per_s", "Dark current", "e⁻/s", "inferno"),
)

#: Colours of the bad-pixel categories: good, one per reason bit (ascending), several reasons.
_GOOD_COLOUR = "#f2f2f2"
_REASON_COLOURS = ("#d62728", "#ff7f0e", "#9467bd", "#2ca02c", "#1f77b4", "#8c564b")
_SEVERAL_COLOUR = "#000000"


# ------------------------------------------------------------------------------------ entry


def write_calibration_report(
    fit: FitResult,
    identity: CameraIdentity,
    out_dir: str | Path,
    *,
    title: str = "Camera calibration report",
    extra: dict | None = None,
    estimated: bool = False,
) -> Path:
    """Write ``report.html``, its PNG plots and ``summary.json`` into ``out_dir``.

    Parameters
    ----------
    fit
        Result of :func:`~rawgate.calibration.fit.fit_sweep`.
    identity
        The camera the fit was made for (shown in the header and the summary).
    out_dir
        Folder to write into; created (with parents) if missing. Existing report files in it
        are replaced.
    title
        Page title.
    extra
        Optional flat ``{name: value}`` dict shown as its own table (e.g. a comparison with
        the simulator's ground truth) and copied into ``summary.json``.
    estimated
        The figures were estimated from data rather than measured with a calibration sweep;
        the page then carries a prominent banner saying so.

    Returns
    -------
    Path
        Path of ``report.html``.

    Notes
    -----
    Each file is written to a temporary name in ``out_dir`` and renamed into place, so a reader
    never sees a half-written file. ``summary.json`` is strict JSON: numpy scalars become Python
    numbers and NaN or infinite values become ``null``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    extra = dict(extra or {})

    plotters: dict[str, Callable[[], Figure]] = {
        "ptc": lambda: plot_photon_transfer(fit.emva),
        "snr": lambda: plot_snr(fit.emva),
        "linearity": lambda: plot_linearity(fit.emva),
        "maps": lambda: plot_maps(fit.maps),
        "bad_pixels": lambda: plot_bad_pixels(fit.maps),
    }
    for key, make in plotters.items():
        _save_figure(make(), out / PLOT_FILES[key])

    summary = build_summary(fit, identity, date=date, estimated=estimated, extra=extra)
    _atomic_write_text(out / SUMMARY_NAME, json.dumps(summary, indent=1, allow_nan=False) + "\n")

    page = render_html(fit, identity, title=title, date=date, extra=extra, estimated=estimated)
    report = out / REPORT_NAME
    _atomic_write_text(report, page)
    return report


# ------------------------------------------------------------------------------------ files


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def _save_figure(fig: Figure, path: Path) -> None:
    """Render ``fig`` to PNG at ``path`` through an Agg canvas (no pyplot)."""
    FigureCanvasAgg(fig)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=_DPI))


# ------------------------------------------------------------------------------------ JSON


def bad_pixel_table(maps: PixelMaps) -> list[dict[str, Any]]:
    """One row per bad-pixel reason: bit, short name, description, count and fraction."""
    bad = np.asarray(maps.bad_pixels)
    n = max(int(bad.size), 1)
    rows = []
    for bit, text in BAD_PIXEL_REASONS.items():
        short, _, desc = text.partition(":")
        count = int(((bad & bit) > 0).sum())
        rows.append(
            {"bit": int(bit), "reason": short.strip(), "description": desc.strip(),
             "count": count, "fraction": count / n}
        )
    return rows


def build_summary(
    fit: FitResult,
    identity: CameraIdentity,
    *,
    date: str,
    estimated: bool,
    extra: dict | None,
) -> dict[str, Any]:
    """The content of ``summary.json`` (already converted with :func:`to_jsonable`)."""
    bad = np.asarray(fit.maps.bad_pixels)
    n_bad = int((bad != 0).sum())
    return to_jsonable(
        {
            "identity": identity.to_dict(),
            "date": date,
            "estimated": bool(estimated),
            "shape": list(bad.shape),
            "emva": fit.emva.summary(),
            "quality": fit.quality,
            "bad_pixels": {
                "total": n_bad,
                "fraction": n_bad / max(int(bad.size), 1),
                "counts": fit.maps.bad_pixel_counts(),
                "reasons": {r["reason"]: r["description"] for r in bad_pixel_table(fit.maps)},
            },
            "maps": map_statistics(fit.maps),
            "plots": dict(PLOT_FILES),
            "extra": extra or {},
        }
    )


# ------------------------------------------------------------------------------------ curves


@dataclass(frozen=True)
class _Curves:
    """The EMVA curves as arrays, with the saturation level located."""

    x: np.ndarray  # mean above dark [DN]
    y: np.ndarray  # variance above dark [DN²]
    in_fit: np.ndarray
    mean_e: np.ndarray
    snr: np.ndarray
    h_rel: np.ndarray
    lin_dev: np.ndarray
    in_lin: np.ndarray
    i_sat: int

    @classmethod
    def of(cls, emva: EMVAResult) -> "_Curves":
        c = emva.curves

        def arr(key: str, dtype: type = float) -> np.ndarray:
            return np.asarray(c.get(key, []), dtype=dtype)

        x = arr("mean_minus_dark_adu")
        x_sat = emva.saturation_capacity_e * emva.system_gain_adu_per_e
        i_sat = int(np.nanargmin(np.abs(x - x_sat))) if x.size else -1
        return cls(
            x=x,
            y=arr("var_minus_dark_adu2"),
            in_fit=arr("in_fit", bool),
            mean_e=arr("mean_e"),
            snr=arr("snr"),
            h_rel=arr("relative_irradiation"),
            lin_dev=arr("linearity_deviation_percent"),
            in_lin=arr("in_linearity_fit", bool),
            i_sat=i_sat,
        )


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _no_data(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _sat_label(emva: EMVAResult) -> str:
    return "saturation" if emva.saturation_reached else "top level (saturation not reached)"


# ------------------------------------------------------------------------------------ plots


def plot_photon_transfer(emva: EMVAResult) -> Figure:
    """Photon-transfer curve (log–log): variance above dark against mean above dark, the
    levels inside the fit range filled, the line ``σ² = K·μ`` and saturation marked."""
    cv = _Curves.of(emva)
    k = emva.system_gain_adu_per_e
    fig = _new_figure(7.5, 6.0)
    ax = fig.add_subplot()
    ax.set_xlabel(r"mean signal above dark  $\mu_y - \mu_{y,\mathrm{dark}}$  [DN]")
    ax.set_ylabel(
        r"temporal variance above dark  $\sigma^2_y - \sigma^2_{y,\mathrm{dark}}$  [DN²]")
    ax.set_title(f"Photon-transfer curve (fit R² = {emva.ptc_fit_r2:.6f})")
    pos = np.isfinite(cv.x) & np.isfinite(cv.y) & (cv.x > 0) & (cv.y > 0)
    if not pos.any():
        _no_data(ax, "no level with positive mean and variance above dark")
        return fig
    fin, out = pos & cv.in_fit, pos & ~cv.in_fit
    ax.loglog(cv.x[fin], cv.y[fin], "o", color=_FILLED, ms=6,
              label=f"levels in fit range ({int(fin.sum())})")
    if out.any():
        ax.loglog(cv.x[out], cv.y[out], "o", mfc="none", mec=_FILLED, ms=6, mew=1.3,
                  label=f"levels outside fit range ({int(out.sum())})")
    xs = np.geomspace(cv.x[pos].min() / 1.5, cv.x[pos].max() * 1.5, 100)
    ax.plot(xs, k * xs, "-", color=_FIT, lw=1.5,
            label=rf"fit $\sigma^2 = K\,\mu$,  K = {_fmt(k)} DN/e⁻")
    if 0 <= cv.i_sat < cv.x.size and pos[cv.i_sat]:
        xs_, ys_ = cv.x[cv.i_sat], cv.y[cv.i_sat]
        ax.axvline(xs_, color=_SAT, ls="--", lw=1)
        ax.plot([xs_], [ys_], "*", color=_SAT, ms=15, mec="k", mew=0.6,
                label=f"{_sat_label(emva)}: {_fmt(xs_)} DN "
                      f"= {_fmt(emva.saturation_capacity_e)} e⁻")
    n_hidden = int((~pos).sum())
    if n_hidden:
        ax.plot([], [], " ", label=f"({n_hidden} fully saturated level(s) with variance ≤ 0 "
                                   "not shown)")
    _log_axes_style(ax)
    fig.legend(loc="outside lower center", ncols=2, fontsize=9, frameon=False)
    return fig


def _log_axes_style(ax: Any) -> None:
    """Grid, and labels on minor ticks of an axis spanning few decades."""
    ax.grid(True, which="major", alpha=0.4)
    ax.grid(True, which="minor", alpha=0.12)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_formatter(LogFormatterSciNotation(labelOnlyBase=False,
                                                         minor_thresholds=(2, 1)))
    ax.tick_params(which="minor", labelsize=7, labelcolor="0.35")


def plot_snr(emva: EMVAResult) -> Figure:
    """SNR against mean signal in electrons (log–log), with the ideal shot-noise limit
    ``√μe`` and the fitted model ``μe / √(σd² + μe)``."""
    cv = _Curves.of(emva)
    sd = emva.temporal_dark_noise_e
    fig = _new_figure(7.5, 5.2)
    ax = fig.add_subplot()
    ax.set_xlabel(r"mean signal above dark  $\mu_e$  [e⁻]")
    ax.set_ylabel("signal-to-noise ratio  [ratio]")
    ax.set_title("Signal-to-noise ratio")
    idx = np.arange(cv.mean_e.size)
    upto = idx <= cv.i_sat if cv.i_sat >= 0 else np.ones(cv.mean_e.size, bool)
    ok = np.isfinite(cv.mean_e) & np.isfinite(cv.snr) & (cv.mean_e > 0) & (cv.snr > 0)
    shown = ok & upto
    mu_top = emva.saturation_capacity_e
    if not (math.isfinite(mu_top) and mu_top > 0):
        mu_top = float(cv.mean_e[ok].max()) if ok.any() else 1e4
    lo = min(1.0, float(cv.mean_e[shown].min()) if shown.any() else 1.0)
    mu = np.geomspace(lo, mu_top, 300)
    ax.loglog(mu, np.sqrt(mu), ":", color=_IDEAL, lw=1.8,
              label=r"ideal shot-noise limit $\sqrt{\mu_e}$")
    ax.loglog(mu, mu / np.sqrt(sd**2 + mu), "-", color=_FIT, lw=1.5,
              label=r"model $\mu_e\,/\,\sqrt{\sigma_d^2 + \mu_e}$,  $\sigma_d$ = "
                    f"{_fmt(sd)} e⁻")
    if shown.any():
        ax.loglog(cv.mean_e[shown], cv.snr[shown], "o", color=_FILLED, ms=5,
                  label=f"measured ({int(shown.sum())} levels up to saturation)")
    else:
        _no_data(ax, "no measured level below saturation")
    ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
    ax.annotate("SNR = 1", (0.5, 1.0), xycoords=("axes fraction", "data"), xytext=(0, 3),
                textcoords="offset points", ha="center", va="bottom", fontsize=8, color="0.35")
    ax.axvline(mu_top, color=_SAT, ls="--", lw=1,
               label=f"{_sat_label(emva)}: {_fmt(mu_top)} e⁻,\nSNR max = {_fmt(emva.snr_max)} "
                     f"({emva.snr_max_db:.1f} dB)")
    n_above = int((ok & ~upto).sum())
    if n_above:
        ax.plot([], [], " ", label=f"({n_above} level(s) above saturation not shown)")
    _log_axes_style(ax)
    ax.legend(loc="upper left", fontsize=9)
    return fig


def plot_linearity(emva: EMVAResult) -> Figure:
    """Deviation from the linear response [%] against relative irradiation, the linearity fit
    range shaded; levels far outside the zoomed axis are drawn as arrows at its edge."""
    cv = _Curves.of(emva)
    fig = _new_figure(10.0, 5.0)
    ax = fig.add_subplot()
    ax.set_xlabel("relative irradiation (light level × exposure)  [% of the top level]")
    ax.set_ylabel("deviation from linear fit  [%]")
    ax.set_title("Linearity")
    top = float(np.nanmax(cv.h_rel)) if cv.h_rel.size and np.isfinite(cv.h_rel).any() else 0.0
    ok = np.isfinite(cv.lin_dev) & np.isfinite(cv.h_rel)
    if top <= 0 or not ok.any():
        _no_data(ax, "linearity not computed\n(too few levels between 5 % and 95 % of saturation)")
        return fig
    h = cv.h_rel / top * 100.0
    d = cv.lin_dev
    inl = ok & cv.in_lin
    ref = d[inl] if inl.any() else d[ok]
    half = max(1.6 * float(np.abs(ref).max()), 1e-4)
    if inl.any():
        ax.axvspan(h[inl].min(), h[inl].max(), color=_FILLED, alpha=0.10,
                   label="linearity fit range")
        lo_, hi_ = float(d[inl].min()), float(d[inl].max())
        ax.axhline(lo_, color=_FIT, ls="--", lw=1)
        ax.axhline(hi_, color=_FIT, ls="--", lw=1,
                   label="extremes in fit range:\n"
                         f"LE = (max − min)/2 = {_fmt(emva.linearity_error_percent)} %")
    ax.axhline(0.0, color="0.3", lw=0.8)
    inside = ok & (np.abs(d) <= half)
    ax.plot(h[inside & cv.in_lin], d[inside & cv.in_lin], "o", color=_FILLED, ms=6,
            label="levels in fit range")
    rest = inside & ~cv.in_lin
    if rest.any():
        ax.plot(h[rest], d[rest], "o", mfc="none", mec=_FILLED, ms=6, mew=1.3,
                label="levels outside fit range")
    for sign, marker, where in ((-1, "v", "below"), (1, "^", "above")):
        off = ok & (np.sign(d) == sign) & (np.abs(d) > half)
        if off.any():
            lo_off, hi_off = _fmt(float(d[off].min())), _fmt(float(d[off].max()))
            ax.plot(h[off], np.full(int(off.sum()), sign * half * 0.94), marker, mfc="none",
                    mec="0.3", ms=7,
                    label=f"off scale, {where} ({int(off.sum())}):\n{lo_off} … {hi_off} %")
    ax.set_ylim(-half, half)
    ax.set_xlim(0, 102)
    ax.grid(True, alpha=0.35)
    fig.legend(loc="outside right upper", fontsize=9, frameon=False)
    return fig


def _extreme_pool(a: np.ndarray, centre: float,
                  limit: int = MAX_DISPLAY_PX) -> tuple[np.ndarray, int]:
    """``a`` pooled into ``s × s`` blocks (``s`` chosen so that no side exceeds ``limit``),
    each block shown by its value furthest from ``centre``, so that a single outlier pixel
    survives the reduction (a stride or a mean would drop or dilute it). NaN only where a whole
    block is NaN. (Hand-written: skimage's ``block_reduce`` takes a reducer but not an
    argmax-by-distance that keeps the sign.)"""
    s = max(1, math.ceil(max(a.shape) / limit))
    if s == 1:
        return a, 1
    blocks = _blocks(np.asarray(a, np.float64), s, np.nan)
    dev = np.abs(blocks - (centre if math.isfinite(centre) else 0.0))
    all_nan = np.isnan(dev).all(axis=2)
    idx = np.nanargmax(np.where(all_nan[..., None], 0.0, dev), axis=2)
    out = np.take_along_axis(blocks, idx[..., None], axis=2)[..., 0]
    out[all_nan] = np.nan
    return out, s


def _robust_levels(v: np.ndarray) -> tuple[float, float, float]:
    """1st percentile, median and 99th percentile of ``v`` (limits widened when degenerate)."""
    if v.size == 0:
        return 0.0, float("nan"), 1.0
    lo, med, hi = (float(p) for p in np.percentile(v, [1, 50, 99]))
    if not hi > lo:
        pad = abs(lo) * 0.01 or 1.0
        lo, hi = lo - pad, hi + pad
    return lo, med, hi


def _map_panel(fig: Figure, ax_img: Any, ax_hist: Any, a: np.ndarray, good: np.ndarray,
               title: str, unit: str, cmap: str) -> None:
    """Image (1–99 % colour limits of good pixels, colorbar) and histogram of one map."""
    a = np.asarray(a, np.float64)
    finite = np.isfinite(a)
    sel = finite & good
    vmin, med, vmax = _robust_levels(a[sel] if sel.any() else a[finite])
    _image_panel(fig, ax_img, a, vmin, vmax, med, title, unit, cmap)
    _histogram_panel(ax_hist, a[finite], vmin, vmax, med, title, unit)


def _image_panel(fig: Figure, ax: Any, a: np.ndarray, vmin: float, vmax: float, med: float,
                 title: str, unit: str, cmap: str) -> None:
    """The map as an image (large maps pooled so outliers survive, see :func:`_extreme_pool`),
    NaN in grey, with a colorbar; pixels far outside the colour range ringed when few."""
    shown, s = _extreme_pool(a, med)
    cm = colormaps[cmap].with_extremes(bad="0.6")
    im = ax.imshow(shown, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest",
                   extent=(0, a.shape[1], a.shape[0], 0))
    fig.colorbar(im, ax=ax, label=f"{title.lower()}  [{unit}]", shrink=0.9, extend="both")
    n_out = _ring_outliers(ax, a, vmin, vmax)
    ax.set_title(f"{title} [{unit}]   median {_fmt(med)}"
                 + (f"   ({s}×{s} blocks, most extreme pixel shown)" if s > 1 else "")
                 + (f"\n{n_out} outlier(s) ringed" if n_out else ""), fontsize=10)
    ax.set_xlabel("x [px]")
    ax.set_ylabel("y [px]")


#: Ring at most this many outliers in a map image (more would hide the map).
MAX_RINGED_OUTLIERS = 200


def map_outliers(a: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """``(row, col)`` of the pixels of map ``a`` further outside the colour range
    ``[vmin, vmax]`` than the range is wide — the few pixels (a stuck offset, a dead gain) that
    an image of a large sensor would otherwise not show."""
    span = vmax - vmin
    a = np.asarray(a, np.float64)
    with np.errstate(invalid="ignore"):
        far = (a < vmin - span) | (a > vmax + span)
    return np.argwhere(far)


def _ring_outliers(ax: Any, a: np.ndarray, vmin: float, vmax: float) -> int:
    """Draw an open ring around each outlier of :func:`map_outliers` when there are at most
    :data:`MAX_RINGED_OUTLIERS`; returns how many were ringed."""
    where = map_outliers(a, vmin, vmax)
    if not 0 < len(where) <= MAX_RINGED_OUTLIERS:
        return 0
    ax.scatter(where[:, 1] + 0.5, where[:, 0] + 0.5, s=60, facecolors="none",
               edgecolors="magenta", linewidths=1.2)
    ax.set_xlim(0, a.shape[1])
    ax.set_ylim(a.shape[0], 0)
    return len(where)


def _histogram_panel(ax: Any, v: np.ndarray, vmin: float, vmax: float, med: float,
                     title: str, unit: str) -> None:
    """Histogram of the finite values ``v`` with a log count axis; heavy tails get a
    symmetric-log value axis, see :func:`_hist_layout`."""
    if v.size == 0:
        _no_data(ax, "no finite values")
        return
    edges, linthresh, shift = _hist_layout(v, vmin, vmax, med)
    counts, _ = np.histogram(v - shift if shift else v, bins=edges)
    ax.stairs(np.maximum(counts, 0.5), edges, baseline=0.5, fill=True, color="0.55",
              label="all pixels")
    ax.set_yscale("log")
    top = max(float(counts.max()), 1.0)
    # headroom above the peak for the legend
    ax.set_ylim(0.5, top * 10 ** (0.25 * math.log10(top / 0.5) + 0.3))
    if linthresh is not None:
        ax.set_xscale("symlog", linthresh=linthresh, linscale=_LINSCALE)
        decades = sum(math.log10(max(abs(e), linthresh) / linthresh) for e in edges[[0, -1]])
        ax.xaxis.set_major_locator(SymmetricalLogLocator(
            base=10, linthresh=linthresh, subs=[1, 2, 5] if decades <= 1.5 else [1]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axvspan(vmin - shift, vmax - shift, color=_FILLED, alpha=0.15,
               label="colour range (1–99 %)")
    if math.isfinite(med):
        ax.axvline(med - shift, color=_FIT, lw=1, label=f"median of good pixels: {_fmt(med)}")
    name = f"{title.lower()} − median ({_fmt(shift)})" if shift else title.lower()
    suffix = "  (log scale beyond the core)" if linthresh is not None else ""
    ax.set_xlabel(f"{name}  [{unit}]{suffix}")
    ax.set_ylabel("pixels per bin (log)")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(True, alpha=0.3)


def _hist_layout(v: np.ndarray, lo: float, hi: float, med: float,
                 n: int = 200) -> tuple[np.ndarray, float | None, float]:
    """Bin edges for the histogram of ``v``, the symlog threshold (None: linear axis) and the
    shift subtracted from ``v`` before binning.

    A map whose full range exceeds ten times its 1–99 % span ``[lo, hi]`` (hot or noisy
    pixels, outliers) gets a symmetric-log axis: linear over the core, logarithmic in the
    tails, so both the bulk and the tail population are readable. The axis is centred on
    zero when the core lies near zero (read noise, dark current), otherwise on the median
    (offset), and the edges are then in ``v − shift``.
    """
    v_lo, v_hi = float(v.min()), float(v.max())
    if not v_hi > v_lo:
        return np.linspace(v_lo - 0.5, v_hi + 0.5, 3), None, 0.0
    span = hi - lo
    if v_hi - v_lo <= 10 * span:
        return np.linspace(v_lo, v_hi, n + 1), None, 0.0
    centre = med if math.isfinite(med) else float(np.median(v))
    shift = 0.0 if abs(centre) <= 3 * span else centre
    linthresh = max(abs(lo - shift), abs(hi - shift), span)
    t = SymmetricalLogTransform(10, linthresh, _LINSCALE)
    ends = t.transform(np.array([v_lo - shift, v_hi - shift]))
    edges = np.asarray(t.inverted().transform(np.linspace(ends[0], ends[1], n + 1)), np.float64)
    return edges, linthresh, shift


def plot_maps(maps: PixelMaps) -> Figure:
    """One row per per-pixel map (offset, gain, read noise, dark current when measured): the
    map with 1–99 % colour limits and a colorbar, and its histogram with a log count axis."""
    rows = [(getattr(maps, n), t, u, c) for n, t, u, c in _MAPS if getattr(maps, n) is not None]
    fig = _new_figure(12.0, 3.9 * len(rows))
    axes = fig.subplots(len(rows), 2, squeeze=False, width_ratios=[1.05, 1.0])
    good = np.asarray(maps.bad_pixels) == 0
    for (a, title, unit, cmap), (ax_img, ax_hist) in zip(rows, axes):
        _map_panel(fig, ax_img, ax_hist, a, good, title, unit, cmap)
    return fig


def _or_pool(bad: np.ndarray, limit: int = MAX_BAD_DISPLAY_PX) -> tuple[np.ndarray, int]:
    """Bitwise-OR pooling of the bad-pixel mask into ``f × f`` blocks, ``f`` chosen so that no
    side exceeds ``limit`` (a block shows every reason found in it)."""
    f = max(1, math.ceil(max(bad.shape) / limit))
    if f == 1:
        return bad, 1
    return np.bitwise_or.reduce(_blocks(bad, f, 0), axis=2), f


def _blocks(a: np.ndarray, f: int, fill: Any) -> np.ndarray:
    """``a`` padded with ``fill`` to a multiple of ``f`` and cut into ``f × f`` blocks:
    shape ``(rows / f, cols / f, f²)``."""
    h, w = a.shape
    hb, wb = math.ceil(h / f), math.ceil(w / f)
    padded = np.full((hb * f, wb * f), fill, a.dtype)
    padded[:h, :w] = a
    return padded.reshape(hb, f, wb, f).transpose(0, 2, 1, 3).reshape(hb, wb, f * f)


def _categories(bad: np.ndarray) -> np.ndarray:
    """Category per pixel: 0 good, ``i + 1`` for the single reason bit ``i``, ``len + 1`` for
    several reasons."""
    bits = list(BAD_PIXEL_REASONS)
    cat = np.zeros(bad.shape, np.uint8)
    nset = np.zeros(bad.shape, np.uint8)
    for i, bit in enumerate(bits):
        has = (bad & bit) > 0
        cat[has] = i + 1
        nset += has
    cat[nset > 1] = len(bits) + 1
    return cat


def bad_pixel_legend(maps: PixelMaps) -> list[tuple[str, int, int]]:
    """``(label, pixels, category)`` per legend entry of the bad-pixel map: good, each reason
    alone, several reasons. Each pixel is counted once, so the counts add up to the sensor's
    pixel count (the table's per-reason counts overlap: a pixel can have several reasons)."""
    bad = np.asarray(maps.bad_pixels).astype(np.int64)
    cat = _categories(bad)
    counts = np.bincount(cat.ravel(), minlength=len(BAD_PIXEL_REASONS) + 2)
    rows = [("good", int(counts[0]), 0)]
    for i, row in enumerate(bad_pixel_table(maps)):
        rows.append((f"{row['reason']} only", int(counts[i + 1]), i + 1))
    rows.append(("several reasons", int(counts[-1]), len(BAD_PIXEL_REASONS) + 1))
    return rows


def plot_bad_pixels(maps: PixelMaps) -> Figure:
    """Bad-pixel map coloured by reason (pixels with several reasons in black), with a legend
    giving each reason's count."""
    bad = np.asarray(maps.bad_pixels).astype(np.int64)
    pooled, f = _or_pool(bad)
    cat = _categories(pooled)
    n = len(BAD_PIXEL_REASONS)
    colours = [_GOOD_COLOUR, *_REASON_COLOURS[:n], _SEVERAL_COLOUR]
    cmap = ListedColormap(colours)
    norm = BoundaryNorm(np.arange(-0.5, n + 2, 1.0), cmap.N)
    fig = _new_figure(9.0, 6.2)
    ax = fig.add_subplot()
    ax.imshow(cat, cmap=cmap, norm=norm, interpolation="nearest",
              extent=(0, bad.shape[1], bad.shape[0], 0))
    handles = [Patch(fc=colours[cat], ec="0.5", label=f"{label} ({count})")
               for label, count, cat in bad_pixel_legend(maps) if count]
    fig.legend(handles=handles, loc="outside right upper", fontsize=9,
               title="pixels (each counted once)", frameon=False)
    n_bad = int((bad != 0).sum())
    ax.set_title(f"Bad pixels: {n_bad} of {bad.size} ({n_bad / max(bad.size, 1):.2%})"
                 + (f"; each shown pixel covers {f}×{f} sensor pixels" if f > 1 else ""),
                 fontsize=10)
    ax.set_xlabel("x [px]")
    ax.set_ylabel("y [px]")
    return fig


# ------------------------------------------------------------------------------------ HTML

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.banner { background: #b00020; color: #fff; font-weight: bold; font-size: 1.3em;
          padding: 0.6em 1em; margin: 0.8em 0; border-radius: 4px; }
.warning { background: #fff4d6; border-left: 5px solid #e0a000; padding: 0.5em 0.9em;
           margin: 0.5em 0; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { margin-top: 0.4em; max-width: 60em; }
.muted { color: #666; }
"""

#: Section heading, alt text and "how to read this" paragraph of each plot.
_PLOT_TEXT: dict[str, tuple[str, str, str]] = {
    "ptc": (
        "Photon-transfer curve",
        "Photon-transfer curve: temporal variance against mean signal, log-log",
        "Each point is one light level: its mean signal above the dark level (x) against its "
        "temporal variance above the dark variance (y), both in DN. For a shot-noise-limited "
        "camera the points lie on a straight line of slope 1 in this log–log plot, and its "
        "height is the system gain K (variance = K · mean). Filled points are the levels used "
        "for the fit (by default up to 70 % of saturation); hollow ones were left out. At "
        "saturation the "
        "variance collapses because pixels clip at the ADC limit, so the curve bends down; the "
        "star marks the level taken as saturation. Points far off the line inside the fit range "
        "mean a non-linear camera, unstable light, or too few frames.",
    ),
    "snr": (
        "Signal-to-noise ratio",
        "SNR against mean signal in electrons, log-log",
        "Measured SNR of each level below saturation (points) against the mean number of "
        "photo-electrons. The dotted line is the ideal shot-noise limit √μe that no camera can "
        "beat; the red line is the model μe / √(σd² + μe) using the fitted dark noise σd. At "
        "low signal the camera's own dark noise dominates and the model falls below the ideal "
        "line; the signal where it crosses SNR = 1 is roughly the smallest detectable signal. "
        "At high signal the curve follows √μe up to saturation, where the SNR reaches its "
        "maximum. Points well below the model indicate extra noise (e.g. light-source flicker).",
    ),
    "linearity": (
        "Linearity",
        "Deviation from linear response in percent against relative irradiation",
        "Deviation [%] of each level's mean signal from a straight line fitted between 5 % and "
        "95 % of saturation (shaded band), against the relative irradiation (light level × "
        "exposure, as % of the top level). A linear camera stays close to 0 % inside the band; "
        "the dashed lines mark the largest and smallest deviation in the band, and the "
        "linearity error LE is half their distance. Note the scale of the y axis: it is zoomed "
        "to the band. Above saturation the signal stops growing, so the deviation drops sharply; "
        "such levels are drawn as arrows at the plot edge when they lie off the zoomed axis.",
    ),
    "maps": (
        "Per-pixel maps",
        "Per-pixel offset, gain, read noise and dark current maps with histograms",
        "Each row shows one per-pixel property as an image (left; colours span the 1st–99th "
        "percentile of good pixels, so a few extreme pixels do not wash out the picture; a "
        "large sensor is shown in blocks by each block's most extreme pixel, and pixels far "
        "outside the colour range are ringed in magenta) and "
        "as a histogram over all pixels with a logarithmic count axis (right; the shaded band "
        "is the colour range). Structure in an image — gradients, column or row stripes, "
        "blobs — is fixed-pattern behaviour of the sensor; a long tail in a histogram (e.g. "
        "read noise or dark current) is the population of noisy or hot pixels. Offset is in "
        "ADU, conversion gain in electrons per ADU, read noise in electrons and dark current "
        "in electrons per second.",
    ),
    "bad_pixels": (
        "Bad-pixel map",
        "Bad-pixel map coloured by reason",
        "Every flagged pixel, coloured by why it was flagged; black pixels were flagged for "
        "more than one reason. The legend counts each pixel once (its only reason, or "
        "\u201cseveral reasons\u201d), so its counts add up to the sensor; the table above "
        "counts every reason a pixel has. A few scattered pixels are normal for "
        "sCMOS sensors. Clusters, whole rows or columns, or a large fraction of flagged pixels "
        "point to a sensor defect or to a problem with the sweep (uneven light, too few "
        "frames). On large sensors each shown pixel covers a block, drawn bad when any pixel "
        "in it is bad.",
    ),
}


def _e(s: Any) -> str:
    """HTML-escape ``str(s)``."""
    return html.escape(str(s), quote=True)


def _fmt(v: Any, missing: str = "—") -> str:
    """Human formatting of a table value (4 significant digits, integers in full)."""
    if v is None:
        return missing
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if math.isnan(f):
            return "n/a"
        if math.isinf(f):
            return "∞" if f > 0 else "−∞"
        if 1e4 <= abs(f) < 1e9:
            return f"{f:.0f}"
        return f"{f:.4g}"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(to_jsonable(v), ensure_ascii=False)
    return str(v)


def _fmt_quality(key: str, v: Any) -> str:
    """Like :func:`_fmt`, with R² shown to 6 decimals (4 significant digits would read 1)."""
    if "r2" in key.lower() and isinstance(v, (float, np.floating)) and math.isfinite(v):
        return f"{float(v):.6f}"
    return _fmt(v)


def _table(
    header: Iterable[str], rows: Iterable[Iterable[Any]], num_cols: Iterable[int] = ()
) -> str:
    """An HTML table; every cell is escaped; ``num_cols`` are right-aligned."""
    nums = set(num_cols)
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{_e(c)}</td>' if i in nums else f"<td>{_e(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _identity_rows(identity: CameraIdentity, maps: PixelMaps, date: str) -> list[tuple[str, str]]:
    x, y, w, h = identity.roi
    shape = np.asarray(maps.bad_pixels).shape
    return [
        ("camera", identity.name),
        ("serial", identity.serial),
        ("bit depth", f"{identity.bit_depth} bit"),
        ("binning", f"{identity.binning}×{identity.binning}"),
        ("ROI (x, y, width × height)", f"{x}, {y}, {w} × {h} px"),
        ("readout mode", identity.readout_mode or "—"),
        ("sensor map shape", f"{shape[1]} × {shape[0]} px" if len(shape) == 2 else str(shape)),
        ("report date (UTC)", date),
    ]


def emva_rows(emva: EMVAResult) -> list[tuple[str, str, str]]:
    """``(quantity, value, unit)`` rows of the EMVA 1288 global figures."""
    nm = "not measured"
    lower = "" if emva.saturation_reached else " (lower bound: saturation not reached)"
    return [
        ("System gain K", _fmt(emva.system_gain_adu_per_e), "DN/e⁻"),
        ("Inverse system gain 1/K", _fmt(emva.gain_e_per_adu), "e⁻/ADU"),
        ("Temporal dark noise σd", _fmt(emva.temporal_dark_noise_e), "e⁻"),
        ("Temporal dark noise σy,dark", _fmt(emva.temporal_dark_noise_adu), "DN"),
        ("DSNU", _fmt(emva.dsnu_e), "e⁻"),
        ("PRNU", _fmt(emva.prnu_percent), "%"),
        ("Saturation μy,sat (mean grey value)" + lower, _fmt(emva.saturation_adu), "DN"),
        ("Saturation capacity μe,sat" + lower, _fmt(emva.saturation_capacity_e), "e⁻"),
        ("Maximum SNR", _fmt(emva.snr_max), "ratio"),
        ("Maximum SNR", _fmt(emva.snr_max_db), "dB"),
        ("Dynamic range", _fmt(emva.dynamic_range), "ratio"),
        ("Dynamic range", _fmt(emva.dynamic_range_db), "dB"),
        ("Linearity error LE", _fmt(emva.linearity_error_percent), "%"),
        ("Dark current (from mean)", _fmt(emva.dark_current_e_per_s, nm), "e⁻/s"),
        ("Dark current (from variance)",
         _fmt(emva.dark_current_from_variance_e_per_s, nm), "e⁻/s"),
    ]


def _extra_heading(extra: Mapping[str, Any]) -> str:
    """"Comparison with ground truth" when the keys speak of truth (the simulator's
    ``compare_to_truth``), else a neutral heading."""
    keys = " ".join(str(k).lower() for k in extra)
    if any(w in keys for w in ("true", "truth", "planted")):
        return "Comparison with ground truth"
    return "Additional results"


def _plot_section(key: str) -> str:
    heading, alt, how = _PLOT_TEXT[key]
    src = PLOT_FILES[key]
    return (
        f"<h3>{_e(heading)}</h3><figure>"
        f'<img src="{_e(src)}" alt="{_e(alt)}">'
        f"<figcaption><strong>How to read this.</strong> {_e(how)}</figcaption></figure>"
    )


def render_html(
    fit: FitResult,
    identity: CameraIdentity,
    *,
    title: str,
    date: str,
    extra: Mapping[str, Any] | None = None,
    estimated: bool = False,
) -> str:
    """The report page; plots are referenced by relative file name (see :data:`PLOT_FILES`)."""
    emva, maps = fit.emva, fit.maps
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)} — {_e(identity.name)} {_e(identity.serial)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">{_e(identity.name)} · serial {_e(identity.serial)} · {_e(date)}</p>',
    ]
    if estimated:
        parts.append('<div class="banner">ESTIMATED from data, not calibrated</div>')
    parts += ["<h2>Camera</h2>", _table(("field", "value"), _identity_rows(identity, maps, date))]
    if emva.notes:
        parts.append("<h2>Warnings</h2>")
        parts += [f'<div class="warning">⚠ {_e(n)}</div>' for n in emva.notes]
    parts += [
        "<h2>EMVA 1288 figures</h2>",
        _table(("quantity", "value", "unit"), emva_rows(emva), num_cols=(1,)),
        '<p class="muted">DN (digital number) and ADU are the same unit: one step of the '
        "camera's output.</p>",
        "<h2>Fit quality</h2>",
        _table(("measure", "value"), [(k, _fmt_quality(k, v)) for k, v in fit.quality.items()],
               num_cols=(1,)),
        "<h2>Bad pixels</h2>",
        _bad_pixel_html(maps),
        "<h2>Per-pixel map statistics (good pixels)</h2>",
        _map_stats_html(maps),
    ]
    if extra:
        parts += [
            f"<h2>{_e(_extra_heading(extra))}</h2>",
            _table(("quantity", "value"), [(k, _fmt(v)) for k, v in extra.items()], num_cols=(1,)),
        ]
    parts.append("<h2>Plots</h2>")
    parts += [_plot_section(k) for k in PLOT_FILES]
    parts.append(
        f'<p class="muted">Machine-readable figures: <a href="{SUMMARY_NAME}">{SUMMARY_NAME}</a>'
        "</p></body></html>"
    )
    return "\n".join(parts) + "\n"


def _bad_pixel_html(maps: PixelMaps) -> str:
    rows = bad_pixel_table(maps)
    bad = np.asarray(maps.bad_pixels)
    n_bad = int((bad != 0).sum())
    body = [
        (r["bit"], r["reason"], r["description"], r["count"], f"{r['fraction']:.3%}") for r in rows
    ]
    n_several = int((_categories(bad.astype(np.int64)) == len(BAD_PIXEL_REASONS) + 1).sum())
    body.append(("", "several reasons", "flagged for more than one reason (counted in each row "
                 "above)", n_several, f"{n_several / max(bad.size, 1):.3%}"))
    body.append(("", "any reason", "flagged for at least one reason", n_bad,
                 f"{n_bad / max(bad.size, 1):.3%}"))
    return _table(("bit", "reason", "meaning", "pixels", "fraction"), body, num_cols=(0, 3, 4))


def _map_stats_html(maps: PixelMaps) -> str:
    stats = map_statistics(maps)
    rows = []
    for name, title, unit, _ in _MAPS:
        s = stats[name]
        if s is None:
            rows.append((title, unit, "not measured", "", ""))
        else:
            rows.append((title, unit, _fmt(s["median"]), _fmt(s["p5"]), _fmt(s["p95"])))
    return _table(("map", "unit", "median", "5th percentile", "95th percentile"), rows,
                  num_cols=(2, 3, 4))
