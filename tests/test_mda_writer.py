"""Live at acquisition time (issue 29, slice 5): a pymmcore-plus MDA output handler that codes
each frame as the real DemoCamera delivers it into a rawgate OME-TIFF, then the handshake.

Real MMCore with the DemoCamera C++ adapter (mm-test-adapters), real MDA engine and relay
thread; the frames a second handler saw are compared with the decoded file, plane by plane.
"""

from __future__ import annotations

import numpy as np
import pytest
import useq

from rawgate.codecs import read_ome_tiff
from rawgate.codecs.mda import MDAWriterError, RawgateWriter


@pytest.fixture(scope="module")
def core():
    from pymmcore_plus import CMMCorePlus

    c = CMMCorePlus()
    c.loadSystemConfiguration()  # the demo config: DemoCamera and friends
    assert c.getDeviceLibrary("Camera") == "DemoCamera"
    c.setProperty("Camera", "Mode", "Noise")
    c.setProperty("Camera", "PixelType", "16bit")
    c.setROI(0, 0, 96, 128)  # x, y, width, height: frames are 128 × 96
    yield c
    c.unloadAllDevices()


class _Seen:
    """What the camera delivered, by event index (the reference)."""

    def __init__(self) -> None:
        self.frames: dict[tuple, np.ndarray] = {}

    def frameReady(self, img, event, meta=None):  # noqa: N802 - pymmcore-plus's name
        self.frames[tuple(sorted(event.index.items()))] = np.array(img, copy=True)


@pytest.mark.parametrize("codec", ["zstd", "jpegxl:effort=1"])
def test_every_frame_is_coded_in_place_in_order(core, tmp_path, codec):
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": 4}, z_plan={"range": 2.0, "step": 1.0},
                           channels=["DAPI", "FITC"], axis_order="tpcz")
    out = tmp_path / "acq" / "cells.ome.tif"
    writer, seen = RawgateWriter(out, codec), _Seen()
    core.mda.run(seq, output=[writer, seen])
    assert writer.result(timeout_s=60) == out
    assert (out.parent / "cells.ome.tif.done").is_file()
    assert not list(out.parent.glob(".*partial"))
    data, meta = read_ome_tiff(out)
    assert meta["axes"] == "TCZYX" and data.shape == (4, 2, 3, 128, 96) and data.dtype == np.uint16
    assert writer.stats["frames"] == len(seen.frames) == 24
    for key, img in seen.frames.items():  # no frame lost, none reordered, all bit-exact
        ix = dict(key)
        np.testing.assert_array_equal(data[ix["t"], ix["c"], ix["z"]], img)
    assert meta["physical_sizes"].get("Z") == pytest.approx(1.0)


def test_a_cancelled_acquisition_leaves_no_file_and_says_which_frame(core, tmp_path):
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": 50})
    out = tmp_path / "cut.ome.tif"
    writer = RawgateWriter(out, "zstd")

    class _Cancel:
        def frameReady(self, img, event, meta=None):  # noqa: N802
            if event.index.get("t") == 3:
                core.mda.cancel()

    core.mda.run(seq, output=[writer, _Cancel()])
    with pytest.raises(MDAWriterError, match="never arrived"):
        writer.result(timeout_s=60)
    assert not out.exists() and not (tmp_path / "cut.ome.tif.done").exists()
    assert not list(tmp_path.glob(".*partial"))


def test_positions_need_one_writer_each(core, tmp_path):
    seq = useq.MDASequence(stage_positions=[(0, 0, 0), (10, 10, 0)], time_plan={"interval": 0, "loops": 1})
    writer = RawgateWriter(tmp_path / "p.ome.tif", "zstd")
    core.mda.run(seq, output=writer)
    with pytest.raises(MDAWriterError, match="one writer each"):
        writer.result()
    assert not (tmp_path / "p.ome.tif").exists()
