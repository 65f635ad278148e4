"""Photon-transfer sweep: plan, acquisition with streaming statistics, and the saved record.

Frames are never kept: each level folds its frames into exact integer running sums
(``Σ(y − y₀)`` and ``Σ(y − y₀)²`` per pixel, int64), so memory is a few frames whatever the
number of frames per level. Each finished level is written at once to a zip of ``.npy``
arrays (``numpy.load`` opens it) under a ``.partial`` name; only a complete sweep gets its
manifest and is renamed into place, so an interrupted sweep never looks complete.
"""

from __future__ import annotations

import json
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ._files import fsync_replace, read_manifest
from .instruments._protocol import CameraIdentity, Instrument

__all__ = [
    "SweepPlan",
    "LevelStats",
    "SweepStats",
    "SweepError",
    "SweepProgress",
    "run_sweep",
    "load_sweep",
    "accumulate_level",
]

SWEEP_FORMAT = "rawgate.sweep"
SWEEP_VERSION = 1


class SweepError(RuntimeError):
    """A sweep could not be acquired, or a saved sweep cannot be read."""


@dataclass(frozen=True)
class SweepPlan:
    """What to acquire.

    Defaults follow EMVA 1288 (≥ 3 dark exposures for dark current, many equally spaced light
    levels up to saturation) and sCMOS per-pixel practice (≈ 100 frames per level so that each
    pixel's variance is known to ≈ 14 %).

    Attributes
    ----------
    dark_exposures_ms
        Exposures [ms] of the dark stacks (light level 0).
    dark_frames
        Frames per dark exposure.
    light_exposure_ms
        Exposure [ms] of the light stacks (the longest, in an exposure-only sweep).
    light_levels
        Number of light levels, equally spaced in ``(0, 1]`` of the light range.
    frames_per_level
        Frames per light level (≥ 2).
    exposure_only
        Vary exposure instead of light intensity (for a fixed source behind a shutter).
    auto_exposure
        Before the light stacks, set the light exposure so that the top level reaches ≈ 115 %
        of the ADC span above offset (so the sweep reaches saturation).
    max_exposure_ms
        Upper bound for ``auto_exposure``.
    """

    dark_exposures_ms: tuple[float, ...] = (10.0, 100.0, 500.0)
    dark_frames: int = 100
    light_exposure_ms: float = 10.0
    light_levels: int = 24
    frames_per_level: int = 100
    exposure_only: bool = False
    auto_exposure: bool = False
    max_exposure_ms: float = 10_000.0

    def __post_init__(self) -> None:
        if self.frames_per_level < 2 or (self.dark_frames < 2 and self.dark_exposures_ms):
            raise ValueError("a photon-transfer sweep needs at least 2 frames per level")
        if self.light_levels < 1:
            raise ValueError("light_levels must be ≥ 1")

    def light_steps(self, exposure_ms: float) -> list[tuple[float, float]]:
        """``(light_level, exposure_ms)`` for each light stack."""
        fr = [(i + 1) / self.light_levels for i in range(self.light_levels)]
        if self.exposure_only:
            return [(1.0, exposure_ms * f) for f in fr]
        return [(f, exposure_ms) for f in fr]

    @property
    def n_frames(self) -> int:
        return len(self.dark_exposures_ms) * self.dark_frames + self.light_levels * self.frames_per_level


@dataclass
class LevelStats:
    """Per-pixel and global statistics of one stack (one light level at one exposure).

    Attributes
    ----------
    kind
        ``"dark"`` or ``"light"``.
    light_level
        Fraction of the light range (0 for dark).
    exposure_ms
        Exposure [ms].
    n_frames
        Frames folded in.
    mean_adu, var_adu2
        Per-pixel temporal mean [ADU] and unbiased temporal variance [ADU²].
    n_clipped
        Per-pixel number of frames at the ADC maximum or at 0.
    frame_means
        Spatial mean of each frame [ADU] (for the EMVA correction of global fluctuations).
    pair_var_adu2
        EMVA 1288 temporal variance from the first two frames:
        ``Σ(y_A − y_B)² / 2N − (μ_A − μ_B)² / 2``.
    """

    kind: str
    light_level: float
    exposure_ms: float
    n_frames: int
    mean_adu: np.ndarray
    var_adu2: np.ndarray
    n_clipped: np.ndarray
    frame_means: np.ndarray
    pair_var_adu2: float

    @property
    def global_mean(self) -> float:
        return float(self.frame_means.mean())

    @property
    def global_temporal_var(self) -> float:
        """Spatial mean of the per-pixel temporal variance, minus the variance of the frame
        means (global intensity fluctuations) — EMVA's pair formula generalised to N frames;
        identical to it for N = 2."""
        n = self.n_frames
        fm_var = float(self.frame_means.var(ddof=1)) if n > 1 else 0.0
        return float(self.var_adu2.mean(dtype=np.float64)) - fm_var

    def header(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "light_level": self.light_level,
            "exposure_ms": self.exposure_ms,
            "n_frames": self.n_frames,
            "pair_var_adu2": self.pair_var_adu2,
        }


