"""The spot check's report: ``epsilon.json`` and an HTML page with the paper's plots.

Plots (Pomarico et al. 2022): per-object area (volume) differences for the replicas against
the codec (Fig. 2c); whole-image parameters normalised to raw with the replicas' spread
(Fig. 2d); mean per-object ε per parameter with its spread over objects and the ±1 lines
(Fig. 2e); the noise power against the held-out replicas; and the model-free filter ε (Fig. 4f,g).
The page is rendered on the shared report kit (:mod:`rawgate.reports`, ``epsilon.html.j2``); every
file is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from rawgate.calibration._files import atomic_write, to_jsonable

from .check import EpsilonReport

__all__ = ["write_report", "JSON_NAME", "HTML_NAME"]

JSON_NAME = "epsilon.json"
HTML_NAME = "report.html"


def plot_object_deltas(rep: EpsilonReport) -> Figure | None:
    """Fig. 2c: histogram of per-object Area (Volume) change, replicas vs the codec."""
    key = "Area" if "delta Area" in rep.per_object else ("Volume" if "delta Volume" in rep.per_object else None)
    if key is None or not len(rep.per_object.get(f"delta {key}", [])):
        return None
    d_c = np.asarray(rep.per_object[f"delta {key}"])
    d_r = np.asarray(rep.per_object[f"delta {key} replicas"])
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.add_subplot()
    lo, hi = np.percentile(np.concatenate([d_c, d_r]), [0.5, 99.5])
    lo, hi = min(lo, -1) - 0.5, max(hi, 1) + 0.5
    bins = np.arange(np.floor(lo), np.ceil(hi) + 1) if hi - lo < 80 else 60
    ax.hist(d_r, bins=bins, density=True, alpha=0.55, label=f"replicas: {d_r.mean():+.2f} ± {d_r.std():.2f}")
    ax.hist(d_c, bins=bins, density=True, histtype="step", lw=2, color="C3",
            label=f"{rep.meta.get('codec', 'codec')}: {d_c.mean():+.2f} ± {d_c.std():.2f}")
    unit = "px" if key == "Area" else "voxels"
    ax.set_xlabel(f"Δ{key} per object vs raw [{unit}]")
    ax.set_ylabel("fraction of objects")
    ax.legend(fontsize=8)
    return fig


def plot_whole(rep: EpsilonReport) -> Figure | None:
    """Fig. 2d: whole-image parameters as their change from raw [%]; the replicas' mean ± std as a
    band (the camera noise's own spread), the codec as a square."""
    if not rep.whole:
        return None
    names = list(rep.whole)
    fig = Figure(figsize=(5.0, 3.4))
    ax = fig.add_subplot()
    for i, n in enumerate(names):
        w = rep.whole[n]
        base = w["chi_raw"] if w["chi_raw"] else 1.0
        r = 100.0 * (np.asarray(w["chi_replicas"], float) / base - 1.0)
        m, s = float(r.mean()), float(r.std(ddof=1)) if r.size > 1 else 0.0
        ax.fill_between([i - 0.3, i + 0.3], m - s, m + s, color="C0", alpha=0.2, lw=0,
                        label="replicas: mean ± std" if i == 0 else None)
        ax.plot([i - 0.3, i + 0.3], [m, m], color="C0", lw=1)
        ax.plot(i, 100.0 * (w["chi_compressed"] / base - 1.0), "s", color="C3",
                label=str(rep.meta.get("codec", "codec")) if i == 0 else None)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("change from raw [%]")
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")  # no "+9.999e−1"-style offsets
    ax.legend(fontsize=8)
    return fig


def plot_object_epsilon(rep: EpsilonReport) -> Figure | None:
    """Fig. 2e: mean ε per parameter (spread as bars), ±1 lines and the calibrated range."""
    rows = [s for s in rep.stats if s.family == "object" and s.kind == "mean"]
    if not rows or not rows[0].detail.get("n_objects"):
        return None
    judged = {j.name: j for j in rep.verdict.judged}
    spread = {s.name.replace("spread ε ", ""): s.value for s in rep.stats if s.family == "object" and s.kind == "spread"}
    names = [s.name.replace("mean ε ", "") for s in rows]
    fig = Figure(figsize=(8.0, 3.6))
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    for i, s in enumerate(rows):
        j = judged[s.name]
        ax.fill_between([i - 0.35, i + 0.35], j.lower, j.upper, color="0.85", lw=0)
        ax.errorbar(i, s.value, yerr=spread[names[i]], fmt="o", capsize=3, color="C0" if j.passed else "C3")
    ax.axhline(1, ls="--", color="k", lw=0.7)
    ax.axhline(-1, ls="--", color="k", lw=0.7)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("mean ε over objects (bar: spread)")
    ax.set_title("grey: camera-noise range", fontsize=8)
    return fig


def plot_filters(rep: EpsilonReport) -> Figure:
    """Fig. 4f,g: mean and rms of the per-pixel filter ε with their calibrated ranges."""
    judged = {j.name: j for j in rep.verdict.judged}
    fig = Figure(figsize=(8.0, 3.4))
    for k, kind in enumerate(("mean", "rms")):
        ax = fig.add_subplot(1, 2, k + 1)
        rows = [s for s in rep.stats if s.family == "filter" and s.kind == kind]
        for i, s in enumerate(rows):
            j = judged[s.name]
            lo = j.lower if j.lower is not None else 0.0
            ax.fill_between([i - 0.35, i + 0.35], lo, j.upper, color="0.85", lw=0)
            ax.plot(i, s.value, "o", color="C0" if j.passed else "C3")
        ax.set_xticks(range(len(rows)), [s.name.split("ε ", 1)[1] for s in rows], rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{kind} of per-pixel ε", fontsize=9)
    return fig


def plot_noise_power(rep: EpsilonReport) -> Figure | None:
    """The noise power (log2 of the high-frequency power over raw's): raw at 0, each held-out
    replica, the codec, and the camera-noise range — a codec that smooths noise away falls below."""
    s = next((x for x in rep.stats if x.name == "noise power"), None)
    if s is None:
        return None
    j = next(x for x in rep.verdict.judged if x.name == s.name)
    fig = Figure(figsize=(5.0, 2.6))
    ax = fig.add_subplot()
    lo = j.lower if j.lower is not None else min(0.0, float(np.min(s.null)))
    ax.axvspan(lo, j.upper, color="0.88", lw=0, label="camera-noise range")
    ax.plot(np.asarray(s.null, float), np.zeros(len(s.null)), "o", color="C0", alpha=0.7,
            label="held-out replicas")
    ax.plot([0.0], [0.0], "D", color="k", label="raw")
    ax.plot([s.value], [0.0], "s", color="C0" if j.passed else "C3", ms=9,
            label=f"{rep.meta.get('codec', 'codec')}: {s.value:+.2f}")
    ax.set_yticks([])
    ax.set_xlabel("noise power: log2(high-frequency power / raw's)")
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    return fig


def _where(rep: EpsilonReport) -> str:
    """What was checked, in words: the item (or raw file), plane and region, the shape."""
    m = rep.meta
    parts = [str(m["item"]) if m.get("item") else str(m.get("raw") or "frame")]
    if m.get("plane") is not None:
        parts.append(f"plane {m['plane']}")
    if m.get("selection"):
        parts.append(str(m["selection"]))
    if m.get("region"):
        parts.append(str(m["region"]))
    return ", ".join(parts) + f" ({'×'.join(map(str, rep.shape))} px)"


def write_report(rep: EpsilonReport, out_dir: str | Path) -> Path:
    """Write ``epsilon.json``, the plots (``plots/*.png``) and ``report.html`` (on the shared
    report kit, :mod:`rawgate.reports`) into ``out_dir``; return the page."""
    from importlib.metadata import PackageNotFoundError, version

    from rawgate.reports import write_page

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = to_jsonable(rep.to_dict())
    atomic_write(out / JSON_NAME, lambda fh: fh.write((json.dumps(data, indent=1, allow_nan=False) + "\n").encode()))
    figures = {
        "object_deltas": plot_object_deltas(rep),
        "whole": plot_whole(rep),
        "object_epsilon": plot_object_epsilon(rep),
        "noise_power": plot_noise_power(rep),
        "filters": plot_filters(rep),
    }
    judged = {j.name: j for j in rep.verdict.judged}
    rows = []
    for s in rep.stats:
        j = judged[s.name]
        rows.append({
            "name": s.name, "value": f"{s.value:+.3f}",
            "range": f"≤ {j.upper:.3g}" if j.lower is None else f"{j.lower:+.3g} … {j.upper:+.3g}",
            "null": f"{j.null_mean:+.3f} ± {j.null_std:.3f}",
            "state": "not judged" if not j.judged else ("ok" if j.passed else f"FAIL ({j.excess:.1f} null σ beyond)"),
            "cls": "" if not j.judged else ("pass" if j.passed else "fail"),
        })
    try:
        ver = version("rawgate")
    except PackageNotFoundError:
        ver = "(not installed)"
    from datetime import datetime, timezone

    context = {"rep": rep, "v": rep.verdict, "where": _where(rep), "codec": str(rep.meta.get("codec")),
               "rows": rows, "m": rep.matching, "u": rep.sigma_uncertainty,
               "max_match": rep.meta.get("max_match_distance_px"),
               "timings": ", ".join(f"{k} {t:.2f} s" for k, t in rep.timings_s.items()),
               "version": ver, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return write_page(out, "epsilon.html.j2", context, figures)
