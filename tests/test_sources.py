"""Items of a watched folder and reading them plane by plane: real files (tifffile, ndstorage,
numpy) and a real Micro-Manager acquisition (DemoCamera through pymmcore-plus's MDA engine)."""

from __future__ import annotations

import json
import os
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from rawgate.codecs.planes import PlaneStack
from rawgate.daemon.sources import (
    DEFAULT_IGNORE,
    ItemRef,
    SourceError,
    UnsafePathError,
    classify,
    item_files,
    open_stack,
    resolve_inside,
    scan,
)

RNG = np.random.default_rng(7)


def _planes(stack) -> np.ndarray:
    return np.stack([stack.plane(i) for i in range(stack.n_planes)])


def _assert_planes(root: Path, ref: ItemRef, expected: np.ndarray, axes: str) -> dict:
    with open_stack(root, ref) as s:
        assert isinstance(s, PlaneStack)
        assert s.axes == axes
        assert s.shape == expected.shape
        assert s.dtype == expected.dtype
        assert s.n_planes == int(np.prod(expected.shape[:-2]))
        flat = expected.reshape(-1, *expected.shape[-2:])
        for i in range(s.n_planes):
            np.testing.assert_array_equal(s.plane(i), flat[i])
        with pytest.raises(IndexError):
            s.plane(s.n_planes)
        json.dumps(s.metadata)  # JSON-serialisable
        return {"metadata": s.metadata, "physical_sizes": s.physical_sizes}


def _write_ndtiff(parent: Path, frames: dict[tuple, np.ndarray], summary: dict | None = None, *,
                  finish: bool = True):
    """An NDTiff dataset written by ndstorage (pycro-manager's Python writer); keys are
    (time, channel, z) coordinates."""
    import ndstorage

    ds = ndstorage.NDTiffDataset(str(parent), name="acq", writable=True)
    ds.initialize(summary or {"PixelSize_um": 0.5, "z-step_um": 1.5})
    for (t, c, z), img in frames.items():
        ds.put_image({"time": t, "channel": c, "z": z}, img, {"Camera": "Demo"})
    if finish:
        ds.finish()
    return ds, Path(ds.path)


# ------------------------------------------------------------------------------- formats
def test_plain_tiff_stack(tmp_path):
    a = RNG.integers(0, 4096, (5, 24, 32), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "plain.tif", a, photometric="minisblack")
    ref = classify(tmp_path, tmp_path / "plain.tif")
    assert ref == ItemRef("plain.tif", "tiff")
    _assert_planes(tmp_path, ref, a, "TYX")  # tifffile's generic leading axis → T


def test_single_plane_and_bigtiff_and_int16(tmp_path):
    a = RNG.integers(-2000, 2000, (24, 32), dtype=np.int16)
    tifffile.imwrite(tmp_path / "one.tif", a, bigtiff=True, byteorder=">")
    _assert_planes(tmp_path, ItemRef("one.tif", "tiff"), a, "YX")


def test_ome_tiff_tzyx_with_physical_sizes(tmp_path):
    a = RNG.integers(0, 65535, (3, 4, 24, 32), dtype=np.uint16)
    tifffile.imwrite(
        tmp_path / "cells.ome.tif", a, ome=True, tile=(16, 16), compression="zlib",
        metadata={"axes": "TZYX", "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65, "PhysicalSizeZ": 2.0,
                  "PhysicalSizeZUnit": "µm", "TimeIncrement": 5000, "TimeIncrementUnit": "ms",
                  "Channel": {"Name": ["GFP"]}},
    )
    ref = classify(tmp_path, tmp_path / "cells.ome.tif")
    assert ref == ItemRef("cells.ome.tif", "tiff")
    out = _assert_planes(tmp_path, ref, a, "TZYX")
    assert out["physical_sizes"] == pytest.approx({"X": 0.65, "Y": 0.65, "Z": 2.0, "T": 5.0})
    assert out["metadata"]["ome"]["channels"] == ["GFP"]


