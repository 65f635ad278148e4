"""Learned codecs on the benchmark scenes: the study's Table S1/S2 plus the ε column.

Each of the six architectures × metric (MSE; MS-SSIM as the study trained it: an MSE phase,
then an MS-SSIM phase) × a few rate–distortion trade-offs λ is trained here, on CPU, on frames
of one benchmark scene (dense cells) rendered through the simulated sensor, and tested on a
frame of another scene (microspheres) with that camera's noise model: compression ratio, bits
per pixel, PSNR, SSIM, MS-SSIM, Pearson r, encode / decode MB/s and the ε verdict against
raw-equivalent replicas (model-free ε: filter bank and noise power) — beside ``noisecal`` and
JPEG 2000 at the learned codec's own ratio, scored on the same frame against the same reference.

Then the intensity mapping: ``bmshj2018-factorized`` (MSE) trained at the same λ values with the
study's mapping (``x / 65535``) and with the frame's own range, compared at equal PSNR (the
ratio of each curve interpolated in log-ratio at PSNR values both curves reach).

The models are small (N = 64, M = 96 for the factorized and hyperprior families, N = 64 for
Cheng 2020) and trained for a few hundred steps: far from the study's converged models. The
table shows what this pipeline gives at this budget, and that ε judges a learned codec like any
other; it says nothing about what the architectures reach with days of GPU training. LPIPS needs
pretrained network weights that cannot be fetched here, so it is not reported.

Usage::

    python bench/learned.py [--steps 300] [--ms-ssim-steps 40] [--size 256] [--mse-qualities 2]
        [--ms-ssim-qualities 1] [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from rawgate.calibration import scenes
from rawgate.calibration.simulation import make_sensor_truth, truth_noise_model
from rawgate.codecs.learned import ARCHITECTURES
from rawgate.codecs.learned3d import ARCH_3D
from rawgate.codecs.learned_train import Phase, Trainer
from rawgate.gate.check import GateConfig, prepare_reference
from rawgate.gate.evaluate import FrameScorer

#: λ per quality step (CompressAI's MSE λ for qualities 1, 3, 5 of its zoo, scaled ×10 for
#: these small, briefly trained models so that they spend bits at all)
LAMBDAS_MSE = (0.018, 0.067, 0.25)
#: MS-SSIM phase λ (CompressAI's zoo: 2.40 … 60.5 for qualities 1 … 8)
LAMBDAS_MSSSIM = (4.58, 16.6, 60.5)


def _pick(values: tuple[float, ...], n: int) -> tuple[float, ...]:
    """``n`` of ``values`` spread over the range (1: the middle one)."""
    if n >= len(values):
        return values
    if n <= 1:
        return values[len(values) // 2:len(values) // 2 + 1]
    return tuple(values[round(i * (len(values) - 1) / (n - 1))] for i in range(n))


def _sizes(arch: str) -> dict[str, int]:
    return {"N": 64, "M": 96} if "M" in ARCHITECTURES[arch][1] else {"N": 64}


def _row(r, extra: str = "") -> str:
    mbps = lambda s: "—" if not s else f"{r.original_nbytes / s / 1e6:.2f}"  # noqa: E731
    bpp = 8 * r.compressed_nbytes / (r.original_nbytes / 2) if r.compressed_nbytes else float("nan")
    verdict = "pass" if r.passed else "FAIL (" + ", ".join(r.failing[:2]) + ")"
    return (f"| {r.spec if not extra else extra} | {r.compression_ratio:.2f} | {bpp:.3f} | {r.psnr_db or float('inf'):.2f} | "
            f"{r.ssim:.4f} | {r.ms_ssim if r.ms_ssim is not None else float('nan'):.4f} | {r.pearson:.5f} | "
            f"{mbps(r.encode_s)} | {mbps(r.decode_s)} | {verdict} |")


def _train(frames: np.ndarray, arch: str, phases: list[Phase], mapping: str, seed: int) -> tuple[Trainer, float]:
    t0 = time.perf_counter()
    t = Trainer(frames, arch=arch, sizes=_sizes(arch), phases=phases, patch=64, batch=4, lr=3e-4,
                mapping=mapping, seed=seed)
    t.run()
    return t, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="MSE training steps per model")
    ap.add_argument("--ms-ssim-steps", type=int, default=40, help="MS-SSIM phase steps (192² crops)")
    ap.add_argument("--size", type=int, default=256, help="test frame size [px]")
    ap.add_argument("--mse-qualities", type=int, default=2, help="λ values of the MSE models (of 3)")
    ap.add_argument("--ms-ssim-qualities", type=int, default=1, help="λ values of the MS-SSIM models (of 3)")
    ap.add_argument("--quick", action="store_true", help="one λ per metric, two architectures (a smoke run)")
    ap.add_argument("--archs", default=None, help="comma-separated architectures (default: the six; '' none: "
                    "only the mapping comparison)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    print(f"# learned codecs on the benchmark scenes; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"torch {torch.__version__}, CPU")
    n = args.size
    sensor = make_sensor_truth((max(n, 256), max(n, 256)), seed=11)
    model = truth_noise_model(sensor)
    rng = np.random.default_rng(0)
    train = np.stack([scenes.render_scene(scenes.dense_cells(sensor.offset_adu.shape, seed=s), sensor, rng)[0]
                      for s in (3, 4)])
    test_sensor = make_sensor_truth((n, n), seed=11)
    test_model = truth_noise_model(test_sensor)
    raw = scenes.render_scene(scenes.microspheres((n, n), seed=2), test_sensor, np.random.default_rng(1))[0]
    ref = prepare_reference(raw, test_model, None, GateConfig(n_replicas=5))
    scorer = FrameScorer("microspheres", ref)
    two_d = [a for a in ARCHITECTURES if a != ARCH_3D]  # the study's six (the 3-D model codes stacks)
    archs = two_d[:: 3] if args.quick else two_d if args.archs is None else [a for a in args.archs.split(",") if a]
    lam_mse = LAMBDAS_MSE[1:2] if args.quick else _pick(LAMBDAS_MSE, args.mse_qualities)
    lam_ms = LAMBDAS_MSSSIM[1:2] if args.quick else _pick(LAMBDAS_MSSSIM, args.ms_ssim_qualities)
    print(f"trained on 2 dense-cell frames of {train.shape[-1]}² ({args.steps} MSE steps, batch 4 × 64² crops; "
          f"MS-SSIM models: the MSE phase then {args.ms_ssim_steps} steps of 192² crops), tested on one "
          f"{n}² microspheres frame; ε from 5 replicas, model-free (filter bank, noise power)")
    print("\n| codec | ratio | bpp | PSNR dB | SSIM | MS-SSIM | Pearson | encode MB/s | decode MB/s | ε verdict |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    scorer.score("noisecal:step=2")  # compiles noisecal's kernels: not timed below
    for spec in ("noisecal:step=2", "noisecal:step=4"):
        print(_row(scorer.score(spec)))
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            for metric, lams in (("mse", lam_mse), ("ms-ssim", lam_ms)):
                for q, lam in enumerate(lams, 1):
                    phases = [Phase("mse", args.steps, lam_mse[min(q - 1, len(lam_mse) - 1)])]
                    if metric == "ms-ssim":
                        phases.append(Phase("ms-ssim", args.ms_ssim_steps, lam))
                    tr, secs = _train(train, arch, phases, "range", seed=q)
                    path = Path(tmp) / f"{arch}-{metric}-{q}.pth.tar"
                    tr.save(path, quality=q)
                    r = scorer.score(f"learned:arch={arch},metric={metric},weights={path},mapping=range")
                    if r.error:
                        print(f"| {arch} {metric} λ={lam:g} | error: {r.error} |||||||||")
                        continue
                    print(_row(r, f"{arch} {metric} λ={lam:g} (trained {secs:.0f} s)"))
                    if r.compression_ratio:
                        j = scorer.score(f"jpeg2k:ratio={r.compression_ratio:.3g}")
                        print(_row(j, f"↳ jpeg2k at the same ratio ({r.compression_ratio:.3g}:1)"))

        # the intensity mapping: the study's x / 65535 against the frame's own range, at equal PSNR
        print("\n## intensity mapping (bmshj2018-factorized, MSE): ratio at equal PSNR")
        curves: dict[str, list[tuple[float, float]]] = {}
        for mapping in ("study", "range"):
            for q, lam in enumerate(lam_mse if args.quick else LAMBDAS_MSE, 1):
                tr, _ = _train(train, "bmshj2018-factorized", [Phase("mse", args.steps, lam)], mapping, seed=q)
                path = Path(tmp) / f"map-{mapping}-{q}.pth.tar"
                tr.save(path, quality=q)
                r = scorer.score(f"learned:weights={path},mapping={mapping}")
                if not r.error and r.psnr_db:
                    curves.setdefault(mapping, []).append((r.psnr_db, r.compression_ratio))
                    print(f"{mapping}: λ={lam:g} → ratio {r.compression_ratio:.2f}, PSNR {r.psnr_db:.2f} dB")
        _compare(curves)


def _compare(curves: dict[str, list[tuple[float, float]]]) -> None:
    """Interpolate each mapping's log-ratio at PSNR values both curves cover."""
    if len(curves) < 2 or any(len(c) < 2 for c in curves.values()):
        print("not enough points on both curves to compare at equal PSNR")
        return
    (a, ca), (b, cb) = sorted(curves.items())
    ca, cb = sorted(ca), sorted(cb)
    lo = max(ca[0][0], cb[0][0])
    hi = min(ca[-1][0], cb[-1][0])
    if lo >= hi:
        print(f"the PSNR ranges do not overlap ({a}: {ca[0][0]:.1f}–{ca[-1][0]:.1f} dB, "
              f"{b}: {cb[0][0]:.1f}–{cb[-1][0]:.1f} dB): no comparison at equal PSNR")
        return
    for p in np.linspace(lo, hi, 3):
        ra = float(np.exp(np.interp(p, [x for x, _ in ca], [np.log(y) for _, y in ca])))
        rb = float(np.exp(np.interp(p, [x for x, _ in cb], [np.log(y) for _, y in cb])))
        print(f"at PSNR {p:.2f} dB: {a} {ra:.2f}:1, {b} {rb:.2f}:1 ({b}/{a} = {rb / ra:.2f})")


if __name__ == "__main__":
    main()
