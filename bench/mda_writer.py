"""The live path at acquisition time: rawgate's MDA writer against the camera's own frame rate.

The real DemoCamera (mm-test-adapters) runs an MDA time series as fast as it can deliver
(interval 0) at ``--size``² 16-bit, first with no output (the camera and engine alone: the
frame rate to keep up with), then with :class:`rawgate.codecs.mda.RawgateWriter` for each codec.
Printed: frames/s from the first frame to the file on disk (complete, fsynced, handshake
written), MB/s, the ratio, the peak number of frames waiting to be coded, and the ratio of the
writer's rate to the camera's. ``noisecal`` codes with a datasheet model of the DemoCamera
(gain = 1/PCF e⁻/ADU, its read-noise property, offset 100 ADU). Usage::

    python bench/mda_writer.py [--size 2048] [--frames 40]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import useq
from pymmcore_plus import CMMCorePlus

from rawgate.calibration.estimate import datasheet_noise_model
from rawgate.codecs.mda import RawgateWriter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--frames", type=int, default=40)
    args = ap.parse_args()
    core = CMMCorePlus()
    core.loadSystemConfiguration()
    core.setProperty("Camera", "Mode", "Noise")
    core.setProperty("Camera", "PixelType", "16bit")
    core.setProperty("Camera", "BitDepth", "12")
    core.setProperty("Camera", "OnCameraCCDXSize", args.size)
    core.setProperty("Camera", "OnCameraCCDYSize", args.size)
    core.setProperty("Camera", "Photon Flux", 500.0)
    core.setExposure(1.0)
    h, w = core.getImageHeight(), core.getImageWidth()
    mb = h * w * 2 / 1e6
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": args.frames})
    print(f"# rawgate MDA writer vs the DemoCamera; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"{args.frames} frames of {h}×{w} uint16 ({mb:.1f} MB each), exposure 1 ms, interval 0")

    t0 = time.perf_counter()
    core.mda.run(seq)
    cam = args.frames / (time.perf_counter() - t0)
    print(f"camera + MDA engine alone: {cam:.1f} frames/s ({cam * mb:.0f} MB/s)")

    pcf = float(core.getProperty("Camera", "Photon Conversion Factor"))
    model = datasheet_noise_model((h, w), gain_e_per_adu=pcf,
                                  read_noise_e=float(core.getProperty("Camera", "ReadNoise (electrons)")),
                                  offset_adu=100.0, bit_depth=12)
    print("| codec | frames/s to disk | MB/s | ratio | peak frames waiting | vs camera |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for spec in ("zstd", "jpegxl:effort=1", "noisecal:step=2,preset=fast", "noisecal:step=2"):
            out = Path(tmp) / f"{spec.replace(':', '_').replace(',', '_')}.ome.tif"
            writer = RawgateWriter(out, spec, noise_model=model if spec.startswith("noisecal") else None,
                                   embed_model=False)
            t0 = time.perf_counter()
            core.mda.run(seq, output=writer)
            writer.result()
            fps = args.frames / (time.perf_counter() - t0)
            ratio = args.frames * h * w * 2 / out.stat().st_size
            print(f"| {spec} | {fps:.1f} | {fps * mb:.0f} | {ratio:.2f} | {writer.stats['peak_waiting']} | "
                  f"{fps / cam:.2f}× |")


if __name__ == "__main__":
    main()