def accumulate_level(
    frames: Iterator[np.ndarray],
    *,
    kind: str,
    light_level: float,
    exposure_ms: float,
    adc_max: int,
) -> LevelStats:
    """Fold a stream of ``(H, W)`` frames into :class:`LevelStats` with exact integer sums."""
    y0 = s1 = s2 = n_clip = None
    means: list[float] = []
    pair_var = float("nan")
    first: np.ndarray | None = None
    n = 0
    for frame in frames:
        f = np.asarray(frame)
        if y0 is None:
            y0 = f.astype(np.int64)
            s1 = np.zeros(f.shape, np.int64)
            s2 = np.zeros(f.shape, np.int64)
            n_clip = np.zeros(f.shape, np.uint32)
            first = f.astype(np.float64)
        d = f.astype(np.int64)
        d -= y0
        s1 += d
        d *= d
        s2 += d
        n_clip += (f >= adc_max) | (f <= 0)
        means.append(float(f.mean(dtype=np.float64)))
        if n == 1:
            assert first is not None
            diff = first - f
            pair_var = float((diff**2).mean() / 2 - diff.mean() ** 2 / 2)
        n += 1
    if n < 2 or y0 is None:
        raise SweepError(f"a {kind} stack needs at least 2 frames, got {n}")
    mean_d = s1 / n
    var = (s2 - s1.astype(np.float64) * mean_d) / (n - 1)
    return LevelStats(
        kind=kind,
        light_level=float(light_level),
        exposure_ms=float(exposure_ms),
        n_frames=n,
        mean_adu=(y0 + mean_d).astype(np.float32),
        var_adu2=np.maximum(var, 0).astype(np.float32),
        n_clipped=np.minimum(n_clip, np.iinfo(np.uint16).max).astype(np.uint16),
        frame_means=np.asarray(means),
        pair_var_adu2=pair_var,
    )


@dataclass
class SweepStats:
    """A complete sweep: camera identity, plan, and one :class:`LevelStats` per stack."""

    identity: CameraIdentity
    levels: list[LevelStats]
    plan: dict[str, Any] = field(default_factory=dict)
    started: str = ""
    finished: str = ""
    source: str = ""

    @property
    def darks(self) -> list[LevelStats]:
        return [lv for lv in self.levels if lv.kind == "dark"]

    @property
    def lights(self) -> list[LevelStats]:
        return [lv for lv in self.levels if lv.kind == "light"]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.levels[0].mean_adu.shape)  # type: ignore[return-value]

    def save(self, path: str | Path) -> Path:
        """Write the whole sweep atomically (for sweeps built in memory, e.g. from files)."""
        with SweepWriter(path, self.identity, self.plan, source=self.source) as w:
            for lv in self.levels:
                w.add(lv)
        return Path(path)


class SweepWriter:
    """Writes levels as they finish; the manifest and the rename happen only on success."""

    def __init__(
        self, path: str | Path, identity: CameraIdentity, plan: dict[str, Any], source: str = ""
    ) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".partial")
        self.identity, self.plan, self.source = identity, plan, source
        self.started = _now()
        self.headers: list[dict[str, Any]] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.zf = zipfile.ZipFile(self.tmp, "w", zipfile.ZIP_STORED, allowZip64=True)

    def add(self, lv: LevelStats) -> None:
        i = len(self.headers)
        for name in ("mean_adu", "var_adu2", "n_clipped", "frame_means"):
            with self.zf.open(f"level{i:03d}_{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(getattr(lv, name)))
        self.headers.append(lv.header())

    def __enter__(self) -> "SweepWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.zf.close()
            self.tmp.unlink(missing_ok=True)
            return
        manifest = {
            "format": SWEEP_FORMAT,
            "version": SWEEP_VERSION,
            "identity": self.identity.to_dict(),
            "plan": self.plan,
            "source": self.source,
            "started": self.started,
            "finished": _now(),
            "levels": self.headers,
        }
        self.zf.writestr("manifest.json", json.dumps(manifest, indent=1))
        self.zf.close()
        fsync_replace(self.tmp, self.path)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _member_array(path: Path, zf: zipfile.ZipFile, name: str) -> np.ndarray:
    """Memory-map an uncompressed ``.npy`` member of the zip (read-only), so a 2048² sweep with
    dozens of levels is not pulled into memory; the fit streams over the levels.

    Hand-written because numpy's ``load(mmap_mode=...)`` does not map members of an npz."""
    info = zf.getinfo(name)
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(f)
        header_len = f.tell()
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
    if local[:4] != b"PK\x03\x04" or info.compress_type != zipfile.ZIP_STORED:
        raise SweepError(f"{path}: member {name} is not a stored array")
    n_name, n_extra = struct.unpack("<HH", local[26:30])
    offset = info.header_offset + 30 + n_name + n_extra + header_len
    if offset + int(np.prod(shape)) * dtype.itemsize > path.stat().st_size:
        raise SweepError(f"{path} is truncated (member {name})")
    return np.memmap(
        path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
    )


def load_sweep(path: str | Path) -> SweepStats:
    """Read a saved sweep; refuses partial or foreign files with the reason."""
    path = Path(path)
    if not path.exists():
        partial = path.with_name(path.name + ".partial")
        hint = " (an interrupted sweep left a .partial file)" if partial.exists() else ""
        raise SweepError(f"sweep file not found: {path}{hint}")
    try:
        with zipfile.ZipFile(path) as zf:
            manifest = read_manifest(
                zf, "manifest.json", fmt=SWEEP_FORMAT, max_version=SWEEP_VERSION, path=path,
                what="sweep", missing="has no manifest: the sweep did not complete",
                error=SweepError,
            )
            levels = []
            for i, h in enumerate(manifest["levels"]):
                arrs = {
                    name: _member_array(path, zf, f"level{i:03d}_{name}.npy")
                    for name in ("mean_adu", "var_adu2", "n_clipped", "frame_means")
                }
                levels.append(LevelStats(**h, **arrs))
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError) as e:
        raise SweepError(f"{path} is corrupt or truncated: {e}") from e
    return SweepStats(
        identity=CameraIdentity.from_dict(manifest["identity"]),
        levels=levels,
        plan=manifest.get("plan", {}),
        started=manifest.get("started", ""),
        finished=manifest.get("finished", ""),
        source=manifest.get("source", ""),
    )