def test_imagej_hyperstack(tmp_path):
    a = RNG.integers(0, 255, (2, 3, 2, 16, 20), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "hyper.tif", a, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"axes": "TZCYX", "unit": "um", "spacing": 0.5, "finterval": 2.0})
    out = _assert_planes(tmp_path, ItemRef("hyper.tif", "tiff"), a, "TZCYX")
    assert out["physical_sizes"] == pytest.approx({"X": 0.25, "Y": 0.25, "Z": 0.5, "T": 2.0})
    assert out["metadata"]["imagej"]["frames"] == 2


def test_image_sequence_folder_sorted_naturally(tmp_path):
    seq = tmp_path / "runs" / "seq_01"
    seq.mkdir(parents=True)
    a = RNG.integers(0, 4096, (11, 16, 20), dtype=np.uint16)
    for i in range(11):  # img_1 … img_11: natural order, not img_1, img_10, img_11, img_2
        tifffile.imwrite(seq / f"img_{i + 1}.tif", a[i])
    (seq / "metadata.txt").write_text("exposure 10 ms\n")
    globs = ("seq_*",)
    ref = classify(tmp_path, seq / "img_3.tif", sequence_globs=globs)
    assert ref == ItemRef("runs/seq_01", "sequence")
    assert classify(tmp_path, seq, sequence_globs=globs) == ref
    assert classify(tmp_path, seq / "img_3.tif") == ItemRef("runs/seq_01/img_3.tif", "tiff")  # not configured
    assert list(scan(tmp_path, sequence_globs=globs)) == [ref]
    assert [p.name for p in item_files(tmp_path, ref)] == sorted([f"img_{i + 1}.tif" for i in range(11)]
                                                                 + ["metadata.txt"])
    _assert_planes(tmp_path, ref, a, "TYX")
    # a plane of another size is refused when it is read
    tifffile.imwrite(seq / "img_12.tif", np.zeros((8, 8), np.uint16))
    with open_stack(tmp_path, ref) as s:
        assert s.shape == (12, 16, 20)
        with pytest.raises(SourceError, match="img_12.tif"):
            s.plane(11)


def test_npy(tmp_path):
    a = RNG.integers(0, 4096, (2, 3, 16, 20), dtype=np.uint16)
    np.save(tmp_path / "stack.npy", a)
    ref = classify(tmp_path, tmp_path / "stack.npy")
    assert ref == ItemRef("stack.npy", "npy")
    _assert_planes(tmp_path, ref, a, "TZYX")
    np.save(tmp_path / "fortran.npy", np.asfortranarray(a[0]))
    _assert_planes(tmp_path, ItemRef("fortran.npy", "npy"), a[0], "TYX")


def _write_ome_set(folder: Path, a: np.ndarray) -> None:
    """A two-file OME-TIFF set as Micro-Manager/Bio-Formats write it: the full OME-XML in the
    first file, a BinaryOnly pointer in the companion."""
    ua, ub = uuid.uuid4().urn, uuid.uuid4().urn
    ny, nx = a.shape[1:]
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" UUID="{ua}">'
        '<Image ID="Image:0" Name="set"><Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint16" '
        f'SizeX="{nx}" SizeY="{ny}" SizeZ="1" SizeC="1" SizeT="4" PhysicalSizeX="0.5" PhysicalSizeY="0.5">'
        '<Channel ID="Channel:0:0" SamplesPerPixel="1"/>'
        f'<TiffData FirstT="0" IFD="0" PlaneCount="2"><UUID FileName="set.ome.tif">{ua}</UUID></TiffData>'
        f'<TiffData FirstT="2" IFD="0" PlaneCount="2"><UUID FileName="set_1.ome.tif">{ub}</UUID></TiffData>'
        "</Pixels></Image></OME>"
    )
    companion = (f'<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/'
                 f'OME/2016-06" UUID="{ub}"><BinaryOnly MetadataFile="set.ome.tif" UUID="{ua}"/></OME>')
    for name, planes, desc in (("set.ome.tif", a[:2], xml), ("set_1.ome.tif", a[2:], companion)):
        with tifffile.TiffWriter(folder / name) as w:
            for i, p in enumerate(planes):
                w.write(p, description=desc if i == 0 else None, metadata=None, photometric="minisblack")


