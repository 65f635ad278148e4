"""The spot check's report: ``epsilon.json`` and an HTML page with the paper's plots.

Plots (Pomarico et al. 2022): per-object area (volume) differences for the replicas against
the codec (Fig. 2c); whole-image parameters normalised to raw with the replicas' spread
(Fig. 2d); mean per-object ε per parameter with its spread over objects and the ±1 lines
(Fig. 2e); and the model-free filter ε (Fig. 4f,g). Every file is written atomically.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rawgate.calibration._files import atomic_write, to_jsonable

from .check import EpsilonReport

__all__ = ["write_report", "JSON_NAME", "HTML_NAME"]

JSON_NAME = "epsilon.json"
HTML_NAME = "report.html"
_DPI = 110


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=_DPI))


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
    """Fig. 2d: whole-image parameters normalised to raw; replicas as mean ± std."""
    if not rep.whole:
        return None
    names = list(rep.whole)
    fig = Figure(figsize=(5.0, 3.4))
    ax = fig.add_subplot()
    for i, n in enumerate(names):
        w = rep.whole[n]
        base = w["chi_raw"] if w["chi_raw"] else 1.0
        r = np.asarray(w["chi_replicas"]) / base
        ax.errorbar(i - 0.12, r.mean(), yerr=r.std(ddof=1), fmt="o", color="C0", capsize=4,
                    label="replicas" if i == 0 else None)
        ax.plot(i + 0.12, w["chi_compressed"] / base, "s", color="C3", label="codec" if i == 0 else None)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("χ / χ_raw")
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


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}
td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child{text-align:left}
.pass{color:#070}.fail{color:#b00;font-weight:bold}.banner{padding:.6em 1em;font-size:1.3em;border-radius:4px}
.bp{background:#e4f4e4}.bf{background:#f8e0e0}.note{color:#855}"""


def write_report(rep: EpsilonReport, out_dir: str | Path) -> Path:
    """Write ``epsilon.json``, the plots and ``report.html`` into ``out_dir``; return the page."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = to_jsonable(rep.to_dict())
    atomic_write(out / JSON_NAME, lambda fh: fh.write((json.dumps(data, indent=1, allow_nan=False) + "\n").encode()))
    figs = {
        "object_deltas.png": plot_object_deltas(rep),
        "whole.png": plot_whole(rep),
        "object_epsilon.png": plot_object_epsilon(rep),
        "filters.png": plot_filters(rep),
    }
    imgs = []
    for name, fig in figs.items():
        if fig is not None:
            _save(fig, out / name)
            imgs.append(f'<p><img src="{name}" alt="{name}"></p>')
    v = rep.verdict
    e = html.escape
    rows = []
    judged = {j.name: j for j in v.judged}
    for s in rep.stats:
        j = judged[s.name]
        lim = f"≤ {j.upper:.3g}" if j.lower is None else f"{j.lower:+.3g} … {j.upper:+.3g}"
        state = "not judged" if not j.judged else ("ok" if j.passed else f"FAIL ({j.excess:.1f} null σ beyond)")
        cls = "" if not j.judged else ("pass" if j.passed else "fail")
        rows.append(
            f"<tr><td>{e(s.name)}</td><td>{s.value:+.3f}</td><td>{e(lim)}</td>"
            f"<td>{j.null_mean:+.3f} ± {j.null_std:.3f}</td><td class='{cls}'>{e(state)}</td></tr>"
        )
    m = rep.matching
    match_html = "" if m is None else (
        f"<p>Objects: {m.n_raw_objects} in the raw segmentation, {m.n_objects_scored} scored. Unmatched (beyond "
        f"{rep.meta.get('max_match_distance_px')} px): {m.unmatched_fraction_compressed:.1%} in the compressed image, "
        f"{m.unmatched_fraction_replicas:.1%} on average in the replicas; matched by nearest rather than identical "
        f"centre: {m.nearest_fraction_compressed:.1%}.</p>"
    )
    u = rep.sigma_uncertainty
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>ε spot check</title><style>{_CSS}</style></head><body>
<h1>ε spot check</h1>
<p class="banner {'bp' if v.passed else 'bf'}">{'PASS' if v.passed else 'FAIL'}: {e(v.reason)}</p>
<p>Codec <b>{e(str(rep.meta.get('codec')))}</b> on {e(str(rep.meta.get('selection', '')))} {e('×'.join(map(str, rep.shape)))}
({e(str(rep.meta.get('raw', '')))}); {rep.n_replicas} raw-equivalent replicas, seed {rep.seed}.
ε = (χ_raw − χ_codec) / σ_raw, with σ_raw the spread over the replicas. σ_raw from {rep.n_replicas} replicas is itself
uncertain by ±{u['relative_standard_error']:.0%} (95 %: ×{u['ci95_low']:.2f} … ×{u['ci95_high']:.2f}); more replicas narrow it.</p>
<p>How to read it: every statistic has a <i>camera-noise range</i>, calibrated on the replicas themselves (each held out
in turn and scored like a codec), widened to include 0 (the raw image) and Bonferroni-corrected over the {v.n_tested}
statistics tested, so that a perfectly raw-equivalent input fails with probability ≤ {v.false_reject_rate:g}.
A statistic outside its range means the codec moved that result further than the camera's own noise does.
Per-object means and spreads are judged against all held-out replicas' per-object ε pooled ({rep.n_replicas} × objects values).
<i>noise power</i> (log2 of the decoded image's high-frequency power over raw's; raw 0, a replica ≈ +1) is not an ε:
it fails a codec that smooths the camera noise away, which ε alone cannot see.</p>
{match_html}
{''.join(f'<p class="note">note: {e(n)}</p>' for n in rep.notes)}
{''.join(imgs)}
<h2>Every statistic</h2>
<table><tr><th>statistic</th><th>value [σ_raw; noise power: log2]</th><th>camera-noise range</th><th>null (held-out replicas)</th><th></th></tr>
{''.join(rows)}</table>
<h2>Timings</h2><p>{e(', '.join(f'{k} {v:.2f} s' for k, v in rep.timings_s.items()))}</p>
</body></html>"""
    page_path = out / HTML_NAME
    atomic_write(page_path, lambda fh: fh.write(page.encode("utf-8")))
    return page_path
