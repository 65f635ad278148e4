"""Time and peak memory of one ε spot check (N replicas + raw + decoded) of a 2048² frame.

Each configuration runs in a fresh child process, so its peak resident memory (``ru_maxrss``)
is its own. Target: ≤ 60 s for the whole frame on 2 cores. Usage::

    python bench/gate.py [--size 2048] [--scene microspheres]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import time


def _one(size: int, scene: str, tiles: int | None, q) -> None:
    import numpy as np

    from rawgate.calibration import scenes
    from rawgate.calibration.simulation import make_sensor_truth, truth_noise_model
    from rawgate.codecs import get_codec
    from rawgate.gate.check import GateConfig, spot_check
    from rawgate.gate.segmenter import train_pixel_classifier

    make = {"microspheres": scenes.microspheres, "dense cells": scenes.dense_cells}[scene]
    truth = make_sensor_truth((size, size), seed=11)
    model = truth_noise_model(truth)
    train = make((512, 512), seed=1)
    t_truth = make_sensor_truth((512, 512), seed=11)
    seg = train_pixel_classifier(
        scenes.render_scene(train, t_truth, np.random.default_rng(0))[0],
        scenes.sparse_labels(train.labels, seed=0), min_object_px=5,
    )
    test = make((size, size), seed=2)
    raw = scenes.render_scene(test, truth, np.random.default_rng(1))[0]
    codec = get_codec("noisecal:step=2", noise_model=model)
    dec = codec.decode(codec.encode(raw))
    seg(raw[:256, :256])  # compile the numba kernels outside the timing
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    rep = spot_check(raw, dec, model, seg, GateConfig(tiles=tiles, tile_size=512))
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    q.put({"seconds": dt, "peak_rss_mb": rss / 1024, "before_mb": rss0 / 1024, "timings": rep.timings_s,
           "passed": rep.verdict.passed, "objects": rep.matching.n_raw_objects if rep.matching else 0})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--scene", default="microspheres", choices=["microspheres", "dense cells"])
    args = ap.parse_args()
    print(f"# one spot check, {args.scene} {args.size}², N = 10 replicas, noisecal:step=2; "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    ctx = mp.get_context("spawn")
    print("| check on | seconds | peak RSS [MB] | objects | verdict | replicas / segmentation / measurement / filters / ε [s] |")
    print("|---|---:|---:|---:|---|---|")
    for tiles in (None, 4, 1):
        q = ctx.Queue()
        p = ctx.Process(target=_one, args=(args.size, args.scene, tiles, q))
        p.start()
        r = q.get()
        p.join()
        t = r["timings"]
        what = "whole frame" if tiles is None else f"{tiles} tile(s) of 512²"
        parts = " / ".join(f"{t[k]:.1f}" for k in ("replicas", "segmentation", "measurement", "filters", "epsilon"))
        print(f"| {what} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['objects']} | "
              f"{'pass' if r['passed'] else 'fail'} | {parts} |")
        if tiles is None:
            print(f"TARGET {'PASS' if r['seconds'] <= 60 else 'FAIL'}: whole {args.size}² frame in "
                  f"{r['seconds']:.1f} s (target ≤ 60 s on 2 cores)")


if __name__ == "__main__":
    main()
