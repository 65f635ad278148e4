"""The calibration report: HTML page, PNG plots and strict-JSON summary from a real sweep."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from rawgate.calibration.fit import BAD_HOT, BAD_NOISY, FitResult, PixelMaps, fit_sweep
from rawgate.calibration.instruments.simulated import SimulatedInstrument
from rawgate.calibration.report import (
    PLOT_FILES,
    REPORT_NAME,
    SUMMARY_NAME,
    _extreme_pool,
    _or_pool,
    bad_pixel_legend,
    map_outliers,
    plot_maps,
    write_calibration_report,
)
from rawgate.calibration.sweep import SweepPlan, run_sweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BANNER = "ESTIMATED from data, not calibrated"


def _strict_json(text: str):
    """``json.loads`` that refuses NaN and infinities."""

    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def _img_sources(page: str) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]+)"', page)


def _assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert len(data) > len(PNG_MAGIC), path
    assert data[:8] == PNG_MAGIC, path


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A real 64² sweep through the simulated microscope and its fit."""
    inst = SimulatedInstrument(seed=5, shape=(64, 64))
    plan = SweepPlan(dark_frames=10, frames_per_level=10, light_levels=12)
    sweep = run_sweep(inst, plan, tmp_path_factory.mktemp("sweep") / "small.rgsweep")
    return sweep.identity, fit_sweep(sweep)


@pytest.fixture(scope="module")
def written(small, tmp_path_factory):
    identity, fit = small
    out = tmp_path_factory.mktemp("rep") / "nested" / "report"  # parents do not exist yet
    path = write_calibration_report(
        fit, identity, out, extra={"true_system_gain_adu_per_e": 2.1, "nan_value": float("nan")}
    )
    return path, out


def test_report_page_and_plots(small, written):
    identity, _ = small
    path, out = written
    assert path == out / REPORT_NAME and path.is_file()
    page = path.read_text(encoding="utf-8")
    assert identity.serial in page
    assert BANNER not in page
    sources = _img_sources(page)
    assert sorted(sources) == sorted(PLOT_FILES.values())
    for src in sources:
        assert not Path(src).is_absolute() and "/" not in src  # relative, next to the page
        _assert_png(out / src)
    for name in ("System gain", "DSNU", "PRNU", "Dynamic range", "Linearity error", "Dark current"):
        assert name in page
    assert "Comparison with ground truth" in page
    # no temporary files left behind
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_summary_is_strict_json(small, written):
    identity, fit = small
    _, out = written
    summary = _strict_json((out / SUMMARY_NAME).read_text(encoding="utf-8"))
    assert summary["emva"]["system_gain_adu_per_e"] == fit.emva.system_gain_adu_per_e
    assert summary["identity"]["serial"] == identity.serial
    assert summary["estimated"] is False
    assert summary["bad_pixels"]["counts"] == fit.maps.bad_pixel_counts()
    assert summary["extra"] == {"true_system_gain_adu_per_e": 2.1, "nan_value": None}
    good = fit.maps.bad_pixels == 0
    stats = summary["maps"]["read_noise_e"]
    assert stats["median"] == pytest.approx(float(np.median(fit.maps.read_noise_e[good])))
    assert stats["p5"] <= stats["median"] <= stats["p95"]
    assert set(summary["maps"]) == {
        "offset_adu", "gain_e_per_adu", "read_noise_e", "dark_current_e_per_s"
    }
    assert summary["quality"]["n_levels_in_fit"] == fit.quality["n_levels_in_fit"]


def test_estimated_banner(small, tmp_path):
    identity, fit = small
    page = write_calibration_report(fit, identity, tmp_path, estimated=True).read_text("utf-8")
    assert BANNER in page
    assert _strict_json((tmp_path / SUMMARY_NAME).read_text("utf-8"))["estimated"] is True


def test_camera_name_is_escaped(small, tmp_path):
    identity, fit = small
    evil = dataclasses.replace(identity, name='Cam <script>alert("x")</script> & co')
    page = write_calibration_report(fit, evil, tmp_path, title="<b>t</b>").read_text("utf-8")
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "<b>t</b>" not in page
    summary = _strict_json((tmp_path / SUMMARY_NAME).read_text("utf-8"))
    assert summary["identity"]["name"] == evil.name  # JSON keeps the raw value


def test_notes_and_missing_dark_current(small, tmp_path):
    """Notes become visible warnings; a fit without dark current still reports cleanly."""
    identity, fit = small
    emva = dataclasses.replace(
        fit.emva,
        notes=["dark current not measured: one dark exposure", "odd <note>"],
        dark_current_e_per_s=None,
        dark_current_from_variance_e_per_s=None,
        linearity_error_percent=float("nan"),
        dynamic_range=float("inf"),
        dynamic_range_db=float("inf"),
    )
    maps = dataclasses.replace(fit.maps, dark_current_e_per_s=None)
    path = write_calibration_report(FitResult(emva, maps, fit.quality), identity, tmp_path)
    page = path.read_text("utf-8")
    assert page.count('class="warning"') == 2
    assert "odd &lt;note&gt;" in page
    assert "not measured" in page
    for src in _img_sources(page):
        _assert_png(tmp_path / src)
    summary = _strict_json((tmp_path / SUMMARY_NAME).read_text("utf-8"))
    assert summary["maps"]["dark_current_e_per_s"] is None
    assert summary["emva"]["dark_current_e_per_s"] is None
    assert summary["emva"]["dynamic_range"] is None
    assert summary["emva"]["linearity_error_percent"] is None


