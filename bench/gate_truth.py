"""Do the ε gate's replicas behave like a second acquisition? Replicas against true repeats.

The gate's null distribution comes from replicas drawn from one raw frame and the noise model.
Here the truth is known: the simulated sensor images the same ground-truth scene K times (true
repeated acquisitions: new shot and read noise each time, same fixed pattern). For every scene
the lab's kind of segmenter (a pixel classifier trained from sparse labels of another field of
the same kind) segments each repeat and each replica, and every whole-image statistic (N, A_tot /
V_tot, SA_tot) and every mean per-object statistic (the mean over objects of Area, Circ, …) is
measured. Printed per scene, statistic and replica mode (``raw``: around the raw frame, the
paper's; ``estimate``: around a denoised estimate of the mean image):

* ``σ_rep/σ_true``: the replicas' spread over the repeats' spread (the pooled variance over
  ``--raws`` raw frames, each with ``--replicas`` replicas); 1 is right, > 1 means the gate's
  null is too wide (it misses real changes), < 1 too narrow (false rejections);
* ``shift``: the replicas' mean minus the repeats' mean, in σ_true, averaged over the raw frames
  (and the largest of them); a replica set centred away from the truth moves every ε. Replicas
  around one raw frame sit where that frame's noise put them, about 1 σ_true from the truth, so
  the average over ``--raws`` frames (default 10 × 40 replicas = 400) scatters by 1/√10 ≈ 0.32;
  a constant statistic (σ_true = 0, e.g. N of well separated objects) must be constant in the
  replicas too.

Targets (issue "The ε gate against the truth"): σ ratio in 0.8–1.25, |mean shift| ≤ 0.5 σ_true.
The sampling error of a σ ratio from K repeats and R replicas is about ±√(1/2K + 1/2R): ±7 %
at 200 and 200, ±24 % at 10.

Scenes: microspheres, dense cells and 3-D nuclei (the benchmark scenes) and two low-signal ones:
``dim spots`` (sparse small objects, 10–50 e⁻ of signal on 5 e⁻) and ``dim nuclei 3-D``
(the nuclei at 50 e⁻ peak on 5 e⁻). Usage::

    python bench/gate_truth.py [--repeats 200] [--replicas 40] [--raws 10] [--size 256]
                               [--only dim] [--modes raw,estimate]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable

import numpy as np

from rawgate.calibration import scenes
from rawgate.calibration.replicas import replicas
from rawgate.calibration.simulation import make_sensor_truth, truth_noise_model
from rawgate.gate.measure import measure
from rawgate.gate.segmenter import train_pixel_classifier

SIGMA_RANGE = (0.8, 1.25)
MAX_SHIFT = 0.5


def scene_table(size: int, depth: int) -> dict[str, tuple[Callable, tuple[int, ...]]]:
    """name → (scene factory taking ``shape, seed``, shape)."""
    s3 = (depth, size // 2, size // 2)
    return {
        "microspheres": (scenes.microspheres, (size, size)),
        "dense cells": (scenes.dense_cells, (size, size)),
        "nuclei 3-D": (scenes.nuclei_3d, s3),
        "dim spots": (scenes.dim_spots, (size, size)),
        "dim nuclei 3-D": (functools.partial(scenes.nuclei_3d, background_e=5.0, peak_e=50.0), s3),
    }


def statistics(labels: np.ndarray) -> dict[str, float]:
    """Whole-image values and the mean of each per-object parameter of one segmentation."""
    m = measure(labels)
    out = dict(m.whole)
    for k, v in m.objects.items():
        out[f"mean {k}"] = float(np.mean(v)) if len(v) else float("nan")
    return out


def _table(images: np.ndarray, seg) -> dict[str, np.ndarray]:
    rows = [statistics(seg(img)) for img in images]
    return {k: np.array([r[k] for r in rows], float) for k in rows[0]}


def run_scene(name: str, make: Callable, shape: tuple[int, ...], *, repeats: int, n_replicas: int, raws: int,
              modes: list[str]) -> dict:
    truth = make_sensor_truth(shape[-2:], seed=11)
    model = truth_noise_model(truth)
    train_scene, test_scene = make(shape, seed=1), make(shape, seed=2)
    train_img = scenes.render_scene(train_scene, truth, np.random.default_rng(0))[0]
    seg = train_pixel_classifier(train_img, scenes.sparse_labels(train_scene.labels, seed=0), min_object_px=5)
    t0 = time.perf_counter()
    rep = scenes.render_scene(test_scene, truth, np.random.default_rng([2, 1]), n=repeats)
    true = _table(rep, seg)
    t_repeats = time.perf_counter() - t0
    del rep
    out = {"name": name, "shape": shape, "n_objects": test_scene.n_objects, "true": true, "modes": {},
           "t_repeats": t_repeats, "electrons": float(np.percentile(test_scene.electrons(), 99))}
    raw_frames = scenes.render_scene(test_scene, truth, np.random.default_rng([2, 2]), n=raws)
    for mode in modes:
        t1 = time.perf_counter()
        per_raw = []
        for i, raw in enumerate(raw_frames):
            per_raw.append(_table(replicas(raw, model, n_replicas, seed=1000 + i, around=mode), seg))
        out["modes"][mode] = {"per_raw": per_raw, "time": time.perf_counter() - t1}
    return out


def summarise(res: dict) -> list[dict]:
    """One row per (mode, statistic): σ ratio (pooled), mean and largest |shift| in σ_true."""
    rows = []
    for mode, m in res["modes"].items():
        for stat, t in res["true"].items():
            ok = np.isfinite(t)
            sd_true = float(np.std(t[ok], ddof=1)) if ok.sum() > 2 else float("nan")
            mu_true = float(np.mean(t[ok])) if ok.any() else float("nan")
            var_rep, shifts = [], []
            for r in m["per_raw"]:
                v = r[stat][np.isfinite(r[stat])]
                if len(v) > 2:
                    var_rep.append(np.var(v, ddof=1))
                    shifts.append((np.mean(v) - mu_true) / sd_true if sd_true > 0 else float("nan"))
            if sd_true == 0:  # the truth never varies (e.g. N of well separated objects)
                values = np.concatenate([r[stat] for r in m["per_raw"]])
                same = bool(np.all(values == mu_true))
                rows.append({"mode": mode, "stat": stat, "sd_true": 0.0, "ratio": 1.0 if same else float("inf"),
                             "shift": 0.0 if same else float("nan"), "worst": 0.0 if same else float("nan"),
                             "ok": same, "const": True})
                continue
            ratio = float(np.sqrt(np.mean(var_rep)) / sd_true) if var_rep and sd_true > 0 else float("nan")
            shift = float(np.mean(shifts)) if shifts else float("nan")
            worst = float(np.max(np.abs(shifts))) if shifts else float("nan")
            good = SIGMA_RANGE[0] <= ratio <= SIGMA_RANGE[1] and abs(shift) <= MAX_SHIFT
            rows.append({"mode": mode, "stat": stat, "sd_true": sd_true, "ratio": ratio, "shift": shift,
                         "worst": worst, "ok": bool(good), "const": False})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200, help="true repeated acquisitions per scene (≥ 200)")
    ap.add_argument("--replicas", type=int, default=40, help="replicas per raw frame")
    ap.add_argument("--raws", type=int, default=10,
                    help="raw frames the replicas are drawn from (the mean shift of one raw frame's replicas "
                         "scatters by ~1 σ_true in the raw mode: its average over R frames by 1/√R)")
    ap.add_argument("--size", type=int, default=256, help="2-D field [px]; 3-D stacks are size/2 wide")
    ap.add_argument("--depth", type=int, default=12, help="3-D stack depth [planes]")
    ap.add_argument("--only", default="", help="comma-separated substrings of scene names")
    ap.add_argument("--modes", default="raw,estimate", help="replica modes: raw, estimate")
    a = ap.parse_args()
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    only = [s.strip().lower() for s in a.only.split(",") if s.strip()]
    print(f"# ε gate replicas against true repeats: {a.repeats} repeats, {a.raws} raw frame(s) × {a.replicas} "
          f"replicas, modes {', '.join(modes)}; targets σ_rep/σ_true in {SIGMA_RANGE[0]}–{SIGMA_RANGE[1]}, "
          f"|shift| ≤ {MAX_SHIFT} σ_true")
    sampling = np.sqrt(1 / (2 * a.repeats) + 1 / (2 * a.replicas * a.raws))
    print(f"(sampling error of a σ ratio here ≈ ±{100 * sampling:.0f} %)")
    verdicts: dict[tuple[str, str], list[bool]] = {}
    t_all = time.perf_counter()
    for name, (make, shape) in scene_table(a.size, a.depth).items():
        if only and not any(s in name.lower() for s in only):
            continue
        res = run_scene(name, make, shape, repeats=a.repeats, n_replicas=a.replicas, raws=a.raws, modes=modes)
        times = ", ".join(f"{k} {v['time']:.0f} s" for k, v in res["modes"].items())
        print(f"\n## {name} {'×'.join(map(str, shape))}: {res['n_objects']} objects, 99th percentile "
              f"{res['electrons']:.0f} e⁻; repeats {res['t_repeats']:.0f} s, {times}")
        print("| mode | statistic | σ_true | σ_rep/σ_true | mean shift [σ_true] | max |shift| | |")
        print("|---|---|---:|---:|---:|---:|---|")
        for r in summarise(res):
            verdicts.setdefault((name, r["mode"]), []).append(r["ok"])
            if r["const"]:
                print(f"| {r['mode']} | {r['stat']} | 0 (constant) | — | — | — | "
                      f"{'ok: constant in the replicas too' if r['ok'] else 'OUT: varies in the replicas'} |")
                continue
            print(f"| {r['mode']} | {r['stat']} | {r['sd_true']:.4g} | {r['ratio']:.2f} | {r['shift']:+.2f} | "
                  f"{r['worst']:.2f} | {'ok' if r['ok'] else 'OUT'} |")
        sys.stdout.flush()
    print("\n## verdict per scene and mode (every statistic within the targets?)")
    for (name, mode), oks in verdicts.items():
        print(f"{'PASS' if all(oks) else 'FAIL'}  {name}, replicas around {mode}: {sum(oks)}/{len(oks)} statistics "
              "within the targets")
    print(f"\n(total {time.perf_counter() - t_all:.0f} s)")


if __name__ == "__main__":
    main()
