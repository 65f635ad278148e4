"""Calibration drift: compare a new noise model with an old one against tolerances."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .model import NoiseModel

__all__ = ["DriftTolerances", "DriftReport", "compare_models"]


@dataclass(frozen=True)
class DriftTolerances:
    """Largest changes still "in tolerance".

    Attributes
    ----------
    gain_rel
        |median relative change| of the gain map over pixels good in both.
    read_noise_rel
        |median relative change| of the read-noise map.
    offset_adu
        |median change| of the offset map [ADU].
    new_bad_pixel_fraction
        Fraction of all pixels that are bad in the new model but were good in the old.
    """

    gain_rel: float = 0.02
    read_noise_rel: float = 0.10
    offset_adu: float = 2.0
    new_bad_pixel_fraction: float = 0.001


@dataclass
class DriftReport:
    """Changes from ``old`` to ``new`` and the verdict."""

    gain_rel_change: float
    read_noise_rel_change: float
    offset_change_adu: float
    new_bad_pixels: int
    new_bad_pixel_fraction: float
    recovered_bad_pixels: int
    age_between_days: float
    tolerances: DriftTolerances
    failures: list[str] = field(default_factory=list)

    @property
    def in_tolerance(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["in_tolerance"] = self.in_tolerance
        return d


def compare_models(
    old: NoiseModel, new: NoiseModel, tolerances: DriftTolerances | None = None
) -> DriftReport:
    """Compare two models of the same camera configuration.

    Raises
    ------
    ModelMismatchError
        When the two models describe different cameras, binning, ROI or bit depth: their
        maps cannot be compared pixel by pixel.
    """
    from .model import ModelMismatchError

    tol = tolerances or DriftTolerances()
    problems = old.identity.mismatches(new.identity, labels=("model A", "model B"))
    if problems:
        raise ModelMismatchError("the models describe different camera configurations: " + "; ".join(problems))
    good = (old.bad_pixels == 0) & (new.bad_pixels == 0)
    if not good.any():
        good = np.ones(old.shape, bool)
    g = float(np.median(new.gain_e_per_adu[good] / old.gain_e_per_adu[good]) - 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = new.read_noise_e[good] / old.read_noise_e[good]
    r = float(np.median(ratio[np.isfinite(ratio)]) - 1.0) if np.isfinite(ratio).any() else 0.0
    o = float(np.median(new.offset_adu[good] - old.offset_adu[good]))
    new_bad = int(((new.bad_pixels != 0) & (old.bad_pixels == 0)).sum())
    recovered = int(((new.bad_pixels == 0) & (old.bad_pixels != 0)).sum())
    frac = new_bad / old.bad_pixels.size
    failures = []
    if abs(g) > tol.gain_rel:
        failures.append(f"gain changed by {g:+.2%} (tolerance ±{tol.gain_rel:.2%})")
    if abs(r) > tol.read_noise_rel:
        failures.append(f"read noise changed by {r:+.2%} (tolerance ±{tol.read_noise_rel:.2%})")
    if abs(o) > tol.offset_adu:
        failures.append(f"offset changed by {o:+.2f} ADU (tolerance ±{tol.offset_adu:.2f} ADU)")
    if frac > tol.new_bad_pixel_fraction:
        failures.append(
            f"{new_bad} new bad pixels ({frac:.3%} of the sensor; tolerance "
            f"{tol.new_bad_pixel_fraction:.3%})"
        )
    return DriftReport(
        gain_rel_change=g,
        read_noise_rel_change=r,
        offset_change_adu=o,
        new_bad_pixels=new_bad,
        new_bad_pixel_fraction=frac,
        recovered_bad_pixels=recovered,
        age_between_days=(new.created_at - old.created_at).total_seconds() / 86400.0,
        tolerances=tol,
        failures=failures,
    )
