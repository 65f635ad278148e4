"""``rawgate evaluate`` on the benchmark scenes: the recommendation, and what a full evaluation costs.

For each benchmark scene (rendered through the simulated sensor, ground truth known; the lab's
segmenter trained on another rendering of the same kind of scene), one frame is evaluated with
the study's baselines (8-bit, JPEG / JPEG 2000 at 10:1), ``noisecal`` at step 2 and the
ε-budgeted searches ``noisecal:step=auto`` and ``jpeg:ratio=auto``. Printed per scene: every
codec's ratio, PSNR and verdict, each search's edge, the recommendation beside Jetraw's published
≈ 5.5:1 and — when the ``bench`` extra is installed — the ratio of anscombe-transform (Anscombe
VST + lossless codec, the peer noise-aware preprocessing) measured on the same frame. Then the
time of one full evaluation of a ``--size``² frame (the reference, every fixed codec) and of the
rate search alone, on this machine. Usage::

    python bench/evaluate.py [--size 2048] [--scene-size 512]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from rawgate.calibration import scenes
from rawgate.calibration.simulation import make_sensor_truth, truth_noise_model
from rawgate.gate.check import GateConfig, prepare_reference
from rawgate.gate.evaluate import JETRAW_PUBLISHED_RATIO as JETRAW
from rawgate.gate.evaluate import AutoSpec, evaluate_frame, recommend, search_setting
from rawgate.gate.segmenter import train_pixel_classifier

FIXED = ["eightbit", "jpeg:ratio=10", "jpeg2k:ratio=10", "noisecal:step=2"]
AUTO = ["noisecal:step=auto", "jpeg:ratio=auto"]


def _segmenter(make):
    train = make((512, 512), seed=1)
    t_truth = make_sensor_truth((512, 512), seed=11)
    img = scenes.render_scene(train, t_truth, np.random.default_rng(0))[0]
    return train_pixel_classifier(img, scenes.sparse_labels(train.labels, seed=0), min_object_px=5)


def _anscombe_ratio(raw: np.ndarray, model) -> float | None:
    """anscombe-transform (the peer, β = 2 as in bench/bench_codecs.py, its uint8 codes clamped
    where they end) + Blosc zstd-5 bitshuffle on the same frame; None when not installed."""
    try:
        import numcodecs
        from anscombe_transform.codec import lookup, make_anscombe_lookup
    except ImportError:
        return None
    k = 1.0 / float(np.median(model.gain_e_per_adu))  # ADU per photo-electron
    z = max(0.0, float(np.median(model.offset_adu)))
    lut_f = make_anscombe_lookup(k, input_max=model.adc_max, zero_level=z, beta=2.0, output_type="float64")
    input_max = int(min(model.adc_max, np.searchsorted(lut_f, 255.5) - 1))
    lut = make_anscombe_lookup(k, input_max=input_max, zero_level=z, beta=2.0)
    codes = np.ascontiguousarray(lookup(np.minimum(raw, input_max), lut))
    blosc = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE)
    return raw.nbytes / len(blosc.encode(codes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048, help="frame size of the timed evaluation")
    ap.add_argument("--scene-size", type=int, default=512, help="frame size of the per-scene evaluations")
    args = ap.parse_args()
    print(f"# rawgate evaluate on the benchmark scenes; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    n = args.scene_size
    for name, make in (("microspheres", scenes.microspheres), ("dense cells", scenes.dense_cells)):
        truth = make_sensor_truth((n, n), seed=11)
        model = truth_noise_model(truth)
        seg = _segmenter(make)
        raw = scenes.render_scene(make((n, n), seed=2), truth, np.random.default_rng(1))[0]
        ref = prepare_reference(raw, model, seg, GateConfig())
        _, res = evaluate_frame(raw, model, FIXED, name=name, segmenter=seg, reference=ref)
        searches = [search_setting([(name, ref)], AutoSpec.parse(a)) for a in AUTO]
        rec = recommend(res, searches)
        print(f"\n## {name} ({n}², {sum(m.n_objects for m in ref.measurements['raw'])} objects in the raw segmentation)")
        print("| codec | ratio | PSNR dB | worst abs eps | verdict | p-value tests |")
        print("|---|---:|---:|---:|---|---|")
        for r in res + [x for s in searches for x in s.results]:
            print(f"| {r.spec} | {r.compression_ratio:.2f} | {r.psnr_db or float('inf'):.1f} | "
                  f"{r.worst_abs_epsilon:.2f} | {'pass' if r.passed else 'FAIL: ' + ', '.join(r.failing[:2])} | "
                  f"{'pass' if r.p_tests_pass else 'fail'} |")
        for s in searches:
            print(f"search {s.auto}: passes up to {s.option}={s.best}, fails at {s.first_failing} "
                  f"({', '.join(s.failing[:3])}); {len(s.tried)} settings scored")
        peer = _anscombe_ratio(raw, model)
        if rec is not None:
            print(f"recommended: {rec.spec}, ratio {rec.mean_ratio:.2f}:1 (Jetraw publishes ≈ {JETRAW}:1; "
                  + (f"anscombe-transform + zstd on this frame {peer:.2f}:1)" if peer else
                     "anscombe-transform not installed: pip install '.[bench]')"))
        else:
            print("no setting passed")

    # the time of one full evaluation of a large frame, and of the rate search alone
    s = args.size
    truth = make_sensor_truth((s, s), seed=11)
    model = truth_noise_model(truth)
    seg = _segmenter(scenes.microspheres)
    raw = scenes.render_scene(scenes.microspheres((s, s), seed=2), truth, np.random.default_rng(1))[0]
    seg(raw[:256, :256])  # compile the numba kernels outside the timing
    t0 = time.perf_counter()
    ref = prepare_reference(raw, model, seg, GateConfig())
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluate_frame(raw, model, FIXED, name="big", segmenter=seg, reference=ref)
    t_fixed = time.perf_counter() - t0
    t0 = time.perf_counter()
    sr = search_setting([("big", ref)], AutoSpec.parse("noisecal:step=auto"))
    t_search = time.perf_counter() - t0
    print(f"\n## time, one {s}² frame, {os.cpu_count()} cores")
    print(f"reference (10 replicas segmented and measured once): {t_ref:.1f} s")
    print(f"{len(FIXED)} fixed codecs scored against it: {t_fixed:.1f} s ({t_fixed / len(FIXED):.1f} s per codec)")
    print(f"full evaluation (reference + codecs): {t_ref + t_fixed:.1f} s")
    print(f"rate search noisecal:step=auto alone: {t_search:.1f} s, {len(sr.tried)} settings, edge step={sr.best}")


if __name__ == "__main__":
    main()
