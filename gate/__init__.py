"""The ε gate: replicas, segmentation, measurements, ε and the verdict.

What a lab script imports::

    from rawgate.gate import GateConfig, load_segmenter, spot_check, write_report
    report = spot_check(raw, decoded, noise_model, load_segmenter("model.skops"), GateConfig())
    report.verdict.passed, [(s.name, s.value) for s in report.stats]

Names load their module on first use (as scikit-image's lazy loader does): the gate pulls in
scikit-learn and matplotlib, which a process that only codes or watches folders should not pay
for. The library knows nothing of the daemon: it imports only :mod:`rawgate.calibration`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name → the submodule that defines it
_WHERE: dict[str, str] = {
    # the spot check
    "GateConfig": "check", "GateError": "check", "EpsilonReport": "check", "Reference": "check",
    "prepare_reference": "check", "spot_check": "check", "sigma_uncertainty": "check",
    # verdict
    "Judged": "verdict", "ParameterRule": "verdict", "Verdict": "verdict", "VerdictPolicy": "verdict",
    "judge": "verdict",
    # segmenters
    "PixelClassifier": "segmenter", "Segmenter": "segmenter", "SegmenterError": "segmenter",
    "label_mask": "segmenter", "load_segmenter": "segmenter", "train_pixel_classifier": "segmenter",
    # features, measurements, matching, ε
    "FeatureSpec": "features", "compute_features": "features", "noise_power": "features",
    "Measurements": "measure",
    "MatchResult": "matching", "instance_metrics": "matching", "match_objects": "matching",
    "EpsilonStat": "epsilon",
    # reports
    "write_report": "report",
}

__all__ = sorted(_WHERE)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .check import (EpsilonReport, GateConfig, GateError, Reference, prepare_reference, sigma_uncertainty,
                        spot_check)
    from .epsilon import EpsilonStat
    from .features import FeatureSpec, compute_features, noise_power
    from .matching import MatchResult, instance_metrics, match_objects
    from .measure import Measurements
    from .report import write_report
    from .segmenter import (PixelClassifier, Segmenter, SegmenterError, label_mask, load_segmenter,
                            train_pixel_classifier)
    from .verdict import Judged, ParameterRule, Verdict, VerdictPolicy, judge


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
