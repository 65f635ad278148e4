"""Write the format fixtures in this folder (run once, by hand; the files are committed).

They were written by rawgate before its codecs moved from ``rawgate.codecs`` to
``rawgate.codecs``: ``tests/test_formats_fixed.py`` reads them with today's code, so a move or
a refactor that changed a codec id, a stream layout or a container field fails there.
Usage: ``python tests/data/formats/make_fixtures.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from rawgate.calibration.simulation import make_sensor_truth, render_frames, truth_noise_model
from rawgate.codecs import get_codec
from rawgate.codecs.containers import read_ome_tiff, read_ome_zarr, write_ome_tiff, write_ome_zarr

HERE = Path(__file__).parent


def main() -> None:
    truth = make_sensor_truth((32, 48), seed=2026)
    model = truth_noise_model(truth)
    frames = render_frames(truth, 30.0, 20.0, 3, np.random.default_rng(2026))  # (3, 32, 48) uint16
    np.save(HERE / "raw.npy", frames)
    model.save(HERE / "model.rgnoise")

    noisecal = get_codec("noisecal:step=2", noise_model=model)  # embeds its model
    stream = noisecal.encode(frames[0])
    (HERE / "frame.noisecal").write_bytes(bytes(stream))
    np.save(HERE / "frame.noisecal.decoded.npy", np.asarray(get_codec("noisecal:step=2").decode(stream)))

    (HERE / "frame.zstd").write_bytes(bytes(get_codec("zstd").encode(frames[0])))

    write_ome_tiff(HERE / "stack.noisecal.ome.tif", frames, "noisecal:step=2", axes="TYX", noise_model=model,
                   physical_sizes={"X": 0.65, "Y": 0.65}, metadata={"Summary": {"Camera": "fixture"}})
    np.save(HERE / "stack.noisecal.ome.tif.decoded.npy", read_ome_tiff(HERE / "stack.noisecal.ome.tif")[0])
    zpath = HERE / "stack.zstd.ome.zarr"
    if zpath.exists():
        shutil.rmtree(zpath)
    write_ome_zarr(zpath, frames, "zstd", axes="tyx", physical_sizes={"x": 0.65, "y": 0.65})
    zpath = HERE / "stack.noisecal.ome.zarr"
    if zpath.exists():
        shutil.rmtree(zpath)
    write_ome_zarr(zpath, frames, "noisecal:step=2", axes="tyx", noise_model=model, model_in_config=True)
    np.save(HERE / "stack.noisecal.ome.zarr.decoded.npy", read_ome_zarr(zpath)[0])


if __name__ == "__main__":
    main()
