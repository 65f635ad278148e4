"""``rawgate export``: an archived copy as a standard OME-TIFF that opens where rawgate is not
installed (Fiji / Bio-Formats, a plain tifffile). The export is read back in a Python process in
which ``import rawgate`` fails."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from rawgate.codecs import read_ome_tiff, write_ome_tiff, write_ome_zarr
from rawgate.codecs.containers import ContainerError, export_ome_tiff

from daemon_harness import RAWGATE, Tree

#: run in a process where rawgate cannot be imported; prints what a plain tifffile sees
WITHOUT_RAWGATE = """
import json, sys
sys.modules["rawgate"] = None  # `import rawgate` now raises ImportError
try:
    import rawgate  # noqa: F401
    raise SystemExit("rawgate was importable")
except ImportError:
    pass
import numpy as np, tifffile
with tifffile.TiffFile(sys.argv[1]) as tf:
    a = tf.series[0].asarray()
    print(json.dumps({"ome": tf.is_ome, "axes": tf.series[0].axes, "shape": list(a.shape), "dtype": str(a.dtype),
                      "compression": int(tf.pages[0].compression), "sum": int(a.astype(np.int64).sum()),
                      "xml": tf.ome_metadata}))
"""


def _plain_read(path) -> dict:
    r = subprocess.run([sys.executable, "-c", WITHOUT_RAWGATE, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def item(tmp_path):
    from rawgate.calibration.simulation import make_sensor_truth, render_frames, truth_noise_model

    t = make_sensor_truth((48, 64), seed=2)
    return truth_noise_model(t), render_frames(t, 30.0, 20.0, 3, np.random.default_rng(0))


@pytest.mark.parametrize("compression, tag", [("zlib", 8), ("zstd", 50000), ("none", 1)])
def test_export_of_a_noisecal_ome_tiff_opens_without_rawgate(tmp_path, item, compression, tag):
    model, frames = item
    src = write_ome_tiff(tmp_path / "a.ome.tif", frames, "noisecal:step=2", noise_model=model, axes="TYX",
                         physical_sizes={"X": 0.65, "Y": 0.65}, metadata={"Summary": {"Camera": "sim"}})
    decoded, _ = read_ome_tiff(src)
    out = export_ome_tiff(src, tmp_path / f"export-{compression}.ome.tif", compression=compression)
    got = _plain_read(out)
    assert got["ome"] and got["axes"] == "TYX" and got["shape"] == [3, 48, 64] and got["dtype"] == "uint16"
    assert got["compression"] == tag and got["sum"] == int(decoded.astype(np.int64).sum())
    assert 'PhysicalSizeX="0.65"' in got["xml"] and "Camera" in got["xml"] and "a.ome.tif" in got["xml"]
    np.testing.assert_array_equal(tifffile.imread(out), decoded)


def test_export_of_an_ome_zarr_and_bad_arguments(tmp_path, item):
    model, frames = item
    src = write_ome_zarr(tmp_path / "a.ome.zarr", frames, "zstd", axes="tyx")
    out = export_ome_tiff(src, tmp_path / "z.ome.tif")
    np.testing.assert_array_equal(tifffile.imread(out), frames)
    with pytest.raises(ContainerError, match="compression"):
        export_ome_tiff(src, tmp_path / "bad.ome.tif", compression="lzma9")
    assert not (tmp_path / "bad.ome.tif").exists()


def test_cli_exports_an_archived_item_by_id(tmp_path):
    """A daemon archive: a noisecal copy whose model sits once in data/models/; `rawgate export ID
    OUT -c CONFIG` writes a standard OME-TIFF equal to what rawgate decodes."""
    from rawgate.daemon import pipeline
    from rawgate.daemon.config import load_config
    from rawgate.daemon.ledger import ItemState as S

    t = Tree(tmp_path)
    try:
        w = pipeline.Worker(load_config(t.config))
        t.write_tiff("cell.tif", planes=2)
        it, _ = w.ledger.discover(str(t.acq.resolve()), "cell.tif", "tiff")
        w.ledger.transition(it.id, S.DISCOVERED, S.COMPLETE, complete_at=0.0)
        while (state := w.ledger.get(it.id).state) is not S.ARCHIVED:
            pipeline.STEPS[state](w, w.ledger.get(it.id), w.watch_of(it), pipeline.Outcome(it.id))
        copy = t.archive / w.ledger.get(it.id).archive_path
        decoded, _ = read_ome_tiff(copy)
        out = tmp_path / "cell-export.ome.tif"
        r = subprocess.run([*RAWGATE, "export", str(it.id), str(out), "--config", str(t.config)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "standard OME-TIFF" in r.stdout
        got = _plain_read(out)
        assert got["shape"] == [2, 64, 64] and got["sum"] == int(decoded.astype(np.int64).sum())
        r = subprocess.run([*RAWGATE, "export", "999", str(out), "--config", str(t.config)], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 2 and "no item 999" in r.stdout + r.stderr
    finally:
        t.close()
