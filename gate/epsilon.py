"""The standard score ε = (χ_raw − χ_c) / σ_raw and its null distribution.

Pure numerics over measurements (no segmentation, no I/O). For every measured parameter χ:

* ``σ_raw`` is the standard deviation of χ over the N raw-equivalent replicas (Pomarico et al.
  2022, step 3), computed from the replicas' deviations from the raw value; angles (period 180°)
  are wrapped before anything is subtracted.
* ``ε_c = (χ_raw − χ_c) / σ_raw`` for the compressed-then-decoded image.
* The null: each replica ``j`` in turn is held out and treated as the "compressed" image, scored
  against ``σ`` from the other N − 1 replicas (leave-one-out). Those N values are what a
  perfectly raw-equivalent codec produces; :mod:`.verdict` calibrates its thresholds on them.

Three families:

* whole image: ``N``, ``A_tot`` (2-D) or ``N``, ``V_tot``, ``SA_tot`` (3-D);
* per object: ε of every matched object for every shape parameter, summarised by its mean over
  objects (bias) and spread (standard deviation over objects), as in the paper's Fig. 2e. Their
  null is not the N per-replica values but the pooled per-object ε of all held-out replicas
  (N·n values for n objects): a segmentation is often exactly the same in raw and most replicas
  for many objects, so ε per object is discrete and heavy-tailed, and ten means or spreads of it
  say little about their own tails. Under the null a codec's n per-object ε are n draws from the
  pooled distribution, so its mean has standard error √(v/n) and its variance √((μ₄ − v²)/n),
  its spread that over 2√v (v, μ₄: the pooled variance and fourth central moment), which :mod:`.verdict` turns into
  limits with a normal quantile. Per-object ε enters both at most ±:data:`OBJECT_EPSILON_CLIP`:
  beyond that an object has changed identity (a fragment joined or split off), which N and
  A_tot judge, and a single such object would otherwise decide a spread over twenty objects;
* model-free: per-pixel ε of filter responses at sampled pixels, summarised by the mean
  (bias) and the root mean square (size) over pixels (Fig. 4f,g);
* noise: ``log2`` of the decoded image's high-frequency power over the raw image's
  (:func:`noise_epsilon`). Not in the paper: ε compares values with raw, so a codec that
  removes the camera noise (JPEG at 10:1 does) scores like a replica, whose difference from raw
  is also one noise's worth; but the decoded image is then no longer raw-equivalent, and a
  model trained on noisy raw data meets data it never saw.

Per-object σ is shrunk towards the median σ of all objects (a pooled prior worth
:data:`OBJECT_PRIOR_DF` degrees of freedom): ten replicas pin one object's σ down to ±24 %, and
a quantised parameter can agree in most replicas and make that object's σ nearly zero.

Where σ is zero (all replicas agree, e.g. an object count), it is floored at half the
parameter's resolution for integer-valued parameters, for per-object parameters at a tenth of
the parameter's median σ over objects, and at a negligible value otherwise; the null sees the
same floor, so the verdict stays calibrated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .matching import match_objects
from .measure import Measurements

__all__ = [
    "CIRCULAR_PERIOD",
    "INTEGER_VALUED",
    "EpsilonStat",
    "FilterNull",
    "filter_epsilon",
    "filter_null",
    "noise_epsilon",
    "object_epsilon",
    "whole_epsilon",
]

#: Parameters that are angles, with their period [degrees].
CIRCULAR_PERIOD: dict[str, float] = {"Angle": 180.0, "FeretAngle": 180.0}
#: Parameters that take integer values (σ floor = 0.5 of their unit).
INTEGER_VALUED = frozenset({"N", "A_tot", "V_tot", "Area", "Volume", "FeretX", "FeretY"})
#: Per-object σ is floored at this fraction of the parameter's median σ over objects: a capped
#: parameter (Circ ≤ 1) or a quantised one (Perim) can agree in every replica for one object,
#: and a zero σ would make any change an infinite ε.
OBJECT_FLOOR_FRACTION = 0.1
#: Weight, in degrees of freedom, of the pooled (median over objects) σ² in each object's σ²:
#: σ_i² = (ν_i·s_i² + ν₀·s_pool²) / (ν_i + ν₀), ν_i = replicas found − 1.
OBJECT_PRIOR_DF = 3.0
#: Per-object ε is clipped to ± this in the mean and spread over objects (codec and null alike).
OBJECT_EPSILON_CLIP = 5.0
#: Floor for σ of continuous parameters, relative to max(|χ_raw|, 1).
_REL_FLOOR = 1e-9


@dataclass
class EpsilonStat:
    """One tested statistic: its value for the codec and its leave-one-out null sample.

    Attributes
    ----------
    name
        e.g. ``"A_tot"``, ``"mean ε Area"``, ``"rms ε LoG σ=1.6"``.
    family
        ``whole``, ``object`` or ``filter``.
    kind
        ``epsilon`` (a single ε), ``mean`` (mean of ε over objects/pixels), ``spread`` (their
        standard deviation) or ``rms`` (their root mean square).
    value
        The codec's statistic [σ_raw units].
    null
        The statistic for each held-out replica (N values).
    sides
        2: judged on both sides; 1: only large values fail (spread, rms).
    null_center, null_se
        When set, the statistic's expected value and standard error under the null, known from
        a pooled sample larger than ``null`` (per-object ε); the verdict then uses a normal
        quantile around ``null_center`` instead of the t prediction interval from ``null``.
    resolution
        The smallest change the statistic can show (one object, one pixel, in σ units): the
        verdict never fails a change of one resolution step.
    detail
        Extra figures for reports (χ values, σ, counts).
    testable
        False when the statistic is meaningless for this frame (e.g. per-object ε with no
        objects): reported, never judged.
    """

    name: str
    family: str
    kind: str
    value: float
    null: np.ndarray
    sides: int = 2
    detail: dict = field(default_factory=dict)
    testable: bool = True
    resolution: float = 0.0
    null_center: float | None = None
    null_se: float | None = None


def _floor(name: str, ref: np.ndarray) -> np.ndarray:
    if name in INTEGER_VALUED:
        return np.full(np.shape(ref), 0.5)
    return _REL_FLOOR * np.maximum(np.abs(ref), 1.0)


def _deviation(values: np.ndarray, ref: np.ndarray, name: str) -> np.ndarray:
    """values − ref, wrapped into (−period/2, period/2] for angles."""
    d = np.asarray(values, np.float64) - ref
    period = CIRCULAR_PERIOD.get(name)
    if period is not None:
        d = (d + period / 2) % period - period / 2
    return d


def _std(d: np.ndarray, axis: int) -> np.ndarray:
    """Sample standard deviation (ddof = 1) ignoring NaN; NaN where fewer than 2 values."""
    n = np.sum(np.isfinite(d), axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(d, axis=axis, keepdims=True) if d.size else d
        ss = np.nansum((d - mean) ** 2, axis=axis)
        return np.where(n >= 2, np.sqrt(ss / np.maximum(n - 1, 1)), np.nan)


def _loo_std(d: np.ndarray) -> np.ndarray:
    """σ of each leave-one-out subset along axis 0: out[j] = std(d without row j), ddof = 1.

    NaN entries (an object not found in a replica) are left out; NaN where fewer than 2 values
    remain. Closed form from the sums, about the mean of the subset (no cancellation-prone
    raw moments: deviations are taken from the full mean first).
    """
    d = np.asarray(d, np.float64)
    ok = np.isfinite(d)
    n = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = np.where(n > 0, np.where(ok, d, 0.0).sum(axis=0) / np.maximum(n, 1), 0.0)
        c = np.where(ok, d - mu, 0.0)  # centred on the full mean
        s1 = c.sum(axis=0)  # ≈ 0
        s2 = (c * c).sum(axis=0)
        n_j = n[None] - ok  # values left when row j is removed
        s1_j = s1[None] - c
        s2_j = s2[None] - c * c
        var = (s2_j - s1_j * s1_j / np.maximum(n_j, 1)) / np.maximum(n_j - 1, 1)
        return np.where(n_j >= 2, np.sqrt(np.maximum(var, 0.0)), np.nan)


def whole_epsilon(raw: Measurements, replicas: list[Measurements], compressed: Measurements) -> list[EpsilonStat]:
    """ε of the whole-image parameters (N, A_tot / V_tot, SA_tot) with their null."""
    stats = []
    for name in raw.whole:
        x_raw = float(raw.whole[name])
        d = _deviation(np.array([r.whole[name] for r in replicas]), x_raw, name)
        d_c = float(_deviation(np.array(compressed.whole[name]), x_raw, name))
        floor = float(_floor(name, np.array(x_raw)))
        sigma = max(float(_std(d, 0)), floor)
        loo = np.maximum(_loo_std(d[:, None])[:, 0], floor)
        stats.append(
            EpsilonStat(
                name=name,
                family="whole",
                kind="epsilon",
                value=-d_c / sigma,
                null=-d / loo,
                resolution=(1.0 / sigma) if name in INTEGER_VALUED else 0.0,
                detail={
                    "chi_raw": x_raw,
                    "chi_compressed": float(compressed.whole[name]),
                    "chi_replicas": [float(r.whole[name]) for r in replicas],
                    "sigma_raw": sigma,
                    "relative_change": (-d_c / x_raw) if x_raw else None,
                },
            )
        )
    return stats


@dataclass
class ObjectMatching:
    """How raw objects were found in the replicas and the compressed image."""

    n_raw_objects: int
    unmatched_fraction_replicas: float  # mean over replicas
    unmatched_fraction_compressed: float
    nearest_fraction_compressed: float
    n_objects_scored: int


def object_epsilon(
    raw: Measurements,
    replicas: list[Measurements],
    compressed: Measurements,
    *,
    max_distance: float = 3.0,
    min_replica_matches: int | None = None,
) -> tuple[list[EpsilonStat], ObjectMatching, dict[str, np.ndarray]]:
    """Per-object ε for every shape parameter: mean and spread over objects, with their null.

    Each raw object is looked up in every replica and in the compressed result (same centre,
    else nearest within ``max_distance`` pixels). An object is scored when it is found in the
    compressed result and in at least ``min_replica_matches`` replicas (default: ⌈N/2⌉, ≥ 3).

    Returns
    -------
    stats
        ``mean ε P`` and ``spread ε P`` for every parameter P.
    matching
        Match counts.
    per_object
        ``{P: ε per scored object}`` and ``"delta P"`` (χ_c − χ_raw, in the parameter's unit),
        for the histograms in reports.
    """
    n_rep = len(replicas)
    need = min_replica_matches or max(3, (n_rep + 1) // 2)
    n_obj = len(raw.label_ids)
    rep_idx = np.full((n_rep, n_obj), -1, np.int64)
    unmatched_rep = []
    for j, r in enumerate(replicas):
        m = match_objects(raw.centres, r.centres, max_distance=max_distance)
        rep_idx[j] = m.index
        unmatched_rep.append(m.unmatched_fraction)
    mc = match_objects(raw.centres, compressed.centres, max_distance=max_distance)
    c_idx = np.asarray(mc.index)
    ok_rep = rep_idx >= 0
    scored = (c_idx >= 0) & (ok_rep.sum(axis=0) >= need)
    stats: list[EpsilonStat] = []
    per_object: dict[str, np.ndarray] = {}
    for name, x_raw_all in raw.objects.items():
        x_raw = np.asarray(x_raw_all, np.float64)[scored]
        vals = np.full((n_rep, int(scored.sum())), np.nan)
        for j, r in enumerate(replicas):
            ij = rep_idx[j, scored]
            have = ij >= 0
            vals[j, have] = np.asarray(r.objects[name], np.float64)[ij[have]]
        d = _deviation(vals, x_raw, name)
        d_c = _deviation(np.asarray(compressed.objects[name], np.float64)[c_idx[scored]], x_raw, name)
        floor = _floor(name, x_raw)
        sd = _std(d, 0)
        positive = sd[np.isfinite(sd) & (sd > 0)]
        pooled = float(np.median(positive)) if positive.size else 0.0
        if positive.size:  # capped or quantised parameters (Circ ≤ 1, Perim steps): σ may be 0
            floor = np.fmax(floor, OBJECT_FLOOR_FRACTION * pooled)
        found = np.isfinite(d).sum(axis=0)
        sigma = np.fmax(_shrink(sd, found - 1, pooled), floor)
        eps_c = -d_c / sigma
        loo = np.fmax(_shrink(_loo_std(d), found[None] - 1 - np.isfinite(d), pooled), floor)
        eps_null = -d / loo  # (n_rep, n_scored), NaN where the object was not found in replica j
        per_object[name] = eps_c
        per_object[f"delta {name}"] = d_c
        per_object[f"delta {name} replicas"] = d[np.isfinite(d)]
        eps_null = np.clip(eps_null, -OBJECT_EPSILON_CLIP, OBJECT_EPSILON_CLIP)  # NaN stays NaN
        null_mean = np.array([np.nanmean(e) if np.isfinite(e).any() else np.nan for e in eps_null])
        null_spread = np.array([np.nanstd(e, ddof=1) if np.isfinite(e).sum() > 1 else np.nan for e in eps_null])
        pooled_eps = eps_null[np.isfinite(eps_null)]
        n = int(eps_c.size)
        mu, v, mu4 = _moments(pooled_eps)
        clipped = np.clip(eps_c, -OBJECT_EPSILON_CLIP, OBJECT_EPSILON_CLIP)
        common = {"n_objects": n, "null_pooled_values": int(pooled_eps.size),
                  "n_clipped": int(np.sum(clipped != eps_c))}
        stats.append(
            EpsilonStat(
                f"mean ε {name}", "object", "mean", float(np.mean(clipped)) if n else 0.0,
                np.nan_to_num(null_mean), 2, {**common, "median": float(np.median(eps_c)) if n else 0.0},
                null_center=mu, null_se=math.sqrt(v / max(n, 1)),
            )
        )
        # standard error of a sample standard deviation: se(s²) / (2 s), se(s²) = √((μ₄ − v²) / n)
        se_sd = math.sqrt(max(mu4 - v * v, 0.0) / max(n, 1)) / (2 * math.sqrt(v)) if v > 0 else 0.0
        stats.append(
            EpsilonStat(
                f"spread ε {name}", "object", "spread", float(np.std(clipped, ddof=1)) if n > 1 else 0.0,
                np.nan_to_num(null_spread), 1, common, null_center=math.sqrt(v), null_se=se_sd,
            )
        )
    matching = ObjectMatching(
        n_raw_objects=n_obj,
        unmatched_fraction_replicas=float(np.mean(unmatched_rep)) if unmatched_rep else 0.0,
        unmatched_fraction_compressed=float(mc.unmatched_fraction),
        nearest_fraction_compressed=float(mc.n_nearest / n_obj) if n_obj else 0.0,
        n_objects_scored=int(scored.sum()),
    )
    return stats, matching, per_object


def _shrink(s: np.ndarray, df: np.ndarray, pooled: float) -> np.ndarray:
    """σ shrunk towards ``pooled``: √((ν·s² + ν₀·pooled²) / (ν + ν₀)), NaN s counts as ν = 0."""
    df = np.where(np.isfinite(s), np.maximum(df, 0), 0).astype(np.float64)
    s2 = np.where(np.isfinite(s), s, 0.0) ** 2
    return np.sqrt((df * s2 + OBJECT_PRIOR_DF * pooled**2) / (df + OBJECT_PRIOR_DF))


def _moments(e: np.ndarray) -> tuple[float, float, float]:
    """Mean, variance and fourth central moment of a pooled ε sample; zeros if it is empty."""
    if e.size == 0:
        return 0.0, 0.0, 0.0
    mu = float(e.mean())
    c2 = (e - mu) ** 2
    return mu, float(c2.mean()), float((c2 * c2).mean())


@dataclass(frozen=True)
class FilterNull:
    """What the model-free ε needs from raw and replicas alone (shared by every decoded copy).

    Attributes
    ----------
    raw
        ``(F, K)`` raw responses at the sampled pixels.
    sigma
        ``(F, K)`` σ_raw per filter and pixel.
    null_mean, null_rms
        ``(N, F)`` mean and rms of per-pixel ε with each replica held out.
    """

    raw: np.ndarray
    sigma: np.ndarray
    null_mean: np.ndarray
    null_rms: np.ndarray


def filter_null(raw: np.ndarray, replicas: np.ndarray) -> FilterNull:
    """σ and the leave-one-out null of the filter ε (see :func:`filter_epsilon`)."""
    raw = raw.astype(np.float64)
    d = replicas.astype(np.float64) - raw[None]
    floor = _REL_FLOOR * np.maximum(np.abs(raw), 1.0)
    sigma = np.fmax(_std(d, 0), floor)
    eps_null = -d / np.fmax(_loo_std(d), floor[None])  # (N, F, K)
    return FilterNull(raw, sigma, eps_null.mean(axis=2), np.sqrt(np.mean(eps_null**2, axis=2)))


def filter_epsilon(
    raw: np.ndarray | FilterNull, replicas: np.ndarray | None, compressed: np.ndarray, names: list[str]
) -> list[EpsilonStat]:
    """Model-free ε of filter responses at sampled pixels: mean and rms over pixels, with null.

    Parameters
    ----------
    raw
        ``(F, K)`` responses of F filters at K sampled pixels, or a precomputed
        :class:`FilterNull` (then ``replicas`` is ignored).
    replicas
        ``(N, F, K)``.
    compressed
        ``(F, K)``.
    names
        F filter names.
    """
    null = raw if isinstance(raw, FilterNull) else filter_null(raw, replicas)
    eps_c = -(compressed.astype(np.float64) - null.raw) / null.sigma  # (F, K)
    stats = []
    for f, name in enumerate(names):
        stats.append(EpsilonStat(f"mean ε {name}", "filter", "mean", float(eps_c[f].mean()), null.null_mean[:, f], 2))
        stats.append(
            EpsilonStat(f"rms ε {name}", "filter", "rms", float(np.sqrt(np.mean(eps_c[f] ** 2))), null.null_rms[:, f], 1)
        )
    return stats


def noise_epsilon(raw_power: float, replica_power: np.ndarray, compressed_power: float) -> EpsilonStat:
    """How much of the camera noise the decoded image kept: ``log2(P_c / P_raw)``.

    ``P`` is the high-frequency power of an image at the sampled pixels
    (:func:`rawgate.gate.features.noise_power`). Raw itself scores 0, a replica (raw plus
    one more noise) about +1, a codec that keeps the noise (``noisecal``) between them, and a
    codec that smooths it away (JPEG at high ratios) well below 0. The null is the replicas'
    values; the verdict's interval spans 0 to them, widened by the margin.
    """
    tiny = np.finfo(np.float64).tiny
    ref = max(float(raw_power), tiny)
    if compressed_power == raw_power:  # lossless, also of a flat (noise-free) frame
        value = 0.0
    elif compressed_power <= 0:
        value = -np.inf
    else:
        value = float(np.log2(float(compressed_power)) - np.log2(ref))
    # in the log domain: a flat raw frame (power 0, ref = tiny) would overflow the ratio
    null = np.log2(np.maximum(np.asarray(replica_power, np.float64), tiny)) - np.log2(ref)
    return EpsilonStat(
        "noise power", "noise", "log2 ratio", value, null, 2,
        {"raw_power": float(raw_power), "compressed_power": float(compressed_power),
         "replica_power": [float(p) for p in replica_power]},
    )
