"""The verdict: thresholds calibrated against the camera's own noise.

ε of a fresh raw-equivalent replica is itself random (≈ N(0, 1) for a single ε), so "every
|ε| < 1" would reject a perfect codec most of the time once dozens of parameters are tested.
Instead every tested statistic ``S`` (a whole-image ε, a mean or spread of per-object ε, a mean
or rms of filter ε) is judged against its own null sample ``S_1 … S_N``: the statistic computed
with each replica in turn held out as the "compressed" image (:mod:`.epsilon`).

A codec's ``S_c`` passes when it lies within the prediction interval of one more draw from the
null, widened to include 0 (the raw image itself, i.e. a lossless codec) and by a minimum
margin::

    lo = min(0, m) − w,   hi = max(0, m) + w,   w = max(q · s · √(1 + 1/N), margin, resolution)

with ``m, s`` the null sample's mean and standard deviation and ``q`` Student's t quantile with
N − 1 degrees of freedom at ``1 − α / (sides · P)``: Bonferroni over the P statistics tested,
so a raw-equivalent input fails the whole verdict with probability ≤ α (``false_reject_rate``).
Per-object means and spreads carry their null as a centre ``c`` and standard error ``se`` from
the pooled per-object ε of all held-out replicas (:mod:`.epsilon`); for them
``w = max(z · se, margin, resolution)`` around ``c`` (and 0), with ``z`` the normal quantile at
the same Bonferroni-corrected level. ``resolution`` is the statistic's smallest possible change
(one object more or less when all replicas found the same count), which no verdict should call
a failure. One-sided statistics (spread, rms) have no lower limit. Anything outside [lo, hi]
has moved the analysis further than the camera's own noise does; the verdict names it and by how much
(``excess`` = distance beyond the limit in units of the null's ``s``).

Per parameter (by statistic name, or a prefix such as ``"mean ε Area"``), a fixed limit
``max_abs`` can replace the calibrated one, the margin can change, or a statistic can be left
out; every choice is recorded in the report.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats as sstats

from .epsilon import EpsilonStat

__all__ = ["DEFAULT_RULES", "Judged", "ParameterRule", "Verdict", "VerdictPolicy", "judge"]


@dataclass(frozen=True)
class ParameterRule:
    """Override for one statistic (or every statistic whose name starts with the key).

    Attributes
    ----------
    enabled
        False: computed and reported, not judged.
    max_abs
        Fixed limit |S| ≤ max_abs [σ_raw units] instead of the calibrated interval.
    margin
        Minimum half-width of the calibrated interval [σ_raw units].
    """

    enabled: bool = True
    max_abs: float | None = None
    margin: float | None = None


#: Reported, not judged, unless a policy says otherwise: ImageJ's FeretX / FeretY are the
#: coordinates of the Feret caliper's starting point, not a property of the object — a change of
#: one edge pixel moves the start to the other end of the object, so their per-object ε jumps by
#: the object's size (on the demo's dense cells, "spread ε FeretY" rejected noisecal copies that
#: every other statistic passed).
DEFAULT_RULES: dict[str, ParameterRule] = {
    f"{kind} ε {name}": ParameterRule(enabled=False)
    for kind in ("mean", "spread") for name in ("FeretX", "FeretY")
}


@dataclass(frozen=True)
class VerdictPolicy:
    """How statistics are judged.

    Attributes
    ----------
    false_reject_rate
        α: the probability that a perfectly raw-equivalent input fails the verdict.
    margin
        Default minimum half-width of every interval [σ_raw units].
    families
        Which families are judged (``whole``, ``object``, ``filter``, ``noise``).
    rules
        Per-statistic overrides (see :class:`ParameterRule`).
    """

    false_reject_rate: float = 0.002
    margin: float = 0.5
    families: tuple[str, ...] = ("whole", "object", "filter", "noise")
    rules: dict[str, ParameterRule] = field(default_factory=lambda: dict(DEFAULT_RULES))

    def __post_init__(self) -> None:
        if not 0 < self.false_reject_rate < 1:
            raise ValueError(f"false_reject_rate must be in (0, 1), got {self.false_reject_rate}")
        if self.margin < 0:
            raise ValueError(f"margin must be ≥ 0, got {self.margin}")

    def rule_for(self, name: str) -> ParameterRule:
        """The most specific rule whose key equals or prefixes ``name``."""
        best, best_len = ParameterRule(), -1
        for key, rule in self.rules.items():
            if (name == key or name.startswith(key)) and len(key) > best_len:
                best, best_len = rule, len(key)
        return best


@dataclass
class Judged:
    """One statistic after judgement."""

    name: str
    family: str
    kind: str
    value: float
    lower: float | None
    upper: float
    passed: bool
    judged: bool
    excess: float  # how far beyond the violated limit, in units of the null's spread (0 if inside)
    null_mean: float
    null_std: float
    rule: str  # "calibrated" or "fixed"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Verdict:
    """Pass or fail, with the statistics that failed and by how much."""

    passed: bool
    n_tested: int
    false_reject_rate: float
    quantile: float  # the t quantile q used for the calibrated intervals
    failed: list[Judged]
    judged: list[Judged]
    reason: str

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "n_tested": self.n_tested,
            "false_reject_rate": self.false_reject_rate,
            "quantile": self.quantile,
            "reason": self.reason,
            "failed": [j.to_dict() for j in self.failed],
        }


def judge(stats: list[EpsilonStat], policy: VerdictPolicy | None = None) -> Verdict:
    """Judge every statistic against its calibrated null interval (see the module docstring)."""
    policy = policy or VerdictPolicy()
    tested = [s for s in stats if s.testable and s.family in policy.families and policy.rule_for(s.name).enabled]
    tested_ids = {id(s) for s in tested}
    p = max(1, sum(1 for s in tested if policy.rule_for(s.name).max_abs is None))
    judged: list[Judged] = []
    q_two = q_one = float("nan")
    for s in stats:
        rule = policy.rule_for(s.name)
        active = id(s) in tested_ids
        null = np.asarray(s.null, np.float64)
        null = null[np.isfinite(null)]
        n = null.size
        pooled = s.null_center is not None and s.null_se is not None
        if pooled:
            m, sd = float(s.null_center), float(s.null_se)
        else:
            m = float(null.mean()) if n else 0.0
            sd = float(null.std(ddof=1)) if n > 1 else 0.0
        if rule.max_abs is not None:
            lo, hi, how = (-rule.max_abs if s.sides == 2 else None), rule.max_abs, "fixed"
            scale = 1.0
        else:
            level = 1 - policy.false_reject_rate / (s.sides * p)
            if pooled:
                q = float(sstats.norm.ppf(level))
                spread = q * sd
            else:
                q = float(sstats.t.ppf(level, max(n - 1, 1)))
                spread = q * sd * math.sqrt(1 + 1 / max(n, 1))
            if not pooled and s.sides == 2:
                q_two = q
            elif not pooled:
                q_one = q
            margin = policy.margin if rule.margin is None else rule.margin
            w = max(spread, margin, s.resolution)
            if s.sides == 2:
                lo, hi = min(0.0, m) - w, max(0.0, m) + w
            else:
                lo, hi = None, max(0.0, m) + w
            how = "calibrated"
            scale = sd if sd > 0 else 1.0
        v = s.value
        inside = np.isfinite(v) and v <= hi and (lo is None or v >= lo)
        if inside:
            excess = 0.0
        elif not np.isfinite(v):
            excess = float("inf")
        else:
            excess = ((v - hi) if v > hi else (lo - v)) / scale
        judged.append(
            Judged(s.name, s.family, s.kind, float(v), lo, hi, bool(inside or not active), active,
                   float(excess), m, sd, how)
        )
    failed = sorted((j for j in judged if j.judged and not j.passed), key=lambda j: -j.excess)
    n_tested = sum(j.judged for j in judged)
    if not n_tested:
        reason = "nothing was tested (every statistic disabled)"
    elif failed:
        worst = ", ".join(f"{j.name} = {j.value:+.3g} (limit {_limits(j)})" for j in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        reason = f"{len(failed)} of {n_tested} statistics outside the camera-noise range: {worst}{more}"
    else:
        reason = f"all {n_tested} statistics within the camera-noise range"
    return Verdict(
        passed=not failed and n_tested > 0,
        n_tested=n_tested,
        false_reject_rate=policy.false_reject_rate,
        quantile=q_two if np.isfinite(q_two) else q_one,
        failed=failed,
        judged=judged,
        reason=reason,
    )


def _limits(j: Judged) -> str:
    return f"≤ {j.upper:.3g}" if j.lower is None else f"{j.lower:.3g} … {j.upper:.3g}"