def test_multi_file_ome_tiff_set(tmp_path):
    a = RNG.integers(0, 4096, (4, 16, 20), dtype=np.uint16)
    _write_ome_set(tmp_path, a)
    ref = ItemRef("set.ome.tif", "ome-tiff-set")
    assert classify(tmp_path, tmp_path / "set_1.ome.tif") == ref  # the companion → the set
    assert classify(tmp_path, tmp_path / "set.ome.tif") == ref
    assert list(scan(tmp_path)) == [ref]
    assert item_files(tmp_path, ref) == [tmp_path / "set.ome.tif", tmp_path / "set_1.ome.tif"]
    # taken for a plain TIFF (classified before its OME-XML named the companion), the files agree
    assert item_files(tmp_path, ItemRef("set.ome.tif", "tiff")) == item_files(tmp_path, ref)
    out = _assert_planes(tmp_path, ref, a, "TYX")
    assert out["metadata"]["source"]["files"] == ["set.ome.tif", "set_1.ome.tif"]
    (tmp_path / "set_1.ome.tif").unlink()
    with pytest.raises(SourceError, match="file disappeared: set_1.ome.tif"):
        open_stack(tmp_path, ref)


# ------------------------------------------------------------------------ classify and scan
def test_classify_and_scan_a_tree(tmp_path):
    root = tmp_path / "watched"
    outside = tmp_path / "outside"
    (root / "day1").mkdir(parents=True)
    (root / ".cache").mkdir()
    (outside / "more").mkdir(parents=True)
    img = RNG.integers(0, 4096, (16, 20), dtype=np.uint16)
    tifffile.imwrite(root / "day1" / "a.tif", img)
    tifffile.imwrite(root / ".cache" / "x.tif", img)
    tifffile.imwrite(root / ".hidden.tif", img)
    tifffile.imwrite(outside / "secret.tif", img)
    tifffile.imwrite(outside / "more" / "b.tif", img)
    for name in ("day1/a.tif.partial", "day1/b.tmp", "day1/c.tif~", "day1/a.tif.done"):
        (root / name).write_bytes(b"x")
    (root / "notes.txt").write_text("hello")
    np.save(root / "day1" / "dark.npy", img)
    os.symlink(outside / "secret.tif", root / "evil.tif")
    os.symlink(outside / "more", root / "linkdir")  # a symlinked folder: never descended
    _, nd = _write_ndtiff(root / "day1", {(0, "DAPI", 0): img, (1, "DAPI", 0): img})
    assert nd == root / "day1" / "acq_1"
    ignore = ["*.done"]

    def c(rel):
        return classify(root, root / rel, ignore_globs=ignore)

    assert c("day1/a.tif") == ItemRef("day1/a.tif", "tiff")
    assert c("day1/dark.npy") == ItemRef("day1/dark.npy", "npy")
    assert c("notes.txt") == ItemRef("notes.txt", "other")
    for rel in (".hidden.tif", ".cache/x.tif", ".cache", "day1/a.tif.partial", "day1/b.tmp", "day1/c.tif~",
                "day1/a.tif.done", "day1", "linkdir", "linkdir/b.tif"):
        assert c(rel) is None, rel
    nd_ref = ItemRef("day1/acq_1", "ndtiff")
    for rel in ("day1/acq_1", "day1/acq_1/NDTiff.index", "day1/acq_1/acq_NDTiffStack.tif"):
        assert c(rel) == nd_ref
    # before its index exists, a stack file already names its dataset
    (root / "day1" / "acq_2").mkdir()
    assert c("day1/acq_2/acq_NDTiffStack.tif") == ItemRef("day1/acq_2", "ndtiff")
    assert c("day1/acq_2/Full resolution/acq_NDTiffStack.tif") == ItemRef("day1/acq_2", "ndtiff")
    assert c("day1/acq_2/acq_NDTiffStack_1.tif") == ItemRef("day1/acq_2", "ndtiff")
    (root / "day1" / "acq_2").rmdir()
    assert c(str(tmp_path / "elsewhere.tif")) is None  # outside the root
    evil = c("evil.tif")
    assert evil == ItemRef("evil.tif", "tiff")  # classified, refused at open time

    found = list(scan(root, ignore_globs=ignore))
    assert sorted(found, key=lambda r: r.relpath) == sorted(
        [ItemRef("day1/a.tif", "tiff"), ItemRef("day1/dark.npy", "npy"), nd_ref,
         ItemRef("evil.tif", "tiff"), ItemRef("notes.txt", "other")], key=lambda r: r.relpath)
    assert len(found) == len(set(found))
    # the defaults always apply, whatever ignore_globs the caller passes
    assert set(DEFAULT_IGNORE) == {".*", "*.partial", "*.tmp", "*~"}

    with pytest.raises(UnsafePathError, match=r"symlink points outside the watched root: evil\.tif → .*secret\.tif"):
        open_stack(root, evil)
    with pytest.raises(UnsafePathError, match="leaves the watched root"):
        resolve_inside(root, "../outside/secret.tif")
    assert resolve_inside(root, "day1/a.tif") == (root / "day1" / "a.tif").resolve()
    # a symlink that stays inside the root is fine
    os.symlink(root / "day1" / "a.tif", root / "alias.tif")
    _assert_planes(root, ItemRef("alias.tif", "tiff"), img, "YX")