def test_large_maps_are_downsampled(small, tmp_path):
    """Maps over 1024 px a side render (strided), and pooling keeps isolated bad pixels."""
    identity, fit = small
    rng = np.random.default_rng(0)
    shape = (1100, 1030)
    bad = np.zeros(shape, np.uint8)
    bad[7, 900] = BAD_HOT
    bad[1099, 3] = BAD_NOISY | BAD_HOT
    maps = PixelMaps(
        offset_adu=rng.normal(100, 2, shape),
        gain_e_per_adu=rng.normal(0.47, 0.02, shape),
        read_noise_e=rng.lognormal(0.4, 0.2, shape),
        dark_current_e_per_s=rng.normal(0.5, 0.3, shape),
        bad_pixels=bad,
        gain_rel_se=np.full(shape, 0.04),
    )
    pooled, f = _or_pool(bad)
    assert f == 3 and max(pooled.shape) <= 512
    assert pooled[7 // f, 900 // f] == BAD_HOT
    assert pooled[1099 // f, 3 // f] == BAD_NOISY | BAD_HOT
    assert int((pooled != 0).sum()) == 2
    path = write_calibration_report(FitResult(fit.emva, maps, fit.quality), identity, tmp_path)
    for src in _img_sources(path.read_text("utf-8")):
        _assert_png(tmp_path / src)
    summary = _strict_json((tmp_path / SUMMARY_NAME).read_text("utf-8"))
    assert summary["shape"] == list(shape)
    assert math.isclose(summary["maps"]["offset_adu"]["median"], 100, abs_tol=0.1)


def test_no_pyplot_state(small, tmp_path):
    identity, fit = small
    had_pyplot = "matplotlib.pyplot" in sys.modules
    write_calibration_report(fit, identity, tmp_path)
    if not had_pyplot:
        assert "matplotlib.pyplot" not in sys.modules


def test_bad_pixel_legend_counts_each_pixel_once(small):
    """The legend partitions the sensor (its counts add up), unlike the per-reason counts of
    the table, in which a pixel with two reasons counts twice."""
    _, fit = small
    bad = np.zeros((40, 50), np.uint8)
    bad[1, 1] = BAD_HOT
    bad[2, 2] = BAD_NOISY
    bad[3, 3] = BAD_HOT | BAD_NOISY
    bad[4, 4:7] = BAD_HOT
    maps = dataclasses.replace(fit.maps, bad_pixels=bad)
    legend = {label: n for label, n, _ in bad_pixel_legend(maps)}
    assert sum(legend.values()) == bad.size
    assert legend["good"] == bad.size - 6
    assert legend["several reasons"] == 1
    hot = next(k for k in legend if k.startswith("hot") or "hot" in k.lower())
    assert legend[hot] == 4  # (1, 1) and the three of row 4; not the pixel with two reasons
    assert sum(((bad & BAD_HOT) > 0).ravel()) == 5  # what the table counts


def test_a_single_offset_outlier_survives_the_display_reduction():
    """A 2048² offset map with one stuck pixel: block pooling keeps its value (a stride would
    drop it with probability 1 − 1/s²), and the image rings it."""
    rng = np.random.default_rng(3)
    a = rng.normal(100.0, 1.0, (2048, 2048))
    a[1001, 1333] = 160.0
    shown, s = _extreme_pool(a, 100.0)
    assert s == 2 and shown.shape == (1024, 1024)
    assert shown[1001 // 2, 1333 // 2] == 160.0
    assert int((shown > 110).sum()) == 1
    lo, hi = np.percentile(a, [1, 99])
    assert map_outliers(a, lo, hi).tolist() == [[1001, 1333]]
    a[5, 7] = np.nan  # NaN is no outlier, and an all-NaN block stays NaN
    a[:2, :2] = np.nan
    shown, _ = _extreme_pool(a, 100.0)
    assert np.isnan(shown[0, 0]) and np.isfinite(shown[2, 3])


def test_map_image_rings_outliers(small):
    """The simulated sensor's planted offset outliers are ringed, and one more planted here
    adds one ring at its position."""
    _, fit = small
    maps = fit.maps

    def ringed(m):
        ax = plot_maps(m).axes[0]
        found = re.search(r"(\d+) outlier\(s\) ringed", ax.get_title())
        rings = [c for c in ax.collections if len(c.get_offsets())]
        return (int(found.group(1)) if found else 0,
                {tuple(o) for o in rings[0].get_offsets()} if rings else set())

    n0, at0 = ringed(maps)
    assert n0 == len(at0) >= 1  # the simulation plants offset outliers
    offset = np.array(maps.offset_adu, np.float64)
    offset[10, 20] = np.median(offset) + 50 * (np.percentile(offset, 99) - np.percentile(offset, 1))
    n1, at1 = ringed(dataclasses.replace(maps, offset_adu=offset))
    assert n1 == n0 + 1 and at1 - at0 == {(20.5, 10.5)}
