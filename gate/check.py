"""One spot check: replicas, segmentation, measurements, ε and the verdict for one frame.

``spot_check(raw, decoded, model, segmenter)`` runs Pomarico et al.'s steps 2–5 on one raw
frame (2-D) or stack (3-D) and the decoded copy a codec produced, and judges the result
(:mod:`.verdict`). Without a segmenter only the model-free filter ε runs. The work is
``N + 2`` segmentations and filter banks; ``tiles`` restricts it to a seeded sample of
square tiles (the same tiles in every image), which makes a check of a large frame
proportionally cheaper at the price of fewer objects.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from scipy import stats as sstats

from rawgate.calibration.model import ModelMismatchError, NoiseModel
from rawgate.calibration.replicas import REPLICA_MODES
from rawgate.calibration.replicas import replicas as make_replicas

from .epsilon import (
    EpsilonStat,
    FilterNull,
    ObjectMatching,
    filter_epsilon,
    filter_null,
    noise_epsilon,
    object_epsilon,
    whole_epsilon,
)
from .features import FILTER_KINDS, FeatureSpec, compute_features, feature_names, noise_power
from .measure import Measurements, measure
from .verdict import Verdict, VerdictPolicy, judge

__all__ = ["GateConfig", "GateError", "EpsilonReport", "Reference", "prepare_reference", "spot_check", "sigma_uncertainty"]


class GateError(ValueError):
    """The spot check cannot run on this input (shapes, model, segmenter output)."""


@dataclass(frozen=True)
class GateConfig:
    """Settings of a spot check.

    Attributes
    ----------
    n_replicas
        Raw-equivalent replicas N (the paper's 10); σ_raw's relative uncertainty is
        ≈ 1/√(2(N − 1)) (24 % at N = 10).
    seed
        Seed of the replicas, the tile choice and the filter-pixel sample.
    max_match_distance_px
        Objects farther apart than this are not the same object [pixels].
    filters
        Filter bank for the model-free ε (GS, LoG, GGM, DoG at several σ).
    filter_pixels
        Pixels sampled for the model-free ε (per frame, spread over the tiles).
    tiles, tile_size
        Check only ``tiles`` seeded tiles of ``tile_size`` × ``tile_size`` pixels (None: whole frame).
    policy
        How statistics are judged.
    replicas_around
        ``"raw"`` (the paper's: replicas centred on the raw image, about twice the camera noise
        from the truth) or ``"estimate"`` (centred on a denoised estimate of the mean image, one
        camera noise from it; see :func:`~rawgate.calibration.replicas.replicas`).
    transform
        Run on raw, replicas and decoded copies before segmenting and measuring (a processing
        pipeline such as filtered back-projection, :mod:`rawgate.gate.transforms`); None: none.
    """

    n_replicas: int = 10
    seed: int = 0
    max_match_distance_px: float = 3.0
    filters: FeatureSpec = field(default_factory=lambda: FeatureSpec(scales=(1.0, 1.6, 3.5), kinds=FILTER_KINDS))
    filter_pixels: int = 65536
    tiles: int | None = None
    tile_size: int = 512
    policy: VerdictPolicy = field(default_factory=VerdictPolicy)
    replicas_around: str = "raw"
    transform: Callable[[np.ndarray], np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.transform is not None and self.tiles is not None:
            raise ValueError("a transform works on whole frames: tiles must be None")
        if self.replicas_around not in REPLICA_MODES:
            raise ValueError(f"replicas_around must be one of {REPLICA_MODES}, got {self.replicas_around!r}")
        if self.n_replicas < 3:
            raise ValueError(f"n_replicas must be ≥ 3 (σ needs a leave-one-out), got {self.n_replicas}")
        if self.max_match_distance_px <= 0:
            raise ValueError("max_match_distance_px must be > 0")
        if self.filter_pixels < 100:
            raise ValueError("filter_pixels must be ≥ 100")
        if self.tiles is not None and (self.tiles < 1 or self.tile_size < 16):
            raise ValueError("tiles must be ≥ 1 and tile_size ≥ 16 pixels")


def sigma_uncertainty(n_replicas: int) -> dict[str, float]:
    """How well N replicas pin down σ_raw: relative standard error and the 95 % interval of σ/σ̂."""
    df = n_replicas - 1
    return {
        "relative_standard_error": 1.0 / math.sqrt(2.0 * df),
        "ci95_low": math.sqrt(df / sstats.chi2.ppf(0.975, df)),
        "ci95_high": math.sqrt(df / sstats.chi2.ppf(0.025, df)),
    }


@dataclass
class EpsilonReport:
    """Everything one spot check measured, JSON-able via :meth:`to_dict`."""

    shape: tuple[int, ...]
    n_replicas: int
    seed: int
    stats: list[EpsilonStat]
    verdict: Verdict
    matching: ObjectMatching | None
    per_object: dict[str, np.ndarray]
    whole: dict[str, dict[str, Any]]
    sigma_uncertainty: dict[str, float]
    timings_s: dict[str, float]
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        judged = {j.name: j for j in self.verdict.judged}
        rows = []
        for s in self.stats:
            j = judged[s.name]
            rows.append(
                {
                    "name": s.name, "family": s.family, "kind": s.kind, "value": s.value,
                    "lower": j.lower, "upper": j.upper, "passed": j.passed, "judged": j.judged,
                    "excess": j.excess, "null_mean": j.null_mean, "null_std": j.null_std,
                    "null": [float(v) for v in s.null], "detail": s.detail,
                }
            )
        return {
            "format": "rawgate.epsilon-report",
            "version": 1,
            "shape": list(self.shape),
            "n_replicas": self.n_replicas,
            "seed": self.seed,
            "verdict": self.verdict.to_dict(),
            "whole": self.whole,
            "statistics": rows,
            "matching": None if self.matching is None else vars(self.matching),
            "per_object": {k: [float(x) for x in v] for k, v in self.per_object.items()},
            "sigma_uncertainty": self.sigma_uncertainty,
            "timings_s": self.timings_s,
            "meta": self.meta,
            "notes": self.notes,
        }


def _tile_origins(shape: tuple[int, ...], cfg: GateConfig) -> list[tuple[int, int]]:
    h, w = shape[-2:]
    if cfg.tiles is None or (cfg.tile_size >= h and cfg.tile_size >= w):
        return [(0, 0)]
    t = cfg.tile_size
    grid = [(y, x) for y in range(0, max(h - t, 0) + 1, t) for x in range(0, max(w - t, 0) + 1, t)]
    rng = np.random.default_rng([cfg.seed, 0x711E])
    pick = rng.choice(len(grid), size=min(cfg.tiles, len(grid)), replace=False)
    return sorted(grid[i] for i in pick)


def _crop(a: np.ndarray, origin: tuple[int, int], size: int | None) -> np.ndarray:
    if size is None:
        return a
    y, x = origin
    return a[..., y : y + size, x : x + size]


@dataclass
class Reference:
    """The raw frame and its replicas, segmented, measured and filtered once.

    Build it with :func:`prepare_reference`; :meth:`check` then scores any number of decoded
    copies (several codecs, or a codec and its fallback) at the cost of one segmentation each.
    """

    raw: np.ndarray
    model: NoiseModel
    segmenter: Callable[[np.ndarray], np.ndarray] | None
    config: GateConfig
    tile: int | None
    origins: list[tuple[int, int]]
    samples: list[np.ndarray]
    filter_names: list[str]
    measurements: dict[str, list[Measurements]]
    responses: dict[str, list[np.ndarray]]
    timings_s: dict[str, float]
    noise: dict[str, float] = field(default_factory=dict)
    _filter_null: FilterNull | None = field(default=None, repr=False)
    # several threads may check copies against one reference (``rawgate evaluate --jobs``)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def _analyse(self, img: np.ndarray) -> tuple[list[Measurements], list[np.ndarray], float, float, float, float]:
        meas, resp, power = [], [], []
        t_seg = t_meas = t_filt = 0.0
        nf = len(self.filter_names)
        if self.config.transform is not None:  # measured on what the lab's pipeline makes of it
            t = time.perf_counter()
            img = np.asarray(self.config.transform(img))
            t_filt += time.perf_counter() - t
        for origin, sample in zip(self.origins, self.samples):
            part = np.ascontiguousarray(_crop(img, origin, self.tile))
            t = time.perf_counter()
            resp.append(compute_features(part, self.config.filters).reshape(nf, -1)[:, sample])
            power.append(noise_power(part, sample))
            t_filt += time.perf_counter() - t
            if self.segmenter is None:
                continue
            t = time.perf_counter()
            labels = np.asarray(self.segmenter(part))
            t_seg += time.perf_counter() - t
            if labels.shape != part.shape:
                raise GateError(f"segmenter returned shape {labels.shape} for an image of {part.shape}")
            t = time.perf_counter()
            meas.append(measure(labels))
            t_meas += time.perf_counter() - t
        return meas, resp, t_seg, t_meas, t_filt, float(np.mean(power))

    def labels(self, img: np.ndarray) -> np.ndarray:
        """The segmenter's labels of a whole frame, after the transform (if any)."""
        if self.segmenter is None:
            raise GateError("no segmenter")
        t = self.config.transform
        return np.asarray(self.segmenter(img if t is None else t(img)))

    def _merged(self, parts: list[Measurements]) -> Measurements:
        if len(parts) == 1:
            return parts[0]
        offsets = [(0,) * (self.raw.ndim - 2) + o for o in self.origins]
        return Measurements.concat(parts, offsets)

    def check(self, decoded: np.ndarray, *, meta: dict[str, Any] | None = None) -> "EpsilonReport":
        """Score one decoded copy of the raw frame against the replicas and judge it."""
        cfg = self.config
        decoded = np.asarray(decoded)
        if decoded.shape != self.raw.shape:
            raise GateError(f"decoded shape {decoded.shape} differs from the raw frame's {self.raw.shape}")
        t0 = time.perf_counter()
        meas_c, resp_c, t_seg, t_meas, t_filt, power_c = self._analyse(decoded)
        t = time.perf_counter()
        n = cfg.n_replicas
        stats: list[EpsilonStat] = []
        matching = None
        per_object: dict[str, np.ndarray] = {}
        whole: dict[str, dict[str, Any]] = {}
        notes: list[str] = []
        if self.segmenter is not None:
            m_raw = self._merged(self.measurements["raw"])
            m_reps = [self._merged(self.measurements[f"replica {j}"]) for j in range(n)]
            m_c = self._merged(meas_c)
            w = whole_epsilon(m_raw, m_reps, m_c)
            stats += w
            whole = {s.name: {"epsilon": s.value, **s.detail} for s in w}
            o, matching, per_object = object_epsilon(m_raw, m_reps, m_c, max_distance=cfg.max_match_distance_px)
            if matching.n_objects_scored < 2:
                for s in o:
                    s.testable = False
                notes.append(
                    f"{matching.n_raw_objects} objects in the raw segmentation, {matching.n_objects_scored} "
                    "scored: per-object parameters are reported but not judged"
                )
            if matching.n_raw_objects == 0:
                notes.append("the segmenter found no objects in the raw frame")
            stats += o
        else:
            notes.append("no segmenter: only the model-free filter ε is computed and judged")
        with self._lock:
            if self._filter_null is None:  # the same for every decoded copy: computed once
                self._filter_null = filter_null(
                    np.concatenate(self.responses["raw"], axis=1),
                    np.stack([np.concatenate(self.responses[f"replica {j}"], axis=1) for j in range(n)]),
                )
        stats += filter_epsilon(self._filter_null, None, np.concatenate(resp_c, axis=1), self.filter_names)
        stats.append(noise_epsilon(self.noise["raw"], np.array([self.noise[f"replica {j}"] for j in range(n)]), power_c))
        verdict = judge(stats, cfg.policy)
        t_eps = time.perf_counter() - t
        timings = dict(self.timings_s)
        timings["segmentation"] += t_seg
        timings["measurement"] += t_meas
        timings["filters"] += t_filt
        timings["epsilon"] = t_eps
        timings["total"] = timings["reference"] + time.perf_counter() - t0
        full_meta = {
            "tiles": None if self.tile is None else {"size": self.tile, "origins": [list(o) for o in self.origins]},
            "filters": cfg.filters.get_config(),
            "filter_pixels": int(sum(r.shape[1] for r in self.responses["raw"])),
            "max_match_distance_px": cfg.max_match_distance_px,
            "replicas_around": cfg.replicas_around,
            "transform": None if cfg.transform is None else repr(cfg.transform),
            "policy": {
                "false_reject_rate": cfg.policy.false_reject_rate,
                "margin": cfg.policy.margin,
                "families": list(cfg.policy.families),
                "rules": {k: vars(v) for k, v in cfg.policy.rules.items()},
            },
            "model": {"sha256": self.model.sha256, "camera": self.model.identity.name,
                      "serial": self.model.identity.serial},
            **(meta or {}),
        }
        return EpsilonReport(
            shape=tuple(self.raw.shape), n_replicas=n, seed=cfg.seed, stats=stats, verdict=verdict,
            matching=matching, per_object=per_object, whole=whole,
            sigma_uncertainty=sigma_uncertainty(n), timings_s=timings, meta=full_meta, notes=notes,
        )


def prepare_reference(
    raw: np.ndarray,
    model: NoiseModel,
    segmenter: Callable[[np.ndarray], np.ndarray] | None = None,
    config: GateConfig | None = None,
) -> Reference:
    """Draw the replicas of ``raw`` and segment, measure and filter raw and replicas once.

    Parameters are those of :func:`spot_check`.
    """
    cfg = config or GateConfig()
    raw = np.asarray(raw)
    if raw.ndim not in (2, 3):
        raise GateError(f"the gate checks a 2-D frame or a 3-D stack, got shape {raw.shape}")
    try:
        model.check_frame(raw)
    except ModelMismatchError as e:
        raise GateError(f"frame does not match the calibration: {e}") from None
    t0 = time.perf_counter()
    reps = make_replicas(raw, model, n=cfg.n_replicas, seed=cfg.seed, around=cfg.replicas_around)
    timings = {"replicas": time.perf_counter() - t0, "segmentation": 0.0, "measurement": 0.0, "filters": 0.0}
    tile = None if cfg.tiles is None else cfg.tile_size
    origins = _tile_origins(raw.shape, cfg)
    if tile is not None and origins == [(0, 0)] and tile >= max(raw.shape[-2:]):
        tile = None
    per_tile = max(1, cfg.filter_pixels // len(origins))
    rng = np.random.default_rng([cfg.seed, 0xF117])
    samples = []
    analysed = raw if cfg.transform is None else np.asarray(cfg.transform(raw))  # the shape measured
    for origin in origins:
        size = int(np.prod(_crop(analysed, origin, tile).shape))
        samples.append(rng.choice(size, size=min(per_tile, size), replace=False))
    ref = Reference(
        raw=raw, model=model, segmenter=segmenter, config=cfg, tile=tile, origins=origins,
        samples=samples, filter_names=feature_names(cfg.filters, raw.ndim), measurements={},
        responses={}, timings_s=timings,
    )
    images = {"raw": raw, **{f"replica {j}": reps[j] for j in range(cfg.n_replicas)}}
    for key, img in images.items():
        meas, resp, t_seg, t_meas, t_filt, power = ref._analyse(img)
        ref.measurements[key] = meas
        ref.responses[key] = resp
        ref.noise[key] = power
        timings["segmentation"] += t_seg
        timings["measurement"] += t_meas
        timings["filters"] += t_filt
    timings["reference"] = time.perf_counter() - t0
    return ref


def spot_check(
    raw: np.ndarray,
    decoded: np.ndarray,
    model: NoiseModel,
    segmenter: Callable[[np.ndarray], np.ndarray] | None = None,
    config: GateConfig | None = None,
    *,
    meta: dict[str, Any] | None = None,
) -> EpsilonReport:
    """ε of every parameter for one frame and its decoded copy, and the verdict.

    Parameters
    ----------
    raw
        Raw frame ``(H, W)`` or stack ``(Z, H, W)`` [ADU].
    decoded
        The compressed-then-decoded frame, same shape.
    model
        The camera's noise model (matching the frame's last two dimensions).
    segmenter
        ``image → labels``; None: only the model-free filter ε is computed and judged.
    config
        Settings (replicas, matching distance, filters, tiles, verdict policy).
    meta
        Free-form provenance copied into the report (codec spec, file names).
    """
    decoded = np.asarray(decoded)
    if decoded.shape != np.shape(raw):
        raise GateError(f"decoded shape {decoded.shape} differs from the raw frame's {np.shape(raw)}")
    return prepare_reference(raw, model, segmenter, config).check(decoded, meta=meta)