# ------------------------------------------------------------------------------ bad inputs
def _good_tiff(path: Path) -> None:
    tifffile.imwrite(path, RNG.integers(0, 4096, (6, 64, 64), dtype=np.uint16), photometric="minisblack")


def test_empty_file(tmp_path):
    (tmp_path / "e.tif").write_bytes(b"")
    with pytest.raises(SourceError, match=r"empty file \(0 bytes\): e.tif"):
        open_stack(tmp_path, classify(tmp_path, tmp_path / "e.tif"))
    (tmp_path / "e.npy").write_bytes(b"")
    with pytest.raises(SourceError, match=r"empty file \(0 bytes\)"):
        open_stack(tmp_path, ItemRef("e.npy", "npy"))


@pytest.mark.parametrize("layout", ["contiguous", "tiled-zlib", "ome"])
def test_truncated_tiff(tmp_path, layout):
    a = RNG.integers(0, 4096, (6, 64, 64), dtype=np.uint16)
    kw = {"contiguous": {"photometric": "minisblack"},
          "tiled-zlib": {"photometric": "minisblack", "tile": (32, 32), "compression": "zlib"},
          "ome": {"ome": True, "metadata": {"axes": "TYX"}}}[layout]
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, a, **kw)
    data = good.read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"truncated or corrupt TIFF: .+ \(cut.tif\)"):
        with open_stack(tmp_path, ItemRef("cut.tif", "tiff")) as s:
            for i in range(s.n_planes):
                s.plane(i)


def test_text_file_named_tif_and_other_files(tmp_path):
    (tmp_path / "note.tif").write_text("not an image at all\n")
    with pytest.raises(SourceError, match="not an image file rawgate can read: note.tif"):
        open_stack(tmp_path, classify(tmp_path, tmp_path / "note.tif"))
    (tmp_path / "note.npy").write_text("not an array\n")
    with pytest.raises(SourceError, match="not an image file rawgate can read: note.npy"):
        open_stack(tmp_path, ItemRef("note.npy", "npy"))
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(SourceError, match="not an image file rawgate can read: notes.txt"):
        open_stack(tmp_path, classify(tmp_path, tmp_path / "notes.txt"))


