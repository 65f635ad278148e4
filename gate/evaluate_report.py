"""The HTML report of ``rawgate evaluate``: plots and tables on the shared report kit.

Three plots, each a plain function of the evaluation returning a matplotlib figure:

* :func:`plot_pareto` — compression ratio against the worst statistic's distance to its pass
  limit (1 = on the pass line), the passing codecs' Pareto front drawn through;
* :func:`plot_ratio_psnr` — compression ratio against PSNR: where PSNR would rank codecs;
* :func:`plot_epsilon_bars` — each parameter's ε per codec with the ±1 lines.

:func:`write_evaluation_report` writes ``report.html`` and ``plots/*.png`` into a folder.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .evaluate import JETRAW_PUBLISHED_RATIO, CodecResult, Evaluation

__all__ = ["plot_epsilon_bars", "plot_pareto", "plot_ratio_psnr", "summarise", "write_evaluation_report"]

def summarise(results: Sequence[CodecResult]) -> list[dict[str, Any]]:
    """One row per codec spec over every frame: mean ratio, PSNR, worst limit fraction and worst
    |ε|, passed on every frame, and the mean of each judged statistic's value."""
    by: dict[str, list[CodecResult]] = defaultdict(list)
    for r in results:
        by[r.spec].append(r)
    rows = []
    for spec, rs in by.items():
        ok = [r for r in rs if not r.error]

        def mean(attr: str, rows_: list[CodecResult] = ok) -> float | None:
            vals = [getattr(r, attr) for r in rows_ if getattr(r, attr) is not None]
            vals = [v for v in vals if math.isfinite(v)]
            return float(np.mean(vals)) if vals else None

        eps: dict[str, list[float]] = defaultdict(list)
        for r in ok:
            for k, v in r.epsilons.items():
                eps[k].append(v)
        worst = [r.limit_fraction for r in ok if r.limit_fraction is not None]
        rows.append({"spec": spec, "family": rs[0].family, "lossless": rs[0].lossless,
                     "ratio": mean("compression_ratio"), "psnr_db": mean("psnr_db"),
                     "limit_fraction": max(worst) if worst else None,
                     "worst_abs_epsilon": max((r.worst_abs_epsilon for r in ok if r.worst_abs_epsilon is not None),
                                              default=None),
                     "passed": bool(ok) and len(ok) == len(rs) and all(r.passed for r in ok),
                     "epsilons": {k: float(np.mean(v)) for k, v in eps.items()}})
    return rows


def _scatter(ax: Any, rows: list[dict], y: str) -> None:
    for passed, colour, marker, label in ((True, "#1a7f37", "o", "passes ε"), (False, "#cf222e", "x", "fails ε")):
        sel = [r for r in rows if r["passed"] is passed and r["ratio"] and r[y] is not None]
        ax.scatter([r["ratio"] for r in sel], [r[y] for r in sel], c=colour, marker=marker, s=36, label=label,
                   zorder=3)
        for r in sel:
            ax.annotate(r["spec"], (r["ratio"], r[y]), fontsize=7, xytext=(4, 3), textcoords="offset points")


def plot_pareto(rows: list[dict]) -> Figure | None:
    """Ratio against the worst statistic's fraction of its pass limit; the pass line at 1 and
    the passing codecs' front (the highest ratio at each level of load)."""
    # copies: the plotted value is added to each row without touching the caller's
    rows = [{**r, "_y": max(r["limit_fraction"], 1e-3)} for r in rows
            if r["ratio"] and r["limit_fraction"] is not None]
    if not rows:
        return None
    fig = Figure(figsize=(7.0, 4.4))
    ax = fig.add_subplot()
    _scatter(ax, rows, "_y")
    ok = sorted((r for r in rows if r["passed"]), key=lambda r: r["ratio"])
    front, best = [], -1.0
    for r in sorted(ok, key=lambda r: r["_y"]):
        if r["ratio"] > best:
            front.append(r)
            best = r["ratio"]
    if len(front) > 1:
        ax.plot([r["ratio"] for r in front], [r["_y"] for r in front], color="#1a7f37", lw=1, alpha=0.6,
                label="passing front")
    ax.axhline(1.0, color="#cf222e", ls="--", lw=1.2, label="pass line (a statistic at its limit)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("compression ratio (raw bytes / coded bytes)")
    ax.set_ylabel("worst statistic: |ε − replicas' mean| / its limit")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, which="both", alpha=0.2)
    return fig


def plot_ratio_psnr(rows: list[dict]) -> Figure | None:
    """Ratio against PSNR (dB over the camera's range), coloured by the ε verdict."""
    rows = [dict(r) for r in rows if r["ratio"] and r["psnr_db"] is not None]
    if not rows:
        return None
    fig = Figure(figsize=(7.0, 4.0))
    ax = fig.add_subplot()
    _scatter(ax, rows, "psnr_db")
    ax.set_xscale("log")
    ax.set_xlabel("compression ratio (raw bytes / coded bytes)")
    ax.set_ylabel("PSNR [dB]")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.2)
    return fig


