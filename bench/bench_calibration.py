"""Calibration benchmarks (prints figures; no pass/fail).

1. Sweep + fit of a 2048² simulated sCMOS camera with the default plan: wall time split into
   camera simulation (the camera's job) and rawgate's own per-frame statistics, fit time, and
   peak memory (RSS) against what holding one level's frames would take.
2. Same-run peer for the per-level statistics: the stack-then-reduce numpy approach
   (``np.stack(frames).mean/var``, as per-pixel calibration scripts do) on the same frames.
3. 10 replicas of a 2048² frame, and a plain float64 numpy implementation as peer.

Usage: python bench/bench_calibration.py [--size 2048] [--frames 100] [--levels 24]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from rawgate.calibration.fit import fit_sweep
from rawgate.calibration.instruments import SimulatedInstrument
from rawgate.calibration.model import NoiseModel
from rawgate.calibration.replicas import replicas
from rawgate.calibration.sweep import SweepPlan, accumulate_level, run_sweep


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_split_mib() -> tuple[float, float]:
    """Current anonymous and file-backed resident memory (the memory-mapped sweep counts as
    file-backed: clean pages the kernel can drop)."""
    vals = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                k, v, _ = line.split()
                vals[k[:-1]] = int(v) / 1024
    return vals.get("RssAnon", float("nan")), vals.get("RssFile", float("nan"))


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class TimedInstrument:
    """Wraps an instrument and adds up the time spent inside ``snap`` (the camera's share)."""

    def __init__(self, inst):
        self.inst, self.snap_s = inst, 0.0

    def __getattr__(self, name):
        return getattr(self.inst, name)

    def snap(self, n):
        t = time.perf_counter()
        out = self.inst.snap(n)
        self.snap_s += time.perf_counter() - t
        return out


def bench_sweep(size: int, frames: int, levels: int, tmp: Path) -> None:
    plan = SweepPlan(dark_frames=frames, frames_per_level=frames, light_levels=levels)
    inst = TimedInstrument(SimulatedInstrument(seed=1, shape=(size, size)))
    frame_mib = size * size * 2 / 2**20
    base = current_rss_mib()
    t0 = time.perf_counter()
    sweep = run_sweep(inst, plan, tmp / "bench.rgsweep")
    t_sweep = time.perf_counter() - t0
    peak_sweep = rss_mib()
    t0 = time.perf_counter()
    fit = fit_sweep(sweep)
    t_fit = time.perf_counter() - t0
    peak_all = rss_mib()
    anon, filebacked = rss_split_mib()
    stats_s = t_sweep - inst.snap_s
    print(f"## sweep + fit, {size}² px, {plan.n_frames} frames "
          f"({len(plan.dark_exposures_ms)} dark × {frames}, {levels} light × {frames})")
    print("| what | value |\n|---|---|")
    print(f"| sweep wall time | {t_sweep:.1f} s |")
    print(f"|  of which simulated camera (render frames) | {inst.snap_s:.1f} s |")
    print(f"|  of which rawgate statistics + writing | {stats_s:.1f} s ({stats_s / plan.n_frames * 1e3:.1f} ms/frame) |")
    print(f"| fit (EMVA + per-pixel maps) | {t_fit:.1f} s |")
    print(f"| sweep file | {(tmp / 'bench.rgsweep').stat().st_size / 2**20:.0f} MiB |")
    print(f"| RSS before sweep | {base:.0f} MiB |")
    print(f"| peak RSS after sweep / after fit | {peak_sweep:.0f} / {peak_all:.0f} MiB |")
    print(f"| resident after fit: anonymous / file-backed (mapped sweep) | {anon:.0f} / {filebacked:.0f} MiB |")
    print(f"| one frame / one level's {frames} frames held in memory | {frame_mib:.1f} / {frame_mib * frames:.0f} MiB |")
    print(f"| K fitted | {fit.emva.system_gain_adu_per_e:.4f} DN/e- |\n", flush=True)


def bench_level_stats(size: int, frames: int) -> None:
    rng = np.random.default_rng(0)
    stack = rng.poisson(2000.0, size=(frames, size, size)).astype(np.uint16)
    t0 = time.perf_counter()
    accumulate_level(iter(stack), kind="light", light_level=1, exposure_ms=10, adc_max=65535)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    f = stack.astype(np.float64)  # the peer: stack, convert, reduce
    f.mean(0)
    f.var(0, ddof=1)
    t_peer = time.perf_counter() - t0
    peer_mib = f.nbytes / 2**20
    del f
    print(f"## per-level statistics, {frames} frames of {size}² (same frames, same run)")
    print("| implementation | time | extra memory | per frame |\n|---|---|---|---|")
    print(f"| rawgate streaming int64 sums | {t_ours:.2f} s | ≈ {5 * size * size * 8 / 2**20:.0f} MiB (5 accumulators) | {t_ours / frames * 1e3:.1f} ms |")
    print(f"| peer: np.stack → float64 mean/var | {t_peer:.2f} s | {peer_mib:.0f} MiB + the stack | {t_peer / frames * 1e3:.1f} ms |")
    print(f"| ratio (peer / rawgate) | {t_peer / t_ours:.2f}× time | {peer_mib / (5 * size * size * 8 / 2**20):.1f}× memory | |", flush=True)


def bench_replicas(size: int) -> None:
    from rawgate.calibration.instruments._protocol import CameraIdentity

    rng = np.random.default_rng(0)
    shape = (size, size)
    model = NoiseModel(
        identity=CameraIdentity("sim", "S", 16, 1, (0, 0, size, size)),
        offset_adu=100 + rng.normal(0, 1.5, shape),
        gain_e_per_adu=0.47 * (1 + 0.03 * rng.standard_normal(shape)),
        read_noise_e=1.6 * np.exp(0.15 * rng.standard_normal(shape)),
        dark_current_e_per_s=None,
        bad_pixels=np.zeros(shape, np.uint8),
    )
    raw = (100 + rng.gamma(2.0, 800.0, shape)).astype(np.uint16)
    replicas(raw, model, n=1, seed=0)  # warm-up
    t0 = time.perf_counter()
    replicas(raw, model, n=10, seed=1)
    t_ours = time.perf_counter() - t0
    # peer: the direct float64 formula, one replica at a time
    t0 = time.perf_counter()
    g = model.gain_e_per_adu.astype(np.float64)
    for _ in range(10):
        lam = np.maximum((raw - model.offset_adu) * g, 0)
        v = raw + (rng.poisson(lam) - lam) / g + rng.normal(0, 1, shape) * model.read_noise_e / g
        np.clip(np.rint(v), 0, 65535).astype(np.uint16)
    t_peer = time.perf_counter() - t0
    print(f"## 10 replicas of a {size}² frame")
    print("| implementation | time |\n|---|---|")
    print(f"| rawgate replicas() (float32, in place) | {t_ours:.2f} s |")
    print(f"| peer: direct float64 numpy | {t_peer:.2f} s |")
    print(f"| ratio (peer / rawgate) | {t_peer / t_ours:.2f}× |\n", flush=True)


def _sweep_section(size: int, frames: int, levels: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        bench_sweep(size, frames, levels, Path(d))


def _isolated(target, *args) -> None:
    """Run one section in a fresh process: peak RSS (ru_maxrss) is a lifetime maximum, so a
    section must not inherit another's peak (the stack-then-reduce peer allocates GiBs)."""
    import multiprocessing as mp

    p = mp.get_context("spawn").Process(target=target, args=args)
    p.start()
    p.join()
    if p.exitcode:
        raise SystemExit(f"{target.__name__} failed with exit code {p.exitcode}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--levels", type=int, default=24)
    ap.add_argument("--skip-sweep", action="store_true")
    a = ap.parse_args()
    import os

    print(f"# rawgate calibration bench ({os.cpu_count()} cores)\n", flush=True)
    if not a.skip_sweep:
        _isolated(_sweep_section, a.size, a.frames, a.levels)
    _isolated(bench_replicas, a.size)
    _isolated(bench_level_stats, a.size, min(a.frames, 100))


if __name__ == "__main__":
    main()