def test_file_deleted_after_classify(tmp_path):
    _good_tiff(tmp_path / "gone.tif")
    ref = classify(tmp_path, tmp_path / "gone.tif")
    (tmp_path / "gone.tif").unlink()
    with pytest.raises(SourceError, match="file disappeared: gone.tif"):
        open_stack(tmp_path, ref)
    assert classify(tmp_path, tmp_path / "gone.tif") is None  # a deletion event names no item


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="running as root: root reads files whatever their mode, so mode 000 cannot be tested")
def test_unreadable_file(tmp_path):
    p = tmp_path / "locked.tif"
    _good_tiff(p)
    p.chmod(0)
    try:
        with pytest.raises(SourceError, match="permission denied: locked.tif"):
            open_stack(tmp_path, ItemRef("locked.tif", "tiff"))
    finally:
        p.chmod(0o644)


def test_float_rgb_and_unsupported_axes_refused(tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", RNG.random((3, 16, 16), dtype=np.float32), photometric="minisblack")
    with pytest.raises(SourceError, match="unsupported pixel type float32"):
        open_stack(tmp_path, ItemRef("f.tif", "tiff"))
    np.save(tmp_path / "f.npy", np.zeros((4, 4), np.float64))
    with pytest.raises(SourceError, match="unsupported pixel type float64"):
        open_stack(tmp_path, ItemRef("f.npy", "npy"))
    tifffile.imwrite(tmp_path / "rgb.tif", RNG.integers(0, 255, (16, 16, 3), dtype=np.uint8), photometric="rgb")
    with pytest.raises(SourceError, match="RGB/multi-sample"):
        open_stack(tmp_path, ItemRef("rgb.tif", "tiff"))
    # four leading axes cannot be mapped onto T, C, Z
    tifffile.imwrite(tmp_path / "q.ome.tif", np.zeros((2, 2, 2, 2, 8, 8), np.uint16), ome=True,
                     metadata={"axes": "TCZQYX"})
    with pytest.raises(SourceError, match="at most T, C and Z"):
        open_stack(tmp_path, ItemRef("q.ome.tif", "tiff"))


# --------------------------------------------------------------------- NDTiff and Micro-Manager
def test_ndtiff_written_by_ndstorage(tmp_path):
    frames = {(t, c, z): RNG.integers(0, 4096, (24, 32), dtype=np.uint16)
              for t in range(2) for c in ("DAPI", "FITC") for z in range(3)}
    _, ds_path = _write_ndtiff(tmp_path, frames)
    ref = classify(tmp_path, ds_path / "NDTiff.index")
    assert ref == ItemRef("acq_1", "ndtiff")
    assert [p.name for p in item_files(tmp_path, ref)] == ["NDTiff.index", "acq_NDTiffStack.tif"]
    expected = np.stack([frames[(t, c, z)] for t in range(2) for c in ("DAPI", "FITC") for z in range(3)])
    out = _assert_planes(tmp_path, ref, expected.reshape(2, 2, 3, 24, 32), "TCZYX")
    assert out["physical_sizes"] == {"X": 0.5, "Y": 0.5, "Z": 1.5}
    assert out["metadata"]["Summary"]["PixelSize_um"] == 0.5
    assert out["metadata"]["source"]["ndtiff_axes"]["C"]["values"] == ["DAPI", "FITC"]


def test_ndtiff_incomplete_dataset_refused(tmp_path):
    frames = {(t, "DAPI", z): RNG.integers(0, 4096, (8, 8), dtype=np.uint16) for t in range(2) for z in range(2)}
    del frames[(1, "DAPI", 1)]  # an aborted acquisition: the last image never came
    _write_ndtiff(tmp_path, frames)
    with pytest.raises(SourceError, match="NDTiff dataset is incomplete: 3 of 4 images"):
        open_stack(tmp_path, ItemRef("acq_1", "ndtiff"))


def test_ndtiff_positions_map_to_time_or_are_refused(tmp_path):
    import ndstorage

    def write(name, coords):
        ds = ndstorage.NDTiffDataset(str(tmp_path), name=name, writable=True)
        ds.initialize({})
        imgs = []
        for c in coords:
            imgs.append(RNG.integers(0, 255, (8, 8), dtype=np.uint16))
            ds.put_image(c, imgs[-1], {})
        ds.finish()
        return Path(ds.path), np.stack(imgs)

    path, imgs = write("pos", [{"position": p, "z": z} for p in range(3) for z in range(2)])
    ref = classify(tmp_path, path)
    _assert_planes(tmp_path, ref, imgs.reshape(3, 2, 8, 8), "TZYX")  # no time axis: positions → T
    path, _ = write("tpos", [{"time": t, "position": p} for t in range(2) for p in range(2)])
    with pytest.raises(SourceError, match="positions and time points"):
        open_stack(tmp_path, classify(tmp_path, path))


@pytest.fixture(scope="module")
def mmcore():
    """The real DemoCamera (mm-test-adapters) through CMMCorePlus, as in test_democamera.py."""
    from pymmcore_plus import CMMCorePlus

    core = CMMCorePlus()
    core.loadSystemConfiguration()  # the demo config; pymmcore-plus finds mm-test-adapters
    assert core.getDeviceLibrary(core.getCameraDevice()) == "DemoCamera"
    core.setROI(0, 0, 64, 48)
    yield core
    core.reset()


def run_mda(core, path: Path) -> dict[tuple[int, int], np.ndarray]:
    """A 3-time-point × 3-z DAPI MDA written by pymmcore-plus's OMETiffWriter; returns the
    frames the writer received, keyed by (t, z)."""
    import useq

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # handlers moving to ome-writers
        from pymmcore_plus.mda.handlers import OMETiffWriter

    frames: dict[tuple[int, int], np.ndarray] = {}

    def on_frame(img, event, *_):
        frames[(event.index.get("t", 0), event.index.get("z", 0))] = np.array(img)

    seq = useq.MDASequence(time_plan={"interval": 0, "loops": 3}, z_plan={"range": 2, "step": 1},
                           channels=["DAPI"], axis_order="tpcz")
    writer = OMETiffWriter(path)
    core.mda.events.frameReady.connect(on_frame)
    try:
        core.mda.run(seq, output=writer)
    finally:
        core.mda.events.frameReady.disconnect(on_frame)
    del writer  # drops the writer's memory maps
    return frames


def test_real_micromanager_acquisition(tmp_path, mmcore):
    frames = run_mda(mmcore, tmp_path / "acq.ome.tif")
    assert len(frames) == 9
    ref = classify(tmp_path, tmp_path / "acq.ome.tif")
    assert ref == ItemRef("acq.ome.tif", "tiff")
    expected = np.stack([frames[(t, z)] for t in range(3) for z in range(3)]).reshape(3, 3, 48, 64)
    out = _assert_planes(tmp_path, ref, expected, "TZYX")  # the single channel is squeezed
    assert out["physical_sizes"] == {"Z": 1.0}  # z step from useq; interval 0 is no size
    assert out["metadata"]["ome"]["channels"] == ["DAPI"]
    # the same camera frames in an NDTiff dataset (ndstorage's writer, as pycro-manager uses)
    _, ds_path = _write_ndtiff(tmp_path / "nd", {(t, "DAPI", z): f for (t, z), f in frames.items()},
                               {"PixelSize_um": 1.0, "z-step_um": 1.0, "Interval_ms": 100})
    nd_ref = classify(tmp_path, ds_path / "acq_NDTiffStack.tif")
    assert nd_ref == ItemRef("nd/acq_1", "ndtiff")
    out = _assert_planes(tmp_path, nd_ref, expected, "TZYX")
    assert out["physical_sizes"] == {"X": 1.0, "Y": 1.0, "Z": 1.0, "T": 0.1}