def plot_epsilon_bars(rows: list[dict], max_parameters: int = 10) -> Figure | None:
    """Each parameter's ε (mean over frames) per lossy codec, with the ±1 lines: the standard
    scores centred on 0 for raw-equivalent data (whole-image ε with a segmenter, the mean ε of
    the objects and of the filter bank), the ``max_parameters`` that moved most."""
    lossy = [r for r in rows if not r["lossless"] and r["epsilons"]]
    if not lossy:
        return None
    names = sorted({k for r in lossy for k in r["epsilons"]})
    names = sorted(names, key=lambda k: -max(abs(r["epsilons"].get(k, 0.0)) for r in lossy))[:max_parameters]
    fig = Figure(figsize=(7.0, 1.2 + len(names) * (0.12 * len(lossy) + 0.15)))
    ax = fig.add_subplot()
    h = 0.8 / len(lossy)
    y = np.arange(len(names))
    for i, r in enumerate(lossy):
        vals = [r["epsilons"].get(k, np.nan) for k in names]
        ax.barh(y - 0.4 + (i + 0.5) * h, vals, height=h, label=r["spec"], alpha=0.85)
    for x in (-1.0, 1.0):
        ax.axvline(x, color="#57606a", ls=":", lw=1)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ε (standard score against raw-equivalent replicas)")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    return fig


def _fmt(v: Any, fmt: str) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def write_evaluation_report(ev: Evaluation, folder: str | Path) -> Path:
    """Write ``report.html`` with the tables, the search, the recommendation with the config
    snippet, and the three plots (``plots/*.png``) into ``folder``; returns the HTML path."""
    from importlib.metadata import PackageNotFoundError, version

    from rawgate.reports import write_page

    try:
        ver = version("rawgate")
    except PackageNotFoundError:
        ver = "(not installed)"
    rows = summarise([*ev.results, *(x for s in ev.searches for x in s.results)])
    estimated = {f.name for f in ev.frames if f.model == "estimated"}
    table = []
    for r in ev.results:
        table.append({
            "frame": r.frame + (" (estimated model)" if r.frame in estimated else ""), "spec": r.spec,
            "error": r.error, "ratio": _fmt(r.compression_ratio, ".2f"), "saving": _fmt(r.space_saving, ".1%"),
            "psnr": _fmt(r.psnr_db, ".2f"), "ssim": _fmt(r.ssim, ".4f"), "ms_ssim": _fmt(r.ms_ssim, ".4f"),
            "pearson": _fmt(r.pearson, ".5f"), "bias": _fmt(r.bias_in_sigma, "+.3f"),
            "worst": "—" if r.worst_abs_epsilon is None else f"{r.worst_abs_epsilon:.2f} ({r.worst_statistic})",
            "load": _fmt(r.limit_fraction, ".2f"), "object": _fmt(r.mean_object_abs_epsilon, ".2f"),
            "passed": r.passed, "failing": ", ".join(r.failing[:3]),
            "seg": None if r.seg_f1 is None else {
                "f1": _fmt(r.seg_f1, ".3f"), "precision": _fmt(r.seg_precision, ".3f"),
                "accuracy": _fmt(r.seg_accuracy, ".3f"), "pairs": r.matched_objects,
                "p": {k: _fmt(v, ".3f") for k, v in r.p_values.items()}},
        })
    p_names = sorted({k for r in ev.results for k in r.p_values})
    notes = [f"{r.frame}: {r.spec} passes the study's p-value tests (every p ≥ 0.05) but fails ε "
             f"({', '.join(r.failing[:3])}): the measurements moved further than the camera noise moves them, "
             "and a t-test on one image does not see it" for r in ev.results if r.p_tests_pass and r.passed is False]
    searches = [{"auto": s.auto, "best": "—" if s.best is None else f"{s.option}={s.best:g}",
                 "ratio": _fmt(next((q for v, ok, q in s.tried if v == s.best), None), ".2f"),
                 "fails": "—" if s.first_failing is None else f"{s.option}={s.first_failing:g}",
                 "failing": ", ".join(s.failing[:3]), "tried": len(s.tried)} for s in ev.searches]
    figures = {"pareto": plot_pareto(rows), "ratio_psnr": plot_ratio_psnr(rows), "epsilon": plot_epsilon_bars(rows)}
    context = {
        "version": ver, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "frames": ev.frames, "settings": ev.settings, "table": table, "p_names": p_names, "notes": notes,
        "searches": searches, "recommendation": ev.recommendation, "jetraw": JETRAW_PUBLISHED_RATIO,
    }
    return write_page(folder, "evaluate.html.j2", context, figures)
