"""Archive size against the bare codec: the noise model embedded in every copy vs stored once.

The same frames (a dense-cells scene through the simulated sensor, uint16) are coded with the
same codec and dither seed three ways, in one run:

* **bare**: the sum of the per-plane ``noisecal`` streams (``embed_model=False``) — what the
  codec itself produces, with no container and no model;
* **embedded**: a rawgate OME-TIFF that carries the model's codec maps (TIFF tag 65401), as
  every archive copy did before the model was stored once per archive;
* **referenced**: a rawgate OME-TIFF that names the model by SHA-256 (``embed_model=False``),
  with the maps stored once in the archive's ``data/models/<sha256>.rgmaps``.

Printed per case: bytes, ratio (raw bytes / bytes) and the gap to the bare ratio; the model file
once, and the ratio of an archive of ``--items`` such copies sharing it. MB = 10⁶ bytes. Usage::

    python bench/archive_ratio.py [--size 2048] [--planes 1,16] [--items 100]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from rawgate.calibration import scenes
from rawgate.calibration.simulation import make_sensor_truth, render_frames, truth_noise_model
from rawgate.codecs import get_codec, write_ome_tiff
from rawgate.codecs.containers import write_model_file

MB = 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--planes", default="1,16", help="comma-separated plane counts, one case each")
    ap.add_argument("--items", type=int, default=100, help="copies sharing one model file")
    ap.add_argument("--step", type=float, default=2.0)
    ap.add_argument("--sequence", default="600x128",
                    help="also an image sequence of N frames of S² (NxS; '' to skip), one archive copy")
    args = ap.parse_args()

    spec = f"noisecal:step={args.step:g},seed=1"
    rows = []
    cases = [(int(n), args.size) for n in args.planes.split(",") if n]
    if args.sequence:
        n, s = (int(v) for v in args.sequence.split("x"))
        cases.append((n, s))
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        for n, size in cases:
            truth = make_sensor_truth((size, size), seed=0)
            model = truth_noise_model(truth)
            sc = scenes.dense_cells((size, size), seed=0)
            frames = render_frames(truth, sc.flux, sc.exposure_ms, n, np.random.default_rng(0))
            raw = frames.nbytes
            codec = get_codec(spec, noise_model=model, embed_model=False)
            bare = sum(len(codec.encode(p)) for p in frames)
            emb = write_ome_tiff(tmp_path / f"e{n}_{size}.ome.tif", frames, spec, noise_model=model, axes="TYX")
            bag = tmp_path / f"bag{n}_{size}"
            (bag / "data" / "scope").mkdir(parents=True)
            mfile = write_model_file(model, bag / "data" / "models")
            ref = write_ome_tiff(bag / "data" / "scope" / "x.ome.tif", frames, spec, noise_model=model,
                                 axes="TYX", embed_model=False)
            rows.append((n, size, raw, bare, emb.stat().st_size, ref.stat().st_size, mfile.stat().st_size))

    print(f"# archive size vs the bare codec ({spec}, dense cells, uint16); MB = 1e6 bytes")
    print(f"{'planes':>6} {'size':>5} {'raw MB':>8} | {'bare MB':>8} {'ratio':>6} | {'embedded MB':>11} {'ratio':>6} "
          f"{'gap':>7} | {'referenced MB':>13} {'ratio':>6} {'gap':>7} | {'model MB':>8} "
          f"{'ratio, ' + str(args.items) + ' copies + model':>26}")
    for n, size, raw, bare, emb, ref, model_b in rows:
        r_bare, r_emb, r_ref = raw / bare, raw / emb, raw / ref
        r_bag = args.items * raw / (args.items * ref + model_b)
        print(f"{n:>6} {size:>5} {raw / MB:>8.2f} | {bare / MB:>8.3f} {r_bare:>6.2f} | {emb / MB:>11.3f} {r_emb:>6.2f} "
              f"{(r_emb / r_bare - 1) * 100:>6.1f}% | {ref / MB:>13.3f} {r_ref:>6.2f} {(r_ref / r_bare - 1) * 100:>6.1f}% | "
              f"{model_b / MB:>8.3f} {r_bag:>26.2f}")
    print("gap: (ratio / bare ratio − 1); the target for referenced copies is within 2 % of bare")


if __name__ == "__main__":
    main()
