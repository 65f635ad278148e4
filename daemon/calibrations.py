"""Which noise model compresses an item: the newest compatible calibration, unless it is stale
or has drifted from the one before it.

Pure selection logic over loaded models (:func:`select_model`), plus a small cache that loads
``*.rgnoise`` files found under the configured folders (:class:`ModelLibrary`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Sequence

from rawgate.calibration.drift import DriftTolerances, compare_models
from rawgate.calibration.model import ModelError, NoiseModel

__all__ = ["Selection", "select_model", "ModelLibrary"]


@dataclass(frozen=True)
class Selection:
    """The outcome of choosing a calibration for an item.

    Attributes
    ----------
    action
        ``"use"``: compress with ``model``; ``"lossless"``: archive with the fallback codec
        (``problems`` say why); ``"quarantine"``: the frames fit no calibration of this camera.
    model
        The chosen model (also set for ``"lossless"`` when a stale/drifted one exists).
    problems
        Human-readable reasons (stale, drifted, no calibration, shape mismatch) for alerts.
    age_days
        Age of the chosen model [days], or None.
    """

    action: Literal["use", "lossless", "quarantine"]
    model: NoiseModel | None
    problems: tuple[str, ...] = ()
    age_days: float | None = None
    path: str | None = None


def _camera_matches(model: NoiseModel, camera: str | None) -> bool:
    return camera is None or camera in (model.identity.name, model.identity.serial)


def select_model(
    models: Sequence[tuple[str, NoiseModel]],
    frame_shape: tuple[int, int],
    *,
    camera: str | None = None,
    max_age_days: float = 30.0,
    on_stale: Literal["lossless", "use"] = "lossless",
    on_drift: Literal["lossless", "use"] = "lossless",
    drift: DriftTolerances | None = None,
    now: datetime | None = None,
    drift_cache: dict | None = None,
) -> Selection:
    """Choose the calibration for frames of ``frame_shape`` = ``(H, W)`` pixels.

    The newest model (by its ``created`` time) of the camera whose maps have the frame's shape
    wins. It is *stale* when older than ``max_age_days`` and *drifted* when it differs from the
    previous calibration of the same camera beyond ``drift``; either raises a problem and, per
    ``on_stale`` / ``on_drift``, sends the item to the lossless fallback.

    Parameters
    ----------
    models
        ``(path, model)`` pairs of every calibration available.
    frame_shape
        The item's plane shape ``(H, W)`` [pixels].
    camera
        Camera name or serial the model must describe (None: any).
    drift_cache
        A dict kept between calls: the drift of a pair of calibrations is computed once.
    """
    now = now or datetime.now(timezone.utc)
    mine = [(p, m) for p, m in models if _camera_matches(m, camera)]
    fits = sorted(((p, m) for p, m in mine if tuple(m.shape) == tuple(frame_shape)),
                  key=lambda pm: pm[1].created_at)
    h, w = frame_shape
    if not fits:
        if mine:
            shapes = sorted({f"{m.shape[1]}×{m.shape[0]}" for _, m in mine})
            who = f"camera {camera}" if camera else "any camera"
            return Selection("quarantine", None, (
                f"frame shape {w}×{h} px does not match the calibration of {who} ({', '.join(shapes)} px)",))
        return Selection("lossless", None, (
            "no calibration found" + (f" for camera {camera}" if camera else "") + ": archived losslessly",))
    path, model = fits[-1]
    age = model.age_days(now)
    problems: list[str] = []
    action: Literal["use", "lossless"] = "use"
    if age > max_age_days:
        problems.append(f"calibration {Path(path).name} of {model.identity.serial} is {age:.1f} days old "
                        f"(limit {max_age_days:g})")
        if on_stale == "lossless":
            action = "lossless"
    same = [(p, m) for p, m in fits[:-1] if not model.identity.mismatches(m.identity)]
    if same:
        prev_path, prev = same[-1]
        key = (prev_path, prev.created, path, model.created)
        report = None if drift_cache is None else drift_cache.get(key)
        if report is None:  # medians over every pixel of both maps: once per pair, not per item
            report = compare_models(prev, model, drift)
            if drift_cache is not None:
                drift_cache[key] = report
        if not report.in_tolerance:
            problems.append(f"calibration of {model.identity.serial} drifted: " + "; ".join(report.failures))
            if on_drift == "lossless":
                action = "lossless"
    return Selection(action, model, tuple(problems), age, path)


@dataclass
class ModelLibrary:
    """``*.rgnoise`` files under ``dirs``, loaded once and reloaded when a file changes."""

    dirs: Sequence[Path]
    _cache: dict[str, tuple[int, NoiseModel | None]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def models(self) -> list[tuple[str, NoiseModel]]:
        """Every readable model (unreadable ones are listed in :attr:`errors`)."""
        seen: set[str] = set()
        out = []
        for d in self.dirs:
            if not Path(d).is_dir():
                continue
            for p in sorted(Path(d).rglob("*.rgnoise")):
                if any(part.startswith(".") for part in p.relative_to(d).parts):
                    continue  # a calibration still being written (".<run>.partial/")
                key = str(p)
                seen.add(key)
                try:
                    mtime = os.stat(p).st_mtime_ns
                except OSError:
                    continue
                cached = self._cache.get(key)
                if cached is None or cached[0] != mtime:
                    try:
                        model: NoiseModel | None = NoiseModel.load(p)
                        self.errors.pop(key, None)
                    except (ModelError, OSError, ValueError) as e:
                        model = None
                        self.errors[key] = str(e)
                    self._cache[key] = (mtime, model)
                m = self._cache[key][1]
                if m is not None:
                    out.append((key, m))
        for key in set(self._cache) - seen:
            del self._cache[key]
        return out