@dataclass(frozen=True)
class SweepProgress:
    """Progress event: ``done`` of ``total`` frames; ``stage`` says what is being acquired."""

    done: int
    total: int
    stage: str


def _frames(inst: Instrument, n: int, batch: int) -> Iterator[np.ndarray]:
    left = n
    while left > 0:
        k = min(batch, left)
        stack = inst.snap(k)
        yield from stack
        left -= k


def _auto_exposure(inst: Instrument, plan: SweepPlan, adc_max: int) -> float:
    """Exposure [ms] at which full light reaches ≈ 115 % of the ADC span above the dark level
    (linear estimate from one short pair; full-well saturation below the ADC maximum only
    means that a few top levels lie beyond saturation, which the fit excludes)."""
    t0 = plan.light_exposure_ms
    inst.set_exposure(t0)
    inst.set_light(0.0)
    dark = float(np.median(inst.snap(2)))
    inst.set_light(1.0)
    bright = float(np.median(inst.snap(2)))
    signal = bright - dark
    if signal <= 0:
        raise SweepError(
            "no signal at full light: check that the light source is on and the path is open"
        )
    t = t0 * 1.15 * (adc_max - dark) / signal
    return float(min(max(t, 1e-3), plan.max_exposure_ms))


def run_sweep(
    inst: Instrument,
    plan: SweepPlan,
    path: str | Path,
    *,
    progress: Callable[[SweepProgress], None] | None = None,
    batch: int = 8,
) -> SweepStats:
    """Acquire the sweep and save it to ``path`` (written atomically at the end).

    A camera error or Ctrl-C mid-sweep removes the partial file and re-raises, so nothing
    that looks complete is left behind. The light is switched off at the end either way.
    """
    ident = inst.identity()
    adc_max = 2**ident.bit_depth - 1
    total = plan.n_frames
    done = 0

    def tick(k: int, stage: str) -> None:
        nonlocal done
        done += k
        if progress:
            progress(SweepProgress(done, total, stage))

    plan_d = asdict(plan)
    try:
        with SweepWriter(path, ident, plan_d, source="instrument") as w:
            light_exp = plan.light_exposure_ms
            if plan.auto_exposure:
                light_exp = _auto_exposure(inst, plan, adc_max)
                plan_d["light_exposure_ms_used"] = light_exp
            steps = [(0.0, t, "dark", plan.dark_frames) for t in plan.dark_exposures_ms]
            steps += [(lv, t, "light", plan.frames_per_level) for lv, t in plan.light_steps(light_exp)]
            for level, t, kind, n in steps:
                inst.set_light(level)
                inst.set_exposure(t)
                stage = f"{kind} {level:.0%} light, {t:g} ms"

                def stream(n=n, stage=stage) -> Iterator[np.ndarray]:
                    for f in _frames(inst, n, batch):
                        yield f
                        tick(1, stage)

                lv = accumulate_level(
                    stream(), kind=kind, light_level=level, exposure_ms=t, adc_max=adc_max
                )
                w.add(lv)
                del lv
    finally:
        try:
            inst.set_light(0.0)
        except Exception:  # the camera may be gone; the original error matters more
            pass
    return load_sweep(path)
